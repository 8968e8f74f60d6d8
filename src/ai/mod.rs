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

use crate::index::schema::int_param;
use crate::index::{Index, IndexError, SqlValue};
use jobs::{now_ms, JobQueue};
use routing::{Route, Router, SeriesFacts};

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
        let saved = index
            .select(
                &index
                    .dialect()
                    .render("SELECT value FROM node_settings WHERE key = ?1"),
                &[ROUTES_KEY.to_string()],
            )
            .await
            .map_err(|e| e.to_string())?;
        let routes = match saved.first().and_then(|r| r[0].as_str()) {
            Some(json) => {
                serde_json::from_str(json).map_err(|e| format!("saved AI routes: {e}"))?
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
        let sql = self.index.dialect().render(
            "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        );
        self.index
            .execute(
                &sql,
                vec![SqlValue::Text(ROUTES_KEY.into()), SqlValue::Text(json)],
            )
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
        let d = self.index.dialect();
        // A margin for instances whose transaction committed after a later one's (their
        // arrival time is taken before the object is written) and for clocks of other nodes.
        const MARGIN_MS: i64 = 60_000;
        let since = match *cursor {
            Some(c) => c,
            None => {
                let rows = self
                    .index
                    .select(
                        &d.render("SELECT MAX(last_received_ms) FROM ai_series_watch"),
                        &[],
                    )
                    .await?;
                rows.first()
                    .and_then(|r| r[0].as_i64())
                    .unwrap_or_else(now_ms)
                    - MARGIN_MS
            }
        };
        let track = d.render(
            "INSERT INTO ai_series_watch (series_pk, last_received_ms, routed_at_ms)
             SELECT series_pk, MAX(received_at_ms), 0 FROM instances
             WHERE received_at_ms > ?1 GROUP BY series_pk
             ON CONFLICT (series_pk) DO UPDATE SET last_received_ms = excluded.last_received_ms
             WHERE excluded.last_received_ms > ai_series_watch.last_received_ms",
        );
        self.index
            .execute(&track, vec![SqlValue::Int(since)])
            .await?;
        let latest = self
            .index
            .select(
                &d.render(&format!(
                    "SELECT MAX(received_at_ms) FROM instances WHERE received_at_ms > {}",
                    int_param(1)
                )),
                &[since.to_string()],
            )
            .await?;
        if let Some(max) = latest.first().and_then(|r| r[0].as_i64()) {
            *cursor = Some(max - MARGIN_MS);
        } else if cursor.is_none() {
            *cursor = Some(since);
        }

        let now = now_ms();
        let quiet_ms = self.settings.quiet.as_millis() as i64;
        let due = self
            .index
            .select(
                &d.render(&format!(
                    "SELECT w.series_pk, w.last_received_ms FROM ai_series_watch w
                     WHERE w.routed_at_ms < w.last_received_ms AND w.last_received_ms < {}",
                    int_param(1)
                )),
                &[(now - quiet_ms).to_string()],
            )
            .await?;
        let mut queued = 0;
        for row in due {
            let (Some(series_pk), Some(last)) = (row[0].as_i64(), row[1].as_i64()) else {
                continue;
            };
            // claim it: of the nodes scanning, one wins
            let claim = d.render(
                "UPDATE ai_series_watch SET routed_at_ms = ?3
                 WHERE series_pk = ?1 AND last_received_ms = ?2 AND routed_at_ms < last_received_ms",
            );
            let done = self
                .index
                .execute(
                    &claim,
                    vec![
                        SqlValue::Int(series_pk),
                        SqlValue::Int(last),
                        SqlValue::Int(last.max(now)),
                    ],
                )
                .await?;
            if done.rows_affected != 1 {
                continue;
            }
            queued += self.route(series_pk).await?;
        }
        Ok(queued)
    }

    /// Queues the models the routes select for a complete series.
    async fn route(&self, series_pk: i64) -> Result<usize, IndexError> {
        let d = self.index.dialect();
        let rows = self
            .index
            .select(
                &d.render(&format!(
                    "SELECT se.series_instance_uid, st.study_instance_uid, se.modality,
                            se.body_part_examined, se.series_description
                     FROM series se JOIN studies st ON st.pk = se.study_pk WHERE se.pk = {}",
                    int_param(1)
                )),
                &[series_pk.to_string()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(0);
        };
        let t = |i: usize| row[i].as_str().unwrap_or_default().to_string();
        let (series, study) = (t(0), t(1));
        let distinct = self
            .index
            .select(
                &d.render(&format!(
                    "SELECT DISTINCT sop_class_uid, source_ae FROM instances WHERE series_pk = {}",
                    int_param(1)
                )),
                &[series_pk.to_string()],
            )
            .await?;
        let mut facts = SeriesFacts {
            modality: t(2),
            body_part: t(3),
            series_description: t(4),
            ..Default::default()
        };
        for r in &distinct {
            let class = r[0].as_str().unwrap_or_default().to_string();
            let ae = r[1].as_str().unwrap_or_default().to_string();
            if !facts.sop_classes.contains(&class) {
                facts.sop_classes.push(class);
            }
            if !facts.calling_aes.contains(&ae) {
                facts.calling_aes.push(ae);
            }
        }
        let models = self.router.read().expect("router lock").models_for(&facts);
        let mut queued = 0;
        for model in models {
            let version = self.model_version(&model);
            if let Some(id) = self
                .queue
                .enqueue(&study, &series, &model, &version)
                .await?
            {
                info!(job = id, %series, %model, %version, "series complete: AI job queued");
                queued += 1;
            }
        }
        Ok(queued)
    }
}
