//! Unit services: a replica made of several roles (e.g. one prefill worker of 8 GPUs and two
//! decode workers of 4), placed as one unit gang (see `sched`'s units) and scaled by whole
//! units.
//!
//! Each node of a unit replica runs its role's command, with its role's env over the
//! service's and a port the server chose, so that its peers know it before it starts:
//! - `PORT`, `STARGRID_PORT`: its own port;
//! - `STARGRID_ROLE`, `STARGRID_ROLE_INDEX`: its role and which of the role's workers it is;
//! - `STARGRID_WORKER_RANK`, `STARGRID_WORKER_SIZE`: its node within its worker;
//! - `STARGRID_ROLES`: every role, in order;
//! - `STARGRID_<ROLE>_ADDRS`: each worker of that role, its first node as `address:port`;
//! - `STARGRID_WORKER_ADDRS`: every node of its own worker.
//!
//! Addresses are those the nodes' agents advertised when they came up. The first role's
//! first node is the replica's endpoint: it alone is probed and routed to.

use super::admission::{bad, check_task};
use super::*;
use crate::api::{ServiceRole, SubmitService, MAX_ROLES, MAX_UNIT_NODES};
use model::GangPart;
use sched::NodeSlot;

/// One role of a unit service, as its replicas run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTask {
    /// Its name.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment over the service's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// What one node of a unit replica runs.
pub(super) struct RankTask {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub port: u16,
}

/// Ports the server gives the nodes of unit replicas: below Linux's ephemeral range (32768
/// up), so that no outgoing connection holds one.
const UNIT_PORTS: std::ops::Range<u16> = 20_000..32_000;

impl ControlPlane {
    /// The unit gang and role tasks a request's roles describe (`None`: it has none). The
    /// shape fields and command of the request must then be unset.
    pub(super) fn unit_roles(
        &self,
        req: &SubmitService,
        gpu: model::GpuModel,
    ) -> Result<Option<(GangRequest, Vec<RoleTask>)>, FieldProblem> {
        if req.roles.is_empty() {
            return Ok(None);
        }
        if req.roles.len() > MAX_ROLES {
            return Err(bad("roles", format!("at most {MAX_ROLES} roles")));
        }
        let unset = [
            ("gpus_per_node", req.gpus_per_node != 0),
            ("nodes_per_replica", req.nodes_per_replica != 1),
            ("cpu_millis_per_node", req.cpu_millis_per_node != 0),
            ("memory_mib_per_node", req.memory_mib_per_node != 0),
            ("command", !req.command.is_empty()),
        ];
        if let Some((field, _)) = unset.iter().find(|(_, set)| *set) {
            return Err(bad(field, "set per role when a service has roles".into()));
        }
        let mut parts = Vec::with_capacity(req.roles.len());
        let mut tasks = Vec::with_capacity(req.roles.len());
        let mut nodes = 0u32;
        for (i, role) in req.roles.iter().enumerate() {
            let field = |f: &str| format!("roles[{i}].{f}");
            check_role(role, &field)?;
            if req.roles[..i].iter().any(|r| r.name == role.name) {
                return Err(bad(
                    &field("name"),
                    format!("'{}' is named twice", role.name),
                ));
            }
            if role.command.is_empty() {
                return Err(bad(&field("command"), "a role needs a program".into()));
            }
            let mut env = req.env.clone();
            env.extend(role.env.clone());
            check_task(&role.command, &env, &req.secret_env, req.workdir.as_ref())
                .map_err(|e| bad(&field(&e.field), e.reason))?;
            let part_nodes = role.workers.saturating_mul(role.nodes_per_worker);
            nodes = nodes.saturating_add(part_nodes);
            if nodes > MAX_UNIT_NODES {
                return Err(bad(
                    "roles",
                    format!("at most {MAX_UNIT_NODES} nodes per replica over all roles"),
                ));
            }
            parts.push(GangPart {
                nodes: part_nodes,
                gpus_per_node: role.gpus_per_node,
                cpu_millis_per_node: role.cpu_millis_per_node,
                memory_mib_per_node: role.memory_mib_per_node,
                segment: role.nodes_per_worker,
            });
            tasks.push(RoleTask {
                name: role.name.clone(),
                command: role.command.clone(),
                env: role.env.clone(),
            });
        }
        let gang = GangRequest::unit(WorkloadClass::InferenceReplica, gpu, parts);
        Ok(Some((gang, tasks)))
    }

    /// What rank `rank` of unit replica `job` (run `run`, placed on `slots`) runs, for a
    /// service whose replica is a unit; `None` otherwise.
    pub(super) fn unit_rank(
        &self,
        job: JobId,
        run: u32,
        rank: u32,
        slots: &[NodeSlot],
        spec: &ServiceSpec,
        task: &TaskSpec,
    ) -> Option<RankTask> {
        let parts = &spec.replica.parts;
        if parts.is_empty() || task.roles.len() != parts.len() {
            return None;
        }
        let ports = unit_ports(job, run, slots);
        let address = |i: usize| -> String {
            let node = slots[i].node;
            let fleet = self.sched.engine().fleet();
            let name = &fleet.node(node).name;
            let host = self.node_addresses.get(&**name).map_or(&**name, |a| &**a);
            host_port(host, ports[i])
        };
        let mut env = task.env.clone();
        let mut start = 0usize;
        let mut mine = None;
        let names: Vec<&str> = task.roles.iter().map(|r| r.name.as_str()).collect();
        env.insert("STARGRID_ROLES".into(), names.join(","));
        for (part, role) in parts.iter().zip(&task.roles) {
            let seg = part.segment.max(1) as usize;
            let end = start + part.nodes as usize;
            let leaders: Vec<String> = (start..end.min(slots.len()))
                .step_by(seg)
                .map(address)
                .collect();
            env.insert(
                format!("STARGRID_{}_ADDRS", role.name.to_ascii_uppercase()),
                leaders.join(","),
            );
            let r = rank as usize;
            if (start..end).contains(&r) {
                let within = r - start;
                let first = start + within / seg * seg;
                mine = Some((role, within / seg, within % seg, seg, first));
            }
            start = end;
        }
        let (role, worker, worker_rank, seg, first) = mine?;
        let own: Vec<String> = (first..(first + seg).min(slots.len()))
            .map(address)
            .collect();
        env.extend(role.env.clone());
        env.insert("STARGRID_ROLE".into(), role.name.clone());
        env.insert("STARGRID_ROLE_INDEX".into(), worker.to_string());
        env.insert("STARGRID_WORKER_RANK".into(), worker_rank.to_string());
        env.insert("STARGRID_WORKER_SIZE".into(), seg.to_string());
        env.insert("STARGRID_WORKER_ADDRS".into(), own.join(","));
        Some(RankTask {
            command: role.command.clone(),
            env,
            port: *ports.get(rank as usize)?,
        })
    }

    /// Keeps the address node `name`'s agent advertised.
    pub(super) fn set_node_address(&mut self, name: &str, address: &str) {
        if self
            .node_addresses
            .get(name)
            .is_some_and(|a| &**a == address)
        {
            return;
        }
        self.node_addresses.insert(name.into(), address.into());
    }
}

/// Checks a role's own fields; `field` names them.
fn check_role(role: &ServiceRole, field: &dyn Fn(&str) -> String) -> Result<(), FieldProblem> {
    if !crate::api::is_role_name(&role.name) {
        return Err(bad(
            &field("name"),
            "1 to 32 lower-case letters, digits or '_', starting with a letter".into(),
        ));
    }
    if role.name == "worker" {
        return Err(bad(
            &field("name"),
            "'worker' is taken (STARGRID_WORKER_ADDRS names a node's own worker)".into(),
        ));
    }
    if !(1..=MAX_UNIT_NODES).contains(&role.workers) {
        return Err(bad(&field("workers"), format!("1 to {MAX_UNIT_NODES}")));
    }
    if !(1..=MAX_UNIT_NODES).contains(&role.nodes_per_worker) {
        return Err(bad(
            &field("nodes_per_worker"),
            format!("1 to {MAX_UNIT_NODES}"),
        ));
    }
    if role.gpus_per_node == 0 || role.gpus_per_node > model::Resources::MAX_GPUS {
        return Err(bad(&field("gpus_per_node"), "1 to 32".into()));
    }
    Ok(())
}

/// The port of each rank of unit replica `job`'s run `run`: spread over [`UNIT_PORTS`] by a
/// fixed hash (a new run moves them), never the same twice on one node within the unit.
fn unit_ports(job: JobId, run: u32, slots: &[NodeSlot]) -> Vec<u16> {
    let span = UNIT_PORTS.end - UNIT_PORTS.start;
    let mut out: Vec<u16> = Vec::with_capacity(slots.len());
    for (rank, slot) in slots.iter().enumerate() {
        // A fixed mix (not the standard hasher, which may change between builds): every
        // server computes the same ports, after a restart or an upgrade.
        let key = job.0 ^ (u64::from(run) << 40) ^ (rank as u64).rotate_left(20);
        let mut port = UNIT_PORTS.start + (splitmix64(key) % u64::from(span)) as u16;
        while slots[..rank]
            .iter()
            .zip(&out)
            .any(|(s, p)| s.node == slot.node && *p == port)
        {
            port = UNIT_PORTS.start + (port - UNIT_PORTS.start + 1) % span;
        }
        out.push(port);
    }
    out
}

/// SplitMix64's finaliser: a fixed, well-spread mix of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `host:port`, an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_fixed_in_range_and_never_shared_on_a_node_within_a_unit() {
        let slot = |n: u32| NodeSlot {
            node: model::NodeId(n),
            gpu_mask: 1,
        };
        // Many ranks on one node: all different.
        let slots: Vec<NodeSlot> = (0..64).map(|_| slot(3)).collect();
        let ports = unit_ports(JobId(7), 0, &slots);
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 64);
        assert!(ports.iter().all(|p| UNIT_PORTS.contains(p)));
        assert_eq!(ports, unit_ports(JobId(7), 0, &slots), "fixed");
        assert_ne!(
            ports,
            unit_ports(JobId(7), 1, &slots),
            "a new run moves them"
        );
    }

    #[test]
    fn addresses_are_host_names_or_ip_addresses() {
        use crate::api::is_node_address as is_address;
        assert!(is_address("10.0.0.7"));
        assert!(is_address("node-3.cluster.local"));
        assert!(is_address("[fe80::1]"));
        assert!(!is_address(""));
        assert!(!is_address("a b"));
        assert!(!is_address("x\n"));
        assert!(!is_address(&"a".repeat(254)));
        assert_eq!(host_port("fe80::1", 80), "[fe80::1]:80");
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
        // Fixed across builds: a known value.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }
}
