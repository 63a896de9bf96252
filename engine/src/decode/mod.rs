//! Bytes → documents, whatever format the provider answers or exports in.
//!
//! Decoding is two choices, as in Vector's codecs: the [`Framing`] says where one document ends
//! and the next begins (the whole body, a line, an XML element), the [`Format`] what one
//! frame's bytes mean (JSON, CSV, XML, a form). A [`Decoder`] is the pair. An API page is
//! decoded whole ([`Decoder::page`]); a file too big to hold (an export's multi-GB XML, a JSON
//! Lines history) is read a frame at a time ([`Decoder::documents`]), with a position to resume
//! from.

pub mod content_lines;
pub mod document;
pub mod email;
mod format;
mod framing;
mod gpx;
pub mod media;
mod xml;

use std::io::BufRead;

use serde_json::Value;

pub use format::Format;
pub use framing::{DEFAULT_FRAME_LIMIT, FramePosition, Frames, Framing};

use crate::spec::{Decode, Split};
use document::Document;

/// A body that could not be decoded: malformed or truncated. The HTTP layer retries these.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {format} body could not be decoded: {reason}")]
pub struct DecodeError {
    format: &'static str,
    reason: String,
}

impl DecodeError {
    pub(crate) fn new(format: &'static str, reason: impl ToString) -> Self {
        Self {
            format,
            reason: reason.to_string(),
        }
    }
}

/// How bytes become documents: a framing and a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    /// Where one document ends.
    pub framing: Framing,
    /// What one frame's bytes mean.
    pub format: Format,
}

impl From<Decode> for Decoder {
    /// A stream's `decode`: JSON Lines is JSON framed by lines; the others are whole bodies.
    fn from(decode: Decode) -> Self {
        let (framing, format) = match decode {
            Decode::Json => (Framing::Whole, Format::Json),
            Decode::Jsonl => (Framing::Lines, Format::Json),
            Decode::Csv => (Framing::Whole, Format::Csv),
            Decode::Xml => (Framing::Whole, Format::Xml),
            Decode::Form => (Framing::Whole, Format::Form),
            Decode::Email => (Framing::Whole, Format::Email),
            Decode::Ical => (Framing::Whole, Format::Ical),
            Decode::Vcard => (Framing::Whole, Format::Vcard),
            Decode::Media => (Framing::Whole, Format::Media),
            Decode::Gpx => (Framing::Whole, Format::Gpx),
        };
        Self { framing, format }
    }
}

impl Decoder {
    /// How an archive stream's files decode: its `archive.split` with its `decode`, or why the
    /// two do not go together.
    pub fn for_archive(split: &Split, decode: Decode) -> Result<Self, String> {
        let (framing, format) = match (split, decode) {
            (Split::Whole, Decode::Jsonl) => {
                return Err(
                    "a JSON Lines file is split into lines (`split: lines`), each a document"
                        .to_owned(),
                );
            }
            // A file of an export is read through, never held: its frame is its facts.
            (Split::Whole, Decode::Media) => (Framing::File, Format::Json),
            (Split::Whole, decode) => return Ok(Self::from(decode)),
            (Split::Lines, Decode::Json | Decode::Jsonl) => (Framing::Lines, Format::Json),
            (Split::Array, Decode::Json) => (Framing::JsonArray, Format::Json),
            (Split::Rows, Decode::Csv) => (Framing::CsvRows, Format::Csv),
            (Split::Element(name), Decode::Xml) => {
                (Framing::XmlElements(vec![name.clone()]), Format::Xml)
            }
            (Split::Messages, Decode::Email) => (Framing::Messages, Format::Email),
            (Split::Component(name), Decode::Ical) => {
                (Framing::Components(name.clone()), Format::Ical)
            }
            (Split::Component(name), Decode::Vcard) => {
                (Framing::Components(name.clone()), Format::Vcard)
            }
            (split, decode) => {
                let (what, wanted) = match split {
                    Split::Lines => ("lines", "`decode: json` or `decode: jsonl`"),
                    Split::Array => ("array elements", "`decode: json`"),
                    Split::Rows => ("rows", "`decode: csv`"),
                    Split::Messages => ("mbox messages", "`decode: email`"),
                    Split::Component(_) => ("components", "`decode: ical` or `decode: vcard`"),
                    _ if decode == Decode::Media => {
                        return Err(
                            "a media file is one document: `split: whole` with `decode: media`"
                                .to_owned(),
                        );
                    }
                    Split::Element(_) | Split::Whole => ("elements", "`decode: xml`"),
                };
                return Err(format!(
                    "a file split into {what} needs {wanted}, and the stream decodes {}",
                    serde_json::to_value(decode)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ));
            }
        };
        Ok(Self { framing, format })
    }

    /// A body (an API page) as one document: the document itself when the body is one frame,
    /// else the array of its frames' documents. An empty body is `null` for JSON and an empty
    /// list otherwise.
    pub fn page(&self, body: &[u8]) -> Result<Document, DecodeError> {
        match (&self.framing, self.format) {
            (Framing::Whole, format) => format.decode(body),
            // The common multi-frame case decodes the text once into one tree.
            (Framing::Lines, Format::Json) => {
                Document::json_lines(format::utf8("JSON Lines", body)?)
                    .map_err(|error| DecodeError::new("JSON Lines", error))
            }
            (framing, format) => {
                let mut frames = Frames::new(framing, body);
                let mut values = Vec::new();
                while let Some(frame) = frames.next_frame()? {
                    values.push(format.value(frame)?);
                }
                Ok(Document::from_value(Value::Array(values)))
            }
        }
    }

    /// The frames of `reader`, each at most `limit` bytes, after the `from.frames` read already.
    pub fn frames<R: BufRead>(
        &self,
        reader: R,
        from: FramePosition,
        limit: usize,
    ) -> Result<Frames<R>, DecodeError> {
        Frames::new(&self.framing, reader)
            .with_limit(limit)
            .resume(from)
    }

    /// A page to read documents into and decode once ([`PageBuilder`]), where the format
    /// allows: JSON frames are joined as one array's text, XML documents written onto a tape.
    /// `None` for the formats whose frames decode one by one ([`Decoder::frame_value`]).
    pub fn page_builder(&self) -> Option<PageBuilder> {
        let kind = match (&self.framing, self.format) {
            (Framing::XmlElements(_), Format::Xml) => Joined::XmlElements(Default::default()),
            (_, Format::Xml) => Joined::XmlFrames(Default::default()),
            (_, Format::Json) => Joined::Json(String::new()),
            _ => return None,
        };
        Some(PageBuilder {
            joined: kind,
            documents: 0,
        })
    }

    /// One frame as a value (a CSV row framed with its header: one object).
    pub fn frame_value(&self, frame: &[u8]) -> Result<Value, DecodeError> {
        if self.framing == Framing::CsvRows {
            return format::decode_csv_row(frame);
        }
        self.format.value(frame)
    }

    /// The documents of `reader`, one frame at a time, after the frames `from` says were read
    /// already: memory holds one frame and its document, however large the input.
    pub fn documents<R: BufRead>(
        &self,
        reader: R,
        from: FramePosition,
    ) -> Result<Documents<R>, DecodeError> {
        self.documents_within(reader, from, DEFAULT_FRAME_LIMIT)
    }

    /// The same, each frame at most `limit` bytes.
    pub fn documents_within<R: BufRead>(
        &self,
        reader: R,
        from: FramePosition,
        limit: usize,
    ) -> Result<Documents<R>, DecodeError> {
        Ok(Documents {
            frames: Frames::new(&self.framing, reader)
                .with_limit(limit)
                .resume(from)?,
            format: self.format,
            rows: self.framing == Framing::CsvRows,
        })
    }
}

/// The documents of an input, decoded a frame at a time (see [`Decoder::documents`]).
pub struct Documents<R: BufRead> {
    frames: Frames<R>,
    format: Format,
    /// CSV rows framed with their header: each is one object, not a list of one.
    rows: bool,
}

impl<R: BufRead> Documents<R> {
    /// How far the reader has come: store it to resume after the last document returned.
    pub fn position(&self) -> FramePosition {
        self.frames.position()
    }
}

impl<R: BufRead> Iterator for Documents<R> {
    type Item = Result<Document, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (format, rows) = (self.format, self.rows);
        match self.frames.next_frame() {
            Ok(Some(frame)) if rows => {
                Some(format::decode_csv_row(frame).map(Document::from_value))
            }
            Ok(Some(frame)) => Some(format.decode(frame)),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

/// The documents of a page, read one by one and decoded together when the page is taken
/// ([`Decoder::page_builder`]): one tree a page instead of one a document.
#[derive(Debug)]
pub struct PageBuilder {
    joined: Joined,
    documents: usize,
}

#[derive(Debug)]
enum Joined {
    /// JSON frames, joined into one array's text, parsed once.
    Json(String),
    /// XML elements, decoded onto the tape by the pass that frames them.
    XmlElements(xml::TapeWriter),
    /// Other XML frames (whole files), each decoded onto the tape.
    XmlFrames(xml::TapeWriter),
}

impl PageBuilder {
    /// Reads the next document of `frames` into the page; `false` at the end of the input.
    /// Nothing is added when it fails.
    pub fn read_next<R: BufRead>(&mut self, frames: &mut Frames<R>) -> Result<bool, DecodeError> {
        match &mut self.joined {
            Joined::XmlElements(tape) => {
                if !frames.next_onto(tape)? {
                    return Ok(false);
                }
            }
            Joined::XmlFrames(tape) => {
                let Some(frame) = frames.next_frame()? else {
                    return Ok(false);
                };
                tape.push_document(frame)?;
            }
            Joined::Json(text) => {
                let Some(frame) = frames.next_frame()? else {
                    return Ok(false);
                };
                let frame =
                    std::str::from_utf8(frame).map_err(|error| DecodeError::new("JSON", error))?;
                text.push(if self.documents == 0 { '[' } else { ',' });
                text.push_str(frame);
            }
        }
        self.documents += 1;
        Ok(true)
    }

    /// How many documents the page holds.
    pub fn documents(&self) -> usize {
        self.documents
    }

    /// About how many bytes the page holds.
    pub fn bytes(&self) -> usize {
        match &self.joined {
            Joined::Json(text) => text.len(),
            Joined::XmlElements(tape) | Joined::XmlFrames(tape) => tape.bytes(),
        }
    }

    /// The page read so far, decoded (the array of its documents); the builder starts a new
    /// one.
    pub fn take(&mut self) -> Result<Document, DecodeError> {
        self.documents = 0;
        match &mut self.joined {
            Joined::Json(text) => {
                let mut text = std::mem::take(text);
                text.push_str(if text.is_empty() { "[]" } else { "]" });
                Document::json(text).map_err(|error| DecodeError::new("JSON", error))
            }
            Joined::XmlElements(tape) | Joined::XmlFrames(tape) => Ok(Document::tape(tape.take())),
        }
    }
}

/// Decodes a whole body as a stream's `decode` says (see [`Decoder::page`]).
pub fn decode(format: Decode, body: &[u8]) -> Result<Document, DecodeError> {
    Decoder::from(format).page(body)
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
    #[test]
    fn deeply_nested_bodies_are_refused_without_exhausting_the_stack() {
        let deep_xml = format!("{}x{}", "<a>".repeat(50_000), "</a>".repeat(50_000));
        let deep_json = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
        let within = format!(
            "{}x{}",
            "<a>".repeat(xml::MAX_XML_DEPTH),
            "</a>".repeat(xml::MAX_XML_DEPTH)
        );
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let error = decode(Decode::Xml, deep_xml.as_bytes()).unwrap_err();
                assert!(error.to_string().contains("nested more than 62"), "{error}");
                assert!(decode(Decode::Json, deep_json.as_bytes()).is_err());
                assert!(decode(Decode::Jsonl, deep_json.as_bytes()).is_err());
                assert!(decode(Decode::Xml, within.as_bytes()).is_ok());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn xml_elements_framed_one_by_one_become_an_array_of_objects() {
        let decoder = Decoder {
            framing: Framing::XmlElements(vec!["Record".to_owned(), "Workout".to_owned()]),
            format: Format::Xml,
        };
        let body = br#"<HealthData><Record type="Steps" value="12"/><Workout type="Run"><Record type="x"/></Workout><Record type="HR"><MetadataEntry key="a" value="&amp;"/></Record><Me/></HealthData>"#;
        // Elements of either name, in file order; one inside another is part of it.
        assert_eq!(
            decoder.page(body).unwrap(),
            json!([
                {"Record": {"@type": "Steps", "@value": "12"}},
                {"Workout": {"@type": "Run", "Record": {"@type": "x"}}},
                {"Record": {"@type": "HR", "MetadataEntry": {"@key": "a", "@value": "&"}}}
            ])
        );
    }

    /// A page of XML elements read onto a tape in the pass that frames them holds what the
    /// frames decode to one by one, stands at the same positions, and takes nothing of a
    /// document that fails.
    #[test]
    fn xml_elements_read_onto_a_page_are_their_frames_decoded() {
        let decoder = Decoder {
            framing: Framing::XmlElements(vec!["Record".to_owned(), "Workout".to_owned()]),
            format: Format::Xml,
        };
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!ATTLIST Record type CDATA #REQUIRED>
]>
<HealthData locale="en_GB">
 <ExportDate value="2024-03-17 08:00:00 +0100"/>
 <Me HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale"/>
 <Record type="Steps" sourceName="Anna&#8217;s iPhone" value="12"/>
 <Workout type="Run"><Record type="x"/>
  <WorkoutStatistics type="HR" average="141"/>
  <WorkoutStatistics type="Energy" sum="310"/>
  done
 </Workout>
 <Record type="HR"><MetadataEntry key="a" value="&amp;"/></Record>
</HealthData>"#;
        let mut one_by_one = Vec::new();
        let mut positions = Vec::new();
        let mut frames = decoder
            .frames(&body[..], FramePosition::default(), 1 << 20)
            .unwrap();
        while let Some(frame) = frames.next_frame().unwrap() {
            one_by_one.push(Format::Xml.value(frame).unwrap());
            positions.push(frames.position());
        }
        assert_eq!(one_by_one.len(), 3);
        let mut page = decoder.page_builder().unwrap();
        let mut frames = decoder
            .frames(&body[..], FramePosition::default(), 1 << 20)
            .unwrap();
        for position in &positions {
            assert!(page.read_next(&mut frames).unwrap());
            assert_eq!(frames.position(), *position);
        }
        assert!(!page.read_next(&mut frames).unwrap());
        assert_eq!(page.documents(), 3);
        assert_eq!(page.take().unwrap(), Value::Array(one_by_one.clone()));
        assert_eq!(
            one_by_one[0]["Record"]["@sourceName"],
            "Anna\u{2019}s iPhone"
        );
        assert_eq!(
            one_by_one[1]["Workout"]["WorkoutStatistics"][1]["@sum"],
            "310"
        );
        assert_eq!(one_by_one[1]["Workout"]["$text"], "done");

        // Resumed after the first element, the page holds the two after it.
        let mut frames = decoder.frames(&body[..], positions[0], 1 << 20).unwrap();
        while page.read_next(&mut frames).unwrap() {}
        assert_eq!(page.take().unwrap(), Value::Array(one_by_one[1..].to_vec()));

        // A truncated element, one too deep, one too long: refused, and the documents read
        // before it are the page's, whole.
        let deep = format!(
            "<r><Record/><Record>{}{}</Record></r>",
            "<a>".repeat(xml::MAX_XML_DEPTH),
            "</a>".repeat(xml::MAX_XML_DEPTH)
        );
        let long = format!("<r><Record/><Record v=\"{}\"/></r>", "x".repeat(300));
        for (body, limit, reason) in [
            ("<r><Record/><Record><a>".to_owned(), 1 << 20, "truncated"),
            (deep, 1 << 20, "nested more than"),
            (long, 200, "longer than 200 bytes"),
        ] {
            let mut frames = decoder
                .frames(body.as_bytes(), FramePosition::default(), limit)
                .unwrap();
            assert!(page.read_next(&mut frames).unwrap());
            let error = page.read_next(&mut frames).unwrap_err();
            assert!(error.to_string().contains(reason), "{error}");
            assert_eq!(page.take().unwrap(), json!([{"Record": ""}]));
            // Framed one by one, the same element is refused for the same reason.
            let mut frames = decoder
                .frames(body.as_bytes(), FramePosition::default(), limit)
                .unwrap();
            assert!(frames.next_frame().unwrap().is_some());
            let refused = frames
                .next_frame()
                .and_then(|frame| frame.map(|frame| Format::Xml.value(frame)).transpose());
            assert!(refused.unwrap_err().to_string().contains(reason));
        }
    }

    /// A file read a document at a time, stopped, and read again from the stored position
    /// gives every document once.
    #[test]
    fn documents_resume_from_a_stored_position() {
        let decoder = Decoder::from(Decode::Jsonl);
        let file = b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n";
        let mut documents = decoder
            .documents(&file[..], FramePosition::default())
            .unwrap();
        assert_eq!(documents.next().unwrap().unwrap(), json!({"id": 1}));
        let position = documents.position();
        let rest: Vec<Value> = decoder
            .documents(&file[..], position)
            .unwrap()
            .map(|document| document.unwrap().to_value())
            .collect();
        assert_eq!(rest, [json!({"id": 2}), json!({"id": 3})]);
        let broken = decoder
            .documents(&b"{\"id\": 1}\n{\"id\"\n"[..], FramePosition::default())
            .unwrap();
        let results: Vec<bool> = broken.map(|document| document.is_ok()).collect();
        assert_eq!(results, [true, false]);
    }
}
