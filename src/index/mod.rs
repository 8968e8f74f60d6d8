//! The index: patients, studies, series and instances with the attributes that QIDO-RS and
//! C-FIND match and return, each instance's metadata and frame positions, and where its object
//! lives. One interface, [`Index`], with a PostgreSQL and an embedded SQLite implementation.
//!
//! All the node's SQL is here: the schema and its migrations and the statements both backends
//! share ([`schema`]), the attributes declared once ([`attributes`]), the SQL of queries
//! (`query_sql`), the job queue's statements ([`jobs`]) and the rest (`catalog`: retrieval,
//! node settings, the AI watch, the AE registry), all typed methods on `dyn Index`. Their
//! statements run through [`Index::fetch`] and [`Index::write`], which take a [`Sql`] that only
//! this module can make.

pub mod attributes;
pub mod audit;
mod catalog;
pub mod changes;
pub mod exports;
pub mod jobs;
mod maintenance;
pub mod measurements;
pub mod nodes;
pub mod postgres;
mod principals;
mod query_sql;
pub mod schema;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use attributes::InstanceRecord;
pub use catalog::{AeOrigin, InstanceFilter, LocatedInstance, SeriesSummary};
pub use changes::{Change, Changed, Subscription};
pub use principals::{ApiKeyRow, UserRow};

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
    /// Stored by an authenticated AI worker.
    pub ai_output: bool,
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
    /// Known not to have been done: the database could not be reached or did not answer in
    /// time, or refused for want of resources; trying again later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A write whose commit may or may not have happened: the connection was lost, or the
    /// time ran out, after the committing statement was sent. Only reading it back tells;
    /// whoever wrote an object for it keeps the object (`pacs fsck` reconciles it).
    #[error("index commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("index schema version {found} is newer than this program knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("invalid database URL: {0}")]
    BadUrl(String),
}

pub type IndexResult<T> = Result<T, IndexError>;

/// A value bound to or read from a statement. Integers bind as integers on both backends
/// (PostgreSQL: as the width the statement's parameter has).
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

/// What a write statement run by [`Index::write`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Executed {
    pub rows_affected: u64,
    /// The rows of its RETURNING clause, if it has one.
    pub rows: Vec<Vec<SqlValue>>,
}

/// A statement in the shared form (`?n` parameters, `{big}`...; see [`schema::Dialect`]).
/// Only the index module can make one: no SQL is written outside it.
#[derive(Debug, Clone, Copy)]
pub struct Sql<'a>(&'a str);

impl<'a> Sql<'a> {
    pub(in crate::index) fn new(sql: &'a str) -> Sql<'a> {
        Sql(sql)
    }

    pub(in crate::index) fn text(self) -> &'a str {
        self.0
    }
}

/// Statements that [`Index::transact`] runs in one durable transaction, in order.
pub struct Transaction<'a> {
    steps: Vec<(Sql<'a>, Vec<SqlValue>)>,
    guarded: bool,
    announce: Vec<Change>,
}

impl<'a> Transaction<'a> {
    pub(in crate::index) fn new() -> Transaction<'a> {
        Transaction {
            steps: Vec::new(),
            guarded: false,
            announce: Vec::new(),
        }
    }

    /// Adds a statement.
    pub(in crate::index) fn then(mut self, sql: Sql<'a>, params: Vec<SqlValue>) -> Self {
        self.steps.push((sql, params));
        self
    }

    /// The first statement is a claim: when it changes no row, the transaction is rolled back
    /// and nothing is announced.
    pub(in crate::index) fn guarded(mut self) -> Self {
        self.guarded = true;
        self
    }

    /// Tells every node sharing the index of `change` once the transaction commits.
    pub(in crate::index) fn announce(mut self, change: Change) -> Self {
        self.announce.push(change);
        self
    }

    pub(in crate::index) fn steps(&self) -> &[(Sql<'a>, Vec<SqlValue>)] {
        &self.steps
    }

    pub(in crate::index) fn is_guarded(&self) -> bool {
        self.guarded
    }

    pub(in crate::index) fn announced(&self) -> &[Change] {
        &self.announce
    }
}

#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// A short name of the backend, for logs.
    fn backend(&self) -> &'static str;

    /// The SQL dialect statements are rendered for.
    fn dialect(&self) -> schema::Dialect;

    /// Runs a read-only statement made by this module and returns its rows. The typed methods
    /// (`impl dyn Index` in `catalog`, `jobs`, `query_sql`) are built on this.
    async fn fetch(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Vec<Vec<SqlValue>>>;

    /// Runs one write statement (INSERT, UPDATE or DELETE, with or without RETURNING) made by
    /// this module, and commits it durably before returning. One statement is atomic on both
    /// backends, which the AE registry and the job queue rely on.
    async fn write(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Executed>;

    /// Runs the statements of `tx` in one durable transaction and returns what each did; None
    /// when it is guarded and its first statement changed no row (then nothing was written).
    /// Its announced changes reach every subscriber of every node once it has committed
    /// (PostgreSQL: a NOTIFY inside the transaction).
    async fn transact(&self, tx: Transaction<'_>) -> IndexResult<Option<Vec<Executed>>>;

    /// Follows the changes of shared state ([`changes`]): each one announced by a
    /// transaction of any node, and [`Changed::All`] periodically and whenever
    /// notifications may have been missed. Needs a Tokio runtime (it may start a task).
    fn subscribe(&self) -> Subscription;

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

    /// Appends audit records to the hash chain ([`audit`]) in one durable transaction that
    /// holds the chain's lock from reading its tail to the commit, so that appends of several
    /// nodes sharing the database serialise into one chain. Returns their sequence numbers.
    async fn append_audit(&self, records: Vec<audit::NewAuditRecord>) -> IndexResult<Vec<i64>>;
}

impl dyn Index {
    /// The schema version the database is at (`/readyz` compares it with
    /// [`schema::MIGRATIONS`]' last): also the cheapest query that proves the database answers.
    pub async fn schema_version(&self) -> IndexResult<i64> {
        let rows = self
            .fetch(Sql::new(schema::SELECT_SCHEMA_VERSION), Vec::new())
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64)
            .unwrap_or(0))
    }
}

/// The schema version this program migrates to.
pub fn known_schema_version() -> i64 {
    schema::MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Opens the index named by `url`: `postgres://...` or `postgresql://...` for PostgreSQL,
/// otherwise a SQLite file path (optionally prefixed by `sqlite://`). Applies migrations.
pub async fn open(url: &str) -> IndexResult<Arc<dyn Index>> {
    open_with(url, postgres::DEFAULT_TIMEOUT).await
}

/// [`open`] with the database timeout (`--database-timeout-ms`): for PostgreSQL the connect,
/// pool-wait and statement timeout, an operation as a whole abandoned past twice it (see
/// [`postgres::PostgresIndex::connect_with`]). SQLite, in the process, has its busy timeout.
pub async fn open_with(url: &str, timeout: std::time::Duration) -> IndexResult<Arc<dyn Index>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresIndex::connect_with(url, timeout).await?,
        ))
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
