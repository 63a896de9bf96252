//! The checked-in schemas and reference pages must be exactly what the code generates.

use engine::schema::generated_files;
use hypernet_tests::repo_root;

#[test]
fn checked_in_generated_files_match_the_code() {
    let mut drifted = Vec::new();
    for file in generated_files() {
        let on_disk = std::fs::read_to_string(repo_root().join(&file.path)).unwrap_or_default();
        if on_disk != file.contents {
            drifted.push(file.path.display().to_string());
        }
    }
    assert!(
        drifted.is_empty(),
        "these files differ from what the code generates; run `connector schema --write`: {drifted:?}"
    );
}
