//! The client's settings: the server's address, the token and the certificate authority that
//! signed the server's certificate, from flags, the environment (`STARGRID_SERVER`,
//! `STARGRID_TOKEN`, `STARGRID_TOKEN_FILE`, `STARGRID_CA`) or a config file, in that order.
//! The file is `--config PATH`, `STARGRID_CONFIG`, or `~/.config/stargrid/config.toml` when it
//! exists:
//!
//! ```toml
//! server = "https://10.0.0.5:7070"
//! token_file = "/etc/stargrid/admin.token"   # or: token = "..."
//! ca = "/etc/stargrid/ca.pem"
//! ```
//!
//! An agent takes its credential from a file only (see [`Settings::agent_credential`]).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The server when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// A config file's fields.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The server's base URL.
    pub server: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    /// A file holding the token (e.g. a server's `admin.token`).
    pub token_file: Option<PathBuf>,
    /// The certificate authority that signed the server's TLS certificate (PEM).
    pub ca: Option<PathBuf>,
}

/// Reads a config file's text; errors name the file and the field.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig> {
    let c: FileConfig = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    if c.token.is_some() && c.token_file.is_some() {
        bail!(
            "{}: token, token_file: give one of them, not both",
            path.display()
        );
    }
    if let Some(s) = &c.server {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            bail!(
                "{}: server: '{s}' is not an http:// or https:// URL",
                path.display()
            );
        }
    }
    Ok(c)
}

/// The config file to read: the one named, or the user's default if it exists.
fn config_path(named: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = named {
        return Some(p.to_path_buf());
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".config/stargrid/config.toml");
    p.exists().then_some(p)
}

/// What the command line (and the environment behind it) said.
#[derive(Debug, Default)]
pub struct Flags {
    /// `--server` / `STARGRID_SERVER`.
    pub server: Option<String>,
    /// `--token` / `STARGRID_TOKEN`.
    pub token: Option<String>,
    /// `--token-file` / `STARGRID_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--ca` / `STARGRID_CA`.
    pub ca: Option<PathBuf>,
    /// `--config` / `STARGRID_CONFIG`.
    pub config: Option<PathBuf>,
}

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A flag or the environment (`--token`, `STARGRID_TOKEN`).
    Inline,
    /// The config file's `token`.
    ConfigFile,
    /// A file of its own (`--token-file`, or the config file's `token_file`).
    File(PathBuf),
    /// Nowhere (requests go without one).
    None,
}

/// The client's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The server's base URL.
    pub server: String,
    /// The bearer token (empty: none).
    pub token: String,
    /// Where it came from.
    pub token_source: TokenSource,
    /// A PEM file of the certificate authority that signed the server's certificate (for an
    /// `https://` server whose certificate the system does not trust).
    pub ca: Option<PathBuf>,
}

impl Settings {
    /// A client of the server sending `token`, trusting the configured certificate authority
    /// (for an `https://` server).
    pub fn client(&self, token: &str) -> Result<wire::Client> {
        if let Some(warning) = plain_http_warning(&self.server, self.ca.is_some()) {
            eprintln!("stargrid: {warning}");
        }
        let client = wire::Client::new(&self.server, token);
        match &self.ca {
            None => Ok(client),
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the CA file {}", path.display()))?;
                client
                    .with_ca_pem(&pem)
                    .with_context(|| format!("the CA file {}", path.display()))
            }
        }
    }

    /// The token, when it may serve as an agent's credential: read from a file only the agent's
    /// user can read. A token on the command line shows in `/proc/<pid>/cmdline` to every user
    /// of the node, and one in the environment is inherited by whatever the agent starts.
    pub fn agent_credential(&self) -> Result<&str> {
        self.credential_from_file("an agent")
    }

    /// The token, when it was read from a file only this user can read (what a long-running
    /// process that holds a credential takes: an agent, a frontend); `who` names it in errors.
    pub fn credential_from_file(&self, who: &str) -> Result<&str> {
        match &self.token_source {
            TokenSource::File(path) => {
                check_private(path)?;
                Ok(&self.token)
            }
            TokenSource::Inline | TokenSource::ConfigFile => bail!(
                "{who} reads its credential from a file only its user can read \
                 (--token-file, STARGRID_TOKEN_FILE or the config file's token_file): a token \
                 on the command line is visible to every user of the node"
            ),
            TokenSource::None if who != "an agent" => {
                bail!("{who} needs a credential: --token-file FILE (an admin token)")
            }
            TokenSource::None => bail!(
                "an agent needs a credential: --token-file FILE (from `stargrid token --role \
                 agent --nodes ...`)"
            ),
        }
    }
}

/// What to warn of when `server` is plain HTTP to another host (the token crosses the network
/// in clear) or a CA was given for a plain-HTTP server (it is not used).
pub fn plain_http_warning(server: &str, has_ca: bool) -> Option<String> {
    let rest = server.strip_prefix("http://")?;
    let host = rest.split('/').next().unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(h, port)| port.chars().all(|c| c.is_ascii_digit()) && !h.is_empty())
        .map_or(host, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match (loopback, has_ca) {
        (false, _) => Some(format!(
            "{server} is plain HTTP to another host: the token crosses the network in clear \
             (use https:// and --ca)"
        )),
        (true, true) => Some(format!("{server} is plain HTTP: the CA given is not used")),
        (true, false) => None,
    }
}

/// Refuses a credential file that other users could read.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the token file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the token file {} is readable by other users (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

/// The settings to use: flags and environment first, then the config file.
pub fn resolve(flags: Flags) -> Result<Settings> {
    let file = match config_path(flags.config.as_deref()) {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            parse(&p, &text)?
        }
        None => FileConfig::default(),
    };
    let server = flags
        .server
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token_source = match (flags.token, flags.token_file, file.token, file.token_file) {
        (Some(t), _, _, _) => (t, TokenSource::Inline),
        (None, Some(f), _, _) => (read_token(&f)?, TokenSource::File(f)),
        (None, None, Some(t), _) => (t, TokenSource::ConfigFile),
        (None, None, None, Some(f)) => (read_token(&f)?, TokenSource::File(f)),
        (None, None, None, None) => (String::new(), TokenSource::None),
    };
    Ok(Settings {
        server,
        token: token_source.0,
        token_source: token_source.1,
        ca: flags.ca.or(file.ca),
    })
}

fn read_token(f: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(f)
        .with_context(|| format!("reading the token file {}", f.display()))?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin.token");
        std::fs::write(&token, "secret\n").unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "server = \"http://10.0.0.5:7070\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
        )
        .unwrap();
        let from_file = resolve(Flags {
            config: Some(cfg.clone()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(
            (from_file.server.as_str(), from_file.token.as_str()),
            ("http://10.0.0.5:7070", "secret")
        );
        assert_eq!(from_file.token_source, TokenSource::File(token.clone()));
        let flagged = resolve(Flags {
            server: Some("http://h:1".into()),
            token: Some("t".into()),
            config: Some(cfg),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(
            (flagged.server.as_str(), flagged.token.as_str()),
            ("http://h:1", "t")
        );
    }

    #[test]
    fn an_agent_takes_its_credential_from_a_private_file_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.token");
        std::fs::write(&file, "cred\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let from = |flags: Flags| resolve(flags).unwrap();
        let inline = from(Flags {
            token: Some("cred".into()),
            ..Flags::default()
        });
        let e = inline.agent_credential().unwrap_err().to_string();
        assert!(e.contains("visible to every user"), "{e}");
        let shared = from(Flags {
            token_file: Some(file.clone()),
            ..Flags::default()
        });
        let e = shared.agent_credential().unwrap_err().to_string();
        assert!(e.contains("readable by other users (mode 644)"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(shared.agent_credential().unwrap(), "cred");
    }

    #[test]
    fn plain_http_to_another_host_is_warned_of() {
        for quiet in [
            "http://127.0.0.1:7070",
            "http://localhost:7070/",
            "http://[::1]:7070",
        ] {
            assert_eq!(plain_http_warning(quiet, false), None, "{quiet}");
        }
        for loud in [
            "http://10.0.0.5:7070",
            "http://ctl.example.org",
            "http://[fe80::1]:1",
        ] {
            let w = plain_http_warning(loud, false).unwrap();
            assert!(w.contains("in clear"), "{w}");
        }
        assert!(plain_http_warning("https://10.0.0.5:7070", false).is_none());
        assert!(plain_http_warning("http://127.0.0.1:1", true)
            .unwrap()
            .contains("not used"));
    }

    #[test]
    fn bad_files_name_the_field() {
        let p = Path::new("c.toml");
        let e = parse(p, "sever = \"x\"\n").unwrap_err().to_string();
        assert!(
            e.contains("c.toml") && e.contains("unknown field `sever`"),
            "{e}"
        );
        let e = parse(p, "server = \"10.0.0.5\"\n").unwrap_err().to_string();
        assert!(e.contains("server: '10.0.0.5' is not an http"), "{e}");
        let e = parse(p, "token = \"a\"\ntoken_file = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("give one of them"), "{e}");
        let e = resolve(Flags {
            config: Some("/nonexistent/c.toml".into()),
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("reading /nonexistent/c.toml"), "{e}");
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_with_the_file_name(text in "[a-z_ =\"/:.0-9\n]{0,80}") {
            match parse(Path::new("c.toml"), &text) {
                Ok(c) => prop_assert!(c.server.is_none_or(|s| s.starts_with("http"))),
                Err(e) => prop_assert!(e.to_string().starts_with("c.toml: ")),
            }
        }
    }
}
