//! The measurements index: one row per numeric measurement (TID 300 NUM) of every stored SR,
//! with the patient, study and tracking context a trend needs, so that a patient's
//! measurements over time are one indexed read (`measurements_patient`).
//!
//! Rows are written in the transaction that indexes the SR itself ([`InstanceRecord`]'s
//! `measurements`, filled by `crate::ingest::sr`): the index never holds an SR without its
//! measurements or measurements without their SR. They go with their instance row (`ON
//! DELETE CASCADE`), so replacing or removing an SR replaces or removes them.

use super::{Index, IndexResult, InstanceRecord, Sql, SqlValue};

/// A coded concept (PS3.3 8.8, Code Sequence Macro). Empty strings when absent.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct CodeRef {
    pub code_value: String,
    pub coding_scheme: String,
    pub code_meaning: String,
}

impl CodeRef {
    pub fn new(code_value: &str, coding_scheme: &str, code_meaning: &str) -> CodeRef {
        CodeRef {
            code_value: code_value.into(),
            coding_scheme: coding_scheme.into(),
            code_meaning: code_meaning.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.code_value.is_empty() && self.coding_scheme.is_empty()
    }

    /// Same code (value and scheme; meanings vary between writers).
    pub fn is(&self, code_value: &str, coding_scheme: &str) -> bool {
        self.code_value == code_value && self.coding_scheme == coding_scheme
    }
}

/// One measurement of an SR, as ingest reads it from the content tree. The patient, study
/// and SR come from the instance's own record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeasurementRow {
    /// The series measured (the group's references, else the SR's evidence); may be empty.
    pub source_series_uid: String,
    /// Tracking Identifier (DCM 112039) and Tracking Unique Identifier (DCM 112040).
    pub tracking_id: String,
    pub tracking_uid: String,
    pub finding: CodeRef,
    pub finding_site: CodeRef,
    /// The NUM's concept name.
    pub concept: CodeRef,
    /// Its Derivation (DCM 121401) modifier (mean, maximum...), which tells apart several
    /// values of one concept in one group; empty when none.
    pub derivation: CodeRef,
    pub value: f64,
    /// Measurement Units Code Sequence: UCUM for standard units.
    pub unit: CodeRef,
}

/// A row read back for a patient's trend.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedMeasurement {
    pub study_instance_uid: String,
    pub study_date: String,
    pub sr_instance_uid: String,
    pub row: MeasurementRow,
}

/// What [`Index::measurements_of_patient`] selects; every `Some` must match.
#[derive(Debug, Clone, Default)]
pub struct MeasurementFilter {
    /// The concept's code value.
    pub concept: Option<String>,
    /// Tracking Identifier or Tracking Unique Identifier.
    pub tracking: Option<String>,
    /// Study dates, YYYYMMDD, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
}

const COLUMNS: &str = "patient_id, issuer_of_patient_id, study_instance_uid, study_date, \
    sr_instance_uid, source_series_uid, tracking_id, tracking_uid, \
    finding_code, finding_scheme, finding_meaning, site_code, site_scheme, site_meaning, \
    concept_code, concept_scheme, concept_meaning, \
    derivation_code, derivation_scheme, derivation_meaning, \
    value, unit_code, unit_scheme, unit_meaning, ordinal";

/// One measurement row under the instance `?1` names (by SOP Instance UID, so that it runs in
/// the instance's transaction without its key).
pub static INSERT_MEASUREMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // typed: PostgreSQL would take an untyped parameter of a SELECT list for text
    let params: Vec<String> = (2..=26)
        .map(|n| match n {
            26 => format!("CAST(?{n} AS {{big}})"),
            _ => format!("CAST(?{n} AS TEXT)"),
        })
        .collect();
    format!(
        "INSERT INTO measurements (instance_pk, {COLUMNS}) \
         SELECT pk, {} FROM instances WHERE sop_instance_uid = ?1",
        params.join(", ")
    )
});

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

/// The parameters of [`INSERT_MEASUREMENT`] for each measurement of `r`.
pub fn insert_params(r: &InstanceRecord) -> Vec<Vec<SqlValue>> {
    r.measurements
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let mut p = vec![
                text(&r.sop_instance_uid),
                text(&r.patient_id),
                text(&r.issuer_of_patient_id),
                text(&r.study_instance_uid),
                text(&r.study_date),
                text(&r.sop_instance_uid),
                text(&m.source_series_uid),
                text(&m.tracking_id),
                text(&m.tracking_uid),
            ];
            for c in [&m.finding, &m.finding_site, &m.concept, &m.derivation] {
                p.extend([
                    text(&c.code_value),
                    text(&c.coding_scheme),
                    text(&c.code_meaning),
                ]);
            }
            // as text: SqlValue has no floating point; Display is the shortest exact form
            p.push(text(&m.value.to_string()));
            p.extend([
                text(&m.unit.code_value),
                text(&m.unit.coding_scheme),
                text(&m.unit.code_meaning),
            ]);
            p.push(SqlValue::Int(n as i64));
            p
        })
        .collect()
}

impl dyn Index {
    /// The measurements of a patient (by Patient ID, any issuer), in study date order (then
    /// study, SR and the order within the SR).
    pub async fn measurements_of_patient(
        &self,
        patient_id: &str,
        filter: &MeasurementFilter,
    ) -> IndexResult<Vec<IndexedMeasurement>> {
        let mut sql = format!("SELECT {COLUMNS} FROM measurements WHERE patient_id = ?1");
        let mut params = vec![text(patient_id)];
        let mut bind = |sql: &mut String, clause: &str, value: &str| {
            params.push(text(value));
            sql.push_str(&clause.replace("?N", &format!("?{}", params.len())));
        };
        if let Some(c) = &filter.concept {
            bind(&mut sql, " AND concept_code = ?N", c);
        }
        if let Some(t) = &filter.tracking {
            bind(&mut sql, " AND (tracking_id = ?N OR tracking_uid = ?N)", t);
        }
        if let Some(d) = &filter.from {
            bind(&mut sql, " AND study_date >= ?N", d);
        }
        if let Some(d) = &filter.to {
            bind(&mut sql, " AND study_date <= ?N", d);
        }
        sql.push_str(" ORDER BY study_date, study_instance_uid, sr_instance_uid, ordinal");
        let rows = self.fetch(Sql::new(&sql), params).await?;
        let t = |v: &SqlValue| v.as_str().unwrap_or_default().to_string();
        let code = |r: &[SqlValue], i: usize| CodeRef {
            code_value: t(&r[i]),
            coding_scheme: t(&r[i + 1]),
            code_meaning: t(&r[i + 2]),
        };
        Ok(rows
            .iter()
            .map(|r| IndexedMeasurement {
                study_instance_uid: t(&r[2]),
                study_date: t(&r[3]),
                sr_instance_uid: t(&r[4]),
                row: MeasurementRow {
                    source_series_uid: t(&r[5]),
                    tracking_id: t(&r[6]),
                    tracking_uid: t(&r[7]),
                    finding: code(r, 8),
                    finding_site: code(r, 11),
                    concept: code(r, 14),
                    derivation: code(r, 17),
                    value: t(&r[20]).parse().unwrap_or(f64::NAN),
                    unit: code(r, 21),
                },
            })
            .collect())
    }

    /// How many measurement rows an SR has (tests, `pacs fsck`).
    pub async fn measurement_count(&self, sr_instance_uid: &str) -> IndexResult<i64> {
        let rows = self
            .fetch(
                Sql::new("SELECT COUNT(*) FROM measurements WHERE sr_instance_uid = ?1"),
                vec![text(sr_instance_uid)],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64)
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parameter_per_column() {
        let mut r = InstanceRecord::default();
        r.measurements.push(MeasurementRow::default());
        let params = insert_params(&r);
        assert_eq!(params[0].len(), 26);
        assert!(INSERT_MEASUREMENT.contains("?26 AS {big}) FROM"));
        assert_eq!(COLUMNS.split(',').count(), 25);
    }
}
