//! Data exports imported through the service: `POST /integrations/{id}/imports` takes an
//! upload (streamed to a file, never held in memory, refused past the size cap) or, from an
//! operator, paths in the import folder; the scheduler claims queued imports and runs them, one
//! at a time in a process, each leased so that a process that dies mid-import leaves it to be
//! resumed from its checkpoint inside the export.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::events::{Counters, Totals};
use engine::run::SyncRun;
use engine::source::archive::{ArchiveLimits, Export};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ErrorBody, rejection};
use crate::identity::User;
use crate::runner::{Live, Prepared};
use crate::state::{AppState, Service};
use crate::tables::{
    ImportClaim, ImportRow, ImportSource, ImportStatus, MAX_IMPORT_ATTEMPTS, NewImport,
};

/// The imports `GET /integrations/{id}` shows: the latest few.
pub const IMPORTS_SHOWN: u32 = 5;

/// The longest file name kept for an upload (it is only shown).
const MAX_NAME: usize = 200;

/// The query of `POST /integrations/{id}/imports`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The uploaded file's name, to show with the import (`takeout-20260318T202441Z-001.zip`).
    #[param(max_length = 200)]
    name: Option<String>,
}

/// The JSON body of `POST /integrations/{id}/imports` that imports from the operator's import
/// folder instead of an upload.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderImport {
    /// The export's parts (zip, tar.gz or unpacked folders), relative to the import folder.
    #[schema(min_items = 1, max_items = 100)]
    paths: Vec<String>,
}

/// An import with its live progress (`Import` in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Import)]
pub struct ImportView {
    /// The import.
    #[serde(flatten)]
    row: ImportRow,
    /// Counts so far while it runs in the process that answers: records, pages, what was
    /// written, and the bytes of the stream's files read of their total.
    #[schema(value_type = Option<Object>)]
    progress: Option<Totals>,
}

fn progress_key(import_id: &str) -> String {
    format!("import:{import_id}")
}

/// The latest imports of an integration, with live progress.
pub async fn views(state: &Service, integration_id: &str) -> Result<Vec<ImportView>, ApiError> {
    Ok(state
        .tables
        .imports_of(integration_id, IMPORTS_SHOWN)
        .await?
        .into_iter()
        .map(|row| ImportView {
            progress: state.progress_of(&progress_key(&row.id)),
            row,
        })
        .collect())
}

/// Import a data export into the integration.
///
/// The body is the export as downloaded from the provider (a zip, tar.gz or tar), streamed to
/// the server's disk (never held in memory) up to the service's size cap; `name` is its file
/// name, for display. Or, from one of the service's operators, a JSON body
/// `{"paths": [...]}` naming the export's parts in the service's import folder, for exports too
/// large to upload. The import is queued and runs in the background: its status is in
/// `GET /integrations/{id}` (`imports`). Importing the same export again writes nothing; a
/// newer export writes what is new or changed. An upload is deleted when its import ends.
#[utoipa::path(
    post,
    path = "/integrations/{id}/imports",
    tag = "integrations",
    operation_id = "create_import",
    params(("id" = String, Path, description = "The integration id"), ImportQuery),
    request_body(
        description = "The export's bytes, or (operators) the paths of its parts in the import folder",
        content(
            (String = "application/octet-stream"),
            (FolderImport = "application/json")
        )
    ),
    responses(
        (status = 202, description = "Received and queued", body = ImportView),
        (status = 400, description = "An empty or broken-off upload, a malformed JSON body, or a path outside the import folder", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "An import by path from a user who is not one of the service's operators", body = ErrorBody),
        (status = 404, description = "No such integration of the user's", body = ErrorBody),
        (status = 409, description = "Its connector reads no exports, an import of it is already queued or running, or the service has no import folder", body = ErrorBody),
        (status = 413, description = "The upload is larger than the service takes", body = ErrorBody),
        (status = 500, description = "The service failed (its database or its disk)", body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let summary = crate::api::owned(&state, &user, &id).await?;
    let entry = state
        .catalog
        .get(&summary.connector)
        .ok_or_else(|| ApiError::conflict("the connector is no longer offered"))?;
    if !entry.imports() {
        return Err(ApiError::conflict(format!(
            "{} reads only its API: it has no data export to import, and syncs by itself",
            entry.spec.name
        )));
    }
    let import_id = new_import_id();
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    let (source, name, paths, bytes) = if json {
        let body = axum::body::to_bytes(body, crate::MAX_REQUEST_BODY)
            .await
            .map_err(|_| {
                ApiError::too_large(format!(
                    "the JSON body is larger than the API reads ({} bytes)",
                    crate::MAX_REQUEST_BODY
                ))
            })?;
        let folder: FolderImport = serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("the JSON body: {error}")))?;
        if !state.config.operators.contains(&user) {
            return Err(ApiError::forbidden(
                "only the service's operators may import from its import folder (`connector serve --operator USER`); upload the export instead",
            ));
        }
        let root = state.config.import_root.clone().ok_or_else(|| {
            ApiError::conflict(
                "the service has no import folder (`connector serve --import-root DIR`); upload the export instead",
            )
        })?;
        let given = folder.paths.clone();
        let (paths, bytes) = tokio::task::spawn_blocking(move || resolve(&root, &given))
            .await
            .map_err(|error| ApiError::internal(error.to_string()))??;
        (ImportSource::Folder, folder.paths.join(", "), paths, bytes)
    } else {
        let name = upload_name(query.name.as_deref())?;
        let path = state.config.uploads.join(format!("{import_id}.export"));
        let bytes = match receive(&state, &headers, body, &path).await {
            Ok(bytes) => bytes,
            // The rest of the body is not read: the connection cannot carry another request.
            Err(error) => {
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return Ok(response);
            }
        };
        (ImportSource::Upload, name, vec![path], bytes)
    };
    let added = state
        .tables
        .add_import(&NewImport {
            id: &import_id,
            integration_id: &id,
            user_id: &user,
            source,
            name: &name,
            paths: &paths,
            bytes,
        })
        .await;
    match added {
        Ok(true) => {}
        Ok(false) => {
            discard(source, &paths).await;
            return Err(ApiError::conflict(format!(
                "an import of {id} is already queued or running; send this export when it has ended (see GET /integrations/{id})"
            )));
        }
        Err(error) => {
            discard(source, &paths).await;
            return Err(error.into());
        }
    }
    state.wake.notify_one();
    let row = state
        .tables
        .imports_of(&id, IMPORTS_SHOWN)
        .await?
        .into_iter()
        .find(|row| row.id == import_id)
        .ok_or_else(|| ApiError::internal("the queued import could not be read back"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ImportView {
            row,
            progress: None,
        }),
    )
        .into_response())
}

/// 128 random bits: an import id no one guesses or repeats.
fn new_import_id() -> String {
    format!("imp_{:032x}", rand::random::<u128>())
}

/// The upload's name as shown: printable, at most [`MAX_NAME`] characters; "upload" when none.
fn upload_name(given: Option<&str>) -> Result<String, ApiError> {
    let Some(name) = given.map(str::trim).filter(|name| !name.is_empty()) else {
        return Ok("upload".to_owned());
    };
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`name` is the upload's file name: at most {MAX_NAME} printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// Removes a partial upload when dropped, unless kept: a broken-off or refused upload leaves
/// nothing behind.
struct PartialUpload<'a> {
    path: &'a FsPath,
    kept: bool,
}

impl Drop for PartialUpload<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Streams the body to `path` (through `path.part`, renamed when complete, so that a file at
/// `path` is always a whole upload), refusing it past the size cap. Returns its size.
async fn receive(
    state: &Service,
    headers: &HeaderMap,
    body: Body,
    path: &FsPath,
) -> Result<u64, ApiError> {
    let max = state.config.max_upload;
    let too_large = || {
        ApiError::too_large(format!(
            "the export is larger than this service takes ({max} bytes; `connector serve --max-upload`); an operator can import it from the server's import folder, or with `connector import`"
        ))
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(too_large());
    }
    let disk = |error: std::io::Error| {
        tracing::error!(%error, path = %path.display(), "cannot store an upload");
        ApiError::internal(format!(
            "the service cannot store the upload ({error}); try again later"
        ))
    };
    tokio::fs::create_dir_all(&state.config.uploads)
        .await
        .map_err(disk)?;
    let part = path.with_extension("part");
    let mut guard = PartialUpload {
        path: &part,
        kept: false,
    };
    let file = tokio::fs::File::create(&part).await.map_err(disk)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut received: u64 = 0;
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let chunk = frame.map_err(|error| {
            ApiError::bad_request(format!("the upload broke off ({error}); send it again"))
        })?;
        received = received.saturating_add(chunk.len() as u64);
        if received > max {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(disk)?;
    }
    if received == 0 {
        return Err(ApiError::bad_request(
            "the upload is empty: send the export's bytes as the body",
        ));
    }
    file.flush().await.map_err(disk)?;
    file.into_inner().sync_all().await.map_err(disk)?;
    tokio::fs::rename(&part, path).await.map_err(disk)?;
    guard.kept = true;
    drop(guard);
    Ok(received)
}

/// The paths given, inside the import folder `root`, and their size: each relative, without
/// `..`, and (symbolic links followed) still inside `root`.
fn resolve(root: &FsPath, given: &[String]) -> Result<(Vec<PathBuf>, u64), ApiError> {
    if given.is_empty() || given.len() > 100 {
        return Err(ApiError::bad_request(
            "`paths` names from 1 to 100 parts of the export",
        ));
    }
    let root = root.canonicalize().map_err(|error| {
        ApiError::internal(format!(
            "the import folder {} cannot be read: {error}",
            root.display()
        ))
    })?;
    let mut paths = Vec::with_capacity(given.len());
    let mut bytes: u64 = 0;
    for text in given {
        let relative = FsPath::new(text);
        if text.is_empty()
            || !relative
                .components()
                .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
        {
            return Err(ApiError::bad_request(format!(
                "`{text}`: a path in the import folder is relative and has no `..`"
            )));
        }
        let path = root.join(relative).canonicalize().map_err(|_| {
            ApiError::bad_request(format!(
                "`{text}`: there is no such file in the import folder"
            ))
        })?;
        if !path.starts_with(&root) {
            return Err(ApiError::bad_request(format!(
                "`{text}` leads outside the import folder"
            )));
        }
        bytes = bytes.saturating_add(size_of(&path));
        paths.push(path);
    }
    Ok((paths, bytes))
}

/// A file's size, or a folder's files' (links not followed; bounded, since it is only shown).
fn size_of(path: &FsPath) -> u64 {
    const MAX_ENTRIES: usize = 1_000_000;
    let mut total: u64 = 0;
    let mut seen = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_file() {
            total = total.saturating_add(metadata.len());
        } else if metadata.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            for entry in entries.flatten() {
                seen += 1;
                if seen > MAX_ENTRIES {
                    return total;
                }
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Deletes an upload (a folder's exports are the operator's, and stay).
async fn discard(source: ImportSource, paths: &[PathBuf]) {
    if source != ImportSource::Upload {
        return;
    }
    for path in paths {
        if let Err(error) = tokio::fs::remove_file(path).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %path.display(), "cannot delete an upload");
        }
    }
}

/// Deletes the uploads kept for an integration's imports (when it is deleted).
pub async fn discard_uploads(state: &Service, integration_id: &str) -> Result<(), ApiError> {
    let paths = state.tables.uploads_of(integration_id).await?;
    discard(ImportSource::Upload, &paths).await;
    Ok(())
}

/// Whether this process runs an import now: one at a time, since an import reads a
/// multi-gigabyte file and writes as fast as the database takes (two would each go at half
/// the speed, and hold twice the memory).
#[derive(Debug, Default)]
pub struct Importing(AtomicBool);

/// The import slot, given back when dropped (also when the import's task unwinds).
struct ImportSlot(Arc<Importing>);

impl Drop for ImportSlot {
    fn drop(&mut self) {
        self.0.0.store(false, Ordering::Release);
    }
}

/// Claims and starts a queued (or abandoned) import when this process runs none.
pub async fn claim(state: &AppState, importing: &Arc<Importing>) {
    if importing
        .0
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let slot = ImportSlot(Arc::clone(importing));
    match state
        .tables
        .claim_import(&state.config.worker, state.config.lease)
        .await
    {
        Ok(Some(claim)) => {
            let state = Arc::clone(state);
            tokio::spawn(async move {
                run_claimed(&state, &claim).await;
                drop(slot);
                // Another import may wait.
                state.wake.notify_one();
            });
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(%error, "cannot claim imports; trying again at the next poll");
        }
    }
}

/// Runs a claimed import while renewing its lease, then books how it ended.
async fn run_claimed(state: &AppState, claim: &ImportClaim) {
    let worker = &state.config.worker;
    let lease = state.config.lease;
    tracing::info!(import = %claim.id, integration = %claim.integration_id, attempt = claim.attempts, "import started");
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            match state.tables.renew_import(&claim.id, worker, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, import = %claim.id, "cannot renew the import's lease");
                }
            }
        }
    };
    let import = std::panic::AssertUnwindSafe(import(state, claim)).catch_unwind();
    let (status, error) = tokio::select! {
        ended = import => ended.unwrap_or_else(|_| {
            tracing::error!(import = %claim.id, "the import panicked; booked as failed");
            (ImportStatus::Failed, Some("the import stopped on an internal error (a bug, logged by the service); upload the export again to resume it from its checkpoint".to_owned()))
        }),
        // Deleted with its integration, or taken over after this process stalled: the other
        // process (or no one) books it, and its upload stays for whoever resumes it.
        () = renew => {
            tracing::warn!(import = %claim.id, "the import lost its lease and stopped");
            return;
        }
    };
    state
        .progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&progress_key(&claim.id));
    // An ended import's upload goes, whatever the outcome: a broken or hostile export fails the
    // same way again, and a person who fixes it uploads it again.
    discard(claim.source, &claim.paths).await;
    if let Err(error) = state
        .tables
        .finish_import(&claim.id, worker, status, error.as_deref())
        .await
    {
        tracing::error!(%error, import = %claim.id, "cannot record how the import ended; its lease expires by itself");
    }
    tracing::info!(import = %claim.id, ?status, "import finished");
}

/// Imports the claimed export to its end.
async fn import(state: &Service, claim: &ImportClaim) -> (ImportStatus, Option<String>) {
    let failed = |message: String| (ImportStatus::Failed, Some(message));
    if claim.attempts > MAX_IMPORT_ATTEMPTS {
        return failed(format!(
            "the import stopped {MAX_IMPORT_ATTEMPTS} times before it ended (the process importing it died each time); see the service's log, then upload the export again"
        ));
    }
    let Prepared {
        entry,
        stored,
        run: prepared,
    } = match crate::runner::prepare(state, &claim.integration_id).await {
        Ok(prepared) => prepared,
        Err(not_run) => return failed(not_run.into_message()),
    };
    let paths = claim.paths.clone();
    let opened =
        tokio::task::spawn_blocking(move || Export::open(&paths, ArchiveLimits::default())).await;
    let export = match opened {
        Ok(Ok(export)) => Arc::new(export),
        Ok(Err(error)) => {
            return failed(format!(
                "{error} — what to do: check that it is the export {} sends, as downloaded (a zip, tar.gz or tar), and upload it again",
                entry.spec.name
            ));
        }
        Err(error) => return failed(format!("the export could not be opened: {error}")),
    };
    // The streams the person chose, of those that read an export; none chosen: every one.
    let chosen: Vec<String> = stored
        .streams
        .iter()
        .flatten()
        .filter(|name| {
            entry
                .spec
                .streams
                .get(name.as_str())
                .is_some_and(|stream| stream.archive.is_some())
        })
        .cloned()
        .collect();
    let counters = Arc::new(Counters::default());
    state
        .progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(progress_key(&claim.id), Arc::clone(&counters));
    let live = Live {
        counters,
        metrics: state.metrics.observer(&entry.spec.id),
        sessions: None,
    };
    let result = SyncRun::new(
        &entry.compiled,
        &prepared.integration,
        &prepared.http,
        prepared.auth.as_ref(),
        &live,
        state.store.clone(),
    )
    .by_worker(&state.config.worker)
    .with_blobs(state.blobs.clone())
    .import(export, &chosen)
    .await;
    match result {
        Ok(report) => match report.summary() {
            None => (ImportStatus::Succeeded, None),
            Some(summary) => (ImportStatus::Partial, Some(summary)),
        },
        Err(error) => failed(format!("{error} — what to do: {}", error.hint())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_import_folder_are_refused() {
        let root = tempfile_dir();
        std::fs::create_dir_all(root.join("takeout")).unwrap();
        std::fs::write(root.join("takeout/part-001.zip"), b"PK\x05\x06").unwrap();
        std::fs::write(root.join("export.zip"), b"1234").unwrap();
        let outside = root.parent().unwrap().join(format!(
            "{}-outside",
            root.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&outside, b"secret").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("link.zip")).unwrap();

        let (paths, bytes) = resolve(
            &root,
            &["takeout/part-001.zip".to_owned(), "./export.zip".to_owned()],
        )
        .unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(bytes, 8);
        let (_, folder) = resolve(&root, &["takeout".to_owned()]).unwrap();
        assert_eq!(folder, 4);
        for bad in [
            "../outside",
            "/etc/passwd",
            "takeout/../../x",
            "",
            "missing.zip",
        ] {
            assert!(resolve(&root, &[bad.to_owned()]).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            let error = resolve(&root, &["link.zip".to_owned()]).unwrap_err();
            assert!(format!("{error:?}").contains("outside"), "{error:?}");
        }
        std::fs::remove_file(outside).unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn upload_names_are_printable_and_short() {
        assert_eq!(upload_name(None).unwrap(), "upload");
        assert_eq!(upload_name(Some("  ")).unwrap(), "upload");
        assert_eq!(
            upload_name(Some("my_spotify_data.zip")).unwrap(),
            "my_spotify_data.zip"
        );
        assert!(upload_name(Some("a\nb.zip")).is_err());
        assert!(upload_name(Some(&"x".repeat(201))).is_err());
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hypernet-imports-{}", new_import_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }
}
