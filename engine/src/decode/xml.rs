//! XML as JSON: elements become objects, attributes `@name` members, text `$text`, repeated
//! child elements arrays; an element with neither attributes nor children is its text.
//!
//! One walk over quick-xml's events feeds either a `serde_json::Value` tree ([`decode`]: an API
//! body, a whole file) or a [`Tape`]: the documents of a page of an export, their strings
//! written once into one text and their structure as tokens over it, from which the page's
//! borrowed tree is built without parsing anything again. Apple Health's `<Record>`s are read
//! onto a tape straight from the file's events ([`super::Frames::next_onto`]): one pass of
//! quick-xml over the file, where framing each element, writing it out and reading it again
//! took three (BENCHMARKS.md, "Data exports").

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

use super::DecodeError;
use super::document::Node;

/// How deep XML elements may nest. The tree a body becomes is converted, read and dropped
/// recursively, and an answer nested 50,000 deep (350 KB) overflowed the stack and aborted the
/// whole service. Each element may become two levels of JSON (an object, and an array for a
/// repeated child), and a page of documents adds two more: 62 keeps every document within
/// serde_json's 128, so that the tree and the tape accept the same documents as JSON would.
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
        if let Event::Eof = event {
            break;
        }
        feed(&event, sink).map_err(error)?;
        buffer.clear();
    }
    if sink.depth() != 0 {
        return Err(error(
            "the document ends inside an element (truncated?)".to_owned(),
        ));
    }
    Ok(())
}

/// Gives one event to `sink`, as every walk does: nesting bounded, names checked, character
/// and predefined entities resolved (no other entity exists: a DTD's are never expanded).
pub(super) fn feed(event: &Event<'_>, sink: &mut impl Sink) -> Result<(), String> {
    match event {
        Event::Start(start) | Event::Empty(start) => {
            // An empty element is a level too (an object, when it has attributes).
            if sink.depth() >= MAX_XML_DEPTH {
                return Err(format!(
                    "elements are nested more than {MAX_XML_DEPTH} deep"
                ));
            }
            plain_name(start)?;
            sink.open(start)?;
            if matches!(event, Event::Empty(_)) {
                sink.close()?;
            }
        }
        Event::Text(text) => {
            let decoded = text.decode().map_err(|e| e.to_string())?;
            sink.text(&decoded);
        }
        Event::CData(data) => sink.text(&String::from_utf8_lossy(data)),
        Event::GeneralRef(reference) => {
            let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                Some(character) => character.to_string(),
                None => {
                    let name = reference.decode().map_err(|e| e.to_string())?;
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity `&{name};`"))?
                        .to_owned()
                }
            };
            sink.text(&resolved);
        }
        Event::End(_) => {
            if sink.depth() == 0 {
                return Err("unbalanced end tag".to_owned());
            }
            sink.close()?;
        }
        _ => {}
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

/// A run of XML documents as one text and tokens over it: a page of an export's elements,
/// turned into the page's tree ([`Tape::tree`]) that borrows every key and string from the
/// text. Written by a [`TapeWriter`].
#[derive(Debug, Default)]
pub struct Tape {
    text: String,
    tokens: Vec<Token>,
    documents: usize,
}

/// A part of a tape's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
enum Token {
    /// An element opens, with its name.
    Open(Span),
    /// One of its attributes: the `@`-prefixed name, the value.
    Attribute(Span, Span),
    /// It closes, with its text (trimmed).
    Close(Span),
    /// A document ends.
    End,
}

impl Tape {
    fn str(&self, span: Span) -> &str {
        // Spans are made by `TapeWriter::write`, at character boundaries of this text.
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// The documents as one array of their trees, borrowed from the tape.
    pub fn tree(&self) -> Node<'_> {
        let mut tokens = self.tokens.iter();
        let mut documents = Vec::with_capacity(self.documents);
        while tokens.len() > 0 {
            documents.push(self.value(&mut tokens, false));
        }
        Node::Array(documents)
    }

    /// An element's value, read from the tokens after its `Open` (`element`), or a document's
    /// object of its top elements (the text between them is no one's).
    fn value<'t>(&'t self, tokens: &mut std::slice::Iter<'_, Token>, element: bool) -> Node<'t> {
        let mut members: Vec<(&'t str, Node<'t>)> = Vec::new();
        let mut attributes = 0;
        let mut text = "";
        while let Some(token) = tokens.next() {
            match *token {
                Token::Attribute(name, value) => {
                    members.push((self.str(name), Node::Str(Cow::Borrowed(self.str(value)))));
                    attributes = members.len();
                }
                Token::Open(name) => {
                    let name = self.str(name);
                    let child = self.value(tokens, true);
                    // A repeated child element turns the member into an array (an element's
                    // own value never is one).
                    match members[attributes..]
                        .iter_mut()
                        .find(|(key, _)| *key == name)
                    {
                        None => members.push((name, child)),
                        Some((_, Node::Array(items))) => items.push(child),
                        Some((_, existing)) => {
                            let first = std::mem::take(existing);
                            *existing = Node::Array(vec![first, child]);
                        }
                    }
                }
                Token::Close(span) => {
                    text = self.str(span);
                    break;
                }
                Token::End => break,
            }
        }
        if !element {
            return Node::Object(members.into());
        }
        if members.is_empty() {
            return Node::Str(Cow::Borrowed(text));
        }
        if !text.is_empty() {
            members.push(("$text", Node::Str(Cow::Borrowed(text))));
        }
        Node::Object(members.into())
    }
}

/// Writes XML documents onto a [`Tape`] as their events are fed to it ([`feed`]). Names repeat
/// in every document (Apple Health's nine attributes a `<Record>`), so each is written once a
/// tape.
#[derive(Debug, Default)]
pub struct TapeWriter {
    tape: Tape,
    /// The names written on the tape so far (`Record`, `@type`), up to [`MAX_NAMES`].
    names: Vec<Span>,
    /// Each open element's text so far (a buffer a level, reused).
    texts: Vec<String>,
    open: usize,
}

/// The most distinct names a tape keeps to write once; others are written each time.
const MAX_NAMES: usize = 64;

/// Where a tape stood before a document, to go back there when the document fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    text: usize,
    tokens: usize,
    names: usize,
}

impl TapeWriter {
    /// About how many bytes the tape holds.
    pub fn bytes(&self) -> usize {
        self.tape.text.len() + self.tape.tokens.len() * std::mem::size_of::<Token>()
    }

    /// The tape written so far; the writer starts a new one.
    pub fn take(&mut self) -> Tape {
        self.names.clear();
        self.open = 0;
        // A level's buffer that once held a long text does not stay that long.
        for text in &mut self.texts {
            text.clear();
            text.shrink_to(4096);
        }
        std::mem::take(&mut self.tape)
    }

    /// Appends `body`'s document (its top elements, as [`decode`]'s object has them); nothing
    /// is appended when it fails.
    pub fn push_document(&mut self, body: &[u8]) -> Result<(), DecodeError> {
        let mark = self.mark();
        match walk("XML", body, self) {
            Ok(()) => {
                self.end_document();
                Ok(())
            }
            Err(error) => {
                self.rollback(mark);
                Err(error)
            }
        }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            text: self.tape.text.len(),
            tokens: self.tape.tokens.len(),
            names: self.names.len(),
        }
    }

    /// Drops what was written after `mark`.
    pub(super) fn rollback(&mut self, mark: Mark) {
        self.tape.text.truncate(mark.text);
        self.tape.tokens.truncate(mark.tokens);
        self.names.truncate(mark.names);
        self.open = 0;
    }

    /// Ends the document whose events were fed since the last one.
    pub(super) fn end_document(&mut self) {
        self.tape.tokens.push(Token::End);
        self.tape.documents += 1;
    }

    fn write(&mut self, text: &str) -> Result<Span, String> {
        let text_end = self.tape.text.len() + text.len();
        let (Ok(start), Ok(end)) = (u32::try_from(self.tape.text.len()), u32::try_from(text_end))
        else {
            return Err("a page of documents is larger than 4 GiB".to_owned());
        };
        self.tape.text.push_str(text);
        Ok(Span { start, end })
    }

    /// Writes a name (an attribute's with `@` before it), or finds it written already.
    fn name(&mut self, raw: &[u8], attribute: bool) -> Result<Span, String> {
        let prefix = usize::from(attribute);
        let written = self.tape.text.as_bytes();
        let known = self.names.iter().copied().find(|span| {
            let name = &written[span.start as usize..span.end as usize];
            name.len() == raw.len() + prefix
                && (!attribute || name[0] == b'@')
                && &name[prefix..] == raw
        });
        if let Some(span) = known {
            return Ok(span);
        }
        let name = String::from_utf8_lossy(raw);
        let span = if attribute {
            self.write(&format!("@{name}"))?
        } else {
            self.write(&name)?
        };
        if self.names.len() < MAX_NAMES {
            self.names.push(span);
        }
        Ok(span)
    }
}

impl Sink for TapeWriter {
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), String> {
        let name = self.name(start.name().as_ref(), false)?;
        self.tape.tokens.push(Token::Open(name));
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| e.to_string())?;
            let name = self.name(attribute.key.as_ref(), true)?;
            let value = attribute.unescape_value().map_err(|e| e.to_string())?;
            let value = self.write(&value)?;
            self.tape.tokens.push(Token::Attribute(name, value));
        }
        match self.texts.get_mut(self.open) {
            Some(text) => text.clear(),
            None => self.texts.push(String::new()),
        }
        self.open += 1;
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let Some(open) = self.open.checked_sub(1) {
            self.texts[open].push_str(text);
        }
    }

    fn close(&mut self) -> Result<(), String> {
        let open = self.open.checked_sub(1).ok_or("unbalanced end tag")?;
        self.open = open;
        let text = std::mem::take(&mut self.texts[open]);
        let span = self.write(text.trim());
        // The buffer goes back for the next element at this level.
        self.texts[open] = text;
        self.tape.tokens.push(Token::Close(span?));
        Ok(())
    }

    fn depth(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What exports and APIs hold, with the awkward cases: entities, CDATA, repeated and
    /// mixed children, text between top elements, namespaces, an empty document.
    const BODIES: [&str; 11] = [
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
    ];

    /// A tape's trees are the trees `decode` builds, each document on its own and all of them
    /// on one tape (whose names are written once and shared).
    #[test]
    fn the_tape_is_the_tree() {
        let mut all = TapeWriter::default();
        for body in BODIES {
            let tree = decode(body.as_bytes()).unwrap();
            let mut one = TapeWriter::default();
            one.push_document(body.as_bytes()).unwrap();
            all.push_document(body.as_bytes()).unwrap();
            assert_eq!(
                Value::from(&one.take().tree()),
                Value::Array(vec![tree]),
                "{body}"
            );
        }
        let tape = all.take();
        assert_eq!(tape.documents, BODIES.len());
        let wanted: Vec<Value> = BODIES
            .iter()
            .map(|body| decode(body.as_bytes()).unwrap())
            .collect();
        assert_eq!(Value::from(&tape.tree()), Value::Array(wanted));
        // The writer starts a new tape.
        all.push_document(b"<n v=\"1\"/>").unwrap();
        assert_eq!(
            Value::from(&all.take().tree()),
            serde_json::json!([{"n": {"@v": "1"}}])
        );
    }

    /// The deepest document either accepts is one serde_json reads back inside a page, with
    /// repeated children (an array a level) all the way down: records are kept as JSON.
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
        let mut writer = TapeWriter::default();
        writer.push_document(body.as_bytes()).unwrap();
        let page = serde_json::to_string(&writer.take().tree()).unwrap();
        let parsed: Value = serde_json::from_str(&page).unwrap();
        assert_eq!(parsed[0], decode(body.as_bytes()).unwrap());
        let deeper = format!("<z>{body}</z>");
        assert!(decode(deeper.as_bytes()).is_err());
        assert!(writer.push_document(deeper.as_bytes()).is_err());
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
            // New names written before the failure are taken back with it.
            "<new fresh=\"1\"><deeper/>",
        ] {
            let tree = decode(body.as_bytes());
            let mut writer = TapeWriter::default();
            writer.push_document(b"<r a=\"0\"/>").unwrap();
            let written = writer.push_document(body.as_bytes());
            assert!(tree.is_err() && written.is_err(), "{body}");
            writer
                .push_document(b"<new fresh=\"2\"><r a=\"3\"/></new>")
                .unwrap();
            assert_eq!(
                Value::from(&writer.take().tree()),
                serde_json::json!([
                    {"r": {"@a": "0"}},
                    {"new": {"@fresh": "2", "r": {"@a": "3"}}}
                ]),
                "{body}"
            );
        }
    }
}
