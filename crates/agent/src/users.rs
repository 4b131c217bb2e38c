//! Who a task runs as. An agent running as root starts every task as an unprivileged user of its
//! tenant's own: uids from `base` up, one per tenant, handed out in the order tenants first run
//! on the node and kept in `<work_dir>/task-users.json` (0600) so that a tenant keeps its uid
//! (and its files) across restarts. The uid's group has the same number; supplementary groups
//! are cleared. The agent drops to it through `setpriv` (util-linux) after the task entered its
//! cgroup, with `no_new_privs` set so that no setuid program gives the task root back.
//!
//! Task directories are made 0700 and owned by the tenant's uid, inside a work dir of mode
//! 0711: a task can reach its own directory, but neither list the others nor read another
//! tenant's logs or checkpoints. Tasks of one tenant share a uid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where `setpriv` is looked for.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// The default first uid of tenants' users: far above the range of people and of system
/// accounts, below the ranges container runtimes take.
pub const DEFAULT_UID_BASE: u32 = 1_900_000_000;

/// Most tenants one node hands uids to.
pub const MAX_TENANTS: u32 = 1_000_000;

/// Why tasks cannot run as tenant users.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// `setpriv` is not installed.
    #[error("setpriv (util-linux) not found at {SETPRIV:?}: tasks cannot drop to tenant users")]
    NoSetpriv,
    /// The uid map cannot be read or written.
    #[error("{path}: {reason}")]
    Map {
        /// The map file.
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
    /// The uids are used up.
    #[error("more than {MAX_TENANTS} tenants, or uids past u32, from base {0}")]
    Exhausted(u32),
}

/// A tenant's user on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskUser {
    /// Its uid, and the gid of its group.
    pub uid: u32,
}

/// The tenants' users of one node (see the module documentation).
#[derive(Debug)]
pub struct TaskUsers {
    base: u32,
    path: PathBuf,
    setpriv: PathBuf,
    by_tenant: BTreeMap<String, u32>,
}

impl TaskUsers {
    /// The users kept in `work_dir`, from uid `base`. Makes the work dir 0711 and checks that
    /// every directory above it is searchable by other users.
    pub fn open(work_dir: &Path, base: u32) -> Result<TaskUsers, UsersError> {
        let setpriv = SETPRIV
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(UsersError::NoSetpriv)?;
        let map_error = |path: &Path, e: &dyn std::fmt::Display| UsersError::Map {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let work_dir = &std::fs::canonicalize(work_dir).map_err(|e| map_error(work_dir, &e))?;
        set_mode(work_dir, 0o711).map_err(|e| map_error(work_dir, &e))?;
        for dir in work_dir.ancestors().skip(1) {
            let mode = mode_of(dir).map_err(|e| map_error(dir, &e))?;
            if mode & 0o001 == 0 {
                return Err(UsersError::Unreachable {
                    path: dir.display().to_string(),
                    mode: mode & 0o7777,
                });
            }
        }
        let path = work_dir.join("task-users.json");
        let by_tenant = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| map_error(&path, &e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(map_error(&path, &e)),
        };
        Ok(TaskUsers {
            base,
            path,
            setpriv,
            by_tenant,
        })
    }

    /// The user `tenant`'s tasks run as, handed out now if the tenant is new to the node.
    pub fn user_of(&mut self, tenant: &str) -> Result<TaskUser, UsersError> {
        if let Some(&uid) = self.by_tenant.get(tenant) {
            return Ok(TaskUser { uid });
        }
        let n = u32::try_from(self.by_tenant.len())
            .ok()
            .filter(|n| *n < MAX_TENANTS)
            .ok_or(UsersError::Exhausted(self.base))?;
        let uid = self
            .base
            .checked_add(n)
            .filter(|u| *u < u32::MAX - 1)
            .ok_or(UsersError::Exhausted(self.base))?;
        self.by_tenant.insert(tenant.to_string(), uid);
        self.save()?;
        Ok(TaskUser { uid })
    }

    /// Written whole to a new file, then renamed over the old: a crash leaves one or the other.
    fn save(&self) -> Result<(), UsersError> {
        let err = |e: &dyn std::fmt::Display| UsersError::Map {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let text = serde_json::to_vec_pretty(&self.by_tenant).map_err(|e| err(&e))?;
        let tmp = self.path.with_extension("json.new");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(&e))?;
            f.write_all(&text).map_err(|e| err(&e))?;
            f.sync_all().map_err(|e| err(&e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| err(&e))
    }

    /// The command that drops to `user` and runs `program args...` in the same process.
    pub fn drop_to(&self, user: TaskUser, program: &str, args: &[String]) -> (String, Vec<String>) {
        let mut out = vec![
            format!("--reuid={}", user.uid),
            format!("--regid={}", user.uid),
            "--clear-groups".to_string(),
            "--no-new-privs".to_string(),
            "--".to_string(),
            program.to_string(),
        ];
        out.extend(args.iter().cloned());
        (self.setpriv.display().to_string(), out)
    }
}

/// Gives `path` to `user`, with `mode`.
pub fn hand_over(path: &Path, user: TaskUser, mode: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.uid))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn mode_of(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode())
}

/// Whether the agent runs as root (and so can start tasks as other users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tenants_keep_their_uids_across_restarts_and_never_share_one() {
        if !Path::new(SETPRIV[0]).exists() && !Path::new(SETPRIV[1]).exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        set_mode(dir.path(), 0o755).unwrap();
        let mut users = TaskUsers::open(&work, 5000).unwrap();
        let a = users.user_of("vision").unwrap();
        let b = users.user_of("speech").unwrap();
        assert_eq!((a.uid, b.uid), (5000, 5001));
        assert_eq!(users.user_of("vision").unwrap(), a);
        assert_eq!(mode_of(&work).unwrap() & 0o777, 0o711);
        assert_eq!(
            mode_of(&work.join("task-users.json")).unwrap() & 0o777,
            0o600
        );
        let mut again = TaskUsers::open(&work, 5000).unwrap();
        assert_eq!(again.user_of("speech").unwrap(), b);
        assert_eq!(again.user_of("new").unwrap().uid, 5002);
        let (program, args) = again.drop_to(b, "sleep", &["1".into()]);
        assert!(program.ends_with("setpriv"));
        assert_eq!(
            args,
            [
                "--reuid=5001",
                "--regid=5001",
                "--clear-groups",
                "--no-new-privs",
                "--",
                "sleep",
                "1"
            ]
        );
        // A work dir others cannot reach is refused, naming the directory.
        set_mode(dir.path(), 0o700).unwrap();
        let e = TaskUsers::open(&work, 5000).unwrap_err().to_string();
        assert!(e.contains("not searchable by other users"), "{e}");
        // A damaged map is refused by name, not reset (that would hand a uid to two tenants).
        set_mode(dir.path(), 0o755).unwrap();
        std::fs::write(work.join("task-users.json"), "{").unwrap();
        let e = TaskUsers::open(&work, 5000).unwrap_err().to_string();
        assert!(e.contains("task-users.json"), "{e}");
    }

    #[test]
    fn uids_stop_before_they_wrap() {
        let mut users = TaskUsers {
            base: u32::MAX - 1,
            path: PathBuf::from("/nonexistent/task-users.json"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
            by_tenant: BTreeMap::new(),
        };
        assert!(matches!(users.user_of("a"), Err(UsersError::Exhausted(_))));
    }
}
