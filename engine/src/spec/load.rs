//! Reading a spec: YAML → JSON Schema → typed spec → semantic checks, every problem reported.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use super::ConnectorSpec;
use super::check;
use super::diagnostic::{Diagnostic, Position, Problem, dotted};
use super::profiles;
use super::schema_errors;
use super::yaml::{self, Anchor};

/// Specs larger than this are refused unread: no honest connector comes near it.
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

/// A spec's text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct SpecSource {
    /// The file name used in diagnostics.
    pub path: PathBuf,
    /// The YAML text.
    pub text: String,
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than any spec should be.
    #[error("{}:1:1: the file is {size} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The spec has problems; each is listed.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and checks the spec at `path`.
pub fn load(path: &Path) -> Result<ConnectorSpec, LoadError> {
    let io_error = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    if size > MAX_SPEC_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(io_error)?;
    let text = String::from_utf8(bytes).map_err(|error| {
        LoadError::Invalid(vec![not_utf8(path, error.as_bytes(), error.utf8_error())])
    })?;
    parse(&SpecSource {
        path: path.to_owned(),
        text,
    })
    .map_err(LoadError::Invalid)
}

/// Where the first byte that is not UTF-8 stands, as a diagnostic.
fn not_utf8(path: &Path, bytes: &[u8], error: std::str::Utf8Error) -> Diagnostic {
    let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default();
    let line_start = valid.rfind('\n').map_or(0, |newline| newline + 1);
    Diagnostic {
        file: path.to_owned(),
        position: Position {
            line: valid.matches('\n').count() + 1,
            column: valid[line_start..].chars().count() + 1,
        },
        field: String::new(),
        message: format!(
            "byte 0x{:02x} is not UTF-8 text",
            bytes.get(error.valid_up_to()).copied().unwrap_or_default()
        ),
        expected: Some("a spec saved as UTF-8".to_owned()),
    }
}

/// The JSON Schema validator for specs, built once from the spec types.
static VALIDATOR: LazyLock<(serde_json::Value, jsonschema::Validator)> = LazyLock::new(|| {
    let schema = serde_json::to_value(crate::schema::connector_schema())
        .expect("a generated schema is plain JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the generated spec schema is a valid JSON Schema");
    (schema, validator)
});

/// Checks a spec's text. Returns the spec, or every problem found, sorted by position.
pub fn parse(source: &SpecSource) -> Result<ConnectorSpec, Vec<Diagnostic>> {
    let diagnostic = |position, field: String, message, expected| Diagnostic {
        file: source.path.clone(),
        position,
        field,
        message,
        expected,
    };
    // Text handed over whole (not read by `load`) is held to the same bound.
    if source.text.len() as u64 > MAX_SPEC_BYTES {
        return Err(vec![diagnostic(
            Position::START,
            String::new(),
            format!(
                "the spec is {} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes",
                source.text.len()
            ),
            None,
        )]);
    }
    let mut document = yaml::parse(&source.text).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| {
                diagnostic(
                    problem.position,
                    String::new(),
                    problem.message,
                    problem.expected,
                )
            })
            .collect::<Vec<_>>()
    })?;
    let profile_problems = profiles::apply(&mut document.value);
    let locate = |problems: Vec<Problem>| {
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|problem| {
                let position = document.positions.find(&problem.pointer, problem.anchor);
                diagnostic(
                    position,
                    dotted(&problem.pointer),
                    problem.message,
                    problem.expected,
                )
            })
            .collect();
        diagnostics.sort_by(|a, b| {
            (a.position, &a.field, &a.message).cmp(&(b.position, &b.field, &b.message))
        });
        diagnostics.dedup();
        diagnostics
    };

    if !profile_problems.is_empty() {
        return Err(locate(profile_problems));
    }
    let (schema, validator) = &*VALIDATOR;
    let problems = schema_errors::explain(validator, schema, &document.value);
    if !problems.is_empty() {
        return Err(locate(problems));
    }
    let spec: ConnectorSpec = serde_json::from_value(document.value.clone()).map_err(|error| {
        // The schema is generated from the same types, so this is a bug in the engine, not the
        // spec; say so rather than blame the author.
        locate(vec![Problem {
            pointer: String::new(),
            anchor: Anchor::Value,
            message: format!(
                "the spec passed the schema but could not be read ({error}); please report this"
            ),
            expected: None,
        }])
    })?;
    let problems = check::run(&spec, &source.path);
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(locate(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_reported_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connector.yaml");
        // Latin-1 `é` on the third line, after `name: Caf`.
        std::fs::write(&path, b"id: cafe\nversion: 1.0.0\nname: Caf\xe9\n").unwrap();
        let LoadError::Invalid(diagnostics) = load(&path).unwrap_err() else {
            panic!("not a diagnostic");
        };
        assert_eq!(
            diagnostics[0].position,
            Position {
                line: 3,
                column: 10
            }
        );
        assert!(
            diagnostics[0].to_string().contains("0xe9 is not UTF-8"),
            "{}",
            diagnostics[0]
        );
    }

    #[test]
    fn oversized_specs_are_reported_at_the_start() {
        let source = SpecSource {
            path: PathBuf::from("big.yaml"),
            text: format!("# {}\n", "x".repeat(MAX_SPEC_BYTES as usize)),
        };
        let diagnostics = parse(&source).unwrap_err();
        assert_eq!(diagnostics[0].to_string().split(':').nth(1), Some("1"));
        assert!(
            diagnostics[0].message.contains("at most"),
            "{}",
            diagnostics[0]
        );
    }
}
