//! The queue's scenario language: scripts of submissions, passes, finishes, failures and
//! service and sandbox commands run through a `Scheduler`, each line with what it decided,
//! for the queue's snapshot tests.

use super::{fleet, gang, SMALL};
use expect_test::Expect;
use model::{
    JobSpec, PriorityClass, ServiceSpec, SpreadLevel, SpreadRule, TenantId, TenantSpec, WorkloadId,
};
use sched::{Decision, Engine, SchedConfig, Scheduler, Scope};
use std::fmt::Write as _;

pub fn prio(s: &str) -> PriorityClass {
    match s {
        "pre" => PriorityClass::Preemptible,
        "research" => PriorityClass::Research,
        "train" => PriorityClass::Training,
        "inf" => PriorityClass::ProductionInference,
        other => panic!("priority {other}"),
    }
}

/// Script lines: `submit ID TENANT PRIO NODES LIMIT`, `pass T`, `finish ID T`,
/// `checkpoint ID T`, `fail PATH T`, `cancel ID`, `why ID`.
pub fn run(s: &mut Scheduler, script: &str) -> String {
    let mut out = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w[i].parse::<u64>().unwrap();
        let _ = write!(out, "{line}\n  ");
        match w[0] {
            "submit" => {
                let opt = |key: &str| {
                    w.iter()
                        .find_map(|x| x.strip_prefix(&format!("{key}=")))
                        .map(|v| v.parse::<u32>().unwrap())
                };
                let mut g = gang(num(4) as u32, 4, opt("segment"));
                g.spares = opt("spares").unwrap_or(0);
                let spec = JobSpec {
                    tenant: TenantId(num(2) as u32),
                    priority: prio(w[3]),
                    gang: g,
                    time_limit: num(5),
                    placement: Default::default(),
                };
                let r = s.submit(WorkloadId(num(1)), spec, 0);
                let _ = writeln!(out, "{r:?}");
            }
            "pass" => {
                let d = s.schedule(num(1));
                let shown: Vec<String> = d.iter().map(|d| show(s, d)).collect();
                let _ = writeln!(
                    out,
                    "{}",
                    if shown.is_empty() {
                        "-".into()
                    } else {
                        shown.join("\n  ")
                    }
                );
            }
            "finish" => {
                let _ = writeln!(out, "{:?}", s.finish(WorkloadId(num(1)), num(2)));
            }
            "checkpoint" => {
                let _ = writeln!(out, "{:?}", s.checkpoint(WorkloadId(num(1)), num(2)));
            }
            "cancel" => {
                let _ = writeln!(out, "{:?}", s.cancel(WorkloadId(num(1)), 0));
            }
            "fail" => {
                let scope = match s.engine().fleet().node_by_name(w[1]) {
                    Some(n) => Scope::Node(n),
                    None => Scope::Subtree(s.engine().fleet().find_topo(w[1]).unwrap()),
                };
                let d = s.fail(scope, num(2));
                let shown: Vec<String> = d.iter().map(|d| show(s, d)).collect();
                let _ = writeln!(out, "{}", shown.join("\n  "));
            }
            "service" => {
                // service ID TENANT NODES MIN MAX [spread=LEVEL:K]
                let spread = w.iter().find_map(|x| x.strip_prefix("spread=")).map(|v| {
                    let (level, k) = v.split_once(':').unwrap();
                    let level = match level {
                        "domain" => SpreadLevel::Domain,
                        "zone" => SpreadLevel::Zone,
                        "region" => SpreadLevel::Region,
                        _ => SpreadLevel::Cloud,
                    };
                    SpreadRule {
                        level,
                        max_per: k.parse().unwrap(),
                    }
                });
                let spec = ServiceSpec {
                    tenant: TenantId(num(2) as u32),
                    priority: PriorityClass::ProductionInference,
                    replica: gang(num(3) as u32, 4, None),
                    min_replicas: num(4) as u32,
                    max_replicas: num(5) as u32,
                    spread,
                    placement: Default::default(),
                    min_providers: Default::default(),
                };
                let _ = writeln!(out, "{:?}", s.create_service(num(1), spec, 0));
            }
            "scale" => {
                let _ = match s.scale_service(num(1), num(2) as u32, 0) {
                    Ok(sc) => {
                        let stopped: Vec<String> =
                            sc.stopped.iter().map(|r| r.to_string()).collect();
                        writeln!(
                            out,
                            "  desired {}, stopped [{}]",
                            sc.desired,
                            stopped.join(" ")
                        )
                    }
                    Err(e) => writeln!(out, "  {e}"),
                };
            }
            "status" => {
                let st = s.service_status(num(1)).unwrap();
                let mut why: Vec<String> = s
                    .service_replicas(num(1))
                    .into_iter()
                    .filter_map(|r| s.pending_reason(r))
                    .collect();
                why.dedup();
                let _ = writeln!(out, "{st:?} {why:?}");
            }
            "sandboxes" => {
                // sandboxes ID COUNT CPU MEM RETRIES
                let req = model::SandboxRequest {
                    count: num(2) as u32,
                    cpu_millis: num(3) as u32,
                    memory_mib: num(4) as u32,
                };
                let r = s
                    .place_sandboxes(WorkloadId(num(1)), None, &req, num(5) as u32, 0)
                    .map(|p| {
                        let runs: Vec<String> = p
                            .runs
                            .iter()
                            .map(|r| {
                                format!("{}x{}", s.engine().fleet().node(r.node).name, r.count)
                            })
                            .collect();
                        runs.join(" ")
                    });
                let _ = writeln!(out, "{r:?}");
            }
            "why" => {
                let _ = writeln!(
                    out,
                    "{}",
                    s.pending_reason(WorkloadId(num(1)))
                        .unwrap_or_else(|| "(running or ended)".into())
                );
            }
            other => panic!("unknown command {other}"),
        }
        s.engine().check_invariants().unwrap();
    }
    out
}

pub fn show(s: &Scheduler, d: &Decision) -> String {
    d.describe(s.engine().fleet())
}

pub fn check(tenants: Vec<TenantSpec>, script: &str, expect: Expect) {
    let mut s = Scheduler::new(Engine::new(fleet(SMALL)), tenants, SchedConfig::default()).unwrap();
    expect.assert_eq(&run(&mut s, script));
}
