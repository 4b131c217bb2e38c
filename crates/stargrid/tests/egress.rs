//! Egress allow-lists end to end: an interactive sandbox whose allow-list names a server
//! reaches it through its proxy and reaches nothing else (not the control plane, not the
//! server directly); a sandbox without one has no way out; bad allow-lists are refused by
//! field.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{start_cpu_host_with, start_server, Server};
use common::sandboxes::{cli, isolated_here, run};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::net::TcpListener;

/// A server on loopback that answers each line with `pong: LINE`; its port.
fn echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                    let _ = writeln!(w, "pong: {line}");
                }
            });
        }
    });
    port
}

fn exec(s: &Server, batch: u64, script: &str) -> (String, Value) {
    run(s, batch, 0, &["bash", "-c", script])
}

fn create(s: &Server, args: &[&str]) -> u64 {
    let (code, said, err) = cli(
        s,
        &[&["sandbox", "create", "--memory-mib", "256"], args].concat(),
    );
    assert_eq!(code, 0, "{err}");
    said.trim().parse().unwrap()
}

/// A `CONNECT` to `target` through the sandbox's proxy, then one line through the tunnel:
/// prints the proxy's status line and what came back (or the rest of its refusal).
fn through_proxy(target: &str) -> String {
    format!(
        "exec 3<>/dev/tcp/127.0.0.1/3128 || exit 7; \
         printf 'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n' >&3; \
         read -r status <&3; echo \"$status\"; \
         case \"$status\" in *' 200 '*) read -r blank <&3; echo ping >&3; read -r reply <&3; \
         echo \"$reply\";; *) cat <&3;; esac"
    )
}

#[test]
fn a_sandbox_reaches_what_its_allow_list_names_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    // Refused by field: an allow-list on a batch that runs a command, and a bad rule.
    let batch = json!({"name": "b", "tenant": "default", "count": 1, "cpu_millis": 100,
                       "memory_mib": 64, "command": ["true"], "egress": ["pypi.org"]});
    let refused = s.post("/v1/sandboxes", batch).unwrap_err();
    assert!(
        refused.0 == 400 && refused.1.contains("\"egress\""),
        "{refused:?}"
    );
    let bad = json!({"name": "b", "tenant": "default", "count": 1, "cpu_millis": 100,
                     "memory_mib": 64, "interactive": true,
                     "egress": ["pypi.org", "evil.com:99999"]});
    let refused = s.post("/v1/sandboxes", bad).unwrap_err();
    assert!(
        refused.0 == 400 && refused.1.contains("egress[1]") && refused.1.contains("65535"),
        "{refused:?}"
    );
    let isolated = isolated_here();
    let (_agent, said) = start_cpu_host_with(
        &s,
        &dir.path().join("host"),
        &["--egress-allow-net", "127.0.0.1/32"],
    );
    let port = echo();
    let allowed = format!("127.0.0.1:{port}");
    let batch = create(&s, &["--egress", &allowed, "--egress", "*.example.com"]);
    let view = s.get(&format!("/v1/sandboxes/{batch}")).unwrap();
    assert_eq!(
        view["egress"],
        json!([allowed.clone(), "*.example.com:443"]),
        "{view}"
    );
    if !isolated {
        // Without an isolation layer an allow-list cannot be kept: the sandbox fails.
        assert!(said.contains("no isolation layer"), "{said}");
        common::wait_for("the sandbox to fail", || {
            s.get(&format!("/v1/sandboxes/{batch}")).unwrap()["failed"] == 1
        });
        return;
    }
    // Through the proxy, to the listed server: the tunnel carries its answer.
    let (out, end) = exec(&s, batch, &through_proxy(&allowed));
    assert_eq!(
        end["exit_code"],
        0,
        "{end} {out} {}",
        common::agent_said(&dir.path().join("host"))
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(lines[1], "pong: ping", "{out}");
    // The proxy is where the environment says.
    let (out, _) = exec(&s, batch, "echo $HTTPS_PROXY");
    assert_eq!(out, "http://127.0.0.1:3128\n");
    // The control plane's port, on the same address, is not listed; and a sandbox that lists
    // it gets nothing either (the agent never dials its control plane for a sandbox).
    let server_port = s.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let control_plane = format!("127.0.0.1:{server_port}");
    let (out, _) = exec(&s, batch, &through_proxy(&control_plane));
    assert!(out.contains("403") && out.contains("allow-list"), "{out}");
    let bold = create(&s, &["--egress", &control_plane]);
    let (out, end) = exec(&s, bold, &through_proxy(&control_plane));
    assert!(
        out.contains("403") && out.contains("no address"),
        "{out} {end} {}",
        common::agent_said(&dir.path().join("host"))
    );
    // Nor is anything reached without the proxy.
    let (_, end) = exec(
        &s,
        batch,
        &format!("exec 4<>/dev/tcp/127.0.0.1/{port} && echo connected"),
    );
    assert_ne!(end["exit_code"], 0, "{end}");
    // A sandbox without an allow-list has no proxy at all.
    let closed = create(&s, &[]);
    let (out, end) = exec(&s, closed, &through_proxy(&allowed));
    assert_eq!(end["exit_code"], 7, "{end} {out}");
}
