//! The fleet changing while the cell runs. An operator applies a fleet file
//! ([`Event::FleetApply`]): the nodes, domains, network nodes and pools it adds join (down
//! until their agents report); removed nodes that hold nothing leave at once; removed nodes
//! that still run work are drained and leave once empty ([`Event::NodesLeft`], which the
//! server commits when it sees them empty). Running work keeps its nodes.
//!
//! The engine numbers nodes by their place in the tree, so a new fleet renumbers them: the
//! state is rebuilt over the new fleet by names, the way a snapshot is loaded (with every
//! invariant checked), from this state's own snapshot value. The cell's fleet file becomes
//! the applied file plus the removed nodes still leaving, and every pool it ever had (the
//! spend ledger keeps what each one cost).

use super::*;
use crate::api::{FleetChange, NodeSet};
use fleet::file::FleetFile;
use std::collections::HashSet;

/// A fleet file checked against the cell: the fleet the cell would have and what changes.
pub struct FleetPlan {
    /// The cell's fleet after the change: the file's nodes and the removed nodes leaving.
    effective: FleetFile,
    /// Its node count.
    nodes: usize,
    /// Removed nodes that still hold work, after the change.
    leaving: Vec<String>,
    /// Nodes that leave the fleet now.
    departed: HashSet<Box<str>>,
    /// Leaving nodes named again by the file: they take work again.
    kept: Vec<NodeId>,
    /// What changes, as the API says it.
    change: FleetChange,
}

impl FleetPlan {
    /// What the change does.
    pub fn change(&self) -> &FleetChange {
        &self.change
    }
}

/// Leaving nodes that are empty now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyToLeave {
    /// Their names, as a host list.
    pub nodes: String,
    /// They are every leaving node.
    pub all: bool,
}

fn node_set(names: &[&str]) -> NodeSet {
    NodeSet {
        count: names.len() as u64,
        names: model::hostlist::compress(names),
    }
}

fn bad_file(e: fleet::SourceError) -> StateError {
    let at = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
    StateError::BadFleet {
        field: format!("fleet_toml.{}", e.field),
        reason: format!("{at}{}", e.reason),
    }
}

impl ControlPlane {
    /// Checks a fleet file against the cell and says what applying it would change; changes
    /// nothing. Refused: a file that does not parse, a pool of the cell declared otherwise (its
    /// provider, region, instance type, pricing and price are what its spend is measured
    /// by), a node moved to another pool, and a node moved in the topology while it runs
    /// work.
    pub fn plan_fleet(&self, text: &str) -> Result<FleetPlan, StateError> {
        let target =
            fleet::file::parse("fleet_toml", text, InstanceCatalog::builtin()).map_err(bad_file)?;
        if target.nodes().is_empty() {
            return Err(StateError::BadFleet {
                field: "fleet_toml.groups".into(),
                reason: "the file declares no node: a cell keeps at least one (drain nodes to \
                         stop work on them)"
                    .into(),
            });
        }
        let target_file = fleet::file::read("fleet_toml", text).map_err(bad_file)?;
        let current = self.sched.engine().fleet();
        let current_file = fleet::file::read("journal", &self.fleet_toml)
            .map_err(|e| StateError::Fleet(e.to_string()))?;
        let mut pools_added = Vec::new();
        for (i, p) in target.pools().iter().enumerate() {
            let Some(old) = current.pools().iter().find(|o| o.name == p.name) else {
                pools_added.push(p.name.clone());
                continue;
            };
            let differs = [
                ("cloud", old.cloud != p.cloud, old.cloud.clone()),
                ("region", old.region != p.region, old.region.clone()),
                (
                    "instance_type",
                    old.instance_type != p.instance_type,
                    old.instance_type.clone(),
                ),
                (
                    "pricing",
                    old.pricing != p.pricing,
                    format!("{:?}", old.pricing),
                ),
                (
                    "price_per_hour",
                    old.price_per_hour != p.price_per_hour,
                    old.price_per_hour.to_string(),
                ),
            ];
            if let Some((field, _, was)) = differs.into_iter().find(|d| d.1) {
                return Err(StateError::BadFleet {
                    field: format!("fleet_toml.pools[{i}].{field}"),
                    reason: format!(
                        "pool '{}' has {field} {was} in the cell, and a pool's terms cannot \
                         change while it runs (what it cost is measured by them): declare a \
                         new pool for other terms",
                        p.name
                    ),
                });
            }
        }
        let busy = |n: NodeId| {
            let engine = self.sched.engine();
            engine.is_held(n) || !engine.workloads_on(n).is_empty()
        };
        let (mut added, mut moved, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for n in target.nodes() {
            let Some(old_id) = current.node_by_name(&n.name) else {
                added.push(&*n.name);
                continue;
            };
            let old = current.node(old_id);
            let (was, now) = (&current.pool(old.pool).name, &target.pool(n.pool).name);
            if was != now || old.capacity != n.capacity {
                return Err(StateError::BadFleet {
                    field: "fleet_toml.groups".into(),
                    reason: format!(
                        "node '{}' is in pool '{was}' in the cell and cannot move to pool \
                         '{now}' (another pool is other terms or another machine): remove it, \
                         then add it under its new pool",
                        n.name
                    ),
                });
            }
            if current.topo_path(old.parent) != target.topo_path(n.parent) {
                if busy(old_id) {
                    return Err(StateError::Conflict(format!(
                        "node '{}' moves from {} to {} while work runs on it: drain it, and \
                         apply the file again once it is empty",
                        n.name,
                        current.topo_path(old.parent),
                        target.topo_path(n.parent)
                    )));
                }
                moved.push(&*n.name);
            }
            if self.leaving.contains(&old_id) {
                kept.push(old_id);
            }
        }
        let (mut removed, mut leaving) = (Vec::new(), Vec::new());
        let mut leaving_ids = BTreeSet::new();
        for (i, n) in current.nodes().iter().enumerate() {
            let id = NodeId(i as u32);
            if target.node_by_name(&n.name).is_some() {
                continue;
            }
            if busy(id) {
                leaving.push(&*n.name);
                leaving_ids.insert(id);
            } else {
                removed.push(&*n.name);
            }
        }
        let mut effective = FleetFile {
            instance_types: target_file.instance_types,
            pools: target_file.pools,
            groups: target_file.groups,
        };
        // Every pool and instance type the cell ever had stays: the books price them.
        for t in current_file.instance_types {
            if !effective.instance_types.iter().any(|e| e.name == t.name) {
                effective.instance_types.push(t);
            }
        }
        for p in current_file.pools {
            if !effective.pools.iter().any(|e| e.name == p.name) {
                effective.pools.push(p);
            }
        }
        effective
            .groups
            .extend(fleet::file::groups(current, |n| leaving_ids.contains(&n)));
        let nodes = target.nodes().len() + leaving.len();
        let domains_after = if leaving.is_empty() {
            target.domains().len()
        } else {
            self.check_fleet_file(&effective, nodes)?.domains().len()
        };
        let change = FleetChange {
            applied: false,
            nodes_before: current.nodes().len() as u64,
            nodes_after: nodes as u64,
            domains_before: current.domains().len() as u64,
            domains_after: domains_after as u64,
            added: node_set(&added),
            removed: node_set(&removed),
            leaving: node_set(&leaving),
            moved: node_set(&moved),
            kept: node_set(
                &kept
                    .iter()
                    .map(|n| &*current.node(*n).name)
                    .collect::<Vec<_>>(),
            ),
            pools_added,
        };
        Ok(FleetPlan {
            effective,
            nodes,
            leaving: leaving.iter().map(|n| n.to_string()).collect(),
            departed: removed.iter().map(|n| Box::from(*n)).collect(),
            kept,
            change,
        })
    }

    /// The plan for `groups` (nodes new to the cell) to join the fleet as it is.
    pub(super) fn plan_additions(
        &self,
        groups: Vec<fleet::file::Group>,
    ) -> Result<FleetPlan, StateError> {
        let current = self.sched.engine().fleet();
        let mut effective = fleet::file::read("journal", &self.fleet_toml)
            .map_err(|e| StateError::Fleet(e.to_string()))?;
        let mut nodes = current.nodes().len();
        for g in &groups {
            nodes += model::hostlist::expand(&g.nodes)
                .map_err(|e| StateError::Conflict(format!("nodes '{}': {e}", g.nodes)))?
                .len();
        }
        effective.groups.extend(groups);
        let after = self.check_fleet_file(&effective, nodes)?;
        let added: Vec<&str> = after
            .nodes()
            .iter()
            .filter(|n| current.node_by_name(&n.name).is_none())
            .map(|n| &*n.name)
            .collect();
        let change = FleetChange {
            nodes_before: current.nodes().len() as u64,
            nodes_after: nodes as u64,
            domains_before: current.domains().len() as u64,
            domains_after: after.domains().len() as u64,
            added: node_set(&added),
            leaving: node_set(
                &self
                    .leaving
                    .iter()
                    .map(|n| &*current.node(*n).name)
                    .collect::<Vec<_>>(),
            ),
            ..FleetChange::default()
        };
        Ok(FleetPlan {
            effective,
            nodes,
            leaving: self
                .leaving
                .iter()
                .map(|n| current.node(*n).name.to_string())
                .collect(),
            departed: HashSet::new(),
            kept: Vec::new(),
            change,
        })
    }

    /// Parses a fleet file the cell would have (a merge of a file and the leaving nodes can
    /// still be refused, e.g. a domain of two accelerators).
    fn check_fleet_file(&self, file: &FleetFile, nodes: usize) -> Result<Fleet, StateError> {
        let text = fleet::file::to_text(file, nodes);
        fleet::file::parse("fleet_toml", &text, InstanceCatalog::builtin()).map_err(bad_file)
    }

    /// The leaving nodes that hold nothing now (they may leave the fleet); `None` when there
    /// are none. Its work grows with the leaving nodes only.
    pub fn nodes_ready_to_leave(&self) -> Option<ReadyToLeave> {
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        let ready: Vec<&str> = self
            .leaving
            .iter()
            .filter(|n| !engine.is_held(**n) && engine.workloads_on(**n).is_empty())
            .map(|n| &*fleet.node(*n).name)
            .collect();
        (!ready.is_empty()).then(|| ReadyToLeave {
            all: ready.len() == self.leaving.len(),
            nodes: model::hostlist::compress(&ready),
        })
    }

    /// Applies a checked plan: the state is rebuilt over the new fleet (unless no node, pool
    /// or place changes: a rebuild at the reference fleet's size takes seconds).
    pub(super) fn apply_fleet_plan(&mut self, plan: FleetPlan, at: u64) -> Result<(), StateError> {
        let c = &plan.change;
        let same_leaving = {
            let fleet = self.sched.engine().fleet();
            plan.leaving.len() == self.leaving.len()
                && plan.leaving.iter().all(|n| {
                    fleet
                        .node_by_name(n)
                        .is_some_and(|id| self.leaving.contains(&id))
                })
        };
        if c.added.count + c.removed.count + c.moved.count + c.kept.count == 0
            && c.pools_added.is_empty()
            && same_leaving
        {
            let mut change = plan.change;
            change.applied = true;
            self.fleet_toml = fleet::file::to_text(&plan.effective, plan.nodes).into();
            self.note_fleet_change(change);
            return Ok(());
        }
        let mut s = self.snapshot_value();
        let text = fleet::file::to_text(&plan.effective, plan.nodes);
        if let Event::Init { fleet_toml, .. } = &mut s.init {
            *fleet_toml = text;
        }
        let gone = |name: &str| plan.departed.contains(name);
        s.nodes.retain(|n| !gone(&n.node));
        s.drained.retain(|n| !gone(n));
        s.queue.ledger.undelivered.retain(|n| !gone(n));
        // A backfill reservation on nodes that leave is advice the next pass works out again.
        if let Some(r) = &s.queue.outcome.reservation {
            if r.nodes.iter().any(|n| gone(n)) {
                s.queue.outcome.reservation = Some(crate::journal::ReservationV1 {
                    job: None,
                    start: 0,
                    nodes: Vec::new(),
                    priority: None,
                    computed_at: 0,
                });
            }
        }
        s.leaving = plan.leaving;
        let changed: Vec<String> = {
            let fleet = self.sched.engine().fleet();
            self.changed
                .iter()
                .map(|n| fleet.node(*n).name.to_string())
                .collect()
        };
        let kept: Vec<String> = {
            let fleet = self.sched.engine().fleet();
            plan.kept
                .iter()
                .map(|n| fleet.node(*n).name.to_string())
                .collect()
        };
        let mut p = ControlPlane::from_snapshot_value(s)
            .map_err(|e| StateError::Conflict(format!("the cell cannot take this fleet: {e}")))?;
        p.sched.set_config(self.sched.config().clone());
        p.secret_key = self.secret_key.clone();
        p.cell = self.cell.clone();
        p.replaying = self.replaying.take();
        let fleet = p.sched.engine().fleet();
        p.changed = changed
            .iter()
            .filter_map(|n| fleet.node_by_name(n))
            .collect();
        let kept: Vec<NodeId> = kept.iter().filter_map(|n| fleet.node_by_name(n)).collect();
        // Leaving nodes take no new work; those named again take it as before.
        let leaving: Vec<NodeId> = p.leaving.iter().copied().collect();
        for n in leaving {
            if p.sched.engine().fleet().node(n).state == NodeState::Ready {
                p.sched.set_state(Scope::Node(n), NodeState::Draining);
            }
        }
        for n in kept {
            let state = p.sched.engine().fleet().node(n).state;
            if state == NodeState::Draining && !p.drained.contains(&n) {
                p.sched.set_state(Scope::Node(n), NodeState::Ready);
            }
        }
        p.registrations_joined();
        p.sched.refit_books(at);
        p.sched.check_invariants().map_err(StateError::Conflict)?;
        p.dirty = true;
        let mut change = plan.change;
        change.applied = true;
        p.fleet_changes = std::mem::take(&mut self.fleet_changes);
        *self = p;
        self.note_fleet_change(change);
        Ok(())
    }

    /// Keeps what the fleet change being applied (the next record) did, with the latest few.
    fn note_fleet_change(&mut self, change: FleetChange) {
        const KEPT: usize = 8;
        if self.fleet_changes.len() == KEPT {
            self.fleet_changes.pop_front();
        }
        self.fleet_changes.push_back((self.seq + 1, change));
    }

    /// The plan for leaving nodes that are empty now (`nodes`, a host list) to leave.
    pub(super) fn plan_departure(&self, nodes: &str) -> Result<FleetPlan, StateError> {
        let fleet = self.sched.engine().fleet();
        let names = model::hostlist::expand_at_most(nodes, self.leaving.len().max(1))
            .map_err(|e| StateError::Conflict(format!("nodes '{nodes}': {e}")))?;
        let mut departing = BTreeSet::new();
        for name in &names {
            let id = fleet
                .node_by_name(name)
                .filter(|n| self.leaving.contains(n))
                .ok_or_else(|| StateError::Conflict(format!("node '{name}' is not leaving")))?;
            let engine = self.sched.engine();
            if engine.is_held(id) || !engine.workloads_on(id).is_empty() {
                return Err(StateError::Conflict(format!(
                    "node '{name}' still holds work"
                )));
            }
            departing.insert(id);
        }
        let file = fleet::file::read("journal", &self.fleet_toml)
            .map_err(|e| StateError::Fleet(e.to_string()))?;
        let effective = FleetFile {
            instance_types: file.instance_types,
            pools: file.pools,
            groups: fleet::file::groups(fleet, |n| !departing.contains(&n)),
        };
        let names_of = |ids: &mut dyn Iterator<Item = &NodeId>| -> Vec<&str> {
            ids.map(|n| &*fleet.node(*n).name).collect()
        };
        let removed = names_of(&mut departing.iter());
        let leaving: Vec<String> = self
            .leaving
            .iter()
            .filter(|n| !departing.contains(n))
            .map(|n| fleet.node(*n).name.to_string())
            .collect();
        let nodes = fleet.nodes().len() - departing.len();
        let change = FleetChange {
            applied: false,
            nodes_before: fleet.nodes().len() as u64,
            nodes_after: nodes as u64,
            domains_before: fleet.domains().len() as u64,
            domains_after: self.check_fleet_file(&effective, nodes)?.domains().len() as u64,
            removed: node_set(&removed),
            leaving: node_set(&leaving.iter().map(String::as_str).collect::<Vec<_>>()),
            ..FleetChange::default()
        };
        Ok(FleetPlan {
            effective,
            nodes,
            leaving,
            departed: removed.iter().map(|n| Box::from(*n)).collect(),
            kept: Vec::new(),
            change,
        })
    }

    /// What the last fleet change did.
    pub fn last_fleet_change(&self) -> Option<&FleetChange> {
        self.fleet_changes.back().map(|(_, c)| c)
    }

    /// What the fleet change of record `seq` did, if it is among the latest few.
    pub fn fleet_change_at(&self, seq: u64) -> Option<&FleetChange> {
        self.fleet_changes
            .iter()
            .find(|(at, _)| *at == seq)
            .map(|(_, c)| c)
    }

    /// The cell's fleet file now (removed nodes still leaving included).
    pub fn fleet_file(&self) -> &str {
        &self.fleet_toml
    }

    /// Whether node `n` was removed from the fleet and leaves once empty.
    pub(super) fn is_leaving(&self, n: NodeId) -> bool {
        self.leaving.contains(&n)
    }

    /// The nodes of job `id`'s latest run by rank, named (those that left the fleet too).
    pub(super) fn ran_on_names(&self, id: JobId, m: &JobMeta) -> Vec<String> {
        if let Some(names) = self.departed_ran_on.get(&id) {
            return names.iter().map(|n| n.to_string()).collect();
        }
        let fleet = self.sched.engine().fleet();
        m.ran_on
            .iter()
            .map(|n| fleet.node(*n).name.to_string())
            .collect()
    }
}
