//! The API's OpenAPI 3.1 document, generated with utoipa from the handlers' `#[utoipa::path]`
//! attributes (routes, parameters, bodies, answers; their doc comments become the summaries and
//! descriptions) and from the request and response types (`ToSchema`, `IntoParams`), so it
//! cannot drift from the code.
//!
//! `GET /openapi.json` serves it, and `connector schema --write` keeps a copy in
//! `schemas/openapi.json` (`--check` and `tests/generated_files.rs` compare the two). Every route
//! of [`crate::router`] has its handler listed in [`ApiDoc`]'s `paths`; `tests/serve.rs` checks
//! that the document and the router agree.

use std::sync::LazyLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::identity::COOKIE_NAME;

/// Where `connector schema --write` keeps the document, relative to the repository root.
pub const PATH: &str = "schemas/openapi.json";

/// The document's introduction (`info.description`).
const DESCRIPTION: &str = "Connect accounts, sync them on a schedule, read the imported \
records. Every endpoint but `/`, `/healthz`, `/openapi.json` and `/session` needs credentials: \
an API key (`Authorization: Bearer <key>`, or the cookie `POST /session` sets), or the trusted \
gateway header when the service is configured so. Another user's integrations are answered \
404, as if they did not exist. Errors are JSON: `{\"error\": {\"code\", \"message\"}}`.";

/// The document's definition: every handler, the schemas of what they take and answer, the
/// ways callers authenticate, and the tags that group the operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hypernet Connect",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION
    ),
    paths(
        crate::web::page,
        crate::web::openapi,
        crate::api::healthz,
        crate::api::metrics,
        crate::api::start_session,
        crate::api::end_session,
        crate::api::me,
        crate::api::connectors,
        crate::api::list,
        crate::connect::create,
        crate::api::get,
        crate::api::update,
        crate::api::delete,
        crate::api::sync_now,
        crate::imports::create,
        crate::connect::authorize,
        crate::connect::callback,
        crate::api::records,
        crate::content::blob,
        crate::content::media,
        crate::api::audit
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorDetail,
        crate::error::ErrorCode,
        crate::api::Health,
        crate::api::Me,
        crate::api::SessionBody,
        crate::api::ConnectorList,
        crate::catalog::Listing,
        crate::api::IntegrationList,
        crate::api::IntegrationView,
        crate::tables::IntegrationSummary,
        crate::connect::NewIntegration,
        crate::api::Changes,
        crate::api::SyncScheduled,
        crate::api::SyncRequest,
        crate::state::SessionWaiting,
        crate::api::Disconnection,
        crate::imports::ImportView,
        crate::imports::FolderImport,
        crate::tables::ImportRow,
        crate::tables::ImportSource,
        crate::tables::ImportStatus,
        crate::tables::RecordPage,
        crate::tables::RecordRow,
        crate::tables::RecordContent,
        crate::api::AuditLog,
        engine::store::AuditEntry,
        engine::store::SyncRunRow,
        engine::store::RunTotals
    )),
    modifiers(&SecuritySchemes),
    security(("apiKey" = []), ("cookie" = []), ("trustedHeader" = [])),
    tags(
        (name = "web", description = "The web page and its session cookie"),
        (name = "service", description = "Health, metrics, who is asking, and this document"),
        (name = "connectors", description = "The catalog of connectors offered"),
        (name = "integrations", description = "The user's connected accounts: connecting one without a browser, status, syncing now, the sync interval, disconnecting"),
        (name = "connect", description = "Connecting an account through the browser: the OAuth round trip"),
        (name = "records", description = "What was imported, and the audit log")
    )
)]
pub struct ApiDoc;

/// Adds the ways callers authenticate (see [`crate::identity`]) as security schemes; the
/// document's `security` accepts any one of them.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>`. `connector serve --create-key USER` creates one (printed once; only its BLAKE3 hash is stored).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE_NAME,
                "An API key in the `HttpOnly`, `SameSite=Lax` cookie that `POST /session` sets, for the web page (the OAuth redirects cannot carry a header).",
            ))),
        );
        components.add_security_scheme(
            "trustedHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Hypernet-User",
                "Only when the service runs with `--trusted-header NAME` (usually `X-Hypernet-User`), and then instead of API keys: Hypernet's gateway authenticates the user and names them in that header. For a service that nothing but the gateway can reach.",
            ))),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON, ending in a newline: what `GET /openapi.json` serves and
/// `schemas/openapi.json` holds. Built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut text = document().to_pretty_json().unwrap_or_default();
        text.push('\n');
        text
    });
    JSON.as_str()
}

/// `schemas/openapi.json` as `connector schema --write` writes it.
pub fn generated_file() -> engine::schema::GeneratedFile {
    engine::schema::GeneratedFile {
        path: PATH.into(),
        contents: json().to_owned(),
    }
}
