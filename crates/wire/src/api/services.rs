//! Inference services: the request that creates one (`SubmitService`: replica shape, models,
//! bounds, spread, probes, roles), scaling, and the service as the API shows it.

use super::*;

/// An inference service to create: identical replicas kept between bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitService {
    /// Letters, digits, '-', '_' and '.'; 1 to 128 characters.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    /// The owning tenant's name.
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: String,
    /// Priority class of its replicas (default production-inference).
    #[serde(default = "production_inference")]
    #[schema(pattern = r"^(preemptible|research|training|production-inference)$")]
    pub priority: String,
    /// GPU model, e.g. GB200.
    #[serde(default = "gb200")]
    #[schema(pattern = r"^[A-Za-z0-9]{1,16}$")]
    pub gpu: String,
    /// Other GPU models its replicas may run on, in order of preference after `gpu` (at
    /// most 8); `["any"]`: any model of the fleet of `gpu`'s kind. Each replica runs on one
    /// model; replicas of one service may run on different ones. Not with `roles`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 8)]
    pub models: Vec<String>,
    /// Nodes per replica (all in one NVLink domain when they fit one).
    #[serde(default = "one")]
    pub nodes_per_replica: u32,
    /// GPUs on each node of a replica (0 with `roles`, which give their own).
    #[serde(default)]
    pub gpus_per_node: u8,
    /// CPU millicores on each node.
    #[serde(default)]
    pub cpu_millis_per_node: u32,
    /// Memory on each node, MiB.
    #[serde(default)]
    pub memory_mib_per_node: u32,
    /// Replicas to start with, and the fewest a scaling may leave.
    pub min_replicas: u32,
    /// Most replicas a scaling may ask for (default: `min_replicas`).
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// At most `max_per` replicas per element of `level` (domain, zone, region, cloud).
    #[serde(default)]
    pub spread: Option<SpreadSpec>,
    /// The program each replica node runs (a replica that exits is replaced).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Environment values that are secrets (API keys): never shown by the API, kept
    /// encrypted in the journal, given only to the nodes that run the work. Names must not
    /// repeat `env`'s; both count against the 64 KiB environment limit.
    #[serde(default)]
    pub secret_env: std::collections::BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    #[schema(pattern = r"^/", max_length = 4096)]
    pub workdir: Option<String>,
    /// Providers and regions its replicas may use, and whether they may run on spot.
    #[serde(default)]
    pub placement: Placement,
    /// Its replicas span at least this many providers (0 or 1: no rule).
    #[serde(default)]
    pub min_providers: u32,
    /// The HTTP path that answers 2xx once a replica is ready to serve (its agent probes it on
    /// the replica's port); without it, a replica is ready once its port takes connections.
    #[serde(default)]
    #[schema(pattern = r"^/", max_length = 256)]
    pub ready_path: Option<String>,
    /// The HTTP path that answers 2xx while a replica is alive: once it is ready, three failed
    /// probes in a row and its agent stops it, and it is replaced under the crash back-off.
    #[serde(default)]
    #[schema(pattern = r"^/", max_length = 256)]
    pub live_path: Option<String>,
    /// A command whose exit 0 says a replica is ready (in place of `ready_path`): run on the
    /// replica's node as its tenant's user, with its environment (`PORT` included), within
    /// 1 s; for servers that do not speak HTTP.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub ready_command: Option<Vec<String>>,
    /// A command whose exit 0 says a replica is alive (in place of `live_path`), run as
    /// `ready_command` is.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub live_command: Option<Vec<String>>,
    /// Scale on the load its gateways report, between `min_replicas` and `max_replicas`
    /// (absent: only `stargrid scale` changes the count).
    #[serde(default)]
    pub autoscale: Option<AutoscaleSpec>,
    /// A replica made of several roles (at most 16), placed together inside one NVLink
    /// domain (else under one network node) and scaled together. The first role's first node
    /// is the replica's endpoint (its readiness and liveness are probed); every node learns
    /// its role and its peers' addresses from its environment. With roles, the shape fields
    /// above and `command` stay unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub roles: Vec<ServiceRole>,
}

/// A spread rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadSpec {
    /// domain, zone, region or cloud.
    #[schema(pattern = r"^(domain|zone|region|cloud)$")]
    pub level: String,
    /// Most replicas in one element of the level.
    pub max_per: u32,
}

fn production_inference() -> String {
    "production-inference".into()
}

fn one() -> u32 {
    1
}

/// A new desired replica count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleService {
    /// Replicas wanted (clamped to the service's bounds).
    pub replicas: u32,
}

/// A service as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    /// Id (services are numbered apart from jobs).
    pub id: u64,
    /// Name.
    pub name: String,
    /// Owner.
    pub tenant: String,
    /// active or deleted.
    pub state: String,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running.
    pub running: u32,
    /// Replicas waiting to be placed.
    pub pending: u32,
    /// Running replicas whose endpoint is ready (see `GET /v1/services/{id}/endpoints`).
    #[serde(default)]
    pub ready: u32,
    /// Fewest and most replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// GPUs per replica.
    pub gpus_per_replica: u64,
    /// The roles of each replica, for a unit service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<ServiceRole>,
    /// Each running replica's nodes.
    pub replicas: Vec<Vec<String>>,
    /// The GPU model its replicas ask for first.
    #[serde(default)]
    pub gpu: String,
    /// Other models its replicas may run on, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The model each running replica got, in the order of `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_models: Vec<String>,
    /// Why replicas wait, when some do (the oldest pending replica's reason).
    pub reason: Option<String>,
    /// Replicas replaced after their process exited.
    pub replaced: u32,
    /// When it was created (Unix seconds).
    pub created_at: u64,
    /// The load its gateways report now (absent while none does; kept in the server's memory
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ServiceLoadView>,
}
