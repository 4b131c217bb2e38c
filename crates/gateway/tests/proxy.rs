//! The gateway against real sockets: a replica that is gone is passed over and the request
//! retried on another; an answer streams through as the replica sends it; a body that never
//! arrives is refused in time and is not load; past its most requests in flight the gateway
//! says so; a request for a service with no ready replica waits for one, or is refused once
//! the wait is over.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use gateway::proxy::ProxyConfig;
use gateway::table::Routes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::api::{GatewayRoutes, ServiceEndpoint, ServiceRoute};

/// A replica on a free port: it answers `tokens` chunks, `delay` apart, naming its port.
async fn replica(tokens: u32, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    let stream = futures_util::stream::unfold(0u32, move |i| async move {
                        if i >= tokens {
                            return None;
                        }
                        tokio::time::sleep(delay).await;
                        let token = Bytes::from(format!("token {i}\n"));
                        Some((Ok::<_, Infallible>(Frame::data(token)), i + 1))
                    });
                    let mut r = hyper::Response::new(StreamBody::new(stream));
                    r.headers_mut()
                        .insert("x-replica", port.to_string().parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn routes(version: u64, ports: &[u16]) -> GatewayRoutes {
    GatewayRoutes {
        version,
        services: vec![ServiceRoute {
            id: 1,
            name: "chat".into(),
            tenant: "t".into(),
            desired: ports.len() as u32,
            endpoints: ports
                .iter()
                .map(|p| ServiceEndpoint {
                    replica: u64::from(*p),
                    node: "n".into(),
                    address: "127.0.0.1".into(),
                    port: *p,
                    canary: false,
                })
                .collect(),
            canary_percent: None,
        }],
    }
}

/// A gateway over `table`; its address.
async fn gateway(table: Arc<Routes>, config: ProxyConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve(
        listener,
        table,
        config,
        std::future::pending(),
    ));
    addr
}

/// Sends `request` (raw HTTP/1.1) and reads until the connection closes or `wait` passes.
async fn raw(addr: std::net::SocketAddr, request: &str, wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

fn post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
}

#[tokio::test]
async fn a_gone_replica_is_passed_over_and_the_answer_streams_through() {
    let live = replica(3, Duration::from_millis(150)).await;
    // A port nothing listens on: connections to it are refused.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let table = Arc::new(Routes::default());
    // Before the server's routes arrive, the gateway says so rather than "no such service".
    let addr = gateway(table.clone(), ProxyConfig::default()).await;
    let answer = raw(addr, &post("/t/chat/x"), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    table.update(&routes(1, &[gone, live]));
    for _ in 0..4 {
        // A POST whose connection failed went nowhere: it is retried, on the live replica.
        let answer = raw(addr, &post("/t/chat/v1/x"), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("x-replica: {live}")), "{answer}");
        assert!(answer.contains("token 2"), "{answer}");
    }
    // Streamed: the first token arrives long before the last.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(post("/t/chat/").as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("token 0") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first token: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!seen.contains("token 2"), "{seen}");
    assert!(started.elapsed() < Duration::from_millis(400));
    // Unknown services and paths are refused by name.
    let answer = raw(addr, &post("/t/other/"), Duration::from_secs(2)).await;
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("other"),
        "{answer}"
    );
    let answer = raw(addr, &post("/only-one-part"), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_refused_and_the_gateway_keeps_its_bounds() {
    let live = replica(1, Duration::from_millis(1)).await;
    let table = Arc::new(Routes::default());
    table.update(&routes(1, &[live]));
    let config = ProxyConfig {
        body_timeout: Duration::from_millis(300),
        hold_timeout: Duration::from_millis(300),
        max_inflight: 2,
        max_body: 1024,
        ..ProxyConfig::default()
    };
    let addr = gateway(table.clone(), config).await;
    // Promised 100 bytes, sent 2: refused after the body timeout, and not counted as load.
    let slow = "POST /t/chat/ HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\nhi";
    let answer = raw(addr, slow, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let t = table.now();
    let service = t.service("t", "chat").unwrap();
    assert_eq!(service.stats.report(1).inflight, 0);
    // Too large a body.
    let big = format!(
        "POST /t/chat/ HTTP/1.1\r\nHost: g\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(2000)
    );
    let answer = raw(addr, &big, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Two slow uploads take both slots: a third request is told the gateway is full.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(slow.as_bytes()).await.unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = raw(addr, &post("/t/chat/"), Duration::from_secs(2)).await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("most requests"),
        "{answer}"
    );
    drop(hogs);
    // With no ready replica, a request waits for one, then is refused once the wait is over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    table.update(&routes(2, &[]));
    let started = Instant::now();
    let answer = raw(addr, &post("/t/chat/"), Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("no ready replica"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // One that arrives while it waits is used.
    let waiting =
        tokio::spawn(async move { raw(addr, &post("/t/chat/"), Duration::from_secs(3)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    table.update(&routes(3, &[live]));
    let answer = waiting.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
