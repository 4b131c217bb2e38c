//! A server for attack tests: a real `stargrid server` process on loopback with its admin
//! token, and requests as any token, answering the body or the refusal's status and text.

use super::wait_for;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    pub url: String,
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(data: &std::path::Path) -> Server {
    start_server_with(data, &[])
}

pub fn start_server_with(data: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Server { child, url, token }
}

impl Server {
    pub fn post(&self, path: &str, body: Value) -> Result<Value, (u16, String)> {
        self.post_as(&self.token, path, body)
    }

    pub fn post_as(&self, token: &str, path: &str, body: Value) -> Result<Value, (u16, String)> {
        match ureq::post(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body)
        {
            Ok(r) => Ok(r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, (u16, String)> {
        self.get_as(&self.token, path)
    }

    pub fn get_as(&self, token: &str, path: &str) -> Result<Value, (u16, String)> {
        match ureq::get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => Ok(r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A heartbeat for `node`, as an agent would send it.
    pub fn beat(&self, node: &str, logs: Value) -> Value {
        self.post(
            "/v1/agent/heartbeat",
            json!({"node": node, "tasks": [], "logs": logs}),
        )
        .unwrap()
    }
}

/// Brings `node` up (a heartbeat, as its agent would) and waits until job 1, one node, runs
/// there.
pub fn place_a_job_on(s: &Server, node: &str) {
    s.beat(node, json!([]));
    s.post(
        "/v1/jobs",
        json!({"name": "victim", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
               "time_limit_s": 3600, "command": ["sleep", "100"]}),
    )
    .unwrap();
    wait_for("the job on the node", || {
        s.beat(node, json!([]))["assignments"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
}
