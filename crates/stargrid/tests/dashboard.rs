//! The web dashboard in a real browser: headless Chromium driven over the DevTools protocol
//! (`tests/browser/cdp.py`) against a real server with agents. Each page loads and shows what
//! the API holds; a job submitted through the API appears without a reload; a drained domain
//! changes colour; a tenant sees its own work only; the fleet page draws the reference fleet's
//! 6,944 domains. Screenshots of every page are saved under
//! `target/tmp/dashboard-screenshots/`.
//!
//! Without Chromium (`chromium` on the PATH, or `STARGRID_CHROMIUM`) these tests say so and
//! pass, unless `STARGRID_REQUIRE_CHROMIUM=1` (CI sets it), when they fail.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

fn chromium() -> Option<String> {
    let binary = std::env::var("STARGRID_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(binary);
    }
    assert!(
        std::env::var("STARGRID_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "STARGRID_REQUIRE_CHROMIUM=1 but {binary} cannot be run"
    );
    eprintln!("no Chromium ({binary}): the dashboard's browser tests are skipped");
    None
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One browser page, driven through the protocol helper.
struct Browser {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Browser {
    fn new(binary: &str) -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/cdp.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("STARGRID_CHROMIUM", binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            input,
            output,
        }
    }

    fn send(&mut self, command: Value) -> Value {
        writeln!(self.input, "{command}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("driver said {line:?} ({e}) to {command}"));
        assert_eq!(answer["ok"], true, "{command}: {answer}");
        answer["value"].clone()
    }

    /// Logs in with `token` through the login link and opens `page` once it has drawn.
    fn login(&mut self, url: &str, token: &str, page: &str) {
        self.send(
            json!({"cmd": "goto", "url": format!("{url}/ui/login#token={token}&next={page}")}),
        );
        self.wait(&format!(
            "document.body.dataset.view === '{page}' && document.body.dataset.ready"
        ));
    }

    /// Opens `route` (e.g. `queue`, `domain/a/b`) and waits until it has drawn.
    fn open(&mut self, route: &str) {
        let view = route.split('/').next().unwrap();
        self.eval("document.body.dataset.ready = ''");
        self.eval(&format!("location.hash = '#/{route}'"));
        self.wait(&format!(
            "document.body.dataset.view === '{view}' && document.body.dataset.ready"
        ));
    }

    fn eval(&mut self, expr: &str) -> Value {
        self.send(json!({"cmd": "eval", "expr": expr}))
    }

    fn wait(&mut self, expr: &str) -> Value {
        self.send(json!({"cmd": "wait", "expr": expr, "timeout_s": 30}))
    }

    fn text(&mut self) -> String {
        self.eval("document.getElementById('view').innerText")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn screenshot(&mut self, name: &str) {
        let path = screenshots().join(format!("{name}.png"));
        self.send(json!({"cmd": "screenshot", "path": path}));
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "{}", json!({"cmd": "quit"}));
        let _ = self.child.wait();
    }
}

#[test]
fn every_page_shows_the_live_plane_and_tenants_see_their_own() {
    let Some(binary) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tenants = two_tenants(dir.path());
    let (_server, url) = start_server_with(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap()],
    );
    let admin = admin_token(&url);
    let vision = tenant_token(&url, "vision");
    let speech = tenant_token(&url, "speech");
    let _agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "40"]);
    wait_for("40 nodes up", || nodes_up(&url) == 40);
    let submit = |token: &str, body: Value, path: &str| -> u64 {
        let s: Value = ureq::post(&format!("{url}{path}"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap()
            .into_json()
            .unwrap();
        s["id"].as_u64().unwrap()
    };
    let mut theirs = job("speech-secret", 2);
    theirs["tenant"] = json!("speech");
    let speech_job = submit(&speech, theirs, "/v1/jobs");

    let mut admin_page = Browser::new(&binary);
    admin_page.login(&url, &admin, "queue");
    assert!(
        admin_page.text().contains("speech-secret"),
        "{}",
        admin_page.text()
    );
    // Live: a job submitted now appears without a reload.
    admin_page.eval("window.sameDocument = 42");
    let mut mine = job("vision-live", 1);
    mine["tenant"] = json!("vision");
    let vision_job = submit(&vision, mine, "/v1/jobs");
    admin_page.wait(&format!(
        "!!document.querySelector('[data-job=\"{vision_job}\"] .state-running')"
    ));
    assert_eq!(
        admin_page.eval("window.sameDocument"),
        42,
        "the page reloaded"
    );
    assert_eq!(
        admin_page.eval("document.getElementById('live').textContent"),
        "live"
    );
    admin_page.screenshot("queue");

    // The job's page: its state, nodes and events.
    admin_page.open(&format!("job/{vision_job}"));
    let text = admin_page.text();
    assert!(
        text.contains("vision-live") && text.contains("running"),
        "{text}"
    );
    assert!(text.contains("nvl"), "{text}");
    admin_page.screenshot("job");

    // Fleet: a domain's cell changes colour when it is drained, live.
    admin_page.open("fleet");
    let cells = admin_page.eval("document.querySelectorAll('#view .cells .cell').length");
    assert_eq!(cells, 2, "the default fleet's two NVLink domains");
    let path = admin_page
        .eval("document.querySelector('#view .cells .cell').dataset.path")
        .as_str()
        .unwrap()
        .to_string();
    let class = |b: &mut Browser| {
        b.eval(&format!(
            "document.querySelector('[data-path=\"{path}\"]').className"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    assert!(!class(&mut admin_page).contains("draining"));
    wire::Client::new(&url, &admin).drain(&path).unwrap();
    admin_page.wait(&format!(
        "document.querySelector('[data-path=\"{path}\"]').classList.contains('draining')"
    ));
    admin_page.screenshot("fleet");
    // Its trays, and what runs there.
    admin_page.open(&format!("domain/{path}"));
    let trays = admin_page.eval("document.querySelectorAll('[data-node]').length");
    assert_eq!(trays, 18);
    assert!(admin_page.text().contains("draining"));
    admin_page.screenshot("domain");

    // The other pages draw what the API holds.
    submit(
        &admin,
        json!({"name": "chat", "tenant": "vision", "nodes_per_replica": 1, "gpus_per_node": 4,
               "min_replicas": 1, "max_replicas": 2}),
        "/v1/services",
    );
    submit(
        &admin,
        json!({"name": "rollouts", "tenant": "speech", "count": 8, "cpu_millis": 500, "memory_mib": 256}),
        "/v1/sandboxes",
    );
    for (page, expect) in [
        ("services", "chat"),
        ("sandboxes", "rollouts"),
        ("tenants", "vision"),
        ("money", "By provider"),
        ("history", "History"),
    ] {
        admin_page.open(page);
        admin_page.wait(&format!(
            "document.getElementById('view').innerText.includes('{expect}')"
        ));
        assert!(
            !admin_page.text().contains("Cannot show this page"),
            "{page}: {}",
            admin_page.text()
        );
        admin_page.screenshot(page);
    }

    // Each tenant's quota and what it uses beyond it.
    admin_page.open("tenants");
    let tenants_row = admin_page
        .eval("document.querySelector('[data-tenant=\"vision\"]').innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(tenants_row.contains("100"), "{tenants_row}");
    let listed = get_path(&url, "/v1/tenants");
    let vision_view = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "vision")
        .unwrap()
        .clone();
    assert_eq!(vision_view["quota_gpus"], 100, "{vision_view}");
    assert_eq!(vision_view["borrowed_gpus"], 0, "{vision_view}");

    // A tenant sees its own work, not another's, in the queue and on the trays.
    let mut speech_page = Browser::new(&binary);
    speech_page.login(&url, &speech, "queue");
    let text = speech_page.text();
    assert!(text.contains("speech-secret"), "{text}");
    assert!(!text.contains("vision-live"), "{text}");
    assert_eq!(
        speech_page.eval(&format!(
            "!!document.querySelector('[data-job=\"{vision_job}\"]')"
        )),
        false
    );
    let nodes = get_job(&url, vision_job)["nodes"].clone();
    let tray = nodes[0].as_str().unwrap();
    let domain_of_job = admin_domain_of(&url, tray);
    speech_page.open(&format!("domain/{domain_of_job}"));
    let row = speech_page
        .eval(&format!(
            "document.querySelector('[data-node=\"{tray}\"]').innerText"
        ))
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        row.contains("other tenant") && !row.contains("vision-live"),
        "{row}"
    );
    // The money page is for operators.
    speech_page.open("money");
    assert!(speech_page.text().contains("for admin tokens"));
    speech_page.screenshot("tenant-queue");
    let _ = speech_job;

    // Without a session there is only the login page, and a cookie never changes anything.
    let no_redirects = ureq::AgentBuilder::new().redirects(0).build();
    let login = no_redirects.get(&format!("{url}/ui/")).call().unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.header("location"), Some("/ui/login"));
    // A session is a random id the server maps to the token: it reads, never writes, and
    // logging out ends it.
    let logged_in = no_redirects
        .post(&format!("{url}/ui/login"))
        .send_form(&[("token", admin.as_str()), ("next", "queue")])
        .unwrap();
    assert_eq!(logged_in.status(), 303);
    let set = logged_in.header("set-cookie").unwrap().to_string();
    // Plain HTTP on loopback: the one place the cookie cannot be `Secure`.
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age"),
        "{set}"
    );
    assert!(
        !set.contains(&admin),
        "the token itself is never the cookie: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let read = ureq::get(&format!("{url}/v1/jobs/{vision_job}"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(read.status(), 200);
    let cancel = ureq::post(&format!("{url}/v1/jobs/{vision_job}/cancel"))
        .set("Cookie", &cookie)
        .call();
    assert!(
        matches!(cancel, Err(ureq::Error::Status(401, _))),
        "{cancel:?}"
    );
    // A client cannot claim a session's hash itself.
    let forged = ureq::get(&format!("{url}/v1/jobs"))
        .set("x-stargrid-session-hash", &server::token_hash(&admin))
        .call();
    assert!(
        matches!(forged, Err(ureq::Error::Status(401, _))),
        "{forged:?}"
    );
    // A login posted from another site is refused.
    let cross = no_redirects
        .post(&format!("{url}/ui/login"))
        .set("Origin", "https://evil.example")
        .send_form(&[("token", admin.as_str())])
        .unwrap();
    assert_eq!(cross.header("location"), Some("/ui/login?refused=origin"));
    no_redirects
        .post(&format!("{url}/ui/logout"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    let after = ureq::get(&format!("{url}/v1/jobs"))
        .set("Cookie", &cookie)
        .call();
    assert!(
        matches!(after, Err(ureq::Error::Status(401, _))),
        "{after:?}"
    );
    let page = ureq::get(&format!("{url}/ui/app.js")).call().unwrap();
    let csp = page.header("content-security-policy").unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
}

/// The topology path of the domain that holds node `tray`, from the fleet overview.
fn admin_domain_of(url: &str, tray: &str) -> String {
    let overview = get_path(url, "/v1/fleet/overview");
    for g in overview["groups"].as_array().unwrap() {
        for d in g["domains"].as_array().unwrap() {
            let path = format!(
                "{}/{}",
                g["path"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            );
            let detail = get_path(url, &format!("/v1/fleet/domain?path={path}"));
            if detail["trays"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == tray)
            {
                return path;
            }
        }
    }
    panic!("no domain holds {tray}");
}

#[test]
fn the_fleet_page_draws_the_reference_fleet() {
    let Some(binary) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("reference.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["fleet", "gen", "-o"])
        .arg(&fleet)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, url) = start_server_with(
        &dir.path().join("data"),
        &["--fleet", fleet.to_str().unwrap()],
    );
    let mut page = Browser::new(&binary);
    page.login(&url, &admin_token(&url), "fleet");
    let cells = page.eval("document.querySelectorAll('#view .cells .cell').length");
    assert_eq!(cells, 6944, "one cell per NVLink domain");
    // Its totals: every GPU of the fleet, none in use (no agent reports yet).
    let text = page.text();
    assert!(text.contains("499,968") && text.contains("6,944"), "{text}");
    let drawn_ms = page.eval("Number(document.body.dataset.renderMs)");
    eprintln!("the reference fleet's page drew in {drawn_ms} ms (fetch, layout of 6,944 cells)");
    page.screenshot("fleet-reference");
}
