//! The durable AI job queue, in the index (table `ai_jobs`, statements in
//! `crate::index::jobs`).
//!
//! States: `queued` → `running` (leased by a worker until `lease_expires_ms`, extended by
//! heartbeats) → `succeeded`; or `failed` (the series cannot be analysed: not retried); or back
//! to `queued` after a retryable failure or an expired lease, with a growing delay, until
//! `max_attempts`, then `dead`. An administrator may `cancel` a queued or running job, or
//! `retry` a failed, dead or cancelled one. Every time is the database's clock, so that nodes
//! sharing it agree on when a lease expired.

use std::sync::Arc;

pub use crate::index::jobs::{Job, NewJob};
use crate::index::{Index, IndexError};

pub struct JobQueue {
    index: Arc<dyn Index>,
    pub max_attempts: i64,
}

impl JobQueue {
    pub fn new(index: Arc<dyn Index>, max_attempts: i64) -> Self {
        JobQueue {
            index,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Queues a run of a model on a series unless one is already queued or running; the run
    /// number follows the last one. Returns the new job's id.
    pub async fn enqueue(&self, job: &NewJob<'_>) -> Result<Option<i64>, IndexError> {
        self.index.enqueue_job(job, self.max_attempts).await
    }

    /// Gives the next ready job for one of `models` to `worker` for `lease_ms`: a queued job
    /// whose delay is over, or a running one whose lease expired (its worker died).
    pub async fn lease(
        &self,
        worker: &str,
        models: &[String],
        lease_ms: i64,
    ) -> Result<Option<Job>, IndexError> {
        // Running jobs whose lease expired on their last attempt are dead.
        self.index.bury_expired_jobs().await?;
        self.index.lease_job(worker, models, lease_ms).await
    }

    /// Extends the lease; false when the worker no longer holds it (expired and re-leased,
    /// or cancelled): it must stop.
    pub async fn heartbeat(
        &self,
        id: i64,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, IndexError> {
        self.index.extend_job_lease(id, worker, lease_ms).await
    }

    /// Records success with the worker's result (what it stored, its timings).
    pub async fn complete(
        &self,
        id: i64,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, IndexError> {
        self.index.complete_job(id, worker, result).await
    }

    /// Records a failure. A retryable one (network, a node restart) goes back to the queue
    /// after a delay, unless that was the last attempt (then `dead`); a permanent one (the
    /// series cannot be analysed) is `failed` at once.
    pub async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retryable: bool,
    ) -> Result<bool, IndexError> {
        let error: String = error.chars().take(4000).collect();
        self.index.fail_job(id, worker, &error, retryable).await
    }

    /// Gives a running job back without counting the attempt (a worker shutting down before
    /// it could finish): it is queued again for any worker at once.
    pub async fn release(&self, id: i64, worker: &str) -> Result<bool, IndexError> {
        self.index.release_job(id, worker).await
    }

    /// Cancels a queued or running job (its worker learns at its next heartbeat).
    pub async fn cancel(&self, id: i64) -> Result<bool, IndexError> {
        self.index.cancel_job(id).await
    }

    /// Puts a failed, dead or cancelled job back in the queue with a fresh set of attempts.
    pub async fn retry(&self, id: i64) -> Result<bool, IndexError> {
        self.index.retry_job(id).await
    }

    pub async fn get(&self, id: i64) -> Result<Option<Job>, IndexError> {
        self.index.job(id).await
    }

    /// Jobs, newest first, optionally of one state and/or one series.
    pub async fn list(
        &self,
        state: Option<&str>,
        series: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, IndexError> {
        self.index.jobs(state, series, limit).await
    }
}
