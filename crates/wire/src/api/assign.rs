//! What a node must run, as its agent is told in each heartbeat's answer: its tasks
//! (`Assignment`: command, devices, limits, a share of a GPU, a replica's port and probes) and
//! its sandboxes (`SandboxAssignment`), with the inventory the agent reports and a replica's
//! endpoint.

use super::*;

/// A node's GPUs as its agent sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// GPUs found.
    pub gpus: u32,
    /// Their model (e.g. GB200), when known.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// nvml or declared.
    pub source: String,
}

/// A task the node must run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    /// The job.
    pub job: u64,
    /// Which run of the job; a task of an older run is stale and must stop.
    pub run: u32,
    /// Rank of this node's task in the gang (0-based).
    pub rank: u32,
    /// Tasks in the gang.
    pub world: u32,
    /// The job's tenant.
    #[serde(default)]
    pub tenant: String,
    /// The tenant's number, the same on every node (the agent runs the task as the user of
    /// that number); absent from servers that predate it.
    #[serde(default)]
    pub tenant_id: Option<u32>,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// GPU indices on the node given to the task.
    pub gpus: Vec<u32>,
    /// The task must have stopped by then (Unix seconds), when it is being preempted.
    pub stop_by: Option<u64>,
    /// CPU millicores the task was given (its cgroup's limit; 0: no limit).
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory the task was given, MiB (its cgroup's limit; 0: no limit).
    #[serde(default)]
    pub memory_mib: u32,
    /// A service's replica: the agent gives it a port (`PORT` and `STARGRID_PORT` in its
    /// environment) and reports it with its readiness.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub serves: bool,
    /// The HTTP path that answers 2xx once the replica is ready (`None`: ready once its port
    /// takes connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// The HTTP path that answers 2xx while the replica is alive: once it is ready, three
    /// failures in a row and its agent stops it (it is replaced under the crash back-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_path: Option<String>,
    /// A command whose exit 0 within a second says the replica is ready (over `ready_path`),
    /// run as the task's user with its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_command: Option<Vec<String>>,
    /// A command whose exit 0 within a second says the replica is alive (over `live_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_command: Option<Vec<String>>,
    /// The port the task listens on, chosen by the server (a node of a unit service, whose
    /// peers learn it before it starts): `PORT` and `STARGRID_PORT` in its environment. The
    /// agent refuses to start the task when the port is taken. Absent: a replica gets a free
    /// port from its agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A share of its one device in thousandths (0: whole devices): `STARGRID_GPU_SHARE` in
    /// the task's environment.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub gpu_milli: u16,
    /// The MIG profile that holds the share on this node's GPU model, where the model has
    /// MIG (`STARGRID_MIG_PROFILE`), e.g. `2g.20gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_profile: Option<String>,
    /// The node's accelerator model by name (`H100`, `MI300X`, `Trainium2`, `TPUv5p`...):
    /// the agent names the task's devices in that kind's runtime's variable. Absent (CPU
    /// hosts, servers before models were sent) or unknown: `CUDA_VISIBLE_DEVICES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
}

/// A ready replica of a service: where to send it requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceEndpoint {
    /// The replica's job.
    pub replica: u64,
    /// The node of its rank 0.
    pub node: String,
    /// The address the node is reached at.
    pub address: String,
    /// The port its agent gave it.
    pub port: u16,
    /// It runs the new version of a rolling update that is a canary (see
    /// [`ServiceRoute::canary_percent`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
}

/// Consecutive sandboxes of one batch that a node must run: one process per index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxAssignment {
    /// The batch.
    pub batch: u64,
    /// The batch's tenant.
    #[serde(default)]
    pub tenant: String,
    /// The tenant's number (see [`Assignment::tenant_id`]).
    #[serde(default)]
    pub tenant_id: Option<u32>,
    /// First sandbox index.
    pub first: u32,
    /// Number of sandboxes (`first .. first + count`).
    pub count: u32,
    /// Program and arguments of each sandbox.
    pub command: Vec<String>,
    /// Environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// CPU millicores of each sandbox (its cgroup's limit).
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory of each sandbox, MiB (its cgroup's limit).
    #[serde(default)]
    pub memory_mib: u32,
    /// Interactive: each sandbox idles, ready for execs, until it is stopped (`command` is
    /// empty).
    #[serde(default)]
    pub interactive: bool,
    /// The template whose root file system each sandbox sees; absent: the host's.
    #[serde(default)]
    pub template: Option<String>,
    /// Where an interactive sandbox may connect to, through the node's egress proxy
    /// ([`EgressRule`]s, as text); empty: nowhere.
    #[serde(default)]
    pub egress: Vec<String>,
}
