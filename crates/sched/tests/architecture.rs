//! Architecture invariant: `model` and `sched` know nothing about HTTP, JSON, SQL, files or
//! clocks. Checked on their manifests and sources, so that a new dependency or a stray
//! `Instant::now()` fails the build's tests, not a review.

use std::path::Path;

const FORBIDDEN_DEPS: [&str; 12] = [
    "tokio",
    "axum",
    "hyper",
    "reqwest",
    "serde_json",
    "toml",
    "rusqlite",
    "sqlx",
    "rand",
    "chrono",
    "time",
    "tracing",
];

const FORBIDDEN_CODE: [&str; 7] = [
    "std::fs",
    "std::net",
    "std::time",
    "Instant::",
    "SystemTime",
    "std::env",
    "std::process",
];

fn check_crate(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .map(|rest| rest.split("\n[").next().unwrap_or(""))
        .unwrap_or("");
    for line in deps.lines() {
        let name = line.split(['=', '.']).next().unwrap_or("").trim();
        if FORBIDDEN_DEPS.contains(&name) {
            problems.push(format!("{}: depends on {name}", dir.display()));
        }
    }
    let mut stack = vec![dir.join("src")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for bad in FORBIDDEN_CODE {
                if text.contains(bad) {
                    problems.push(format!("{}: uses {bad}", path.display()));
                }
            }
        }
    }
    problems
}

#[test]
fn model_and_sched_stay_pure() {
    let sched = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = sched.join("../model");
    let mut problems = check_crate(sched);
    problems.extend(check_crate(&model));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_check_itself_catches_a_violation() {
    let dir = std::env::temp_dir().join(format!("stargrid-arch-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"x\"\n[dependencies]\ntokio = \"1\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("src/lib.rs"),
        "fn f() { let _ = std::time::Instant::now(); }",
    )
    .expect("write");
    let problems = check_crate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(problems.len(), 3, "{problems:#?}");
}
