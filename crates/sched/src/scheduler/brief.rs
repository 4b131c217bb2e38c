//! What a queued job asks, as a pass sees it: its brief (shape, size, class, and its ask of
//! its tenant's quota on each model it accepts), its shape key (jobs of one shape fail and
//! succeed together), and quota admission on one model or on any it accepts.

use super::*;

/// What a pass needs to know of a pending job to pass it over: its shape, size, limit and class,
/// and when its last preemption search found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Brief {
    pub(super) shape: ShapeKey,
    pub(super) nodes: u32,
    pub(super) time_limit: Time,
    pub(super) priority: PriorityClass,
    pub(super) tenant: TenantId,
    pub(super) no_victims_at: Option<VainSearch>,
    /// A unit's totals (its nodes' asks differ, so the shape's per-node ask does not give them).
    #[serde(default)]
    pub(super) unit: Option<UnitAsk>,
    /// The other models it accepts, a bit per model index (0: none): a shallow pass leaves it
    /// out only when its quota refuses it on every one.
    #[serde(default)]
    pub(super) other_models: u32,
}

/// What a unit gang asks in all.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct UnitAsk {
    pub(super) gpus: u64,
    pub(super) cpu_millis: u64,
    pub(super) memory_mib: u64,
}

impl Brief {
    pub(super) fn of(spec: &JobSpec, no_victims_at: Option<VainSearch>) -> Brief {
        let g = &spec.gang;
        Brief {
            shape: shape_of(spec),
            nodes: g.nodes,
            time_limit: spec.time_limit,
            priority: spec.priority,
            tenant: spec.tenant,
            no_victims_at,
            unit: g.is_unit().then(|| {
                let (cpu_millis, memory_mib) = g.total_cpu_memory();
                UnitAsk {
                    gpus: g.total_gpus(),
                    cpu_millis,
                    memory_mib,
                }
            }),
            other_models: g.models.iter().fold(0, |m, g| m | 1 << g.index()),
        }
    }

    /// What the job asks of its tenant's quota on its first model (GPUs in thousandths).
    pub(super) fn ask(&self) -> ResourceVec {
        self.ask_on(self.shape.gpu)
    }

    /// The least it asks of each resource, whichever model it gets: what its tenant's queued
    /// jobs ask at the least (a floor) counts it so.
    pub(super) fn least_ask(&self) -> ResourceVec {
        let mut v = self.ask();
        if self.other_models != 0 {
            v.gpus[self.shape.gpu] = 0;
        }
        v
    }

    /// Whether `held` and the job fit `quota` on one of the models it accepts.
    pub(super) fn fits(&self, held: &ResourceVec, quota: &ResourceVec) -> bool {
        held.plus(&self.ask()).fits_in(quota)
            || (0..model::GpuModel::ALL.len())
                .filter(|m| self.other_models >> m & 1 == 1)
                .any(|m| held.plus(&self.ask_on(m)).fits_in(quota))
    }

    /// What the job asks of its tenant's quota on the model of index `model`.
    pub(super) fn ask_on(&self, model: usize) -> ResourceVec {
        let mut v = ResourceVec::default();
        if let Some(u) = self.unit {
            v.gpus[model] = u.gpus * 1000;
            v.cpu_millis = u.cpu_millis;
            v.memory_mib = u.memory_mib;
            return v;
        }
        let (n, s) = (u64::from(self.nodes), &self.shape);
        v.gpus[model] = if s.gpu_milli > 0 {
            u64::from(s.gpu_milli)
        } else {
            n * u64::from(s.gpus_per_node) * 1000
        };
        v.cpu_millis = n * u64::from(s.cpu_millis_per_node);
        v.memory_mib = n * u64::from(s.memory_mib_per_node);
        v
    }
}

/// The lesser of `a` and `b`, resource by resource.
pub(super) fn floor_of(a: &ResourceVec, b: &ResourceVec) -> ResourceVec {
    let mut v = *a;
    for (x, y) in v.gpus.iter_mut().zip(b.gpus) {
        *x = (*x).min(y);
    }
    v.cpu_millis = v.cpu_millis.min(b.cpu_millis);
    v.memory_mib = v.memory_mib.min(b.memory_mib);
    v
}

/// A gang's shape apart from its node count: jobs of one shape (and one placement rule) fail
/// and succeed together, the smaller first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ShapeKey {
    /// Index of the GPU model.
    pub(super) gpu: usize,
    pub(super) gpus_per_node: u8,
    pub(super) cpu_millis_per_node: u32,
    pub(super) memory_mib_per_node: u32,
    pub(super) segment: Option<u32>,
    /// A fingerprint of the placement rule (0: no rule).
    pub(super) rule: u64,
    /// Thousandths of one GPU for a share (0: whole devices).
    #[serde(default)]
    pub(super) gpu_milli: u16,
}

/// The shape of a job: jobs of one shape (and one placement rule; and one tenant, for work of
/// several models) fail and succeed together, the smaller first.
pub(super) fn shape_of(spec: &JobSpec) -> ShapeKey {
    let g = &spec.gang;
    // Units are told apart by their parts, as placement rules are.
    let rule =
        if spec.placement == model::PlacementRule::default() && !g.is_unit() && g.models.is_empty()
        {
            0
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            spec.placement.hash(&mut h);
            g.parts.hash(&mut h);
            g.models.hash(&mut h);
            // Work of several models is placed only on those its tenant's quota admits: one
            // tenant's failure says nothing of another's.
            if !g.models.is_empty() {
                spec.tenant.hash(&mut h);
            }
            h.finish() | 1
        };
    ShapeKey {
        gpu: g.gpu.index(),
        gpus_per_node: g.gpus_per_node,
        cpu_millis_per_node: g.cpu_millis_per_node,
        memory_mib_per_node: g.memory_mib_per_node,
        segment: g.segment,
        rule,
        gpu_milli: g.gpu_milli,
    }
}

/// Quota check against a tenant table: Ok(borrowed?) or the reason it is refused.
pub(super) fn admit_with(
    tenants: &[TenantState],
    cohorts: &[CohortState],
    job: &Job,
) -> Result<bool, Reason> {
    let gang = &job.spec.gang;
    let first = admit_on(tenants, cohorts, job.spec.tenant, gang, gang.gpu);
    if first.is_ok() || job.spec.gang.models.is_empty() {
        return first;
    }
    // Work that accepts other models is admitted when one of them has room in the quota
    // (`try_start` then places it only on such models); the reason given is its first's.
    job.spec
        .gang
        .models
        .iter()
        .find_map(|m| admit_on(tenants, cohorts, job.spec.tenant, gang, *m).ok())
        .map_or(first, Ok)
}

/// Whether `gang`, run on `model` (its own or one it accepts), fits `tenant`'s quota
/// (`Ok(false)`) or its cohort's idle quota (`Ok(true)`: borrowed), or why not.
pub(super) fn admit_on(
    tenants: &[TenantState],
    cohorts: &[CohortState],
    tenant: TenantId,
    gang: &GangRequest,
    model: model::GpuModel,
) -> Result<bool, Reason> {
    let mut ask = ResourceVec::of_gang(gang);
    if model != gang.gpu {
        ask.gpus.swap(gang.gpu.index(), model.index());
    }
    let t = &tenants[tenant.0 as usize];
    // Sandboxes count against the tenant's own quota too.
    let after = t.usage.plus(&ask).plus(&t.load.sandbox_usage());
    if after.fits_in(&t.quota) {
        return Ok(false);
    }
    let shortfall = |v: &ResourceVec, limit: &ResourceVec, cohort: bool| {
        let (what, want, have) =
            v.first_excess(limit)
                .unwrap_or((model::ResourceKind::CpuMillis, 0, 0));
        Reason::Quota {
            what,
            want,
            have,
            cohort,
        }
    };
    // Idle quota of the cohort: the sum of members' quotas minus the sum of their usage.
    let Some(sums) = t.cohort.map(|c| &cohorts[c]) else {
        return Err(shortfall(&after, &t.quota, false));
    };
    let quota = sums.quota;
    let cohort_after = sums.usage.plus(&ask);
    if cohort_after.fits_in(&quota) {
        return Ok(true);
    }
    Err(shortfall(&cohort_after, &quota, true))
}
