//! What the operator sees (issue 14): `/metrics` scraped and parsed by the Python
//! `prometheus_client` parser, its counters moving with the work done (DCMTK storescu and
//! echoscu, QIDO-RS, WADO-RS, STOW-RS, the AI job queue driven as a worker); who may read
//! `/metrics`, `/healthz` and `/readyz`; `/readyz` turning 503 when the index does not answer
//! or is at another schema version; and `--log-format json` carrying the request id and the
//! association id.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ops::{scrape, PrivatePostgres, Scrape};
use support::{ae_entry, http_request, Backend, Node, NodeOptions};

/// The length of a Part 10 file's data set: what storescu sends when it sends the file's own
/// transfer syntax (PS3.10 7.1: a 128-byte preamble, `DICM`, then the File Meta Information,
/// whose first element (0002,0000) gives the length of the rest of it).
fn dataset_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM", "{}", path.display());
    // (0002,0000) UL, explicit VR little endian: tag 4, VR 2, length 2, value 4
    assert_eq!(&bytes[132..138], &[0x02, 0x00, 0x00, 0x00, b'U', b'L']);
    let group = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as u64;
    bytes.len() as u64 - 144 - group
}

fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> support::HttpResponse {
    http_request(node.http_port(), "GET", path, headers, &[])
}

/// Waits (up to 10 s) for `check` to hold on a fresh scrape; returns that scrape.
fn scrape_until(node: &Node, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(node);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            s.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const STORED: &str = "pacs_received_instances_total";
const BYTES: &str = "pacs_received_bytes_total";
const REJECTED: &str = "pacs_dimse_associations_rejected_total";
const HTTP_COUNT: &str = "pacs_http_request_duration_seconds_count";
const DIMSE_COUNT: &str = "pacs_dimse_request_duration_seconds_count";

#[test]
fn counters_move_with_the_work_done() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--require-known-ae")
            .config(&ae_entry("CT1", &["echo", "store", "find"])),
    );
    let before = scrape(&node);
    // the exposition itself: build info and start time
    assert_eq!(before.kind("pacs_build_info"), Some("gauge"));
    assert_eq!(
        before.value("pacs_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let started = before.value("pacs_process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started > now - 600.0 && started <= now, "{started}");

    // C-STORE: N instances from CT1
    let (_dir, series) = support::synth_ct(4, 71);
    let paths = support::synth_paths(&series);
    let files: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "CT1", &[], &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_bytes: u64 = paths.iter().map(|p| dataset_len(p)).sum();
    let ct1 = [("protocol", "dimse"), ("calling_ae", "CT1")];
    // the association's end (and so the active gauge) follows the release a moment later
    let after_store = scrape_until(&node, "association still active", |s| {
        s.value("pacs_dimse_associations_active", &[]) == 0.0
    });
    assert_eq!(
        after_store.value(STORED, &ct1) - before.value(STORED, &ct1),
        4.0
    );
    assert_eq!(
        after_store.value(BYTES, &ct1) - before.value(BYTES, &ct1),
        expected_bytes as f64
    );
    let store_ok = [("operation", "C-STORE"), ("status", "success")];
    assert_eq!(
        after_store.value(DIMSE_COUNT, &store_ok) - before.value(DIMSE_COUNT, &store_ok),
        4.0
    );
    assert!(
        after_store.value(
            "pacs_dimse_associations_accepted_total",
            &[("calling_ae", "CT1")]
        ) >= 1.0
    );
    // the index and the object store were timed at their boundaries
    let inserts = [("operation", "insert_instance")];
    assert!(
        after_store.value("pacs_index_operation_duration_seconds_count", &inserts) >= 4.0,
        "{}",
        after_store.text
    );
    assert!(
        after_store.value(
            "pacs_storage_operation_duration_seconds_count",
            &[("operation", "put")]
        ) >= 4.0
    );
    assert_eq!(
        after_store.value("pacs_index_operation_errors_total", &[]),
        0.0
    );

    // refused associations: an unknown calling AE (require-known-ae), a wrong called AE
    let out = support::echoscu(&node, "NOBODY");
    assert!(!out.status.success());
    let mut wrong_called = support::dcmtk_command("echoscu");
    wrong_called
        .args(["-aet", "CT1", "-aec", "NOT_THE_PACS", "127.0.0.1"])
        .arg(node.dimse_port().to_string());
    let out = support::run_with_timeout(&mut wrong_called, Duration::from_secs(30));
    assert!(!out.status.success());
    let out = support::echoscu(&node, "CT1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_echo = scrape_until(&node, "C-ECHO not counted", |s| {
        s.value(DIMSE_COUNT, &[("operation", "C-ECHO")]) >= 1.0
    });
    let unknown = [("reason", "calling_ae_title"), ("calling_ae", "NOBODY")];
    assert_eq!(
        after_echo.value(REJECTED, &unknown) - before.value(REJECTED, &unknown),
        1.0
    );
    let called = [("reason", "called_ae_title"), ("calling_ae", "CT1")];
    assert_eq!(
        after_echo.value(REJECTED, &called) - before.value(REJECTED, &called),
        1.0
    );

    // QIDO-RS and WADO-RS, by route template, service and status class
    let study = &series.instances[0].study_instance_uid;
    let qido = [
        ("route", "/dicom-web/studies"),
        ("method", "GET"),
        ("service", "qido"),
        ("status", "2xx"),
    ];
    let wado = [
        ("route", "/dicom-web/studies/{study}/metadata"),
        ("service", "wado"),
        ("status", "2xx"),
    ];
    let missing = [
        ("route", "/dicom-web/studies/{study}/metadata"),
        ("status", "4xx"),
    ];
    for _ in 0..3 {
        assert_eq!(get(&node, "/dicom-web/studies", &[]).status, 200);
    }
    let r = get(&node, &format!("/dicom-web/studies/{study}/metadata"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&node, "/dicom-web/studies/1.2.3.4.5/metadata", &[]);
    assert_eq!(r.status, 404);
    // STOW-RS: one instance, counted under protocol="stow"
    let file = support::pydicom_test_files().join("CT_small.dcm");
    let bytes = std::fs::read(&file).unwrap();
    let (content_type, body) = support::multipart::build(&[("application/dicom", &bytes)]);
    let r = http_request(
        node.http_port(),
        "POST",
        "/dicom-web/studies",
        &[
            ("content-type", content_type.as_str()),
            ("accept", "application/dicom+json"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after_http = scrape(&node);
    // types and help as declared
    assert_eq!(after_http.kind("pacs_received_instances"), Some("counter"));
    assert_eq!(
        after_http.kind("pacs_http_request_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after_http.kind("pacs_dimse_associations_rejected"),
        Some("counter")
    );
    assert!(after_http.families["pacs_received_instances"]
        .1
        .contains("calling AE"));
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after_http.value(name, labels) - after_echo.value(name, labels)
    };
    assert_eq!(delta(HTTP_COUNT, &qido), 3.0);
    assert_eq!(delta(HTTP_COUNT, &wado), 1.0);
    assert_eq!(delta(HTTP_COUNT, &missing), 1.0);
    let stow = [("service", "stow"), ("status", "2xx")];
    assert_eq!(delta(HTTP_COUNT, &stow), 1.0);
    let stowed = [("protocol", "stow")];
    assert_eq!(delta(STORED, &stowed), 1.0);
    assert_eq!(delta(BYTES, &stowed), bytes.len() as f64);
    // a histogram's buckets are cumulative and end at +Inf = count
    let inf = [qido.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        after_http.value("pacs_http_request_duration_seconds_bucket", &inf),
        after_http.value(HTTP_COUNT, &qido)
    );
    // the scrapes themselves are timed too, under their own route
    assert!(after_http.has(HTTP_COUNT, &[("route", "/metrics"), ("service", "other")]));
    assert!(after_http.value("pacs_uptime_seconds", &[]) > 0.0);
}

const ADMIN: &str = "admin-secret-1";
const SCRAPER: &str = "scraper-secret-1";

#[test]
fn operator_endpoints_open_to_this_machine_or_admin_or_the_metrics_token() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--admin-token")
            .arg(ADMIN)
            .env("PACS_METRICS_TOKEN", SCRAPER),
    );
    let scraper = format!("Bearer {SCRAPER}");
    let admin = format!("Bearer {ADMIN}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        // a direct caller on this machine needs nothing
        let r = get(&node, path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        // through a proxy on this machine (any proxy header): a credential is needed
        for header in ["x-forwarded-for", "x-real-ip", "forwarded"] {
            let value = match header {
                "forwarded" => "for=198.51.100.7",
                _ => "198.51.100.7",
            };
            let r = get(&node, path, &[(header, value)]);
            assert_eq!(r.status, 401, "{path} with {header}: {}", r.text());
            assert!(r.header("www-authenticate").is_some(), "{path}");
            let r = get(
                &node,
                path,
                &[(header, value), ("authorization", scraper.as_str())],
            );
            assert_eq!(r.status, 200, "{path} with {header} and the metrics token");
            let r = get(
                &node,
                path,
                &[(header, value), ("authorization", admin.as_str())],
            );
            assert_eq!(r.status, 200, "{path} with {header} and the admin token");
            let r = get(
                &node,
                path,
                &[(header, value), ("authorization", "Bearer not-the-token")],
            );
            assert_eq!(r.status, 401, "{path} with a wrong token");
        }
    }
    assert_eq!(get(&node, "/healthz", &[]).text(), "ok\n");
    assert_eq!(get(&node, "/readyz", &[]).text(), "ready\n");
    // the metrics token opens nothing else
    let r = get(&node, "/api/aes", &[("authorization", scraper.as_str())]);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(
        &node,
        "/dicom-web/studies",
        &[("authorization", scraper.as_str())],
    );
    assert_eq!(r.status, 403);
    // and is never logged
    assert!(!node.log().contains(SCRAPER));
}

/// Waits for `/readyz` to answer `status`; returns its body.
fn readyz_until(node: &Node, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let started = Instant::now();
        let r = get(node, "/readyz", &[]);
        // each check is bounded (2 s): a frozen database never holds the probe long
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "/readyz took {:?}",
            started.elapsed()
        );
        if r.status == status {
            return r.text();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {} ({}), not {status}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readyz_is_503_with_a_reason_while_the_database_is_frozen() {
    let pg = PrivatePostgres::start();
    let node = Node::start_with(NodeOptions::new(Backend::Postgres).database_url(&pg.url));
    assert_eq!(readyz_until(&node, 200, Duration::from_secs(10)), "ready\n");
    // /healthz does no I/O: it answers through all of this
    pg.freeze();
    let body = readyz_until(&node, 503, Duration::from_secs(20));
    let reason: Value = serde_json::from_str(&body).unwrap();
    let reason = reason["error"].as_str().unwrap();
    assert!(
        reason.starts_with("not ready: index: no answer within 2 s"),
        "{reason}"
    );
    let r = get(&node, "/healthz", &[]);
    assert_eq!(r.status, 200);
    // the scrape does not hang either (its job count is bounded the same way)
    assert_eq!(get(&node, "/metrics", &[]).status, 200);
    pg.thaw();
    readyz_until(&node, 200, Duration::from_secs(30));
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_not_applied() {
    let node = Node::start(Backend::Postgres);
    assert_eq!(readyz_until(&node, 200, Duration::from_secs(10)), "ready\n");
    // the database loses its last migration (as one restored from an older backup would)
    let client = support::pg_try_connect(&node.database_url().unwrap())
        .await
        .unwrap();
    let latest: i64 = client
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "DELETE FROM schema_migrations WHERE version = $1",
            &[&latest],
        )
        .await
        .unwrap();
    let left: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let body = tokio::task::spawn_blocking(move || {
        let body = readyz_until(&node, 503, Duration::from_secs(10));
        drop(node);
        body
    })
    .await
    .unwrap();
    let expected =
        format!("index: schema version {left}, this node's is {latest} (migrations not applied)");
    assert!(body.contains(&expected), "{body}");
}

const WORKER_TOKEN: &str = "worker-secret-obs";

fn worker_call(node: &Node, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {WORKER_TOKEN}");
    let r = http_request(
        node.http_port(),
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ],
        body.to_string().as_bytes(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn ai_job_gauges_durations_and_worker_heartbeats() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--worker-token")
            .arg(WORKER_TOKEN)
            .arg("--series-quiet-secs")
            .arg("1")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    );
    let (_dir, series) = support::synth_ct(3, 72);
    let paths = support::synth_paths(&series);
    let files: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "CT1", &[], &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the CT series completes and a ct-classical job is queued: the gauge says so
    let model = [("model", "ct-classical")];
    let queued = [model[0], ("state", "queued")];
    let s = scrape_until(&node, "no queued ct-classical job", |s| {
        s.value("pacs_ai_jobs", &queued) == 1.0
    });
    assert_eq!(s.kind("pacs_ai_jobs"), Some("gauge"));
    for state in ["running", "succeeded", "failed", "dead", "cancelled"] {
        assert_eq!(
            s.value("pacs_ai_jobs", &[model[0], ("state", state)]),
            0.0,
            "{state}"
        );
    }
    // a worker leases it, renews the lease twice and completes it
    let (status, job) = worker_call(
        &node,
        "/api/worker/lease",
        &serde_json::json!({"worker": "w-obs", "models": ["ct-classical"]}),
    );
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_i64().unwrap();
    for _ in 0..2 {
        let (status, body) = worker_call(
            &node,
            &format!("/api/worker/jobs/{id}/heartbeat"),
            &serde_json::json!({"worker": "w-obs"}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let s = scrape(&node);
    assert_eq!(
        s.value("pacs_ai_jobs", &[model[0], ("state", "running")]),
        1.0
    );
    assert_eq!(s.value("pacs_ai_jobs", &queued), 0.0);
    assert_eq!(
        s.value("pacs_ai_worker_heartbeats_total", &[("worker", "w-obs")]),
        2.0
    );
    let seen = s.value(
        "pacs_ai_worker_last_seen_timestamp_seconds",
        &[("worker", "w-obs")],
    );
    assert!(seen > 1.0e9, "{seen}");
    let (status, body) = worker_call(
        &node,
        &format!("/api/worker/jobs/{id}/complete"),
        &serde_json::json!({"worker": "w-obs", "result": {}}),
    );
    assert_eq!(status, 200, "{body}");
    let s = scrape(&node);
    assert_eq!(
        s.value("pacs_ai_jobs", &[model[0], ("state", "succeeded")]),
        1.0
    );
    let done = [model[0], ("outcome", "succeeded")];
    assert_eq!(s.value("pacs_ai_job_duration_seconds_count", &done), 1.0);
    assert_eq!(s.kind("pacs_ai_job_duration_seconds"), Some("histogram"));
}

/// The node's log lines, each parsed as JSON (every line must be one).
fn json_lines(node: &Node) -> Vec<Value> {
    node.log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The value of `field` in the span named `span` of a JSON log line (`spans`, outermost
/// first), as text.
fn span_field(line: &Value, span: &str, field: &str) -> Option<String> {
    line["spans"].as_array()?.iter().find_map(|s| {
        (s["name"] == span).then(|| match &s[field] {
            Value::String(v) => Some(v.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })?
    })
}

#[test]
fn json_logs_carry_the_request_id_and_the_association_id() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--log-format")
            .arg("json")
            // the request's own lines ("answered") are at debug
            .env("RUST_LOG", "info,pacs_dicomweb=debug,tower_http=debug"),
    );
    let r = get(
        &node,
        "/dicom-web/studies",
        &[("x-request-id", "obs-qido-4711")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("obs-qido-4711"));
    let out = support::echoscu(&node, "ECHOER");
    assert!(out.status.success());
    let (_dir, series) = support::synth_ct(2, 73);
    let paths = support::synth_paths(&series);
    let files: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "STORER", &[], &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the association's last line ("released") follows the release response
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = json_lines(&node);
        let released = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "association released")
            .count();
        if released >= 2 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        // every line inside a request or an association names it
        if let Some(spans) = line["spans"].as_array() {
            for s in spans {
                match s["name"].as_str() {
                    Some("http") => assert!(s["request_id"].is_string(), "{line}"),
                    Some("association") => assert!(s["association_id"].is_u64(), "{line}"),
                    _ => {}
                }
            }
        }
    }
    // the QIDO request's lines carry the id the client sent
    let qido: Vec<&Value> = lines
        .iter()
        .filter(|l| span_field(l, "http", "request_id").as_deref() == Some("obs-qido-4711"))
        .collect();
    assert!(!qido.is_empty(), "{}", node.log());
    assert!(qido
        .iter()
        .all(|l| span_field(l, "http", "path").as_deref() == Some("/dicom-web/studies")));
    assert!(qido.iter().any(|l| l["fields"]["message"] == "answered"));
    // each association's lines carry its id: accepted and released under the same one, the
    // C-ECHO's and the C-STORE's different
    let association_of = |calling: &str| -> String {
        let accepted = lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "association accepted"
                    && l["fields"]["calling"] == calling
            })
            .unwrap_or_else(|| panic!("no accepted line for {calling}:\n{}", node.log()));
        span_field(accepted, "association", "association_id").unwrap()
    };
    let (echo, store) = (association_of("ECHOER"), association_of("STORER"));
    assert_ne!(echo, store);
    for id in [&echo, &store] {
        let of_it: Vec<&Value> = lines
            .iter()
            .filter(|l| span_field(l, "association", "association_id").as_ref() == Some(id))
            .collect();
        assert!(
            of_it
                .iter()
                .any(|l| l["fields"]["message"] == "association released"),
            "association {id}: {of_it:?}"
        );
    }
}
