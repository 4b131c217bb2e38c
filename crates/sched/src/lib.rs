//! Where and when work runs: the placement engine ([`Engine`]: *where*) and the queue on top of
//! it ([`Scheduler`]: *when* and *whom*: quotas and cohorts, fair share, backfill with
//! reservations, preemption, failures and spares, services, sandbox batches), plus the spend
//! ledger ([`cost`]) and the autoscaling policy ([`autoscale`]). It is the only crate that
//! decides where work runs; the simulator and the server drive it through its public API.
//!
//! Architecture invariants (tested in `tests/invariants.rs` and `tests/queue_props.rs`):
//! - pure: the time is an argument, no clock, no I/O, no randomness; the same state and
//!   the same input give the same decision;
//! - all-or-nothing: a gang or a sandbox batch is placed whole or not at all, and a failed
//!   attempt leaves the state untouched;
//! - no node is ever over-committed; releasing work restores capacity exactly;
//! - bad input never panics: it gets an [`Unplaceable`] or a [`SchedError`] with a reason;
//! - what a change decided can be reported ([`Scheduler::take_outcome`]) and restored without
//!   deciding ([`Scheduler::restore`]), so a journal of outcomes replays exactly under any
//!   later rules.
//!
//! The engine owns the [`model::Fleet`] and, per node, what is free. Per NVLink domain it
//! keeps two counters (free GPUs, wholly free nodes) indexed in ordered sets, so that a gang
//! that fits one domain is a range query, and a gang spanning domains is one pass over the
//! domains of its GPU model.

pub mod autoscale;
pub mod cost;
mod engine;
mod gang;
mod sandbox;
mod scheduler;
mod share;
mod unit;

pub use engine::{
    Allocation, Engine, EngineError, NodeSlot, Scope, StateChange, Time, Unplaceable,
};
pub use gang::{GangPlacement, Quality};
pub use sandbox::{SandboxPlacement, SandboxRun};
pub use scheduler::{
    BatchRecord, Decision, DecisionRules, GangSlots, HeldFor, Job, JobRecord, JobState, LiveBatch,
    LiveJob, NodeScoring, Outcome, QueueOrder, QueueState, QueuedJob, Reason, ReservationChange,
    ReservationRecord, RestoreError, Scaled, SchedConfig, SchedError, Scheduler, ServiceRecord,
    ServiceStatus, TenantLoad, TenantReport, MAX_MIX_SHAPES, MAX_SERVICES, REPLICA_IDS,
};
pub use share::{MixShape, NodeScore, SharedDevice, DEVICE_MILLI, MAX_SCORED_NODES};
