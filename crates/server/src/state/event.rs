//! The journal's inputs: every change the control plane accepts is an [`Event`], with the
//! time in it, so that applying it again gives the same state.

use super::*;

/// A training job's id (service replicas are jobs too, numbered from
/// `WorkloadId::REPLICA_BASE`). Jobs and sandbox batches share one sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

/// An inference service's id (services are numbered apart from jobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceId(pub u64);

/// A sandbox batch's id (from the job sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub u64);

impl JobId {
    /// The queue's id of the job.
    pub fn workload(self) -> WorkloadId {
        WorkloadId(self.0)
    }
}

impl BatchId {
    /// The queue's id of the batch.
    pub fn workload(self) -> WorkloadId {
        WorkloadId(self.0)
    }
}

macro_rules! show_id {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
show_id!(JobId, ServiceId, BatchId);

/// One accepted change: the input part of a journal record (`journal::RecordV1::event`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a journal: the fleet (a fleet file's text) and the tenants.
    Init {
        /// The fleet, in the TOML fleet-file format (pool prices included).
        fleet_toml: String,
        /// Tenants; a tenant's id is its index.
        tenants: Vec<TenantSpec>,
        /// Unix seconds.
        at: u64,
        /// Commitments the spend is measured against.
        #[serde(default)]
        commitments: Vec<model::commitment::Commitment>,
    },
    /// A training job was accepted.
    Submit {
        /// Its id, assigned by the server.
        id: JobId,
        /// Its name (not unique).
        name: String,
        /// What it asks for.
        spec: JobSpec,
        /// What each of its nodes runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// An agent came up on a node: the node takes work.
    NodeUp {
        /// The node.
        node: String,
        /// The address its agent advertised (absent from records before unit services).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Unix seconds.
        at: u64,
    },
    /// A node's agent advertises another address while its node is up (unit replicas placed
    /// from now on name the new one; running ones keep what they started with).
    NodeAddress {
        /// The node.
        node: String,
        /// Its address.
        address: String,
        /// Unix seconds.
        at: u64,
    },
    /// A node's agent stopped heartbeating: the node is down and its work follows the failure
    /// rules (spares, requeue from the last checkpoint).
    NodeDown {
        /// The node.
        node: String,
        /// Unix seconds.
        at: u64,
    },
    /// A task of a job exited.
    TaskExited {
        /// The job.
        job: JobId,
        /// The run of the job it belonged to.
        run: u32,
        /// Its rank.
        rank: u32,
        /// Exit code (-1: killed by a signal).
        code: i32,
        /// The kernel killed it for going past its memory.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oom_killed: bool,
        /// Unix seconds.
        at: u64,
    },
    /// A job wrote a checkpoint.
    Checkpoint {
        /// The job.
        job: JobId,
        /// Its run.
        run: u32,
        /// When the checkpoint was written (Unix seconds).
        at: u64,
    },
    /// A job or a sandbox batch was cancelled.
    Cancel {
        /// The job or the batch (they are numbered in one sequence).
        id: u64,
        /// Unix seconds.
        at: u64,
    },
    /// An API token was issued (only its SHA-256 is kept).
    TokenIssued {
        /// Hex SHA-256 of the token.
        hash: String,
        /// What it may do.
        role: Role,
        /// Unix seconds.
        at: u64,
        /// When it stops working (Unix seconds); `None`: until revoked.
        #[serde(default)]
        expires_at: Option<u64>,
    },
    /// A token was revoked: it no longer works.
    TokenRevoked {
        /// The token's id (the first 16 hex digits of its SHA-256).
        id: String,
        /// Unix seconds.
        at: u64,
    },
    /// A scheduling pass ran.
    Pass {
        /// Unix seconds.
        at: u64,
    },
    /// An inference service was created (at its minimum replica count).
    ServiceCreate {
        /// Its id, assigned by the server (services are numbered apart from jobs).
        id: ServiceId,
        /// Its name.
        name: String,
        /// Replica shape, bounds, spread rule.
        spec: ServiceSpec,
        /// What each replica node runs.
        task: TaskSpec,
        /// How it scales on its gateways' load (absent: by hand only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        autoscale: Option<AutoscaleTargets>,
        /// Unix seconds.
        at: u64,
    },
    /// A service's desired replica count changed.
    ServiceScale {
        /// The service.
        id: ServiceId,
        /// Replicas wanted (clamped to its bounds).
        replicas: u32,
        /// Decided by the autoscaler on its gateways' load (an operator's scaling cuts a
        /// crashing replica's back-off short; the autoscaler's does not).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        autoscaled: bool,
        /// Unix seconds.
        at: u64,
    },
    /// A new version of a service rolls over its replicas (see `state::rollout`).
    ServiceRollout {
        /// The service.
        id: ServiceId,
        /// The new version's label.
        version: String,
        /// What its replicas run.
        task: TaskSpec,
        /// Replicas above the desired count while new ones come up.
        max_surge: u32,
        /// Ready replicas it may take below the desired count.
        max_unavailable: u32,
        /// Seconds new replicas have to become ready after each step.
        progress_deadline_s: u32,
        /// A canary first: one new replica with this share of the traffic until promoted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_percent: Option<u32>,
        /// Unix seconds.
        at: u64,
    },
    /// A rolling update's canary is promoted: the update goes on over every replica.
    RolloutPromote {
        /// The service.
        id: ServiceId,
        /// Unix seconds.
        at: u64,
    },
    /// A rolling update's step: the surge set, old replicas retired, or the update done.
    RolloutStep {
        /// The service.
        id: ServiceId,
        /// Replicas kept above the desired count.
        surge: u32,
        /// Old replicas stopped.
        retire: Vec<JobId>,
        /// No old replica is left: the update is over.
        done: bool,
        /// Unix seconds.
        at: u64,
    },
    /// A rolling update rolled back (or, once done, the previous version restored).
    RolloutUndo {
        /// The service.
        id: ServiceId,
        /// Why.
        reason: String,
        /// Unix seconds.
        at: u64,
    },
    /// A service was deleted with all its replicas.
    ServiceDelete {
        /// The service.
        id: ServiceId,
        /// Unix seconds.
        at: u64,
    },
    /// A sandbox batch was accepted and placed (it is journaled only if it placed, so replay
    /// places it the same way).
    SandboxBatch {
        /// Its id, from the job-id sequence.
        id: BatchId,
        /// Its name.
        name: String,
        /// Owner.
        tenant: TenantId,
        /// How many, how big.
        request: SandboxRequest,
        /// Host failures it survives by moving.
        max_retries: u32,
        /// What each sandbox runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// An operator drained a node or every node under a topology path (they take no new
    /// work; what runs there finishes) or made them take work again.
    NodeDrain {
        /// A node's name or a topology path.
        node: String,
        /// `true`: drain; `false`: resume.
        drain: bool,
        /// Unix seconds.
        at: u64,
    },
    /// An operator applied a fleet file: the nodes, domains, network nodes and pools it adds
    /// join; removed nodes that hold nothing leave at once, the others are drained and leave
    /// once empty ([`Event::NodesLeft`]).
    FleetApply {
        /// The whole fleet as it should be, in the TOML fleet-file format.
        fleet_toml: String,
        /// Unix seconds.
        at: u64,
    },
    /// Removed nodes whose work ended left the fleet.
    NodesLeft {
        /// The nodes, as a host list.
        nodes: String,
        /// Unix seconds.
        at: u64,
    },
    /// An admin set (or with `None` stopped) the rule for nodes their agents register.
    RegistrationRule {
        /// The rule.
        rule: Option<super::registration::RegistrationRule>,
        /// Unix seconds.
        at: u64,
    },
    /// An agent asked to bring a node; it waits for approval.
    NodeRegistered {
        /// The node, its place and pool.
        registration: super::registration::NodeRegistration,
        /// Unix seconds.
        at: u64,
    },
    /// Registrations were approved (by an admin, or by a rule that approves at once): their
    /// nodes join the fleet.
    RegistrationsApproved {
        /// The nodes, as a host list.
        nodes: String,
        /// Unix seconds.
        at: u64,
    },
    /// Waiting registrations were dropped by an admin.
    RegistrationsRejected {
        /// The nodes, as a host list.
        nodes: String,
        /// Unix seconds.
        at: u64,
    },
    /// A service replica's endpoint changed: its port, or whether it is ready.
    ReplicaEndpoint {
        /// The replica's job.
        job: JobId,
        /// Where it listens, for which run, and whether it is ready.
        endpoint: super::endpoints::ReplicaEndpoint,
        /// Unix seconds.
        at: u64,
    },
    /// Sandboxes of a batch exited: (index, exit code).
    SandboxesExited {
        /// The batch.
        batch: BatchId,
        /// Each exited sandbox and its code.
        exited: Vec<(u32, i32)>,
        /// Those of them the kernel killed for going past their memory.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        oom_killed: Vec<u32>,
        /// Unix seconds.
        at: u64,
    },
}

impl Event {
    /// The event's name, as the journal spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Init { .. } => "init",
            Event::Submit { .. } => "submit",
            Event::Cancel { .. } => "cancel",
            Event::Pass { .. } => "pass",
            Event::NodeUp { .. } => "node_up",
            Event::NodeAddress { .. } => "node_address",
            Event::NodeDown { .. } => "node_down",
            Event::TaskExited { .. } => "task_exited",
            Event::Checkpoint { .. } => "checkpoint",
            Event::TokenIssued { .. } => "token_issued",
            Event::TokenRevoked { .. } => "token_revoked",
            Event::ServiceCreate { .. } => "service_create",
            Event::ServiceScale { .. } => "service_scale",
            Event::ServiceRollout { .. } => "service_rollout",
            Event::RolloutStep { .. } => "rollout_step",
            Event::RolloutUndo { .. } => "rollout_undo",
            Event::RolloutPromote { .. } => "rollout_promote",
            Event::ServiceDelete { .. } => "service_delete",
            Event::SandboxBatch { .. } => "sandbox_batch",
            Event::NodeDrain { .. } => "node_drain",
            Event::SandboxesExited { .. } => "sandboxes_exited",
            Event::FleetApply { .. } => "fleet_apply",
            Event::NodesLeft { .. } => "nodes_left",
            Event::RegistrationRule { .. } => "registration_rule",
            Event::NodeRegistered { .. } => "node_registered",
            Event::RegistrationsApproved { .. } => "registrations_approved",
            Event::RegistrationsRejected { .. } => "registrations_rejected",
            Event::ReplicaEndpoint { .. } => "replica_endpoint",
        }
    }

    /// The event's time.
    pub fn at(&self) -> u64 {
        match self {
            Event::Init { at, .. }
            | Event::Submit { at, .. }
            | Event::Cancel { at, .. }
            | Event::Pass { at }
            | Event::NodeUp { at, .. }
            | Event::NodeAddress { at, .. }
            | Event::NodeDown { at, .. }
            | Event::TaskExited { at, .. }
            | Event::Checkpoint { at, .. }
            | Event::TokenIssued { at, .. }
            | Event::TokenRevoked { at, .. }
            | Event::ServiceCreate { at, .. }
            | Event::ServiceScale { at, .. }
            | Event::ServiceRollout { at, .. }
            | Event::RolloutStep { at, .. }
            | Event::RolloutUndo { at, .. }
            | Event::RolloutPromote { at, .. }
            | Event::ServiceDelete { at, .. }
            | Event::SandboxBatch { at, .. }
            | Event::NodeDrain { at, .. }
            | Event::SandboxesExited { at, .. }
            | Event::FleetApply { at, .. }
            | Event::NodesLeft { at, .. }
            | Event::RegistrationRule { at, .. }
            | Event::NodeRegistered { at, .. }
            | Event::RegistrationsApproved { at, .. }
            | Event::RegistrationsRejected { at, .. }
            | Event::ReplicaEndpoint { at, .. } => *at,
        }
    }
}

/// What each node of a job runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// The secret environment values, sealed (see [`super::secrets`]); never in plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_env: Option<String>,
    /// An interactive sandbox batch: no command; each sandbox idles for execs until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
    /// A sandbox batch's template (the root file system its sandboxes see); `None`: the
    /// host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A service's readiness path (HTTP GET answered 2xx once a replica is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// A service's liveness path (HTTP GET answered 2xx while a replica is alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_path: Option<String>,
    /// A service's readiness command (exit 0 once a replica is ready; over `ready_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_command: Option<Vec<String>>,
    /// A service's liveness command (exit 0 while a replica is alive; over `live_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_command: Option<Vec<String>>,
    /// An interactive batch's egress allow-list, each rule as it reads back
    /// ([`wire::api::EgressRule`]); empty: no network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// A unit service's roles, in the order of its replica's parts: each node runs its role's
    /// command (`command` above stays empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<super::RoleTask>,
}

/// How long an interactive sandbox lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    /// It ends this many seconds after it was created.
    pub timeout_s: u64,
    /// It ends when no exec ran for this many seconds.
    pub idle_timeout_s: u64,
}
