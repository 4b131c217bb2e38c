//! Which sandbox templates the nodes offer, as their agents report them with each heartbeat
//! (not journaled: after a restart every agent reports again within one heartbeat). A batch
//! that names a template no node offers is refused at submission, with the ones offered.

use std::collections::{BTreeMap, HashMap};

/// The templates each node offers, and how many nodes offer each.
#[derive(Debug, Default)]
pub struct TemplateOffers {
    by_node: HashMap<String, Vec<String>>,
    nodes_offering: BTreeMap<String, u32>,
}

/// Why a node's report of its templates was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// More than [`wire::api::MAX_TEMPLATES`].
    #[error("at most {} templates", wire::api::MAX_TEMPLATES)]
    TooMany,
    /// A name that cannot name a template.
    #[error("'{0}' is not a template name (lower-case letters, digits, '-', '_', '.')")]
    BadName(String),
}

impl TemplateOffers {
    /// Whether `node` offers exactly `names` now (in any order).
    pub fn offers_exactly(&self, node: &str, names: &[String]) -> bool {
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        self.by_node
            .get(node)
            .map_or(names.is_empty(), |old| *old == names)
    }

    /// Records that `node` offers `names` now (its previous report is replaced). Costs
    /// nothing when the report is unchanged.
    pub fn offer(&mut self, node: &str, names: &[String]) -> Result<(), OfferError> {
        if names.len() > wire::api::MAX_TEMPLATES {
            return Err(OfferError::TooMany);
        }
        if let Some(bad) = names.iter().find(|n| !wire::api::is_template_name(n)) {
            return Err(OfferError::BadName(bad.chars().take(64).collect()));
        }
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        if self
            .by_node
            .get(node)
            .map_or(names.is_empty(), |old| *old == names)
        {
            return Ok(());
        }
        let old = match names.is_empty() {
            true => self.by_node.remove(node),
            false => self.by_node.insert(node.to_string(), names.clone()),
        };
        for name in old.unwrap_or_default() {
            if let Some(n) = self.nodes_offering.get_mut(&name) {
                *n -= 1;
                if *n == 0 {
                    self.nodes_offering.remove(&name);
                }
            }
        }
        for name in names {
            *self.nodes_offering.entry(name).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Whether some node offers `name`.
    pub fn offered(&self, name: &str) -> bool {
        self.nodes_offering.contains_key(name)
    }

    /// Every template some node offers, by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes_offering.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_template_is_offered_while_some_node_reports_it() {
        let mut t = TemplateOffers::default();
        t.offer("a", &names(&["python", "node"])).unwrap();
        t.offer("b", &names(&["python", "python"])).unwrap();
        assert!(t.offered("python") && t.offered("node") && !t.offered("rust"));
        t.offer("a", &names(&["rust"])).unwrap();
        assert!(t.offered("python") && !t.offered("node") && t.offered("rust"));
        t.offer("b", &[]).unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), vec!["rust"]);
        assert!(!t.by_node.contains_key("b"));
    }

    #[test]
    fn a_bad_report_is_refused_and_changes_nothing() {
        let mut t = TemplateOffers::default();
        t.offer("a", &names(&["python"])).unwrap();
        assert_eq!(
            t.offer("a", &names(&["../etc"])),
            Err(OfferError::BadName("../etc".into()))
        );
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(t.offer("a", &many), Err(OfferError::TooMany));
        assert_eq!(t.names().collect::<Vec<_>>(), vec!["python"]);
    }
}
