//! What the live-inference tests share: a cell of a server, two trays' real agents and a
//! `stargrid gateway`; services of the model stand-in; `stargrid load` in the background.

#![allow(dead_code, clippy::unwrap_used)]

use super::*;
use serde_json::{json, Value};
use std::process::Command;

/// A server, two trays' real agents, and a gateway.
pub struct Cell {
    pub url: String,
    pub gateway: String,
    /// The stargrid program replicas run (a copy their tenant's user may run).
    pub program: String,
    pub _server: Proc,
    pub agents: Vec<Proc>,
    pub _gateway: Proc,
}

impl Cell {
    pub fn start(dir: &std::path::Path) -> Cell {
        let program = shared_program(dir);
        let (server, url) = start_server(&dir.join("data"));
        let agents = ["nvl00000t00", "nvl00000t01"]
            .iter()
            .map(|n| {
                start_agent(
                    &url,
                    &dir.join(n),
                    // Long enough for a stopped replica to drain (1.5 s) and finish.
                    &[
                        "--node",
                        n,
                        "--fake-gpus",
                        "4",
                        "--gpu-model",
                        "GB200",
                        "--grace-s",
                        "5",
                    ],
                )
            })
            .collect();
        wait_for("the nodes to come up", || nodes_up(&url) == 2);
        let (gateway, address) = start_gateway(&url);
        Cell {
            url,
            gateway: format!("http://{address}"),
            program,
            _server: server,
            agents,
            _gateway: gateway,
        }
    }

    /// A service of one-GPU replicas of the stand-in (10 tokens, 20 ms apart), scaling on
    /// 2 requests in flight per replica; its id.
    pub fn chat(&self, min: u32, max: u32) -> u64 {
        self.standin_service(
            &self.standin("--tokens 10 --token-delay-ms 20"),
            json!({"name": "chat", "min_replicas": min, "max_replicas": max,
                   "autoscale": {"target_inflight_per_replica": 2, "scale_up_window_s": 0,
                                 "scale_down_window_s": 4}}),
        )
    }

    /// The stand-in's command line with `args` (a copy of the program replicas may run).
    pub fn standin(&self, args: &str) -> String {
        format!("{} model-standin {args}", self.program)
    }

    /// Creates a service of one-GPU replicas running `command` (split on spaces), ready once
    /// `/ready` answers, with `spec`'s other fields (name, bounds, autoscale); its id.
    pub fn standin_service(&self, command: &str, mut spec: Value) -> u64 {
        let fields = spec.as_object_mut().unwrap();
        for (k, v) in [
            ("tenant", json!("default")),
            ("gpu", json!("GB200")),
            ("nodes_per_replica", json!(1)),
            ("gpus_per_node", json!(1)),
            ("ready_path", json!("/ready")),
        ] {
            fields.entry(k).or_insert(v);
        }
        fields.insert(
            "command".into(),
            json!(command.split(' ').collect::<Vec<_>>()),
        );
        let created: Value = post(&format!("{}/v1/services", self.url))
            .send_json(spec)
            .unwrap()
            .into_json()
            .unwrap();
        created["id"].as_u64().unwrap()
    }

    pub fn service(&self, id: u64) -> Value {
        get_path(&self.url, &format!("/v1/services/{id}"))
    }
}

impl Drop for Cell {
    /// The agents stop their replicas on the way out (killed, they would leave them running).
    fn drop(&mut self) {
        for a in &self.agents {
            let _ = Command::new("kill")
                .args(["-INT", &a.id().to_string()])
                .status();
        }
        for a in &mut self.agents {
            for _ in 0..100 {
                if !matches!(a.0.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// A copy of the stargrid program under `dir` that anyone may run: run as root, an agent runs
/// tasks as their tenant's user, who may not reach the build's directory.
pub fn shared_program(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let copy = bin.join("stargrid");
    std::fs::copy(env!("CARGO_BIN_EXE_stargrid"), &copy).unwrap();
    for p in [dir, bin.as_path(), copy.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy.display().to_string()
}

/// `stargrid gateway` on a free port with the admin token; its process and address.
pub fn start_gateway(url: &str) -> (Proc, String) {
    let (gateway, line) = spawn_saying(
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["gateway", "--server", url, "--listen", "127.0.0.1:0"])
            .env("STARGRID_TOKEN", admin_token(url)),
    );
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|w| w.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (gateway, address)
}

/// `stargrid load` against `url` in the background: its JSON report when it ends.
pub fn load(url: &str, args: &[&str]) -> std::thread::JoinHandle<Value> {
    let (url, args): (String, Vec<String>) = (
        url.to_string(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    std::thread::spawn(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .arg("load")
            .arg(&url)
            .args(&args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    })
}

/// Waits up to `secs` for `check`.
pub fn wait_long(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out after {secs} s waiting for {what}");
}
