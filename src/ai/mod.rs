//! The node's side of the AI worker pool: deciding that a series is complete, routing it to
//! models, and the durable job queue workers lease from over HTTP (`api.rs`).
//!
//! Series completion is decided from the index, not from one process's memory, so that it
//! works when several nodes share the database: every node scans for series whose last
//! instance arrived more than the quiet period ago, and the one whose claim (a single
//! conditional UPDATE) succeeds creates the jobs.

pub mod api;
pub mod jobs;
pub mod routing;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use crate::index::{Index, IndexError};
use jobs::{now_ms, JobQueue};
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
    /// Model name → version, read from the models folder's manifests.
    pub model_versions: HashMap<String, String>,
    pub max_attempts: i64,
}

pub struct AiService {
    pub index: Arc<dyn Index>,
    pub queue: JobQueue,
    pub settings: AiSettings,
    router: RwLock<Router>,
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
    /// configuration file's, else the defaults.
    pub async fn open(
        index: Arc<dyn Index>,
        settings: AiSettings,
    ) -> Result<Arc<AiService>, String> {
        let saved = index.setting(ROUTES_KEY).await.map_err(|e| e.to_string())?;
        let routes = match saved {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| format!("saved AI routes: {e}"))?
            }
            None => settings
                .routes
                .clone()
                .unwrap_or_else(routing::default_routes),
        };
        let router = Router::new(routes)?;
        info!(
            routes = router.routes().len(),
            models = ?settings.model_versions,
            quiet_secs = settings.quiet.as_secs_f64(),
            "AI jobs enabled"
        );
        Ok(Arc::new(AiService {
            queue: JobQueue::new(index.clone(), settings.max_attempts),
            index,
            settings,
            router: RwLock::new(router),
        }))
    }

    pub fn routes(&self) -> Vec<Route> {
        self.router.read().expect("router lock").routes()
    }

    /// Replaces the routes (admin API) and saves them in the index.
    pub async fn set_routes(&self, routes: Vec<Route>) -> Result<(), String> {
        let router = Router::new(routes.clone())?;
        let json = serde_json::to_string(&routes).map_err(|e| e.to_string())?;
        self.index
            .set_setting(ROUTES_KEY, &json)
            .await
            .map_err(|e| e.to_string())?;
        *self.router.write().expect("router lock") = router;
        Ok(())
    }

    fn model_version(&self, model: &str) -> String {
        self.settings
            .model_versions
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
        // arrival time is taken before the object is written) and for clocks of other nodes.
        const MARGIN_MS: i64 = 60_000;
        let since = match *cursor {
            Some(c) => c,
            None => {
                self.index
                    .latest_watched_arrival()
                    .await?
                    .unwrap_or_else(now_ms)
                    - MARGIN_MS
            }
        };
        let latest = self.index.watch_series_since(since).await?;
        if let Some(max) = latest {
            *cursor = Some(max - MARGIN_MS);
        } else if cursor.is_none() {
            *cursor = Some(since);
        }

        let now = now_ms();
        let quiet_ms = self.settings.quiet.as_millis() as i64;
        let due = self.index.quiet_series(now - quiet_ms).await?;
        let mut queued = 0;
        for (series_pk, last) in due {
            // claim it: of the nodes scanning, one wins
            if !self
                .index
                .claim_series(series_pk, last, last.max(now))
                .await?
            {
                continue;
            }
            queued += self.route(series_pk).await?;
        }
        Ok(queued)
    }

    /// Queues the models the routes select for a complete series.
    async fn route(&self, series_pk: i64) -> Result<usize, IndexError> {
        let Some(summary) = self.index.series_facts(series_pk).await? else {
            return Ok(0);
        };
        let (series, study) = (&summary.series_instance_uid, &summary.study_instance_uid);
        let models = self
            .router
            .read()
            .expect("router lock")
            .models_for(&summary);
        let mut queued = 0;
        for model in models {
            let version = self.model_version(&model);
            if let Some(id) = self.queue.enqueue(study, series, &model, &version).await? {
                info!(job = id, %series, %model, %version, "series complete: AI job queued");
                queued += 1;
            }
        }
        Ok(queued)
    }
}
