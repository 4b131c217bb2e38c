//! Faults and changes in time: random per-node failures, failures and drains of any part of
//! the fleet (a host, an NVLink domain, a spine, a zone, a region, a whole provider) at given
//! times, and capacity that arrives in steps (a ramp). Read from a TOML file:
//!
//! ```toml
//! [random]                 # each node fails after an exponential time, is repaired after `repair`
//! node_mtbf = "5000h"
//! repair = "4h"
//!
//! [[fail]]                 # a scope goes down at `at`; back after `for` (else stays down)
//! at = "30d"
//! scope = "aws/us-east-1"  # a topology path (as `stargrid fleet show` prints it) or a host name
//! for = "1d"
//!
//! [[drain]]                # no new work on a scope (running work ends on its own)
//! at = "10d"
//! scope = "gcp/us-central1/usc1-a/sp0"
//! for = "2d"
//!
//! [[ramp]]                 # the scope's nodes arrive in `steps` equal parts, `every` apart
//! scope = "oci"            # from `start` (parts end on NVLink-domain boundaries)
//! start = "0d"
//! every = "30d"
//! steps = 12
//! ```
//!
//! Durations are whole seconds or a number with `s`, `m`, `h`, `d` or `w`.

use crate::run::FaultSpec;
use model::{Fleet, NodeId};
use sched::Time;
use serde::Deserialize;
use std::ops::Range;

/// What a timed change does to its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The nodes go down; work on them fails.
    Fail,
    /// The nodes take no new work; running work stays until it ends.
    Drain,
}

/// A failure or drain of a scope at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Fail or drain.
    pub kind: ChangeKind,
    /// When.
    pub at: Time,
    /// A topology path or a host name.
    pub scope: String,
    /// How long it lasts (`None`: for the rest of the run).
    pub lasts: Option<Time>,
}

/// Capacity of a scope delivered in equal steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Ramp {
    /// A topology path or a host name.
    pub scope: String,
    /// First delivery.
    pub start: Time,
    /// Time between deliveries.
    pub every: Time,
    /// Number of deliveries.
    pub steps: u32,
}

/// Everything that happens to the fleet during a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Random per-node failures.
    pub random: Option<FaultSpec>,
    /// Timed failures and drains.
    pub changes: Vec<Change>,
    /// Capacity ramps.
    pub ramps: Vec<Ramp>,
}

/// A bad fault file, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct FaultError {
    /// File name.
    pub file: String,
    /// Field, e.g. `fail[2].scope`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Duration {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomFile {
    node_mtbf: Duration,
    repair: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    at: Duration,
    scope: String,
    #[serde(rename = "for")]
    lasts: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RampFile {
    scope: String,
    start: Duration,
    every: Duration,
    steps: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    random: Option<RandomFile>,
    #[serde(default)]
    fail: Vec<ChangeFile>,
    #[serde(default)]
    drain: Vec<ChangeFile>,
    #[serde(default)]
    ramp: Vec<RampFile>,
}

/// Seconds of a duration (`90`, `"90s"`, `"15m"`, `"4h"`, `"30d"`, `"2w"`).
pub fn parse_duration(text: &str) -> Option<Time> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return None,
    };
    let secs = value * scale;
    (secs.is_finite() && secs < 1e12).then_some(secs.round() as Time)
}

impl FaultPlan {
    /// Parses a fault file.
    pub fn parse(file: &str, text: &str) -> Result<FaultPlan, FaultError> {
        let err = |field: String, reason: String| FaultError {
            file: file.to_string(),
            field,
            reason,
        };
        let raw: PlanFile = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            err(
                format!("line {line}, column {col}"),
                e.message().to_string(),
            )
        })?;
        let dur = |field: String, d: &Duration| match d {
            Duration::Seconds(s) => Ok(*s),
            Duration::Text(t) => parse_duration(t).ok_or_else(|| {
                err(
                    field,
                    format!("'{t}' is not a duration (e.g. 90, \"90s\", \"15m\", \"4h\", \"30d\")"),
                )
            }),
        };
        let random = match &raw.random {
            None => None,
            Some(r) => {
                let mtbf = dur("random.node_mtbf".into(), &r.node_mtbf)?;
                if mtbf == 0 {
                    return Err(err("random.node_mtbf".into(), "must be positive".into()));
                }
                Some(FaultSpec {
                    node_mtbf: mtbf as f64,
                    repair: dur("random.repair".into(), &r.repair)?,
                })
            }
        };
        let mut changes = Vec::new();
        for (kind, name, list) in [
            (ChangeKind::Fail, "fail", &raw.fail),
            (ChangeKind::Drain, "drain", &raw.drain),
        ] {
            for (i, c) in list.iter().enumerate() {
                let lasts = match &c.lasts {
                    Some(d) => Some(dur(format!("{name}[{i}].for"), d)?),
                    None => None,
                };
                if lasts == Some(0) {
                    return Err(err(format!("{name}[{i}].for"), "must be positive".into()));
                }
                changes.push(Change {
                    kind,
                    at: dur(format!("{name}[{i}].at"), &c.at)?,
                    scope: c.scope.clone(),
                    lasts,
                });
            }
        }
        let mut ramps = Vec::new();
        for (i, r) in raw.ramp.iter().enumerate() {
            if r.steps == 0 {
                return Err(err(format!("ramp[{i}].steps"), "must be at least 1".into()));
            }
            let every = dur(format!("ramp[{i}].every"), &r.every)?;
            if every == 0 && r.steps > 1 {
                return Err(err(format!("ramp[{i}].every"), "must be positive".into()));
            }
            ramps.push(Ramp {
                scope: r.scope.clone(),
                start: dur(format!("ramp[{i}].start"), &r.start)?,
                every,
                steps: r.steps,
            });
        }
        Ok(FaultPlan {
            random,
            changes,
            ramps,
        })
    }

    /// Resolves every scope against `fleet`: node ranges of the changes and of each ramp step.
    pub fn resolve(&self, fleet: &Fleet) -> Result<ResolvedPlan, String> {
        let mut changes = Vec::new();
        let (mut fails, mut drains) = (0, 0);
        for c in &self.changes {
            let (name, i) = match c.kind {
                ChangeKind::Fail => ("fail", &mut fails),
                ChangeKind::Drain => ("drain", &mut drains),
            };
            let nodes = scope_nodes(fleet, &c.scope)
                .ok_or_else(|| format!("{name}[{}].scope: {}", *i, unknown(&c.scope)))?;
            *i += 1;
            changes.push((c.clone(), nodes));
        }
        let mut ramps = Vec::new();
        for (i, r) in self.ramps.iter().enumerate() {
            let nodes = scope_nodes(fleet, &r.scope)
                .ok_or_else(|| format!("ramp[{i}].scope: {}", unknown(&r.scope)))?;
            ramps.push((r.clone(), ramp_steps(fleet, nodes, r.steps)));
        }
        Ok(ResolvedPlan { changes, ramps })
    }
}

fn unknown(scope: &str) -> String {
    format!("'{scope}' is neither a topology path (cloud/region/zone/...) nor a host name")
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// Nodes of a scope: a host name, or every node under a topology path.
pub fn scope_nodes(fleet: &Fleet, scope: &str) -> Option<Range<u32>> {
    if let Some(n) = fleet.node_by_name(scope) {
        return Some(n.0..n.0 + 1);
    }
    let t = fleet.find_topo(scope)?;
    (!scope.trim_matches('/').is_empty()).then(|| fleet.topo_node(t).nodes.clone())
}

/// Splits a node range into `steps` consecutive parts of about equal size, each ending on an
/// NVLink-domain boundary (a domain is never delivered in halves).
fn ramp_steps(fleet: &Fleet, nodes: Range<u32>, steps: u32) -> Vec<Range<u32>> {
    let len = u64::from(nodes.end - nodes.start);
    let mut cuts = vec![nodes.start];
    for k in 1..steps {
        let mut cut = nodes.start + (len * u64::from(k) / u64::from(steps)) as u32;
        cut = cut.max(*cuts.last().unwrap_or(&nodes.start));
        while cut > nodes.start
            && cut < nodes.end
            && fleet.domain_of(NodeId(cut)).is_some()
            && fleet.domain_of(NodeId(cut)) == fleet.domain_of(NodeId(cut - 1))
        {
            cut += 1;
        }
        cuts.push(cut);
    }
    cuts.push(nodes.end);
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// A plan with its scopes turned into node ranges.
#[derive(Clone, Debug, Default)]
pub struct ResolvedPlan {
    /// Each change with its nodes.
    pub changes: Vec<(Change, Range<u32>)>,
    /// Each ramp with the nodes of each step.
    pub ramps: Vec<(Ramp, Vec<Range<u32>>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAN: &str = r#"
[random]
node_mtbf = "5000h"
repair = 3600

[[fail]]
at = "2d"
scope = "onprem/site/zone0/sp0"
for = "12h"

[[drain]]
at = "1w"
scope = "h00003"

[[ramp]]
scope = "onprem/site/zone0/sp1"
start = 0
every = "30d"
steps = 3
"#;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1.5h"), Some(5400));
        assert_eq!(parse_duration("2w"), Some(1_209_600));
        assert_eq!(parse_duration("3"), None);
        assert_eq!(parse_duration("3y"), None);
    }

    #[test]
    fn plan_parses_and_resolves() {
        let plan = FaultPlan::parse("f.toml", PLAN).unwrap();
        assert_eq!(
            plan.random,
            Some(FaultSpec {
                node_mtbf: 18_000_000.0,
                repair: 3600
            })
        );
        assert_eq!(plan.changes.len(), 2);
        assert_eq!(plan.changes[0].lasts, Some(43_200));
        assert_eq!(plan.changes[1].kind, ChangeKind::Drain);
        // 16 hosts per rack, 8 racks per spine: 256 hosts; sp1 holds hosts 128..256.
        let fleet = crate::fleets::hosts_fleet(8 * 256, 0).unwrap();
        let r = plan.resolve(&fleet).unwrap();
        assert_eq!(r.changes[0].1, 0..128);
        assert_eq!(r.changes[1].1, 3..4);
        assert_eq!(r.ramps[0].1, vec![128..170, 170..213, 213..256]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = FaultPlan::parse("f.toml", &PLAN.replace("\"2d\"", "\"2 days\"")).unwrap_err();
        assert_eq!(e.field, "fail[0].at");
        let e = FaultPlan::parse("f.toml", &PLAN.replace("steps = 3", "steps = 0")).unwrap_err();
        assert_eq!(e.field, "ramp[0].steps");
        let e = FaultPlan::parse("f.toml", &PLAN.replace("scope = \"h00003\"", "scop = 1"))
            .unwrap_err();
        assert!(
            e.field.starts_with("line 13") && e.reason.contains("scop"),
            "{e}"
        );
        let plan = FaultPlan::parse("f.toml", &PLAN.replace("zone0/sp0", "zone0/sp9")).unwrap();
        let fleet = crate::fleets::hosts_fleet(8 * 256, 0).unwrap();
        let e = plan.resolve(&fleet).unwrap_err();
        assert!(
            e.starts_with("fail[0].scope: 'onprem/site/zone0/sp9'"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = FaultPlan::parse("g.toml", &s);
        }

        #[test]
        fn ramp_steps_tile_the_scope(gpus in 8u64..4000, steps in 1u32..20) {
            let fleet = crate::fleets::hosts_fleet(gpus, 3).unwrap();
            let all = 0..fleet.nodes().len() as u32;
            let parts = ramp_steps(&fleet, all.clone(), steps);
            prop_assert_eq!(parts.len(), steps as usize);
            prop_assert_eq!(parts[0].start, all.start);
            prop_assert_eq!(parts[parts.len() - 1].end, all.end);
            prop_assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
}
