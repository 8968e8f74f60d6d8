//! The web console (issue 16, docs/console.md): the files of `ui/` (embedded in the binary at
//! compile time; read from the source tree in debug builds), its pages' statuses, the session
//! cookie and `/ui/config.json`.
//!
//! Every `/ui/...` page answers the same shell (`ui/index.html`, a single-page application),
//! with the status the caller's identity earns for that page: 401 when not signed in (no
//! `WWW-Authenticate`, so that browsers show the console's login form and not their Basic
//! dialog), 403 when signed in without the page's permission, 404 for no page. The shell's
//! script then draws the page, or the login form.
//!
//! `POST /ui/session` turns a credential into the `pacs_session` cookie, which the identity
//! layer (`pacs_dicomweb::identity`) then accepts on every route, under its CSRF rule.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pacs_dicomweb::{Authenticator, Credential, HttpError, Identity, Permission, Principal};
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::json;

use crate::admin_api::AdminState;

/// The console's files (`ui/` at the repository root, written by hand: no build step).
#[derive(RustEmbed)]
#[folder = "ui/"]
#[allow_missing = true]
struct Files;

/// What the console needs to know of the node's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The OpenID Connect issuer the console may sign in with.
    pub oidc_issuer: Option<String>,
    /// The console's OAuth client id there (`--console-oidc-client-id`).
    pub oidc_client_id: String,
    pub dicomweb_root: String,
    /// Whether a viewer (`--viewer-dir`) is served at `/`.
    pub viewer: bool,
    /// Lifetime of a session made from a credential that carries none (an API key).
    pub session_ttl: Duration,
}

impl ConsoleSettings {
    pub fn from_settings(settings: &crate::config::Settings) -> ConsoleSettings {
        ConsoleSettings {
            oidc_issuer: settings.auth.oidc.as_ref().map(|o| o.issuer.clone()),
            oidc_client_id: settings.console_oidc_client_id.clone(),
            dicomweb_root: settings.dicomweb_root.clone(),
            viewer: settings.viewer_dir.is_some(),
            session_ttl: settings.auth.login_token_ttl,
        }
    }
}

struct ConsoleState {
    admin: Arc<AdminState>,
    settings: ConsoleSettings,
    /// The shell's Content-Security-Policy.
    csp: HeaderValue,
}

/// The console's routes (each in `crate::auth::permissions::HTTP_ROUTES`, all public: the
/// handlers answer with the status each identity earns).
pub fn router(admin: Arc<AdminState>, settings: ConsoleSettings) -> Router {
    let csp = HeaderValue::from_str(&content_security_policy(settings.oidc_issuer.as_deref()))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let state = Arc::new(ConsoleState {
        admin,
        settings,
        csp,
    });
    Router::new()
        .route("/ui", get(shell_root))
        .route("/ui/", get(shell_root))
        .route("/ui/{*path}", get(shell))
        .route("/ui/assets/{*path}", get(asset))
        .route("/ui/config.json", get(config))
        .route(
            "/ui/session",
            axum::routing::post(create_session).delete(end_session),
        )
        .with_state(state)
}

/// Scripts, styles and connections from the node only (plus the identity provider, which the
/// console's sign-in talks to); no framing (clickjacking).
fn content_security_policy(issuer: Option<&str>) -> String {
    let issuer_origin = issuer
        .and_then(|i| url::Url::parse(i).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    let connect = match issuer_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
         connect-src {connect}; frame-ancestors 'none'"
    )
}

/// What a page needs, by the first segment of its path under `/ui/`.
enum PageNeed {
    /// The login page and the sign-in callback.
    Public,
    /// Any identity that may do anything.
    Anyone,
    Permission(Permission),
    NoPage,
}

fn page_need(path: &str) -> PageNeed {
    match path.trim_start_matches('/').split('/').next().unwrap_or("") {
        "" => PageNeed::Anyone,
        "studies" | "patients" => PageNeed::Permission(Permission::Read),
        "aes" | "ai" | "users" | "node" => PageNeed::Permission(Permission::Admin),
        "audit" => PageNeed::Permission(Permission::Audit),
        "login" | "callback" => PageNeed::Public,
        _ => PageNeed::NoPage,
    }
}

/// The status `identity` earns for a page. An anonymous caller that holds the permission anyway
/// (the zero-configuration node, called from its own machine) is served.
fn page_status(need: PageNeed, identity: &Identity) -> StatusCode {
    let refused = || {
        if identity.is_authenticated() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        }
    };
    match need {
        PageNeed::Public => StatusCode::OK,
        PageNeed::NoPage => StatusCode::NOT_FOUND,
        PageNeed::Anyone if identity.is_authenticated() || !identity.permissions.is_empty() => {
            StatusCode::OK
        }
        PageNeed::Anyone => refused(),
        PageNeed::Permission(p) if identity.has(p) => StatusCode::OK,
        PageNeed::Permission(_) => refused(),
    }
}

async fn shell_root(
    State(state): State<Arc<ConsoleState>>,
    identity: Identity,
    headers: HeaderMap,
) -> Response {
    answer_shell(&state, &identity, &headers, "")
}

async fn shell(
    State(state): State<Arc<ConsoleState>>,
    identity: Identity,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    answer_shell(&state, &identity, &headers, &path)
}

fn answer_shell(
    state: &ConsoleState,
    identity: &Identity,
    headers: &HeaderMap,
    path: &str,
) -> Response {
    let Some(file) = Files::get("index.html") else {
        return HttpError::new(
            StatusCode::NOT_FOUND,
            "this build of the node has no console (ui/index.html)",
        )
        .into_response();
    };
    let status = page_status(page_need(path), identity);
    let mut response = (status, body_of(file.data)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, state.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // A challenge only to a client that sent an Authorization header and had it refused: a
    // browser that merely is not signed in must not pop up its Basic dialog.
    if status == StatusCode::UNAUTHORIZED && identity.refused.is_some() {
        let challenge = match Credential::from_headers(headers) {
            Ok(Credential::Basic { .. }) => Some("Basic realm=\"pacs\""),
            Ok(Credential::Bearer(_)) => Some("Bearer realm=\"pacs\", error=\"invalid_token\""),
            Err(_) => Some("Bearer realm=\"pacs\""),
            _ => None,
        };
        if let Some(c) = challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
    }
    response
}

/// A file's bytes as a body: embedded ones (release builds) without a copy.
fn body_of(data: std::borrow::Cow<'static, [u8]>) -> axum::body::Body {
    match data {
        std::borrow::Cow::Borrowed(b) => axum::body::Body::from(bytes::Bytes::from_static(b)),
        std::borrow::Cow::Owned(v) => axum::body::Body::from(v),
    }
}

/// `GET /ui/assets/{path}`: one of the console's files, public (code, no patient data), with
/// an ETag; `Cache-Control: no-cache` so that a new node version's files are picked up at once
/// (revalidation is one 304).
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let traversal = path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        || path.contains('\\');
    let file = (!traversal).then(|| Files::get(&path)).flatten();
    let Some(file) = file else {
        return HttpError::new(StatusCode::NOT_FOUND, format!("no console file {path}"))
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body_of(file.data).into_response()
    };
    let h = response.headers_mut();
    if !matches {
        let mime = match path.rsplit_once('.').map(|(_, ext)| ext) {
            // ES modules need a JavaScript type (HTML 8.1.1.2); mime_guess agrees, said once
            Some("js" | "mjs") => "text/javascript; charset=utf-8".to_string(),
            Some("css") => "text/css; charset=utf-8".to_string(),
            Some("html") => "text/html; charset=utf-8".to_string(),
            _ => file.metadata.mimetype().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&mime) {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /ui/config.json` (public): what the console's script needs before anyone signs in.
async fn config(State(state): State<Arc<ConsoleState>>) -> Response {
    let s = &state.settings;
    let oidc = s.oidc_issuer.as_ref().map(|issuer| {
        json!({
            "issuer": issuer,
            "client_id": s.oidc_client_id,
            "scope": "openid profile",
        })
    });
    let mut response = Json(json!({
        "oidc": oidc,
        "dicomweb": s.dicomweb_root,
        "viewer": s.viewer.then_some("/"),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// Whether the request came over TLS (straight, or through a trusted proxy that says so: the
/// identity layer removed X-Forwarded-Proto from anyone else).
fn over_tls(uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn session_cookie_header(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/{secure}; Max-Age={max_age}",
        pacs_dicomweb::SESSION_COOKIE
    ))
    .ok()
}

/// Seconds until a JWT's `exp` (its signature was checked when it was identified), if it has one.
fn seconds_left(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(exp.saturating_sub((crate::audit::now_ms() / 1000).max(0) as u64))
}

fn unauthorized(why: &str) -> Response {
    // no challenge: the console's form shows the message
    HttpError::new(StatusCode::UNAUTHORIZED, why.to_string()).into_response()
}

/// `POST /ui/session`: a local user's name and password (JSON or HTTP Basic) become a login
/// token, as at `POST /api/login`; a bearer token (the OpenID provider's access token) is
/// kept as it is. Either goes into the `pacs_session` cookie. Logins are audited as at
/// `/api/login`.
async fn create_session(
    State(state): State<Arc<ConsoleState>>,
    identity: Identity,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let admin = &state.admin;
    let address = identity.peer.map(|p| p.ip().to_string());
    let address = address.as_deref();
    const URI: &str = "/ui/session";
    let credential = Credential::from_headers(&headers);
    let (token, identity) = match credential {
        Ok(Credential::Bearer(token)) => {
            if let Some(why) = identity
                .refused
                .as_deref()
                .filter(|_| !identity.is_authenticated())
            {
                audit_login(admin, "anonymous", address, URI, Some(why)).await;
                return unauthorized(why);
            }
            audit_login(admin, &identity.principal.name(), address, URI, None).await;
            (token, identity)
        }
        Ok(Credential::Basic { .. }) | Ok(Credential::None) => {
            let (username, password) = match credential {
                Ok(Credential::Basic { username, password }) => (username, password),
                _ if !body.is_empty() => match serde_json::from_slice::<LoginBody>(&body) {
                    Ok(b) => (b.username, b.password),
                    Err(e) => {
                        return HttpError::bad_request(format!("invalid login: {e}"))
                            .into_response()
                    }
                },
                _ => return HttpError::bad_request(
                    "send {\"username\", \"password\"}, HTTP Basic credentials or a bearer token",
                )
                .into_response(),
            };
            let who = format!("user:{username}");
            match admin.auth.login(&username, &password).await {
                Ok(login) => {
                    audit_login(admin, &who, address, URI, None).await;
                    let identity = admin
                        .auth
                        .identify(
                            Credential::Bearer(login.access_token.clone()),
                            identity.peer,
                        )
                        .await;
                    (login.access_token, identity)
                }
                Err(why) => {
                    tracing::warn!(peer = ?identity.peer, user = %username, reason = %why, "console login refused");
                    audit_login(admin, &who, address, URI, Some(&why)).await;
                    return unauthorized(&why);
                }
            }
        }
        Ok(Credential::Certificate(_)) | Err(_) => {
            let why = identity
                .refused
                .clone()
                .unwrap_or_else(|| "unsupported credential".into());
            return unauthorized(&why);
        }
    };
    if !identity.is_authenticated() {
        return unauthorized(identity.refused.as_deref().unwrap_or("not authenticated"));
    }
    let expires_in = seconds_left(&token).unwrap_or(state.settings.session_ttl.as_secs());
    let mut response = Json(json!({
        "principal": identity.principal.name(),
        "permissions": identity.permissions.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "expires_in": expires_in,
    }))
    .into_response();
    if let Some(cookie) = session_cookie_header(&token, expires_in, over_tls(&uri, &headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn audit_login(
    admin: &AdminState,
    who: &str,
    address: Option<&str>,
    uri: &str,
    failure: Option<&str>,
) {
    crate::admin_api::audit_login(admin, who, address, uri, failure).await
}

/// `DELETE /ui/session`: the cookie cleared; a local user's login tokens ended (as at
/// `POST /api/logout`); the logout audited. 204, also when nobody was signed in.
async fn end_session(
    State(state): State<Arc<ConsoleState>>,
    identity: Identity,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let outcome = match &identity.principal {
        Principal::Anonymous => Ok(()),
        Principal::User(name) => {
            crate::admin_api::end_login(&state.admin, &identity, Some(name)).await
        }
        _ => crate::admin_api::end_login(&state.admin, &identity, None).await,
    };
    let mut response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    };
    if let Some(cookie) = session_cookie_header("", 0, over_tls(&uri, &headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_need_their_permission() {
        use pacs_dicomweb::Permissions;
        let user = |perms: &[Permission]| {
            Identity::new(Principal::User("u".into()), None, Permissions::of(perms))
        };
        let nobody = Identity::anonymous(None, Permissions::NONE);
        let viewer = user(&[Permission::Read]);
        let admin = user(&[Permission::Read, Permission::Admin, Permission::Audit]);
        let status = |p: &str, i: &Identity| page_status(page_need(p), i).as_u16();
        assert_eq!(status("", &nobody), 401);
        assert_eq!(status("login", &nobody), 200);
        assert_eq!(status("callback", &nobody), 200);
        assert_eq!(status("studies/1.2.3", &nobody), 401);
        assert_eq!(status("", &viewer), 200);
        assert_eq!(status("studies", &viewer), 200);
        assert_eq!(status("patients/P1", &viewer), 200);
        assert_eq!(status("aes", &viewer), 403);
        assert_eq!(status("audit", &viewer), 403);
        assert_eq!(status("node", &admin), 200);
        assert_eq!(status("audit", &admin), 200);
        assert_eq!(status("nonsense", &admin), 404);
    }

    #[test]
    fn csp_names_the_issuer_origin() {
        let csp = content_security_policy(Some("https://id.example.org:8443/realms/x"));
        assert!(
            csp.contains("connect-src 'self' https://id.example.org:8443;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }
}
