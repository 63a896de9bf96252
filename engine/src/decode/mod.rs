//! Response bodies → JSON values, whatever format the provider answers in.
//!
//! JSON is the document itself; JSON Lines become an array of documents; CSV becomes an array of
//! objects keyed by the header row (all values text); XML becomes nested objects: attributes as
//! `@name`, text as `$text`, repeated child elements as arrays; a form-encoded body becomes one
//! object of text values.

pub mod document;

use serde_json::{Map, Value};

use crate::decode::document::Document;
use crate::spec::Decode;

/// A body that could not be decoded: malformed or truncated. The HTTP layer retries these.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {format} body could not be decoded: {reason}")]
pub struct DecodeError {
    format: &'static str,
    reason: String,
}

impl DecodeError {
    fn new(format: &'static str, reason: impl ToString) -> Self {
        Self {
            format,
            reason: reason.to_string(),
        }
    }
}

/// Decodes `body` as `format`. An empty body is `null` for JSON and an empty list otherwise.
pub fn decode(format: Decode, body: &[u8]) -> Result<Document, DecodeError> {
    match format {
        Decode::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Document::from_value(Value::Null));
            }
            Document::json(utf8("JSON", body)?).map_err(|error| DecodeError::new("JSON", error))
        }
        Decode::Jsonl => Document::json_lines(utf8("JSON Lines", body)?)
            .map_err(|error| DecodeError::new("JSON Lines", error)),
        Decode::Csv => decode_csv(body).map(Document::from_value),
        Decode::Xml => decode_xml(body).map(Document::from_value),
        Decode::Form => Ok(Document::from_value(Value::Object(
            url::form_urlencoded::parse(body)
                .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
                .collect(),
        ))),
    }
}

/// The body as text (a copy the document keeps). JSON is UTF-8 (RFC 8259); checking the whole
/// body at once is several times cheaper than checking each string as the parser meets it,
/// which is what parsing bytes does.
fn utf8(format: &'static str, body: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(body)
        .map(str::to_owned)
        .map_err(|error| DecodeError::new(format, error))
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
    let mut attributes = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let key = format!("@{}", String::from_utf8_lossy(attribute.key.as_ref()));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_and_truncated_json() {
        assert_eq!(
            decode(Decode::Json, br#"{"a": [1, 2]}"#).unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(decode(Decode::Json, b"  ").unwrap(), Value::Null);
        assert!(decode(Decode::Json, br#"{"a": [1, "#).is_err());
        // A body cut inside a multi-byte character, or not UTF-8 at all, is undecodable.
        let error = decode(Decode::Json, b"{\"city\": \"M\xc3").unwrap_err();
        assert!(error.to_string().contains("JSON"), "{error}");
        assert!(decode(Decode::Json, b"{\"a\": \"\xff\"}").is_err());
        assert_eq!(
            decode(Decode::Json, "{\"city\": \"München\"}".as_bytes()).unwrap(),
            json!({"city": "München"})
        );
    }

    #[test]
    fn form_bodies_become_an_object() {
        let body = b"oauth_token=hh5s93j4hdidpola&oauth_token_secret=hdhd0244k9j7ao03&oauth_callback_confirmed=true";
        assert_eq!(
            decode(Decode::Form, body).unwrap(),
            json!({"oauth_token": "hh5s93j4hdidpola", "oauth_token_secret": "hdhd0244k9j7ao03", "oauth_callback_confirmed": "true"})
        );
    }

    #[test]
    fn json_lines_become_an_array() {
        let body = b"{\"id\": 1}\n{\"id\": 2}\n\n";
        assert_eq!(
            decode(Decode::Jsonl, body).unwrap(),
            json!([{"id": 1}, {"id": 2}])
        );
        assert!(decode(Decode::Jsonl, b"{\"id\": 1}\n{\"id\"").is_err());
        assert_eq!(
            decode(Decode::Jsonl, b"{\"id\": 1}\r\n{\"id\": 2}\r\n").unwrap(),
            json!([{"id": 1}, {"id": 2}])
        );
    }

    #[test]
    fn csv_rows_become_objects_keyed_by_the_header() {
        let body = b"date,amount,description\n2026-01-02,-12.50,\"Coffee, large\"\n";
        assert_eq!(
            decode(Decode::Csv, body).unwrap(),
            json!([{"date": "2026-01-02", "amount": "-12.50", "description": "Coffee, large"}])
        );
        assert!(decode(Decode::Csv, b"a,b\n1,2,3\n").is_err());
    }

    #[test]
    fn xml_elements_attributes_text_and_repeats() {
        let body = br#"<?xml version="1.0"?>
            <feed><entry id="1"><title>A &amp; B</title></entry><entry id="2"><title><![CDATA[<C>]]></title><empty/></entry><n>&#65;</n></feed>"#;
        assert_eq!(
            decode(Decode::Xml, body).unwrap(),
            json!({"feed": {
                "entry": [
                    {"@id": "1", "title": "A & B"},
                    {"@id": "2", "title": "<C>", "empty": ""}
                ],
                "n": "A"
            }})
        );
        assert!(decode(Decode::Xml, b"<feed><entry>").is_err());
    }
}
