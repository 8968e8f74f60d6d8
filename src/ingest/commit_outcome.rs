//! Ingest when the index commit fails: an object is deleted only when the commit is known not
//! to have happened (issue 14), never when its outcome is unknown.

use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::index::{
    audit, schema, Executed, IndexCounts, IndexResult, InstanceRecord, Sql, SqlValue, Subscription,
    Transaction,
};

/// How the index fails the insert.
#[derive(Clone, Copy)]
enum Fault {
    /// The row is committed, then the connection is lost before the answer.
    CommittedThenLost,
    /// Refused before anything was sent (a pool checkout that timed out).
    RefusedBefore,
}

/// An index (SQLite underneath) whose inserts fail as `fault` says.
struct Faulty {
    inner: Arc<dyn Index>,
    fault: Fault,
}

#[async_trait]
impl Index for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    fn dialect(&self) -> schema::Dialect {
        self.inner.dialect()
    }
    async fn fetch(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Vec<Vec<SqlValue>>> {
        self.inner.fetch(sql, params).await
    }
    async fn write(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Executed> {
        self.inner.write(sql, params).await
    }
    async fn transact(&self, t: Transaction<'_>) -> IndexResult<Option<Vec<Executed>>> {
        self.inner.transact(t).await
    }
    fn subscribe(&self) -> Subscription {
        self.inner.subscribe()
    }
    async fn insert_instance(&self, record: InstanceRecord) -> IndexResult<InsertOutcome> {
        match self.fault {
            Fault::CommittedThenLost => {
                self.inner.insert_instance(record).await?;
                Err(IndexError::OutcomeUnknown(
                    "connection lost after COMMIT was sent".into(),
                ))
            }
            Fault::RefusedBefore => Err(IndexError::Unavailable(
                "timed out waiting for a connection".into(),
            )),
        }
    }
    async fn replace_instance(
        &self,
        record: InstanceRecord,
    ) -> IndexResult<Option<StoredInstance>> {
        self.inner.replace_instance(record).await
    }
    async fn find_instance(&self, uid: &str) -> IndexResult<Option<StoredInstance>> {
        self.inner.find_instance(uid).await
    }
    async fn instance_metadata(&self, uid: &str) -> IndexResult<Option<Vec<u8>>> {
        self.inner.instance_metadata(uid).await
    }
    async fn instance_frames(&self, uid: &str) -> IndexResult<Option<String>> {
        self.inner.instance_frames(uid).await
    }
    async fn all_instances(&self) -> IndexResult<Vec<StoredInstance>> {
        self.inner.all_instances().await
    }
    async fn counts(&self) -> IndexResult<IndexCounts> {
        self.inner.counts().await
    }
    async fn append_audit(&self, records: Vec<audit::NewAuditRecord>) -> IndexResult<Vec<i64>> {
        self.inner.append_audit(records).await
    }
}

/// Ingests one synthetic CT instance into an index failing as `fault` says; returns the
/// result, what the index holds, and the objects stored.
async fn ingest_with(
    fault: Fault,
) -> (
    Result<Ingested, IngestError>,
    Vec<StoredInstance>,
    Vec<String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut synth = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
    synth.slices = 1;
    synth.out = dir.path().join("in");
    let summary = pacs_synth::synthesise(&synth).unwrap();
    let bytes = Bytes::from(std::fs::read(&summary.instances[0].path).unwrap());
    let inner = crate::index::open(&dir.path().join("index.sqlite").to_string_lossy())
        .await
        .unwrap();
    let storage = Storage::open(&crate::storage::StorageConfig::Local {
        root: dir.path().join("objects"),
    })
    .unwrap();
    let index: Arc<dyn Index> = Arc::new(Faulty {
        inner: inner.clone(),
        fault,
    });
    let ingest = Ingest::new(index, storage.clone(), DuplicatePolicy::Keep);
    let result = ingest
        .ingest(Incoming::from_part10(bytes, Origin::Http).unwrap())
        .await;
    (
        result,
        inner.all_instances().await.unwrap(),
        storage.list_keys().await.unwrap(),
    )
}

#[tokio::test]
async fn an_unknown_commit_outcome_keeps_the_object() {
    let (result, rows, objects) = ingest_with(Fault::CommittedThenLost).await;
    assert!(
        matches!(
            result,
            Err(IngestError::Index(IndexError::OutcomeUnknown(_)))
        ),
        "{result:?}"
    );
    // the commit went through: the row points at an object that is there
    assert_eq!(rows.len(), 1);
    assert_eq!(objects, vec![rows[0].object_key.clone()]);
}

#[tokio::test]
async fn a_commit_known_not_to_have_happened_removes_the_object() {
    let (result, rows, objects) = ingest_with(Fault::RefusedBefore).await;
    assert!(
        matches!(result, Err(IngestError::Index(IndexError::Unavailable(_)))),
        "{result:?}"
    );
    assert!(rows.is_empty());
    assert!(objects.is_empty(), "{objects:?}");
}
