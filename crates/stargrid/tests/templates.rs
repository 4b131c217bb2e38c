//! Sandbox templates end to end: a real agent offering a root file system of its own (a tiny
//! one made here from the host's `sh`, `cat`, `ls` and `id` and their libraries), sandboxes
//! that see it and not the host's, a warm pool of it, and a template no node offers refused at
//! submission.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{start_cpu_host_with, start_server};
use common::sandboxes::{cli, isolated_here, pooled, run};
use common::wait_for;
use serde_json::json;
use std::path::{Path, PathBuf};

const HOST: &str = "cpu0000000";

/// A root file system with `programs` from the host's `/usr/bin` in its `/bin`, the libraries
/// they need where the host has them, and `/etc/template-marker`. No `/usr`.
fn tiny_root(root: &Path, programs: &[&str]) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/template-marker"), "tiny template\n").unwrap();
    // A preload list the helpers (run as root before the drop) must not load.
    std::fs::write(root.join("etc/ld.so.preload"), "/nonexistent/evil.so\n").unwrap();
    for p in programs {
        let host = PathBuf::from("/usr/bin").join(p);
        std::fs::copy(&host, root.join("bin").join(p)).unwrap();
        let ldd = std::process::Command::new("ldd")
            .arg(&host)
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            let Some(lib) = path.filter(|p| p.starts_with('/')) else {
                continue;
            };
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, &to).unwrap();
        }
    }
}

#[test]
fn sandboxes_run_in_their_templates_root_and_not_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny");
    tiny_root(&root, &["sh", "cat", "ls", "id"]);
    let s = start_server(&dir.path().join("data"));
    let template = format!("tiny={}", root.display());
    if !isolated_here() {
        // Without an isolation layer an agent refuses to offer a template, and says why.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["agent", "--server", &s.url, "--node", HOST, "--work-dir"])
            .arg(dir.path().join("host"))
            .args(["--template", &template])
            .env("STARGRID_TOKEN", &s.token)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("templates need an isolation layer"), "{said}");
        return;
    }
    let work = dir.path().join("host");
    let (_agent, said) = start_cpu_host_with(
        &s,
        &work,
        &["--template", &template, "--warm-pool", "tiny=1"],
    );
    assert!(said.contains("templates tiny"), "{said}");
    // A template no node offers is refused by name, with the ones offered (a node's offer
    // is taken once its heartbeat's record is durable, just after the node is up).
    let refusal = || {
        s.post(
            "/v1/sandboxes",
            json!({"name": "b", "tenant": "default", "count": 1, "cpu_millis": 100,
                   "memory_mib": 64, "interactive": true, "template": "python"}),
        )
        .unwrap_err()
    };
    wait_for("the host's offer", || refusal().1.contains("offered: tiny"));
    let refused = refusal();
    assert_eq!(refused.0, 400, "{refused:?}");
    assert!(refused.1.contains("template"), "{refused:?}");
    wait_for("the template's pool to fill", || pooled(&work) == 1);
    let (code, said, err) = cli(
        &s,
        &[
            "sandbox",
            "create",
            "--template",
            "tiny",
            "--memory-mib",
            "256",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let batch: u64 = said.trim().parse().unwrap();
    assert_eq!(
        s.get(&format!("/v1/sandboxes/{batch}")).unwrap()["template"],
        "tiny"
    );
    // It sees the template's files and programs, not the host's `/usr`; it is its tenant's
    // user; its scratch is writable.
    let (out, end) = run(
        &s,
        batch,
        0,
        &[
            "sh",
            "-c",
            "cat /etc/template-marker; ls /usr || echo no-usr; id -u; echo x > f && cat f; \
             cat /etc/ld.so.preload 2>/dev/null || echo hidden",
        ],
    );
    assert_eq!(end["exit_code"], 0, "{end} {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tiny template", "{out}");
    assert_eq!(lines[1], "no-usr", "{out}");
    assert_eq!(
        lines[2].parse::<u32>().unwrap(),
        agent::users::DEFAULT_UID_BASE,
        "{out}"
    );
    assert_eq!(lines[3], "x", "{out}");
    // The template's preload list is hidden (the helpers ran without it).
    assert_eq!(lines[4], "hidden", "{out}");
    // The template is read-only.
    let (_, end) = run(&s, batch, 0, &["sh", "-c", "echo y > /etc/template-marker"]);
    assert_ne!(end["exit_code"], 0, "{end}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/template-marker")).unwrap(),
        "tiny template\n"
    );
    // It was the pooled one (a second was started in its place).
    wait_for("the pool's second sandbox", || {
        work.join(format!("warm-{HOST}-2")).exists()
    });
    // A batch sandbox runs its command in the template too.
    let run = s
        .post(
            "/v1/sandboxes",
            json!({"name": "c", "tenant": "default", "count": 1, "cpu_millis": 100,
                   "memory_mib": 64, "template": "tiny",
                   "command": ["sh", "-c", "test -f /etc/template-marker && ! test -e /usr"]}),
        )
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    wait_for("the batch to end", || {
        s.get(&format!("/v1/sandboxes/{run}")).unwrap()["state"] == "finished"
    });
    let view = s.get(&format!("/v1/sandboxes/{run}")).unwrap();
    let log =
        std::fs::read_to_string(work.join(format!("{run}-sandbox-0/log"))).unwrap_or_default();
    assert_eq!(view["succeeded"], 1, "{view} {log}");
}
