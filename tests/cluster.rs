//! Many nodes on one PostgreSQL database and one S3 bucket (docs/cluster.md), with real parts:
//! the harness's PostgreSQL, moto's S3 server on 127.0.0.1, two `pacs` nodes, two
//! `pacs-ai-worker`s, DCMTK's storescu and echoscu. And, below the nodes, the index's change
//! notifications (a lost LISTEN connection included) and its series-completion transaction,
//! on both backends.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::s3::S3Server;
use support::worker::Worker;
use support::{both_backends, Backend, Node, NodeOptions};

use pacs::index::{Change, Changed};

const TOKEN: &str = "cluster-worker-secret";
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models");
const BUCKET: &str = "cluster";
/// What the issue asks: a change made through one node applies on the others within a
/// second. The deadlines below give it that second plus slack for a loaded CI machine.
const PROPAGATION: Duration = Duration::from_millis(2500);

/// Calling AE titles, each registered (the nodes accept only known AEs).
const INGEST_A: &str = "INGEST_A";
const INGEST_B: &str = "INGEST_B";
const ROUTED: &str = "ROUTED";
const UNROUTED: &str = "UNROUTED";
const HELD: &str = "HELD";
const KILL_A: &str = "KILL_A";
const KILL_B: &str = "KILL_B";
const AGAIN_A: &str = "AGAIN_A";

fn node_options(s3: &S3Server, database_url: &str) -> NodeOptions {
    let mut opts = NodeOptions::new(Backend::Postgres)
        .database_url(database_url)
        .arg("--worker-token")
        .arg(TOKEN)
        .arg("--series-quiet-secs")
        .arg("1.5")
        .arg("--ai-models-dir")
        .arg(MODELS)
        .arg("--require-known-ae");
    for ae in [
        INGEST_A, INGEST_B, ROUTED, UNROUTED, HELD, KILL_A, KILL_B, AGAIN_A,
    ] {
        opts = opts.config(&support::ae_entry(ae, &["echo", "store", "find"]));
    }
    s3.node_options(opts, BUCKET)
}

/// Synthetic CT studies of `series` series each, small enough for a quick analysis.
fn synth(
    studies: usize,
    series: usize,
    slices: usize,
    rows: u16,
    seed: u64,
) -> (tempfile::TempDir, pacs_synth::SynthSummary) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
    opts.studies = studies;
    opts.series_per_study = series;
    opts.slices = slices;
    opts.rows = rows;
    opts.columns = rows;
    opts.seed = seed;
    opts.out = dir.path().to_path_buf();
    (dir, pacs_synth::synthesise(&opts).unwrap())
}

/// The synthetic instances grouped by (study, series), in order.
fn by_series(
    summary: &pacs_synth::SynthSummary,
) -> BTreeMap<(String, String), Vec<pacs_synth::SynthInstance>> {
    let mut out: BTreeMap<(String, String), Vec<pacs_synth::SynthInstance>> = BTreeMap::new();
    for i in &summary.instances {
        out.entry((i.study_instance_uid.clone(), i.series_instance_uid.clone()))
            .or_default()
            .push(i.clone());
    }
    out
}

/// storescu (DCMTK, TCP_NODELAY=1) of `files` in one association, verbose.
fn storescu(node: &Node, aet: &str, files: &[PathBuf]) -> Output {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    support::storescu(node, aet, &["-v"], &refs)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_stored(out: &Output, what: &str) {
    assert!(out.status.success(), "storescu {what}:\n{}", text(out));
}

/// The files storescu reported stored: each "Sending file" answered by a Success response
/// (DCMTK prints "(Success)", or "(Status: 0x0000 - Success)" when the response has a status
/// detail).
fn acknowledged(out: &Output) -> BTreeSet<PathBuf> {
    let mut sent: Option<PathBuf> = None;
    let mut done = BTreeSet::new();
    for line in text(out).lines() {
        if let Some(path) = line.strip_prefix("I: Sending file: ") {
            sent = Some(PathBuf::from(path.trim()));
        } else if line.starts_with("I: Received Store Response (")
            && (line.contains("(Success)") || line.contains("0x0000"))
        {
            if let Some(path) = sent.take() {
                done.insert(path);
            }
        }
    }
    done
}

fn get_json(node: &Node, path: &str) -> Value {
    let rsp = support::http_request(node.http_port(), "GET", path, &[], &[]);
    assert_eq!(rsp.status, 200, "GET {path}: {}", rsp.text());
    serde_json::from_slice(&rsp.body).unwrap()
}

fn send_json(node: &Node, method: &str, path: &str, body: &Value) -> support::HttpResponse {
    support::http_request(
        node.http_port(),
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// SOP Instance UIDs of a series, by QIDO-RS on `node`.
fn qido_instances(node: &Node, study: &str, series: &str) -> BTreeSet<String> {
    let rsp = support::http_request(
        node.http_port(),
        "GET",
        &format!("/dicom-web/studies/{study}/series/{series}/instances"),
        &[],
        &[],
    );
    if rsp.status == 204 {
        return BTreeSet::new();
    }
    assert_eq!(rsp.status, 200, "QIDO: {}", rsp.text());
    let found: Value = serde_json::from_slice(&rsp.body).unwrap();
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_string())
        .collect()
}

/// Modalities of a study's series, by QIDO-RS on `node`.
fn qido_modalities(node: &Node, study: &str) -> Vec<String> {
    get_json(node, &format!("/dicom-web/studies/{study}/series"))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["00080060"]["Value"][0].as_str().unwrap().to_string())
        .collect()
}

/// WADO-RS of one instance as stored, on `node`: its SHA-256 (hex).
fn wado_sha256(node: &Node, study: &str, series: &str, sop: &str) -> String {
    let rsp = support::http_request(
        node.http_port(),
        "GET",
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}"),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        &[],
    );
    assert_eq!(rsp.status, 200, "WADO {sop}: {}", rsp.text());
    let parts = support::multipart::parse(rsp.header("content-type").unwrap(), &rsp.body);
    assert_eq!(parts.len(), 1);
    hex(ring::digest::digest(&ring::digest::SHA256, &parts[0].body).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn jobs(node: &Node) -> Vec<Value> {
    get_json(node, "/api/ai/jobs?limit=1000")
        .as_array()
        .unwrap()
        .clone()
}

/// Jobs per series (its Series Instance UID → the jobs' models and states).
fn jobs_by_series(all: &[Value]) -> HashMap<String, Vec<(String, String)>> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for j in all {
        out.entry(j["series_instance_uid"].as_str().unwrap().to_string())
            .or_default()
            .push((
                j["model"].as_str().unwrap().to_string(),
                j["state"].as_str().unwrap().to_string(),
            ));
    }
    out
}

/// Polls `check` every 50 ms until it holds; panics with `what` and the logs after `within`.
fn wait_until(
    within: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn echo(node: &Node, aet: &str) -> bool {
    support::echoscu(node, aet).status.success()
}

/// Two nodes on one database and one bucket, two workers; see the module documentation of
/// each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_database_and_one_bucket() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let database_url = support::postgres_url();
    let ports_a = [
        support::free_port(),
        support::free_port(),
        support::free_port(),
    ];
    let mut opts_a = node_options(&s3, &database_url);
    opts_a.ports = Some(ports_a);
    let a = Node::start_with(opts_a);
    let b = Node::start_with(node_options(&s3, &database_url));
    let worker_a = Worker::start(&a, TOKEN, "worker-a", &[], &[]);
    let worker_b = Worker::start(&b, TOKEN, "worker-b", &[], &[]);
    let logs = || {
        format!(
            "--- node A:\n{}\n--- node B:\n{}\n--- worker A:\n{}\n--- worker B:\n{}",
            a.log(),
            b.log(),
            worker_a.log(),
            worker_b.log()
        )
    };

    // 1. Half the series through each node at once; either node sees everything.
    let (_dir, summary) = synth(3, 2, 10, 64, 14);
    let series = by_series(&summary);
    assert_eq!(series.len(), 6);
    let (mut via_a, mut via_b) = (Vec::new(), Vec::new());
    for (n, files) in series.values().enumerate() {
        let paths = files.iter().map(|i| i.path.clone());
        if n % 2 == 0 {
            via_a.extend(paths);
        } else {
            via_b.extend(paths);
        }
    }
    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| storescu(&a, INGEST_A, &via_a));
        let tb = s.spawn(|| storescu(&b, INGEST_B, &via_b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_stored(&out_a, "via A");
    assert_stored(&out_b, "via B");
    for ((study, uid), files) in &series {
        let expected: BTreeSet<String> = files.iter().map(|i| i.sop_instance_uid.clone()).collect();
        for node in [&a, &b] {
            assert_eq!(&qido_instances(node, study, uid), &expected, "QIDO {uid}");
        }
    }
    // WADO-RS on each node reads, from the bucket, what the other one stored
    let index = pacs::index::open(&database_url).await.unwrap();
    for files in series.values() {
        let i = &files[files.len() / 2];
        let stored = index
            .find_instance(&i.sop_instance_uid)
            .await
            .unwrap()
            .unwrap();
        for node in [&a, &b] {
            assert_eq!(
                wado_sha256(
                    node,
                    &i.study_instance_uid,
                    &i.series_instance_uid,
                    &i.sop_instance_uid
                ),
                stored.sha256
            );
        }
    }

    // 2. An AE added through A is accepted by B within a second.
    assert!(!echo(&b, "NEWAE"), "B accepted an unknown AE");
    let rsp = send_json(
        &a,
        "POST",
        "/api/aes",
        &json!({"title": "NEWAE", "allow": ["echo"]}),
    );
    assert_eq!(rsp.status, 201, "{}", rsp.text());
    let added = Instant::now();
    wait_until(
        PROPAGATION,
        "B accepts the AE added through A",
        &logs,
        || echo(&b, "NEWAE"),
    );
    eprintln!("AE added on A accepted by B after {:?}", added.elapsed());
    // and its removal, the other way round
    let rsp = support::http_request(b.http_port(), "DELETE", "/api/aes/NEWAE", &[], &[]);
    assert_eq!(rsp.status, 204, "{}", rsp.text());
    wait_until(
        PROPAGATION,
        "A refuses the AE removed through B",
        &logs,
        || !echo(&a, "NEWAE"),
    );

    // 3. Every series is analysed exactly once, whichever node completes it and whichever
    // worker runs it; the jobs are the same seen from either node.
    let analysed: BTreeSet<String> = series.keys().map(|(_, s)| s.clone()).collect();
    wait_until(
        Duration::from_secs(40),
        "every series analysed",
        &logs,
        || {
            let all = jobs(&a);
            let per = jobs_by_series(&all);
            analysed.iter().all(|s| {
                per.get(s)
                    .is_some_and(|j| j.iter().all(|(_, st)| st == "succeeded"))
            })
        },
    );
    let all = jobs(&a);
    assert_eq!(all, jobs(&b), "the job list differs between the nodes");
    let per = jobs_by_series(&all);
    for s in &analysed {
        assert_eq!(
            per[s],
            [("ct-classical".to_string(), "succeeded".to_string())],
            "{s}"
        );
    }
    let ran_on: BTreeSet<&str> = all
        .iter()
        .map(|j| j["result"]["worker"].as_str().unwrap())
        .collect();
    eprintln!("jobs run by {ran_on:?}");
    // one SEG and one SR per analysed series, in its study
    for study in series.keys().map(|(st, _)| st).collect::<BTreeSet<_>>() {
        for node in [&a, &b] {
            let modalities = qido_modalities(node, study);
            let count = |m: &str| modalities.iter().filter(|x| *x == m).count();
            assert_eq!(
                (count("CT"), count("SEG"), count("SR")),
                (2, 2, 2),
                "{study}"
            );
        }
    }

    // 4. A route change made through A is used by B; the jobs are managed from either node.
    let routes = json!([
        {"model": "ct-classical", "modality": ["CT"], "calling_ae": [ROUTED]},
        // no worker has this model: its job waits, for the administrators below
        {"model": "held-back", "calling_ae": [HELD]},
    ]);
    let rsp = send_json(&a, "PUT", "/api/ai/routes", &routes);
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let expected_routes = get_json(&a, "/api/ai/routes");
    wait_until(PROPAGATION, "B routes as changed through A", &logs, || {
        get_json(&b, "/api/ai/routes") == expected_routes
    });
    let (_dir2, more) = synth(3, 1, 6, 64, 15);
    let more: Vec<_> = by_series(&more).into_iter().collect();
    let [unrouted, routed, held] = [&more[0], &more[1], &more[2]];
    for (aet, (_, files)) in [(UNROUTED, unrouted), (ROUTED, routed), (HELD, held)] {
        let paths: Vec<PathBuf> = files.iter().map(|i| i.path.clone()).collect();
        assert_stored(&storescu(&b, aet, &paths), aet);
    }
    let (routed_uid, held_uid, unrouted_uid) = (&routed.0 .1, &held.0 .1, &unrouted.0 .1);
    wait_until(
        Duration::from_secs(30),
        "the routed series analysed",
        &logs,
        || {
            let per = jobs_by_series(&jobs(&b));
            per.get(routed_uid)
                .is_some_and(|j| j.iter().all(|(_, st)| st == "succeeded"))
                && per.contains_key(held_uid)
        },
    );
    let per = jobs_by_series(&jobs(&b));
    assert_eq!(
        per[routed_uid],
        [("ct-classical".to_string(), "succeeded".to_string())]
    );
    assert_eq!(
        per[held_uid],
        [("held-back".to_string(), "queued".to_string())]
    );
    // completed before the other two (it arrived first, and quiet series are claimed oldest
    // first): no route of the new set matches it
    assert!(
        !per.contains_key(unrouted_uid),
        "{:?}",
        per.get(unrouted_uid)
    );
    let held_job = jobs(&a)
        .into_iter()
        .find(|j| j["series_instance_uid"] == held_uid.as_str())
        .unwrap();
    let id = held_job["id"].as_i64().unwrap();
    let state = |node: &Node| get_json(node, &format!("/api/ai/jobs/{id}"))["state"].clone();
    let rsp = send_json(&b, "POST", &format!("/api/ai/jobs/{id}/cancel"), &json!({}));
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(state(&a), "cancelled");
    let rsp = send_json(&a, "POST", &format!("/api/ai/jobs/{id}/retry"), &json!({}));
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(state(&b), "queued");
    let rsp = send_json(&a, "POST", &format!("/api/ai/jobs/{id}/cancel"), &json!({}));
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(state(&b), "cancelled");

    // 5. A killed (SIGKILL) in the middle of an ingest: B keeps serving, nothing
    // acknowledged is lost, and A rejoins after a restart on the same ports.
    let (_dir3, big) = synth(2, 1, 150, 32, 16);
    let big: Vec<_> = by_series(&big).into_iter().collect();
    let [(killed_key, killed_files), (kept_key, kept_files)] = [&big[0], &big[1]];
    let killed_paths: Vec<PathBuf> = killed_files.iter().map(|i| i.path.clone()).collect();
    let kept_paths: Vec<PathBuf> = kept_files.iter().map(|i| i.path.clone()).collect();
    let (out_killed, out_kept) = std::thread::scope(|s| {
        let ta = s.spawn(|| storescu(&a, KILL_A, &killed_paths));
        let tb = s.spawn(|| storescu(&b, KILL_B, &kept_paths));
        wait_until(
            Duration::from_secs(30),
            "A stores part of the series",
            &logs,
            || qido_instances(&b, &killed_key.0, &killed_key.1).len() >= 20,
        );
        a.kill();
        // B answers queries while its own ingest goes on
        assert!(qido_instances(&b, &killed_key.0, &killed_key.1).len() >= 20);
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(!a.is_alive());
    assert_stored(&out_kept, "via B while A was killed");
    let acked = acknowledged(&out_killed);
    assert!(
        !out_killed.status.success() && acked.len() < killed_paths.len(),
        "A was not killed in the middle of the ingest ({} of {} stored):\n{}",
        acked.len(),
        killed_paths.len(),
        text(&out_killed)
    );
    assert!(!acked.is_empty(), "{}", text(&out_killed));
    eprintln!(
        "A killed after {} of {} instances acknowledged",
        acked.len(),
        killed_paths.len()
    );
    let expected_kept: BTreeSet<String> = kept_files
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(qido_instances(&b, &kept_key.0, &kept_key.1), expected_kept);
    // every instance acknowledged through A is indexed and readable from the bucket via B
    for i in killed_files.iter().filter(|i| acked.contains(&i.path)) {
        let stored = index
            .find_instance(&i.sop_instance_uid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {} is not indexed", i.sop_instance_uid));
        assert_eq!(
            wado_sha256(
                &b,
                &i.study_instance_uid,
                &i.series_instance_uid,
                &i.sop_instance_uid
            ),
            stored.sha256
        );
    }
    let mut again = a.restart_options();
    again.ports = Some(ports_a);
    let a2 = Node::start_with(again);
    let rest: Vec<PathBuf> = killed_files
        .iter()
        .filter(|i| !acked.contains(&i.path))
        .map(|i| i.path.clone())
        .collect();
    assert_stored(&storescu(&a2, AGAIN_A, &rest), "via A after its restart");
    let expected_killed: BTreeSet<String> = killed_files
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(
        qido_instances(&a2, &killed_key.0, &killed_key.1),
        expected_killed
    );
    assert_eq!(qido_instances(&a2, &kept_key.0, &kept_key.1), expected_kept);
    // still no AI work for what no route selects, and still one run per analysed series
    let per = jobs_by_series(&jobs(&a2));
    for s in [&killed_key.1, &kept_key.1, unrouted_uid] {
        assert!(!per.contains_key(s), "{s}: {:?}", per.get(s));
    }
    for s in &analysed {
        assert_eq!(per[s].len(), 1, "{s}");
    }

    // 6. Users and keys are read from the index on every request: a key made through A works
    // on B at once, and once revoked through B, A refuses it at once (no copy to wait for).
    let rsp = send_json(
        &a2,
        "POST",
        "/api/keys",
        &json!({"name": "ops", "roles": ["admin"]}),
    );
    assert_eq!(rsp.status, 201, "{}", rsp.text());
    let key: Value = serde_json::from_slice(&rsp.body).unwrap();
    let bearer = format!("Bearer {}", key["key"].as_str().unwrap());
    let call = |node: &Node, method: &str, path: &str, with_key: bool| {
        let headers: &[(&str, &str)] = if with_key {
            &[("Authorization", bearer.as_str())]
        } else {
            &[]
        };
        support::http_request(node.http_port(), method, path, headers, &[]).status
    };
    assert_eq!(call(&b, "GET", "/api/ai/jobs", true), 200);
    // the first key ends the anonymous administrator on every node
    assert_eq!(call(&b, "GET", "/api/ai/jobs", false), 401);
    assert_eq!(call(&b, "DELETE", "/api/keys/ops", true), 204);
    assert_eq!(call(&a2, "GET", "/api/ai/jobs", true), 401);
    drop(worker_a);
    drop(worker_b);
}

/// A node's index (PostgreSQL: another connection pool, as another node has) hears of a
/// change announced through another, and of nothing that changed nothing.
async fn changes_reach_other_index_handles(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => dir.path().join("index.sqlite").display().to_string(),
        Backend::Postgres => support::postgres_url(),
    };
    let writer = pacs::index::open(&url).await.unwrap();
    let reader = pacs::index::open(&url).await.unwrap();
    let mut own = writer.subscribe();
    let mut other = reader.subscribe();
    // the first reload-everything: on PostgreSQL, the LISTEN connection is up
    for changes in [&mut own, &mut other] {
        let first = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
        assert_eq!(first.unwrap(), Some(Changed::All));
    }
    let ae: pacs::config::RemoteAe =
        serde_json::from_value(json!({"title": "NOTIFIED", "allow": ["echo"]})).unwrap();
    assert!(writer.insert_remote_ae(&ae, 1).await.unwrap());
    // the writer's own subscribers hear exactly what changed
    assert_eq!(
        next_specific(&mut own).await,
        Changed::One(Change::RemoteAes)
    );
    match backend {
        // another process on the SQLite file: the periodic reload
        Backend::Sqlite => assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), other.next())
                .await
                .unwrap(),
            Some(Changed::All)
        ),
        // another node on PostgreSQL: the notification itself
        Backend::Postgres => assert_eq!(
            next_specific(&mut other).await,
            Changed::One(Change::RemoteAes)
        ),
    }
    // a write that changed nothing (the AE exists) announces nothing
    assert!(!writer.insert_remote_ae(&ae, 2).await.unwrap());
    writer
        .set_shared_setting("ai_routes", "[]", Change::AiRoutes)
        .await
        .unwrap();
    assert_eq!(
        next_specific(&mut own).await,
        Changed::One(Change::AiRoutes)
    );
}

/// A node's LISTEN connection that the server ends (a PostgreSQL restart, a failover) is
/// opened again, everything is reloaded once it is, and later changes are heard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_reestablished() {
    let url = support::postgres_url();
    let index = pacs::index::open(&url).await.unwrap();
    let mut changes = index.subscribe();
    let first = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
    assert_eq!(first.unwrap(), Some(Changed::All));
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&pacs::index::postgres::LISTENER_NAME],
        )
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "one listener per index");
    // reload everything when the connection is lost (what is announced meanwhile is lost),
    // and again once LISTENing on a new one
    for _ in 0..2 {
        let again = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
        assert_eq!(again.unwrap(), Some(Changed::All));
    }
    let listening = admin
        .query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1
             AND datname = current_database()",
            &[&pacs::index::postgres::LISTENER_NAME],
        )
        .await
        .unwrap();
    assert_eq!(listening.len(), 1);
    let ae: pacs::config::RemoteAe =
        serde_json::from_value(json!({"title": "AFTER", "allow": ["echo"]})).unwrap();
    assert!(index.insert_remote_ae(&ae, 1).await.unwrap());
    assert_eq!(
        next_specific(&mut changes).await,
        Changed::One(Change::RemoteAes)
    );
}

/// The next change that is not a periodic [`Changed::All`].
async fn next_specific(changes: &mut pacs::index::Subscription) -> Changed {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match changes.next().await.expect("index gone") {
                Changed::All => continue,
                c => return c,
            }
        }
    })
    .await
    .expect("no change announced within 10 s")
}

/// Of many nodes completing the same series at once, one claims it, and its jobs are queued
/// with the claim: exactly one set of jobs, none for the others; a series that received an
/// instance since it was seen is not claimed.
async fn one_claim_queues_the_jobs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => dir.path().join("index.sqlite").display().to_string(),
        Backend::Postgres => support::postgres_url(),
    };
    let index = pacs::index::open(&url).await.unwrap();
    let before = index.clock_ms().await.unwrap();
    for n in 1..=3 {
        let record = pacs::index::InstanceRecord {
            patient_id: "P1".into(),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2.3.4".into(),
            modality: "CT".into(),
            sop_instance_uid: format!("1.2.3.4.{n}"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            object_key: format!("k{n}"),
            sha256: "00".repeat(32),
            ..Default::default()
        };
        index.insert_instance(record).await.unwrap();
    }
    let after = index.clock_ms().await.unwrap();
    // arrival is the database's clock
    let stored = index.find_instance("1.2.3.4.2").await.unwrap().unwrap();
    assert!(
        (before..=after).contains(&stored.received_at_ms),
        "{before} <= {} <= {after}",
        stored.received_at_ms
    );
    index.watch_series_since(0).await.unwrap();
    // every series whose last arrival is before the database's clock plus a minute
    let due = index.quiet_series(-60_000).await.unwrap();
    assert_eq!(due.len(), 1);
    let (series_pk, last) = due[0];
    assert!(last >= stored.received_at_ms);

    // a stale view of the series (an instance arrived since) claims nothing
    let job = |model: &'static str| pacs::index::jobs::NewJob {
        study_instance_uid: "1.2.3",
        series_instance_uid: "1.2.3.4",
        model,
        model_version: "1",
    };
    let stale = index
        .claim_series_with_jobs(series_pk, last - 1, &[job("m1")], 3)
        .await
        .unwrap();
    assert_eq!(stale, None);
    assert!(index.jobs(None, None, 100).await.unwrap().is_empty());

    let claims = futures::future::join_all((0..8).map(|_| {
        let index = index.clone();
        async move {
            index
                .claim_series_with_jobs(series_pk, last, &[job("m1"), job("m2")], 3)
                .await
                .unwrap()
        }
    }))
    .await;
    let won: Vec<_> = claims.iter().flatten().collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert!(won[0].iter().all(Option::is_some), "{won:?}");
    let queued = index.jobs(None, None, 100).await.unwrap();
    let mut models: Vec<&str> = queued.iter().map(|j| j.model.as_str()).collect();
    models.sort();
    assert_eq!(models, ["m1", "m2"]);
    assert!(queued
        .iter()
        .all(|j| j.state == "queued" && j.created_at_ms >= after));
    assert!(index.quiet_series(-60_000).await.unwrap().is_empty());
}

both_backends!(changes_reach_other_index_handles, one_claim_queues_the_jobs);
