//! OpenID Connect bearer tokens, validated inside the node: discovery
//! (`ISSUER/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 section 4), the
//! provider's JWKS fetched, cached, and fetched again when a token names a key id the cache
//! lacks (key rotation). Signatures and claims are checked by `jsonwebtoken`: RS256, ES256 or
//! EdDSA only (never `none`, never an HMAC with a public key), `iss`, `aud`, `exp` and `nbf`
//! with a small clock skew.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::{Mutex, RwLock};

/// The identity provider as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer URL, exactly as the tokens' `iss` (a trailing slash is ignored).
    pub issuer: String,
    /// The `aud` the tokens must carry.
    pub audience: String,
    /// Where the roles are: a top-level claim or a dotted path (`realm_access.roles`).
    pub roles_claim: String,
}

/// Checks an issuer URL: HTTPS, or plain HTTP on a loopback address only (tests).
pub fn validate_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("oidc_issuer {issuer:?}: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "oidc_issuer {issuer:?}: an identity provider must be reached over https:// (http:// only on a loopback address)"
                ))
            }
        }
        other => Err(format!(
            "oidc_issuer {issuer:?}: unsupported scheme {other}"
        )),
    }
}

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// A token with an unknown key id fetches the JWKS again at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(2);
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A validated token's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcUser {
    /// `preferred_username`, else `sub`.
    pub name: String,
    pub roles: Vec<String>,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    fetching: Mutex<()>,
}

impl OidcVerifier {
    pub fn new(settings: OidcSettings) -> OidcVerifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        OidcVerifier {
            settings,
            http,
            keys: RwLock::new(None),
            fetching: Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    fn issuer(&self) -> &str {
        self.settings.issuer.trim_end_matches('/')
    }

    /// Discovery, then the JWKS.
    async fn fetch_keys(&self) -> Result<JwkSet, String> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer());
        let discovery: serde_json::Value = self
            .http
            .get(&discovery_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("OpenID discovery {discovery_url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("OpenID discovery {discovery_url}: {e}"))?;
        let announced = discovery["issuer"].as_str().unwrap_or_default();
        if announced.trim_end_matches('/') != self.issuer() {
            return Err(format!(
                "OpenID discovery: the provider calls itself {announced:?}, not {:?}",
                self.settings.issuer
            ));
        }
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or("OpenID discovery: no jwks_uri")?;
        self.http
            .get(jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("JWKS {jwks_uri}: {e}"))?
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("JWKS {jwks_uri}: {e}"))
    }

    /// Fetches the keys now (at start: a misconfigured provider shows in the log at once).
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_at_a_time = self.fetching.lock().await;
        let set = self.fetch_keys().await?;
        let n = set.keys.len();
        *self.keys.write().await = Some(Keys {
            set,
            fetched: Instant::now(),
        });
        Ok(n)
    }

    /// The key for `kid` (or the only key, for tokens without a key id), fetching the JWKS
    /// when the cache lacks it and was not just fetched.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let find = |keys: &Option<Keys>| -> Option<Result<DecodingKey, String>> {
            let set = &keys.as_ref()?.set;
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => return None,
            };
            Some(DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}")))
        };
        let stale = {
            let keys = self.keys.read().await;
            if let Some(found) = find(&keys) {
                return found;
            }
            keys.as_ref()
                .is_none_or(|k| k.fetched.elapsed() >= REFETCH_AFTER)
        };
        if stale {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot fetch the identity provider's keys");
                return Err("the identity provider's keys are unavailable".into());
            }
        }
        find(&*self.keys.read().await).unwrap_or_else(|| Err("unknown signing key".into()))
    }

    /// The user of a valid token; why not, otherwise.
    pub async fn verify(&self, token: &str) -> Result<OidcUser, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!("algorithm {:?} not accepted", header.alg));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer(), &format!("{}/", self.issuer())]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| format!("token refused: {e}"))?;
        let claims = data.claims;
        let name = claims["preferred_username"]
            .as_str()
            .or_else(|| claims["sub"].as_str())
            .ok_or("token without sub")?
            .to_string();
        Ok(OidcUser {
            name,
            roles: roles_at(&claims, &self.settings.roles_claim),
        })
    }
}

/// The strings at a dotted claim path: an array of strings, or one string of space-separated
/// values.
pub fn roles_at(claims: &serde_json::Value, path: &str) -> Vec<String> {
    let mut value = claims;
    for part in path.split('.') {
        value = &value[part];
    }
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str())
            .map(str::to_string)
            .collect(),
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_must_be_https_unless_loopback() {
        assert!(validate_issuer("https://idp.example/realms/x").is_ok());
        assert!(validate_issuer("http://127.0.0.1:9000").is_ok());
        assert!(validate_issuer("http://localhost:9000").is_ok());
        assert!(validate_issuer("http://[::1]:9000").is_ok());
        assert!(validate_issuer("http://idp.example").is_err());
        assert!(validate_issuer("ftp://idp.example").is_err());
        assert!(validate_issuer("not a url").is_err());
    }

    #[test]
    fn roles_from_top_level_or_dotted_claims() {
        let claims = serde_json::json!({
            "roles": ["viewer", 3, "admin"],
            "realm_access": { "roles": ["technologist"] },
            "scope": "viewer radiologist",
        });
        assert_eq!(roles_at(&claims, "roles"), ["viewer", "admin"]);
        assert_eq!(roles_at(&claims, "realm_access.roles"), ["technologist"]);
        assert_eq!(roles_at(&claims, "scope"), ["viewer", "radiologist"]);
        assert!(roles_at(&claims, "groups").is_empty());
        assert!(roles_at(&claims, "realm_access.nothing.deeper").is_empty());
    }
}
