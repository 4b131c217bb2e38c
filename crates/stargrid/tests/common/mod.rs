//! What the end-to-end tests share: real `stargrid server` and `stargrid agent` processes on
//! loopback, their admin tokens, HTTP helpers, and the journal backends this machine has.

#![allow(dead_code, clippy::unwrap_used)]

pub mod hostile;
pub mod offline;
pub mod sandboxes;
pub mod serving;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process that is killed when the test ends, passing or not.
pub struct Proc(pub Child);

impl Proc {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server on a free port over `data`; returns the process and its base URL.
pub fn start_server(data: &Path) -> (Proc, String) {
    start_server_with(data, &[])
}

pub fn start_server_with(data: &Path, extra: &[&str]) -> (Proc, String) {
    let (server, url, _) = start_server_saying(data, extra);
    (server, url)
}

/// A server as `start_server_with`, and the line it printed when it started listening.
pub fn start_server_saying(data: &Path, extra: &[&str]) -> (Proc, String, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_stargrid"));
    server
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::inherit());
    let (child, line) = spawn_saying(&mut server);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    tokens().insert(url.clone(), token.trim().to_string());
    (child, url, line)
}

/// Starts `command` (its stdout piped) and reads the first line it prints.
pub fn spawn_saying(command: &mut Command) -> (Proc, String) {
    let mut child = command
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

/// Admin token of each test server, by base URL (tests run in parallel, one server each).
pub fn tokens() -> std::sync::MutexGuard<'static, BTreeMap<String, String>> {
    static TOKENS: std::sync::Mutex<BTreeMap<String, String>> =
        std::sync::Mutex::new(BTreeMap::new());
    TOKENS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The admin token of the server `url` belongs to.
pub fn admin_token(url: &str) -> String {
    tokens()
        .iter()
        .find(|(base, _)| url == base.as_str() || url.starts_with(&format!("{base}/")))
        .map(|(_, t)| t.clone())
        .unwrap_or_default()
}

pub fn get(url: &str) -> ureq::Request {
    ureq::get(url).set("Authorization", &format!("Bearer {}", admin_token(url)))
}

pub fn post(url: &str) -> ureq::Request {
    ureq::post(url).set("Authorization", &format!("Bearer {}", admin_token(url)))
}

/// Writes `token` into `dir` in a file only its owner can read (agents take their credential
/// from such a file only) and returns its path.
pub fn token_file(dir: &Path, token: &str) -> std::path::PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{}.token", token.get(..12).unwrap_or(token)));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(token.as_bytes()).unwrap();
    path
}

/// An agent process: `--node NAME` or `--hollow N`, and more flags.
pub fn start_agent(url: &str, work: &Path, args: &[&str]) -> Proc {
    start_agent_as(url, work, &admin_token(url), args)
}

/// An agent process with the credential `token`.
pub fn start_agent_as(url: &str, work: &Path, token: &str, args: &[&str]) -> Proc {
    start_agent_saying(url, work, token, args, &[]).0
}

/// An agent process with the credential `token` (from a private file next to `work`), more
/// environment, and the line it printed when it started.
pub fn start_agent_saying(
    url: &str,
    work: &Path,
    token: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Proc, String) {
    let credential = token_file(work.parent().unwrap_or(work), token);
    let mut agent = Command::new(env!("CARGO_BIN_EXE_stargrid"));
    agent
        .args([
            "agent",
            "--server",
            url,
            "--interval-ms",
            "200",
            "--work-dir",
        ])
        .arg(work)
        .args(args)
        .env("STARGRID_TOKEN_FILE", credential)
        .envs(envs.iter().copied())
        // What it says of its tasks, for a failing test to show (see `agent_said`).
        .stderr(
            std::fs::File::create(work.with_extension("stderr"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        );
    spawn_saying(&mut agent)
}

/// What the agent working in `work` wrote to its standard error so far.
pub fn agent_said(work: &Path) -> String {
    std::fs::read_to_string(work.with_extension("stderr")).unwrap_or_default()
}

/// One agent per named node, running real tasks in `work/<node>`: a second's grace to stop a
/// task, and a minute without the server before fencing.
pub fn start_node_agents(url: &str, work: &Path, nodes: &[&str]) -> Vec<Proc> {
    nodes
        .iter()
        .map(|n| {
            start_agent(
                url,
                &work.join(n),
                &["--node", n, "--grace-s", "1", "--fence-after-s", "60"],
            )
        })
        .collect()
}

/// Waits (up to 20 s) until `check` holds.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn nodes_up(url: &str) -> usize {
    let nodes: Value = get(&format!("{url}/v1/nodes"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] != "down")
        .count()
}

pub fn get_job(url: &str, id: u64) -> Value {
    get_path(url, &format!("/v1/jobs/{id}"))
}

pub fn get_path(url: &str, path: &str) -> Value {
    get(&format!("{url}{path}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

pub fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

pub fn job(name: &str, nodes: u32) -> Value {
    json!({"name": name, "tenant": "default", "nodes": nodes, "gpus_per_node": 4, "time_limit_s": 3600})
}

/// Every job the server lists, through the pages.
pub fn all_jobs(url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page: Value = get(&format!("{url}/v1/jobs?after={after}&limit=7"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        out.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Extra server flags for each journal backend this machine has: the SQLite default always,
/// and a fresh PostgreSQL database when `STARGRID_TEST_POSTGRES` names a server (CI sets it).
pub fn backends() -> Vec<Vec<String>> {
    let mut all = vec![Vec::new()];
    if let Ok(admin) = std::env::var("STARGRID_TEST_POSTGRES") {
        all.push(vec![
            "--store".into(),
            store::fresh_database(&admin).unwrap(),
        ]);
    }
    all
}

pub fn flags(extra: &[String]) -> Vec<&str> {
    extra.iter().map(String::as_str).collect()
}

/// A server started on a given `--listen` address over a store, with more flags; it may stand
/// by first. Returns the process and a receiver of its first stdout line (said once it serves).
pub fn spawn_server_on(
    data: &Path,
    listen: &str,
    extra: &[&str],
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--listen", listen])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    (Proc(child), rx)
}

/// Writes a tenants file with two tenants, `vision` and `speech`, of 100 GPUs each, into `dir`;
/// returns its path (for `--tenants`).
pub fn two_tenants(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        "[[tenants]]\nname = \"vision\"\ngpus = 100\n\n[[tenants]]\nname = \"speech\"\ngpus = 100\n",
    )
    .unwrap();
    path
}

/// A new token for `tenant`, issued by the admin of the server at `url`.
pub fn tenant_token(url: &str, tenant: &str) -> String {
    let t: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "tenant", "tenant": tenant}))
        .unwrap()
        .into_json()
        .unwrap();
    t["token"].as_str().unwrap().to_string()
}

/// A frontend of `writer`, with the admin credential in `dir`; its process and address.
pub fn start_frontend(writer: &str, dir: &std::path::Path) -> (Proc, std::net::SocketAddr) {
    let credential = token_file(dir, &admin_token(writer));
    let mut child = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["frontend", "--server", writer, "--listen", "127.0.0.1:0"])
        .args(["--alive-every-ms", "1000"])
        .env("STARGRID_TOKEN_FILE", credential)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    (Proc(child), addr)
}

/// Runs the CLI against the server `url` with `token`: (success, stdout, stderr).
pub fn cli(url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(args)
        .env("STARGRID_SERVER", url)
        .env("STARGRID_TOKEN", token)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
