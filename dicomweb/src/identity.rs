//! Who is calling, established once per request, and what that caller may do.
//!
//! [`identify`] (a middleware of the one HTTP stack, see [`crate::app`]) turns the request's
//! bearer token and client address into an [`Identity`] and puts it in the request extensions;
//! handlers take it as an extractor and hand it to every [`crate::Archive`] call. Route groups
//! that need more than anonymous access sit behind [`require`], which decides from the
//! identity alone whether it holds the group's [`Permission`].
//!
//! Today's callers are anonymous clients, the holder of the admin token and AI workers (the
//! worker token). Users and roles will be further [`Principal`]s whose permissions come from
//! their roles; the checks stay the same.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::HttpError;

/// What a route group may require of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// The admin API: AE registry, sends, the AI job administration.
    Administer,
    /// The AI worker API: leasing and reporting on jobs.
    Work,
}

impl Permission {
    const ALL: [Permission; 2] = [Permission::Administer, Permission::Work];

    fn bit(self) -> u8 {
        match self {
            Permission::Administer => 1,
            Permission::Work => 2,
        }
    }
}

/// The kind of caller a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// No (valid) credential presented.
    Anonymous,
    /// Presented the admin token.
    Administrator,
    /// Presented the worker token: what it stores is AI output.
    AiWorker,
}

/// The caller of one request: established by [`identify`], read by handlers, access checks and
/// (through every [`crate::Archive`] method) the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// The client's address (None when the server was not started with connect info).
    pub peer: Option<SocketAddr>,
    granted: u8,
}

impl Identity {
    /// An anonymous caller that holds no permission.
    pub fn anonymous(peer: Option<SocketAddr>) -> Identity {
        Identity {
            principal: Principal::Anonymous,
            peer,
            granted: 0,
        }
    }

    /// A caller of `principal` holding `permissions`.
    pub fn new(
        principal: Principal,
        peer: Option<SocketAddr>,
        permissions: &[Permission],
    ) -> Identity {
        Identity {
            principal,
            peer,
            granted: permissions.iter().fold(0, |acc, p| acc | p.bit()),
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.granted & permission.bit() != 0
    }

    /// The permissions this caller holds.
    pub fn permissions(&self) -> impl Iterator<Item = Permission> + '_ {
        Permission::ALL.into_iter().filter(|p| self.has(*p))
    }

    pub fn is_ai_worker(&self) -> bool {
        self.principal == Principal::AiWorker
    }

    fn is_loopback(&self) -> bool {
        self.peer.is_some_and(|p| p.ip().is_loopback())
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
/// (which hides the lengths) and the digests compared in constant time. The one token
/// comparison of the node.
pub fn token_matches(presented: &str, secret: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    bool::from(digest(presented).as_ref().ct_eq(digest(secret).as_ref()))
}

/// The bearer token of a request (RFC 6750 2.1), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The credentials the node accepts and what each grants. Never printed: `Debug` hides the
/// tokens.
#[derive(Clone, Default)]
pub struct Access {
    /// `Authorization: Bearer <this>` grants [`Permission::Administer`] from anywhere; when
    /// unset, anonymous loopback callers hold it instead.
    pub admin_token: Option<String>,
    /// `Authorization: Bearer <this>` comes from an AI worker ([`Permission::Work`]).
    pub worker_token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("worker_token", &self.worker_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Access {
    /// The identity of a caller presenting `headers` from `peer`.
    pub fn identify(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Identity {
        let presented = bearer(headers);
        let holds = |secret: &Option<String>| matches!((secret, presented), (Some(s), Some(p)) if token_matches(p, s));
        let (admin, worker) = (holds(&self.admin_token), holds(&self.worker_token));
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        let mut permissions = Vec::new();
        if admin || (self.admin_token.is_none() && loopback) {
            permissions.push(Permission::Administer);
        }
        if worker {
            permissions.push(Permission::Work);
        }
        let principal = if worker {
            Principal::AiWorker
        } else if admin {
            Principal::Administrator
        } else {
            Principal::Anonymous
        };
        Identity::new(principal, peer, &permissions)
    }

    /// Ok when `identity` holds `permission`; otherwise the refusal, logged with the caller's
    /// address and the path.
    pub fn check(
        &self,
        identity: &Identity,
        permission: Permission,
        path: &str,
    ) -> Result<(), HttpError> {
        if identity.has(permission) {
            return Ok(());
        }
        let peer = identity.peer;
        Err(match permission {
            Permission::Administer if self.admin_token.is_some() || identity.is_loopback() => {
                tracing::warn!(peer = ?peer, %path, "admin API call refused: missing or wrong bearer token");
                HttpError::new(StatusCode::UNAUTHORIZED, "admin token required")
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            Permission::Administer => {
                tracing::warn!(peer = ?peer, %path, "admin API call refused: not from loopback and no admin token configured");
                HttpError::new(
                    StatusCode::FORBIDDEN,
                    "the admin API answers loopback clients only unless an admin token is configured",
                )
            }
            Permission::Work => {
                tracing::warn!(peer = ?peer, %path, "worker API call refused: missing or wrong worker token");
                HttpError::new(StatusCode::UNAUTHORIZED, "worker token required")
            }
        })
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

/// The one place a request's [`Identity`] is established.
pub(crate) async fn identify(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = client_address(request.extensions());
    let identity = access.identify(request.headers(), peer);
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The state of a [`require`] layer: the policy and the permission its routes need.
#[derive(Debug, Clone)]
pub struct Required {
    pub access: Arc<Access>,
    pub permission: Permission,
}

/// Middleware in front of a route group: lets the request through only if its identity holds
/// the group's permission (see [`crate::Guarded`]).
pub(crate) async fn require(
    State(required): State<Required>,
    identity: Identity,
    request: Request,
    next: Next,
) -> Response {
    match required
        .access
        .check(&identity, required.permission, request.uri().path())
    {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        h
    }

    const LOOPBACK: &str = "127.0.0.1:40000";
    const OUTSIDE: &str = "192.0.2.7:40000";

    fn peer(a: &str) -> Option<SocketAddr> {
        Some(a.parse().unwrap())
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret ", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn without_admin_token_loopback_administers() {
        let access = Access::default();
        let local = access.identify(&headers(None), peer(LOOPBACK));
        assert_eq!(local.principal, Principal::Anonymous);
        assert!(local.has(Permission::Administer));
        assert!(!local.has(Permission::Work));
        let outside = access.identify(&headers(None), peer(OUTSIDE));
        assert!(!outside.has(Permission::Administer));
        let refusal = access
            .check(&outside, Permission::Administer, "/api/aes")
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_admin_token_everyone_needs_it() {
        let access = Access {
            admin_token: Some("adm".into()),
            worker_token: Some("wrk".into()),
        };
        let local = access.identify(&headers(None), peer(LOOPBACK));
        assert!(!local.has(Permission::Administer));
        let refusal = access
            .check(&local, Permission::Administer, "/api/aes")
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
        assert!(refusal
            .headers
            .iter()
            .any(|(name, _)| name == header::WWW_AUTHENTICATE));
        let admin = access.identify(&headers(Some("adm")), peer(OUTSIDE));
        assert_eq!(admin.principal, Principal::Administrator);
        assert_eq!(
            admin.permissions().collect::<Vec<_>>(),
            [Permission::Administer]
        );
        let worker = access.identify(&headers(Some("wrk")), peer(OUTSIDE));
        assert!(worker.is_ai_worker());
        assert_eq!(worker.permissions().collect::<Vec<_>>(), [Permission::Work]);
        let wrong = access.identify(&headers(Some("nope")), peer(OUTSIDE));
        assert_eq!(wrong, Identity::anonymous(peer(OUTSIDE)));
        assert_eq!(
            access
                .check(&wrong, Permission::Work, "/api/worker/lease")
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn debug_hides_tokens() {
        let access = Access {
            admin_token: Some("adm-secret".into()),
            worker_token: None,
        };
        assert!(!format!("{access:?}").contains("adm-secret"));
    }
}
