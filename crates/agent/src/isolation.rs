//! The isolation layer a sandbox (and, with `--isolate-tasks`, every task) runs under.
//!
//! [`Isolation::Bubblewrap`] runs it in bubblewrap's namespaces, made by the agent as root
//! before the task drops to its tenant's user (see [`crate::users`]): its own PID, mount, IPC,
//! UTS, network and (where the kernel has it) cgroup namespaces; a read-only view of the host's
//! `/usr` and `/etc` only (no home, no agent work dir, no other sandbox, no data dir), or of
//! its template's root ([`crate::template`]) with the agent's helpers under `/.stargrid`; its own
//! task directory, writable, at `/sandbox` (a sandbox has a scratch in memory there instead,
//! and an interactive one its init's program); a private `/tmp` of bounded size (tmpfs: it counts
//! against the task's memory); no network but loopback; `/proc` of its own PID namespace; a
//! seccomp filter ([`crate::seccomp`]); and, after the drop, no capabilities (the bounding set
//! cleared) and `no_new_privs`.
//! [`Isolation::None`] runs tasks as plain processes of their tenant's user. The choice sits
//! behind this one type, so that a stronger layer (gVisor, microVMs) can be added beside it.

use crate::template::{HostTools, RootEntry, Template, TOOLS_BIN, TOOLS_DIR, TOOLS_LIB};
use std::path::{Path, PathBuf};

/// Where a task sees its own directory under bubblewrap.
pub const SANDBOX_DIR: &str = "/sandbox";

/// Where an interactive sandbox sees its init's program (the agent's own, read-only).
pub const INIT_IN_SANDBOX: &str = "/.stargrid-init";

/// The size of a sandbox's private `/tmp`.
pub const TMP_BYTES: u64 = 256 << 20;

/// The descriptor bubblewrap reads the seccomp filter from.
const SECCOMP_FD: u32 = 9;

/// Where `bwrap` is looked for.
const BWRAP: [&str; 2] = ["/usr/bin/bwrap", "/bin/bwrap"];

/// Where the task's files are, in the isolation (see [`Isolation::wrap`]).
#[derive(Clone, Copy, Debug)]
pub enum Layout<'a> {
    /// Its directory on the host, writable at `/sandbox` (a task, whose checkpoints the agent
    /// reads there).
    Directory,
    /// A scratch in memory at `/sandbox` (a batch's sandbox), with the host directory `env`
    /// (where its environment file is written) at [`ENV_IN_SANDBOX`].
    Scratch {
        /// The scratch's size.
        bytes: u64,
        /// The environment file's directory on the host.
        env: &'a Path,
    },
    /// A scratch in memory at `/sandbox` and an init (an interactive sandbox).
    Interactive {
        /// The program of its init, on the host.
        init: &'a Path,
        /// The scratch's size.
        bytes: u64,
    },
}

/// Where a batch's sandbox sees the directory its environment file is written to.
pub const ENV_IN_SANDBOX: &str = "/.stargrid-env";

/// The root file system a sandbox sees.
#[derive(Clone, Copy, Debug)]
pub enum Root<'a> {
    /// The host's `/usr` and `/etc`.
    Host,
    /// A template's root, with the host's helper programs.
    Template {
        /// The template.
        template: &'a Template,
        /// The helpers and what they need.
        tools: &'a HostTools,
    },
}

impl Root<'_> {
    /// The command line (up to its own arguments) that runs host program `host` in this root.
    pub fn run(&self, host: &Path) -> Vec<String> {
        match self {
            Root::Host => vec![host.display().to_string()],
            Root::Template { tools, .. } => tools.command(host),
        }
    }
}

/// What `--isolation` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationChoice {
    /// Bubblewrap where it is installed and the agent is root; none otherwise (said at start).
    Auto,
    /// Plain processes.
    None,
    /// Bubblewrap, or refuse to start.
    Bubblewrap,
}

impl std::str::FromStr for IsolationChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IsolationChoice::Auto),
            "none" => Ok(IsolationChoice::None),
            "bwrap" | "bubblewrap" => Ok(IsolationChoice::Bubblewrap),
            other => Err(format!("unknown isolation '{other}' (auto, none, bwrap)")),
        }
    }
}

/// How tasks are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Plain processes.
    None,
    /// Bubblewrap's namespaces (see the module documentation).
    Bubblewrap {
        /// The `bwrap` program.
        bwrap: PathBuf,
        /// The compiled seccomp filter it loads (see [`crate::seccomp`]), once
        /// [`Isolation::prepared`] wrote it.
        seccomp: Option<PathBuf>,
    },
}

impl Isolation {
    /// The isolation `choice` gives on this host: bubblewrap needs the program and root (it
    /// makes the namespaces before the task drops to its tenant's user).
    pub fn detect(choice: IsolationChoice, root: bool) -> Result<Isolation, String> {
        let found = BWRAP.iter().map(PathBuf::from).find(|p| p.exists());
        match (choice, found, root) {
            (IsolationChoice::None, _, _) => Ok(Isolation::None),
            (_, Some(bwrap), true) => Ok(Isolation::Bubblewrap {
                bwrap,
                seccomp: None,
            }),
            (IsolationChoice::Auto, _, _) => Ok(Isolation::None),
            (IsolationChoice::Bubblewrap, None, _) => Err(format!(
                "--isolation bwrap: bubblewrap is not installed ({BWRAP:?}; Debian: bubblewrap)"
            )),
            (IsolationChoice::Bubblewrap, Some(_), false) => Err(
                "--isolation bwrap: the agent must run as root (it makes the namespaces before \
                 the task drops to its tenant's user)"
                    .to_string(),
            ),
        }
    }

    /// What it is, in words.
    pub fn describe(&self) -> &'static str {
        match self {
            Isolation::None => "no isolation layer (plain processes)",
            Isolation::Bubblewrap { .. } => {
                "bubblewrap (own PID, mount, IPC, UTS and network namespaces; read-only /usr \
                 and /etc; no capabilities; a seccomp filter: no new namespaces, io_uring, bpf, \
                 keyring or mounts)"
            }
        }
    }

    /// Where a task whose directory is `dir` on the host sees it.
    pub fn view_of(&self, dir: &Path) -> PathBuf {
        match self {
            Isolation::None => dir.to_path_buf(),
            Isolation::Bubblewrap { .. } => PathBuf::from(SANDBOX_DIR),
        }
    }

    /// The same isolation with its seccomp filter compiled into `<work_dir>/seccomp.bpf` (a
    /// machine without a filter for its architecture runs without one, and says so).
    pub fn prepared(self, work_dir: &Path) -> Result<Isolation, String> {
        let Isolation::Bubblewrap {
            bwrap,
            seccomp: None,
        } = self
        else {
            return Ok(self);
        };
        let seccomp = match crate::seccomp::program() {
            Ok(bytes) => {
                let path = work_dir.join("seccomp.bpf");
                let fresh = work_dir.join(".seccomp.bpf.new");
                std::fs::write(&fresh, bytes)
                    .and_then(|()| std::fs::rename(&fresh, &path))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Some(path)
            }
            Err(why) => {
                tracing::error!("sandboxes run WITHOUT a seccomp filter: {why}");
                None
            }
        };
        Ok(Isolation::Bubblewrap { bwrap, seccomp })
    }

    /// The command line (up to its own arguments) that runs the program at `host` that
    /// [`Isolation::wrap`] was given as a sandbox's init, in `root`.
    pub fn init_command(&self, host: &Path, root: Root<'_>) -> Vec<String> {
        match (self, root) {
            (Isolation::None, _) => vec![host.display().to_string()],
            (Isolation::Bubblewrap { .. }, Root::Host) => vec![INIT_IN_SANDBOX.to_string()],
            (Isolation::Bubblewrap { .. }, root) => root.run(host),
        }
    }

    /// The command that runs `program args...` (the drop to the tenant's user and the task)
    /// inside the isolation, in `root`, with `dir` as its directory at `/sandbox` or a scratch
    /// in memory there (`layout`); an interactive sandbox's init's program is read-only at
    /// [`INIT_IN_SANDBOX`] (in a template, among the helpers).
    pub fn wrap(
        &self,
        dir: &Path,
        root: Root<'_>,
        layout: Layout<'_>,
        program: String,
        args: Vec<String>,
    ) -> (String, Vec<String>) {
        let Isolation::Bubblewrap { bwrap, seccomp } = self else {
            return (program, args);
        };
        let mut out: Vec<String> = [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |args: &[&str]| out.extend(args.iter().map(|s| s.to_string()));
        match root {
            Root::Host => push(&[
                "--ro-bind",
                "/usr",
                "/usr",
                "--ro-bind",
                "/etc",
                "/etc",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/sbin",
                "/sbin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
            ]),
            Root::Template { template, tools } => {
                for entry in &template.entries {
                    match entry {
                        RootEntry::Bind { host, at } => {
                            push(&["--ro-bind", &host.display().to_string(), &format!("/{at}")])
                        }
                        RootEntry::Link { target, at } => {
                            push(&["--symlink", target, &format!("/{at}")])
                        }
                    }
                }
                // The host's loader runs the helpers, some as root, inside this root: a preload
                // list of the template's must not reach them (a device on a bind mount cannot
                // be opened, so the loader finds none).
                if std::fs::symlink_metadata(template.root.join("etc/ld.so.preload")).is_ok() {
                    push(&["--ro-bind", "/dev/null", "/etc/ld.so.preload"]);
                }
                // Readable by the sandbox's user (bubblewrap makes missing parents 0700).
                for dir in [TOOLS_DIR, TOOLS_BIN, TOOLS_LIB] {
                    push(&["--perms", "0755", "--dir", dir]);
                }
                for (host, at) in tools.binds() {
                    push(&["--ro-bind", &host.display().to_string(), at]);
                }
            }
        }
        push(&["--proc", "/proc", "--dev", "/dev", "--size"]);
        out.push(TMP_BYTES.to_string());
        // Writable by the sandbox's user, as a `/tmp` is (sticky: only the sandbox's own
        // processes are there anyway).
        for arg in ["--perms", "1777", "--tmpfs", "/tmp"] {
            out.push(arg.to_string());
        }
        let mut push = |args: &[&str]| out.extend(args.iter().map(|s| s.to_string()));
        let (scratch, env, init) = match layout {
            Layout::Directory => (None, None, None),
            Layout::Scratch { bytes, env } => (Some(bytes), Some(env), None),
            Layout::Interactive { init, bytes } => (Some(bytes), None, Some(init)),
        };
        match scratch {
            // A scratch in memory: bounded by its size and charged to the sandbox's memory;
            // nothing it writes reaches the host's disk.
            Some(bytes) => push(&[
                "--size",
                &bytes.to_string(),
                "--perms",
                "1777",
                "--tmpfs",
                SANDBOX_DIR,
            ]),
            None => push(&["--bind", &dir.display().to_string(), SANDBOX_DIR]),
        }
        if let Some(env) = env {
            push(&["--bind", &env.display().to_string(), ENV_IN_SANDBOX]);
        }
        if let (Some(init), Root::Host) = (init, root) {
            push(&["--ro-bind", &init.display().to_string(), INIT_IN_SANDBOX]);
        }
        for arg in ["--chdir", SANDBOX_DIR, "--hostname", "sandbox", "--"] {
            out.push(arg.to_string());
        }
        out.push(program);
        out.extend(args);
        match seccomp {
            // The filter reaches bubblewrap on a descriptor the shell opens for it.
            Some(filter) => {
                let mut wrapped = vec![
                    "-c".to_string(),
                    format!("exec {SECCOMP_FD}<\"$0\" && exec \"$@\""),
                    filter.display().to_string(),
                    bwrap.display().to_string(),
                    "--seccomp".to_string(),
                    SECCOMP_FD.to_string(),
                ];
                wrapped.extend(out);
                ("/bin/sh".to_string(), wrapped)
            }
            None => (bwrap.display().to_string(), out),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_choice_is_refused_by_name_where_it_cannot_be_had() {
        assert_eq!(
            Isolation::detect(IsolationChoice::None, true).unwrap(),
            Isolation::None
        );
        assert_eq!(
            Isolation::detect(IsolationChoice::Auto, false).unwrap(),
            Isolation::None
        );
        let installed = BWRAP.iter().any(|p| Path::new(p).exists());
        let e = Isolation::detect(IsolationChoice::Bubblewrap, false).unwrap_err();
        assert!(
            e.contains(if installed {
                "must run as root"
            } else {
                "not installed"
            }),
            "{e}"
        );
        assert!("gvisor".parse::<IsolationChoice>().is_err());
    }

    #[test]
    fn bubblewrap_binds_only_the_task_directory_writable() {
        let iso = Isolation::Bubblewrap {
            bwrap: "/usr/bin/bwrap".into(),
            seccomp: None,
        };
        let (program, args) = iso.wrap(
            Path::new("/var/lib/agent/9-sandbox-3"),
            Root::Host,
            Layout::Directory,
            "/usr/bin/setpriv".into(),
            vec!["--".into(), "true".into()],
        );
        assert_eq!(program, "/usr/bin/bwrap");
        let joined = args.join(" ");
        assert!(
            joined.contains("--bind /var/lib/agent/9-sandbox-3 /sandbox"),
            "{joined}"
        );
        assert!(joined.contains("--unshare-net"), "{joined}");
        assert!(joined.ends_with("-- /usr/bin/setpriv -- true"), "{joined}");
        // Nothing else of the host is bound writable.
        assert_eq!(args.iter().filter(|a| *a == "--bind").count(), 1);
        assert_eq!(iso.view_of(Path::new("/x")), PathBuf::from("/sandbox"));
    }

    #[test]
    fn a_template_replaces_the_hosts_root_and_brings_the_agents_helpers() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("usr")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let template = Template::open("mini", root.path()).unwrap();
        let tools = HostTools::find(&[Path::new("/bin/sh")]).unwrap();
        let iso = Isolation::Bubblewrap {
            bwrap: "/usr/bin/bwrap".into(),
            seccomp: None,
        };
        let root_of = Root::Template {
            template: &template,
            tools: &tools,
        };
        let init = iso.init_command(Path::new("/bin/sh"), root_of);
        assert!(init.last().unwrap().starts_with(TOOLS_BIN), "{init:?}");
        let (_, args) = iso.wrap(
            Path::new("/w/1-sandbox-0"),
            root_of,
            Layout::Interactive {
                init: Path::new("/bin/sh"),
                bytes: 1 << 20,
            },
            init[0].clone(),
            init[1..].to_vec(),
        );
        let joined = args.join(" ");
        let usr = std::fs::canonicalize(root.path()).unwrap().join("usr");
        assert!(
            joined.contains(&format!("--ro-bind {} /usr", usr.display())),
            "{joined}"
        );
        assert!(joined.contains("--symlink usr/bin /bin"), "{joined}");
        assert!(!joined.contains("--ro-bind /usr /usr"), "{joined}");
        assert!(!joined.contains(INIT_IN_SANDBOX), "{joined}");
        assert!(
            joined.contains("--perms 0755 --dir /.stargrid/bin"),
            "{joined}"
        );
    }

    #[test]
    fn a_prepared_bubblewrap_loads_its_seccomp_filter_from_a_descriptor() {
        let work = tempfile::tempdir().unwrap();
        let iso = Isolation::Bubblewrap {
            bwrap: "/usr/bin/bwrap".into(),
            seccomp: None,
        }
        .prepared(work.path())
        .unwrap();
        let Isolation::Bubblewrap {
            seccomp: Some(filter),
            ..
        } = &iso
        else {
            // No filter for this architecture: nothing more to check.
            return;
        };
        assert!(std::fs::metadata(filter).unwrap().len() > 0);
        let (program, args) = iso.wrap(
            Path::new("/w/1-sandbox-0"),
            Root::Host,
            Layout::Interactive {
                init: Path::new("/usr/bin/stargrid"),
                bytes: 1 << 30,
            },
            "/usr/bin/setpriv".into(),
            vec!["--".into(), "true".into()],
        );
        assert_eq!(program, "/bin/sh");
        let joined = args.join(" ");
        assert!(
            joined.contains(&format!(
                "{} /usr/bin/bwrap --seccomp 9 --unshare",
                filter.display()
            )),
            "{joined}"
        );
        assert!(
            joined.contains("--ro-bind /usr/bin/stargrid /.stargrid-init"),
            "{joined}"
        );
        // An interactive sandbox's scratch is in memory, bounded; the host directory is not
        // bound at all.
        assert!(
            joined.contains("--size 1073741824 --perms 1777 --tmpfs /sandbox"),
            "{joined}"
        );
        assert!(!joined.contains("/w/1-sandbox-0"), "{joined}");
    }
}
