//! The queue's rules as data: [`SchedConfig`] (queue order, switches for backfill, preemption,
//! head-of-line blocking and topology, and their tunables) and the built-in policies by name.

use super::*;

/// Tunables of the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedConfig {
    /// Seconds a preempted job gets to checkpoint before it is stopped.
    pub grace_period: Time,
    /// A job is preempted at most this many times (no thrash); then it is protected.
    pub max_preemptions: u32,
    /// A job that started less than this many seconds ago is not preempted.
    pub min_runtime: Time,
    /// Preemption searches per pass (each may release many victims tentatively).
    pub preemption_searches_per_pass: u32,
    /// Order in which pending jobs are considered.
    pub order: QueueOrder,
    /// Reserve for the first blocked job and backfill around it.
    pub backfill: bool,
    /// Let blocked jobs preempt lower classes (and reclaim lent quota).
    pub preemption: bool,
    /// Stop a pass at the first job that cannot start (strict FIFO).
    pub head_of_line_blocking: bool,
    /// Keep gangs on NVLink domains and low network nodes; `false` lets them scatter node by
    /// node (segment = 1).
    pub topology: bool,
    /// A reservation is recomputed (to move it earlier) at most this often, in seconds; in
    /// between it is kept as it was, which never delays it.
    pub reservation_refresh: Time,
    /// A job whose preemption search found nothing searches again only after something
    /// started or stopped *and* this many seconds passed; the wait doubles with each fruitless
    /// search in a row, up to `preemption_retry_max`.
    pub preemption_retry: Time,
    /// The longest wait between two preemption searches of one job, in seconds.
    pub preemption_retry_max: Time,
    /// A pass considers at most this many pending jobs, in queue order (a deep queue costs
    /// a pass no more than this); the rest wait for the next full pass.
    pub pass_depth: usize,
    /// A pass is full (considers every pending job) at least this often, in seconds.
    pub full_pass_interval: Time,
    /// How single-node work (shares, CPU work, one node of whole GPUs) chooses its node.
    #[serde(default)]
    pub node_scoring: NodeScoring,
}

/// Orders the queue can use (the policies users know, for comparison in the simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOrder {
    /// Priority class, then weighted dominant-resource share, then submission (Stargrid).
    PriorityFairShare,
    /// Priority class, then submission (Slurm's multifactor without fair share).
    PriorityFifo,
    /// Submission only.
    Fifo,
    /// Shortest declared time limit first (an oracle when limits are the true durations).
    ShortestLimitFirst,
    /// Two queues by attained service (GPU-seconds so far), FIFO within each; with preemption
    /// on, a first-queue job preempts second-queue jobs of its class (Tiresias-style).
    LeastAttained {
        /// GPU-seconds after which a job moves to the second queue.
        threshold_gpu_seconds: u64,
    },
}

/// Which rules the queue decides by. Journals since format 1 record each decision, so a rule
/// that changes never changes what they replay into; a format-0 journal holds inputs alone, and
/// is decided again by this build's rules except where a rule is switched back here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecisionRules {
    /// This build's.
    #[default]
    Current,
    /// This build's, except that every victim of the shortest cheapest-first prefix is
    /// preempted, none put back, as the builds that wrote format-0 journals did.
    Format0,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            grace_period: 120,
            max_preemptions: 3,
            min_runtime: 600,
            preemption_searches_per_pass: 8,
            order: QueueOrder::PriorityFairShare,
            backfill: true,
            preemption: true,
            head_of_line_blocking: false,
            topology: true,
            reservation_refresh: 60,
            preemption_retry: 60,
            preemption_retry_max: 960,
            pass_depth: 500,
            full_pass_interval: 300,
            node_scoring: NodeScoring::BestFit,
        }
    }
}

impl SchedConfig {
    /// Names of the built-in policies.
    pub const POLICIES: [&'static str; 6] =
        ["stargrid", "fifo", "first-fit", "slurm", "sjf", "las"];

    /// A built-in policy by name: `stargrid` (the default), `fifo` (strict, head-of-line
    /// blocking), `first-fit` (FIFO order, any job that fits starts, no topology), `slurm`
    /// (priority + backfill), `sjf` (shortest time limit first), `las` (two-queue least
    /// attained service).
    pub fn policy(name: &str) -> Option<SchedConfig> {
        let base = SchedConfig::default();
        let plain = SchedConfig {
            backfill: false,
            preemption: false,
            ..base.clone()
        };
        Some(match name {
            "stargrid" => base,
            "fifo" => SchedConfig {
                order: QueueOrder::Fifo,
                head_of_line_blocking: true,
                ..plain
            },
            "first-fit" => SchedConfig {
                order: QueueOrder::Fifo,
                topology: false,
                ..plain
            },
            "slurm" => SchedConfig {
                order: QueueOrder::PriorityFifo,
                backfill: true,
                ..plain
            },
            "sjf" => SchedConfig {
                order: QueueOrder::ShortestLimitFirst,
                ..plain
            },
            "las" => SchedConfig {
                order: QueueOrder::LeastAttained {
                    threshold_gpu_seconds: 3600 * 8,
                },
                preemption: true,
                ..plain
            },
            _ => return None,
        })
    }
}
