//! What gateways meet at the API: routes answered at once or long-polled until they change,
//! load reports checked field by field and bounded, tokens that may not route or report
//! refused, and a report's load turned into a journaled scaling by the writer's next pass.

#![allow(clippy::unwrap_used)]

mod common;

use common::{call, get};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn routes_wait_for_a_change_and_load_scales_an_autoscaled_service() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, admin) = common::start_server(dir.path()).await;
    let app = server::router(srv.clone());
    let (status, created) = call(
        &app,
        &admin,
        "/v1/services",
        json!({"name": "chat", "tenant": "default", "gpus_per_node": 4, "min_replicas": 1,
               "max_replicas": 4, "autoscale": {"target_inflight_per_replica": 8}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();

    // At once without a version; a tenant's token sees its own services.
    let (_, tenant) = call(
        &app,
        &admin,
        "/v1/tokens",
        json!({"role": "tenant", "tenant": "default"}),
    )
    .await;
    let tenant = tenant["token"].as_str().unwrap().to_string();
    let (status, routes) = get(&app, &tenant, "/v1/gateway/routes").await;
    assert_eq!(status, 200, "{routes}");
    assert_eq!(routes["services"][0]["name"], "chat");
    let version = routes["version"].as_u64().unwrap();

    // With the version held, the answer waits for a change.
    let waiting = {
        let (app, admin) = (app.clone(), admin.clone());
        tokio::spawn(async move {
            get(&app, &admin, &format!("/v1/gateway/routes?after={version}")).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered with nothing new");
    let (status, _) = call(
        &app,
        &admin,
        &format!("/v1/services/{id}/scale"),
        json!({"replicas": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, changed) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(changed["version"].as_u64().unwrap() > version, "{changed}");
    assert_eq!(changed["services"][0]["desired"], 2);

    // Reports are checked by field.
    let report = |gateway: &str, service: u64, inflight: u32, rate: f64| {
        json!({"gateway": gateway, "services": [{"service": service, "inflight": inflight,
               "requests_per_s": rate, "p95_ms": 12.5}]})
    };
    for (body, status, field) in [
        (report("a b", id, 1, 1.0), 400, "gateway"),
        (report("g", id, 1, -1.0), 400, "services[0].requests_per_s"),
        (report("g", 999, 1, 1.0), 404, "services[0].service"),
        (json!({"gateway": "g", "services": [], "extra": 1}), 400, ""),
    ] {
        let (got, reply) = call(&app, &admin, "/v1/gateway/load", body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        if !field.is_empty() {
            assert_eq!(reply["error"]["field"], field, "{reply}");
        }
    }
    // A report larger than the limit is refused before it is parsed.
    let huge = "x".repeat(5 << 20);
    let (got, _) = call(&app, &admin, "/v1/gateway/load", json!({ "gateway": huge })).await;
    assert_eq!(got, 413);
    // An agent's token neither routes nor reports.
    let (_, agent) = call(
        &app,
        &admin,
        "/v1/tokens",
        json!({"role": "agent", "nodes": "nvl00000t00"}),
    )
    .await;
    let agent = agent["token"].as_str().unwrap();
    assert_eq!(get(&app, agent, "/v1/gateway/routes").await.0, 403);
    assert_eq!(
        call(&app, agent, "/v1/gateway/load", report("g", id, 1, 1.0))
            .await
            .0,
        403
    );

    // 40 requests in flight at 8 a replica: the next pass scales to the most, 4, journaled.
    let (status, reply) = call(&app, &tenant, "/v1/gateway/load", report("g", id, 40, 90.0)).await;
    assert_eq!(status, 204, "{reply}");
    let mut last = 0;
    srv.pass_if_due(&mut last).await;
    let (_, service) = get(&app, &admin, &format!("/v1/services/{id}")).await;
    assert_eq!(service["desired"], 4, "{service}");
    // The service's view shows the load (and a listing too).
    assert_eq!(service["load"]["inflight"], 40.0, "{service}");
    assert_eq!(service["load"]["requests_per_s"], 90.0, "{service}");
    let (_, list) = get(&app, &tenant, "/v1/services").await;
    assert_eq!(list["services"][0]["load"]["p95_ms"], 12.5, "{list}");
    // Prometheus sees the load and the replicas ready.
    let scrape = {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::get("/metrics")
            .header("authorization", format!("Bearer {admin}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    for line in [
        r#"stargrid_service_inflight_requests{service="chat",tenant="default"} 40.0"#,
        r#"stargrid_service_requests_per_second{service="chat",tenant="default"} 90.0"#,
        r#"stargrid_service_latency_p95_seconds{service="chat",tenant="default"} 0.0125"#,
        r#"stargrid_service_replicas{service="chat",tenant="default",state="ready"} 0"#,
    ] {
        assert!(scrape.contains(line), "{line} not in:\n{scrape}");
    }
}
