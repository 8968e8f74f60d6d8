//! Who is calling, established once per request, and whether that caller may use the route.
//!
//! [`identify`] (a middleware of the one HTTP stack, see [`crate::app`]) reads the request's
//! credential (`Authorization: Bearer` or `Basic`) and client address, asks the node's
//! [`Authenticator`] for an [`Identity`] and puts it in the request extensions; handlers take
//! it as an extractor and hand it to every [`crate::Archive`] call. [`authorize`] then looks the
//! matched route up in the node's [`RoutePolicy`] (one table, `src/auth/permissions.rs` in the
//! node) and answers 401 (no valid credential) or 403 (the identity lacks the permission)
//! before any handler runs. A route the policy does not know is refused: the table fails
//! closed.
//!
//! The web console's session cookie ([`SESSION_COOKIE`]) is a credential too, read here like
//! the Authorization header (which wins when both are sent): a bearer token the browser keeps.
//! A request other than GET or HEAD that it authenticates must carry [`CONSOLE_HEADER`]`: 1`
//! (a header no cross-site form can send, besides the cookie's SameSite=Strict), else 403.
//!
//! This crate knows HTTP credentials; who the users are, how tokens are validated and which
//! roles grant what is the node's business.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::HttpError;

/// What a caller may be allowed to do; roles are sets of these (the node maps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// QIDO-RS, WADO-RS, C-FIND, C-MOVE, C-GET, statistics.
    Read,
    /// STOW-RS, C-STORE.
    Write,
    /// Sending studies, identified, to other AEs.
    Export,
    /// AEs, routes, users, keys, jobs, the re-identification table.
    Admin,
    /// Leasing and completing AI jobs; what such a caller stores is AI output.
    AiWorker,
    /// Searching and verifying the audit trail.
    Audit,
    /// De-identified export (PS3.15 Annex E): what leaves carries no patient identity, so this
    /// does not imply [`Permission::Read`].
    Deidentify,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Write,
        Permission::Export,
        Permission::Admin,
        Permission::AiWorker,
        Permission::Audit,
        Permission::Deidentify,
    ];

    /// The name used in configuration, logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Export => "export",
            Permission::Admin => "admin",
            Permission::AiWorker => "ai-worker",
            Permission::Audit => "audit",
            Permission::Deidentify => "deidentify",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Permission`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn of(permissions: &[Permission]) -> Permissions {
        permissions.iter().copied().collect()
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | permission.bit())
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    pub fn without(self, permission: Permission) -> Permissions {
        Permissions(self.0 & !permission.bit())
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// The names, comma-separated (logs).
    pub fn names(self) -> String {
        self.iter()
            .map(Permission::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Permissions {
        iter.into_iter().fold(Permissions::NONE, Permissions::with)
    }
}

/// Who a request comes from, as far as the credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No (valid) credential presented.
    Anonymous,
    /// A local user (HTTP Basic or a login token).
    User(String),
    /// An API key, by its name.
    ApiKey(String),
    /// A user of the OpenID Connect provider: its preferred name, else its subject.
    Oidc(String),
    /// The holder of the node's `--admin-token`.
    AdminToken,
    /// The holder of the node's shared `--worker-token`.
    WorkerToken,
    /// A TLS client certificate, by its subject's Common Name.
    Certificate(String),
    /// The holder of the node's `--metrics-token`: may read the operators' endpoints
    /// ([`Need::Operator`]), nothing else.
    MetricsToken,
}

impl Principal {
    /// How logs (and the audit trail) name the caller.
    pub fn name(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User(n) => format!("user:{n}"),
            Principal::ApiKey(n) => format!("key:{n}"),
            Principal::Oidc(n) => format!("oidc:{n}"),
            Principal::AdminToken => "admin-token".into(),
            Principal::WorkerToken => "worker-token".into(),
            Principal::Certificate(n) => format!("cert:{n}"),
            Principal::MetricsToken => "metrics-token".into(),
        }
    }
}

/// The caller of one request: established by [`identify`], read by [`authorize`], handlers and
/// (through every [`crate::Archive`] method) the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// The client's address: the TCP peer, or what a trusted proxy forwarded.
    pub peer: Option<SocketAddr>,
    pub permissions: Permissions,
    /// A credential was presented and refused: why (told to the client in the 401).
    pub refused: Option<String>,
}

impl Identity {
    /// An anonymous caller holding `permissions` (none, unless the node is open).
    pub fn anonymous(peer: Option<SocketAddr>, permissions: Permissions) -> Identity {
        Identity {
            principal: Principal::Anonymous,
            peer,
            permissions,
            refused: None,
        }
    }

    pub fn new(
        principal: Principal,
        peer: Option<SocketAddr>,
        permissions: Permissions,
    ) -> Identity {
        Identity {
            principal,
            peer,
            permissions,
            refused: None,
        }
    }

    /// A caller whose credential was refused: anonymous, holding nothing.
    pub fn refused(peer: Option<SocketAddr>, why: impl Into<String>) -> Identity {
        Identity {
            principal: Principal::Anonymous,
            peer,
            permissions: Permissions::NONE,
            refused: Some(why.into()),
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
    }

    /// What it stores is AI output.
    pub fn is_ai_worker(&self) -> bool {
        self.has(Permission::AiWorker)
    }

    pub fn is_authenticated(&self) -> bool {
        self.principal != Principal::Anonymous
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Identity, HttpError> {
        // Every route sits under `identify`: a missing identity is a wiring error, never a
        // reason to treat the caller as anyone in particular.
        parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            tracing::error!("request without an identity: the identify layer is missing");
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "no request identity")
        })
    }
}

/// Whether `presented` is `secret`, in time that says nothing about the secret: both are hashed
/// (which hides the lengths) and the digests compared in constant time.
pub fn token_matches(presented: &str, secret: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    bool::from(digest(presented).as_ref().ct_eq(digest(secret).as_ref()))
}

/// The credential a request presents. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    /// `Authorization: Bearer` (RFC 6750 2.1): an API key, a login token or a JWT.
    Bearer(String),
    /// `Authorization: Basic` (RFC 7617).
    Basic {
        username: String,
        password: String,
    },
    /// No Authorization header, but a client certificate the TLS handshake verified: its
    /// subject's Common Name.
    Certificate(String),
}

/// The web console's session cookie: a login token or an OpenID Connect access token.
pub const SESSION_COOKIE: &str = "pacs_session";

/// The header a cookie-authenticated request other than GET or HEAD must carry, with the value
/// `1` (cross-site request forgery defence: a form or a simple cross-origin request cannot set
/// it).
pub const CONSOLE_HEADER: &str = "x-pacs-console";

/// In the request extensions when the request's credential came from [`SESSION_COOKIE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSession;

/// The value of the [`SESSION_COOKIE`] among the request's cookies (RFC 6265 5.4: `Cookie:
/// a=b; c=d`, possibly in several headers), when it is not empty.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .filter(|value| !value.is_empty())
}

/// The verified client certificate of the request's connection (its subject), put into the
/// request extensions by the server that terminated TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Bearer(_) => f.write_str("Bearer(<hidden>)"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <hidden>)"),
            Credential::Certificate(subject) => write!(f, "Certificate({subject})"),
        }
    }
}

impl Credential {
    /// The request's credential; Err for an Authorization header this node cannot read.
    pub fn from_headers(headers: &HeaderMap) -> Result<Credential, &'static str> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Credential::None);
        };
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII")?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        // Schemes are case-insensitive (RFC 9110 11.1).
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Credential::Bearer(rest.to_string()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "malformed Basic credentials")?;
            let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("malformed Basic credentials")?;
            Ok(Credential::Basic {
                username: username.to_string(),
                password: password.to_string(),
            })
        } else {
            Err("unsupported Authorization scheme (use Bearer or Basic)")
        }
    }
}

/// Turns a request's credential into an identity: the node's users, keys, tokens and identity
/// provider live behind this.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of a caller presenting `credential` from `peer`: anonymous (with what
    /// anonymous callers may do) when there is none, [`Identity::refused`] when it is not
    /// valid.
    async fn identify(&self, credential: Credential, peer: Option<SocketAddr>) -> Identity;
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone (the login endpoint): the handler still gets the identity.
    Public,
    Permission(Permission),
    /// The operators' endpoints (health, readiness, metrics): open to a caller on this
    /// machine that connects directly (TCP peer on loopback, and no `Forwarded`,
    /// `X-Forwarded-*` or `X-Real-IP` header: a reverse proxy on the same host does not open
    /// them); otherwise an authenticated caller with [`Permission::Admin`] (an anonymous one
    /// never, whatever it may do elsewhere), or the metrics token ([`Security::metrics_token`]).
    Operator,
}

/// The permission table: what a matched route (`/dicom-web/studies/{study}`, as axum names
/// it) needs for a method. None: the route is not in the table, and is refused.
pub type RoutePolicy = Arc<dyn Fn(&Method, &str) -> Option<Need> + Send + Sync>;

/// Told of every request [`authorize`] refuses (401 or 403), e.g. to record it in an audit
/// trail. Called before the refusal is answered; it must not block (queue and return).
pub trait RefusalObserver: Send + Sync + 'static {
    /// `status` is 401 (no valid credential: `identity.refused` says why when one was
    /// presented) or 403 (authenticated, lacking `permission`).
    fn refused(
        &self,
        identity: &Identity,
        status: StatusCode,
        permission: Permission,
        method: &Method,
        route: &str,
    );
}

/// How the HTTP stack establishes identities and decides access. `Debug` shows no secret (it
/// holds none itself).
#[derive(Clone)]
pub struct Security {
    pub authenticator: Arc<dyn Authenticator>,
    pub routes: RoutePolicy,
    /// Proxies whose `X-Forwarded-For`, `-Proto` and `-Host` are believed; from any other peer
    /// these headers are removed before anything reads them.
    pub trusted_proxies: Vec<IpAddr>,
    /// The realm named in `WWW-Authenticate`.
    pub realm: String,
    /// Told of every refused request (None: nobody is).
    pub observer: Option<Arc<dyn RefusalObserver>>,
    /// A bearer token that opens the [`Need::Operator`] routes (a Prometheus server scraping
    /// from another machine), compared in constant time; it grants nothing else.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("realm", &self.realm)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// Anonymous callers may read, write and export; every route is open. For this crate's own
/// tests and embedding; the node always sets its own [`Security`].
struct Open;

#[async_trait::async_trait]
impl Authenticator for Open {
    async fn identify(&self, _: Credential, peer: Option<SocketAddr>) -> Identity {
        Identity::anonymous(
            peer,
            Permissions::of(&[Permission::Read, Permission::Write, Permission::Export]),
        )
    }
}

impl Default for Security {
    fn default() -> Self {
        Security {
            authenticator: Arc::new(Open),
            routes: Arc::new(|_, _| Some(Need::Public)),
            trusted_proxies: Vec::new(),
            realm: "pacs".into(),
            observer: None,
            metrics_token: None,
        }
    }
}

/// The client's address, as the server recorded it (or a test's `MockConnectInfo`).
pub(crate) fn client_address(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| {
            extensions
                .get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
}

const FORWARDED_HEADERS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Put into the request extensions by [`identify`] when the request comes straight from this
/// machine: its TCP peer is a loopback address and no header says a proxy relayed it (see
/// [`Need::Operator`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectLocal;

fn direct_local(tcp_peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    tcp_peer.is_some_and(|p| p.ip().is_loopback())
        && !FORWARDED_HEADERS
            .iter()
            .chain(&["x-real-ip"])
            .any(|name| headers.contains_key(*name))
}

/// The client behind a trusted proxy: the right-most address of `X-Forwarded-For` that is not
/// itself a trusted proxy (RFC 7239 7.4: the left of the list is whatever the client wrote).
fn forwarded_client(headers: &HeaderMap, trusted: &[IpAddr], peer: SocketAddr) -> SocketAddr {
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .map(|ip| SocketAddr::new(*ip, 0))
        .unwrap_or(peer)
}

/// The one place a request's [`Identity`] is established.
pub(crate) async fn identify(
    State(security): State<Arc<Security>>,
    mut request: Request,
    next: Next,
) -> Response {
    let tcp_peer = client_address(request.extensions());
    if direct_local(tcp_peer, request.headers()) {
        request.extensions_mut().insert(DirectLocal);
    }
    let from_proxy = tcp_peer.is_some_and(|p| security.trusted_proxies.contains(&p.ip()));
    let peer = match tcp_peer {
        Some(p) if from_proxy => Some(forwarded_client(
            request.headers(),
            &security.trusted_proxies,
            p,
        )),
        other => {
            for name in FORWARDED_HEADERS {
                request.headers_mut().remove(name);
            }
            other
        }
    };
    let credential = match Credential::from_headers(request.headers()) {
        // an Authorization header decides; else the console's session cookie; else the
        // connection's client certificate
        Ok(Credential::None) => match session_cookie(request.headers()) {
            Some(token) => {
                let safe = matches!(*request.method(), Method::GET | Method::HEAD);
                let marked = request
                    .headers()
                    .get(CONSOLE_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"1");
                if !safe && !marked {
                    tracing::warn!(peer = ?peer, method = %request.method(), path = %request.uri().path(), "refused: session cookie without the console header");
                    return HttpError::new(
                        StatusCode::FORBIDDEN,
                        "a request authenticated by the session cookie must carry the header X-PACS-Console: 1",
                    )
                    .into_response();
                }
                request.extensions_mut().insert(CookieSession);
                Ok(Credential::Bearer(token))
            }
            None => Ok(request
                .extensions()
                .get::<ClientCertificate>()
                .map(|c| Credential::Certificate(c.0.clone()))
                .unwrap_or(Credential::None)),
        },
        other => other,
    };
    let identity = match credential {
        Ok(Credential::Bearer(token))
            if security
                .metrics_token
                .as_deref()
                .is_some_and(|secret| token_matches(&token, secret)) =>
        {
            Identity::new(Principal::MetricsToken, peer, Permissions::NONE)
        }
        Ok(credential) => security.authenticator.identify(credential, peer).await,
        Err(why) => Identity::refused(peer, why),
    };
    tracing::Span::current().record("principal", identity.principal.name());
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// Middleware on every route (a route layer, so that the matched route is known): lets the
/// request through only if the route's [`Need`] is met; 401 without a valid credential, 403
/// with one that lacks the permission.
pub(crate) async fn authorize(
    State(security): State<Arc<Security>>,
    identity: Identity,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    // HEAD is answered by the GET handler (axum), so it needs what GET needs
    let method = match *request.method() {
        Method::HEAD => Method::GET,
        ref m => m.clone(),
    };
    let need = (security.routes)(&method, &route);
    let permission = match need {
        Some(Need::Public) => return next.run(request).await,
        Some(Need::Permission(p)) if identity.has(p) => return next.run(request).await,
        Some(Need::Permission(p)) => p,
        Some(Need::Operator)
            if request.extensions().get::<DirectLocal>().is_some()
                || (identity.is_authenticated() && identity.has(Permission::Admin))
                || identity.principal == Principal::MetricsToken =>
        {
            return next.run(request).await
        }
        Some(Need::Operator) => Permission::Admin,
        None => return not_in_table(&security, &method, &route),
    };
    refusal(&security, &identity, permission, request.method(), &route).into_response()
}

/// A method the table does not list for a route: 405 with the methods it lists, or, for a
/// route it does not list at all (a wiring error), 403. The handler never runs either way.
fn not_in_table(security: &Security, method: &Method, route: &str) -> Response {
    let listed: Vec<&str> = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ]
    .iter()
    .filter(|m| (security.routes)(m, route).is_some())
    .map(Method::as_str)
    .collect();
    if listed.is_empty() {
        tracing::error!(%method, %route, "route missing from the permission table: refused");
        return HttpError::new(
            StatusCode::FORBIDDEN,
            "this route is not in the permission table",
        )
        .into_response();
    }
    let allow = HeaderValue::from_str(&listed.join(", ")).unwrap_or(HeaderValue::from_static(""));
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        .with_header(header::ALLOW, allow)
        .into_response()
}

fn refusal(
    security: &Security,
    identity: &Identity,
    permission: Permission,
    method: &Method,
    route: &str,
) -> HttpError {
    let who = identity.principal.name();
    if let Some(observer) = &security.observer {
        let status = if identity.is_authenticated() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        observer.refused(identity, status, permission, method, route);
    }
    if identity.is_authenticated() {
        tracing::warn!(principal = %who, peer = ?identity.peer, %method, %route, needs = permission.name(), "refused: permission missing");
        return HttpError::new(
            StatusCode::FORBIDDEN,
            format!("{who} lacks the {} permission", permission.name()),
        );
    }
    // RFC 6750 3: the challenge, with error="invalid_token" when a token was refused.
    let challenge = match &identity.refused {
        Some(why) => format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
            security.realm,
            why.replace(['"', '\\'], "'")
        ),
        None => format!("Bearer realm=\"{}\"", security.realm),
    };
    tracing::warn!(peer = ?identity.peer, %method, %route, needs = permission.name(), refused = identity.refused.as_deref().unwrap_or("no credential"), "refused: not authenticated");
    let message = match &identity.refused {
        Some(why) => format!("authentication failed: {why}"),
        None => "authentication required".to_string(),
    };
    let mut error = HttpError::new(StatusCode::UNAUTHORIZED, message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        error = error.with_header(header::WWW_AUTHENTICATE, value);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
            }
            session_cookie(&h)
        };
        assert_eq!(with(&["pacs_session=abc.def"]).as_deref(), Some("abc.def"));
        assert_eq!(
            with(&["theme=dark; pacs_session=t1 ; x=y"]).as_deref(),
            Some("t1")
        );
        assert_eq!(with(&["a=b", "pacs_session=t2"]).as_deref(), Some("t2"));
        assert_eq!(with(&["pacs_session="]), None);
        assert_eq!(with(&["xpacs_session=t3; pacs_sessions=t4"]), None);
        assert_eq!(with(&[]), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret ", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn credentials_are_read_and_hidden() {
        assert_eq!(
            Credential::from_headers(&headers(None)),
            Ok(Credential::None)
        );
        let bearer = Credential::from_headers(&headers(Some("bearer abc.def"))).unwrap();
        assert_eq!(bearer, Credential::Bearer("abc.def".into()));
        assert!(!format!("{bearer:?}").contains("abc"));
        // alice:pa:ss (a colon in the password is the password's)
        let basic = Credential::from_headers(&headers(Some("Basic YWxpY2U6cGE6c3M="))).unwrap();
        assert_eq!(
            basic,
            Credential::Basic {
                username: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert!(!format!("{basic:?}").contains("pa:ss"));
        assert!(Credential::from_headers(&headers(Some("Basic !!!"))).is_err());
        assert!(Credential::from_headers(&headers(Some("Digest x"))).is_err());
        assert!(Credential::from_headers(&headers(Some("Bearer "))).is_err());
    }

    #[test]
    fn permission_sets() {
        let set = Permissions::of(&[Permission::Read, Permission::AiWorker]);
        assert!(set.contains(Permission::Read));
        assert!(!set.contains(Permission::Write));
        assert_eq!(set.names(), "read,ai-worker");
        assert_eq!(set.without(Permission::Read).names(), "ai-worker");
        assert!(Permissions::NONE.is_empty());
    }

    #[test]
    fn direct_local_means_loopback_and_no_proxy_header() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert!(direct_local(Some(local), &HeaderMap::new()));
        assert!(direct_local(Some(local6), &HeaderMap::new()));
        assert!(!direct_local(Some(remote), &HeaderMap::new()));
        assert!(!direct_local(None, &HeaderMap::new()));
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("198.51.100.1"));
            assert!(!direct_local(Some(local), &h), "{name}");
        }
    }

    #[test]
    fn forwarded_for_is_read_from_the_right() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 192.0.2.9, 10.0.0.1"),
        );
        let peer = SocketAddr::new(proxy, 443);
        assert_eq!(
            forwarded_client(&h, &[proxy], peer).ip(),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(forwarded_client(&HeaderMap::new(), &[proxy], peer), peer);
    }
}
