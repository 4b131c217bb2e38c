//! Synthetic fleets of any size: NVL72 GB200 domains (18 trays × 4 GPUs) under three network
//! levels, plus 192-vCPU CPU hosts, spread over several clouds, regions and zones.
//! Deterministic: the same spec gives the same fleet.

use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, FleetError, InstanceCatalog, NodeState, PricingKind,
};

/// One provider's share of the generated fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudShare {
    /// Provider name.
    pub cloud: String,
    /// Region names.
    pub regions: Vec<String>,
    /// Share of GPU domains and CPU hosts (weights, need not sum to 1).
    pub weight: f64,
    /// Instance type of a GB200 tray.
    pub gpu_type: String,
    /// Instance type of a CPU host.
    pub cpu_type: String,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenSpec {
    /// GPUs wanted; rounded down to whole domains.
    pub gpus: u64,
    /// CPU hosts.
    pub cpu_hosts: u64,
    /// Trays per NVLink domain.
    pub trays_per_domain: u32,
    /// Domains under one level-2 network node (block).
    pub domains_per_block: u32,
    /// Blocks under one level-1 network node.
    pub blocks_per_agg: u32,
    /// Level-1 nodes under one spine (level 0).
    pub aggs_per_spine: u32,
    /// Zones per region.
    pub zones_per_region: u32,
    /// CPU hosts per rack.
    pub hosts_per_rack: u32,
    /// Providers.
    pub clouds: Vec<CloudShare>,
    /// Share of each zone's GPU domains bought on demand (the rest is committed).
    pub on_demand_share: f64,
    /// Share of each zone's GPU domains bought as spot capacity.
    pub spot_share: f64,
}

impl Default for GenSpec {
    /// The reference fleet: 499,968 GB200 GPUs in 6,944 NVL72 domains and 100,000 CPU hosts
    /// over four providers.
    fn default() -> Self {
        let cloud = |cloud: &str, regions: &[&str], weight, gpu: &str, cpu: &str| CloudShare {
            cloud: cloud.into(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            weight,
            gpu_type: gpu.into(),
            cpu_type: cpu.into(),
        };
        GenSpec {
            gpus: 499_968,
            cpu_hosts: 100_000,
            trays_per_domain: 18,
            domains_per_block: 4,
            blocks_per_agg: 8,
            aggs_per_spine: 8,
            zones_per_region: 1,
            hosts_per_rack: 32,
            clouds: vec![
                cloud(
                    "aws",
                    &["us-east-1", "us-west-2"],
                    0.5,
                    "p6e-gb200.36xlarge",
                    "m7i.48xlarge",
                ),
                cloud(
                    "gcp",
                    &["us-central1", "europe-west4"],
                    0.2,
                    "a4x-highgpu-4g",
                    "c4-standard-192",
                ),
                cloud(
                    "azure",
                    &["eastus2", "westus3"],
                    0.2,
                    "ND_GB200_v6",
                    "Standard_D192s_v6",
                ),
                cloud(
                    "oci",
                    &["us-chicago-1", "us-ashburn-1"],
                    0.1,
                    "oci-bm.gpu.gb200.4",
                    "oci-e5.standard.192",
                ),
            ],
            on_demand_share: 0.0,
            spot_share: 0.0,
        }
    }
}

/// Why a spec cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    /// A field is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The catalogue lacks a type the spec names.
    #[error("clouds.{cloud}: unknown instance type '{name}'")]
    UnknownType {
        /// Provider.
        cloud: String,
        /// Type.
        name: String,
    },
    /// The builder refused the result.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Splits `total` items over weights by largest remainder (deterministic).
fn split(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    let raw: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<u64> = raw.iter().map(|r| r.floor() as u64).collect();
    let mut left = total - out.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (raw[b] - raw[b].floor())
            .total_cmp(&(raw[a] - raw[a].floor()))
            .then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Generates the fleet described by `spec`.
pub fn generate(spec: &GenSpec, catalog: &InstanceCatalog) -> Result<Fleet, GenError> {
    let invalid = |field, reason: &str| GenError::Invalid {
        field,
        reason: reason.into(),
    };
    if spec.clouds.is_empty() {
        return Err(invalid("clouds", "at least one provider is needed"));
    }
    if spec
        .clouds
        .iter()
        .any(|c| c.regions.is_empty() || !(c.weight > 0.0 && c.weight.is_finite()))
    {
        return Err(invalid(
            "clouds",
            "each provider needs a region and a weight > 0",
        ));
    }
    for (field, v) in [
        ("trays_per_domain", spec.trays_per_domain),
        ("domains_per_block", spec.domains_per_block),
        ("blocks_per_agg", spec.blocks_per_agg),
        ("aggs_per_spine", spec.aggs_per_spine),
        ("zones_per_region", spec.zones_per_region),
        ("hosts_per_rack", spec.hosts_per_rack),
    ] {
        if v == 0 {
            return Err(invalid(field, "must be at least 1"));
        }
    }
    for (field, v) in [
        ("on_demand_share", spec.on_demand_share),
        ("spot_share", spec.spot_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(field, "must be between 0 and 1"));
        }
    }
    if spec.on_demand_share + spec.spot_share > 1.0 {
        return Err(invalid(
            "spot_share",
            "on_demand_share and spot_share add up to more than 1",
        ));
    }
    if spec.gpus > 50_000_000 || spec.cpu_hosts > 10_000_000 {
        return Err(invalid(
            "gpus",
            "at most 50,000,000 GPUs and 10,000,000 CPU hosts",
        ));
    }
    let mut b = FleetBuilder::new();
    let weights: Vec<f64> = spec.clouds.iter().map(|c| c.weight).collect();
    let mut gpu_per_domain = 0u64;
    for c in &spec.clouds {
        for name in [&c.gpu_type, &c.cpu_type] {
            if catalog.get(name).is_none() {
                return Err(GenError::UnknownType {
                    cloud: c.cloud.clone(),
                    name: name.clone(),
                });
            }
        }
        let g = catalog.get(&c.gpu_type).map_or(0, |t| u64::from(t.gpus));
        if g == 0 {
            return Err(invalid("clouds", "gpu_type must be a GPU instance type"));
        }
        gpu_per_domain = gpu_per_domain.max(g * u64::from(spec.trays_per_domain));
    }
    let domains = spec.gpus / gpu_per_domain;
    let domains_split = split(domains, &weights);
    let hosts_split = split(spec.cpu_hosts, &weights);
    let mut domain_no = 0u64;
    let mut host_no = 0u64;
    let per_spine = u64::from(spec.domains_per_block * spec.blocks_per_agg * spec.aggs_per_spine);
    for (ci, c) in spec.clouds.iter().enumerate() {
        let gpu_t = catalog
            .get(&c.gpu_type)
            .map(|t| (t.resources(), t.example_price_per_hour));
        let cpu_t = catalog
            .get(&c.cpu_type)
            .map(|t| (t.resources(), t.example_price_per_hour));
        let (Some((gpu_res, gpu_price)), Some((cpu_res, cpu_price))) = (gpu_t, cpu_t) else {
            continue; // checked above
        };
        let zones: Vec<(usize, u32)> = (0..c.regions.len())
            .flat_map(|r| (0..spec.zones_per_region).map(move |z| (r, z)))
            .collect();
        let zone_domains = split(domains_split[ci], &vec![1.0; zones.len()]);
        let zone_hosts = split(hosts_split[ci], &vec![1.0; zones.len()]);
        for (zi, &(r, z)) in zones.iter().enumerate() {
            let region = &c.regions[r];
            let zone = format!("{region}-z{}", z + 1);
            let gpu_pool = b.add_pool(CapacityPool {
                name: format!("{}-{zone}-gb200", c.cloud),
                cloud: c.cloud.clone(),
                region: region.clone(),
                instance_type: c.gpu_type.clone(),
                pricing: PricingKind::Committed,
                price_per_hour: gpu_price,
            })?;
            // The zone's last domains are bought on demand, then as spot (example prices:
            // spot at 45% of on-demand; a cost catalogue sets real ones).
            let n = zone_domains[zi];
            let spot_n = (n as f64 * spec.spot_share).round() as u64;
            let od_n = ((n as f64 * spec.on_demand_share).round() as u64).min(n - spot_n);
            let mut extra_pool = |suffix: &str, pricing, price| {
                b.add_pool(CapacityPool {
                    name: format!("{}-{zone}-gb200-{suffix}", c.cloud),
                    cloud: c.cloud.clone(),
                    region: region.clone(),
                    instance_type: c.gpu_type.clone(),
                    pricing,
                    price_per_hour: price,
                })
            };
            // Pools without nodes are not made.
            let od_pool = match od_n {
                0 => gpu_pool,
                _ => extra_pool("od", PricingKind::OnDemand, gpu_price)?,
            };
            let spot_pool = match spot_n {
                0 => gpu_pool,
                _ => extra_pool("spot", PricingKind::Spot, gpu_price * 0.45)?,
            };
            let pool_of = |k: u64| {
                if k >= n - spot_n {
                    spot_pool
                } else if k >= n - spot_n - od_n {
                    od_pool
                } else {
                    gpu_pool
                }
            };
            let cpu_pool = b.add_pool(CapacityPool {
                name: format!("{}-{zone}-cpu", c.cloud),
                cloud: c.cloud.clone(),
                region: region.clone(),
                instance_type: c.cpu_type.clone(),
                pricing: PricingKind::OnDemand,
                price_per_hour: cpu_price,
            })?;
            for k in 0..zone_domains[zi] {
                let spine = k / per_spine;
                let agg = k / u64::from(spec.domains_per_block * spec.blocks_per_agg);
                let block = k / u64::from(spec.domains_per_block);
                let dname = format!("nvl{domain_no:05}");
                let loc = Location {
                    zone: zone.clone(),
                    network: vec![
                        format!("sp{spine}"),
                        format!("agg{agg}"),
                        format!("blk{block}"),
                    ],
                    domain: Some(dname.clone()),
                };
                for t in 0..spec.trays_per_domain {
                    b.add_node(
                        &format!("{dname}t{t:02}"),
                        pool_of(k),
                        &loc,
                        gpu_res,
                        NodeState::Ready,
                    )?;
                }
                domain_no += 1;
            }
            for k in 0..zone_hosts[zi] {
                let rack = k / u64::from(spec.hosts_per_rack);
                let loc = Location {
                    zone: zone.clone(),
                    network: vec![format!("cpusp{}", rack / 64), format!("rack{rack}")],
                    domain: None,
                };
                b.add_node(
                    &format!("cpu{host_no:07}"),
                    cpu_pool,
                    &loc,
                    cpu_res,
                    NodeState::Ready,
                )?;
                host_no += 1;
            }
        }
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_fleet_has_expected_shape() {
        let spec = GenSpec {
            gpus: 72 * 10,
            cpu_hosts: 100,
            ..GenSpec::default()
        };
        let f = generate(&spec, &InstanceCatalog::builtin()).unwrap();
        let s = f.summary();
        assert_eq!(s.gpus, 720);
        assert_eq!(s.nvlink_domains, 10);
        assert_eq!(s.multi_node_domains, 10);
        assert_eq!(s.network_levels, 3);
        assert_eq!(s.nodes, 180 + 100);
        assert_eq!(s.clouds, 4);
        let cpu_hosts: u64 = f
            .nodes()
            .iter()
            .filter(|n| n.capacity.gpus == 0)
            .map(|n| u64::from(n.capacity.cpu_millis))
            .sum();
        assert_eq!(cpu_hosts, 100 * 192_000);
    }

    #[test]
    fn shares_of_on_demand_and_spot_domains() {
        let spec = GenSpec {
            gpus: 72 * 40,
            cpu_hosts: 0,
            on_demand_share: 0.25,
            spot_share: 0.25,
            ..GenSpec::default()
        };
        let f = generate(&spec, &InstanceCatalog::builtin()).unwrap();
        let count = |kind: PricingKind| {
            f.nodes()
                .iter()
                .filter(|n| n.capacity.gpus > 0 && f.pool(n.pool).pricing == kind)
                .count()
                / 18
        };
        // 40 domains: 10 per aws zone, 4 per gcp and azure zone, 2 per oci zone; a quarter of
        // each zone's, rounded, is on demand and as many are spot.
        assert_eq!(count(PricingKind::OnDemand), 2 * 3 + 2 + 2 + 2);
        assert_eq!(count(PricingKind::Spot), 12);
        assert_eq!(count(PricingKind::Committed), 16);
        let bad = GenSpec {
            on_demand_share: 0.7,
            spot_share: 0.7,
            ..spec
        };
        assert!(generate(&bad, &InstanceCatalog::builtin())
            .unwrap_err()
            .to_string()
            .starts_with("spot_share"));
    }

    #[test]
    fn split_is_exact() {
        assert_eq!(split(10, &[0.5, 0.2, 0.2, 0.1]), vec![5, 2, 2, 1]);
        assert_eq!(split(7, &[1.0, 1.0]).iter().sum::<u64>(), 7);
    }

    #[test]
    fn rejects_bad_spec() {
        let spec = GenSpec {
            trays_per_domain: 0,
            ..GenSpec::default()
        };
        let e = generate(&spec, &InstanceCatalog::builtin()).unwrap_err();
        assert!(e.to_string().starts_with("trays_per_domain"), "{e}");
    }
}
