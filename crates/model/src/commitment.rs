//! Provider commitments and their burn-down: how much of a committed amount should be spent by
//! a date, and what the current rate of spending forecasts for the end of the term. Pure
//! arithmetic over Unix seconds; the first piece of the multi-cloud cost work (the catalogue,
//! cost-aware placement and the reports are not built yet).

use serde::{Deserialize, Serialize};

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
}

/// Where a commitment stands at a date.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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

    proptest! {
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
