//! Spend accrual: what the capacity the queue hands out costs, to whom, over time.
//!
//! The ledger counts *units* (thousandths of a GPU on GPU nodes, so that a share of a device
//! pays its share; CPU millicores on CPU hosts) held per capacity pool and owner, and integrates them over time in integer unit-seconds, so that the
//! accounting is exact however often work starts and stops; money appears only when a report
//! multiplies unit-seconds by a pool's price. Committed capacity is paid for whether used or
//! not: its spend is the delivered capacity's unit-seconds, of which what no workload held is
//! *idle committed capacity*. On-demand and spot capacity is paid for the share of a node the
//! work holds (the instances are taken to be launched for the work).

use crate::engine::{Allocation, Engine, Time};
use model::commitment::{date_of, BurnDown, Commitment, YearStatus};
use model::{Fleet, NodeId, PoolId, PricingKind, TenantId, WorkloadId};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

mod state;
pub use state::{AccountState, HeldState, LedgerState, MeterState};

/// What kind of work spent the money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpendClass {
    /// Training jobs and other gangs.
    Training,
    /// Inference service replicas.
    Inference,
    /// Agent sandboxes.
    Sandboxes,
}

impl SpendClass {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            SpendClass::Training => "training",
            SpendClass::Inference => "inference",
            SpendClass::Sandboxes => "sandboxes",
        }
    }
}

/// Who holds capacity: a tenant (none for a sandbox batch placed without one) and the class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// The tenant.
    pub tenant: Option<TenantId>,
    /// The kind of work.
    pub class: SpendClass,
}

/// Units held over time: the integral of `units` in unit-seconds, in total and per period.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meter {
    units: u64,
    since: Time,
    total: u128,
    /// Unit-seconds per period from the ledger's start (dense).
    by_period: Vec<u128>,
}

impl Meter {
    /// Integrates the current units up to `now`, split at period boundaries (periods count
    /// from `origin`).
    fn advance(&mut self, now: Time, origin: Time, period: u64) {
        if now <= self.since {
            return;
        }
        if self.units > 0 {
            let mut t = self.since.max(origin);
            while t < now {
                let p = (t - origin) / period;
                let until = (origin + (p + 1) * period).min(now);
                let add = u128::from(self.units) * u128::from(until - t);
                let p = p as usize;
                if self.by_period.len() <= p {
                    self.by_period.resize(p + 1, 0);
                }
                self.by_period[p] += add;
                self.total += add;
                t = until;
            }
        }
        self.since = now;
    }

    fn set(&mut self, units: u64, now: Time, origin: Time, period: u64) {
        self.advance(now, origin, period);
        self.units = units;
    }

    /// A copy advanced to `now` (reports do not change the ledger).
    fn at(&self, now: Time, origin: Time, period: u64) -> Meter {
        let mut m = self.clone();
        m.advance(now, origin, period);
        m
    }
}

/// A pool's price and what one of its nodes holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PoolCost {
    pricing: PricingKind,
    price_per_hour: f64,
    /// Units in one node (thousandths of a GPU, or millicores on a CPU host).
    units_per_node: u64,
    /// Delivered units (committed pools are paid for these).
    capacity: Meter,
}

/// The spend ledger of one queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ledger {
    /// Length of a report period, seconds.
    period: u64,
    /// When accounting began (the first time the ledger was told): committed capacity is
    /// paid for from then, and periods count from then.
    origin: Option<Time>,
    pools: Vec<PoolCost>,
    /// Meters per (pool, owner).
    accounts: Vec<(PoolId, Owner, Meter)>,
    /// Where each account is in `accounts` (rebuilt after loading a snapshot).
    #[serde(skip)]
    index: FxHashMap<(PoolId, Owner), u32>,
    /// What each live workload holds, per pool.
    held: FxHashMap<WorkloadId, (Owner, Vec<(PoolId, u64)>)>,
    /// Nodes not yet delivered (not paid for).
    undelivered: FxHashSet<NodeId>,
}

/// One line of a spend report: a pool and an owner, or a pool's idle committed capacity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpendLine {
    /// Provider.
    pub provider: String,
    /// Region.
    pub region: String,
    /// Pool name.
    pub pool: String,
    /// How the pool is paid for.
    pub pricing: PricingKind,
    /// Tenant name; `None` for idle capacity and sandbox batches without a tenant.
    pub tenant: Option<String>,
    /// Kind of work; `None`: committed capacity no work held.
    pub class: Option<SpendClass>,
    /// Node-hours held (or idle).
    pub node_hours: f64,
    /// USD.
    pub usd: f64,
    /// USD per period from the start.
    pub usd_by_period: Vec<f64>,
}

/// Spend up to a time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpendReport {
    /// When the books opened (period 0 starts here).
    pub origin: Time,
    /// The time the report runs to.
    pub at: Time,
    /// Length of a period, seconds.
    pub period_s: u64,
    /// Lines with any spend.
    pub lines: Vec<SpendLine>,
}

impl SpendReport {
    /// Everything spent.
    pub fn total_usd(&self) -> f64 {
        self.lines.iter().map(|l| l.usd).sum()
    }

    /// Committed capacity paid for and not used.
    pub fn idle_committed_usd(&self) -> f64 {
        self.lines
            .iter()
            .filter(|l| l.class.is_none())
            .map(|l| l.usd)
            .sum()
    }

    /// Totals (and per-period sums) under a key of each line, sorted by the key.
    pub fn by<K: Ord>(&self, key: impl Fn(&SpendLine) -> K) -> Vec<(K, f64, Vec<f64>)> {
        let mut map: std::collections::BTreeMap<K, (f64, Vec<f64>)> = Default::default();
        for l in &self.lines {
            let e = map.entry(key(l)).or_default();
            e.0 += l.usd;
            if e.1.len() < l.usd_by_period.len() {
                e.1.resize(l.usd_by_period.len(), 0.0);
            }
            for (a, b) in e.1.iter_mut().zip(&l.usd_by_period) {
                *a += b;
            }
        }
        map.into_iter().map(|(k, (t, p))| (k, t, p)).collect()
    }
}

impl Ledger {
    /// Report periods of a day.
    pub const DAY: u64 = 86_400;

    /// A ledger for `fleet`'s pools at their current prices, all capacity delivered; the books
    /// open at the first time the ledger is told.
    pub fn new(fleet: &Fleet, period: u64) -> Ledger {
        let mut pools: Vec<PoolCost> = fleet
            .pools()
            .iter()
            .map(|p| PoolCost {
                pricing: p.pricing,
                price_per_hour: p.price_per_hour,
                units_per_node: 0,
                capacity: Meter::default(),
            })
            .collect();
        for n in fleet.nodes() {
            let p = &mut pools[n.pool.0 as usize];
            let units = node_units(n.capacity.gpus, n.capacity.cpu_millis);
            p.units_per_node = p.units_per_node.max(units);
            p.capacity.units += units;
        }
        Ledger {
            period: period.max(1),
            origin: None,
            pools,
            accounts: Vec::new(),
            index: FxHashMap::default(),
            held: FxHashMap::default(),
            undelivered: FxHashSet::default(),
        }
    }

    fn rebuild_index(&mut self) {
        if self.index.len() != self.accounts.len() {
            self.index = self
                .accounts
                .iter()
                .enumerate()
                .map(|(i, (p, o, _))| ((*p, *o), i as u32))
                .collect();
        }
    }

    fn account(&mut self, pool: PoolId, owner: Owner) -> &mut Meter {
        self.rebuild_index();
        let next = self.accounts.len() as u32;
        let i = *self.index.entry((pool, owner)).or_insert(next);
        if i == next {
            self.accounts.push((pool, owner, Meter::default()));
        }
        &mut self.accounts[i as usize].2
    }

    /// Starts the books at `at` unless they are open: committed capacity is paid for from
    /// the first time the ledger is told anything.
    pub fn open(&mut self, at: Time) -> Time {
        if let Some(o) = self.origin {
            return o;
        }
        self.origin = Some(at);
        for p in &mut self.pools {
            p.capacity.since = at;
        }
        at
    }

    fn add(&mut self, pool: PoolId, owner: Owner, delta: i128, now: Time) {
        let origin = self.open(now);
        let period = self.period;
        let m = self.account(pool, owner);
        let units = (i128::from(m.units) + delta).max(0) as u64;
        m.set(units, now, origin, period);
    }

    /// Sets what workload `id` holds (units per pool) from `now`, replacing what it held.
    pub fn hold(&mut self, id: WorkloadId, owner: Owner, units: Vec<(PoolId, u64)>, now: Time) {
        self.release(id, now);
        for (p, u) in &units {
            self.add(*p, owner, i128::from(*u), now);
        }
        if !units.is_empty() {
            self.held.insert(id, (owner, units));
        }
    }

    /// Workload `id` gives `units` of `pool` back at `now` (a part of a sandbox batch ended).
    pub fn give_back(&mut self, id: WorkloadId, pool: PoolId, units: u64, now: Time) {
        let Some((owner, held)) = self.held.get_mut(&id) else {
            return;
        };
        let owner = *owner;
        if let Some(e) = held.iter_mut().find(|e| e.0 == pool) {
            let u = units.min(e.1);
            e.1 -= u;
            held.retain(|e| e.1 > 0);
            if held.is_empty() {
                self.held.remove(&id);
            }
            self.add(pool, owner, -i128::from(u), now);
        }
    }

    /// Workload `id` holds nothing from `now`.
    pub fn release(&mut self, id: WorkloadId, now: Time) {
        if let Some((owner, old)) = self.held.remove(&id) {
            for (p, u) in old {
                self.add(p, owner, -i128::from(u), now);
            }
        }
    }

    /// Marks a node delivered (paid for, when its pool is committed) or not from `now`.
    pub fn set_delivered(&mut self, fleet: &Fleet, node: NodeId, delivered: bool, now: Time) {
        let changed = if delivered {
            self.undelivered.remove(&node)
        } else {
            self.undelivered.insert(node)
        };
        if !changed {
            return;
        }
        let origin = self.open(now);
        let n = fleet.node(node);
        let units = node_units(n.capacity.gpus, n.capacity.cpu_millis);
        let period = self.period;
        let cap = &mut self.pools[n.pool.0 as usize].capacity;
        let next = if delivered {
            cap.units + units
        } else {
            cap.units.saturating_sub(units)
        };
        cap.set(next, now, origin, period);
    }

    /// Brings each pool's delivered capacity to what `fleet` holds from `now` (after the fleet
    /// changed: nodes joined or left; what was delivered before stays as it was).
    pub fn refit(&mut self, fleet: &Fleet, now: Time) {
        let origin = self.open(now);
        let mut units = vec![0u64; self.pools.len()];
        for (i, n) in fleet.nodes().iter().enumerate() {
            let u = node_units(n.capacity.gpus, n.capacity.cpu_millis);
            let pool = &mut self.pools[n.pool.0 as usize];
            pool.units_per_node = pool.units_per_node.max(u);
            if !self.undelivered.contains(&NodeId(i as u32)) {
                units[n.pool.0 as usize] += u;
            }
        }
        let period = self.period;
        for (pool, u) in self.pools.iter_mut().zip(units) {
            if pool.capacity.units != u {
                pool.capacity.set(u, now, origin, period);
            }
        }
    }

    /// What each live workload holds, per pool (for invariant checks and views).
    pub fn held(&self, id: WorkloadId) -> Option<&(Owner, Vec<(PoolId, u64)>)> {
        self.held.get(&id)
    }

    /// Spend from the start to `now`; `tenant_name` names tenants.
    pub fn report(
        &self,
        fleet: &Fleet,
        now: Time,
        tenant_name: &dyn Fn(TenantId) -> String,
    ) -> SpendReport {
        let period = self.period;
        // Books never opened: nothing was spent.
        let origin = self.origin.unwrap_or(now);
        let now = now.max(origin);
        let periods = ((now - origin).saturating_sub(1) / period + 1) as usize;
        let money = |pool: &PoolCost, unit_seconds: u128| -> f64 {
            if pool.units_per_node == 0 {
                return 0.0;
            }
            unit_seconds as f64 * pool.price_per_hour / pool.units_per_node as f64 / 3600.0
        };
        let node_hours = |pool: &PoolCost, unit_seconds: u128| -> f64 {
            if pool.units_per_node == 0 {
                return 0.0;
            }
            unit_seconds as f64 / pool.units_per_node as f64 / 3600.0
        };
        let line = |pid: PoolId, tenant: Option<String>, class, m: &Meter| {
            let pool = &self.pools[pid.0 as usize];
            let meta = fleet.pool(pid);
            let mut by: Vec<f64> = m.by_period.iter().map(|u| money(pool, *u)).collect();
            by.resize(periods.max(by.len()), 0.0);
            SpendLine {
                provider: meta.cloud.clone(),
                region: meta.region.clone(),
                pool: meta.name.clone(),
                pricing: pool.pricing,
                tenant,
                class,
                node_hours: node_hours(pool, m.total),
                usd: money(pool, m.total),
                usd_by_period: by,
            }
        };
        let mut lines = Vec::new();
        let mut used: Vec<Meter> = vec![Meter::default(); self.pools.len()];
        let mut order: Vec<&(PoolId, Owner, Meter)> = self.accounts.iter().collect();
        order.sort_by_key(|(p, o, _)| (*p, *o));
        for (pid, owner, m) in order {
            let m = m.at(now, origin, period);
            let u = &mut used[pid.0 as usize];
            u.total += m.total;
            if u.by_period.len() < m.by_period.len() {
                u.by_period.resize(m.by_period.len(), 0);
            }
            for (a, b) in u.by_period.iter_mut().zip(&m.by_period) {
                *a += b;
            }
            if m.total > 0 {
                lines.push(line(
                    *pid,
                    owner.tenant.map(tenant_name),
                    Some(owner.class),
                    &m,
                ));
            }
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if pool.pricing != PricingKind::Committed {
                continue;
            }
            if self.origin.is_none() {
                continue;
            }
            let cap = pool.capacity.at(now, origin, period);
            let u = &used[i];
            let idle = Meter {
                units: 0,
                since: now,
                total: cap.total.saturating_sub(u.total),
                by_period: cap
                    .by_period
                    .iter()
                    .enumerate()
                    .map(|(k, c)| c.saturating_sub(u.by_period.get(k).copied().unwrap_or(0)))
                    .collect(),
            };
            if idle.total > 0 {
                lines.push(line(PoolId(i as u32), None, None, &idle));
            }
        }
        SpendReport {
            origin,
            at: now,
            period_s: period,
            lines,
        }
    }

    /// Checks that every workload holds in the ledger exactly what the engine gives it, and
    /// that the pools' meters add up to what the workloads hold.
    pub fn check(&self, engine: &Engine) -> Result<(), String> {
        let fleet = engine.fleet();
        let mut per_pool: FxHashMap<PoolId, u64> = FxHashMap::default();
        for (id, (_, units)) in &self.held {
            let want = allocation_units(fleet, engine.allocation(*id));
            let mut have = units.clone();
            have.sort_unstable();
            if have != want {
                return Err(format!(
                    "ledger: {id} is charged {have:?}, the engine gives it {want:?}"
                ));
            }
            for (p, u) in units {
                *per_pool.entry(*p).or_default() += u;
            }
        }
        for (pool, _, m) in &self.accounts {
            let left = per_pool.entry(*pool).or_default();
            *left = left.checked_sub(m.units).ok_or_else(|| {
                format!(
                    "ledger: pool {} meters more units than workloads hold",
                    pool.0
                )
            })?;
        }
        if let Some((p, u)) = per_pool.iter().find(|(_, u)| **u > 0) {
            return Err(format!(
                "ledger: pool {} has {u} units held but not metered",
                p.0
            ));
        }
        Ok(())
    }
}

/// Spend under one name (a provider, a region, ...), in total and per day of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpendRow {
    /// The provider, region, tenant, class or kind of capacity.
    pub name: String,
    /// USD over the run.
    pub usd: f64,
    /// USD per day of the run.
    pub usd_by_day: Vec<f64>,
}

/// A commitment at the end of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitmentStatus {
    /// Provider.
    pub provider: String,
    /// The committed amount.
    pub total_usd: f64,
    /// Term, as dates.
    pub start: String,
    /// End of the term (exclusive).
    pub end: String,
    /// The date the status is for (the run's end).
    pub at: String,
    /// Spent, due by the lines, forecast, shortfall or overrun.
    pub burn_down: BurnDown,
    /// Each contract year against its minimum.
    pub years: Vec<YearStatus>,
    /// At the end of each day from time 0: the spend so far over what the straight line asks
    /// by then (1 = on the line; days before the term are left out).
    pub pace_by_day: Vec<f64>,
}

/// The money side of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// Date of the run's time 0.
    pub start_date: String,
    /// Everything spent.
    pub total_usd: f64,
    /// Committed capacity paid for while no work held it.
    pub idle_committed_usd: f64,
    /// Per provider.
    pub by_provider: Vec<SpendRow>,
    /// Per provider/region.
    pub by_region: Vec<SpendRow>,
    /// Per tenant (`-` for idle capacity and sandbox batches without a tenant).
    pub by_tenant: Vec<SpendRow>,
    /// Per kind of work (`idle` for committed capacity nobody held).
    pub by_class: Vec<SpendRow>,
    /// Per kind of capacity (committed, on-demand, spot).
    pub by_pricing: Vec<SpendRow>,
    /// Idle committed capacity per provider.
    pub idle_by_provider: Vec<SpendRow>,
    /// Commitments at the end of the run.
    pub commitments: Vec<CommitmentStatus>,
}

fn rows(report: &SpendReport, key: impl Fn(&SpendLine) -> String) -> Vec<SpendRow> {
    report
        .by(key)
        .into_iter()
        .map(|(name, usd, usd_by_day)| SpendRow {
            name,
            usd,
            usd_by_day,
        })
        .collect()
}

/// Summarises a spend report whose time 0 is Unix second `epoch` (a simulated run's start, or
/// a live plane's first record). Spend before time 0 is taken to be nothing.
pub fn summarise(report: &SpendReport, commitments: &[Commitment], epoch: u64) -> CostSummary {
    let by_provider = rows(report, |l| l.provider.clone());
    let day = report.period_s;
    let at = epoch + report.at;
    let first = epoch + report.origin;
    let commitments = commitments
        .iter()
        .map(|c| {
            let row = by_provider.iter().find(|r| r.name == c.provider);
            let spent = row.map_or(0.0, |r| r.usd);
            // Each day's spend goes to the contract year its start falls in.
            let years = c.years();
            let mut by_year = vec![0.0; years.len()];
            for (d, usd) in row.map_or(&[][..], |r| &r.usd_by_day).iter().enumerate() {
                let t = first + d as u64 * day;
                if let Some(y) = years.iter().position(|(s, e)| *s <= t && t < *e) {
                    by_year[y] += usd;
                }
            }
            let mut pace_by_day = Vec::new();
            let mut cumulative = 0.0;
            for (d, usd) in row.map_or(&[][..], |r| &r.usd_by_day).iter().enumerate() {
                cumulative += usd;
                // The last day may be a part of one.
                let end = (first + (d as u64 + 1) * day).min(at);
                let due = c.burn_down(0.0, end).straight_line_usd;
                if due > 0.0 {
                    pace_by_day.push(cumulative / due);
                }
            }
            CommitmentStatus {
                pace_by_day,
                provider: c.provider.clone(),
                total_usd: c.total_usd,
                start: date_of(c.start),
                end: date_of(c.end),
                at: date_of(at),
                burn_down: c.burn_down(spent, at),
                years: c.yearly(&by_year, at),
            }
        })
        .collect();
    CostSummary {
        start_date: date_of(first),
        total_usd: report.total_usd(),
        idle_committed_usd: report.idle_committed_usd(),
        by_region: rows(report, |l| format!("{}/{}", l.provider, l.region)),
        by_tenant: rows(report, |l| l.tenant.clone().unwrap_or_else(|| "-".into())),
        by_class: rows(report, |l| {
            l.class.map_or("idle".into(), |c| c.name().to_string())
        }),
        by_pricing: rows(report, |l| l.pricing.to_string()),
        idle_by_provider: by_provider
            .iter()
            .map(|r| {
                let idle: Vec<&SpendLine> = report
                    .lines
                    .iter()
                    .filter(|l| l.class.is_none() && l.provider == r.name)
                    .collect();
                let mut by_day = vec![0.0; r.usd_by_day.len()];
                for l in &idle {
                    for (a, b) in by_day.iter_mut().zip(l.usd_by_period.iter()) {
                        *a += b;
                    }
                }
                SpendRow {
                    name: r.name.clone(),
                    usd: idle.iter().map(|l| l.usd).sum(),
                    usd_by_day: by_day,
                }
            })
            .collect(),
        by_provider,
        commitments,
    }
}

/// Ledger units in one GPU: GPU pools are metered in thousandths of a device.
pub const UNITS_PER_GPU: u64 = 1000;

/// Units a node of this shape counts: its GPUs in thousandths, or its millicores when it has
/// no GPU.
pub fn node_units(gpus: u8, cpu_millis: u32) -> u64 {
    if gpus > 0 {
        u64::from(gpus) * UNITS_PER_GPU
    } else {
        u64::from(cpu_millis)
    }
}

/// Units that work holding `gpu_milli` thousandths of a GPU and `cpu_millis` on `node`
/// counts, in the node's units: on a GPU node its GPUs (a GPU host's price is its devices';
/// CPU work there uses CPU the devices' work left, and counts nothing, so that what a host's
/// work is charged never passes what the host costs); on a CPU host its millicores.
pub fn held_units(node: &model::Node, gpu_milli: u64, cpu_millis: u64) -> u64 {
    let whole = node_units(node.capacity.gpus, node.capacity.cpu_millis);
    if node.capacity.gpus == 0 {
        cpu_millis.min(whole)
    } else {
        gpu_milli.min(whole)
    }
}

/// Units an allocation holds per pool, sorted by pool (gangs: their slots and spares;
/// sandboxes: the live ones).
pub fn allocation_units(fleet: &Fleet, alloc: Option<&Allocation>) -> Vec<(PoolId, u64)> {
    let mut map: FxHashMap<PoolId, u64> = FxHashMap::default();
    match alloc {
        Some(Allocation::Gang {
            request,
            slots,
            spares,
            per_node,
            ..
        }) => {
            for s in slots.iter().chain(spares) {
                let node = fleet.node(s.node);
                let gpu_milli = model::workload::gpu_thousandths(
                    u64::from(s.gpu_mask.count_ones()),
                    request.gpu_milli,
                );
                *map.entry(node.pool).or_default() +=
                    held_units(node, gpu_milli, u64::from(per_node.cpu_millis));
            }
        }
        Some(Allocation::Sandboxes {
            request,
            runs,
            live,
            ..
        }) => {
            for r in runs {
                let n = (r.first..r.first + r.count)
                    .filter(|i| live[*i as usize / 64] >> (i % 64) & 1 == 1)
                    .count() as u64;
                if n > 0 {
                    let node = fleet.node(r.node);
                    *map.entry(node.pool).or_default() +=
                        held_units(node, 0, n * u64::from(request.cpu_millis));
                }
            }
        }
        None => {}
    }
    let mut v: Vec<(PoolId, u64)> = map.into_iter().filter(|e| e.1 > 0).collect();
    v.sort_unstable();
    v
}
