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
    /// Each element with one of these names, wherever it stands, is one frame (written as that
    /// element's XML); everything around those elements is skipped. Several names let streams
    /// that read different elements of one file share one read of it.
    XmlElements(Vec<String>),
    /// Each element of a top-level JSON array is one frame, read without holding the array. A
    /// JavaScript assignment before the array (X's `window.YTD.tweets.part0 = [...]`) and a
    /// byte-order mark are skipped.
    JsonArray,
    /// Each CSV row is one frame, written after the header row (`header\nrow`), so that each
    /// frame decodes on its own. Quoted fields may hold newlines; a byte-order mark is skipped;
    /// blank lines are skipped.
    CsvRows,
    /// Each message of an mbox file is one frame, its `From ` line first (see
    /// [`super::email`]).
    Messages,
    /// Each iCalendar or vCard component with this name (`VEVENT`, `VCARD`), wherever it
    /// stands, is one frame (its lines, nested components included).
    Components(String),
    /// The input is a file read through, never held: its one frame is the JSON of its facts
    /// (size, hash, type, metadata; see [`super::media`]).
    File,
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
        names: Vec<Vec<u8>>,
        events: Vec<u8>,
    },
    JsonArray {
        reader: R,
        at: ArrayAt,
    },
    Csv {
        reader: R,
        /// The header row, once read (with its line end).
        header: Option<Vec<u8>>,
    },
    Mbox {
        reader: R,
        state: super::email::Mbox,
    },
    Components {
        reader: R,
        name: String,
    },
    File(Option<R>),
}

/// Where a JSON array reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayAt {
    /// Before the array's `[`.
    Start,
    /// Inside, before the first element.
    First,
    /// Inside, after an element (a `,` or the `]` comes next).
    After,
    /// After the array's `]`.
    Done,
}

impl<R: BufRead> Frames<R> {
    /// The frames of `reader`, from its start, each at most [`DEFAULT_FRAME_LIMIT`] bytes.
    pub fn new(framing: &Framing, reader: R) -> Self {
        let inner = match framing {
            Framing::Whole => Inner::Whole(Some(reader)),
            Framing::Lines => Inner::Lines(reader),
            Framing::XmlElements(names) => {
                let mut reader = quick_xml::Reader::from_reader(reader);
                reader.config_mut().check_end_names = true;
                Inner::Xml {
                    reader: Box::new(reader),
                    names: names.iter().map(|name| name.as_bytes().to_vec()).collect(),
                    events: Vec::new(),
                }
            }
            Framing::JsonArray => Inner::JsonArray {
                reader,
                at: ArrayAt::Start,
            },
            Framing::CsvRows => Inner::Csv {
                reader,
                header: None,
            },
            Framing::Messages => Inner::Mbox {
                reader,
                state: super::email::Mbox::default(),
            },
            Framing::Components(name) => Inner::Components {
                reader,
                name: name.to_ascii_uppercase(),
            },
            Framing::File => Inner::File(Some(reader)),
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
                names,
                events,
            } => {
                let found = next_element(reader, names, events, &mut self.frame, limit)?;
                // The reader counts from the input's start, what it skipped included.
                self.position.offset = reader.buffer_position();
                found.then_some(0)
            }
            // Both count what they read themselves, the bytes after the last frame included.
            Inner::JsonArray { reader, at } => {
                let offset = &mut self.position.offset;
                next_array_element(reader, at, &mut self.frame, limit, offset)?.then_some(0)
            }
            Inner::Csv { reader, header } => {
                let offset = &mut self.position.offset;
                next_csv_row(reader, header, &mut self.frame, limit, offset)?.then_some(0)
            }
            Inner::Mbox { reader, state } => {
                let offset = &mut self.position.offset;
                super::email::next_message(reader, state, &mut self.frame, limit, offset)?
                    .then_some(0)
            }
            Inner::File(reader) => {
                let offset = &mut self.position.offset;
                super::media::next_file(reader, &mut self.frame, offset)?.then_some(0)
            }
            Inner::Components { reader, name } => {
                let offset = &mut self.position.offset;
                super::content_lines::next_component(reader, name, &mut self.frame, limit, offset)?
                    .then_some(0)
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

impl<R: BufRead> Frames<R> {
    /// For XML elements: the next element decoded straight onto `tape` as its next document,
    /// in the same pass of the parser that finds it (no frame is copied out and parsed again);
    /// `false` at the end of the input. Nothing is written when it fails. Other framings have
    /// frames to decode ([`Frames::next_frame`]).
    pub(super) fn next_onto(
        &mut self,
        tape: &mut super::xml::TapeWriter,
    ) -> Result<bool, DecodeError> {
        let Inner::Xml {
            reader,
            names,
            events,
        } = &mut self.inner
        else {
            return Err(DecodeError::new(
                "input",
                "only XML elements are read onto a tape",
            ));
        };
        let mark = tape.mark();
        let found = element_onto(reader, names, events, tape, self.limit);
        if found.is_err() {
            tape.rollback(mark);
        }
        // The reader counts from the input's start, what it skipped included.
        self.position.offset = reader.buffer_position();
        if found? {
            self.position.frames += 1;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Reads on to the next element with one of `names` and feeds it to `tape`: the rules of
/// [`next_element`] and of [`super::xml::walk`] at once.
fn element_onto<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    names: &[Vec<u8>],
    events: &mut Vec<u8>,
    tape: &mut super::xml::TapeWriter,
    limit: usize,
) -> Result<bool, DecodeError> {
    let found = next_wanted(reader, names, events, limit, &mut |event| {
        super::xml::feed(event, tape)
    })?;
    if found {
        tape.end_document();
    }
    Ok(found)
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

/// Reads one line (its `\n` included) into `line`, refusing one longer than `limit` bytes;
/// returns how many bytes were read (0 at the end of the input).
pub(super) fn read_line_within<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, DecodeError> {
    read_limited(reader, line, limit, Some(b'\n'))
}

fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Reads on to the next element with one of `names` and writes it, whole, into `frame`; `false`
/// at the end of the input.
fn next_element<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    names: &[Vec<u8>],
    events: &mut Vec<u8>,
    frame: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, DecodeError> {
    let mut writer = quick_xml::Writer::new(frame);
    next_wanted(reader, names, events, limit, &mut |event| {
        writer
            .write_event(event.borrow())
            .map_err(|e| e.to_string())
    })
}

/// Reads on to the next element with one of `names` (at any depth outside another wanted one),
/// handing each of its events to `take`; `false` at the end of the input. Everything between
/// wanted elements is skipped. An element is refused past `limit` bytes of input or
/// [`MAX_XML_DEPTH`] levels, and a document that ends inside one is refused as truncated.
fn next_wanted<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    names: &[Vec<u8>],
    events: &mut Vec<u8>,
    limit: usize,
    take: &mut dyn FnMut(&quick_xml::events::Event<'_>) -> Result<(), String>,
) -> Result<bool, DecodeError> {
    use quick_xml::events::Event;

    let error = |reason: String| DecodeError::new("XML", reason);
    let wanted = |name: &[u8]| names.iter().any(|wanted| wanted.as_slice() == name);
    let mut depth = 0_usize;
    let mut start = 0;
    loop {
        if depth == 0 {
            start = reader.buffer_position();
        }
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
            (Event::Empty(element), 0) if wanted(element.name().as_ref()) => {
                if reader.buffer_position().saturating_sub(start) > limit as u64 {
                    return Err(error(format!("an element is longer than {limit} bytes")));
                }
                take(&event).map_err(error)?;
                return Ok(true);
            }
            (Event::Start(element), 0) if !wanted(element.name().as_ref()) => continue,
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
        take(&event).map_err(error)?;
        // The input's bytes, which the frame or tape holds: quick-xml writes events as read.
        if reader.buffer_position().saturating_sub(start) > limit as u64 {
            return Err(error(format!("an element is longer than {limit} bytes")));
        }
        if depth == 0 {
            return Ok(true);
        }
    }
}

/// The JavaScript that may stand before an export's array: `window.YTD.tweets.part0 =`, a name
/// path and `=`, nothing else (no calls, no code).
const MAX_ASSIGNMENT: usize = 256;

/// The deepest nesting a JSON array element may have (serde_json's own limit).
const MAX_JSON_DEPTH: usize = 128;

fn json_error(reason: impl ToString) -> DecodeError {
    DecodeError::new("JSON array", reason)
}

/// The next byte of the input without consuming it, or `None` at its end.
fn peek<R: BufRead>(reader: &mut R) -> Result<Option<u8>, DecodeError> {
    let buffer = reader
        .fill_buf()
        .map_err(|error| DecodeError::new("input", error))?;
    Ok(buffer.first().copied())
}

/// Consumes whitespace (and a byte-order mark); returns how many bytes.
fn skip_space<R: BufRead>(reader: &mut R) -> Result<usize, DecodeError> {
    let mut skipped = 0;
    loop {
        let buffer = reader
            .fill_buf()
            .map_err(|error| DecodeError::new("input", error))?;
        if buffer.is_empty() {
            return Ok(skipped);
        }
        let (space, available) = (
            buffer
                .iter()
                .take_while(|byte| byte.is_ascii_whitespace() || matches!(byte, 0xEF | 0xBB | 0xBF))
                .count(),
            buffer.len(),
        );
        reader.consume(space);
        skipped += space;
        if space < available {
            return Ok(skipped);
        }
    }
}

/// Reads on to the next element of a top-level JSON array and copies it into `frame`; `false`
/// after the array's end. Every byte consumed is added to `offset`.
fn next_array_element<R: BufRead>(
    reader: &mut R,
    at: &mut ArrayAt,
    frame: &mut Vec<u8>,
    limit: usize,
    offset: &mut u64,
) -> Result<bool, DecodeError> {
    let mut count = |n: usize| *offset += n as u64;
    count(skip_space(reader)?);
    if *at == ArrayAt::Start {
        match peek(reader)? {
            Some(b'[') => {}
            Some(byte) if byte.is_ascii_alphabetic() || byte == b'_' || byte == b'$' => {
                count(skip_assignment(reader)?);
                count(skip_space(reader)?);
                if peek(reader)? != Some(b'[') {
                    return Err(json_error("the assignment is not followed by an array"));
                }
            }
            Some(_) => return Err(json_error("the input is not a JSON array")),
            None => {
                *at = ArrayAt::Done; // an empty file has no elements
                return Ok(false);
            }
        }
        reader.consume(1);
        count(1 + skip_space(reader)?);
        *at = ArrayAt::First;
    }
    if *at == ArrayAt::After {
        match peek(reader)? {
            Some(b',') => {
                reader.consume(1);
                count(1 + skip_space(reader)?);
                if matches!(peek(reader)?, Some(b']' | b',')) {
                    return Err(json_error("an element is missing after a `,`"));
                }
            }
            Some(b']') => {}
            Some(_) => return Err(json_error("elements are not separated by `,`")),
            None => return Err(json_error("the array ends without `]` (truncated?)")),
        }
    }
    match peek(reader)? {
        _ if *at == ArrayAt::Done => Ok(false),
        Some(b']') => {
            // The array's end, and what may follow it: the `;` ending a JavaScript statement.
            reader.consume(1);
            count(1 + skip_space(reader)?);
            if peek(reader)? == Some(b';') {
                reader.consume(1);
                count(1 + skip_space(reader)?);
            }
            if peek(reader)?.is_some() {
                return Err(json_error("there is more after the array's end"));
            }
            *at = ArrayAt::Done;
            Ok(false)
        }
        None => Err(json_error("the array ends without `]` (truncated?)")),
        Some(b',') => Err(json_error("an element is missing before a `,`")),
        Some(_) => {
            count(copy_element(reader, frame, limit)?);
            *at = ArrayAt::After;
            Ok(true)
        }
    }
}

/// Skips `name.path.part0 =` before an array; returns the bytes consumed.
fn skip_assignment<R: BufRead>(reader: &mut R) -> Result<usize, DecodeError> {
    let mut consumed = 0;
    loop {
        let Some(byte) = peek(reader)? else {
            return Err(json_error(
                "the input ends in the assignment before the array",
            ));
        };
        reader.consume(1);
        consumed += 1;
        match byte {
            b'=' => return Ok(consumed),
            b'.' | b'_' | b'$' | b' ' | b'\t' => {}
            byte if byte.is_ascii_alphanumeric() => {}
            _ => {
                return Err(json_error(
                    "the input is neither a JSON array nor `name = [...]`",
                ));
            }
        }
        if consumed > MAX_ASSIGNMENT {
            return Err(json_error(format!(
                "the assignment before the array is longer than {MAX_ASSIGNMENT} bytes"
            )));
        }
    }
}

/// Copies one JSON value (an array element) into `frame`, up to the `,` or `]` after it (not
/// consumed); returns the bytes consumed. Strings are followed so that brackets and commas in
/// them do not count.
fn copy_element<R: BufRead>(
    reader: &mut R,
    frame: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, DecodeError> {
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut consumed = 0;
    loop {
        let buffer = reader
            .fill_buf()
            .map_err(|error| DecodeError::new("input", error))?;
        if buffer.is_empty() {
            return Err(json_error("the array ends inside an element (truncated?)"));
        }
        let mut end = None;
        for (index, &byte) in buffer.iter().enumerate() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(json_error(format!(
                            "an element nests deeper than {MAX_JSON_DEPTH} levels"
                        )));
                    }
                }
                b'}' | b']' if depth > 0 => depth -= 1,
                b',' | b']' if depth == 0 => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let taken = end.unwrap_or(buffer.len());
        if frame.len() + taken > limit {
            return Err(json_error(format!(
                "an element is longer than {limit} bytes"
            )));
        }
        frame.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        consumed += taken;
        if end.is_some() {
            let trimmed = frame.trim_ascii_end().len();
            frame.truncate(trimmed);
            return Ok(consumed);
        }
    }
}

/// Reads on to the next CSV row and writes the header and it into `frame`; `false` at the end
/// of the input. Every byte consumed is added to `offset`.
fn next_csv_row<R: BufRead>(
    reader: &mut R,
    header: &mut Option<Vec<u8>>,
    frame: &mut Vec<u8>,
    limit: usize,
    offset: &mut u64,
) -> Result<bool, DecodeError> {
    if header.is_none() {
        let mut row = Vec::new();
        *offset += skip_space(reader)? as u64;
        let read = read_csv_row(reader, &mut row, limit)?;
        if read == 0 {
            return Ok(false);
        }
        *offset += read as u64;
        trim_line_end(&mut row);
        row.push(b'\n');
        *header = Some(row);
    }
    let header = header.as_deref().unwrap_or_default();
    loop {
        frame.clear();
        frame.extend_from_slice(header);
        let read = read_csv_row(reader, frame, limit.saturating_add(header.len()))?;
        if read == 0 {
            return Ok(false);
        }
        *offset += read as u64;
        trim_line_end(frame);
        if !frame[header.len()..].trim_ascii().is_empty() {
            return Ok(true);
        }
    }
}

/// Reads one CSV row, to its line end outside quotes, appending it to `row`; returns the bytes
/// read (0 at the end of the input).
fn read_csv_row<R: BufRead>(
    reader: &mut R,
    row: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, DecodeError> {
    let mut quoted = false;
    let mut read = 0;
    loop {
        let buffer = reader
            .fill_buf()
            .map_err(|error| DecodeError::new("input", error))?;
        if buffer.is_empty() {
            return Ok(read);
        }
        let mut end = None;
        for (index, &byte) in buffer.iter().enumerate() {
            match byte {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    end = Some(index + 1);
                    break;
                }
                _ => {}
            }
        }
        let taken = end.unwrap_or(buffer.len());
        if row.len() + taken > limit {
            return Err(DecodeError::new(
                "CSV",
                format!("a row is longer than {limit} bytes"),
            ));
        }
        row.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        read += taken;
        if end.is_some() {
            return Ok(read);
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
                frames(
                    &Framing::XmlElements(vec!["Record".to_owned()]),
                    data,
                    chunk
                ),
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
    fn json_array_elements_across_read_boundaries_with_a_javascript_prefix() {
        let data = "\u{feff}window.YTD.tweets.part0 = [ {\n  \"tweet\" : {\"full_text\": \"a ], b, [c \\\" {\"}}\n}, [1, [2]] ,\"x\",3.5e2\n];\n";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                frames(&Framing::JsonArray, data.as_bytes(), chunk),
                [
                    "{\n  \"tweet\" : {\"full_text\": \"a ], b, [c \\\" {\"}}\n}",
                    "[1, [2]]",
                    "\"x\"",
                    "3.5e2"
                ],
                "chunk {chunk}"
            );
        }
        assert!(frames(&Framing::JsonArray, b"[]", 4).is_empty());
        assert!(frames(&Framing::JsonArray, b" [ ] ", 4).is_empty());
        assert!(frames(&Framing::JsonArray, b"", 4).is_empty());
    }

    #[test]
    fn broken_json_arrays_are_errors() {
        for (input, says) in [
            (&b"{\"a\": 1}"[..], "not a JSON array"),
            (b"[1, 2", "truncated"),
            (b"[1, 2 ", "truncated"),
            (b"[ ", "without `]`"),
            (b"[{\"a\": [1, 2", "inside an element"),
            (b"[1,]", "missing after"),
            (b"[,1]", "missing before"),
            (b"[1] [2]", "more after"),
            (b"alert(1) = [1]", "neither a JSON array"),
            (b"x = {}", "not followed by an array"),
        ] {
            // (`[1 2]` frames as one element, `1 2`, which its format then refuses.)
            let mut frames = Frames::new(&Framing::JsonArray, input);
            let error = loop {
                match frames.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{} was read to its end", String::from_utf8_lossy(input)),
                    Err(error) => break error,
                }
            };
            assert!(error.to_string().contains(says), "{error}");
        }
        let deep = format!("[{}]", "[".repeat(MAX_JSON_DEPTH + 1));
        let error = Frames::new(&Framing::JsonArray, deep.as_bytes())
            .next_frame()
            .unwrap_err();
        assert!(error.to_string().contains("nests deeper"), "{error}");
        let long = format!("[\"{}\"]", "x".repeat(200));
        let error = Frames::new(&Framing::JsonArray, long.as_bytes())
            .with_limit(100)
            .next_frame()
            .unwrap_err();
        assert!(error.to_string().contains("longer than 100"), "{error}");
    }

    #[test]
    fn csv_rows_carry_their_header_and_quoted_newlines() {
        let data = "\u{feff}Date,Title\r\n2024-01-02,\"Two\nlines, \"\"quoted\"\"\"\r\n\r\n2024-01-03,Plain\n";
        for chunk in [1, 2, 5, 64] {
            assert_eq!(
                frames(&Framing::CsvRows, data.as_bytes(), chunk),
                [
                    "Date,Title\n2024-01-02,\"Two\nlines, \"\"quoted\"\"\"",
                    "Date,Title\n2024-01-03,Plain"
                ],
                "chunk {chunk}"
            );
        }
        assert!(frames(&Framing::CsvRows, b"only,a,header\n", 3).is_empty());
        let long = format!("a\n{}\n", "y".repeat(500));
        let error = Frames::new(&Framing::CsvRows, long.as_bytes())
            .with_limit(100)
            .next_frame()
            .unwrap_err();
        assert!(error.to_string().contains("row is longer than"), "{error}");
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
            Frames::new(&Framing::XmlElements(vec!["Record".into()]), xml.as_bytes())
                .with_limit(100);
        assert!(elements.next_frame().is_err());
        let deep = format!("<Record>{}", "<a>".repeat(MAX_XML_DEPTH + 1));
        let mut elements = Frames::new(
            &Framing::XmlElements(vec!["Record".into()]),
            deep.as_bytes(),
        );
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
