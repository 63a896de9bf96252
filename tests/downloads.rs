//! Records' content downloaded into the blob store (a stream's `content`), on SQLite and
//! PostgreSQL with a folder blob store: over loopback HTTP from a provider shaped like Google
//! Photos (a listing whose `baseUrl`s point at another host, `=d` for the bytes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::blobs::{BlobHash, BlobStore};
use engine::store::AnyStore;
use hypernet_tests::{
    RunOptions, run, run_with_blobs, serve, spec_from, test_blob_stores, test_stores,
};

const SPEC: &str = r#"
id: photos_api
name: Photos API
version: 1.0.0
category: media
description: Photos and videos, with their bytes.
docs_url: https://developers.google.com/photos/library/reference/rest/v1/mediaItems/list
auth: { kind: none }
base_url: https://photoslibrary.googleapis.com
allowed_hosts: [photoslibrary.googleapis.com, lh3.googleusercontent.com]
retry: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
streams:
  media_items:
    model: media
    request: { path: /v1/mediaItems }
    records: $.mediaItems[*]
    id: $.id
    map:
      media_type: "{{ 'video' if record.mimeType is startingwith('video/') else 'photo' }}"
      file_path: $.productUrl
      mime_type: $.mimeType
      title: $.filename
    content:
      request:
        path: "{{ record.baseUrl }}={{ 'dv' if record.mimeType is startingwith('video/') else 'd' }}"
      when: "record.mimeType is not startingwith('application/')"
      max_bytes: 100KiB
      content_type: $.mimeType
"#;

/// The bytes of a photo: distinct per seed, so that a wrong blob shows.
fn photo(seed: u8, size: usize) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE1];
    bytes.extend((0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    bytes
}

struct Provider {
    /// Content requests answered, by path.
    fetched: std::sync::Mutex<Vec<String>>,
    /// Content answers that fail with 503 before the first success, for `flaky`.
    flaky_left: AtomicUsize,
}

/// Five items as Google's listing shapes them: two copies of one photo (the same bytes), a
/// video, a photo too large for the stream's cap, one whose host redirects elsewhere, and a
/// document that has no content (`when`).
fn listing() -> serde_json::Value {
    let item = |id: &str, file: &str, mime: &str| {
        serde_json::json!({
            "id": id,
            "productUrl": format!("https://photos.google.com/lr/photo/{id}"),
            "baseUrl": format!("https://lh3.googleusercontent.com/lr/{file}"),
            "mimeType": mime,
            "filename": file,
            "mediaMetadata": {"creationTime": "2024-03-17T06:45:12Z", "width": "4032", "height": "3024"}
        })
    };
    serde_json::json!({
        "mediaItems": [
            item("AF1QipN3x7RkV0_b2Yw8eUq5ZsKpT9mLcHd4GfJa1Bc", "IMG_0001.JPG", "image/jpeg"),
            item("AF1QipMq8_hY2sZtW0nVb3XeK7pLu9RcDf6GjA4Bi1E", "IMG_0001(1).JPG", "image/jpeg"),
            item("AF1QipPz4Lw9-tQ1sYe6UrB2nXk8VmHc3Jd7GaF0Ki5", "VID_0002.MP4", "video/mp4"),
            item("AF1QipKe2Rj5nWq8-xYt1ZuB7mLs4VcPd9HfGa3Ci0D", "PANORAMA.JPG", "image/jpeg"),
            item("AF1QipHw6Tn3kZq0_pYr8VsB1mXe5LcJd2GuFa7Ni4O", "MOVED.JPG", "image/jpeg"),
            item("AF1QipJs1Pn8kWq3-rYt6ZvB0mLu9XcDd5HfGe2Ai7F", "notes.pdf", "application/pdf")
        ]
    })
}

async fn content(State(provider): State<Arc<Provider>>, Path(file): Path<String>) -> Response {
    provider.fetched.lock().unwrap().push(file.clone());
    if file.starts_with("VID_0002") && provider.flaky_left.load(Ordering::SeqCst) > 0 {
        provider.flaky_left.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (mime, bytes) = match file.as_str() {
        // Google names two uploads of one photo differently; the bytes are the same.
        "IMG_0001.JPG=d" | "IMG_0001(1).JPG=d" => ("image/jpeg", photo(1, 20_000)),
        "VID_0002.MP4=dv" => ("video/mp4", photo(2, 60_000)),
        "PANORAMA.JPG=d" => ("image/jpeg", photo(3, 200_000)),
        "MOVED.JPG=d" => {
            return (
                StatusCode::FOUND,
                [(header::LOCATION, "https://elsewhere.example.net/MOVED.JPG")],
            )
                .into_response();
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, mime)], bytes).into_response()
}

async fn provider(flaky: usize) -> (url::Url, Arc<Provider>) {
    let provider = Arc::new(Provider {
        fetched: std::sync::Mutex::default(),
        flaky_left: AtomicUsize::new(flaky),
    });
    let router = Router::new()
        .route("/v1/mediaItems", get(|| async { axum::Json(listing()) }))
        .route("/lr/{file}", get(content))
        .with_state(Arc::clone(&provider));
    (serve(router).await, provider)
}

/// Rows of a two-text-column query, in order.
async fn rows(store: &AnyStore, query: &'static str) -> Vec<(String, String)> {
    match store {
        AnyStore::Sqlite(store) => sqlx::query_as(query).fetch_all(store.pool()).await,
        AnyStore::Postgres(store) => sqlx::query_as(query).fetch_all(store.pool()).await,
    }
    .expect(query)
}

async fn stored(store: &AnyStore) -> Vec<(String, String)> {
    rows(
        store,
        "SELECT source_object_id, hash FROM record_blobs ORDER BY source_object_id",
    )
    .await
}

async fn owed(store: &AnyStore) -> Vec<(String, String)> {
    rows(
        store,
        "SELECT source_object_id, COALESCE(last_error, '') FROM downloads ORDER BY source_object_id",
    )
    .await
}

const IMG_1: &str = "AF1QipN3x7RkV0_b2Yw8eUq5ZsKpT9mLcHd4GfJa1Bc";
const IMG_1_COPY: &str = "AF1QipMq8_hY2sZtW0nVb3XeK7pLu9RcDf6GjA4Bi1E";
const VIDEO: &str = "AF1QipPz4Lw9-tQ1sYe6UrB2nXk8VmHc3Jd7GaF0Ki5";
const PANORAMA: &str = "AF1QipKe2Rj5nWq8-xYt1ZuB7mLs4VcPd9HfGa3Ci0D";
const MOVED: &str = "AF1QipHw6Tn3kZq0_pYr8VsB1mXe5LcJd2GuFa7Ni4O";

#[tokio::test]
async fn content_is_stored_once_by_hash_and_what_cannot_be_stored_stays_owed_with_its_reason() {
    let spec = spec_from(SPEC);
    for test in test_stores("downloads").await {
        let store = &test.store;
        let kept = test_blob_stores("downloads").remove(0);
        let blobs: BlobStore = kept.blobs.clone();
        let (server, provider) = provider(1).await;
        let options = || RunOptions {
            blobs: Some(blobs.clone()),
            ..RunOptions::default()
        };
        let (result, recorder) = run(&spec, &server, store, options()).await;
        let report = result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let totals = recorder.totals();
        assert_eq!(
            totals.written.new, 6,
            "{}: every record is stored",
            test.backend
        );
        assert_eq!(totals.contents, 3, "{}", test.backend);
        assert_eq!(totals.contents_failed, 2, "{}", test.backend);

        let photo_hash = BlobHash::of(&photo(1, 20_000)).to_hex();
        let video_hash = BlobHash::of(&photo(2, 60_000)).to_hex();
        assert_eq!(
            stored(store).await,
            vec![
                (IMG_1_COPY.to_owned(), photo_hash.clone()),
                (IMG_1.to_owned(), photo_hash.clone()),
                (VIDEO.to_owned(), video_hash.clone()),
            ],
            "{}",
            test.backend
        );
        // Two records, one blob: the same bytes are stored once.
        let mut listed: Vec<String> =
            futures_util::TryStreamExt::try_collect::<Vec<_>>(blobs.list())
                .await
                .unwrap()
                .iter()
                .map(BlobHash::to_hex)
                .collect();
        listed.sort();
        let mut want = vec![photo_hash.clone(), video_hash.clone()];
        want.sort();
        assert_eq!(listed, want, "{}", test.backend);
        let video: BlobHash = video_hash.parse().unwrap();
        assert_eq!(
            &blobs.read_all(&video).await.unwrap()[..],
            &photo(2, 60_000)[..]
        );

        // Too large, and redirected off the allowed hosts: stored records, content owed with
        // the reason; the document (no content by `when`) owes nothing.
        let owed_now = owed(store).await;
        assert_eq!(owed_now.len(), 2, "{}: {owed_now:?}", test.backend);
        assert_eq!(owed_now[0].0, MOVED);
        assert!(
            owed_now[0]
                .1
                .contains("redirected to https://elsewhere.example.net/MOVED.JPG"),
            "{}",
            owed_now[0].1
        );
        assert_eq!(owed_now[1].0, PANORAMA);
        assert!(
            owed_now[1]
                .1
                .contains("larger than 102400 bytes, the stream's `content.max_bytes`"),
            "{}",
            owed_now[1].1
        );
        let fetched = provider.fetched.lock().unwrap().clone();
        // The video answered 503 once and was retried; nothing asked for the PDF.
        assert_eq!(
            fetched
                .iter()
                .filter(|file| file.starts_with("VID_0002"))
                .count(),
            2
        );
        assert!(!fetched.iter().any(|file| file.starts_with("notes.pdf")));

        // Again: stored content is not downloaded again; what is owed is tried again.
        provider.fetched.lock().unwrap().clear();
        let (result, recorder) = run(&spec, &server, store, options()).await;
        result.unwrap();
        assert_eq!(recorder.totals().contents, 0, "{}", test.backend);
        let mut fetched = provider.fetched.lock().unwrap().clone();
        fetched.sort();
        assert_eq!(
            fetched,
            vec!["MOVED.JPG=d", "PANORAMA.JPG=d"],
            "{}",
            test.backend
        );
        let attempts: Vec<(String, String)> = rows(
            store,
            "SELECT source_object_id, CAST(attempts AS TEXT) FROM downloads ORDER BY source_object_id",
        )
        .await;
        assert_eq!(
            attempts,
            vec![
                (MOVED.to_owned(), "2".to_owned()),
                (PANORAMA.to_owned(), "2".to_owned())
            ]
        );
    }
}

#[tokio::test]
async fn content_owed_by_a_run_that_stopped_before_its_downloads_is_downloaded_by_the_next() {
    let spec = spec_from(SPEC);
    for test in test_stores("owed_content").await {
        let store = &test.store;
        let (server, provider) = provider(0).await;
        // A run that lists and stores its records but stops before downloading (as one killed
        // after its listing): the content is owed in the store, nothing is downloaded.
        let (result, _) = run(&spec, &server, store, RunOptions::default()).await;
        result.unwrap();
        assert!(provider.fetched.lock().unwrap().is_empty());
        assert_eq!(stored(store).await, vec![], "{}", test.backend);
        let owed_ids: Vec<String> = owed(store).await.into_iter().map(|(id, _)| id).collect();
        let mut want = vec![
            IMG_1.to_owned(),
            IMG_1_COPY.to_owned(),
            VIDEO.to_owned(),
            PANORAMA.to_owned(),
            MOVED.to_owned(),
        ];
        want.sort();
        assert_eq!(owed_ids, want, "{}", test.backend);

        let kept = test_blob_stores("owed_content").remove(0);
        let blobs = kept.blobs.clone();
        let (result, recorder) = run(
            &spec,
            &server,
            store,
            RunOptions {
                blobs: Some(blobs),
                ..RunOptions::default()
            },
        )
        .await;
        result.unwrap();
        assert_eq!(recorder.totals().written.new, 0, "{}", test.backend);
        assert_eq!(recorder.totals().contents, 3, "{}", test.backend);
        assert_eq!(stored(store).await.len(), 3, "{}", test.backend);
    }
}

#[tokio::test]
async fn downloads_count_against_the_runs_request_limit_and_what_is_left_stays_owed() {
    // One listing request and two downloads, then the limit: the other three are owed still.
    let limited = spec_from(&SPEC.replace("retry: {", "limits: { max_requests: 3 }\nretry: {"));
    for test in test_stores("download_limit").await {
        let store = &test.store;
        let kept = test_blob_stores("download_limit").remove(0);
        let (server, provider) = provider(0).await;
        let options = || RunOptions {
            blobs: Some(kept.blobs.clone()),
            ..RunOptions::default()
        };
        let (result, recorder) = run(&limited, &server, store, options()).await;
        result.unwrap();
        let totals = recorder.totals();
        assert_eq!(totals.requests, 3, "{}", test.backend);
        assert_eq!(
            provider.fetched.lock().unwrap().len(),
            2,
            "{}",
            test.backend
        );
        let untried: Vec<(String, String)> = rows(
            store,
            "SELECT source_object_id, CAST(attempts AS TEXT) FROM downloads WHERE attempts = 0 ORDER BY source_object_id",
        )
        .await;
        assert_eq!(untried.len(), 3, "{}: {untried:?}", test.backend);

        // The next run, with room, downloads what was left.
        let spec = spec_from(SPEC);
        let (result, recorder) = run(&spec, &server, store, options()).await;
        result.unwrap();
        assert_eq!(recorder.totals().contents, 3, "{}", test.backend);
    }
}

/// A listing whose `baseUrl`s have expired by the time they are downloaded (Google answers an
/// expired one 403): the record is fetched again (`mediaItems.get`) for a fresh URL.
#[tokio::test]
async fn an_expired_url_is_made_fresh_by_fetching_the_record_again() {
    const FRESH: &str = "AF1QipO5r2Lk8wQz-3mYt7VbX1nCe9PdJu4HfGa6Ks0";
    const GONE: &str = "AF1QipTq7Wm2nXs9-kLr4YbV0cPe6ZdHu3JfGi8Ao1N";
    let spec = spec_from(&SPEC.replace(
        "      content_type: $.mimeType\n",
        "      content_type: $.mimeType\n      refresh:\n        request: { path: \"/v1/mediaItems/{{ record.id }}\" }\n        on: [403]\n",
    ));
    let item = |id: &str, file: &str| {
        serde_json::json!({
            "id": id,
            "productUrl": format!("https://photos.google.com/lr/photo/{id}"),
            "baseUrl": format!("https://lh3.googleusercontent.com/lr/{file}"),
            "mimeType": "image/jpeg",
            "filename": "IMG_0100.JPG",
        })
    };
    let listing = serde_json::json!({"mediaItems": [
        item(FRESH, "expired-IMG_0100.JPG"),
        item(GONE, "expired-IMG_0101.JPG"),
    ]});
    let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let router = Router::new()
        .route(
            "/v1/mediaItems",
            get(move || async move { axum::Json(listing) }),
        )
        .route(
            "/v1/mediaItems/{id}",
            get({
                let asked = Arc::clone(&asked);
                move |Path(id): Path<String>| async move {
                    asked.lock().unwrap().push(format!("get {id}"));
                    if id == FRESH {
                        axum::Json(item(FRESH, "fresh-IMG_0100.JPG")).into_response()
                    } else {
                        StatusCode::NOT_FOUND.into_response()
                    }
                }
            }),
        )
        .route(
            "/lr/{file}",
            get({
                let asked = Arc::clone(&asked);
                move |Path(file): Path<String>| async move {
                    asked.lock().unwrap().push(file.clone());
                    if file.starts_with("expired-") {
                        StatusCode::FORBIDDEN.into_response()
                    } else {
                        ([(header::CONTENT_TYPE, "image/jpeg")], photo(7, 5_000)).into_response()
                    }
                }
            }),
        );
    let server = serve(router).await;
    for test in test_stores("refresh").await {
        let store = &test.store;
        asked.lock().unwrap().clear();
        let kept = test_blob_stores("refresh").remove(0);
        let (result, recorder) = run_with_blobs(&spec, &server, store, &kept.blobs).await;
        result.unwrap();
        assert_eq!(recorder.totals().contents, 1, "{}", test.backend);
        assert_eq!(
            stored(store).await,
            vec![(FRESH.to_owned(), BlobHash::of(&photo(7, 5_000)).to_hex())],
            "{}",
            test.backend
        );
        let mut asked_now = asked.lock().unwrap().clone();
        asked_now.sort();
        assert_eq!(
            asked_now,
            vec![
                "expired-IMG_0100.JPG=d".to_owned(),
                "expired-IMG_0101.JPG=d".to_owned(),
                "fresh-IMG_0100.JPG=d".to_owned(),
                format!("get {FRESH}"),
                format!("get {GONE}"),
            ],
            "{}",
            test.backend
        );
        // The record that could not be fetched again stays owed, saying both. What its
        // refresh request reads of the record is kept with it, not the request rendered.
        let requests = rows(
            store,
            "SELECT source_object_id, request FROM downloads ORDER BY source_object_id",
        )
        .await;
        let request: serde_json::Value = serde_json::from_str(&requests[0].1).unwrap();
        assert_eq!(
            request["refresh"],
            serde_json::json!({"record": {"id": GONE}, "on": [403]}),
            "{}",
            test.backend
        );
        let owed_now = owed(store).await;
        assert_eq!(owed_now.len(), 1, "{}", test.backend);
        assert_eq!(owed_now[0].0, GONE);
        assert!(
            owed_now[0].1.contains("answered 403")
                && owed_now[0]
                    .1
                    .contains("its URL had expired, and fetching the record again failed: the provider answered 404"),
            "{}",
            owed_now[0].1
        );
    }
}

/// A download cut off by the network is asked again from where it stopped, when the first
/// answer named its version (`Range` with `If-Range`), on every store and blob store; without
/// a version, or when the server answers whole, it starts over. Either way the blob is the
/// file's bytes, whole.
#[tokio::test]
async fn a_cut_off_download_resumes_from_where_it_stopped() {
    const ID: &str = "AF1QipUv5Lr8nXq2-tYw9ZsB3mKe6VcJd0HfGa4Pi7R";
    let spec = spec_from(&SPEC.replace("max_bytes: 100KiB", "max_bytes: 10MiB"));
    let file = Arc::new(photo(9, 300_000));
    let listing = serde_json::json!({"mediaItems": [{
        "id": ID,
        "productUrl": format!("https://photos.google.com/lr/photo/{ID}"),
        "baseUrl": "https://lh3.googleusercontent.com/lr/CUT.JPG",
        "mimeType": "image/jpeg",
        "filename": "CUT.JPG",
    }]});
    /// What the server was asked (`Range`, `If-Range`) and how it answered.
    type Asked = Arc<std::sync::Mutex<Vec<(Option<String>, Option<String>, u16)>>>;
    // `versioned`: the answers carry an ETag. The first whole answer is cut off after 100 KB.
    let server = |versioned: bool, asked: Asked| {
        let file = Arc::clone(&file);
        let listing = listing.clone();
        let router = Router::new()
            .route(
                "/v1/mediaItems",
                get(move || async move { axum::Json(listing) }),
            )
            .route(
                "/lr/{name}",
                get(move |headers: axum::http::HeaderMap| async move {
                    let header = |name: header::HeaderName| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned)
                    };
                    let (range, if_range) = (header(header::RANGE), header(header::IF_RANGE));
                    let first = asked.lock().unwrap().is_empty();
                    let from = range
                        .as_deref()
                        .and_then(|range| range.strip_prefix("bytes="))
                        .and_then(|range| range.strip_suffix('-'))
                        .and_then(|from| from.parse::<usize>().ok())
                        .filter(|_| versioned && if_range.as_deref() == Some("\"v1\""));
                    let status = if from.is_some() { 206 } else { 200 };
                    asked.lock().unwrap().push((range, if_range, status));
                    let mut response = axum::http::Response::builder()
                        .header(header::CONTENT_TYPE, "image/jpeg")
                        .header(header::ACCEPT_RANGES, "bytes");
                    if versioned {
                        response = response.header(header::ETAG, "\"v1\"");
                    }
                    if let Some(from) = from {
                        return response
                            .status(206)
                            .header(
                                header::CONTENT_RANGE,
                                format!("bytes {from}-{}/{}", file.len() - 1, file.len()),
                            )
                            .header(header::CONTENT_LENGTH, file.len() - from)
                            .body(axum::body::Body::from(file[from..].to_vec()))
                            .unwrap();
                    }
                    let response = response.header(header::CONTENT_LENGTH, file.len());
                    if first {
                        // The connection drops after 100 KB of the announced 300 KB.
                        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                            Ok(bytes::Bytes::copy_from_slice(&file[..100_000])),
                            Err(std::io::Error::other("the network went away")),
                        ];
                        // The error waits until the bytes before it are on their way.
                        let paced = futures_util::StreamExt::then(
                            futures_util::stream::iter(chunks),
                            |chunk| async move {
                                if chunk.is_err() {
                                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                }
                                chunk
                            },
                        );
                        return response.body(axum::body::Body::from_stream(paced)).unwrap();
                    }
                    response
                        .body(axum::body::Body::from(file.to_vec()))
                        .unwrap()
                }),
            );
        serve(router)
    };
    for versioned in [true, false] {
        for test in test_stores("resume").await {
            let store = &test.store;
            let asked: Asked = Arc::default();
            let url = server(versioned, Arc::clone(&asked)).await;
            let kept = test_blob_stores("resume").remove(0);
            let (result, recorder) = run_with_blobs(&spec, &url, store, &kept.blobs).await;
            result.unwrap();
            let context = format!("{} versioned={versioned}", test.backend);
            assert_eq!(recorder.totals().contents, 1, "{context}");
            assert_eq!(
                stored(store).await,
                vec![(ID.to_owned(), BlobHash::of(&file).to_hex())],
                "{context}"
            );
            let asked = asked.lock().unwrap().clone();
            assert_eq!(asked.len(), 2, "{context}: {asked:?}");
            assert_eq!(asked[0], (None, None, 200), "{context}");
            if versioned {
                let (range, if_range, status) = &asked[1];
                let from: u64 = range
                    .as_deref()
                    .and_then(|range| range.strip_prefix("bytes="))
                    .and_then(|range| range.strip_suffix('-'))
                    .and_then(|from| from.parse().ok())
                    .unwrap_or_else(|| panic!("{context}: no range asked: {asked:?}"));
                assert!(from > 0 && from <= 100_000, "{context}: {from}");
                assert_eq!(if_range.as_deref(), Some("\"v1\""), "{context}");
                assert_eq!(*status, 206, "{context}");
            } else {
                // Nothing to name the version by: asked whole again.
                assert_eq!(asked[1], (None, None, 200), "{context}");
            }
        }
    }
}

/// Downloads run `limits.max_concurrent_downloads` at a time (default 4), on every store; one
/// at a time when a connector says 1.
#[tokio::test]
async fn downloads_run_several_at_a_time_up_to_the_connector_limit() {
    const PHOTOS: usize = 8;
    let listing = serde_json::json!({"mediaItems": (0..PHOTOS).map(|index| serde_json::json!({
        "id": format!("AF1QipSlow{index}x7RkV0_b2Yw8eUq5ZsKpT9mLcHd4Gf"),
        "productUrl": format!("https://photos.google.com/lr/photo/{index}"),
        "baseUrl": format!("https://lh3.googleusercontent.com/lr/SLOW_{index}.JPG"),
        "mimeType": "image/jpeg",
        "filename": format!("SLOW_{index}.JPG"),
    })).collect::<Vec<_>>()});
    // Content requests in flight now, and the most at once.
    let in_flight: Arc<(AtomicUsize, AtomicUsize)> = Arc::default();
    let router = Router::new()
        .route(
            "/v1/mediaItems",
            get(move || async move { axum::Json(listing) }),
        )
        .route(
            "/lr/{name}",
            get({
                let in_flight = Arc::clone(&in_flight);
                move |Path(name): Path<String>| async move {
                    let now = in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
                    in_flight.1.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                    in_flight.0.fetch_sub(1, Ordering::SeqCst);
                    let seed = name.as_bytes()[5];
                    ([(header::CONTENT_TYPE, "image/jpeg")], photo(seed, 5_000)).into_response()
                }
            }),
        );
    let server = serve(router).await;
    for (limits, most) in [("", 4), ("limits: { max_concurrent_downloads: 1 }\n", 1)] {
        let spec = spec_from(&SPEC.replace("retry: {", &format!("{limits}retry: {{")));
        for test in test_stores("concurrent").await {
            in_flight.1.store(0, Ordering::SeqCst);
            let kept = test_blob_stores("concurrent").remove(0);
            let (result, recorder) = run_with_blobs(&spec, &server, &test.store, &kept.blobs).await;
            result.unwrap();
            assert_eq!(
                recorder.totals().contents,
                PHOTOS as u64,
                "{}",
                test.backend
            );
            assert_eq!(stored(&test.store).await.len(), PHOTOS, "{}", test.backend);
            // Several at once (all four slots, unless the machine is slow to start them), never
            // more than the limit.
            let seen = in_flight.1.load(Ordering::SeqCst);
            let least = if most == 1 { 1 } else { 2 };
            assert!(
                (least..=most).contains(&seen),
                "{}: {limits}: {seen} at once",
                test.backend
            );
        }
    }
}
