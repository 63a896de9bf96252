//! What the validator says about a spec: one [`Diagnostic`] per problem, each naming the file,
//! line, column and field, what is wrong and what was expected.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::yaml::Anchor;

/// A place in a file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl Position {
    /// The start of the file.
    pub const START: Position = Position { line: 1, column: 1 };
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The spec file, as it was named to the validator.
    pub file: PathBuf,
    /// Where the problem is.
    #[serde(flatten)]
    pub position: Position,
    /// The field, as a dotted path such as `streams.photos.map.title`; empty for the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What was expected, when that can be said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, column } = self.position;
        write!(f, "{}:{line}:{column}: ", self.file.display())?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, "; expected {expected}")?;
        }
        Ok(())
    }
}

/// A problem found in the document, located by JSON Pointer before it has a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub pointer: String,
    pub anchor: Anchor,
    pub message: String,
    pub expected: Option<String>,
}

impl Problem {
    /// A problem with the value at `pointer`.
    pub fn at(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            anchor: Anchor::Value,
            message: message.into(),
            expected: None,
        }
    }

    /// Points at the key that holds the value rather than the value.
    pub fn on_key(mut self) -> Self {
        self.anchor = Anchor::Key;
        self
    }

    /// Says what was expected.
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
}

/// A JSON Pointer as people read it: `/streams/photos/map/title` → `streams.photos.map.title`,
/// list items as `[0]`.
pub(crate) fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                strsim::damerau_levenshtein(&word.to_lowercase(), &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `a`, `a or b`, `a, b or c`, each in backticks.
pub(crate) fn one_of<S: AsRef<str>>(choices: &[S]) -> String {
    let quoted: Vec<String> = choices
        .iter()
        .map(|choice| format!("`{}`", choice.as_ref()))
        .collect();
    match quoted.as_slice() {
        [] => "nothing".to_owned(),
        [only] => only.clone(),
        [init @ .., last] => format!("one of {} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_read_as_dotted_paths() {
        assert_eq!(dotted(""), "");
        assert_eq!(
            dotted("/streams/photos/map/title"),
            "streams.photos.map.title"
        );
        assert_eq!(dotted("/rate_limits/1/per"), "rate_limits[1].per");
        assert_eq!(dotted("/headers/a~1b"), "headers.a/b");
    }

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(did_you_mean("titel", ["title", "taken_at"]), Some("title"));
        assert_eq!(
            did_you_mean("paginaton", ["paginate", "records"]),
            Some("paginate")
        );
        assert_eq!(did_you_mean("zzz", ["title", "taken_at"]), None);
    }

    #[test]
    fn choices_are_listed_readably() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "one of `a`, `b` or `c`");
    }
}
