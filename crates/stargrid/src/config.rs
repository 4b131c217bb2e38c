//! The client's settings: the server's address and the token, from flags, the environment
//! (`STARGRID_SERVER`, `STARGRID_TOKEN`) or a config file, in that order. The file is
//! `--config PATH`, `STARGRID_CONFIG`, or `~/.config/stargrid/config.toml` when it exists:
//!
//! ```toml
//! server = "http://10.0.0.5:7070"
//! token_file = "/etc/stargrid/admin.token"   # or: token = "..."
//! ```

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

/// The server and token to use: flags and environment first, then the config file.
pub fn resolve(
    server: Option<String>,
    token: Option<String>,
    config: Option<&Path>,
) -> Result<(String, String)> {
    let file = match config_path(config) {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            parse(&p, &text)?
        }
        None => FileConfig::default(),
    };
    let server = server
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = match (token, file.token, file.token_file) {
        (Some(t), _, _) => t,
        (None, Some(t), _) => t,
        (None, None, Some(f)) => std::fs::read_to_string(&f)
            .with_context(|| format!("reading the token file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None, None) => String::new(),
    };
    Ok((server, token))
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
        assert_eq!(
            resolve(None, None, Some(&cfg)).unwrap(),
            ("http://10.0.0.5:7070".into(), "secret".into())
        );
        assert_eq!(
            resolve(Some("http://h:1".into()), Some("t".into()), Some(&cfg)).unwrap(),
            ("http://h:1".into(), "t".into())
        );
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
        let e = resolve(None, None, Some(Path::new("/nonexistent/c.toml")))
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
