//! The index: patients, studies, series and instances with the attributes that QIDO-RS and
//! C-FIND match and return, each instance's metadata and frame positions, and where its object
//! lives. One interface, [`Index`], with a PostgreSQL and an embedded SQLite implementation; the
//! SQL they share lives in [`schema`].

pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

/// Everything ingest knows about an instance, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct InstanceRecord {
    // patient
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    // study
    pub study_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_description: String,
    pub study_id: String,
    // series
    pub series_instance_uid: String,
    pub modality: String,
    pub series_number: Option<i32>,
    pub series_description: String,
    pub series_date: String,
    pub series_time: String,
    pub body_part_examined: String,
    // instance
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i32>,
    pub transfer_syntax_uid: String,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    pub number_of_frames: Option<i32>,
    pub bits_allocated: Option<i32>,
    // storage
    pub object_key: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub received_at_ms: i64,
    pub source_ae: String,
    /// DICOM JSON (PS3.18 Annex F) of everything but bulk data, which is referenced by
    /// `BulkDataURI`s relative to the instance's URL.
    pub metadata_json: Vec<u8>,
    /// JSON array, one entry per frame, each a list of `[offset, length]` byte ranges in the
    /// stored object (several for a frame split into fragments). Empty when not known.
    pub frames_json: String,
}

/// What the index holds about a stored instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub object_key: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub source_ae: String,
    pub received_at_ms: i64,
}

/// Result of trying to insert an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// An instance with this SOP Instance UID is already indexed; nothing was changed.
    AlreadyExists(Box<StoredInstance>),
}

/// Counts of what the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexCounts {
    pub patients: i64,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database error: {0}")]
    Database(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("index schema version {found} is newer than this program knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("invalid database URL: {0}")]
    BadUrl(String),
}

pub type IndexResult<T> = Result<T, IndexError>;

/// A value read by [`Index::select`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqlValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            SqlValue::Blob(b) => Some(b),
            SqlValue::Text(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            SqlValue::Blob(b) => Some(b),
            SqlValue::Text(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
}

/// What a write statement run by [`Index::execute`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Executed {
    pub rows_affected: u64,
    /// The rows of its RETURNING clause, if it has one.
    pub rows: Vec<Vec<SqlValue>>,
}

#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// A short name of the backend, for logs.
    fn backend(&self) -> &'static str;

    /// The SQL dialect [`Index::select`] expects.
    fn dialect(&self) -> schema::Dialect;

    /// Runs a read-only statement rendered for [`Index::dialect`], with text parameters, and
    /// returns its rows. The query engine builds its SQL once for both backends and runs it
    /// through this.
    async fn select(&self, sql: &str, params: &[String]) -> IndexResult<Vec<Vec<SqlValue>>>;

    /// Runs one write statement (INSERT, UPDATE or DELETE, with or without RETURNING) rendered
    /// for [`Index::dialect`], with typed parameters, and commits it durably before returning.
    /// One statement is atomic on both backends, which the AE registry and the job queue rely
    /// on. Integers bind as 64-bit: columns they compare with must be `{big}`.
    async fn execute(&self, sql: &str, params: Vec<SqlValue>) -> IndexResult<Executed>;

    /// Inserts an instance (and its patient, study and series when new) in one durable
    /// transaction. Does nothing and says so if the SOP Instance UID is already indexed.
    async fn insert_instance(&self, record: InstanceRecord) -> IndexResult<InsertOutcome>;

    /// Replaces the indexed instance that has the record's SOP Instance UID; returns what was
    /// indexed before (so that its object can be deleted), or None if there was nothing.
    async fn replace_instance(&self, record: InstanceRecord)
        -> IndexResult<Option<StoredInstance>>;

    async fn find_instance(&self, sop_instance_uid: &str) -> IndexResult<Option<StoredInstance>>;

    /// The stored metadata (DICOM JSON) of an instance.
    async fn instance_metadata(&self, sop_instance_uid: &str) -> IndexResult<Option<Vec<u8>>>;

    /// The frame byte ranges recorded at ingest (see [`InstanceRecord::frames_json`]).
    async fn instance_frames(&self, sop_instance_uid: &str) -> IndexResult<Option<String>>;

    /// All instances, ordered by SOP Instance UID (for verification and maintenance).
    async fn all_instances(&self) -> IndexResult<Vec<StoredInstance>>;

    async fn counts(&self) -> IndexResult<IndexCounts>;
}

/// Opens the index named by `url`: `postgres://...` or `postgresql://...` for PostgreSQL,
/// otherwise a SQLite file path (optionally prefixed by `sqlite://`). Applies migrations.
pub async fn open(url: &str) -> IndexResult<Arc<dyn Index>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresIndex::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = std::path::PathBuf::from(path);
        let index = tokio::task::spawn_blocking(move || sqlite::SqliteIndex::open(&path))
            .await
            .map_err(|e| IndexError::Database(e.to_string()))??;
        Ok(Arc::new(index))
    }
}

/// Uppercased form of a Person Name used for case-insensitive matching (PS3.4 C.2.2.2.1
/// leaves PN case sensitivity to the SCP; viewers expect it insensitive).
pub fn normalize_name(name: &str) -> String {
    name.to_uppercase()
}
