//! The checked-in schemas (the service's OpenAPI document among them) and reference pages must
//! be exactly what the code generates.

use engine::schema::generated_files;
use hypernet_tests::repo_root;

#[test]
fn checked_in_generated_files_match_the_code() {
    let mut drifted = Vec::new();
    for file in generated_files()
        .into_iter()
        .chain([server::openapi::generated_file()])
    {
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

/// The README's connector table is what the specs make of it.
#[test]
fn the_readme_connector_table_matches_the_specs() {
    let specs: Vec<_> = hypernet_tests::connector_specs()
        .iter()
        .map(|path| engine::spec::load(path).expect("every connector loads"))
        .collect();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let generated = engine::schema::with_connector_table(&readme, &specs).expect("markers");
    assert!(
        generated == readme,
        "README.md's connector table differs from the specs; run `connector schema --write`"
    );
    assert_eq!(
        engine::schema::connector_table(&specs).lines().count(),
        2 + specs.len()
    );
}
