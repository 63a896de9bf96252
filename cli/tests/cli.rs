//! The `connector` binary as users and scripts see it: output, `--json` and exit statuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn connector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connector"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn valid_connectors_exit_zero() {
    let output = connector(&["validate", "connectors"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("valid"));
}

#[test]
fn validate_defaults_to_the_connectors_folder() {
    let output = connector(&["validate"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn invalid_specs_exit_one_with_file_line_column() {
    let output = connector(&["validate", "tests/specs/broken/09_auth_kind_typo.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.starts_with("tests/specs/broken/09_auth_kind_typo.yaml:10:9: auth.kind:"),
        "{text}"
    );
    assert!(text.contains("did you mean `oauth2`?"), "{text}");
}

#[test]
fn a_folder_with_several_broken_specs_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["09_auth_kind_typo.yaml", "30_stream_field_typo.yaml"] {
        let id = name.trim_end_matches(".yaml");
        let text = std::fs::read_to_string(root().join("tests/specs/broken").join(name)).unwrap();
        std::fs::create_dir(dir.path().join(id)).unwrap();
        std::fs::write(dir.path().join(id).join("connector.yaml"), text).unwrap();
    }
    let output = connector(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("unknown field `recods`"), "{text}");
    assert!(text.contains("`oauth` is not allowed here"), "{text}");
    assert!(text.contains("2 of 2 specs invalid, 2 problems"), "{text}");
}

#[test]
fn a_connector_id_must_match_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("calendar");
    std::fs::create_dir(&folder).unwrap();
    let text =
        std::fs::read_to_string(root().join("tests/specs/valid/example_calendar.yaml")).unwrap();
    std::fs::write(folder.join("connector.yaml"), text).unwrap();
    let output = connector(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("id: id `example_calendar` differs from its folder `calendar`"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn json_output_is_machine_readable() {
    let output = connector(&[
        "validate",
        "--json",
        "tests/specs/broken/20_rate_limit_duration_words.yaml",
        "connectors",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["invalid"], 1);
    assert!(report["valid"].as_u64().unwrap() >= 1);
    let diagnostic = &report["specs"][0]["diagnostics"][0];
    assert_eq!(diagnostic["line"], 30);
    assert_eq!(diagnostic["column"], 10);
    assert_eq!(diagnostic["field"], "rate_limits[0].per");
    assert_eq!(
        diagnostic["expected"],
        "a duration such as `30s`, `15m` or `1d`"
    );
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(
        connector(&["validate", "no/such/path"]).status.code(),
        Some(2)
    );
    assert_eq!(
        connector(&["validate", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(connector(&["no-such-command"]).status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        connector(&["validate", empty.path().to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
    ] {
        let output = connector(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(stdout(&output).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn schema_check_passes_on_the_repository_and_fails_on_drift() {
    assert_eq!(connector(&["schema", "--check"]).status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let root_arg = dir.path().to_str().unwrap();
    assert_eq!(
        connector(&["schema", "--write", "--root", root_arg])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        connector(&["schema", "--check", "--root", root_arg])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(dir.path().join("docs/spec.md"), "stale").unwrap();
    let output = connector(&["schema", "--check", "--root", root_arg]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("docs/spec.md differs"));
}

#[test]
fn schema_prints_the_connector_schema() {
    let output = connector(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["title"], "Hypernet connector spec");
}
