//! Sandbox templates: root file systems a sandbox can run in instead of the host's `/usr` and
//! `/etc` (`stargrid agent --template NAME=DIR`). A template is a directory laid out as a
//! root (`usr/`, `etc/`, `bin/`…; a Debian or Alpine root made by `debootstrap`, or an image
//! exported with `docker export`), shown to the sandbox read-only. Its top-level entries are
//! read once, when the agent starts; each becomes a read-only bind (or, for a link, the same
//! link) in the sandbox's root, beside the mounts every sandbox has (`/proc`, `/dev`, `/tmp`,
//! `/sandbox`), which a template cannot replace.
//!
//! The agent's own helpers (the sandbox's init, `setpriv`, `sh`) are the host's programs and
//! need the host's libraries, which a template may not have or may have in other versions.
//! [`HostTools`] binds them with their libraries under `/.stargrid/` and runs each through the
//! host's dynamic loader with its own library path, so they work in any template; a
//! template's `/etc/ld.so.preload` is hidden from them (some run as root before the drop).
//! A template's root must be root's and writable by root only: whoever could write it could
//! swap an entry for a link to the host's files, which a bind would follow.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a template sandbox sees the host's helpers.
pub const TOOLS_DIR: &str = "/.stargrid";
/// Where a template sandbox sees the host's helper programs.
pub const TOOLS_BIN: &str = "/.stargrid/bin";
/// Where a template sandbox sees the host libraries its helper programs need.
pub const TOOLS_LIB: &str = "/.stargrid/lib";

/// Top-level names every sandbox's root has from the isolation layer itself.
const RESERVED: [&str; 7] = [
    "proc",
    "dev",
    "tmp",
    "sys",
    "sandbox",
    ".stargrid",
    ".stargrid-init",
];

/// The most top-level entries a template may have.
const MAX_ENTRIES: usize = 256;

/// One top-level entry of a template, as the sandbox's root shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory or file of the template, bound read-only at `/<at>`.
    Bind {
        /// On the host.
        host: PathBuf,
        /// Its name at the root.
        at: String,
    },
    /// A symbolic link (`bin -> usr/bin`), made again with the same target.
    Link {
        /// What it points to.
        target: String,
        /// Its name at the root.
        at: String,
    },
}

/// A template: its name and root's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Its name (see [`wire::api::is_template_name`]).
    pub name: String,
    /// Its root directory on the host.
    pub root: PathBuf,
    /// The entries of its root, by name.
    pub entries: Vec<RootEntry>,
}

impl Template {
    /// Reads template `name` rooted at `root`: it must be a directory with at most 256
    /// entries whose names and link targets are UTF-8.
    pub fn open(name: &str, root: &Path) -> Result<Template, String> {
        if !wire::api::is_template_name(name) {
            return Err(format!(
                "template name '{name}': lower-case letters, digits, '-', '_' or '.', 1 to 64"
            ));
        }
        let fail = |e: std::io::Error| format!("template {name}: {}: {e}", root.display());
        let root = std::fs::canonicalize(root).map_err(fail)?;
        let meta = std::fs::metadata(&root).map_err(fail)?;
        if !meta.is_dir() {
            return Err(format!(
                "template {name}: {} is not a directory",
                root.display()
            ));
        }
        // Whoever can write its root can swap an entry for a link to anywhere on the host,
        // which a bind would follow.
        let ours = nix::unistd::geteuid().as_raw();
        if (meta.uid() != 0 && meta.uid() != ours) || meta.mode() & 0o022 != 0 {
            return Err(format!(
                "template {name}: {} must be root's and writable by its owner only",
                root.display()
            ));
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let Some(at) = entry.file_name().to_str().map(str::to_string) else {
                return Err(format!(
                    "template {name}: {}: not a UTF-8 name",
                    entry.path().display()
                ));
            };
            if RESERVED.contains(&at.as_str()) {
                continue;
            }
            if entries.len() == MAX_ENTRIES {
                return Err(format!(
                    "template {name}: more than {MAX_ENTRIES} entries at its root"
                ));
            }
            let kind = entry.file_type().map_err(fail)?;
            if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(fail)?;
                let Some(target) = target.to_str().map(str::to_string) else {
                    return Err(format!(
                        "template {name}: {}: not a UTF-8 link",
                        entry.path().display()
                    ));
                };
                entries.push(RootEntry::Link { target, at });
            } else if kind.is_dir() || kind.is_file() {
                entries.push(RootEntry::Bind {
                    host: entry.path(),
                    at,
                });
            }
        }
        entries.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
        Ok(Template {
            name: name.to_string(),
            root,
            entries,
        })
    }
}

fn entry_name(e: &RootEntry) -> &str {
    match e {
        RootEntry::Bind { at, .. } | RootEntry::Link { at, .. } => at,
    }
}

/// `NAME=DIR`, as `--template` takes it.
pub fn parse_template_flag(flag: &str) -> Result<(String, PathBuf), String> {
    match flag.split_once('=') {
        Some((name, dir)) if !dir.is_empty() => Ok((name.to_string(), PathBuf::from(dir))),
        _ => Err(format!("--template {flag}: expected NAME=DIR")),
    }
}

/// The host programs a template sandbox runs (see the module documentation), with the files
/// they need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTools {
    /// Where the sandbox sees a file → the host's file (a multi-call program can be bound at
    /// several names).
    binds: BTreeMap<String, PathBuf>,
    /// A host program, as asked for → where the sandbox sees it, and whether it is linked
    /// dynamically (run through the loader).
    programs: BTreeMap<PathBuf, (String, bool)>,
    /// The host's dynamic loader, where the sandbox sees it; `None`: every program is static.
    loader: Option<String>,
}

impl HostTools {
    /// The tools for `programs` (each with the libraries `ldd` names for it).
    pub fn find(programs: &[&Path]) -> Result<HostTools, String> {
        let mut tools = HostTools::default();
        for &program in programs {
            // Named as asked for (`sh`, not `busybox`: a multi-call program looks at its name).
            let name = file_name(program)?;
            let asked = program.to_path_buf();
            let program = std::fs::canonicalize(program)
                .map_err(|e| format!("{}: {e}", program.display()))?;
            let out = std::process::Command::new("ldd")
                .arg(&program)
                .output()
                .map_err(|e| format!("ldd {}: {e}", program.display()))?;
            // A static program has no libraries (ldd says so and fails).
            let dynamic = out.status.success();
            let needs = match dynamic {
                true => parse_ldd(&String::from_utf8_lossy(&out.stdout))?,
                false => LddOutput::default(),
            };
            for lib in needs.libraries {
                let at = format!("{TOOLS_LIB}/{}", file_name(&lib)?);
                tools.bind(lib, at)?;
            }
            if let Some(loader) = needs.loader {
                let at = format!("{TOOLS_LIB}/{}", file_name(&loader)?);
                tools.bind(loader, at.clone())?;
                tools.loader = Some(at);
            }
            let at = format!("{TOOLS_BIN}/{name}");
            tools.bind(program, at.clone())?;
            tools.programs.insert(asked, (at, dynamic));
        }
        Ok(tools)
    }

    /// Binds `host` at `at`, unless another file is bound there already.
    fn bind(&mut self, host: PathBuf, at: String) -> Result<(), String> {
        match self.binds.get(&at) {
            Some(other) if *other != host => Err(format!(
                "{} and {} would both be {at}",
                other.display(),
                host.display()
            )),
            _ => {
                self.binds.insert(at, host);
                Ok(())
            }
        }
    }

    /// Every host file to bind read-only, and where.
    pub fn binds(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.binds.iter().map(|(at, h)| (h.as_path(), at.as_str()))
    }

    /// The command line (up to the program's own arguments) that runs host program `host`
    /// inside a template sandbox; a program that is not one of the tools runs as named.
    pub fn command(&self, host: &Path) -> Vec<String> {
        match (self.programs.get(host), &self.loader) {
            (Some((at, true)), Some(loader)) => vec![
                loader.clone(),
                "--library-path".to_string(),
                TOOLS_LIB.to_string(),
                at.clone(),
            ],
            (Some((at, _)), _) => vec![at.clone()],
            (None, _) => vec![host.display().to_string()],
        }
    }
}

fn file_name(path: &Path) -> Result<String, String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no UTF-8 file name", path.display()))
}

/// What `ldd` says a program needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct LddOutput {
    libraries: Vec<PathBuf>,
    loader: Option<PathBuf>,
}

/// Reads `ldd`'s lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` names a
/// library, `/lib64/ld-linux-x86-64.so.2 (0x…)` the loader, `linux-vdso.so.1 (0x…)` nothing
/// on disk.
fn parse_ldd(text: &str) -> Result<LddOutput, String> {
    let mut out = LddOutput::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, rest)) = line.split_once("=>") {
            let path = rest.split_whitespace().next().unwrap_or("");
            if path == "not" {
                return Err(format!("ldd: {} not found", name.trim()));
            }
            if path.starts_with('/') {
                out.libraries.push(PathBuf::from(path));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            out.loader = Some(PathBuf::from(path));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ldd_output_names_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibcap-ng.so.0 => /lib/x86_64-linux-gnu/libcap-ng.so.0 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let out = parse_ldd(text).unwrap();
        assert_eq!(
            out.libraries,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libcap-ng.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
            ]
        );
        assert_eq!(
            out.loader,
            Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn a_template_shows_its_root_but_not_what_every_sandbox_has_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        for d in ["usr", "etc", "proc", "sandbox", ".stargrid"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let t = Template::open("mini", root.path()).unwrap();
        let names: Vec<&str> = t.entries.iter().map(entry_name).collect();
        assert_eq!(names, vec!["bin", "etc", "usr"]);
        assert!(t.entries.contains(&RootEntry::Link {
            target: "usr/bin".into(),
            at: "bin".into()
        }));
        assert!(Template::open("../x", root.path()).is_err());
        assert!(Template::open("x", &root.path().join("absent")).is_err());
        assert_eq!(
            parse_template_flag("py=/srv/py").unwrap(),
            ("py".to_string(), PathBuf::from("/srv/py"))
        );
        assert!(parse_template_flag("py").is_err());
    }

    #[test]
    fn host_tools_run_through_the_hosts_loader() {
        let sh = Path::new("/bin/sh");
        let tools = HostTools::find(&[sh]).unwrap();
        let command = tools.command(sh);
        let program = command.last().unwrap();
        // Named as asked for, though `/bin/sh` is a link to another program (`dash`).
        assert_eq!(*program, format!("{TOOLS_BIN}/sh"), "{command:?}");
        // Every file it names is bound, and the program is one of them.
        let bound: Vec<&str> = tools.binds().map(|(_, at)| at).collect();
        assert!(bound.contains(&program.as_str()), "{bound:?}");
        if command.len() > 1 {
            assert!(bound.contains(&command[0].as_str()), "{bound:?}");
            assert_eq!(command[1..3], ["--library-path", TOOLS_LIB]);
        }
        // Another program runs as named.
        assert_eq!(tools.command(Path::new("/x/y")), vec!["/x/y".to_string()]);
    }
}

/// The templates an agent offers, with the helpers they run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
    tools: HostTools,
}

impl Templates {
    /// Templates from `--template NAME=DIR` flags, whose sandboxes run the agent's `init`
    /// program and `setpriv` (and the shell and `rm` that [`crate::users::TaskUsers::launch`]
    /// runs) from the host.
    pub fn open(flags: &[String], init: &Path, setpriv: &Path) -> Result<Templates, String> {
        let mut by_name = BTreeMap::new();
        for flag in flags {
            let (name, dir) = parse_template_flag(flag)?;
            let t = Template::open(&name, &dir)?;
            if by_name.insert(name.clone(), t).is_some() {
                return Err(format!("--template {name}: named twice"));
            }
        }
        if by_name.len() > wire::api::MAX_TEMPLATES {
            return Err(format!("at most {} templates", wire::api::MAX_TEMPLATES));
        }
        let tools = match by_name.is_empty() {
            true => HostTools::default(),
            false => HostTools::find(&[
                init,
                setpriv,
                Path::new(crate::users::SHELL),
                Path::new(crate::users::RM),
            ])?,
        };
        Ok(Templates { by_name, tools })
    }

    /// Template `name`, as a root for [`crate::isolation::Isolation::wrap`].
    pub fn root(&self, name: Option<&str>) -> Result<crate::isolation::Root<'_>, String> {
        match name {
            None => Ok(crate::isolation::Root::Host),
            Some(name) => match self.by_name.get(name) {
                Some(template) => Ok(crate::isolation::Root::Template {
                    template,
                    tools: &self.tools,
                }),
                None => Err(format!("template '{name}' is not on this host")),
            },
        }
    }

    /// Their names.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
