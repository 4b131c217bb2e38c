//! What a node has: its GPUs found through NVML (the NVIDIA driver's management library, loaded
//! at run time, so the agent builds and runs on hosts without it), or declared on the command
//! line (`--fake-gpus`). The server checks it against the fleet: a node whose agent finds other
//! GPUs than the fleet says takes no work.

use wire::api::Inventory;

/// The node's GPUs through NVML, or why they cannot be read.
pub fn discover() -> Result<Inventory, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    let mut models = Vec::new();
    for i in 0..count {
        let name = nvml
            .device_by_index(i)
            .and_then(|d| d.name())
            .map_err(|e| format!("NVML device {i}: {e}"))?;
        models.push(name);
    }
    models.dedup();
    let gpu_model = match models.as_slice() {
        [] => None,
        [one] => Some(model_from_name(one).map_or_else(|| one.clone(), str::to_string)),
        many => return Err(format!("mixed GPU models on one node: {}", many.join(", "))),
    };
    Ok(Inventory {
        gpus: count,
        gpu_model,
        source: "nvml".into(),
    })
}

/// Stargrid's name of a GPU from the name NVML reports (`NVIDIA H100 80GB HBM3` → `H100`).
pub fn model_from_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    // Longer names first: "GB200" contains "B200".
    ["GB300", "GB200", "B200", "H200", "H100"]
        .into_iter()
        .find(|m| upper.contains(m))
}

/// A declared inventory (`--fake-gpus N --gpu-model M`), for tests and hosts without NVML.
pub fn declared(gpus: u32, gpu_model: Option<String>) -> Inventory {
    Inventory {
        gpus,
        gpu_model,
        source: "declared".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_names_map_to_models() {
        assert_eq!(model_from_name("NVIDIA H100 80GB HBM3"), Some("H100"));
        assert_eq!(model_from_name("NVIDIA GB200"), Some("GB200"));
        assert_eq!(model_from_name("NVIDIA B200"), Some("B200"));
        assert_eq!(model_from_name("NVIDIA H200 NVL"), Some("H200"));
        assert_eq!(model_from_name("Tesla V100-SXM2-16GB"), None);
    }

    #[test]
    fn without_a_driver_discovery_says_why() {
        // The test machines have no NVIDIA driver; where one exists this finds its GPUs.
        match discover() {
            Ok(inv) => assert_eq!(inv.source, "nvml"),
            Err(why) => assert!(why.starts_with("NVML"), "{why}"),
        }
    }
}
