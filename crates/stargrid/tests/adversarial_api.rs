//! The live plane under attack through its API, on loopback: tenants reading each other's
//! reasons, requests too large for any fleet or past a tenant's limits, and the network (TLS,
//! plain HTTP off loopback). Each is refused with a clear error naming the field, and nothing
//! accepted before is lost.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{start_server, start_server_with};
use common::wait_for;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

#[test]
fn a_tenants_reasons_never_name_another_tenants_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = common::hostile::two_tenants(dir.path(), "");
    let s = start_server_with(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap()],
    );
    // No node is up: beta's training job fails first, and alpha's job of the same shape is
    // passed over because of it.
    let job = |tenant: &str, priority: &str| {
        json!({"name": "j", "tenant": tenant, "priority": priority, "nodes": 4,
               "gpus_per_node": 4, "time_limit_s": 600, "command": ["true"]})
    };
    s.post("/v1/jobs", job("beta", "training")).unwrap();
    s.post("/v1/jobs", job("alpha", "research")).unwrap();
    let alpha: Value = s
        .post("/v1/tokens", json!({"role": "tenant", "tenant": "alpha"}))
        .unwrap();
    let alpha = alpha["token"].as_str().unwrap().to_string();
    let why_as = |token: &str| -> String {
        let v: Value = ureq::get(&format!("{}/v1/jobs/2/why", s.url))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        v["reason"].as_str().unwrap_or_default().to_string()
    };
    wait_for("a pass", || why_as(&s.token).contains("same shape"));
    // The operator sees which job; the tenant learns the fact, not the other tenant's job.
    assert!(why_as(&s.token).contains("(w1)"), "{}", why_as(&s.token));
    let seen = why_as(&alpha);
    assert!(
        seen.contains("a job of the same shape could not be placed"),
        "{seen}"
    );
    assert!(!seen.contains("w1"), "{seen}");
    let listed: Value = ureq::get(&format!("{}/v1/jobs", s.url))
        .set("Authorization", &format!("Bearer {alpha}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(!listed.to_string().contains("w1"), "{listed}");
}

#[test]
fn requests_no_fleet_could_hold_or_too_large_to_journal_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let job = |extra: Value| {
        let mut j = json!({"name": "big", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
                           "time_limit_s": 60, "command": ["true"]});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        j
    };
    let refused = |path: &str, body: Value| -> (u16, Value) {
        let (code, body) = s.post(path, body).unwrap_err();
        (code, serde_json::from_str(&body).unwrap())
    };
    // A job of a million nodes would wait forever: refused, naming the field and the fleet.
    let (code, e) = refused("/v1/jobs", job(json!({"nodes": 1_000_000})));
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("nodes")),
        "{e}"
    );
    assert!(
        e["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("the whole fleet has 144"),
        "{e}"
    );
    // 900 KB of environment would be journaled and replayed at every restart.
    let env = json!({"BLOB": "x".repeat(900_000)});
    let (code, e) = refused("/v1/jobs", job(json!({"env": env})));
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("env")),
        "{e}"
    );
    // A service whose replicas no fleet could hold.
    let (code, e) = refused(
        "/v1/services",
        json!({"name": "huge", "tenant": "default", "gpu": "GB200", "nodes_per_replica": 1,
               "gpus_per_node": 4, "min_replicas": 100000, "max_replicas": 100000,
               "command": ["serve"]}),
    );
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("max_replicas")),
        "{e}"
    );
    // Nothing was journaled for them; ordinary work still goes in.
    assert_eq!(s.post("/v1/jobs", job(json!({}))).unwrap()["id"], 1);
}

/// A certificate authority, and a server certificate it signed for 127.0.0.1 and localhost:
/// (ca.pem, cert.pem, key.pem) in `dir`.
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = [
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ];
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

#[test]
fn the_api_speaks_tls_that_clients_and_agents_verify_and_plain_http_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = certificates(dir.path());
    let data = dir.path().join("data");
    let (_server, url) = common::start_server_with(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(url.starts_with("https://"), "{url}");
    let admin = common::token_file(
        dir.path(),
        std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim(),
    );
    let cli = |args: &[&str], with_ca: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stargrid"));
        c.args(args)
            .args(["--server", &url])
            .env("STARGRID_TOKEN_FILE", &admin)
            .env("RUST_BACKTRACE", "0");
        if with_ca {
            c.arg("--ca").arg(&ca);
        }
        c.output().unwrap()
    };
    // The CLI verifies the server against the CA it was given.
    let ok = cli(&["nodes"], true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without it, the server's certificate is not trusted: nothing is sent.
    let refused = cli(&["nodes"], false);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("reaching the server"), "{err}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = url.replace("https://", "http://");
    assert!(ureq::get(&format!("{plain}/healthz")).call().is_err());
    // An agent verifies the server too, and its node comes up over TLS.
    let issued = cli(
        &["token", "--role", "agent", "--nodes", "nvl00000t00"],
        true,
    );
    assert!(issued.status.success());
    let cred = common::token_file(
        &dir.path().join("agent"),
        String::from_utf8_lossy(&issued.stdout).trim(),
    );
    let _agent = common::Proc(
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["agent", "--server", &url, "--node", "nvl00000t00"])
            .arg("--ca")
            .arg(&ca)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .args([
                "--interval-ms",
                "200",
                "--no-cgroups",
                "--tasks-as-agent-user",
            ])
            .env("STARGRID_TOKEN_FILE", &cred)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the node up over TLS", || {
        let out = cli(&["nodes"], true);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("nvl00000t00") && !l.contains("down"))
    });
    // Plain HTTP off loopback is refused at start, naming the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("open"))
        .args(["--listen", "0.0.0.0:0"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bearer tokens in clear"), "{err}");
}

#[test]
fn tenants_are_held_to_their_limits_and_sandboxes_to_their_quota() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = common::hostile::two_tenants(dir.path(), "cpus = 20\n");
    let s = start_server_with(
        &dir.path().join("data"),
        &[
            "--tenants",
            tenants.to_str().unwrap(),
            "--max-live-jobs-per-tenant",
            "3",
            "--max-replicas-per-service",
            "4",
            "--max-sandboxes-per-batch",
            "50",
            "--max-sandboxes-per-tenant",
            "80",
        ],
    );
    let nodes = s.get("/v1/nodes").unwrap();
    for n in nodes.as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        if name.starts_with("cpu") {
            s.beat(name, json!([]));
        }
    }
    let job = |tenant: &str| {
        json!({"name": "j", "tenant": tenant, "nodes": 1, "gpus_per_node": 4,
               "time_limit_s": 600, "command": ["true"]})
    };
    // Live jobs per tenant (no GPU node is up: they wait).
    for _ in 0..3 {
        s.post("/v1/jobs", job("alpha")).unwrap();
    }
    let (code, body) = s.post("/v1/jobs", job("alpha")).unwrap_err();
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("\"tenant\"") && body.contains("--max-live-jobs-per-tenant"),
        "{body}"
    );
    // Another tenant is not held to alpha's count; a cancelled job frees its place.
    s.post("/v1/jobs", job("beta")).unwrap();
    s.post("/v1/jobs/1/cancel", json!({})).unwrap();
    s.post("/v1/jobs", job("alpha")).unwrap();
    // A service asking for more replicas than a service may have.
    let (code, body) = s
        .post(
            "/v1/services",
            json!({"name": "s", "tenant": "beta", "gpus_per_node": 4, "min_replicas": 1,
                   "max_replicas": 5}),
        )
        .unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"max_replicas\""), "{body}");
    // A service of no replicas costs nothing at creation; scaling it up counts (beta holds one
    // job: two more replicas fit its three, three do not).
    let service = s
        .post(
            "/v1/services",
            json!({"name": "s", "tenant": "beta", "gpus_per_node": 4, "min_replicas": 0,
                   "max_replicas": 4}),
        )
        .unwrap();
    let scale = format!("/v1/services/{}/scale", service["id"]);
    let (code, body) = s.post(&scale, json!({"replicas": 3})).unwrap_err();
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("--max-live-jobs-per-tenant"), "{body}");
    s.post(&scale, json!({"replicas": 2})).unwrap();
    // Sandbox batches: too many in one, too small to count.
    let batch = |tenant: &str, count: u32, cpu_millis: u32| {
        json!({"name": "b", "tenant": tenant, "count": count, "cpu_millis": cpu_millis,
               "memory_mib": 64, "command": ["sleep", "60"]})
    };
    let (code, body) = s.post("/v1/sandboxes", batch("beta", 51, 500)).unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("--max-sandboxes-per-batch"), "{body}");
    let (code, body) = s.post("/v1/sandboxes", batch("beta", 10, 1)).unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"cpu_millis\""), "{body}");
    // Live sandboxes per tenant: 50 + 40 > 80 until the first batch is cancelled.
    let first = s.post("/v1/sandboxes", batch("beta", 50, 500)).unwrap();
    let (code, body) = s.post("/v1/sandboxes", batch("beta", 40, 500)).unwrap_err();
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("--max-sandboxes-per-tenant"), "{body}");
    s.post(&format!("/v1/sandboxes/{}/cancel", first["id"]), json!({}))
        .unwrap();
    s.post("/v1/sandboxes", batch("beta", 40, 500)).unwrap();
    // Sandboxes are charged to the tenant's quota: alpha has 20 cores.
    s.post("/v1/sandboxes", batch("alpha", 30, 500)).unwrap();
    let (code, body) = s
        .post("/v1/sandboxes", batch("alpha", 20, 500))
        .unwrap_err();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("quota"), "{body}");
    s.post("/v1/sandboxes", batch("alpha", 10, 500)).unwrap();
    // Nothing accepted before is lost.
    assert_eq!(s.get("/v1/jobs/2").unwrap()["state"], "pending");
    assert_eq!(s.get("/v1/jobs/4").unwrap()["state"], "pending");
}
