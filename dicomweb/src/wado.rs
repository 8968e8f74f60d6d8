//! WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use crate::archive::{InstanceInfo, RenderRequest, Scope};
use crate::error::HttpError;
use crate::identity::Identity;
use dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;

use crate::media::{self, Multipart};
use crate::{base_url, AppState};

fn accept_ranges(headers: &HeaderMap) -> Vec<media::MediaRange> {
    media::parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

fn scope(study: String, series: Option<String>, instance: Option<String>) -> Scope {
    Scope {
        study,
        series,
        instance,
    }
}

// ---------------------------------------------------------------- instances

/// How each instance of a retrieval is sent.
enum Delivery {
    AsStored,
    ExplicitLe,
}

async fn retrieve(
    state: Arc<AppState>,
    identity: Identity,
    headers: HeaderMap,
    scope: Scope,
) -> Result<Response, HttpError> {
    let wanted = media::wanted_transfer_syntaxes(&accept_ranges(&headers), "application/dicom");
    if wanted.is_empty() {
        return Err(HttpError::not_acceptable(
            "instances are served as multipart/related; type=\"application/dicom\"",
        ));
    }
    let instances = state.archive.instances(&scope, &identity).await?;
    // Decide every instance's delivery before sending anything: a 406 must come before the
    // first byte.
    let mut plan = Vec::with_capacity(instances.len());
    for instance in instances {
        let delivery = wanted
            .iter()
            .find_map(|ts| {
                if ts == "*" || *ts == instance.transfer_syntax_uid {
                    Some(Delivery::AsStored)
                } else if ts == EXPLICIT_VR_LITTLE_ENDIAN
                    && state.archive.can_transcode(&instance.transfer_syntax_uid)
                {
                    Some(Delivery::ExplicitLe)
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                HttpError::not_acceptable(format!(
                    "instance {} is stored in transfer syntax {}, which cannot be converted to {}; \
                     ask for transfer-syntax=* to receive it as stored",
                    instance.instance,
                    instance.transfer_syntax_uid,
                    wanted.join(", ")
                ))
            })?;
        plan.push((instance, delivery));
    }
    let multipart = Arc::new(Multipart::new());
    let content_type = multipart.content_type("application/dicom");
    let archive = state.archive.clone();
    let identity = Arc::new(identity);
    let mp = multipart.clone();
    // Instances are read a few ahead of the one being sent (reads overlap the network), and
    // a large one arrives as a stream: a 2 GB study never needs 2 GB of memory.
    let body = futures::stream::iter(plan)
        .map(move |(instance, delivery): (InstanceInfo, Delivery)| {
            let archive = archive.clone();
            let identity = identity.clone();
            let mp = mp.clone();
            async move {
                let (ts, stream): (String, crate::archive::ByteStream) = match delivery {
                    Delivery::AsStored => {
                        let s = archive
                            .read_instance(&instance, &identity)
                            .await
                            .map_err(std::io::Error::other)?;
                        (instance.transfer_syntax_uid.clone(), s)
                    }
                    Delivery::ExplicitLe => {
                        let bytes = archive
                            .read_instance_explicit_le(&instance, &identity)
                            .await
                            .map_err(std::io::Error::other)?;
                        (
                            EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                            futures::stream::once(async { Ok(bytes) }).boxed(),
                        )
                    }
                };
                let header =
                    mp.part_header(&format!("application/dicom; transfer-syntax={ts}"), &[]);
                let part = futures::stream::once(async move { Ok(header) })
                    .chain(stream)
                    .chain(futures::stream::once({
                        let end = mp.part_end();
                        async move { Ok(end) }
                    }));
                Ok::<_, std::io::Error>(part)
            }
        })
        .buffered(4)
        .map(|r| match r {
            Ok(part) => part.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .chain(futures::stream::once(async move { Ok(multipart.close()) }));
    let mut response = Response::new(Body::from_stream(body));
    if let Ok(v) = HeaderValue::try_from(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(response)
}

pub async fn retrieve_study(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(s, identity, headers, scope(study, None, None)).await
}

pub async fn retrieve_series(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(s, identity, headers, scope(study, Some(series), None)).await
}

pub async fn retrieve_instance(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(
        s,
        identity,
        headers,
        scope(study, Some(series), Some(instance)),
    )
    .await
}

// ---------------------------------------------------------------- metadata

async fn metadata(
    state: Arc<AppState>,
    identity: Identity,
    headers: HeaderMap,
    uri: Uri,
    scope: Scope,
) -> Result<Response, HttpError> {
    let ranges = accept_ranges(&headers);
    let json_type = if media::accepts(&ranges, "application/dicom+json") {
        "application/dicom+json"
    } else if media::accepts(&ranges, "application/json") {
        "application/json"
    } else {
        return Err(HttpError::not_acceptable(
            "metadata is served as application/dicom+json",
        ));
    };
    let metadata = state
        .archive
        .metadata(&scope, &base_url(&state, &headers, &uri)?, &identity)
        .await?;
    let etag = format!("\"{}\"", metadata.etag);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, json_type.to_string()),
            (header::ETAG, etag),
            // Stored metadata only changes when an instance is added or replaced, which changes
            // the ETag: clients may reuse it after revalidating.
            (
                header::CACHE_CONTROL,
                "private, max-age=60, must-revalidate".to_string(),
            ),
        ],
        metadata.json,
    )
        .into_response())
}

pub async fn study_metadata(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    metadata(s, identity, headers, uri, scope(study, None, None)).await
}

pub async fn series_metadata(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    metadata(s, identity, headers, uri, scope(study, Some(series), None)).await
}

pub async fn instance_metadata(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    metadata(
        s,
        identity,
        headers,
        uri,
        scope(study, Some(series), Some(instance)),
    )
    .await
}

// ---------------------------------------------------------------- frames

/// Frame numbers in one request at most: every frame is read (or decoded) before the answer.
pub const MAX_FRAMES: usize = 4096;

fn parse_frame_list(list: &str) -> Result<Vec<u32>, HttpError> {
    if list.split(',').nth(MAX_FRAMES).is_some() {
        return Err(HttpError::bad_request(format!(
            "more than {MAX_FRAMES} frames in one request"
        )));
    }
    let frames: Vec<u32> = list
        .split(',')
        .map(|f| f.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "invalid frame list {:?}: expected 1-based numbers separated by commas",
                list.chars().take(100).collect::<String>()
            ))
        })?;
    if frames.is_empty() {
        return Err(HttpError::bad_request("empty frame list"));
    }
    Ok(frames)
}

/// The first frame of a frame list (rendered frames take one).
fn first_frame(list: &str) -> Result<u32, HttpError> {
    parse_frame_list(list)?
        .first()
        .copied()
        .ok_or_else(|| HttpError::bad_request("empty frame list"))
}

pub async fn frames(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let numbers = parse_frame_list(&list)?;
    let scope = scope(study, Some(series), Some(instance));
    let ranges = accept_ranges(&headers);
    let stored = state.archive.frames(&scope, &numbers, &identity).await?;
    let ts = stored.transfer_syntax_uid.clone();
    let compressed_type = crate::frame_media_type(&ts);
    let big_endian = ts == media::EXPLICIT_VR_BIG_ENDIAN;
    for range in ranges.iter().filter(|r| r.q > 0.0) {
        if !matches!(
            range.essence.as_str(),
            "multipart/related" | "multipart/*" | "*/*"
        ) {
            continue;
        }
        let part = range
            .part_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let want = range.transfer_syntax.as_deref();
        let as_stored = want == Some("*") || want == Some(ts.as_str());
        if part == "application/octet-stream" || part == "*/*" {
            match compressed_type {
                // native little endian frames are the same bytes in every LE syntax
                None if !big_endian || as_stored => {
                    let syntax = if big_endian {
                        ts.as_str()
                    } else {
                        EXPLICIT_VR_LITTLE_ENDIAN
                    };
                    let ct = format!("application/octet-stream; transfer-syntax={syntax}");
                    return Ok(multipart_response(
                        "application/octet-stream",
                        stored.frames.into_iter().map(|f| (ct.clone(), f)).collect(),
                    ));
                }
                Some(_) if as_stored => {
                    let ct = format!("application/octet-stream; transfer-syntax={ts}");
                    return Ok(multipart_response(
                        "application/octet-stream",
                        stored.frames.into_iter().map(|f| (ct.clone(), f)).collect(),
                    ));
                }
                _ if want.is_none() || want == Some(EXPLICIT_VR_LITTLE_ENDIAN) => {
                    let decoded = state
                        .archive
                        .decoded_frames(&scope, &numbers, &identity)
                        .await?;
                    let ct = format!(
                        "application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
                    );
                    return Ok(multipart_response(
                        "application/octet-stream",
                        decoded.into_iter().map(|f| (ct.clone(), f)).collect(),
                    ));
                }
                _ => {}
            }
        } else if Some(part) == compressed_type && (want.is_none() || as_stored) {
            let ct = format!("{part}; transfer-syntax={ts}");
            return Ok(multipart_response(
                part,
                stored.frames.into_iter().map(|f| (ct.clone(), f)).collect(),
            ));
        }
    }
    Err(HttpError::not_acceptable(format!(
        "frames of this instance are stored in transfer syntax {ts}; accept multipart/related with \
         type=\"application/octet-stream\"{}",
        compressed_type
            .map(|t| format!(" or type=\"{t}\""))
            .unwrap_or_default()
    )))
}

fn multipart_response(part_type: &str, parts: Vec<(String, Bytes)>) -> Response {
    let mp = Multipart::new();
    let content_type = mp.content_type(part_type);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        mp.body(parts),
    )
        .into_response()
}

// ---------------------------------------------------------------- bulk data

fn parse_range(headers: &HeaderMap) -> Result<Option<std::ops::Range<u64>>, HttpError> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let bad = || {
        HttpError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("unsupported Range {v:?}: use bytes=start-end"),
        )
    };
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = if b.trim().is_empty() {
        u64::MAX
    } else {
        b.trim()
            .parse::<u64>()
            .map_err(|_| bad())?
            .saturating_add(1)
    };
    if end <= start {
        return Err(bad());
    }
    Ok(Some(start..end))
}

pub async fn bulkdata(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series, instance, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let range = parse_range(&headers)?;
    let scope = scope(study, Some(series), Some(instance));
    let bulk = state
        .archive
        .bulkdata(&scope, &path, range.clone(), &identity)
        .await?;
    let ranges = accept_ranges(&headers);
    let partial = range.is_some();
    let content_range = format!(
        "bytes {}-{}/{}",
        bulk.range.start,
        bulk.range.end.saturating_sub(1),
        bulk.total_len
    );
    // A single octet-stream body when the client asks for it (or for a byte range of it),
    // otherwise the multipart form PS3.18 8.7.3.2 describes.
    let single = ranges
        .iter()
        .any(|r| r.q > 0.0 && r.essence == "application/octet-stream");
    if single || (partial && !ranges.iter().any(|r| r.essence == "multipart/related")) {
        let mut response = (
            if partial {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            },
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bulk.bytes,
        )
            .into_response();
        if partial {
            if let Ok(v) = HeaderValue::try_from(content_range) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        return Ok(response);
    }
    if !ranges
        .iter()
        .any(|r| r.q > 0.0 && r.accepts_multipart_of("application/octet-stream"))
    {
        return Err(HttpError::not_acceptable(
            "bulk data is served as multipart/related; type=\"application/octet-stream\" or application/octet-stream",
        ));
    }
    let mp = Multipart::new();
    let content_type = mp.content_type("application/octet-stream");
    let mut body = Vec::with_capacity(bulk.bytes.len() + 256);
    let extra: Vec<(&str, String)> = if partial {
        vec![("Content-Range", content_range)]
    } else {
        vec![]
    };
    body.extend_from_slice(&mp.part_header("application/octet-stream", &extra));
    body.extend_from_slice(&bulk.bytes);
    body.extend_from_slice(&mp.part_end());
    body.extend_from_slice(&mp.close());
    Ok((
        if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
        [(header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response())
}

// ---------------------------------------------------------------- rendered, thumbnail

fn parse_render(
    raw: Option<&str>,
    headers: &HeaderMap,
    thumbnail: bool,
) -> Result<RenderRequest, HttpError> {
    let mut request = RenderRequest::default();
    for (k, v) in crate::qido::form_pairs(raw.unwrap_or("")) {
        match k.as_str() {
            "window" => {
                let parts: Vec<&str> = v.split(',').collect();
                let nums: Option<Vec<f64>> = parts
                    .iter()
                    .take(2)
                    .map(|p| p.trim().parse().ok())
                    .collect();
                match nums.as_deref() {
                    Some([c, w]) if c.is_finite() && w.is_finite() && *w > 0.0 => {
                        request.window = Some((*c, *w))
                    }
                    _ => {
                        return Err(HttpError::bad_request(format!(
                            "window={v:?}: expected center,width[,function]"
                        )))
                    }
                }
            }
            "viewport" => {
                let nums: Option<Vec<u32>> = v
                    .split(',')
                    .take(2)
                    .map(|p| p.trim().parse().ok())
                    .collect();
                match nums.as_deref() {
                    Some([w, h]) if *w > 0 && *h > 0 && *w <= 8192 && *h <= 8192 => {
                        request.viewport = Some((*w, *h))
                    }
                    _ => {
                        return Err(HttpError::bad_request(format!(
                            "viewport={v:?}: expected width,height"
                        )))
                    }
                }
            }
            "quality" => {
                request.quality = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(|| HttpError::bad_request("quality must be 1-100"))?,
                )
            }
            _ => {}
        }
    }
    if thumbnail && request.viewport.is_none() {
        request.viewport = Some((128, 128));
    }
    let ranges = accept_ranges(headers);
    let jpeg = media::accepts(&ranges, "image/jpeg");
    let png = media::accepts(&ranges, "image/png");
    // whether neither is acceptable is the archive's to say: an encapsulated document is
    // answered in its own media type instead
    request.png = match (jpeg, png) {
        (true, _) => ranges
            .iter()
            .find(|r| r.essence == "image/png" || r.essence == "image/jpeg")
            .is_some_and(|r| r.essence == "image/png"),
        (false, png) => png,
    };
    request.accept = ranges;
    Ok(request)
}

async fn render(
    state: Arc<AppState>,
    identity: Identity,
    headers: HeaderMap,
    raw: Option<String>,
    scope: Scope,
    frame: Option<u32>,
    thumbnail: bool,
) -> Result<Response, HttpError> {
    let mut request = parse_render(raw.as_deref(), &headers, thumbnail)?;
    request.frame = frame;
    request.thumbnail = thumbnail;
    let rendered = state.archive.render(&scope, &request, &identity).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, rendered.media_type),
            (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
        ],
        rendered.bytes,
    )
        .into_response())
}

macro_rules! render_handlers {
    ($($name:ident, $thumb:expr, $frame:expr, ($($p:ident),*) => ($study:expr, $series:expr, $instance:expr, $fr:expr);)*) => {$(
        pub async fn $name(
            State(s): State<Arc<AppState>>,
            identity: Identity,
            Path(($($p),*,)): Path<($(render_handlers!(@ty $p)),*,)>,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
        ) -> Result<Response, HttpError> {
            let frame: Option<u32> = $fr;
            let _ = $frame;
            render(s, identity, headers, q, scope($study, $series, $instance), frame, $thumb).await
        }
    )*};
    (@ty $p:ident) => { String };
}

render_handlers! {
    study_rendered, false, (), (study) => (study, None, None, None);
    study_thumbnail, true, (), (study) => (study, None, None, None);
    series_rendered, false, (), (study, series) => (study, Some(series), None, None);
    series_thumbnail, true, (), (study, series) => (study, Some(series), None, None);
    instance_rendered, false, (), (study, series, instance) => (study, Some(series), Some(instance), None);
    instance_thumbnail, true, (), (study, series, instance) => (study, Some(series), Some(instance), None);
    frame_rendered, false, (), (study, series, instance, frame) => (study, Some(series), Some(instance), Some(first_frame(&frame)?));
    frame_thumbnail, true, (), (study, series, instance, frame) => (study, Some(series), Some(instance), Some(first_frame(&frame)?));
}
