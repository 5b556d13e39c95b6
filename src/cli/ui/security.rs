//! Who may use the dashboard, and how a page's actions are kept from other sites.
//!
//! - **Where it listens.** A loopback address needs nothing more; any other address needs a token
//!   ([`Policy::check_listen`]), since the dashboard can replay and purge.
//! - **The token.** When set, every request (pages, assets, API) carries it: `Authorization: Bearer <token>` from
//!   scripts, or the `redcall_ui_token_<port>` cookie that opening any page with `?token=<token>` sets (HttpOnly,
//!   SameSite=Strict) before redirecting to the same page without it. Compared in constant time. Cookies are not
//!   kept apart by port (a browser sends a host's cookies to every port of it), so the cookie is named after the
//!   dashboard's port: two dashboards on one host do not overwrite each other's, and a dashboard never takes
//!   another's. Any other server on the same host can still read it from the requests the browser sends it
//!   (see `docs/ui.md`).
//! - **Without a token**, requests must name a loopback host (`Host: 127.0.0.1:8080`, `localhost`, `[::1]`): a
//!   page of another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused.
//! - **Actions** (every state change) are `POST` only and carry the per-process CSRF token in the
//!   `X-Redcall-Csrf` header (the page has it; a script gets it from `GET /api/session`, or authenticates with the
//!   `Authorization` header, which no browser adds by itself). A browser's `Origin`, when sent, must be the
//!   dashboard's own. `--read-only` refuses them all, except a replay's dry run (which changes nothing): the two
//!   replay endpoints pass here and refuse anything but `"dry_run": true` themselves ([`Policy::refuse_change`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::router::AppState;

/// The start of the name of the cookie that carries the token for a browser: `redcall_ui_token_<port>`.
pub const TOKEN_COOKIE_PREFIX: &str = "redcall_ui_token_";
/// The header that carries the CSRF token on actions.
pub const CSRF_HEADER: &str = "x-redcall-csrf";

/// The access rules of one dashboard process.
pub struct Policy {
    /// The token every request must carry, when set.
    token: Option<String>,
    /// The per-process token the page sends with every action.
    csrf: String,
    /// Whether actions are refused.
    pub read_only: bool,
    /// The token cookie's name, after the port listened on.
    cookie: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A policy with a fresh CSRF token. An empty `token` counts as none.
    pub fn new(token: Option<String>, read_only: bool) -> Self {
        let csrf = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        Self {
            token: token.filter(|t| !t.is_empty()),
            csrf,
            read_only,
            cookie: format!("{TOKEN_COOKIE_PREFIX}0"),
        }
    }

    /// Names the token cookie after `port`, the one the dashboard listens on.
    pub fn set_port(&mut self, port: u16) {
        self.cookie = format!("{TOKEN_COOKIE_PREFIX}{port}");
    }

    /// With `--read-only`, the refusal of a request that would change something (`None`: go ahead). The replay
    /// endpoints call it with their `dry_run`; every other action is refused by [`guard`] already.
    pub fn refuse_change(&self, dry_run: bool) -> Option<ApiError> {
        (self.read_only && !dry_run).then(read_only_refusal)
    }

    /// The CSRF token the page embeds.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Refuses to listen on a non-loopback address without a token.
    ///
    /// # Errors
    /// [`redcall::Error::InvalidArgument`] naming the address and what to do.
    pub fn check_listen(&self, addr: SocketAddr) -> redcall::Result<()> {
        if addr.ip().is_loopback() || self.token.is_some() {
            return Ok(());
        }
        Err(redcall::Error::InvalidArgument(format!(
            "refusing to listen on {addr} without a token: anyone who reaches it could replay and purge; \
             give --token (or REDCALL_UI_TOKEN), or listen on a loopback address such as 127.0.0.1"
        )))
    }

    /// Whether `given` is the token (constant time in the token's length).
    fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    }
}

/// Equality that takes the same time wherever the first difference is (the length is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a request proved it may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// No token is required.
    Open,
    /// The `Authorization` header: a script, which no other site can make a browser send.
    Header,
    /// The cookie: a browser, which needs the CSRF token for actions.
    Cookie,
}

/// The middleware every request passes: token, host, and for actions method, read-only, CSRF and origin.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let policy = &state.policy;
    let headers = request.headers();
    let proof = if policy.has_token() {
        if bearer(headers).is_some_and(|t| policy.token_matches(t)) {
            Proof::Header
        } else if cookie(headers, &policy.cookie).is_some_and(|t| policy.token_matches(t)) {
            Proof::Cookie
        } else if let Some(redirect) = token_in_query(policy, &request) {
            return redirect;
        } else {
            return ApiError::unauthorized().into_response();
        }
    } else {
        if !host_is_loopback(headers) {
            return ApiError::forbidden(
                "forbidden",
                "without a token the dashboard answers only requests for a loopback host (Host: 127.0.0.1, \
                 localhost or [::1])",
            )
            .into_response();
        }
        Proof::Open
    };
    let may_be_dry_run = is_replay(request.uri().path());
    if is_action(request.method())
        && let Err(err) = check_action(policy, proof, headers, may_be_dry_run)
    {
        return err.into_response();
    }
    next.run(request).await
}

/// Whether the method changes state (everything but reads).
fn is_action(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `path` is one of the replay endpoints, whose dry runs `--read-only` allows (they check the rest).
fn is_replay(path: &str) -> bool {
    path.starts_with("/api/services/")
        && (path.ends_with("/dead-letters/replay") || path.ends_with("/replay-range"))
}

/// The answer to a change under `--read-only`.
fn read_only_refusal() -> ApiError {
    ApiError::forbidden(
        "read_only",
        "the dashboard runs with --read-only: replay and purge are refused (a replay's dry run is allowed)",
    )
}

/// An action's checks: read-only (unless it `may_be_dry_run`: its handler checks), origin, CSRF.
fn check_action(
    policy: &Policy,
    proof: Proof,
    headers: &HeaderMap,
    may_be_dry_run: bool,
) -> Result<(), ApiError> {
    if policy.read_only && !may_be_dry_run {
        return Err(read_only_refusal());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, rest)| rest));
        if host.is_none() || origin_host != host {
            return Err(ApiError::forbidden(
                "forbidden",
                "the request's Origin is not this dashboard",
            ));
        }
    }
    if proof == Proof::Header {
        return Ok(());
    }
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), policy.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf",
            "actions need the X-Redcall-Csrf header with the token of GET /api/session",
        ))
    }
}

/// The bearer token of the `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A cookie's value.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// For a page opened with the right `?token=`: a redirect to the same path without it, setting the cookie.
fn token_in_query(policy: &Policy, request: &Request) -> Option<Response> {
    if request.method() != Method::GET {
        return None;
    }
    let query = request.uri().query()?;
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let token = percent_decode(token)?;
    if !policy.token_matches(&token) {
        return None;
    }
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict",
        policy.cookie
    );
    let location = request.uri().path().to_owned();
    Some(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
        )
            .into_response(),
    )
}

/// `%XX`-decodes a query value (`+` is a space); `None` when it is not valid UTF-8 or a cookie could not carry it.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(out).ok()?;
    text.bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        .then_some(text)
}

/// Whether the `Host` header names a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), with any port.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_host(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("header"));
        headers
    }

    #[test]
    fn only_loopback_hosts_pass_without_a_token() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(host_is_loopback(&with_host(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "localhost.evil:80",
            "",
        ] {
            assert!(!host_is_loopback(&with_host(bad)), "{bad}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_non_loopback_address_needs_a_token() {
        let open = Policy::new(None, false);
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(open.check_listen(addr("127.0.0.1:8080")).is_ok());
        assert!(open.check_listen(addr("[::1]:8080")).is_ok());
        assert!(open.check_listen(addr("0.0.0.0:8080")).is_err());
        assert!(
            Policy::new(Some(String::new()), false)
                .check_listen(addr("0.0.0.0:1"))
                .is_err()
        );
        let guarded = Policy::new(Some("t".into()), false);
        assert!(guarded.check_listen(addr("0.0.0.0:8080")).is_ok());
        assert!(
            !format!("{guarded:?}").contains("\"t\""),
            "no token in Debug"
        );
    }

    #[test]
    fn query_tokens_decode() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("abc").as_deref(), Some("abc"));
        assert_eq!(percent_decode("a%3Bb"), None, "a cookie cannot carry ;");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
