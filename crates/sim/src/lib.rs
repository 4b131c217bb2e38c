//! The simulator: the very same queue and engine (`sched`) driven in virtual time by traces,
//! with faults, placement-sensitive job speed and metrics. Deterministic: the same inputs and
//! seed give a byte-identical report.
//!
//! Modules: [`trace`] (workloads in), [`synth`] (synthetic frontier workloads), [`speed`] (how
//! placement slows a gang), [`run`] (the event loop), [`report`] (metrics out: JSON, CSV, PNG),
//! [`cost`] (spend, commitments, failovers and the provider-outage what-if).

pub mod cost;
pub mod faults;
pub mod fit;
pub mod fleets;
pub mod frag;
pub mod report;
pub mod rng;
pub mod run;
pub mod speed;
pub mod synth;
pub mod trace;

pub use report::Report;
pub use run::{simulate, FaultSpec, SimConfig};
pub use trace::{Trace, TraceError, TraceJob};
