//! What a new journal starts from when the operator gives nothing: a small default fleet and
//! one tenant; pricing a fleet file from a cost catalogue.

use super::*;

/// A small fleet for a local control plane: two GB200 NVL72 domains and four CPU hosts, as a
/// fleet file's text.
pub fn default_fleet_toml() -> Result<String, StateError> {
    let spec = fleet::generate::GenSpec {
        gpus: 144,
        cpu_hosts: 4,
        ..fleet::generate::GenSpec::default()
    };
    let mut spec = spec;
    spec.clouds.truncate(1);
    let catalog = InstanceCatalog::builtin();
    let fleet =
        fleet::generate::generate(&spec, &catalog).map_err(|e| StateError::Fleet(e.to_string()))?;
    Ok(fleet::file::write(&fleet, &catalog))
}

/// One tenant, `default`, with the whole fleet as quota.
pub fn default_tenants() -> Vec<TenantSpec> {
    let quota = model::ResourceVec::UNLIMITED;
    vec![TenantSpec {
        name: "default".into(),
        weight: 1.0,
        cohort: None,
        quota,
    }]
}

/// A fleet file's text with its pools priced from `catalogue` (pools it has no rate for keep
/// their own).
pub fn price_fleet(
    fleet_toml: &str,
    catalogue: &model::cost::CostCatalogue,
) -> Result<String, StateError> {
    let mut fleet = parse_fleet(fleet_toml)?;
    catalogue.apply(&mut fleet);
    Ok(fleet::file::write(&fleet, &InstanceCatalog::builtin()))
}

pub(super) fn parse_fleet(text: &str) -> Result<Fleet, StateError> {
    fleet::file::parse("journal", text, InstanceCatalog::builtin())
        .map_err(|e| StateError::Fleet(e.to_string()))
}
