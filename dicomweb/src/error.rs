//! The one error type of the HTTP stack: every error answer of every route (DICOMweb, admin,
//! worker, statistics) is an [`HttpError`], rendered as `{"error": "<message>"}`
//! (`application/json`). PS3.18 8.6.2 leaves the body of an error response to the origin
//! server.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::archive::ArchiveError;

/// An error response: its status, a readable message and any headers it needs (e.g.
/// `WWW-Authenticate` on a 401).
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 503: the index (or another dependency) cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<ArchiveError> for HttpError {
    fn from(e: ArchiveError) -> Self {
        if let ArchiveError::RangeNotSatisfiable { length } = e {
            // RFC 9110 15.5.17: a 416 says how long the representation is
            let error = HttpError::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string());
            return match HeaderValue::try_from(format!("bytes */{length}")) {
                Ok(v) => error.with_header(header::CONTENT_RANGE, v),
                Err(_) => error,
            };
        }
        let status = match &e {
            ArchiveError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ArchiveError::NotFound(_) => StatusCode::NOT_FOUND,
            ArchiveError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ArchiveError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ArchiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ArchiveError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        };
        HttpError::new(status, e.to_string())
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "request failed");
        }
        let body = serde_json::to_vec(&serde_json::json!({ "error": self.message }))
            .unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_json_with_headers() {
        let response = HttpError::new(StatusCode::UNAUTHORIZED, "token \"x\" required")
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"error": "token \"x\" required"}));
    }
}
