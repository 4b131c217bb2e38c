//! The other models a trace job or service accepts: a list of names in order of preference,
//! or `["any"]` for every model, as a JSONL line writes them.

use model::{GangRequest, GpuModel};

/// Names in order, or `["any"]` for every model; errors name the entry.
pub(super) fn parse(names: &[String]) -> Result<Box<[GpuModel]>, (String, String)> {
    if names.len() == 1 && names[0].eq_ignore_ascii_case("any") {
        return Ok(GpuModel::ALL.into());
    }
    if names.len() > GangRequest::MAX_MODELS {
        return Err(("models".into(), "at most 8 models, or [\"any\"]".into()));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.parse::<GpuModel>()
                .map_err(|e| (format!("models[{i}]"), e.to_string()))
        })
        .collect()
}

/// The list as a line writes it: `["any"]` for every model, else the names.
pub(super) fn to_json(models: &[GpuModel]) -> serde_json::Value {
    if models.len() == GpuModel::ALL.len() {
        return serde_json::json!(["any"]);
    }
    serde_json::json!(models.iter().map(|m| m.name()).collect::<Vec<_>>())
}

/// The field's serde form: names, or `["any"]`.
pub(super) mod names {
    use super::GpuModel;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(models: &[GpuModel], s: S) -> Result<S::Ok, S::Error> {
        super::to_json(models).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[GpuModel]>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        super::parse(&names)
            .map_err(|(field, reason)| serde::de::Error::custom(format!("{field}: {reason}")))
    }
}
