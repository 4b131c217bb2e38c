//! Sandbox templates' names, as agents report them and batches ask for them.

/// The most templates one node offers.
pub const MAX_TEMPLATES: usize = 64;

/// Whether `name` can name a sandbox template: a lower-case letter or digit, then lower-case
/// letters, digits, '-', '_' or '.'; 1 to 64 characters (so never `..` or a path).
pub fn is_template_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
}
