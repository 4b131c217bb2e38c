//! `stargrid model-standin`: a stand-in for a model server, for demos, tests and benchmarks.
//! It listens on `$PORT` (as a service replica is given), answers `GET /ready` once warmed
//! up, and answers every other request by streaming `--tokens` tokens, one each
//! `--token-delay-ms`, naming the replica that served it (`x-replica`, from
//! `$STARGRID_JOB_ID`). On SIGTERM its `/ready` answers 503, and it goes on serving for
//! `--drain-ms` (requests already routed to it still arrive), then stops taking connections and
//! finishes what it has.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct StandinArgs {
    /// Port to listen on (default: `$PORT`, which a replica's agent gives it).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Tokens each answer streams (0: a short answer at once).
    #[arg(long, default_value_t = 8)]
    pub tokens: u32,
    /// Milliseconds between tokens.
    #[arg(long, default_value_t = 25)]
    pub token_delay_ms: u64,
    /// Milliseconds before `/ready` answers 200 (loading the model).
    #[arg(long, default_value_t = 0)]
    pub warmup_ms: u64,
    /// A label each answer carries in `x-label` (a version, say).
    #[arg(long)]
    pub label: Option<String>,
    /// After SIGTERM, milliseconds it goes on serving before it stops taking connections.
    #[arg(long, default_value_t = 1500)]
    pub drain_ms: u64,
}

/// The stand-in's answers.
struct Standin {
    args: StandinArgs,
    replica: String,
    ready: AtomicBool,
    /// SIGTERM came: not ready any more, though still serving for a while.
    stopping: AtomicBool,
}

impl Standin {
    async fn answer(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>, Infallible>
    {
        let text = |status: StatusCode, s: &'static str| {
            let mut r = Response::new(
                http_body_util::Full::new(Bytes::from_static(s.as_bytes())).boxed_unsync(),
            );
            *r.status_mut() = status;
            r
        };
        if req.uri().path() == "/ready" {
            let ready =
                self.ready.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed);
            return Ok(if ready {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "warming up\n")
            });
        }
        if req.uri().path() == "/health" {
            return Ok(text(StatusCode::OK, "ok\n"));
        }
        // The prompt is read, as a model server would, though the answer does not use it.
        let _ = req.into_body().collect().await;
        let (tokens, delay) = (self.args.tokens, self.args.token_delay_ms);
        let body = if tokens == 0 {
            http_body_util::Full::new(Bytes::from_static(b"ok\n")).boxed_unsync()
        } else {
            let stream = futures_util::stream::unfold(0u32, move |i| async move {
                if i >= tokens {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let token = Bytes::from(format!("token {i}\n"));
                Some((Ok::<_, Infallible>(Frame::data(token)), i + 1))
            });
            StreamBody::new(stream).boxed_unsync()
        };
        let mut r = Response::new(body);
        if let Ok(v) = self.replica.parse() {
            r.headers_mut().insert("x-replica", v);
        }
        if let Some(Ok(v)) = self.args.label.as_deref().map(str::parse) {
            r.headers_mut().insert("x-label", v);
        }
        Ok(r)
    }
}

pub fn run(a: &StandinArgs) -> Result<()> {
    let port = match a.port {
        Some(p) => p,
        None => std::env::var("PORT")
            .context("--port or $PORT")?
            .parse()
            .context("$PORT: not a port number")?,
    };
    let standin = Arc::new(Standin {
        args: a.clone(),
        replica: std::env::var("STARGRID_JOB_ID").unwrap_or_else(|_| format!("port-{port}")),
        ready: AtomicBool::new(a.warmup_ms == 0),
        stopping: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.address.as_str(), port))
            .await
            .with_context(|| format!("listening on {}:{port}", a.address))?;
        let node = std::env::var("STARGRID_NODE").unwrap_or_default();
        println!(
            "model stand-in serving on {}:{port} (replica {} on node {node})",
            a.address, standin.replica
        );
        if a.warmup_ms > 0 {
            let s = standin.clone();
            let warmup = Duration::from_millis(a.warmup_ms);
            tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                s.ready.store(true, Ordering::Relaxed);
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("waiting for SIGTERM")?;
        let stop = async {
            term.recv().await;
            standin.stopping.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(a.drain_ms)).await;
        };
        tokio::pin!(stop);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let s = standin.clone();
                    let conn = http1::Builder::new().serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| s.clone().answer(req)),
                    );
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                () = &mut stop => break,
            }
        }
        // Idle connections close now; requests under way finish.
        drop(listener);
        graceful.shutdown().await;
        anyhow::Ok(())
    })
}
