//! The web page, built into the binary, and the OpenAPI document, generated from the handlers
//! (see [`crate::openapi`]).

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// The page: one HTML file with its script and styles inline, talking to the JSON API.
const PAGE: &str = include_str!("../assets/index.html");

/// The web page.
///
/// Connect accounts, see their syncs, disconnect; it signs in with an API key through
/// `POST /session`.
#[utoipa::path(
    get,
    path = "/",
    tag = "web",
    operation_id = "web_page",
    security(),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html")
    )
)]
pub async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            // The page loads nothing from elsewhere, and nothing may frame it.
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// This document: the OpenAPI 3.1 description of the API.
///
/// Generated from the handlers and their types; `tests/serve.rs` checks that it lists every
/// route.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    security(),
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json")
    )
)]
pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], crate::openapi::json()).into_response()
}
