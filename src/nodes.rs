//! The nodes sharing the index: each node heartbeats into the `cluster_nodes` table (the
//! database's clock, so that nodes whose clocks differ agree) every [`HEARTBEAT`], with its
//! version, address and readiness; `GET /api/nodes` lists the nodes seen in the last
//! [`LIVE_WITHIN`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pacs_dicomweb::HttpError;
use serde_json::json;

use crate::index::nodes::NodeBeat;
use crate::index::Index;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Nodes unseen for longer are not listed.
pub const LIVE_WITHIN: Duration = Duration::from_secs(60);

pub struct Nodes {
    index: Arc<dyn Index>,
    /// This node's row.
    beat: std::sync::Mutex<NodeBeat>,
    ops: Option<Arc<crate::ops::Ops>>,
}

/// The machine's name (Linux), for node ids and addresses; "localhost" when unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

impl Nodes {
    /// This node, listening for HTTP on `http` (`public_url` when set is its address): its id
    /// is host and port, so that a restarted node keeps its row.
    pub fn new(
        index: Arc<dyn Index>,
        ae_title: &str,
        http: std::net::SocketAddr,
        public_url: Option<&str>,
        ops: Option<Arc<crate::ops::Ops>>,
    ) -> Arc<Nodes> {
        let host = if http.ip().is_unspecified() {
            hostname()
        } else {
            http.ip().to_string()
        };
        let address = match public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{host}:{}", http.port()),
        };
        Arc::new(Nodes {
            index,
            beat: std::sync::Mutex::new(NodeBeat {
                node_id: format!("{}:{}", hostname(), http.port()),
                ae_title: ae_title.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                http_address: address,
                ready: false,
            }),
            ops,
        })
    }

    pub fn node_id(&self) -> String {
        self.beat.lock().expect("beat lock").node_id.clone()
    }

    async fn beat(&self, first: bool) {
        let ready = match &self.ops {
            Some(ops) => ops.readiness().await.is_ok(),
            None => true,
        };
        let beat = {
            let mut b = self.beat.lock().expect("beat lock");
            b.ready = ready;
            b.clone()
        };
        if let Err(e) = self.index.node_heartbeat(&beat, first).await {
            tracing::warn!(error = %e, "node heartbeat not recorded");
        }
    }

    /// Heartbeats until the process ends (the first one now).
    pub fn spawn_heartbeat(self: &Arc<Self>) {
        let nodes = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(n) = nodes.upgrade() else { return };
                n.beat(first).await;
                first = false;
                drop(n);
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }
}

pub fn router(nodes: Arc<Nodes>) -> Router {
    Router::new()
        .route("/api/nodes", get(list))
        .with_state(nodes)
}

/// `GET /api/nodes`.
async fn list(State(nodes): State<Arc<Nodes>>) -> Response {
    let rows = match nodes.index.live_nodes(LIVE_WITHIN.as_millis() as i64).await {
        Ok(rows) => rows,
        Err(e) => return HttpError::unavailable(e.to_string()).into_response(),
    };
    let me = nodes.node_id();
    let time = crate::audit::xml::date_time;
    let out: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "node_id": r.beat.node_id,
                "ae_title": r.beat.ae_title,
                "version": r.beat.version,
                "started_at": time(r.started_at_ms),
                "last_seen": time(r.last_seen_ms),
                "uptime_seconds": (r.now_ms - r.started_at_ms).max(0) / 1000,
                "http_address": r.beat.http_address,
                "self": r.beat.node_id == me,
                "ready": r.beat.ready,
            })
        })
        .collect();
    Json(out).into_response()
}
