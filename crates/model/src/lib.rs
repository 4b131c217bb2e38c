//! Domain types of Stargrid: resources and accelerator models, instance types, the fleet
//! topology tree (cloud → region → zone → network levels → NVLink domain → node), capacity
//! pools, prices and commitments, and workload specs.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and knows nothing about
//! HTTP, JSON or SQL. Serde derives are format-agnostic and exist so that the edges can
//! (de)serialise these types.

pub mod commitment;
pub mod cost;
pub mod fleet;
pub mod hostlist;
pub mod instance;
pub mod resources;
pub mod tenancy;
pub mod workload;

pub use cost::{CostCatalogue, PlacementRule};
pub use fleet::{
    CapacityPool, Fleet, FleetBuilder, FleetError, Node, NodeId, NodeState, PoolId, PricingKind,
    TopoId, TopoKind, TopoNode,
};
pub use instance::{InstanceCatalog, InstanceType};
pub use resources::{AcceleratorKind, GpuModel, Resources};
pub use tenancy::{
    JobSpec, PriorityClass, ResourceKind, ResourceVec, ServiceSpec, SpreadLevel, SpreadRule,
    TenantId, TenantSpec,
};
pub use workload::{FieldError, GangPart, GangRequest, SandboxRequest, WorkloadClass, WorkloadId};
