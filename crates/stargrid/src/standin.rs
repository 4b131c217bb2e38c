//! `stargrid model-standin`: a stand-in for a model server, for demos, tests and benchmarks.
//! It listens on `$PORT` (as a service replica is given), answers `GET /ready` once warmed
//! up, and answers every other request by streaming `--tokens` tokens, one each
//! `--token-delay-ms`, naming the replica that served it (`x-replica`, from
//! `$STARGRID_JOB_ID`). On SIGTERM its `/ready` answers 503, and it goes on serving for
//! `--drain-ms` (requests already routed to it still arrive), then stops taking connections and
//! finishes what it has.
//!
//! As the front of a prefill/decode unit (`--decode-from STARGRID_DECODE_ADDRS`), it streams
//! each answer from its decode workers in turn (naming the one in `x-decoded-by`), and is
//! ready only once every one of them is.

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// An environment variable listing decode workers as `host:port,…` (a unit's
    /// `STARGRID_<ROLE>_ADDRS`): answers are streamed from them in turn.
    #[arg(long)]
    pub decode_from: Option<String>,
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;
type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

/// The stand-in's answers.
struct Standin {
    args: StandinArgs,
    replica: String,
    ready: AtomicBool,
    /// SIGTERM came: not ready any more, though still serving for a while.
    stopping: AtomicBool,
    /// Decode workers answers are streamed from (none: it answers itself).
    decoders: Vec<String>,
    /// Every decode worker answered its `/ready` at the last look.
    decoders_ready: AtomicBool,
    /// The next decode worker to use.
    next: AtomicUsize,
    client: Client,
}

impl Standin {
    async fn answer(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let text = |status: StatusCode, s: &'static str| {
            let mut r = Response::new(full(Bytes::from_static(s.as_bytes())));
            *r.status_mut() = status;
            r
        };
        if req.uri().path() == "/ready" {
            let ready = self.ready.load(Ordering::Relaxed)
                && !self.stopping.load(Ordering::Relaxed)
                && self.decoders_ready.load(Ordering::Relaxed);
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
        if !self.decoders.is_empty() {
            return Ok(self.decoded().await);
        }
        let (tokens, delay) = (self.args.tokens, self.args.token_delay_ms);
        let body = if tokens == 0 {
            full(Bytes::from_static(b"ok\n"))
        } else {
            let stream = futures_util::stream::unfold(0u32, move |i| async move {
                if i >= tokens {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let token = Bytes::from(format!("token {i}\n"));
                Some((Ok::<_, hyper::Error>(Frame::data(token)), i + 1))
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

    /// An answer streamed from the next decode worker (502 when it cannot be reached).
    async fn decoded(&self) -> Response<Body> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.decoders.len();
        let peer = &self.decoders[i];
        let asked = match format!("http://{peer}/generate").parse::<hyper::Uri>() {
            Ok(uri) => self.client.get(uri).await.ok(),
            Err(_) => None,
        };
        let mut r = match asked {
            Some(answer) => Response::new(answer.into_body().boxed_unsync()),
            None => {
                let mut r = Response::new(full(Bytes::from(format!(
                    "decode worker {peer} did not answer\n"
                ))));
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                r
            }
        };
        if let Ok(v) = peer.parse() {
            r.headers_mut().insert("x-decoded-by", v);
        }
        if let Ok(v) = self.replica.parse() {
            r.headers_mut().insert("x-replica", v);
        }
        r
    }

    /// Looks at each decode worker's `/ready` every 200 ms.
    async fn watch_decoders(self: Arc<Self>) {
        loop {
            let mut all = true;
            for peer in &self.decoders {
                let ok = match format!("http://{peer}/ready").parse::<hyper::Uri>() {
                    Ok(uri) => tokio::time::timeout(Duration::from_secs(1), self.client.get(uri))
                        .await
                        .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success())),
                    Err(_) => false,
                };
                all &= ok;
            }
            self.decoders_ready.store(all, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// The decode workers `--decode-from`'s variable lists.
fn decoders(var: Option<&str>) -> Result<Vec<String>> {
    let Some(var) = var else {
        return Ok(Vec::new());
    };
    let list = std::env::var(var).with_context(|| format!("--decode-from: ${var} is not set"))?;
    let peers: Vec<String> = list
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!peers.is_empty(), "--decode-from: ${var} lists no worker");
    Ok(peers)
}

pub fn run(a: &StandinArgs) -> Result<()> {
    let port = match a.port {
        Some(p) => p,
        None => std::env::var("PORT")
            .context("--port or $PORT")?
            .parse()
            .context("$PORT: not a port number")?,
    };
    let decoders = decoders(a.decode_from.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _entered = runtime.enter();
    let standin = Arc::new(Standin {
        args: a.clone(),
        replica: std::env::var("STARGRID_JOB_ID").unwrap_or_else(|_| format!("port-{port}")),
        ready: AtomicBool::new(a.warmup_ms == 0),
        stopping: AtomicBool::new(false),
        decoders_ready: AtomicBool::new(decoders.is_empty()),
        decoders,
        next: AtomicUsize::new(0),
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    });
    runtime.block_on(async move {
        if !standin.decoders.is_empty() {
            tokio::spawn(standin.clone().watch_decoders());
        }
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
