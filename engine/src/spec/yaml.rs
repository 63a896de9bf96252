//! YAML text → JSON value, remembering where in the text every value and key stands.
//!
//! The spec is read with saphyr's marked tree so that any JSON Pointer (a JSON Schema
//! `instance_path`, or a path the semantic checks build) maps back to a line and column.

use std::collections::HashMap;

use saphyr::{MarkedYaml, Scalar, YamlData, YamlLoader};
use serde_json::{Map, Number, Value};

use super::diagnostic::Position;

/// Alias expansion may produce at most this many nodes: enough for any honest spec, and a wall
/// against "billion laughs" documents from untrusted contributors.
const ALIAS_NODE_LIMIT: usize = 10_000;

/// Nesting deeper than this is refused before it can exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A parsed document and the positions of its parts.
#[derive(Debug)]
pub(crate) struct Document {
    pub value: Value,
    pub positions: PositionIndex,
}

/// Where each node of the document starts, by JSON Pointer.
#[derive(Debug, Default)]
pub(crate) struct PositionIndex {
    nodes: HashMap<String, NodePosition>,
}

#[derive(Debug, Clone, Copy)]
struct NodePosition {
    /// The mapping key that holds the node; `None` for the root and for list items.
    key: Option<Position>,
    value: Position,
}

/// Which part of a node a diagnostic points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The key in its parent mapping (unknown fields; an object's missing fields).
    Key,
    /// The value itself.
    Value,
}

impl PositionIndex {
    /// The position of the node at `pointer`, or of its nearest ancestor in the document.
    pub fn find(&self, pointer: &str, anchor: Anchor) -> Position {
        let mut pointer = pointer;
        loop {
            if let Some(node) = self.nodes.get(pointer) {
                return match anchor {
                    Anchor::Key => node.key.unwrap_or(node.value),
                    Anchor::Value => node.value,
                };
            }
            match pointer.rfind('/') {
                Some(slash) => pointer = &pointer[..slash],
                None => return Position::START,
            }
        }
    }
}

/// A problem found while reading the YAML itself.
#[derive(Debug)]
pub(crate) struct SyntaxProblem {
    pub position: Position,
    pub message: String,
    pub expected: Option<String>,
}

/// Parses one YAML document into JSON. Every problem found is returned, not only the first.
pub(crate) fn parse(text: &str) -> Result<Document, Vec<SyntaxProblem>> {
    screen(text)?;
    let mut loader = YamlLoader::<MarkedYaml>::default();
    loader.alias_limit(ALIAS_NODE_LIMIT);
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    if let Err(error) = parser.load(&mut loader, true) {
        return Err(vec![scan_problem(&error)]);
    }
    // Duplicate keys and alias budget overruns are kept by the loader rather than returned.
    if let Some(error) = loader.error() {
        return Err(vec![scan_problem(error)]);
    }
    let mut documents = loader.into_documents();
    if documents.len() > 1 {
        let second = &documents[1];
        return Err(vec![SyntaxProblem {
            position: position_of(second),
            message: "a second YAML document starts here".to_owned(),
            expected: Some("one connector spec per file".to_owned()),
        }]);
    }
    let Some(root) = documents.pop() else {
        return Err(vec![SyntaxProblem {
            position: Position::START,
            message: "the file is empty".to_owned(),
            expected: Some("a connector spec".to_owned()),
        }]);
    };
    let mut converter = Converter::default();
    let value = converter.convert(&root, String::new(), None, 0);
    if converter.problems.is_empty() {
        Ok(Document {
            value,
            positions: converter.positions,
        })
    } else {
        Err(converter.problems)
    }
}

/// A first pass over the YAML events, before any tree is built: nesting deeper than
/// [`MAX_DEPTH`] is refused here because building (and dropping) the tree recurses once per level,
/// and a 1 MiB spec of `[` would overflow the stack; tags are refused where they stand, as the
/// spec language has no use for them. Syntax errors are left to the loader, which reports them.
fn screen(text: &str) -> Result<(), Vec<SyntaxProblem>> {
    use saphyr_parser::Event;
    let mut depth = 0usize;
    for event in saphyr_parser::Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return Ok(());
        };
        let here = Position {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let tagged = match &event {
            Event::SequenceStart(_, tag) | Event::MappingStart(_, tag) => {
                depth += 1;
                tag.is_some()
            }
            Event::Scalar(_, _, _, tag) => tag.is_some(),
            Event::SequenceEnd | Event::MappingEnd => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => false,
        };
        if tagged {
            return Err(vec![SyntaxProblem {
                position: here,
                message: "YAML tags (`!name`) are not part of the spec language".to_owned(),
                expected: Some("the value without its tag".to_owned()),
            }]);
        }
        if depth > MAX_DEPTH {
            return Err(vec![SyntaxProblem {
                position: here,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
                expected: None,
            }]);
        }
    }
    Ok(())
}

fn scan_problem(error: &saphyr::ScanError) -> SyntaxProblem {
    let marker = error.marker();
    SyntaxProblem {
        position: Position {
            line: marker.line(),
            column: marker.col() + 1,
        },
        message: format!("YAML syntax error: {}", error.info()),
        expected: None,
    }
}

fn position_of(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

/// Escapes a mapping key as one JSON Pointer segment (RFC 6901).
pub(crate) fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[derive(Default)]
struct Converter {
    positions: PositionIndex,
    problems: Vec<SyntaxProblem>,
}

impl Converter {
    fn convert(
        &mut self,
        node: &MarkedYaml<'_>,
        pointer: String,
        key: Option<Position>,
        depth: usize,
    ) -> Value {
        let here = position_of(node);
        if depth > MAX_DEPTH {
            self.problem(
                here,
                format!("nesting deeper than {MAX_DEPTH} levels"),
                None,
            );
            return Value::Null;
        }
        let value = match &node.data {
            YamlData::Value(scalar) => self.scalar(scalar, here),
            YamlData::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        self.convert(item, format!("{pointer}/{index}"), None, depth + 1)
                    })
                    .collect(),
            ),
            YamlData::Mapping(entries) => {
                let mut object = Map::with_capacity(entries.len());
                for (key_node, value_node) in entries {
                    let key_position = position_of(key_node);
                    let Some(name) = self.key_text(key_node) else {
                        continue;
                    };
                    let child = format!("{pointer}/{}", pointer_segment(&name));
                    let converted = self.convert(value_node, child, Some(key_position), depth + 1);
                    object.insert(name, converted);
                }
                Value::Object(object)
            }
            YamlData::Tagged(_, inner) => return self.convert(inner, pointer, key, depth + 1),
            YamlData::Representation(text, _, _) => Value::String(text.to_string()),
            YamlData::Alias(_) | YamlData::BadValue => {
                self.problem(here, "this value cannot be read".to_owned(), None);
                Value::Null
            }
        };
        self.positions
            .nodes
            .insert(pointer, NodePosition { key, value: here });
        value
    }

    fn scalar(&mut self, scalar: &Scalar<'_>, here: Position) -> Value {
        match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(flag) => Value::Bool(*flag),
            Scalar::Integer(number) => Value::Number((*number).into()),
            Scalar::FloatingPoint(number) => match Number::from_f64(number.into_inner()) {
                Some(number) => Value::Number(number),
                None => {
                    self.problem(
                        here,
                        "infinite or NaN numbers are not allowed".to_owned(),
                        None,
                    );
                    Value::Null
                }
            },
            Scalar::String(text) => Value::String(text.to_string()),
        }
    }

    /// Mapping keys must be text; numbers and booleans are taken as their text, as JSON would.
    fn key_text(&mut self, key: &MarkedYaml<'_>) -> Option<String> {
        match &key.data {
            YamlData::Value(Scalar::String(text)) => Some(text.to_string()),
            YamlData::Value(Scalar::Integer(number)) => Some(number.to_string()),
            YamlData::Value(Scalar::Boolean(flag)) => Some(flag.to_string()),
            YamlData::Tagged(_, inner) => self.key_text(inner),
            _ => {
                self.problem(
                    position_of(key),
                    "this mapping key is not text".to_owned(),
                    Some("a plain name as the key".to_owned()),
                );
                None
            }
        }
    }

    fn problem(&mut self, position: Position, message: String, expected: Option<String>) {
        self.problems.push(SyntaxProblem {
            position,
            message,
            expected,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_and_keys_and_values_have_positions() {
        let text =
            "id: demo\nstreams:\n  photos:\n    records: $.items[*]\n    list: [1, true, 2.5]\n";
        let document = parse(text).unwrap();
        assert_eq!(
            document.value["streams"]["photos"]["list"],
            serde_json::json!([1, true, 2.5])
        );
        let records = document
            .positions
            .find("/streams/photos/records", Anchor::Value);
        assert_eq!((records.line, records.column), (4, 14));
        let key = document
            .positions
            .find("/streams/photos/records", Anchor::Key);
        assert_eq!((key.line, key.column), (4, 5));
        // An unknown pointer falls back to its nearest ancestor.
        let fallback = document
            .positions
            .find("/streams/photos/nothing/here", Anchor::Value);
        assert_eq!(fallback.line, 4);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let problems = parse("id: demo\nname: [unclosed\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.starts_with("YAML syntax error"));
        assert!(problems[0].position.line >= 2);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let problems = parse("id: a\nid: b\n").unwrap_err();
        assert!(
            problems[0].message.contains("duplicate"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[0].position.line, 2);
    }

    #[test]
    fn tags_are_refused_where_they_stand() {
        let problems = parse("id: a\nname: !x b\n").unwrap_err();
        assert!(
            problems[0].message.contains("tag"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[0].position.line, 2);
        let problems = parse("id: a\n!x name: b\n").unwrap_err();
        assert_eq!(problems[0].position.line, 2);
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // A spec is at most 1 MiB; all of it nesting must not overflow a 2 MiB stack.
        for text in [
            "[".repeat(1 << 20),
            format!("a: {}", "[".repeat(500_000)),
            "{a: ".repeat(200_000),
            "- ".repeat(300_000),
        ] {
            let problems = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || parse(&text).map(|_| ()).unwrap_err())
                .unwrap()
                .join()
                .unwrap();
            assert!(!problems.is_empty());
        }
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let previous = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"
            ));
        }
        assert!(parse(&text).is_err());
    }

    #[test]
    fn several_documents_and_empty_files_are_refused() {
        assert!(
            parse("id: a\n---\nid: b\n").unwrap_err()[0]
                .message
                .contains("second")
        );
        assert!(parse("").unwrap_err()[0].message.contains("empty"));
    }

    #[test]
    fn pointer_segments_escape_slashes_and_tildes() {
        assert_eq!(pointer_segment("a/b~c"), "a~1b~0c");
    }
}
