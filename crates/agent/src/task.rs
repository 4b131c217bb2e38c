//! One task as a process: started in its own directory and process group, with a clean
//! environment, inside its cgroup and its isolation layer (sandboxes; every task with
//! `--isolate-tasks`), as its tenant's user where the agent can switch users; and
//! stopped with SIGTERM, then SIGKILL after the grace period. Sandboxes are tasks keyed by their
//! batch and index; hollow tasks run nothing.

use crate::isolation::{Isolation, Layout};
use crate::users;
use crate::{cgroup, AgentConfig, RunAs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wire::api::{Assignment, SandboxAssignment};

/// A task: (job or batch, run, rank or sandbox index).
pub(crate) type TaskKey = (u64, u32, u32);

/// How a task runs.
pub(crate) enum Running {
    Process {
        child: Child,
        dir: PathBuf,
        stop_sent: Option<Instant>,
        /// Its cgroup, removed with the task.
        group: Option<cgroup::Group>,
    },
    Hollow {
        ends_at: Option<Instant>,
    },
}

/// A task the node runs, and its exit once seen.
pub(crate) struct Task {
    pub(crate) running: Running,
    pub(crate) exit_code: Option<i32>,
    /// The kernel killed it for going past its memory.
    pub(crate) oom_killed: bool,
    /// A sandbox (reported only once it exited; it writes no checkpoints).
    pub(crate) sandbox: bool,
    /// An interactive sandbox: what its execs need.
    pub(crate) exec_target: Option<crate::exec::ExecTarget>,
    /// An interactive sandbox's egress proxy (closed with the task).
    pub(crate) egress: Option<crate::egress::Proxy>,
}

impl Task {
    /// A task that could not start, reported as failed: its job ends with code 127.
    pub(crate) fn failed_to_start(sandbox: bool) -> Task {
        let mut t = Task::none();
        t.exit_code = Some(127);
        t.sandbox = sandbox;
        t
    }

    /// A task that runs nothing (what is left where a task was moved out).
    pub(crate) fn none() -> Task {
        Task {
            running: Running::Hollow { ends_at: None },
            exit_code: None,
            oom_killed: false,
            sandbox: false,
            exec_target: None,
            egress: None,
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Running::Process { group: Some(g), .. } = &self.running {
            g.remove();
        }
    }
}

/// Sandbox `index` of a run as a task: its batch in place of the job, its index as the rank.
pub(crate) fn sandbox_task(s: &SandboxAssignment, index: u32) -> Assignment {
    let mut env = s.env.clone();
    env.insert("STARGRID_BATCH_ID".into(), s.batch.to_string());
    env.insert("STARGRID_SANDBOX_INDEX".into(), index.to_string());
    if !s.egress.is_empty() {
        // Where its egress proxy is (see `crate::egress`); loopback stays direct.
        let proxy = format!("http://127.0.0.1:{}", crate::egress::PROXY_PORT);
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            env.insert(name.into(), proxy.clone());
        }
        for name in ["NO_PROXY", "no_proxy"] {
            env.insert(name.into(), "localhost,127.0.0.1,::1".into());
        }
    }
    Assignment {
        job: s.batch,
        run: 0,
        rank: index,
        world: 0,
        tenant: s.tenant.clone(),
        tenant_id: s.tenant_id,
        // An interactive sandbox runs the agent's init, not a command of its own.
        command: if s.interactive {
            Vec::new()
        } else {
            s.command.clone()
        },
        env,
        workdir: s.workdir.clone(),
        gpus: Vec::new(),
        stop_by: None,
        cpu_millis: s.cpu_millis,
        memory_mib: s.memory_mib,
        serves: false,
        ready_path: None,
        live_path: None,
        ready_command: None,
        live_command: None,
        port: None,
        gpu_milli: 0,
        mig_profile: None,
        gpu_model: None,
    }
}

/// `sleep N` in hollow mode: the task ends after N seconds.
pub(crate) fn hollow_runtime(command: &[String]) -> Option<Duration> {
    match command {
        // `infinity`, a negative or a huge number: no end (never a panic).
        [cmd, secs] if cmd == "sleep" => secs
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        _ => None,
    }
}

/// What kind of task to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A job's task or a service's replica.
    Task,
    /// A sandbox that runs its batch's command.
    Sandbox,
    /// An interactive sandbox, idle between execs.
    Interactive,
}

pub(crate) fn spawn(
    config: &AgentConfig,
    node: &str,
    a: &Assignment,
    kind: Kind,
    template: Option<&str>,
) -> Result<Task, String> {
    let sandbox = kind != Kind::Task;
    if a.command.is_empty() && kind != Kind::Interactive {
        // Nothing to run: the task holds its place until it is stopped.
        return Ok(Task {
            running: Running::Hollow { ends_at: None },
            exit_code: None,
            oom_killed: false,
            sandbox,
            exec_target: None,
            egress: None,
        });
    }
    let name = if sandbox {
        sandbox_dir_name(a)
    } else {
        format!("{}-{}-{}", a.job, a.run, a.rank)
    };
    spawn_as(
        config,
        node,
        a,
        kind,
        template,
        &name,
        task_user(config, a)?,
    )
}

/// The user task `a` runs as (`None`: the agent's own).
pub(crate) fn task_user<'a>(
    config: &'a AgentConfig,
    a: &Assignment,
) -> Result<Option<(users::TaskUser, &'a std::sync::Arc<users::TaskUsers>)>, String> {
    Ok(match &config.run_as {
        RunAs::AgentUser => None,
        RunAs::TenantUsers(users) => Some((
            users.user_of(a.tenant_id).map_err(|e| e.to_string())?,
            users,
        )),
    })
}

/// The directory of sandbox `a` (its batch and index) in the work dir.
pub(crate) fn sandbox_dir_name(a: &Assignment) -> String {
    format!("{}-sandbox-{}", a.job, a.rank)
}

/// Starts `a` in `<work_dir>/<name>` as `user` (or the agent's own user), in `template`'s root
/// (a sandbox; `None`: the host's): its command, or, for an interactive sandbox, the agent's
/// init with a socket pair to it as its standard input (as the pool's root with `CAP_SETUID`
/// alone when `user` is the pool's).
pub(crate) fn spawn_as(
    config: &AgentConfig,
    node: &str,
    a: &Assignment,
    kind: Kind,
    template: Option<&str>,
    name: &str,
    user: Option<(users::TaskUser, &std::sync::Arc<users::TaskUsers>)>,
) -> Result<Task, String> {
    let sandbox = kind != Kind::Task;
    let root = config.templates.root(template)?;
    if template.is_some() && matches!(config.isolation, Isolation::None) {
        return Err("a template needs an isolation layer; this agent runs none".into());
    }
    let dir = config.work_dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The log is made anew: a name the task left there is unlinked, never followed.
    let log_path = dir.join("log");
    let log = match &user {
        Some((u, _)) => users::fresh_file(&log_path, *u),
        None => std::fs::File::create(&log_path),
    }
    .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    let isolation = if sandbox || config.isolate_tasks {
        &config.isolation
    } else {
        &Isolation::None
    };
    // Where the task sees its directory (inside the isolation, its own root).
    let view = isolation.view_of(&dir);
    let cwd = match (&a.workdir, isolation) {
        (None, _) => dir.clone(),
        (Some(_), Isolation::Bubblewrap { .. }) => {
            return Err("workdir: an isolated task runs in its own directory only".to_string())
        }
        (Some(w), Isolation::None) => allowed_workdir(config.workdir_root.as_deref(), w)?,
    };
    let env = task_env(node, a, &view);
    // An interactive sandbox's program is the init, talked to over a socket pair.
    let (init, channel_end) = match (kind, &config.init_program) {
        (Kind::Interactive, Some(init)) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| format!("a socket pair for the sandbox's init: {e}"))?;
            (Some(init.as_path()), Some((ours, theirs)))
        }
        (Kind::Interactive, None) => {
            return Err("this agent has no init program for interactive sandboxes".into())
        }
        _ => (None, None),
    };
    let init_command: Vec<String>;
    let (program, args): (&String, &[String]) = match init {
        Some(host) => {
            init_command = [
                isolation.init_command(host, root),
                vec![INIT_SUBCOMMAND.to_string()],
            ]
            .concat();
            (&init_command[0], &init_command[1..])
        }
        None => a.command.split_first().ok_or("the task has no command")?,
    };
    let group = match &config.cgroups {
        Some(cg) => Some(cg.create(
            &group_name(config, node, name),
            cgroup::Limits {
                cpu_millis: a.cpu_millis,
                memory_mib: a.memory_mib,
                pids_max: if sandbox {
                    cgroup::SANDBOX_PIDS_MAX
                } else {
                    cgroup::TASK_PIDS_MAX
                },
            },
        )?),
        None => None,
    };
    let target_env = env.clone();
    let root_path = || BTreeMap::from([("PATH".to_string(), TASK_PATH.to_string())]);
    let pooled = matches!(&user, Some((u, users)) if *u == users.pool_user());
    // A sandbox's files are a scratch in memory; a task's, its directory (the agent reads its
    // checkpoints there). A batch's sandbox finds its environment file in a directory of its
    // own.
    let env_dir = dir.join("env");
    let layout = match (init, kind, isolation) {
        (Some(init), _, _) => Layout::Interactive {
            init,
            bytes: scratch_bytes(a.memory_mib, pooled),
        },
        (None, Kind::Sandbox, Isolation::Bubblewrap { .. }) => {
            std::fs::create_dir_all(&env_dir).map_err(|e| format!("{}: {e}", env_dir.display()))?;
            Layout::Scratch {
                bytes: scratch_bytes(a.memory_mib, false),
                env: &env_dir,
            }
        }
        _ => Layout::Directory,
    };
    // As a tenant's user, the task enters its cgroup as root with `PATH` alone, drops to the
    // user, and only then takes its environment (from a file of the user's). A pooled
    // sandbox's init stays root, with only what it needs to become its tenant later.
    let (program, args, root_env) = match &user {
        Some((_, users)) if pooled && kind == Kind::Interactive => {
            let (p, a) = users.launch_pool(root, program, args);
            let (p, a) = isolation.wrap(&dir, root, layout, p, a);
            (p, a, root_path())
        }
        // The init needs no environment of its own: each command gets the sandbox's in its
        // request.
        Some((u, users)) if kind == Kind::Interactive => {
            let (p, a) = users.launch_bare(*u, &dir, root, program, args)?;
            let (p, a) = isolation.wrap(&dir, root, layout, p, a);
            (p, a, root_path())
        }
        Some((u, users)) => {
            let place = match layout {
                Layout::Scratch { env, .. } => users::TaskPlace {
                    dir: env,
                    view: Path::new(crate::isolation::ENV_IN_SANDBOX),
                    root,
                },
                _ => users::TaskPlace {
                    dir: &dir,
                    view: &view,
                    root,
                },
            };
            let (p, a) = users.launch(*u, place, &env, program, args)?;
            let (p, a) = isolation.wrap(&dir, root, layout, p, a);
            (p, a, root_path())
        }
        None => {
            let (p, a) = isolation.wrap(&dir, root, layout, program.clone(), args.to_vec());
            (p, a, env)
        }
    };
    let (program, args) = match &group {
        Some(g) => g.enter(&program, &args),
        None => (program, args),
    };
    let (ours, stdin) = match channel_end {
        Some((ours, theirs)) => (Some(ours), Stdio::from(std::os::fd::OwnedFd::from(theirs))),
        None => (None, Stdio::null()),
    };
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .current_dir(cwd)
        .env_clear()
        .envs(&root_env)
        .stdin(stdin)
        .stdout(log)
        .stderr(err_log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    let exec_target = match ours {
        Some(ours) => Some(crate::exec::ExecTarget {
            channel: crate::exec::InitChannel::start(ours)
                .map_err(|e| format!("the sandbox's init: {e}"))?,
            env: target_env,
        }),
        None => None,
    };
    Ok(Task {
        running: Running::Process {
            child,
            dir,
            stop_sent: None,
            group,
        },
        exit_code: None,
        oom_killed: false,
        sandbox,
        exec_target,
        egress: None,
    })
}

/// The size of a sandbox's scratch (`/sandbox`, in memory, its pages charged to the sandbox's
/// group): half its memory, so that a full scratch is refused (`ENOSPC`) before
/// the sandbox runs out of memory; a pooled sandbox's, whose memory is not known yet, 2 GiB
/// (its memory bounds it all the same).
fn scratch_bytes(memory_mib: u32, pooled: bool) -> u64 {
    match (pooled, memory_mib) {
        (true, _) => 2 << 30,
        (false, 0) => 1 << 30,
        (false, m) => (u64::from(m) << 20) / 2,
    }
}

/// The subcommand of the agent's program that runs a sandbox's init ([`crate::init::main`]).
pub const INIT_SUBCOMMAND: &str = "sandbox-init";

/// The cgroup of task directory `name` on `node`.
pub(crate) fn group_name(config: &AgentConfig, node: &str, name: &str) -> String {
    format!("{}-{node}-{name}", agent_tag(&config.work_dir))
}

/// What a task sees in its environment: what its job asked for and the `STARGRID_*`
/// variables, never the agent's own (its credential among them); `view` is where it sees its
/// directory.
pub(crate) fn task_env(
    node: &str,
    a: &Assignment,
    view: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("PATH".to_string(), TASK_PATH.to_string()),
        ("HOME".to_string(), view.display().to_string()),
    ]);
    env.extend(a.env.clone());
    for (name, value) in [
        ("STARGRID_JOB_ID", a.job.to_string()),
        ("STARGRID_RUN", a.run.to_string()),
        ("STARGRID_RANK", a.rank.to_string()),
        ("STARGRID_WORLD_SIZE", a.world.to_string()),
        ("STARGRID_NODE", node.to_string()),
        (
            "STARGRID_CHECKPOINT_FILE",
            view.join("checkpoint").display().to_string(),
        ),
    ] {
        env.insert(name.to_string(), value);
    }
    env.extend(crate::devices::device_env(a));
    env
}

/// A short name for the agent (from its work dir, so the same across its restarts): task groups
/// of two agents on one host never share a name.
pub fn agent_tag(work_dir: &std::path::Path) -> String {
    // FNV-1a: stable across builds and platforms, unlike the standard hasher.
    let hash = work_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("a{:08x}", hash as u32)
}

/// A job's `workdir`, when it lies under the node's allowed root (links resolved).
pub(crate) fn allowed_workdir(
    root: Option<&std::path::Path>,
    asked: &str,
) -> Result<PathBuf, String> {
    let Some(root) = root else {
        return Err(format!(
            "workdir {asked}: this node allows none (its agent has no --workdir-root)"
        ));
    };
    let resolved = std::fs::canonicalize(asked).map_err(|e| format!("workdir {asked}: {e}"))?;
    let root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(format!(
            "workdir {asked} is outside the node's allowed root {}",
            root.display()
        ))
    }
}

/// The program search path a task gets unless its job sets `PATH`.
const TASK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Moves a task towards stopped; returns true once it is gone.
pub(crate) fn stop(t: &mut Task, grace: Duration) -> bool {
    match &mut t.running {
        Running::Hollow { .. } => true,
        Running::Process {
            child,
            stop_sent,
            group,
            ..
        } => {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
            match stop_sent {
                None => {
                    let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGTERM);
                    *stop_sent = Some(Instant::now());
                    false
                }
                Some(at) if at.elapsed() >= grace => {
                    let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
                    // Processes that left the group (`setsid`) are still in the cgroup.
                    if let Some(g) = group {
                        g.kill();
                    }
                    let _ = child.wait();
                    true
                }
                Some(_) => false,
            }
        }
    }
}
