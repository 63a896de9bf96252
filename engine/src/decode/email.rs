//! E-mail: RFC 5322 messages (MIME included), alone (`.eml`) or many in an mbox file (Takeout's
//! `All mail Including Spam and Trash.mbox`, Thunderbird's and Apple Mail's folders).
//!
//! A message becomes one object: `message_id`, `subject`, `date` (RFC 3339), the addresses of
//! `from`, `sender`, `to`, `cc`, `bcc` and `reply_to` as lists of `{name, address}` (groups
//! flattened), `in_reply_to` and `references` as lists of ids, every header under `headers`
//! (names lower-cased; unfolded, RFC 2047 words decoded; a header that occurs several times is
//! a list), the `text` and `html` bodies, the `attachments` (`name`, `content_type`, `size`,
//! `blake3` of the decoded bytes, `content_id`), the message's `size`, and for a message from an
//! mbox file its `envelope` (the `From ` line's sender and date). Parsing is mail-parser's.
//!
//! mbox framing is ours: a message starts at a `From ` line at the start of the file or after a
//! blank line; `>From ` lines (escaped by the writer) lose one `>`. mail-parser's own mbox reader
//! takes every `From ` line as a separator and has no size limits.

use std::io::BufRead;

use mail_parser::{Address, HeaderForm, HeaderValue, MessageParser, MimeHeaders};
use serde_json::{Map, Value, json};

use super::DecodeError;

fn error(reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::new("e-mail", reason)
}

/// One message (with an mbox `From ` line before it, or not) as an object.
pub fn decode(frame: &[u8]) -> Result<Value, DecodeError> {
    let (envelope, message) = match frame.strip_prefix(b"From ") {
        Some(rest) => {
            let end = rest
                .iter()
                .position(|&byte| byte == b'\n')
                .unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..end]);
            let line = line.trim_end();
            let (sender, date) = line.split_once(' ').unwrap_or((line, ""));
            let envelope = json!({"sender": sender, "date": date.trim()});
            (Some(envelope), rest.get(end + 1..).unwrap_or_default())
        }
        None => (None, frame),
    };
    // mail-parser promises never to panic and is fuzzed, yet has panicked on crafted input
    // before (its issues #120, #145, #155): a message that makes it panic is a decode error,
    // not the end of the import.
    let parsed = std::panic::catch_unwind(|| message_value(message))
        .map_err(|_| error("the message could not be parsed (the parser failed on it)"))?;
    let mut object = parsed.ok_or_else(|| error("the message has no headers"))?;
    if let Some(envelope) = envelope {
        object.insert("envelope".to_owned(), envelope);
    }
    Ok(Value::Object(object))
}

/// The mailboxes of an address header's text (`"Lee, Ann" <ann@example.com>, bob@example.com`),
/// as `(name, address)`, read by mail-parser as the header of a message: RFC 2047 encoded names
/// decoded, groups flattened, mailboxes without an address left out.
pub fn mailboxes(text: &str) -> Vec<(Option<String>, String)> {
    // One header line: a line break in the text would end it.
    let header = format!("To: {}\r\n\r\n", text.replace(['\r', '\n'], " "));
    let Some(message) = MessageParser::default().parse(header.as_bytes()) else {
        return Vec::new();
    };
    message
        .to()
        .into_iter()
        .flat_map(Address::iter)
        .filter_map(|mailbox| {
            let address = mailbox.address()?.trim();
            (!address.is_empty()).then(|| {
                (
                    mailbox.name().map(|name| name.trim().to_owned()),
                    address.to_owned(),
                )
            })
        })
        .collect()
}

fn addresses(value: Option<&Address<'_>>) -> Value {
    Value::Array(
        value
            .into_iter()
            .flat_map(Address::iter)
            .map(|address| {
                json!({
                    "name": address.name(),
                    "address": address.address(),
                })
            })
            .collect(),
    )
}

fn ids(value: &HeaderValue<'_>) -> Value {
    match value {
        HeaderValue::Text(id) => json!([id]),
        HeaderValue::TextList(ids) => json!(ids),
        _ => json!([]),
    }
}

fn text_of(value: &HeaderValue<'_>) -> Option<String> {
    match value {
        HeaderValue::Text(text) => Some(text.to_string()),
        HeaderValue::TextList(texts) => Some(texts.join(", ")),
        _ => None,
    }
}

fn message_value(bytes: &[u8]) -> Option<Map<String, Value>> {
    let message = MessageParser::default().parse(bytes)?;
    let mut object = Map::new();
    object.insert("message_id".to_owned(), json!(message.message_id()));
    object.insert("subject".to_owned(), json!(message.subject()));
    let date = message
        .date()
        .filter(|date| date.is_valid())
        .map(mail_parser::DateTime::to_rfc3339);
    object.insert("date".to_owned(), json!(date));
    object.insert("from".to_owned(), addresses(message.from()));
    object.insert("sender".to_owned(), addresses(message.sender()));
    object.insert("to".to_owned(), addresses(message.to()));
    object.insert("cc".to_owned(), addresses(message.cc()));
    object.insert("bcc".to_owned(), addresses(message.bcc()));
    object.insert("reply_to".to_owned(), addresses(message.reply_to()));
    object.insert("in_reply_to".to_owned(), ids(message.in_reply_to()));
    object.insert("references".to_owned(), ids(message.references()));

    // Every header, as text: unfolded and decoded (labels and thread ids are headers too).
    let mut headers = Map::new();
    let mut names: Vec<&str> = message.headers_raw().map(|(name, _)| name).collect();
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    for name in names {
        let key = name.to_ascii_lowercase();
        if headers.contains_key(&key) {
            continue;
        }
        let values: Vec<Value> = message
            .header_as(name, HeaderForm::Text)
            .iter()
            .filter_map(text_of)
            .map(|text| Value::String(text.trim().to_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        headers.insert(key, value);
    }
    object.insert("headers".to_owned(), Value::Object(headers));

    object.insert("text".to_owned(), json!(message.body_text(0)));
    // Only a real HTML part: mail-parser would otherwise make HTML of the text.
    let html = message
        .html_part(0)
        .filter(|part| part.is_text_html())
        .and_then(|_| message.body_html(0));
    object.insert("html".to_owned(), json!(html));
    let attachments: Vec<Value> = message
        .attachments()
        .map(|part| {
            let content_type = part.content_type().map(|kind| match kind.subtype() {
                Some(subtype) => format!("{}/{subtype}", kind.ctype()),
                None => kind.ctype().to_owned(),
            });
            let contents = part.contents();
            json!({
                "name": part.attachment_name(),
                "content_type": content_type,
                "size": contents.len(),
                "blake3": blake3::hash(contents).to_hex().as_str(),
                "content_id": part.content_id(),
            })
        })
        .collect();
    object.insert("attachments".to_owned(), Value::Array(attachments));
    object.insert("size".to_owned(), json!(bytes.len()));
    Some(object)
}

/// Where an mbox reader stands.
#[derive(Debug, Default)]
pub(super) struct Mbox {
    /// The `From ` line that starts the next message, once read.
    next: Option<Vec<u8>>,
    /// Whether the start of the file was passed.
    started: bool,
}

fn is_separator(line: &[u8]) -> bool {
    line.starts_with(b"From ")
}

/// Reads on to the next message of an mbox file and copies it, its `From ` line first, into
/// `frame`; `false` at the end of the input. Every byte consumed is added to `offset`.
pub(super) fn next_message<R: BufRead>(
    reader: &mut R,
    mbox: &mut Mbox,
    frame: &mut Vec<u8>,
    limit: usize,
    offset: &mut u64,
) -> Result<bool, DecodeError> {
    let mut line = Vec::new();
    if !mbox.started {
        mbox.started = true;
        // Blank lines may stand before the first message; anything else means this is no mbox.
        loop {
            line.clear();
            let read = super::framing::read_line_within(reader, &mut line, limit)?;
            *offset += read as u64;
            if read == 0 {
                return Ok(false);
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            if !is_separator(&line) {
                return Err(error(
                    "the file is not an mbox: it does not begin with a `From ` line",
                ));
            }
            mbox.next = Some(std::mem::take(&mut line));
            break;
        }
    }
    let Some(from) = mbox.next.take() else {
        return Ok(false);
    };
    frame.extend_from_slice(&from);
    let mut blank_before = false;
    loop {
        line.clear();
        let read = super::framing::read_line_within(reader, &mut line, limit)?;
        if read == 0 {
            return Ok(true);
        }
        *offset += read as u64;
        if blank_before && is_separator(&line) {
            mbox.next = Some(std::mem::take(&mut line));
            return Ok(true);
        }
        blank_before = line.trim_ascii().is_empty();
        // mboxrd: `>From `, `>>From ` ... were escaped by the writer; one `>` comes off.
        let start = line.iter().take_while(|&&byte| byte == b'>').count();
        let unescaped = if start > 0 && line[start..].starts_with(b"From ") {
            &line[1..]
        } else {
            &line[..]
        };
        if frame.len() + unescaped.len() > limit {
            return Err(error(format!("a message is longer than {limit} bytes")));
        }
        frame.extend_from_slice(unescaped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages as Takeout writes them: Gmail's envelope line, its `X-GM-THRID` and
    /// `X-Gmail-Labels` headers, an encoded subject, a multipart body with an attachment, and a
    /// body line that begins with "From " (escaped).
    const MBOX: &[u8] = b"From 1773664405479613283@xxx Tue Aug 08 12:36:29 +0000 2023\r\nX-GM-THRID: 1773664405479613283\r\nX-Gmail-Labels: Inbox,Important,Fr\xc3\xbchling\r\nDelivered-To: jane.doe@gmail.com\r\nReceived: by 2002:a05:7000:1; Tue, 8 Aug 2023 05:36:30 -0700 (PDT)\r\nReceived: from mail.example.com; Tue, 8 Aug 2023 05:36:29 -0700 (PDT)\r\nFrom: \"Bob Example\" <bob@example.com>\r\nTo: Jane Doe <jane.doe@gmail.com>, team: a@example.com, b@example.com;\r\nSubject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\r\nDate: Tue, 8 Aug 2023 14:36:29 +0200\r\nMessage-ID: <CAB1234@mail.example.com>\r\nIn-Reply-To: <CAA0001@mail.gmail.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nSee you there.\r\n>From the minutes: nothing.\r\n--b1\r\nContent-Type: application/pdf; name=\"agenda.pdf\"\r\nContent-Disposition: attachment; filename=\"agenda.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n\r\nFrom 1773664405479613284@xxx Wed Aug 09 08:00:00 +0000 2023\r\nX-GM-THRID: 1773664405479613283\r\nX-Gmail-Labels: Sent\r\nFrom: Jane Doe <jane.doe@gmail.com>\r\nTo: bob@example.com\r\nSubject: Re: Caf\xc3\xa9 meeting\r\nDate: Wed, 9 Aug 2023 10:00:00 +0200\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n<p>From me: yes.</p>\r\n";

    fn frames(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = input;
        let (mut mbox, mut offset, mut frames) = (Mbox::default(), 0, Vec::new());
        loop {
            let mut frame = Vec::new();
            if !next_message(&mut reader, &mut mbox, &mut frame, 1 << 20, &mut offset).unwrap() {
                assert_eq!(offset, input.len() as u64);
                return frames;
            }
            frames.push(frame);
        }
    }

    #[test]
    fn an_mbox_file_becomes_messages_with_their_headers_addresses_and_attachments() {
        let frames = frames(MBOX);
        assert_eq!(frames.len(), 2);
        let first = decode(&frames[0]).unwrap();
        assert_eq!(first["envelope"]["sender"], "1773664405479613283@xxx");
        assert_eq!(first["envelope"]["date"], "Tue Aug 08 12:36:29 +0000 2023");
        assert_eq!(first["subject"], "Café meeting");
        assert_eq!(first["date"], "2023-08-08T14:36:29+02:00");
        assert_eq!(first["message_id"], "CAB1234@mail.example.com");
        assert_eq!(first["in_reply_to"], json!(["CAA0001@mail.gmail.com"]));
        assert_eq!(
            first["from"],
            json!([{"name": "Bob Example", "address": "bob@example.com"}])
        );
        assert_eq!(first["to"].as_array().unwrap().len(), 3, "{}", first["to"]);
        assert_eq!(first["headers"]["x-gm-thrid"], "1773664405479613283");
        assert_eq!(
            first["headers"]["x-gmail-labels"],
            "Inbox,Important,Frühling"
        );
        assert_eq!(first["headers"]["received"].as_array().unwrap().len(), 2);
        assert!(
            first["text"]
                .as_str()
                .unwrap()
                .contains("\nFrom the minutes"),
            "{}",
            first["text"]
        );
        assert_eq!(first["html"], Value::Null);
        let attachment = &first["attachments"][0];
        assert_eq!(attachment["name"], "agenda.pdf");
        assert_eq!(attachment["content_type"], "application/pdf");
        assert_eq!(attachment["size"], 9);
        assert_eq!(
            attachment["blake3"],
            blake3::hash(b"%PDF-1.4\n").to_hex().as_str()
        );
        let second = decode(&frames[1]).unwrap();
        assert_eq!(second["subject"], "Re: Café meeting");
        assert_eq!(second["html"], "<p>From me: yes.</p>\r\n");
    }

    #[test]
    fn a_from_line_without_a_blank_line_before_it_is_body_text() {
        let input = b"From a@b Mon Jan 1 00:00:00 2024\nSubject: x\n\nhello\nFrom here on\n";
        assert_eq!(frames(input).len(), 1);
        assert!(
            decode(&frames(input)[0]).unwrap()["text"]
                .as_str()
                .unwrap()
                .contains("From here on")
        );
    }

    #[test]
    fn what_is_not_an_mbox_is_refused_and_a_message_over_the_limit_too() {
        let mut reader = &b"Subject: no envelope\n\nbody\n"[..];
        let mut frame = Vec::new();
        let result = next_message(
            &mut reader,
            &mut Mbox::default(),
            &mut frame,
            1 << 20,
            &mut 0,
        );
        assert!(result.unwrap_err().to_string().contains("not an mbox"));
        let big = format!("From a@b x\nSubject: big\n\n{}\n", "y".repeat(2000));
        let mut reader = big.as_bytes();
        let mut frame = Vec::new();
        assert!(next_message(&mut reader, &mut Mbox::default(), &mut frame, 1000, &mut 0).is_err());
        assert!(decode(b"").is_err());
    }
}
