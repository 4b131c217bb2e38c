//! The web dashboard, served by the server itself: its pages and scripts are built into the
//! binary (`crates/server/ui/`; nothing is fetched from elsewhere, and the content security
//! policy allows nothing else). A login page takes an API token and opens a dashboard session:
//! a random id in a cookie (`__Host-`, `HttpOnly`, `Secure`, `SameSite=Strict`, 12 hours; on
//! plain HTTP on loopback, where browsers keep no `Secure` cookie, without those two) that
//! the server maps to the token's hash ([`DashboardSessions`], in memory, bounded). The session
//! stands for its token on `GET` requests to `/v1` only (`cookie_auth`), so a page reads what
//! its token may read and a session never changes anything; the token itself never reaches the
//! browser's storage. Tenants see only their own work: the API decides.
use super::*;
use axum::http::{header, HeaderValue, Method};

/// The session cookie's name (`__Host-`: only this host, path `/`, `Secure`).
const COOKIE: &str = "__Host-stargrid_session";

/// Its name on plain HTTP on loopback, where it cannot be `Secure` (nor `__Host-`).
const LOOPBACK_COOKIE: &str = "stargrid_session";

/// The header `cookie_auth` puts a session's token hash in (any a client sends is dropped).
pub(super) const SESSION_HASH: &str = "x-stargrid-session-hash";

/// How long a dashboard session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most dashboard sessions open at once (the oldest goes first).
const MAX_SESSIONS: usize = 4096;

/// Open dashboard sessions: a random id (what the cookie holds) to its token's hash and
/// expiry. In memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub struct DashboardSessions {
    by_id: HashMap<String, (String, Instant)>,
}

impl DashboardSessions {
    /// A new session for the token whose hash is `hash`; its id.
    fn open(&mut self, hash: String, now: Instant) -> Option<String> {
        if self.by_id.len() >= MAX_SESSIONS {
            self.by_id.retain(|_, (_, expires)| *expires > now);
        }
        if self.by_id.len() >= MAX_SESSIONS {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.by_id.remove(&id);
            }
        }
        let id = new_token().ok()?;
        self.by_id.insert(id.clone(), (hash, now + SESSION_TTL));
        Some(id)
    }

    /// The token hash of session `id`, if it is open.
    fn lookup(&mut self, id: &str, now: Instant) -> Option<String> {
        match self.by_id.get(id) {
            Some((hash, expires)) if *expires > now => Some(hash.clone()),
            Some(_) => {
                self.by_id.remove(id);
                None
            }
            None => None,
        }
    }

    fn close(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

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
            // `same-origin`, not `no-referrer`: under the latter a form post says `Origin: null`.
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The session id in the request's cookie named `cookie`, if any.
fn session_id(headers: &HeaderMap, cookie: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| value.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 256 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether a form post comes from this server's own pages: a browser's `Origin` must name the
/// host the request was sent to (a request without one is not a browser's cross-site post).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host == host
}

impl Server {
    fn dashboard_sessions(&self) -> std::sync::MutexGuard<'_, DashboardSessions> {
        lock(&self.ui_sessions)
    }

    /// The session cookie's name and attributes here: `Secure` and `__Host-` but on plain
    /// HTTP on loopback.
    fn session_cookie(&self) -> (&'static str, &'static str) {
        if self
            .plain_loopback
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            (LOOPBACK_COOKIE, "Path=/; HttpOnly; SameSite=Strict")
        } else {
            (COOKIE, "Path=/; HttpOnly; Secure; SameSite=Strict")
        }
    }

    /// The token hash of the request's dashboard session, if it has an open one.
    fn session_hash(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers, self.session_cookie().0)?;
        self.dashboard_sessions().lookup(&id, Instant::now())
    }
}

/// `/ui/`: the dashboard, or the login page when there is no valid session.
pub(super) async fn index(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let valid = server.session_hash(&headers).is_some_and(|hash| {
        let mut h = HeaderMap::new();
        HeaderValue::from_str(&hash)
            .map(|v| h.insert(SESSION_HASH, v))
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

/// `POST /ui/login`: a token the server knows opens a dashboard session. Refusals go back to
/// the login page with a code (`refused=`), never with text from the request.
pub(super) async fn login(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return redirect("/ui/login?refused=origin");
    }
    let Ok(axum::Form(form)) = form else {
        return redirect("/ui/login?refused=form");
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
        Some(Ok(_)) => return redirect("/ui/login?refused=role"),
        _ => return redirect("/ui/login?refused=token"),
    }
    let Some(id) = server
        .dashboard_sessions()
        .open(token_hash(token), Instant::now())
    else {
        return redirect("/ui/login?refused=server");
    };
    // Only a page of the dashboard: never a redirect elsewhere.
    let next: String = form
        .next
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '/')
        .take(64)
        .collect();
    let (name, attributes) = server.session_cookie();
    let cookie = format!(
        "{name}={id}; {attributes}; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, format!("/ui/#/{next}")),
        ],
    )
        .into_response()
}

/// `POST /ui/logout`: the session is closed and its cookie dropped.
pub(super) async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return redirect("/ui/");
    }
    let (name, attributes) = server.session_cookie();
    if let Some(id) = session_id(&headers, name) {
        server.dashboard_sessions().close(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{name}=; {attributes}; Max-Age=0"),
            ),
            (header::LOCATION, "/ui/login".to_string()),
        ],
    )
        .into_response()
}

/// A `GET` to `/v1` without a bearer token but with an open dashboard session is read as if
/// the session's token had sent it: the dashboard's reads and its event stream (which a browser
/// cannot send headers with). Any other method, and any other path, ignores the session; a
/// session header a client sends itself is dropped.
pub(super) async fn cookie_auth(
    State(server): State<Arc<Server>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    request.headers_mut().remove(SESSION_HASH);
    let reads = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path().starts_with("/v1/");
    if reads && !request.headers().contains_key(header::AUTHORIZATION) {
        if let Some(hash) = server.session_hash(request.headers()) {
            if let Ok(v) = HeaderValue::from_str(&hash) {
                request.headers_mut().insert(SESSION_HASH, v);
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-stargrid_session=abc123 ; b=2"),
        );
        assert_eq!(session_id(&h, COOKIE).as_deref(), Some("abc123"));
        assert_eq!(session_id(&h, LOOPBACK_COOKIE), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-stargrid_session=a b\"c"),
        );
        assert_eq!(session_id(&h, COOKIE), None);
    }

    #[test]
    fn a_form_post_from_another_origin_is_refused() {
        let headers = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            h
        };
        assert!(same_origin(&headers(Some("http://127.0.0.1:7070"))));
        assert!(same_origin(&headers(None)));
        assert!(!same_origin(&headers(Some("https://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
    }

    #[test]
    fn sessions_expire_close_and_stay_bounded() {
        let mut s = DashboardSessions::default();
        let t0 = Instant::now();
        let id = s.open("h1".into(), t0).unwrap();
        assert_eq!(s.lookup(&id, t0).as_deref(), Some("h1"));
        assert_eq!(s.lookup(&id, t0 + SESSION_TTL), None, "expired");
        let id = s.open("h2".into(), t0).unwrap();
        s.close(&id);
        assert_eq!(s.lookup(&id, t0), None);
        for i in 0..MAX_SESSIONS + 10 {
            s.open(format!("h{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.by_id.len(), MAX_SESSIONS);
    }
}
