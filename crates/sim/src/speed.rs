//! Placement-sensitive speed: a gang in one NVLink domain runs at full speed; one spread
//! over several domains runs slower the higher the network node that joins them. The model
//! is a table indexed by "levels spanned" (0 = one domain, 1 = domains under one lowest
//! network node, 2 = under the next level up, ...), configurable, with a documented default.
//! A job may also run slower on some accelerator models than on others (as Gavel and Sia
//! model it): a factor per model, 1.0 unless configured, multiplies the placement's.

use model::GpuModel;
use serde::{Deserialize, Serialize};

/// Speed factor by levels spanned (the last entry applies to anything higher), and by model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeedModel {
    /// `factors[L]`: fraction of full speed for a gang spanning L levels.
    pub factors: Vec<f64>,
    /// Fraction of full speed on a model (absent: 1.0), e.g. an older model at 0.5.
    #[serde(default)]
    pub models: Vec<(GpuModel, f64)>,
}

impl Default for SpeedModel {
    /// 1.0 in one domain, 0.92 across domains under one block, 0.85 under one aggregation
    /// node, 0.75 under one spine, 0.65 across spines (all-reduce time grows with the hops and
    /// the oversubscription above the rack, in the range reported for large training runs).
    fn default() -> Self {
        SpeedModel {
            factors: vec![1.0, 0.92, 0.85, 0.75, 0.65],
            models: Vec::new(),
        }
    }
}

impl SpeedModel {
    /// Speed factor for a gang spanning `levels` (0 = one domain).
    pub fn factor(&self, levels: u8) -> f64 {
        let i = usize::from(levels).min(self.factors.len().saturating_sub(1));
        self.factors.get(i).copied().unwrap_or(1.0).clamp(0.01, 1.0)
    }

    /// Speed factor of `model` (1.0 unless configured).
    pub fn model_factor(&self, model: GpuModel) -> f64 {
        self.models
            .iter()
            .find(|(m, _)| *m == model)
            .map_or(1.0, |(_, f)| f.clamp(0.01, 1.0))
    }
}
