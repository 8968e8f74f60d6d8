//! The index schema, its versioned migrations and the SQL both backends share.
//!
//! Statements are written once, with `?1`-style parameters and a few dialect placeholders
//! (`{pk}`, `{blob}`, `{big}`); [`Dialect::render`] turns them into SQLite or PostgreSQL.

use std::sync::LazyLock;

use super::attributes::{self, Declared, Kind, Level};
use super::{normalize_name, InstanceRecord, SqlValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's clock in milliseconds since the Unix epoch, as an SQL expression
    /// (`{clock_ms}` in the shared form): the time of every node sharing a PostgreSQL
    /// database comes from the server, not from each node's own clock.
    pub fn clock_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Dialect::Postgres => {
                "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)"
            }
        }
    }

    /// Renders a shared statement for this dialect.
    pub fn render(self, sql: &str) -> String {
        let (pk, blob, big) = match self {
            Dialect::Sqlite => ("INTEGER PRIMARY KEY", "BLOB", "INTEGER"),
            Dialect::Postgres => (
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "BYTEA",
                "BIGINT",
            ),
        };
        let sql = sql
            .replace("{pk}", pk)
            .replace("{blob}", blob)
            .replace("{big}", big)
            .replace("{clock_ms}", self.clock_ms());
        match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => question_to_dollar(&sql),
        }
    }
}

/// `?1` → `$1` (PostgreSQL's parameter syntax).
fn question_to_dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// One migration: its version and statements. Migrations are applied in order, each in a
/// transaction, and recorded in `schema_migrations`. Never edit a released migration: add one.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub statements: &'static [&'static str],
    /// Statements for one dialect only (indexes that need operator classes, pragmas...).
    pub postgres_only: &'static [&'static str],
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "patients, studies, series, instances, metadata",
    statements: &[
        "CREATE TABLE patients (
            pk {pk},
            {declared:patient},
            UNIQUE (patient_id, issuer_of_patient_id)
        )",
        // Patient attributes are copied into the study row so that the study list (the query
        // viewers run most) reads one table.
        "CREATE TABLE studies (
            pk {pk},
            patient_pk {big} NOT NULL REFERENCES patients (pk),
            {declared:study},
            {declared:patient_copy},
            created_at_ms {big} NOT NULL
        )",
        "CREATE TABLE series (
            pk {pk},
            study_pk {big} NOT NULL REFERENCES studies (pk),
            {declared:series},
            created_at_ms {big} NOT NULL
        )",
        "CREATE TABLE instances (
            pk {pk},
            series_pk {big} NOT NULL REFERENCES series (pk),
            study_pk {big} NOT NULL REFERENCES studies (pk),
            {declared:instance},
            object_key TEXT NOT NULL,
            size_bytes {big} NOT NULL,
            sha256 TEXT NOT NULL,
            received_at_ms {big} NOT NULL,
            source_ae TEXT NOT NULL
        )",
        // Metadata and frame positions are read per instance or per series, never scanned:
        // a table of their own keeps the instance table narrow.
        "CREATE TABLE instance_metadata (
            instance_pk {big} PRIMARY KEY REFERENCES instances (pk) ON DELETE CASCADE,
            metadata_json {blob} NOT NULL,
            frames_json TEXT NOT NULL
        )",
        "CREATE INDEX studies_patient_pk ON studies (patient_pk)",
        "CREATE INDEX patients_patient_name_norm ON patients (patient_name_norm)",
        "CREATE INDEX studies_patient_name_norm ON studies (patient_name_norm)",
        "CREATE INDEX studies_patient_id ON studies (patient_id)",
        // the study list's order (newest first): a backward scan of this index
        "CREATE INDEX studies_study_date ON studies (study_date, study_time, pk)",
        "CREATE INDEX studies_accession_number ON studies (accession_number)",
        "CREATE INDEX series_study_pk ON series (study_pk, series_number)",
        "CREATE INDEX series_number ON series (series_number, pk)",
        "CREATE INDEX series_modality ON series (modality)",
        "CREATE INDEX instances_series_pk ON instances (series_pk, instance_number)",
        "CREATE INDEX instances_series_first ON instances (series_pk, pk)",
        "CREATE INDEX instances_study_pk ON instances (study_pk, pk)",
        "CREATE INDEX instances_received ON instances (received_at_ms)",
    ],
    postgres_only: &[
        // Prefix wildcard matching (`DOE*` → LIKE 'DOE%') needs a pattern-ops index in
        // PostgreSQL unless the database uses the C collation.
        "CREATE INDEX studies_patient_name_prefix ON studies (patient_name_norm text_pattern_ops)",
        "CREATE INDEX studies_patient_id_prefix ON studies (patient_id text_pattern_ops)",
        "CREATE INDEX studies_accession_prefix ON studies (accession_number text_pattern_ops)",
    ],
},
Migration {
    version: 2,
    description: "registry of remote AEs",
    statements: &[
        // `allow` is a comma-separated list of operations (echo,store,find,move,get);
        // `source` says who last wrote the row: 'config' rows follow the configuration file
        // at startup, 'api' rows were changed by an administrator and are left alone.
        "CREATE TABLE remote_aes (
            title TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            port {big} NOT NULL,
            description TEXT NOT NULL,
            allow TEXT NOT NULL,
            move_destination {big} NOT NULL,
            check_host {big} NOT NULL,
            source TEXT NOT NULL,
            updated_at_ms {big} NOT NULL
        )",
    ],
    postgres_only: &[],
},
Migration {
    version: 3,
    description: "AI: series completion watch and job queue",
    statements: &[
        // One row per series that received instances since AI was enabled: when the last one
        // arrived, and whether its jobs were created for that state of the series.
        "CREATE TABLE ai_series_watch (
            series_pk {big} PRIMARY KEY REFERENCES series (pk),
            last_received_ms {big} NOT NULL,
            routed_at_ms {big} NOT NULL
        )",
        "CREATE INDEX ai_series_watch_pending ON ai_series_watch (routed_at_ms, last_received_ms)",
        // The job queue. (series, model, model_version, run) is unique: analysing the same
        // series with the same model again makes a new run (and a new SEG series), never a
        // silent duplicate. state: queued, running, succeeded, failed, dead, cancelled.
        "CREATE TABLE ai_jobs (
            pk {pk},
            study_instance_uid TEXT NOT NULL,
            series_instance_uid TEXT NOT NULL,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            run {big} NOT NULL,
            state TEXT NOT NULL,
            attempts {big} NOT NULL,
            max_attempts {big} NOT NULL,
            not_before_ms {big} NOT NULL,
            lease_owner TEXT NOT NULL,
            lease_expires_ms {big} NOT NULL,
            error TEXT NOT NULL,
            result_json TEXT NOT NULL,
            created_at_ms {big} NOT NULL,
            started_at_ms {big} NOT NULL,
            finished_at_ms {big} NOT NULL,
            UNIQUE (series_instance_uid, model, model_version, run)
        )",
        "CREATE INDEX ai_jobs_ready ON ai_jobs (state, not_before_ms, pk)",
        "CREATE TABLE node_settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )",
    ],
    postgres_only: &[],
},
Migration {
    version: 4,
    description: "instances stored by an authenticated AI worker",
    statements: &[
        "ALTER TABLE instances ADD COLUMN ai_output {big} NOT NULL DEFAULT 0",
        // Until now AI output was told by the calling AE recorded for the worker's stores.
        "UPDATE instances SET ai_output = 1 WHERE source_ae = 'PACS-AI'",
        "UPDATE instances SET source_ae = '' WHERE ai_output = 1",
    ],
    postgres_only: &[],
},
Migration {
    version: 5,
    description: "local users and API keys",
    statements: &[
        // `roles` is a comma-separated list of role names (src/auth/permissions.rs).
        // `password_hash` is an Argon2id PHC string; `generation` changes with every password
        // change, and login tokens carry the generation they were issued under.
        "CREATE TABLE users (
            name TEXT PRIMARY KEY,
            roles TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            generation {big} NOT NULL,
            created_at_ms {big} NOT NULL,
            updated_at_ms {big} NOT NULL
        )",
        // Keys are 256 random bits: stored as their SHA-256 (hex), looked up by it.
        "CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            roles TEXT NOT NULL,
            created_at_ms {big} NOT NULL,
            revoked_at_ms {big}
        )",
        "ALTER TABLE remote_aes ADD COLUMN roles TEXT NOT NULL DEFAULT ''",
    ],
    postgres_only: &[],
},
Migration {
    version: 6,
    description: "AEs reached and accepted only over TLS",
    // 1: the AE is accepted only on the DIMSE TLS listener and the node connects to it over TLS
    statements: &["ALTER TABLE remote_aes ADD COLUMN tls {big} NOT NULL DEFAULT 0"],
    postgres_only: &[],
},
Migration {
    version: 7,
    description: "audit trail (DICOM audit messages, hash-chained)",
    // Self-contained: needs nothing of a later migration. One row per audit message, in the
    // order of `seq` (1, 2, 3... with no gap: the chain's order); `hash` is the SHA-256 (hex)
    // of `prev_hash` and the row's canonical content (crate::index::audit::chain_hash), so an
    // altered or deleted row breaks the chain. `study_uids` is `,uid1,uid2,` (matched with
    // LIKE '%,uid,%'); `xml` is the DICOM audit message (PS3.15 A.5).
    statements: &[
        "CREATE TABLE audit_log (
            seq {big} PRIMARY KEY,
            time_ms {big} NOT NULL,
            event TEXT NOT NULL,
            outcome {big} NOT NULL,
            user_id TEXT NOT NULL,
            ae_title TEXT NOT NULL,
            address TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            patient_name TEXT NOT NULL,
            study_uids TEXT NOT NULL,
            xml TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )",
        "CREATE INDEX audit_log_time ON audit_log (time_ms, seq)",
        "CREATE INDEX audit_log_patient ON audit_log (patient_id, seq)",
    ],
    postgres_only: &[],
},
Migration {
    version: 8,
    description: "de-identified exports and the re-identification table",
    statements: &[
        // One row per export job (crate::export): the request as JSON, who asked, progress.
        // state: queued, running, succeeded, failed, cancelled.
        "CREATE TABLE exports (
            pk {pk},
            state TEXT NOT NULL,
            request_json TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            roles TEXT NOT NULL,
            address TEXT NOT NULL,
            destination TEXT NOT NULL,
            instances_total {big} NOT NULL DEFAULT 0,
            instances_done {big} NOT NULL DEFAULT 0,
            instances_failed {big} NOT NULL DEFAULT 0,
            bytes_done {big} NOT NULL DEFAULT 0,
            errors_json TEXT NOT NULL DEFAULT '[]',
            error TEXT NOT NULL DEFAULT '',
            archive_path TEXT NOT NULL DEFAULT '',
            created_at_ms {big} NOT NULL,
            started_at_ms {big} NOT NULL DEFAULT 0,
            finished_at_ms {big} NOT NULL DEFAULT 0
        )",
        // original identifier -> pseudonym (kind: patient_id, patient_name, study_uid)
        "CREATE TABLE reidentification (
            kind TEXT NOT NULL,
            original TEXT NOT NULL,
            pseudonym TEXT NOT NULL,
            first_export {big} NOT NULL,
            created_at_ms {big} NOT NULL,
            PRIMARY KEY (kind, original)
        )",
    ],
    postgres_only: &[],
},
Migration {
    version: 9,
    description: "measurements of structured reports, followed over time",
    // One row per numeric measurement of an SR (crate::index::measurements), written in the
    // SR's own transaction and removed with its instance row. Patient, study and date are
    // copied in so that a patient's trend reads this table alone; `value` is the decimal text
    // of the value (exact, as SqlValue has no floating point).
    statements: &[
        "CREATE TABLE measurements (
            pk {pk},
            instance_pk {big} NOT NULL REFERENCES instances (pk) ON DELETE CASCADE,
            patient_id TEXT NOT NULL,
            issuer_of_patient_id TEXT NOT NULL,
            study_instance_uid TEXT NOT NULL,
            study_date TEXT NOT NULL,
            sr_instance_uid TEXT NOT NULL,
            source_series_uid TEXT NOT NULL,
            tracking_id TEXT NOT NULL,
            tracking_uid TEXT NOT NULL,
            finding_code TEXT NOT NULL,
            finding_scheme TEXT NOT NULL,
            finding_meaning TEXT NOT NULL,
            site_code TEXT NOT NULL,
            site_scheme TEXT NOT NULL,
            site_meaning TEXT NOT NULL,
            concept_code TEXT NOT NULL,
            concept_scheme TEXT NOT NULL,
            concept_meaning TEXT NOT NULL,
            derivation_code TEXT NOT NULL,
            derivation_scheme TEXT NOT NULL,
            derivation_meaning TEXT NOT NULL,
            value TEXT NOT NULL,
            unit_code TEXT NOT NULL,
            unit_scheme TEXT NOT NULL,
            unit_meaning TEXT NOT NULL,
            ordinal {big} NOT NULL
        )",
        "CREATE INDEX measurements_patient ON measurements (patient_id, study_date)",
        "CREATE INDEX measurements_instance ON measurements (instance_pk)",
        "CREATE INDEX measurements_sr ON measurements (sr_instance_uid)",
    ],
    postgres_only: &[],
},
Migration {
    version: 10,
    description: "the nodes sharing the index; AI jobs by study and by model",
    statements: &[
        // One row per node (crate::nodes), written by its heartbeat every few seconds with
        // the database's clock; the console's node page lists those seen in the last minute.
        "CREATE TABLE cluster_nodes (
            node_id TEXT PRIMARY KEY,
            ae_title TEXT NOT NULL,
            version TEXT NOT NULL,
            http_address TEXT NOT NULL,
            ready {big} NOT NULL,
            started_at_ms {big} NOT NULL,
            last_seen_ms {big} NOT NULL
        )",
        "CREATE INDEX cluster_nodes_seen ON cluster_nodes (last_seen_ms)",
        // GET /api/ai/jobs?study=, the study page's job history
        "CREATE INDEX ai_jobs_study ON ai_jobs (study_instance_uid, pk)",
        // GET /api/ai/models: the latencies of each model's recent jobs
        "CREATE INDEX ai_jobs_model_finished ON ai_jobs (model, finished_at_ms)",
    ],
    postgres_only: &[],
}];

/// The statements of a migration for `dialect`: its own (with the declared columns of the
/// tables it creates expanded, see [`super::attributes`]), then an `ALTER TABLE` for each
/// attribute declared `since` this migration in a table an earlier one created.
pub fn migration_statements(m: &Migration, dialect: Dialect) -> Vec<String> {
    let expand = |sql: &str| -> String {
        let mut sql = sql.to_string();
        for (placeholder, level, copies) in [
            ("{declared:patient}", Level::Patient, false),
            ("{declared:patient_copy}", Level::Patient, true),
            ("{declared:study}", Level::Study, false),
            ("{declared:series}", Level::Series, false),
            ("{declared:instance}", Level::Instance, false),
        ] {
            if sql.contains(placeholder) {
                let columns: Vec<String> = attributes::of_level(level)
                    .filter(|(_, d)| d.since <= m.version && (!copies || d.queryable))
                    .flat_map(|(_, d)| d.column_definitions())
                    .collect();
                sql = sql.replace(placeholder, &columns.join(",\n            "));
            }
        }
        dialect.render(&sql)
    };
    let mut out: Vec<String> = m.statements.iter().map(|s| expand(s)).collect();
    if dialect == Dialect::Postgres {
        out.extend(m.postgres_only.iter().map(|s| expand(s)));
    }
    if m.version > 1 {
        for d in attributes::DECLARED.iter().filter(|d| d.since == m.version) {
            for table in tables_of(d) {
                for def in d.column_definitions() {
                    // rows indexed before have no value: empty text, NULL integers
                    let default = if def.ends_with("NOT NULL") {
                        " DEFAULT ''"
                    } else {
                        ""
                    };
                    out.push(format!("ALTER TABLE {table} ADD COLUMN {def}{default}"));
                }
            }
        }
    }
    out
}

/// The tables holding a declared attribute's column(s).
fn tables_of(d: &Declared) -> Vec<&'static str> {
    match d.level {
        Level::Patient if d.queryable => vec!["patients", "studies"],
        Level::Patient => vec!["patients"],
        Level::Study => vec!["studies"],
        Level::Series => vec!["series"],
        Level::Instance => vec!["instances"],
    }
}

pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version {big} PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at_ms {big} NOT NULL
)";

pub const SELECT_SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
pub const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?1, ?2, ?3)";

/// The FROM clause of everything selected per instance: an instance with its series and
/// study (aliases `i`, `se`, `st`).
pub const INSTANCE_SCOPE: &str =
    "instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = i.study_pk";

pub const SELECT_PATIENT: &str =
    "SELECT pk FROM patients WHERE patient_id = ?1 AND issuer_of_patient_id = ?2";
pub const SELECT_STUDY: &str = "SELECT pk FROM studies WHERE study_instance_uid = ?1";
pub const SELECT_SERIES: &str = "SELECT pk FROM series WHERE series_instance_uid = ?1";

/// Columns written by an INSERT of one level's row: the fixed ones around the declared ones.
fn insert_columns(level: Level) -> Vec<String> {
    let declared = |level: Level, copies: bool| -> Vec<String> {
        attributes::of_level(level)
            .filter(|(_, d)| !copies || d.queryable)
            .flat_map(|(_, d)| d.column_names())
            .collect()
    };
    let fixed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match level {
        Level::Patient => declared(Level::Patient, false),
        Level::Study => [
            fixed(&["patient_pk"]),
            declared(Level::Study, false),
            declared(Level::Patient, true),
            fixed(&["created_at_ms"]),
        ]
        .concat(),
        Level::Series => [
            fixed(&["study_pk"]),
            declared(Level::Series, false),
            fixed(&["created_at_ms"]),
        ]
        .concat(),
        Level::Instance => [
            fixed(&["series_pk", "study_pk"]),
            declared(Level::Instance, false),
            fixed(&[
                "object_key",
                "size_bytes",
                "sha256",
                "received_at_ms",
                "source_ae",
                "ai_output",
            ]),
        ]
        .concat(),
    }
}

fn insert_sql(level: Level) -> String {
    let (table, key) = match level {
        Level::Patient => ("patients", "patient_id, issuer_of_patient_id"),
        Level::Study => ("studies", "study_instance_uid"),
        Level::Series => ("series", "series_instance_uid"),
        Level::Instance => ("instances", "sop_instance_uid"),
    };
    let columns = insert_columns(level);
    let mut n = 0;
    let values: Vec<String> = columns
        .iter()
        .map(|c| {
            if CLOCK_COLUMNS.contains(&c.as_str()) {
                "{clock_ms}".to_string()
            } else {
                n += 1;
                format!("?{n}")
            }
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({key}) DO NOTHING RETURNING pk",
        columns.join(", "),
        values.join(", ")
    )
}

/// Columns set to the database's clock when a row is inserted, never bound: arrival and
/// creation times come from the database (see [`Dialect::clock_ms`]), so that the series
/// completion of several nodes compares times of one clock.
const CLOCK_COLUMNS: &[&str] = &["created_at_ms", "received_at_ms"];

/// The number of parameters of a level's INSERT.
fn insert_params(level: Level) -> usize {
    insert_columns(level)
        .iter()
        .filter(|c| !CLOCK_COLUMNS.contains(&c.as_str()))
        .count()
}

/// The INSERT of each level's row (shared form), built from the declaration.
pub static INSERT_PATIENT: LazyLock<String> = LazyLock::new(|| insert_sql(Level::Patient));
pub static INSERT_STUDY: LazyLock<String> = LazyLock::new(|| insert_sql(Level::Study));
pub static INSERT_SERIES: LazyLock<String> = LazyLock::new(|| insert_sql(Level::Series));
pub static INSERT_INSTANCE: LazyLock<String> = LazyLock::new(|| insert_sql(Level::Instance));

/// The declared values of one level, with the upper-cased form after each normalised PN.
fn declared_values(values: &[SqlValue], level: Level, copies: bool) -> Vec<SqlValue> {
    let mut out = Vec::new();
    for (i, d) in attributes::of_level(level) {
        if copies && !d.queryable {
            continue;
        }
        out.push(values[i].clone());
        if d.kind == (Kind::PersonName { normalized: true }) {
            let norm = match &values[i] {
                SqlValue::Text(t) => normalize_name(t),
                _ => String::new(),
            };
            out.push(SqlValue::Text(norm));
        }
    }
    out
}

/// The parameters of [`INSERT_PATIENT`], [`INSERT_STUDY`], [`INSERT_SERIES`] and
/// [`INSERT_INSTANCE`] for a record, given the keys of the rows above it: both backends bind
/// these.
pub struct InsertValues<'a> {
    r: &'a InstanceRecord,
    values: Vec<SqlValue>,
}

impl<'a> InsertValues<'a> {
    pub fn new(r: &'a InstanceRecord) -> InsertValues<'a> {
        InsertValues {
            r,
            values: r.attribute_values(),
        }
    }

    pub fn patient(&self) -> Vec<SqlValue> {
        declared_values(&self.values, Level::Patient, false)
    }

    pub fn study(&self, patient_pk: i64) -> Vec<SqlValue> {
        [
            vec![SqlValue::Int(patient_pk)],
            declared_values(&self.values, Level::Study, false),
            declared_values(&self.values, Level::Patient, true),
        ]
        .concat()
    }

    pub fn series(&self, study_pk: i64) -> Vec<SqlValue> {
        [
            vec![SqlValue::Int(study_pk)],
            declared_values(&self.values, Level::Series, false),
        ]
        .concat()
    }

    pub fn instance(&self, series_pk: i64, study_pk: i64) -> Vec<SqlValue> {
        let r = self.r;
        [
            vec![SqlValue::Int(series_pk), SqlValue::Int(study_pk)],
            declared_values(&self.values, Level::Instance, false),
            vec![
                SqlValue::Text(r.object_key.clone()),
                SqlValue::Int(r.size_bytes),
                SqlValue::Text(r.sha256.clone()),
                SqlValue::Text(r.source_ae.clone()),
                SqlValue::Int(r.ai_output as i64),
            ],
        ]
        .concat()
    }
}

/// The keys of an instance's patient, study and series (NULL for those not indexed yet).
pub const SELECT_PARENTS: &str = "SELECT
    (SELECT pk FROM patients WHERE patient_id = ?1 AND issuer_of_patient_id = ?2),
    (SELECT pk FROM studies WHERE study_instance_uid = ?3),
    (SELECT pk FROM series WHERE series_instance_uid = ?4)";

/// [`INSERT_INSTANCE`] and the metadata row in one statement, its parameters followed by the
/// metadata's; no row when the instance was there. PostgreSQL only (SQLite has no INSERT in a
/// WITH clause, and needs none: its writes are in-process).
pub static INSERT_INSTANCE_AND_METADATA: LazyLock<String> = LazyLock::new(|| {
    let n = insert_params(Level::Instance);
    format!(
        "WITH inserted AS ({}) INSERT INTO instance_metadata (instance_pk, metadata_json, frames_json)
         SELECT pk, CAST(?{} AS {{blob}}), CAST(?{} AS TEXT) FROM inserted RETURNING instance_pk",
        *INSERT_INSTANCE,
        n + 1,
        n + 2
    )
});

pub const INSERT_METADATA: &str =
    "INSERT INTO instance_metadata (instance_pk, metadata_json, frames_json) VALUES (?1, ?2, ?3)";

pub const DELETE_INSTANCE_BY_UID: &str = "DELETE FROM instances WHERE sop_instance_uid = ?1";
pub const DELETE_METADATA_BY_UID: &str = "DELETE FROM instance_metadata WHERE instance_pk IN
    (SELECT pk FROM instances WHERE sop_instance_uid = ?1)";

const STORED_INSTANCE_COLUMNS: &str = "i.sop_instance_uid, i.sop_class_uid,
    st.study_instance_uid, se.series_instance_uid, i.transfer_syntax_uid, i.object_key,
    i.size_bytes, i.sha256, i.source_ae, i.received_at_ms, i.ai_output";

pub fn select_stored_instance_by_uid() -> String {
    format!("SELECT {STORED_INSTANCE_COLUMNS} FROM {INSTANCE_SCOPE} WHERE i.sop_instance_uid = ?1")
}

pub fn select_all_stored_instances() -> String {
    format!("SELECT {STORED_INSTANCE_COLUMNS} FROM {INSTANCE_SCOPE} ORDER BY i.sop_instance_uid")
}

pub const SELECT_METADATA_BY_UID: &str = "SELECT m.metadata_json FROM instance_metadata m
    JOIN instances i ON i.pk = m.instance_pk WHERE i.sop_instance_uid = ?1";
pub const SELECT_FRAMES_BY_UID: &str = "SELECT m.frames_json FROM instance_metadata m
    JOIN instances i ON i.pk = m.instance_pk WHERE i.sop_instance_uid = ?1";

pub const SELECT_COUNTS: &str = "SELECT
    (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies),
    (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances)";

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of migration 1 as released, before the attribute declaration: what the
    /// declaration expands to must not change the schema of existing databases.
    const RELEASED_TABLES: &[&str] = &[
        "CREATE TABLE patients ( pk {pk}, patient_id TEXT NOT NULL, issuer_of_patient_id TEXT NOT NULL, patient_name TEXT NOT NULL, patient_name_norm TEXT NOT NULL, patient_birth_date TEXT NOT NULL, patient_sex TEXT NOT NULL, UNIQUE (patient_id, issuer_of_patient_id) )",
        "CREATE TABLE studies ( pk {pk}, patient_pk {big} NOT NULL REFERENCES patients (pk), study_instance_uid TEXT NOT NULL UNIQUE, study_date TEXT NOT NULL, study_time TEXT NOT NULL, accession_number TEXT NOT NULL, referring_physician_name TEXT NOT NULL, study_description TEXT NOT NULL, study_id TEXT NOT NULL, patient_id TEXT NOT NULL, patient_name TEXT NOT NULL, patient_name_norm TEXT NOT NULL, patient_birth_date TEXT NOT NULL, patient_sex TEXT NOT NULL, created_at_ms {big} NOT NULL )",
        "CREATE TABLE series ( pk {pk}, study_pk {big} NOT NULL REFERENCES studies (pk), series_instance_uid TEXT NOT NULL UNIQUE, modality TEXT NOT NULL, series_number INTEGER, series_description TEXT NOT NULL, series_date TEXT NOT NULL, series_time TEXT NOT NULL, body_part_examined TEXT NOT NULL, created_at_ms {big} NOT NULL )",
        "CREATE TABLE instances ( pk {pk}, series_pk {big} NOT NULL REFERENCES series (pk), study_pk {big} NOT NULL REFERENCES studies (pk), sop_instance_uid TEXT NOT NULL UNIQUE, sop_class_uid TEXT NOT NULL, instance_number INTEGER, transfer_syntax_uid TEXT NOT NULL, rows_ INTEGER, columns_ INTEGER, number_of_frames INTEGER, bits_allocated INTEGER, object_key TEXT NOT NULL, size_bytes {big} NOT NULL, sha256 TEXT NOT NULL, received_at_ms {big} NOT NULL, source_ae TEXT NOT NULL )",
    ];

    #[test]
    fn declared_columns_expand_to_the_released_schema() {
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let generated = migration_statements(&MIGRATIONS[0], dialect);
            for released in RELEASED_TABLES {
                let expected = words(&dialect.render(released));
                assert!(
                    generated.iter().any(|g| words(g) == expected),
                    "{dialect:?}: no statement matches {expected}"
                );
            }
        }
    }

    #[test]
    fn every_declared_attribute_has_its_migration() {
        for d in attributes::DECLARED {
            assert!(
                MIGRATIONS.iter().any(|m| m.version == d.since),
                "{} is declared since migration {}, which does not exist",
                d.keyword(),
                d.since
            );
        }
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(
            versions.windows(2).all(|w| w[1] == w[0] + 1),
            "{versions:?}"
        );
    }

    #[test]
    fn inserts_bind_one_value_per_column() {
        let r = InstanceRecord::default();
        let v = InsertValues::new(&r);
        for (sql, n, clocks) in [
            (&*INSERT_PATIENT, v.patient().len(), 0),
            (&*INSERT_STUDY, v.study(1).len(), 1),
            (&*INSERT_SERIES, v.series(1).len(), 1),
            (&*INSERT_INSTANCE, v.instance(1, 2).len(), 1),
        ] {
            assert!(
                sql.contains(&format!("?{n},")) || sql.contains(&format!("?{n})")),
                "{sql}"
            );
            assert!(!sql.contains(&format!("?{}", n + 1)), "{sql}");
            // the times are the database's
            assert_eq!(sql.matches("{clock_ms}").count(), clocks, "{sql}");
        }
        assert!(INSERT_INSTANCE_AND_METADATA.contains(&format!("?{}", v.instance(1, 2).len() + 2)));
    }

    #[test]
    fn the_clock_is_the_databases() {
        let sql = "UPDATE t SET at = {clock_ms} WHERE at < {clock_ms} - ?1";
        assert_eq!(
            Dialect::Postgres.render(sql),
            "UPDATE t SET at = CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) \
             WHERE at < CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) - $1"
        );
        assert!(Dialect::Sqlite.render(sql).contains("unixepoch('subsec')"));
    }

    #[test]
    fn renders_parameters_and_types_per_dialect() {
        let sql = "INSERT INTO t (a {big}) VALUES (?1, ?12) -- ? alone";
        assert_eq!(
            Dialect::Postgres.render(sql),
            "INSERT INTO t (a BIGINT) VALUES ($1, $12) -- ? alone"
        );
        assert_eq!(
            Dialect::Sqlite.render(sql),
            "INSERT INTO t (a INTEGER) VALUES (?1, ?12) -- ? alone"
        );
    }
}
