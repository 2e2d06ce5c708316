//! The web console at `/console/`: server-rendered HTML pages over the admin API.
//!
//! The console has no rules of its own. Every figure and every action goes through the admin
//! API in process ([`api`]: the request is built with the session's credential as its bearer
//! token and handed to the same router the HTTP clients reach), so the console sees exactly what
//! that credential may see through the API, and its buttons write the same store rows and audit
//! entries as the API. Sign-in accepts the admin token, an organization reader key (`tgr-…`:
//! its organization and descendants, read only) or a model-owner key (`tgo-…`: its models'
//! reviews and evidence).
//!
//! Sessions live in memory ([`Sessions`]): the browser holds only a random session id in an
//! `HttpOnly`, `SameSite=Strict` cookie scoped to `/console`; the credential never appears in a
//! URL or a page. Every form that changes something carries the session's CSRF token, checked
//! before the action. Assets (one stylesheet, one small script) are embedded in the binary.

mod html;
mod pages;
pub mod session;

pub use session::{SESSION_TTL, Session, Sessions, Who};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tollgate_store::KeyRole;
use tower::ServiceExt;

use crate::app::App;

/// Name of the session cookie.
pub const COOKIE: &str = "tollgate_console";
/// The largest admin API answer the console reads.
const MAX_API_BODY: usize = 64 << 20;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The console's routes (merged into the main router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(pages::overview))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/organizations", get(pages::organizations))
        .route("/console/organizations/{org}", get(pages::organization))
        .route("/console/organizations/{org}/keys", post(pages::create_key))
        .route(
            "/console/organizations/{org}/keys/{key}/revoke",
            post(pages::revoke_key),
        )
        .route("/console/invoices/{org}/{month}", get(pages::invoice))
        .route("/console/reviews", get(pages::reviews))
        .route("/console/reviews/{org}", get(pages::evidence))
        .route("/console/reviews/{org}/{action}", post(pages::decide))
        .route("/console/audit", get(pages::audit))
        .route("/console/providers", get(pages::providers))
        .route("/console/assets/{file}", get(asset))
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Which credential a sign-in token is, if any. The admin token is checked by the admin API's
/// own check; reader and owner keys by the same lookups their API endpoints use.
pub fn classify(app: &App, token: &str) -> Option<Who> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    headers.insert(header::AUTHORIZATION, bearer);
    if crate::admin::admin_auth(app, &headers).is_ok() {
        return Some(Who::Admin);
    }
    if token.starts_with(crate::guard_admin::OWNER_KEY_PREFIX) {
        let key = app.guard.owner_keys.get(&crate::tenancy::hash_key(token))?;
        return Some(Who::Owner {
            owner: key.owner.clone(),
        });
    }
    let key = app.tenancy.key(token)?;
    (key.role == KeyRole::Reader).then(|| Who::Reader {
        organization: key.organization.to_string(),
    })
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session of a request, if signed in.
pub fn session(app: &App, headers: &HeaderMap) -> Option<(String, Arc<Session>)> {
    let id = cookie_value(headers, COOKIE)?;
    app.console.get(id).map(|s| (id.to_owned(), s))
}

fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

fn clear_cookie() -> &'static str {
    "tollgate_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
}

/// Checks a form's CSRF token against the session's.
pub fn csrf_ok(session: &Session, token: Option<&str>) -> bool {
    token.is_some_and(|t| constant_time_eq(t.as_bytes(), session.csrf.as_bytes()))
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in (or the credential stopped working): go to the sign-in page.
    SignIn,
    /// An answer with a status and a message for the person.
    Status(StatusCode, String),
}

impl PageError {
    pub fn forbidden() -> PageError {
        PageError::Status(
            StatusCode::FORBIDDEN,
            "Your sign-in does not give access to this page.".into(),
        )
    }

    pub fn not_found(what: impl Into<String>) -> PageError {
        PageError::Status(StatusCode::NOT_FOUND, what.into())
    }
}

/// An admin API answer.
pub struct ApiReply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl ApiReply {
    /// The JSON body of a success, or the API's error as a page error.
    pub fn json(self) -> Result<Value, PageError> {
        if !self.status.is_success() {
            return Err(self.error());
        }
        serde_json::from_slice(&self.body).map_err(|_| {
            PageError::Status(
                StatusCode::BAD_GATEWAY,
                "The admin API answered with something that is not JSON.".into(),
            )
        })
    }

    /// The API's error (OpenAI shape) as a page error; 401 means sign in again.
    pub fn error(&self) -> PageError {
        if self.status == StatusCode::UNAUTHORIZED {
            return PageError::SignIn;
        }
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        PageError::Status(self.status, message)
    }
}

/// Calls the admin API in process with the session's credential: the same router, handlers,
/// checks and audit log as an HTTP client of the API.
pub async fn api(
    app: &Arc<App>,
    session: &Session,
    method: Method,
    uri: &str,
    body: Option<&Value>,
    accept: Option<&str>,
) -> Result<ApiReply, PageError> {
    let internal = |what: &str| PageError::Status(StatusCode::INTERNAL_SERVER_ERROR, what.into());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", session.credential),
        )
        .header(header::HOST, "console.internal");
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let req = match body {
        Some(v) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => req.body(Body::empty()),
    }
    .map_err(|_| internal("Cannot build the admin API request."))?;
    let router = app
        .api
        .get()
        .ok_or_else(|| internal("The admin API is not mounted."))?;
    let Ok(res) = router(app.clone()).oneshot(req).await;
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(res.into_body(), MAX_API_BODY)
        .await
        .map_err(|_| internal("Cannot read the admin API answer."))?;
    Ok(ApiReply {
        status,
        content_type,
        body,
    })
}

/// `GET` a JSON document from the admin API.
pub async fn get_json(app: &Arc<App>, session: &Session, uri: &str) -> Result<Value, PageError> {
    api(app, session, Method::GET, uri, None, None)
        .await?
        .json()
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_console=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn session_cookie_is_http_only_and_strict() {
        let c = session_cookie("x");
        assert!(c.contains("HttpOnly"));
        assert!(c.contains("SameSite=Strict"));
        assert!(c.contains("Path=/console"));
    }

    #[test]
    fn csrf_needs_the_exact_token() {
        let s = Sessions::default();
        let (_, session) = s.create(Who::Admin, "t".into());
        assert!(csrf_ok(&session, Some(&session.csrf.clone())));
        assert!(!csrf_ok(&session, Some("nope")));
        assert!(!csrf_ok(&session, None));
    }

    #[test]
    fn encoding_keeps_ids_and_escapes_the_rest() {
        assert_eq!(enc("org_ab-1.x"), "org_ab-1.x");
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
    }
}
