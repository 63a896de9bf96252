//! A decoded response body: the tree every later stage reads (records, pagination tokens,
//! cursors, template values).
//!
//! The tree is serde_json_borrow's [`Node`]: strings and keys are borrowed from the body text
//! (owned only where the text has escapes), objects are lists of members, so decoding a page
//! allocates a few vectors rather than a string per key and value and a hash table per object.
//! That cuts decoding by more than half (BENCHMARKS.md). A [`Document`] keeps the body text and
//! its tree together. Values leave the tree as `serde_json::Value` only where they are kept:
//! mapped fields, cursors, rejected records.

use serde_json_borrow::ObjectAsVec;

/// A node of a decoded body.
pub type Node<'a> = serde_json_borrow::Value<'a>;

/// What a tree is read from.
#[derive(Debug)]
enum Source {
    /// JSON text.
    Json(String),
    /// JSON Lines text: the tree is the list of the non-blank lines' values.
    JsonLines(String),
    /// A tree decoded from another format.
    Value(serde_json::Value),
    /// XML documents written onto a tape.
    Tape(super::xml::Tape),
}

impl Source {
    fn read(&self) -> Result<Node<'_>, serde_json::Error> {
        match self {
            Self::Json(text) => serde_json::from_str(text),
            Self::JsonLines(text) => text
                .lines()
                .filter(|line| !line.trim_ascii().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<Vec<_>, _>>()
                .map(Node::Array),
            Self::Value(value) => Ok(Node::from(value)),
            Self::Tape(tape) => Ok(tape.tree()),
        }
    }
}

self_cell::self_cell!(
    struct Parsed {
        owner: Source,
        #[covariant]
        dependent: Node,
    }

    impl {Debug}
);

/// A decoded body: what it was read from and the tree over it.
#[derive(Debug)]
pub struct Document(Parsed);

impl Document {
    /// Parses `text` as one JSON value.
    pub fn json(text: String) -> Result<Self, serde_json::Error> {
        Parsed::try_new(Source::Json(text), Source::read).map(Self)
    }

    /// Parses `text` as JSON Lines.
    pub fn json_lines(text: String) -> Result<Self, serde_json::Error> {
        Parsed::try_new(Source::JsonLines(text), Source::read).map(Self)
    }

    /// A document over a value (a body decoded from CSV, XML or a form; a test's page).
    pub fn from_value(value: serde_json::Value) -> Self {
        // Reading a tree cannot fail; only text can be malformed.
        Self(Parsed::new(Source::Value(value), |source| {
            source.read().unwrap_or_default()
        }))
    }

    /// A document over a tape of XML documents: the array of their trees.
    pub(crate) fn tape(tape: super::xml::Tape) -> Self {
        // Reading a tape cannot fail.
        Self(Parsed::new(Source::Tape(tape), |source| {
            source.read().unwrap_or_default()
        }))
    }

    /// The root of the tree.
    pub fn root(&self) -> &Node<'_> {
        self.0.borrow_dependent()
    }

    /// The tree as a `serde_json::Value` (a copy).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::Value::from(self.root())
    }
}

impl PartialEq<serde_json::Value> for Document {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value() == *other
    }
}

/// The member `name` of `object`. When a name repeats (RFC 8259 leaves it to the reader), the
/// last one counts, as it does for `serde_json`. Provider objects are small: scanning their
/// members costs less than hashing the name.
pub fn member<'o, 'a>(object: &'o ObjectAsVec<'a>, name: &str) -> Option<&'o Node<'a>> {
    object
        .as_vec()
        .iter()
        .rev()
        .find_map(|(key, value)| (&**key == name).then_some(value))
}

/// The member `name` of `node`, when it is an object.
pub fn get<'o, 'a>(node: &'o Node<'a>, name: &str) -> Option<&'o Node<'a>> {
    node.as_object().and_then(|object| member(object, name))
}

/// A number as `serde_json` writes it (`7`, `-3`, `2.5`).
fn number_text(number: &serde_json_borrow::Number) -> String {
    serde_json::Number::from(*number).to_string()
}

/// A token or log position as sent back: a non-empty string, or a number written out (a
/// `historyId` that a provider sends unquoted).
pub fn token_text(value: &Node<'_>) -> Option<String> {
    match value {
        Node::Str(token) if !token.is_empty() => Some(token.to_string()),
        Node::Number(number) => Some(number_text(number)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;

    use super::*;

    #[test]
    fn strings_are_borrowed_from_the_body_unless_they_have_escapes() {
        let document =
            Document::json(r#"{"plain": "a/b", "escaped": "a\/b \u00fc"}"#.to_owned()).unwrap();
        let root = document.root();
        assert!(matches!(
            get(root, "plain"),
            Some(Node::Str(Cow::Borrowed("a/b")))
        ));
        assert!(
            matches!(get(root, "escaped"), Some(Node::Str(Cow::Owned(text))) if text == "a/b ü")
        );
    }

    #[test]
    fn members_keep_their_order_and_a_repeated_name_reads_as_serde_json_reads_it() {
        let text = r#"{"z": 1, "a": {"y": [1, 2.5, -3], "b": null}, "z": 2}"#;
        let document = Document::json(text.to_owned()).unwrap();
        let reference: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(get(document.root(), "z"), Some(&Node::from(2u64)));
        assert_eq!(document.to_value(), reference);
        let keys: Vec<&str> = document.root().as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "z"]);
        let copy = Document::from_value(json!({"b": [true, "x"], "a": 1}));
        assert_eq!(copy.to_value().to_string(), r#"{"b":[true,"x"],"a":1}"#);
    }

    #[test]
    fn tokens_and_numbers_are_written_as_serde_json_writes_them() {
        let document =
            Document::json(r#"[7, -3, 2.5, 18446744073709551615, "", "abc", null]"#.to_owned())
                .unwrap();
        let items = document.root().as_array().unwrap();
        let tokens: Vec<Option<String>> = items.iter().map(token_text).collect();
        assert_eq!(
            tokens,
            [
                Some("7".to_owned()),
                Some("-3".to_owned()),
                Some("2.5".to_owned()),
                Some("18446744073709551615".to_owned()),
                None,
                Some("abc".to_owned()),
                None
            ]
        );
    }

    #[test]
    fn json_lines_are_a_list_and_malformed_text_is_an_error() {
        let lines = Document::json_lines("{\"id\": 1}\n\n{\"id\": \"2\"}\n".to_owned()).unwrap();
        assert_eq!(lines, json!([{"id": 1}, {"id": "2"}]));
        assert!(Document::json(r#"{"a": [1, "#.to_owned()).is_err());
        assert!(Document::json_lines("{\"id\": 1}\n{\"id\"".to_owned()).is_err());
    }
}
