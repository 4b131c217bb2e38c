//! The fleet as the dashboard draws it (`GET /v1/fleet/overview`, `GET /v1/fleet/domain`):
//! every NVLink domain as one cell grouped by where it sits, CPU hosts summed per zone, and one
//! domain's trays with what runs on them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The whole fleet in one answer, its size bounded by the domains (not the nodes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetOverview {
    /// NVLink domains grouped by their place: provider/region/zone/network levels.
    pub groups: Vec<DomainGroup>,
    /// CPU hosts, summed per zone.
    pub cpu_zones: Vec<CpuZone>,
    /// Sums over the whole fleet.
    pub totals: FleetTotals,
}

/// The domains under one network node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainGroup {
    /// Its topology path (`aws/us-east-1/use1-az1/spine0/leaf3`).
    pub path: String,
    /// Its domains, in fleet order.
    pub domains: Vec<DomainCell>,
}

/// One NVLink domain's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainCell {
    /// Its name (the last part of its path).
    pub name: String,
    /// GPUs in it.
    pub gpus: u32,
    /// GPUs allocated now.
    pub used_gpus: u32,
    /// Trays (nodes) in it.
    pub nodes: u32,
    /// Trays down (no agent, or failed).
    pub down: u32,
    /// Trays drained or draining.
    pub draining: u32,
    /// Trays cordoned.
    pub cordoned: u32,
}

/// CPU hosts of one zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CpuZone {
    /// The zone's topology path.
    pub path: String,
    /// Hosts.
    pub hosts: u32,
    /// Hosts down.
    pub down: u32,
    /// Hosts drained or cordoned.
    pub draining: u32,
    /// CPU millicores in all.
    pub cpu_millis: u64,
    /// CPU millicores allocated now.
    pub used_cpu_millis: u64,
}

/// Sums over the fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetTotals {
    /// Nodes (trays and hosts).
    pub nodes: u64,
    /// NVLink domains.
    pub domains: u64,
    /// Domains with no GPU allocated and every tray up.
    pub free_domains: u64,
    /// GPUs.
    pub gpus: u64,
    /// GPUs allocated.
    pub used_gpus: u64,
    /// Nodes down.
    pub down: u64,
    /// Nodes drained, draining or cordoned.
    pub draining: u64,
}

/// One domain's trays (`GET /v1/fleet/domain?path=`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainDetail {
    /// Its topology path.
    pub path: String,
    /// Its trays, in order.
    pub trays: Vec<TrayView>,
}

/// One tray and what runs on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrayView {
    /// Its name.
    pub name: String,
    /// ready, draining, cordoned or down.
    pub state: String,
    /// GPUs.
    pub gpus: u32,
    /// GPUs free.
    pub free_gpus: u32,
    /// What runs on it: jobs and batches the reader may see by id and name; others' as
    /// `other tenant`.
    pub work: Vec<String>,
}

/// A cell's capacity at a glance (`GET /v1/cell`): what a global queue over several cells, or
/// an operator, reads to know what the cell holds and has free.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CellSummary {
    /// The cell's name (`--cell`).
    pub cell: String,
    /// Nodes by state: ready, cordoned, draining, down.
    pub nodes: std::collections::BTreeMap<String, u64>,
    /// GPUs by model.
    pub gpus: std::collections::BTreeMap<String, CapacitySummary>,
    /// CPU millicores of CPU hosts.
    pub cpu_millis: CapacitySummary,
    /// Jobs waiting.
    pub jobs_pending: u64,
    /// Jobs running.
    pub jobs_running: u64,
}

/// One kind of capacity, counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapacitySummary {
    /// Free on nodes that take work.
    pub free: u64,
    /// Held by work.
    pub used: u64,
    /// Free, but on nodes that take no work (down, draining, cordoned).
    pub unavailable: u64,
}
