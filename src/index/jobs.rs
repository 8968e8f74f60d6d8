//! The AI job queue's statements (table `ai_jobs`); the queue's policy is in `crate::ai::jobs`.
//!
//! Every transition is one SQL statement, so it is atomic on both backends: SQLite runs it in
//! the single writer's transaction; PostgreSQL picks the next job with `FOR UPDATE SKIP
//! LOCKED`, so several nodes and many workers never lease the same job twice. A series'
//! jobs are queued in the transaction that claims it (`claim_series_with_jobs`).
//!
//! Every time (creation, lease expiry, retry delay, end) is the database's clock
//! (`{clock_ms}`), so that nodes whose clocks differ agree on when a lease has expired.

use std::sync::LazyLock;

use serde::Serialize;

use super::schema::Dialect;
use super::{Index, IndexError, Sql, SqlValue, Transaction};

/// A run of a model on a series, to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob<'a> {
    pub study_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    pub model: &'a str,
    pub model_version: &'a str,
}

impl NewJob<'_> {
    fn params(&self, max_attempts: i64) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(self.study_instance_uid.into()),
            SqlValue::Text(self.series_instance_uid.into()),
            SqlValue::Text(self.model.into()),
            SqlValue::Text(self.model_version.into()),
            SqlValue::Int(max_attempts),
        ]
    }
}

/// Queues a run ([`NewJob::params`]) unless one of the same model and version is queued or
/// running on the series; its run number follows the last one.
static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO ai_jobs ({cols})
         SELECT ?1, ?2, ?3, ?4,
                COALESCE((SELECT MAX(run) FROM ai_jobs
                          WHERE series_instance_uid = ?2 AND model = ?3 AND model_version = ?4), 0) + 1,
                'queued', 0, ?5, 0, '', 0, '', 'null', {{clock_ms}}, 0, 0
         WHERE NOT EXISTS (SELECT 1 FROM ai_jobs
                           WHERE series_instance_uid = ?2 AND model = ?3 AND model_version = ?4
                             AND state IN ('queued', 'running'))
         ON CONFLICT DO NOTHING
         RETURNING pk",
        cols = COLUMNS.replacen("pk, ", "", 1)
    )
});

/// Which jobs [`Index::jobs_matching`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    pub state: Option<&'a str>,
    pub study: Option<&'a str>,
    pub series: Option<&'a str>,
    pub limit: usize,
    pub offset: usize,
}

/// A job as the admin API and the workers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub model: String,
    pub model_version: String,
    pub run: i64,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub not_before_ms: i64,
    pub lease_owner: String,
    pub lease_expires_ms: i64,
    pub error: String,
    pub result: serde_json::Value,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

const COLUMNS: &str = "pk, study_instance_uid, series_instance_uid, model, model_version, run,
    state, attempts, max_attempts, not_before_ms, lease_owner, lease_expires_ms, error,
    result_json, created_at_ms, started_at_ms, finished_at_ms";

fn job_from_row(row: &[SqlValue]) -> Job {
    let t = |i: usize| row[i].as_str().unwrap_or_default().to_string();
    let n = |i: usize| row[i].as_i64().unwrap_or(0);
    Job {
        id: n(0),
        study_instance_uid: t(1),
        series_instance_uid: t(2),
        model: t(3),
        model_version: t(4),
        run: n(5),
        state: t(6),
        attempts: n(7),
        max_attempts: n(8),
        not_before_ms: n(9),
        lease_owner: t(10),
        lease_expires_ms: n(11),
        error: t(12),
        result: serde_json::from_str(&t(13)).unwrap_or(serde_json::Value::Null),
        created_at_ms: n(14),
        started_at_ms: n(15),
        finished_at_ms: n(16),
    }
}

impl dyn Index {
    /// Runs an UPDATE of one job; true when it applied, false when the job was not in the
    /// state the statement requires (e.g. no longer held by the worker).
    async fn update_job(&self, sql: &str, params: Vec<SqlValue>) -> Result<bool, IndexError> {
        let done = self.write(Sql::new(sql), params).await?;
        Ok(done.rows_affected == 1)
    }

    /// Queues a run of `model` on a series unless one is already queued or running; the run
    /// number follows the last one. Returns the new job's id.
    pub async fn enqueue_job(
        &self,
        job: &NewJob<'_>,
        max_attempts: i64,
    ) -> Result<Option<i64>, IndexError> {
        let done = self
            .write(Sql::new(&ENQUEUE), job.params(max_attempts))
            .await?;
        Ok(done.rows.first().and_then(|r| r[0].as_i64()))
    }

    /// Series completion, in one transaction: claims a quiet series for routing (of the
    /// nodes scanning, one wins: the claim is one conditional UPDATE of its watch row, which
    /// must still show the arrival `last_received_ms` the caller saw) and queues its `jobs`
    /// (the models its routes chose from its facts, read before). None when another node
    /// claimed it first or an instance arrived since; else the new jobs' ids (None for a run
    /// already queued or running). A crash cannot leave the series claimed without its jobs.
    pub async fn claim_series_with_jobs(
        &self,
        series_pk: i64,
        last_received_ms: i64,
        jobs: &[NewJob<'_>],
        max_attempts: i64,
    ) -> Result<Option<Vec<Option<i64>>>, IndexError> {
        let mut tx = Transaction::new().guarded().then(
            Sql::new(
                "UPDATE ai_series_watch
                 SET routed_at_ms = CASE WHEN {clock_ms} > last_received_ms THEN {clock_ms}
                                         ELSE last_received_ms END
                 WHERE series_pk = ?1 AND last_received_ms = ?2
                   AND routed_at_ms < last_received_ms",
            ),
            vec![SqlValue::Int(series_pk), SqlValue::Int(last_received_ms)],
        );
        for job in jobs {
            tx = tx.then(Sql::new(&ENQUEUE), job.params(max_attempts));
        }
        let Some(done) = self.transact(tx).await? else {
            return Ok(None);
        };
        Ok(Some(
            done.iter()
                .skip(1)
                .map(|e| e.rows.first().and_then(|r| r[0].as_i64()))
                .collect(),
        ))
    }

    /// Gives the next ready job for one of `models` (any when empty) to `worker` until
    /// `lease_until_ms`: a queued job whose delay is over, or a running one whose lease expired.
    pub async fn lease_job(
        &self,
        worker: &str,
        models: &[String],
        lease_ms: i64,
    ) -> Result<Option<Job>, IndexError> {
        let mut params = vec![SqlValue::Text(worker.into()), SqlValue::Int(lease_ms)];
        let model_filter = if models.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = models
                .iter()
                .map(|m| {
                    params.push(SqlValue::Text(m.clone()));
                    format!("?{}", params.len())
                })
                .collect();
            format!("AND model IN ({})", list.join(", "))
        };
        let lock = match self.dialect() {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE ai_jobs SET state = 'running', lease_owner = ?1,
                lease_expires_ms = {{clock_ms}} + ?2,
                attempts = attempts + 1, started_at_ms = {{clock_ms}}, error = CASE WHEN state = 'running'
                THEN 'lease of ' || lease_owner || ' expired; leased again' ELSE error END
             WHERE pk = (SELECT pk FROM ai_jobs
                         WHERE ((state = 'queued' AND not_before_ms <= {{clock_ms}})
                                OR (state = 'running' AND lease_expires_ms < {{clock_ms}}))
                           AND attempts < max_attempts {model_filter}
                         ORDER BY pk LIMIT 1 {lock})
             RETURNING {COLUMNS}"
        );
        let done = self.write(Sql::new(&sql), params).await?;
        Ok(done.rows.first().map(|r| job_from_row(r)))
    }

    /// Running jobs whose lease expired on their last attempt are dead.
    pub async fn bury_expired_jobs(&self) -> Result<(), IndexError> {
        self.write(
            Sql::new(
                "UPDATE ai_jobs SET state = 'dead', finished_at_ms = {clock_ms},
                    error = 'lease of ' || lease_owner || ' expired on the last attempt'
                 WHERE state = 'running' AND lease_expires_ms < {clock_ms}
                   AND attempts >= max_attempts",
            ),
            vec![],
        )
        .await?;
        Ok(())
    }

    /// Extends a lease; false when `worker` no longer holds it.
    pub async fn extend_job_lease(
        &self,
        id: i64,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET lease_expires_ms = {clock_ms} + ?3
             WHERE pk = ?1 AND lease_owner = ?2 AND state = 'running'",
            vec![
                SqlValue::Int(id),
                SqlValue::Text(worker.into()),
                SqlValue::Int(lease_ms),
            ],
        )
        .await
    }

    /// Records success with the worker's result.
    pub async fn complete_job(
        &self,
        id: i64,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET state = 'succeeded', result_json = ?3, finished_at_ms = {clock_ms},
                error = '', lease_expires_ms = 0
             WHERE pk = ?1 AND lease_owner = ?2 AND state = 'running'",
            vec![
                SqlValue::Int(id),
                SqlValue::Text(worker.into()),
                SqlValue::Text(result.to_string()),
            ],
        )
        .await
    }

    /// Records a failure: a retryable one goes back to the queue after a delay growing with
    /// the attempts, unless that was the last attempt (then `dead`); a permanent one is
    /// `failed` at once.
    pub async fn fail_job(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retryable: bool,
    ) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET
                state = CASE WHEN CAST(?4 AS BIGINT) = 0 THEN 'failed'
                             WHEN attempts >= max_attempts THEN 'dead'
                             ELSE 'queued' END,
                not_before_ms = {clock_ms} + CASE WHEN attempts >= 6 THEN 300000
                                          ELSE 5000 * (CASE attempts WHEN 1 THEN 1 WHEN 2 THEN 2
                                               WHEN 3 THEN 4 WHEN 4 THEN 8 ELSE 16 END) END,
                finished_at_ms = CASE WHEN CAST(?4 AS BIGINT) = 0 OR attempts >= max_attempts
                                      THEN {clock_ms} ELSE 0 END,
                error = ?3, lease_owner = '', lease_expires_ms = 0
             WHERE pk = ?1 AND lease_owner = ?2 AND state = 'running'",
            vec![
                SqlValue::Int(id),
                SqlValue::Text(worker.into()),
                SqlValue::Text(error.into()),
                SqlValue::Int(retryable as i64),
            ],
        )
        .await
    }

    /// Gives a running job back without counting the attempt: queued again at once.
    pub async fn release_job(&self, id: i64, worker: &str) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET state = 'queued', attempts = attempts - 1, not_before_ms = 0,
                error = 'given back by ' || lease_owner || ' (shutting down)', lease_owner = '',
                lease_expires_ms = 0
             WHERE pk = ?1 AND lease_owner = ?2 AND state = 'running'",
            vec![SqlValue::Int(id), SqlValue::Text(worker.into())],
        )
        .await
    }

    /// Cancels a queued or running job.
    pub async fn cancel_job(&self, id: i64) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET state = 'cancelled', finished_at_ms = {clock_ms}, lease_owner = '',
                lease_expires_ms = 0, error = 'cancelled by an administrator'
             WHERE pk = ?1 AND state IN ('queued', 'running')",
            vec![SqlValue::Int(id)],
        )
        .await
    }

    /// Puts a failed, dead or cancelled job back in the queue with a fresh set of attempts.
    pub async fn retry_job(&self, id: i64) -> Result<bool, IndexError> {
        self.update_job(
            "UPDATE ai_jobs SET state = 'queued', attempts = 0, not_before_ms = 0,
                finished_at_ms = 0, lease_owner = '', lease_expires_ms = 0
             WHERE pk = ?1 AND state IN ('failed', 'dead', 'cancelled')",
            vec![SqlValue::Int(id)],
        )
        .await
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, IndexError> {
        let sql = format!("SELECT {COLUMNS} FROM ai_jobs WHERE pk = ?1");
        let rows = self.fetch(Sql::new(&sql), vec![SqlValue::Int(id)]).await?;
        Ok(rows.first().map(|r| job_from_row(r)))
    }

    /// Jobs, newest first, optionally of one state and/or one series.
    pub async fn jobs(
        &self,
        state: Option<&str>,
        series: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, IndexError> {
        self.jobs_matching(&JobFilter {
            state,
            series,
            limit,
            ..Default::default()
        })
        .await
    }

    /// Jobs matching `filter`, newest first.
    pub async fn jobs_matching(&self, filter: &JobFilter<'_>) -> Result<Vec<Job>, IndexError> {
        let mut conditions = vec!["1 = 1".to_string()];
        let mut params = Vec::new();
        for (column, value) in [
            ("state", filter.state),
            ("study_instance_uid", filter.study),
            ("series_instance_uid", filter.series),
        ] {
            if let Some(v) = value {
                params.push(SqlValue::Text(v.into()));
                conditions.push(format!("{column} = ?{}", params.len()));
            }
        }
        params.push(SqlValue::Int(filter.limit.clamp(1, 10_000) as i64));
        params.push(SqlValue::Int(filter.offset.min(i64::MAX as usize) as i64));
        let sql = format!(
            "SELECT {COLUMNS} FROM ai_jobs WHERE {} ORDER BY pk DESC LIMIT ?{} OFFSET ?{}",
            conditions.join(" AND "),
            params.len() - 1,
            params.len()
        );
        let rows = self.fetch(Sql::new(&sql), params).await?;
        Ok(rows.iter().map(|r| job_from_row(r)).collect())
    }

    /// How many jobs each (model, state) has (the `pacs_ai_jobs` gauge, read at scrape time).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, IndexError> {
        let rows = self
            .fetch(
                Sql::new("SELECT model, state, COUNT(*) FROM ai_jobs GROUP BY model, state"),
                Vec::new(),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let t = |i: usize| r[i].as_str().unwrap_or_default().to_string();
                (t(0), t(1), r[2].as_i64().unwrap_or(0))
            })
            .collect())
    }
}
