//! STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::{json, Value};

use crate::archive::StoreResult;
use crate::error::HttpError;
use crate::identity::Identity;
use crate::{base_url, AppState};

/// Failure reason for a part that could not even be read as a DICOM object (PS3.18 Table
/// 10.5.3-3 uses the C-STORE statuses: C000 cannot understand).
const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Out of resources (A700): here, a part larger than the per-instance limit.
const OUT_OF_RESOURCES: u16 = 0xA700;

pub async fn store_studies(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store(state, headers, body, None, identity).await
}

pub async fn store_study(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store(state, headers, body, Some(study), identity).await
}

/// The boundary of a multipart/related body whose root type is application/dicom.
fn boundary(headers: &HeaderMap) -> Result<String, HttpError> {
    let unsupported = |why: &str| {
        HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{why}: STOW-RS takes multipart/related; type=\"application/dicom\""),
        )
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unsupported("no Content-Type"))?;
    let ranges = crate::media::parse_accept(Some(ct));
    let range = ranges
        .first()
        .ok_or_else(|| unsupported("empty Content-Type"))?;
    if range.essence != "multipart/related" {
        return Err(unsupported(&format!("Content-Type {ct}")));
    }
    if range
        .part_type
        .as_deref()
        .is_some_and(|t| t != "application/dicom")
    {
        return Err(unsupported(&format!(
            "parts of type {} are not supported (metadata and bulk data STOW is not implemented)",
            range.part_type.as_deref().unwrap_or("")
        )));
    }
    // (multer's own parser only knows multipart/form-data)
    ct.split(';')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| unsupported("no boundary parameter"))
}

async fn store(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    study: Option<String>,
    identity: Identity,
) -> Result<Response, HttpError> {
    let boundary = boundary(&headers)?;
    let limits = &state.config;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limits.max_request_bytes {
            // Read (and drop) what the client is sending, up to a bound, so that it gets to
            // read the 413 instead of a reset connection.
            drain(body, 64 * 1024 * 1024).await;
            return Err(too_large(limits.max_request_bytes));
        }
    }
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.max_request_bytes)
            .per_field(limits.max_instance_bytes),
    );
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut stored: Vec<Value> = Vec::new();
    let mut failed: Vec<Value> = Vec::new();
    let mut warnings = false;
    let base = base_url(&state, &headers);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(multer::Error::StreamSizeExceeded { .. }) => {
                return Err(too_large(limits.max_request_bytes))
            }
            Err(e) => {
                if stored.is_empty() && failed.is_empty() {
                    return Err(HttpError::bad_request(format!(
                        "malformed multipart body: {e}"
                    )));
                }
                // a body cut short: report what was stored so far, and the failure
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                tracing::warn!(error = %e, "STOW-RS body ended in error");
                break;
            }
        };
        if let Some(ct) = field.content_type() {
            if ct.essence_str() != "application/dicom" {
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                continue;
            }
        }
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(multer::Error::FieldSizeExceeded { .. }) => {
                failed.push(failure(None, None, OUT_OF_RESOURCES));
                continue;
            }
            Err(multer::Error::StreamSizeExceeded { .. }) => {
                return Err(too_large(limits.max_request_bytes))
            }
            Err(e) => {
                tracing::warn!(error = %e, "STOW-RS part unreadable");
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                break;
            }
        };
        match state
            .archive
            .store(bytes, study.as_deref(), &identity)
            .await
        {
            StoreResult::Stored {
                sop_class_uid,
                sop_instance_uid,
                study_instance_uid,
                series_instance_uid,
                warning,
            } => {
                let mut item = json!({
                    "00081150": {"vr": "UI", "Value": [sop_class_uid]},
                    "00081155": {"vr": "UI", "Value": [sop_instance_uid]},
                    "00081190": {"vr": "UR", "Value": [format!(
                        "{base}/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
                    )]},
                });
                if let Some(w) = warning {
                    warnings = true;
                    item["00081196"] = json!({"vr": "US", "Value": [w]});
                }
                stored.push(item);
            }
            StoreResult::Failed {
                sop_class_uid,
                sop_instance_uid,
                reason,
                message,
            } => {
                tracing::info!(reason = format!("{reason:#06x}"), %message, "STOW-RS part refused");
                failed.push(failure(sop_class_uid, sop_instance_uid, reason));
            }
        }
    }
    let mut response = serde_json::Map::new();
    if let Some(study) = &study {
        response.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!("{base}/studies/{study}")]}),
        );
    }
    if !failed.is_empty() {
        response.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    if !stored.is_empty() {
        response.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    // PS3.18 10.5.3: 200 all stored, 202 some stored or stored with warnings, 409 none stored.
    let status = match (stored.is_empty(), failed.is_empty()) {
        (false, true) if !warnings => StatusCode::OK,
        (false, _) => StatusCode::ACCEPTED,
        (true, false) => StatusCode::CONFLICT,
        (true, true) => {
            return Err(HttpError::bad_request(
                "the request holds no DICOM instance",
            ))
        }
    };
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        serde_json::to_vec(&Value::Object(response)).unwrap_or_default(),
    )
        .into_response())
}

fn failure(class: Option<String>, instance: Option<String>, reason: u16) -> Value {
    let mut item = json!({ "00081197": {"vr": "US", "Value": [reason]} });
    item["00081150"] = match class {
        Some(c) => json!({"vr": "UI", "Value": [c]}),
        None => json!({"vr": "UI"}),
    };
    item["00081155"] = match instance {
        Some(i) => json!({"vr": "UI", "Value": [i]}),
        None => json!({"vr": "UI"}),
    };
    item
}

async fn drain(body: Body, cap: u64) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        seen += chunk.len() as u64;
        if seen > cap {
            break;
        }
    }
}

fn too_large(limit: u64) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request larger than the limit of {limit} bytes"),
    )
}
