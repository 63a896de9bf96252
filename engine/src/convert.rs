//! Typed conversions of raw values into model field values.

use std::borrow::Cow;
use std::str::FromStr;

use serde_json::{Number, Value};

use crate::spec::{Conversion, ValueKind};

/// How a field's raw value is converted: as the spec says, or as the field's type implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// The spec's explicit `as:`.
    Explicit(Conversion),
    /// The field's own type decides.
    ByKind(ValueKind),
}

impl Converter {
    /// Converts `value`; the error says what was found and what was expected. A value that is
    /// already what the conversion makes passes through as it came (a borrowed value stays
    /// borrowed).
    pub fn apply<'a>(self, value: Cow<'a, Value>) -> Result<Cow<'a, Value>, String> {
        let conversion = match self {
            Self::Explicit(conversion) => conversion,
            Self::ByKind(kind) => match kind {
                ValueKind::String => Conversion::String,
                ValueKind::Integer => Conversion::Integer,
                ValueKind::Number => Conversion::Number,
                ValueKind::Boolean => Conversion::Boolean,
                ValueKind::DateTime => Conversion::Rfc3339,
                ValueKind::Date => Conversion::Date,
                ValueKind::DateOrDateTime => match value.as_str() {
                    Some(text) if text.len() == 10 => Conversion::Date,
                    // A time with no zone stays one: none is invented for it.
                    Some(text) => match local_date_time(text) {
                        Some(local) => return Ok(Cow::Owned(local)),
                        None => Conversion::Rfc3339,
                    },
                    None => Conversion::Rfc3339,
                },
                ValueKind::Array if !value.is_array() => {
                    return Err(format!("{} is not a list", shown(&value)));
                }
                ValueKind::Object if !value.is_object() => {
                    return Err(format!("{} is not an object", shown(&value)));
                }
                ValueKind::Array | ValueKind::Object | ValueKind::Any => return Ok(value),
            },
        };
        if unchanged_by(conversion, &value) {
            return Ok(value);
        }
        convert(conversion, &value).map(Cow::Owned)
    }

    /// What [`Converter::apply`] gives back (a test holds the two together; the matches name
    /// every case so that a new one has to be decided here).
    pub fn output(self) -> Output {
        match self {
            Self::Explicit(conversion) => match conversion {
                Conversion::String
                | Conversion::HtmlUnescape
                | Conversion::HtmlText
                | Conversion::Base64Text
                | Conversion::Latin1Utf8 => Output::Text,
                Conversion::Integer | Conversion::ClockDuration => Output::Integer,
                Conversion::Number | Conversion::Amount => Output::Number,
                Conversion::Boolean => Output::Boolean,
                Conversion::EpochSeconds
                | Conversion::EpochMillis
                | Conversion::Rfc3339
                | Conversion::Rfc2822
                | Conversion::Timestamp => Output::DateTime,
                Conversion::Date => Output::Date,
                Conversion::Addresses | Conversion::Address | Conversion::Json => Output::Any,
            },
            Self::ByKind(kind) => match kind {
                ValueKind::String => Output::Text,
                ValueKind::Integer => Output::Integer,
                ValueKind::Number => Output::Number,
                ValueKind::Boolean => Output::Boolean,
                ValueKind::DateTime => Output::DateTime,
                ValueKind::Date => Output::Date,
                ValueKind::DateOrDateTime
                | ValueKind::Array
                | ValueKind::Object
                | ValueKind::Any => Output::Any,
            },
        }
    }

    /// Whether the value is a list of what the field's path selects, all of it (a list field,
    /// or a conversion that makes one), rather than its first node.
    pub fn gathers(self) -> bool {
        match self {
            Self::ByKind(kind) => kind == ValueKind::Array,
            Self::Explicit(conversion) => conversion.output() == ValueKind::Array,
        }
    }

    /// Whether a string passes through [`Converter::apply`] as it came (a test holds the two
    /// together; the matches name every case so that a new one has to be decided here).
    pub fn keeps_text(self) -> bool {
        match self {
            Self::Explicit(conversion) => match conversion {
                Conversion::String | Conversion::Json => true,
                Conversion::Integer
                | Conversion::Number
                | Conversion::Boolean
                | Conversion::EpochSeconds
                | Conversion::EpochMillis
                | Conversion::Rfc3339
                | Conversion::Rfc2822
                | Conversion::Timestamp
                | Conversion::Date
                | Conversion::HtmlUnescape
                | Conversion::HtmlText
                | Conversion::Base64Text
                | Conversion::Latin1Utf8
                | Conversion::ClockDuration
                | Conversion::Amount
                | Conversion::Addresses
                | Conversion::Address => false,
            },
            Self::ByKind(kind) => match kind {
                ValueKind::String | ValueKind::Any => true,
                ValueKind::Integer
                | ValueKind::Number
                | ValueKind::Boolean
                | ValueKind::DateTime
                | ValueKind::Date
                | ValueKind::DateOrDateTime
                | ValueKind::Array
                | ValueKind::Object => false,
            },
        }
    }
}

/// What every value a converter gives back is, whatever it was given (a converter gives back
/// `null` only for `address`/`addresses` that found no mailbox, which leaves the field out): a
/// field whose schema takes every value of that kind needs no check of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// A string.
    Text,
    /// An RFC 3339 date-time in UTC, years 0000 to 9999.
    DateTime,
    /// A `YYYY-MM-DD` date, years 0000 to 9999.
    Date,
    /// A whole number that fits in 64 bits.
    Integer,
    /// A number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// Any value: only a check can tell.
    Any,
}

impl Output {
    /// Every kind.
    pub const ALL: &[Output] = &[
        Self::Text,
        Self::DateTime,
        Self::Date,
        Self::Integer,
        Self::Number,
        Self::Boolean,
        Self::Any,
    ];
}

/// Whether `conversion` gives `value` back as it is.
fn unchanged_by(conversion: Conversion, value: &Value) -> bool {
    match (conversion, value) {
        (Conversion::Json, _)
        | (Conversion::String, Value::String(_))
        | (Conversion::Number, Value::Number(_))
        | (Conversion::Boolean, Value::Bool(_)) => true,
        (Conversion::Integer, Value::Number(number)) => number.is_i64(),
        _ => false,
    }
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().map(str::trim)
}

/// `text` repaired when it is UTF-8 written as Latin-1 (every character below U+0100, and the
/// bytes they make valid UTF-8 with some multi-byte character); else `text` as it is.
pub fn latin1_utf8(text: &str) -> String {
    if text.is_ascii() || text.chars().any(|c| u32::from(c) > 0xFF) {
        return text.to_owned();
    }
    let bytes: Vec<u8> = text.chars().map(|c| u32::from(c) as u8).collect();
    match String::from_utf8(bytes) {
        Ok(repaired) => repaired,
        Err(_) => text.to_owned(), // real Latin-1 text (`Café` written right stays `Café`)
    }
}

/// `H:MM:SS` or `MM:SS` as seconds.
fn clock_seconds(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    let mut seconds = 0_i64;
    for (index, part) in parts.iter().enumerate() {
        if !part.bytes().all(|byte| byte.is_ascii_digit()) || part.len() > 6 {
            return None;
        }
        let value: i64 = part.parse().ok()?;
        // Minutes and seconds after the first part are below 60.
        if index > 0 && value >= 60 {
            return None;
        }
        seconds = seconds.checked_mul(60)?.checked_add(value)?;
    }
    Some(seconds)
}

/// A money text as a number (see `Conversion::Amount`).
fn amount(text: &str) -> Option<Value> {
    let negative = text.contains('-') || (text.starts_with('(') && text.ends_with(')'));
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    if !kept.bytes().any(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let last_mark = kept.rfind(['.', ',']);
    let decimal = last_mark.filter(|&at| {
        let mark = kept.as_bytes()[at];
        let only = kept.bytes().filter(|&byte| byte == mark).count() == 1;
        let other = if mark == b'.' { ',' } else { '.' };
        let digits_after = kept.len() - at - 1;
        kept.contains(other) || !(only && digits_after == 3)
    });
    let mut number = String::with_capacity(kept.len() + 1);
    if negative {
        number.push('-');
    }
    for (at, c) in kept.char_indices() {
        match c {
            '.' | ',' if Some(at) == decimal => number.push('.'),
            '.' | ',' => {}
            digit => number.push(digit),
        }
    }
    let parsed: f64 = number.parse().ok()?;
    serde_json::Number::from_f64(parsed).map(Value::Number)
}

/// A date-time read with a strftime `pattern` (a mapping's `format`), as RFC 3339 in UTC; a
/// pattern without an offset reads UTC.
pub fn with_format(pattern: &str, value: &Value) -> Result<Value, String> {
    let fail = || format!("{} is not a date-time as `{pattern}`", shown(value));
    let text = text(value).ok_or_else(fail)?;
    match instant_as(pattern, text) {
        Some(instant) => timestamp(Ok(instant)),
        // Text already in the standard form is unambiguous: a template may give it (a file's
        // own time) where the provider's text is missing.
        None => convert(Conversion::Rfc3339, value).map_err(|_| fail()),
    }
}

/// Apple Health's date-times (`2024-03-17 07:45:12 +0100`): two a record, millions a file.
const ZONED_SECONDS: &str = "%Y-%m-%d %H:%M:%S %z";

/// `text` read as [`ZONED_SECONDS`] says, when it has exactly that shape, without the general
/// strftime reader (which took a fifth of the mapping of an Apple Health export). `None` leaves
/// the text to that reader (another shape, a leap second, a date or offset that does not
/// exist), so that what this reads, it reads as jiff does (tested below).
fn zoned_seconds(text: &str) -> Option<jiff::Timestamp> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 25
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b' '
        && bytes[13] == b':'
        && bytes[16] == b':'
        && bytes[19] == b' '
        && matches!(bytes[20], b'+' | b'-');
    if !shaped {
        return None;
    }
    let number = |from: usize, to: usize| {
        bytes[from..to].iter().try_fold(0_i16, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i16::from(digit - b'0'))
        })
    };
    let small = |from: usize| number(from, from + 2).and_then(|value| i8::try_from(value).ok());
    let (second, offset_minutes) = (small(17)?, small(23)?);
    if second > 59 || offset_minutes > 59 {
        return None;
    }
    let civil = jiff::civil::DateTime::new(
        number(0, 4)?,
        small(5)?,
        small(8)?,
        small(11)?,
        small(14)?,
        second,
        0,
    )
    .ok()?;
    let sign = if bytes[20] == b'-' { -1 } else { 1 };
    let seconds = sign * (i32::from(small(21)?) * 3600 + i32::from(offset_minutes) * 60);
    jiff::tz::Offset::from_seconds(seconds)
        .ok()?
        .to_timestamp(civil)
        .ok()
}

/// The instant `text` writes as the strftime `pattern` says; a pattern without an offset reads
/// UTC.
pub fn instant_as(pattern: &str, text: &str) -> Option<jiff::Timestamp> {
    if pattern == ZONED_SECONDS
        && let Some(instant) = zoned_seconds(text)
    {
        return Some(instant);
    }
    let parsed = jiff::fmt::strtime::parse(pattern, text).ok()?;
    parsed.to_timestamp().ok().or_else(|| {
        parsed
            .to_datetime()
            .and_then(|civil| civil.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|zoned| zoned.timestamp())
            .ok()
    })
}

/// The text of an HTML fragment (Evernote's ENML, a mail's HTML body): tags dropped, the ends of
/// blocks (`p`, `div`, `li`, `br`, headings, rows) as line breaks, `script` and `style` left
/// out, entities decoded, runs of blank lines made one. A linear scan: no tree is built.
pub fn html_text(html: &str) -> String {
    const BLOCKS: &[&str] = &[
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "hr",
        "en-todo",
        "section",
        "article",
    ];
    let mut text = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut skipping: Option<&str> = None;
    while let Some(open) = rest.find('<') {
        if skipping.is_none() {
            text.push_str(&rest[..open]);
        }
        rest = &rest[open + 1..];
        // The tag runs to the next `>` outside quotes.
        let mut quote = None;
        let end = rest
            .char_indices()
            .find(|&(_, c)| match quote {
                Some(q) if c == q => {
                    quote = None;
                    false
                }
                Some(_) => false,
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    false
                }
                None => c == '>',
            })
            .map_or(rest.len(), |(at, _)| at);
        let tag = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(skipped) = skipping {
            if closing && name == skipped {
                skipping = None;
            }
            continue;
        }
        if !closing && (name == "script" || name == "style") && !tag.ends_with('/') {
            skipping = Some(if name == "script" { "script" } else { "style" });
            continue;
        }
        if BLOCKS.contains(&name.as_str()) && !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
    }
    if skipping.is_none() {
        text.push_str(rest);
    }
    let text = htmlize::unescape(&text);
    // Trailing spaces off each line; at most one blank line in a row.
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

/// Why a mapping's `format` is not a pattern that can read a date-time, if it is not.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    let sample = jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC);
    let written = jiff::fmt::strtime::format(pattern, &sample).err()?;
    Some(written.to_string())
}

/// Applies one conversion.
pub fn convert(conversion: Conversion, value: &Value) -> Result<Value, String> {
    let fail = |what: &str| Err(format!("{} is not {what}", shown(value)));
    if unchanged_by(conversion, value) {
        return Ok(value.clone());
    }
    match conversion {
        Conversion::Json => Ok(value.clone()),
        Conversion::String => match value {
            Value::Number(number) => Ok(Value::String(number.to_string())),
            Value::Bool(flag) => Ok(Value::String(flag.to_string())),
            _ => fail("text"),
        },
        Conversion::HtmlUnescape => match value {
            Value::String(text) => Ok(Value::String(htmlize::unescape(text).into_owned())),
            _ => fail("text"),
        },
        Conversion::HtmlText => match value {
            Value::String(text) => Ok(Value::String(html_text(text))),
            _ => fail("text"),
        },
        Conversion::Latin1Utf8 => match value {
            Value::String(text) => Ok(Value::String(latin1_utf8(text))),
            _ => fail("text"),
        },
        Conversion::Base64Text => match value {
            Value::String(text) => {
                // Either alphabet: the URL-safe one's two letters made standard.
                let standard = text.replace('-', "+").replace('_', "/");
                match crate::spec::Encoding::Base64.decode(&standard) {
                    Ok(bytes) => Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
                    Err(_) => fail("base64"),
                }
            }
            _ => fail("base64 text"),
        },
        Conversion::ClockDuration => match text(value).and_then(clock_seconds) {
            Some(seconds) => Ok(Value::from(seconds)),
            None => fail("a duration as H:MM:SS"),
        },
        Conversion::Amount => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => match text(value).and_then(amount) {
                Some(number) => Ok(number),
                None => fail("an amount of money"),
            },
        },
        Conversion::Integer => match value {
            Value::Number(number) => match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                    Ok(Value::from(float as i64))
                }
                _ => fail("a whole number"),
            },
            _ => match text(value).map(i64::from_str) {
                Some(Ok(number)) => Ok(Value::from(number)),
                _ => fail("a whole number"),
            },
        },
        Conversion::Number => match text(value)
            .and_then(|text| f64::from_str(text).ok())
            .and_then(Number::from_f64)
        {
            Some(number) => Ok(Value::Number(number)),
            None => fail("a number"),
        },
        Conversion::Boolean => match text(value).map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Ok(Value::Bool(true)),
            Some("false") => Ok(Value::Bool(false)),
            _ => fail("true or false"),
        },
        Conversion::EpochSeconds => {
            let seconds = match value {
                Value::Number(number) => number.as_f64(),
                _ => text(value).and_then(|text| f64::from_str(text).ok()),
            };
            let Some(seconds) = seconds.filter(|seconds| seconds.is_finite()) else {
                return fail("epoch seconds");
            };
            // Whole seconds and nanoseconds separately: `1512085950.000216` must not lose digits.
            let (whole, nanos) = match value
                .as_str()
                .map(str::trim)
                .and_then(|text| text.split_once('.'))
            {
                Some((whole, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => {
                    let digits: String = fraction
                        .chars()
                        .chain(std::iter::repeat('0'))
                        .take(9)
                        .collect();
                    (whole.parse::<i64>().ok(), digits.parse::<i32>().ok())
                }
                _ => (
                    Some(seconds.trunc() as i64),
                    Some(((seconds.fract()) * 1e9).round() as i32),
                ),
            };
            match (whole, nanos) {
                (Some(whole), Some(nanos)) => timestamp(jiff::Timestamp::new(whole, nanos)),
                _ => fail("epoch seconds"),
            }
        }
        Conversion::EpochMillis => {
            let millis = match value {
                Value::Number(number) => number
                    .as_i64()
                    .or_else(|| number.as_f64().map(|float| float as i64)),
                _ => text(value).and_then(|text| i64::from_str(text).ok()),
            };
            match millis {
                Some(millis) => timestamp(jiff::Timestamp::from_millisecond(millis)),
                None => fail("epoch milliseconds"),
            }
        }
        Conversion::Timestamp => {
            let epoch = match value {
                Value::Number(_) => true,
                _ => text(value).is_some_and(|text| {
                    let digits = text.trim().trim_start_matches('-');
                    !digits.is_empty()
                        && digits
                            .bytes()
                            .all(|byte| byte.is_ascii_digit() || byte == b'.')
                }),
            };
            if epoch {
                convert(Conversion::EpochSeconds, value)
            } else {
                convert(Conversion::Rfc3339, value)
                    .or_else(|_| convert(Conversion::Rfc2822, value))
                    .or_else(|_| fail("epoch seconds, an RFC 3339 date-time or an RFC 2822 date"))
            }
        }
        // No mailbox (a draft's empty sender, `undisclosed-recipients:;`, a bounce's name
        // alone): nothing, which leaves the field out, not a refused record.
        Conversion::Addresses => {
            let found = mailboxes(value)?;
            Ok(if found.is_empty() {
                Value::Null
            } else {
                Value::Array(found)
            })
        }
        Conversion::Address => Ok(mailboxes(value)?.into_iter().next().unwrap_or(Value::Null)),
        Conversion::Rfc3339 => match text(value).map(jiff::Timestamp::from_str) {
            Some(result) => timestamp(result),
            None => fail("an RFC 3339 date-time"),
        },
        Conversion::Rfc2822 => match text(value).map(jiff::fmt::rfc2822::parse) {
            Some(Ok(zoned)) => timestamp(Ok(zoned.timestamp())),
            _ => fail("an RFC 2822 date"),
        },
        Conversion::Date => match text(value).map(jiff::civil::Date::from_str) {
            Some(Ok(date)) if date.year() >= 0 => Ok(Value::String(date.to_string())),
            Some(Ok(_)) => fail(BEFORE_YEAR_ZERO),
            _ => fail("a date (YYYY-MM-DD)"),
        },
    }
}

/// `text` as a local date-time (`2024-03-22T18:00:00`, seconds optional, no offset), written
/// with its seconds; `None` for text with an offset or `Z`, or that is not a date-time.
fn local_date_time(text: &str) -> Option<Value> {
    let text = text.trim();
    let time = text.get(11..)?;
    // A zone named in brackets (`...T18:00:00[Europe/Paris]`) is not a floating time.
    if text.as_bytes().get(10) != Some(&b'T')
        || time.contains(['Z', 'z', '+', '['])
        || time.get(1..).is_some_and(|rest| rest.contains('-'))
    {
        return None;
    }
    let local: jiff::civil::DateTime = text.parse().ok()?;
    (local.year() >= 0).then(|| Value::String(local.strftime("%Y-%m-%dT%H:%M:%S%.f").to_string()))
}

/// The mailboxes `value` names, each as `{name, address}` (no `name` when there is none): an
/// address header's text, a mailbox object (Graph's `emailAddress`), or a list of either.
fn mailboxes(value: &Value) -> Result<Vec<Value>, String> {
    let mailbox = |name: Option<&str>, address: &str| {
        let mut object = serde_json::Map::new();
        if let Some(name) = name.map(str::trim).filter(|name| !name.is_empty()) {
            object.insert("name".to_owned(), Value::String(name.to_owned()));
        }
        object.insert(
            "address".to_owned(),
            Value::String(address.trim().to_owned()),
        );
        Value::Object(object)
    };
    let mut found = Vec::new();
    let mut add = |value: &Value| -> Result<(), String> {
        match value {
            Value::String(text) => found.extend(
                crate::decode::email::mailboxes(text)
                    .iter()
                    .map(|(name, address)| mailbox(name.as_deref(), address)),
            ),
            Value::Object(object) => {
                if let Some(address) = object
                    .get("address")
                    .and_then(Value::as_str)
                    .filter(|address| !address.trim().is_empty())
                {
                    found.push(mailbox(object.get("name").and_then(Value::as_str), address));
                }
            }
            Value::Null => {}
            other => return Err(format!("{} is not an address header", shown(other))),
        }
        Ok(())
    };
    match value {
        Value::Array(items) => items.iter().try_for_each(&mut add)?,
        other => add(other)?,
    }
    Ok(found)
}

/// RFC 3339 writes years 0000 to 9999; jiff reaches back to -9999 and writes such years with a
/// sign and six digits, which no date-time check takes.
const BEFORE_YEAR_ZERO: &str = "a date from year 0 on";

/// 0000-01-01T00:00:00Z.
const YEAR_ZERO: jiff::Timestamp = jiff::Timestamp::constant(-62_167_219_200, 0);

fn timestamp(result: Result<jiff::Timestamp, jiff::Error>) -> Result<Value, String> {
    match result {
        Ok(timestamp) if timestamp >= YEAR_ZERO => Ok(Value::String(timestamp.to_string())),
        Ok(timestamp) => Err(format!("{timestamp} is not {BEFORE_YEAR_ZERO}")),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Address headers as mail has them: quoted names with commas, bare addresses, RFC 2047
    /// encoded names, groups, an empty group; Graph's mailbox objects kept; no address, none.
    #[test]
    fn address_headers_become_names_and_addresses() {
        let addresses = |value: Value| convert(Conversion::Addresses, &value);
        assert_eq!(
            addresses(json!(
                r#""Lee, Ann" <ann@example.com>, bob@example.org, =?UTF-8?Q?Ren=C3=A9e?= <renee@example.fr>"#
            )),
            Ok(json!([
                {"name": "Lee, Ann", "address": "ann@example.com"},
                {"address": "bob@example.org"},
                {"name": "Renée", "address": "renee@example.fr"}
            ]))
        );
        assert_eq!(
            addresses(json!(
                "Team: carol@example.com, dan@example.com;, undisclosed-recipients:;"
            )),
            Ok(json!([{"address": "carol@example.com"}, {"address": "dan@example.com"}]))
        );
        // No address at all: nothing (the field is left out), not an error.
        assert_eq!(
            addresses(json!("undisclosed-recipients:;")),
            Ok(Value::Null)
        );
        assert_eq!(
            convert(Conversion::Address, &json!("\"Mail Delivery System\"")),
            Ok(Value::Null)
        );
        // Graph's recipients, a draft's empty sender, and several headers.
        assert_eq!(
            addresses(json!([
                {"name": "Ann Lee", "address": "ann@example.com"},
                {"name": "", "address": ""},
                "Bob <bob@example.org>"
            ])),
            Ok(json!([
                {"name": "Ann Lee", "address": "ann@example.com"},
                {"name": "Bob", "address": "bob@example.org"}
            ]))
        );
        assert_eq!(addresses(json!("")), Ok(Value::Null));
        assert!(addresses(json!(7)).is_err());
        let address = |value: Value| convert(Conversion::Address, &value);
        assert_eq!(
            address(json!("Ann Lee <ann@example.com>, bob@example.org")),
            Ok(json!({"name": "Ann Lee", "address": "ann@example.com"}))
        );
        assert_eq!(address(json!({"name": "", "address": ""})), Ok(Value::Null));
        // A `Date` header where a time is taken from either of two sources.
        assert_eq!(
            convert(
                Conversion::Timestamp,
                &json!("Tue, 1 Jul 2003 10:52:37 +0200")
            ),
            Ok(json!("2003-07-01T08:52:37Z"))
        );
        assert_eq!(
            convert(Conversion::Timestamp, &json!("1710668712.5")),
            Ok(json!("2024-03-17T09:45:12.5Z"))
        );
    }

    /// What the fixed-shape reader reads, it reads as jiff's strftime reader does: for the
    /// awkward cases and for a million texts of that shape with random digits (invalid dates,
    /// hours, leap seconds and offsets among them).
    #[test]
    fn zoned_seconds_read_as_strftime_reads_them() {
        let general = |text: &str| {
            jiff::fmt::strtime::parse(ZONED_SECONDS, text)
                .ok()
                .and_then(|parsed| parsed.to_timestamp().ok())
        };
        for text in [
            "2024-03-17 07:45:12 +0100",
            "2024-03-31 02:30:00 +0200",
            "2024-02-29 23:59:59 -0930",
            "2023-02-29 10:00:00 +0000",
            "2024-12-31 24:00:00 +0000",
            "2024-06-30 23:59:60 +0000",
            "0000-01-01 00:00:00 +0000",
            "9999-12-31 23:59:59 -2559",
            "2024-01-01 00:00:00 +2600",
            "2024-01-01 00:00:00 +0160",
            "2024-13-01 00:00:00 +0100",
            "2024-1-01 00:00:00 +01000",
            "2024-01-01T00:00:00 +0100",
            "2024-01-01 00:00:00 Z0100",
        ] {
            let fast = zoned_seconds(text);
            assert!(fast.is_none() || fast == general(text), "{text}: {fast:?}");
            assert_eq!(instant_as(ZONED_SECONDS, text), general(text), "{text}");
        }
        assert_eq!(
            zoned_seconds("2024-03-17 07:45:12 +0100").map(|instant| instant.to_string()),
            Some("2024-03-17T06:45:12Z".to_owned())
        );
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut digit = |most: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'0' + u8::try_from(state % most).unwrap_or(0))
        };
        let mut read = 0;
        for _ in 0..1_000_000 {
            let mut text = String::with_capacity(25);
            for at in 0..25 {
                text.push(match at {
                    4 | 7 => '-',
                    10 | 19 => ' ',
                    13 | 16 => ':',
                    20 => {
                        if digit(2) == '0' {
                            '+'
                        } else {
                            '-'
                        }
                    }
                    // First digits that make mostly valid fields, and invalid ones too
                    // (month 1x, day 3x, hour 2x, minute 6x, second 6x, offset 2x and x6).
                    5 => digit(2),
                    8 => digit(4),
                    11 | 21 => digit(3),
                    14 | 17 | 23 => digit(7),
                    _ => digit(10),
                });
            }
            let fast = zoned_seconds(&text);
            if fast.is_some() {
                read += 1;
                assert_eq!(fast, general(&text), "{text}");
            }
        }
        // Most are read fast: the test compares something.
        assert!(read > 100_000, "{read}");
    }

    /// `keeps_text` says exactly which conversions give every string back as it came.
    #[test]
    fn keeps_text_agrees_with_apply() {
        let texts = [
            "x",
            "4032",
            "true",
            "2026-01-02",
            "2026-01-02T10:00:00Z",
            "a &amp; b",
        ]
        .map(|text| json!(text));
        for converter in converters() {
            let kept = texts.iter().all(|text| {
                matches!(converter.apply(Cow::Borrowed(text)), Ok(Cow::Borrowed(same)) if same == text)
            });
            assert_eq!(converter.keeps_text(), kept, "{converter:?}");
        }
    }

    /// Every converter: each explicit conversion and each field kind's own.
    fn converters() -> impl Iterator<Item = Converter> {
        let conversions = [
            Conversion::String,
            Conversion::Integer,
            Conversion::Number,
            Conversion::Boolean,
            Conversion::EpochSeconds,
            Conversion::EpochMillis,
            Conversion::Rfc3339,
            Conversion::Rfc2822,
            Conversion::Timestamp,
            Conversion::Latin1Utf8,
            Conversion::ClockDuration,
            Conversion::Amount,
            Conversion::Date,
            Conversion::HtmlUnescape,
            Conversion::HtmlText,
            Conversion::Base64Text,
            Conversion::Json,
        ];
        let kinds = [
            ValueKind::String,
            ValueKind::Integer,
            ValueKind::Number,
            ValueKind::Boolean,
            ValueKind::DateTime,
            ValueKind::Date,
            ValueKind::DateOrDateTime,
            ValueKind::Array,
            ValueKind::Object,
            ValueKind::Any,
        ];
        conversions
            .map(Converter::Explicit)
            .into_iter()
            .chain(kinds.map(Converter::ByKind))
    }

    /// `output` says what `apply` gives back for every input, years before 0 included (which
    /// are refused: RFC 3339 cannot write them).
    #[test]
    fn output_agrees_with_apply() {
        let format = |name: &str| {
            jsonschema::options()
                .should_validate_formats(true)
                .build(&json!({"type": "string", "format": name}))
                .unwrap()
        };
        let (date_time, date) = (format("date-time"), format("date"));
        let inputs = [
            json!("x"),
            json!("4032"),
            json!(" 12 "),
            json!("12.5"),
            json!("-1e3"),
            json!("1e400"),
            json!("FALSE"),
            json!("2026-01-02"),
            json!("0000-01-01"),
            json!("-000001-01-01"),
            json!("2026-01-02T10:00:00Z"),
            json!("0000-01-01T00:00:00+01:00"),
            json!("-000001-12-31T00:00:00Z"),
            json!("Tue, 1 Jul 2003 10:52:37 +0200"),
            json!("a &amp; b"),
            json!("1512085950.000216"),
            json!("-62167219201"),
            json!(-62_167_219_201_i64),
            json!(0),
            json!(7.0),
            json!(1.5),
            json!(1e300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(true),
            json!(null),
            json!([]),
            json!({}),
        ];
        let mut given = std::collections::HashMap::<Output, usize>::new();
        for converter in converters() {
            let output = converter.output();
            for input in &inputs {
                let Ok(value) = converter.apply(Cow::Borrowed(input)) else {
                    continue;
                };
                let fits = match output {
                    Output::Text => value.is_string(),
                    Output::DateTime => value.is_string() && date_time.is_valid(&value),
                    Output::Date => value.is_string() && date.is_valid(&value),
                    Output::Integer => value.is_i64(),
                    Output::Number => value.is_number(),
                    Output::Boolean => value.is_boolean(),
                    Output::Any => true,
                };
                assert!(
                    fits,
                    "{converter:?} gave {value} for {input}, not {output:?}"
                );
                *given.entry(output).or_default() += 1;
            }
        }
        for &output in Output::ALL {
            assert!(given.contains_key(&output), "{output:?}: {given:?}");
        }
        for input in ["0000-01-01T00:00:00+01:00", "-000001-12-31T00:00:00Z"] {
            let error = convert(Conversion::Rfc3339, &json!(input)).unwrap_err();
            assert!(error.contains("year 0"), "{error}");
        }
        assert!(convert(Conversion::Date, &json!("-000001-01-01")).is_err());
        assert!(convert(Conversion::EpochSeconds, &json!(-62_167_219_201_i64)).is_err());
        assert_eq!(
            convert(Conversion::EpochSeconds, &json!(-62_167_219_200_i64)).unwrap(),
            json!("0000-01-01T00:00:00Z")
        );
    }

    #[test]
    fn int64_as_string_and_numbers() {
        assert_eq!(
            convert(Conversion::Integer, &json!("4032")).unwrap(),
            json!(4032)
        );
        assert_eq!(
            convert(Conversion::Integer, &json!(" 12 ")).unwrap(),
            json!(12)
        );
        assert_eq!(convert(Conversion::Integer, &json!(7.0)).unwrap(), json!(7));
        assert!(convert(Conversion::Integer, &json!("12.5")).is_err());
        assert_eq!(
            convert(Conversion::Number, &json!("-12.50")).unwrap(),
            json!(-12.5)
        );
    }

    #[test]
    fn epoch_values_as_numbers_and_strings() {
        assert_eq!(
            convert(Conversion::EpochMillis, &json!("1700000000123")).unwrap(),
            json!("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            convert(Conversion::EpochSeconds, &json!(1700000000)).unwrap(),
            json!("2023-11-14T22:13:20Z")
        );
        // Slack's `ts`: microseconds kept exactly.
        assert_eq!(
            convert(Conversion::EpochSeconds, &json!("1512085950.000216")).unwrap(),
            json!("2017-11-30T23:52:30.000216Z")
        );
        assert!(convert(Conversion::EpochMillis, &json!("soon")).is_err());
    }

    #[test]
    fn rfc3339_with_and_without_fractions_and_offsets() {
        assert_eq!(
            convert(Conversion::Rfc3339, &json!("2024-03-01T10:00:00Z")).unwrap(),
            json!("2024-03-01T10:00:00Z")
        );
        assert_eq!(
            convert(
                Conversion::Rfc3339,
                &json!("2024-03-01T10:00:00.123456789Z")
            )
            .unwrap(),
            json!("2024-03-01T10:00:00.123456789Z")
        );
        assert_eq!(
            convert(Conversion::Rfc3339, &json!("2024-03-01T12:00:00+02:00")).unwrap(),
            json!("2024-03-01T10:00:00Z")
        );
        assert!(convert(Conversion::Rfc3339, &json!("2024-03-01")).is_err());
    }

    #[test]
    fn latin1_mangled_text_is_repaired_and_other_text_kept() {
        for (mangled, meant) in [
            ("Caf\u{00c3}\u{00a9}", "Café"),
            (
                "\u{00f0}\u{009f}\u{0098}\u{008a} Sommer in K\u{00c3}\u{00b6}ln",
                "😊 Sommer in Köln",
            ),
            ("plain ascii", "plain ascii"),
            ("Café", "Café"), // already right: Latin-1 `é` alone is not UTF-8
            ("日本", "日本"), // characters past Latin-1: not mangled
        ] {
            assert_eq!(
                convert(Conversion::Latin1Utf8, &json!(mangled)).unwrap(),
                json!(meant),
                "{mangled}"
            );
        }
        assert!(convert(Conversion::Latin1Utf8, &json!(3)).is_err());
    }

    #[test]
    fn clock_durations_become_seconds() {
        for (clock, seconds) in [
            ("00:42:17", 2537),
            ("1:02:03", 3723),
            ("05:09", 309),
            ("100:00:00", 360_000),
        ] {
            assert_eq!(
                convert(Conversion::ClockDuration, &json!(clock)).unwrap(),
                json!(seconds),
                "{clock}"
            );
        }
        for wrong in ["", "12", "1:60:00", "1::00", "a:bc", "-1:00", "1:00:00:00"] {
            assert!(
                convert(Conversion::ClockDuration, &json!(wrong)).is_err(),
                "{wrong}"
            );
        }
    }

    #[test]
    fn money_texts_become_numbers() {
        for (text, number) in [
            ("$1,234.56", json!(1234.56)),
            ("EUR 9.99", json!(9.99)),
            ("12,50 €", json!(12.5)),
            ("1.234,56 €", json!(1234.56)),
            ("1,234", json!(1234.0)),
            ("-$3.10", json!(-3.1)),
            ("($3.10)", json!(-3.1)),
            ("0", json!(0.0)),
        ] {
            assert_eq!(
                convert(Conversion::Amount, &json!(text)).unwrap(),
                number,
                "{text}"
            );
        }
        assert_eq!(
            convert(Conversion::Amount, &json!(4.5)).unwrap(),
            json!(4.5)
        );
        for wrong in ["", "free", "$"] {
            assert!(
                convert(Conversion::Amount, &json!(wrong)).is_err(),
                "{wrong}"
            );
        }
    }

    #[test]
    fn date_times_in_a_pattern() {
        let apple = "%Y-%m-%d %H:%M:%S %z";
        assert_eq!(
            with_format(apple, &json!("2024-03-17 07:45:12 +0100")).unwrap(),
            json!("2024-03-17T06:45:12Z")
        );
        assert_eq!(
            with_format(apple, &json!("2019-11-03 23:59:59 -0800")).unwrap(),
            json!("2019-11-04T07:59:59Z")
        );
        let x = "%a %b %d %H:%M:%S %z %Y";
        assert_eq!(
            with_format(x, &json!("Wed Mar 13 09:10:11 +0000 2024")).unwrap(),
            json!("2024-03-13T09:10:11Z")
        );
        // Without an offset in the pattern, the time is UTC.
        assert_eq!(
            with_format("%Y-%m-%d %H:%M:%S", &json!("2024-03-14 21:03:44")).unwrap(),
            json!("2024-03-14T21:03:44Z")
        );
        for wrong in [json!("2024-03-17 07:45:12"), json!("17.03.2024"), json!(12)] {
            assert!(with_format(apple, &wrong).is_err(), "{wrong}");
        }
        // Text already in RFC 3339 is taken as it is (a template's fallback to a file's time).
        assert_eq!(
            with_format(apple, &json!("2024-03-17T07:45:12+01:00")).unwrap(),
            json!("2024-03-17T06:45:12Z")
        );
        // Apple's privacy export: no zero padding, no space after the comma, 12-hour clock.
        assert_eq!(
            with_format(
                "%A %B %d,%Y %I:%M %p GMT",
                &json!("Thursday August 29,2013 7:08 PM GMT")
            )
            .unwrap(),
            json!("2013-08-29T19:08:00Z")
        );
        assert!(pattern_problem("%Y-%m-%d %").is_some(), "a dangling %");
        assert!(pattern_problem(apple).is_none());
    }

    #[test]
    fn html_becomes_text() {
        let enml = r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE en-note SYSTEM "http://xml.evernote.com/pub/enml2.dtd"><en-note><div>Mix &amp; rest 10 min, fry.</div><en-media hash="9d3f" type="image/png" style="--en-naturalWidth:1;" /><div><br/></div><ul><li>eggs</li><li>milk &lt;3&gt;</li></ul><style>p { color: red }</style><div title="a > b">end</div></en-note>"#;
        assert_eq!(
            html_text(enml),
            "Mix & rest 10 min, fry.\neggs\nmilk <3>\nend"
        );
        assert_eq!(html_text("plain"), "plain");
        assert_eq!(html_text("<p>unclosed <b"), "unclosed");
        assert_eq!(html_text(""), "");
    }

    #[test]
    fn rfc2822_dates_and_html() {
        assert_eq!(
            convert(
                Conversion::Rfc2822,
                &json!("Tue, 1 Jul 2003 10:52:37 +0200")
            )
            .unwrap(),
            json!("2003-07-01T08:52:37Z")
        );
        assert_eq!(
            convert(
                Conversion::HtmlUnescape,
                &json!("Tom &amp; Jerry&#39;s &quot;show&quot;")
            )
            .unwrap(),
            json!("Tom & Jerry's \"show\"")
        );
        // Gmail's base64url, unpadded, with the letters only URL-safe base64 has; standard
        // base64 too.
        assert_eq!(
            convert(Conversion::Base64Text, &json!("SGk_IMOpdMOp")).unwrap(),
            json!("Hi? été")
        );
        assert_eq!(
            convert(Conversion::Base64Text, &json!("SGk/IMOpdMOp")).unwrap(),
            json!("Hi? été")
        );
        assert!(convert(Conversion::Base64Text, &json!("not base64!")).is_err());
    }

    #[test]
    fn values_of_the_wanted_type_pass_through_uncopied() {
        let text = json!("Tokyo");
        let kept = Converter::ByKind(ValueKind::String).apply(Cow::Borrowed(&text));
        assert!(matches!(kept, Ok(Cow::Borrowed(_))), "{kept:?}");
        let count = json!(12);
        let kept = Converter::Explicit(Conversion::Integer).apply(Cow::Borrowed(&count));
        assert!(matches!(kept, Ok(Cow::Borrowed(_))), "{kept:?}");
        let digits = json!("12");
        let converted = Converter::Explicit(Conversion::Integer).apply(Cow::Borrowed(&digits));
        assert_eq!(converted.unwrap().into_owned(), count);
    }

    #[test]
    fn field_kinds_pick_a_default_conversion() {
        let all_day = Converter::ByKind(ValueKind::DateOrDateTime);
        assert_eq!(
            all_day
                .apply(Cow::Owned(json!("2026-03-01")))
                .unwrap()
                .into_owned(),
            json!("2026-03-01")
        );
        assert_eq!(
            all_day
                .apply(Cow::Owned(json!("2026-03-01T09:00:00-05:00")))
                .unwrap()
                .into_owned(),
            json!("2026-03-01T14:00:00Z")
        );
        // A floating time (Todoist's due `2024-03-22T18:00:00`) stays local; a time with an
        // offset or `Z` is an instant.
        for (given, kept) in [
            ("2024-03-22T18:00:00", "2024-03-22T18:00:00"),
            ("2024-03-22T18:00", "2024-03-22T18:00:00"),
            ("2024-03-22T18:00:00.250", "2024-03-22T18:00:00.25"),
            ("2024-03-22T18:00:00Z", "2024-03-22T18:00:00Z"),
            ("2024-03-22T18:00:00+01:00", "2024-03-22T17:00:00Z"),
            ("2024-03-22T18:00:00-05:00", "2024-03-22T23:00:00Z"),
        ] {
            assert_eq!(
                all_day
                    .apply(Cow::Owned(json!(given)))
                    .unwrap()
                    .into_owned(),
                json!(kept),
                "{given}"
            );
        }
        assert!(
            all_day
                .apply(Cow::Owned(json!("2024-02-30T18:00:00")))
                .is_err()
        );
        assert!(
            all_day
                .apply(Cow::Owned(json!("2024-03-22T18:00:00[Europe/Paris]")))
                .is_err()
        );
        assert_eq!(
            Converter::ByKind(ValueKind::String)
                .apply(Cow::Owned(json!(42)))
                .unwrap()
                .into_owned(),
            json!("42")
        );
        assert!(
            Converter::ByKind(ValueKind::Array)
                .apply(Cow::Owned(json!("a")))
                .is_err()
        );
    }
}
