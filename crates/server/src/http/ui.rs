//! The web dashboard, served by the server itself: its pages and scripts are built into the
//! binary (`crates/server/ui/`; nothing is fetched from elsewhere, and the content security
//! policy allows nothing else). A login page takes an API token and keeps it in a session
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` off loopback); the cookie stands for the token
//! on `GET` requests to `/v1` only (`cookie_auth`), so a page can read what its token may read
//! and a cookie can never change anything. Tenants see only their own work: the API decides.

use super::*;
use axum::http::{header, HeaderValue, Method};

/// The session cookie's name.
const COOKIE: &str = "stargrid_session";

const INDEX: &str = include_str!("../../ui/index.html");
const LOGIN: &str = include_str!("../../ui/login.html");
const LOGIN_JS: &str = include_str!("../../ui/login.js");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// Scripts, styles, data and the event stream from this server only; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The token in the request's session cookie, if any.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 256 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether the request came to a loopback name (a `Secure` cookie would not come back over
/// plain HTTP elsewhere; off loopback the server speaks only TLS).
fn on_loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// `/ui/`: the dashboard, or the login page when there is no valid session.
pub(super) async fn index(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let valid = session_token(&headers).is_some_and(|t| {
        let mut h = HeaderMap::new();
        HeaderValue::from_str(&format!("Bearer {t}"))
            .map(|v| h.insert(header::AUTHORIZATION, v))
            .is_ok()
            && server.principal(&h).is_ok()
    });
    if valid {
        asset("text/html; charset=utf-8", INDEX)
    } else {
        redirect("/ui/login")
    }
}

pub(super) async fn login_page() -> Response {
    asset("text/html; charset=utf-8", LOGIN)
}

pub(super) async fn login_js() -> Response {
    asset("text/javascript; charset=utf-8", LOGIN_JS)
}

pub(super) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The login form: `token`, and `next` (a page of the dashboard).
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`: a token that the server knows becomes the session cookie.
pub(super) async fn login(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return redirect("/ui/login?refused=no%20token");
    };
    let token = form.token.trim();
    let mut h = HeaderMap::new();
    let valid = token.len() <= 256
        && token.bytes().all(|b| b.is_ascii_alphanumeric())
        && HeaderValue::from_str(&format!("Bearer {token}"))
            .map(|v| h.insert(header::AUTHORIZATION, v))
            .is_ok();
    match valid.then(|| server.principal(&h)) {
        Some(Ok(Role::Admin | Role::Tenant { .. })) => {}
        Some(Ok(Role::Agent { .. })) => {
            return redirect("/ui/login?refused=an%20agent%20credential%20has%20no%20dashboard")
        }
        _ => return redirect("/ui/login?refused=unknown%2C%20revoked%20or%20expired"),
    }
    // Only a page of the dashboard: never a redirect elsewhere.
    let next: String = form
        .next
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '/')
        .take(64)
        .collect();
    let secure = if on_loopback(&headers) {
        ""
    } else {
        "; Secure"
    };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, format!("/ui/#/{next}")),
        ],
    )
        .into_response()
}

/// `POST /ui/logout`: the session cookie is dropped.
pub(super) async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/ui/login".to_string()),
        ],
    )
        .into_response()
}

/// A `GET` to `/v1` without a bearer token but with a session cookie is read as if the cookie's
/// token were the bearer: the dashboard's reads and its event stream (which a browser cannot
/// send headers with). Any other method, and any other path, ignores the cookie.
pub(super) async fn cookie_auth(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path().starts_with("/v1/");
    if reads && !request.headers().contains_key(header::AUTHORIZATION) {
        if let Some(token) = session_token(request.headers()) {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                request.headers_mut().insert(header::AUTHORIZATION, v);
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; stargrid_session=abc123 ; b=2"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("abc123"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("stargrid_session=a b\"c"),
        );
        assert_eq!(session_token(&h), None);
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            on_loopback(&h)
        };
        assert!(host("127.0.0.1:7070") && host("localhost") && host("[::1]:7070"));
        assert!(!host("stargrid.example:7443") && !host("127.0.0.1.evil.example"));
    }
}
