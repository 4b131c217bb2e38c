//! Running the `stargrid` binary offline, in a directory of files, as a user at a shell does.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `stargrid args…` in `dir`.
pub fn stargrid(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run stargrid")
}

/// The standard output of a run that must have succeeded (else its output, in the panic).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The standard output of a successful run, as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}
