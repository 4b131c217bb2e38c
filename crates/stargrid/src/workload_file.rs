//! Workload files for `stargrid place`: an ordered list of training gangs, inference
//! replicas and sandbox batches.
//!
//! ```toml
//! [[workloads]]
//! name = "pretrain"
//! kind = "training"          # training | inference-replica | sandboxes
//! gpu = "GB200"
//! nodes = 36
//! gpus_per_node = 4
//! segment = 18               # optional, nodes per NVLink-domain segment
//!
//! [[workloads]]
//! name = "agents"
//! kind = "sandboxes"
//! count = 100000
//! cpu_millis = 1000
//! memory_mib = 2048
//! ```

use anyhow::{anyhow, Result};
use fleet::file::field_line;
use model::{GangRequest, GpuModel, SandboxRequest, WorkloadClass};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    workloads: Vec<Spanned<RawWorkload>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: String,
    kind: String,
    gpu: Option<String>,
    nodes: Option<u32>,
    gpus_per_node: Option<u8>,
    cpu_millis_per_node: Option<u32>,
    memory_mib_per_node: Option<u32>,
    segment: Option<u32>,
    spares: Option<u32>,
    count: Option<u32>,
    cpu_millis: Option<u32>,
    memory_mib: Option<u32>,
}

/// One entry of a workload file.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A training gang or inference replica.
    Gang(String, GangRequest),
    /// A sandbox batch.
    Sandboxes(String, SandboxRequest),
}

impl Entry {
    pub fn name(&self) -> &str {
        match self {
            Entry::Gang(n, _) | Entry::Sandboxes(n, _) => n,
        }
    }
}

/// Parses a workload file; errors name the file, line, field and reason.
pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        anyhow!("{file}:{}: {}", line.unwrap_or(0), e.message())
    })?;
    let mut out = Vec::new();
    for (i, w) in raw.workloads.into_iter().enumerate() {
        let span = w.span();
        let w = w.into_inner();
        let err = |field: &'static str, reason: String| {
            anyhow!(
                "{file}:{}: workloads[{i}].{field}: {reason}",
                field_line(text, span.clone(), field)
            )
        };
        let need =
            |v: Option<u32>, field: &'static str| v.ok_or_else(|| err(field, "is required".into()));
        let entry = match w.kind.as_str() {
            "training" | "inference-replica" => {
                let gpu: GpuModel = w
                    .gpu
                    .as_deref()
                    .ok_or_else(|| err("gpu", "is required".into()))?
                    .parse()
                    .map_err(|e: model::resources::UnknownGpuModel| err("gpu", e.to_string()))?;
                let req = GangRequest {
                    class: if w.kind == "training" {
                        WorkloadClass::Training
                    } else {
                        WorkloadClass::InferenceReplica
                    },
                    gpu,
                    nodes: need(w.nodes, "nodes")?,
                    gpus_per_node: w
                        .gpus_per_node
                        .ok_or_else(|| err("gpus_per_node", "is required".into()))?,
                    cpu_millis_per_node: w.cpu_millis_per_node.unwrap_or(0),
                    memory_mib_per_node: w.memory_mib_per_node.unwrap_or(0),
                    segment: w.segment,
                    spares: w.spares.unwrap_or(0),
                    parts: Vec::new(),
                    gpu_milli: 0,
                    models: Vec::new(),
                };
                req.validate().map_err(|e| err(e.field, e.reason))?;
                Entry::Gang(w.name, req)
            }
            "sandboxes" => {
                let req = SandboxRequest {
                    count: need(w.count, "count")?,
                    cpu_millis: need(w.cpu_millis, "cpu_millis")?,
                    memory_mib: need(w.memory_mib, "memory_mib")?,
                };
                req.validate().map_err(|e| err(e.field, e.reason))?;
                Entry::Sandboxes(w.name, req)
            }
            other => {
                return Err(err(
                    "kind",
                    format!("'{other}' is not one of training, inference-replica, sandboxes"),
                ))
            }
        };
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"
[[workloads]]
name = "pretrain"
kind = "training"
gpu = "GB200"
nodes = 36
gpus_per_node = 4

[[workloads]]
name = "agents"
kind = "sandboxes"
count = 10
cpu_millis = 1000
memory_mib = 2048
"#;

    #[test]
    fn parses_entries_in_order() {
        let e = parse("w.toml", SAMPLE).unwrap();
        assert_eq!(e.len(), 2);
        assert!(matches!(&e[0], Entry::Gang(n, g) if n == "pretrain" && g.nodes == 36));
        assert!(matches!(&e[1], Entry::Sandboxes(n, s) if n == "agents" && s.count == 10));
    }

    #[test]
    fn errors_name_line_field_and_reason() {
        let e = parse("w.toml", &SAMPLE.replace("nodes = 36", "nodes = 0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.toml:6: workloads[0].nodes: must be 1..=1000000"
        );
        let e = parse("w.toml", &SAMPLE.replace("GB200", "P100")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("w.toml:5: workloads[0].gpu: unknown GPU model 'P100'"),
            "{e}"
        );
        let e = parse("w.toml", &SAMPLE.replace("count = 10\n", "")).unwrap_err();
        assert!(
            e.to_string().contains("workloads[1].count: is required"),
            "{e}"
        );
        let e = parse(
            "w.toml",
            &SAMPLE.replace("kind = \"sandboxes\"", "kind = \"vm\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("workloads[1].kind"), "{e}");
        let e = parse("w.toml", &SAMPLE.replace("nodes = 36", "nodes = -1")).unwrap_err();
        assert!(e.to_string().starts_with("w.toml:6:"), "{e}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = parse("g.toml", &s);
        }
    }
}
