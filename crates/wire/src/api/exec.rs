//! Interactive sandboxes on the wire: commands run in a live sandbox (`exec`) with their output
//! streamed back, files moved in and out, and what travels between the server and the agent
//! that runs them.
//!
//! A client's exec (`POST /v1/sandboxes/{id}/exec`) is answered with a stream of
//! [`ExecEvent`]s, one JSON object per line, the last one carrying the exit code or the error.
//! Between the server and the agent, the order ([`ExecOrder`]) rides the agent's long poll and
//! the output comes back in [`ExecOutput`] posts, its bytes in base64.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most a command may take on its standard input through the API, bytes.
pub const MAX_STDIN_BYTES: usize = 512 << 10;
/// Most bytes of output one [`ExecOutput`] chunk carries.
pub const MAX_CHUNK_BYTES: usize = 64 << 10;
/// Longest an exec may run, seconds.
pub const MAX_EXEC_TIMEOUT_S: u32 = 86_400;

/// A command to run in a live interactive sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments (the program is looked up on the sandbox's `PATH`).
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    /// Environment added to the sandbox's own for this command.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Text given to the command on its standard input (at most 512 KiB); none: empty.
    #[serde(default)]
    #[schema(max_length = 524288)]
    pub stdin: Option<String>,
    /// Seconds before the command is killed (default 60, at most 86,400).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<u32>,
}

/// One line of an exec's answer: output as it comes, then the end (`exit_code` or `error`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecEvent {
    /// Text the command wrote on its standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Text the command wrote on its standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The command ended with this code (the last line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command could not run or did not finish: why (the last line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExecEvent {
    /// Whether this line ends the exec.
    pub fn is_end(&self) -> bool {
        self.exit_code.is_some() || self.error.is_some()
    }
}

/// A command the agent must run in one of its sandboxes (in the long poll's answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecOrder {
    /// The exec, for the output posts.
    pub id: u64,
    /// The node that holds the sandbox.
    pub node: String,
    /// The sandbox's batch.
    pub batch: u64,
    /// The sandbox's index in its batch.
    pub index: u32,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment added to the sandbox's.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Standard input, base64.
    #[serde(default)]
    pub stdin_b64: String,
    /// Seconds before the agent kills the command.
    pub timeout_s: u32,
}

/// Output of an exec, posted by the agent that runs it (`POST /v1/agent/exec`), in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecOutput {
    /// The node that runs it.
    pub node: String,
    /// The exec (`ExecOrder::id`).
    pub id: u64,
    /// The sandbox's batch (`ExecOrder::batch`): output is taken only for the sandbox the
    /// order named.
    pub batch: u64,
    /// The sandbox's index (`ExecOrder::index`).
    pub index: u32,
    /// Output since the last post, in the order it was read.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub chunks: Vec<ExecChunk>,
    /// The end, once the command exited or could not run.
    #[serde(default)]
    pub end: Option<ExecEnd>,
}

/// Bytes one stream of a command wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecChunk {
    /// `stdout` or `stderr`.
    #[schema(pattern = "^(stdout|stderr)$")]
    pub stream: String,
    /// The bytes, base64 (at most 64 KiB once decoded).
    pub data_b64: String,
}

/// How an exec ended, as its agent saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecEnd {
    /// Its exit code (-1: killed by a signal).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it did not run or was stopped.
    #[serde(default)]
    pub error: Option<String>,
}

/// The server's answer to an output post: whether anyone still reads the exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecAck {
    /// `false`: the reader went away or the exec is over; stop the command.
    pub wanted: bool,
}

/// A file written into a live sandbox (`PUT /v1/sandboxes/{id}/files`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileWritten {
    /// The path, as the sandbox sees it.
    pub path: String,
    /// Bytes written by this request.
    pub bytes: u64,
}
