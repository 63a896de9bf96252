//! Formats: what the bytes of one frame mean.
//!
//! JSON is the document itself; CSV becomes an array of objects keyed by the header row (all
//! values text); XML becomes nested objects: attributes as `@name`, text as `$text`, repeated
//! child elements as arrays; a form-encoded body becomes one object of text values.

use serde_json::{Map, Value};

use super::DecodeError;
use super::document::Document;

/// What the bytes of one frame mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value (RFC 8259; UTF-8).
    Json,
    /// CSV with a header row: an array of objects keyed by the header.
    Csv,
    /// XML: elements as objects, attributes as `@name`, text as `$text`.
    Xml,
    /// `application/x-www-form-urlencoded`: one object of text values.
    Form,
}

impl Format {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Csv => "CSV",
            Self::Xml => "XML",
            Self::Form => "form",
        }
    }

    /// Decodes one frame. An empty JSON frame is `null`.
    pub fn decode(self, frame: &[u8]) -> Result<Document, DecodeError> {
        match self {
            Self::Json => {
                if frame.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Document::from_value(Value::Null));
                }
                Document::json(utf8("JSON", frame)?)
                    .map_err(|error| DecodeError::new("JSON", error))
            }
            Self::Csv => decode_csv(frame).map(Document::from_value),
            Self::Xml => decode_xml(frame).map(Document::from_value),
            Self::Form => Ok(Document::from_value(decode_form(frame))),
        }
    }

    /// Decodes one frame into a value (a document that is kept whole, not read through).
    pub(super) fn value(self, frame: &[u8]) -> Result<Value, DecodeError> {
        match self {
            Self::Json => self.decode(frame).map(|document| document.to_value()),
            Self::Csv => decode_csv(frame),
            Self::Xml => decode_xml(frame),
            Self::Form => Ok(decode_form(frame)),
        }
    }
}

/// The bytes as text (a copy the document keeps). JSON is UTF-8 (RFC 8259); checking the whole
/// frame at once is several times cheaper than checking each string as the parser meets it,
/// which is what parsing bytes does.
pub(super) fn utf8(format: &'static str, body: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(body)
        .map(str::to_owned)
        .map_err(|error| DecodeError::new(format, error))
}

fn decode_form(body: &[u8]) -> Value {
    Value::Object(
        url::form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
            .collect(),
    )
}

fn decode_csv(body: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let headers = reader
        .headers()
        .map_err(|error| DecodeError::new("CSV", error))?
        .clone();
    let mut rows = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|error| DecodeError::new("CSV", error))?;
        let object: Map<String, Value> = headers
            .iter()
            .zip(row.iter())
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect();
        rows.push(Value::Object(object));
    }
    Ok(Value::Array(rows))
}

/// One row framed with its header (see [`super::Framing::CsvRows`]) as one object.
pub(super) fn decode_csv_row(frame: &[u8]) -> Result<Value, DecodeError> {
    match decode_csv(frame)? {
        Value::Array(mut rows) if rows.len() == 1 => Ok(rows.remove(0)),
        _ => Err(DecodeError::new("CSV", "a row did not decode as one row")),
    }
}

/// How deep XML elements may nest: serde_json's limit for JSON. The tree a body becomes is
/// converted, read and dropped recursively, and an answer nested 50,000 deep (350 KB) overflowed
/// the stack and aborted the whole service.
pub const MAX_XML_DEPTH: usize = 128;

fn decode_xml(body: &[u8]) -> Result<Value, DecodeError> {
    use quick_xml::events::Event;

    let error = |reason: String| DecodeError::new("XML", reason);
    // Text is trimmed per element, not per event: `A &amp; B` arrives as three events.
    let mut reader = quick_xml::Reader::from_reader(body);
    // Each open element: its name, its object, and its text so far.
    let mut stack: Vec<(String, Map<String, Value>, String)> =
        vec![(String::new(), Map::new(), String::new())];
    let mut buffer = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| error(e.to_string()))?;
        match event {
            Event::Start(start) => {
                // The root's entry is not an element.
                if stack.len() > MAX_XML_DEPTH {
                    return Err(error(format!(
                        "elements are nested more than {MAX_XML_DEPTH} deep"
                    )));
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let attributes = xml_attributes(&start).map_err(error)?;
                stack.push((name, attributes, String::new()));
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let attributes = xml_attributes(&start).map_err(error)?;
                let value = if attributes.is_empty() {
                    Value::String(String::new())
                } else {
                    Value::Object(attributes)
                };
                if let Some((_, parent, _)) = stack.last_mut() {
                    insert_child(parent, name, value);
                }
            }
            Event::Text(text) => {
                let decoded = text.decode().map_err(|e| error(e.to_string()))?;
                if let Some((_, _, content)) = stack.last_mut() {
                    content.push_str(&decoded);
                }
            }
            Event::CData(data) => {
                if let Some((_, _, content)) = stack.last_mut() {
                    content.push_str(&String::from_utf8_lossy(&data));
                }
            }
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
                if let Some((_, _, content)) = stack.last_mut() {
                    content.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let (name, mut object, text) = stack
                    .pop()
                    .ok_or_else(|| error("unbalanced end tag".to_owned()))?;
                let text = text.trim().to_owned();
                let value = if object.is_empty() {
                    Value::String(text)
                } else {
                    if !text.is_empty() {
                        object.insert("$text".to_owned(), Value::String(text));
                    }
                    Value::Object(object)
                };
                let (_, parent, _) = stack
                    .last_mut()
                    .ok_or_else(|| error("unbalanced end tag".to_owned()))?;
                insert_child(parent, name, value);
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if stack.len() != 1 {
        return Err(error(
            "the document ends inside an element (truncated?)".to_owned(),
        ));
    }
    let (_, root, _) = stack.pop().unwrap_or_default();
    Ok(Value::Object(root))
}

fn xml_attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<Map<String, Value>, String> {
    // Apple Health's records have nine attributes: one allocation for the map, not four.
    let mut attributes = Map::with_capacity(10);
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let name = String::from_utf8_lossy(attribute.key.as_ref());
        let mut key = String::with_capacity(name.len() + 1);
        key.push('@');
        key.push_str(&name);
        let value = attribute.unescape_value().map_err(|e| e.to_string())?;
        attributes.insert(key, Value::String(value.into_owned()));
    }
    Ok(attributes)
}

/// A repeated child element turns the member into an array.
fn insert_child(parent: &mut Map<String, Value>, name: String, value: Value) {
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
}
