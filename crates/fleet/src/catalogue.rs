//! The cost catalogue file (TOML): providers and regions, prices per instance type (on-demand,
//! spot, committed), and commitments with dates, yearly minimums and capacity ramps. The
//! format is documented at the top of the default catalogue (`data/catalogue.toml`), which
//! `stargrid catalogue` prints.

use crate::{line_of, SourceError};
use model::commitment::{days_from_civil, Commitment, RampStep};
use model::cost::{CostCatalogue, Price, Provider};
use serde::Deserialize;
use toml::value::Datetime;
use toml::Spanned;

/// The default catalogue's text (example prices).
pub const DEFAULT: &str = include_str!("../data/catalogue.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    providers: Vec<Spanned<Provider>>,
    #[serde(default)]
    prices: Vec<Spanned<Price>>,
    #[serde(default)]
    commitments: Vec<Spanned<CommitmentEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitmentEntry {
    provider: String,
    total_usd: f64,
    start: Datetime,
    end: Datetime,
    #[serde(default)]
    yearly_minimum_usd: Vec<f64>,
    #[serde(default)]
    ramp: Vec<RampEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RampEntry {
    at: Datetime,
    nodes: u32,
}

/// A TOML date or date-time as Unix seconds (a date alone is its midnight, UTC).
pub fn unix_seconds(at: &Datetime) -> Result<u64, String> {
    let Some(date) = at.date else {
        return Err(format!("'{at}' has no date"));
    };
    if !(1..=12).contains(&date.month) || !(1..=31).contains(&date.day) {
        return Err(format!("'{at}' is not a date"));
    }
    let mut secs =
        days_from_civil(i64::from(date.year), date.month.into(), date.day.into()) * 86_400;
    if let Some(t) = at.time {
        secs += i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
    }
    if let Some(toml::value::Offset::Custom { minutes }) = at.offset {
        secs -= i64::from(minutes) * 60;
    }
    u64::try_from(secs).map_err(|_| format!("'{at}' is before 1970"))
}

/// Parses a catalogue file and checks it; errors name the line, the entry and the field.
pub fn parse(file: &str, text: &str) -> Result<CostCatalogue, SourceError> {
    let parsed: File = toml::from_str(text).map_err(|e| {
        SourceError::new(
            file,
            e.span().map(|s| line_of(text, s.start)),
            "toml",
            e.message().to_string(),
        )
    })?;
    let mut lines: Vec<(String, usize)> = Vec::new();
    let mut note = |path: String, span: std::ops::Range<usize>| {
        lines.push((path, line_of(text, span.start)));
    };
    let mut catalogue = CostCatalogue::default();
    for (i, p) in parsed.providers.into_iter().enumerate() {
        note(format!("providers[{i}]"), p.span());
        catalogue.providers.push(p.into_inner());
    }
    for (i, p) in parsed.prices.into_iter().enumerate() {
        note(format!("prices[{i}]"), p.span());
        catalogue.prices.push(p.into_inner());
    }
    for (i, c) in parsed.commitments.into_iter().enumerate() {
        let line = line_of(text, c.span().start);
        note(format!("commitments[{i}]"), c.span());
        let c = c.into_inner();
        let at = |field: &str, d: &Datetime| {
            unix_seconds(d).map_err(|reason| {
                SourceError::new(
                    file,
                    Some(line),
                    format!("commitments[{i}].{field}"),
                    reason,
                )
            })
        };
        let mut ramp = Vec::with_capacity(c.ramp.len());
        for (k, s) in c.ramp.iter().enumerate() {
            ramp.push(RampStep {
                at: at(&format!("ramp[{k}].at"), &s.at)?,
                nodes: s.nodes,
            });
        }
        catalogue.commitments.push(Commitment {
            provider: c.provider,
            total_usd: c.total_usd,
            start: at("start", &c.start)?,
            end: at("end", &c.end)?,
            ramp,
            yearly_minimum_usd: c.yearly_minimum_usd,
        });
    }
    catalogue.validate().map_err(|e| {
        // The line of the entry the path starts with.
        let line = lines
            .iter()
            .rev()
            .find(|(entry, _)| {
                e.path.starts_with(entry.as_str())
                    && e.path[entry.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == '.')
            })
            .map(|(_, l)| *l);
        SourceError::new(file, line, e.path, e.reason)
    })?;
    Ok(catalogue)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::generate::{generate, GenSpec};
    use model::commitment::date_of;
    use model::{InstanceCatalog, PricingKind};
    use proptest::prelude::*;

    #[test]
    fn the_default_catalogue_prices_every_generated_pool() {
        let c = parse("default", DEFAULT).unwrap();
        assert_eq!(c.providers.len(), 4);
        assert_eq!(c.commitments.len(), 4);
        let aws = c.commitment("aws").unwrap();
        assert_eq!(date_of(aws.start), "2027-01-01");
        assert_eq!(date_of(aws.end), "2030-01-01");
        assert_eq!(aws.years().len(), 3);
        let spec = GenSpec {
            gpus: 72 * 16,
            cpu_hosts: 64,
            ..GenSpec::default()
        };
        let mut fleet = generate(&spec, &InstanceCatalog::builtin()).unwrap();
        assert!(c.apply(&mut fleet).is_empty(), "every pool has a rate");
        let west = fleet
            .pools()
            .iter()
            .find(|p| p.region == "us-west-2" && p.pricing == PricingKind::Committed)
            .unwrap();
        assert_eq!(west.price_per_hour, 40.0, "the region's own entry");
    }

    #[test]
    fn dates_round_trip() {
        for (text, secs) in [
            ("1970-01-01", 0),
            ("2000-03-01", 951_868_800),
            ("2027-01-01", 1_798_761_600),
        ] {
            let d: Datetime = text.parse().unwrap();
            assert_eq!(unix_seconds(&d).unwrap(), secs, "{text}");
            assert_eq!(date_of(secs), text);
        }
        let d: Datetime = "2027-01-01T06:00:00+02:00".parse().unwrap();
        assert_eq!(unix_seconds(&d).unwrap(), 1_798_761_600 + 4 * 3600);
        let t: Datetime = "06:00:00".parse().unwrap();
        assert!(unix_seconds(&t).unwrap_err().contains("no date"));
    }

    #[test]
    fn errors_name_line_entry_and_field() {
        let bad = DEFAULT.replacen("spot = 27.0", "spot = -27.0", 1);
        let e = parse("c.toml", &bad).unwrap_err();
        assert_eq!(e.field, "prices[0].spot");
        let line = DEFAULT
            .lines()
            .position(|l| l == "[[prices]]")
            .map(|l| l + 1)
            .unwrap();
        assert_eq!(e.line, Some(line), "{e}");
        let bad = DEFAULT.replacen("end = 2030-01-01", "end = 2026-01-01", 1);
        let e = parse("c.toml", &bad).unwrap_err();
        assert_eq!(e.field, "commitments[0].end", "{e}");
        assert!(e.reason.contains("after start"));
        let bad = DEFAULT.replacen("total_usd = 9.6e9", "total_usd = \"lots\"", 1);
        let e = parse("c.toml", &bad).unwrap_err();
        assert_eq!(e.field, "toml");
        assert!(e.line.is_some());
        let bad = DEFAULT.replacen(
            "provider = \"oci\"\ninstance_type",
            "provider = \"ibm\"\ninstance_type",
            1,
        );
        let e = parse("c.toml", &bad).unwrap_err();
        assert!(e.reason.contains("'ibm' is not a declared provider"), "{e}");
    }

    proptest! {
        /// Arbitrary text never panics the parser.
        #[test]
        fn garbage_is_refused_cleanly(text in "\\PC{0,200}") {
            let _ = parse("g.toml", &text);
        }

        /// Any edit of one number in the default file parses or is refused with a path.
        #[test]
        fn numbers_are_checked(which in 0usize..40, value in -1e12f64..1e12) {
            let mut seen = 0;
            let mut out = String::new();
            for line in DEFAULT.lines() {
                let edited = match line.split_once(" = ") {
                    Some((k, v)) if v.parse::<f64>().is_ok() => {
                        seen += 1;
                        if seen - 1 == which { format!("{k} = {value:e}") } else { line.to_string() }
                    }
                    _ => line.to_string(),
                };
                out.push_str(&edited);
                out.push('\n');
            }
            match parse("p.toml", &out) {
                Ok(c) => prop_assert!(c.validate().is_ok()),
                Err(e) => prop_assert!(!e.field.is_empty() && !e.reason.is_empty()),
            }
        }
    }
}
