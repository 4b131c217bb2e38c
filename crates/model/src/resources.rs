//! Resources a node offers or a workload asks for, and the accelerator models Stargrid knows.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Accelerator model. The engine never mixes models inside one gang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GpuModel {
    /// NVIDIA GB200 (Blackwell, Grace-coupled), sold in NVL72 UltraServers.
    #[serde(rename = "GB200")]
    Gb200,
    /// NVIDIA GB300 (Blackwell Ultra), sold in NVL72 UltraServers.
    #[serde(rename = "GB300")]
    Gb300,
    /// NVIDIA B200 (HGX, 8 per host).
    #[serde(rename = "B200")]
    B200,
    /// NVIDIA H200 (HGX, 8 per host).
    #[serde(rename = "H200")]
    H200,
    /// NVIDIA H100 (HGX, 8 per host).
    #[serde(rename = "H100")]
    H100,
    /// AWS Trainium2 (16 per trn2 host).
    #[serde(rename = "Trainium2")]
    Trainium2,
    /// NVIDIA A100 80 GB (HGX, 8 per host).
    #[serde(rename = "A100")]
    A100,
    /// NVIDIA V100 32 GB (8 per host).
    #[serde(rename = "V100")]
    V100,
    /// NVIDIA T4 (inference; 1 to 8 per host).
    #[serde(rename = "T4")]
    T4,
    /// NVIDIA A10 / A10G (inference; 1 to 8 per host).
    #[serde(rename = "A10")]
    A10,
    /// NVIDIA L4 (inference; 1 to 8 per host).
    #[serde(rename = "L4")]
    L4,
    /// AMD Instinct MI300X (8 per host).
    #[serde(rename = "MI300X")]
    Mi300x,
    /// Google TPU v5p chips (4 per host, in pods).
    #[serde(rename = "TPUv5p")]
    TpuV5p,
    /// Google TPU v6e (Trillium) chips (4 or 8 per host).
    #[serde(rename = "TPUv6e")]
    TpuV6e,
}

/// What kind of accelerator a model is: tasks see their devices under the kind's own
/// runtime, and a TPU is never counted as a GPU of another model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcceleratorKind {
    /// NVIDIA GPUs (CUDA).
    NvidiaGpu,
    /// AMD GPUs (ROCm).
    AmdGpu,
    /// AWS Trainium (Neuron).
    Trainium,
    /// Google TPUs.
    Tpu,
}

impl GpuModel {
    /// Every model, in a fixed order (used for per-model indexes).
    pub const ALL: [GpuModel; 14] = [
        GpuModel::Gb200,
        GpuModel::Gb300,
        GpuModel::B200,
        GpuModel::H200,
        GpuModel::H100,
        GpuModel::Trainium2,
        GpuModel::A100,
        GpuModel::V100,
        GpuModel::T4,
        GpuModel::A10,
        GpuModel::L4,
        GpuModel::Mi300x,
        GpuModel::TpuV5p,
        GpuModel::TpuV6e,
    ];

    /// The kind of accelerator.
    pub fn kind(self) -> AcceleratorKind {
        match self {
            GpuModel::Trainium2 => AcceleratorKind::Trainium,
            GpuModel::Mi300x => AcceleratorKind::AmdGpu,
            GpuModel::TpuV5p | GpuModel::TpuV6e => AcceleratorKind::Tpu,
            _ => AcceleratorKind::NvidiaGpu,
        }
    }

    /// Device memory of one accelerator, in GiB.
    pub fn memory_gib(self) -> u32 {
        match self {
            GpuModel::Gb200 => 186,
            GpuModel::Gb300 => 288,
            GpuModel::B200 => 180,
            GpuModel::H200 => 141,
            GpuModel::H100 => 80,
            GpuModel::Trainium2 => 96,
            GpuModel::A100 => 80,
            GpuModel::V100 => 32,
            GpuModel::T4 => 16,
            GpuModel::A10 => 24,
            GpuModel::L4 => 24,
            GpuModel::Mi300x => 192,
            GpuModel::TpuV5p => 95,
            GpuModel::TpuV6e => 32,
        }
    }

    /// The smallest MIG profile of this model that holds `milli` thousandths of one GPU, for
    /// models with MIG (seven compute slices; memory in GB as NVIDIA names the profiles).
    pub fn mig_profile(self, milli: u16) -> Option<&'static str> {
        let names: [&'static str; 5] = match self {
            GpuModel::H100 | GpuModel::A100 => {
                ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
            }
            GpuModel::H200 => ["1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"],
            GpuModel::B200 => ["1g.23gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"],
            _ => return None,
        };
        // Compute slices of seven: the profile of the fewest slices that covers the share.
        let slices = (u32::from(milli) * 7).div_ceil(1000).max(1);
        Some(match slices {
            1 => names[0],
            2 => names[1],
            3 => names[2],
            4 => names[3],
            _ => names[4],
        })
    }

    /// Stable small index of the model, for arrays indexed by model.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name users write in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GpuModel::Gb200 => "GB200",
            GpuModel::Gb300 => "GB300",
            GpuModel::B200 => "B200",
            GpuModel::H200 => "H200",
            GpuModel::H100 => "H100",
            GpuModel::Trainium2 => "Trainium2",
            GpuModel::A100 => "A100",
            GpuModel::V100 => "V100",
            GpuModel::T4 => "T4",
            GpuModel::A10 => "A10",
            GpuModel::L4 => "L4",
            GpuModel::Mi300x => "MI300X",
            GpuModel::TpuV5p => "TPUv5p",
            GpuModel::TpuV6e => "TPUv6e",
        }
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an accelerator model name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GPU model '{0}' (known: {known})", known = known_models())]
pub struct UnknownGpuModel(pub String);

fn known_models() -> String {
    let names: Vec<&str> = GpuModel::ALL.iter().map(|m| m.name()).collect();
    names.join(", ")
}

impl FromStr for GpuModel {
    type Err = UnknownGpuModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GpuModel::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownGpuModel(s.to_string()))
    }
}

/// Resources of one node (its capacity) or asked for per node by a workload.
///
/// Compact on purpose: a 500,000-GPU fleet has hundreds of thousands of nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Accelerator model; `None` for CPU-only hosts.
    pub gpu_model: Option<GpuModel>,
    /// Number of accelerators (at most [`Resources::MAX_GPUS`]).
    pub gpus: u8,
    /// CPU in millicores (1000 = one vCPU).
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Local disk in GiB.
    pub disk_gib: u32,
}

impl Resources {
    /// Most accelerators one node may have (device sets are 32-bit masks).
    pub const MAX_GPUS: u8 = 32;

    /// Whether `self` (free resources) can hold `ask`, ignoring the GPU model.
    pub fn holds(&self, ask: &Resources) -> bool {
        self.gpus >= ask.gpus
            && self.cpu_millis >= ask.cpu_millis
            && self.memory_mib >= ask.memory_mib
            && self.disk_gib >= ask.disk_gib
    }
}

#[cfg(test)]
mod tests {
    use super::GpuModel;

    #[test]
    fn a_share_names_the_smallest_mig_profile_that_holds_it() {
        let h100 = |m| GpuModel::H100.mig_profile(m);
        assert_eq!(h100(1), Some("1g.10gb"));
        assert_eq!(h100(142), Some("1g.10gb"));
        assert_eq!(h100(143), Some("2g.20gb"));
        assert_eq!(h100(500), Some("4g.40gb"));
        assert_eq!(h100(999), Some("7g.80gb"));
        assert_eq!(GpuModel::H200.mig_profile(300), Some("3g.71gb"));
        assert_eq!(GpuModel::Trainium2.mig_profile(300), None);
    }
}
