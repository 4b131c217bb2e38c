//! What capacity costs and where work may run: the price catalogue (providers, regions and
//! instance types with on-demand, spot and committed rates), the commitments signed with each
//! provider, and the placement rule a workload carries (provider and region pins and
//! exclusions, and whether it accepts spot capacity).

use crate::commitment::Commitment;
use crate::fleet::{CapacityPool, Fleet, PoolId, PricingKind};
use crate::FieldError;
use serde::{Deserialize, Serialize};

/// A provider and the regions it is used in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name as the fleet writes it (`aws`, `gcp`, ...).
    pub name: String,
    /// Regions.
    pub regions: Vec<String>,
}

/// Prices of one instance type with one provider, USD per node-hour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Provider.
    pub provider: String,
    /// One region; `None`: every region of the provider without its own entry.
    #[serde(default)]
    pub region: Option<String>,
    /// Instance type.
    pub instance_type: String,
    /// Pay-as-you-go rate.
    pub on_demand: f64,
    /// Spot rate, where the provider sells it.
    #[serde(default)]
    pub spot: Option<f64>,
    /// Rate of capacity reserved under the commitment.
    #[serde(default)]
    pub committed: Option<f64>,
}

impl Price {
    /// The rate for capacity paid for in `kind`'s way.
    pub fn rate(&self, kind: PricingKind) -> Option<f64> {
        match kind {
            PricingKind::OnDemand => Some(self.on_demand),
            PricingKind::Spot => self.spot,
            PricingKind::Committed => self.committed,
        }
    }
}

/// Providers, prices and commitments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostCatalogue {
    /// Providers and their regions.
    pub providers: Vec<Provider>,
    /// Prices.
    pub prices: Vec<Price>,
    /// Commitments, at most one per provider.
    pub commitments: Vec<Commitment>,
}

/// A catalogue entry that is wrong: where (`prices[3].spot`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CatalogueError {
    /// The entry and field, e.g. `commitments[1].yearly_minimum_usd`.
    pub path: String,
    /// Why it is refused.
    pub reason: String,
}

fn is_rate(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

impl CostCatalogue {
    /// Checks names, rates and commitments; the first problem, with its path.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        let err = |path: String, reason: String| Err(CatalogueError { path, reason });
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() {
                return err(format!("providers[{i}].name"), "must not be empty".into());
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return err(
                    format!("providers[{i}].name"),
                    format!("'{}' is declared twice", p.name),
                );
            }
        }
        let provider = |name: &str| self.providers.iter().find(|p| p.name == name);
        for (i, p) in self.prices.iter().enumerate() {
            let Some(prov) = provider(&p.provider) else {
                return err(
                    format!("prices[{i}].provider"),
                    format!("'{}' is not a declared provider", p.provider),
                );
            };
            if let Some(r) = &p.region {
                if !prov.regions.contains(r) {
                    return err(
                        format!("prices[{i}].region"),
                        format!("'{r}' is not a region of {}", p.provider),
                    );
                }
            }
            for (field, v) in [
                ("on_demand", Some(p.on_demand)),
                ("spot", p.spot),
                ("committed", p.committed),
            ] {
                if let Some(v) = v.filter(|v| !is_rate(*v)) {
                    return err(
                        format!("prices[{i}].{field}"),
                        format!("{v} is not a price (a finite number of 0 or more)"),
                    );
                }
            }
            if self.prices[..i].iter().any(|q| {
                q.provider == p.provider
                    && q.region == p.region
                    && q.instance_type == p.instance_type
            }) {
                return err(
                    format!("prices[{i}]"),
                    format!(
                        "{} {} in {} is priced twice",
                        p.provider,
                        p.instance_type,
                        p.region.as_deref().unwrap_or("every region")
                    ),
                );
            }
        }
        for (i, c) in self.commitments.iter().enumerate() {
            if provider(&c.provider).is_none() {
                return err(
                    format!("commitments[{i}].provider"),
                    format!("'{}' is not a declared provider", c.provider),
                );
            }
            if self.commitments[..i]
                .iter()
                .any(|d| d.provider == c.provider)
            {
                return err(
                    format!("commitments[{i}].provider"),
                    format!("{} already has a commitment", c.provider),
                );
            }
            if let Err(e) = c.validate() {
                return err(format!("commitments[{i}].{}", e.field), e.reason);
            }
        }
        Ok(())
    }

    /// The entry pricing `instance_type` in `provider`'s `region`: the region's own entry,
    /// else the provider-wide one.
    pub fn price(&self, provider: &str, region: &str, instance_type: &str) -> Option<&Price> {
        let of = |region: Option<&str>| {
            self.prices.iter().find(|p| {
                p.provider == provider
                    && p.instance_type == instance_type
                    && p.region.as_deref() == region
            })
        };
        of(Some(region)).or_else(|| of(None))
    }

    /// The catalogue's rate for a pool, when it has one.
    pub fn pool_rate(&self, pool: &CapacityPool) -> Option<f64> {
        self.price(&pool.cloud, &pool.region, &pool.instance_type)?
            .rate(pool.pricing)
    }

    /// Sets every pool's price from the catalogue; returns the pools it has no rate for (they
    /// keep the price the fleet gave them).
    pub fn apply(&self, fleet: &mut Fleet) -> Vec<PoolId> {
        let mut unpriced = Vec::new();
        for i in 0..fleet.pools().len() {
            let id = PoolId(i as u32);
            match self.pool_rate(fleet.pool(id)) {
                Some(rate) => fleet.set_pool_price(id, rate),
                None => unpriced.push(id),
            }
        }
        unpriced
    }

    /// The commitment with `provider`.
    pub fn commitment(&self, provider: &str) -> Option<&Commitment> {
        self.commitments.iter().find(|c| c.provider == provider)
    }
}

/// Where a workload may run. Empty lists allow everything; an exclusion wins over a pin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementRule {
    /// Only these providers (data residency, contracts).
    pub providers: Vec<String>,
    /// Never these providers.
    pub exclude_providers: Vec<String>,
    /// Only these regions.
    pub regions: Vec<String>,
    /// Never these regions.
    pub exclude_regions: Vec<String>,
    /// The work survives being stopped at short notice, so it may run on spot capacity.
    pub preemptible: bool,
}

impl PlacementRule {
    /// Whether work under this rule may use capacity from `pool`.
    pub fn allows(&self, pool: &CapacityPool) -> bool {
        let listed = |list: &[String], x: &str| list.iter().any(|y| y == x);
        (self.preemptible || pool.pricing != PricingKind::Spot)
            && (self.providers.is_empty() || listed(&self.providers, &pool.cloud))
            && !listed(&self.exclude_providers, &pool.cloud)
            && (self.regions.is_empty() || listed(&self.regions, &pool.region))
            && !listed(&self.exclude_regions, &pool.region)
    }

    /// Whether the rule restricts providers or regions (beyond keeping off spot capacity).
    pub fn pins(&self) -> bool {
        !(self.providers.is_empty()
            && self.exclude_providers.is_empty()
            && self.regions.is_empty()
            && self.exclude_regions.is_empty())
    }

    /// Checks the lists: no empty names, nothing both pinned and excluded.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |field, reason: String| Err(FieldError { field, reason });
        for (field, list) in [
            ("placement.providers", &self.providers),
            ("placement.exclude_providers", &self.exclude_providers),
            ("placement.regions", &self.regions),
            ("placement.exclude_regions", &self.exclude_regions),
        ] {
            if list.iter().any(|x| x.is_empty()) {
                return bad(field, "names must not be empty".into());
            }
            if list.len() > 64 {
                return bad(field, "at most 64 names".into());
            }
        }
        if let Some(p) = self
            .providers
            .iter()
            .find(|p| self.exclude_providers.contains(p))
        {
            return bad(
                "placement.exclude_providers",
                format!("'{p}' is both pinned and excluded"),
            );
        }
        if let Some(r) = self
            .regions
            .iter()
            .find(|r| self.exclude_regions.contains(r))
        {
            return bad(
                "placement.exclude_regions",
                format!("'{r}' is both pinned and excluded"),
            );
        }
        Ok(())
    }

    /// The rule in words, for explanations ("only on aws, gcp; not in us-east-1; no spot").
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.providers.is_empty() {
            parts.push(format!("only on {}", self.providers.join(", ")));
        }
        if !self.exclude_providers.is_empty() {
            parts.push(format!("not on {}", self.exclude_providers.join(", ")));
        }
        if !self.regions.is_empty() {
            parts.push(format!("only in {}", self.regions.join(", ")));
        }
        if !self.exclude_regions.is_empty() {
            parts.push(format!("not in {}", self.exclude_regions.join(", ")));
        }
        if !self.preemptible {
            parts.push("no spot capacity (not preemptible)".into());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool(cloud: &str, region: &str, pricing: PricingKind) -> CapacityPool {
        CapacityPool {
            name: format!("{cloud}-{region}"),
            cloud: cloud.into(),
            region: region.into(),
            instance_type: "p6e-gb200.36xlarge".into(),
            pricing,
            price_per_hour: 1.0,
        }
    }

    fn catalogue() -> CostCatalogue {
        CostCatalogue {
            providers: vec![Provider {
                name: "aws".into(),
                regions: vec!["us-east-1".into(), "us-west-2".into()],
            }],
            prices: vec![
                Price {
                    provider: "aws".into(),
                    region: None,
                    instance_type: "p6e-gb200.36xlarge".into(),
                    on_demand: 60.0,
                    spot: Some(25.0),
                    committed: Some(40.0),
                },
                Price {
                    provider: "aws".into(),
                    region: Some("us-west-2".into()),
                    instance_type: "p6e-gb200.36xlarge".into(),
                    on_demand: 66.0,
                    spot: None,
                    committed: Some(44.0),
                },
            ],
            commitments: Vec::new(),
        }
    }

    #[test]
    fn a_region_entry_wins_over_the_provider_wide_one() {
        let c = catalogue();
        c.validate().unwrap();
        let east = pool("aws", "us-east-1", PricingKind::Committed);
        let west = pool("aws", "us-west-2", PricingKind::Committed);
        assert_eq!(c.pool_rate(&east), Some(40.0));
        assert_eq!(c.pool_rate(&west), Some(44.0));
        assert_eq!(
            c.pool_rate(&pool("aws", "us-west-2", PricingKind::Spot)),
            None,
            "no spot rate in that region"
        );
        assert_eq!(c.pool_rate(&pool("gcp", "x", PricingKind::OnDemand)), None);
    }

    #[test]
    fn bad_entries_name_their_path() {
        let mut c = catalogue();
        c.prices[1].spot = Some(-1.0);
        assert_eq!(c.validate().unwrap_err().path, "prices[1].spot");
        let mut c = catalogue();
        c.prices[0].region = Some("mars-1".into());
        let e = c.validate().unwrap_err();
        assert_eq!(e.path, "prices[0].region");
        assert!(e.reason.contains("mars-1"), "{e}");
        let mut c = catalogue();
        c.prices[1].region = None;
        assert!(c.validate().unwrap_err().reason.contains("priced twice"));
        let mut c = catalogue();
        c.prices[0].provider = "ibm".into();
        assert_eq!(c.validate().unwrap_err().path, "prices[0].provider");
    }

    #[test]
    fn rules_pin_exclude_and_keep_off_spot() {
        let spot = pool("aws", "us-east-1", PricingKind::Spot);
        let committed = pool("gcp", "europe-west4", PricingKind::Committed);
        let open = PlacementRule::default();
        assert!(!open.allows(&spot) && open.allows(&committed));
        let pre = PlacementRule {
            preemptible: true,
            ..PlacementRule::default()
        };
        assert!(pre.allows(&spot));
        let eu = PlacementRule {
            regions: vec!["europe-west4".into()],
            preemptible: true,
            ..PlacementRule::default()
        };
        assert!(eu.allows(&committed) && !eu.allows(&spot));
        let no_gcp = PlacementRule {
            exclude_providers: vec!["gcp".into()],
            ..PlacementRule::default()
        };
        assert!(!no_gcp.allows(&committed));
        assert!(no_gcp.pins() && !open.pins());
        let both = PlacementRule {
            providers: vec!["gcp".into()],
            exclude_providers: vec!["gcp".into()],
            ..PlacementRule::default()
        };
        assert_eq!(
            both.validate().unwrap_err().field,
            "placement.exclude_providers"
        );
        assert_eq!(
            no_gcp.describe(),
            "not on gcp; no spot capacity (not preemptible)"
        );
    }
}
