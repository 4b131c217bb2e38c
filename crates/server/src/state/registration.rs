//! Nodes their agents register. An admin sets a rule ([`Event::RegistrationRule`]): the names
//! agents may register and the pools they may join, and whether they join at once. An agent
//! then asks to bring its node with its place and what it found ([`Event::NodeRegistered`]),
//! checked against the rule and the pool's instance type; the node waits until an admin
//! approves it, or the server does for a rule that approves at once. Approved nodes join in
//! one fleet change ([`Event::RegistrationsApproved`]), as if an operator had added them to
//! the fleet file, or are dropped ([`Event::RegistrationsRejected`]). A registered node brings
//! a new NVLink domain or none: trays join an existing domain through a fleet file.

use super::fleet_change::FleetPlan;
use super::*;
use crate::api::{RegisterNode, RegistrationRuleSpec};

/// An admin's rule for nodes their agents register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRule {
    /// The names agents may register (a host list, expanded once).
    pub nodes: NodeScope,
    /// The pools they may join.
    pub pools: Vec<String>,
    /// The zones they may join (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// They join without an admin's approval (in batches).
    #[serde(default)]
    pub auto_approve: bool,
}

impl RegistrationRule {
    /// Why the rule does not allow `r`, naming the field; `None`: it does.
    fn refuses(&self, r: &NodeRegistration) -> Option<FieldProblem> {
        if !self.nodes.covers(&r.node) {
            return Some(field(
                "node",
                format!(
                    "'{}' is not among the names the registration rule allows",
                    r.node
                ),
            ));
        }
        if !self.pools.contains(&r.pool) {
            return Some(field(
                "pool",
                format!("the registration rule allows pools {:?} only", self.pools),
            ));
        }
        if !self.zones.is_empty() && !self.zones.contains(&r.zone) {
            return Some(field(
                "zone",
                format!("the registration rule allows zones {:?} only", self.zones),
            ));
        }
        None
    }
}

/// A node its agent asked to bring: its name, its place and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// Its name.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// Its availability zone.
    pub zone: String,
    /// Its network nodes, top first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
    /// Its NVLink domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

fn field(field: &str, reason: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ControlPlane {
    /// Turns an admin's rule into its event, checking it; changes nothing. `None` stops
    /// registrations (and drops those waiting).
    pub fn registration_rule_event(
        &self,
        spec: Option<&RegistrationRuleSpec>,
        at: u64,
    ) -> Result<Event, FieldProblem> {
        let Some(spec) = spec else {
            return Ok(Event::RegistrationRule { rule: None, at });
        };
        let nodes =
            NodeScope::parse(&spec.nodes).map_err(|e| field("rule.nodes", e.to_string()))?;
        let fleet = self.sched.engine().fleet();
        if spec.pools.is_empty() {
            return Err(field("rule.pools", "name at least one pool of the cell"));
        }
        for (i, p) in spec.pools.iter().enumerate() {
            if !fleet.pools().iter().any(|f| f.name == *p) {
                return Err(field(
                    &format!("rule.pools[{i}]"),
                    format!("no pool '{p}' in the cell (apply a fleet file that declares it)"),
                ));
            }
        }
        for (i, z) in spec.zones.iter().enumerate() {
            model::fleet::check_name("zone", z)
                .map_err(|e| field(&format!("rule.zones[{i}]"), e.to_string()))?;
        }
        Ok(Event::RegistrationRule {
            rule: Some(RegistrationRule {
                nodes,
                pools: spec.pools.clone(),
                zones: spec.zones.clone(),
                auto_approve: spec.auto_approve,
            }),
            at,
        })
    }

    /// Turns an agent's registration into its event, checked against the rule, the pool's
    /// instance type and the fleet; changes nothing. Registering a node again as it waits is
    /// not news (`Ok(None)`).
    pub fn register_event(
        &self,
        req: &RegisterNode,
        at: u64,
    ) -> Result<Option<Event>, FieldProblem> {
        let Some(rule) = &self.registration_rule else {
            return Err(field(
                "node",
                "this cell takes no registrations: an admin allows them with `stargrid fleet allow`",
            ));
        };
        let fleet = self.sched.engine().fleet();
        for (name, value) in [("node", &req.node), ("zone", &req.zone)] {
            model::fleet::check_name(name, value).map_err(|e| field(name, e.to_string()))?;
        }
        for (i, n) in req.network.iter().enumerate() {
            model::fleet::check_name("network node", n)
                .map_err(|e| field(&format!("network[{i}]"), e.to_string()))?;
        }
        if req.network.len() > 8 {
            return Err(field("network", "at most 8 network levels"));
        }
        if let Some(d) = &req.domain {
            model::fleet::check_name("domain", d).map_err(|e| field("domain", e.to_string()))?;
        }
        let registration = NodeRegistration {
            node: req.node.clone(),
            pool: req.pool.clone(),
            zone: req.zone.clone(),
            network: req.network.clone(),
            domain: req.domain.clone(),
        };
        if let Some(problem) = rule.refuses(&registration) {
            return Err(problem);
        }
        if fleet.node_by_name(&req.node).is_some() {
            return Err(field(
                "node",
                format!("'{}' is in the fleet already", req.node),
            ));
        }
        let pool = fleet
            .pools()
            .iter()
            .position(|p| p.name == req.pool)
            .ok_or_else(|| field("pool", format!("no pool '{}' in the cell", req.pool)))?;
        let capacity = self
            .pool_capacity(model::PoolId(pool as u32))
            .ok_or_else(|| {
                field(
                    "pool",
                    format!(
                        "pool '{}' has an instance type this cell does not know",
                        req.pool
                    ),
                )
            })?;
        let want = u32::from(capacity.gpus);
        if req.inventory.gpus != want {
            return Err(field(
                "inventory.gpus",
                format!(
                    "pool '{}' has {want} GPUs a node; the agent found {} ({})",
                    req.pool, req.inventory.gpus, req.inventory.source
                ),
            ));
        }
        if let (Some(found), Some(model)) = (&req.inventory.gpu_model, capacity.gpu_model) {
            if !found.eq_ignore_ascii_case(model.name()) {
                return Err(field(
                    "inventory.gpu_model",
                    format!(
                        "pool '{}' has {} GPUs; the agent found {found}",
                        req.pool,
                        model.name()
                    ),
                ));
            }
        }
        if req.domain.is_some() && want == 0 {
            return Err(field(
                "domain",
                "a node without GPUs is in no NVLink domain",
            ));
        }
        match self.registrations.get(&req.node) {
            Some(waiting) if *waiting == registration => return Ok(None),
            Some(_) => {
                return Err(field(
                    "node",
                    format!(
                        "'{}' waits for approval with another place or pool",
                        req.node
                    ),
                ))
            }
            None => {}
        }
        // A registered node brings a new NVLink domain (or none): trays join an existing one
        // through a fleet file. Nodes waiting for the same new domain must be alike, so that
        // a batch of approvals never fails on them.
        if let Some(d) = &req.domain {
            let p = fleet.pool(model::PoolId(pool as u32));
            let mut path = vec![p.cloud.as_str(), p.region.as_str(), req.zone.as_str()];
            path.extend(req.network.iter().map(String::as_str));
            path.push(d);
            if fleet.find_topo(&path.join("/")).is_some() {
                return Err(field(
                    "domain",
                    format!(
                        "{} is in the fleet already: a registered node brings a new domain",
                        path.join("/")
                    ),
                ));
            }
            let unlike = self.registrations.values().any(|w| {
                w.domain.as_deref() == Some(d.as_str())
                    && (w.zone != req.zone || w.network != req.network || {
                        let theirs = fleet.pools().iter().position(|p| p.name == w.pool);
                        theirs.and_then(|i| self.pool_capacity(model::PoolId(i as u32)))
                            != Some(capacity)
                    })
            });
            if unlike {
                return Err(field(
                    "domain",
                    format!("nodes waiting for domain '{d}' are of another kind or place"),
                ));
            }
        }
        Ok(Some(Event::NodeRegistered { registration, at }))
    }

    /// What one node of pool `pool` holds: that of a node of it in the fleet, else its
    /// instance type's in the built-in table.
    fn pool_capacity(&self, pool: model::PoolId) -> Option<model::Resources> {
        let fleet = self.sched.engine().fleet();
        if let Some(n) = fleet.nodes().iter().find(|n| n.pool == pool) {
            return Some(n.capacity);
        }
        InstanceCatalog::builtin()
            .get(&fleet.pool(pool).instance_type)
            .map(|t| t.resources())
    }

    /// Registrations waiting for approval, as a host list; `None` when none wait.
    pub fn registrations_waiting(&self) -> Option<String> {
        let names: Vec<&str> = self.registrations.keys().map(String::as_str).collect();
        (!names.is_empty()).then(|| model::hostlist::compress(&names))
    }

    /// Whether the rule approves registrations at once.
    pub fn registrations_auto_approved(&self) -> bool {
        self.registration_rule
            .as_ref()
            .is_some_and(|r| r.auto_approve)
    }

    /// The rule and the registrations waiting (for `GET /v1/fleet/registrations`).
    pub fn registration_view(&self) -> crate::api::RegistrationsView {
        crate::api::RegistrationsView {
            rule: self
                .registration_rule
                .as_ref()
                .map(|r| RegistrationRuleSpec {
                    nodes: r.nodes.expr().to_string(),
                    pools: r.pools.clone(),
                    zones: r.zones.clone(),
                    auto_approve: r.auto_approve,
                }),
            waiting: self
                .registrations
                .values()
                .map(|r| crate::api::WaitingNode {
                    node: r.node.clone(),
                    pool: r.pool.clone(),
                    zone: r.zone.clone(),
                    network: r.network.clone(),
                    domain: r.domain.clone(),
                })
                .collect(),
        }
    }

    /// Applies a rule: the registrations waiting that it does not allow are dropped (all of
    /// them for `None`, which stops registrations).
    pub(super) fn set_registration_rule(&mut self, rule: Option<RegistrationRule>) {
        match &rule {
            None => self.registrations.clear(),
            Some(r) => self.registrations.retain(|_, w| r.refuses(w).is_none()),
        }
        self.registration_rule = rule;
    }

    /// Drops waiting registrations (`nodes`, a host list of them).
    pub(super) fn reject_registrations(&mut self, nodes: &str) -> Result<(), StateError> {
        let names = model::hostlist::expand_at_most(nodes, self.registrations.len().max(1))
            .map_err(|e| StateError::Conflict(format!("nodes '{nodes}': {e}")))?;
        if let Some(name) = names.iter().find(|n| !self.registrations.contains_key(*n)) {
            return Err(StateError::NotFound(format!(
                "no registration of '{name}' waits"
            )));
        }
        for name in &names {
            self.registrations.remove(name);
        }
        Ok(())
    }

    /// Keeps a registration until it is approved.
    pub(super) fn add_registration(&mut self, r: &NodeRegistration) -> Result<(), StateError> {
        if self.registration_rule.is_none() {
            return Err(StateError::Conflict(
                "the cell takes no registrations".into(),
            ));
        }
        if self.sched.engine().fleet().node_by_name(&r.node).is_some() {
            return Err(StateError::Conflict(format!(
                "'{}' is in the fleet already",
                r.node
            )));
        }
        self.registrations.insert(r.node.clone(), r.clone());
        Ok(())
    }

    /// The plan for registrations `nodes` (a host list of waiting ones) to join.
    pub(super) fn plan_approval(&self, nodes: &str) -> Result<FleetPlan, StateError> {
        let names = model::hostlist::expand_at_most(nodes, self.registrations.len().max(1))
            .map_err(|e| StateError::Conflict(format!("nodes '{nodes}': {e}")))?;
        let mut groups = Vec::with_capacity(names.len());
        for name in &names {
            let r = self.registrations.get(name).ok_or_else(|| {
                StateError::NotFound(format!("no registration of '{name}' waits"))
            })?;
            groups.push(fleet::file::Group {
                pool: r.pool.clone(),
                zone: r.zone.clone(),
                network: r.network.clone(),
                domain: r.domain.clone(),
                nodes: r.node.clone(),
                state: NodeState::Ready,
            });
        }
        self.plan_additions(groups)
    }

    /// Drops the registrations of nodes that joined.
    pub(super) fn registrations_joined(&mut self) {
        let fleet = self.sched.engine().fleet();
        self.registrations
            .retain(|name, _| fleet.node_by_name(name).is_none());
    }
}
