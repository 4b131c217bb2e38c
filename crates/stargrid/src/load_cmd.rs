//! `stargrid load URL`: a load generator for services behind a gateway. A closed loop of
//! `--concurrency` clients, each sending a request and reading its whole answer before the
//! next, optionally ramped to `--ramp-to` clients over `--duration-s`. Prints a line a second
//! and a summary (or one JSON object): requests, failures by reason, rate, latency
//! percentiles, and how many replicas answered (their `x-replica` header).

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Where to send requests (http://).
    pub url: String,
    /// Clients sending at once (each waits for its answer before the next request).
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Ramp the clients linearly to this many by the end.
    #[arg(long)]
    pub ramp_to: Option<u32>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// The request method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// The request body.
    #[arg(long, default_value = r#"{"prompt": "Tell me about NVLink domains."}"#)]
    pub body: String,
    /// Print one JSON object at the end, nothing each second.
    #[arg(long)]
    pub json: bool,
}

/// What a load run saw.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: u64,
    /// Answered 2xx, read to the end.
    pub ok: u64,
    /// Anything else.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Requests answered a second.
    pub requests_per_s: f64,
    /// Latency percentiles, in milliseconds (to the answer's last byte).
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Distinct replicas that answered.
    pub replicas_seen: usize,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Option<Histogram<u64>>>,
    replicas: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tally {
    fn failed(&self, reason: String) {
        *lock(&self.failures).entry(reason).or_default() += 1;
    }

    fn took(&self, d: Duration) {
        if let Some(h) = lock(&self.latencies_us).as_mut() {
            let _ = h.record((d.as_micros() as u64).clamp(1, h.high()));
        }
    }
}

pub fn run(a: &LoadArgs) -> Result<()> {
    let report = drive(a)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} requests, {} failed, {:.0}/s, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, {} replicas answered",
            report.requests,
            report.failed,
            report.requests_per_s,
            report.p50_ms,
            report.p95_ms,
            report.p99_ms,
            report.replicas_seen
        );
        for (reason, n) in &report.failures {
            println!("  {n} × {reason}");
        }
    }
    Ok(())
}

/// Runs the load `a` describes and says what it saw.
pub fn drive(a: &LoadArgs) -> Result<LoadReport> {
    let uri: hyper::Uri = a.url.parse().with_context(|| format!("URL '{}'", a.url))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("URL '{}': only http:// is supported", a.url);
    }
    let method: hyper::Method = a
        .method
        .parse()
        .with_context(|| format!("--method '{}'", a.method))?;
    if a.concurrency == 0 || a.ramp_to == Some(0) {
        anyhow::bail!("--concurrency and --ramp-to: at least 1 client");
    }
    let most = a.concurrency.max(a.ramp_to.unwrap_or(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let tally = Arc::new(Tally {
        latencies_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()),
        ..Tally::default()
    });
    let duration = Duration::from_secs(a.duration_s);
    let started = Instant::now();
    let (from, to) = (a.concurrency, a.ramp_to.unwrap_or(a.concurrency));
    // The clients wanted `t` into the run.
    let wanted = move |t: Duration| -> u32 {
        let f = (t.as_secs_f64() / duration.as_secs_f64().max(1e-9)).min(1.0);
        (f64::from(from) + (f64::from(to) - f64::from(from)) * f).round() as u32
    };
    runtime.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(most as usize)
                .build(connector);
        let body = Bytes::from(a.body.clone());
        let mut workers = Vec::new();
        for i in 0..most {
            let (client, tally, uri, method, body) = (
                client.clone(),
                tally.clone(),
                uri.clone(),
                method.clone(),
                body.clone(),
            );
            workers.push(tokio::spawn(async move {
                while started.elapsed() < duration {
                    if i >= wanted(started.elapsed()) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    one_request(&client, &tally, &uri, &method, &body).await;
                }
            }));
        }
        if !a.json {
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut last = 0;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let ok = tally.ok.load(Ordering::Relaxed);
                    let failed: u64 = lock(&tally.failures).values().sum();
                    println!(
                        "{:>4} s  {:>4} clients  {:>7} answers/s  {} failed",
                        started.elapsed().as_secs(),
                        wanted(started.elapsed()),
                        ok - last,
                        failed
                    );
                    last = ok;
                }
            });
        }
        for w in workers {
            let _ = w.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let h = lock(&tally.latencies_us).take();
    let at = |q: f64| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let failures = lock(&tally.failures).clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let replicas_seen = lock(&tally.replicas).len();
    Ok(LoadReport {
        requests: tally.requests.load(Ordering::Relaxed),
        ok,
        failed: failures.values().sum(),
        failures,
        requests_per_s: ok as f64 / elapsed.max(1e-9),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        replicas_seen,
    })
}

async fn one_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    tally: &Tally,
    uri: &hyper::Uri,
    method: &hyper::Method,
    body: &Bytes,
) {
    tally.requests.fetch_add(1, Ordering::Relaxed);
    let mut req = hyper::Request::new(Full::new(body.clone()));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    let t = Instant::now();
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            tally.failed(format!("no answer: {e}"));
            // A refused connection fails at once: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        }
    };
    let status = resp.status();
    if let Some(r) = resp
        .headers()
        .get("x-replica")
        .and_then(|v| v.to_str().ok())
    {
        let mut seen = lock(&tally.replicas);
        if !seen.contains(r) && seen.len() < 10_000 {
            seen.insert(r.to_string());
        }
    }
    match resp.into_body().collect().await {
        Ok(_) if status.is_success() => {
            tally.took(t.elapsed());
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => tally.failed(format!("HTTP {status}")),
        Err(e) => tally.failed(format!("answer cut off: {e}")),
    }
}
