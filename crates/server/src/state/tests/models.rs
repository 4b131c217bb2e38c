//! Services that accept several GPU models: replicas fill the first model, then run on the
//! next one, each on one model, and the view says which; a unit service and an unknown model
//! are refused by field; replay and a snapshot give the same replicas.

use super::*;

/// Two GB200 trays in one NVLink domain and two H100 hosts.
const TWO_MODELS: &str = r#"
[[pools]]
name = "gb200"
cloud = "aws"
region = "us-east-1"
instance_type = "p6e-gb200.36xlarge"
pricing = "committed"
price_per_hour = 50.0

[[pools]]
name = "h100"
cloud = "aws"
region = "us-east-1"
instance_type = "p5.48xlarge"
pricing = "on-demand"
price_per_hour = 55.0

[[groups]]
pool = "gb200"
zone = "use1-az1"
network = ["sp0"]
domain = "nvl0"
nodes = "gb-t[0-1]"

[[groups]]
pool = "h100"
zone = "use1-az1"
network = ["sp0"]
nodes = "h100-[0-1]"
"#;

/// The two-model fleet with every node's agent up; the records that made it.
fn two_models_up() -> (ControlPlane, Vec<Vec<u8>>) {
    let init = Event::Init {
        fleet_toml: TWO_MODELS.into(),
        tenants: default_tenants(),
        at: 100,
        commitments: Default::default(),
    };
    let mut p = ControlPlane::new(&init).unwrap();
    let mut journal = vec![p.encode(&Record {
        event: init,
        decisions: Vec::new(),
        outcome: Default::default(),
    })];
    for node in ["gb-t0", "gb-t1", "h100-0", "h100-1"] {
        let e = Event::NodeUp {
            address: None,
            node: node.into(),
            at: 100,
        };
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    (p, journal)
}

#[test]
fn replicas_run_on_the_next_model_once_the_first_is_full() {
    let (mut p, mut journal) = two_models_up();
    let svc = SubmitService {
        models: vec!["H100".into()],
        spread: None,
        ..service(4)
    };
    let e = p.service_event(&svc, 100).unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    let r = p.apply(&Event::Pass { at: 101 }).unwrap();
    journal.push(p.encode(&r));
    p.check_invariants().unwrap();
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!(v.running, 4, "{v:?}");
    assert_eq!(
        (v.gpu.as_str(), v.models.clone()),
        ("GB200", vec!["H100".to_string()])
    );
    let mut got = v.replica_models.clone();
    got.sort();
    assert_eq!(got, ["GB200", "GB200", "H100", "H100"], "{v:?}");
    for (nodes, model) in v.replicas.iter().zip(&v.replica_models) {
        let want = if model == "H100" { "h100-" } else { "gb-t" };
        assert!(
            nodes.iter().all(|n| n.starts_with(want)),
            "{nodes:?} on {model}"
        );
    }
    // Replay and a snapshot give the same replicas.
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.fingerprint(), p.fingerprint());
    assert_eq!(
        again.service_view(ServiceId(1)).unwrap().replica_models,
        v.replica_models
    );
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.fingerprint(), p.fingerprint());
}

fn refused_models(p: &ControlPlane, models: Vec<String>, field: &str) {
    let svc = SubmitService {
        models: models.clone(),
        ..service(1)
    };
    let e = p.service_event(&svc, 100).unwrap_err();
    assert_eq!(e.field, field, "{e:?}");
    let job = SubmitJob {
        models,
        ..req("j", 1)
    };
    let e = p.submit_event(&job, 100).unwrap_err();
    assert_eq!(e.field, field, "{e:?}");
}

#[test]
fn service_model_lists_are_refused_by_field() {
    let (p, _) = two_models_up();
    // 8 GB200 GPUs and 16 H100 GPUs: six 4-GPU replicas fit across both models, not seven,
    // and not six on GB200 alone.
    let many = |replicas: u32, models: Vec<String>| SubmitService {
        models,
        spread: None,
        max_replicas: Some(replicas),
        ..service(1)
    };
    p.service_event(&many(6, vec!["H100".into()]), 100).unwrap();
    let e = p
        .service_event(&many(7, vec!["H100".into()]), 100)
        .unwrap_err();
    assert_eq!(e.field, "max_replicas", "{e:?}");
    assert!(e.reason.contains("hold 6 such"), "{e:?}");
    let e = p.service_event(&many(6, Vec::new()), 100).unwrap_err();
    assert!(e.reason.contains("the whole fleet has 8"), "{e:?}");
    // CPU work on GPU hosts needs no GPUs: any number of replicas may be asked for.
    let cpu = SubmitService {
        gpus_per_node: 0,
        cpu_millis_per_node: 1000,
        ..many(50, Vec::new())
    };
    p.service_event(&cpu, 100).unwrap();
    // A model of another kind is refused: CUDA work does not run on a TPU.
    refused_models(&p, vec!["TPUv5p".into()], "models[0]");
    let refused = |svc: SubmitService, field: &str| {
        let e = p.service_event(&svc, 100).unwrap_err();
        assert_eq!(e.field, field, "{e:?}");
    };
    refused(
        SubmitService {
            models: vec!["H100".into(), "Nope".into()],
            ..service(1)
        },
        "models[1]",
    );
    refused(
        SubmitService {
            models: vec!["GB200".into()],
            ..service(1)
        },
        "models",
    );
    let mut unit = service(1);
    unit.models = vec!["H100".into()];
    unit.gpus_per_node = 0;
    unit.command = Vec::new();
    unit.roles = vec![crate::api::ServiceRole {
        name: "prefill".into(),
        workers: 1,
        nodes_per_worker: 1,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        command: vec!["serve".into()],
        env: BTreeMap::new(),
    }];
    refused(unit, "models");
}
