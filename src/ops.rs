//! The operators' endpoints beside `/healthz` (which the HTTP front-end answers itself, with no
//! I/O): `GET /readyz` (the index answers, its schema is this program's, the object store
//! answers) and `GET /metrics` (the Prometheus text format, [`crate::metrics`]). The
//! permission table gives all three [`pacs_dicomweb::Need::Operator`]: open to direct callers
//! on this machine, else the admin permission or the metrics token.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::index::Index;
use crate::storage::Storage;

/// How long one readiness check (or the scrape-time job count) may take: a hung database makes
/// `/readyz` answer 503 after this, never hang.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness answer is reused: probes from several places cost one check a second.
const READY_CACHE: Duration = Duration::from_secs(1);

/// The job states of `crate::ai::jobs`, each reported for every model (0 when none).
const JOB_STATES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];

pub struct Ops {
    index: Arc<dyn Index>,
    storage: Storage,
    /// The AI job queue is on: `/metrics` counts its jobs.
    ai: bool,
    /// The last readiness answer and when it was made; the lock also makes concurrent probes
    /// wait for one check instead of each running its own.
    ready: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Models whose job gauges have been set (each keeps being reported, 0 when it has none).
    models: Mutex<BTreeSet<String>>,
}

impl Ops {
    pub fn new(index: Arc<dyn Index>, storage: Storage, ai: bool) -> Arc<Ops> {
        Arc::new(Ops {
            index,
            storage,
            ai,
            ready: tokio::sync::Mutex::new(None),
            models: Mutex::new(BTreeSet::new()),
        })
    }

    /// Ok when ready, else why not (each failing check, `; `-separated).
    pub async fn readiness(&self) -> Result<(), String> {
        let mut cached = self.ready.lock().await;
        if let Some((at, answer)) = cached.as_ref() {
            if at.elapsed() < READY_CACHE {
                return answer.clone();
            }
        }
        let answer = self.check().await;
        *cached = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn check(&self) -> Result<(), String> {
        let index = async {
            match tokio::time::timeout(CHECK_TIMEOUT, self.index.schema_version()).await {
                Err(_) => Err(format!(
                    "index: no answer within {} s",
                    CHECK_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(format!("index: {e}")),
                Ok(Ok(found)) => {
                    let known = crate::index::known_schema_version();
                    if found == known {
                        Ok(())
                    } else {
                        Err(format!(
                            "index: schema version {found}, this node's is {known} (migrations {})",
                            if found < known {
                                "not applied"
                            } else {
                                "of a newer node"
                            }
                        ))
                    }
                }
            }
        };
        let storage = async {
            match tokio::time::timeout(CHECK_TIMEOUT, self.storage.probe()).await {
                Err(_) => Err(format!(
                    "storage: no answer within {} s",
                    CHECK_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(format!("storage: {e}")),
                Ok(Ok(())) => Ok(()),
            }
        };
        let (index, storage) = tokio::join!(index, storage);
        let failed: Vec<String> = [index, storage]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Sets the `pacs_ai_jobs` gauges from the index (one GROUP BY), within [`CHECK_TIMEOUT`].
    async fn count_jobs(&self) {
        let counts = match tokio::time::timeout(CHECK_TIMEOUT, self.index.job_counts()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot count the AI jobs for /metrics");
                return;
            }
            Err(_) => {
                tracing::warn!("cannot count the AI jobs for /metrics: the index did not answer");
                return;
            }
        };
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        models.extend(counts.iter().map(|(m, _, _)| m.clone()));
        for model in models.iter() {
            for state in JOB_STATES {
                let n = counts
                    .iter()
                    .filter(|(m, s, _)| m == model && s == state)
                    .map(|(_, _, n)| *n)
                    .sum::<i64>();
                metrics::gauge!(crate::metrics::AI_JOBS, "model" => model.clone(), "state" => state)
                    .set(n as f64);
            }
        }
    }
}

pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness().await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain")], "ready\n").into_response(),
        Err(why) => {
            tracing::warn!(%why, "not ready");
            pacs_dicomweb::HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}"),
            )
            .into_response()
        }
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    if ops.ai {
        ops.count_jobs().await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}
