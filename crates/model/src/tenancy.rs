//! Tenants, priority classes, quotas and the jobs the scheduler queues.

use crate::resources::GpuModel;
use crate::workload::{FieldError, GangRequest};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a tenant in the scheduler's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(pub u32);

/// Priority classes, lowest first. Work of a higher class may preempt a lower one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum PriorityClass {
    /// Runs on idle capacity; first to go.
    Preemptible,
    /// Research and experiments.
    #[default]
    Research,
    /// Production training runs.
    Training,
    /// Production inference: never preempted by the classes below.
    ProductionInference,
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PriorityClass::Preemptible => "preemptible",
            PriorityClass::Research => "research",
            PriorityClass::Training => "training",
            PriorityClass::ProductionInference => "production-inference",
        })
    }
}

/// One quota'd resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// GPUs of one model.
    Gpus(GpuModel),
    /// CPU millicores.
    CpuMillis,
    /// Memory in MiB.
    MemoryMib,
}

impl ResourceKind {
    /// An amount of this resource as the queue counts it, for people: GPUs from thousandths
    /// (`2.5`, `16`), the rest as they are.
    pub fn amount(&self, v: u64) -> String {
        match self {
            ResourceKind::Gpus(_) if v.is_multiple_of(1000) => (v / 1000).to_string(),
            ResourceKind::Gpus(_) => format!("{}", v as f64 / 1000.0),
            _ => v.to_string(),
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKind::Gpus(m) => write!(f, "{m} GPUs"),
            ResourceKind::CpuMillis => f.write_str("CPU millicores"),
            ResourceKind::MemoryMib => f.write_str("memory MiB"),
        }
    }
}

/// An amount of every quota'd resource: GPUs per model, CPU and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceVec {
    /// GPUs per model, indexed by [`GpuModel::index`]. Written as a list in model order;
    /// a shorter list (written before later models existed) reads each later model at the
    /// amount the list gives every model when it gives them all the same (a quota set alike
    /// for every model, or none), else at 0 (a quota set model by model never covered it).
    #[serde(deserialize_with = "gpus_of_any_length")]
    pub gpus: [u64; GpuModel::ALL.len()],
    /// CPU millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl ResourceVec {
    /// An amount that never binds as a quota: a quarter of the range, so that the sum of a few
    /// (a cohort's total) cannot overflow.
    pub const UNLIMITED_AMOUNT: u64 = u64::MAX / 4;

    /// A quota that never binds, on every resource.
    pub const UNLIMITED: ResourceVec = ResourceVec {
        gpus: [Self::UNLIMITED_AMOUNT; GpuModel::ALL.len()],
        cpu_millis: Self::UNLIMITED_AMOUNT,
        memory_mib: Self::UNLIMITED_AMOUNT,
    };

    /// What a gang uses, its GPUs in thousandths (a share counts its part of a device; the
    /// queue keeps usage and quotas in thousandths, see [`ResourceVec::gpus_in_milli`]).
    pub fn of_gang(g: &GangRequest) -> ResourceVec {
        let mut v = ResourceVec::default();
        v.gpus[g.gpu.index()] = g.total_gpu_milli();
        (v.cpu_millis, v.memory_mib) = g.total_cpu_memory();
        v
    }

    /// The same amount with its GPUs in thousandths (an amount that never binds stays so).
    pub fn gpus_in_milli(&self) -> ResourceVec {
        let mut v = *self;
        for g in v.gpus.iter_mut() {
            *g = if *g >= Self::UNLIMITED_AMOUNT / 1000 {
                Self::UNLIMITED_AMOUNT
            } else {
                *g * 1000
            };
        }
        v
    }

    /// The same amount with its GPUs in whole GPUs, from thousandths (rounded up).
    pub fn gpus_in_whole(&self) -> ResourceVec {
        let mut v = *self;
        for g in v.gpus.iter_mut() {
            *g = if *g >= Self::UNLIMITED_AMOUNT {
                Self::UNLIMITED_AMOUNT
            } else {
                g.div_ceil(1000)
            };
        }
        v
    }

    /// Component-wise `self + other`.
    pub fn plus(&self, o: &ResourceVec) -> ResourceVec {
        let mut v = *self;
        for (a, b) in v.gpus.iter_mut().zip(o.gpus) {
            *a = a.saturating_add(b);
        }
        v.cpu_millis = v.cpu_millis.saturating_add(o.cpu_millis);
        v.memory_mib = v.memory_mib.saturating_add(o.memory_mib);
        v
    }

    /// Component-wise `self - other`, floored at zero.
    pub fn minus(&self, o: &ResourceVec) -> ResourceVec {
        let mut v = *self;
        for (a, b) in v.gpus.iter_mut().zip(o.gpus) {
            *a = a.saturating_sub(b);
        }
        v.cpu_millis = v.cpu_millis.saturating_sub(o.cpu_millis);
        v.memory_mib = v.memory_mib.saturating_sub(o.memory_mib);
        v
    }

    /// Whether every component of `self` is at most the one of `limit`.
    pub fn fits_in(&self, limit: &ResourceVec) -> bool {
        self.gpus.iter().zip(limit.gpus).all(|(a, b)| *a <= b)
            && self.cpu_millis <= limit.cpu_millis
            && self.memory_mib <= limit.memory_mib
    }

    /// The first component of `self` that exceeds `limit`, with both amounts.
    pub fn first_excess(&self, limit: &ResourceVec) -> Option<(ResourceKind, u64, u64)> {
        for m in GpuModel::ALL {
            let (a, b) = (self.gpus[m.index()], limit.gpus[m.index()]);
            if a > b {
                return Some((ResourceKind::Gpus(m), a, b));
            }
        }
        if self.cpu_millis > limit.cpu_millis {
            return Some((ResourceKind::CpuMillis, self.cpu_millis, limit.cpu_millis));
        }
        if self.memory_mib > limit.memory_mib {
            return Some((ResourceKind::MemoryMib, self.memory_mib, limit.memory_mib));
        }
        None
    }

    /// Largest share `self / total` over the components where `total` is non-zero.
    pub fn dominant_share(&self, total: &ResourceVec) -> f64 {
        let mut s: f64 = 0.0;
        for (a, b) in self.gpus.iter().zip(total.gpus) {
            if b > 0 {
                s = s.max(*a as f64 / b as f64);
            }
        }
        if total.cpu_millis > 0 {
            s = s.max(self.cpu_millis as f64 / total.cpu_millis as f64);
        }
        if total.memory_mib > 0 {
            s = s.max(self.memory_mib as f64 / total.memory_mib as f64);
        }
        s
    }
}

/// A tenant: who it is, its weight in fair share, its guaranteed quota and its cohort.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Unique name.
    pub name: String,
    /// Weight in dominant-resource fair share (> 0).
    #[serde(default = "one")]
    pub weight: f64,
    /// Tenants of one cohort lend each other idle quota.
    #[serde(default)]
    pub cohort: Option<String>,
    /// Guaranteed quota.
    #[serde(default)]
    pub quota: ResourceVec,
}

fn one() -> f64 {
    1.0
}

/// A training job or other gang the scheduler queues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Owner.
    pub tenant: TenantId,
    /// Priority class.
    pub priority: PriorityClass,
    /// Shape.
    pub gang: GangRequest,
    /// Declared time limit in seconds (used for backfill and reservations).
    pub time_limit: u64,
    /// Providers and regions it may use, and whether it may run on spot capacity.
    #[serde(default)]
    pub placement: crate::PlacementRule,
}

impl JobSpec {
    /// Longest time limit a job may declare: ten years.
    pub const MAX_TIME_LIMIT: u64 = 10 * 365 * 24 * 3600;

    /// Checks the job's own ranges (the tenant is checked by the scheduler).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.gang.validate()?;
        self.placement.validate()?;
        if self.time_limit == 0 || self.time_limit > Self::MAX_TIME_LIMIT {
            return Err(FieldError {
                field: "time_limit",
                reason: format!("must be 1..={} seconds", Self::MAX_TIME_LIMIT),
            });
        }
        Ok(())
    }
}

/// The level of the fleet tree a spread rule counts replicas in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpreadLevel {
    /// NVLink domain.
    Domain,
    /// Availability zone.
    Zone,
    /// Provider region.
    Region,
    /// Provider.
    Cloud,
}

impl fmt::Display for SpreadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpreadLevel::Domain => "NVLink domain",
            SpreadLevel::Zone => "zone",
            SpreadLevel::Region => "region",
            SpreadLevel::Cloud => "cloud",
        })
    }
}

/// At most `max_per` replicas of a service in any one element of `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadRule {
    /// Where replicas are counted.
    pub level: SpreadLevel,
    /// Most replicas per element.
    pub max_per: u32,
}

/// An inference service: identical replicas, scaled between bounds, spread by a rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Owner.
    pub tenant: TenantId,
    /// Priority of its replicas (production inference by default).
    pub priority: PriorityClass,
    /// Shape of one replica (e.g. 2 trays in one domain, or a whole NVL72).
    pub replica: GangRequest,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Spread rule, if any.
    pub spread: Option<SpreadRule>,
    /// Providers and regions its replicas may use, and whether they may run on spot.
    #[serde(default)]
    pub placement: crate::PlacementRule,
    /// Its replicas span at least this many providers (0 or 1: no rule): until they do, a
    /// new or replacement replica goes to a provider that holds none.
    #[serde(default)]
    pub min_providers: u32,
}

impl ServiceSpec {
    /// Most replicas a service may ask for.
    pub const MAX_REPLICAS: u32 = 100_000;

    /// Checks the spec's ranges.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.replica.validate()?;
        self.placement.validate()?;
        if self.max_replicas > Self::MAX_REPLICAS {
            return Err(FieldError {
                field: "max_replicas",
                reason: format!("at most {}", Self::MAX_REPLICAS),
            });
        }
        if self.min_replicas > self.max_replicas {
            return Err(FieldError {
                field: "min_replicas",
                reason: "must not exceed max_replicas".into(),
            });
        }
        if self.min_providers > 64 {
            return Err(FieldError {
                field: "min_providers",
                reason: "at most 64".into(),
            });
        }
        if self.min_providers > self.max_replicas.max(1) {
            return Err(FieldError {
                field: "min_providers",
                reason: format!(
                    "{} providers need at least as many replicas; max_replicas is {}",
                    self.min_providers, self.max_replicas
                ),
            });
        }
        if self.spread.is_some_and(|s| s.max_per == 0) {
            return Err(FieldError {
                field: "spread.max_per",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Reads a per-model list of at most [`GpuModel::ALL`]'s length (see [`ResourceVec::gpus`]).
fn gpus_of_any_length<'de, D>(d: D) -> Result<[u64; GpuModel::ALL.len()], D::Error>
where
    D: serde::Deserializer<'de>,
{
    let list = Vec::<u64>::deserialize(d)?;
    if list.len() > GpuModel::ALL.len() {
        return Err(serde::de::Error::invalid_length(
            list.len(),
            &"at most one amount per known GPU model",
        ));
    }
    let fill = match list.split_first() {
        Some((first, rest)) if rest.iter().all(|v| v == first) => *first,
        _ => 0,
    };
    let mut out = [fill; GpuModel::ALL.len()];
    out[..list.len()].copy_from_slice(&list);
    Ok(out)
}

#[cfg(test)]
mod model_list_tests {
    use super::*;

    #[test]
    fn a_quota_written_before_later_models_existed_reads_them_alike() {
        // Six models, as journals of the first format wrote them.
        let old = r#"{"gpus":[8,8,8,8,8,8],"cpu_millis":1000,"memory_mib":2048}"#;
        let v: ResourceVec = serde_json::from_str(old).unwrap();
        assert!(v.gpus.iter().all(|g| *g == 8), "{v:?}");
        assert_eq!((v.cpu_millis, v.memory_mib), (1000, 2048));
        // What is read is written back whole, and reads the same.
        let again: ResourceVec = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(again, v);
        // A quota set model by model does not cover later models.
        let h100_only = r#"{"gpus":[0,0,0,0,64,0],"cpu_millis":0,"memory_mib":0}"#;
        let v: ResourceVec = serde_json::from_str(h100_only).unwrap();
        assert_eq!(v.gpus[GpuModel::H100.index()], 64);
        assert_eq!(v.gpus[GpuModel::A100.index()], 0);
        let too_long = format!(
            r#"{{"gpus":{:?},"cpu_millis":0,"memory_mib":0}}"#,
            vec![1u64; 40]
        );
        assert!(serde_json::from_str::<ResourceVec>(&too_long).is_err());
    }
}
