//! Who a task runs as. An agent running as root starts every task as an unprivileged user of its
//! tenant's own: uid `base + n` for the tenant numbered `n` by the server (the same number on
//! every node, for as long as the journal lives, so a tenant's files on shared storage are its
//! own everywhere). The uid's group has the same number; supplementary groups are cleared.
//!
//! No root process ever sees the tenant's environment: the root stages (entering the cgroup,
//! `setpriv`) run with `PATH` alone; the task's environment goes through a file of the task's
//! user, sourced by the first unprivileged process, which deletes it and then runs the program
//! (see [`TaskUsers::launch`]). `setpriv` clears the capability bounding set and sets
//! `no_new_privs`, so no setuid program gives the task root back.
//!
//! Task directories are 0700 and owned by the tenant's uid, inside a work dir of mode 0711: a
//! task can reach its own directory but neither list the others nor read another tenant's logs
//! or checkpoints. Tasks of one tenant share a uid.

use crate::isolation::Root;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The shell a task's environment is read by (see [`TaskUsers::launch`]).
pub const SHELL: &str = "/bin/sh";
/// What deletes a task's environment file once it is open.
pub const RM: &str = "/bin/rm";

/// Where a task runs: its directory, as the agent and as the task see it, and its root.
#[derive(Clone, Copy, Debug)]
pub struct TaskPlace<'a> {
    /// Its directory (made by root inside the work dir).
    pub dir: &'a Path,
    /// Where the task sees it.
    pub view: &'a Path,
    /// The root file system it sees.
    pub root: Root<'a>,
}

/// `word` quoted for `sh`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Where `setpriv` is looked for.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// The default first uid of tenants' users: far above the range of people and of system
/// accounts, below the ranges container runtimes take.
pub const DEFAULT_UID_BASE: u32 = 1_900_000_000;

/// The lowest first uid accepted (below it are people and system accounts).
pub const MIN_UID_BASE: u32 = 10_000;

/// Most tenants that get a uid.
pub const MAX_TENANTS: u32 = 1_000_000;

/// The file a task's environment travels in (in its own directory).
pub const ENV_FILE: &str = ".stargrid-env";

/// Why tasks cannot run as tenant users.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// `setpriv` is not installed.
    #[error("setpriv (util-linux) not found at {SETPRIV:?}: tasks cannot drop to tenant users")]
    NoSetpriv,
    /// The uid base is too low, or leaves no room for the tenants.
    #[error(
        "--task-uid-base {0}: must be at least {MIN_UID_BASE} and leave room for {MAX_TENANTS} \
         tenants below 2^32 - 1"
    )]
    Base(u32),
    /// The work dir cannot be set up.
    #[error("{path}: {reason}")]
    WorkDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A directory on the way to the work dir is not searchable by other users.
    #[error(
        "{path} (mode {mode:o}) is not searchable by other users: tasks running as their \
         tenant's user could not reach their directories; pick a work dir under searchable \
         directories (e.g. /var/lib/stargrid-agent)"
    )]
    Unreachable {
        /// The directory.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// The server did not say whose the task is.
    #[error("the server did not say which tenant the task is for (an older server?)")]
    NoTenant,
    /// The tenant's number is beyond [`MAX_TENANTS`].
    #[error("tenant number {0} is beyond the {MAX_TENANTS} that get a uid")]
    TooManyTenants(u32),
    /// An environment variable's name cannot be passed on.
    #[error("env: '{0}' is not a variable name (letters, digits and '_', not first a digit)")]
    BadName(String),
    /// A value holds a NUL byte.
    #[error("env.{0}: holds a NUL byte")]
    BadValue(String),
}

/// A tenant's user on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskUser {
    /// Its uid, and the gid of its group.
    pub uid: u32,
}

/// The tenants' users (see the module documentation).
#[derive(Debug)]
pub struct TaskUsers {
    base: u32,
    setpriv: PathBuf,
}

impl TaskUsers {
    /// Tenants' users from uid `base`. Makes the work dir 0711 and checks that every
    /// directory above it is searchable by other users.
    pub fn open(work_dir: &Path, base: u32) -> Result<TaskUsers, UsersError> {
        if base < MIN_UID_BASE
            || base
                .checked_add(MAX_TENANTS)
                .is_none_or(|top| top == u32::MAX)
        {
            return Err(UsersError::Base(base));
        }
        let setpriv = SETPRIV
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(UsersError::NoSetpriv)?;
        let fail = |path: &Path, e: std::io::Error| UsersError::WorkDir {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let work_dir = &std::fs::canonicalize(work_dir).map_err(|e| fail(work_dir, e))?;
        std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| fail(work_dir, e))?;
        for dir in work_dir.ancestors().skip(1) {
            let mode = std::fs::metadata(dir)
                .map_err(|e| fail(dir, e))?
                .permissions()
                .mode();
            if mode & 0o001 == 0 {
                return Err(UsersError::Unreachable {
                    path: dir.display().to_string(),
                    mode: mode & 0o7777,
                });
            }
        }
        Ok(TaskUsers { base, setpriv })
    }

    /// Makes `dir` the user's (0700) and returns the command that starts `program args...` as
    /// that user with `no_new_privs` and no capabilities, with no environment of its own (an
    /// interactive sandbox's init).
    pub fn launch_bare(
        &self,
        user: TaskUser,
        dir: &Path,
        root: Root<'_>,
        program: &str,
        args: &[String],
    ) -> Result<(String, Vec<String>), String> {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.uid))
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut out = self.drop_to(user);
        out.push(program.to_string());
        out.extend(args.iter().cloned());
        Ok(self.setpriv_in(root, out))
    }

    /// `setpriv` with `args`, as `root` runs it.
    fn setpriv_in(&self, root: Root<'_>, args: Vec<String>) -> (String, Vec<String>) {
        let mut command = root.run(&self.setpriv);
        let program = command.remove(0);
        command.extend(args);
        (program, command)
    }

    /// The `setpriv` program tasks drop to their users with.
    pub fn setpriv(&self) -> &Path {
        &self.setpriv
    }

    /// `setpriv`'s arguments that drop to `user` for good, up to `--`.
    fn drop_to(&self, user: TaskUser) -> Vec<String> {
        vec![
            format!("--reuid={}", user.uid),
            format!("--regid={}", user.uid),
            "--clear-groups".to_string(),
            "--no-new-privs".to_string(),
            "--bounding-set=-all".to_string(),
            "--inh-caps=-all".to_string(),
            "--".to_string(),
        ]
    }

    /// The command that starts a pooled sandbox's init (`program args...`) as root with no
    /// capability but `CAP_SETUID` and `CAP_SETGID` (to become its tenant's user when it is
    /// claimed), no supplementary groups and `no_new_privs`.
    pub fn launch_pool(
        &self,
        root: Root<'_>,
        program: &str,
        args: &[String],
    ) -> (String, Vec<String>) {
        let mut out = vec![
            "--clear-groups".to_string(),
            "--no-new-privs".to_string(),
            "--bounding-set=-all,+setuid,+setgid".to_string(),
            "--inh-caps=-all".to_string(),
            "--".to_string(),
            program.to_string(),
        ];
        out.extend(args.iter().cloned());
        self.setpriv_in(root, out)
    }

    /// The user pooled sandboxes idle as before they are anyone's (just below the tenants'
    /// uids; see [`crate::warm`]).
    pub fn pool_user(&self) -> TaskUser {
        TaskUser { uid: self.base - 1 }
    }

    /// The user the tenant numbered `tenant` runs as.
    pub fn user_of(&self, tenant: Option<u32>) -> Result<TaskUser, UsersError> {
        let n = tenant.ok_or(UsersError::NoTenant)?;
        if n >= MAX_TENANTS {
            return Err(UsersError::TooManyTenants(n));
        }
        Ok(TaskUser { uid: self.base + n })
    }

    /// Prepares `place.dir` for a task of `user` and returns the command that starts `program
    /// args...` as that user with `env`: the directory becomes the user's (0700), `env` goes
    /// into a fresh file of the user's there, and the command is `setpriv` to the user, then
    /// `sh` opening and deleting the file, sourcing it, then the program. Files the task left
    /// in the directory are never followed: the environment file is made anew (`O_EXCL`, after
    /// unlinking any old name).
    pub fn launch(
        &self,
        user: TaskUser,
        place: TaskPlace<'_>,
        env: &BTreeMap<String, String>,
        program: &str,
        args: &[String],
    ) -> Result<(String, Vec<String>), String> {
        let TaskPlace { dir, view, root } = place;
        let text = env_file_text(env).map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.uid))
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(ENV_FILE);
        let file = fresh_file(&path, user).map_err(|e| format!("{}: {e}", path.display()))?;
        (&file)
            .write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = self.drop_to(user);
        out.extend(root.run(Path::new(SHELL)));
        let rm: Vec<String> = root.run(Path::new(RM)).iter().map(|w| quoted(w)).collect();
        out.extend([
            "-c".to_string(),
            // The file is opened and deleted before anything of the tenant's is in the
            // environment; nothing but the program runs with it.
            format!(
                "exec 3<\"$0\" && {} -f -- \"$0\" && set -a && . /dev/fd/3 && set +a \
                 && exec 3<&- && exec \"$@\"",
                rm.join(" ")
            ),
            view.join(ENV_FILE).display().to_string(),
            program.to_string(),
        ]);
        out.extend(args.iter().cloned());
        Ok(self.setpriv_in(root, out))
    }
}

/// A new file at `path` owned by `user`, mode 0600: any old name there is unlinked first (never
/// followed), and the file is made with `O_EXCL`, so it cannot be a link a task planted.
pub fn fresh_file(path: &Path, user: TaskUser) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.uid))?;
    Ok(file)
}

/// `env` as shell assignments the task's first process sources: names checked, values in
/// single quotes (a quote inside written `'\''`), so nothing in a value is ever evaluated.
pub fn env_file_text(env: &BTreeMap<String, String>) -> Result<String, UsersError> {
    let mut out = String::new();
    for (name, value) in env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(UsersError::BadName(name.clone()));
        }
        if value.contains('\0') {
            return Err(UsersError::BadValue(name.clone()));
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&quoted(value));
        out.push('\n');
    }
    Ok(out)
}

/// Whether the agent runs as root (and so can start tasks as other users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tenant_has_the_same_uid_on_every_node_and_never_root() {
        if !SETPRIV.iter().any(|p| Path::new(p).exists()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (a, b) = (dir.path().join("node-a"), dir.path().join("node-b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let (on_a, on_b) = (
            TaskUsers::open(&a, 50_000).unwrap(),
            TaskUsers::open(&b, 50_000).unwrap(),
        );
        assert_eq!(
            on_a.user_of(Some(3)).unwrap(),
            on_b.user_of(Some(3)).unwrap()
        );
        assert_eq!(on_a.user_of(Some(3)).unwrap().uid, 50_003);
        assert_ne!(on_a.user_of(Some(0)).unwrap().uid, 0);
        assert!(matches!(on_a.user_of(None), Err(UsersError::NoTenant)));
        assert!(matches!(
            on_a.user_of(Some(MAX_TENANTS)),
            Err(UsersError::TooManyTenants(_))
        ));
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
        // Bases that would reach people, system accounts or past u32.
        for base in [0, 999, u32::MAX - 10] {
            assert!(matches!(
                TaskUsers::open(&a, base),
                Err(UsersError::Base(_))
            ));
        }
        // A work dir others cannot reach is refused, naming the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = TaskUsers::open(&a, 50_000).unwrap_err().to_string();
        assert!(e.contains("not searchable by other users"), "{e}");
    }

    #[test]
    fn a_planted_link_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let me = TaskUser {
            uid: nix::unistd::geteuid().as_raw(),
        };
        let f = fresh_file(&link, me).unwrap();
        (&f).write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn env_names_are_checked() {
        for bad in ["", "1X", "A-B", "A B", "A=B", "$(x)"] {
            let env = BTreeMap::from([(bad.to_string(), "v".to_string())]);
            assert!(env_file_text(&env).is_err(), "{bad:?}");
        }
        let env = BTreeMap::from([("X".to_string(), "a\0b".to_string())]);
        assert!(env_file_text(&env).is_err());
    }

    proptest! {
        /// Whatever a value holds, sourcing the file gives it back byte for byte and runs
        /// nothing.
        #[test]
        fn any_value_survives_the_shell_unevaluated(value in "[^\\x00]{0,40}") {
            let env = BTreeMap::from([("V".to_string(), value.clone())]);
            let text = env_file_text(&env).unwrap();
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", "set -a && eval \"$1\" && printf %s \"$V\"", "sh", &text])
                .env_clear()
                .output()
                .unwrap();
            prop_assert!(out.status.success());
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }
}
