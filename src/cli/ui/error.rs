//! The API's errors: every refusal is a JSON object `{"error": {"kind", "message"}}` with a 4xx status for what the
//! caller got wrong, and a 5xx only for what Redis did. Extractor rejections (a malformed query, body or path) are
//! turned into the same shape, so a script never has to parse axum's plain-text messages.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redcall::ErrorKind;

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`bad_request`, `not_found`, `forbidden`, `read_only`, ...).
    pub kind: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// A 400: the caller's input is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 404: no such service, dead letter, request, job or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 405: actions are `POST`, reads are `GET`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "wrong method for this endpoint: actions are POST, reads are GET",
        )
    }

    /// A 503: the dashboard cannot answer yet (its first sample is not taken).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A 429: too many actions are running; try again once one has finished.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_jobs", message)
    }

    /// A 500: the dashboard's own fault (an action that panicked); never for anything a caller sent.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A 403 with its own `kind` (`forbidden`, `csrf`, `read_only`).
    pub fn forbidden(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, message)
    }

    /// A 401: no or a wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required (Authorization: Bearer <token>, or open the page with ?token=<token>)",
        )
    }

    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "kind": self.kind, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<redcall::Error> for ApiError {
    fn from(err: redcall::Error) -> Self {
        let (status, kind) = match err.kind() {
            ErrorKind::InvalidArgument | ErrorKind::Config | ErrorKind::PayloadTooLarge => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable"),
            // Data in Redis that does not decode, or a failed command: the server's side, not the caller's.
            ErrorKind::Redis | ErrorKind::Codec | ErrorKind::Unsupported => {
                (StatusCode::BAD_GATEWAY, "redis")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, kind, err.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::bad_request(format!("the request body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(format!("the query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(format!("the path: {}", rejection.body_text()))
    }
}

/// What an API handler returns.
pub type ApiResult<T = Json<serde_json::Value>> = Result<T, ApiError>;
