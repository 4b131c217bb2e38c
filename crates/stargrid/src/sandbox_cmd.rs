//! `stargrid sandbox create|exec|cp|ls|end`: interactive sandboxes from the command line, over
//! the same API as every client (`wire::Client`). A sandbox is named `BATCH` or `BATCH/INDEX`
//! (index 0 when left out); in `cp`, a path inside one is `BATCH[/INDEX]:PATH`.

use crate::client::fail;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;
use wire::api::{ExecRequest, SubmitSandboxes};
use wire::Client;

/// Bytes moved per request by `cp` (the server takes at most 1 MiB a request).
const CP_CHUNK: usize = 768 << 10;

/// Interactive sandboxes.
#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create interactive sandboxes (they idle until `exec`s come, and end with `end`, their
    /// timeout, or their idle timeout); prints the batch id.
    Create {
        /// The owning tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// A name for the batch.
        #[arg(long, default_value = "sandbox")]
        name: String,
        /// How many (each is addressed as BATCH/INDEX).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// CPU millicores of each.
        #[arg(long, default_value_t = 1000)]
        cpu_millis: u32,
        /// Memory of each, MiB.
        #[arg(long, default_value_t = 512)]
        memory_mib: u32,
        /// Environment of each, NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Seconds until it ends (default 3600).
        #[arg(long)]
        timeout_s: Option<u64>,
        /// Seconds without an exec after which it ends (default 600).
        #[arg(long)]
        idle_timeout_s: Option<u64>,
        /// The template (root file system) it runs in, one its hosts offer; default: the
        /// host's own.
        #[arg(long)]
        template: Option<String>,
        /// A host it may connect to, HOST[:PORT] (`pypi.org`, `*.github.com:22`; port 443
        /// when not given), through its proxy (`HTTPS_PROXY` is set); repeat for each.
        /// Without any: no network but loopback.
        #[arg(long, value_name = "HOST[:PORT]")]
        egress: Vec<String>,
    },
    /// Run a command in a sandbox; its output streams to this terminal and its exit code is
    /// this command's.
    Exec {
        /// BATCH or BATCH/INDEX.
        sandbox: String,
        /// Seconds before the command is killed.
        #[arg(long, default_value_t = 60)]
        timeout_s: u32,
        /// Environment for this command, NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy a file into or out of a sandbox: `cp local BATCH[/I]:path` or
    /// `cp BATCH[/I]:path local`.
    Cp {
        /// Where from.
        from: String,
        /// Where to.
        to: String,
    },
    /// List a directory of a sandbox (default its `/sandbox`).
    Ls {
        /// BATCH or BATCH/INDEX.
        sandbox: String,
        /// The directory.
        #[arg(default_value = ".")]
        path: String,
    },
    /// End interactive sandboxes: every sandbox of the batch stops.
    End {
        /// The batch.
        batch: u64,
    },
}

/// `BATCH` or `BATCH/INDEX`.
fn parse_sandbox(raw: &str) -> Result<(u64, u32)> {
    let (batch, index) = match raw.split_once('/') {
        Some((b, i)) => (b, i),
        None => (raw, "0"),
    };
    let batch = batch
        .parse()
        .with_context(|| format!("'{raw}': the batch must be a number (BATCH or BATCH/INDEX)"))?;
    let index = index
        .parse()
        .with_context(|| format!("'{raw}': the index must be a number (BATCH/INDEX)"))?;
    Ok((batch, index))
}

fn parse_env(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--env {p}: must be NAME=VALUE"),
        })
        .collect()
}

/// A `cp` operand: a path in a sandbox (`BATCH[/I]:path`) or a local one.
enum Place {
    Sandbox {
        batch: u64,
        index: u32,
        path: String,
    },
    Local(PathBuf),
}

fn parse_place(raw: &str) -> Place {
    if let Some((head, path)) = raw.split_once(':') {
        if let Ok((batch, index)) = parse_sandbox(head) {
            return Place::Sandbox {
                batch,
                index,
                path: path.to_string(),
            };
        }
    }
    Place::Local(PathBuf::from(raw))
}

/// Runs one sandbox command.
pub fn run(client: &Client, command: &SandboxCommand) -> Result<()> {
    match command {
        SandboxCommand::Create {
            tenant,
            name,
            count,
            cpu_millis,
            memory_mib,
            env,
            timeout_s,
            idle_timeout_s,
            template,
            egress,
        } => {
            let s = client
                .submit_sandboxes(&SubmitSandboxes {
                    egress: egress.clone(),
                    template: template.clone(),
                    name: name.clone(),
                    tenant: tenant.clone(),
                    count: *count,
                    cpu_millis: *cpu_millis,
                    memory_mib: *memory_mib,
                    max_retries: 0,
                    command: Vec::new(),
                    env: parse_env(env)?,
                    secret_env: Default::default(),
                    workdir: None,
                    interactive: true,
                    timeout_s: *timeout_s,
                    idle_timeout_s: *idle_timeout_s,
                })
                .map_err(fail)?;
            println!("{}", s.id);
            Ok(())
        }
        SandboxCommand::Exec {
            sandbox,
            timeout_s,
            env,
            command,
        } => {
            let (batch, index) = parse_sandbox(sandbox)?;
            let request = ExecRequest {
                command: command.clone(),
                env: parse_env(env)?,
                stdin: None,
                timeout_s: Some(*timeout_s),
            };
            let end = stream(client, batch, index, &request)?;
            match (end.exit_code, end.error) {
                (_, Some(e)) => bail!("sandbox {sandbox}: {e}"),
                (Some(0), None) => Ok(()),
                (Some(code), None) => std::process::exit(code.clamp(1, 255)),
                (None, None) => bail!("sandbox {sandbox}: the command's end is unknown"),
            }
        }
        SandboxCommand::Cp { from, to } => match (parse_place(from), parse_place(to)) {
            (Place::Local(local), Place::Sandbox { batch, index, path }) => {
                let data = std::fs::read(&local)
                    .with_context(|| format!("reading {}", local.display()))?;
                let mut chunks = data.chunks(CP_CHUNK);
                // An empty file is still written (empty).
                let first = chunks.next().unwrap_or(&[]);
                client
                    .write_file(batch, index, &path, first, false)
                    .map_err(fail)?;
                for chunk in chunks {
                    client
                        .write_file(batch, index, &path, chunk, true)
                        .map_err(fail)?;
                }
                println!("{} bytes → {batch}/{index}:{path}", data.len());
                Ok(())
            }
            (Place::Sandbox { batch, index, path }, Place::Local(local)) => {
                let mut out = std::fs::File::create(&local)
                    .with_context(|| format!("creating {}", local.display()))?;
                let mut offset = 0u64;
                loop {
                    let bytes = client
                        .read_file(batch, index, &path, offset, CP_CHUNK as u64)
                        .map_err(fail)?;
                    out.write_all(&bytes)
                        .with_context(|| format!("writing {}", local.display()))?;
                    offset += bytes.len() as u64;
                    if bytes.len() < CP_CHUNK {
                        break;
                    }
                }
                println!(
                    "{batch}/{index}:{path} → {} ({offset} bytes)",
                    local.display()
                );
                Ok(())
            }
            _ => bail!("cp: one side must be a sandbox path (BATCH[/INDEX]:PATH), the other local"),
        },
        SandboxCommand::Ls { sandbox, path } => {
            let (batch, index) = parse_sandbox(sandbox)?;
            let request = ExecRequest {
                command: ["ls", "-la", "--", path.as_str()]
                    .map(String::from)
                    .to_vec(),
                env: Default::default(),
                stdin: None,
                timeout_s: Some(30),
            };
            let end = stream(client, batch, index, &request)?;
            match (end.exit_code, end.error) {
                (Some(0), None) => Ok(()),
                (_, Some(e)) => bail!("sandbox {sandbox}: {e}"),
                (code, None) => bail!("ls {path}: exit code {}", code.unwrap_or(-1)),
            }
        }
        SandboxCommand::End { batch } => {
            let v = client.cancel_batch(*batch).map_err(fail)?;
            println!("batch {} {}", v.id, v.state);
            Ok(())
        }
    }
}

/// Runs `request`, its output to this process's stdout and stderr as it comes; returns the end.
fn stream(
    client: &Client,
    batch: u64,
    index: u32,
    request: &ExecRequest,
) -> Result<wire::api::ExecEvent> {
    let mut end = client
        .exec(batch, index, request, |e| {
            if let Some(t) = &e.stdout {
                print!("{t}");
                let _ = std::io::stdout().flush();
            }
            if let Some(t) = &e.stderr {
                eprint!("{t}");
            }
        })
        .map_err(fail)?;
    // The last line may carry the last of the output too.
    if let Some(t) = end.stdout.take() {
        print!("{t}");
    }
    if let Some(t) = end.stderr.take() {
        eprint!("{t}");
    }
    let _ = std::io::stdout().flush();
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandboxes_and_cp_operands_are_read_as_written() {
        assert_eq!(parse_sandbox("12").unwrap(), (12, 0));
        assert_eq!(parse_sandbox("12/3").unwrap(), (12, 3));
        assert!(parse_sandbox("x/3").is_err());
        assert!(parse_sandbox("12/").is_err());
        assert!(matches!(parse_place("12/3:/tmp/a:b"),
            Place::Sandbox { batch: 12, index: 3, ref path } if path == "/tmp/a:b"));
        assert!(matches!(parse_place("./local:file"), Place::Local(_)));
        assert!(matches!(parse_place("notes.txt"), Place::Local(_)));
        assert!(parse_env(&["A=1".into(), "B=x=y".into()]).unwrap()["B"] == "x=y");
        assert!(parse_env(&["=1".into()]).is_err());
    }
}
