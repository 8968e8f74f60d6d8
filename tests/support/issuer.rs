//! A token issuer for tests: OpenID discovery and a JWKS served over HTTP on 127.0.0.1, with
//! keys made in the test (RSA by `openssl genpkey`, P-256 and Ed25519 by ring) and tokens signed
//! by `jsonwebtoken`. Its key set can be replaced while it runs (key rotation).
//!
//! The browser end-to-end test uses a real provider (the npm `oidc-provider`, tests/e2e); this
//! one lets the Rust tests make tokens that no provider would issue (expired, wrong audience,
//! `alg: none`...).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: serde_json::Value,
}

impl TestKey {
    /// An RS256 key (2048 bits, made by openssl).
    pub fn rsa(kid: &str) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pem)
            .output()
            .expect("run openssl");
        assert!(ok.status.success(), "openssl genpkey: {ok:?}");
        let modulus = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&pem)
            .output()
            .expect("run openssl");
        let modulus = String::from_utf8(modulus.stdout).unwrap();
        let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let encoding = EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap();
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding,
            jwk: serde_json::json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": B64.encode(n), "e": "AQAB",
            }),
        }
    }

    /// An ES256 key (P-256).
    pub fn p256(kid: &str) -> TestKey {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // the public key is the uncompressed point 04 || x || y
        let point = pair.public_key().as_ref();
        TestKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
            }),
        }
    }

    /// An EdDSA key (Ed25519).
    pub fn ed25519(kid: &str) -> TestKey {
        use ring::signature::Ed25519KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        TestKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "OKP", "kid": kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                "x": B64.encode(pair.public_key().as_ref()),
            }),
        }
    }

    /// A token with `claims`, signed by this key (its kid in the header).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running issuer: discovery at `{url}/.well-known/openid-configuration`, keys at
/// `{url}/jwks`. Stops when dropped.
pub struct TestIssuer {
    pub url: String,
    jwks: Arc<Mutex<serde_json::Value>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestIssuer {
    /// Serves the public keys of `keys`.
    pub fn start(keys: &[&TestKey]) -> TestIssuer {
        use axum::routing::get;
        let jwks = Arc::new(Mutex::new(Self::set(keys)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://127.0.0.1:{}", addr.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        let served = jwks.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new()
                    .route(
                        "/.well-known/openid-configuration",
                        get(move || async move { axum::Json(discovery) }),
                    )
                    .route(
                        "/jwks",
                        get(move || async move { axum::Json(served.lock().unwrap().clone()) }),
                    );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TestIssuer {
            url,
            jwks,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn set(keys: &[&TestKey]) -> serde_json::Value {
        serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Serves these keys from now on (the old ones are gone).
    pub fn rotate(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() = Self::set(keys);
    }

    /// Claims of a valid token for `audience` with `roles`, valid for ten minutes.
    pub fn claims(&self, audience: &str, user: &str, roles: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "iss": self.url, "aud": audience, "sub": format!("sub-{user}"),
            "preferred_username": user, "roles": roles,
            "iat": now(), "nbf": now() - 5, "exp": now() + 600,
        })
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
