//! Slurm hostlist expressions: `tux[0-3,12,18-20]`, `n[001-128]`, `rack[0-1]-tray[00-17]`,
//! comma-separated at the top level. Expansion keeps the written order; compression is its
//! inverse (`expand(compress(names)) == names`).

use std::fmt::Write as _;

/// Most names one expression may expand to (guards against `n[0-999999999999]`).
pub const MAX_EXPANDED: usize = 10_000_000;

/// Why a hostlist expression is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hostlist '{expr}': {reason}")]
pub struct HostlistError {
    /// The expression as given (truncated to 80 characters).
    pub expr: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(expr: &str, reason: impl Into<String>) -> HostlistError {
    let expr = if expr.chars().count() > 80 {
        format!("{}…", expr.chars().take(80).collect::<String>())
    } else {
        expr.to_string()
    };
    HostlistError {
        expr,
        reason: reason.into(),
    }
}

/// One piece of a hostlist item: literal text, or a bracketed set of numbers.
enum Piece<'a> {
    Literal(&'a str),
    Numbers(Vec<String>),
}

/// Expands a hostlist expression into names, in the written order.
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    expand_at_most(expr, MAX_EXPANDED)
}

/// Expands a hostlist expression into at most `limit` names (refused, before they are made,
/// when it stands for more).
pub fn expand_at_most(expr: &str, limit: usize) -> Result<Vec<String>, HostlistError> {
    let limit = limit.min(MAX_EXPANDED);
    let mut out = Vec::new();
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(err(expr, "empty expression"));
    }
    for item in split_top_level(trimmed).map_err(|r| err(expr, r))? {
        if item.is_empty() {
            return Err(err(expr, "empty name between commas"));
        }
        let pieces = parse_item(item, limit).map_err(|r| err(expr, r))?;
        let mut names = vec![String::new()];
        for piece in &pieces {
            match piece {
                Piece::Literal(s) => names.iter_mut().for_each(|n| n.push_str(s)),
                Piece::Numbers(nums) => {
                    if names.len().saturating_mul(nums.len()) + out.len() > limit {
                        return Err(err(expr, format!("expands to more than {limit} names")));
                    }
                    names = names
                        .iter()
                        .flat_map(|n| nums.iter().map(move |x| format!("{n}{x}")))
                        .collect();
                }
            }
        }
        out.extend(names);
        if out.len() > limit {
            return Err(err(expr, format!("expands to more than {limit} names")));
        }
    }
    Ok(out)
}

fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => {
                if depth > 0 {
                    return Err(format!("nested '[' at byte {i}"));
                }
                depth += 1;
            }
            ']' => {
                if depth == 0 {
                    return Err(format!("']' without '[' at byte {i}"));
                }
                depth -= 1;
            }
            ',' if depth == 0 => {
                items.push(s[start..i].trim());
                start = i + 1;
            }
            c if c.is_whitespace() && depth == 0 => {
                return Err(format!("whitespace inside a name at byte {i}"));
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'[' is never closed".into());
    }
    items.push(s[start..].trim());
    Ok(items)
}

fn parse_item(item: &str, limit: usize) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = item;
    // Names the sets so far make together: each set is counted before its numbers are made,
    // against what the limit leaves.
    let mut product = 1usize;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or("'[' is never closed")?;
        let nums = parse_set(&rest[open + 1..close], limit / product)?;
        product = product.saturating_mul(nums.len().max(1));
        pieces.push(Piece::Numbers(nums));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// The numbers of a bracketed set, refused when there would be more than `limit`.
fn parse_set(set: &str, limit: usize) -> Result<Vec<String>, String> {
    if set.trim().is_empty() {
        return Err("empty brackets".into());
    }
    let mut nums = Vec::new();
    let mut count = 0usize;
    for part in set.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        for bound in [lo, hi] {
            if bound.is_empty() || !bound.bytes().all(|b| b.is_ascii_digit()) || bound.len() > 18 {
                return Err(format!("'{part}' is not a number or a range of numbers"));
            }
        }
        let a: u64 = lo.parse().map_err(|_| format!("'{lo}' is not a number"))?;
        let b: u64 = hi.parse().map_err(|_| format!("'{hi}' is not a number"))?;
        if b < a {
            return Err(format!("range '{part}' runs backwards"));
        }
        count = count.saturating_add(((b - a) as usize).saturating_add(1));
        if count > limit {
            return Err(format!("'{set}' makes more than {limit} names"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        nums.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(nums)
}

/// Splits a name into (prefix, number, zero-pad width, digit count) when it ends in digits.
fn split_number(name: &str) -> Option<(&str, u64, usize, usize)> {
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let (prefix, num) = name.split_at(name.len() - digits);
    // A prefix that ends in ']' or contains brackets/commas cannot be re-expanded safely.
    if prefix.contains(['[', ']', ',']) {
        return None;
    }
    let width = if num.len() > 1 && num.starts_with('0') {
        num.len()
    } else {
        0
    };
    Some((prefix, num.parse().ok()?, width, num.len()))
}

/// Compresses names into a hostlist expression that expands back to exactly `names`, in order.
pub fn compress<S: AsRef<str>>(names: &[S]) -> String {
    // Runs of consecutive numbers with the same prefix and padding, in input order.
    struct Run<'a> {
        prefix: &'a str,
        width: usize,
        lo: u64,
        hi: u64,
    }
    let mut runs: Vec<Result<Run<'_>, &str>> = Vec::new();
    for name in names {
        let name = name.as_ref();
        match split_number(name) {
            Some((prefix, n, width, digits)) => {
                if let Some(Ok(run)) = runs.last_mut() {
                    let fits_width = if run.width > 0 {
                        digits == run.width
                    } else {
                        width == 0
                    };
                    if run.prefix == prefix && run.hi.checked_add(1) == Some(n) && fits_width {
                        run.hi = n;
                        continue;
                    }
                }
                runs.push(Ok(Run {
                    prefix,
                    width,
                    lo: n,
                    hi: n,
                }));
            }
            None => runs.push(Err(name)),
        }
    }
    // Adjacent runs with the same prefix share one bracket.
    let mut out = String::new();
    let mut i = 0;
    while i < runs.len() {
        if !out.is_empty() {
            out.push(',');
        }
        match &runs[i] {
            Err(name) => {
                out.push_str(name);
                i += 1;
            }
            Ok(first) => {
                let mut j = i + 1;
                while j < runs.len() && matches!(&runs[j], Ok(r) if r.prefix == first.prefix) {
                    j += 1;
                }
                let single = j == i + 1 && first.lo == first.hi;
                if single {
                    let _ = write!(out, "{}{:0w$}", first.prefix, first.lo, w = first.width);
                } else {
                    out.push_str(first.prefix);
                    out.push('[');
                    for (k, run) in runs[i..j].iter().enumerate() {
                        let Ok(run) = run else { continue };
                        if k > 0 {
                            out.push(',');
                        }
                        let w = run.width;
                        if run.lo == run.hi {
                            let _ = write!(out, "{:0w$}", run.lo);
                        } else {
                            let _ = write!(out, "{:0w$}-{:0w$}", run.lo, run.hi);
                        }
                    }
                    out.push(']');
                }
                i = j;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_limit_refuses_larger_expressions_before_making_their_names() {
        assert_eq!(expand_at_most("n[0-9]", 10).unwrap().len(), 10);
        assert!(expand_at_most("n[0-10]", 10).is_err());
        assert!(expand_at_most("a[0-9],b[0-9]", 15).is_err());
        assert!(expand_at_most("n[0-99999999999]", 1000).is_err());
        // Each set counts against what the sets before it leave, before any name is made.
        assert_eq!(expand_at_most("r[0-9]n[0-9]", 100).unwrap().len(), 100);
        assert!(expand_at_most("r[0-9]n[0-10]", 100).is_err());
        assert!(expand_at_most("a[0-999999][0-999999][0-999999]", 1_000_000).is_err());
    }

    #[test]
    fn expands_slurm_examples() {
        assert_eq!(
            expand("tux[0-3,12,18-20]").unwrap(),
            ["tux0", "tux1", "tux2", "tux3", "tux12", "tux18", "tux19", "tux20"]
        );
        assert_eq!(expand("n[08-10]").unwrap(), ["n08", "n09", "n10"]);
        assert_eq!(
            expand("r[0-1]t[1-2]").unwrap(),
            ["r0t1", "r0t2", "r1t1", "r1t2"]
        );
        assert_eq!(expand("a,b[1-2],c").unwrap(), ["a", "b1", "b2", "c"]);
    }

    #[test]
    fn rejects_bad_expressions_with_reason() {
        for (bad, why) in [
            ("tux[3-1]", "backwards"),
            ("tux[", "never closed"),
            ("tux]", "without"),
            ("tux[a-b]", "not a number"),
            ("tux[]", "empty brackets"),
            ("", "empty"),
            ("a,,b", "empty name"),
            ("n[0-99999999999]", "more than"),
        ] {
            let e = expand(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn compresses_runs() {
        let names = expand("tux[0-3,12,18-20]").unwrap();
        assert_eq!(compress(&names), "tux[0-3,12,18-20]");
        assert_eq!(compress(&["n08", "n09", "n10"]), "n[08-10]");
        assert_eq!(compress(&["a", "b1", "b2", "c"]), "a,b[1-2],c");
        assert_eq!(compress(&["x7"]), "x7");
    }

    proptest! {
        #[test]
        fn compress_then_expand_is_identity(
            names in proptest::collection::vec("[a-c]{1,2}(-)?[0-9]{0,3}", 1..40)
        ) {
            let expr = compress(&names);
            prop_assert_eq!(expand(&expr).unwrap(), names);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,40}") {
            let _ = expand(&s);
        }
    }
}
