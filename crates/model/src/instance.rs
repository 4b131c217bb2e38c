//! Instance types: what one node of a given type offers. A built-in table covers the instance
//! families in the generator and in AWS topology imports; users extend it from their fleet file.
//! An unknown type is an error, never a guess.

use crate::resources::{GpuModel, Resources};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// One instance type (a tray of an UltraServer, or a host).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    /// Provider's name, e.g. `p6e-gb200.36xlarge`.
    pub name: String,
    /// Accelerator model, absent for CPU hosts.
    #[serde(default)]
    pub gpu_model: Option<GpuModel>,
    /// Accelerators per node.
    #[serde(default)]
    pub gpus: u8,
    /// vCPUs per node, in millicores.
    pub cpu_millis: u32,
    /// Memory per node in MiB.
    pub memory_mib: u32,
    /// Local disk per node in GiB.
    #[serde(default)]
    pub disk_gib: u32,
    /// Example on-demand price per node-hour in USD (editable; not a quote).
    #[serde(default)]
    pub example_price_per_hour: f64,
}

impl InstanceType {
    /// Resources of one node of this type.
    pub fn resources(&self) -> Resources {
        Resources {
            gpu_model: self.gpu_model,
            gpus: self.gpus,
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
        }
    }
}

const GIB: u32 = 1024;

#[allow(clippy::too_many_arguments)]
fn builtin(
    name: &str,
    gpu_model: Option<GpuModel>,
    gpus: u8,
    vcpus: u32,
    memory_gib: u32,
    disk_gib: u32,
    price: f64,
) -> InstanceType {
    InstanceType {
        name: name.to_string(),
        gpu_model,
        gpus,
        cpu_millis: vcpus * 1000,
        memory_mib: memory_gib * GIB,
        disk_gib,
        example_price_per_hour: price,
    }
}

/// Lookup table of instance types by name.
#[derive(Clone, Debug, Default)]
pub struct InstanceCatalog {
    types: Vec<InstanceType>,
    by_name: FxHashMap<String, usize>,
}

/// Error when a catalogue entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// GPU count and GPU model disagree, or exceed what a node may hold.
    #[error("instance type '{name}': field '{field}': {reason}")]
    Invalid {
        /// Instance type name.
        name: String,
        /// Offending field.
        field: &'static str,
        /// Why it is wrong.
        reason: String,
    },
}

impl InstanceCatalog {
    /// The built-in table (example prices, on-demand, USD per node-hour).
    pub fn builtin() -> Self {
        use GpuModel::*;
        let mut c = InstanceCatalog::default();
        for t in [
            // AWS UltraServer trays: 18 trays of 4 GPUs form one NVL72 domain.
            builtin("p6e-gb200.36xlarge", Some(Gb200), 4, 144, 960, 22_500, 60.0),
            builtin(
                "p6e-gb300.36xlarge",
                Some(Gb300),
                4,
                144,
                1_280,
                22_500,
                75.0,
            ),
            builtin("p6-b200.48xlarge", Some(B200), 8, 192, 2_048, 30_720, 113.9),
            builtin("p5.48xlarge", Some(H100), 8, 192, 2_048, 30_720, 55.0),
            builtin("p5en.48xlarge", Some(H200), 8, 192, 2_048, 30_720, 63.3),
            builtin(
                "trn2.48xlarge",
                Some(Trainium2),
                16,
                192,
                2_048,
                7_600,
                44.7,
            ),
            // Earlier NVIDIA generations and inference GPUs.
            builtin("p4d.24xlarge", Some(A100), 8, 96, 1_152, 8_000, 21.96),
            builtin("p3dn.24xlarge", Some(V100), 8, 96, 768, 1_800, 31.2),
            builtin("g4dn.12xlarge", Some(T4), 4, 48, 192, 900, 3.9),
            builtin("g5.48xlarge", Some(A10), 8, 192, 768, 7_600, 16.3),
            builtin("g6.48xlarge", Some(L4), 8, 192, 768, 7_600, 13.4),
            // AMD and TPU hosts.
            builtin("ND_MI300X_v5", Some(Mi300x), 8, 96, 1_850, 28_000, 48.0),
            builtin("ct5p-hightpu-4t", Some(TpuV5p), 4, 208, 448, 0, 16.8),
            builtin("ct6e-standard-8t", Some(TpuV6e), 8, 180, 1_440, 0, 21.6),
            // Other clouds' GB200 trays (4 GPUs each, NVL72 racks).
            builtin("a4x-highgpu-4g", Some(Gb200), 4, 140, 884, 12_000, 58.0),
            builtin("ND_GB200_v6", Some(Gb200), 4, 128, 900, 16_000, 59.0),
            builtin("oci-bm.gpu.gb200.4", Some(Gb200), 4, 144, 960, 15_000, 56.0),
            // CPU hosts for agent sandboxes (192 vCPUs each).
            builtin("m7i.48xlarge", None, 0, 192, 768, 0, 9.7),
            builtin("c4-standard-192", None, 0, 192, 720, 0, 9.1),
            builtin("Standard_D192s_v6", None, 0, 192, 768, 0, 9.6),
            builtin("oci-e5.standard.192", None, 0, 192, 768, 0, 5.8),
        ] {
            // The built-in entries are valid by construction.
            c.insert_unchecked(t);
        }
        c
    }

    fn insert_unchecked(&mut self, t: InstanceType) {
        match self.by_name.get(&t.name) {
            Some(&i) => self.types[i] = t,
            None => {
                self.by_name.insert(t.name.clone(), self.types.len());
                self.types.push(t);
            }
        }
    }

    /// Adds or replaces an instance type after checking it.
    pub fn insert(&mut self, t: InstanceType) -> Result<(), CatalogError> {
        let invalid = |field, reason: &str| CatalogError::Invalid {
            name: t.name.clone(),
            field,
            reason: reason.to_string(),
        };
        if t.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if t.gpus > Resources::MAX_GPUS {
            return Err(invalid("gpus", "at most 32 accelerators per node"));
        }
        if t.gpus > 0 && t.gpu_model.is_none() {
            return Err(invalid("gpu_model", "required when gpus > 0"));
        }
        if t.gpus == 0 && t.gpu_model.is_some() {
            return Err(invalid("gpus", "must be > 0 when gpu_model is set"));
        }
        if t.cpu_millis == 0 {
            return Err(invalid("cpu_millis", "must be > 0"));
        }
        if t.memory_mib == 0 {
            return Err(invalid("memory_mib", "must be > 0"));
        }
        if !(t.example_price_per_hour.is_finite() && t.example_price_per_hour >= 0.0) {
            return Err(invalid(
                "example_price_per_hour",
                "must be a finite number >= 0",
            ));
        }
        self.insert_unchecked(t);
        Ok(())
    }

    /// Looks a type up by its exact name.
    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    /// All types, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &InstanceType> {
        self.types.iter()
    }

    /// Names of all known types, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.types.iter().map(|t| t.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_required_types() {
        let c = InstanceCatalog::builtin();
        for name in [
            "p6e-gb200.36xlarge",
            "p6e-gb300.36xlarge",
            "p6-b200.48xlarge",
            "p5.48xlarge",
            "p5en.48xlarge",
            "trn2.48xlarge",
            "p4d.24xlarge",
            "g6.48xlarge",
            "ND_MI300X_v5",
            "ct5p-hightpu-4t",
        ] {
            let t = c.get(name).unwrap_or_else(|| panic!("missing {name}"));
            assert!(t.gpus > 0 && t.gpu_model.is_some(), "{name}");
        }
        assert_eq!(c.get("p6e-gb200.36xlarge").map(|t| t.gpus), Some(4));
        assert!(c.get("p2.xlarge").is_none());
        // Every model has a built-in host type.
        for m in GpuModel::ALL {
            assert!(c.iter().any(|t| t.gpu_model == Some(m)), "{m}");
        }
    }

    #[test]
    fn insert_rejects_gpus_without_model() {
        let mut c = InstanceCatalog::builtin();
        let err = c
            .insert(InstanceType {
                name: "x".into(),
                gpu_model: None,
                gpus: 8,
                cpu_millis: 1000,
                memory_mib: 1024,
                disk_gib: 0,
                example_price_per_hour: 1.0,
            })
            .unwrap_err();
        assert!(err.to_string().contains("gpu_model"), "{err}");
    }
}
