//! Authentication: who a request or an association is, and the roles that decide what it may
//! do (the roles' permissions and what each route and operation needs are in [`permissions`]).
//!
//! The credentials, in the order they are tried for `Authorization: Bearer`:
//! - the `--admin-token` and the shared `--worker-token` (constant-time comparison);
//! - API keys (`pacs_...`), looked up by their SHA-256;
//! - login tokens, HS256 JWTs this node signs at `POST /api/login` (key id [`LOGIN_KID`]), bound
//!   to the user's password generation, so that a password change ends them;
//! - OpenID Connect access tokens ([`oidc`]).
//!
//! A TLS client certificate (HTTPS with `--tls-client-ca`), when no Authorization header is
//! sent: its subject's Common Name names an API key, whose roles it gets.
//!
//! `Authorization: Basic` is a local user's name and password (Argon2id). Successful checks
//! are remembered for a minute against the stored hash, so that a script sending Basic on
//! every request does not pay Argon2 every time, while a password change applies at once.
//!
//! With no credential the caller is anonymous: it may do everything when nothing is configured
//! (no identity provider, no users, no keys, no admin token) and it calls from loopback — the
//! zero-configuration node on one's own machine — read, write and export anywhere when the
//! node runs with `--insecure-allow-anonymous`, and nothing otherwise.

pub mod accounts;
pub mod oidc;
pub mod permissions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pacs_dicomweb::{
    token_matches, Authenticator, Credential, Identity, Permission, Permissions, Principal,
};
use serde::{Deserialize, Serialize};

use crate::index::Index;
use accounts::{key_hash, verify_password, KEY_PREFIX};
use oidc::{OidcSettings, OidcVerifier};
use permissions::permissions_of;

/// Key id in the header of the node's own login tokens.
pub const LOGIN_KID: &str = "pacs-login";
/// Issuer and audience of login tokens.
const LOGIN_ISSUER: &str = "pacs";
/// How long a remembered Basic check holds.
const BASIC_CACHE: Duration = Duration::from_secs(60);
const BASIC_CACHE_MAX: usize = 10_000;

/// How the node authenticates, from its settings.
#[derive(Clone, Default)]
pub struct AuthSettings {
    pub admin_token: Option<String>,
    pub worker_token: Option<String>,
    pub oidc: Option<OidcSettings>,
    pub insecure_allow_anonymous: bool,
    /// Lifetime of login tokens.
    pub login_token_ttl: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("worker_token", &self.worker_token.as_ref().map(|_| "<set>"))
            .field("oidc", &self.oidc)
            .field("insecure_allow_anonymous", &self.insecure_allow_anonymous)
            .field("login_token_ttl", &self.login_token_ttl)
            .finish()
    }
}

/// Claims of a login token.
#[derive(Debug, Serialize, Deserialize)]
struct LoginClaims {
    iss: String,
    aud: String,
    sub: String,
    /// The user's password generation when the token was issued.
    generation: i64,
    iat: u64,
    exp: u64,
}

/// A login token as `POST /api/login` returns it (RFC 6749 5.1's field names).
#[derive(Debug, Serialize)]
pub struct LoginToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// The node's authenticator: HTTP requests (through [`Authenticator`]) and DIMSE user
/// identities ([`NodeAuth::authenticate_user`]).
pub struct NodeAuth {
    index: Arc<dyn Index>,
    settings: AuthSettings,
    oidc: Option<OidcVerifier>,
    login_key: Vec<u8>,
    /// SHA-256 of (name, password) → the hash it verified against, and when.
    basic_checked: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl NodeAuth {
    /// The authenticator over `index`; the login tokens' signing key is the index's (made on
    /// first use and shared by every node on the index).
    pub async fn open(
        index: Arc<dyn Index>,
        settings: AuthSettings,
    ) -> Result<Arc<NodeAuth>, crate::index::IndexError> {
        use ring::rand::SecureRandom;
        let mut fresh = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| crate::index::IndexError::Database("no randomness".into()))?;
        let stored = index
            .setting_or_insert("auth.login_signing_key", &hex::encode(fresh))
            .await?;
        let login_key = hex::decode(stored.trim()).unwrap_or_else(|_| stored.into_bytes());
        let oidc = settings.oidc.clone().map(OidcVerifier::new);
        Ok(Arc::new(NodeAuth {
            index,
            settings,
            oidc,
            login_key,
            basic_checked: Mutex::new(HashMap::new()),
        }))
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Fetches the identity provider's keys, if one is configured; logs the outcome.
    pub async fn prefetch_provider_keys(&self) {
        if let Some(oidc) = &self.oidc {
            match oidc.refresh().await {
                Ok(n) => {
                    tracing::info!(issuer = %oidc.settings().issuer, keys = n, "identity provider keys fetched")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "identity provider not reachable yet; tokens are refused until it is")
                }
            }
        }
    }

    /// Whether anything authenticates callers: an identity provider, an admin token, a user
    /// or a live API key. A database error counts as yes (fail closed).
    pub async fn configured(&self) -> bool {
        if self.oidc.is_some() || self.settings.admin_token.is_some() {
            return true;
        }
        // bounded: a database that does not answer must not hold every anonymous request
        // (the operators' endpoints among them) until it does
        tokio::time::timeout(Duration::from_secs(2), self.index.has_principals())
            .await
            .map_or(true, |answer| answer.unwrap_or(true))
    }

    /// What an anonymous caller from `peer` may do (see the module documentation).
    pub async fn anonymous_permissions(&self, peer: Option<SocketAddr>) -> Permissions {
        let mut granted = Permissions::NONE;
        if self.settings.insecure_allow_anonymous {
            granted = Permissions::of(&[Permission::Read, Permission::Write, Permission::Export]);
        }
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        if loopback && !self.configured().await {
            granted = permissions_of(&["admin"]);
        }
        granted
    }

    /// Issues a login token for a user whose password was just checked.
    fn issue(&self, name: &str, generation: i64) -> Result<LoginToken, String> {
        let now = unix_now();
        let ttl = self.settings.login_token_ttl.as_secs().max(60);
        let claims = LoginClaims {
            iss: LOGIN_ISSUER.into(),
            aud: LOGIN_ISSUER.into(),
            sub: name.to_string(),
            generation,
            iat: now,
            exp: now + ttl,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(LOGIN_KID.into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.login_key),
        )
        .map_err(|e| format!("cannot sign the login token: {e}"))?;
        Ok(LoginToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl,
        })
    }

    /// `POST /api/logout`: ends every login token of a local user (its generation moves on,
    /// as with a password change).
    pub async fn end_login_tokens(&self, name: &str) -> Result<(), String> {
        self.index
            .end_user_login_tokens(name, crate::audit::now_ms())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// `POST /api/login`: a login token for a local user's name and password.
    pub async fn login(&self, name: &str, password: &str) -> Result<LoginToken, String> {
        let (user, _) = self.check_password(name, password).await?;
        let row = self
            .index
            .user(&user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("wrong user name or password")?;
        tracing::info!(user = %user, "login token issued");
        self.issue(&row.name, row.generation)
    }

    /// A local user's name and password: the user's name and roles.
    async fn check_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(String, Vec<String>), String> {
        const REFUSED: &str = "wrong user name or password";
        let row = self.index.user(name).await.map_err(|e| e.to_string())?;
        let Some(row) = row else {
            // as long as a real check, so that timing does not tell which names exist
            verify_password(password, DUMMY_HASH.as_str());
            return Err(REFUSED.into());
        };
        let fingerprint: [u8; 32] = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            ctx.update(password.as_bytes());
            ctx.finish().as_ref().try_into().expect("32 bytes")
        };
        let remembered = {
            let cache = self.basic_checked.lock().expect("cache lock");
            cache.get(&fingerprint).is_some_and(|(hash, at)| {
                at.elapsed() < BASIC_CACHE && token_matches(hash, &row.password_hash)
            })
        };
        if !remembered {
            let phc = row.password_hash.clone();
            let pw = password.to_string();
            let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(REFUSED.into());
            }
            let mut cache = self.basic_checked.lock().expect("cache lock");
            if cache.len() >= BASIC_CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < BASIC_CACHE);
                if cache.len() >= BASIC_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(fingerprint, (row.password_hash.clone(), Instant::now()));
        }
        Ok((row.name, row.roles))
    }

    /// A login token's user and roles.
    async fn check_login_token(&self, token: &str) -> Result<(String, Vec<String>), String> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[LOGIN_ISSUER]);
        validation.set_audience(&[LOGIN_ISSUER]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<LoginClaims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&self.login_key),
            &validation,
        )
        .map_err(|e| format!("login token refused: {e}"))?;
        let row = self
            .index
            .user(&data.claims.sub)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the token's user no longer exists")?;
        if row.generation != data.claims.generation {
            return Err("the password changed since this token was issued".into());
        }
        Ok((row.name, row.roles))
    }

    /// A verified client certificate: its subject names an API key (`pacs key create SUBJECT
    /// --roles ...`; the key itself is not needed), whose roles it gets while the key is live.
    async fn check_certificate(&self, subject: &str) -> Result<Permissions, String> {
        let row = self
            .index
            .api_key_by_name(subject)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("certificate subject {subject} is not registered"))?;
        if row.revoked_at_ms.is_some() {
            return Err(format!("certificate subject {subject} was revoked"));
        }
        Ok(permissions_of(&row.roles))
    }

    /// A bearer token's principal and permissions.
    async fn check_bearer(&self, token: &str) -> Result<(Principal, Permissions), String> {
        let holds =
            |secret: &Option<String>| secret.as_deref().is_some_and(|s| token_matches(token, s));
        if holds(&self.settings.admin_token) {
            return Ok((Principal::AdminToken, permissions_of(&["admin"])));
        }
        if holds(&self.settings.worker_token) {
            return Ok((Principal::WorkerToken, permissions_of(&["ai-worker"])));
        }
        if token.starts_with(KEY_PREFIX) {
            let row = self
                .index
                .api_key_by_hash(&key_hash(token))
                .await
                .map_err(|e| e.to_string())?
                .ok_or("unknown API key")?;
            if row.revoked_at_ms.is_some() {
                return Err(format!("API key {} was revoked", row.name));
            }
            return Ok((Principal::ApiKey(row.name), permissions_of(&row.roles)));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "unknown token")?;
        if header.kid.as_deref() == Some(LOGIN_KID) {
            let (name, roles) = self.check_login_token(token).await?;
            return Ok((Principal::User(name), permissions_of(&roles)));
        }
        match &self.oidc {
            Some(oidc) => {
                let user = oidc.verify(token).await?;
                Ok((Principal::Oidc(user.name), permissions_of(&user.roles)))
            }
            None => Err("unknown token (no identity provider is configured)".into()),
        }
    }

    /// A DIMSE user identity (PS3.7 D.3.3.7): username and passcode against the local users,
    /// or a JWT validated like a bearer token. The user's name and permissions, or None.
    /// A username without a passcode proves nothing: it must name a local user, and the
    /// DIMSE service grants no more than the calling AE may do anyway.
    pub async fn authenticate_user(
        &self,
        offer: &pacs_dimse::OfferedIdentity,
    ) -> Option<(String, Permissions)> {
        use pacs_dimse::OfferedIdentity::*;
        let outcome = match offer {
            UsernamePasscode { username, passcode } => self
                .check_password(username, passcode)
                .await
                .map(|(name, roles)| (name, permissions_of(&roles))),
            Jwt(token) => self
                .check_bearer(token)
                .await
                .map(|(principal, permissions)| (principal.name(), permissions)),
            // named, not proven: the caller limits it to what the calling AE may do
            Username(name) => match self.index.user(name).await {
                Ok(Some(row)) => Ok((row.name, permissions_of(&row.roles))),
                Ok(None) => Err(format!("no user {name}")),
                Err(e) => Err(e.to_string()),
            },
            Unsupported(kind) => Err(format!("user identity type {kind} is not supported")),
        };
        match outcome {
            Ok(found) => Some(found),
            Err(why) => {
                tracing::warn!(reason = %why, "DIMSE user identity refused");
                None
            }
        }
    }
}

/// A hash no password matches, checked when the user does not exist.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    accounts::hash_password("no user has this password").unwrap_or_default()
});

#[async_trait::async_trait]
impl Authenticator for NodeAuth {
    async fn identify(&self, credential: Credential, peer: Option<SocketAddr>) -> Identity {
        match credential {
            Credential::None => Identity::anonymous(peer, self.anonymous_permissions(peer).await),
            Credential::Bearer(token) => match self.check_bearer(&token).await {
                Ok((principal, permissions)) => Identity::new(principal, peer, permissions),
                Err(why) => Identity::refused(peer, why),
            },
            Credential::Certificate(subject) => match self.check_certificate(&subject).await {
                Ok(permissions) => {
                    Identity::new(Principal::Certificate(subject), peer, permissions)
                }
                Err(why) => Identity::refused(peer, why),
            },
            Credential::Basic { username, password } => {
                match self.check_password(&username, &password).await {
                    Ok((name, roles)) => {
                        Identity::new(Principal::User(name), peer, permissions_of(&roles))
                    }
                    Err(why) => Identity::refused(peer, why),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Login tokens are short-lived: `expires_in` is the configured lifetime, and a token past
    /// its `exp` (beyond the 5 s skew) is refused, even with a valid signature and generation.
    #[tokio::test]
    async fn login_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::open(&dir.path().join("i.sqlite").to_string_lossy())
            .await
            .unwrap();
        crate::auth::accounts::Accounts::new(index.clone())
            .add_user("alice", &["viewer".to_string()], "password1")
            .await
            .unwrap();
        let auth = NodeAuth::open(
            index.clone(),
            AuthSettings {
                admin_token: None,
                worker_token: None,
                oidc: None,
                insecure_allow_anonymous: false,
                login_token_ttl: Duration::from_secs(900),
            },
        )
        .await
        .unwrap();
        let token = auth.login("alice", "password1").await.unwrap();
        assert_eq!(token.expires_in, 900);
        let (name, roles) = auth.check_login_token(&token.access_token).await.unwrap();
        assert_eq!(
            (name.as_str(), roles),
            ("alice", vec!["viewer".to_string()])
        );

        // the same token, signed by the node, but issued 1000 s ago
        let generation = index.user("alice").await.unwrap().unwrap().generation;
        let now = unix_now();
        let claims = LoginClaims {
            iss: LOGIN_ISSUER.into(),
            aud: LOGIN_ISSUER.into(),
            sub: "alice".into(),
            generation,
            iat: now - 1000,
            exp: now - 100,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(LOGIN_KID.into());
        let expired = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&auth.login_key),
        )
        .unwrap();
        let refused = auth.check_login_token(&expired).await.unwrap_err();
        assert!(refused.contains("Expired"), "{refused}");
    }
}
