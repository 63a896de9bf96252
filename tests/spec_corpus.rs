//! The broken-spec corpus: each file under `specs/broken/` is the valid base spec with one
//! mistake a connector author really makes. Its header says the mistake and where it is
//! (`# expect: LINE:COLUMN`); the test checks that the validator reports exactly one problem,
//! there, and holds the full wording as a snapshot.

use std::path::{Path, PathBuf};

use engine::spec::{self, SpecSource};
use hypernet_tests::{connector_specs, repo_root};

fn expected_position(text: &str, path: &Path) -> (usize, usize) {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect: LINE:COLUMN` header", path.display()));
    let (line_number, column) = line.split_once(':').expect("LINE:COLUMN");
    (
        line_number.trim().parse().expect("a line number"),
        column.trim().parse().expect("a column"),
    )
}

#[test]
fn each_broken_spec_yields_one_diagnostic_at_its_mistake() {
    let mut count = 0;
    insta::glob!("specs/broken/*.yaml", |path| {
        count += 1;
        let text = std::fs::read_to_string(path).unwrap();
        let name = PathBuf::from(path.file_name().unwrap());
        let diagnostics = match spec::parse(&SpecSource {
            path: name,
            text: text.clone(),
        }) {
            Ok(_) => panic!("{} validated, but it has a mistake", path.display()),
            Err(diagnostics) => diagnostics,
        };
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            diagnostics.len(),
            1,
            "one mistake, one diagnostic:\n{}",
            rendered.join("\n")
        );
        let (line, column) = expected_position(&text, path);
        let position = diagnostics[0].position;
        assert_eq!(
            (position.line, position.column),
            (line, column),
            "{}",
            rendered[0]
        );
        insta::assert_snapshot!(rendered.join("\n"));
    });
    assert!(
        count >= 30,
        "the corpus should hold at least 30 broken specs, found {count}"
    );
}

#[test]
fn the_corpus_base_spec_is_valid() {
    let path = repo_root().join("tests/specs/valid/example_calendar.yaml");
    if let Err(error) = spec::load(&path) {
        panic!("{error}");
    }
}

#[test]
fn every_connector_validates() {
    let specs = connector_specs();
    assert!(!specs.is_empty(), "no connectors found");
    for path in specs {
        if let Err(error) = spec::load(&path) {
            panic!("{error}");
        }
    }
}
