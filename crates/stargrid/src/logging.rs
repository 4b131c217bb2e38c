//! Logs of the long-running commands (`server`, `agent`, `up`): `tracing` events to standard
//! error, as text for people or one JSON object per line (`--log-format json`) for a log
//! collector; the level from `RUST_LOG` (default `info`, e.g. `RUST_LOG=server=debug`).

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, where, message, fields.
    #[default]
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, `fields` (the message among
    /// them).
    Json,
}

/// Sends this process's `tracing` events to standard error in `format`. A second call (`up`
/// starts a server and agents in one process) changes nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QuietStderr)
        // Colours for a terminal only: a file or a collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    // An error means a subscriber is set already: the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Standard error that never fails: a log reader that went away (a closed pipe) must not stop
/// the server or the agent (the subscriber would report the failure on standard error, and
/// that report would panic).
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
