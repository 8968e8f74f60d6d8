//! Authentication and permissions over HTTP, against the real node: every route of the
//! permission table walked with no credential, a wrong role and the right role; local users
//! and API keys through the CLI and the API; login tokens; OpenID Connect bearer tokens from a
//! test issuer (valid and every kind of invalid, key rotation); the secure defaults (HTTP
//! bind, CORS, trusted proxies).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::issuer::{now, TestIssuer, TestKey};
use crate::support::{both_backends, http_request, Backend, HttpResponse, Node, NodeOptions};

/// `pacs ARGS` on the index at `dir` / `url`, with `stdin` written to its standard input.
pub fn pacs_cli(dir: &Path, url: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pacs"));
    cmd.args(args).arg("--data-dir").arg(dir);
    if let Some(url) = url {
        cmd.args(["--database-url", url]);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PACS_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pacs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait for pacs")
}

/// Like [`pacs_cli`], asserting success.
pub fn pacs_ok(dir: &Path, url: Option<&str>, args: &[&str], stdin: &str) -> String {
    let out = pacs_cli(dir, url, args, stdin);
    assert!(
        out.status.success(),
        "pacs {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A data directory and (for PostgreSQL) a database, before any node runs on them.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    backend: Backend,
}

impl Site {
    pub fn new(backend: Backend) -> Site {
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::support::postgres_url()),
        };
        Site {
            dir: tempfile::tempdir().unwrap(),
            url,
            backend,
        }
    }

    pub fn cli(&self, args: &[&str], stdin: &str) -> String {
        pacs_ok(self.dir.path(), self.url.as_deref(), args, stdin)
    }

    pub fn cli_output(&self, args: &[&str], stdin: &str) -> Output {
        pacs_cli(self.dir.path(), self.url.as_deref(), args, stdin)
    }

    pub fn add_user(&self, name: &str, roles: &str, password: &str) {
        self.cli(
            &["user", "add", name, "--roles", roles, "--password-stdin"],
            &format!("{password}\n"),
        );
    }

    pub fn options(&self) -> NodeOptions {
        let mut opts = NodeOptions::new(self.backend).data_dir(self.dir.path());
        if let Some(url) = &self.url {
            opts = opts.database_url(url.clone());
        }
        opts
    }
}

fn get(node: &Node, path: &str, auth: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http_request(node.http_port(), "GET", path, &headers, &[])
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

const PASSWORD: &str = "correct horse battery";

/// Concrete requests for a table route: parameters filled in, `*` expanded to what exists.
fn concrete(route: &str) -> Vec<String> {
    let fill = |r: &str| {
        r.replace("{dicomweb}", "/dicom-web")
            .replace("{study}", "1.2.3")
            .replace("{title}", "NOSUCHAE")
            .replace("{id}", "999999")
            .replace("{name}", "nobody-here")
            .replace("{patient_id}", "NOBODY")
    };
    match route {
        "{dicomweb}/studies/{study}/*" => [
            "metadata",
            "series",
            "instances",
            "rendered",
            "thumbnail",
            "series/4.5",
            "series/4.5/metadata",
            "series/4.5/instances",
            "series/4.5/rendered",
            "series/4.5/thumbnail",
            "series/4.5/instances/6.7",
            "series/4.5/instances/6.7/metadata",
            "series/4.5/instances/6.7/rendered",
            "series/4.5/instances/6.7/thumbnail",
            "series/4.5/instances/6.7/frames/1",
            "series/4.5/instances/6.7/frames/1/rendered",
            "series/4.5/instances/6.7/frames/1/thumbnail",
            "series/4.5/instances/6.7/bulkdata/7FE00010",
        ]
        .iter()
        .map(|rest| format!("/dicom-web/studies/1.2.3/{rest}"))
        .collect(),
        "/api/worker/jobs/{id}/*" => ["heartbeat", "complete", "fail", "release"]
            .iter()
            .map(|rest| format!("/api/worker/jobs/999999/{rest}"))
            .collect(),
        other => vec![fill(other)],
    }
}

/// Who holds a permission, and who (authenticated) does not.
fn holders(permission: &str) -> (&'static str, &'static str) {
    match permission {
        "read" => ("vera", "nora"),
        "write" => ("tom", "vera"),
        "export" => ("rada", "tom"),
        "admin" => ("ada", "rada"),
        "ai-worker" => ("KEY", "ada"),
        // issue 13: the audit trail (admin, auditor) and de-identified export (radiologist,
        // researcher, admin)
        "audit" => ("ada", "rada"),
        "deidentify" => ("rada", "tom"),
        other => panic!("unknown permission {other}"),
    }
}

/// Every route of the table, with no credential (401 unless public), an authenticated caller
/// without the permission (403) and one with it (neither 401 nor 403).
async fn route_permission_matrix(backend: Backend) {
    use pacs::auth::permissions::HTTP_ROUTES;
    use pacs_dicomweb::Need;
    let site = Site::new(backend);
    for (name, roles) in [
        ("vera", "viewer"),
        ("tom", "technologist"),
        ("rada", "radiologist"),
        ("ada", "admin"),
    ] {
        site.add_user(name, roles, PASSWORD);
    }
    // a user without any role: authenticated, permitted nothing
    site.cli(
        &["user", "add", "nora", "--roles", "", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let key = site
        .cli(&["key", "create", "worker-1", "--roles", "ai-worker"], "")
        .trim()
        .to_string();
    let node = Node::start_with(
        site.options()
            .arg("--worker-token")
            .arg("shared-worker-token"),
    );
    let credential = |who: &str| match who {
        "KEY" => bearer(&key),
        user => basic(user, PASSWORD),
    };
    let mut walked = 0;
    for (method, route, need) in HTTP_ROUTES {
        for path in concrete(route) {
            let body: &[u8] = if *method == "GET" { b"" } else { b"{}" };
            let call_via = |auth: Option<String>, proxied: bool| {
                let mut headers = vec![("Content-Type", "application/json")];
                if let Some(a) = &auth {
                    headers.push(("Authorization", a.as_str()));
                }
                if proxied {
                    headers.push(("X-Forwarded-For", "198.51.100.4"));
                }
                http_request(node.http_port(), method, &path, &headers, body)
            };
            let call = |auth: Option<String>| call_via(auth, false);
            let anonymous = call(None);
            match need {
                // issue 16: the console's shell answers each page's own status (401 to
                // nobody, without a challenge; tests/console.rs walks the pages)
                Need::Public if path == "/ui" || path == "/ui/" => {
                    assert_eq!(anonymous.status, 401, "{method} {path}");
                    assert!(anonymous.header("www-authenticate").is_none(), "{path}");
                }
                Need::Public => {
                    assert!(
                        ![401, 403].contains(&anonymous.status),
                        "{method} {path} is public: {} {}",
                        anonymous.status,
                        anonymous.text()
                    );
                }
                // issue 14: open from this machine directly, else admin (or the metrics token,
                // tests/metrics.rs)
                Need::Operator => {
                    assert_eq!(anonymous.status, 200, "{method} {path} from loopback");
                    assert_eq!(call_via(None, true).status, 401, "{method} {path} proxied");
                    let (right, wrong) = holders("admin");
                    let refused = call_via(Some(credential(wrong)), true);
                    assert_eq!(refused.status, 403, "{method} {path} proxied as {wrong}");
                    let allowed = call_via(Some(credential(right)), true);
                    assert_eq!(allowed.status, 200, "{method} {path} proxied as {right}");
                }
                Need::Permission(p) => {
                    assert_eq!(
                        anonymous.status,
                        401,
                        "{method} {path} anonymous: {}",
                        anonymous.text()
                    );
                    assert!(
                        anonymous
                            .header("www-authenticate")
                            .is_some_and(|h| h.starts_with("Bearer realm=")),
                        "{method} {path}: {:?}",
                        anonymous.headers
                    );
                    let (right, wrong) = holders(p.name());
                    let refused = call(Some(credential(wrong)));
                    assert_eq!(
                        refused.status,
                        403,
                        "{method} {path} as {wrong} (no {}): {}",
                        p.name(),
                        refused.text()
                    );
                    let allowed = call(Some(credential(right)));
                    assert!(
                        ![401, 403].contains(&allowed.status),
                        "{method} {path} as {right}: {} {}",
                        allowed.status,
                        allowed.text()
                    );
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 50, "{walked} requests");
    // a method outside the table never reaches a handler
    let r = http_request(
        node.http_port(),
        "DELETE",
        "/dicom-web/studies/1.2.3",
        &[],
        &[],
    );
    assert_eq!(r.status, 405, "{}", r.text());
    // the viewer's files and unknown DICOMweb resources are not routes: public 404s here
    assert_eq!(get(&node, "/dicom-web/nothing", None).status, 404);
}

both_backends!(route_permission_matrix);

/// Users and keys through the CLI (on the index, node running) and the API; Basic, login
/// tokens, and what a password change or a removal does at once.
async fn users_and_keys_lifecycle(backend: Backend) {
    let site = Site::new(backend);
    site.add_user("ada", "admin", PASSWORD);
    let node = Node::start_with(site.options());
    let ada = basic("ada", PASSWORD);
    // authentication is configured: anonymous callers get nothing, even on loopback
    let r = get(&node, "/dicom-web/studies", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"pacs\""));
    assert_eq!(get(&node, "/dicom-web/studies", Some(&ada)).status, 200);
    assert_eq!(
        get(
            &node,
            "/dicom-web/studies",
            Some(&basic("ada", "wrong password"))
        )
        .status,
        401
    );
    assert_eq!(
        get(&node, "/dicom-web/studies", Some(&basic("eve", PASSWORD))).status,
        401
    );

    // the API adds a viewer; the CLI lists it
    let r = http_request(
        node.http_port(),
        "POST",
        "/api/users",
        &[
            ("Authorization", &ada),
            ("Content-Type", "application/json"),
        ],
        format!(r#"{{"name": "vera", "roles": ["viewer"], "password": "{PASSWORD}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("argon2"), "{}", r.text());
    let listed = site.cli(&["user", "list"], "");
    assert!(
        listed.contains("vera") && listed.contains("viewer"),
        "{listed}"
    );
    assert!(!listed.contains("argon2"), "{listed}");
    let users = json(&get(&node, "/api/users", Some(&ada)));
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");

    // login: a token instead of the password
    let login = |user: &str, password: &str| {
        http_request(
            node.http_port(),
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            format!(r#"{{"username": "{user}", "password": "{password}"}}"#).as_bytes(),
        )
    };
    let r = login("vera", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    let token = json(&r)["access_token"].as_str().unwrap().to_string();
    assert_eq!(json(&r)["token_type"], "Bearer");
    assert_eq!(login("vera", "not it at all").status, 401);
    let vera = bearer(&token);
    let me = json(&get(&node, "/api/whoami", Some(&vera)));
    assert_eq!(me["principal"], "user:vera");
    assert_eq!(me["permissions"], serde_json::json!(["read"]));
    assert_eq!(get(&node, "/dicom-web/studies", Some(&vera)).status, 200);
    assert_eq!(get(&node, "/api/aes", Some(&vera)).status, 403);
    // Basic on the login endpoint too
    let r = http_request(
        node.http_port(),
        "POST",
        "/api/login",
        &[("Authorization", &basic("vera", PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // a password change (CLI, node running) ends the old tokens and the old password at once
    site.cli(
        &["user", "passwd", "vera", "--password-stdin"],
        "a whole new password\n",
    );
    let r = get(&node, "/dicom-web/studies", Some(&vera));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("password changed"), "{}", r.text());
    assert_eq!(
        get(&node, "/dicom-web/studies", Some(&basic("vera", PASSWORD))).status,
        401
    );
    let r = login("vera", "a whole new password");
    assert_eq!(r.status, 200);
    let fresh = bearer(json(&r)["access_token"].as_str().unwrap());
    assert_eq!(get(&node, "/dicom-web/studies", Some(&fresh)).status, 200);
    // the API changes roles
    let r = http_request(
        node.http_port(),
        "PUT",
        "/api/users/vera",
        &[("Authorization", &ada)],
        br#"{"roles": ["viewer", "technologist"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let me = json(&get(&node, "/api/whoami", Some(&fresh)));
    assert_eq!(me["permissions"], serde_json::json!(["read", "write"]));
    // logout ends the user's login tokens (all of them: they are signed, not stored); the
    // password still works; a caller that is not a local user cannot log out
    let second = bearer(
        json(&login("vera", "a whole new password"))["access_token"]
            .as_str()
            .unwrap(),
    );
    let logout = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        http_request(node.http_port(), "POST", "/api/logout", &headers, b"")
    };
    assert_eq!(logout(Some(&fresh)).status, 204);
    assert_eq!(get(&node, "/dicom-web/studies", Some(&fresh)).status, 401);
    assert_eq!(get(&node, "/dicom-web/studies", Some(&second)).status, 401);
    let again = bearer(
        json(&login("vera", "a whole new password"))["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(get(&node, "/dicom-web/studies", Some(&again)).status, 200);
    assert_eq!(logout(None).status, 400);
    assert_eq!(logout(Some(&ada)).status, 204, "Basic: a local user too");
    let fresh = again;
    // removal (CLI): refused at once
    site.cli(&["user", "remove", "vera"], "");
    assert_eq!(get(&node, "/dicom-web/studies", Some(&fresh)).status, 401);

    // the same lifecycle through the API: add, password change (ends the old tokens and the
    // old password), removal (refused at once)
    let api = |method: &str, path: &str, body: &str| {
        http_request(
            node.http_port(),
            method,
            path,
            &[
                ("Authorization", &ada),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let r = api(
        "POST",
        "/api/users",
        &format!(r#"{{"name": "walt", "roles": ["viewer"], "password": "{PASSWORD}"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let walt = bearer(
        json(&login("walt", PASSWORD))["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(get(&node, "/dicom-web/studies", Some(&walt)).status, 200);
    let r = api(
        "PUT",
        "/api/users/walt",
        r#"{"password": "walt's second password"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("argon2"), "{}", r.text());
    let r = get(&node, "/dicom-web/studies", Some(&walt));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("password changed"), "{}", r.text());
    assert_eq!(login("walt", PASSWORD).status, 401);
    let walt = bearer(
        json(&login("walt", "walt's second password"))["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(get(&node, "/dicom-web/studies", Some(&walt)).status, 200);
    let r = api("DELETE", "/api/users/walt", "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(get(&node, "/dicom-web/studies", Some(&walt)).status, 401);
    assert_eq!(api("GET", "/api/users/walt", "").status, 404);

    // keys: printed once, alone on standard output; listed without the key; revoked at once
    let out = site.cli_output(&["key", "create", "script", "--roles", "viewer"], "");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let key = stdout.trim().to_string();
    assert!(key.starts_with("pacs_"), "{key}");
    assert_eq!(
        logout(Some(&bearer(&key))).status,
        400,
        "an API key has no login to end"
    );
    let listed = site.cli(&["key", "list"], "");
    assert!(
        listed.contains("script") && !listed.contains(&key[5..]),
        "{listed}"
    );
    assert_eq!(
        get(&node, "/dicom-web/studies", Some(&bearer(&key))).status,
        200
    );
    let keys = get(&node, "/api/keys", Some(&ada));
    assert!(!keys.text().contains(&key[5..]), "{}", keys.text());
    site.cli(&["key", "revoke", "script"], "");
    let r = get(&node, "/dicom-web/studies", Some(&bearer(&key)));
    assert_eq!(r.status, 401);
    assert!(r.text().contains("revoked"), "{}", r.text());
    // the API creates and revokes keys too
    let r = http_request(
        node.http_port(),
        "POST",
        "/api/keys",
        &[("Authorization", &ada)],
        br#"{"name": "worker-7", "roles": ["ai-worker"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let worker_key = json(&r)["key"].as_str().unwrap().to_string();
    let me = json(&get(&node, "/api/whoami", Some(&bearer(&worker_key))));
    assert_eq!(me["principal"], "key:worker-7");
    let r = http_request(
        node.http_port(),
        "DELETE",
        "/api/keys/worker-7",
        &[("Authorization", &ada)],
        b"",
    );
    assert_eq!(r.status, 204);
    let me = json(&get(&node, "/api/whoami", Some(&bearer(&worker_key))));
    assert_eq!(me["authenticated"], false);
    // no secret in the log
    let log = node.log();
    for secret in [PASSWORD, "a whole new password", &key, &worker_key, &token] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}

both_backends!(users_and_keys_lifecycle);

/// Polls `f` until it is true or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bearer JWTs from an identity provider: RS256, ES256 and EdDSA accepted with roles from the
/// configured claim; expired, not yet valid, wrong issuer, wrong audience, `alg: none`, wrong
/// key, HMAC-with-the-public-key and role-less tokens refused; a rotated key picked up without
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_bearer_tokens_are_validated() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::p256("ec-1");
    let ed = TestKey::ed25519("ed-1");
    let issuer = TestIssuer::start(&[&rsa, &ec, &ed]);
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--oidc-issuer")
            .arg(&issuer.url)
            .arg("--oidc-audience")
            .arg("pacs")
            .arg("--oidc-roles-claim")
            .arg("realm_access.roles"),
    );
    let claims = |roles: &[&str]| {
        let mut c = issuer.claims("pacs", "olga", &[]);
        c["realm_access"] = serde_json::json!({ "roles": roles });
        c
    };
    let studies = |token: &str| get(&node, "/dicom-web/studies", Some(&bearer(token)));
    for key in [&rsa, &ec, &ed] {
        let r = studies(&key.sign(&claims(&["viewer"])));
        assert_eq!(r.status, 200, "{:?}: {}", key.alg, r.text());
    }
    let me = json(&get(
        &node,
        "/api/whoami",
        Some(&bearer(&rsa.sign(&claims(&["viewer"])))),
    ));
    assert_eq!(me["principal"], "oidc:olga");
    // the role claim decides: no role, 403; technologist, write too
    assert_eq!(studies(&rsa.sign(&claims(&[]))).status, 403);
    assert_eq!(studies(&rsa.sign(&claims(&["no-such-role"]))).status, 403);
    let me = json(&get(
        &node,
        "/api/whoami",
        Some(&bearer(&ec.sign(&claims(&["technologist"])))),
    ));
    assert_eq!(me["permissions"], serde_json::json!(["read", "write"]));

    let refused = |what: &str, token: String, reason: &str| {
        let r = studies(&token);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .contains("invalid_token"),
            "{what}: {:?}",
            r.headers
        );
        assert!(r.text().contains(reason), "{what}: {}", r.text());
    };
    // a small clock skew (60 s, src/auth/oidc.rs) is forgiven either way ...
    let mut just_expired = claims(&["viewer"]);
    just_expired["exp"] = (now() - 20).into();
    let r = studies(&rsa.sign(&just_expired));
    assert_eq!(
        r.status,
        200,
        "expired 20 s ago, within the skew: {}",
        r.text()
    );
    let mut almost_valid = claims(&["viewer"]);
    almost_valid["nbf"] = (now() + 20).into();
    let r = studies(&rsa.sign(&almost_valid));
    assert_eq!(
        r.status,
        200,
        "valid in 20 s, within the skew: {}",
        r.text()
    );
    // ... a larger one is not
    let mut expired = claims(&["viewer"]);
    expired["exp"] = (now() - 300).into();
    refused("expired", rsa.sign(&expired), "Expired");
    let mut early = claims(&["viewer"]);
    early["nbf"] = (now() + 600).into();
    refused("not yet valid", rsa.sign(&early), "Immature");
    let mut elsewhere = claims(&["viewer"]);
    elsewhere["iss"] = "http://127.0.0.1:1/other".into();
    refused("wrong issuer", rsa.sign(&elsewhere), "Issuer");
    let mut other_audience = claims(&["viewer"]);
    other_audience["aud"] = "someone-else".into();
    refused("wrong audience", rsa.sign(&other_audience), "Audience");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(&claims(&["admin"]))
    );
    refused("alg none", unsigned, "");
    // signed by a key the provider does not publish, under a kid it does
    let impostor = TestKey::rsa("rsa-1");
    refused(
        "wrong key",
        impostor.sign(&claims(&["admin"])),
        "InvalidSignature",
    );
    // HS256 with the RSA public key's bytes as the secret (algorithm confusion)
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims(&["admin"]),
        &jsonwebtoken::EncodingKey::from_secret(rsa.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    refused("HS256 with the public key", confused, "not accepted");
    refused("garbage", "not.a.jwt".into(), "");

    // rotation: the provider drops rsa-1 and publishes rsa-2; the node follows, no restart
    let next = TestKey::rsa("rsa-2");
    issuer.rotate(&[&next]);
    let token = next.sign(&claims(&["viewer"]));
    assert!(
        eventually(Duration::from_secs(15), || studies(&token).status == 200),
        "the new key was not picked up: {}",
        studies(&token).text()
    );
    // the dropped key no longer works once the set was fetched again
    assert_eq!(studies(&rsa.sign(&claims(&["viewer"]))).status, 401);
    assert!(node.is_alive());
}

/// The secure defaults: HTTP on loopback until authentication is configured, refusing to start
/// beyond it; `--insecure-allow-anonymous`; no CORS origin but those configured; forwarded
/// addresses only from trusted proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_defaults() {
    // nothing configured, HTTP asked on every address: refuses to start, naming the fix
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args([
            "serve",
            "--http-bind",
            "0.0.0.0",
            "--dimse-bind",
            "127.0.0.1",
        ])
        .args(["--dimse-port", &crate::support::free_port().to_string()])
        .args(["--http-port", &crate::support::free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pacs user add") && stderr.contains("--insecure-allow-anonymous"),
        "{stderr}"
    );

    // with --insecure-allow-anonymous, anonymous callers may read (and write) even once users
    // exist, but not administer; a warning says so at start. (The bind decision itself, which
    // would need a non-loopback address here, is node::tests::http_bind_*.)
    let site = Site::new(Backend::Sqlite);
    site.add_user("ada", "admin", PASSWORD);
    let open = Node::start_with(site.options().arg("--insecure-allow-anonymous"));
    assert!(
        open.log().contains("--insecure-allow-anonymous"),
        "{}",
        open.log()
    );
    assert_eq!(get(&open, "/dicom-web/studies", None).status, 200);
    assert_eq!(get(&open, "/api/aes", None).status, 401);
    drop(open);

    // nothing configured, on loopback: anonymous local callers do everything, as before
    let local = Node::start_with(NodeOptions::new(Backend::Sqlite));
    assert!(
        local.log().contains("no authentication configured"),
        "{}",
        local.log()
    );
    assert_eq!(get(&local, "/dicom-web/studies", None).status, 200);
    assert_eq!(get(&local, "/api/aes", None).status, 200);
    // CORS: no origin is allowed unless configured
    let r = http_request(
        local.http_port(),
        "GET",
        "/dicom-web/studies",
        &[("Origin", "https://evil.example")],
        &[],
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    drop(local);

    // a reverse proxy on this host: its forwarded client address is believed only when the
    // proxy is trusted, and then the client is not loopback, so it gets nothing anonymous
    let proxied = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--trusted-proxies")
            .arg("127.0.0.1")
            .arg("--cors-origins")
            .arg("https://viewer.example"),
    );
    let forwarded = [("X-Forwarded-For", "198.51.100.7")];
    let r = http_request(proxied.http_port(), "GET", "/api/whoami", &forwarded, &[]);
    assert_eq!(json(&r)["client"], "198.51.100.7");
    let r = http_request(proxied.http_port(), "GET", "/api/aes", &forwarded, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = http_request(
        proxied.http_port(),
        "GET",
        "/dicom-web/studies",
        &[("Origin", "https://viewer.example")],
        &[],
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://viewer.example")
    );
    let preflight = http_request(
        proxied.http_port(),
        "OPTIONS",
        "/dicom-web/studies",
        &[
            ("Origin", "https://viewer.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        &[],
    );
    assert!(
        [200, 204].contains(&preflight.status),
        "{}",
        preflight.status
    );
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://viewer.example")
    );
    let r = http_request(
        proxied.http_port(),
        "GET",
        "/dicom-web/studies",
        &[("Origin", "https://viewer.example.evil")],
        &[],
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    drop(proxied);
    // an untrusted peer's X-Forwarded-For is ignored
    let plain = Node::start_with(NodeOptions::new(Backend::Sqlite));
    let r = http_request(plain.http_port(), "GET", "/api/whoami", &forwarded, &[]);
    assert_eq!(json(&r)["client"], "127.0.0.1");
    assert_eq!(
        http_request(plain.http_port(), "GET", "/api/aes", &forwarded, &[]).status,
        200
    );
}

/// The refused status of an operation the association's identity may not perform (PS3.7
/// C.5.x: Refused: Not Authorized).
const NOT_AUTHORIZED: u64 = 0x0124;

/// One pynetdicom operation (tests/peers/dimse_as_user.py): its JSON report.
fn dimse_as(node: &Node, op: &str, args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/dimse_as_user.py");
    let port = node.dimse_port().to_string();
    let mut argv = vec![script, port.as_str(), op];
    argv.extend_from_slice(args);
    let out = crate::support::python_stdout(argv);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn status_of(report: &serde_json::Value) -> u64 {
    assert_eq!(report["established"], true, "{report}");
    report["status"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status: {report}"))
}

/// Every DIMSE operation with no credential (an unknown AE), a wrong role and the right role,
/// as a user (username and passcode, and a JWT from the identity provider) and as a
/// registered AE with roles; refused identities get A-ASSOCIATE-RJ permanent, ACSE
/// service-provider, no reason (PS3.7 D.3.3.7); DCMTK's storescu with -usr/-pwd/-rsp and --jwt.
async fn dimse_permission_matrix(backend: Backend) {
    let site = Site::new(backend);
    site.add_user("vera", "viewer", PASSWORD);
    site.add_user("tom", "technologist", PASSWORD);
    site.cli(
        &["user", "add", "nora", "--roles", "", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let key = TestKey::ed25519("ed-dimse");
    let issuer = TestIssuer::start(&[&key]);
    let node = Node::start_with(
        site.options()
            .arg("--oidc-issuer")
            .arg(&issuer.url)
            .arg("--oidc-audience")
            .arg("pacs")
            .config("[[ae]]\ntitle = \"RADWS\"\nallow = [\"echo\"]\nroles = [\"viewer\"]\n"),
    );
    let (_synth_dir, synth) = crate::support::synth_ct(2, 9011);
    let file = synth.instances[0].path.to_string_lossy().into_owned();
    let second = synth.instances[1].path.to_string_lossy().into_owned();
    let study = synth.instances[0].study_instance_uid.clone();
    let as_user = |user: &'static str| ["--user", user, "--passcode", PASSWORD];

    // no credential, an unknown AE: echo and store, nothing else
    assert_eq!(
        status_of(&dimse_as(&node, "echo", &["--calling", "STRANGER"])),
        0
    );
    assert_eq!(
        status_of(&dimse_as(
            &node,
            "store",
            &["--calling", "STRANGER", "--file", &file]
        )),
        0
    );
    for op in ["find", "move", "get"] {
        let r = dimse_as(&node, op, &["--calling", "STRANGER", "--study", &study]);
        assert_eq!(status_of(&r), NOT_AUTHORIZED, "{op} by an unknown AE: {r}");
    }
    // a registered AE with the viewer role reads by its roles, and may not store
    let r = dimse_as(&node, "find", &["--calling", "RADWS", "--study", &study]);
    assert_eq!(status_of(&r), 0, "{r}");
    assert_eq!(r["matches"], 1, "{r}");
    let r = dimse_as(&node, "store", &["--calling", "RADWS", "--file", &second]);
    assert_eq!(status_of(&r), NOT_AUTHORIZED, "{r}");

    // users: the wrong role is refused, the right one served; a positive response each time
    let r = dimse_as(
        &node,
        "store",
        &[&as_user("vera")[..], &["--file", &second]].concat(),
    );
    assert_eq!(status_of(&r), NOT_AUTHORIZED, "store as a viewer: {r}");
    assert_eq!(r["positive_response"], true, "{r}");
    let r = dimse_as(
        &node,
        "store",
        &[&as_user("tom")[..], &["--file", &second]].concat(),
    );
    assert_eq!(status_of(&r), 0, "store as a technologist: {r}");
    for op in ["find", "move", "get"] {
        let study_args = ["--study", study.as_str()];
        let r = dimse_as(&node, op, &[&as_user("nora")[..], &study_args].concat());
        assert_eq!(status_of(&r), NOT_AUTHORIZED, "{op} without roles: {r}");
        let r = dimse_as(&node, op, &[&as_user("vera")[..], &study_args].concat());
        // C-MOVE to the requestor, which is no registered destination: A801, not a refusal
        let expected = if op == "move" { 0xA801 } else { 0 };
        assert_eq!(status_of(&r), expected, "{op} as a viewer: {r}");
    }
    assert_eq!(status_of(&dimse_as(&node, "echo", &as_user("nora"))), 0);

    // a user name alone names who works at the AE and never adds to what the AE may do
    let r = dimse_as(
        &node,
        "find",
        &["--calling", "STRANGER", "--user", "vera", "--study", &study],
    );
    assert_eq!(status_of(&r), NOT_AUTHORIZED, "{r}");
    let r = dimse_as(
        &node,
        "find",
        &["--calling", "RADWS", "--user", "tom", "--study", &study],
    );
    assert_eq!(status_of(&r), 0, "{r}");
    let r = dimse_as(
        &node,
        "store",
        &["--calling", "RADWS", "--user", "tom", "--file", &second],
    );
    assert_eq!(status_of(&r), NOT_AUTHORIZED, "{r}");
    let r = dimse_as(
        &node,
        "echo",
        &["--calling", "RADWS", "--user", "nobody-here"],
    );
    assert_eq!(r["rejected"], true, "{r}");

    // a JWT from the identity provider, as for HTTP
    let viewer_token = key.sign(&issuer.claims("pacs", "olga", &["viewer"]));
    let r = dimse_as(&node, "find", &["--jwt", &viewer_token, "--study", &study]);
    assert_eq!(status_of(&r), 0, "{r}");
    assert_eq!(r["matches"], 1, "{r}");
    let bare = key.sign(&issuer.claims("pacs", "olga", &[]));
    let r = dimse_as(&node, "find", &["--jwt", &bare, "--study", &study]);
    assert_eq!(status_of(&r), NOT_AUTHORIZED, "{r}");

    // refused identities: A-ASSOCIATE-RJ 1 (permanent) / 2 (ACSE service-provider) / 1
    let mut wrong_audience = issuer.claims("pacs", "olga", &["viewer"]);
    wrong_audience["aud"] = "other".into();
    let refused_jwt = key.sign(&wrong_audience);
    for (what, args) in [
        (
            "wrong passcode",
            vec!["--user", "vera", "--passcode", "not the password"],
        ),
        (
            "unknown user",
            vec!["--user", "eve", "--passcode", PASSWORD],
        ),
        ("refused JWT", vec!["--jwt", refused_jwt.as_str()]),
    ] {
        let r = dimse_as(&node, "echo", &args);
        assert_eq!(r["rejected"], true, "{what}: {r}");
        assert_eq!(
            (
                r["result"].as_u64(),
                r["source"].as_u64(),
                r["reason"].as_u64()
            ),
            (Some(1), Some(2), Some(1)),
            "{what}: {r}"
        );
    }

    // DCMTK: storescu with user identity, asking for the positive response
    let dcmtk_store =
        |args: &[&str]| crate::support::storescu(&node, "DCMTKUSER", args, &[Path::new(&file)]);
    let out = dcmtk_store(&["-usr", "tom", "-pwd", PASSWORD, "-rsp"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dcmtk_store(&["-usr", "tom", "-pwd", "wrong", "-rsp"]);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("Rejected Permanent"), "{said}");
    let token_file = site.dir.path().join("token.jwt");
    std::fs::write(
        &token_file,
        key.sign(&issuer.claims("pacs", "tina", &["technologist"])),
    )
    .unwrap();
    let out = dcmtk_store(&["--jwt", &token_file.to_string_lossy(), "-rsp"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nothing secret in the log
    let log = node.log();
    assert!(!log.contains(PASSWORD) && !log.contains(&viewer_token));
    assert!(log.contains("user identity refused"), "{log}");
}

both_backends!(dimse_permission_matrix);

/// `--require-known-ae`: an unregistered calling AE is refused the association itself
/// (A-ASSOCIATE-RJ permanent, service-user, calling AE title not recognized: PS3.8 9.3.4),
/// before any operation is asked for; a registered one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_known_ae_refuses_unknown_calling_aes() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--require-known-ae")
            .config("[[ae]]\ntitle = \"KNOWNWS\"\nallow = [\"echo\", \"store\"]\n"),
    );
    let r = dimse_as(&node, "echo", &["--calling", "STRANGER"]);
    assert_eq!(r["rejected"], true, "{r}");
    assert_eq!(
        (
            r["result"].as_u64(),
            r["source"].as_u64(),
            r["reason"].as_u64()
        ),
        (Some(1), Some(1), Some(3)),
        "{r}"
    );
    assert_eq!(
        status_of(&dimse_as(&node, "echo", &["--calling", "KNOWNWS"])),
        0
    );
}

/// An AI worker with a key of its own (`pacs key create NAME --roles ai-worker`) is a worker:
/// it leases jobs, and what it stores is AI output (never analysed again); an administrator's
/// upload of the same kind is analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_workers_own_key_makes_it_a_worker() {
    let site = Site::new(Backend::Sqlite);
    site.add_user("ada", "admin", PASSWORD);
    let key = site
        .cli(&["key", "create", "gpu-1", "--roles", "ai-worker"], "")
        .trim()
        .to_string();
    let node = Node::start_with(
        site.options()
            .arg("--worker-token")
            .arg("shared-token")
            .arg("--series-quiet-secs")
            .arg("1")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    );
    let ada = basic("ada", PASSWORD);
    let stow = |auth: &str, seed: u64| {
        let (_dir, synth) = crate::support::synth_ct(2, seed);
        let parts: Vec<Vec<u8>> = synth
            .instances
            .iter()
            .map(|i| std::fs::read(&i.path).unwrap())
            .collect();
        let parts: Vec<(&str, &[u8])> = parts
            .iter()
            .map(|p| ("application/dicom", p.as_slice()))
            .collect();
        let (content_type, body) = crate::support::multipart::build(&parts);
        let r = http_request(
            node.http_port(),
            "POST",
            "/dicom-web/studies",
            &[("Content-Type", &content_type), ("Authorization", auth)],
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        synth.instances[0].series_instance_uid.clone()
    };
    let jobs = || json(&get(&node, "/api/ai/jobs", Some(&ada)));
    // the worker's upload: AI output, no job
    stow(&bearer(&key), 4401);
    // the administrator's: analysed
    let analysed = stow(&ada, 4402);
    assert!(
        eventually(Duration::from_secs(30), || jobs()
            .as_array()
            .is_some_and(|j| !j.is_empty())),
        "no job queued; log:\n{}",
        node.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let queued = jobs();
    let queued = queued.as_array().unwrap();
    assert_eq!(
        queued.len(),
        1,
        "the worker's upload was analysed: {queued:?}"
    );
    assert_eq!(queued[0]["series_instance_uid"], analysed.as_str());
    // the key leases it; an administrator may not
    let post = |auth: &str, path: &str, body: String| {
        http_request(
            node.http_port(),
            "POST",
            path,
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let lease = |auth: &str, worker: &str| {
        post(
            auth,
            "/api/worker/lease",
            format!(r#"{{"worker": "{worker}", "models": ["ct-classical"], "lease_secs": 60}}"#),
        )
    };
    assert_eq!(lease(&ada, "gpu-1").status, 403);
    // the key names its worker: it cannot lease as another one
    let r = lease(&bearer(&key), "gpu-2");
    assert_eq!(r.status, 403, "{}", r.text());
    let said = json(&r)["error"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("bound to worker id \"gpu-1\""), "{said}");
    let r = lease(&bearer(&key), "gpu-1");
    assert_eq!(r.status, 200, "{}", r.text());
    let job = json(&r);
    assert_eq!(job["series_instance_uid"], analysed.as_str(), "{job}");
    // nor renew or finish its job under another worker's name
    let id = job["id"].as_i64().unwrap();
    let heartbeat = |worker: &str| {
        post(
            &bearer(&key),
            &format!("/api/worker/jobs/{id}/heartbeat"),
            format!(r#"{{"worker": "{worker}"}}"#),
        )
    };
    assert_eq!(heartbeat("gpu-2").status, 403);
    let r = heartbeat("gpu-1");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(
        &bearer(&key),
        &format!("/api/worker/jobs/{id}/fail"),
        r#"{"worker": "gpu-2", "error": "not mine", "retryable": true}"#.into(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // the shared worker token stands for every worker: any worker id (nothing left to lease)
    let r = lease(&bearer("shared-token"), "any-worker");
    assert_eq!(r.status, 204, "{}", r.text());
}
