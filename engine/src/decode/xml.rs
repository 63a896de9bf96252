//! XML as JSON: elements become objects, attributes `@name` members, text `$text`, repeated
//! child elements arrays; an element with neither attributes nor children is its text.
//!
//! One walk over quick-xml's events feeds either a `serde_json::Value` tree ([`decode`]: an API
//! body, a whole file) or the JSON text of the same document ([`write_json`]: each element of
//! an export, joined into a page's text and parsed once into the borrowed tree, which saves a
//! map, two strings and a hash a member; Apple Health's `<Record>`s are read this way).

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

use super::DecodeError;

/// How deep XML elements may nest. The tree a body becomes is converted, read and dropped
/// recursively, and an answer nested 50,000 deep (350 KB) overflowed the stack and aborted the
/// whole service. Each element may become two levels of JSON (an object, and an array for a
/// repeated child), and a page of documents adds two more: 62 keeps every document within
/// serde_json's 128, so that the tree and the text accept the same documents.
pub const MAX_XML_DEPTH: usize = 62;

/// What a walk over a document's elements builds.
pub(super) trait Sink {
    /// An element opens (with its attributes).
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), String>;
    /// Text inside the innermost open element (or between the top elements: ignored).
    fn text(&mut self, text: &str);
    /// The innermost open element closes.
    fn close(&mut self) -> Result<(), String>;
    /// How many elements are open.
    fn depth(&self) -> usize;
}

/// Walks `body`'s events into `sink`; errors name the document's `format`.
pub(super) fn walk(
    format: &'static str,
    body: &[u8],
    sink: &mut impl Sink,
) -> Result<(), DecodeError> {
    let error = |reason: String| DecodeError::new(format, reason);
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buffer = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| error(e.to_string()))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                // An empty element is a level too (an object, when it has attributes).
                if sink.depth() >= MAX_XML_DEPTH {
                    return Err(error(format!(
                        "elements are nested more than {MAX_XML_DEPTH} deep"
                    )));
                }
                plain_name(start).map_err(error)?;
                sink.open(start).map_err(error)?;
                if matches!(event, Event::Empty(_)) {
                    sink.close().map_err(error)?;
                }
            }
            Event::Text(text) => {
                let decoded = text.decode().map_err(|e| error(e.to_string()))?;
                sink.text(&decoded);
            }
            Event::CData(data) => sink.text(&String::from_utf8_lossy(&data)),
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .map_err(|e| error(e.to_string()))?
                {
                    Some(character) => character.to_string(),
                    None => {
                        let name = reference.decode().map_err(|e| error(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| error(format!("unknown entity `&{name};`")))?
                            .to_owned()
                    }
                };
                sink.text(&resolved);
            }
            Event::End(_) => {
                if sink.depth() == 0 {
                    return Err(error("unbalanced end tag".to_owned()));
                }
                sink.close().map_err(error)?;
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if sink.depth() != 0 {
        return Err(error(
            "the document ends inside an element (truncated?)".to_owned(),
        ));
    }
    Ok(())
}

/// Refuses an element name that no XML has and that would stand for something else in the
/// document (`@name` is an attribute, `$text` the text): quick-xml does not check names.
fn plain_name(start: &BytesStart<'_>) -> Result<(), String> {
    match start.name().as_ref().first() {
        Some(b'@' | b'$') => Err(format!(
            "`{}` is not an element name",
            String::from_utf8_lossy(start.name().as_ref())
        )),
        _ => Ok(()),
    }
}

fn name_of(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.name().as_ref()).into_owned()
}

/// Each attribute, `@`-prefixed, with its unescaped value.
fn each_attribute(start: &BytesStart<'_>, mut each: impl FnMut(&str, &str)) -> Result<(), String> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let name = String::from_utf8_lossy(attribute.key.as_ref());
        let value = attribute.unescape_value().map_err(|e| e.to_string())?;
        each(&name, &value);
    }
    Ok(())
}

/// The document as a tree.
pub(super) fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let mut tree = Tree {
        stack: vec![(String::new(), Map::new(), String::new())],
    };
    walk("XML", body, &mut tree)?;
    let (_, root, _) = tree.stack.pop().unwrap_or_default();
    Ok(Value::Object(root))
}

/// The document as JSON text, appended to `out` (nothing appended when it fails).
pub(super) fn write_json(body: &[u8], out: &mut String) -> Result<(), DecodeError> {
    let mut text = Text {
        stack: vec![Element::default()],
        names: Vec::new(),
    };
    walk("XML", body, &mut text)?;
    let root = text.stack.pop().unwrap_or_default();
    // The text between top elements is no one's.
    root.write_object(out, false);
    Ok(())
}

/// Builds the tree: each open element's name, its object, and its text so far (text is trimmed
/// per element, not per event: `A &amp; B` arrives as three events).
struct Tree {
    stack: Vec<(String, Map<String, Value>, String)>,
}

impl Sink for Tree {
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), String> {
        // Apple Health's records have nine attributes: one allocation for the map, not four.
        let mut attributes = Map::with_capacity(10);
        each_attribute(start, |name, value| {
            attributes.insert(format!("@{name}"), Value::String(value.to_owned()));
        })?;
        self.stack.push((name_of(start), attributes, String::new()));
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let Some((_, _, content)) = self.stack.last_mut() {
            content.push_str(text);
        }
    }

    fn close(&mut self) -> Result<(), String> {
        let (name, mut object, text) = self.stack.pop().ok_or("unbalanced end tag")?;
        let text = text.trim();
        let value = if object.is_empty() {
            Value::String(text.to_owned())
        } else {
            if !text.is_empty() {
                object.insert("$text".to_owned(), Value::String(text.to_owned()));
            }
            Value::Object(object)
        };
        let (_, parent, _) = self.stack.last_mut().ok_or("unbalanced end tag")?;
        // A repeated child element turns the member into an array.
        match parent.get_mut(&name) {
            None => {
                parent.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.stack.len() - 1
    }
}

/// Writes the text: each open element's attributes as JSON members so far, its children's
/// JSON by name (in the order each name first appears), and its text.
struct Text {
    stack: Vec<Element>,
    /// The open elements' names (the root has none).
    names: Vec<String>,
}

#[derive(Default)]
struct Element {
    /// `"@a":"1","@b":"2"`.
    attributes: String,
    children: Vec<(String, Vec<String>)>,
    text: String,
}

impl Element {
    /// The element as its JSON value: its text alone when it has no attributes or children.
    fn write(self, out: &mut String) {
        if self.attributes.is_empty() && self.children.is_empty() {
            push_json_string(out, self.text.trim());
        } else {
            self.write_object(out, true);
        }
    }

    fn write_object(self, out: &mut String, with_text: bool) {
        out.push('{');
        out.push_str(&self.attributes);
        let mut first = self.attributes.is_empty();
        for (name, values) in self.children {
            if !first {
                out.push(',');
            }
            first = false;
            push_json_string(out, &name);
            out.push(':');
            match values.as_slice() {
                [only] => out.push_str(only),
                many => {
                    out.push('[');
                    out.push_str(&many.join(","));
                    out.push(']');
                }
            }
        }
        let text = self.text.trim();
        if with_text && !text.is_empty() {
            if !first {
                out.push(',');
            }
            out.push_str("\"$text\":");
            push_json_string(out, text);
        }
        out.push('}');
    }
}

impl Sink for Text {
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), String> {
        // Apple Health's records take about 400 bytes.
        let mut attributes = String::with_capacity(512);
        each_attribute(start, |name, value| {
            if !attributes.is_empty() {
                attributes.push(',');
            }
            if crate::record::has_escapes(name) {
                push_json_string(&mut attributes, &format!("@{name}"));
            } else {
                attributes.push_str("\"@");
                attributes.push_str(name);
                attributes.push('"');
            }
            attributes.push(':');
            push_json_string(&mut attributes, value);
        })?;
        self.stack.push(Element {
            attributes,
            children: Vec::new(),
            text: String::new(),
        });
        self.names.push(name_of(start));
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let Some(element) = self.stack.last_mut() {
            element.text.push_str(text);
        }
    }

    fn close(&mut self) -> Result<(), String> {
        let element = self.stack.pop().ok_or("unbalanced end tag")?;
        let name = self.names.pop().ok_or("unbalanced end tag")?;
        let mut value = String::with_capacity(element.attributes.len() + 2);
        element.write(&mut value);
        let parent = self.stack.last_mut().ok_or("unbalanced end tag")?;
        match parent.children.iter_mut().find(|(known, _)| *known == name) {
            Some((_, values)) => values.push(value),
            None => parent.children.push((name, vec![value])),
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.stack.len() - 1
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it (most text needs no escape).
fn push_json_string(out: &mut String, text: &str) {
    if crate::record::has_escapes(text) {
        // Writing a string cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    } else {
        out.reserve(text.len() + 2);
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text parses to the tree `decode` builds, for what exports and APIs hold.
    #[test]
    fn the_text_is_the_tree() {
        for body in [
            r#"<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Anna’s Apple Watch" device="&lt;&lt;HKDevice: 0x283f5a0d0&gt;, name:Apple Watch&gt;" unit="count/min" value="72"><MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="0"/></Record>"#,
            r#"<Workout a="1"><MetadataEntry key="a" value="1"/><WorkoutEvent type="x"/><MetadataEntry key="b" value="2"/>tail</Workout>"#,
            "<feed><entry id=\"1\"><title>A &amp; B</title></entry><entry id=\"2\"><title><![CDATA[<C>]]></title><empty/></entry><n> A </n></feed>",
            "<a>text &#233;t&#xE9; \"quoted\" \\ back</a>",
            "<a><b/><b/><b>x</b><c x=\"1\">y</c></a>",
            "<a/><b/>",
            "<a>\n  <b>1</b>\n  <b>2</b>\n</a>",
            "top text<a/>",
            "",
            "<x:a xmlns:x=\"urn:x\" x:b=\"1\"/>",
            "<a b=\"tab&#9;new&#10;line\"/>",
        ] {
            let tree = decode(body.as_bytes()).unwrap();
            let mut text = String::new();
            write_json(body.as_bytes(), &mut text).unwrap();
            let parsed: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, tree, "{body}\n{text}");
        }
    }

    /// The deepest document either accepts is one serde_json reads back inside a page, with
    /// repeated children (an array a level) all the way down.
    #[test]
    fn the_deepest_documents_accepted_read_back_as_a_page() {
        let mut body = String::new();
        for _ in 0..MAX_XML_DEPTH - 1 {
            body.push_str("<a x=\"1\"><b/>");
        }
        body.push_str("<a x=\"1\"/>");
        for _ in 0..MAX_XML_DEPTH - 1 {
            body.push_str("<b/></a>");
        }
        let mut page = String::from("[");
        write_json(body.as_bytes(), &mut page).unwrap();
        page.push(']');
        let parsed: Value = serde_json::from_str(&page).unwrap();
        assert_eq!(parsed[0], decode(body.as_bytes()).unwrap());
        let deeper = format!("<z>{body}</z>");
        assert!(decode(deeper.as_bytes()).is_err());
        assert!(write_json(deeper.as_bytes(), &mut String::new()).is_err());
    }

    #[test]
    fn broken_documents_are_refused_alike_and_write_nothing() {
        for body in [
            "<a>",
            "<a></b>",
            "</a>",
            "<a>&unknown;</a>",
            "<a b=\"1\" b=\"2\"/>",
            "<r a=\"1\"><@a>2</@a></r>",
            "<r>t<$text>u</$text></r>",
        ] {
            let tree = decode(body.as_bytes());
            let mut text = String::from("[");
            let written = write_json(body.as_bytes(), &mut text);
            assert!(tree.is_err() && written.is_err(), "{body}");
            assert_eq!(text, "[");
        }
    }
}
