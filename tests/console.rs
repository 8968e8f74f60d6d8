//! The web console's server side (issue 16, docs/console.md) against the real node: each
//! page's status per identity, the embedded files, /ui/config.json, the session cookie's life
//! (login, use as a credential on the APIs, the CSRF rule, logout) with local users and an
//! OpenID Connect token, and the APIs the console reads.
//!
//! The console's files are written by hand in `ui/`; these tests rely only on `ui/index.html`
//! (containing `data-pacs-console`) and `ui/app.js` being there.

use crate::auth::{basic, bearer, Site};
use crate::support::issuer::{TestIssuer, TestKey};
use crate::support::{both_backends, http_request, Backend, HttpResponse, Node, NodeOptions};

const PASSWORD: &str = "correct horse battery staple";
const CSP_NO_OIDC: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

fn call(
    node: &Node,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_request(node.http_port(), method, path, headers, body)
}

fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    call(node, "GET", path, headers, b"")
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.text()))
}

/// The `pacs_session` cookie a response sets, as `name=value` for a Cookie header.
fn session_cookie(r: &HttpResponse) -> String {
    let set = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", r.headers));
    let pair = set.split(';').next().unwrap().trim().to_string();
    assert!(pair.starts_with("pacs_session="), "{set}");
    pair
}

fn site_with_users(backend: Backend) -> Site {
    let site = Site::new(backend);
    site.add_user("ada", "admin", PASSWORD);
    site.add_user("vera", "viewer", PASSWORD);
    site.add_user("otto", "auditor", PASSWORD);
    site
}

/// Each page answers the shell with the status its identity earns; the shell carries its
/// security headers; 401 has no challenge unless an Authorization header was refused.
async fn page_statuses(backend: Backend) {
    let site = site_with_users(backend);
    let node = Node::start_with(site.options());
    let (ada, vera, otto) = (
        basic("ada", PASSWORD),
        basic("vera", PASSWORD),
        basic("otto", PASSWORD),
    );
    let anonymous = get(&node, "/ui", &[]);
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_none());
    assert!(anonymous.text().contains("data-pacs-console"));
    assert!(anonymous
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert_eq!(
        anonymous.header("content-security-policy"),
        Some(CSP_NO_OIDC)
    );
    assert_eq!(anonymous.header("x-content-type-options"), Some("nosniff"));
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("/ui/", None, 401),
        ("/ui/login", None, 200),
        ("/ui/callback?code=x&state=y", None, 200),
        ("/ui/studies", None, 401),
        ("/ui/aes", None, 401),
        ("/ui", Some(&vera), 200),
        ("/ui/", Some(&vera), 200),
        ("/ui/studies", Some(&vera), 200),
        ("/ui/studies/1.2.3", Some(&vera), 200),
        ("/ui/patients/P1", Some(&vera), 200),
        ("/ui/aes", Some(&vera), 403),
        ("/ui/ai", Some(&vera), 403),
        ("/ui/users", Some(&vera), 403),
        ("/ui/node", Some(&vera), 403),
        ("/ui/audit", Some(&vera), 403),
        ("/ui/aes", Some(&ada), 200),
        ("/ui/ai", Some(&ada), 200),
        ("/ui/users", Some(&ada), 200),
        ("/ui/node", Some(&ada), 200),
        ("/ui/audit", Some(&ada), 200),
        ("/ui/studies", Some(&ada), 200),
        ("/ui/audit", Some(&otto), 200),
        ("/ui/studies", Some(&otto), 403),
        ("/ui/nothing-here", Some(&ada), 404),
        ("/ui/nothing-here", None, 404),
    ];
    for (path, auth, status) in cases {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = get(&node, path, &headers);
        assert_eq!(r.status, *status, "{path} as {auth:?}: {}", r.text());
        assert!(r.text().contains("data-pacs-console"), "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            Some(CSP_NO_OIDC),
            "{path}"
        );
        if r.status == 401 {
            assert!(r.header("www-authenticate").is_none(), "{path}");
        }
    }
    // a refused Authorization header gets its challenge back
    let wrong = basic("vera", "not the password");
    let r = get(&node, "/ui/studies", &[("Authorization", &wrong)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"pacs\""));
}

/// The files: type, ETag, revalidation, no-cache; unknown files and escapes are 404; public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_and_config() {
    let site = site_with_users(Backend::Sqlite);
    let node = Node::start_with(site.options());
    let r = get(&node, "/ui/assets/app.js", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/javascript")));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/app.js")).unwrap();
    assert_eq!(r.body, on_disk);
    let etag = r.header("etag").expect("ETag").to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let again = get(&node, "/ui/assets/app.js", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let page = get(&node, "/ui/assets/index.html", &[]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-pacs-console"));
    for missing in [
        "/ui/assets/no-such-file.js",
        "/ui/assets/../Cargo.toml",
        "/ui/assets/%2e%2e/Cargo.toml",
        "/ui/assets/pages/../../Cargo.toml",
    ] {
        assert_eq!(get(&node, missing, &[]).status, 404, "{missing}");
    }
    let config = get(&node, "/ui/config.json", &[]);
    assert_eq!(config.status, 200);
    let config = json(&config);
    assert_eq!(config["oidc"], serde_json::Value::Null);
    assert_eq!(config["dicomweb"], "/dicom-web");
    assert_eq!(config["viewer"], serde_json::Value::Null);
    assert_eq!(config["version"], env!("CARGO_PKG_VERSION"));
}

/// The cookie's life with a local user: login (JSON and Basic), the cookie as credential on
/// pages and APIs, the Authorization header winning, the CSRF rule, bad credentials audited,
/// logout ending the login token.
async fn session_lifecycle(backend: Backend) {
    let site = site_with_users(backend);
    let node = Node::start_with(site.options());
    let ada = basic("ada", PASSWORD);
    let login = |user: &str, password: &str| {
        let body = serde_json::json!({ "username": user, "password": password }).to_string();
        call(
            &node,
            "POST",
            "/ui/session",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = login("vera", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["principal"], "user:vera");
    assert_eq!(body["permissions"], serde_json::json!(["read"]));
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((1700..=1800).contains(&expires_in), "{expires_in}");
    let set = r.header("set-cookie").unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let vera_cookie = session_cookie(&r);
    let cookie_get = |path: &str, cookie: &str| get(&node, path, &[("Cookie", cookie)]);
    assert_eq!(cookie_get("/ui/studies", &vera_cookie).status, 200);
    assert_eq!(cookie_get("/ui/aes", &vera_cookie).status, 403);
    assert_eq!(cookie_get("/api/aes", &vera_cookie).status, 403);
    assert_eq!(cookie_get("/dicom-web/studies", &vera_cookie).status, 200);
    let whoami = json(&cookie_get("/api/whoami", &vera_cookie));
    assert_eq!(whoami["principal"], "user:vera");
    // among other cookies, too
    let mixed = format!("theme=dark; {vera_cookie}; other=1");
    assert_eq!(
        json(&cookie_get("/api/whoami", &mixed))["principal"],
        "user:vera"
    );
    // the Authorization header wins over the cookie
    let both = get(
        &node,
        "/api/whoami",
        &[("Cookie", &vera_cookie), ("Authorization", &ada)],
    );
    assert_eq!(json(&both)["principal"], "user:ada");

    // Basic login for an administrator; the cookie alone cannot change anything without the
    // console's header
    let r = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &ada)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["principal"], "user:ada");
    let ada_cookie = session_cookie(&r);
    let new_user = |extra: &[(&str, &str)], name: &str| {
        let body = serde_json::json!({ "name": name, "roles": ["viewer"], "password": PASSWORD })
            .to_string();
        let mut headers = vec![
            ("Cookie", ada_cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        call(&node, "POST", "/api/users", &headers, body.as_bytes())
    };
    let forged = new_user(&[], "mallory");
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert!(json(&forged)["error"]
        .as_str()
        .unwrap()
        .contains("X-PACS-Console"));
    let wrong_value = new_user(&[("X-PACS-Console", "yes")], "mallory");
    assert_eq!(wrong_value.status, 403);
    let users = json(&get(&node, "/api/users", &[("Authorization", &ada)]));
    assert!(!users.to_string().contains("mallory"), "{users}");
    let made = new_user(&[("X-PACS-Console", "1")], "carol");
    assert_eq!(made.status, 201, "{}", made.text());
    // a bearer token (here a login token) is kept as it is
    let token = json(&call(
        &node,
        "POST",
        "/api/login",
        &[("Authorization", &basic("otto", PASSWORD))],
        b"",
    ))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &bearer(&token))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["principal"], "user:otto");
    assert_eq!(session_cookie(&r), format!("pacs_session={token}"));

    // bad credentials: 401 JSON, no cookie, no challenge, audited like /api/login
    let r = login("vera", "guess");
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.header("www-authenticate").is_none());
    assert!(json(&r)["error"].is_string());
    assert_eq!(login("nobody", "guess").status, 401);
    let r = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &bearer("pacs_nonsense"))],
        b"",
    );
    assert_eq!(r.status, 401);

    // logout: needs the header too; then the cookie is cleared and the token ended
    let r = call(
        &node,
        "DELETE",
        "/ui/session",
        &[("Cookie", &vera_cookie)],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(cookie_get("/ui/studies", &vera_cookie).status, 200);
    let r = call(
        &node,
        "DELETE",
        "/ui/session",
        &[("Cookie", &vera_cookie), ("X-PACS-Console", "1")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let cleared = r.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("pacs_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(cookie_get("/ui/studies", &vera_cookie).status, 401);
    assert_eq!(
        json(&cookie_get("/api/whoami", &vera_cookie))["principal"],
        "anonymous"
    );
    assert_eq!(cookie_get("/dicom-web/studies", &vera_cookie).status, 401);
    // nobody signed in: still 204 and cleared
    let r = call(&node, "DELETE", "/ui/session", &[], b"");
    assert_eq!(r.status, 204);

    // the trail: logins (both outcomes) and the logout, as at /api/login and /api/logout
    let trail = audit_records(&node, &ada, "event=user-authentication&limit=1000");
    let of = |user: &str, outcome: i64| {
        trail
            .iter()
            .filter(|r| r["user"] == user && r["outcome"] == outcome)
            .count()
    };
    assert!(of("user:vera", 0) >= 2, "{trail:?}");
    assert!(of("user:vera", 4) >= 1, "{trail:?}");
    assert!(of("user:nobody", 4) >= 1, "{trail:?}");
    assert!(of("user:ada", 0) >= 1, "{trail:?}");
    let logouts = trail
        .iter()
        .filter(|r| r["user"] == "user:vera" && r["xml"].as_str().unwrap().contains("Logout"))
        .count();
    assert_eq!(logouts, 1, "{trail:?}");
    let alerts = audit_records(&node, &ada, "event=security-alert&limit=1000");
    assert!(
        alerts
            .iter()
            .any(|r| r["user"] == "user:nobody"
                && r["xml"].as_str().unwrap().contains("/ui/session")),
        "{alerts:?}"
    );
}

fn audit_records(node: &Node, auth: &str, query: &str) -> Vec<serde_json::Value> {
    // the writer batches: wait until what was just done is in the trail
    std::thread::sleep(std::time::Duration::from_millis(600));
    let r = get(
        node,
        &format!("/api/audit?{query}"),
        &[("Authorization", auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)["records"].as_array().unwrap().clone()
}

/// An OpenID Connect access token becomes the session; config.json and the CSP name the
/// issuer and the console's client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_session() {
    let key = TestKey::rsa("console-key");
    let issuer = TestIssuer::start(&[&key]);
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--oidc-issuer")
            .arg(&issuer.url)
            .arg("--oidc-audience")
            .arg("pacs")
            .arg("--console-oidc-client-id")
            .arg("radiology-console"),
    );
    let config = json(&get(&node, "/ui/config.json", &[]));
    assert_eq!(config["oidc"]["issuer"], issuer.url.as_str());
    assert_eq!(config["oidc"]["client_id"], "radiology-console");
    assert!(config["oidc"]["scope"].as_str().unwrap().contains("openid"));
    let shell = get(&node, "/ui", &[]);
    assert_eq!(shell.status, 401);
    let csp = shell.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' {};", issuer.url)),
        "{csp}"
    );

    let token = key.sign(&issuer.claims("pacs", "olga", &["viewer"]));
    let r = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &bearer(&token))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["principal"], "oidc:olga");
    assert_eq!(body["permissions"], serde_json::json!(["read"]));
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&expires_in), "{expires_in}");
    let cookie = session_cookie(&r);
    assert_eq!(cookie, format!("pacs_session={token}"));
    assert_eq!(
        get(&node, "/ui/studies", &[("Cookie", &cookie)]).status,
        200
    );
    assert_eq!(get(&node, "/ui/aes", &[("Cookie", &cookie)]).status, 403);
    // a token of another audience is no session
    let foreign = key.sign(&issuer.claims("someone-else", "olga", &["admin"]));
    let r = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &bearer(&foreign))],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    let r = call(
        &node,
        "DELETE",
        "/ui/session",
        &[("Cookie", &cookie), ("X-PACS-Console", "1")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

both_backends!(page_statuses, session_lifecycle);
