//! Warm pools: interactive sandboxes started ahead of demand on each node, per template
//! ([`WarmPool`]: `--warm-pool N`, or `TEMPLATE=N`), so that a new interactive sandbox is one that already runs: its namespaces made, its init
//! ([`crate::init`]) started. A pooled sandbox belongs to no tenant: its init runs as root with
//! no capability but `CAP_SETUID` and `CAP_SETGID`, in a directory of its own with the pool's
//! limits, and runs nothing. Claiming it for a sandbox renames its directory to the
//! sandbox's, gives the directory to the tenant's user, sets the sandbox's limits on its
//! cgroup, and makes the init become the tenant's user for good before any command runs.
//!
//! The pool is refilled at every reconcile, and emptied while the node runs a job's task or a
//! replica (that work gets the host to itself). Pooled sandboxes are sleeping processes the
//! scheduler does not count (about a megabyte each).

use crate::task::{group_name, sandbox_dir_name, spawn_as, task_env, Kind, Running, Task};
use crate::users::TaskUser;
use crate::{cgroup, AgentConfig, RunAs};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use wire::api::Assignment;

/// The limits a pooled sandbox has until it is claimed.
const POOL_CPU_MILLIS: u32 = 1000;
/// The memory a pooled sandbox may use until it is claimed, MiB.
const POOL_MEMORY_MIB: u32 = 256;

/// A started, unclaimed sandbox.
pub(crate) struct Warm {
    task: Task,
    /// Its directory's name in the work dir (its cgroup is named after it).
    name: String,
    /// Its template (`None`: the host's root).
    template: Option<String>,
}

/// Starts pooled sandbox number `slot` of `node`, in `template`'s root.
pub(crate) fn start(
    config: &AgentConfig,
    node: &str,
    slot: u64,
    template: Option<&str>,
) -> Result<Warm, String> {
    let name = format!("warm-{node}-{slot}");
    let user = match &config.run_as {
        RunAs::AgentUser => None,
        RunAs::TenantUsers(users) => Some((users.pool_user(), users)),
    };
    let a = Assignment {
        job: 0,
        run: 0,
        rank: 0,
        world: 0,
        tenant: String::new(),
        tenant_id: None,
        command: Vec::new(),
        env: Default::default(),
        workdir: None,
        gpus: Vec::new(),
        stop_by: None,
        cpu_millis: POOL_CPU_MILLIS,
        memory_mib: POOL_MEMORY_MIB,
        serves: false,
        ready_path: None,
        live_path: None,
        ready_command: None,
        live_command: None,
        port: None,
        gpu_milli: 0,
        mig_profile: None,
        gpu_model: None,
    };
    let task = spawn_as(config, node, &a, Kind::Interactive, template, &name, user)?;
    Ok(Warm {
        task,
        name,
        template: template.map(str::to_string),
    })
}

impl Warm {
    /// Its template (`None`: the host's root).
    pub(crate) fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// Makes this the interactive sandbox `a` (a sandbox assignment) on `node`; when it
    /// cannot, it is discarded and the caller starts the sandbox cold.
    pub(crate) fn claim(
        mut self,
        config: &AgentConfig,
        node: &str,
        a: &Assignment,
    ) -> Result<Task, String> {
        match self.take(config, node, a) {
            Ok(()) => {
                let mut task = std::mem::replace(&mut self.task, Task::none());
                task.sandbox = true;
                Ok(task)
            }
            Err(why) => {
                self.discard();
                Err(why)
            }
        }
    }

    fn take(&mut self, config: &AgentConfig, node: &str, a: &Assignment) -> Result<(), String> {
        let Running::Process { dir, child, .. } = &mut self.task.running else {
            return Err("not a process".into());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Err("the pooled sandbox exited".into());
        }
        let user: Option<TaskUser> = match &config.run_as {
            RunAs::AgentUser => None,
            RunAs::TenantUsers(users) => {
                Some(users.user_of(a.tenant_id).map_err(|e| e.to_string())?)
            }
        };
        let new_dir: PathBuf = config.work_dir.join(sandbox_dir_name(a));
        if std::fs::symlink_metadata(&new_dir).is_ok() {
            return Err(format!("{} exists", new_dir.display()));
        }
        // The sandbox sees its directory by its bind mount, which follows the rename.
        std::fs::rename(&*dir, &new_dir).map_err(|e| format!("{}: {e}", new_dir.display()))?;
        *dir = new_dir.clone();
        if let Some(u) = user {
            // Made by root and written by nobody since (the init writes nothing there).
            for path in [new_dir.clone(), new_dir.join("log")] {
                std::os::unix::fs::lchown(&path, Some(u.uid), Some(u.uid))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", new_dir.display()))?;
        }
        if let Some(cg) = &config.cgroups {
            cg.create(
                &group_name(config, node, &self.name),
                cgroup::Limits {
                    cpu_millis: a.cpu_millis,
                    memory_mib: a.memory_mib,
                    pids_max: cgroup::SANDBOX_PIDS_MAX,
                },
            )?;
        }
        let view = config.isolation.view_of(&new_dir);
        let target = self
            .task
            .exec_target
            .as_mut()
            .ok_or("a pooled sandbox without its init")?;
        if let Some(u) = user {
            target
                .channel
                .become_user(u.uid, std::time::Duration::from_secs(2))
                .map_err(|e| format!("the init could not become uid {}: {e}", u.uid))?;
        }
        target.env = task_env(node, a, &view);
        Ok(())
    }

    /// Whether its process still runs.
    pub(crate) fn is_alive(&mut self) -> bool {
        match &mut self.task.running {
            Running::Process { child, .. } => matches!(child.try_wait(), Ok(None)),
            Running::Hollow { .. } => false,
        }
    }

    /// Kills it and removes its directory.
    pub(crate) fn discard(mut self) {
        if let Running::Process {
            child, group, dir, ..
        } = &mut self.task.running
        {
            let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            if let Some(g) = group {
                g.kill();
            }
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&*dir);
        }
    }
}

/// How many interactive sandboxes of one template each node keeps started ahead of demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmPool {
    /// The template; `None`: the host's root.
    pub template: Option<String>,
    /// Sandboxes kept started.
    pub size: u32,
}

impl std::str::FromStr for WarmPool {
    type Err = String;
    /// `N` (the host's root) or `TEMPLATE=N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (template, size) = match s.split_once('=') {
            Some((t, n)) => (Some(t.to_string()), n),
            None => (None, s),
        };
        let size: u32 = size
            .parse()
            .map_err(|_| format!("warm pool '{s}': expected N or TEMPLATE=N"))?;
        if size > 1000 {
            return Err(format!("warm pool '{s}': at most 1000"));
        }
        if let Some(t) = template
            .as_deref()
            .filter(|t| !wire::api::is_template_name(t))
        {
            return Err(format!("warm pool '{s}': '{t}' is not a template name"));
        }
        Ok(WarmPool { template, size })
    }
}
