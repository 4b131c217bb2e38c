//! CPU, memory and process-count limits for tasks through cgroups, v2 or v1.
//!
//! Each task gets its own group named after it under a `stargrid` group of ours: on cgroup v2,
//! `<root>/stargrid/<task>` with `cpu.max` (its CPU millicores as a quota per 100 ms period),
//! `memory.max` and `pids.max`; on cgroup v1 (one hierarchy per controller, as on hosts and
//! containers without v2), `<root>/{cpu,memory,pids}/stargrid/<task>` with `cpu.cfs_quota_us`,
//! `memory.limit_in_bytes` (and the same for memory plus swap, where the kernel accounts it)
//! and `pids.max`. [`TASK_PIDS_MAX`] and [`SANDBOX_PIDS_MAX`] bound processes: a fork bomb stays
//! inside. The task enters its groups before its program starts ([`Group::enter`]), so that
//! everything it forks is inside; a stop kills the whole group ([`Group::kill`]); an
//! out-of-memory kill is told apart from other deaths ([`Group::oom_killed`]). Where neither
//! hierarchy offers the `cpu` and `memory` controllers, [`Cgroups::detect`] says why and tasks
//! run without limits.

use std::path::{Path, PathBuf};

/// The scheduling period CPU quotas are expressed in, in microseconds.
const PERIOD_US: u64 = 100_000;

/// Most processes and threads one training or inference task may run.
pub const TASK_PIDS_MAX: u32 = 32_768;

/// Most processes and threads one sandbox may run.
pub const SANDBOX_PIDS_MAX: u32 = 1_024;

/// Where task groups are made.
#[derive(Clone, Debug)]
pub struct Cgroups {
    hierarchy: Hierarchy,
}

#[derive(Clone, Debug)]
enum Hierarchy {
    /// One unified tree: `<root>/stargrid`; whether `pids` is on.
    V2 { parent: PathBuf, pids: bool },
    /// One tree per controller: `<root>/<controller>/stargrid`.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: Option<PathBuf>,
    },
}

/// The limits of one task (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU millicores.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Processes and threads (where the `pids` controller is offered).
    pub pids_max: u32,
}

/// One task's group: a directory per hierarchy it is limited in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    dirs: Vec<PathBuf>,
    /// The directory whose `memory.events` (v2) or `memory.oom_control` (v1) counts OOM kills.
    memory: PathBuf,
    v2: bool,
}

impl Cgroups {
    /// Uses the cgroup hierarchy at `root` (v2 when it is one, else v1's per-controller trees)
    /// when it offers the `cpu` and `memory` controllers and a group can be made there;
    /// otherwise says why not.
    pub fn detect(root: &Path) -> Result<Cgroups, String> {
        match std::fs::read_to_string(root.join("cgroup.controllers")) {
            Ok(controllers) => Self::detect_v2(root, &controllers),
            Err(_) if root.join("memory/cgroup.procs").exists() => Self::detect_v1(root),
            Err(e) => Err(format!(
                "{} is neither a cgroup v2 hierarchy nor cgroup v1 controllers ({e})",
                root.display()
            )),
        }
    }

    fn detect_v2(root: &Path, controllers: &str) -> Result<Cgroups, String> {
        let have: Vec<&str> = controllers.split_whitespace().collect();
        for needed in ["cpu", "memory"] {
            if !have.contains(&needed) {
                return Err(format!(
                    "the cgroup v2 hierarchy at {} does not offer the {needed} controller (it offers: {})",
                    root.display(),
                    if have.is_empty() { "none".to_string() } else { have.join(" ") }
                ));
            }
        }
        // Task groups sit under one group of ours; both levels hand the controllers down.
        let parent = root.join("stargrid");
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        let pids = have.contains(&"pids");
        let wanted = if pids {
            "+cpu +memory +pids"
        } else {
            "+cpu +memory"
        };
        for dir in [root, parent.as_path()] {
            std::fs::write(dir.join("cgroup.subtree_control"), wanted)
                .map_err(|e| format!("cannot enable {wanted} under {}: {e}", dir.display()))?;
        }
        Ok(Cgroups {
            hierarchy: Hierarchy::V2 { parent, pids },
        })
    }

    fn detect_v1(root: &Path) -> Result<Cgroups, String> {
        let ours = |controller: &str| -> Result<PathBuf, String> {
            let dir = root.join(controller).join("stargrid");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            Ok(dir)
        };
        if !root.join("cpu/cpu.cfs_quota_us").exists() && !root.join("cpu/cgroup.procs").exists() {
            return Err(format!(
                "the cgroup v1 controllers at {} do not include cpu",
                root.display()
            ));
        }
        let pids = if root.join("pids/cgroup.procs").exists() {
            Some(ours("pids")?)
        } else {
            None
        };
        Ok(Cgroups {
            hierarchy: Hierarchy::V1 {
                cpu: ours("cpu")?,
                memory: ours("memory")?,
                pids,
            },
        })
    }

    /// What the limits are made of, in words.
    pub fn describe(&self) -> &'static str {
        match &self.hierarchy {
            Hierarchy::V2 { pids: true, .. } => "cgroup v2 (cpu.max, memory.max, pids.max)",
            Hierarchy::V2 { pids: false, .. } => "cgroup v2 (cpu.max, memory.max)",
            Hierarchy::V1 { pids: Some(_), .. } => "cgroup v1 (cpu, memory, pids)",
            Hierarchy::V1 { pids: None, .. } => "cgroup v1 (cpu, memory)",
        }
    }

    /// Makes the group of task `name` with `limits`.
    pub fn create(&self, name: &str, limits: Limits) -> Result<Group, String> {
        let make = |parent: &Path| -> Result<PathBuf, String> {
            let dir = parent.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(dir)
        };
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), value)
                .map_err(|e| format!("{}: {e}", dir.join(file).display()))
        };
        match &self.hierarchy {
            Hierarchy::V2 { parent, pids } => {
                let dir = make(parent)?;
                write(&dir, "cpu.max", cpu_max(limits.cpu_millis))?;
                write(&dir, "memory.max", memory_max(limits.memory_mib))?;
                if *pids && limits.pids_max > 0 {
                    write(&dir, "pids.max", limits.pids_max.to_string())?;
                }
                Ok(Group {
                    memory: dir.clone(),
                    dirs: vec![dir],
                    v2: true,
                })
            }
            Hierarchy::V1 { cpu, memory, pids } => {
                let cpu_dir = make(cpu)?;
                write(&cpu_dir, "cpu.cfs_period_us", PERIOD_US.to_string())?;
                write(&cpu_dir, "cpu.cfs_quota_us", cfs_quota(limits.cpu_millis))?;
                let memory_dir = make(memory)?;
                let bytes = memory_max(limits.memory_mib).replace("max", "-1");
                // Swap counts too where the kernel accounts it, so the limit is not a swap file.
                // The kernel keeps memory <= memory+swap at every step: raising a group's
                // limit takes the second first, lowering it the first first, so the second is
                // written before and after.
                let memsw = memory_dir.join("memory.memsw.limit_in_bytes").exists();
                if memsw {
                    let _ = write(&memory_dir, "memory.memsw.limit_in_bytes", bytes.clone());
                }
                write(&memory_dir, "memory.limit_in_bytes", bytes.clone())?;
                if memsw {
                    let _ = write(&memory_dir, "memory.memsw.limit_in_bytes", bytes);
                }
                let mut dirs = vec![cpu_dir, memory_dir.clone()];
                if let Some(pids) = pids {
                    let pids_dir = make(pids)?;
                    if limits.pids_max > 0 {
                        write(&pids_dir, "pids.max", limits.pids_max.to_string())?;
                    }
                    dirs.push(pids_dir);
                }
                Ok(Group {
                    dirs,
                    memory: memory_dir,
                    v2: false,
                })
            }
        }
    }
}

impl Group {
    /// The command that enters every directory of the group and then runs `program args...`
    /// in the same process (`/bin/sh`, with the directories as arguments, never in the script).
    pub fn enter(&self, program: &str, args: &[String]) -> (String, Vec<String>) {
        enter_dirs(&self.dirs, program, args)
    }

    /// Kills every process in the group, wherever its process group went: `cgroup.kill` on v2
    /// (Linux 5.14 and later), each listed process on v1.
    pub fn kill(&self) {
        if self.v2 && std::fs::write(self.memory.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // A process forking while it is listed is caught on the next round.
        for _ in 0..8 {
            let Ok(text) = std::fs::read_to_string(self.memory.join("cgroup.procs")) else {
                return;
            };
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Whether the kernel killed a process of the group for going past its memory.
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory.join(file)).is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    }

    /// Removes the group once its processes are gone (the kernel refuses while any is left;
    /// the group is then left behind, empty of limits that matter).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// The group's directories (one per hierarchy).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// The command that moves itself into the groups at `dirs` (one per hierarchy) before it runs
/// `program args...`.
pub fn enter_dirs(dirs: &[PathBuf], program: &str, args: &[String]) -> (String, Vec<String>) {
    let mut wrapped = vec![
        "-c".to_string(),
        "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1/cgroup.procs\" || exit 126; \
         shift; n=$((n - 1)); done; exec \"$@\""
            .to_string(),
        "sh".to_string(),
        dirs.len().to_string(),
    ];
    wrapped.extend(dirs.iter().map(|d| d.display().to_string()));
    wrapped.push(program.to_string());
    wrapped.extend(args.iter().cloned());
    ("/bin/sh".to_string(), wrapped)
}

/// `cpu.max` for a CPU share in millicores: a quota per period, or no limit.
pub fn cpu_max(cpu_millis: u32) -> String {
    match cfs_quota(cpu_millis).as_str() {
        "-1" => format!("max {PERIOD_US}"),
        quota => format!("{quota} {PERIOD_US}"),
    }
}

/// `cpu.cfs_quota_us` for a CPU share in millicores, or `-1` for none.
fn cfs_quota(cpu_millis: u32) -> String {
    if cpu_millis == 0 {
        "-1".to_string()
    } else {
        // 1000 millicores = one whole period of one CPU; the kernel's smallest quota is 1 ms.
        (u64::from(cpu_millis) * PERIOD_US / 1000)
            .max(1000)
            .to_string()
    }
}

/// `memory.max` for a size in MiB, or no limit.
pub fn memory_max(memory_mib: u32) -> String {
    if memory_mib == 0 {
        "max".to_string()
    } else {
        (u64::from(memory_mib) << 20).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_in_the_kernel_s_units() {
        assert_eq!(cpu_max(0), "max 100000");
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(4000), "400000 100000");
        assert_eq!(cpu_max(1), "1000 100000", "the kernel's smallest quota");
        assert_eq!(cfs_quota(0), "-1");
        assert_eq!(memory_max(0), "max");
        assert_eq!(memory_max(256), (256u64 << 20).to_string());
    }

    #[test]
    fn v2_groups_get_their_limits_and_hand_the_controllers_down() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let cg = Cgroups::detect(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stargrid/cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        let group = cg
            .create(
                "n0-7-0-0",
                Limits {
                    cpu_millis: 1500,
                    memory_mib: 512,
                    pids_max: SANDBOX_PIDS_MAX,
                },
            )
            .unwrap();
        let dir = &group.dirs()[0];
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            (512u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("pids.max")).unwrap(),
            "1024"
        );
        assert!(!group.oom_killed());
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(group.oom_killed());
    }

    #[test]
    fn v1_groups_are_made_per_controller() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let cg = Cgroups::detect(dir.path()).unwrap();
        assert_eq!(cg.describe(), "cgroup v1 (cpu, memory, pids)");
        let group = cg
            .create(
                "n0-1-0-0",
                Limits {
                    cpu_millis: 500,
                    memory_mib: 64,
                    pids_max: 50,
                },
            )
            .unwrap();
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(dir.path().join(c).join("stargrid/n0-1-0-0").join(f)).unwrap()
        };
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "50");
        assert_eq!(group.dirs().len(), 3);
        let (program, args) = group.enter("sleep", &["1".into()]);
        assert_eq!(program, "/bin/sh");
        assert_eq!(args[3], "3");
        assert_eq!(args.last().unwrap(), "1");
    }

    #[test]
    fn a_host_without_controllers_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Cgroups::detect(dir.path()).unwrap_err();
        assert!(e.contains("neither a cgroup v2 hierarchy"), "{e}");
    }

    /// The host's own cgroups, when this process may make groups there (root on a host with
    /// cgroup v2, or v1's controllers, as the machines these tests run on have).
    fn host() -> Option<Cgroups> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: the kernel's enforcement is not tried");
            return None;
        }
        Cgroups::detect(Path::new("/sys/fs/cgroup")).ok()
    }

    fn run_in(group: &Group, script: &str) -> std::process::Child {
        let (program, args) = group.enter("/bin/sh", &["-c".to_string(), script.to_string()]);
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn limits(cpu_millis: u32, memory_mib: u32, pids_max: u32) -> Limits {
        Limits {
            cpu_millis,
            memory_mib,
            pids_max,
        }
    }

    #[test]
    fn the_kernel_kills_a_task_past_its_memory_and_it_is_told_apart() {
        let Some(cg) = host() else { return };
        let group = cg
            .create(
                &format!("test-{}-oom", std::process::id()),
                limits(0, 32, 0),
            )
            .unwrap();
        let status = run_in(&group, "exec tail /dev/zero").wait().unwrap();
        assert_eq!(status.code(), None, "killed by a signal");
        assert!(group.oom_killed());
        group.remove();
        // A group that ended by itself is no OOM kill.
        let calm = cg
            .create(
                &format!("test-{}-calm", std::process::id()),
                limits(0, 32, 0),
            )
            .unwrap();
        assert!(run_in(&calm, "true").wait().unwrap().success());
        assert!(!calm.oom_killed());
        calm.remove();
    }

    #[test]
    fn a_fork_bomb_stops_at_its_pids_limit_and_the_group_dies_whole() {
        let Some(cg) = host() else { return };
        if cg.describe().ends_with("(cpu, memory)") || cg.describe().ends_with("memory.max)") {
            eprintln!("no pids controller here");
            return;
        }
        let group = cg
            .create(
                &format!("test-{}-forks", std::process::id()),
                limits(0, 0, 16),
            )
            .unwrap();
        let mut bomb = run_in(
            &group,
            "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait",
        );
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let procs = |g: &Group| {
            g.dirs()
                .iter()
                .map(|d| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .map(|t| t.lines().count())
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0)
        };
        let held = procs(&group);
        assert!((2..=16).contains(&held), "{held} processes in the group");
        // The host still forks.
        assert!(std::process::Command::new("true")
            .status()
            .unwrap()
            .success());
        // A stop kills every process of the group, the ones that left its process group too.
        group.kill();
        let _ = bomb.wait();
        for _ in 0..50 {
            if procs(&group) == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(procs(&group), 0);
        group.remove();
    }

    #[test]
    fn a_cpu_bound_task_gets_its_share_and_no_more() {
        let Some(cg) = host() else { return };
        let group = cg
            .create(
                &format!("test-{}-cpu", std::process::id()),
                limits(200, 0, 0),
            )
            .unwrap();
        let mut spin = run_in(&group, "while :; do :; done");
        let started = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2000));
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", spin.id())).unwrap();
        let wall = started.elapsed().as_secs_f64();
        let _ = spin.kill();
        let _ = spin.wait();
        group.remove();
        // utime and stime, after the command name's closing parenthesis: fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        let hz: f64 = String::from_utf8(
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        let share = ticks / hz / wall;
        // A fifth of a CPU: never more than the quota (with a period's slack); on a busy
        // shared machine it may get less.
        assert!(
            share <= 0.30,
            "a 200-millicore task used {share:.2} of a CPU"
        );
        assert!(
            share >= 0.05,
            "a 200-millicore task used only {share:.2} of a CPU"
        );
    }
}
