//! PostgreSQL index (tokio-postgres through a deadpool connection pool).
//!
//! Several nodes may share one database: migrations run under an advisory lock, and inserts
//! never lock existing patient, study or series rows (they look a row up first and insert it
//! with `ON CONFLICT DO NOTHING` only when missing), so concurrent ingest of one study does not
//! serialise on its study row.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::changes::{self, Change, Changed};
use super::schema::InsertValues;
use super::schema::{self, Dialect, MIGRATIONS};
use super::sqlite::now_ms;
use super::{
    Executed, Index, IndexCounts, IndexError, IndexResult, InsertOutcome, InstanceRecord, Sql,
    SqlValue, StoredInstance, Subscription, Transaction,
};

/// `application_name` of each node's LISTEN connection (see [`changes`]).
pub const LISTENER_NAME: &str = "pacs changes listener";

/// Any constant shared by every node: the advisory lock taken while migrating.
const MIGRATION_LOCK: i64 = 0x5041_4353_4D49_4752; // "PACSMIGR"

pub struct PostgresIndex {
    pool: Pool,
    sql: Statements,
    /// The whole of one operation (a pool checkout and its statements) is abandoned past
    /// this: twice `--database-timeout-ms`, for a server that answers nothing at all.
    operation_timeout: Duration,
    /// How to open the connection that LISTENs for changes (see [`super::changes`]).
    listen: (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    changes: Arc<broadcast::Sender<Changed>>,
    listening: std::sync::Once,
}

/// The shared statements, rendered once for PostgreSQL.
struct Statements {
    select_patient: String,
    insert_patient: String,
    select_study: String,
    insert_study: String,
    select_series: String,
    insert_series: String,
    select_parents: String,
    insert_instance_and_metadata: String,
    delete_metadata_by_uid: String,
    delete_instance_by_uid: String,
    select_stored_by_uid: String,
    select_all_stored: String,
    select_metadata_by_uid: String,
    select_frames_by_uid: String,
    insert_measurement: String,
}

impl Statements {
    fn new() -> Statements {
        let r = |s: &str| Dialect::Postgres.render(s);
        Statements {
            select_patient: r(schema::SELECT_PATIENT),
            insert_patient: r(&schema::INSERT_PATIENT),
            select_study: r(schema::SELECT_STUDY),
            insert_study: r(&schema::INSERT_STUDY),
            select_series: r(schema::SELECT_SERIES),
            insert_series: r(&schema::INSERT_SERIES),
            select_parents: r(schema::SELECT_PARENTS),
            insert_instance_and_metadata: r(&schema::INSERT_INSTANCE_AND_METADATA),
            delete_metadata_by_uid: r(schema::DELETE_METADATA_BY_UID),
            delete_instance_by_uid: r(schema::DELETE_INSTANCE_BY_UID),
            select_stored_by_uid: r(&schema::select_stored_instance_by_uid()),
            select_all_stored: r(&schema::select_all_stored_instances()),
            select_metadata_by_uid: r(schema::SELECT_METADATA_BY_UID),
            select_frames_by_uid: r(schema::SELECT_FRAMES_BY_UID),
            insert_measurement: r(&super::measurements::INSERT_MEASUREMENT),
        }
    }
}

/// An error of a statement: the server's own error (SQLSTATE) as [`IndexError::Database`],
/// except those that say the server cannot serve now (classes 08 connection exception, 53
/// insufficient resources, 57 operator intervention: a shutdown, a restart, a statement
/// cancelled by `statement_timeout`), which are [`IndexError::Unavailable`] like a lost
/// connection.
fn db_err(e: tokio_postgres::Error) -> IndexError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let text = format!("{code}: {}", db.message());
            if ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
            {
                IndexError::Unavailable(text)
            } else {
                IndexError::Database(text)
            }
        }
        None if is_connection_lost(&e) => IndexError::Unavailable(with_causes(&e)),
        None => IndexError::Database(with_causes(&e)),
    }
}

/// Whether the error is the connection's (closed, or an I/O error), not the statement's.
fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error of the statement that commits a write (an autocommitted INSERT, or COMMIT): when
/// the server answered with an error, nothing was committed; when the connection was lost
/// instead, the server may have committed before it went, and nobody can tell from here.
fn commit_err(e: tokio_postgres::Error) -> IndexError {
    if e.as_db_error().is_none() && is_connection_lost(&e) {
        IndexError::OutcomeUnknown(with_causes(&e))
    } else {
        db_err(e)
    }
}

/// An error with its causes (a TLS handshake failure says why only in its source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A checkout that failed (no connection within the pool-wait or connect timeout, the server
/// unreachable): nothing was sent.
fn pool_err(e: deadpool_postgres::PoolError) -> IndexError {
    IndexError::Unavailable(with_causes(&e))
}

/// The default of `--database-timeout-ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// libpq's `sslmode` (PostgreSQL documentation, libpq 34.19): tokio-postgres knows only the
/// first three, so the URL's `sslmode` and `sslrootcert` are read here and the checks done by
/// the rustls connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq's default: TLS when the server offers it, certificate unchecked.
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            SslMode::Disable => Wire::Disable,
            SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        }
    }
}

/// The TLS options of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslOptions {
    pub mode: SslMode,
    pub root_cert: Option<std::path::PathBuf>,
}

impl SslOptions {
    /// What is checked of the server's certificate. As in libpq, `require` with a root CA
    /// file behaves as `verify-ca`.
    fn check(&self) -> crate::tls::ServerCheck {
        use crate::tls::ServerCheck;
        match self.mode {
            SslMode::VerifyFull => ServerCheck::Full,
            SslMode::VerifyCa => ServerCheck::Chain,
            SslMode::Require if self.root_cert.is_some() => ServerCheck::Chain,
            _ => ServerCheck::None,
        }
    }
}

/// The URL without `sslmode` and `sslrootcert`, and what they said.
pub fn split_ssl_options(url: &str) -> IndexResult<(String, SslOptions)> {
    let mut parsed = url::Url::parse(url).map_err(|e| IndexError::BadUrl(e.to_string()))?;
    let mut options = SslOptions {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                options.mode = match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(IndexError::BadUrl(format!(
                            "sslmode {other:?}: disable, prefer, require, verify-ca or verify-full"
                        )))
                    }
                }
            }
            "sslrootcert" => options.root_cert = Some(value.as_ref().into()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), options))
}

/// Statements kept prepared per connection, at most: past this the cache starts afresh, so
/// that queries of ever new shapes (QIDO with other keys) cannot grow it without bound.
const STATEMENT_CACHE_MAX: usize = 512;

fn bound_statement_cache(client: &deadpool_postgres::Client) {
    if client.statement_cache.size() > STATEMENT_CACHE_MAX {
        client.statement_cache.clear();
    }
}

impl PostgresIndex {
    /// The statements one pooled connection keeps prepared: its cache's size and the server's
    /// count for that session (`pg_prepared_statements` lists protocol-level statements too,
    /// the count's own included). For tests of the cache bound.
    #[doc(hidden)]
    pub async fn prepared_statements(&self) -> IndexResult<(usize, i64)> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await
            .map_err(db_err)?;
        Ok((client.statement_cache.size(), row.get(0)))
    }

    pub async fn connect(url: &str) -> IndexResult<PostgresIndex> {
        Self::connect_with(url, DEFAULT_TIMEOUT).await
    }

    /// Connects with `timeout` (`--database-timeout-ms`) as the TCP connect timeout, the
    /// pool's wait, create and recycle timeouts, and each session's `statement_timeout`; an
    /// operation as a whole is abandoned past twice it (a server stopped dead answers nothing,
    /// so only the client's clock ends the wait).
    pub async fn connect_with(url: &str, timeout: Duration) -> IndexResult<PostgresIndex> {
        let (url, ssl) = split_ssl_options(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| IndexError::BadUrl(e.to_string()))?;
        config.ssl_mode(ssl.mode.wire());
        config.connect_timeout(timeout);
        // a session default (migrations lift it for themselves); a URL's own `options` first
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            timeout.as_millis()
        );
        config.options(options.trim_start());
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            crate::tls::client_config(ssl.check(), ssl.root_cert.as_deref())
                .map_err(|e| IndexError::BadUrl(e.to_string()))?,
        );
        let mut listen_config = config.clone();
        // named, so that an operator sees which session is each node's listener
        listen_config.application_name(LISTENER_NAME);
        let listen = (listen_config, tls.clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| IndexError::Unavailable(e.to_string()))?;
        let index = PostgresIndex {
            pool,
            sql: Statements::new(),
            operation_timeout: timeout.saturating_mul(2),
            listen,
            changes: Arc::new(changes::channel()),
            listening: std::sync::Once::new(),
        };
        index.migrate().await?;
        Ok(index)
    }

    async fn migrate(&self) -> IndexResult<()> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let d = Dialect::Postgres;
        // a migration of a large index, or the wait for another node's, may take long
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(db_err)?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        let result = async {
            client
                .batch_execute(&d.render(schema::CREATE_MIGRATIONS_TABLE))
                .await
                .map_err(db_err)?;
            let current: i64 = client
                .query_one(schema::SELECT_SCHEMA_VERSION, &[])
                .await
                .map_err(db_err)?
                .get(0);
            let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
            if current > known {
                return Err(IndexError::SchemaTooNew {
                    found: current,
                    known,
                });
            }
            for m in MIGRATIONS.iter().filter(|m| m.version > current) {
                let tx = client.transaction().await.map_err(db_err)?;
                for statement in schema::migration_statements(m, d) {
                    tx.batch_execute(&statement).await.map_err(db_err)?;
                }
                tx.execute(
                    &d.render(schema::RECORD_MIGRATION),
                    &[&m.version, &m.description, &now_ms()],
                )
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                tracing::info!(version = m.version, "PostgreSQL index migrated");
            }
            Ok(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        client
            .batch_execute("RESET statement_timeout")
            .await
            .map_err(db_err)?;
        result
    }

    /// Runs one operation within [`PostgresIndex::operation_timeout`]; past it, the database
    /// is unavailable (nothing of a read or of a write not yet committing is done).
    async fn bounded<T>(&self, op: impl Future<Output = IndexResult<T>>) -> IndexResult<T> {
        tokio::time::timeout(self.operation_timeout, op)
            .await
            .unwrap_or_else(|_| Err(self.no_answer()))
    }

    /// [`PostgresIndex::bounded`] for a write: `committing` is set just before the statement
    /// that commits is sent, from which point a timeout leaves the outcome unknown.
    async fn bounded_write<T>(
        &self,
        committing: &AtomicBool,
        op: impl Future<Output = IndexResult<T>>,
    ) -> IndexResult<T> {
        match tokio::time::timeout(self.operation_timeout, op).await {
            Ok(result) => result,
            Err(_) if committing.load(Ordering::Acquire) => {
                Err(IndexError::OutcomeUnknown(format!(
                    "no answer from PostgreSQL within {:?} to a commit",
                    self.operation_timeout
                )))
            }
            Err(_) => Err(self.no_answer()),
        }
    }

    fn no_answer(&self) -> IndexError {
        IndexError::Unavailable(format!(
            "no answer from PostgreSQL within {:?}",
            self.operation_timeout
        ))
    }

    async fn get_or_insert<C: GenericClient>(
        &self,
        client: &C,
        select: &str,
        select_params: &[&(dyn ToSql + Sync)],
        insert: &str,
        insert_params: Vec<SqlValue>,
    ) -> IndexResult<i64> {
        let insert_params = refs(&insert_params);
        let insert_params = &insert_params[..];
        let select = client.prepare_cached(select).await.map_err(db_err)?;
        if let Some(row) = client
            .query_opt(&select, select_params)
            .await
            .map_err(db_err)?
        {
            return Ok(row.get(0));
        }
        let insert = client.prepare_cached(insert).await.map_err(db_err)?;
        if let Some(row) = client
            .query_opt(&insert, insert_params)
            .await
            .map_err(db_err)?
        {
            return Ok(row.get(0));
        }
        // Another node or connection inserted it between our two statements.
        let row = client
            .query_one(&select, select_params)
            .await
            .map_err(db_err)?;
        Ok(row.get(0))
    }

    async fn insert_in<C: GenericClient>(
        &self,
        client: &C,
        r: &InstanceRecord,
    ) -> IndexResult<InsertOutcome> {
        let values = InsertValues::new(r);
        let patient_pk = self
            .get_or_insert(
                client,
                &self.sql.select_patient,
                &[&r.patient_id, &r.issuer_of_patient_id],
                &self.sql.insert_patient,
                values.patient(),
            )
            .await?;
        let study_pk = self
            .get_or_insert(
                client,
                &self.sql.select_study,
                &[&r.study_instance_uid],
                &self.sql.insert_study,
                values.study(patient_pk),
            )
            .await?;
        let series_pk = self
            .get_or_insert(
                client,
                &self.sql.select_series,
                &[&r.series_instance_uid],
                &self.sql.insert_series,
                values.series(study_pk),
            )
            .await?;
        self.insert_leaf(client, r, series_pk, study_pk, None).await
    }

    /// Inserts the instance row and its metadata in one statement (so, atomically, without a
    /// transaction around it), under parents that exist. `autocommit`: the statement commits
    /// itself (no transaction is open), and the flag is set when it is sent.
    async fn insert_leaf<C: GenericClient>(
        &self,
        client: &C,
        r: &InstanceRecord,
        series_pk: i64,
        study_pk: i64,
        autocommit: Option<&AtomicBool>,
    ) -> IndexResult<InsertOutcome> {
        let insert = client
            .prepare_cached(&self.sql.insert_instance_and_metadata)
            .await
            .map_err(db_err)?;
        let mut values = InsertValues::new(r).instance(series_pk, study_pk);
        values.push(SqlValue::Blob(r.metadata_json.clone()));
        values.push(SqlValue::Text(r.frames_json.clone()));
        if let Some(committing) = autocommit {
            committing.store(true, Ordering::Release);
        }
        let row =
            client
                .query_opt(&insert, &refs(&values))
                .await
                .map_err(if autocommit.is_some() {
                    commit_err
                } else {
                    db_err
                })?;
        if row.is_none() {
            // Already indexed (or a concurrent store of the same SOP Instance UID won).
            let existing = self
                .find_in(client, &r.sop_instance_uid)
                .await?
                .ok_or_else(|| {
                    IndexError::Database("instance vanished during a concurrent insert".into())
                })?;
            return Ok(InsertOutcome::AlreadyExists(Box::new(existing)));
        }
        Ok(InsertOutcome::Inserted)
    }

    /// The measurement rows of an SR just inserted in `client`'s transaction: sent together
    /// (tokio-postgres pipelines them), so an SR costs one more round trip, not one per row.
    async fn insert_measurements<C: GenericClient>(
        &self,
        client: &C,
        r: &InstanceRecord,
    ) -> IndexResult<()> {
        if r.measurements.is_empty() {
            return Ok(());
        }
        let insert = client
            .prepare_cached(&self.sql.insert_measurement)
            .await
            .map_err(db_err)?;
        let params = super::measurements::insert_params(r);
        let inserts = params.iter().map(|p| {
            let insert = &insert;
            async move { client.execute(insert, &refs(p)).await }
        });
        futures::future::try_join_all(inserts)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_in<C: GenericClient>(
        &self,
        client: &C,
        uid: &str,
    ) -> IndexResult<Option<StoredInstance>> {
        let stmt = client
            .prepare_cached(&self.sql.select_stored_by_uid)
            .await
            .map_err(db_err)?;
        Ok(client
            .query_opt(&stmt, &[&uid])
            .await
            .map_err(db_err)?
            .map(|row| stored_from_row(&row)))
    }

    async fn insert_now(
        &self,
        record: &InstanceRecord,
        committing: &AtomicBool,
    ) -> IndexResult<InsertOutcome> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        // No lookup of the instance: its INSERT's ON CONFLICT tells whether it was there. The
        // parents' keys in one statement; when all three exist (every instance of a series but
        // its first) one more statement inserts the instance with its metadata: two round
        // trips, and no transaction, which one statement does not need.
        let parents = client
            .prepare_cached(&self.sql.select_parents)
            .await
            .map_err(db_err)?;
        let row = client
            .query_one(
                &parents,
                &[
                    &record.patient_id,
                    &record.issuer_of_patient_id,
                    &record.study_instance_uid,
                    &record.series_instance_uid,
                ],
            )
            .await
            .map_err(db_err)?;
        let keys: (Option<i64>, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        // an SR's measurements need a transaction around the instance's row and theirs
        if let (Some(_), Some(study_pk), Some(series_pk), true) =
            (keys.0, keys.1, keys.2, record.measurements.is_empty())
        {
            return self
                .insert_leaf(&client, record, series_pk, study_pk, Some(committing))
                .await;
        }
        let tx = client.transaction().await.map_err(db_err)?;
        let outcome = self.insert_in(&tx, record).await?;
        if outcome == InsertOutcome::Inserted {
            self.insert_measurements(&tx, record).await?;
        }
        committing.store(true, Ordering::Release);
        tx.commit().await.map_err(commit_err)?;
        Ok(outcome)
    }

    async fn replace_now(
        &self,
        record: &InstanceRecord,
        committing: &AtomicBool,
    ) -> IndexResult<Option<StoredInstance>> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let previous = self.find_in(&tx, &record.sop_instance_uid).await?;
        if previous.is_some() {
            tx.execute(
                &self.sql.delete_metadata_by_uid,
                &[&record.sop_instance_uid],
            )
            .await
            .map_err(db_err)?;
            tx.execute(
                &self.sql.delete_instance_by_uid,
                &[&record.sop_instance_uid],
            )
            .await
            .map_err(db_err)?;
        }
        if self.insert_in(&tx, record).await? == InsertOutcome::Inserted {
            // the rows of the replaced SR went with its instance row (ON DELETE CASCADE)
            self.insert_measurements(&tx, record).await?;
        }
        committing.store(true, Ordering::Release);
        tx.commit().await.map_err(commit_err)?;
        Ok(previous)
    }
}

fn stored_from_row(row: &Row) -> StoredInstance {
    StoredInstance {
        sop_instance_uid: row.get(0),
        sop_class_uid: row.get(1),
        study_instance_uid: row.get(2),
        series_instance_uid: row.get(3),
        transfer_syntax_uid: row.get(4),
        object_key: row.get(5),
        size_bytes: row.get(6),
        sha256: row.get(7),
        source_ae: row.get(8),
        received_at_ms: row.get(9),
        ai_output: row.get::<_, i64>(10) != 0,
    }
}

#[async_trait]
impl Index for PostgresIndex {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn fetch(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Vec<Vec<SqlValue>>> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            bound_statement_cache(&client);
            let stmt = client
                .prepare_cached(&Dialect::Postgres.render(sql.text()))
                .await
                .map_err(db_err)?;
            let rows = client.query(&stmt, &refs(&params)).await.map_err(db_err)?;
            rows.iter().map(row_values).collect()
        })
        .await
    }

    async fn write(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Executed> {
        let committing = AtomicBool::new(false);
        self.bounded_write(&committing, async {
            let client = self.pool.get().await.map_err(pool_err)?;
            bound_statement_cache(&client);
            let stmt = client
                .prepare_cached(&Dialect::Postgres.render(sql.text()))
                .await
                .map_err(db_err)?;
            let refs = refs(&params);
            committing.store(true, Ordering::Release);
            if stmt.columns().is_empty() {
                let rows_affected = client.execute(&stmt, &refs).await.map_err(commit_err)?;
                return Ok(Executed {
                    rows_affected,
                    rows: Vec::new(),
                });
            }
            let rows = client.query(&stmt, &refs).await.map_err(commit_err)?;
            let rows = rows
                .iter()
                .map(row_values)
                .collect::<IndexResult<Vec<_>>>()?;
            Ok(Executed {
                rows_affected: rows.len() as u64,
                rows,
            })
        })
        .await
    }

    async fn transact(&self, t: Transaction<'_>) -> IndexResult<Option<Vec<Executed>>> {
        let committing = AtomicBool::new(false);
        self.bounded_write(&committing, async {
            let mut client = self.pool.get().await.map_err(pool_err)?;
            bound_statement_cache(&client);
            let tx = client.transaction().await.map_err(db_err)?;
            let mut done = Vec::with_capacity(t.steps().len());
            for (i, (sql, params)) in t.steps().iter().enumerate() {
                let executed = execute(&tx, *sql, params).await?;
                if i == 0 && t.is_guarded() && executed.rows_affected == 0 {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(None);
                }
                done.push(executed);
            }
            // delivered by PostgreSQL at the commit, to every node LISTENing, or not at all
            for change in t.announced() {
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&changes::CHANNEL, &change.name()],
                )
                .await
                .map_err(db_err)?;
            }
            committing.store(true, Ordering::Release);
            tx.commit().await.map_err(commit_err)?;
            Ok(Some(done))
        })
        .await
    }

    fn subscribe(&self) -> Subscription {
        self.listening.call_once(|| {
            let (config, tls) = self.listen.clone();
            tokio::spawn(listen(config, tls, Arc::downgrade(&self.changes)));
        });
        Subscription::new(self.changes.subscribe())
    }

    async fn insert_instance(&self, record: InstanceRecord) -> IndexResult<InsertOutcome> {
        let committing = AtomicBool::new(false);
        self.bounded_write(&committing, self.insert_now(&record, &committing))
            .await
    }

    async fn replace_instance(
        &self,
        record: InstanceRecord,
    ) -> IndexResult<Option<StoredInstance>> {
        let committing = AtomicBool::new(false);
        self.bounded_write(&committing, self.replace_now(&record, &committing))
            .await
    }

    async fn append_audit(
        &self,
        records: Vec<super::audit::NewAuditRecord>,
    ) -> IndexResult<Vec<i64>> {
        let committing = AtomicBool::new(false);
        self.bounded_write(&committing, async {
            use super::audit;
            let mut client = self.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(db_err)?;
            // held until the commit: every node appending to this database waits here, so the
            // tail read below is the chain's tail when the rows are inserted
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&audit::AUDIT_CHAIN_LOCK],
            )
            .await
            .map_err(db_err)?;
            let tail = tx
                .query_opt(audit::SELECT_AUDIT_TAIL, &[])
                .await
                .map_err(db_err)?;
            let (mut seq, mut hash): (i64, String) = match tail {
                Some(row) => (row.get(0), row.get(1)),
                None => (0, audit::GENESIS_HASH.to_string()),
            };
            let insert = tx
                .prepare_cached(&Dialect::Postgres.render(audit::INSERT_AUDIT))
                .await
                .map_err(db_err)?;
            let mut done = Vec::with_capacity(records.len());
            for r in &records {
                let (params, next) = audit::chained_row(seq, &hash, r);
                tx.execute(&insert, &refs(&params)).await.map_err(db_err)?;
                seq += 1;
                hash = next;
                done.push(seq);
            }
            committing.store(true, Ordering::Release);
            tx.commit().await.map_err(commit_err)?;
            Ok(done)
        })
        .await
    }

    async fn find_instance(&self, sop_instance_uid: &str) -> IndexResult<Option<StoredInstance>> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            self.find_in(&client, sop_instance_uid).await
        })
        .await
    }

    async fn instance_metadata(&self, sop_instance_uid: &str) -> IndexResult<Option<Vec<u8>>> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let stmt = client
                .prepare_cached(&self.sql.select_metadata_by_uid)
                .await
                .map_err(db_err)?;
            Ok(client
                .query_opt(&stmt, &[&sop_instance_uid])
                .await
                .map_err(db_err)?
                .map(|r| r.get(0)))
        })
        .await
    }

    async fn instance_frames(&self, sop_instance_uid: &str) -> IndexResult<Option<String>> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let stmt = client
                .prepare_cached(&self.sql.select_frames_by_uid)
                .await
                .map_err(db_err)?;
            Ok(client
                .query_opt(&stmt, &[&sop_instance_uid])
                .await
                .map_err(db_err)?
                .map(|r| r.get(0)))
        })
        .await
    }

    async fn all_instances(&self) -> IndexResult<Vec<StoredInstance>> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(&self.sql.select_all_stored, &[])
                .await
                .map_err(db_err)?;
            Ok(rows.iter().map(stored_from_row).collect())
        })
        .await
    }

    async fn counts(&self) -> IndexResult<IndexCounts> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let row = client
                .query_one(schema::SELECT_COUNTS, &[])
                .await
                .map_err(db_err)?;
            Ok(IndexCounts {
                patients: row.get(0),
                studies: row.get(1),
                series: row.get(2),
                instances: row.get(3),
            })
        })
        .await
    }
}

/// Runs one statement of the shared form on `client` (a pooled connection or a transaction).
async fn execute<C: GenericClient>(
    client: &C,
    sql: Sql<'_>,
    params: &[SqlValue],
) -> IndexResult<Executed> {
    let stmt = client
        .prepare_cached(&Dialect::Postgres.render(sql.text()))
        .await
        .map_err(db_err)?;
    let refs = refs(params);
    if stmt.columns().is_empty() {
        let rows_affected = client.execute(&stmt, &refs).await.map_err(db_err)?;
        return Ok(Executed {
            rows_affected,
            rows: Vec::new(),
        });
    }
    let rows = client.query(&stmt, &refs).await.map_err(db_err)?;
    let rows = rows
        .iter()
        .map(row_values)
        .collect::<IndexResult<Vec<_>>>()?;
    Ok(Executed {
        rows_affected: rows.len() as u64,
        rows,
    })
}

/// The node's LISTEN connection, until the index is dropped: every notification on
/// [`changes::CHANNEL`] goes to the subscribers; so does [`Changed::All`] once LISTENing
/// (after every reconnection, since notifications sent meanwhile are lost) and every
/// [`changes::POSTGRES_RESYNC`], when the connection is also checked.
async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    subscribers: Weak<broadcast::Sender<Changed>>,
) {
    use futures::StreamExt;
    let tell = |changed: Changed| match subscribers.upgrade() {
        Some(tx) => {
            let _ = tx.send(changed);
            true
        }
        None => false,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (notes, mut noted) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                let _ = notes.send(n.payload().to_string());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %with_causes(&e), "change notifications: connection failed");
                                return;
                            }
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {}", changes::CHANNEL))
                    .await
                {
                    Ok(()) => {
                        tracing::debug!("listening for changes of shared state");
                        backoff = Duration::from_millis(100);
                        if !tell(Changed::All) {
                            driver.abort();
                            return;
                        }
                        let mut tick = tokio::time::interval(changes::POSTGRES_RESYNC);
                        tick.tick().await;
                        loop {
                            tokio::select! {
                                note = noted.recv() => {
                                    let Some(payload) = note else { break };
                                    let changed = Change::parse(&payload).map_or(Changed::All, Changed::One);
                                    if !tell(changed) {
                                        driver.abort();
                                        return;
                                    }
                                }
                                _ = tick.tick() => {
                                    if !tell(Changed::All) {
                                        driver.abort();
                                        return;
                                    }
                                    // a connection that died silently is noticed here
                                    let ping = tokio::time::timeout(
                                        Duration::from_secs(5),
                                        client.batch_execute("SELECT 1"),
                                    );
                                    if !matches!(ping.await, Ok(Ok(()))) {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %db_err(e), "change notifications: LISTEN failed")
                    }
                }
                driver.abort();
                tracing::warn!("change notifications: connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %with_causes(&e), "change notifications: cannot connect")
            }
        }
        if subscribers.strong_count() == 0 {
            return;
        }
        // meanwhile, the subscribers reload on their own rhythm
        tell(Changed::All);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(changes::POSTGRES_RESYNC);
    }
}

/// A result row as [`SqlValue`]s (integers of any width, bytea, everything else as text).
fn row_values(row: &Row) -> IndexResult<Vec<SqlValue>> {
    use tokio_postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let t = column.type_();
        let v = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)
                .map(|v| v.map(SqlValue::Int))
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| SqlValue::Int(v as i64)))
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| SqlValue::Int(v as i64)))
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| SqlValue::Int(v as i64)))
        } else if *t == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)
                .map(|v| v.map(SqlValue::Blob))
        } else {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.map(SqlValue::Text))
        }
        .map_err(db_err)?;
        values.push(v.unwrap_or(SqlValue::Null));
    }
    Ok(values)
}

fn refs(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Binds as the type PostgreSQL gave the parameter: an integer as INT8, INT4 or INT2 (out of
/// range is an error, never a silent truncation), text as text, bytes as BYTEA.
impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::{IsNull, Type};
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("cannot bind an integer as {ty}").into()),
            },
            SqlValue::Text(t) => t.to_sql(ty, out),
            SqlValue::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
