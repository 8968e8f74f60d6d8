//! Every HTTP error status this front-end answers, decided in one place.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::archive::ArchiveError;

/// An error response: status and a readable message (text/plain).
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }
}

impl From<ArchiveError> for HttpError {
    fn from(e: ArchiveError) -> Self {
        let status = match &e {
            ArchiveError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ArchiveError::NotFound(_) => StatusCode::NOT_FOUND,
            ArchiveError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ArchiveError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ArchiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        HttpError::new(status, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}
