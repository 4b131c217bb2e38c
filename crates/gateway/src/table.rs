//! The routing table: each service the gateway may reach, by tenant and name, with its ready
//! replicas. A new version from the server replaces the table, but a replica that stays keeps
//! its counters, and one that left keeps serving the requests it already has (they hold it)
//! while getting no new ones. Picking a replica: the one with the fewest requests in flight, or
//! with an affinity key the replica that key hashes to (rendezvous hashing, so a replica
//! leaving moves only its own keys) unless that one carries more than twice the least busy one's load (plus 4).
//! While a rolling update's canary holds, `canary_percent` of every hundred requests go to
//! its replicas and the rest to the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use wire::api::{GatewayRoutes, ServiceEndpoint};

use crate::stats::ServiceStats;

/// How long a replica whose connection failed is passed over (the server's routes take it out
/// for good once its agent reports it not ready).
const BENCHED_FOR_MS: u64 = 2_000;

/// One ready replica of a service.
#[derive(Debug)]
pub struct Replica {
    /// The replica's job id.
    pub id: u64,
    /// `address:port`.
    pub authority: String,
    /// It runs a rolling update's canary (see [`Service::canary_percent`]).
    pub canary: bool,
    /// Requests sent to it and not finished.
    pub inflight: AtomicU32,
    /// Until when it is passed over, in milliseconds since the table's epoch (0: not).
    benched_until_ms: AtomicU64,
}

impl Replica {
    fn new(e: &ServiceEndpoint) -> Replica {
        Replica {
            id: e.replica,
            authority: authority(&e.address, e.port),
            canary: e.canary,
            inflight: AtomicU32::new(0),
            benched_until_ms: AtomicU64::new(0),
        }
    }
}

/// `address:port`, with an IPv6 address in brackets.
fn authority(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// A service as the gateway routes to it.
#[derive(Debug)]
pub struct Service {
    /// The service's id.
    pub id: u64,
    /// Replicas wanted (0: scaled to zero).
    pub desired: u32,
    /// Its ready replicas.
    pub replicas: Vec<Arc<Replica>>,
    /// Its load through this gateway (kept across versions).
    pub stats: Arc<ServiceStats>,
    /// While a rolling update's canary holds: the share of requests, per cent, its canary
    /// replicas get (the others get the rest).
    pub canary_percent: Option<u32>,
    /// Requests picked for so far (the canary split is by count, not by chance).
    picked: AtomicU64,
}

/// The table, swapped whole on each new version.
#[derive(Debug, Default)]
pub struct Table {
    /// The routes' version.
    pub version: u64,
    /// By tenant, then name.
    by_name: HashMap<String, HashMap<String, Arc<Service>>>,
}

impl Table {
    /// Whether the server's routes arrived (a table from the server has a version of 1 or
    /// more).
    pub fn loaded(&self) -> bool {
        self.version > 0
    }

    /// The service `name` of `tenant`.
    pub fn service(&self, tenant: &str, name: &str) -> Option<&Arc<Service>> {
        self.by_name.get(tenant)?.get(name)
    }

    /// Every service, for load reports.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_name.values().flat_map(HashMap::values)
    }
}

/// The table shared by every connection, and its clock.
#[derive(Debug)]
pub struct Routes {
    table: RwLock<Arc<Table>>,
    epoch: Instant,
    /// Bumped on each new table: requests held for a replica wait on it.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            table: RwLock::default(),
            epoch: Instant::now(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Routes {
    /// The table now.
    pub fn now(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A receiver that sees each new table.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Replaces the table with the server's `routes`, keeping the replicas and counters that
    /// stay.
    pub fn update(&self, routes: &GatewayRoutes) {
        let old = self.now();
        let mut by_name: HashMap<String, HashMap<String, Arc<Service>>> = HashMap::new();
        for s in &routes.services {
            let before = old.service(&s.tenant, &s.name).filter(|b| b.id == s.id);
            let kept: HashMap<(u64, &str, bool), &Arc<Replica>> = before
                .map(|b| {
                    b.replicas
                        .iter()
                        .map(|r| ((r.id, r.authority.as_str(), r.canary), r))
                        .collect()
                })
                .unwrap_or_default();
            let replicas = s
                .endpoints
                .iter()
                .map(|e| {
                    let at = authority(&e.address, e.port);
                    match kept.get(&(e.replica, at.as_str(), e.canary)) {
                        Some(r) => Arc::clone(r),
                        None => Arc::new(Replica::new(e)),
                    }
                })
                .collect();
            let stats = before.map_or_else(Default::default, |b| b.stats.clone());
            by_name.entry(s.tenant.clone()).or_default().insert(
                s.name.clone(),
                Arc::new(Service {
                    id: s.id,
                    desired: s.desired,
                    replicas,
                    stats,
                    canary_percent: s.canary_percent,
                    picked: AtomicU64::new(0),
                }),
            );
        }
        let table = Arc::new(Table {
            version: routes.version,
            by_name,
        });
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(p) => *p.into_inner() = table,
        }
        self.changed.send_modify(|v| *v += 1);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Passes `replica` over for a while: a connection to it failed.
    pub fn bench(&self, replica: &Replica) {
        replica
            .benched_until_ms
            .store(self.now_ms() + BENCHED_FOR_MS, Ordering::Relaxed);
    }

    /// The replica of `service` a request goes to: not one of `tried`, not benched (unless
    /// all are), by affinity `key` when given and that replica is not overloaded, else the
    /// fewest in flight. `None`: no replica left to try.
    pub fn pick(&self, service: &Service, key: Option<u64>, tried: &[u64]) -> Option<Arc<Replica>> {
        let now = self.now_ms();
        let candidates: Vec<&Arc<Replica>> = service
            .replicas
            .iter()
            .filter(|r| !tried.contains(&r.id))
            .collect();
        let awake: Vec<&Arc<Replica>> = candidates
            .iter()
            .copied()
            .filter(|r| r.benched_until_ms.load(Ordering::Relaxed) <= now)
            .collect();
        let mut pool = if awake.is_empty() { candidates } else { awake };
        // A canary's share: every hundred requests, `percent` go to its replicas.
        if let Some(percent) = service.canary_percent {
            let to_canary =
                service.picked.fetch_add(1, Ordering::Relaxed) % 100 < u64::from(percent);
            let side: Vec<&Arc<Replica>> = pool
                .iter()
                .copied()
                .filter(|r| r.canary == to_canary)
                .collect();
            if !side.is_empty() {
                pool = side;
            }
        }
        pick_from(&pool, key).cloned()
    }
}

/// The replica for a request among `pool`: see [`Routes::pick`].
fn pick_from<'a>(pool: &[&'a Arc<Replica>], key: Option<u64>) -> Option<&'a Arc<Replica>> {
    let least = pool
        .iter()
        .copied()
        .min_by_key(|r| r.inflight.load(Ordering::Relaxed))?;
    let Some(key) = key else {
        return Some(least);
    };
    let chosen = pool.iter().copied().max_by_key(|r| rendezvous(key, r.id))?;
    // Bounded load: affinity yields once its replica carries well over the least busy one.
    let least_load = least.inflight.load(Ordering::Relaxed);
    let load = chosen.inflight.load(Ordering::Relaxed);
    if load > least_load.saturating_mul(2).saturating_add(4) {
        Some(least)
    } else {
        Some(chosen)
    }
}

/// The weight of replica `id` for `key` (the highest weight wins).
fn rendezvous(key: u64, id: u64) -> u64 {
    mix(key ^ mix(id))
}

/// A 64-bit finaliser (splitmix64's): spreads nearby inputs apart.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An affinity key from bytes (a header's value or a body's prefix): FNV-1a, then mixed.
pub fn key_of(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::api::ServiceRoute;

    fn routes(version: u64, replicas: &[u64]) -> GatewayRoutes {
        GatewayRoutes {
            version,
            services: vec![ServiceRoute {
                id: 1,
                name: "chat".into(),
                tenant: "t".into(),
                desired: replicas.len() as u32,
                endpoints: replicas
                    .iter()
                    .map(|r| ServiceEndpoint {
                        replica: *r,
                        node: format!("n{r}"),
                        address: "127.0.0.1".into(),
                        port: 9000 + *r as u16,
                        canary: false,
                    })
                    .collect(),
                canary_percent: None,
            }],
        }
    }

    #[test]
    fn a_canary_gets_its_share_of_requests() {
        let r = Routes::default();
        let mut with_canary = routes(1, &[1, 2, 3]);
        with_canary.services[0].endpoints[2].canary = true;
        with_canary.services[0].canary_percent = Some(20);
        r.update(&with_canary);
        let t = r.now();
        let s = t.service("t", "chat").unwrap();
        let to_canary = (0..1000)
            .filter(|_| r.pick(s, None, &[]).unwrap().id == 3)
            .count();
        assert_eq!(to_canary, 200);
        // A retry of a canary request may go to the others.
        assert!(r.pick(s, None, &[3]).is_some());
    }

    #[test]
    fn the_fewest_in_flight_wins_and_counters_survive_a_new_version() {
        let r = Routes::default();
        r.update(&routes(1, &[1, 2, 3]));
        let t = r.now();
        let s = t.service("t", "chat").unwrap();
        s.replicas[0].inflight.store(5, Ordering::Relaxed);
        s.replicas[1].inflight.store(1, Ordering::Relaxed);
        s.replicas[2].inflight.store(3, Ordering::Relaxed);
        assert_eq!(r.pick(s, None, &[]).unwrap().id, 2);
        assert_eq!(r.pick(s, None, &[2]).unwrap().id, 3);
        // Replica 2 leaves, 4 joins: 1 and 3 keep their counts.
        r.update(&routes(2, &[1, 3, 4]));
        let t2 = r.now();
        let s2 = t2.service("t", "chat").unwrap();
        assert_eq!(s2.replicas[0].inflight.load(Ordering::Relaxed), 5);
        assert_eq!(r.pick(s2, None, &[]).unwrap().id, 4);
        assert!(t2.service("t", "other").is_none() && t2.service("u", "chat").is_none());
    }

    #[test]
    fn a_benched_replica_is_passed_over_while_another_remains() {
        let r = Routes::default();
        r.update(&routes(1, &[1, 2]));
        let t = r.now();
        let s = t.service("t", "chat").unwrap();
        r.bench(&s.replicas[0]);
        for _ in 0..10 {
            assert_eq!(r.pick(s, None, &[]).unwrap().id, 2);
        }
        r.bench(&s.replicas[1]);
        assert!(r.pick(s, None, &[]).is_some(), "all benched: still try one");
        assert!(r.pick(s, None, &[1, 2]).is_none());
    }

    #[test]
    fn affinity_keeps_keys_in_place_when_another_replica_leaves() {
        let r = Routes::default();
        r.update(&routes(1, &[1, 2, 3, 4]));
        let t = r.now();
        let s = t.service("t", "chat").unwrap();
        let before: Vec<u64> = (0..200u64)
            .map(|k| r.pick(s, Some(key_of(&k.to_le_bytes())), &[]).unwrap().id)
            .collect();
        // Keys spread over every replica.
        for id in 1..=4 {
            assert!(before.contains(&id));
        }
        r.update(&routes(2, &[1, 2, 4]));
        let t2 = r.now();
        let s2 = t2.service("t", "chat").unwrap();
        for (k, was) in before.iter().enumerate() {
            let now = r
                .pick(s2, Some(key_of(&(k as u64).to_le_bytes())), &[])
                .unwrap()
                .id;
            if *was != 3 {
                assert_eq!(now, *was, "key {k} moved though its replica stayed");
            }
        }
    }

    #[test]
    fn affinity_yields_to_an_overloaded_replica() {
        let r = Routes::default();
        r.update(&routes(1, &[1, 2]));
        let t = r.now();
        let s = t.service("t", "chat").unwrap();
        let key = key_of(b"prompt");
        let home = r.pick(s, Some(key), &[]).unwrap();
        home.inflight.store(100, Ordering::Relaxed);
        assert_ne!(r.pick(s, Some(key), &[]).unwrap().id, home.id);
    }
}
