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
    /// An RFC 5322 e-mail message (see [`super::email`]).
    Email,
    /// iCalendar: components and properties (see [`super::content_lines`]).
    Ical,
    /// vCard: the same, with vCard's repeatable properties.
    Vcard,
    /// Any file, as its facts (see [`super::media`]).
    Media,
    /// A GPX track: its points with time, elevation and extensions, as one route.
    Gpx,
}

impl Format {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Csv => "CSV",
            Self::Xml => "XML",
            Self::Form => "form",
            Self::Email => "e-mail",
            Self::Ical => "iCalendar",
            Self::Vcard => "vCard",
            Self::Media => "media",
            Self::Gpx => "GPX",
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
            Self::Xml => super::xml::decode(frame).map(Document::from_value),
            Self::Form => Ok(Document::from_value(decode_form(frame))),
            Self::Email | Self::Ical | Self::Vcard | Self::Media | Self::Gpx => {
                self.value(frame).map(Document::from_value)
            }
        }
    }

    /// Decodes one frame into a value (a document that is kept whole, not read through).
    pub(super) fn value(self, frame: &[u8]) -> Result<Value, DecodeError> {
        match self {
            Self::Json => self.decode(frame).map(|document| document.to_value()),
            Self::Csv => decode_csv(frame),
            Self::Xml => super::xml::decode(frame),
            Self::Form => Ok(decode_form(frame)),
            Self::Email => super::email::decode(frame),
            Self::Ical => {
                super::content_lines::decode(super::content_lines::Dialect::Calendar, frame)
            }
            Self::Vcard => super::content_lines::decode(super::content_lines::Dialect::Card, frame),
            Self::Media => Ok(super::media::facts(frame)),
            Self::Gpx => super::gpx::decode(frame),
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
