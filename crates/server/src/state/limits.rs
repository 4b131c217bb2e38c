//! Per-request and per-tenant limits on what a submission may ask for, checked when it is
//! admitted (never on replay: changing a limit never changes what was already accepted).
//! They bound what one tenant can make the control plane and its nodes hold: live jobs,
//! replicas, sandboxes and the processes they start.

use super::*;

/// The limits, with safe defaults (`stargrid server --max-…` sets them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most jobs a tenant may have pending or running (service replicas included).
    pub live_jobs_per_tenant: u64,
    /// Most replicas one service may ask for (`max_replicas`).
    pub replicas_per_service: u32,
    /// Most sandboxes one batch may ask for.
    pub sandboxes_per_batch: u32,
    /// Most live sandboxes a tenant may hold.
    pub sandboxes_per_tenant: u64,
    /// Most live sandbox batches a tenant may hold.
    pub batches_per_tenant: u64,
    /// Smallest sandbox, CPU millicores: with the host's size, it bounds how many sandboxes
    /// (and so processes) one host runs.
    pub min_sandbox_cpu_millis: u32,
    /// Smallest sandbox, memory MiB.
    pub min_sandbox_memory_mib: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            live_jobs_per_tenant: 100_000,
            replicas_per_service: 10_000,
            sandboxes_per_batch: 100_000,
            sandboxes_per_tenant: 1_000_000,
            batches_per_tenant: 100_000,
            min_sandbox_cpu_millis: 100,
            min_sandbox_memory_mib: 32,
        }
    }
}

/// A submission past a limit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// The request alone asks for more than any request may.
    #[error("{field}: {reason}")]
    TooLarge {
        /// The field asking too much.
        field: &'static str,
        /// The limit, in words.
        reason: String,
    },
    /// The tenant already holds what it may.
    #[error("{field}: {reason}")]
    TenantFull {
        /// The field of the request that would go past the limit.
        field: &'static str,
        /// The limit and what the tenant holds, in words.
        reason: String,
    },
}

impl ControlPlane {
    /// Refuses a submission event that would go past `limits`; other events pass.
    pub fn check_limits(&self, limits: &Limits, event: &Event) -> Result<(), LimitHit> {
        let full = |field, reason| Err(LimitHit::TenantFull { field, reason });
        let large = |field, reason| Err(LimitHit::TooLarge { field, reason });
        let live_jobs = |tenant: TenantId, adding: u64| {
            let load = self.sched.tenant_load(tenant);
            if load.live_jobs.saturating_add(adding) > limits.live_jobs_per_tenant {
                return full(
                    "tenant",
                    format!(
                        "tenant '{}' has {} jobs pending or running; at most {} \
                         (--max-live-jobs-per-tenant)",
                        self.tenant_name(tenant),
                        load.live_jobs,
                        limits.live_jobs_per_tenant
                    ),
                );
            }
            Ok(())
        };
        match event {
            Event::Submit { spec, .. } => live_jobs(spec.tenant, 1),
            Event::ServiceCreate { spec, .. } => {
                if spec.max_replicas > limits.replicas_per_service {
                    return large(
                        "max_replicas",
                        format!(
                            "{} replicas asked for; at most {} per service \
                             (--max-replicas-per-service)",
                            spec.max_replicas, limits.replicas_per_service
                        ),
                    );
                }
                live_jobs(spec.tenant, u64::from(spec.min_replicas))
            }
            Event::ServiceScale { id, replicas, .. } => {
                let Some(meta) = self.services.get(id) else {
                    return Ok(());
                };
                let target = (*replicas).clamp(meta.spec.min_replicas, meta.spec.max_replicas);
                let desired = self.sched.service_status(id.0).map_or(0, |s| s.desired);
                live_jobs(meta.tenant, u64::from(target.saturating_sub(desired)))
            }
            Event::SandboxBatch {
                tenant, request, ..
            } => {
                if request.count > limits.sandboxes_per_batch {
                    return large(
                        "count",
                        format!(
                            "{} sandboxes asked for; at most {} per batch \
                             (--max-sandboxes-per-batch)",
                            request.count, limits.sandboxes_per_batch
                        ),
                    );
                }
                if request.cpu_millis < limits.min_sandbox_cpu_millis {
                    return large(
                        "cpu_millis",
                        format!(
                            "must be at least {} (--min-sandbox-cpu-millis)",
                            limits.min_sandbox_cpu_millis
                        ),
                    );
                }
                if request.memory_mib < limits.min_sandbox_memory_mib {
                    return large(
                        "memory_mib",
                        format!(
                            "must be at least {} (--min-sandbox-memory-mib)",
                            limits.min_sandbox_memory_mib
                        ),
                    );
                }
                let load = self.sched.tenant_load(*tenant);
                if load.batches >= limits.batches_per_tenant {
                    return full(
                        "tenant",
                        format!(
                            "tenant '{}' holds {} live sandbox batches; at most {} \
                             (--max-batches-per-tenant)",
                            self.tenant_name(*tenant),
                            load.batches,
                            limits.batches_per_tenant
                        ),
                    );
                }
                if load.sandboxes + u64::from(request.count) > limits.sandboxes_per_tenant {
                    return full(
                        "count",
                        format!(
                            "tenant '{}' holds {} live sandboxes; {} more would pass its limit \
                             of {} (--max-sandboxes-per-tenant)",
                            self.tenant_name(*tenant),
                            load.sandboxes,
                            request.count,
                            limits.sandboxes_per_tenant
                        ),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
