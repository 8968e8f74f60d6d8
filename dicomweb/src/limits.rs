//! Limits of the HTTP stack that no request can talk its way past: the body limit of every
//! route but DICOMweb (whose STOW-RS streams and enforces its own per-instance and
//! per-request limits), and the cap on requests in flight.
//!
//! The limits of connections (how many, header and idle timeouts) belong to the server's
//! accept loop, not to this stack.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::error::HttpError;

/// Largest body of a request to a route other than DICOMweb: the JSON bodies of the admin,
/// login, users, keys and worker APIs. Axum's default, stated and enforced on the body itself,
/// so a handler that reads the raw body is held to it as well as one that uses an extractor.
pub const API_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How much of a body declared too large is read (and dropped) before the 413 is sent, so
/// that a client which writes its whole body before reading gets the answer rather than a
/// reset connection; beyond it (or after [`DRAIN_TIME`]) the connection is closed.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// How long a body declared too large is read before the 413 is sent.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Seconds a client refused for load is told to wait (`Retry-After`, RFC 9110 10.2.3).
pub const RETRY_AFTER_SECS: u32 = 1;

/// The `Content-Length` of a request, when it has one that parses.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// 413 with the limit in its message.
pub fn too_large(what: &str, limit: u64) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{what} larger than the limit of {limit} bytes"),
    )
}

/// Reads and drops what remains of `body`, at most `cap` bytes and for at most
/// [`DRAIN_TIME`]; true when the body was read to its end (the connection can then be kept).
pub async fn drain(body: Body, cap: u64) -> bool {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(None) => return true,
            Ok(Some(Ok(chunk))) => {
                seen = seen.saturating_add(chunk.len() as u64);
                if seen > cap {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// Middleware: the body of the request is at most [`API_BODY_LIMIT`] bytes. A declared
/// `Content-Length` beyond it is answered 413 at once (after draining, see [`drain`]); a body
/// without one is cut at the limit, which the extractors answer with 413.
pub(crate) async fn limit_api_body(request: Request, next: Next) -> Response {
    let limit = API_BODY_LIMIT;
    if content_length(request.headers()).is_some_and(|n| n > limit as u64) {
        let (_, body) = request.into_parts();
        let drained = drain(body, DRAIN_BYTES).await;
        let mut response = too_large("request body", limit as u64).into_response();
        if !drained {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    }
    next.run(request.map(|body| Body::new(http_body_util::Limited::new(body, limit))))
        .await
}

/// The cap on requests in flight: a request beyond it is answered 503 with `Retry-After`
/// before anything else (authentication included) works for it. A request is in flight until
/// its response body has been sent (or dropped), so a long download or a STOW-RS upload holds
/// its place for as long as it runs.
#[derive(Clone)]
pub(crate) struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Middleware of [`InFlight`].
pub(crate) async fn in_flight(
    State(cap): State<InFlight>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = cap.permits.clone().try_acquire_owned() else {
        tracing::warn!(
            max = cap.max,
            "request refused: too many requests in flight"
        );
        return HttpError::unavailable(format!(
            "too many requests in flight (at most {}); retry later",
            cap.max
        ))
        .with_header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))
        .into_response();
    };
    let response = next.run(request).await;
    // the permit goes with the body: released when the body is finished or dropped
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &permit;
            frame
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_parses_or_is_none() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(content_length(&h), Some(12));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&h), None);
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_static("99999999999999999999999"),
        );
        assert_eq!(content_length(&h), None);
    }

    #[tokio::test]
    async fn drain_reads_to_the_end_or_stops_at_the_cap() {
        assert!(drain(Body::from(vec![0u8; 1000]), 1000).await);
        assert!(!drain(Body::from(vec![0u8; 1001]), 1000).await);
    }
}
