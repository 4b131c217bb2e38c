//! Times as people read them, for the client commands: UTC dates and durations (`14:05 UTC,
//! in 35 min`) where the API gives Unix seconds. The API keeps its numbers; reasons that the
//! queue writes with `t=<Unix seconds>` are rewritten here, when they are printed.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Unix seconds before this are not dates (the simulator's `t=` are seconds from its start).
const FIRST_DATE: u64 = 1_000_000_000;

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-30 14:05 UTC`.
pub fn date(unix: u64) -> String {
    format(unix, "%Y-%m-%d %H:%M UTC")
}

fn format(unix: u64, pattern: &str) -> String {
    match i64::try_from(unix)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
    {
        Some(t) => t.to_zoned(TimeZone::UTC).strftime(pattern).to_string(),
        None => format!("t={unix}"),
    }
}

/// `unix` seen from `now`: `14:05 UTC, in 35 min` on the same UTC day, else with its date
/// (`2026-12-01 14:05 UTC, in 1 d 2 h`); `… ago` when it is past.
pub fn at(unix: u64, now: u64) -> String {
    let day = |t: u64| t / 86_400;
    let when = match day(unix) == day(now) {
        true => format(unix, "%H:%M UTC"),
        false => date(unix),
    };
    match unix.cmp(&now) {
        std::cmp::Ordering::Greater => format!("{when}, in {}", span(unix - now)),
        std::cmp::Ordering::Less => format!("{when}, {} ago", span(now - unix)),
        std::cmp::Ordering::Equal => format!("{when}, now"),
    }
}

/// A duration in its two largest units: `45 s`, `35 min`, `2 h 5 min`, `3 d 4 h`.
pub fn span(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `text` with every `t=<Unix seconds>` written as [`at`] says (other `t=` numbers, such as
/// the simulator's, are left alone).
pub fn in_text(text: &str, now: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("t=") {
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let digits: String = rest[i + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        out.push_str(&rest[..i]);
        match digits.parse::<u64>() {
            Ok(unix) if boundary && unix >= FIRST_DATE => out.push_str(&at(unix, now)),
            _ => out.push_str(&rest[i..i + 2 + digits.len()]),
        }
        rest = &rest[i + 2 + digits.len()..];
    }
    out.push_str(rest);
    out
}

/// A time as a person gives it on the command line, in Unix seconds: a date (`2026-11-30`,
/// midnight UTC), an RFC 3339 instant (`2026-11-30T14:05:00Z`), Unix seconds, or a span ago
/// (`90m`, `36h`, `7d`, `2w`).
pub fn parse_when(text: &str, now: u64) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "'{}' is not a time (2026-11-30, 2026-11-30T14:05:00Z, Unix seconds, or 90m/36h/7d/2w ago)",
            t.chars().take(64).collect::<String>()
        )
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    if let Some(unit) = t.chars().last().filter(|c| "mhdw".contains(*c)) {
        let count = &t[..t.len() - 1];
        if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = count.parse().map_err(|_| bad())?;
            let each = match unit {
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 7 * 86_400,
            };
            return Ok(now.saturating_sub(n.saturating_mul(each)));
        }
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return u64::try_from(ts.as_second()).map_err(|_| bad());
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        let ts = d
            .to_zoned(TimeZone::UTC)
            .map_err(|_| bad())?
            .timestamp()
            .as_second();
        return u64::try_from(ts).map_err(|_| bad());
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-30 13:30:00 UTC.
    const NOW: u64 = 1_796_045_400;

    #[test]
    fn times_read_as_dates_and_durations_from_now() {
        assert_eq!(date(NOW), "2026-11-30 13:30 UTC");
        assert_eq!(at(NOW + 35 * 60, NOW), "14:05 UTC, in 35 min");
        assert_eq!(at(NOW - 45, NOW), "13:29 UTC, 45 s ago");
        assert_eq!(
            at(NOW + 86_400 + 2 * 3600, NOW),
            "2026-12-01 15:30 UTC, in 1 d 2 h"
        );
        assert_eq!(span(2 * 3600 + 5 * 60 + 7), "2 h 5 min");
        assert_eq!(span(3 * 3600), "3 h");
        assert_eq!(span(3 * 86_400 + 59), "3 d");
    }

    #[test]
    fn a_reason_gets_its_times_and_keeps_everything_else() {
        let reason = format!(
            "needs 4 nodes; 18 nodes are held for svc1-r1's reservation until t={}",
            NOW + 35 * 60
        );
        assert_eq!(
            in_text(&reason, NOW),
            "needs 4 nodes; 18 nodes are held for svc1-r1's reservation until 14:05 UTC, in 35 min"
        );
        // Simulated seconds, words ending in t, and a bare "t=" stay as they are.
        for same in ["stops at t=520", "limit=1796045400", "t=", "at t=x"] {
            assert_eq!(in_text(same, NOW), same);
        }
    }

    #[test]
    fn times_on_the_command_line_read_as_dates_instants_seconds_or_spans_ago() {
        assert_eq!(parse_when("2026-11-30", NOW), Ok(NOW - 13 * 3600 - 30 * 60));
        assert_eq!(parse_when("2026-11-30T13:30:00Z", NOW), Ok(NOW));
        assert_eq!(parse_when("1796045400", NOW), Ok(NOW));
        assert_eq!(parse_when("90m", NOW), Ok(NOW - 5400));
        assert_eq!(parse_when("7d", NOW), Ok(NOW - 7 * 86_400));
        assert_eq!(parse_when("2w", NOW), Ok(NOW - 14 * 86_400));
        for bad in ["", "yesterday", "7x", "d", "2026-13-01", "-5"] {
            let e = parse_when(bad, NOW).unwrap_err();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn text_without_times_comes_back_unchanged(text in "[a-z =0-9]{0,80}") {
            let has_date = text.match_indices("t=").any(|(i, _)| {
                text[i + 2..].chars().take_while(char::is_ascii_digit).collect::<String>()
                    .parse::<u64>().is_ok_and(|n| n >= FIRST_DATE)
            });
            if !has_date {
                prop_assert_eq!(in_text(&text, NOW), text);
            }
        }

        #[test]
        fn any_time_reads_without_a_panic(unix in any::<u64>(), now in any::<u64>()) {
            let _ = at(unix, now);
            let _ = in_text(&format!("until t={unix}"), now);
        }
    }
}
