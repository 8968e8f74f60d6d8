//! `GET /api/audit` (the `audit` permission: the `admin` and `auditor` roles), the JSON form of
//! records shared with `pacs audit search`, and the hook that records the HTTP stack's
//! refusals.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacs_dicomweb::{HttpError, Identity, Permission, RefusalObserver};
use serde::Deserialize;
use serde_json::json;

use super::{types, Audit, AuditEvent, EventKind, ObjectRef, Outcome, Participant};
use crate::admin_api::AdminState;
use crate::index::audit::{AuditFilter, AuditRecord};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The query parameters of `GET /api/audit`, and the flags of `pacs audit search`.
#[derive(Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// From this time (RFC 3339 or milliseconds since the epoch).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (RFC 3339 or milliseconds since the epoch).
    #[arg(long)]
    pub to: Option<String>,
    /// The requesting user (`user:NAME`, `key:NAME`, `anonymous`...).
    #[arg(long)]
    pub user: Option<String>,
    /// The AE title involved.
    #[arg(long)]
    pub ae: Option<String>,
    /// Patient ID.
    #[arg(long)]
    pub patient: Option<String>,
    /// Study Instance UID.
    #[arg(long)]
    pub study: Option<String>,
    /// application-activity, user-authentication, query, instances-accessed,
    /// begin-transferring, instances-transferred, export or security-alert.
    #[arg(long)]
    pub event: Option<String>,
    /// EventOutcomeIndicator: 0, 4, 8 or 12.
    #[arg(long)]
    pub outcome: Option<i64>,
    /// Records at most, 1 to 1000 [default: 100].
    #[arg(long)]
    pub limit: Option<i64>,
    /// Records skipped (newest first) [default: 0].
    #[arg(long)]
    pub offset: Option<i64>,
}

/// A time given as RFC 3339 or as milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("{text:?} is neither RFC 3339 nor milliseconds since the epoch"))
}

impl SearchParams {
    pub fn filter(&self) -> Result<AuditFilter, String> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!("limit must be 1 to {MAX_LIMIT}"));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err("offset must not be negative".into());
        }
        if let Some(e) = &self.event {
            if EventKind::named(e).is_none() {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!("unknown event {e:?}; one of {}", names.join(", ")));
            }
        }
        if let Some(o) = self.outcome {
            if ![0, 4, 8, 12].contains(&o) {
                return Err("outcome must be 0, 4, 8 or 12".into());
            }
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(AuditFilter {
            from_ms: self.from.as_deref().map(parse_time).transpose()?,
            to_ms: self.to.as_deref().map(parse_time).transpose()?,
            user: nonempty(&self.user),
            ae: nonempty(&self.ae),
            patient: nonempty(&self.patient),
            study: nonempty(&self.study),
            event: nonempty(&self.event),
            outcome: self.outcome,
            limit,
            offset,
        })
    }

    /// The parameters as a query string (what the Query message of a read records).
    pub fn query_string(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(format!("{k}={v}"));
            }
        };
        add("from", self.from.clone());
        add("to", self.to.clone());
        add("user", self.user.clone());
        add("ae", self.ae.clone());
        add("patient", self.patient.clone());
        add("study", self.study.clone());
        add("event", self.event.clone());
        add("outcome", self.outcome.map(|o| o.to_string()));
        add("limit", self.limit.map(|o| o.to_string()));
        add("offset", self.offset.map(|o| o.to_string()));
        out.join("&")
    }
}

/// A record as `GET /api/audit` and `pacs audit search --json` show it.
pub fn record_json(r: &AuditRecord) -> serde_json::Value {
    json!({
        "seq": r.seq,
        "event": r.record.event,
        "time": super::xml::date_time(r.record.time_ms),
        "time_ms": r.record.time_ms,
        "outcome": r.record.outcome,
        "user": r.record.user,
        "ae": r.record.ae,
        "address": r.record.address,
        "patient_id": r.record.patient_id,
        "patient_name": r.record.patient_name,
        "study_uids": r.record.study_uids,
        "hash": r.hash,
        "xml": r.record.xml,
    })
}

/// `GET /api/audit`: records newest first. Reading the trail is itself recorded, as a Query
/// whose query is these parameters.
pub async fn search(
    State(state): State<Arc<AdminState>>,
    identity: Identity,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return HttpError::bad_request(e.body_text()).into_response(),
    };
    let mut event = AuditEvent::new(EventKind::Query)
        .participant(super::http_participant(&identity).requestor())
        .participant(Participant::node(&state.ae_title))
        .object(ObjectRef {
            query: Some(params.query_string().into_bytes()),
            ..ObjectRef::uri("/api/audit")
        });
    let filter = match params.filter() {
        Ok(f) => f,
        Err(why) => {
            state
                .audit
                .record(event.failed(Outcome::MinorFailure, why.clone()))
                .await;
            return HttpError::bad_request(why).into_response();
        }
    };
    let response = match state.index.audit_search(&filter).await {
        Ok(records) => Json(json!({
            "limit": filter.limit,
            "offset": filter.offset,
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => {
            event = event.failed(Outcome::SeriousFailure, e.to_string());
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    };
    state.audit.record(event).await;
    response
}

/// Records the HTTP stack's refusals: a Security Alert for each 401 and 403, and a failed User
/// Authentication when a credential was presented and refused.
pub struct AuditRefusals(pub Audit);

impl RefusalObserver for AuditRefusals {
    fn refused(
        &self,
        identity: &Identity,
        status: StatusCode,
        permission: Permission,
        method: &Method,
        route: &str,
    ) {
        let who = super::http_participant(identity).requestor();
        let node = Participant::node(&self.0.node_ae);
        let why = match (&identity.refused, status) {
            (Some(why), _) => format!("authentication failed: {why}"),
            (None, StatusCode::FORBIDDEN) => {
                format!("lacks the {} permission", permission.name())
            }
            (None, _) => "authentication required".to_string(),
        };
        if let Some(refused) = &identity.refused {
            self.0.record_now(
                AuditEvent::new(EventKind::UserAuthentication)
                    .type_code(types::login())
                    .failed(Outcome::MinorFailure, format!("bad credentials: {refused}"))
                    .participant(who.clone())
                    .participant(node.clone()),
            );
        }
        self.0.record_now(
            AuditEvent::new(EventKind::SecurityAlert)
                .type_code(types::use_of_restricted_function())
                .failed(
                    Outcome::MinorFailure,
                    format!("HTTP {}: {why}", status.as_u16()),
                )
                .participant(who)
                .participant(node)
                .object(
                    ObjectRef::uri(route)
                        .detail("Method", method.as_str())
                        .detail("Status", status.as_u16().to_string()),
                ),
        );
    }
}

/// `POST /api/audit/verify`: the check of `pacs audit verify` (every record follows from the
/// one before), `{"ok", "records", "first_bad": null | {"id", "reason"}}`. Recorded like a
/// search of the trail.
pub async fn verify(State(state): State<Arc<AdminState>>, identity: Identity) -> Response {
    let mut event = AuditEvent::new(EventKind::Query)
        .participant(super::http_participant(&identity).requestor())
        .participant(Participant::node(&state.ae_title))
        .object(ObjectRef::uri("/api/audit/verify"));
    let response = match state.index.audit_verify().await {
        Ok(report) => {
            if !report.breaks.is_empty() {
                tracing::warn!(breaks = report.breaks.len(), "the audit chain is broken");
            }
            Json(json!({
                "ok": report.breaks.is_empty(),
                "records": report.records,
                "last_seq": report.last_seq,
                "first_bad": report.breaks.first().map(|b| json!({ "id": b.seq, "reason": b.reason })),
            }))
            .into_response()
        }
        Err(e) => {
            event = event.failed(Outcome::SeriousFailure, e.to_string());
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    };
    state.audit.record(event).await;
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedParams {
    /// The last this many hours [default: 24, at most 720].
    pub hours: Option<i64>,
}

/// The text of an audit message's EventOutcomeDescription (PS3.15 A.5.1), unescaped.
fn outcome_description(xml: &str) -> String {
    let Some(start) = xml.find("<EventOutcomeDescription>") else {
        return String::new();
    };
    let rest = &xml[start + "<EventOutcomeDescription>".len()..];
    let text = rest
        .split("</EventOutcomeDescription>")
        .next()
        .unwrap_or("");
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `GET /api/aes/refused?hours=24`: the associations refused recently, from the audit trail
/// (Security Alerts of type Node Authentication, DCM 110126, that failed), grouped by calling
/// AE and reason: `[{"calling_ae", "address" (the latest), "reason", "count", "last"}]`, the
/// most recent first.
pub async fn refused_associations(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<RefusedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return HttpError::bad_request(e.body_text()).into_response(),
    };
    let hours = params.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return HttpError::bad_request("hours must be 1 to 720").into_response();
    }
    let now = match state.index.clock_ms().await {
        Ok(t) => t,
        Err(e) => return HttpError::unavailable(e.to_string()).into_response(),
    };
    // (calling AE, reason) -> (address, count, last)
    let mut groups: std::collections::HashMap<(String, String), (String, u64, i64)> =
        Default::default();
    let node_authentication = types::node_authentication();
    let marker = format!("csd-code=\"{}\"", node_authentication.code);
    let mut filter = AuditFilter {
        from_ms: Some(now - hours * 3_600_000),
        event: Some(EventKind::SecurityAlert.name().to_string()),
        outcome: Some(4),
        limit: MAX_LIMIT,
        ..Default::default()
    };
    // newest first, a page at a time; bounded
    for _ in 0..20 {
        let page = match state.index.audit_search(&filter).await {
            Ok(p) => p,
            Err(e) => return HttpError::unavailable(e.to_string()).into_response(),
        };
        for r in &page {
            if !r.record.xml.contains(&marker) {
                continue;
            }
            let reason = outcome_description(&r.record.xml);
            let entry = groups
                .entry((r.record.ae.clone(), reason))
                .or_insert_with(|| (r.record.address.clone(), 0, r.record.time_ms));
            entry.1 += 1;
        }
        if (page.len() as i64) < filter.limit {
            break;
        }
        filter.offset += filter.limit;
    }
    let mut out: Vec<_> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.0.cmp(&b.0)));
    Json(
        out.into_iter()
            .map(|((ae, reason), (address, count, last))| {
                json!({
                    "calling_ae": ae,
                    "address": address,
                    "reason": reason,
                    "count": count,
                    "last": super::xml::date_time(last),
                })
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}
