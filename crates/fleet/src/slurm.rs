//! Slurm `topology.conf`: import and export of both plugins.
//!
//! - topology/tree: `SwitchName=s0 Nodes=tux[0-3]`, `SwitchName=s2 Switches=s[0-1]`. Switches
//!   become network levels (roots at level 0); nodes hang under their leaf switch.
//! - topology/block: `BlockName=b1 Nodes=...`, `BlockSizes=18,72`. Each block becomes an
//!   NVLink domain; each larger block size becomes a network level grouping that many
//!   consecutive base blocks, named `bs<size>-<index>`.
//!
//! `topology.conf` carries no resources, clouds or zones: the import takes them as options.
//! Export writes switches children-first (as Slurm's examples do) and blocks in tree order.

use crate::SourceError;
use model::fleet::Location;
use model::hostlist;
use model::{
    CapacityPool, Fleet, FleetBuilder, InstanceCatalog, NodeState, PricingKind, TopoId, TopoKind,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt::Write as _;

/// Where and what the imported nodes are.
#[derive(Clone, Debug)]
pub struct SlurmImport {
    /// Instance type of every node (from the catalogue).
    pub instance_type: String,
    /// Provider name.
    pub cloud: String,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
    /// Pricing.
    pub pricing: PricingKind,
}

impl Default for SlurmImport {
    fn default() -> Self {
        SlurmImport {
            instance_type: "p6e-gb200.36xlarge".into(),
            cloud: "onprem".into(),
            region: "site".into(),
            zone: "zone0".into(),
            pricing: PricingKind::Committed,
        }
    }
}

/// Which plugin to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlurmFormat {
    /// topology/tree.
    Tree,
    /// topology/block.
    Block,
}

struct Switch {
    name: String,
    switches: Vec<String>,
    nodes: Vec<String>,
    line: usize,
}

struct Block {
    name: String,
    nodes: Vec<String>,
    line: usize,
}

/// Parses `topology.conf` text into a fleet.
pub fn import(
    file: &str,
    text: &str,
    catalog: &InstanceCatalog,
    options: &SlurmImport,
) -> Result<Fleet, SourceError> {
    let mut switches: Vec<Switch> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut sizes: Option<(Vec<u32>, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |field: &str, reason: String| SourceError::new(file, Some(line), field, reason);
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut pairs = Vec::new();
        for token in content.split_whitespace() {
            let (k, v) = token
                .split_once('=')
                .ok_or_else(|| err(token, "expected Key=Value".into()))?;
            pairs.push((k.to_ascii_lowercase(), v));
        }
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let expand = |field: &str, v: Option<&str>| -> Result<Vec<String>, SourceError> {
            v.map_or(Ok(Vec::new()), |v| {
                hostlist::expand(v).map_err(|e| err(field, e.to_string()))
            })
        };
        for (k, _) in &pairs {
            if !matches!(
                k.as_str(),
                "switchname" | "switches" | "nodes" | "linkspeed" | "blockname" | "blocksizes"
            ) {
                return Err(err(k, "unknown key (expected SwitchName, Switches, Nodes, LinkSpeed, BlockName or BlockSizes)".into()));
            }
        }
        match pairs[0].0.as_str() {
            "switchname" => {
                let name = pairs[0].1.to_string();
                model::fleet::check_name("SwitchName", &name)
                    .map_err(|e| err("SwitchName", e.to_string()))?;
                let s = Switch {
                    name,
                    switches: expand("Switches", get("switches"))?,
                    nodes: expand("Nodes", get("nodes"))?,
                    line,
                };
                if s.switches.is_empty() && s.nodes.is_empty() {
                    return Err(err(
                        "SwitchName",
                        format!("switch '{}' has neither Switches= nor Nodes=", s.name),
                    ));
                }
                switches.push(s);
            }
            "blockname" => {
                let name = pairs[0].1.to_string();
                model::fleet::check_name("BlockName", &name)
                    .map_err(|e| err("BlockName", e.to_string()))?;
                let nodes = expand("Nodes", get("nodes"))?;
                if nodes.is_empty() {
                    return Err(err("Nodes", format!("block '{name}' has no Nodes=")));
                }
                blocks.push(Block { name, nodes, line });
            }
            "blocksizes" => {
                let mut v = Vec::new();
                for part in pairs[0].1.split(',') {
                    let n: u32 = part.trim().parse().map_err(|_| {
                        err("BlockSizes", format!("'{part}' is not a positive number"))
                    })?;
                    if n == 0 {
                        return Err(err("BlockSizes", "sizes must be positive".into()));
                    }
                    v.push(n);
                }
                sizes = Some((v, line));
            }
            other => {
                return Err(err(
                    other,
                    "a line must start with SwitchName=, BlockName= or BlockSizes=".into(),
                ));
            }
        }
    }
    if !switches.is_empty() && (!blocks.is_empty() || sizes.is_some()) {
        return Err(SourceError::new(
            file,
            None,
            "topology",
            "mixes SwitchName (tree) and BlockName (block) lines; one file holds one plugin",
        ));
    }
    let Some(itype) = catalog.get(&options.instance_type) else {
        return Err(SourceError::new(
            file,
            None,
            "--instance-type",
            format!("unknown instance type '{}'", options.instance_type),
        ));
    };
    let mut b = FleetBuilder::new();
    let pool = b
        .add_pool(CapacityPool {
            name: format!(
                "{}-{}-{}",
                options.cloud, options.region, options.instance_type
            ),
            cloud: options.cloud.clone(),
            region: options.region.clone(),
            instance_type: options.instance_type.clone(),
            pricing: options.pricing,
            price_per_hour: itype.example_price_per_hour,
        })
        .map_err(|e| SourceError::new(file, None, "options", e.to_string()))?;
    let res = itype.resources();
    let add = |b: &mut FleetBuilder, name: &str, loc: &Location, line: usize| {
        b.add_node(name, pool, loc, res, NodeState::Ready)
            .map(|_| ())
            .map_err(|e| SourceError::new(file, Some(line), "Nodes", e.to_string()))
    };
    if !switches.is_empty() {
        let index: FxHashMap<&str, usize> = switches
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        if index.len() != switches.len() {
            let dup = switches.iter().find(|s| {
                index[s.name.as_str()]
                    != switches.iter().position(|x| x.name == s.name).unwrap_or(0)
            });
            let (name, line) = dup.map_or(("?".into(), 0), |s| (s.name.clone(), s.line));
            return Err(SourceError::new(
                file,
                Some(line),
                "SwitchName",
                format!("switch '{name}' is declared twice"),
            ));
        }
        let mut parent = vec![usize::MAX; switches.len()];
        for (i, s) in switches.iter().enumerate() {
            for c in &s.switches {
                let Some(&ci) = index.get(c.as_str()) else {
                    return Err(SourceError::new(
                        file,
                        Some(s.line),
                        "Switches",
                        format!("no switch named '{c}'"),
                    ));
                };
                if parent[ci] != usize::MAX || ci == i {
                    return Err(SourceError::new(
                        file,
                        Some(s.line),
                        "Switches",
                        format!("switch '{c}' has more than one parent"),
                    ));
                }
                parent[ci] = i;
            }
        }
        let mut paths: Vec<Option<Vec<String>>> = vec![None; switches.len()];
        for i in 0..switches.len() {
            let mut chain = vec![i];
            while parent[*chain.last().unwrap_or(&i)] != usize::MAX {
                let p = parent[*chain.last().unwrap_or(&i)];
                if chain.len() > switches.len() {
                    return Err(SourceError::new(
                        file,
                        Some(switches[i].line),
                        "Switches",
                        format!("switch '{}' is part of a cycle", switches[i].name),
                    ));
                }
                chain.push(p);
            }
            if chain.len() > 8 {
                return Err(SourceError::new(
                    file,
                    Some(switches[i].line),
                    "Switches",
                    "more than 8 switch levels",
                ));
            }
            paths[i] = Some(
                chain
                    .iter()
                    .rev()
                    .map(|&k| switches[k].name.clone())
                    .collect(),
            );
        }
        let mut seen = FxHashSet::default();
        for (i, s) in switches.iter().enumerate() {
            let loc = Location {
                zone: options.zone.clone(),
                network: paths[i].clone().unwrap_or_default(),
                domain: None,
            };
            for n in &s.nodes {
                if !seen.insert(n.as_str()) {
                    return Err(SourceError::new(
                        file,
                        Some(s.line),
                        "Nodes",
                        format!("node '{n}' is under more than one switch"),
                    ));
                }
                add(&mut b, n, &loc, s.line)?;
            }
        }
    } else {
        let base = match &sizes {
            Some((v, _)) => v[0],
            None => blocks
                .iter()
                .map(|b| b.nodes.len() as u32)
                .max()
                .unwrap_or(1),
        };
        let mut levels: Vec<u32> = Vec::new();
        if let Some((v, line)) = &sizes {
            for w in v.windows(2) {
                if w[1] <= w[0] || w[1] % base != 0 {
                    return Err(SourceError::new(
                        file,
                        Some(*line),
                        "BlockSizes",
                        "sizes must ascend and be multiples of the first (the base block)",
                    ));
                }
            }
            levels = v[1..].iter().rev().copied().collect();
        }
        for (j, blk) in blocks.iter().enumerate() {
            if blk.nodes.len() as u32 > base {
                return Err(SourceError::new(
                    file,
                    Some(blk.line),
                    "Nodes",
                    format!(
                        "block '{}' has {} nodes, more than the base block size {base}",
                        blk.name,
                        blk.nodes.len()
                    ),
                ));
            }
            let loc = Location {
                zone: options.zone.clone(),
                network: levels
                    .iter()
                    .map(|s| format!("bs{s}-{}", j as u32 / (s / base)))
                    .collect(),
                domain: Some(blk.name.clone()),
            };
            for n in &blk.nodes {
                add(&mut b, n, &loc, blk.line)?;
            }
        }
    }
    if b.node_count() == 0 {
        return Err(SourceError::new(
            file,
            None,
            "topology",
            "no switches or blocks with nodes",
        ));
    }
    b.build()
        .map_err(|e| SourceError::new(file, None, "topology", e.to_string()))
}

/// Names for topology nodes of one kind: the plain name when unique, else the path.
fn unique_names(fleet: &Fleet, ids: &[TopoId]) -> FxHashMap<TopoId, String> {
    let mut count: FxHashMap<&str, u32> = FxHashMap::default();
    for id in ids {
        *count.entry(&fleet.topo_node(*id).name).or_default() += 1;
    }
    ids.iter()
        .map(|&id| {
            let name = &*fleet.topo_node(id).name;
            let s = if count[name] == 1 {
                name.to_string()
            } else {
                fleet.topo_path(id).replace('/', "_")
            };
            (id, s)
        })
        .collect()
}

/// Writes a fleet as `topology.conf`.
pub fn export(fleet: &Fleet, format: SlurmFormat) -> String {
    match format {
        SlurmFormat::Tree => export_tree(fleet),
        SlurmFormat::Block => export_block(fleet),
    }
}

fn export_tree(fleet: &Fleet) -> String {
    let topo = fleet.topo();
    // Switches are network nodes; nodes with no network node above hang off a switch per zone.
    let is_switch = |t: &model::TopoNode| matches!(t.kind, TopoKind::Network { .. });
    let mut own: FxHashMap<TopoId, Vec<&str>> = FxHashMap::default();
    let mut zone_switch: Vec<TopoId> = Vec::new();
    for n in fleet.nodes() {
        let holder = fleet
            .ancestors(n.parent)
            .find(|a| is_switch(fleet.topo_node(*a)))
            .or_else(|| fleet.zone_of(n.parent));
        if let Some(h) = holder {
            if !is_switch(fleet.topo_node(h)) && !zone_switch.contains(&h) {
                zone_switch.push(h);
            }
            own.entry(h).or_default().push(&n.name);
        }
    }
    let switch_ids: Vec<TopoId> = (0..topo.len() as u32)
        .map(TopoId)
        .filter(|t| is_switch(fleet.topo_node(*t)) || zone_switch.contains(t))
        .collect();
    let names = unique_names(fleet, &switch_ids);
    let mut out =
        String::from("# topology.conf (topology/tree) written by stargrid fleet export\n");
    // Children before parents: post-order over the tree.
    fn visit(fleet: &Fleet, t: TopoId, emit: &mut dyn FnMut(TopoId)) {
        for c in &fleet.topo_node(t).children {
            visit(fleet, *c, emit);
        }
        emit(t);
    }
    visit(fleet, TopoId(0), &mut |t| {
        let Some(name) = names.get(&t) else { return };
        let child_switches: Vec<&str> = fleet
            .topo_node(t)
            .children
            .iter()
            .filter_map(|c| names.get(c).map(String::as_str))
            .collect();
        let _ = write!(out, "SwitchName={name}");
        if !child_switches.is_empty() {
            let _ = write!(out, " Switches={}", hostlist::compress(&child_switches));
        }
        if let Some(nodes) = own.get(&t) {
            let _ = write!(out, " Nodes={}", hostlist::compress(nodes));
        }
        out.push('\n');
    });
    out
}

fn export_block(fleet: &Fleet) -> String {
    let domains = fleet.domains();
    let names = unique_names(fleet, domains);
    let sizes: Vec<u32> = domains
        .iter()
        .map(|d| fleet.topo_node(*d).nodes.len() as u32)
        .collect();
    let base = sizes.iter().copied().max().unwrap_or(1);
    let mut block_sizes = vec![base];
    // Larger sizes: network levels, bottom up, while every node of the level holds the same
    // number of whole base blocks.
    if sizes.iter().all(|s| *s == base) {
        let max_level = fleet
            .topo()
            .iter()
            .filter_map(|t| match t.kind {
                TopoKind::Network { level } => Some(level),
                _ => None,
            })
            .max();
        if let Some(max_level) = max_level {
            for level in (0..=max_level).rev() {
                let counts: FxHashSet<u32> = fleet
                    .topo()
                    .iter()
                    .filter(|t| t.kind == TopoKind::Network { level })
                    .map(|t| t.domains.len() as u32)
                    .collect();
                let uniform = domains.iter().all(|d| {
                    fleet
                        .ancestors(*d)
                        .any(|a| fleet.topo_node(a).kind == TopoKind::Network { level })
                });
                match (counts.len(), counts.iter().next()) {
                    (1, Some(&c)) if uniform && c > 0 => {
                        let s = c * base;
                        if s > *block_sizes.last().unwrap_or(&0) {
                            block_sizes.push(s);
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    let mut out =
        String::from("# topology.conf (topology/block) written by stargrid fleet export\n");
    for d in domains {
        let t = fleet.topo_node(*d);
        let nodes: Vec<&str> = fleet.nodes()[t.nodes.start as usize..t.nodes.end as usize]
            .iter()
            .map(|n| &*n.name)
            .collect();
        let _ = writeln!(
            out,
            "BlockName={} Nodes={}",
            names[d],
            hostlist::compress(&nodes)
        );
    }
    let sizes: Vec<String> = block_sizes.iter().map(u32::to_string).collect();
    let _ = writeln!(out, "BlockSizes={}", sizes.join(","));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, GenSpec};
    use proptest::prelude::*;

    const TREE: &str = "# topology.conf (topology/tree) written by stargrid fleet export
SwitchName=s0 Nodes=tux[0-3]
SwitchName=s1 Nodes=tux[4-7,12]
SwitchName=s2 Switches=s[0-1]
SwitchName=s3 Nodes=tux[18-20]
SwitchName=top Switches=s[2-3]
";

    const BLOCK: &str = "# topology.conf (topology/block) written by stargrid fleet export
BlockName=b1 Nodes=n[00-03]
BlockName=b2 Nodes=n[04-07]
BlockName=b3 Nodes=n[08-11]
BlockName=b4 Nodes=n[12-15]
BlockSizes=4,8,16
";

    fn opts() -> SlurmImport {
        SlurmImport::default()
    }

    #[test]
    fn tree_round_trips_and_builds_levels() {
        let f = import("t.conf", TREE, &InstanceCatalog::builtin(), &opts()).unwrap();
        assert_eq!(f.summary().nodes, 12);
        assert_eq!(f.summary().network_levels, 3);
        let n = f.node_by_name("tux12").unwrap();
        assert_eq!(f.network_path(f.node(n).parent), ["top", "s2", "s1"]);
        assert_eq!(export(&f, SlurmFormat::Tree), TREE);
    }

    #[test]
    fn block_round_trips_with_sizes() {
        let f = import("b.conf", BLOCK, &InstanceCatalog::builtin(), &opts()).unwrap();
        let s = f.summary();
        assert_eq!((s.nodes, s.nvlink_domains, s.network_levels), (16, 4, 2));
        let n = f.node_by_name("n09").unwrap();
        assert_eq!(f.network_path(f.node(n).parent), ["bs16-0", "bs8-1"]);
        assert_eq!(export(&f, SlurmFormat::Block), BLOCK);
    }

    #[test]
    fn generated_fleet_keeps_its_grouping_through_both_formats() {
        let spec = GenSpec {
            gpus: 72 * 40,
            cpu_hosts: 0,
            ..GenSpec::default()
        };
        let f = generate(&spec, &InstanceCatalog::builtin()).unwrap();
        // Block: every node keeps its domain-mates.
        let text = export(&f, SlurmFormat::Block);
        let g = import("b.conf", &text, &InstanceCatalog::builtin(), &opts()).unwrap();
        let mates = |f: &Fleet, name: &str| -> Vec<String> {
            let n = f.node_by_name(name).unwrap();
            let d = f.topo_node(f.domain_of(n).unwrap());
            f.nodes()[d.nodes.start as usize..d.nodes.end as usize]
                .iter()
                .map(|n| n.name.to_string())
                .collect()
        };
        for n in f.nodes().iter().step_by(7) {
            assert_eq!(mates(&f, &n.name), mates(&g, &n.name));
        }
        assert_eq!(export(&g, SlurmFormat::Block), text);
        // Tree: every node keeps the same switch-mates.
        let text = export(&f, SlurmFormat::Tree);
        let h = import("t.conf", &text, &InstanceCatalog::builtin(), &opts()).unwrap();
        let leaf = |f: &Fleet, name: &str| -> Vec<String> {
            let n = f.node_by_name(name).unwrap();
            let sw = f
                .ancestors(f.node(n).parent)
                .find(|a| matches!(f.topo_node(*a).kind, TopoKind::Network { .. }))
                .unwrap();
            let t = f.topo_node(sw);
            f.nodes()[t.nodes.start as usize..t.nodes.end as usize]
                .iter()
                .map(|n| n.name.to_string())
                .collect()
        };
        for n in f.nodes().iter().step_by(11) {
            assert_eq!(leaf(&f, &n.name), leaf(&h, &n.name));
        }
        assert_eq!(export(&h, SlurmFormat::Tree), text);
    }

    #[test]
    fn errors_name_line_field_and_reason() {
        let cat = InstanceCatalog::builtin();
        let cases = [
            ("SwitchName=a Nodes=x[1-\n", 1, "Nodes", "never closed"),
            (
                "SwitchName=a Nodes=x1\nSwitchName=b Switches=zz\n",
                2,
                "Switches",
                "no switch named 'zz'",
            ),
            (
                "SwitchName=a Nodes=x1\nSwitchName=b Nodes=x1\n",
                2,
                "Nodes",
                "more than one switch",
            ),
            (
                "SwitchName=a Switches=b\nSwitchName=b Switches=a\n",
                1,
                "Switches",
                "cycle",
            ),
            ("SwitchName=a\n", 1, "SwitchName", "neither"),
            ("Colour=red\n", 1, "colour", "unknown key"),
            (
                "BlockName=b Nodes=n[1-5]\nBlockSizes=4\n",
                1,
                "Nodes",
                "more than the base",
            ),
            (
                "BlockName=b Nodes=n[1-4]\nBlockSizes=4,6\n",
                2,
                "BlockSizes",
                "multiples",
            ),
            ("BlockSizes=x\n", 1, "BlockSizes", "not a positive number"),
            ("SwitchName=a Nodes=x1 garbage\n", 1, "garbage", "Key=Value"),
        ];
        for (text, line, field, why) in cases {
            let e = import("c.conf", text, &cat, &opts()).unwrap_err();
            assert_eq!(
                (e.line, e.field.as_str()),
                (Some(line), field),
                "{text}: {e}"
            );
            assert!(e.reason.contains(why), "{text}: {e}");
        }
        let e = import(
            "c.conf",
            "SwitchName=a Nodes=x1\nBlockName=b Nodes=y1\n",
            &cat,
            &opts(),
        )
        .unwrap_err();
        assert!(e.reason.contains("mixes"), "{e}");
        let bad = SlurmImport {
            instance_type: "nope".into(),
            ..opts()
        };
        let e = import("c.conf", TREE, &cat, &bad).unwrap_err();
        assert!(e.reason.contains("unknown instance type 'nope'"), "{e}");
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_not_a_panic(s in "\\PC{0,200}") {
            let _ = import("g.conf", &s, &InstanceCatalog::builtin(), &opts());
        }

        #[test]
        fn structured_garbage_never_panics(lines in proptest::collection::vec(
            ("(SwitchName|BlockName|Switches|Nodes|BlockSizes)", "[a-c\\[\\]0-9,-]{0,12}"), 0..8)) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let _ = import("s.conf", &text, &InstanceCatalog::builtin(), &opts());
        }
    }
}
