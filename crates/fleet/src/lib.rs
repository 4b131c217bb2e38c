//! Where fleets come from and go to: Stargrid's own TOML fleet file, a generator of
//! synthetic fleets of any size, AWS `describe-instance-topology` JSON, and Slurm
//! `topology.conf` (tree and block), which can also be written back; and the cost catalogue
//! (prices and commitments).
//!
//! Every parser takes text (the caller reads files) and returns a [`SourceError`] that names
//! the file, the line where known, the field and the reason. Parsers never panic on input.

pub mod aws;
pub mod catalogue;
pub mod file;
pub mod generate;
pub mod slurm;

use std::fmt;

/// Bad input in a fleet source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// File (or other source) name.
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Field or element at fault, e.g. `groups[3].nodes` or `Instances[7].InstanceType`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.field, self.reason)
    }
}

impl SourceError {
    pub(crate) fn new(
        file: &str,
        line: Option<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SourceError {
            file: file.to_string(),
            line,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// 1-based line of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
