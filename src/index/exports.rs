//! The de-identified export jobs' statements (table `exports`, migration 8) and the
//! re-identification table (`reidentification`); the policy is in `crate::export`.

use serde::Serialize;

use super::{Index, IndexResult, Sql, SqlValue};

/// An export job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportRow {
    pub id: i64,
    pub state: String,
    pub request: serde_json::Value,
    pub requested_by: String,
    pub roles: Vec<String>,
    pub address: String,
    pub destination: String,
    pub instances_total: i64,
    pub instances_done: i64,
    pub instances_failed: i64,
    pub bytes_done: i64,
    pub errors: serde_json::Value,
    pub error: String,
    #[serde(skip)]
    pub archive_path: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

/// One row of the re-identification table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReidentificationRow {
    pub kind: String,
    pub original: String,
    pub pseudonym: String,
    pub first_export: i64,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "pk, state, request_json, requested_by, roles, address, destination,
    instances_total, instances_done, instances_failed, bytes_done, errors_json, error,
    archive_path, created_at_ms, started_at_ms, finished_at_ms";

fn row(r: &[SqlValue]) -> ExportRow {
    let t = |i: usize| r[i].as_str().unwrap_or_default().to_string();
    let n = |i: usize| r[i].as_i64().unwrap_or(0);
    ExportRow {
        id: n(0),
        state: t(1),
        request: serde_json::from_str(&t(2)).unwrap_or(serde_json::Value::Null),
        requested_by: t(3),
        roles: t(4)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        address: t(5),
        destination: t(6),
        instances_total: n(7),
        instances_done: n(8),
        instances_failed: n(9),
        bytes_done: n(10),
        errors: serde_json::from_str(&t(11)).unwrap_or(serde_json::Value::Null),
        error: t(12),
        archive_path: t(13),
        created_at_ms: n(14),
        started_at_ms: n(15),
        finished_at_ms: n(16),
    }
}

impl dyn Index {
    /// Queues an export; its id.
    pub async fn insert_export(
        &self,
        request: &serde_json::Value,
        requested_by: &str,
        roles: &[String],
        address: &str,
        destination: &str,
        now_ms: i64,
    ) -> IndexResult<i64> {
        let done = self
            .write(
                Sql::new(
                    "INSERT INTO exports (state, request_json, requested_by, roles, address,
                        destination, created_at_ms)
                     VALUES ('queued', ?1, ?2, ?3, ?4, ?5, ?6) RETURNING pk",
                ),
                vec![
                    SqlValue::Text(request.to_string()),
                    SqlValue::Text(requested_by.into()),
                    SqlValue::Text(roles.join(",")),
                    SqlValue::Text(address.into()),
                    SqlValue::Text(destination.into()),
                    SqlValue::Int(now_ms),
                ],
            )
            .await?;
        Ok(done.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
    }

    pub async fn export(&self, id: i64) -> IndexResult<Option<ExportRow>> {
        let sql = format!("SELECT {COLUMNS} FROM exports WHERE pk = ?1");
        let rows = self.fetch(Sql::new(&sql), vec![SqlValue::Int(id)]).await?;
        Ok(rows.first().map(|r| row(r)))
    }

    /// Exports, newest first.
    pub async fn exports(&self, limit: usize) -> IndexResult<Vec<ExportRow>> {
        let sql = format!("SELECT {COLUMNS} FROM exports ORDER BY pk DESC LIMIT ?1");
        let rows = self
            .fetch(
                Sql::new(&sql),
                vec![SqlValue::Int(limit.clamp(1, 10_000) as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| row(r)).collect())
    }

    /// A queued export starts; false when it is no longer queued (cancelled).
    pub async fn start_export(&self, id: i64, total: i64, now_ms: i64) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE exports SET state = 'running', instances_total = ?2, started_at_ms = ?3
                     WHERE pk = ?1 AND state = 'queued'",
                ),
                vec![
                    SqlValue::Int(id),
                    SqlValue::Int(total),
                    SqlValue::Int(now_ms),
                ],
            )
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Records progress of a running export; false when it is no longer running (cancelled).
    pub async fn export_progress(
        &self,
        id: i64,
        done: i64,
        failed: i64,
        bytes: i64,
        errors: &serde_json::Value,
    ) -> IndexResult<bool> {
        let written = self
            .write(
                Sql::new(
                    "UPDATE exports SET instances_done = ?2, instances_failed = ?3, bytes_done = ?4,
                        errors_json = ?5
                     WHERE pk = ?1 AND state = 'running'",
                ),
                vec![
                    SqlValue::Int(id),
                    SqlValue::Int(done),
                    SqlValue::Int(failed),
                    SqlValue::Int(bytes),
                    SqlValue::Text(errors.to_string()),
                ],
            )
            .await?;
        Ok(written.rows_affected == 1)
    }

    /// Ends a running (or queued) export as succeeded or failed; false if it was cancelled.
    pub async fn finish_export(
        &self,
        id: i64,
        state: &str,
        error: &str,
        archive_path: &str,
        now_ms: i64,
    ) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE exports SET state = ?2, error = ?3, archive_path = ?4, finished_at_ms = ?5
                     WHERE pk = ?1 AND state IN ('queued', 'running')",
                ),
                vec![
                    SqlValue::Int(id),
                    SqlValue::Text(state.into()),
                    SqlValue::Text(error.into()),
                    SqlValue::Text(archive_path.into()),
                    SqlValue::Int(now_ms),
                ],
            )
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Cancels a queued or running export.
    pub async fn cancel_export(&self, id: i64, now_ms: i64) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE exports SET state = 'cancelled', finished_at_ms = ?2,
                        error = 'cancelled'
                     WHERE pk = ?1 AND state IN ('queued', 'running')",
                ),
                vec![SqlValue::Int(id), SqlValue::Int(now_ms)],
            )
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// At start: exports left running by a stopped node failed (their partial output is not
    /// trusted); the ids of the queued ones, to run.
    pub async fn recover_exports(&self, now_ms: i64) -> IndexResult<Vec<i64>> {
        self.write(
            Sql::new(
                "UPDATE exports SET state = 'failed', finished_at_ms = ?1,
                    error = 'interrupted: the node stopped while the export ran'
                 WHERE state = 'running'",
            ),
            vec![SqlValue::Int(now_ms)],
        )
        .await?;
        let rows = self
            .fetch(
                Sql::new("SELECT pk FROM exports WHERE state = 'queued' ORDER BY pk"),
                vec![],
            )
            .await?;
        Ok(rows.iter().filter_map(|r| r[0].as_i64()).collect())
    }

    /// Records original -> pseudonym, once (the first export that made it).
    pub async fn put_reidentification(
        &self,
        kind: &str,
        original: &str,
        pseudonym: &str,
        export: i64,
        now_ms: i64,
    ) -> IndexResult<()> {
        self.write(
            Sql::new(
                "INSERT INTO reidentification (kind, original, pseudonym, first_export,
                    created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, original) DO NOTHING",
            ),
            vec![
                SqlValue::Text(kind.into()),
                SqlValue::Text(original.into()),
                SqlValue::Text(pseudonym.into()),
                SqlValue::Int(export),
                SqlValue::Int(now_ms),
            ],
        )
        .await?;
        Ok(())
    }

    /// The re-identification table, optionally of one pseudonym.
    pub async fn reidentifications(
        &self,
        pseudonym: Option<&str>,
    ) -> IndexResult<Vec<ReidentificationRow>> {
        let (filter, params) = match pseudonym {
            Some(p) => ("WHERE pseudonym = ?1", vec![SqlValue::Text(p.into())]),
            None => ("", vec![]),
        };
        let sql = format!(
            "SELECT kind, original, pseudonym, first_export, created_at_ms FROM reidentification
             {filter} ORDER BY created_at_ms, kind, original"
        );
        let rows = self.fetch(Sql::new(&sql), params).await?;
        Ok(rows
            .iter()
            .map(|r| ReidentificationRow {
                kind: r[0].as_str().unwrap_or_default().into(),
                original: r[1].as_str().unwrap_or_default().into(),
                pseudonym: r[2].as_str().unwrap_or_default().into(),
                first_export: r[3].as_i64().unwrap_or(0),
                created_at_ms: r[4].as_i64().unwrap_or(0),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn deid_exports_move_through_their_states_and_recover_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::open(&dir.path().join("i.sqlite").to_string_lossy())
            .await
            .unwrap();
        let request = serde_json::json!({"studies": ["1.2.3"]});
        let roles = ["deidentify".to_string()];
        let a = index
            .insert_export(&request, "user:rita", &roles, "127.0.0.1", "zip", 1)
            .await
            .unwrap();
        let b = index
            .insert_export(&request, "user:rita", &roles, "127.0.0.1", "zip", 2)
            .await
            .unwrap();
        let c = index
            .insert_export(&request, "user:rita", &roles, "127.0.0.1", "zip", 3)
            .await
            .unwrap();
        assert!(index.start_export(a, 10, 5).await.unwrap());
        assert!(!index.start_export(a, 10, 5).await.unwrap());
        assert!(index
            .export_progress(a, 3, 1, 300, &serde_json::json!([{"error": "x"}]))
            .await
            .unwrap());
        // cancelled: progress and the end are refused
        assert!(index.cancel_export(c, 6).await.unwrap());
        assert!(!index.start_export(c, 1, 7).await.unwrap());
        assert!(!index
            .finish_export(c, "succeeded", "", "", 8)
            .await
            .unwrap());
        assert!(!index.cancel_export(c, 9).await.unwrap());
        // a restart: the running one failed, the queued one to run
        assert_eq!(index.recover_exports(10).await.unwrap(), vec![b]);
        let row = index.export(a).await.unwrap().unwrap();
        assert_eq!(row.state, "failed");
        assert!(row.error.contains("interrupted"));
        assert_eq!(
            (row.instances_done, row.instances_failed, row.bytes_done),
            (3, 1, 300)
        );
        assert_eq!(row.roles, roles);
        assert_eq!(index.export(c).await.unwrap().unwrap().state, "cancelled");
        assert_eq!(index.exports(10).await.unwrap().len(), 3);
        // the re-identification table keeps the first pseudonym
        index
            .put_reidentification("patient_id", "MRN1", "PSN1", a, 1)
            .await
            .unwrap();
        index
            .put_reidentification("patient_id", "MRN1", "PSN2", b, 2)
            .await
            .unwrap();
        let rows = index.reidentifications(None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].pseudonym.as_str(), rows[0].first_export),
            ("PSN1", a)
        );
        assert_eq!(
            index.reidentifications(Some("PSN9")).await.unwrap().len(),
            0
        );
    }
}
