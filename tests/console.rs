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

// The APIs the console reads
// ---------------------------------------------------------------------------

const WORKER_TOKEN: &str = "console-worker-secret";

fn send(
    node: &Node,
    method: &str,
    path: &str,
    auth: &str,
    body: &serde_json::Value,
) -> HttpResponse {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    call(
        node,
        method,
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

/// Stores a synthetic CT series from AE `CT1`; its Study Instance UID.
fn push_ct(node: &Node, slices: usize, seed: u64) -> (String, usize) {
    let (dir, synth) = crate::support::synth_ct(slices, seed);
    let paths = crate::support::synth_paths(&synth);
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = crate::support::storescu(node, "CT1", &[], &refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len() as usize)
        .sum();
    drop(dir);
    (synth.instances[0].study_instance_uid.clone(), bytes)
}

fn rfc3339_ms(text: &serde_json::Value) -> i64 {
    let t = time::OffsetDateTime::parse(
        text.as_str()
            .unwrap_or_else(|| panic!("not a time: {text}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{text}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Routes with `enabled`, a disabled route making no jobs; the jobs' fields and filters; the
/// models' versions, routes, counts and latencies.
async fn ai_models_routes_and_jobs(backend: Backend) {
    let site = site_with_users(backend);
    let node = Node::start_with(
        site.options()
            .arg("--worker-token")
            .arg(WORKER_TOKEN)
            .arg("--series-quiet-secs")
            .arg("1")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    );
    let ada = basic("ada", PASSWORD);
    let worker = bearer(WORKER_TOKEN);
    let routes = json(&send(
        &node,
        "GET",
        "/api/ai/routes",
        &ada,
        &serde_json::Value::Null,
    ));
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["enabled"] == true),
        "{routes}"
    );
    let set = |ct_enabled: bool| {
        let r = send(
            &node,
            "PUT",
            "/api/ai/routes",
            &ada,
            &serde_json::json!([
                {"model": "ct-classical", "modality": ["CT"], "enabled": ct_enabled},
                {"model": "deepbrain", "modality": ["MR"]},
            ]),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        json(&r)
    };
    let saved = set(false);
    assert_eq!(saved[0]["enabled"], false);
    assert_eq!(saved[1]["enabled"], true);
    // a CT series while its route is off: no job
    let (off_study, _) = push_ct(&node, 2, 1601);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let jobs = |query: &str| {
        let r = send(
            &node,
            "GET",
            &format!("/api/ai/jobs{query}"),
            &ada,
            &serde_json::Value::Null,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        json(&r).as_array().unwrap().clone()
    };
    assert!(jobs("").is_empty(), "{:?}", jobs(""));
    set(true);
    let (study, _) = push_ct(&node, 2, 1602);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while jobs("").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no job; log:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let queued = jobs("");
    assert_eq!(queued.len(), 1, "{queued:?}");
    let job = &queued[0];
    assert_eq!(job["model"], "ct-classical");
    assert_eq!(job["model_version"], "1");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["study_instance_uid"], study.as_str());
    assert_eq!(job["worker"], "");
    assert!(
        job["created_at"].is_string()
            && job["started_at"].is_null()
            && job["finished_at"].is_null()
    );
    let id = job["id"].as_i64().unwrap();
    assert_eq!(jobs(&format!("?study={study}")).len(), 1);
    assert!(jobs(&format!("?study={off_study}")).is_empty());
    assert!(jobs("?offset=1").is_empty());

    let leased = send(
        &node,
        "POST",
        "/api/worker/lease",
        &worker,
        &serde_json::json!({"worker": "w-console", "models": ["ct-classical"], "lease_secs": 60}),
    );
    assert_eq!(leased.status, 200, "{}", leased.text());
    let running = jobs(&format!("?study={study}&state=running"));
    assert_eq!(running.len(), 1);
    assert_eq!(running[0]["worker"], "w-console");
    assert_eq!(running[0]["attempts"], 1);
    let started = rfc3339_ms(&running[0]["started_at"]);
    assert!(started >= rfc3339_ms(&running[0]["created_at"]));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let done = send(
        &node,
        "POST",
        &format!("/api/worker/jobs/{id}/complete"),
        &worker,
        &serde_json::json!({"worker": "w-console", "result": {}}),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let finished = &jobs("?state=succeeded")[0];
    assert!(rfc3339_ms(&finished["finished_at"]) >= started);

    let models = json(&send(
        &node,
        "GET",
        "/api/ai/models",
        &ada,
        &serde_json::Value::Null,
    ));
    let model = |name: &str| {
        models
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {models}"))
            .clone()
    };
    let ct = model("ct-classical");
    assert_eq!(ct["versions"], serde_json::json!(["1"]), "{ct}");
    assert_eq!(ct["enabled_routes"], 1);
    assert_eq!(
        ct["jobs"],
        serde_json::json!({"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0})
    );
    assert_eq!(ct["latency_ms"]["count"], 1);
    let latency = ct["latency_ms"]["p50"].as_i64().unwrap();
    assert_eq!(ct["latency_ms"]["p95"].as_i64(), Some(latency));
    let enqueued_to_done =
        finished["finished_at_ms"].as_i64().unwrap() - finished["created_at_ms"].as_i64().unwrap();
    assert_eq!(latency, enqueued_to_done);
    let brain = model("deepbrain");
    assert_eq!(brain["versions"], serde_json::json!(["0.1"]));
    assert_eq!(brain["enabled_routes"], 1);
    assert_eq!(brain["jobs"]["done"], 0);
    assert_eq!(brain["latency_ms"]["count"], 0);
    assert!(brain["latency_ms"]["p50"].is_null());
    // admin only
    let vera = basic("vera", PASSWORD);
    assert_eq!(
        send(
            &node,
            "GET",
            "/api/ai/models",
            &vera,
            &serde_json::Value::Null
        )
        .status,
        403
    );
}

/// The statistics' storage and hourly arrivals; the refused associations; the chain check.
async fn statistics_refusals_and_verify(backend: Backend) {
    let site = site_with_users(backend);
    let node = Node::start_with(
        site.options()
            .arg("--require-known-ae")
            .config(&crate::support::ae_entry("CT1", &["echo", "store"])),
    );
    let (ada, vera, otto) = (
        basic("ada", PASSWORD),
        basic("vera", PASSWORD),
        basic("otto", PASSWORD),
    );
    let empty = json(&send(
        &node,
        "GET",
        "/api/statistics",
        &vera,
        &serde_json::Value::Null,
    ));
    assert_eq!(empty["storage_bytes"], 0);
    let (_, bytes) = push_ct(&node, 3, 1603);
    let stats = json(&send(
        &node,
        "GET",
        "/api/statistics",
        &vera,
        &serde_json::Value::Null,
    ));
    assert_eq!(stats["instances"], 3);
    let stored = stats["storage_bytes"].as_u64().unwrap() as usize;
    // the stored objects are the received files (within their group lengths and padding)
    assert!(
        stored * 10 >= bytes * 9 && stored * 10 <= bytes * 11,
        "{stored} vs {bytes}"
    );
    let hours = stats["received_per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24, "{hours:?}");
    let starts: Vec<i64> = hours.iter().map(|h| rfc3339_ms(&h["hour"])).collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == 3_600_000),
        "{starts:?}"
    );
    assert!(starts.iter().all(|s| s % 3_600_000 == 0));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now_ms - starts[23]).abs() < 3_600_000 + 60_000,
        "{starts:?}"
    );
    let total: i64 = hours.iter().map(|h| h["instances"].as_i64().unwrap()).sum();
    assert_eq!(total, 3);
    assert!(
        hours[23]["instances"].as_i64().unwrap() >= 1
            || hours[22]["instances"].as_i64().unwrap() >= 1
    );

    // two refused associations of one stranger, one of another
    for aet in ["STRANGER", "STRANGER", "OTHER"] {
        assert!(!crate::support::echoscu(&node, aet).status.success());
    }
    assert!(crate::support::echoscu(&node, "CT1").status.success());
    std::thread::sleep(std::time::Duration::from_millis(600));
    let r = send(
        &node,
        "GET",
        "/api/aes/refused?hours=24",
        &ada,
        &serde_json::Value::Null,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = json(&r);
    let groups = refused.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{refused}");
    let stranger = groups
        .iter()
        .find(|g| g["calling_ae"] == "STRANGER")
        .unwrap();
    assert_eq!(stranger["count"], 2);
    assert_eq!(stranger["address"], "127.0.0.1");
    assert!(
        stranger["reason"]
            .as_str()
            .unwrap()
            .contains("calling AE title not recognized"),
        "{stranger}"
    );
    assert!((rfc3339_ms(&stranger["last"]) - now_ms).abs() < 120_000);
    assert_eq!(
        groups.iter().find(|g| g["calling_ae"] == "OTHER").unwrap()["count"],
        1
    );
    assert_eq!(
        send(
            &node,
            "GET",
            "/api/aes/refused?hours=0",
            &ada,
            &serde_json::Value::Null
        )
        .status,
        400
    );
    assert_eq!(
        send(
            &node,
            "GET",
            "/api/aes/refused",
            &vera,
            &serde_json::Value::Null
        )
        .status,
        403
    );

    // the chain: intact, then broken where a record was changed behind the node's back
    let r = send(
        &node,
        "POST",
        "/api/audit/verify",
        &otto,
        &serde_json::Value::Null,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = json(&r);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["records"].as_u64().unwrap() >= 5, "{report}");
    assert!(report["first_bad"].is_null());
    assert_eq!(
        send(
            &node,
            "POST",
            "/api/audit/verify",
            &vera,
            &serde_json::Value::Null
        )
        .status,
        403
    );
    let sql = "UPDATE audit_log SET user_id = 'someone-else' WHERE seq = 3";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(site.dir.path().join("index.sqlite")).unwrap();
            assert_eq!(conn.execute(sql, []).unwrap(), 1);
        }
        Backend::Postgres => {
            let client = crate::support::pg_try_connect(site.url.as_deref().unwrap())
                .await
                .unwrap();
            assert_eq!(client.execute(sql, &[]).await.unwrap(), 1);
        }
    }
    let report = json(&send(
        &node,
        "POST",
        "/api/audit/verify",
        &otto,
        &serde_json::Value::Null,
    ));
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad"]["id"], 3, "{report}");
    assert!(report["first_bad"]["reason"].is_string());
}

/// One node: itself, ready, with its version and uptime.
async fn the_node_lists_itself(backend: Backend) {
    let site = site_with_users(backend);
    let node = Node::start_with(site.options());
    let ada = basic("ada", PASSWORD);
    let nodes = json(&send(
        &node,
        "GET",
        "/api/nodes",
        &ada,
        &serde_json::Value::Null,
    ));
    let list = nodes.as_array().unwrap();
    assert_eq!(list.len(), 1, "{nodes}");
    let me = &list[0];
    assert_eq!(me["self"], true);
    assert_eq!(me["ae_title"], node.aet());
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        me["http_address"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", node.http_port())),
        "{me}"
    );
    assert!(me["node_id"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}", node.http_port())));
    assert!(me["uptime_seconds"].as_i64().unwrap() >= 0);
    assert!(rfc3339_ms(&me["last_seen"]) >= rfc3339_ms(&me["started_at"]));
    // the heartbeat moves last_seen on; readiness is the node's /readyz
    std::thread::sleep(std::time::Duration::from_secs(6));
    let later = json(&send(
        &node,
        "GET",
        "/api/nodes",
        &ada,
        &serde_json::Value::Null,
    ));
    assert!(
        rfc3339_ms(&later[0]["last_seen"]) > rfc3339_ms(&me["last_seen"]),
        "{later}"
    );
    assert_eq!(later[0]["ready"], true, "{later}");
    assert_eq!(later[0]["started_at"], me["started_at"]);
    assert_eq!(
        send(
            &node,
            "GET",
            "/api/nodes",
            &basic("vera", PASSWORD),
            &serde_json::Value::Null
        )
        .status,
        403
    );
}

/// Two nodes on one PostgreSQL database see each other; a node unseen for a minute drops out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_postgres_see_each_other() {
    let site = site_with_users(Backend::Postgres);
    let a = Node::start_with(site.options());
    let b = Node::start_with(site.options());
    let ada = basic("ada", PASSWORD);
    let listed = |node: &Node| {
        let r = send(node, "GET", "/api/nodes", &ada, &serde_json::Value::Null);
        assert_eq!(r.status, 200, "{}", r.text());
        json(&r).as_array().unwrap().clone()
    };
    let from_a = listed(&a);
    assert_eq!(from_a.len(), 2, "{from_a:?}");
    let port_of = |n: &serde_json::Value| {
        n["node_id"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let mine = |list: &[serde_json::Value], node: &Node| {
        list.iter()
            .find(|n| port_of(n) == node.http_port().to_string())
            .unwrap_or_else(|| panic!("{} not in {list:?}", node.http_port()))
            .clone()
    };
    assert_eq!(mine(&from_a, &a)["self"], true);
    assert_eq!(mine(&from_a, &b)["self"], false);
    let from_b = listed(&b);
    assert_eq!(mine(&from_b, &b)["self"], true);
    assert_eq!(mine(&from_b, &a)["self"], false);
    // b stops; its last heartbeat a minute old, it is no longer listed
    let b_id = mine(&from_a, &b)["node_id"].as_str().unwrap().to_string();
    b.terminate();
    let client = crate::support::pg_try_connect(site.url.as_deref().unwrap())
        .await
        .unwrap();
    let changed = client
        .execute(
            "UPDATE cluster_nodes SET last_seen_ms = last_seen_ms - 61000 WHERE node_id = $1",
            &[&b_id],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let after = listed(&a);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["self"], true);
}

both_backends!(
    ai_models_routes_and_jobs,
    statistics_refusals_and_verify,
    the_node_lists_itself
);

/// Over HTTPS the session cookie is `Secure`; over plain HTTP on the same port it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_over_https() {
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::support::certs::TestCa::new("console test CA");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let server = ca.server(certs.path(), "pacs-node");
    let site = site_with_users(Backend::Sqlite);
    let node = Node::start_with(
        site.options()
            .arg("--tls-cert")
            .arg(server.cert.to_string_lossy())
            .arg("--tls-key")
            .arg(server.key.to_string_lossy()),
    );
    for http in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-S", "-i", "--max-time", "20", http, "-X", "POST"])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-u", &format!("vera:{PASSWORD}")])
            .arg(format!("https://127.0.0.1:{}/ui/session", node.http_port()))
            .output()
            .expect("run curl");
        let answer = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{answer}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cookie = answer
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no cookie: {answer}"));
        assert!(
            cookie.contains("pacs_session=") && cookie.contains("; Secure"),
            "{http}: {cookie}"
        );
    }
    let plain = call(
        &node,
        "POST",
        "/ui/session",
        &[("Authorization", &basic("vera", PASSWORD))],
        b"",
    );
    assert_eq!(plain.status, 200);
    assert!(!plain.header("set-cookie").unwrap().contains("Secure"));
}
