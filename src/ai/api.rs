//! HTTP endpoints of the AI job queue.
//!
//! Workers (the `ai-worker` permission: the shared worker token or a worker's own API key,
//! checked by the HTTP stack against src/auth/permissions.rs), under `/api/worker`:
//! - `POST /api/worker/lease` `{"worker": id, "models": [names], "lease_secs": n}` → 200 with
//!   the job, or 204 when nothing is ready;
//! - `POST /api/worker/jobs/{id}/heartbeat` `{"worker": id, "lease_secs": n}`;
//! - `POST /api/worker/jobs/{id}/complete` `{"worker": id, "result": {...}}`;
//! - `POST /api/worker/jobs/{id}/fail` `{"worker": id, "error": text, "retryable": bool}`.
//! - `POST /api/worker/jobs/{id}/release` `{"worker": id}`: gives the job back unfinished (the
//!   worker is shutting down); the attempt does not count.
//!
//!   Each answers 200, or 409 when the worker no longer holds the job (its lease expired and
//!   another worker has it, or an administrator cancelled it): the worker must drop the job.
//!
//! Administrators (the admin API's access rule), under `/api/ai`: `GET /api/ai/jobs` (filters
//! `state`, `study`, `series`, paging `limit`, `offset`), `GET /api/ai/jobs/{id}`,
//! `POST /api/ai/jobs/{id}/retry`, `POST /api/ai/jobs/{id}/cancel`, `GET` and
//! `PUT /api/ai/routes` (each route `enabled` or not), `GET /api/ai/models` (versions, routes,
//! job counts and latencies per model).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pacs_dicomweb::{HttpError, Identity, Principal};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use super::routing::Route;
use super::AiService;
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    HttpError::new(status, message).into_response()
}

fn index_error(e: impl std::fmt::Display) -> Response {
    HttpError::unavailable(e.to_string()).into_response()
}

/// The worker endpoints.
pub fn worker_router(ai: Arc<AiService>) -> Router {
    Router::new()
        .route("/api/worker/lease", post(lease))
        .route("/api/worker/jobs/{id}/heartbeat", post(heartbeat))
        .route("/api/worker/jobs/{id}/complete", post(complete))
        .route("/api/worker/jobs/{id}/fail", post(fail))
        .route("/api/worker/jobs/{id}/release", post(release))
        .with_state(ai)
}

/// The administrators' endpoints; changes of the routes are recorded in `audit`.
pub fn admin_router(ai: Arc<AiService>, audit: crate::audit::Audit) -> Router {
    Router::new()
        .route("/api/ai/jobs", get(list_jobs))
        .route("/api/ai/jobs/{id}", get(get_job))
        .route("/api/ai/jobs/{id}/retry", post(retry_job))
        .route("/api/ai/jobs/{id}/cancel", post(cancel_job))
        .route("/api/ai/routes", get(get_routes).put(put_routes))
        .route("/api/ai/models", get(list_models))
        .layer(axum::Extension(audit))
        .with_state(ai)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid request: {e}"),
        ))
    })
}

#[derive(Deserialize)]
struct LeaseRequest {
    worker: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    60
}

/// A worker's own credential names it: an API key (`pacs key create gpu-1 --roles ai-worker`),
/// a local or OpenID Connect user or a client certificate with the `ai-worker` role may lease,
/// renew and report jobs only under that name as its worker id, so one worker's key can
/// neither take nor finish another worker's jobs. The shared `--worker-token` (one key for
/// every worker of a simple set-up) and an anonymous caller of a node without authentication
/// may use any worker id.
fn acts_as(identity: &Identity, worker: &str) -> Result<(), Box<Response>> {
    let bound = match &identity.principal {
        Principal::ApiKey(n)
        | Principal::User(n)
        | Principal::Oidc(n)
        | Principal::Certificate(n) => n,
        _ => return Ok(()),
    };
    if worker == bound {
        return Ok(());
    }
    Err(Box::new(error(
        StatusCode::FORBIDDEN,
        format!(
            "{} is bound to worker id {bound:?}: it may not act as worker {worker:?} \
             (give the worker --worker-id {bound:?})",
            identity.principal.name()
        ),
    )))
}

fn lease_ms(secs: u64) -> i64 {
    (secs.clamp(5, 3600) * 1000) as i64
}

async fn lease(
    State(ai): State<Arc<AiService>>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let rq: LeaseRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if rq.worker.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "worker id required");
    }
    if let Err(r) = acts_as(&identity, &rq.worker) {
        return *r;
    }
    match ai
        .queue
        .lease(&rq.worker, &rq.models, lease_ms(rq.lease_secs))
        .await
    {
        Ok(Some(job)) => {
            crate::metrics::ai_worker_seen(&rq.worker, false);
            Json(job).into_response()
        }
        Ok(None) => {
            crate::metrics::ai_worker_seen(&rq.worker, false);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => index_error(e),
    }
}

#[derive(Deserialize)]
struct HeartbeatRequest {
    worker: String,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
}

fn held(ok: bool) -> Response {
    if ok {
        Json(json!({ "ok": true })).into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            "this worker no longer holds the job (lease expired or job cancelled)",
        )
    }
}

async fn heartbeat(
    State(ai): State<Arc<AiService>>,
    Path(id): Path<i64>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let rq: HeartbeatRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Err(r) = acts_as(&identity, &rq.worker) {
        return *r;
    }
    match ai
        .queue
        .heartbeat(id, &rq.worker, lease_ms(rq.lease_secs))
        .await
    {
        Ok(ok) => {
            crate::metrics::ai_worker_seen(&rq.worker, true);
            held(ok)
        }
        Err(e) => index_error(e),
    }
}

#[derive(Deserialize)]
struct CompleteRequest {
    worker: String,
    #[serde(default)]
    result: serde_json::Value,
}

async fn complete(
    State(ai): State<Arc<AiService>>,
    Path(id): Path<i64>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let rq: CompleteRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Err(r) = acts_as(&identity, &rq.worker) {
        return *r;
    }
    match ai.queue.complete(id, &rq.worker, &rq.result).await {
        Ok(ok) => {
            finished(&ai, id, &rq.worker, ok).await;
            held(ok)
        }
        Err(e) => index_error(e),
    }
}

#[derive(Deserialize)]
struct FailRequest {
    worker: String,
    error: String,
    #[serde(default)]
    retryable: bool,
}

async fn fail(
    State(ai): State<Arc<AiService>>,
    Path(id): Path<i64>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let rq: FailRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Err(r) = acts_as(&identity, &rq.worker) {
        return *r;
    }
    warn!(job = id, worker = %rq.worker, retryable = rq.retryable, error = %rq.error, "AI job failed");
    match ai.queue.fail(id, &rq.worker, &rq.error, rq.retryable).await {
        Ok(ok) => {
            finished(&ai, id, &rq.worker, ok).await;
            held(ok)
        }
        Err(e) => index_error(e),
    }
}

/// A worker reported a job done or failed (`applied`: it still held it): the job's time since
/// its lease goes into `pacs_ai_job_duration_seconds` under what became of it (succeeded,
/// failed, dead, or retry when it went back to the queue).
async fn finished(ai: &AiService, id: i64, worker: &str, applied: bool) {
    crate::metrics::ai_worker_seen(worker, false);
    if !applied {
        return;
    }
    let Ok(Some(job)) = ai.queue.get(id).await else {
        return;
    };
    let outcome = match job.state.as_str() {
        "succeeded" => "succeeded",
        "failed" => "failed",
        "dead" => "dead",
        _ => "retry",
    };
    let end = match job.finished_at_ms {
        0 => crate::audit::now_ms(),
        t => t,
    };
    let seconds = (end - job.started_at_ms) as f64 / 1000.0;
    crate::metrics::ai_job_finished(&job.model, outcome, seconds);
}

#[derive(Deserialize)]
struct ReleaseRequest {
    worker: String,
}

async fn release(
    State(ai): State<Arc<AiService>>,
    Path(id): Path<i64>,
    identity: Identity,
    body: axum::body::Bytes,
) -> Response {
    let rq: ReleaseRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Err(r) = acts_as(&identity, &rq.worker) {
        return *r;
    }
    match ai.queue.release(id, &rq.worker).await {
        Ok(ok) => held(ok),
        Err(e) => index_error(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    study: Option<String>,
    series: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// An RFC 3339 time of a job's milliseconds; null for 0 (not yet).
fn job_time(ms: i64) -> serde_json::Value {
    if ms > 0 {
        serde_json::Value::String(crate::audit::xml::date_time(ms))
    } else {
        serde_json::Value::Null
    }
}

/// A job as the API shows it: its row, and the same facts under names that do not depend on
/// the queue's internals (`worker`, RFC 3339 times).
fn job_json(job: &super::jobs::Job) -> serde_json::Value {
    let mut value = serde_json::to_value(job).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("worker".into(), json!(job.lease_owner));
        map.insert("created_at".into(), job_time(job.created_at_ms));
        map.insert("started_at".into(), job_time(job.started_at_ms));
        map.insert("finished_at".into(), job_time(job.finished_at_ms));
    }
    value
}

async fn list_jobs(State(ai): State<Arc<AiService>>, Query(q): Query<ListQuery>) -> Response {
    let filter = crate::index::jobs::JobFilter {
        state: q.state.as_deref().filter(|s| !s.is_empty()),
        study: q.study.as_deref().filter(|s| !s.is_empty()),
        series: q.series.as_deref().filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(100),
        offset: q.offset.unwrap_or(0),
    };
    match ai.index.jobs_matching(&filter).await {
        Ok(jobs) => Json(jobs.iter().map(job_json).collect::<Vec<_>>()).into_response(),
        Err(e) => index_error(e),
    }
}

async fn get_job(State(ai): State<Arc<AiService>>, Path(id): Path<i64>) -> Response {
    match ai.queue.get(id).await {
        Ok(Some(job)) => Json(job_json(&job)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => index_error(e),
    }
}

/// The `p`th percentile (0 to 100) of ascending `sorted`, nearest rank.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `GET /api/ai/models`: each model known (published by a node, routed, or with jobs): its
/// versions, enabled routes, jobs per state (`done` the succeeded, `failed` the failed and
/// dead) and the enqueue-to-done latency of its jobs done in the last 24 hours.
async fn list_models(State(ai): State<Arc<AiService>>) -> Response {
    const DAY_MS: i64 = 86_400_000;
    let (published, jobs) = match tokio::join!(ai.index.ai_models(), ai.index.model_jobs(DAY_MS)) {
        (Ok(p), Ok(j)) => (p, j),
        (Err(e), _) | (_, Err(e)) => return index_error(e),
    };
    let routes = ai.routes();
    let mut names: std::collections::BTreeSet<String> = published.keys().cloned().collect();
    names.extend(routes.iter().map(|r| r.model.clone()));
    names.extend(jobs.keys().cloned());
    let models: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            let stats = jobs.get(name).cloned().unwrap_or_default();
            let mut versions = stats.versions.clone();
            if let Some(v) = published.get(name) {
                versions.insert(v.clone());
            }
            let state = |names: &[&str]| -> i64 {
                names
                    .iter()
                    .map(|n| stats.states.get(*n).copied().unwrap_or(0))
                    .sum()
            };
            let lat = &stats.latencies_ms;
            json!({
                "name": name,
                "version": published.get(name),
                "versions": versions,
                "enabled_routes": routes.iter().filter(|r| r.enabled && &r.model == name).count(),
                "jobs": {
                    "queued": state(&["queued"]),
                    "running": state(&["running"]),
                    "done": state(&["succeeded"]),
                    "failed": state(&["failed", "dead"]),
                    "cancelled": state(&["cancelled"]),
                },
                "latency_ms": {
                    "p50": percentile(lat, 50),
                    "p95": percentile(lat, 95),
                    "count": lat.len(),
                },
            })
        })
        .collect();
    Json(models).into_response()
}

async fn retry_job(State(ai): State<Arc<AiService>>, Path(id): Path<i64>) -> Response {
    match ai.queue.retry(id).await {
        Ok(true) => get_job(State(ai), Path(id)).await,
        Ok(false) => error(
            StatusCode::CONFLICT,
            "only failed, dead or cancelled jobs can be retried",
        ),
        Err(e) => index_error(e),
    }
}

async fn cancel_job(State(ai): State<Arc<AiService>>, Path(id): Path<i64>) -> Response {
    match ai.queue.cancel(id).await {
        Ok(true) => get_job(State(ai), Path(id)).await,
        Ok(false) => error(
            StatusCode::CONFLICT,
            "only queued or running jobs can be cancelled",
        ),
        Err(e) => index_error(e),
    }
}

async fn get_routes(State(ai): State<Arc<AiService>>) -> Response {
    Json(ai.routes()).into_response()
}

async fn put_routes(
    State(ai): State<Arc<AiService>>,
    axum::Extension(audit): axum::Extension<crate::audit::Audit>,
    identity: pacs_dicomweb::Identity,
    body: axum::body::Bytes,
) -> Response {
    use crate::audit::{types, AuditEvent, EventKind, ObjectRef, Outcome, Participant};
    let response = match parse::<Vec<Route>>(&body) {
        Ok(routes) => match ai.set_routes(routes).await {
            Ok(()) => Json(ai.routes()).into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        Err(r) => *r,
    };
    // a Security Alert (Software Configuration): what the node does with the data changed
    let mut event = AuditEvent::new(EventKind::SecurityAlert)
        .type_code(types::software_configuration())
        .participant(crate::audit::http_participant(&identity).requestor())
        .participant(Participant::node(&audit.node_ae))
        .object(ObjectRef::uri("/api/ai/routes").detail("Routes", body.to_vec()));
    if !response.status().is_success() {
        event = event.failed(
            Outcome::MinorFailure,
            format!("refused with HTTP {}", response.status().as_u16()),
        );
    }
    audit.record(event).await;
    response
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 95), Some(95));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 95), Some(4));
    }
}
