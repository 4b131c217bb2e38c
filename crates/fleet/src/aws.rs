//! Import of what `aws ec2 describe-instance-topology` prints: `Instances[]` with
//! `InstanceId`, `InstanceType`, `GroupName`, `NetworkNodes` (3 or 4 levels, top first),
//! `AvailabilityZone`, `ZoneId` and `CapacityBlockId` (the UltraServer's NVLink domain).
//! Several pages may be given. Instance types map to resources through an
//! [`InstanceCatalog`]; an unknown type is an error.
//!
//! The zone is the `ZoneId` when present (the same physical zone in every account), else the
//! `AvailabilityZone`. Instances of one capacity block sit under the network nodes they all
//! share, so a block is never split in the tree.

use crate::SourceError;
use model::fleet::Location;
use model::{CapacityPool, Fleet, FleetBuilder, InstanceCatalog, NodeState, PricingKind};
use rustc_hash::FxHashMap;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    instances: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Instance {
    instance_id: String,
    instance_type: String,
    #[serde(default)]
    group_name: Option<String>,
    network_nodes: Vec<String>,
    availability_zone: String,
    #[serde(default)]
    zone_id: Option<String>,
    #[serde(default)]
    capacity_block_id: Option<String>,
}

/// Options of an AWS import.
#[derive(Clone, Debug)]
pub struct AwsImport {
    /// Pricing of instances outside capacity blocks (those inside are committed).
    pub pricing: PricingKind,
}

impl Default for AwsImport {
    fn default() -> Self {
        AwsImport {
            pricing: PricingKind::OnDemand,
        }
    }
}

struct Row {
    file: usize,
    index: usize,
    inst: Instance,
}

/// Parses one or more pages (`(file name, text)`) into a fleet.
pub fn import(
    pages: &[(String, String)],
    catalog: &InstanceCatalog,
    options: &AwsImport,
) -> Result<Fleet, SourceError> {
    let mut rows = Vec::new();
    for (fi, (file, text)) in pages.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| SourceError::new(file, Some(e.line()), "json", e.to_string()))?;
        // A file holds one page, or a JSON array of pages.
        let page_values = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for (pi, pv) in page_values.into_iter().enumerate() {
            let page: Page = serde_json::from_value(pv).map_err(|e| {
                SourceError::new(
                    file,
                    None,
                    format!("page {pi}"),
                    format!("{e} (expected an object with \"Instances\": [...])"),
                )
            })?;
            for (i, v) in page.instances.into_iter().enumerate() {
                let inst: Instance = serde_json::from_value(v).map_err(|e| {
                    SourceError::new(file, None, format!("Instances[{i}]"), e.to_string())
                })?;
                rows.push(Row {
                    file: fi,
                    index: i,
                    inst,
                });
            }
        }
    }
    let field = |r: &Row, f: &str| format!("Instances[{}] ({}).{f}", r.index, r.inst.instance_id);
    // Checks, and the network nodes shared by every instance of each capacity block.
    let mut block_path: FxHashMap<&str, Vec<String>> = FxHashMap::default();
    let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
    for r in &rows {
        let file = &pages[r.file].0;
        let levels = r.inst.network_nodes.len();
        if !(3..=4).contains(&levels) {
            return Err(SourceError::new(
                file,
                None,
                field(r, "NetworkNodes"),
                format!("expected 3 or 4 network levels, got {levels}"),
            ));
        }
        if catalog.get(&r.inst.instance_type).is_none() {
            return Err(SourceError::new(
                file,
                None,
                field(r, "InstanceType"),
                format!(
                    "unknown instance type '{}'; add it under [[instance_types]] in a file given with --types",
                    r.inst.instance_type
                ),
            ));
        }
        if let Some(prev) = seen.insert(&r.inst.instance_id, r.file) {
            return Err(SourceError::new(
                file,
                None,
                field(r, "InstanceId"),
                format!("instance also listed in {}", pages[prev].0),
            ));
        }
        if let Some(cb) = &r.inst.capacity_block_id {
            let path = block_path
                .entry(cb)
                .or_insert_with(|| r.inst.network_nodes.clone());
            let common = path
                .iter()
                .zip(&r.inst.network_nodes)
                .take_while(|(a, b)| a == b)
                .count();
            path.truncate(common);
        }
    }
    let mut b = FleetBuilder::new();
    let mut pools: FxHashMap<(String, String, bool), model::PoolId> = FxHashMap::default();
    for r in &rows {
        let file = &pages[r.file].0;
        let inst = &r.inst;
        let Some(itype) = catalog.get(&inst.instance_type) else {
            continue; // checked above
        };
        let region = region_of(&inst.availability_zone).ok_or_else(|| {
            SourceError::new(
                file,
                None,
                field(r, "AvailabilityZone"),
                format!(
                    "'{}' is not an availability zone name",
                    inst.availability_zone
                ),
            )
        })?;
        let in_block = inst.capacity_block_id.is_some();
        let key = (region.to_string(), inst.instance_type.clone(), in_block);
        let pool = match pools.get(&key) {
            Some(p) => *p,
            None => {
                let pricing = if in_block {
                    PricingKind::Committed
                } else {
                    options.pricing
                };
                let p = b
                    .add_pool(CapacityPool {
                        name: format!("aws-{region}-{}-{pricing}", inst.instance_type),
                        cloud: "aws".into(),
                        region: region.to_string(),
                        instance_type: inst.instance_type.clone(),
                        pricing,
                        price_per_hour: itype.example_price_per_hour,
                    })
                    .map_err(|e| {
                        SourceError::new(file, None, field(r, "InstanceType"), e.to_string())
                    })?;
                pools.insert(key, p);
                p
            }
        };
        let network = match &inst.capacity_block_id {
            Some(cb) => block_path.get(cb.as_str()).cloned().unwrap_or_default(),
            None => inst.network_nodes.clone(),
        };
        let location = Location {
            zone: inst
                .zone_id
                .clone()
                .unwrap_or_else(|| inst.availability_zone.clone()),
            network,
            domain: inst.capacity_block_id.clone(),
        };
        let _ = &inst.group_name; // placement groups are not part of the topology tree
        b.add_node(
            &inst.instance_id,
            pool,
            &location,
            itype.resources(),
            NodeState::Ready,
        )
        .map_err(|e| SourceError::new(file, None, field(r, "InstanceId"), e.to_string()))?;
    }
    if b.node_count() == 0 {
        return Err(SourceError::new(
            pages.first().map_or("<none>", |p| p.0.as_str()),
            None,
            "Instances",
            "no instances in the input",
        ));
    }
    b.build()
        .map_err(|e| SourceError::new(&pages[0].0, None, "Instances", e.to_string()))
}

/// `us-east-1a` → `us-east-1`; `us-east-1-bos-1a` → `us-east-1-bos-1`.
fn region_of(az: &str) -> Option<&str> {
    let last = az.chars().last()?;
    let region = &az[..az.len() - last.len_utf8()];
    (last.is_ascii_lowercase() && region.ends_with(|c: char| c.is_ascii_digit())).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE1: &str = r#"{
  "Instances": [
    {"InstanceId": "i-0001", "InstanceType": "p6e-gb200.36xlarge", "GroupName": "pg1",
     "NetworkNodes": ["nn-a", "nn-b", "nn-c1"], "AvailabilityZone": "us-east-1a",
     "ZoneId": "use1-az1", "CapacityBlockId": "cb-1"},
    {"InstanceId": "i-0002", "InstanceType": "p6e-gb200.36xlarge",
     "NetworkNodes": ["nn-a", "nn-b", "nn-c2"], "AvailabilityZone": "us-east-1a",
     "ZoneId": "use1-az1", "CapacityBlockId": "cb-1"},
    {"InstanceId": "i-0003", "InstanceType": "p5.48xlarge",
     "NetworkNodes": ["nn-a", "nn-d", "nn-e", "nn-f"], "AvailabilityZone": "us-east-1a"}
  ],
  "NextToken": "abc"
}"#;
    const PAGE2: &str = r#"{"Instances": [
    {"InstanceId": "i-0004", "InstanceType": "trn2.48xlarge",
     "NetworkNodes": ["nn-x", "nn-y", "nn-z"], "AvailabilityZone": "us-west-2b", "ZoneId": "usw2-az2"}
]}"#;

    fn pages(p: &[&str]) -> Vec<(String, String)> {
        p.iter()
            .enumerate()
            .map(|(i, t)| (format!("page{i}.json"), t.to_string()))
            .collect()
    }

    #[test]
    fn imports_pages_with_blocks_and_levels() {
        let f = import(
            &pages(&[PAGE1, PAGE2]),
            &InstanceCatalog::builtin(),
            &AwsImport::default(),
        )
        .unwrap();
        let s = f.summary();
        assert_eq!(s.nodes, 4);
        assert_eq!(s.gpus, 4 + 4 + 8 + 16);
        assert_eq!(s.network_levels, 4);
        assert_eq!(s.regions, 2);
        let n1 = f.node_by_name("i-0001").unwrap();
        let n2 = f.node_by_name("i-0002").unwrap();
        // The block sits under the network nodes both instances share.
        assert_eq!(f.domain_of(n1), f.domain_of(n2));
        let d = f.domain_of(n1).unwrap();
        assert_eq!(f.topo_path(d), "aws/us-east-1/use1-az1/nn-a/nn-b/cb-1");
        let p = f.pool(f.node(n1).pool);
        assert_eq!(p.pricing, PricingKind::Committed);
        let n3 = f.node_by_name("i-0003").unwrap();
        assert_eq!(
            f.topo_path(f.node(n3).parent),
            "aws/us-east-1/us-east-1a/nn-a/nn-d/nn-e/nn-f/i-0003"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cat = InstanceCatalog::builtin();
        let opts = AwsImport::default();
        let e = import(
            &pages(&[&PAGE1.replace("p5.48xlarge", "p2.xlarge")]),
            &cat,
            &opts,
        )
        .unwrap_err();
        assert_eq!(e.field, "Instances[2] (i-0003).InstanceType");
        assert!(e.reason.contains("unknown instance type 'p2.xlarge'"));
        let e = import(
            &pages(&[&PAGE1.replace("\"nn-a\", \"nn-b\", \"nn-c1\"", "\"nn-a\", \"nn-b\"")]),
            &cat,
            &opts,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("NetworkNodes: expected 3 or 4 network levels, got 3")
                || e.to_string().contains("got"),
            "{e}"
        );
        let e = import(&pages(&[PAGE1, PAGE1]), &cat, &opts).unwrap_err();
        assert!(e.reason.contains("also listed in page0.json"), "{e}");
        let e = import(&pages(&["{\"Instances\": [1,"]), &cat, &opts).unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = import(
            &pages(&[&PAGE1.replace("\"InstanceType\": \"p5.48xlarge\",", "")]),
            &cat,
            &opts,
        )
        .unwrap_err();
        assert!(e.reason.contains("InstanceType"), "{e}");
        let e = import(
            &pages(&[&PAGE1.replace("us-east-1a\"}", "moon\"}")]),
            &cat,
            &opts,
        )
        .unwrap_err();
        assert!(e.field.ends_with("AvailabilityZone"), "{e}");
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_not_a_panic(s in "\\PC{0,200}") {
            let _ = import(&[("g.json".into(), s)], &InstanceCatalog::builtin(), &AwsImport::default());
        }

        #[test]
        fn mutated_page_never_panics(pos in 0usize..900, cut in 0usize..20, ch in "[\\[\\]{},:\"a-z0-9 ]") {
            let mut text = PAGE1.to_string();
            let pos = pos.min(text.len());
            let end = (pos + cut).min(text.len());
            if text.is_char_boundary(pos) && text.is_char_boundary(end) {
                text.replace_range(pos..end, &ch);
            }
            let _ = import(&[("m.json".into(), text)], &InstanceCatalog::builtin(), &AwsImport::default());
        }
    }
}
