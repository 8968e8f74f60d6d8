//! What the node tells Prometheus: the one recorder of the `metrics` facade (the protocol
//! crates record through the facade too), rendered in the Prometheus text format by
//! `GET /metrics` on the node's one HTTP stack (see [`crate::ops`]); the exporter runs no
//! listener of its own.
//!
//! Every metric is declared in one of three tables ([`METRICS`] here, `pacs_dimse::metrics::
//! METRICS`, `pacs_dicomweb::metrics::METRICS`), which [`all`] joins: their help texts are the
//! `# HELP` lines, and docs/operations.md lists them (a test checks it names every one).
//! Names follow the Prometheus conventions: base units (seconds, bytes), `_total` on counters,
//! `_seconds` on durations, all under `pacs_`.

pub mod index;
pub mod storage;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The node core's metrics: name, kind, help.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        BUILD_INFO,
        "gauge",
        "Always 1; the version label is this node's",
    ),
    (
        PROCESS_START_TIME,
        "gauge",
        "When this node started, in seconds since the Unix epoch",
    ),
    (UPTIME, "gauge", "Seconds since this node started"),
    (
        INDEX_DURATION,
        "histogram",
        "Index (database) operations at the Index trait, by operation",
    ),
    (
        INDEX_ERRORS,
        "counter",
        "Index operations that failed, by operation",
    ),
    (
        STORAGE_DURATION,
        "histogram",
        "Object store requests (local files or S3), by operation; for reads, to the first byte",
    ),
    (
        STORAGE_ERRORS,
        "counter",
        "Object store requests that failed (a missing object is an answer, not an error), by operation",
    ),
    (
        AI_JOBS,
        "gauge",
        "AI jobs in the index, by model and state (queued, running, succeeded, failed, dead, cancelled), counted at scrape time",
    ),
    (
        AI_JOB_DURATION,
        "histogram",
        "AI jobs from lease to completion or failure as the worker reported it, by model and outcome",
    ),
    (
        AI_WORKER_HEARTBEATS,
        "counter",
        "Heartbeats of AI workers (lease renewals), by worker",
    ),
    (
        AI_WORKER_LAST_SEEN,
        "gauge",
        "When an AI worker last leased, renewed, completed or failed a job, in seconds since the Unix epoch, by worker",
    ),
];

pub const BUILD_INFO: &str = "pacs_build_info";
pub const PROCESS_START_TIME: &str = "pacs_process_start_time_seconds";
pub const UPTIME: &str = "pacs_uptime_seconds";
pub const INDEX_DURATION: &str = "pacs_index_operation_duration_seconds";
pub const INDEX_ERRORS: &str = "pacs_index_operation_errors_total";
pub const STORAGE_DURATION: &str = "pacs_storage_operation_duration_seconds";
pub const STORAGE_ERRORS: &str = "pacs_storage_operation_errors_total";
pub const AI_JOBS: &str = "pacs_ai_jobs";
pub const AI_JOB_DURATION: &str = "pacs_ai_job_duration_seconds";
pub const AI_WORKER_HEARTBEATS: &str = "pacs_ai_worker_heartbeats_total";
pub const AI_WORKER_LAST_SEEN: &str = "pacs_ai_worker_last_seen_timestamp_seconds";

/// Every metric of the node and its front-ends: name, kind, help.
pub fn all() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    METRICS
        .iter()
        .chain(pacs_dimse::metrics::METRICS)
        .chain(pacs_dicomweb::metrics::METRICS)
}

/// Buckets of request and operation latencies, in seconds: a millisecond to five minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of AI job durations, in seconds: a second to two hours.
const JOB_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

struct Installed {
    handle: PrometheusHandle,
    started: SystemTime,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The process's recorder, installed on first use: histograms with explicit buckets (true
/// Prometheus histograms, not summaries), every metric described, the build info and the start
/// time set. Handles the front-ends made before this are no-ops, so the node calls it before
/// anything else.
pub fn install() -> &'static PrometheusHandle {
    &INSTALLED
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(AI_JOB_DURATION.into()), JOB_BUCKETS)
                })
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                // another recorder (an embedding program's) already records: /metrics then
                // shows only what is set through this handle, which is nothing
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            let started = SystemTime::now();
            metrics::gauge!(PROCESS_START_TIME).set(unix_seconds(started));
            Installed { handle, started }
        })
        .handle
}

fn describe() {
    for (name, kind, help) in all() {
        let unit = if name.ends_with("_seconds") {
            Some(metrics::Unit::Seconds)
        } else if name.ends_with("_bytes_total") {
            Some(metrics::Unit::Bytes)
        } else {
            None
        };
        match (*kind, unit) {
            ("counter", Some(u)) => metrics::describe_counter!(*name, u, *help),
            ("counter", None) => metrics::describe_counter!(*name, *help),
            ("gauge", Some(u)) => metrics::describe_gauge!(*name, u, *help),
            ("gauge", None) => metrics::describe_gauge!(*name, *help),
            (_, Some(u)) => metrics::describe_histogram!(*name, u, *help),
            (_, None) => metrics::describe_histogram!(*name, *help),
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The exposition (text format 0.0.4): drains the histograms' pending samples first, and sets
/// the uptime.
pub fn render() -> String {
    let installed = INSTALLED.get();
    let handle = install();
    if let Some(i) = installed {
        metrics::gauge!(UPTIME).set(i.started.elapsed().unwrap_or_default().as_secs_f64());
    }
    handle.run_upkeep();
    handle.render()
}

/// Drains the histograms' pending samples every few seconds, so that they never pile up
/// between scrapes (the exporter leaves this to its user when it runs no listener).
pub fn spawn_upkeep() {
    let handle = install().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// An AI worker was seen (a lease, a heartbeat, a completion or a failure); `heartbeat` counts
/// it in [`AI_WORKER_HEARTBEATS`] too. Worker names come from authenticated workers only.
pub fn ai_worker_seen(worker: &str, heartbeat: bool) {
    let worker = worker.to_string();
    if heartbeat {
        metrics::counter!(AI_WORKER_HEARTBEATS, "worker" => worker.clone()).increment(1);
    }
    metrics::gauge!(AI_WORKER_LAST_SEEN, "worker" => worker).set(unix_seconds(SystemTime::now()));
}

/// An AI job ended (`outcome`: succeeded, failed, retry, dead), `seconds` after its lease.
pub fn ai_job_finished(model: &str, outcome: &'static str, seconds: f64) {
    metrics::histogram!(AI_JOB_DURATION, "model" => model.to_string(), "outcome" => outcome)
        .record(seconds.max(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for (name, kind, help) in all() {
            assert!(seen.insert(*name), "{name} declared twice");
            assert!(name.starts_with("pacs_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(!help.is_empty(), "{name}");
            match *kind {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
                "gauge" => assert!(!name.ends_with("_total"), "{name}"),
                other => panic!("{name}: kind {other}"),
            }
            // base units only
            for unit in ["_milliseconds", "_ms", "_kb", "_mb", "_minutes"] {
                assert!(!name.contains(unit), "{name}");
            }
        }
    }

    #[test]
    fn docs_list_every_metric() {
        let docs = include_str!("../../docs/operations.md");
        for (name, _, _) in all() {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/operations.md does not list {name}"
            );
        }
    }

    #[test]
    fn rendered_in_the_text_format_with_help_and_histograms() {
        install();
        metrics::histogram!(INDEX_DURATION, "operation" => "unit_test").record(0.003);
        let text = render();
        assert!(text.contains("# TYPE pacs_build_info gauge"), "{text}");
        assert!(
            text.contains(&format!(
                "pacs_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pacs_index_operation_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                "pacs_index_operation_duration_seconds_bucket{operation=\"unit_test\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("# HELP pacs_process_start_time_seconds"));
    }
}
