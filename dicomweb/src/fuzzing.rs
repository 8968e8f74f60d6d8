//! Entry points for the fuzz targets in `fuzz/` (not part of the crate's API).
//!
//! [`stow`] sends one STOW-RS request through the whole HTTP stack ([`crate::app`]: identity,
//! limits, routing, the multipart reader of [`crate::stow`]) to an archive that keeps nothing,
//! so that what is fuzzed is the reading of the request, not the archive behind it.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use bytes::Bytes;

use crate::archive::{
    Archive, ArchiveError, BulkData, ByteStream, InstanceInfo, Metadata, RenderRequest, Scope,
    SearchRequest, SearchResponse, StoreResult, StoredFrames,
};
use crate::identity::Identity;
use crate::DicomWebConfig;

/// Stores nothing: a part whose length is even is "stored", an odd one refused, so that the
/// response has both sequences; everything else is not found.
struct NullArchive;

fn none() -> ArchiveError {
    ArchiveError::NotFound("nothing here".into())
}

#[async_trait::async_trait]
impl Archive for NullArchive {
    async fn statistics(&self, _: &Identity) -> Result<serde_json::Value, ArchiveError> {
        Err(none())
    }
    async fn search(&self, _: SearchRequest, _: &Identity) -> Result<SearchResponse, ArchiveError> {
        Err(none())
    }
    async fn instances(&self, _: &Scope, _: &Identity) -> Result<Vec<InstanceInfo>, ArchiveError> {
        Err(none())
    }
    async fn read_instance(
        &self,
        _: &InstanceInfo,
        _: &Identity,
    ) -> Result<ByteStream, ArchiveError> {
        Err(none())
    }
    fn can_transcode(&self, _: &str) -> bool {
        false
    }
    async fn read_instance_explicit_le(
        &self,
        _: &InstanceInfo,
        _: &Identity,
    ) -> Result<Bytes, ArchiveError> {
        Err(none())
    }
    async fn metadata(&self, _: &Scope, _: &str, _: &Identity) -> Result<Metadata, ArchiveError> {
        Err(none())
    }
    async fn frames(
        &self,
        _: &Scope,
        _: &[u32],
        _: &Identity,
    ) -> Result<StoredFrames, ArchiveError> {
        Err(none())
    }
    async fn decoded_frames(
        &self,
        _: &Scope,
        _: &[u32],
        _: &Identity,
    ) -> Result<Vec<Bytes>, ArchiveError> {
        Err(none())
    }
    async fn bulkdata(
        &self,
        _: &Scope,
        _: &str,
        _: Option<Range<u64>>,
        _: &Identity,
    ) -> Result<BulkData, ArchiveError> {
        Err(none())
    }
    async fn render(
        &self,
        _: &Scope,
        _: &RenderRequest,
        _: &Identity,
    ) -> Result<crate::archive::Rendered, ArchiveError> {
        Err(none())
    }
    async fn store(
        &self,
        object: crate::archive::ReceivedPart,
        _: Option<&str>,
        _: &Identity,
    ) -> StoreResult {
        if object.len().is_multiple_of(2) {
            StoreResult::Stored {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
                sop_instance_uid: format!("1.2.3.{}", object.len()),
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: "1.2.3.4".into(),
                warning: object.len().is_multiple_of(4).then_some(0xB006),
            }
        } else {
            StoreResult::Failed {
                sop_class_uid: None,
                sop_instance_uid: None,
                reason: 0xC000,
                message: "odd".into(),
            }
        }
    }
}

/// (largest instance, largest request) of each configuration `data[0]` can pick.
const LIMITS: [(u64, u64); 4] = [
    (64, 4096),
    (4096, 1 << 20),
    (1 << 20, 1 << 20),
    (u64::MAX, u64::MAX),
];

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    /// The HTTP stack of each configuration, built once.
    static APPS: Vec<axum::Router> = LIMITS
        .iter()
        .map(|&(max_instance_bytes, max_request_bytes)| {
            let config = DicomWebConfig {
                max_instance_bytes,
                max_request_bytes,
                ..DicomWebConfig::default()
            };
            crate::app(Arc::new(NullArchive), config, Vec::new())
        })
        .collect();
}

/// One STOW-RS request. `data[0]` picks the limits ([`LIMITS`]), the path (with or without a study) and the
/// size of the chunks the body arrives in; the bytes up to the first newline are the
/// Content-Type; the rest is the body. Returns the response status, if a request was made.
#[doc(hidden)]
pub fn stow(data: &[u8]) -> Option<StatusCode> {
    let (&knobs, rest) = data.split_first()?;
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let content_type = HeaderValue::from_bytes(content_type).ok()?;
    let chunk = [1, 7, 100, 1 << 20][usize::from((knobs >> 2) & 3)];
    let uri = if knobs & 0x10 == 0 {
        "/dicom-web/studies"
    } else {
        "/dicom-web/studies/1.2.3"
    };
    let app = APPS.with(|apps| apps[usize::from(knobs & 3)].clone());
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type);
    if knobs & 0x20 != 0 {
        request = request.header(header::CONTENT_LENGTH, body.len());
    }
    let request = request
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .ok()?;
    RUNTIME.with(|rt| {
        rt.block_on(async {
            use tower::Service;
            let mut app = app;
            let Ok(()) = std::future::poll_fn(|cx| {
                <axum::Router as Service<Request<Body>>>::poll_ready(&mut app, cx)
            })
            .await;
            let Ok(response) = app.call(request).await;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a response body in memory");
            if matches!(
                status,
                StatusCode::OK | StatusCode::ACCEPTED | StatusCode::CONFLICT
            ) {
                // the STOW-RS response is DICOM JSON
                serde_json::from_slice::<serde_json::Value>(&body)
                    .expect("the STOW-RS response is JSON");
            }
            Some(status)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stow_requests_run_through_the_harness() {
        let mut input = b"\0multipart/related; type=\"application/dicom\"; boundary=XX\n".to_vec();
        input.extend_from_slice(
            b"--XX\r\nContent-Type: application/dicom\r\n\r\nabcd\r\n--XX\r\n\r\nabc\r\n--XX--\r\n",
        );
        for knobs in 0..64 {
            input[0] = knobs;
            assert!(stow(&input).is_some());
        }
        // no limits: one part stored (with a warning), one refused
        input[0] = 3;
        assert_eq!(stow(&input), Some(StatusCode::ACCEPTED));
        // at most 64 bytes an instance: a part of 100 is refused, and so is the odd one
        let part = b"--XX\r\nContent-Type: application/dicom\r\n\r\n";
        let mut limited = b"\0multipart/related; boundary=XX\n".to_vec();
        limited.extend_from_slice(part);
        limited.extend_from_slice(&[b'x'; 100]);
        limited.extend_from_slice(b"\r\n");
        limited.extend_from_slice(part);
        limited.extend_from_slice(b"abc\r\n--XX--\r\n");
        assert_eq!(stow(&limited), Some(StatusCode::CONFLICT));
        limited[0] = 3;
        assert_eq!(stow(&limited), Some(StatusCode::ACCEPTED));
        assert_eq!(stow(b""), None);
        assert_eq!(
            stow(b"\x03text/plain\nx"),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    /// The inputs the `stow` fuzz target once failed on (fuzz/regressions/stow/) run through.
    #[test]
    fn regression_inputs_run_through_the_harness() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/stow");
        for entry in std::fs::read_dir(dir).into_iter().flatten() {
            stow(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
}
