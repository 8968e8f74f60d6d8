//! Typed statements of the audit trail (migration 7): an append-only table of DICOM audit
//! messages, each row chained to the one before by a SHA-256 hash.
//!
//! Appends go through [`Index::append_audit`], which each backend runs in one transaction
//! under the chain's lock (SQLite: the writer thread's `BEGIN IMMEDIATE`; PostgreSQL: a
//! transaction-scoped advisory lock), so that nodes sharing one database still make one chain.
//! What a message says is decided in `crate::audit`; this module only stores and reads rows.
//!
//! For readers that follow the trail (the syslog forwarder): [`Index::audit_records_after`]
//! (`seq`, `time_ms`, `xml` of the rows after a sequence number) and a cursor per reader kept in
//! `node_settings` ([`Index::audit_cursor`], [`Index::set_audit_cursor`]).

use super::{Index, IndexResult, Sql, SqlValue};

/// The hash the first record is chained to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Any constant shared by every node: the advisory lock PostgreSQL appends take.
pub(super) const AUDIT_CHAIN_LOCK: i64 = 0x5041_4353_4155_4449; // "PACSAUDI"

/// A record to append: everything but its place in the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAuditRecord {
    pub time_ms: i64,
    /// The event type name (`query`, `instances-transferred`...).
    pub event: String,
    /// EventOutcomeIndicator: 0, 4, 8 or 12.
    pub outcome: i64,
    /// The requesting user, if any.
    pub user: String,
    /// The requesting (or receiving) AE title, if any.
    pub ae: String,
    /// The requestor's network address.
    pub address: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_uids: Vec<String>,
    /// The DICOM audit message.
    pub xml: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub record: NewAuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// The canonical content a record's hash covers: every column but the hashes, each as its
/// length and bytes, so that no two different records have the same content.
pub fn canonical_content(seq: i64, r: &NewAuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.xml.len() + 256);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(&seq.to_be_bytes());
    field(&r.time_ms.to_be_bytes());
    field(r.event.as_bytes());
    field(&r.outcome.to_be_bytes());
    field(r.user.as_bytes());
    field(r.ae.as_bytes());
    field(r.address.as_bytes());
    field(r.patient_id.as_bytes());
    field(r.patient_name.as_bytes());
    field(studies_column(&r.study_uids).as_bytes());
    field(r.xml.as_bytes());
    out
}

/// SHA-256 (hex) over the previous record's hash and this record's canonical content.
pub fn chain_hash(prev_hash: &str, seq: i64, r: &NewAuditRecord) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical_content(seq, r));
    hex::encode(ctx.finish().as_ref())
}

fn studies_column(uids: &[String]) -> String {
    if uids.is_empty() {
        String::new()
    } else {
        format!(",{},", uids.join(","))
    }
}

/// The last record of the chain: its sequence number and hash.
pub(super) const SELECT_AUDIT_TAIL: &str =
    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_log (seq, time_ms, event, outcome,
    user_id, ae_title, address, patient_id, patient_name, study_uids, xml, prev_hash, hash)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// The parameters of [`INSERT_AUDIT`] for a record chained after (`prev_seq`, `prev_hash`);
/// returns them with the record's hash.
pub(super) fn chained_row(
    prev_seq: i64,
    prev_hash: &str,
    r: &NewAuditRecord,
) -> (Vec<SqlValue>, String) {
    let seq = prev_seq + 1;
    let hash = chain_hash(prev_hash, seq, r);
    let params = vec![
        SqlValue::Int(seq),
        SqlValue::Int(r.time_ms),
        SqlValue::Text(r.event.clone()),
        SqlValue::Int(r.outcome),
        SqlValue::Text(r.user.clone()),
        SqlValue::Text(r.ae.clone()),
        SqlValue::Text(r.address.clone()),
        SqlValue::Text(r.patient_id.clone()),
        SqlValue::Text(r.patient_name.clone()),
        SqlValue::Text(studies_column(&r.study_uids)),
        SqlValue::Text(r.xml.clone()),
        SqlValue::Text(prev_hash.to_string()),
        SqlValue::Text(hash.clone()),
    ];
    (params, hash)
}

const COLUMNS: &str = "seq, time_ms, event, outcome, user_id, ae_title, address, patient_id,
    patient_name, study_uids, xml, prev_hash, hash";

fn text(v: &SqlValue) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn record_from_row(row: &[SqlValue]) -> AuditRecord {
    AuditRecord {
        seq: row[0].as_i64().unwrap_or(0),
        record: NewAuditRecord {
            time_ms: row[1].as_i64().unwrap_or(0),
            event: text(&row[2]),
            outcome: row[3].as_i64().unwrap_or(0),
            user: text(&row[4]),
            ae: text(&row[5]),
            address: text(&row[6]),
            patient_id: text(&row[7]),
            patient_name: text(&row[8]),
            study_uids: text(&row[9])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            xml: text(&row[10]),
        },
        prev_hash: text(&row[11]),
        hash: text(&row[12]),
    }
}

/// What `GET /api/audit` and `pacs audit search` filter on; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub user: Option<String>,
    pub ae: Option<String>,
    pub patient: Option<String>,
    pub study: Option<String>,
    pub event: Option<String>,
    pub outcome: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// A place where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number of the first record that does not follow from the one before.
    pub seq: i64,
    pub reason: String,
}

/// What [`Index::audit_verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub records: u64,
    pub last_seq: i64,
    pub breaks: Vec<ChainBreak>,
}

const VERIFY_PAGE: i64 = 1000;

fn cursor_key(reader: &str) -> String {
    format!("audit.cursor.{reader}")
}

impl dyn Index {
    /// The Patient ID and Patient's Name of a study, if it is indexed (who an audit message
    /// of a read names).
    pub async fn study_patient(&self, study_uid: &str) -> IndexResult<Option<(String, String)>> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT patient_id, patient_name FROM studies WHERE study_instance_uid = ?1",
                ),
                vec![SqlValue::Text(study_uid.to_string())],
            )
            .await?;
        Ok(rows.first().map(|r| (text(&r[0]), text(&r[1]))))
    }

    /// Records matching `filter`, newest first.
    pub async fn audit_search(&self, filter: &AuditFilter) -> IndexResult<Vec<AuditRecord>> {
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<SqlValue> = Vec::new();
        let mut add = |condition: &str, value: SqlValue| {
            params.push(value);
            conditions.push(condition.replace('#', &format!("?{}", params.len())));
        };
        if let Some(v) = filter.from_ms {
            add("time_ms >= #", SqlValue::Int(v));
        }
        if let Some(v) = filter.to_ms {
            add("time_ms <= #", SqlValue::Int(v));
        }
        if let Some(v) = &filter.user {
            add("user_id = #", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &filter.ae {
            add("ae_title = #", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &filter.patient {
            add("patient_id = #", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &filter.study {
            add("study_uids LIKE #", SqlValue::Text(format!("%,{v},%")));
        }
        if let Some(v) = &filter.event {
            add("event = #", SqlValue::Text(v.clone()));
        }
        if let Some(v) = filter.outcome {
            add("outcome = #", SqlValue::Int(v));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let n = params.len();
        sql.push_str(&format!(
            " ORDER BY seq DESC LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        ));
        params.push(SqlValue::Int(filter.limit));
        params.push(SqlValue::Int(filter.offset));
        let rows = self.fetch(Sql::new(&sql), params).await?;
        Ok(rows.iter().map(|r| record_from_row(r)).collect())
    }

    /// Up to `limit` records after sequence number `after`, oldest first: what a forwarder
    /// sends next.
    pub async fn audit_records_after(
        &self,
        after: i64,
        limit: i64,
    ) -> IndexResult<Vec<crate::audit::syslog::SpooledRecord>> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT seq, time_ms, event, outcome, xml FROM audit_log
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                ),
                vec![SqlValue::Int(after), SqlValue::Int(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| crate::audit::syslog::SpooledRecord {
                seq: r[0].as_i64().unwrap_or(0),
                at_ms: r[1].as_i64().unwrap_or(0),
                event: text(&r[2]),
                outcome: u8::try_from(r[3].as_i64().unwrap_or(0)).unwrap_or(12),
                xml: text(&r[4]),
            })
            .collect())
    }

    /// The sequence number a reader (e.g. `syslog`) has handled up to; 0 when it has none.
    /// Kept in `node_settings` under `audit.cursor.<reader>`.
    pub async fn audit_cursor(&self, reader: &str) -> IndexResult<i64> {
        let rows = self
            .fetch(
                Sql::new("SELECT value FROM node_settings WHERE key = ?1"),
                vec![SqlValue::Text(cursor_key(reader))],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r[0].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Moves a reader's cursor forward to `seq` (never back: readers on several nodes share
    /// it).
    pub async fn set_audit_cursor(&self, reader: &str, seq: i64) -> IndexResult<()> {
        self.write(
            Sql::new(
                "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value
                 WHERE CAST(node_settings.value AS BIGINT) < CAST(excluded.value AS BIGINT)",
            ),
            vec![
                SqlValue::Text(cursor_key(reader)),
                SqlValue::Text(seq.to_string()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Walks the whole chain: every record must follow the one before (sequence numbers 1,
    /// 2, 3..., `prev_hash` the previous `hash`, `hash` recomputed from the content).
    pub async fn audit_verify(&self) -> IndexResult<ChainReport> {
        let mut report = ChainReport {
            records: 0,
            last_seq: 0,
            breaks: Vec::new(),
        };
        let mut prev_seq = 0i64;
        let mut prev_hash = GENESIS_HASH.to_string();
        loop {
            let sql =
                format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2");
            let rows = self
                .fetch(
                    Sql::new(&sql),
                    vec![SqlValue::Int(prev_seq), SqlValue::Int(VERIFY_PAGE)],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let r = record_from_row(row);
                if r.seq != prev_seq + 1 {
                    report.breaks.push(ChainBreak {
                        seq: r.seq,
                        reason: format!("records {} to {} are missing", prev_seq + 1, r.seq - 1),
                    });
                } else if r.prev_hash != prev_hash {
                    report.breaks.push(ChainBreak {
                        seq: r.seq,
                        reason: "its previous hash is not the hash of the record before".into(),
                    });
                }
                if chain_hash(&r.prev_hash, r.seq, &r.record) != r.hash {
                    report.breaks.push(ChainBreak {
                        seq: r.seq,
                        reason: "its content does not match its hash (altered)".into(),
                    });
                }
                report.records += 1;
                prev_seq = r.seq;
                prev_hash = r.hash;
            }
        }
        report.last_seq = prev_seq;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let r = NewAuditRecord {
            time_ms: 1,
            event: "query".into(),
            xml: "<AuditMessage/>".into(),
            study_uids: vec!["1.2".into()],
            ..Default::default()
        };
        let h = chain_hash(GENESIS_HASH, 1, &r);
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(GENESIS_HASH, 2, &r));
        assert_ne!(h, chain_hash(&h, 1, &r));
        let mut changed = r.clone();
        changed.user = "mallory".into();
        assert_ne!(h, chain_hash(GENESIS_HASH, 1, &changed));
        // fields do not run into each other
        let mut a = r.clone();
        a.user = "ab".into();
        let mut b = r.clone();
        b.user = "a".into();
        b.ae = "b".into();
        assert_ne!(
            chain_hash(GENESIS_HASH, 1, &a),
            chain_hash(GENESIS_HASH, 1, &b)
        );
    }
}
