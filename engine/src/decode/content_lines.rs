//! iCalendar (RFC 5545) and vCard (RFC 6350, and the 3.0 and 2.1 forms still exported): lines
//! of `[group.]NAME;PARAM=value:value`, folded at 75 octets, grouped in `BEGIN:X` … `END:X`
//! components. Google Calendar's and Contacts' Takeout files, Apple's and Outlook's exports.
//!
//! A document becomes an object of its components, each name to an array (a calendar holds many
//! events, an event may hold several alarms). A component is an object of its properties; each
//! property is `{"value": text}` with, where they are present, `params` (names upper-cased),
//! `group` (vCard's `item1.`), `parts` (the `;`-separated fields of a structured value: `N`,
//! `ADR`, `ORG`) and `list` (the `,`-separated values of a list: `CATEGORIES`, `EXDATE`).
//! Properties the format lets repeat (an event's attendees, a contact's e-mail addresses, every
//! `X-` extension) are arrays of those; the others are one object. Values are unescaped (`\n`,
//! `\,`, `\;`, `\\`), parameter values unquoted (and RFC 6868's `^n`, `^'`, `^^` decoded).
//! An iCalendar date or date-time (`DTSTART`, `DTEND`, `RECURRENCE-ID`, ...) also has it read:
//! `date` (`2024-03-20`) for a date, `time` (RFC 3339 with the offset in force then) and `utc`
//! (iCalendar's own UTC form, `20240206T100000Z`, as Google writes instance ids) for a UTC time
//! or one with a known `TZID`, and `local` (`2024-02-06T11:00:00`) for a floating time or one
//! whose `TZID` is not an IANA zone.
//!
//! The parser is ours, not a crate's: unfolding and splitting a line are a few lines, and the
//! crates looked at either hold a whole calendar in memory, drop text on invalid UTF-8, or
//! lose the space a fold falls on (see README "Dependencies").

use std::io::BufRead;

use serde_json::{Map, Value};

use super::DecodeError;

/// Components nest deeper than this in no real file (a calendar, an event, an alarm).
const MAX_DEPTH: usize = 16;

/// Which of the two formats: they differ only in which properties may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// iCalendar.
    Calendar,
    /// vCard.
    Card,
}

impl Dialect {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Calendar => "iCalendar",
            Self::Card => "vCard",
        }
    }

    /// Whether the property may occur more than once in a component (RFC 5545 §3.6, RFC 6350
    /// §6: cardinality `*` or `1*`); extensions (`X-`) and unknown names may.
    fn repeats(self, name: &str) -> bool {
        const CALENDAR_SINGLE: &[&str] = &[
            "CALSCALE",
            "METHOD",
            "PRODID",
            "VERSION",
            "CLASS",
            "COMPLETED",
            "CREATED",
            "DESCRIPTION",
            "DTEND",
            "DTSTAMP",
            "DTSTART",
            "DUE",
            "DURATION",
            "GEO",
            "LAST-MODIFIED",
            "LOCATION",
            "ORGANIZER",
            "PERCENT-COMPLETE",
            "PRIORITY",
            "RECURRENCE-ID",
            "RRULE",
            "SEQUENCE",
            "STATUS",
            "SUMMARY",
            "TRANSP",
            "UID",
            "URL",
            "ACTION",
            "REPEAT",
            "TRIGGER",
            "TZID",
            "TZOFFSETFROM",
            "TZOFFSETTO",
            "TZURL",
        ];
        const CARD_SINGLE: &[&str] = &[
            "BEGIN",
            "END",
            "VERSION",
            "KIND",
            "FN",
            "N",
            "BDAY",
            "ANNIVERSARY",
            "GENDER",
            "PRODID",
            "REV",
            "UID",
            "SORT-STRING",
            "CLASS",
        ];
        let single = match self {
            Self::Calendar => CALENDAR_SINGLE,
            Self::Card => CARD_SINGLE,
        };
        // vCard 2.1 and 3.0 call the formatted name `FN` too; every other name may repeat.
        !single.contains(&name)
    }
}

/// Properties whose value is `;`-separated fields (kept whole in `value`, split in `parts`).
const STRUCTURED: &[&str] = &[
    "N",
    "ADR",
    "ORG",
    "GENDER",
    "CLIENTPIDMAP",
    "REQUEST-STATUS",
    "RSTATUS",
    "GEO",
];

/// Properties whose value is a `,`-separated list (split in `list`).
const LISTS: &[&str] = &[
    "CATEGORIES",
    "NICKNAME",
    "EXDATE",
    "RDATE",
    "RESOURCES",
    "FREEBUSY",
];

fn error(dialect: Dialect, line: usize, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::new(dialect.name(), format!("line {line}: {reason}"))
}

/// The document in `body`: an object of its top-level components.
pub fn decode(dialect: Dialect, body: &[u8]) -> Result<Value, DecodeError> {
    // Each open component: its name and its object. The bottom one is the document.
    let mut stack: Vec<(String, Map<String, Value>)> = vec![(String::new(), Map::new())];
    for (number, line) in logical_lines(body) {
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        let property = parse_line(&line).map_err(|reason| error(dialect, number, reason))?;
        match property.name.as_str() {
            "BEGIN" => {
                if stack.len() > MAX_DEPTH {
                    return Err(error(
                        dialect,
                        number,
                        format!("components nest deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push((property.raw_value.trim().to_ascii_uppercase(), Map::new()));
            }
            "END" => {
                let name = property.raw_value.trim().to_ascii_uppercase();
                let Some((open, object)) = stack.pop().filter(|_| !stack.is_empty()) else {
                    return Err(error(dialect, number, format!("END:{name} ends nothing")));
                };
                if open != name {
                    return Err(error(
                        dialect,
                        number,
                        format!("END:{name} inside BEGIN:{open}"),
                    ));
                }
                // The document stays at the bottom of the stack (checked above).
                if let Some((_, parent)) = stack.last_mut() {
                    push(parent, name, Value::Object(object));
                }
            }
            _ if stack.len() == 1 => {
                return Err(error(
                    dialect,
                    number,
                    format!("the property {} stands outside any BEGIN", property.name),
                ));
            }
            name => {
                let (key, repeats) = (name.to_owned(), dialect.repeats(name));
                let timed = dialect == Dialect::Calendar && TIMES.contains(&name);
                let value = property.into_value(timed);
                if let Some((_, component)) = stack.last_mut() {
                    if repeats {
                        push(component, key, value);
                    } else {
                        // A property that may not repeat, repeated all the same: the first
                        // stands.
                        component.entry(key).or_insert(value);
                    }
                }
            }
        }
    }
    match stack.pop() {
        Some((_, document)) if stack.is_empty() => Ok(Value::Object(document)),
        Some((open, _)) => Err(DecodeError::new(
            dialect.name(),
            format!("BEGIN:{open} is never ended (truncated?)"),
        )),
        None => Ok(Value::Object(Map::new())),
    }
}

fn push(object: &mut Map<String, Value>, key: String, value: Value) {
    match object
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(items) => items.push(value),
        other => *other = Value::Array(vec![other.take(), value]),
    }
}

/// The logical lines of `body` (folds joined: a line break followed by a space or a tab is
/// removed with that one character, before the bytes are read as text, so that a fold inside a
/// multi-byte character joins it again), each with its first physical line's number.
fn logical_lines(body: &[u8]) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    let mut physical = body
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .peekable();
    std::iter::from_fn(move || {
        let (index, first) = physical.next()?;
        let mut line = first.to_vec();
        while let Some((_, next)) = physical.peek() {
            match next.first() {
                Some(b' ' | b'\t') => {
                    line.extend_from_slice(&next[1..]);
                    physical.next();
                }
                _ => break,
            }
        }
        Some((index + 1, line))
    })
}

/// One content line, split.
struct Property {
    group: Option<String>,
    name: String,
    params: Map<String, Value>,
    raw_value: String,
}

fn parse_line(line: &str) -> Result<Property, String> {
    let name_end = line
        .find([';', ':'])
        .ok_or("a content line has no `:` before its value")?;
    let (full_name, mut rest) = line.split_at(name_end);
    let (group, name) = match full_name.rsplit_once('.') {
        Some((group, name)) => (Some(group.to_owned()), name),
        None => (None, full_name),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    {
        return Err(format!("`{}` is not a property name", name.escape_debug()));
    }
    let mut params = Map::new();
    while let Some(after) = rest.strip_prefix(';') {
        let (param, remaining) = split_param(after)?;
        rest = remaining;
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_uppercase(), param_value(value)),
            // vCard 2.1: `TEL;HOME;VOICE:` is `TYPE=HOME,VOICE`.
            None => ("TYPE".to_owned(), param.trim().to_owned()),
        };
        match params.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                params.insert(key, Value::String(value));
            }
        }
    }
    let raw_value = rest
        .strip_prefix(':')
        .ok_or("a content line has no `:` before its value")?;
    Ok(Property {
        group,
        name: name.to_ascii_uppercase(),
        params,
        raw_value: raw_value.to_owned(),
    })
}

/// One parameter (up to the next `;` or `:` outside quotes) and what follows it.
fn split_param(text: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    for (index, character) in text.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ';' | ':' if !quoted => return Ok(text.split_at(index)),
            _ => {}
        }
    }
    Err("a content line ends inside its parameters (no `:`)".to_owned())
}

/// A parameter's value or values: quotes removed, RFC 6868's `^` escapes decoded, several
/// values joined with `,`.
fn param_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' => {}
            '^' => match characters.peek() {
                Some('n' | 'N') => {
                    out.push('\n');
                    characters.next();
                }
                Some('\'') => {
                    out.push('"');
                    characters.next();
                }
                Some('^') => {
                    out.push('^');
                    characters.next();
                }
                _ => out.push('^'),
            },
            other => out.push(other),
        }
    }
    out
}

/// A text value unescaped: `\n` and `\N` are line breaks; `\,`, `\;`, `\\` what they escape.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `text` split at each `separator` not escaped with `\`, each part unescaped.
fn split_unescaped(text: &str, separator: char) -> Vec<Value> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for character in text.chars() {
        if escaped {
            current.push('\\');
            current.push(character);
            escaped = false;
        } else if character == '\\' {
            escaped = true;
        } else if character == separator {
            parts.push(Value::String(unescape(&std::mem::take(&mut current))));
        } else {
            current.push(character);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(Value::String(unescape(&current)));
    parts
}

/// iCalendar's properties whose value is a date or a date-time (RFC 5545 §3.8.2, §3.8.7).
const TIMES: &[&str] = &[
    "DTSTART",
    "DTEND",
    "DUE",
    "RECURRENCE-ID",
    "COMPLETED",
    "CREATED",
    "DTSTAMP",
    "LAST-MODIFIED",
];

/// An iCalendar date or date-time read (see the module's documentation): its keys and values.
fn read_time(value: &str, zone: Option<&str>) -> Vec<(&'static str, String)> {
    let value = value.trim();
    if value.len() == 8 {
        return jiff::civil::Date::strptime("%Y%m%d", value)
            .map(|date| vec![("date", date.to_string())])
            .unwrap_or_default();
    }
    let (local, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(local) => (local, true),
        None => (value, false),
    };
    let Ok(civil) = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", local) else {
        return Vec::new();
    };
    let zone = match (utc, zone) {
        (true, _) => Some(jiff::tz::TimeZone::UTC),
        (false, Some(zone)) => jiff::tz::TimeZone::get(zone.trim_start_matches('/')).ok(),
        (false, None) => None,
    };
    match zone.and_then(|zone| civil.to_zoned(zone).ok()) {
        Some(zoned) => {
            let time = if utc {
                zoned.timestamp().to_string()
            } else {
                zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
            };
            let in_utc = zoned.timestamp().strftime("%Y%m%dT%H%M%SZ").to_string();
            vec![("time", time), ("utc", in_utc)]
        }
        None => vec![("local", civil.strftime("%Y-%m-%dT%H:%M:%S").to_string())],
    }
}

impl Property {
    fn into_value(self, timed: bool) -> Value {
        let mut object = Map::new();
        object.insert("value".to_owned(), Value::String(unescape(&self.raw_value)));
        if timed {
            let zone = self.params.get("TZID").and_then(Value::as_str);
            for (key, time) in read_time(&self.raw_value, zone) {
                object.insert(key.to_owned(), Value::String(time));
            }
        }
        if STRUCTURED.contains(&self.name.as_str()) {
            object.insert(
                "parts".to_owned(),
                Value::Array(split_unescaped(&self.raw_value, ';')),
            );
        }
        if LISTS.contains(&self.name.as_str()) {
            object.insert(
                "list".to_owned(),
                Value::Array(split_unescaped(&self.raw_value, ',')),
            );
        }
        if !self.params.is_empty() {
            object.insert("params".to_owned(), Value::Object(self.params));
        }
        if let Some(group) = self.group {
            object.insert("group".to_owned(), Value::String(group));
        }
        Value::Object(object)
    }
}

/// Reads on to the next component named `name` (`VEVENT`, `VCARD`), wherever it stands, and
/// copies its lines, nested components included, into `frame`; `false` at the end of the
/// input. Every byte consumed is added to `offset`.
pub(super) fn next_component<R: BufRead>(
    reader: &mut R,
    name: &str,
    frame: &mut Vec<u8>,
    limit: usize,
    offset: &mut u64,
) -> Result<bool, DecodeError> {
    let begin = format!("BEGIN:{name}");
    let end = format!("END:{name}");
    let mut depth = 0_usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = super::framing::read_line_within(reader, &mut line, limit)?;
        if read == 0 {
            return if depth == 0 {
                Ok(false)
            } else {
                Err(DecodeError::new(
                    "iCalendar/vCard",
                    format!("the input ends inside {begin} (truncated?)"),
                ))
            };
        }
        *offset += read as u64;
        let text = line.trim_ascii();
        let is = |marker: &str| {
            text.len() == marker.len() && text.eq_ignore_ascii_case(marker.as_bytes())
        };
        if is(&begin) {
            depth += 1;
        }
        if depth == 0 {
            continue;
        }
        if frame.len() + line.len() > limit {
            return Err(DecodeError::new(
                "iCalendar/vCard",
                format!("a component is longer than {limit} bytes"),
            ));
        }
        frame.extend_from_slice(&line);
        if is(&end) {
            depth -= 1;
            if depth == 0 {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Google Calendar's export, as Takeout writes it: CRLF, folded at 75 octets (one fold
    /// inside "é", one on a space), an all-day event and a weekly one with an exception date.
    const GOOGLE: &[u8] = b"BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nVERSION:2.0\r\nCALSCALE:GREGORIAN\r\nX-WR-CALNAME:jane.doe@gmail.com\r\nX-WR-TIMEZONE:Europe/Berlin\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20240301\r\nDTEND;VALUE=DATE:20240302\r\nUID:0r8b4v5m1k2c9d7e6f3a@google.com\r\nSUMMARY:Caf\xc3\r\n \xa9 day\\, all day\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;TZID=Europe/Berlin:20240206T110000\r\nRRULE:FREQ=WEEKLY;BYDAY=TU\r\nEXDATE;TZID=Europe/Berlin:20240213T110000,20240220T110000\r\nATTENDEE;CN=\"Doe, Jane\";PARTSTAT=ACCEPTED:mailto:jane.doe@gmail.com\r\nATTENDEE;CN=Bob:mailto:bob@example.com\r\nDESCRIPTION:Line one\\nLine\r\n  two\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-P0DT0H10M0S\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn a_calendar_becomes_components_and_properties() {
        let document = decode(Dialect::Calendar, GOOGLE).unwrap();
        let calendar = &document["VCALENDAR"][0];
        assert_eq!(calendar["X-WR-CALNAME"][0]["value"], "jane.doe@gmail.com");
        let [all_day, weekly] = calendar["VEVENT"].as_array().unwrap().as_slice() else {
            panic!("two events: {calendar}");
        };
        assert_eq!(
            all_day["DTSTART"],
            json!({"value": "20240301", "date": "2024-03-01", "params": {"VALUE": "DATE"}})
        );
        // Berlin is at +01:00 in February.
        assert_eq!(weekly["DTSTART"]["time"], "2024-02-06T11:00:00+01:00");
        assert_eq!(all_day["SUMMARY"]["value"], "Café day, all day");
        assert_eq!(weekly["RRULE"]["value"], "FREQ=WEEKLY;BYDAY=TU");
        assert_eq!(
            weekly["EXDATE"][0]["list"],
            json!(["20240213T110000", "20240220T110000"])
        );
        assert_eq!(weekly["ATTENDEE"][0]["params"]["CN"], "Doe, Jane");
        assert_eq!(weekly["ATTENDEE"][1]["value"], "mailto:bob@example.com");
        assert_eq!(weekly["DESCRIPTION"]["value"], "Line one\nLine two");
        assert_eq!(weekly["VALARM"][0]["TRIGGER"]["value"], "-P0DT0H10M0S");
    }

    #[test]
    fn a_contact_keeps_groups_structured_values_and_old_style_types() {
        let card = "BEGIN:VCARD\nVERSION:3.0\nFN:Jane Doe\nN:Doe;Jane;;;\nEMAIL;TYPE=INTERNET;TYPE=HOME:jane@example.com\nitem1.EMAIL;TYPE=INTERNET:jane@work.example\nitem1.X-ABLabel:Work\nTEL;CELL:+49 151 23456789\nADR;TYPE=HOME:;;Hauptstr. 1\\, Hof;Berlin;;10115;Germany\nCATEGORIES:myContacts,starred\nEND:VCARD\n";
        let document = decode(Dialect::Card, card.as_bytes()).unwrap();
        let contact = &document["VCARD"][0];
        assert_eq!(contact["FN"]["value"], "Jane Doe");
        assert_eq!(contact["N"]["parts"], json!(["Doe", "Jane", "", "", ""]));
        assert_eq!(contact["EMAIL"][0]["params"]["TYPE"], "INTERNET,HOME");
        assert_eq!(contact["EMAIL"][1]["group"], "item1");
        assert_eq!(contact["X-ABLABEL"][0]["group"], "item1");
        assert_eq!(contact["TEL"][0]["params"]["TYPE"], "CELL");
        assert_eq!(contact["ADR"][0]["parts"][2], "Hauptstr. 1, Hof");
        assert_eq!(
            contact["CATEGORIES"][0]["list"],
            json!(["myContacts", "starred"])
        );
    }

    #[test]
    fn times_are_read_in_their_zone() {
        let owned = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            pairs
                .iter()
                .map(|(key, value)| (*key, (*value).to_owned()))
                .collect()
        };
        assert_eq!(
            read_time("20240220T110000Z", None),
            owned(&[
                ("time", "2024-02-20T11:00:00Z"),
                ("utc", "20240220T110000Z")
            ])
        );
        assert_eq!(
            read_time("20240701T090000", Some("America/New_York")),
            owned(&[
                ("time", "2024-07-01T09:00:00-04:00"),
                ("utc", "20240701T130000Z")
            ])
        );
        // Outlook's Windows zone names and floating times stay local.
        assert_eq!(
            read_time("20240701T090000", Some("W. Europe Standard Time")),
            owned(&[("local", "2024-07-01T09:00:00")])
        );
        assert_eq!(
            read_time("20240301", None),
            owned(&[("date", "2024-03-01")])
        );
        assert!(read_time("20240230", None).is_empty());
        assert!(read_time("tomorrow", None).is_empty());
    }

    #[test]
    fn broken_input_names_its_line() {
        for (input, expected) in [
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VCALENDAR\n", "line 3"),
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\n", "never ended"),
            ("SUMMARY:outside\n", "outside any BEGIN"),
            ("BEGIN:VEVENT\nno colon here\nEND:VEVENT\n", "line 2"),
            ("END:VEVENT\n", "ends nothing"),
        ] {
            let error = decode(Dialect::Calendar, input.as_bytes()).unwrap_err();
            assert!(error.to_string().contains(expected), "{input:?}: {error}");
        }
        let deep = "BEGIN:X\n".repeat(MAX_DEPTH + 1);
        assert!(decode(Dialect::Calendar, deep.as_bytes()).is_err());
    }

    #[test]
    fn components_are_framed_one_by_one() {
        let mut reader = GOOGLE;
        let mut offset = 0;
        let mut frames = Vec::new();
        loop {
            let mut frame = Vec::new();
            if !next_component(&mut reader, "VEVENT", &mut frame, 1 << 20, &mut offset).unwrap() {
                break;
            }
            frames.push(frame);
        }
        assert_eq!(frames.len(), 2);
        let second = decode(Dialect::Calendar, &frames[1]).unwrap();
        assert_eq!(
            second["VEVENT"][0]["VALARM"][0]["ACTION"]["value"],
            "DISPLAY"
        );
        assert_eq!(offset, GOOGLE.len() as u64);
        let truncated = &GOOGLE[..GOOGLE.len() - 60];
        let mut reader = truncated;
        let mut frame = Vec::new();
        assert!(next_component(&mut reader, "VEVENT", &mut frame, 1 << 20, &mut 0).unwrap());
        frame.clear();
        assert!(next_component(&mut reader, "VEVENT", &mut frame, 1 << 20, &mut 0).is_err());
    }
}
