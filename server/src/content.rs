//! `GET /blobs/{hash}` and `GET /media/{record}`: a record's content (the photo, the file, an
//! attachment, a thumbnail), to its owner only.

use axum::body::Body;
use axum::extract::{Path, Query, State};
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
    serve(&state, &parsed, content_type.as_deref(), None, &headers).await
}

/// What `GET /media/{record}` may ask for.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct MediaQuery {
    /// The part of the record's content (`html`, `attachments/1`, as `parts` in `GET /records`
    /// names them). Default: the record's own content.
    pub part: Option<String>,
    /// A thumbnail of the record's own photo (JPEG, at most 320 pixels on its longer side),
    /// made the first time it is asked for and kept.
    #[serde(default)]
    pub thumbnail: bool,
}

/// The content of one of the user's records: its own (the photo, the file), one of its other
/// parts, or a thumbnail of its photo. With the content's type, its file name (as a download
/// takes it) and the caching and range support of `GET /blobs/{hash}`.
#[utoipa::path(
    get,
    path = "/media/{record}",
    tag = "records",
    params(("record" = String, Path, description = "The record's `id`, as `GET /records` gives it"), MediaQuery),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream"),
        (status = 206, description = "The asked range of the bytes", content_type = "application/octet-stream"),
        (status = 304, description = "Not modified (`If-None-Match` named this content)"),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No record of the user's with this id has such content (or no thumbnail can be made of it)", body = ErrorBody),
        (status = 416, description = "The range is outside the content"),
        (status = 500, description = "The service failed (its database or its blob store)", body = ErrorBody)
    )
)]
pub async fn media(
    State(state): State<AppState>,
    User(user): User,
    Path(record): Path<String>,
    Query(query): Query<MediaQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let part = query.part.as_deref().unwrap_or("");
    let not_found = || {
        ApiError::not_found(format!(
            "no record of yours with id `{record}` has content{}",
            if part.is_empty() {
                String::new()
            } else {
                format!(" `{part}`")
            }
        ))
    };
    // The thumbnail is asked for as such, not as a part.
    let (Ok(id), false) = (record.parse::<i64>(), part.starts_with('.')) else {
        return Err(not_found());
    };
    let Some(stored) = state.tables.record_part(&user, id, part).await? else {
        return Err(not_found());
    };
    let Ok(hash) = stored.hash.parse::<BlobHash>() else {
        return Err(ApiError::internal(format!(
            "a stored hash is unreadable: `{}`",
            stored.hash
        )));
    };
    if !query.thumbnail {
        return serve(
            &state,
            &hash,
            stored.content_type.as_deref(),
            stored.file_name.as_deref(),
            &headers,
        )
        .await;
    }
    let no_thumbnail = || {
        ApiError::not_found(format!(
            "no thumbnail can be made of record `{record}`'s content"
        ))
    };
    if !part.is_empty() {
        return Err(no_thumbnail());
    }
    let thumbnail = match stored.thumbnail.as_deref().map(str::parse::<BlobHash>) {
        Some(Ok(thumbnail)) => thumbnail,
        _ => {
            let content_type = stored.content_type.as_deref().unwrap_or("");
            if !engine::blobs::can_thumbnail(content_type) {
                return Err(no_thumbnail());
            }
            let _turn = state
                .thumbnails
                .acquire()
                .await
                .map_err(|error| ApiError::internal(error.to_string()))?;
            let made = state
                .blobs
                .make_thumbnail(&hash, content_type)
                .await
                .map_err(|error| ApiError::internal(format!("the blob store: {error}")))?
                .ok_or_else(no_thumbnail)?;
            state.tables.keep_thumbnail(&user, &stored, &made).await?;
            made.hash
        }
    };
    serve(&state, &thumbnail, Some("image/jpeg"), None, &headers).await
}

/// Answers with blob `hash`: whole or one range, cacheable for good (its name is its hash),
/// never to be run as a page of ours.
async fn serve(
    state: &AppState,
    parsed: &BlobHash,
    content_type: Option<&str>,
    file_name: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let hash = parsed.to_hex();
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
        .size(parsed)
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
        .read(parsed, range.clone())
        .await
        .map_err(|error| ApiError::internal(format!("the blob store: {error}")))?;
    let content_type = content_type
        .and_then(|text| HeaderValue::from_str(text).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    common.insert(header::CONTENT_TYPE, content_type);
    if let Some(name) = file_name {
        // RFC 6266 with RFC 8187's UTF-8 form: any name, quoted safely.
        let ascii: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let encoded =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        if let Ok(value) = HeaderValue::from_str(&format!(
            "inline; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
        )) {
            common.insert(header::CONTENT_DISPOSITION, value);
        }
    }
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
