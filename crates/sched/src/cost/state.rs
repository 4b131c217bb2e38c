//! The ledger's state as plain data, for snapshots in a format of their own: every meter, what
//! each live workload holds, the nodes not delivered yet.

use super::*;

/// Units held over time, as plain data (a persisted snapshot's view of a meter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterState {
    /// Units held now.
    pub units: u64,
    /// Integrated up to this time.
    pub since: Time,
    /// Unit-seconds in total.
    pub total: u128,
    /// Unit-seconds per period from the ledger's start.
    pub by_period: Vec<u128>,
}

/// One account: a pool, an owner and its meter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The pool.
    pub pool: PoolId,
    /// Who holds the capacity.
    pub owner: Owner,
    /// Units held over time.
    pub meter: MeterState,
}

/// What one live workload holds: its owner and units per pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldState {
    /// The workload.
    pub workload: WorkloadId,
    /// Who it charges.
    pub owner: Owner,
    /// Units per pool.
    pub units: Vec<(PoolId, u64)>,
}

/// The ledger's whole state as plain data, for snapshots in a format of their own: every
/// meter, what each live workload holds, the nodes not delivered yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Length of a report period, seconds.
    pub period: u64,
    /// When the books opened.
    pub origin: Option<Time>,
    /// Each pool's delivered capacity over time, by pool index.
    pub capacity: Vec<MeterState>,
    /// Every account.
    pub accounts: Vec<AccountState>,
    /// What each live workload holds, by workload id.
    pub held: Vec<HeldState>,
    /// Nodes not delivered yet.
    pub undelivered: Vec<NodeId>,
    /// Units in one node of each pool, by pool index (a pool whose nodes all left the fleet
    /// keeps its price per unit); empty: from the fleet's nodes.
    #[serde(default)]
    pub units_per_node: Vec<u64>,
}

impl From<&Meter> for MeterState {
    fn from(m: &Meter) -> MeterState {
        MeterState {
            units: m.units,
            since: m.since,
            total: m.total,
            by_period: m.by_period.clone(),
        }
    }
}

impl From<&MeterState> for Meter {
    fn from(m: &MeterState) -> Meter {
        Meter {
            units: m.units,
            since: m.since,
            total: m.total,
            by_period: m.by_period.clone(),
        }
    }
}

impl Ledger {
    /// The whole state as plain data.
    pub fn state(&self) -> LedgerState {
        let mut held: Vec<HeldState> = self
            .held
            .iter()
            .map(|(w, (owner, units))| HeldState {
                workload: *w,
                owner: *owner,
                units: units.clone(),
            })
            .collect();
        held.sort_by_key(|h| h.workload);
        let mut undelivered: Vec<NodeId> = self.undelivered.iter().copied().collect();
        undelivered.sort_unstable();
        LedgerState {
            period: self.period,
            origin: self.origin,
            capacity: self.pools.iter().map(|p| (&p.capacity).into()).collect(),
            accounts: self
                .accounts
                .iter()
                .map(|(pool, owner, m)| AccountState {
                    pool: *pool,
                    owner: *owner,
                    meter: m.into(),
                })
                .collect(),
            held,
            undelivered,
            units_per_node: self.pools.iter().map(|p| p.units_per_node).collect(),
        }
    }

    /// Takes over a state (from a snapshot) over this ledger's pools and prices; refused when
    /// it names pools or nodes this fleet does not have.
    pub fn set_state(&mut self, fleet: &Fleet, s: &LedgerState) -> Result<(), String> {
        if s.capacity.len() != self.pools.len() {
            return Err(format!(
                "{} pools in the snapshot, {} in the fleet",
                s.capacity.len(),
                self.pools.len()
            ));
        }
        let pools = self.pools.len();
        if let Some(a) = s.accounts.iter().find(|a| a.pool.0 as usize >= pools) {
            return Err(format!(
                "an account of pool #{}, which the fleet lacks",
                a.pool.0
            ));
        }
        let nodes = fleet.nodes().len();
        if let Some(n) = s.undelivered.iter().find(|n| n.0 as usize >= nodes) {
            return Err(format!("node #{} is not in the fleet", n.0));
        }
        self.period = s.period.max(1);
        self.origin = s.origin;
        for (p, m) in self.pools.iter_mut().zip(&s.capacity) {
            p.capacity = m.into();
        }
        for (p, u) in self.pools.iter_mut().zip(&s.units_per_node) {
            p.units_per_node = p.units_per_node.max(*u);
        }
        self.accounts = s
            .accounts
            .iter()
            .map(|a| (a.pool, a.owner, (&a.meter).into()))
            .collect();
        self.index.clear();
        self.rebuild_index();
        self.held = s
            .held
            .iter()
            .map(|h| (h.workload, (h.owner, h.units.clone())))
            .collect();
        self.undelivered = s.undelivered.iter().copied().collect();
        Ok(())
    }
}
