//! Reading a spec: YAML → JSON Schema → typed spec → semantic checks, every problem reported.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use super::ConnectorSpec;
use super::check;
use super::diagnostic::{Diagnostic, Problem, dotted};
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
    #[error("{} is {size} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes", path.display())]
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
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    parse(&SpecSource {
        path: path.to_owned(),
        text,
    })
    .map_err(LoadError::Invalid)
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
    let document = yaml::parse(&source.text).map_err(|problems| {
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
