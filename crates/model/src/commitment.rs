//! Provider commitments and their burn-down: how much of a committed amount should be spent by
//! a date, and what the current rate of spending forecasts for the end of the term. Pure
//! arithmetic over Unix seconds; the first piece of the multi-cloud cost work (the catalogue,
//! cost-aware placement and the reports are not built yet).

use serde::{Deserialize, Serialize};

/// Days from 1970-01-01 to a proleptic Gregorian date (month and day from 1).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix seconds as a date, `YYYY-MM-DD` (UTC).
pub fn date_of(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The same day and time `years` later (29 February becomes 28 February).
pub fn add_years(secs: u64, years: u32) -> u64 {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let y = y + i64::from(years);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let d = if m == 2 && d == 29 && !leap { 28 } else { d };
    let days = days_from_civil(y, m, d);
    (days.max(0) as u64) * 86_400 + secs % 86_400
}

/// Capacity delivered under a commitment from `at` on (a ramp is a list of these).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStep {
    /// From when (Unix seconds).
    pub at: u64,
    /// Nodes delivered in all from then on.
    pub nodes: u32,
}

/// A commitment to spend `total_usd` with one provider between `start` and `end`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// The provider.
    pub provider: String,
    /// The committed amount, USD.
    pub total_usd: f64,
    /// Start of the term (Unix seconds).
    pub start: u64,
    /// End of the term (Unix seconds, exclusive).
    pub end: u64,
    /// Capacity delivered over the term; empty: all of it from the start.
    #[serde(default)]
    pub ramp: Vec<RampStep>,
    /// Least spend in each year of the term (year 1 first); may be shorter than the term.
    #[serde(default)]
    pub yearly_minimum_usd: Vec<f64>,
}

/// One contract year against its minimum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct YearStatus {
    /// Year of the term, from 1.
    pub year: u32,
    /// Start of the year (Unix seconds).
    pub start: u64,
    /// End of the year (Unix seconds, exclusive; the term's end for a short last year).
    pub end: u64,
    /// The year's minimum (0 when none is set).
    pub minimum_usd: f64,
    /// Spent in the year so far.
    pub spent_usd: f64,
    /// The year's spend at its end: what was spent, plus the term's rate so far over the
    /// rest of the year.
    pub forecast_usd: f64,
    /// The minimum the forecast does not reach (owed at the year's end).
    pub short_usd: f64,
}

/// Where a commitment stands at a date.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnDown {
    /// Spent so far.
    pub spent_usd: f64,
    /// What an even spend over the term would have spent by now.
    pub straight_line_usd: f64,
    /// What a spend in step with delivered capacity would have spent by now.
    pub ramp_line_usd: f64,
    /// The spend at the end of the term if the rate so far goes on.
    pub forecast_usd: f64,
    /// Committed money the forecast leaves unspent (paid for nothing).
    pub shortfall_usd: f64,
    /// Spend the forecast puts beyond the commitment (at other rates).
    pub overrun_usd: f64,
}

impl Commitment {
    /// Checks the term, the amount and the ramp; names the field.
    pub fn validate(&self) -> Result<(), crate::FieldError> {
        let bad = |field: &'static str, reason: String| crate::FieldError { field, reason };
        if self.end <= self.start {
            return Err(bad("end", "must be after start".into()));
        }
        if !(self.total_usd.is_finite() && self.total_usd >= 0.0) {
            return Err(bad("total_usd", "must be a sum of 0 or more".into()));
        }
        for (i, w) in self.ramp.windows(2).enumerate() {
            if w[1].at <= w[0].at {
                return Err(bad("ramp", format!("step {} is not after step {i}", i + 1)));
            }
        }
        if let Some(m) = self
            .yearly_minimum_usd
            .iter()
            .find(|m| !(m.is_finite() && **m >= 0.0))
        {
            return Err(bad(
                "yearly_minimum_usd",
                format!("{m} is not a sum of 0 or more"),
            ));
        }
        if self.yearly_minimum_usd.len() > self.years().len() {
            return Err(bad(
                "yearly_minimum_usd",
                format!(
                    "{} minimums for a term of {} years",
                    self.yearly_minimum_usd.len(),
                    self.years().len()
                ),
            ));
        }
        let minimums: f64 = self.yearly_minimum_usd.iter().sum();
        if minimums > self.total_usd * (1.0 + 1e-9) {
            return Err(bad(
                "yearly_minimum_usd",
                format!(
                    "the minimums add up to {minimums}, more than total_usd {}",
                    self.total_usd
                ),
            ));
        }
        if let Some(s) = self
            .ramp
            .iter()
            .find(|s| s.at < self.start || s.at >= self.end)
        {
            return Err(bad(
                "ramp",
                format!("a step at {} lies outside the term", s.at),
            ));
        }
        Ok(())
    }

    /// The contract years: from the start to each anniversary of it, the last one cut at
    /// the end.
    pub fn years(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = self.start;
        let mut n = 1;
        while at < self.end {
            let end = add_years(self.start, n).min(self.end);
            out.push((at, end));
            at = end;
            n += 1;
        }
        out
    }

    /// Each contract year against its minimum at `now`, given what was spent in each
    /// (missing years: nothing spent). Years not over are forecast at the term's rate so far.
    pub fn yearly(&self, spent_by_year: &[f64], now: u64) -> Vec<YearStatus> {
        let elapsed = now.clamp(self.start, self.end) - self.start;
        let spent: f64 = spent_by_year.iter().sum();
        let rate = if elapsed > 0 {
            spent / elapsed as f64
        } else {
            0.0
        };
        self.years()
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| {
                let minimum_usd = self.yearly_minimum_usd.get(i).copied().unwrap_or(0.0);
                let spent_usd = spent_by_year.get(i).copied().unwrap_or(0.0);
                let rest = end.saturating_sub(now.max(start));
                let forecast_usd = spent_usd + rate * rest as f64;
                YearStatus {
                    year: i as u32 + 1,
                    start,
                    end,
                    minimum_usd,
                    spent_usd,
                    forecast_usd,
                    short_usd: (minimum_usd - forecast_usd).max(0.0),
                }
            })
            .collect()
    }

    /// Node-seconds of capacity delivered between the start and `t` (clamped to the term).
    fn delivered(&self, t: u64) -> f64 {
        let t = t.clamp(self.start, self.end);
        if self.ramp.is_empty() {
            return (t - self.start) as f64;
        }
        let mut total = 0.0;
        for (i, s) in self.ramp.iter().enumerate() {
            let until = self.ramp.get(i + 1).map_or(self.end, |n| n.at).min(t);
            if until > s.at {
                total += f64::from(s.nodes) * (until - s.at) as f64;
            }
        }
        total
    }

    /// Where the commitment stands at `now`, having spent `spent_usd`.
    pub fn burn_down(&self, spent_usd: f64, now: u64) -> BurnDown {
        let term = (self.end - self.start) as f64;
        let elapsed = (now.clamp(self.start, self.end) - self.start) as f64;
        let straight_line_usd = self.total_usd * elapsed / term;
        let whole = self.delivered(self.end);
        let ramp_line_usd = if whole > 0.0 {
            self.total_usd * self.delivered(now) / whole
        } else {
            0.0
        };
        // The rate so far, carried to the end; after the end, what was spent is final.
        let forecast_usd = if now >= self.end {
            spent_usd
        } else if elapsed > 0.0 {
            spent_usd * term / elapsed
        } else {
            0.0
        };
        BurnDown {
            spent_usd,
            straight_line_usd,
            ramp_line_usd,
            forecast_usd,
            shortfall_usd: (self.total_usd - forecast_usd).max(0.0),
            overrun_usd: (forecast_usd - self.total_usd).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    fn year() -> Commitment {
        Commitment {
            provider: "aws".into(),
            total_usd: 3_650_000.0,
            start: 1000 * DAY,
            end: 1365 * DAY,
            ramp: Vec::new(),
            yearly_minimum_usd: Vec::new(),
        }
    }

    #[test]
    fn a_quarter_in_at_half_the_rate_forecasts_half_the_commitment() {
        let c = year();
        let b = c.burn_down(456_250.0, c.start + 365 * DAY / 4);
        assert!((b.straight_line_usd - 912_500.0).abs() < 1e-6);
        assert!((b.forecast_usd - 1_825_000.0).abs() < 1e-6);
        assert!((b.shortfall_usd - 1_825_000.0).abs() < 1e-6);
        assert_eq!(b.overrun_usd, 0.0);
    }

    #[test]
    fn edges_of_the_term() {
        let c = year();
        // Before the start nothing is due and nothing can be forecast.
        let b = c.burn_down(0.0, c.start - DAY);
        assert_eq!((b.straight_line_usd, b.forecast_usd), (0.0, 0.0));
        assert_eq!(b.shortfall_usd, c.total_usd);
        // After the end the spend is final: an underspend is a shortfall for good.
        let b = c.burn_down(3_000_000.0, c.end + 30 * DAY);
        assert_eq!(b.forecast_usd, 3_000_000.0);
        assert!((b.shortfall_usd - 650_000.0).abs() < 1e-6);
        assert!((b.straight_line_usd - c.total_usd).abs() < 1e-6);
        // Spending faster than the line forecasts an overrun.
        let b = c.burn_down(2_000_000.0, c.start + 365 * DAY / 2);
        assert!((b.overrun_usd - 350_000.0).abs() < 1e-6);
    }

    #[test]
    fn a_ramp_moves_the_expected_spend_later() {
        // Half the capacity for the first half of the term, all of it after.
        let c = Commitment {
            ramp: vec![
                RampStep {
                    at: 1000 * DAY,
                    nodes: 50,
                },
                RampStep {
                    at: 1000 * DAY + 365 * DAY / 2,
                    nodes: 100,
                },
            ],
            ..year()
        };
        c.validate().unwrap();
        let mid = c.start + 365 * DAY / 2;
        let b = c.burn_down(0.0, mid);
        // Delivered node-time by the middle: 50 × T/2 of 50 × T/2 + 100 × T/2, a third.
        assert!((b.ramp_line_usd - c.total_usd / 3.0).abs() < 1e-3);
        assert!((b.straight_line_usd - c.total_usd / 2.0).abs() < 1e-3);
        assert!((c.burn_down(0.0, c.end).ramp_line_usd - c.total_usd).abs() < 1e-3);
        // Capacity that arrives only at the last step: nothing is due before it.
        let late = Commitment {
            ramp: vec![RampStep {
                at: c.end - DAY,
                nodes: 10,
            }],
            ..year()
        };
        assert_eq!(late.burn_down(0.0, c.end - 2 * DAY).ramp_line_usd, 0.0);
    }

    #[test]
    fn bad_commitments_name_the_field() {
        let e = Commitment {
            end: 10,
            start: 10,
            ..year()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "end");
        let e = Commitment {
            total_usd: f64::NAN,
            ..year()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "total_usd");
        let step = |at| RampStep { at, nodes: 1 };
        let e = Commitment {
            ramp: vec![step(1100 * DAY), step(1050 * DAY)],
            ..year()
        }
        .validate()
        .unwrap_err();
        assert!(e.field == "ramp" && e.reason.contains("step 1 is not after step 0"));
        let e = Commitment {
            ramp: vec![step(2000 * DAY)],
            ..year()
        }
        .validate()
        .unwrap_err();
        assert!(e.reason.contains("outside the term"));
    }

    #[test]
    fn years_cut_at_the_end_and_minimums_are_checked() {
        // A term of two years and a half: two whole years and a short one.
        let c = Commitment {
            end: add_years(1000 * DAY, 2) + 180 * DAY,
            yearly_minimum_usd: vec![1_000_000.0, 1_000_000.0, 500_000.0],
            ..year()
        };
        c.validate().unwrap();
        // At the end of the term every year is final.
        let y = c.yearly(&[1_200_000.0, 400_000.0], c.end);
        assert_eq!(y.len(), 3);
        assert_eq!(
            (y[0].start, y[0].end),
            (1000 * DAY, add_years(1000 * DAY, 1))
        );
        assert_eq!(date_of(1000 * DAY), "1972-09-27");
        assert_eq!(date_of(y[1].start), "1973-09-27");
        // A leap day's anniversary falls on 28 February.
        assert_eq!(date_of(add_years(11_016 * DAY, 1)), "2001-02-28");
        assert_eq!(date_of(11_016 * DAY), "2000-02-29");
        assert_eq!(y[2].end, c.end, "the last year ends with the term");
        assert_eq!(y[0].short_usd, 0.0);
        assert_eq!(y[1].short_usd, 600_000.0);
        assert_eq!((y[2].spent_usd, y[2].short_usd), (0.0, 500_000.0));
        // A quarter into year 2 at 1,000 a day: year 1 is final, the rest at that rate.
        let day = 86_400;
        let now = y[1].start + 91 * day;
        let elapsed = (now - c.start) / day;
        let spent = elapsed as f64 * 1_000.0;
        let year1 = 365.0 * 1_000.0;
        let y = c.yearly(&[year1, spent - year1], now);
        assert_eq!(y[0].forecast_usd, year1);
        assert!(
            (y[1].forecast_usd - 365_000.0).abs() < 1e-6,
            "{}",
            y[1].forecast_usd
        );
        assert!((y[1].short_usd - 635_000.0).abs() < 1e-6);
        let third = ((y[2].end - y[2].start) / day) as f64 * 1_000.0;
        assert!((y[2].forecast_usd - third).abs() < 1e-6);
        let too_many = Commitment {
            yearly_minimum_usd: vec![1.0, 1.0],
            ..year()
        };
        assert!(too_many
            .validate()
            .unwrap_err()
            .reason
            .contains("2 minimums for a term of 1 years"));
        let too_big = Commitment {
            yearly_minimum_usd: vec![c.total_usd * 2.0],
            ..year()
        };
        assert_eq!(too_big.validate().unwrap_err().field, "yearly_minimum_usd");
    }

    proptest! {
        /// Dates and day numbers convert both ways; an anniversary is a year later.
        #[test]
        fn civil_dates_round_trip(days in 0i64..200_000, years in 0u32..10) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            let later = add_years(days as u64 * DAY, years);
            let (y2, m2, d2) = civil_from_days((later / DAY) as i64);
            prop_assert_eq!(y2, y + i64::from(years));
            prop_assert_eq!(m2, m);
            prop_assert!(d2 == d || (m == 2 && d == 29 && d2 == 28));
        }

        /// The lines never go down over time, stay within the commitment, and reach it at the
        /// end; the forecast is exact when spending follows the straight line.
        #[test]
        fn lines_rise_to_the_commitment(
            steps in prop::collection::vec((1u64..364, 1u32..1000), 0..5),
            a in 0u64..400, b in 0u64..400,
        ) {
            let mut ramp: Vec<RampStep> = steps
                .iter()
                .map(|(d, n)| RampStep { at: 1000 * DAY + d * DAY, nodes: *n })
                .collect();
            ramp.sort_by_key(|s| s.at);
            ramp.dedup_by_key(|s| s.at);
            let c = Commitment { ramp, ..year() };
            prop_assert!(c.validate().is_ok());
            let (t1, t2) = (c.start - DAY + a.min(b) * DAY, c.start - DAY + a.max(b) * DAY);
            let (x, y) = (c.burn_down(0.0, t1), c.burn_down(0.0, t2));
            prop_assert!(x.ramp_line_usd <= y.ramp_line_usd + 1e-6);
            prop_assert!(x.straight_line_usd <= y.straight_line_usd + 1e-6);
            prop_assert!(y.ramp_line_usd <= c.total_usd + 1e-6);
            let end = c.burn_down(0.0, c.end);
            if !c.ramp.is_empty() {
                prop_assert!((end.ramp_line_usd - c.total_usd).abs() < 1e-3);
            }
            if t2 > c.start && t2 < c.end {
                let on_line = c.burn_down(y.straight_line_usd, t2);
                prop_assert!((on_line.forecast_usd - c.total_usd).abs() < 1e-3);
            }
        }
    }
}
