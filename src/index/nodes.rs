//! The nodes sharing the index (table `cluster_nodes`, each node's heartbeat; `crate::nodes`),
//! and the aggregates the console's node and AI pages read: storage used, instances received
//! per hour, AI jobs per model. Every time is the database's clock.

use std::collections::{BTreeMap, BTreeSet};

use super::{Index, IndexResult, Sql, SqlValue};

const HOUR_MS: i64 = 3_600_000;

/// What a node says of itself at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    pub node_id: String,
    pub ae_title: String,
    pub version: String,
    pub http_address: String,
    pub ready: bool,
}

/// A node as the table has it, with the database's clock at the time of reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub beat: NodeBeat,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
    pub now_ms: i64,
}

/// One model's jobs: counts per state, versions seen, and the enqueue-to-done times of its
/// recent successful jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelJobs {
    pub states: BTreeMap<String, i64>,
    pub versions: BTreeSet<String>,
    /// Milliseconds, ascending.
    pub latencies_ms: Vec<i64>,
}

impl dyn Index {
    /// Records a node's heartbeat. `first`: the node just started (its start time is now, and
    /// rows of nodes unseen for a day are removed).
    pub async fn node_heartbeat(&self, beat: &NodeBeat, first: bool) -> IndexResult<()> {
        let started = if first {
            ", started_at_ms = excluded.started_at_ms"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO cluster_nodes (node_id, ae_title, version, http_address, ready,
                                        started_at_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, {{clock_ms}}, {{clock_ms}})
             ON CONFLICT (node_id) DO UPDATE SET ae_title = excluded.ae_title,
                version = excluded.version, http_address = excluded.http_address,
                ready = excluded.ready, last_seen_ms = excluded.last_seen_ms{started}"
        );
        self.write(
            Sql::new(&sql),
            vec![
                SqlValue::Text(beat.node_id.clone()),
                SqlValue::Text(beat.ae_title.clone()),
                SqlValue::Text(beat.version.clone()),
                SqlValue::Text(beat.http_address.clone()),
                SqlValue::Int(beat.ready as i64),
            ],
        )
        .await?;
        if first {
            self.write(
                Sql::new("DELETE FROM cluster_nodes WHERE last_seen_ms < {clock_ms} - ?1"),
                vec![SqlValue::Int(24 * HOUR_MS)],
            )
            .await?;
        }
        Ok(())
    }

    /// The nodes seen in the last `within_ms`, by node id.
    pub async fn live_nodes(&self, within_ms: i64) -> IndexResult<Vec<NodeRow>> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT node_id, ae_title, version, http_address, ready, started_at_ms,
                            last_seen_ms, {clock_ms}
                     FROM cluster_nodes WHERE last_seen_ms >= {clock_ms} - ?1 ORDER BY node_id",
                ),
                vec![SqlValue::Int(within_ms)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let t = |i: usize| r[i].as_str().unwrap_or_default().to_string();
                let n = |i: usize| r[i].as_i64().unwrap_or(0);
                NodeRow {
                    beat: NodeBeat {
                        node_id: t(0),
                        ae_title: t(1),
                        version: t(2),
                        http_address: t(3),
                        ready: n(4) != 0,
                    },
                    started_at_ms: n(5),
                    last_seen_ms: n(6),
                    now_ms: n(7),
                }
            })
            .collect())
    }

    /// The bytes of every indexed instance.
    pub async fn storage_bytes(&self) -> IndexResult<i64> {
        let rows = self
            .fetch(
                Sql::new("SELECT CAST(COALESCE(SUM(size_bytes), 0) AS {big}) FROM instances"),
                vec![],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
    }

    /// Instances received in each of the last `hours` hours (the current one last, possibly
    /// 0): each hour's start (ms since the epoch) and its count.
    pub async fn received_per_hour(&self, hours: i64) -> IndexResult<Vec<(i64, i64)>> {
        let now = self.clock_ms().await?;
        let first = (now / HOUR_MS - (hours - 1).max(0)) * HOUR_MS;
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT received_at_ms / 3600000, COUNT(*) FROM instances
                     WHERE received_at_ms >= ?1 GROUP BY received_at_ms / 3600000",
                ),
                vec![SqlValue::Int(first)],
            )
            .await?;
        let counts: BTreeMap<i64, i64> = rows
            .iter()
            .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?)))
            .collect();
        Ok((0..hours.max(1))
            .map(|i| {
                let start = first + i * HOUR_MS;
                (start, counts.get(&(start / HOUR_MS)).copied().unwrap_or(0))
            })
            .collect())
    }

    /// Each model's jobs: counts per state, every version it ran as, and the enqueue-to-done
    /// times of the jobs that succeeded in the last `window_ms`.
    pub async fn model_jobs(&self, window_ms: i64) -> IndexResult<BTreeMap<String, ModelJobs>> {
        let mut out: BTreeMap<String, ModelJobs> = BTreeMap::new();
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT model, model_version, state, COUNT(*) FROM ai_jobs
                     GROUP BY model, model_version, state",
                ),
                vec![],
            )
            .await?;
        for r in &rows {
            let (Some(model), Some(version), Some(state), Some(n)) =
                (r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_i64())
            else {
                continue;
            };
            let m = out.entry(model.to_string()).or_default();
            m.versions.insert(version.to_string());
            *m.states.entry(state.to_string()).or_default() += n;
        }
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT model, finished_at_ms - created_at_ms FROM ai_jobs
                     WHERE state = 'succeeded' AND finished_at_ms >= {clock_ms} - ?1
                     ORDER BY 2",
                ),
                vec![SqlValue::Int(window_ms)],
            )
            .await?;
        for r in &rows {
            if let (Some(model), Some(ms)) = (r[0].as_str(), r[1].as_i64()) {
                out.entry(model.to_string())
                    .or_default()
                    .latencies_ms
                    .push(ms);
            }
        }
        Ok(out)
    }
}
