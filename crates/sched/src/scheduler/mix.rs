//! The mix of shapes a node score weighs (`SchedConfig.node_scoring`): the single-node shapes
//! of the jobs the queue holds, queued or running, counted as they come and go (O(1) per job),
//! and handed to the engine as a [`NodeScore`] when the mix or the choice changed (at most
//! [`MAX_MIX_SHAPES`] shapes, the most common).

use super::*;
use crate::share::{MixShape, NodeScore};
use model::GpuModel;

/// Most shapes a mix hands the engine (a gradient costs per shape and node).
pub const MAX_MIX_SHAPES: usize = 32;

/// How single-node work chooses its node (see [`NodeScore`]); the gradients weigh the shapes
/// of the single-node jobs the queue holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeScoring {
    /// The fullest node and tightest device that fit.
    #[default]
    BestFit,
    /// Partly used devices first, then partly used nodes.
    Packing,
    /// Tetris's alignment of free resources with the ask.
    DotProduct,
    /// The fragmentation gradient, shapes weighted by how many jobs have them.
    Fragmentation,
    /// Stargrid's packed gradient, shapes weighted by the GPU capacity they take.
    PackedGradient,
}

impl NodeScoring {
    /// Every choice, as written on the command line.
    pub const NAMES: [&'static str; 5] = [
        "best-fit",
        "packing",
        "dot-product",
        "fragmentation",
        "packed-gradient",
    ];

    /// The choice named `name`.
    pub fn parse(name: &str) -> Option<NodeScoring> {
        let all = [
            NodeScoring::BestFit,
            NodeScoring::Packing,
            NodeScoring::DotProduct,
            NodeScoring::Fragmentation,
            NodeScoring::PackedGradient,
        ];
        Self::NAMES.iter().position(|n| *n == name).map(|i| all[i])
    }
}

/// A single-node shape: model, whole devices, share, CPU, memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MixKey {
    model: GpuModel,
    gpus: u8,
    gpu_milli: u16,
    cpu_millis: u32,
    memory_mib: u32,
}

/// Single-node shapes of the live jobs and how many jobs have each.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShapeMix {
    counts: BTreeMap<MixKey, u64>,
    /// Bumped by every count that changes.
    version: u64,
    /// The version and choice the engine's score was last built from.
    built: Option<(u64, NodeScoring)>,
}

impl ShapeMix {
    fn key(g: &GangRequest) -> Option<MixKey> {
        (g.nodes == 1 && !g.is_unit()).then_some(MixKey {
            model: g.gpu,
            gpus: g.gpus_per_node,
            gpu_milli: g.gpu_milli,
            cpu_millis: g.cpu_millis_per_node,
            memory_mib: g.memory_mib_per_node,
        })
    }

    /// Counts a job of shape `g` in (`add`) or out.
    pub(crate) fn count(&mut self, g: &GangRequest, add: bool) {
        let Some(k) = Self::key(g) else {
            return;
        };
        if add {
            *self.counts.entry(k).or_default() += 1;
        } else if let Some(c) = self.counts.get_mut(&k) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&k);
            }
        }
        self.version += 1;
    }

    /// The score to give the engine, when the choice or (for a gradient) the mix changed.
    pub(crate) fn refresh(&mut self, scoring: NodeScoring) -> Option<NodeScore> {
        let gradient = matches!(
            scoring,
            NodeScoring::Fragmentation | NodeScoring::PackedGradient
        );
        let stamp = (if gradient { self.version } else { 0 }, scoring);
        if self.built == Some(stamp) {
            return None;
        }
        self.built = Some(stamp);
        Some(match scoring {
            NodeScoring::BestFit => NodeScore::BestFit,
            NodeScoring::Packing => NodeScore::Packing,
            NodeScoring::DotProduct => NodeScore::DotProduct,
            NodeScoring::Fragmentation => NodeScore::Fragmentation(self.shapes(false)),
            NodeScoring::PackedGradient => NodeScore::PackedGradient(self.shapes(true)),
        })
    }

    /// The most common shapes, weighted by count (or by count times GPUs taken).
    fn shapes(&self, by_demand: bool) -> Vec<MixShape> {
        let mut top: Vec<(&MixKey, &u64)> = self.counts.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        top.into_iter()
            .take(MAX_MIX_SHAPES)
            .map(|(k, &n)| {
                let shape = MixShape {
                    gpu: k.model,
                    gpus: if k.gpu_milli > 0 { 0 } else { k.gpus },
                    gpu_milli: k.gpu_milli,
                    cpu_millis: k.cpu_millis,
                    memory_mib: k.memory_mib,
                    weight: n as f64,
                };
                if by_demand {
                    shape.weighted_by_demand()
                } else {
                    shape
                }
            })
            .collect()
    }

    /// The counts, for the invariants: equal to a recount from the jobs.
    pub(crate) fn same_as(&self, jobs: &FxHashMap<WorkloadId, Job>) -> bool {
        let mut again = ShapeMix::default();
        for j in jobs.values() {
            again.count(&j.spec.gang, true);
        }
        again.counts == self.counts
    }
}
