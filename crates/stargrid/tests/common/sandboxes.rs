//! What the sandbox tests share: the CLI as a client of a test server, commands run in an
//! interactive sandbox through the API, and a host's warm pool.

use super::hostile::Server;
use serde_json::{json, Value};
use std::process::Command;

/// `stargrid ARGS...` as a client of `s`: (exit code, stdout, stderr).
pub fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(args)
        .env("STARGRID_SERVER", &s.url)
        .env("STARGRID_TOKEN", &s.token)
        .env_remove("STARGRID_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command` in sandbox `index` of `batch` through the API as `token`: the events read
/// (the last is the end), or the refusal.
pub fn exec_as(
    s: &Server,
    token: &str,
    batch: u64,
    index: u32,
    command: &[&str],
) -> Result<Vec<Value>, (u16, String)> {
    let r = ureq::post(&format!("{}/v1/sandboxes/{batch}/exec", s.url))
        .query("index", &index.to_string())
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(json!({"command": command}));
    match r {
        Ok(r) => {
            let text = r.into_string().unwrap();
            Ok(text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect())
        }
        Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
        Err(e) => panic!("{e}"),
    }
}

/// A command's standard output and its end.
pub fn run(s: &Server, batch: u64, index: u32, command: &[&str]) -> (String, Value) {
    let events = exec_as(s, &s.token, batch, index, command).unwrap();
    let out: String = events.iter().filter_map(|e| e["stdout"].as_str()).collect();
    (out, events.last().unwrap().clone())
}

/// How many pooled sandboxes the agent working in `work` keeps now.
pub fn pooled(work: &std::path::Path) -> usize {
    std::fs::read_dir(work)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("warm-"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether sandboxes here run isolated (root, and bubblewrap installed).
pub fn isolated_here() -> bool {
    agent::users::is_root()
        && ["/usr/bin/bwrap", "/bin/bwrap"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
}
