//! API errors: a status and a JSON body that says what went wrong and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. Every handler returns these instead of panicking; internal failures become
/// 500 with a message that names what failed, never a stack trace or a secret.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

/// The body of every error answer (`Error` in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The kind of error.
    pub code: ErrorCode,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}

/// The kind of an error, one per status: `bad_request` (400), `unauthorized` (401),
/// `forbidden` (403), `not_found` (404), `too_large` (413), `conflict` (409), `provider_error` (502), `internal` (500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no or unknown credentials.
    Unauthorized,
    /// 403: known, but not allowed this.
    Forbidden,
    /// 404: nothing by that name, or not the caller's.
    NotFound,
    /// 413: the request body is larger than the API reads.
    TooLarge,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 502: the provider refused or failed.
    ProviderError,
    /// 500: the service itself failed.
    Internal,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 404: nothing by that name, or not the caller's (the two are not told apart, so that
    /// one user cannot probe for another's integrations).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    /// 502: the provider refused or failed.
    pub fn provider(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, ErrorCode::ProviderError, message)
    }

    /// 413: the body is larger than the service takes.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
    }

    /// 500: the service itself failed (the database, most often).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }

    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<engine::store::StoreError> for ApiError {
    fn from(error: engine::store::StoreError) -> Self {
        tracing::error!(%error, "store");
        Self::internal(format!("the database failed: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Turns axum's own rejections (bad JSON, bad query strings, bad paths) into JSON errors.
pub fn rejection(rejection: impl axum::response::IntoResponse + std::fmt::Display) -> ApiError {
    let message = rejection.to_string();
    // A body over the limit keeps its own status (413), in the API's JSON shape.
    if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "{message}: the API reads bodies of at most {} bytes",
                crate::MAX_REQUEST_BODY
            ),
        );
    }
    ApiError::bad_request(message)
}
