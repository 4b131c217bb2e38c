//! Stargrid's request gateway (`stargrid gateway`): the data plane for inference services, in
//! a process of its own so that requests never pass through the control plane. It proxies
//! HTTP, streamed responses included, from `/{tenant}/{service}/…` to the service's ready
//! replicas.
//!
//! - `table`: the routes (services and their ready replicas, followed from the server by long
//!   poll), and which replica a request goes to: the fewest in flight, or by affinity (a
//!   header, or the body's prefix) with bounded load.
//! - `proxy`: one request: read the body, pick, send, retry on another replica where safe,
//!   stream the answer back, hold it while the service has no ready replica.
//! - `stats`: per-service load (in flight, rate, latency percentiles), reported to the server
//!   each second, where it drives autoscaling.
//!
//! A replica leaves rotation when the server's routes drop it (its agent reported it not
//! ready, or it is stopping) and, for a moment, when a connection to it fails; requests it
//! already has run to their end.

pub mod proxy;
pub mod stats;
pub mod table;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proxy::{Proxy, ProxyConfig};
use std::sync::Arc;
use std::time::Duration;
use table::Routes;
use wire::api::{GatewayLoad, MAX_LOAD_SERVICES};

/// How often load is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Follows the server's routes into `routes` for ever, on a thread of its own (the client is
/// blocking): each answer replaces the table; while the server is unreachable the last table
/// stays in use.
pub fn follow_routes(client: wire::client::Client, routes: Arc<Routes>) {
    let client = client.with_timeout(Duration::from_secs(40));
    std::thread::spawn(move || {
        let mut after = 0;
        let mut failing = false;
        loop {
            match client.gateway_routes(after) {
                Ok(r) => {
                    if failing {
                        tracing::info!("routes: the server answers again");
                        failing = false;
                    }
                    after = r.version;
                    routes.update(&r);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("routes: {e}; serving the last routes known");
                        failing = true;
                    }
                    // Asked again at once, the next answer is the current table.
                    after = 0;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    });
}

/// Reports each service's load to the server every [`REPORT_EVERY`], on a thread of its own.
pub fn report_load(client: wire::client::Client, routes: Arc<Routes>, name: String) {
    let client = client.with_timeout(Duration::from_secs(5));
    std::thread::spawn(move || {
        let mut failing = false;
        loop {
            std::thread::sleep(REPORT_EVERY);
            let table = routes.now();
            let services: Vec<_> = table.services().map(|s| s.stats.report(s.id)).collect();
            drop(table);
            for chunk in services.chunks(MAX_LOAD_SERVICES) {
                let load = GatewayLoad {
                    gateway: name.clone(),
                    services: chunk.to_vec(),
                };
                match client.report_load(&load) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        tracing::warn!("load report: {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        }
    });
}

/// Serves requests on `listener` through `routes` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Arc<Routes>,
    config: ProxyConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let proxy = Arc::new(Proxy::new(routes, config));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // A client that reset before accept, or descriptors running out: go on.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
            });
            // A client has 30 s to send its headers; idle keep-alive connections are the
            // client's to close.
            if let Err(e) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}
