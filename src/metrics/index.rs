//! The index, timed: [`metered`] wraps any [`Index`] so that every call through the trait is
//! recorded in `pacs_index_operation_duration_seconds{operation}` and, when it fails, in
//! `pacs_index_operation_errors_total{operation}`. The typed methods (`impl dyn Index`) all run
//! on `fetch` and `write`, which count under those two names.
//!
//! Each method here delegates to the same method of the wrapped index: a method added to the
//! trait must be added here too (the compiler says so, unless it has a default body).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Counter, Histogram};

use crate::index::audit::NewAuditRecord;
use crate::index::schema::Dialect;
use crate::index::{
    Executed, Index, IndexCounts, IndexResult, InsertOutcome, InstanceRecord, Sql, SqlValue,
    StoredInstance, Subscription, Transaction,
};

/// The operations, each a method of [`Index`].
const OPERATIONS: [&str; 11] = [
    "fetch",
    "write",
    "insert_instance",
    "replace_instance",
    "find_instance",
    "instance_metadata",
    "instance_frames",
    "all_instances",
    "counts",
    "append_audit",
    "transact",
];

/// `index`, with every call timed. Call after [`super::install`] (handles made before are
/// no-ops).
pub fn metered(index: Arc<dyn Index>) -> Arc<dyn Index> {
    let handles = OPERATIONS.map(|op| {
        (
            metrics::histogram!(super::INDEX_DURATION, "operation" => op),
            metrics::counter!(super::INDEX_ERRORS, "operation" => op),
        )
    });
    Arc::new(MeteredIndex {
        inner: index,
        handles,
    })
}

struct MeteredIndex {
    inner: Arc<dyn Index>,
    handles: [(Histogram, Counter); 11],
}

impl MeteredIndex {
    async fn timed<T>(
        &self,
        operation: usize,
        call: impl std::future::Future<Output = IndexResult<T>>,
    ) -> IndexResult<T> {
        let started = Instant::now();
        let result = call.await;
        let (duration, errors) = &self.handles[operation];
        duration.record(started.elapsed().as_secs_f64());
        if result.is_err() {
            errors.increment(1);
        }
        result
    }
}

#[async_trait]
impl Index for MeteredIndex {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn fetch(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Vec<Vec<SqlValue>>> {
        self.timed(0, self.inner.fetch(sql, params)).await
    }

    async fn write(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Executed> {
        self.timed(1, self.inner.write(sql, params)).await
    }

    async fn insert_instance(&self, record: InstanceRecord) -> IndexResult<InsertOutcome> {
        self.timed(2, self.inner.insert_instance(record)).await
    }

    async fn replace_instance(
        &self,
        record: InstanceRecord,
    ) -> IndexResult<Option<StoredInstance>> {
        self.timed(3, self.inner.replace_instance(record)).await
    }

    async fn find_instance(&self, sop_instance_uid: &str) -> IndexResult<Option<StoredInstance>> {
        self.timed(4, self.inner.find_instance(sop_instance_uid))
            .await
    }

    async fn instance_metadata(&self, sop_instance_uid: &str) -> IndexResult<Option<Vec<u8>>> {
        self.timed(5, self.inner.instance_metadata(sop_instance_uid))
            .await
    }

    async fn instance_frames(&self, sop_instance_uid: &str) -> IndexResult<Option<String>> {
        self.timed(6, self.inner.instance_frames(sop_instance_uid))
            .await
    }

    async fn all_instances(&self) -> IndexResult<Vec<StoredInstance>> {
        self.timed(7, self.inner.all_instances()).await
    }

    async fn counts(&self) -> IndexResult<IndexCounts> {
        self.timed(8, self.inner.counts()).await
    }

    async fn append_audit(&self, records: Vec<NewAuditRecord>) -> IndexResult<Vec<i64>> {
        self.timed(9, self.inner.append_audit(records)).await
    }

    async fn transact(&self, t: Transaction<'_>) -> IndexResult<Option<Vec<Executed>>> {
        self.timed(10, self.inner.transact(t)).await
    }

    fn subscribe(&self) -> Subscription {
        self.inner.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_timed_and_failures_counted() {
        super::super::install();
        let dir = tempfile::tempdir().unwrap();
        let index = metered(
            crate::index::open(&dir.path().join("i.sqlite").to_string_lossy())
                .await
                .unwrap(),
        );
        index.counts().await.unwrap();
        assert!(index.find_instance("1.2.3").await.unwrap().is_none());
        let text = super::super::render();
        for op in ["counts", "find_instance"] {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "pacs_index_operation_duration_seconds_count{{operation=\"{op}\"}}"
                    ))
                })
                .unwrap_or_else(|| panic!("no count for {op}:\n{text}"));
            let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(n >= 1, "{line}");
        }
    }
}
