//! The index schema, its versioned migrations and the SQL both backends share.
//!
//! Statements are written once, with `?1`-style parameters and a few dialect placeholders
//! (`{pk}`, `{blob}`, `{big}`); [`Dialect::render`] turns them into SQLite or PostgreSQL.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
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
            .replace("{big}", big);
        match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => question_to_dollar(&sql),
        }
    }
}

/// `?n` as a 64-bit integer in a statement run by `Index::select`, whose parameters are text:
/// PostgreSQL will not bind text to a BIGINT comparison, and both backends read this form.
pub fn int_param(n: usize) -> String {
    format!("CAST(CAST(?{n} AS TEXT) AS BIGINT)")
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
            patient_id TEXT NOT NULL,
            issuer_of_patient_id TEXT NOT NULL,
            patient_name TEXT NOT NULL,
            patient_name_norm TEXT NOT NULL,
            patient_birth_date TEXT NOT NULL,
            patient_sex TEXT NOT NULL,
            UNIQUE (patient_id, issuer_of_patient_id)
        )",
        // Patient attributes are copied into the study row so that the study list (the query
        // viewers run most) reads one table.
        "CREATE TABLE studies (
            pk {pk},
            patient_pk {big} NOT NULL REFERENCES patients (pk),
            study_instance_uid TEXT NOT NULL UNIQUE,
            study_date TEXT NOT NULL,
            study_time TEXT NOT NULL,
            accession_number TEXT NOT NULL,
            referring_physician_name TEXT NOT NULL,
            study_description TEXT NOT NULL,
            study_id TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            patient_name TEXT NOT NULL,
            patient_name_norm TEXT NOT NULL,
            patient_birth_date TEXT NOT NULL,
            patient_sex TEXT NOT NULL,
            created_at_ms {big} NOT NULL
        )",
        "CREATE TABLE series (
            pk {pk},
            study_pk {big} NOT NULL REFERENCES studies (pk),
            series_instance_uid TEXT NOT NULL UNIQUE,
            modality TEXT NOT NULL,
            series_number INTEGER,
            series_description TEXT NOT NULL,
            series_date TEXT NOT NULL,
            series_time TEXT NOT NULL,
            body_part_examined TEXT NOT NULL,
            created_at_ms {big} NOT NULL
        )",
        "CREATE TABLE instances (
            pk {pk},
            series_pk {big} NOT NULL REFERENCES series (pk),
            study_pk {big} NOT NULL REFERENCES studies (pk),
            sop_instance_uid TEXT NOT NULL UNIQUE,
            sop_class_uid TEXT NOT NULL,
            instance_number INTEGER,
            transfer_syntax_uid TEXT NOT NULL,
            rows_ INTEGER,
            columns_ INTEGER,
            number_of_frames INTEGER,
            bits_allocated INTEGER,
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
}];

pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version {big} PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at_ms {big} NOT NULL
)";

pub const SELECT_SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
pub const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?1, ?2, ?3)";

pub const SELECT_PATIENT: &str =
    "SELECT pk FROM patients WHERE patient_id = ?1 AND issuer_of_patient_id = ?2";
pub const INSERT_PATIENT: &str = "INSERT INTO patients
    (patient_id, issuer_of_patient_id, patient_name, patient_birth_date, patient_sex, patient_name_norm)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (patient_id, issuer_of_patient_id) DO NOTHING RETURNING pk";

pub const SELECT_STUDY: &str = "SELECT pk FROM studies WHERE study_instance_uid = ?1";
pub const INSERT_STUDY: &str = "INSERT INTO studies
    (patient_pk, study_instance_uid, study_date, study_time, accession_number,
     referring_physician_name, study_description, study_id, patient_id, patient_name,
     patient_name_norm, patient_birth_date, patient_sex, created_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
    ON CONFLICT (study_instance_uid) DO NOTHING RETURNING pk";

pub const SELECT_SERIES: &str = "SELECT pk FROM series WHERE series_instance_uid = ?1";
pub const INSERT_SERIES: &str = "INSERT INTO series
    (study_pk, series_instance_uid, modality, series_number, series_description, series_date,
     series_time, body_part_examined, created_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (series_instance_uid) DO NOTHING RETURNING pk";

pub const INSERT_INSTANCE: &str = "INSERT INTO instances
    (series_pk, study_pk, sop_instance_uid, sop_class_uid, instance_number,
     transfer_syntax_uid, rows_, columns_, number_of_frames, bits_allocated, object_key,
     size_bytes, sha256, received_at_ms, source_ae)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
    ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING pk";

pub const INSERT_METADATA: &str =
    "INSERT INTO instance_metadata (instance_pk, metadata_json, frames_json) VALUES (?1, ?2, ?3)";

pub const DELETE_INSTANCE_BY_UID: &str = "DELETE FROM instances WHERE sop_instance_uid = ?1";
pub const DELETE_METADATA_BY_UID: &str = "DELETE FROM instance_metadata WHERE instance_pk IN
    (SELECT pk FROM instances WHERE sop_instance_uid = ?1)";

const STORED_INSTANCE_COLUMNS: &str = "i.sop_instance_uid, i.sop_class_uid,
    st.study_instance_uid, se.series_instance_uid, i.transfer_syntax_uid, i.object_key,
    i.size_bytes, i.sha256, i.source_ae, i.received_at_ms";

pub fn select_stored_instance_by_uid() -> String {
    format!(
        "SELECT {STORED_INSTANCE_COLUMNS} FROM instances i
         JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = i.study_pk
         WHERE i.sop_instance_uid = ?1"
    )
}

pub fn select_all_stored_instances() -> String {
    format!(
        "SELECT {STORED_INSTANCE_COLUMNS} FROM instances i
         JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = i.study_pk
         ORDER BY i.sop_instance_uid"
    )
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
