//! The init of an interactive sandbox: the program the sandbox runs between commands, which
//! starts them (`stargrid sandbox-init`). It lives inside the sandbox (its namespaces, its
//! cgroup, its user, its seccomp filter when it has one), so the commands it forks are born
//! there: nothing has to join them from outside, and no process moves between cgroups (on
//! cgroup v1 a move can wait for an RCU grace period, tens of milliseconds).
//!
//! It speaks with its agent over a socket pair, given as its standard input: the agent sends
//! [`ToInit`] lines, it answers [`FromInit`] lines (JSON). Everything it is told concerns its
//! own sandbox, and everything it says is about commands of that sandbox, so the tenant's code
//! (same user) reaching it gains nothing it did not have.
//!
//! A pooled sandbox's init starts as root with only `CAP_SETUID` and `CAP_SETGID`, and becomes
//! its tenant's user when the sandbox is claimed ([`ToInit::Become`]), before any command runs.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Most bytes of one line on the channel.
pub(crate) const MAX_LINE: usize = 2 << 20;
/// Most bytes of output one message carries.
const CHUNK: usize = 64 << 10;

/// What the agent asks of an init.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ToInit {
    /// Start a command.
    Start {
        /// The agent's number for it.
        id: u64,
        /// Program and arguments.
        argv: Vec<String>,
        /// Its whole environment.
        env: BTreeMap<String, String>,
        /// Its standard input, base64.
        stdin_b64: String,
    },
    /// Kill a command and its process group.
    Kill {
        /// The command.
        id: u64,
    },
    /// Become this user (uid = gid), for good.
    Become {
        /// The user.
        uid: u32,
    },
}

/// What an init tells its agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FromInit {
    /// Standard output of a command, base64.
    Stdout {
        /// The command.
        id: u64,
        /// The bytes.
        b64: String,
    },
    /// Standard error of a command, base64.
    Stderr {
        /// The command.
        id: u64,
        /// The bytes.
        b64: String,
    },
    /// A command ended (its output all sent before).
    Exit {
        /// The command.
        id: u64,
        /// Its exit code; 128 + the signal that killed it.
        code: i32,
    },
    /// A command could not start.
    Failed {
        /// The command.
        id: u64,
        /// Why.
        why: String,
    },
    /// The answer to [`ToInit::Become`]: the user it runs as now, or why not.
    Became {
        /// The uid, when it worked.
        uid: Option<u32>,
        /// Why not.
        why: Option<String>,
    },
}

/// Runs the init on its standard input (the socket to its agent) until the agent goes away;
/// then kills what it started.
pub fn main() -> Result<(), String> {
    use std::os::fd::AsFd;
    // Not dumpable: the tenant's code (same user) can neither trace it nor take its socket.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl: {e}"))?;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("standard input: {e}"))?;
    let channel = UnixStream::from(fd);
    serve(channel)
}

/// One line of JSON to `writer`.
fn say(writer: &Mutex<UnixStream>, message: &FromInit) {
    if let Ok(mut line) = serde_json::to_vec(message) {
        line.push(b'\n');
        let mut w = match writer.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = w.write_all(&line);
    }
}

fn serve(channel: UnixStream) -> Result<(), String> {
    let writer = Arc::new(Mutex::new(
        channel
            .try_clone()
            .map_err(|e| format!("the channel: {e}"))?,
    ));
    let running: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut reader = BufReader::new(channel);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        match serde_json::from_slice::<ToInit>(&line) {
            Ok(ToInit::Start {
                id,
                argv,
                env,
                stdin_b64,
            }) => start(&writer, &running, id, &argv, env, &stdin_b64),
            Ok(ToInit::Kill { id }) => {
                let pid = lock(&running).get(&id).copied();
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Ok(ToInit::Become { uid }) => {
                let answer = match become_user(uid) {
                    Ok(()) => FromInit::Became {
                        uid: Some(uid),
                        why: None,
                    },
                    Err(why) => FromInit::Became {
                        uid: None,
                        why: Some(why),
                    },
                };
                say(&writer, &answer);
            }
            Err(e) => eprintln!("sandbox init: a message it cannot read: {e}"),
        }
    }
    // The agent went away (the sandbox is being stopped): nothing of ours outlives it.
    for pid in lock(&running).values() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Drops every privilege for good: no supplementary groups, then the group, then the user
/// (which clears the capabilities).
fn become_user(uid: u32) -> Result<(), String> {
    let (u, g) = (
        nix::unistd::Uid::from_raw(uid),
        nix::unistd::Gid::from_raw(uid),
    );
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(g, g, g).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(u, u, u).map_err(|e| format!("setresuid: {e}"))?;
    if nix::unistd::geteuid() != u {
        return Err("the user did not change".into());
    }
    // A change of user may make it dumpable again.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl: {e}"))
}

/// Starts command `id` and the threads that relay its output and its end.
fn start(
    writer: &Arc<Mutex<UnixStream>>,
    running: &Arc<Mutex<HashMap<u64, u32>>>,
    id: u64,
    argv: &[String],
    env: BTreeMap<String, String>,
    stdin_b64: &str,
) {
    let failed = |why: String| say(writer, &FromInit::Failed { id, why });
    let Some((program, args)) = argv.split_first() else {
        return failed("the command names no program".into());
    };
    let stdin = match base64::engine::general_purpose::STANDARD.decode(stdin_b64) {
        Ok(b) => b,
        Err(e) => return failed(format!("stdin: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("{program}: {e}")),
    };
    lock(running).insert(id, child.id());
    // When the sandbox runs out of memory, the kernel kills a command, not the init (raising a
    // process's score needs no privilege; what it forks inherits it).
    let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "500");
    if let Some(mut input) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
    }
    let relay = |pipe: Option<Box<dyn Read + Send>>, stdout: bool| {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let b64 = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
                let message = if stdout {
                    FromInit::Stdout { id, b64 }
                } else {
                    FromInit::Stderr { id, b64 }
                };
                say(&writer, &message);
            }
        })
    };
    let out = relay(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        true,
    );
    let err = relay(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        false,
    );
    let (writer, running) = (writer.clone(), running.clone());
    std::thread::spawn(move || {
        // Its output first, all of it; then its end.
        let _ = out.join();
        let _ = err.join();
        let code = match child.wait() {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1)
            }
            Err(_) => -1,
        };
        lock(&running).remove(&id);
        say(&writer, &FromInit::Exit { id, code });
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read_until_exit(reader: &mut BufReader<UnixStream>, id: u64) -> (String, String, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let b64 = base64::engine::general_purpose::STANDARD;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            match serde_json::from_str::<FromInit>(&line).unwrap() {
                FromInit::Stdout { id: i, b64: d } if i == id => out.extend(b64.decode(d).unwrap()),
                FromInit::Stderr { id: i, b64: d } if i == id => err.extend(b64.decode(d).unwrap()),
                FromInit::Exit { id: i, code } if i == id => {
                    return (
                        String::from_utf8(out).unwrap(),
                        String::from_utf8(err).unwrap(),
                        code,
                    )
                }
                FromInit::Failed { why, .. } => panic!("{why}"),
                _ => {}
            }
        }
    }

    fn send(agent: &mut UnixStream, message: &ToInit) {
        let mut line = serde_json::to_vec(message).unwrap();
        line.push(b'\n');
        agent.write_all(&line).unwrap();
    }

    #[test]
    fn commands_start_side_by_side_with_their_input_output_and_exit_code() {
        let (mut agent, init) = UnixStream::pair().unwrap();
        let served = std::thread::spawn(move || serve(init));
        let mut reader = BufReader::new(agent.try_clone().unwrap());
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        send(
            &mut agent,
            &ToInit::Start {
                id: 1,
                argv: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 3".into()],
                env: env.clone(),
                stdin_b64: base64::engine::general_purpose::STANDARD.encode("in\n"),
            },
        );
        assert_eq!(
            read_until_exit(&mut reader, 1),
            ("in\n".to_string(), "err\n".to_string(), 3)
        );
        // A command killed is told with its signal.
        send(
            &mut agent,
            &ToInit::Start {
                id: 2,
                argv: vec!["sleep".into(), "60".into()],
                env: env.clone(),
                stdin_b64: String::new(),
            },
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        send(&mut agent, &ToInit::Kill { id: 2 });
        assert_eq!(read_until_exit(&mut reader, 2).2, 128 + 9);
        // What cannot start says why; garbage is ignored; the agent leaving ends the init.
        send(
            &mut agent,
            &ToInit::Start {
                id: 3,
                argv: vec!["/no/such/program".into()],
                env,
                stdin_b64: String::new(),
            },
        );
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.contains("failed") && line.contains("/no/such/program"),
            "{line}"
        );
        agent.write_all(b"{not json\n").unwrap();
        drop(agent);
        drop(reader);
        served.join().unwrap().unwrap();
    }
}
