//! Framing: where one document ends and the next begins, in a body or a file.
//!
//! An API page is one frame; a JSON Lines file has a frame a line; Apple Health's export.xml
//! (gigabytes) has a frame per `<Record>` element. [`Frames`] reads an input one frame at a
//! time, so memory holds one frame however large the input, and says how far it has come
//! ([`FramePosition`]) so that a run can store it and resume inside the file.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::DecodeError;

/// The largest frame a reader takes by default: far above any real page, line or record, far
/// below what would exhaust memory. A larger frame is an error, not an allocation.
pub const DEFAULT_FRAME_LIMIT: usize = 256 * 1024 * 1024;

/// The deepest XML nesting a frame may have; deeper input is refused rather than followed.
const MAX_XML_DEPTH: usize = 256;

/// Where one document ends in a body or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// The whole input is one frame (an API page).
    Whole,
    /// One frame per line (JSON Lines, NDJSON): `\n` or `\r\n` ends a frame; blank lines are
    /// skipped.
    Lines,
    /// Each element with this name, wherever it stands, is one frame (written as that element's
    /// XML); everything around those elements is skipped.
    XmlElements(String),
}

/// How far a reader has come through its input: the frames read so far and the offset of the
/// byte after the last one. Enough to resume there: [`Frames::resume`] skips that many frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FramePosition {
    /// Frames read (blank lines and skipped XML not counted).
    pub frames: u64,
    /// Bytes of the input consumed.
    pub offset: u64,
}

/// The frames of an input, read one at a time.
pub struct Frames<R: BufRead> {
    inner: Inner<R>,
    limit: usize,
    position: FramePosition,
    frame: Vec<u8>,
}

enum Inner<R: BufRead> {
    Whole(Option<R>),
    Lines(R),
    Xml {
        reader: Box<quick_xml::Reader<R>>,
        name: Vec<u8>,
        events: Vec<u8>,
    },
}

impl<R: BufRead> Frames<R> {
    /// The frames of `reader`, from its start, each at most [`DEFAULT_FRAME_LIMIT`] bytes.
    pub fn new(framing: &Framing, reader: R) -> Self {
        let inner = match framing {
            Framing::Whole => Inner::Whole(Some(reader)),
            Framing::Lines => Inner::Lines(reader),
            Framing::XmlElements(name) => {
                let mut reader = quick_xml::Reader::from_reader(reader);
                reader.config_mut().check_end_names = true;
                Inner::Xml {
                    reader: Box::new(reader),
                    name: name.as_bytes().to_vec(),
                    events: Vec::new(),
                }
            }
        };
        Self {
            inner,
            limit: DEFAULT_FRAME_LIMIT,
            position: FramePosition::default(),
            frame: Vec::new(),
        }
    }

    /// Refuses frames longer than `limit` bytes.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Skips the frames `from` says were read already (framing only: nothing is decoded).
    pub fn resume(mut self, from: FramePosition) -> Result<Self, DecodeError> {
        while self.position.frames < from.frames {
            if self.next_frame()?.is_none() {
                return Err(DecodeError::new(
                    "input",
                    format!(
                        "it has {} frames, fewer than the {} read before: it changed since",
                        self.position.frames, from.frames
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// How far the reader has come.
    pub fn position(&self) -> FramePosition {
        self.position
    }

    /// The next frame, or `None` at the end of the input.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        self.frame.clear();
        let limit = self.limit;
        let read = match &mut self.inner {
            Inner::Whole(reader) => match reader.take() {
                None => None,
                Some(reader) => Some(read_limited(reader, &mut self.frame, limit, None)?),
            },
            Inner::Lines(reader) => loop {
                self.frame.clear();
                let read = read_limited(&mut *reader, &mut self.frame, limit, Some(b'\n'))?;
                if read == 0 {
                    break None;
                }
                self.position.offset += read as u64;
                if !self.frame.trim_ascii().is_empty() {
                    break Some(0); // counted above, not again below
                }
            },
            Inner::Xml {
                reader,
                name,
                events,
            } => {
                let found = next_element(reader, name, events, &mut self.frame, limit)?;
                // The reader counts from the input's start, what it skipped included.
                self.position.offset = reader.buffer_position();
                found.then_some(0)
            }
        };
        let Some(read) = read else {
            return Ok(None);
        };
        self.position.offset += read as u64;
        self.position.frames += 1;
        if let Inner::Lines(_) = self.inner {
            trim_line_end(&mut self.frame);
        }
        Ok(Some(&self.frame))
    }
}

/// Reads into `frame` up to `end` (included) or the end of the input, refusing more than
/// `limit` bytes; returns how many bytes were read.
fn read_limited<R: BufRead>(
    reader: R,
    frame: &mut Vec<u8>,
    limit: usize,
    end: Option<u8>,
) -> Result<usize, DecodeError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut limited = reader.take(cap);
    let read = match end {
        Some(end) => limited.read_until(end, frame),
        None => std::io::Read::read_to_end(&mut limited, frame),
    }
    .map_err(|error| DecodeError::new("input", error))?;
    if frame.len() > limit {
        return Err(DecodeError::new(
            "input",
            format!("a frame is longer than {limit} bytes"),
        ));
    }
    Ok(read)
}

fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Reads on to the next element named `name` and writes it, whole, into `frame`; `false` at the
/// end of the input.
fn next_element<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    name: &[u8],
    events: &mut Vec<u8>,
    frame: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, DecodeError> {
    use quick_xml::events::Event;

    let error = |reason: String| DecodeError::new("XML", reason);
    let mut writer = quick_xml::Writer::new(frame);
    let mut depth = 0_usize;
    loop {
        events.clear();
        let event = reader
            .read_event_into(events)
            .map_err(|e| error(e.to_string()))?;
        match (&event, depth) {
            (Event::Eof, 0) => return Ok(false),
            (Event::Eof, _) => {
                return Err(error(
                    "the document ends inside an element (truncated?)".to_owned(),
                ));
            }
            (Event::Empty(start), 0) if start.name().as_ref() == name => {
                writer
                    .write_event(event.borrow())
                    .map_err(|e| error(e.to_string()))?;
                return Ok(true);
            }
            (Event::Start(start), 0) if start.name().as_ref() != name => continue,
            (_, 0) if !matches!(event, Event::Start(_)) => continue,
            (Event::Start(_), _) => depth += 1,
            (Event::End(_), _) => depth -= 1,
            _ => {}
        }
        if depth > MAX_XML_DEPTH {
            return Err(error(format!(
                "elements nest deeper than {MAX_XML_DEPTH} levels"
            )));
        }
        writer
            .write_event(event.borrow())
            .map_err(|e| error(e.to_string()))?;
        if writer.get_ref().len() > limit {
            return Err(error(format!("an element is longer than {limit} bytes")));
        }
        if depth == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes at a time, so that frames cross the
    /// boundaries of what is read.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl std::io::Read for Chunked<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(buffer.len()).min(self.data.len());
            buffer[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn frames(framing: &Framing, data: &[u8], chunk: usize) -> Vec<String> {
        let reader = std::io::BufReader::with_capacity(chunk, Chunked { data, chunk });
        let mut frames = Frames::new(framing, reader);
        let mut out = Vec::new();
        while let Some(frame) = frames.next_frame().unwrap() {
            out.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        assert_eq!(
            frames.position().offset,
            data.len() as u64,
            "every byte consumed"
        );
        out
    }

    #[test]
    fn lines_across_read_boundaries_with_crlf_and_blank_lines() {
        let data = b"{\"id\": 1}\r\n\n  \n{\"id\": 22}\n{\"id\": 333}";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                frames(&Framing::Lines, data, chunk),
                ["{\"id\": 1}", "{\"id\": 22}", "{\"id\": 333}"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn xml_elements_anywhere_become_frames_and_the_rest_is_skipped() {
        let data =
            br#"<?xml version="1.0"?><HealthData locale="de_DE"><ExportDate value="2026-01-01"/>
<Record type="HKQuantityTypeIdentifierStepCount" value="12"/>
<Workout><Record type="nested" value="&amp;1"><MetadataEntry key="k" value="v"/></Record></Workout>
<Record type="B">text &lt; 5</Record></HealthData>"#;
        for chunk in [1, 5, 4096] {
            assert_eq!(
                frames(&Framing::XmlElements("Record".to_owned()), data, chunk),
                [
                    r#"<Record type="HKQuantityTypeIdentifierStepCount" value="12"/>"#,
                    r#"<Record type="nested" value="&amp;1"><MetadataEntry key="k" value="v"/></Record>"#,
                    r#"<Record type="B">text &lt; 5</Record>"#,
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_an_error_not_an_allocation() {
        let long = vec![b'x'; 1000];
        let mut lines = Frames::new(&Framing::Lines, &long[..]).with_limit(100);
        let error = lines.next_frame().unwrap_err();
        assert!(
            error.to_string().contains("longer than 100 bytes"),
            "{error}"
        );
        let mut whole = Frames::new(&Framing::Whole, &long[..]).with_limit(999);
        assert!(whole.next_frame().is_err());
        let mut whole = Frames::new(&Framing::Whole, &long[..]).with_limit(1000);
        assert_eq!(whole.next_frame().unwrap().unwrap().len(), 1000);
        assert!(whole.next_frame().unwrap().is_none());
        let xml = format!("<a><Record>{}</Record></a>", "y".repeat(500));
        let mut elements =
            Frames::new(&Framing::XmlElements("Record".into()), xml.as_bytes()).with_limit(100);
        assert!(elements.next_frame().is_err());
        let deep = format!("<Record>{}", "<a>".repeat(MAX_XML_DEPTH + 1));
        let mut elements = Frames::new(&Framing::XmlElements("Record".into()), deep.as_bytes());
        let error = elements.next_frame().unwrap_err();
        assert!(error.to_string().contains("nest deeper"), "{error}");
    }

    #[test]
    fn a_reader_resumes_after_the_frames_it_had_read() {
        let data = b"a\n\nb\nc\nd\n";
        let mut first = Frames::new(&Framing::Lines, &data[..]);
        assert_eq!(first.next_frame().unwrap(), Some(&b"a"[..]));
        assert_eq!(first.next_frame().unwrap(), Some(&b"b"[..]));
        let position = first.position();
        assert_eq!(
            position,
            FramePosition {
                frames: 2,
                offset: 5
            }
        );
        let mut resumed = Frames::new(&Framing::Lines, &data[..])
            .resume(position)
            .unwrap();
        assert_eq!(resumed.next_frame().unwrap(), Some(&b"c"[..]));
        assert_eq!(resumed.position().frames, 3);
        // An input shorter than the position: it changed since, and says so.
        let error = Frames::new(&Framing::Lines, &b"a\n"[..])
            .resume(position)
            .err()
            .unwrap();
        assert!(error.to_string().contains("changed since"), "{error}");
    }

    /// Memory holds one frame: reading many frames never grows the buffer past the largest.
    #[test]
    fn the_buffer_holds_one_frame_however_long_the_input() {
        let line = b"{\"id\": \"AF1QipN0tARandomLookingId_0123456789abcdef\"}\n";
        let count = 100_000;
        let data: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * count)
            .collect();
        let mut frames = Frames::new(&Framing::Lines, &data[..]);
        let mut read = 0;
        while frames.next_frame().unwrap().is_some() {
            read += 1;
            assert!(frames.frame.capacity() < 4 * line.len());
        }
        assert_eq!(read, count);
    }
}
