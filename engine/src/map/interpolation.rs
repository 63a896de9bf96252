//! Templates that only join text and record attributes, rendered without minijinja.
//!
//! Many keys are such a template: Apple Health's samples are keyed
//! `{{ record['@type'] }}|{{ record['@sourceName'] }}|{{ record['@startDate'] }}|...`, rendered
//! for each of millions of records. Through minijinja each render builds a context (the
//! attributes copied into template values) and runs the template; joining the attributes'
//! text gives the same string at a fraction of the cost. Anything else in a template (a filter,
//! an `or`, a block, whitespace control), or an attribute that is not text, is left to
//! minijinja, so the output is always what minijinja would render.

use crate::decode::document::{Node, get};

/// A template made of text and `{{ record.<name> }}` (or `{{ record['<name>'] }}`) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Interpolation(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Read(String),
}

impl Interpolation {
    /// The interpolation `source` is, when it is one and reads at least one attribute.
    pub(super) fn parse(source: &str) -> Option<Self> {
        // minijinja drops a template's last line break (`\n`, `\r\n` or `\r`); the other
        // constructs are its business.
        if source.ends_with(['\n', '\r']) || source.contains("{%") || source.contains("{#") {
            return None;
        }
        let mut pieces = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            let Some(open) = rest.find("{{") else {
                pieces.push(Piece::Text(rest.to_owned()));
                break;
            };
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let inside = &rest[open + 2..];
            let close = inside.find("}}")?;
            pieces.push(Piece::Read(read(&inside[..close])?));
            rest = &inside[close + 2..];
        }
        pieces
            .iter()
            .any(|piece| matches!(piece, Piece::Read(_)))
            .then_some(Self(pieces))
    }

    /// What the template renders for `record`; `None` when an attribute it reads is not text
    /// (a number, `null`, a list): minijinja decides how those print.
    pub(super) fn render(&self, record: &Node<'_>) -> Option<String> {
        let mut text = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(literal) => text.push_str(literal),
                // A missing attribute renders empty (the environment's chainable undefined).
                Piece::Read(name) => match get(record, name) {
                    None => {}
                    Some(Node::Str(value)) => text.push_str(value),
                    Some(_) => return None,
                },
            }
        }
        Some(text)
    }
}

/// The attribute an expression reads: `record.name`, `record['name']`, `record["name"]`, with
/// spaces around and nothing else (`{{- ... }}` trims, and is refused here).
fn read(expression: &str) -> Option<String> {
    let expression = expression.strip_prefix(' ')?.strip_suffix(' ')?.trim();
    let rest = expression.strip_prefix("record")?;
    if let Some(name) = rest.strip_prefix('.') {
        let mut chars = name.chars();
        let first = chars.next()?;
        let plain = (first.is_ascii_alphabetic() || first == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        return plain.then(|| name.to_owned());
    }
    let inside = rest.strip_prefix('[')?.strip_suffix(']')?;
    let quote = inside.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let name = inside.strip_prefix(quote)?.strip_suffix(quote)?;
    (!name.contains(['\'', '"', '\\'])).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::document::Document;
    use crate::template::Templates;
    use serde_json::json;

    #[test]
    fn only_plain_reads_and_text_are_interpolations() {
        for source in [
            "{{ record['@type'] }}|{{ record['@sourceName'] }}|{{ record['@startDate'] }}",
            "{{ record.id }}",
            "users/{{ record.user_id }}/x",
            "{{ record[\"a b\"] }}",
        ] {
            assert!(Interpolation::parse(source).is_some(), "{source}");
        }
        for source in [
            "plain text",
            "{{ record.id | lower }}",
            "{{ record.a or record.b }}",
            "{{ record.ts[:19] }}",
            "{{- record.id }}",
            "{{ record.id -}}",
            "{{record.id}}",
            "{{ entry.name }}",
            "{{ record }}",
            "{{ record.a.b }}",
            "{% if x %}{{ record.id }}{% endif %}",
            "{{ record.id }}{# note #}",
            "{{ record.id }}\n",
            "{{ record.id }}\r",
            "{{ record.id ",
            "{{ record['a\\'b'] }}",
        ] {
            assert!(Interpolation::parse(source).is_none(), "{source}");
        }
    }

    /// The interpolation renders what minijinja renders, or leaves the record to it.
    #[test]
    fn renders_agree_with_minijinja() {
        let source = "{{ record['@type'] }}|{{ record.name }}|{{ record['@end'] }}";
        let interpolation = Interpolation::parse(source).unwrap();
        let mut templates = Templates::default();
        let id = templates.add(source).unwrap();
        let records = [
            json!({"@type": "HKQuantityTypeIdentifierHeartRate", "name": "Anna’s Apple Watch", "@end": "2024-03-17 07:45:58 +0100"}),
            json!({"@type": "a", "@end": "c"}),
            json!({"@type": "<&>", "name": "{{ x }}", "@end": ""}),
            json!({}),
            json!("not an object"),
            json!({"@type": 7, "name": "n"}),
            json!({"@type": 1.5}),
            json!({"@type": null}),
            json!({"@type": true}),
            json!({"@type": ["x"]}),
        ];
        let mut fast = 0;
        for record in records {
            let document = Document::from_value(record.clone());
            // The record as the mapper gives it to minijinja.
            let value = super::super::RecordFields::of(source).value(document.root());
            let expected = templates
                .render(&id, &minijinja::context! { record => value })
                .unwrap();
            match interpolation.render(document.root()) {
                Some(text) => {
                    fast += 1;
                    assert_eq!(text, expected, "{record}");
                }
                None => assert!(
                    record.as_object().unwrap().values().any(|v| !v.is_string()),
                    "{record}"
                ),
            }
        }
        assert_eq!(fast, 5);
    }
}
