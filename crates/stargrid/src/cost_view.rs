//! Money in the terminal: spend tables, commitment burn-down, and the provider-outage what-if,
//! shared by `stargrid sim` and `stargrid cost`; and the cost catalogue a command uses.

use anyhow::{Context, Result};
use model::cost::CostCatalogue;
use sched::cost::{CostSummary, SpendRow};
use sim::cost::OutageImpact;
use std::fmt::Write as _;
use std::path::Path;

/// The catalogue in `path`, or the built-in example catalogue.
pub fn load_catalogue(path: Option<&Path>) -> Result<CostCatalogue> {
    match path {
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {name}"))?;
            Ok(fleet::catalogue::parse(&name, &text)?)
        }
        None => Ok(fleet::catalogue::parse(
            "built-in catalogue",
            fleet::catalogue::DEFAULT,
        )?),
    }
}

/// `stargrid catalogue`: the built-in catalogue's text, or a summary of a checked file.
pub fn catalogue_cmd(check: Option<&Path>) -> Result<()> {
    let Some(path) = check else {
        print!("{}", fleet::catalogue::DEFAULT);
        return Ok(());
    };
    let c = load_catalogue(Some(path))?;
    println!(
        "{}: {} providers, {} prices, {} commitments",
        path.display(),
        c.providers.len(),
        c.prices.len(),
        c.commitments.len()
    );
    for k in &c.commitments {
        println!(
            "  {}: {} from {} to {} ({} contract years, {} yearly minimums, {} ramp steps)",
            k.provider,
            usd(k.total_usd),
            model::commitment::date_of(k.start),
            model::commitment::date_of(k.end),
            k.years().len(),
            k.yearly_minimum_usd.len(),
            k.ramp.len()
        );
    }
    Ok(())
}

/// `$1.23M`-style money.
pub fn usd(x: f64) -> String {
    let (sign, a) = if x < 0.0 { ("-", -x) } else { ("", x) };
    if a >= 1e9 {
        format!("{sign}${:.2}B", a / 1e9)
    } else if a >= 1e6 {
        format!("{sign}${:.2}M", a / 1e6)
    } else if a >= 1e3 {
        format!("{sign}${:.1}K", a / 1e3)
    } else {
        format!("{sign}${a:.2}")
    }
}

fn share(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", part / whole * 100.0)
    } else {
        "-".into()
    }
}

fn rows_table(out: &mut String, title: &str, rows: &[SpendRow], total: f64) {
    let _ = writeln!(out, "{title}:");
    let mut rows: Vec<&SpendRow> = rows.iter().collect();
    rows.sort_by(|a, b| b.usd.total_cmp(&a.usd).then(a.name.cmp(&b.name)));
    for r in rows {
        let _ = writeln!(
            out,
            "  {:<28} {:>12} {:>7}",
            r.name,
            usd(r.usd),
            share(r.usd, total)
        );
    }
}

/// Spend by provider, region, kind of capacity, class and tenant; idle committed capacity;
/// each commitment's burn-down and contract years.
pub fn summary(c: &CostSummary, over: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spend {over} from {}: {} in all; committed capacity paid for and idle: {} ({})",
        c.start_date,
        usd(c.total_usd),
        usd(c.idle_committed_usd),
        share(c.idle_committed_usd, c.total_usd)
    );
    rows_table(&mut out, "by provider", &c.by_provider, c.total_usd);
    rows_table(&mut out, "by region", &c.by_region, c.total_usd);
    rows_table(&mut out, "by capacity", &c.by_pricing, c.total_usd);
    rows_table(&mut out, "by class", &c.by_class, c.total_usd);
    rows_table(&mut out, "by tenant", &c.by_tenant, c.total_usd);
    if !c.commitments.is_empty() {
        let at = c.commitments.first().map_or("", |s| s.at.as_str());
        let _ = writeln!(out, "commitments at {at} (forecast at the rate so far):");
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>23} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "provider",
            "committed",
            "term",
            "spent",
            "line",
            "ramp line",
            "forecast",
            "shortfall",
            "overrun"
        );
        for s in &c.commitments {
            let b = &s.burn_down;
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>23} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                s.provider,
                usd(s.total_usd),
                format!("{}..{}", s.start, s.end),
                usd(b.spent_usd),
                usd(b.straight_line_usd),
                usd(b.ramp_line_usd),
                usd(b.forecast_usd),
                usd(b.shortfall_usd),
                usd(b.overrun_usd)
            );
            for y in s.years.iter().filter(|y| y.minimum_usd > 0.0) {
                let _ = writeln!(
                    out,
                    "           year {} minimum {:>10}, forecast {:>10}{}",
                    y.year,
                    usd(y.minimum_usd),
                    usd(y.forecast_usd),
                    if y.short_usd > 0.0 {
                        format!(", short by {}", usd(y.short_usd))
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    out
}

/// The what-if table: each provider dark for a while, against the baseline.
pub fn outages(list: &[OutageImpact]) -> String {
    let mut out = String::new();
    let Some(first) = list.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "what if a provider goes dark for {:.0} h from day {:.1} (one run each, against the baseline):",
        first.lasts as f64 / 3600.0,
        first.at as f64 / 86_400.0
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>11} {:>11} {:>11} {:>10} {:>8} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "provider",
        "extra spend",
        "idle paid",
        "od/spot",
        "lost GPUh",
        "restarts",
        "sbx lost",
        "svc short",
        "JCT mean",
        "replicas",
        "jobs"
    );
    for o in list {
        let (replicas, jobs) = o.failover.as_ref().map_or(("-".into(), "-".into()), |f| {
            (
                format!("{}/{}", f.replicas_replaced, f.replicas_displaced),
                format!("{}/{}", f.jobs_replaced, f.jobs_displaced),
            )
        });
        let _ = writeln!(
            out,
            "  {:<8} {:>11} {:>11} {:>11} {:>10.0} {:>8} {:>9} {:>9.2}% {:>9.2}h {:>11} {:>11}",
            o.provider,
            usd(o.extra_usd),
            usd(o.extra_idle_committed_usd),
            usd(o.extra_paid_usd),
            o.extra_gpu_hours_lost,
            o.extra_restarts,
            o.extra_sandboxes_lost,
            o.service_shortfall * 100.0,
            o.extra_mean_jct_s / 3600.0,
            replicas,
            jobs
        );
    }
    let _ = writeln!(
        out,
        "  (replicas, jobs: re-placed at once / displaced; svc short: the run's share of wanted \
         replica time not running)"
    );
    for o in list {
        let Some(f) = &o.failover else { continue };
        if !f.in_priority_order {
            let _ = writeln!(
                out,
                "  {}: a displaced training job restarted before a displaced replica",
                o.provider
            );
        }
        for n in f.not_replaced.iter().take(3) {
            let _ = writeln!(
                out,
                "  {} left waiting: {} ({}, e.g. {})",
                o.provider,
                n.count,
                n.reason,
                n.examples.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_at_every_scale() {
        assert_eq!(usd(12.5), "$12.50");
        assert_eq!(usd(12_500.0), "$12.5K");
        assert_eq!(usd(-3_250_000.0), "-$3.25M");
        assert_eq!(usd(9.6e9), "$9.60B");
    }

    #[test]
    fn the_built_in_catalogue_loads() {
        let c = load_catalogue(None).expect("built-in catalogue");
        assert_eq!(c.commitments.len(), 4);
    }
}
