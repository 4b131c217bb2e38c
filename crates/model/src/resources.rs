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
}

impl GpuModel {
    /// Every model, in a fixed order (used for per-model indexes).
    pub const ALL: [GpuModel; 6] = [
        GpuModel::Gb200,
        GpuModel::Gb300,
        GpuModel::B200,
        GpuModel::H200,
        GpuModel::H100,
        GpuModel::Trainium2,
    ];

    /// Device memory of one accelerator, in GiB.
    pub fn memory_gib(self) -> u32 {
        match self {
            GpuModel::Gb200 => 186,
            GpuModel::Gb300 => 288,
            GpuModel::B200 => 180,
            GpuModel::H200 => 141,
            GpuModel::H100 => 80,
            GpuModel::Trainium2 => 96,
        }
    }

    /// The smallest MIG profile of this model that holds `milli` thousandths of one GPU, for
    /// models with MIG (seven compute slices; memory in GB as NVIDIA names the profiles).
    pub fn mig_profile(self, milli: u16) -> Option<&'static str> {
        let names: [&'static str; 5] = match self {
            GpuModel::H100 => ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
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
#[error("unknown GPU model '{0}' (known: GB200, GB300, B200, H200, H100, Trainium2)")]
pub struct UnknownGpuModel(pub String);

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
