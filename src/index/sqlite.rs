//! Embedded SQLite index (the default when no database URL is configured).
//!
//! SQLite allows one writer at a time, so all writes go through one thread that commits them in
//! groups: every request waiting when a transaction starts joins it, each inside its own
//! savepoint, and all are answered after the single `COMMIT` (WAL, `synchronous=FULL`) has made
//! them durable. Reads use a small pool of connections of their own (WAL lets them run beside the
//! writer).

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::schema::InsertValues;
use super::schema::{self, Dialect, MIGRATIONS};
use super::{
    Executed, Index, IndexCounts, IndexError, IndexResult, InsertOutcome, InstanceRecord, Sql,
    SqlValue, StoredInstance,
};

/// Largest number of writes committed together.
const MAX_GROUP: usize = 256;

enum WriteJob {
    Execute(
        String,
        Vec<SqlValue>,
        oneshot::Sender<IndexResult<Executed>>,
    ),
    Insert(InstanceRecord, oneshot::Sender<IndexResult<InsertOutcome>>),
    Replace(
        InstanceRecord,
        oneshot::Sender<IndexResult<Option<StoredInstance>>>,
    ),
    Audit(
        Vec<super::audit::NewAuditRecord>,
        oneshot::Sender<IndexResult<Vec<i64>>>,
    ),
    /// Statements in one savepoint; guarded: none when the first changes no row.
    Transaction(Vec<(String, Vec<SqlValue>)>, bool, TransactionReply),
}

type TransactionReply = oneshot::Sender<IndexResult<Option<Vec<Executed>>>>;

pub struct SqliteIndex {
    writer: Mutex<mpsc::Sender<WriteJob>>,
    readers: Arc<ReaderPool>,
    /// Subscribers of [`Index::subscribe`]; the periodic reload starts with the first.
    changes: Arc<tokio::sync::broadcast::Sender<super::Changed>>,
    resync: std::sync::Once,
}

struct ReaderPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn db_err(e: rusqlite::Error) -> IndexError {
    IndexError::Database(e.to_string())
}

fn open_connection(path: &Path) -> IndexResult<Connection> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 10000;
         PRAGMA case_sensitive_like = ON;",
    )
    .map_err(db_err)?;
    Ok(conn)
}

impl SqliteIndex {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> IndexResult<SqliteIndex> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| IndexError::Unavailable(format!("{}: {e}", parent.display())))?;
            }
        }
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| IndexError::Unavailable(e.to_string()))?;
        Ok(SqliteIndex {
            writer: Mutex::new(tx),
            readers: Arc::new(ReaderPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
            changes: Arc::new(super::changes::channel()),
            resync: std::sync::Once::new(),
        })
    }

    fn send(&self, job: WriteJob) -> IndexResult<()> {
        self.writer
            .lock()
            .expect("writer channel lock")
            .send(job)
            .map_err(|_| IndexError::Unavailable("SQLite writer thread has stopped".into()))
    }

    async fn read<T, F>(&self, f: F) -> IndexResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> IndexResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().expect("reader pool lock").pop() {
                Some(c) => c,
                None => open_connection(&pool.path)?,
            };
            let result = f(&conn);
            pool.idle.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| IndexError::Database(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection) -> IndexResult<()> {
    let d = Dialect::Sqlite;
    conn.execute_batch(&d.render(schema::CREATE_MIGRATIONS_TABLE))
        .map_err(db_err)?;
    let current: i64 = conn
        .query_row(schema::SELECT_SCHEMA_VERSION, [], |r| r.get(0))
        .map_err(db_err)?;
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if current > known {
        return Err(IndexError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = conn.transaction().map_err(db_err)?;
        for statement in schema::migration_statements(m, d) {
            tx.execute_batch(&statement).map_err(db_err)?;
        }
        tx.execute(
            schema::RECORD_MIGRATION,
            params![m.version, m.description, now_ms()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::info!(version = m.version, "SQLite index migrated");
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_group(&mut conn, batch);
    }
}

enum Done {
    Execute(
        oneshot::Sender<IndexResult<Executed>>,
        IndexResult<Executed>,
    ),
    Insert(
        oneshot::Sender<IndexResult<InsertOutcome>>,
        IndexResult<InsertOutcome>,
    ),
    Replace(
        oneshot::Sender<IndexResult<Option<StoredInstance>>>,
        IndexResult<Option<StoredInstance>>,
    ),
    Audit(
        oneshot::Sender<IndexResult<Vec<i64>>>,
        IndexResult<Vec<i64>>,
    ),
    Transaction(TransactionReply, IndexResult<Option<Vec<Executed>>>),
}

fn run_group(conn: &mut Connection, batch: Vec<WriteJob>) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db_err(e);
            for job in batch {
                match job {
                    WriteJob::Execute(_, _, reply) => drop(reply.send(Err(clone_err(&err)))),
                    WriteJob::Insert(_, reply) => drop(reply.send(Err(clone_err(&err)))),
                    WriteJob::Replace(_, reply) => drop(reply.send(Err(clone_err(&err)))),
                    WriteJob::Audit(_, reply) => drop(reply.send(Err(clone_err(&err)))),
                    WriteJob::Transaction(_, _, reply) => drop(reply.send(Err(clone_err(&err)))),
                }
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    for (n, job) in batch.into_iter().enumerate() {
        // Each write gets a savepoint, so one failing write does not undo the others.
        let name = format!("w{n}");
        let _ = tx.execute_batch(&format!("SAVEPOINT {name}"));
        let (ok, item) = match job {
            WriteJob::Execute(sql, params, reply) => {
                let r = execute(&tx, &sql, &params);
                (r.is_ok(), Done::Execute(reply, r))
            }
            WriteJob::Insert(record, reply) => {
                let r = insert(&tx, &record);
                (r.is_ok(), Done::Insert(reply, r))
            }
            WriteJob::Replace(record, reply) => {
                let r = replace(&tx, &record);
                (r.is_ok(), Done::Replace(reply, r))
            }
            // The group's transaction began IMMEDIATE: it holds the database's write lock, so
            // no other process appends between reading the chain's tail and the commit.
            WriteJob::Audit(records, reply) => {
                let r = append_audit(&tx, &records);
                (r.is_ok(), Done::Audit(reply, r))
            }
            WriteJob::Transaction(steps, guarded, reply) => {
                let r = transaction(&tx, &steps, guarded);
                // a guard that failed is rolled back too
                (matches!(r, Ok(Some(_))), Done::Transaction(reply, r))
            }
        };
        if ok {
            let _ = tx.execute_batch(&format!("RELEASE {name}"));
        } else {
            let _ = tx.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"));
        }
        done.push(item);
    }
    let committed = tx.commit().map_err(commit_err);
    for item in done {
        match item {
            Done::Execute(reply, r) => {
                let r = match &committed {
                    Ok(()) => r,
                    Err(e) => Err(clone_err(e)),
                };
                let _ = reply.send(r);
            }
            Done::Insert(reply, r) => {
                let r = match &committed {
                    Ok(()) => r,
                    Err(e) => Err(clone_err(e)),
                };
                let _ = reply.send(r);
            }
            Done::Replace(reply, r) => {
                let r = match &committed {
                    Ok(()) => r,
                    Err(e) => Err(clone_err(e)),
                };
                let _ = reply.send(r);
            }
            Done::Audit(reply, r) => {
                let r = match &committed {
                    Ok(()) => r,
                    Err(e) => Err(clone_err(e)),
                };
                let _ = reply.send(r);
            }
            Done::Transaction(reply, r) => {
                let r = match &committed {
                    Ok(()) => r,
                    Err(e) => Err(clone_err(e)),
                };
                let _ = reply.send(r);
            }
        }
    }
}

fn value_of(v: rusqlite::types::ValueRef<'_>) -> SqlValue {
    match v {
        rusqlite::types::ValueRef::Null => SqlValue::Null,
        rusqlite::types::ValueRef::Integer(v) => SqlValue::Int(v),
        rusqlite::types::ValueRef::Real(v) => SqlValue::Int(v as i64),
        rusqlite::types::ValueRef::Text(t) => {
            SqlValue::Text(String::from_utf8_lossy(t).into_owned())
        }
        rusqlite::types::ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

fn param_of(v: &SqlValue) -> rusqlite::types::Value {
    match v {
        SqlValue::Null => rusqlite::types::Value::Null,
        SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
        SqlValue::Text(t) => rusqlite::types::Value::Text(t.clone()),
        SqlValue::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn execute(conn: &Connection, sql: &str, params: &[SqlValue]) -> IndexResult<Executed> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let params = rusqlite::params_from_iter(params.iter().map(param_of));
    let n = stmt.column_count();
    if n == 0 {
        let rows_affected = stmt.execute(params).map_err(db_err)? as u64;
        return Ok(Executed {
            rows_affected,
            rows: Vec::new(),
        });
    }
    let rows = stmt
        .query_map(params, |row| {
            (0..n)
                .map(|i| Ok(value_of(row.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(Executed {
        rows_affected: rows.len() as u64,
        rows,
    })
}

/// The statements of one [`super::Transaction`], in the caller's savepoint.
fn transaction(
    conn: &Connection,
    steps: &[(String, Vec<SqlValue>)],
    guarded: bool,
) -> IndexResult<Option<Vec<Executed>>> {
    let mut done = Vec::with_capacity(steps.len());
    for (i, (sql, params)) in steps.iter().enumerate() {
        let executed = execute(conn, sql, params)?;
        if i == 0 && guarded && executed.rows_affected == 0 {
            return Ok(None);
        }
        done.push(executed);
    }
    Ok(Some(done))
}

fn clone_err(e: &IndexError) -> IndexError {
    match e {
        IndexError::OutcomeUnknown(m) => IndexError::OutcomeUnknown(m.clone()),
        IndexError::Unavailable(m) => IndexError::Unavailable(m.clone()),
        other => IndexError::Database(other.to_string()),
    }
}

/// An error of COMMIT. Busy or locked: the transaction is still open and rolled back when
/// dropped; full: nothing was written. An I/O error may come after the commit record reached
/// the WAL (its sync failed), so whether it counts is unknown.
fn commit_err(e: rusqlite::Error) -> IndexError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => IndexError::Unavailable(e.to_string()),
        Some(DiskFull) => IndexError::Database(e.to_string()),
        Some(SystemIoFailure) | None => IndexError::OutcomeUnknown(e.to_string()),
        Some(_) => IndexError::Database(e.to_string()),
    }
}

fn get_or_insert(
    conn: &Connection,
    select: &str,
    select_params: &[&dyn rusqlite::ToSql],
    insert: &str,
    insert_params: Vec<SqlValue>,
) -> IndexResult<i64> {
    if let Some(pk) = conn
        .prepare_cached(select)
        .map_err(db_err)?
        .query_row(select_params, |r| r.get(0))
        .optional()
        .map_err(db_err)?
    {
        return Ok(pk);
    }
    conn.prepare_cached(insert)
        .map_err(db_err)?
        .query_row(
            rusqlite::params_from_iter(insert_params.iter().map(param_of)),
            |r| r.get(0),
        )
        .map_err(db_err)
}

/// The INSERTs of the four levels, rendered for SQLite (their times are `{clock_ms}`).
static INSERTS: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
    [
        &*schema::INSERT_PATIENT,
        &*schema::INSERT_STUDY,
        &*schema::INSERT_SERIES,
        &*schema::INSERT_INSTANCE,
    ]
    .map(|sql| Dialect::Sqlite.render(sql))
});

static MEASUREMENT_INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| Dialect::Sqlite.render(&super::measurements::INSERT_MEASUREMENT));

fn insert(conn: &Connection, r: &InstanceRecord) -> IndexResult<InsertOutcome> {
    if let Some(existing) = find(conn, &r.sop_instance_uid)? {
        return Ok(InsertOutcome::AlreadyExists(Box::new(existing)));
    }
    let [insert_patient, insert_study, insert_series, insert_instance] = &*INSERTS;
    let values = InsertValues::new(r);
    let patient_pk = get_or_insert(
        conn,
        schema::SELECT_PATIENT,
        params![r.patient_id, r.issuer_of_patient_id],
        insert_patient,
        values.patient(),
    )?;
    let study_pk = get_or_insert(
        conn,
        schema::SELECT_STUDY,
        params![r.study_instance_uid],
        insert_study,
        values.study(patient_pk),
    )?;
    let series_pk = get_or_insert(
        conn,
        schema::SELECT_SERIES,
        params![r.series_instance_uid],
        insert_series,
        values.series(study_pk),
    )?;
    let instance_pk: i64 = conn
        .prepare_cached(insert_instance)
        .map_err(db_err)?
        .query_row(
            rusqlite::params_from_iter(values.instance(series_pk, study_pk).iter().map(param_of)),
            |row| row.get(0),
        )
        .map_err(db_err)?;
    conn.prepare_cached(schema::INSERT_METADATA)
        .map_err(db_err)?
        .execute(params![instance_pk, r.metadata_json, r.frames_json])
        .map_err(db_err)?;
    if !r.measurements.is_empty() {
        let mut insert = conn.prepare_cached(&MEASUREMENT_INSERT).map_err(db_err)?;
        for p in super::measurements::insert_params(r) {
            insert
                .execute(rusqlite::params_from_iter(p.iter().map(param_of)))
                .map_err(db_err)?;
        }
    }
    Ok(InsertOutcome::Inserted)
}

fn replace(conn: &Connection, r: &InstanceRecord) -> IndexResult<Option<StoredInstance>> {
    let previous = find(conn, &r.sop_instance_uid)?;
    if previous.is_some() {
        conn.execute(schema::DELETE_METADATA_BY_UID, params![r.sop_instance_uid])
            .map_err(db_err)?;
        conn.execute(schema::DELETE_INSTANCE_BY_UID, params![r.sop_instance_uid])
            .map_err(db_err)?;
    }
    insert(conn, r)?;
    Ok(previous)
}

fn append_audit(
    conn: &Connection,
    records: &[super::audit::NewAuditRecord],
) -> IndexResult<Vec<i64>> {
    use super::audit;
    let (mut seq, mut hash): (i64, String) = conn
        .query_row(audit::SELECT_AUDIT_TAIL, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err)?
        .unwrap_or((0, audit::GENESIS_HASH.to_string()));
    let mut stmt = conn.prepare_cached(audit::INSERT_AUDIT).map_err(db_err)?;
    let mut done = Vec::with_capacity(records.len());
    for r in records {
        let (params, next) = audit::chained_row(seq, &hash, r);
        stmt.execute(rusqlite::params_from_iter(params.iter().map(param_of)))
            .map_err(db_err)?;
        seq += 1;
        hash = next;
        done.push(seq);
    }
    Ok(done)
}

fn stored_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredInstance> {
    Ok(StoredInstance {
        sop_instance_uid: row.get(0)?,
        sop_class_uid: row.get(1)?,
        study_instance_uid: row.get(2)?,
        series_instance_uid: row.get(3)?,
        transfer_syntax_uid: row.get(4)?,
        object_key: row.get(5)?,
        size_bytes: row.get(6)?,
        sha256: row.get(7)?,
        source_ae: row.get(8)?,
        received_at_ms: row.get(9)?,
        ai_output: row.get::<_, i64>(10)? != 0,
    })
}

fn find(conn: &Connection, sop_instance_uid: &str) -> IndexResult<Option<StoredInstance>> {
    conn.prepare_cached(&schema::select_stored_instance_by_uid())
        .map_err(db_err)?
        .query_row(params![sop_instance_uid], stored_from_row)
        .optional()
        .map_err(db_err)
}

#[async_trait]
impl Index for SqliteIndex {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn fetch(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Vec<Vec<SqlValue>>> {
        let sql = Dialect::Sqlite.render(sql.text());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(params.iter().map(param_of)),
                    |row| {
                        (0..n)
                            .map(|i| Ok(value_of(row.get_ref(i)?)))
                            .collect::<rusqlite::Result<Vec<_>>>()
                    },
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn write(&self, sql: Sql<'_>, params: Vec<SqlValue>) -> IndexResult<Executed> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteJob::Execute(
            Dialect::Sqlite.render(sql.text()),
            params,
            tx,
        ))?;
        rx.await
            .map_err(|_| IndexError::Unavailable("SQLite writer thread has stopped".into()))?
    }

    async fn transact(&self, t: super::Transaction<'_>) -> IndexResult<Option<Vec<Executed>>> {
        let steps = t
            .steps()
            .iter()
            .map(|(sql, params)| (Dialect::Sqlite.render(sql.text()), params.clone()))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.send(WriteJob::Transaction(steps, t.is_guarded(), tx))?;
        let done = rx
            .await
            .map_err(|_| IndexError::Unavailable("SQLite writer dropped a request".into()))??;
        if done.is_some() {
            // committed: one process, so its own subscribers are all there are to tell
            for change in t.announced() {
                let _ = self.changes.send(super::Changed::One(*change));
            }
        }
        Ok(done)
    }

    fn subscribe(&self) -> super::Subscription {
        self.resync.call_once(|| {
            super::changes::spawn_resync(&self.changes, super::changes::SQLITE_RESYNC)
        });
        super::Subscription::new(self.changes.subscribe())
    }

    async fn insert_instance(&self, record: InstanceRecord) -> IndexResult<InsertOutcome> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteJob::Insert(record, tx))?;
        rx.await
            .map_err(|_| IndexError::OutcomeUnknown("SQLite writer dropped a request".into()))?
    }

    async fn replace_instance(
        &self,
        record: InstanceRecord,
    ) -> IndexResult<Option<StoredInstance>> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteJob::Replace(record, tx))?;
        rx.await
            .map_err(|_| IndexError::OutcomeUnknown("SQLite writer dropped a request".into()))?
    }

    async fn append_audit(
        &self,
        records: Vec<super::audit::NewAuditRecord>,
    ) -> IndexResult<Vec<i64>> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteJob::Audit(records, tx))?;
        rx.await
            .map_err(|_| IndexError::Unavailable("SQLite writer dropped a request".into()))?
    }

    async fn find_instance(&self, sop_instance_uid: &str) -> IndexResult<Option<StoredInstance>> {
        let uid = sop_instance_uid.to_string();
        self.read(move |c| find(c, &uid)).await
    }

    async fn instance_metadata(&self, sop_instance_uid: &str) -> IndexResult<Option<Vec<u8>>> {
        let uid = sop_instance_uid.to_string();
        self.read(move |c| {
            c.prepare_cached(schema::SELECT_METADATA_BY_UID)
                .map_err(db_err)?
                .query_row(params![uid], |r| r.get(0))
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn instance_frames(&self, sop_instance_uid: &str) -> IndexResult<Option<String>> {
        let uid = sop_instance_uid.to_string();
        self.read(move |c| {
            c.prepare_cached(schema::SELECT_FRAMES_BY_UID)
                .map_err(db_err)?
                .query_row(params![uid], |r| r.get(0))
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn all_instances(&self) -> IndexResult<Vec<StoredInstance>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&schema::select_all_stored_instances())
                .map_err(db_err)?;
            let rows = stmt.query_map([], stored_from_row).map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn counts(&self) -> IndexResult<IndexCounts> {
        self.read(|c| {
            c.query_row(schema::SELECT_COUNTS, [], |r| {
                Ok(IndexCounts {
                    patients: r.get(0)?,
                    studies: r.get(1)?,
                    series: r.get(2)?,
                    instances: r.get(3)?,
                })
            })
            .map_err(db_err)
        })
        .await
    }
}
