//! What tells a task which accelerators are its own, in the words of its node's runtime:
//! `CUDA_VISIBLE_DEVICES` on NVIDIA GPUs, `ROCR_VISIBLE_DEVICES` on AMD GPUs (never the CUDA
//! variable too, which HIP reads as well and would filter the devices a second time),
//! `NEURON_RT_VISIBLE_CORES` on Trainium (the devices' logical NeuronCores), and
//! `TPU_VISIBLE_CHIPS` on TPUs (with the chip bounds of a one-process slice when the work is
//! one node's: a multi-host slice keeps the bounds its runtime works out). Every kind also
//! gets `STARGRID_DEVICES`, the device indices alone, and a share of one device its size
//! (`STARGRID_GPU_SHARE`) and the MIG profile that holds it. A share of an NVIDIA GPU also
//! gets the limits an MPS server enforces on its clients where the node runs one
//! (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, and `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT` for its share
//! of the model's memory); the agent does not start that server.
//!
//! The model comes from the server by name; a name this build does not know (a newer server)
//! is taken as an NVIDIA GPU, as assignments from servers before models were sent are.

use model::{AcceleratorKind, GpuModel};
use std::collections::BTreeMap;
use wire::api::Assignment;

/// Logical NeuronCores per device of a Trainium model, at the runtime's default grouping
/// (Trainium2: eight physical cores, two to a logical core).
fn neuron_cores_per_device(model: GpuModel) -> u32 {
    match model {
        GpuModel::Trainium2 => 4,
        _ => 1,
    }
}

/// `0-3,8-11`: the indices as inclusive ranges of consecutive ones.
fn ranges(indices: &[u32]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The bounds of one process's chips on a TPU host, for the counts that form a valid slice.
fn tpu_chip_bounds(chips: usize) -> Option<&'static str> {
    match chips {
        1 => Some("1,1,1"),
        2 => Some("1,2,1"),
        4 => Some("2,2,1"),
        _ => None,
    }
}

/// The variables that name the task's devices.
pub(crate) fn device_env(a: &Assignment) -> BTreeMap<String, String> {
    let model = a
        .gpu_model
        .as_deref()
        .and_then(|m| m.parse::<GpuModel>().ok());
    let kind = model.map_or(AcceleratorKind::NvidiaGpu, GpuModel::kind);
    let list = |v: &[u32]| -> String {
        v.iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("STARGRID_DEVICES", list(&a.gpus));
    match kind {
        AcceleratorKind::NvidiaGpu => set("CUDA_VISIBLE_DEVICES", list(&a.gpus)),
        AcceleratorKind::AmdGpu => set("ROCR_VISIBLE_DEVICES", list(&a.gpus)),
        AcceleratorKind::Trainium => {
            let per = model.map_or(1, neuron_cores_per_device);
            // (A device index no node has, from a damaged assignment, names no core.)
            let cores: Vec<u32> = a
                .gpus
                .iter()
                .filter_map(|d| {
                    let first = d.checked_mul(per)?;
                    Some(first..first.checked_add(per)?)
                })
                .flatten()
                .collect();
            set("NEURON_RT_VISIBLE_CORES", ranges(&cores));
        }
        AcceleratorKind::Tpu => {
            set("TPU_VISIBLE_CHIPS", list(&a.gpus));
            // One node's work: its chips form a slice of their own, one process big.
            if let (1, Some(bounds)) = (a.world, tpu_chip_bounds(a.gpus.len())) {
                set("TPU_CHIPS_PER_PROCESS_BOUNDS", bounds.to_string());
                set("TPU_PROCESS_BOUNDS", "1,1,1".to_string());
            }
        }
    }
    // A share of one device: how much of it is the task's, and the MIG profile that holds it.
    if (1..1000).contains(&a.gpu_milli) {
        set("STARGRID_GPU_SHARE", format!("0.{:03}", a.gpu_milli));
        set("STARGRID_GPU_SHARE_MILLI", a.gpu_milli.to_string());
        let profile = a
            .mig_profile
            .as_deref()
            .filter(|p| p.len() <= 32 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        if let Some(p) = profile {
            set("STARGRID_MIG_PROFILE", p.to_string());
        }
        if kind == AcceleratorKind::NvidiaGpu {
            let percent = u32::from(a.gpu_milli).div_ceil(10).clamp(1, 100);
            set("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", percent.to_string());
            if let Some(m) = model {
                // The task sees its one device as device 0.
                let mib = u64::from(m.memory_gib()) * 1024 * u64::from(a.gpu_milli) / 1000;
                set("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", format!("0={mib}M"));
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(model: Option<&str>, gpus: &[u32]) -> Assignment {
        let mut a: Assignment = serde_json::from_value(serde_json::json!({
            "job": 1, "run": 0, "rank": 0, "world": 1, "tenant": "t", "command": ["true"],
            "env": {}, "workdir": null, "gpus": [], "stop_by": null,
        }))
        .unwrap();
        a.gpus = gpus.to_vec();
        a.gpu_model = model.map(str::to_string);
        a
    }

    #[test]
    fn each_kind_names_its_devices_in_its_runtimes_words() {
        let env = device_env(&on(Some("H100"), &[2, 3]));
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "2,3");
        assert_eq!(env["STARGRID_DEVICES"], "2,3");
        let env = device_env(&on(Some("MI300X"), &[1, 5]));
        assert_eq!(env["ROCR_VISIBLE_DEVICES"], "1,5");
        assert!(
            !env.contains_key("CUDA_VISIBLE_DEVICES"),
            "HIP reads it too"
        );
        let env = device_env(&on(Some("Trainium2"), &[1, 2, 5]));
        assert_eq!(env["NEURON_RT_VISIBLE_CORES"], "4-11,20-23");
        assert!(!env.contains_key("CUDA_VISIBLE_DEVICES"));
        let env = device_env(&on(Some("Trainium2"), &[u32::MAX, 1]));
        assert_eq!(env["NEURON_RT_VISIBLE_CORES"], "4-7");
        let env = device_env(&on(Some("TPUv5p"), &[2, 3]));
        assert_eq!(env["TPU_VISIBLE_CHIPS"], "2,3");
        assert_eq!(env["TPU_CHIPS_PER_PROCESS_BOUNDS"], "1,2,1");
        assert_eq!(env["TPU_PROCESS_BOUNDS"], "1,1,1");
        // A rank of a multi-host slice: its runtime works the bounds out.
        let mut rank = on(Some("TPUv6e"), &[0, 1, 2, 3]);
        rank.world = 4;
        let env = device_env(&rank);
        assert_eq!(env["TPU_VISIBLE_CHIPS"], "0,1,2,3");
        assert!(!env.contains_key("TPU_CHIPS_PER_PROCESS_BOUNDS"));
    }

    #[test]
    fn no_model_or_an_unknown_one_is_an_nvidia_gpu() {
        for model in [None, Some("GB900"), Some("")] {
            let env = device_env(&on(model, &[0]));
            assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0", "{model:?}");
        }
        // CPU work on a GPU host sees no device.
        assert_eq!(
            device_env(&on(Some("H100"), &[]))["CUDA_VISIBLE_DEVICES"],
            ""
        );
    }

    #[test]
    fn a_share_is_in_the_environment_and_a_bad_profile_is_not() {
        let share = |milli, profile: Option<&str>| {
            let mut a = on(Some("H100"), &[3]);
            a.gpu_milli = milli;
            a.mig_profile = profile.map(str::to_string);
            device_env(&a)
        };
        let env = share(250, Some("2g.20gb"));
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "3");
        assert_eq!(env["STARGRID_GPU_SHARE"], "0.250");
        assert_eq!(env["STARGRID_GPU_SHARE_MILLI"], "250");
        assert_eq!(env["STARGRID_MIG_PROFILE"], "2g.20gb");
        // A quarter of an 80 GB H100 under MPS.
        assert_eq!(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "25");
        assert_eq!(env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], "0=20480M");
        assert_eq!(share(1, None)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "1");
        assert!(!share(250, Some("$(rm -rf /)")).contains_key("STARGRID_MIG_PROFILE"));
        let whole = share(0, Some("2g.20gb"));
        assert!(!whole.contains_key("STARGRID_GPU_SHARE"));
        assert!(!whole.contains_key("STARGRID_MIG_PROFILE"));
        assert!(!whole.contains_key("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"));
    }

    #[test]
    fn ranges_join_consecutive_indices() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[7]), "7");
        assert_eq!(ranges(&[3, 0, 1, 2, 9, 10, 12]), "0-3,9-10,12");
    }
}
