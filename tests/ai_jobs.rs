//! The node's side of the AI worker pool, driven over HTTP as a worker would: series
//! completion from the index, default routing, no loops on AI output, the durable job queue
//! (lease, heartbeat, expiry, complete, fail, retry, cancel) and its admin API, on both backends;
//! and two nodes sharing one PostgreSQL queueing each series once.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{both_backends, Backend, Node, NodeOptions};

const TOKEN: &str = "worker-secret";

fn ai_node(backend: Backend) -> Node {
    ai_node_with(NodeOptions::new(backend))
}

fn ai_node_with(options: NodeOptions) -> Node {
    Node::start_with(
        options
            .arg("--worker-token")
            .arg(TOKEN)
            .arg("--series-quiet-secs")
            .arg("1")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    )
}

fn call(node: &Node, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let rsp = support::http_request(node.http_port(), method, path, &headers, &body);
    (
        rsp.status,
        serde_json::from_slice(&rsp.body).unwrap_or(Value::Null),
    )
}

fn jobs(node: &Node, query: &str) -> Vec<Value> {
    let (status, body) = call(
        node,
        "GET",
        &format!("/api/ai/jobs{query}"),
        None,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits until the node has queued `n` jobs.
fn wait_jobs(node: &Node, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = jobs(node, "");
        if j.len() >= n {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} jobs after 30 s; log:\n{}",
            j.len(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lease(node: &Node, worker: &str, lease_secs: u64) -> (u16, Value) {
    call(
        node,
        "POST",
        "/api/worker/lease",
        Some(TOKEN),
        &json!({"worker": worker, "models": ["ct-classical", "deepbrain"], "lease_secs": lease_secs}),
    )
}

fn push_ct(node: &Node, slices: usize, seed: u64) -> pacs_synth::SynthSummary {
    let (dir, synth) = support::synth_ct(slices, seed);
    let paths = support::synth_paths(&synth);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(node, "CT1", &[], &refs).status.success());
    drop(dir);
    synth
}

async fn queue_lifecycle(backend: Backend) {
    let node = ai_node(backend);
    let synth = push_ct(&node, 3, 21);
    let series = &synth.instances[0].series_instance_uid;
    // complete after the quiet period: one job, the CT model, queued
    let all = wait_jobs(&node, 1);
    assert_eq!(all.len(), 1, "{all:?}");
    let job = &all[0];
    assert_eq!(job["series_instance_uid"], *series);
    assert_eq!(job["model"], "ct-classical");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["run"], 1);
    let id = job["id"].as_i64().unwrap();

    // the worker API wants the token
    let (status, _) = call(
        &node,
        "POST",
        "/api/worker/lease",
        None,
        &json!({"worker": "w1"}),
    );
    assert_eq!(status, 401);
    let (status, _) = call(
        &node,
        "POST",
        "/api/worker/lease",
        Some("nope"),
        &json!({"worker": "w1"}),
    );
    assert_eq!(status, 401);

    // lease, heartbeat; nobody else gets it
    let (status, leased) = lease(&node, "w1", 60);
    assert_eq!(status, 200, "{leased}");
    assert_eq!(leased["id"], id);
    assert_eq!(leased["state"], "running");
    assert_eq!(leased["attempts"], 1);
    let (status, _) = lease(&node, "w2", 60);
    assert_eq!(status, 204);
    let hb = |worker: &str| {
        call(
            &node,
            "POST",
            &format!("/api/worker/jobs/{id}/heartbeat"),
            Some(TOKEN),
            &json!({"worker": worker}),
        )
        .0
    };
    assert_eq!(hb("w1"), 200);
    assert_eq!(hb("w2"), 409);

    // a retryable failure goes back to the queue with a delay
    let (status, _) = call(
        &node,
        "POST",
        &format!("/api/worker/jobs/{id}/fail"),
        Some(TOKEN),
        &json!({"worker": "w1", "error": "node unreachable", "retryable": true}),
    );
    assert_eq!(status, 200);
    let (_, j) = call(
        &node,
        "GET",
        &format!("/api/ai/jobs/{id}"),
        None,
        &Value::Null,
    );
    assert_eq!(j["state"], "queued");
    assert_eq!(j["error"], "node unreachable");
    assert!(j["not_before_ms"].as_i64().unwrap() > j["started_at_ms"].as_i64().unwrap());
    assert_eq!(lease(&node, "w2", 60).0, 204, "not before its delay");

    // an administrator cancels it, then retries it; a worker then takes it and it fails for good
    let (status, j) = call(
        &node,
        "POST",
        &format!("/api/ai/jobs/{id}/cancel"),
        None,
        &Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(j["state"], "cancelled");
    let (status, j) = call(
        &node,
        "POST",
        &format!("/api/ai/jobs/{id}/retry"),
        None,
        &Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(j["state"], "queued");
    assert_eq!(j["attempts"], 0);
    let (status, leased) = lease(&node, "w2", 60);
    assert_eq!(status, 200);
    assert_eq!(leased["id"], id);
    let (status, _) = call(
        &node,
        "POST",
        &format!("/api/worker/jobs/{id}/fail"),
        Some(TOKEN),
        &json!({"worker": "w2", "error": "slices unevenly spaced", "retryable": false}),
    );
    assert_eq!(status, 200);
    let failed = jobs(&node, "?state=failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], "slices unevenly spaced");
    assert!(failed[0]["finished_at_ms"].as_i64().unwrap() > 0);

    // retried: a worker that stops heartbeating loses it when its lease expires
    call(
        &node,
        "POST",
        &format!("/api/ai/jobs/{id}/retry"),
        None,
        &Value::Null,
    );
    let (status, _) = lease(&node, "dying", 5);
    assert_eq!(status, 200);
    assert_eq!(lease(&node, "w3", 60).0, 204);
    std::thread::sleep(Duration::from_millis(5_500));
    let (status, leased) = lease(&node, "w3", 60);
    assert_eq!(status, 200, "leased again after expiry");
    assert_eq!(leased["id"], id);
    assert_eq!(leased["attempts"], 2);
    assert!(
        leased["error"].as_str().unwrap().contains("dying"),
        "{leased}"
    );
    // the dead worker's late calls are refused; the live one completes it
    let (status, _) = call(
        &node,
        "POST",
        &format!("/api/worker/jobs/{id}/complete"),
        Some(TOKEN),
        &json!({"worker": "dying", "result": {}}),
    );
    assert_eq!(status, 409);
    let (status, _) = call(
        &node,
        "POST",
        &format!("/api/worker/jobs/{id}/complete"),
        Some(TOKEN),
        &json!({"worker": "w3", "result": {"seg": "1.2.3"}}),
    );
    assert_eq!(status, 200);
    let (_, j) = call(
        &node,
        "GET",
        &format!("/api/ai/jobs/{id}"),
        None,
        &Value::Null,
    );
    assert_eq!(j["state"], "succeeded");
    assert_eq!(j["result"]["seg"], "1.2.3");

    // new instances in the series: a new run, not a duplicate of the finished one
    let (dir, more) = support::synth_ct(4, 21);
    let extra = support::synth_paths(&more);
    let refs: Vec<&Path> = extra[3..].iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(&node, "CT1", &[], &refs).status.success());
    drop(dir);
    let all = wait_jobs(&node, 2);
    assert_eq!(all[0]["run"], 2, "{all:?}");
    assert_eq!(all[0]["series_instance_uid"], *series);

    // AI output (stored with the worker token) never makes a job
    let ct = support::pydicom_test_files().join("CT_small.dcm");
    let bytes = std::fs::read(&ct).unwrap();
    let (content_type, body) = support::multipart::build(&[("application/dicom", &bytes)]);
    let auth = format!("Bearer {TOKEN}");
    let rsp = support::http_request(
        node.http_port(),
        "POST",
        "/dicom-web/studies",
        &[("content-type", &content_type), ("authorization", &auth)],
        &body,
    );
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jobs(&node, "").len(), 2, "AI output must not be analysed");

    // a DIMSE peer calling itself what the AI worker's stores were once marked with is a peer
    // like any other: its series is analysed
    let (dir, spoof) = support::synth_ct(2, 77);
    let paths = support::synth_paths(&spoof);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(&node, "PACS-AI", &[], &refs)
        .status
        .success());
    drop(dir);
    let all = wait_jobs(&node, 3);
    assert_eq!(
        all[0]["series_instance_uid"], spoof.instances[0].series_instance_uid,
        "{all:?}"
    );
    assert_eq!(all[0]["model"], "ct-classical");
}
both_backends!(queue_lifecycle);

/// Two workers leasing at once from the queue get every job exactly once.
async fn concurrent_workers_get_each_job_once(backend: Backend) {
    let node = ai_node(backend);
    for seed in 0..10 {
        push_ct(&node, 1, 100 + seed);
    }
    let all = wait_jobs(&node, 10);
    assert_eq!(all.len(), 10);
    let port = node.http_port();
    let worker = move |name: &'static str| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let rsp = support::http_request(
                    port,
                    "POST",
                    "/api/worker/lease",
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                    json!({"worker": name}).to_string().as_bytes(),
                );
                if rsp.status == 204 {
                    return got;
                }
                assert_eq!(rsp.status, 200);
                let job: Value = serde_json::from_slice(&rsp.body).unwrap();
                let id = job["id"].as_i64().unwrap();
                let done = support::http_request(
                    port,
                    "POST",
                    &format!("/api/worker/jobs/{id}/complete"),
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                    json!({"worker": name}).to_string().as_bytes(),
                );
                assert_eq!(done.status, 200);
                got.push(id);
            }
        })
    };
    let a = worker("wa");
    let b = worker("wb");
    let mut ids = a.join().unwrap();
    ids.extend(b.join().unwrap());
    ids.sort();
    let mut expected: Vec<i64> = all.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    expected.sort();
    assert_eq!(ids, expected, "every job leased exactly once");
    assert_eq!(jobs(&node, "?state=succeeded").len(), 10);
}
both_backends!(concurrent_workers_get_each_job_once);

/// Two nodes on one PostgreSQL: a series stored through one is queued once, and either node's
/// workers can take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_postgres_queue_each_series_once() {
    let url = support::postgres_url();
    let start = || {
        Node::start_with(
            NodeOptions::new(Backend::Postgres)
                .database_url(url.clone())
                .arg("--worker-token")
                .arg(TOKEN)
                .arg("--series-quiet-secs")
                .arg("1"),
        )
    };
    let a = start();
    let b = start();
    push_ct(&a, 2, 300);
    push_ct(&b, 2, 301);
    std::thread::sleep(Duration::from_secs(4));
    let from_a = wait_jobs(&a, 2);
    let from_b = jobs(&b, "");
    assert_eq!(from_a.len(), 2, "{from_a:?}");
    assert_eq!(from_a, from_b);
    let (status, _) = lease(&b, "wb", 60);
    assert_eq!(status, 200);
    let (status, _) = lease(&a, "wa", 60);
    assert_eq!(status, 200);
    assert_eq!(lease(&a, "wc", 60).0, 204);
}

#[test]
fn routes_can_be_replaced_through_the_admin_api() {
    let data = tempfile::tempdir().unwrap();
    let node = ai_node_with(NodeOptions::new(Backend::Sqlite).data_dir(data.path().join("d")));
    let (status, routes) = call(&node, "GET", "/api/ai/routes", None, &Value::Null);
    assert_eq!(status, 200);
    assert_eq!(routes[0]["model"], "ct-classical");
    let (status, _) = call(
        &node,
        "PUT",
        "/api/ai/routes",
        None,
        &json!([{"model": "ct-classical", "modality": ["CT"], "series_description": "("}]),
    );
    assert_eq!(status, 400, "invalid regex refused");
    let (status, _) = call(
        &node,
        "PUT",
        "/api/ai/routes",
        None,
        &json!([{"model": "ct-classical", "modality": ["CT"], "calling_ae": ["ONLYTHIS"]}]),
    );
    assert_eq!(status, 200);
    push_ct(&node, 1, 400);
    std::thread::sleep(Duration::from_secs(3));
    assert!(jobs(&node, "").is_empty(), "CT1 is not ONLYTHIS");
    // the routes survive a restart (they are in the index)
    let options = node.restart_options();
    node.terminate();
    drop(node);
    let node = Node::start_with(options);
    let (_, routes) = call(&node, "GET", "/api/ai/routes", None, &Value::Null);
    assert_eq!(routes[0]["calling_ae"][0], "ONLYTHIS");
}
