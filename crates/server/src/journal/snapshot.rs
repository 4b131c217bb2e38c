//! The snapshot format, versioned apart from the in-memory types as the records are.
//!
//! A snapshot is the state after one record, as data of this module's types: the journal's
//! `Init`, what the API keeps of every job, service and batch, the tokens, the nodes that are
//! up and drained, and the queue as [`QueueV1`]: the jobs it queued, an outcome of every
//! workload (in the records' own vocabulary), the spend ledger's meters by pool name. Nodes are
//! named, never numbered by a build's fleet order. It is CBOR, version first; a snapshot of
//! a version this build does not read is skipped (the journal is replayed instead, which gives
//! the same state).
//!
//! Versions (one shape, [`SnapshotV1`]):
//! - **1**: the spend ledger meters GPU pools in whole GPUs (a share of a device counted as
//!   the device). Read with every GPU pool's figures ×1000, so what was spent stays what it
//!   was; each live workload is then charged as this build counts it from the snapshot's time
//!   on ([`sched::Scheduler::recharge_live`]). Replaying the journal instead re-prices the shares
//!   that ran before by their thousandths.
//! - **2**: GPU pools metered in thousandths of a GPU.

use super::{Codec, DecodeError, OutcomeV1};
use crate::state::{Event, Role, TaskSpec};
use model::{JobSpec, NodeState, ServiceSpec};
use sched::cost::{AccountState, HeldState, LedgerState, MeterState, Owner, SpendClass};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The snapshot version this build writes (it reads this one and version 1).
pub const SNAPSHOT_FORMAT: u32 = 2;

/// A snapshot of version 1 or 2 (the same shape; see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotV1 {
    /// Its version, as the bytes' first value says.
    pub v: u32,
    /// The record it is the state after.
    pub seq: u64,
    /// The journal's first record.
    pub init: Event,
    /// The time of the last event applied.
    pub now: u64,
    /// The next job or batch id.
    pub next_id: u64,
    /// The next service id.
    pub next_service: u64,
    /// Something was submitted or cancelled since the last pass.
    pub dirty: bool,
    /// Nodes whose agents are up, with their state.
    pub nodes: Vec<NodeStateV1>,
    /// Nodes an operator drained.
    pub drained: Vec<String>,
    /// Tokens (SHA-256 only).
    pub tokens: Vec<TokenV1>,
    /// What the API keeps of each job.
    pub jobs: Vec<JobMetaV1>,
    /// What the API keeps of each service.
    pub services: Vec<ServiceMetaV1>,
    /// What the API keeps of each sandbox batch.
    pub batches: Vec<BatchMetaV1>,
    /// The queue.
    pub queue: QueueV1,
    /// Nodes removed by a fleet change that still hold work: drained, they leave once empty
    /// (absent from snapshots of builds before fleet changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<String>,
    /// The rule for nodes their agents register (absent: none, as in builds before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_rule: Option<crate::state::RegistrationRule>,
    /// Registrations waiting for approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrations: Vec<crate::state::NodeRegistration>,
    /// Service replicas' endpoints, by replica job (absent from builds before endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<(u64, crate::state::ReplicaEndpoint)>,
    /// The revision each live replica started with (absent from builds before rolling
    /// updates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_revisions: Vec<(u64, u32)>,
}

/// A node that is up, and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateV1 {
    /// Its name.
    pub node: String,
    /// ready, draining, cordoned...
    pub state: NodeState,
    /// The address its agent advertised (absent from builds before unit services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// An issued token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenV1 {
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// What it may do.
    pub role: Role,
    /// When it was issued.
    pub issued_at: u64,
    /// When it stops working.
    pub expires_at: Option<u64>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMetaV1 {
    /// The job.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant's index.
    pub tenant: u32,
    /// GPUs it asked for.
    pub gpus: u64,
    /// A share of one GPU in thousandths (absent from older snapshots and for whole GPUs).
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub gpu_milli: u16,
    /// When it was submitted.
    pub submitted_at: u64,
    /// What its nodes run.
    pub task: TaskSpec,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// Whether the exit that ended it was an out-of-memory kill (absent from older snapshots).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// Ranks of the current run that exited 0.
    pub done_ranks: BTreeSet<u32>,
    /// The current run's last checkpoint.
    pub checkpoint_at: Option<u64>,
    /// Times it was requeued.
    pub restarts: u32,
    /// The nodes of its latest run, by rank.
    pub ran_on: Vec<String>,
    /// When its first run started (absent from older snapshots, as is the rest of the
    /// accounting: a running job's then counts from what the queue kept of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When its current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_since: Option<u64>,
    /// GPU-seconds its ended runs held.
    #[serde(default)]
    pub gpu_seconds: u64,
    /// GPU-seconds of work lost to preemptions and failures.
    #[serde(default)]
    pub lost_gpu_seconds: u64,
    /// What its ended runs cost, millionths of a USD.
    #[serde(default)]
    pub cost_micro_usd: u64,
}

/// A service as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceMetaV1 {
    /// The service.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant's index.
    pub tenant: u32,
    /// Replica shape, bounds, spread.
    pub spec: ServiceSpec,
    /// What each replica runs.
    pub task: TaskSpec,
    /// When it was created.
    pub created_at: u64,
    /// When it was deleted.
    pub deleted_at: Option<u64>,
    /// Replicas replaced after they exited.
    pub replaced: u32,
    /// Replicas in a row that exited as they started.
    pub quick_exits: u32,
    /// The next replacement waits until then.
    pub replace_at: Option<u64>,
    /// How it scales on its gateways' load (absent in snapshots from before autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::state::AutoscaleTargets>,
    /// The revision its new replicas run (absent from builds before rolling updates: 0).
    #[serde(default)]
    pub revision: u32,
    /// That revision's label (before rolling updates: "1").
    #[serde(default = "first_version")]
    pub version: String,
    /// The next revision's number.
    #[serde(default = "one")]
    pub next_revision: u32,
    /// The version before the last finished update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<crate::state::Revision>,
    /// A rolling update under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::state::Rollout>,
    /// Why the last update was rolled back, once that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

fn first_version() -> String {
    "1".into()
}

fn one() -> u32 {
    1
}

/// A sandbox batch as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetaV1 {
    /// The batch.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant's index.
    pub tenant: u32,
    /// Sandboxes asked for.
    pub count: u32,
    /// What each sandbox runs.
    pub task: TaskSpec,
    /// When it was placed.
    pub submitted_at: u64,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// Sandboxes that exited 0.
    pub succeeded: u32,
    /// Sandboxes that exited otherwise.
    pub failed: u32,
    /// Of the failed, those killed for their memory (absent from older snapshots).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_killed: u32,
    /// Sandboxes lost with their hosts.
    pub lost: u32,
    /// Sandboxes moved off failed hosts.
    pub moved: u32,
}

/// A job the queue holds, with what it asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedJobV1 {
    /// The job.
    pub id: u64,
    /// What it asked for.
    pub spec: JobSpec,
    /// When it was submitted.
    pub submitted: u64,
}

/// The queue: its jobs in queue order, every workload as an outcome, the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueV1 {
    /// Live jobs that are not service replicas, in queue order.
    pub jobs: Vec<QueuedJobV1>,
    /// Every job (ended ones too), batch and service, and the reservation.
    pub outcome: OutcomeV1,
    /// Spend.
    pub ledger: LedgerV1,
    /// GPU-hours each tenant lost, by tenant index.
    pub tenant_lost_gpu_hours: Vec<f64>,
}

/// Units held over time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterV1 {
    /// Units held now.
    pub units: u64,
    /// Integrated up to then.
    pub since: u64,
    /// Unit-seconds in total.
    pub total: u128,
    /// Unit-seconds per period.
    pub by_period: Vec<u128>,
}

/// A pool's delivered capacity over time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMeterV1 {
    /// The pool's name.
    pub pool: String,
    /// Its meter.
    pub meter: MeterV1,
}

/// What an owner held of a pool over time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountV1 {
    /// The pool's name.
    pub pool: String,
    /// The tenant's index.
    pub tenant: Option<u32>,
    /// The kind of work.
    pub class: SpendClass,
    /// Its meter.
    pub meter: MeterV1,
}

/// Units of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUnitsV1 {
    /// The pool's name.
    pub pool: String,
    /// Units.
    pub units: u64,
}

/// What a live workload holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldV1 {
    /// The workload.
    pub workload: u64,
    /// The tenant's index.
    pub tenant: Option<u32>,
    /// The kind of work.
    pub class: SpendClass,
    /// Units per pool.
    pub units: Vec<PoolUnitsV1>,
}

/// The spend ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerV1 {
    /// Length of a report period, seconds.
    pub period: u64,
    /// When the books opened.
    pub origin: Option<u64>,
    /// Each pool's delivered capacity.
    pub capacity: Vec<PoolMeterV1>,
    /// Every account.
    pub accounts: Vec<AccountV1>,
    /// What live workloads hold.
    pub held: Vec<HeldV1>,
    /// Nodes not delivered yet.
    pub undelivered: Vec<String>,
    /// The units one node of each pool holds (a pool whose nodes all left keeps its price per
    /// unit; absent from snapshots of builds before fleet changes, whose pools all had nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units_per_node: Vec<PoolUnitsV1>,
}

/// The bytes of a snapshot.
pub fn encode(s: &SnapshotV1) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(&(SNAPSHOT_FORMAT, s), &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Reads a snapshot's bytes; another version is refused by name, and so is a body whose
/// version disagrees with the bytes' first value.
pub fn decode(bytes: &[u8]) -> Result<SnapshotV1, DecodeError> {
    let (format, _): (u32, ciborium::Value) =
        ciborium::from_reader(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !(1..=SNAPSHOT_FORMAT).contains(&format) {
        return Err(DecodeError::Malformed(format!(
            "snapshot format {format}; this build reads formats 1 to {SNAPSHOT_FORMAT}"
        )));
    }
    let (_, s): (u32, SnapshotV1) =
        ciborium::from_reader(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if s.v != format {
        return Err(DecodeError::Malformed(format!(
            "snapshot format {format} holds a body of version {}",
            s.v
        )));
    }
    Ok(s)
}

impl From<&MeterState> for MeterV1 {
    fn from(m: &MeterState) -> MeterV1 {
        MeterV1 {
            units: m.units,
            since: m.since,
            total: m.total,
            by_period: m.by_period.clone(),
        }
    }
}

impl From<&MeterV1> for MeterState {
    fn from(m: &MeterV1) -> MeterState {
        MeterState {
            units: m.units,
            since: m.since,
            total: m.total,
            by_period: m.by_period.clone(),
        }
    }
}

impl Codec<'_> {
    fn pool_name(&self, p: model::PoolId) -> String {
        self.fleet
            .pools()
            .get(p.0 as usize)
            .map_or_else(|| format!("#{}", p.0), |p| p.name.clone())
    }

    fn pool(&self, name: &str) -> Result<model::PoolId, DecodeError> {
        self.fleet
            .pools()
            .iter()
            .position(|p| p.name == name)
            .map(|i| model::PoolId(i as u32))
            .ok_or_else(|| DecodeError::Unknown(format!("no pool '{name}' in the fleet")))
    }

    /// The stored form of the queue's state.
    pub fn store_queue(&self, q: &sched::QueueState) -> QueueV1 {
        let l = &q.ledger;
        QueueV1 {
            jobs: q
                .jobs
                .iter()
                .map(|j| QueuedJobV1 {
                    id: j.id.0,
                    spec: j.spec.clone(),
                    submitted: j.submitted,
                })
                .collect(),
            outcome: self.outcome(&q.outcome),
            ledger: LedgerV1 {
                period: l.period,
                origin: l.origin,
                capacity: l
                    .capacity
                    .iter()
                    .enumerate()
                    .map(|(i, m)| PoolMeterV1 {
                        pool: self.pool_name(model::PoolId(i as u32)),
                        meter: m.into(),
                    })
                    .collect(),
                accounts: l
                    .accounts
                    .iter()
                    .map(|a| AccountV1 {
                        pool: self.pool_name(a.pool),
                        tenant: a.owner.tenant.map(|t| t.0),
                        class: a.owner.class,
                        meter: (&a.meter).into(),
                    })
                    .collect(),
                held: l
                    .held
                    .iter()
                    .map(|h| HeldV1 {
                        workload: h.workload.0,
                        tenant: h.owner.tenant.map(|t| t.0),
                        class: h.owner.class,
                        units: h
                            .units
                            .iter()
                            .map(|(p, u)| PoolUnitsV1 {
                                pool: self.pool_name(*p),
                                units: *u,
                            })
                            .collect(),
                    })
                    .collect(),
                undelivered: l.undelivered.iter().map(|n| self.name(*n)).collect(),
                units_per_node: l
                    .units_per_node
                    .iter()
                    .enumerate()
                    .map(|(i, u)| PoolUnitsV1 {
                        pool: self.pool_name(model::PoolId(i as u32)),
                        units: *u,
                    })
                    .collect(),
            },
            tenant_lost_gpu_hours: q.tenant_lost_gpu_hours.clone(),
        }
    }

    /// The queue's state from its stored form, of snapshot version `format`.
    pub fn load_queue(&self, q: &QueueV1, format: u32) -> Result<sched::QueueState, DecodeError> {
        use model::{TenantId, WorkloadId};
        let owner = |tenant: Option<u32>, class: SpendClass| Owner {
            tenant: tenant.map(TenantId),
            class,
        };
        let l = &q.ledger;
        let mut capacity = vec![MeterState::default(); self.fleet.pools().len()];
        for p in &l.capacity {
            capacity[self.pool(&p.pool)?.0 as usize] = (&p.meter).into();
        }
        let mut units_per_node = vec![0; self.fleet.pools().len()];
        for u in &l.units_per_node {
            units_per_node[self.pool(&u.pool)?.0 as usize] = u.units;
        }
        let mut ledger = LedgerState {
            period: l.period,
            origin: l.origin,
            capacity,
            accounts: l
                .accounts
                .iter()
                .map(|a| {
                    Ok(AccountState {
                        pool: self.pool(&a.pool)?,
                        owner: owner(a.tenant, a.class),
                        meter: (&a.meter).into(),
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            held: l
                .held
                .iter()
                .map(|h| {
                    Ok(HeldState {
                        workload: WorkloadId(h.workload),
                        owner: owner(h.tenant, h.class),
                        units: h
                            .units
                            .iter()
                            .map(|u| Ok((self.pool(&u.pool)?, u.units)))
                            .collect::<Result<_, DecodeError>>()?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            undelivered: self.nodes_back(&l.undelivered)?,
            units_per_node,
        };
        if format < 2 {
            upgrade_whole_gpus(self.fleet, &mut ledger);
        }
        Ok(sched::QueueState {
            jobs: q
                .jobs
                .iter()
                .map(|j| sched::QueuedJob {
                    id: WorkloadId(j.id),
                    spec: j.spec.clone(),
                    submitted: j.submitted,
                })
                .collect(),
            outcome: self.outcome_back(&q.outcome)?,
            ledger,
            tenant_lost_gpu_hours: q.tenant_lost_gpu_hours.clone(),
        })
    }
}

/// Brings a ledger metered in whole GPUs (snapshot version 1) to thousandths of a GPU: every figure of a GPU pool ×1000. A GPU pool is one whose nodes carry
/// GPUs; a pool with no node left in the fleet is one whose node counted under 256 units (a
/// node holds at most 255 GPUs, and no CPU host has under a quarter of a core).
fn upgrade_whole_gpus(fleet: &model::Fleet, l: &mut LedgerState) {
    use sched::cost::UNITS_PER_GPU;
    let mut gpu_pool: Vec<bool> = l
        .units_per_node
        .iter()
        .map(|u| (1..256).contains(u))
        .collect();
    gpu_pool.resize(fleet.pools().len(), false);
    let mut has_nodes = vec![false; fleet.pools().len()];
    for n in fleet.nodes() {
        let p = n.pool.0 as usize;
        if !has_nodes[p] {
            has_nodes[p] = true;
            gpu_pool[p] = false;
        }
        gpu_pool[p] |= n.capacity.gpus > 0;
    }
    let scale = |m: &mut MeterState| {
        m.units = m.units.saturating_mul(UNITS_PER_GPU);
        m.total = m.total.saturating_mul(u128::from(UNITS_PER_GPU));
        for p in &mut m.by_period {
            *p = p.saturating_mul(u128::from(UNITS_PER_GPU));
        }
    };
    let is_gpu = |p: model::PoolId| gpu_pool.get(p.0 as usize).copied().unwrap_or(false);
    for (i, m) in l.capacity.iter_mut().enumerate() {
        if is_gpu(model::PoolId(i as u32)) {
            scale(m);
        }
    }
    for a in &mut l.accounts {
        if is_gpu(a.pool) {
            scale(&mut a.meter);
        }
    }
    for h in &mut l.held {
        for (p, u) in &mut h.units {
            if is_gpu(*p) {
                *u = u.saturating_mul(UNITS_PER_GPU);
            }
        }
    }
    for (i, u) in l.units_per_node.iter_mut().enumerate() {
        if is_gpu(model::PoolId(i as u32)) {
            *u = u.saturating_mul(UNITS_PER_GPU);
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}
