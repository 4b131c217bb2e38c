//! Requests a frontend passes on to the writer as they came: the method, the path and query,
//! the caller's credential and the body (up to the API's limit) go out; the status, the
//! content type and the body come back, streamed as the writer sends it (an exec's lines).

use super::*;

/// Most requests passed on at once.
pub(super) const MAX_PASSED_ON: usize = 256;

/// The headers passed on.
const PASSED_ON: [&str; 4] = ["authorization", "content-type", "accept", "last-event-id"];

/// Passes `request` on to the writer and its answer back, once its token is one the copy
/// knows (an unknown caller costs the writer nothing) and while fewer than
/// [`MAX_PASSED_ON`] requests are in flight (each holds a thread while its answer streams).
pub(in crate::http) async fn pass_to_writer(
    server: &Server,
    up: &Upstream,
    request: axum::extract::Request,
) -> Response {
    let role = match server.caller(request.headers()) {
        Ok((role, _)) => role,
        Err(refusal) => return refusal.into_response(),
    };
    // Agents' posts (an exec's output) are not counted: a busy frontend must not cut the
    // commands whose readers hold the permits.
    let permit = if request.uri().path().starts_with("/v1/agent/") {
        None
    } else {
        match up.passing_on.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "",
                    format!(
                        "{MAX_PASSED_ON} requests are being passed on to the writer: try again"
                    ),
                )
            }
        }
    };
    let (parts, body) = request.into_parts();
    // Only an admin's fleet file may be larger than any other request.
    let fleet_file = parts.uri.path() == super::super::fleet_change::APPLY_PATH;
    let limit = if fleet_file && matches!(role, Role::Admin) {
        crate::api::MAX_FLEET_FILE_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return problem(StatusCode::PAYLOAD_TOO_LARGE, "body", e.to_string());
        }
    };
    let method = parts.method.as_str().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let headers: Vec<(String, String)> = PASSED_ON
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    let client = up.client.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    // One blocking thread per request in flight: it sends, then reads the answer as it comes.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let forward = wire::client::Forward {
            method: &method,
            path_and_query: &path_and_query,
            headers: &headers,
            body: &body,
        };
        let answer = client.forward(&forward);
        let mut answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        let _ = head_tx.send(Ok((answer.status, answer.content_type.take())));
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut answer.body, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        // The caller went away: stop reading.
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let (status, content_type) = match head_rx.await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return writer_refusal(e).into_response(),
        Err(_) => return does_not_write().into_response(),
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(ct) = content_type.and_then(|c| axum::http::HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, ct);
    }
    response
}
