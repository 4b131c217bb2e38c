//! The API's edges, as a fuzzer or an attacker meets them: every refusal comes in the API's
//! JSON error body (the framework's own ones included: unknown routes, wrong methods, chunked
//! bodies over the limit), the token is checked before the body is read, and the OpenAPI
//! document declares the refusals every operation can give.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let (srv, token) = common::start_server(dir.path()).await;
    Api {
        app: server::router(srv),
        token,
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, request: Request<Body>) -> (u16, String, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            kind,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// The error body every refusal must have: a field (possibly empty) and a reason.
fn assert_api_error(what: &str, kind: &str, body: &Value) {
    assert!(kind.starts_with("application/json"), "{what}: {kind}");
    assert!(body["error"]["field"].is_string(), "{what}: {body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn every_refusal_comes_as_the_apis_json_error() {
    let api = api().await;
    let auth = format!("Bearer {}", api.token);
    // A route that does not exist.
    let (status, kind, body) = api
        .send(
            Request::get("/v1/nothing")
                .header("authorization", &auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, 404);
    assert_api_error("unknown route", &kind, &body);
    // A method the route does not take.
    let (status, kind, body) = api
        .send(
            Request::delete("/v1/jobs")
                .header("authorization", &auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, 405);
    assert_api_error("wrong method", &kind, &body);
    // A chunked body (no declared length) over the limit.
    let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
    let stream =
        futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let (status, kind, body) = api
        .send(
            Request::post("/v1/jobs")
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 413);
    assert_api_error("chunked body over the limit", &kind, &body);
    assert_eq!(body["error"]["field"], "body");
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let api = api().await;
    for path in [
        "/v1/jobs",
        "/v1/services",
        "/v1/sandboxes",
        "/v1/services/1/scale",
        "/v1/agent/heartbeat",
        "/v1/agent/wait",
        "/v1/tokens",
    ] {
        let (status, kind, body) = api
            .send(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from("{not json"))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_api_error(path, &kind, &body);
    }
}

#[tokio::test]
async fn the_document_declares_every_operations_refusals() {
    let api = api().await;
    let (status, _, doc) = api
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 20);
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let declared = op["responses"].as_object().unwrap();
            let mut wanted = vec!["401", "403"];
            if op.get("requestBody").is_some() {
                wanted.extend(["400", "413"]);
            }
            if path.contains('{') {
                wanted.push("404");
            }
            for status in wanted {
                assert!(
                    declared.contains_key(status),
                    "{method} {path} does not declare {status}"
                );
            }
        }
    }
    // String rules are in the schema, not only in the server's checks.
    let name = &doc["components"]["schemas"]["SubmitJob"]["properties"]["name"];
    assert_eq!(name["maxLength"], 128, "{name}");
    assert!(name["pattern"].is_string(), "{name}");
    let services = &doc["paths"]["/v1/services"]["get"]["responses"]["200"];
    assert!(services.to_string().contains("ServiceList"), "{services}");
}
