//! A server for attack tests: a real `stargrid server` process on loopback with its admin
//! token, and requests as any token, answering the body or the refusal's status and text.

use super::wait_for;
use serde_json::{json, Value};

pub struct Server {
    _process: super::Proc,
    pub url: String,
    pub token: String,
}

pub fn start_server(data: &std::path::Path) -> Server {
    start_server_with(data, &[])
}

pub fn start_server_with(data: &std::path::Path, extra: &[&str]) -> Server {
    let (process, url) = super::start_server_with(data, extra);
    let token = super::admin_token(&url);
    Server {
        _process: process,
        url,
        token,
    }
}

/// A tenants file of two tenants, alpha and beta, with 1,000 GPUs each (and `alpha_extra`
/// lines for alpha); returns its path.
pub fn two_tenants(dir: &std::path::Path, alpha_extra: &str) -> std::path::PathBuf {
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        format!(
            "[[tenants]]\nname = \"alpha\"\ngpus = 1000\n{alpha_extra}\
             [[tenants]]\nname = \"beta\"\ngpus = 1000\n"
        ),
    )
    .unwrap();
    path
}

impl Server {
    /// A new token of tenant `tenant` (issued with the admin token).
    pub fn tenant_token(&self, tenant: &str) -> String {
        self.post("/v1/tokens", json!({"role": "tenant", "tenant": tenant}))
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

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

/// The CPU host `cpu0000000` played by a real agent in `work` (a second's grace to stop a
/// task), once the server counts it up; the agent and the line it printed when it started.
pub fn start_cpu_host(s: &Server, work: &std::path::Path) -> (super::Proc, String) {
    start_cpu_host_with(s, work, &[])
}

/// As [`start_cpu_host`], with more agent flags.
pub fn start_cpu_host_with(
    s: &Server,
    work: &std::path::Path,
    extra: &[&str],
) -> (super::Proc, String) {
    let mut args = vec!["--node", "cpu0000000", "--grace-s", "1"];
    args.extend_from_slice(extra);
    let started = super::start_agent_saying(&s.url, work, &s.token, &args, &[]);
    wait_for("the host up", || {
        s.get("/v1/nodes")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "cpu0000000" && n["state"] != "down")
    });
    started
}
