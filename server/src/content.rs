//! `GET /blobs/{hash}`: a record's content (the photo, the file), to its owner only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::blobs::BlobHash;

use crate::error::{ApiError, ErrorBody};
use crate::identity::User;
use crate::state::AppState;

/// The bytes of a blob one of the user's records refers to, whole or one range of them
/// (`Range: bytes=...`). Immutable: its name is its hash, which is also its `ETag`.
#[utoipa::path(
    get,
    path = "/blobs/{hash}",
    tag = "records",
    params(("hash" = String, Path, description = "The content's BLAKE3 hash, as a record's `content.hash` gives it", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream"),
        (status = 206, description = "The asked range of the bytes", content_type = "application/octet-stream"),
        (status = 304, description = "Not modified (`If-None-Match` named this hash)"),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No record of the user's has this content", body = ErrorBody),
        (status = 416, description = "The range is outside the content"),
        (status = 500, description = "The service failed (its database or its blob store)", body = ErrorBody)
    )
)]
pub async fn blob(
    State(state): State<AppState>,
    User(user): User,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no record of yours has content `{hash}`"));
    let Ok(parsed) = hash.parse::<BlobHash>() else {
        return Err(not_found());
    };
    // Another user's content is not theirs to fetch, even by its hash.
    let Some((_, content_type)) = state.tables.owned_blob(&user, &hash).await? else {
        return Err(not_found());
    };
    let etag = format!("\"{hash}\"");
    let mut common = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        common.insert(header::ETAG, value);
    }
    // Content is a person's own: private caches only, and never again fetched (its name is
    // its hash). Sniffing would let a crafted file run as a page of ours.
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    common.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let size = state
        .blobs
        .size(&parsed)
        .await
        .map_err(|error| ApiError::internal(format!("the blob store: {error}")))?;
    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        None => None,
        Some(text) => match byte_range(text, size) {
            Asked::Whole => None,
            Asked::Range(range) => Some(range),
            Asked::Unsatisfiable => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    common.insert(header::CONTENT_RANGE, value);
                }
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
            }
        },
    };
    let chunks = state
        .blobs
        .read(&parsed, range.clone())
        .await
        .map_err(|error| ApiError::internal(format!("the blob store: {error}")))?;
    let content_type = content_type
        .and_then(|text| HeaderValue::from_str(&text).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    common.insert(header::CONTENT_TYPE, content_type);
    let status = match &range {
        Some(range) => {
            if let Ok(value) =
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", range.start, range.end - 1))
            {
                common.insert(header::CONTENT_RANGE, value);
            }
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    let length = range.as_ref().map_or(size, |range| range.end - range.start);
    if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
        common.insert(header::CONTENT_LENGTH, value);
    }
    Ok((status, common, Body::from_stream(chunks)).into_response())
}

/// What a `Range` header asks of content of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// The whole content: no byte range, or several (which are answered whole, as RFC 9110
    /// allows), or a unit other than bytes.
    Whole,
    /// One range, end exclusive.
    Range(std::ops::Range<u64>),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// Reads `bytes=A-B`, `bytes=A-` or `bytes=-N` (RFC 9110, section 14.1.2).
fn byte_range(header: &str, size: u64) -> Asked {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Asked::Whole;
    };
    if spec.contains(',') {
        return Asked::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Asked::Whole;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // The last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => {
            Asked::Range(size.saturating_sub(suffix)..size)
        }
        (true, _, _) => Asked::Unsatisfiable,
        (false, Some(start), _) if start >= size => Asked::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Asked::Range(start..size),
        (false, Some(start), Some(end)) if end >= start => {
            Asked::Range(start..end.saturating_add(1).min(size))
        }
        _ => Asked::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_rfc_9110_writes_them() {
        assert_eq!(byte_range("bytes=0-99", 1000), Asked::Range(0..100));
        assert_eq!(byte_range("bytes=900-", 1000), Asked::Range(900..1000));
        assert_eq!(byte_range("bytes=-100", 1000), Asked::Range(900..1000));
        assert_eq!(byte_range("bytes=-5000", 1000), Asked::Range(0..1000));
        assert_eq!(byte_range("bytes=990-2000", 1000), Asked::Range(990..1000));
        assert_eq!(byte_range("bytes=1000-", 1000), Asked::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 1000), Asked::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-1,5-9", 1000), Asked::Whole);
        assert_eq!(byte_range("items=0-1", 1000), Asked::Whole);
        assert_eq!(byte_range("bytes=9-1", 1000), Asked::Whole);
        assert_eq!(byte_range("bytes=x-", 1000), Asked::Whole);
    }
}
