//! Measurements over time: `GET /api/patients/{patient-id}/measurements` turns the measurements
//! index (`crate::index::measurements`, filled at ingest from every SR) into time series, one
//! per tracked finding and measured quantity, each point with its change from the one before.
//! `pacs measurements` prints the same answer as a table. See docs/measurements.md.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pacs_dicomweb::{HttpError, Identity};
use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditEvent, EventKind, ObjectRef, Outcome, Participant, StudyRef};
use crate::index::measurements::{CodeRef, IndexedMeasurement, MeasurementFilter};
use crate::index::Index;

pub struct MeasurementsState {
    pub index: Arc<dyn Index>,
    pub audit: Audit,
}

pub fn router(state: Arc<MeasurementsState>) -> Router {
    Router::new()
        .route(
            "/api/patients/{patient_id}/measurements",
            get(patient_measurements),
        )
        .with_state(state)
}

/// One time series: the same tracked finding (by Tracking Unique Identifier, else by Tracking
/// Identifier or finding and site) and the same quantity in the same unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Track {
    pub tracking_uid: Option<String>,
    pub tracking_id: Option<String>,
    pub concept: CodeRef,
    /// Derivation (DCM 121401: mean, maximum...) of the values, when they have one: a
    /// group may hold several values of one concept that only this tells apart.
    pub derivation: Option<CodeRef>,
    /// The unit's code value (UCUM).
    pub unit: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub study_uid: String,
    pub study_date: String,
    pub sr_uid: String,
    pub value: f64,
    /// From the prior point; None for the first.
    pub change: Option<f64>,
    /// `change` relative to the prior value, in percent; None for the first point and when
    /// the prior value is 0.
    pub change_percent: Option<f64>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Groups rows (in study date order) into tracks, in the order of their first point.
pub fn tracks(rows: Vec<IndexedMeasurement>) -> Vec<Track> {
    type Key = (String, String, CodeRef, CodeRef, String);
    let mut keys: Vec<Key> = Vec::new();
    let mut out: Vec<Track> = Vec::new();
    for m in rows {
        let r = &m.row;
        if !r.value.is_finite() {
            continue;
        }
        let concept = CodeRef {
            code_meaning: String::new(),
            ..r.concept.clone()
        };
        let derivation = CodeRef {
            code_meaning: String::new(),
            ..r.derivation.clone()
        };
        let who = if !r.tracking_uid.is_empty() {
            ("uid".to_string(), r.tracking_uid.clone())
        } else if !r.tracking_id.is_empty() {
            ("id".to_string(), r.tracking_id.clone())
        } else {
            let f = &r.finding;
            let s = &r.finding_site;
            (
                "finding".to_string(),
                format!(
                    "{}^{}|{}^{}",
                    f.code_value, f.coding_scheme, s.code_value, s.coding_scheme
                ),
            )
        };
        let key: Key = (who.0, who.1, concept, derivation, r.unit.code_value.clone());
        let n = match keys.iter().position(|k| *k == key) {
            Some(n) => n,
            None => {
                keys.push(key);
                out.push(Track {
                    tracking_uid: non_empty(&r.tracking_uid),
                    tracking_id: non_empty(&r.tracking_id),
                    concept: r.concept.clone(),
                    derivation: (!r.derivation.is_empty()).then(|| r.derivation.clone()),
                    unit: r.unit.code_value.clone(),
                    points: Vec::new(),
                });
                out.len() - 1
            }
        };
        let track = &mut out[n];
        let (change, change_percent) = match track.points.last() {
            None => (None, None),
            Some(prior) => {
                let change = r.value - prior.value;
                (
                    Some(change),
                    (prior.value != 0.0).then(|| change / prior.value.abs() * 100.0),
                )
            }
        };
        track.points.push(Point {
            study_uid: m.study_instance_uid.clone(),
            study_date: m.study_date.clone(),
            sr_uid: m.sr_instance_uid.clone(),
            value: r.value,
            change,
            change_percent,
        });
    }
    out
}

/// The tracks as `pacs measurements` prints them: a heading per track, a line per point.
pub fn table(tracks: &[Track]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let number = |v: Option<f64>, suffix: &str| match v {
        Some(v) => format!("{}{suffix}", trim(v)),
        None => "-".to_string(),
    };
    for (n, t) in tracks.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let mut what = format!(
            "{} ({}, {})",
            t.concept.code_meaning, t.concept.coding_scheme, t.concept.code_value
        );
        if let Some(d) = &t.derivation {
            let _ = write!(what, ", {}", d.code_meaning);
        }
        let _ = writeln!(
            out,
            "{what} [{}]  tracking id: {}  tracking uid: {}",
            t.unit,
            t.tracking_id.as_deref().unwrap_or("-"),
            t.tracking_uid.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            out,
            "  {:<8}  {:>14}  {:>14}  {:>9}  {:<64}  SR",
            "DATE", "VALUE", "CHANGE", "CHANGE %", "STUDY"
        );
        for p in &t.points {
            let _ = writeln!(
                out,
                "  {:<8}  {:>14}  {:>14}  {:>9}  {:<64}  {}",
                p.study_date,
                trim(p.value),
                number(p.change, ""),
                number(p.change_percent.map(|v| (v * 10.0).round() / 10.0), ""),
                p.study_uid,
                p.sr_uid
            );
        }
    }
    if tracks.is_empty() {
        out.push_str("no measurements\n");
    }
    out
}

/// A value to at most 4 decimals, without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The filters of the query string: `concept`, `tracking_id`, `from`, `to` (YYYYMMDD, a real
/// date). Anything else, a repeated or empty filter, or `from` after `to`, is refused.
pub fn parse_filter(query: Option<&str>) -> Result<MeasurementFilter, String> {
    let mut filter = MeasurementFilter::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.trim().to_string();
        if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(format!("{k}: expected a value of at most 1024 characters"));
        }
        let slot = match k.as_ref() {
            "concept" => &mut filter.concept,
            "tracking_id" => &mut filter.tracking,
            "from" | "to" => {
                if !is_date(&v) {
                    return Err(format!("{k}={v:?}: expected a date YYYYMMDD"));
                }
                if k == "from" {
                    &mut filter.from
                } else {
                    &mut filter.to
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (concept, tracking_id, from, to)"
                ))
            }
        };
        if slot.replace(v).is_some() {
            return Err(format!("{k} given twice"));
        }
    }
    if let (Some(from), Some(to)) = (&filter.from, &filter.to) {
        if from > to {
            return Err(format!("from={from} is after to={to}"));
        }
    }
    Ok(filter)
}

/// A DA value (PS3.5 Table 6.2-1) that is a date of the calendar.
fn is_date(v: &str) -> bool {
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (y, m, d) = (&v[0..4], &v[4..6], &v[6..8]);
    match (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>()) {
        (Ok(y), Ok(m), Ok(d)) => time::Month::try_from(m)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, d).ok())
            .is_some(),
        _ => false,
    }
}

async fn patient_measurements(
    State(state): State<Arc<MeasurementsState>>,
    identity: Identity,
    Path(patient_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let filter = match parse_filter(query.as_deref()) {
        Ok(f) => f,
        Err(why) => return HttpError::new(StatusCode::BAD_REQUEST, why).into_response(),
    };
    let result = state
        .index
        .measurements_of_patient(&patient_id, &filter)
        .await;
    // a read of patient data: Instances Accessed (PS3.15 A.5.3.2), with the studies read
    if state.audit.enabled() {
        let uri = match &query {
            Some(q) => format!("/api/patients/{patient_id}/measurements?{q}"),
            None => format!("/api/patients/{patient_id}/measurements"),
        };
        let mut event = AuditEvent::new(EventKind::InstancesAccessed)
            .participant(crate::audit::http_participant(&identity).requestor())
            .participant(Participant::node(&state.audit.node_ae))
            .patient(&patient_id, "")
            .object(ObjectRef::uri(&uri));
        match &result {
            Ok(rows) => {
                let mut studies: Vec<&str> =
                    rows.iter().map(|r| r.study_instance_uid.as_str()).collect();
                studies.sort_unstable();
                studies.dedup();
                for s in studies {
                    event = event.study(StudyRef::new(s));
                }
            }
            Err(e) => event = event.failed(Outcome::MinorFailure, e.to_string()),
        }
        state.audit.record(event).await;
    }
    match result {
        Ok(rows) => Json(tracks(rows)).into_response(),
        Err(e) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::measurements::MeasurementRow;

    fn row(date: &str, uid: &str, concept: &str, value: f64) -> IndexedMeasurement {
        IndexedMeasurement {
            study_instance_uid: format!("1.2.{date}"),
            study_date: date.into(),
            sr_instance_uid: format!("1.3.{date}"),
            row: MeasurementRow {
                tracking_uid: uid.into(),
                tracking_id: "Lungs".into(),
                concept: CodeRef::new(concept, "SCT", "Volume"),
                unit: CodeRef::new("mL", "UCUM", "milliliter"),
                value,
                ..Default::default()
            },
        }
    }

    #[test]
    fn changes_from_the_prior_point() {
        let t = tracks(vec![
            row("20240101", "2.25.1", "118565006", 0.0),
            row("20240201", "2.25.1", "118565006", 100.0),
            row("20240301", "2.25.1", "118565006", 150.0),
            row("20240301", "2.25.2", "118565006", 7.0),
            row("20240301", "2.25.1", "81827009", 3.0),
        ]);
        assert_eq!(t.len(), 3);
        let p = &t[0].points;
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].change, p[0].change_percent), (None, None));
        assert_eq!((p[1].change, p[1].change_percent), (Some(100.0), None));
        assert_eq!((p[2].change, p[2].change_percent), (Some(50.0), Some(50.0)));
        assert_eq!(t[1].tracking_uid.as_deref(), Some("2.25.2"));
        assert_eq!(t[2].concept.code_value, "81827009");
    }

    #[test]
    fn without_a_tracking_uid_the_tracking_id_groups() {
        let t = tracks(vec![
            row("20240101", "", "118565006", 2.0),
            row("20240201", "", "118565006", 1.0),
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].tracking_uid, None);
        assert_eq!(t[0].points[1].change_percent, Some(-50.0));
    }

    #[test]
    fn filters_are_checked() {
        let f = parse_filter(Some(
            "concept=118565006&tracking_id=Lungs&from=20240101&to=20241231",
        ))
        .unwrap();
        assert_eq!(f.concept.as_deref(), Some("118565006"));
        assert_eq!(f.tracking.as_deref(), Some("Lungs"));
        for bad in [
            "from=2024-01-01",
            "from=20240230",
            "to=2024",
            "concept=",
            "colour=red",
            "concept=a&concept=b",
            "from=20240201&to=20240101",
        ] {
            assert!(parse_filter(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_filter(None).is_ok());
    }
}
