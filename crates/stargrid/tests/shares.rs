//! GPU shares live: jobs asking for part of one GPU (`gpu_milli`) pack onto one device of a
//! real agent's node; each task sees that device in `CUDA_VISIBLE_DEVICES` and its share in
//! `STARGRID_GPU_SHARE`; whole-GPU work does not get the shared device; bad shares are refused
//! by field. AMD and Trainium hosts joined to the fleet name their tasks' devices in their own
//! runtimes' variables.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::start_server;
use common::wait_for;
use serde_json::{json, Value};

/// The environment the task of job `id` wrote to its checkpoint file's `.env`.
fn task_env(work: &std::path::Path, id: u64) -> String {
    let file = work.join(format!("{id}-0-0/checkpoint.env"));
    wait_for("the task's environment", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("STARGRID_JOB_ID"))
    });
    std::fs::read_to_string(&file).unwrap()
}

fn var<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn shares_pack_onto_one_device_and_each_task_sees_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let work = dir.path().join("node");
    let (_agent, _) = common::start_agent_saying(
        &s.url,
        &work,
        &s.token,
        &["--node", "nvl00000t00", "--grace-s", "1"],
        &[],
    );
    wait_for("the node to be up", || common::nodes_up(&s.url) == 1);
    let share = |name: &str, milli: u32| {
        json!({"name": name, "tenant": "default", "nodes": 1, "gpus_per_node": 1,
               "gpu_milli": milli, "time_limit_s": 600,
               "command": ["sh", "-c", "env > $STARGRID_CHECKPOINT_FILE.env; sleep 30"]})
    };
    let mut ids = Vec::new();
    for (name, milli) in [("a", 300), ("b", 300), ("c", 400), ("d", 200)] {
        let r: Value = s.post("/v1/jobs", share(name, milli)).unwrap();
        ids.push(r["id"].as_u64().unwrap());
    }
    let envs: Vec<String> = ids.iter().map(|id| task_env(&work, *id)).collect();
    let device = |i: usize| var(&envs[i], "CUDA_VISIBLE_DEVICES").unwrap().to_string();
    // 0.3 + 0.3 + 0.4 fill one device; 0.2 more needs another.
    assert_eq!(device(0), device(1));
    assert_eq!(device(0), device(2));
    assert_ne!(device(0), device(3));
    assert_eq!(device(0).split(',').count(), 1, "one device: {}", device(0));
    assert_eq!(var(&envs[0], "STARGRID_GPU_SHARE"), Some("0.300"));
    assert_eq!(var(&envs[2], "STARGRID_GPU_SHARE_MILLI"), Some("400"));
    // GB200 has no MIG profile in the table: none is named.
    assert_eq!(var(&envs[0], "STARGRID_MIG_PROFILE"), None);
    let view = s.get(&format!("/v1/jobs/{}", ids[0])).unwrap();
    assert_eq!(view["gpu_milli"], 300, "{view}");
    assert_eq!(view["gpu"], "GB200", "{view}");
    assert_eq!(view["state"], "running", "{view}");

    // The tray's 4 GPUs: two are shared, so a 3-GPU job waits, holding the tray from when the
    // shares reach their time limits, and a 2-GPU job that ends before then backfills. (With
    // the shares' limit it could end a second after the reservation, and rightly wait.)
    let whole = |name: &str, gpus: u32| {
        json!({"name": name, "tenant": "default", "nodes": 1, "gpus_per_node": gpus,
               "time_limit_s": 300,
               "command": ["sh", "-c", "env > $STARGRID_CHECKPOINT_FILE.env; sleep 30"]})
    };
    let three: Value = s.post("/v1/jobs", whole("three", 3)).unwrap();
    let two: Value = s.post("/v1/jobs", whole("two", 2)).unwrap();
    let env = task_env(&work, two["id"].as_u64().unwrap());
    let taken = var(&env, "CUDA_VISIBLE_DEVICES").unwrap();
    for d in [device(0), device(3)] {
        assert!(
            !taken.split(',').any(|t| t == d),
            "whole GPUs {taken} include shared device {d}"
        );
    }
    assert_eq!(var(&env, "STARGRID_GPU_SHARE"), None);
    let pending = s
        .get(&format!("/v1/jobs/{}", three["id"].as_u64().unwrap()))
        .unwrap();
    assert_eq!(pending["state"], "pending", "{pending}");
}

#[test]
fn bad_shares_and_model_lists_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let refused = |body: Value, field: &str| {
        let (status, err) = s.post("/v1/jobs", body).unwrap_err();
        assert_eq!(status, 400, "{err}");
        assert!(err.contains(field), "{field}: {err}");
    };
    let base = |extra: Value| {
        let mut j = json!({"name": "x", "tenant": "default", "nodes": 1, "gpus_per_node": 1,
                           "time_limit_s": 60});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        j
    };
    refused(base(json!({"gpu_milli": 1000})), "gpu_milli");
    refused(base(json!({"gpu_milli": 500, "nodes": 2})), "gpu_milli");
    refused(
        base(json!({"gpu_milli": 500, "gpus_per_node": 2})),
        "gpu_milli",
    );
    refused(base(json!({"models": ["H100", "Nope"]})), "models[1]");
    refused(base(json!({"models": ["GB200"]})), "models");
    refused(base(json!({"gpus_per_node": 0})), "gpus_per_node");
    // Accepted: any model, and CPU work on one GPU host.
    s.post("/v1/jobs", base(json!({"models": ["any"]})))
        .unwrap();
    s.post(
        "/v1/jobs",
        base(json!({"gpus_per_node": 0, "cpu_millis_per_node": 2000})),
    )
    .unwrap();
}

/// An AMD host and a Trainium host, as fleet-file tables.
const OTHER_KINDS: &str = r#"
[[pools]]
name = "azure-mi300x"
cloud = "azure"
region = "eastus"
instance_type = "ND_MI300X_v5"
pricing = "on-demand"
price_per_hour = 48.0

[[pools]]
name = "aws-trn2"
cloud = "aws"
region = "us-east-2"
instance_type = "trn2.48xlarge"
pricing = "on-demand"
price_per_hour = 40.0

[[groups]]
pool = "azure-mi300x"
zone = "eastus-1"
network = ["sp0"]
nodes = "amd0"

[[groups]]
pool = "aws-trn2"
zone = "us-east-2a"
network = ["sp0"]
nodes = "trn0"
"#;

#[test]
fn each_accelerator_kind_sees_its_devices_in_its_runtimes_variable() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let current = ureq::get(&format!("{}/v1/fleet/file", s.url))
        .set("Authorization", &format!("Bearer {}", s.token))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    s.post(
        "/v1/fleet/apply",
        json!({"fleet_toml": format!("{current}{OTHER_KINDS}")}),
    )
    .unwrap();
    let mut agents = Vec::new();
    for node in ["amd0", "trn0"] {
        let work = dir.path().join(node);
        agents.push(common::start_agent_saying(
            &s.url,
            &work,
            &s.token,
            &["--node", node, "--grace-s", "1"],
            &[],
        ));
    }
    wait_for("both nodes up", || common::nodes_up(&s.url) == 2);
    let job = |name: &str, gpu: &str, gpus: u32| {
        let r: Value = s
            .post(
                "/v1/jobs",
                json!({"name": name, "tenant": "default", "gpu": gpu, "nodes": 1,
                       "gpus_per_node": gpus, "time_limit_s": 600,
                       "command": ["sh", "-c",
                                   "env > $STARGRID_CHECKPOINT_FILE.env; sleep 30"]}),
            )
            .unwrap();
        r["id"].as_u64().unwrap()
    };
    let amd = task_env(&dir.path().join("amd0"), job("rocm", "MI300X", 2));
    let devices = var(&amd, "ROCR_VISIBLE_DEVICES").unwrap();
    assert_eq!(devices.split(',').count(), 2, "{amd}");
    assert_eq!(var(&amd, "STARGRID_DEVICES"), Some(devices));
    assert_eq!(
        var(&amd, "CUDA_VISIBLE_DEVICES"),
        None,
        "HIP would read it too"
    );
    let trn = task_env(&dir.path().join("trn0"), job("neuron", "Trainium2", 1));
    let device: u32 = var(&trn, "STARGRID_DEVICES").unwrap().parse().unwrap();
    // Four logical NeuronCores to a Trainium2 device.
    assert_eq!(
        var(&trn, "NEURON_RT_VISIBLE_CORES"),
        Some(format!("{}-{}", device * 4, device * 4 + 3).as_str()),
        "{trn}"
    );
    assert_eq!(var(&trn, "CUDA_VISIBLE_DEVICES"), None);
}
