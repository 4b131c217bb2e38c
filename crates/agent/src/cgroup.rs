//! CPU, memory and process-count limits for tasks through cgroup v2.
//!
//! Each task gets its own group, `<root>/stargrid/<task>`, with `cpu.max` (its CPU millicores
//! as a quota per 100 ms period), `memory.max`, and `pids.max` where the hierarchy offers the
//! `pids` controller ([`TASK_PIDS_MAX`], [`SANDBOX_PIDS_MAX`]: a fork bomb stays inside). The task enters its group before its program
//! starts: it is launched as `/bin/sh -c 'echo $$ > <group>/cgroup.procs && exec "$@"'`, so that
//! everything it forks is inside. Where the hierarchy does not offer both the `cpu` and `memory`
//! controllers (cgroup v1 hosts, containers without delegation), [`Cgroups::detect`] says why and
//! tasks run without limits.

use std::path::{Path, PathBuf};

/// The scheduling period `cpu.max` quotas are expressed in, in microseconds.
const PERIOD_US: u64 = 100_000;

/// Most processes and threads one training or inference task may run.
pub const TASK_PIDS_MAX: u32 = 32_768;

/// Most processes and threads one sandbox may run.
pub const SANDBOX_PIDS_MAX: u32 = 1_024;

/// Where task groups are made.
#[derive(Clone, Debug)]
pub struct Cgroups {
    /// `<root>/stargrid`.
    parent: PathBuf,
    /// Whether the `pids` controller is on.
    pids: bool,
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

impl Cgroups {
    /// Uses the cgroup v2 hierarchy at `root` when it offers the `cpu` and `memory`
    /// controllers and a group can be made there; otherwise says why not.
    pub fn detect(root: &Path) -> Result<Cgroups, String> {
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(|e| format!("{} is not a cgroup v2 hierarchy ({e})", root.display()))?;
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
        Ok(Cgroups { parent, pids })
    }

    /// Makes the group of task `name` with `limits`; returns its directory.
    pub fn create(&self, name: &str, limits: Limits) -> Result<PathBuf, String> {
        let dir = self.parent.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |file: &str, value: String| {
            std::fs::write(dir.join(file), value)
                .map_err(|e| format!("{}: {e}", dir.join(file).display()))
        };
        write("cpu.max", cpu_max(limits.cpu_millis))?;
        write("memory.max", memory_max(limits.memory_mib))?;
        if self.pids && limits.pids_max > 0 {
            write("pids.max", limits.pids_max.to_string())?;
        }
        Ok(dir)
    }
}

/// Kills every process in a task's group, wherever its process group went (`cgroup.kill`,
/// Linux 5.14 and later; older kernels keep only the process-group signal).
pub fn kill(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

/// Removes a task's group once its processes are gone (the kernel refuses while any is left;
/// the group is then left behind, empty of limits that matter).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// `cpu.max` for a CPU share in millicores: a quota per period, or no limit.
pub fn cpu_max(cpu_millis: u32) -> String {
    if cpu_millis == 0 {
        format!("max {PERIOD_US}")
    } else {
        // 1000 millicores = one whole period of one CPU.
        let quota = (u64::from(cpu_millis) * PERIOD_US / 1000).max(1000);
        format!("{quota} {PERIOD_US}")
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

/// The command that enters `group` and then runs `program args...` in the same process.
pub fn wrap(group: &Path, program: &str, args: &[String]) -> (String, Vec<String>) {
    let mut wrapped = vec![
        "-c".to_string(),
        "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"".to_string(),
        group.display().to_string(),
        program.to_string(),
    ];
    wrapped.extend(args.iter().cloned());
    ("/bin/sh".to_string(), wrapped)
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
        assert_eq!(memory_max(0), "max");
        assert_eq!(memory_max(256), (256u64 << 20).to_string());
    }

    #[test]
    fn a_hierarchy_without_cpu_or_memory_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let e = Cgroups::detect(dir.path()).unwrap_err();
        assert!(e.contains("is not a cgroup v2 hierarchy"), "{e}");
        std::fs::write(dir.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let e = Cgroups::detect(dir.path()).unwrap_err();
        assert!(
            e.contains("does not offer the cpu controller (it offers: hugetlb)"),
            "{e}"
        );
    }

    #[test]
    fn a_task_enters_its_group_before_its_program_runs() {
        // A directory stands in for the hierarchy: the files are what the kernel would read.
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
        assert_eq!(
            std::fs::read_to_string(group.join("pids.max")).unwrap(),
            "1024"
        );
        assert_eq!(
            std::fs::read_to_string(group.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(group.join("memory.max")).unwrap(),
            (512u64 << 20).to_string()
        );
        let (program, args) = wrap(&group, "sh", &["-c".into(), "echo $$".into()]);
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        // The pid written into the group is the program's own (exec keeps it).
        let entered = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(entered.trim(), printed.trim());
    }
}
