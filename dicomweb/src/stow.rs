//! STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::{json, Value};

use crate::archive::{ReceivedPart, StoreResult};
use crate::error::HttpError;
use crate::identity::Identity;
use crate::limits::{content_length, drain, too_large, DRAIN_BYTES};
use crate::{base_url, AppState, DicomWebConfig};

/// Failure reason for a part that could not even be read as a DICOM object (PS3.18 Table
/// 10.5.3-3 uses the C-STORE statuses: C000 cannot understand).
const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Refused: out of resources (A700, PS3.18 Table I.2-2): here, a part larger than the
/// per-instance limit, or one there was no room to receive.
const OUT_OF_RESOURCES: u16 = 0xA700;

pub async fn store_studies(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store(state, &uri, headers, body, None, identity).await
}

pub async fn store_study(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store(state, &uri, headers, body, Some(study), identity).await
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
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
    study: Option<String>,
    identity: Identity,
) -> Result<Response, HttpError> {
    let boundary = boundary(&headers)?;
    let config = &state.config;
    if content_length(&headers).is_some_and(|len| len > config.max_request_bytes) {
        // Read (and drop) what the client is sending, up to a bound, so that it gets to read
        // the 413 instead of a reset connection.
        drain(body, DRAIN_BYTES).await;
        return Err(too_large("request", config.max_request_bytes));
    }
    let base = base_url(&state, &headers, uri)?;
    // The request limit is multer's; the instance limit is applied here, part by part, so
    // that a part beyond it fails alone and the parts after it are still read.
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(config.max_request_bytes));
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut stored: Vec<Value> = Vec::new();
    let mut failed: Vec<Value> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut warnings = false;
    // the archive's resource that failed a part, if any: the status when none was stored
    let mut lacking: Option<crate::archive::Lacking> = None;
    let mut part_number = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(multer::Error::StreamSizeExceeded { .. }) => {
                return Err(too_large("request", config.max_request_bytes))
            }
            Err(e) => {
                if stored.is_empty() && failed.is_empty() {
                    return Err(HttpError::bad_request(format!(
                        "malformed multipart body: {e}"
                    )));
                }
                // a body cut short: report what was stored so far, and the failure
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                reasons.push(format!("the body ended in error: {e}"));
                tracing::warn!(error = %e, "STOW-RS body ended in error");
                break;
            }
        };
        part_number += 1;
        if let Some(ct) = field.content_type() {
            if ct.essence_str() != "application/dicom" {
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                reasons.push(format!(
                    "part {part_number}: {} is not application/dicom",
                    ct.essence_str()
                ));
                continue;
            }
        }
        let part = match receive(field, config).await {
            Ok(Received::Part(part)) => part,
            Ok(Received::Refused { len, why }) => {
                tracing::info!(part = part_number, len, %why, "STOW-RS part refused");
                failed.push(failure(None, None, OUT_OF_RESOURCES));
                reasons.push(format!("part {part_number}: {why}"));
                continue;
            }
            Err(multer::Error::StreamSizeExceeded { .. }) => {
                return Err(too_large("request", config.max_request_bytes))
            }
            Err(e) => {
                tracing::warn!(error = %e, "STOW-RS part unreadable");
                failed.push(failure(None, None, CANNOT_UNDERSTAND));
                reasons.push(format!("part {part_number}: unreadable: {e}"));
                break;
            }
        };
        let part_len = part.len();
        match state.archive.store(part, study.as_deref(), &identity).await {
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
                crate::metrics::stow_received(part_len);
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
                reasons.push(format!("part {part_number}: {message}"));
            }
            StoreResult::OutOfResources {
                sop_class_uid,
                sop_instance_uid,
                lacking: what,
                message,
            } => {
                tracing::warn!(?what, %message, "STOW-RS part not stored: out of resources");
                failed.push(failure(
                    Some(sop_class_uid),
                    Some(sop_instance_uid),
                    OUT_OF_RESOURCES,
                ));
                reasons.push(format!("part {part_number}: {message}"));
                // the object store's shortage decides over the index's
                if lacking != Some(crate::archive::Lacking::Storage) {
                    lacking = Some(what);
                }
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
    // PS3.18 10.5.3: 200 all stored, 202 some stored or stored with warnings, 409 none stored;
    // none stored for want of the archive's resources: 507 (storage) or 503 (index), which
    // say "later" where 409 says "not this".
    let status = match (stored.is_empty(), failed.is_empty()) {
        (false, true) if !warnings => StatusCode::OK,
        (false, _) => StatusCode::ACCEPTED,
        (true, false) => match lacking {
            Some(crate::archive::Lacking::Storage) => StatusCode::INSUFFICIENT_STORAGE,
            Some(crate::archive::Lacking::Index) => StatusCode::SERVICE_UNAVAILABLE,
            None => StatusCode::CONFLICT,
        },
        (true, true) => {
            return Err(HttpError::bad_request(
                "the request holds no DICOM instance",
            ))
        }
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        serde_json::to_vec(&Value::Object(response)).unwrap_or_default(),
    )
        .into_response();
    // PS3.18 8.6.3: the reason of each failure, readable, beside its Failure Reason code
    for reason in reasons.iter().take(MAX_WARNINGS) {
        if let Ok(v) = HeaderValue::try_from(warning(reason)) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(response)
}

/// Warning headers of one response at most (one per failed part).
const MAX_WARNINGS: usize = 16;

/// `299 pacs "<text>"` (RFC 7234 5.5) with the text reduced to what a quoted-string can hold.
fn warning(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .take(300)
        .collect();
    format!("299 pacs \"{text}\"")
}

/// What became of one part.
enum Received {
    Part(ReceivedPart),
    /// Not kept (larger than the instance limit, or no room to buffer it): whatever had
    /// arrived is dropped (its spill file deleted) and the rest of the part read and discarded.
    Refused {
        len: u64,
        why: String,
    },
}

/// Reads one part: in memory up to the spill threshold, then into a temporary file, up to
/// the instance limit. Past that limit, the rest of the part is read and dropped, so the
/// request can go on with its next part.
async fn receive(
    mut field: multer::Field<'_>,
    config: &DicomWebConfig,
) -> Result<Received, multer::Error> {
    let limit = config.max_instance_bytes;
    let mut memory: Vec<Bytes> = Vec::new();
    let mut spill: Option<Spill> = None;
    let mut len = 0u64;
    let mut refused: Option<String> = None;
    while let Some(chunk) = field.chunk().await? {
        len = len.saturating_add(chunk.len() as u64);
        if refused.is_some() {
            continue;
        }
        if len > limit {
            memory.clear();
            spill = None; // deletes the file
            refused = Some(format!("instance larger than the limit of {limit} bytes"));
            continue;
        }
        let written = match &mut spill {
            Some(file) => file.write(&chunk).await,
            None if len > config.spill_threshold as u64 => {
                match Spill::create(config, &memory, &chunk).await {
                    Ok(file) => {
                        memory.clear();
                        spill = Some(file);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                memory.push(chunk);
                Ok(())
            }
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot buffer a STOW-RS part");
            memory.clear();
            spill = None;
            refused = Some("no room to receive the instance".into());
        }
    }
    if let Some(why) = refused {
        return Ok(Received::Refused { len, why });
    }
    Ok(Received::Part(match spill {
        Some(file) => match file.finish().await {
            Ok(path) => ReceivedPart::File { path, len },
            Err(e) => {
                tracing::warn!(error = %e, "cannot buffer a STOW-RS part");
                return Ok(Received::Refused {
                    len,
                    why: "no room to receive the instance".into(),
                });
            }
        },
        None => match memory.as_slice() {
            [one] => ReceivedPart::Memory(one.clone()),
            _ => ReceivedPart::Memory(Bytes::from(memory.concat())),
        },
    }))
}

/// A part being received into a temporary file (deleted when dropped before [`Spill::finish`]
/// hands its path on, and when that path is dropped).
struct Spill {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    dir: std::path::PathBuf,
    /// Free space to leave on the file system (`DicomWebConfig::spill_min_free_bytes`).
    min_free: u64,
    written: u64,
}

/// The free space is checked when a spill file is made and every this many bytes written.
const ROOM_CHECK_EVERY: u64 = 8 << 20;

impl Spill {
    async fn create(
        config: &DicomWebConfig,
        before: &[Bytes],
        chunk: &Bytes,
    ) -> std::io::Result<Spill> {
        let dir = config.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        tokio::fs::create_dir_all(&dir).await?;
        check_room(&dir, config.spill_min_free_bytes)?;
        let in_dir = dir.clone();
        let (file, path) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix("stow-").tempfile_in(in_dir)
        })
        .await
        .map_err(std::io::Error::other)??
        .into_parts();
        tracing::debug!(path = %path.display(), "spilling a large STOW-RS part to disk");
        let mut spill = Spill {
            file: tokio::fs::File::from_std(file),
            path,
            dir,
            min_free: config.spill_min_free_bytes,
            written: 0,
        };
        for b in before {
            spill.write(b).await?;
        }
        spill.write(chunk).await?;
        Ok(spill)
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let after = self.written.saturating_add(bytes.len() as u64);
        if self.written / ROOM_CHECK_EVERY != after / ROOM_CHECK_EVERY {
            check_room(&self.dir, self.min_free)?;
        }
        self.file.write_all(bytes).await?;
        self.written = after;
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<tempfile::TempPath> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        Ok(self.path)
    }
}

/// Ok when the file system of `dir` has `min_free` bytes available (0: no reserve), so that
/// uploads cannot fill the disk the archive stores to.
fn check_room(dir: &std::path::Path, min_free: u64) -> std::io::Result<()> {
    if min_free == 0 {
        return Ok(());
    }
    let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    match free < min_free {
        true => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{free} bytes free, {min_free} kept in reserve"),
        )),
        false => Ok(()),
    }
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
