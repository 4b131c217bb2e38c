//! Stargrid's own fleet file (TOML). Nodes are declared in groups that share a place in the
//! tree and a pool, with Slurm hostlist expressions for names, so that a 500,000-GPU fleet
//! is a few thousand lines:
//!
//! ```toml
//! [[instance_types]]            # optional: extends or overrides the built-in table
//! name = "my-h100-box"
//! gpu_model = "H100"
//! gpus = 8
//! cpu_millis = 192000
//! memory_mib = 2097152
//!
//! [[pools]]
//! name = "aws-use1-gb200"
//! cloud = "aws"
//! region = "us-east-1"
//! instance_type = "p6e-gb200.36xlarge"
//! pricing = "committed"          # committed | on-demand | spot
//! price_per_hour = 42.0
//!
//! [[groups]]
//! pool = "aws-use1-gb200"
//! zone = "use1-az1"
//! network = ["sp0", "agg3", "blk12"]   # network nodes, top first
//! domain = "nvl-0007"                  # NVLink domain (optional)
//! nodes = "nvl-0007-t[00-17]"
//! state = "ready"                      # optional: ready | cordoned | draining | down
//! ```

use crate::{line_of, SourceError};
use model::fleet::Location;
use model::hostlist;
use model::{CapacityPool, Fleet, FleetBuilder, InstanceCatalog, InstanceType, NodeId, NodeState};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The file as written.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Extra or overriding instance types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<InstanceType>,
    /// Capacity pools.
    #[serde(default)]
    pub pools: Vec<CapacityPool>,
    /// Node groups.
    #[serde(default)]
    pub groups: Vec<Group>,
}

/// Nodes that share a pool, a zone, a network path, a domain and a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Pool name.
    pub pool: String,
    /// Availability zone.
    pub zone: String,
    /// Network nodes, top first.
    #[serde(default)]
    pub network: Vec<String>,
    /// NVLink domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Hostlist expression of node names.
    pub nodes: String,
    /// State of every node in the group.
    #[serde(default, skip_serializing_if = "is_ready")]
    pub state: NodeState,
}

fn is_ready(s: &NodeState) -> bool {
    *s == NodeState::Ready
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpannedFile {
    #[serde(default)]
    instance_types: Vec<Spanned<InstanceType>>,
    #[serde(default)]
    pools: Vec<Spanned<CapacityPool>>,
    #[serde(default)]
    groups: Vec<Spanned<Group>>,
}

/// Reads instance types from a TOML text with `[[instance_types]]` tables into `catalog`.
pub fn extend_catalog(
    file: &str,
    text: &str,
    catalog: &mut InstanceCatalog,
) -> Result<(), SourceError> {
    #[derive(Deserialize)]
    struct Types {
        #[serde(default)]
        instance_types: Vec<Spanned<InstanceType>>,
    }
    let parsed: Types = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    add_types(file, text, parsed.instance_types, catalog)
}

fn add_types(
    file: &str,
    text: &str,
    types: Vec<Spanned<InstanceType>>,
    catalog: &mut InstanceCatalog,
) -> Result<(), SourceError> {
    for (i, t) in types.into_iter().enumerate() {
        let line = line_of(text, t.span().start);
        catalog.insert(t.into_inner()).map_err(|e| {
            SourceError::new(
                file,
                Some(line),
                format!("instance_types[{i}]"),
                e.to_string(),
            )
        })?;
    }
    Ok(())
}

/// Line of `key = ...` inside a table's span, else the table's first line (1-based).
pub fn field_line(text: &str, span: std::ops::Range<usize>, key: &str) -> usize {
    let start = span.start.min(text.len());
    let end = span.end.min(text.len());
    let mut offset = start;
    for l in text.get(start..end).unwrap_or("").split_inclusive('\n') {
        let t = l.trim_start();
        if t.strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return line_of(text, offset);
        }
        offset += l.len();
    }
    line_of(text, start)
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> SourceError {
    let line = e.span().map(|s| line_of(text, s.start));
    SourceError::new(file, line, "toml", e.message().to_string())
}

/// The most nodes one fleet file declares (the reference fleet has 224,992): a file is read
/// whole into memory, and a server takes files from operators.
pub const MAX_FILE_NODES: usize = 2_000_000;

/// Parses a fleet file. `catalog` starts as the built-in table (or a user's) and is extended
/// by the file's own `[[instance_types]]`.
pub fn parse(file: &str, text: &str, mut catalog: InstanceCatalog) -> Result<Fleet, SourceError> {
    let parsed: SpannedFile = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    add_types(file, text, parsed.instance_types, &mut catalog)?;
    let mut b = FleetBuilder::new();
    for (i, p) in parsed.pools.into_iter().enumerate() {
        let line = Some(line_of(text, p.span().start));
        let pool = p.into_inner();
        if catalog.get(&pool.instance_type).is_none() {
            return Err(SourceError::new(
                file,
                line,
                format!("pools[{i}].instance_type"),
                format!(
                    "unknown instance type '{}'; declare it under [[instance_types]] (known: {})",
                    pool.instance_type,
                    catalog.names().join(", ")
                ),
            ));
        }
        b.add_pool(pool)
            .map_err(|e| SourceError::new(file, line, format!("pools[{i}]"), e.to_string()))?;
    }
    for (i, g) in parsed.groups.into_iter().enumerate() {
        let span = g.span();
        let g = g.into_inner();
        let at = |field: &str, reason: String| {
            let line = Some(field_line(text, span.clone(), field));
            SourceError::new(file, line, format!("groups[{i}].{field}"), reason)
        };
        let pool = b
            .pool_id(&g.pool)
            .ok_or_else(|| at("pool", format!("no pool named '{}' is declared", g.pool)))?;
        let itype = &b.pools()[pool.0 as usize].instance_type;
        let capacity = catalog
            .get(itype)
            .map(InstanceType::resources)
            .ok_or_else(|| at("pool", format!("unknown instance type '{itype}'")))?;
        let room = MAX_FILE_NODES - b.node_count();
        let names = hostlist::expand_at_most(&g.nodes, room).map_err(|e| {
            at(
                "nodes",
                format!("{e} (a fleet file declares at most {MAX_FILE_NODES} nodes)"),
            )
        })?;
        let location = Location {
            zone: g.zone,
            network: g.network,
            domain: g.domain,
        };
        for name in names {
            b.add_node(&name, pool, &location, capacity, g.state)
                .map_err(|e| at("nodes", e.to_string()))?;
        }
    }
    b.build()
        .map_err(|e| SourceError::new(file, None, "groups", e.to_string()))
}

/// Writes a fleet as a fleet file: one group per run of nodes that share place, pool and
/// state. Instance types not in `catalog`, or differing from it, are written out too.
pub fn write(fleet: &Fleet, catalog: &InstanceCatalog) -> String {
    let out = FleetFile {
        instance_types: instance_types(fleet, catalog),
        pools: fleet.pools().to_vec(),
        groups: groups(fleet, |_| true),
    };
    to_text(&out, fleet.nodes().len())
}

/// A fleet file's text, headed by its node count.
pub fn to_text(file: &FleetFile, nodes: usize) -> String {
    let body = toml::to_string(file).unwrap_or_else(|e| format!("# cannot serialise fleet: {e}\n"));
    format!("# Stargrid fleet file: {nodes} nodes\n{body}")
}

/// Reads a fleet file's tables as written, without building the fleet (see [`parse`] for
/// that and its checks).
pub fn read(file: &str, text: &str) -> Result<FleetFile, SourceError> {
    toml::from_str(text).map_err(|e| toml_error(file, text, &e))
}

/// The instance types of `fleet`'s pools that `catalog` lacks or knows otherwise.
pub fn instance_types(fleet: &Fleet, catalog: &InstanceCatalog) -> Vec<InstanceType> {
    let mut out: Vec<InstanceType> = Vec::new();
    for (i, pool) in fleet.pools().iter().enumerate() {
        let Some(node) = fleet.nodes().iter().find(|n| n.pool.0 as usize == i) else {
            continue;
        };
        let known = catalog
            .get(&pool.instance_type)
            .is_some_and(|t| t.resources() == node.capacity);
        if !known && !out.iter().any(|t| t.name == pool.instance_type) {
            let c = node.capacity;
            out.push(InstanceType {
                name: pool.instance_type.clone(),
                gpu_model: c.gpu_model,
                gpus: c.gpus,
                cpu_millis: c.cpu_millis,
                memory_mib: c.memory_mib,
                disk_gib: c.disk_gib,
                example_price_per_hour: pool.price_per_hour,
            });
        }
    }
    out
}

/// The groups that declare the nodes `keep` accepts: one per run of nodes that share place,
/// pool and state.
pub fn groups(fleet: &Fleet, keep: impl Fn(NodeId) -> bool) -> Vec<Group> {
    let mut out = Vec::new();
    let nodes = fleet.nodes();
    let mut start = 0;
    while start < nodes.len() {
        if !keep(NodeId(start as u32)) {
            start += 1;
            continue;
        }
        let first = &nodes[start];
        let mut end = start + 1;
        while end < nodes.len()
            && keep(NodeId(end as u32))
            && nodes[end].parent == first.parent
            && nodes[end].pool == first.pool
            && nodes[end].state == first.state
        {
            end += 1;
        }
        let parent = fleet.topo_node(first.parent);
        let domain = (parent.kind == model::TopoKind::Domain && !parent.implicit)
            .then(|| parent.name.to_string());
        let zone = fleet
            .zone_of(first.parent)
            .map(|z| fleet.topo_node(z).name.to_string())
            .unwrap_or_default();
        let names: Vec<&str> = nodes[start..end].iter().map(|n| &*n.name).collect();
        out.push(Group {
            pool: fleet.pool(first.pool).name.clone(),
            zone,
            network: fleet
                .network_path(first.parent)
                .into_iter()
                .map(str::to_string)
                .collect(),
            domain,
            nodes: hostlist::compress(&names),
            state: first.state,
        });
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"
[[pools]]
name = "gb"
cloud = "aws"
region = "us-east-1"
instance_type = "p6e-gb200.36xlarge"
pricing = "committed"
price_per_hour = 40.0

[[pools]]
name = "cpu"
cloud = "aws"
region = "us-east-1"
instance_type = "m7i.48xlarge"

[[groups]]
pool = "gb"
zone = "use1-az1"
network = ["sp0", "blk0"]
domain = "nvl0"
nodes = "nvl0-t[00-17]"

[[groups]]
pool = "cpu"
zone = "use1-az1"
network = ["cpu0"]
nodes = "c[1-4]"
state = "cordoned"
"#;

    #[test]
    fn parses_sample_and_round_trips() {
        let fleet = parse("f.toml", SAMPLE, InstanceCatalog::builtin()).unwrap();
        let s = fleet.summary();
        assert_eq!(
            (s.nodes, s.gpus, s.nvlink_domains, s.network_levels),
            (22, 72, 1, 2)
        );
        assert_eq!(s.unschedulable_nodes, 4);
        let text = write(&fleet, &InstanceCatalog::builtin());
        let again = parse("again.toml", &text, InstanceCatalog::builtin()).unwrap();
        assert_eq!(write(&again, &InstanceCatalog::builtin()), text);
        assert_eq!(again.summary(), s);
    }

    #[test]
    fn errors_name_file_line_field_and_reason() {
        let bad = SAMPLE.replace("nodes = \"c[1-4]\"", "nodes = \"c[4-1]\"");
        let e = parse("f.toml", &bad, InstanceCatalog::builtin()).unwrap_err();
        assert_eq!(e.field, "groups[1].nodes");
        assert_eq!(e.line, Some(27));
        assert!(e.reason.contains("backwards"), "{e}");
        assert!(
            e.to_string().starts_with("f.toml:27: groups[1].nodes:"),
            "{e}"
        );

        let bad = SAMPLE.replace("m7i.48xlarge", "m9.huge");
        let e = parse("f.toml", &bad, InstanceCatalog::builtin()).unwrap_err();
        assert_eq!(e.field, "pools[1].instance_type");
        assert!(e.reason.contains("unknown instance type 'm9.huge'"), "{e}");

        let bad = SAMPLE.replace("pool = \"cpu\"", "pool = \"nope\"");
        let e = parse("f.toml", &bad, InstanceCatalog::builtin()).unwrap_err();
        assert!(e.to_string().contains("no pool named 'nope'"), "{e}");

        let bad = SAMPLE.replace(
            "zone = \"use1-az1\"\nnetwork = [\"cpu0\"]",
            "zone = \"use1-az1\"\nnetwork = [\"cpu0\"]\ncolour = 1",
        );
        let e = parse("f.toml", &bad, InstanceCatalog::builtin()).unwrap_err();
        assert!(e.reason.contains("colour"), "{e}");
        assert!(e.line.is_some());

        let dup = SAMPLE.replace("c[1-4]", "nvl0-t05");
        let e = parse("f.toml", &dup, InstanceCatalog::builtin()).unwrap_err();
        assert!(e.reason.contains("declared twice"), "{e}");
    }

    #[test]
    fn user_types_extend_the_catalogue() {
        let text = format!(
            "[[instance_types]]\nname = \"box\"\ngpu_model = \"H100\"\ngpus = 8\ncpu_millis = 1000\nmemory_mib = 1000\n{}",
            SAMPLE.replace("m7i.48xlarge", "box")
        );
        let f = parse("f.toml", &text, InstanceCatalog::builtin()).unwrap();
        assert_eq!(f.summary().gpus, 72 + 32);
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_not_a_panic(s in "\\PC{0,200}") {
            let _ = parse("g.toml", &s, InstanceCatalog::builtin());
        }

        #[test]
        fn mutated_sample_never_panics(pos in 0usize..600, ch in "\\PC") {
            let mut text = SAMPLE.to_string();
            let pos = pos.min(text.len());
            if text.is_char_boundary(pos) {
                text.insert_str(pos, &ch);
            }
            let _ = parse("m.toml", &text, InstanceCatalog::builtin());
        }
    }
}
