//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every `connector.yaml` under `connectors/`, sorted.
pub fn connector_specs() -> Vec<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("connectors"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("connector.yaml"))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    specs.sort();
    specs
}
