//! The web page and the OpenAPI document, both built into the binary.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// The page: one HTML file with its script and styles inline, talking to the JSON API.
const PAGE: &str = include_str!("../assets/index.html");

/// The OpenAPI 3.1 description of the API. `tests/serve.rs` checks that it lists every route.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// `GET /`.
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

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
