//! The node's side of the AI worker pool: deciding that a series is complete, routing it to
//! models, and the durable job queue workers lease from over HTTP (`api.rs`).
//!
//! Series completion is decided from the index, not from one process's memory, so that it
//! works when several nodes share the database: every node scans for series whose last
//! instance arrived more than the quiet period ago (both times by the database's clock), reads
//! the series' facts and picks its models, then claims it and queues their jobs in one
//! transaction: of the nodes scanning, one wins, and a crash cannot lose the series' work.
//!
//! The routes and the models' versions live in the index too; each node keeps a copy that
//! follows the index's changes (`crate::index::changes`) within a second.

pub mod api;
pub mod jobs;
pub mod routing;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use crate::index::{Change, Index, IndexError};
use jobs::{JobQueue, NewJob};
use routing::{Route, Router};

/// Settings of the AI side of the node.
#[derive(Debug, Clone)]
pub struct AiSettings {
    /// Workers present this as `Authorization: Bearer`.
    pub worker_token: String,
    /// A series is complete when no instance arrived for this long.
    pub quiet: Duration,
    /// Routes from the configuration file (None: the shipped models' defaults).
    pub routes: Option<Vec<Route>>,
    /// Model name → version, read from this node's models folder's manifests; published in
    /// the index for every node.
    pub model_versions: HashMap<String, String>,
    pub max_attempts: i64,
}

pub struct AiService {
    pub index: Arc<dyn Index>,
    pub queue: JobQueue,
    pub settings: AiSettings,
    /// The routes as last read from the index (or the configuration's, while it has none).
    router: RwLock<Router>,
    /// The models' versions as last read from the index.
    models: RwLock<HashMap<String, String>>,
}

const ROUTES_KEY: &str = "ai_routes";

/// Model name and version from each `*/model.toml` under `dir` (top-level `name` and
/// `version`; the rest of the manifest is the worker's business).
pub fn read_model_versions(dir: &std::path::Path) -> HashMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        name: String,
        version: String,
    }
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path().join("model.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match toml::from_str::<Manifest>(&text) {
            Ok(m) => {
                out.insert(m.name, m.version);
            }
            Err(e) => warn!(path = %path.display(), error = %e, "unreadable model manifest"),
        }
    }
    out
}

impl AiService {
    /// Sets up the queue and the routes: those saved through the admin API, else the
    /// configuration file's, else the defaults; publishes this node's models.
    pub async fn open(
        index: Arc<dyn Index>,
        settings: AiSettings,
    ) -> Result<Arc<AiService>, String> {
        index
            .publish_ai_models(&settings.model_versions)
            .await
            .map_err(|e| e.to_string())?;
        let ai = AiService {
            queue: JobQueue::new(index.clone(), settings.max_attempts),
            index,
            router: RwLock::new(Router::new(Vec::new())?),
            models: RwLock::new(HashMap::new()),
            settings,
        };
        ai.reload_routes().await?;
        ai.reload_models().await.map_err(|e| e.to_string())?;
        info!(
            routes = ai.routes().len(),
            models = ?ai.models.read().expect("models lock"),
            quiet_secs = ai.settings.quiet.as_secs_f64(),
            "AI jobs enabled"
        );
        Ok(Arc::new(ai))
    }

    /// Reads the routes from the index (the configuration's, or the defaults, while it has
    /// none).
    async fn reload_routes(&self) -> Result<(), String> {
        let saved = self
            .index
            .setting(ROUTES_KEY)
            .await
            .map_err(|e| e.to_string())?;
        let routes = match saved {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| format!("saved AI routes: {e}"))?
            }
            None => self
                .settings
                .routes
                .clone()
                .unwrap_or_else(routing::default_routes),
        };
        let router = Router::new(routes)?;
        *self.router.write().expect("router lock") = router;
        Ok(())
    }

    async fn reload_models(&self) -> Result<(), IndexError> {
        let models = self.index.ai_models().await?;
        *self.models.write().expect("models lock") = models;
        Ok(())
    }

    /// Keeps the routes and models in step with the index: reloads them when another node
    /// (or this one) changes them, and periodically (see `crate::index::changes`).
    pub fn follow_changes(self: &Arc<Self>) {
        let ai = Arc::downgrade(self);
        let mut changes = self.index.subscribe();
        tokio::spawn(async move {
            while let Some(changed) = changes.next().await {
                let Some(ai) = ai.upgrade() else { return };
                if changed.touches(Change::AiRoutes) {
                    if let Err(e) = ai.reload_routes().await {
                        warn!(error = %e, "cannot reload the AI routes");
                    }
                }
                if changed.touches(Change::AiModels) {
                    if let Err(e) = ai.reload_models().await {
                        warn!(error = %e, "cannot reload the AI models");
                    }
                }
            }
        });
    }

    pub fn routes(&self) -> Vec<Route> {
        self.router.read().expect("router lock").routes()
    }

    /// Replaces the routes (admin API) and saves them in the index, which tells every node.
    pub async fn set_routes(&self, routes: Vec<Route>) -> Result<(), String> {
        let router = Router::new(routes.clone())?;
        let json = serde_json::to_string(&routes).map_err(|e| e.to_string())?;
        self.index
            .set_shared_setting(ROUTES_KEY, &json, Change::AiRoutes)
            .await
            .map_err(|e| e.to_string())?;
        *self.router.write().expect("router lock") = router;
        Ok(())
    }

    fn model_version(&self, model: &str) -> String {
        self.models
            .read()
            .expect("models lock")
            .get(model)
            .cloned()
            .unwrap_or_else(|| "unversioned".into())
    }

    /// Runs the completion scanner until the process ends.
    pub fn spawn_scanner(self: &Arc<Self>) {
        let ai = Arc::downgrade(self);
        let every =
            (self.settings.quiet / 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
        tokio::spawn(async move {
            let mut cursor: Option<i64> = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(ai) = ai.upgrade() else { return };
                match ai.scan(&mut cursor).await {
                    Ok(0) => {}
                    Ok(n) => info!(jobs = n, "AI jobs queued"),
                    Err(e) => warn!(error = %e, "series completion scan failed"),
                }
            }
        });
    }

    /// One pass: note the series that received instances since the last pass, then route the
    /// ones that have been quiet long enough. Returns the number of jobs queued.
    pub async fn scan(&self, cursor: &mut Option<i64>) -> Result<usize, IndexError> {
        // A margin for instances whose transaction committed after a later one's (their
        // arrival time, the database's clock, is taken before their commit).
        const MARGIN_MS: i64 = 60_000;
        let since = match *cursor {
            Some(c) => c,
            None => {
                let latest = self.index.latest_watched_arrival().await?;
                let latest = match latest {
                    Some(t) => t,
                    None => self.index.clock_ms().await?,
                };
                latest - MARGIN_MS
            }
        };
        let latest = self.index.watch_series_since(since).await?;
        if let Some(max) = latest {
            *cursor = Some(max - MARGIN_MS);
        } else if cursor.is_none() {
            *cursor = Some(since);
        }

        let quiet_ms = self.settings.quiet.as_millis() as i64;
        let due = self.index.quiet_series(quiet_ms).await?;
        let mut queued = 0;
        for (series_pk, last) in due {
            queued += self.route(series_pk, last).await?;
        }
        Ok(queued)
    }

    /// Completes a quiet series: picks the models its routes select, then claims it and
    /// queues their jobs in one transaction (nothing when another node claimed it first).
    async fn route(&self, series_pk: i64, last_received_ms: i64) -> Result<usize, IndexError> {
        let Some(summary) = self.index.series_facts(series_pk).await? else {
            // gone since: nothing to analyse, and nothing to scan again
            self.index
                .claim_series_with_jobs(series_pk, last_received_ms, &[], 1)
                .await?;
            return Ok(0);
        };
        let (series, study) = (&summary.series_instance_uid, &summary.study_instance_uid);
        let models = self
            .router
            .read()
            .expect("router lock")
            .models_for(&summary);
        let versions: Vec<String> = models.iter().map(|m| self.model_version(m)).collect();
        let jobs: Vec<NewJob> = models
            .iter()
            .zip(&versions)
            .map(|(model, version)| NewJob {
                study_instance_uid: study,
                series_instance_uid: series,
                model,
                model_version: version,
            })
            .collect();
        let Some(ids) = self
            .index
            .claim_series_with_jobs(series_pk, last_received_ms, &jobs, self.queue.max_attempts)
            .await?
        else {
            return Ok(0);
        };
        let mut queued = 0;
        for (job, id) in jobs.iter().zip(ids) {
            if let Some(id) = id {
                info!(job = id, %series, model = %job.model, version = %job.model_version, "series complete: AI job queued");
                queued += 1;
            }
        }
        Ok(queued)
    }
}
