//! A mapped record, and the JSON text it is written as.
//!
//! Mapping writes each record's JSON text directly, field by field, instead of building a tree
//! and serializing it: the provenance first ([`Provenance`]), then the fields in the spec's
//! order. This module holds that writer and the record types every later stage (validation,
//! the run's writer, sinks) passes on.

use std::sync::Arc;

use serde_json::{Map, Value};

/// Who a record belongs to: filled into every record's provenance fields.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The JSON text every record of this provenance begins with, up to its provider id.
    opening: Vec<u8>,
}

impl Provenance {
    /// The provenance of records a connector (`platform`) imports for a user through one of
    /// their integrations.
    pub fn new(user_id: &str, integration_id: &str, platform: &str) -> Self {
        let mut opening = b"{".to_vec();
        for (key, value) in [
            ("user_id", user_id),
            ("source_integration_id", integration_id),
            ("source_platform", platform),
        ] {
            push_json(&mut opening, key);
            opening.push(b':');
            push_json(&mut opening, value);
            opening.push(b',');
        }
        push_json(&mut opening, "source_object_id");
        opening.push(b':');
        Self { opening }
    }

    /// The model fields of the record with provider id `id` and JSON text `json`, as a JSON
    /// object of their own: the text without the provenance fields, which a store keeps in
    /// columns (they were 265 of the 444 bytes of an Apple Health sample's JSON, stored twice).
    /// Text that mapping wrote with this provenance is cut, not parsed; any other is parsed
    /// and its provenance fields removed.
    pub fn fields_of(&self, id: &str, json: &str) -> String {
        let mut prefix = Vec::with_capacity(self.opening.len() + id.len() + 2);
        prefix.extend_from_slice(&self.opening);
        push_json_str(&mut prefix, id);
        match json.as_bytes().strip_prefix(prefix.as_slice()) {
            Some(b"}") => return "{}".to_owned(),
            Some([b',', ..]) => {
                let fields = &json[prefix.len() + 1..];
                let mut text = String::with_capacity(fields.len() + 1);
                text.push('{');
                text.push_str(fields);
                return text;
            }
            _ => {}
        }
        match serde_json::from_str::<Map<String, Value>>(json) {
            Ok(mut record) => {
                for name in crate::models::PROVENANCE_FIELDS {
                    record.shift_remove(name);
                }
                let mut text = Vec::with_capacity(json.len());
                push_json(&mut text, &record);
                into_text(text)
            }
            Err(_) => json.to_owned(),
        }
    }

    /// Starts the JSON text of the record with provider id `id`: the provenance fields, the
    /// object left open.
    pub(crate) fn open(&self, id: &str, capacity: usize) -> Vec<u8> {
        let mut json = Vec::with_capacity(capacity.max(self.opening.len() + id.len() + 3));
        json.extend_from_slice(&self.opening);
        push_json_str(&mut json, id);
        json
    }
}

/// Appends `text` as a JSON string. Most text has nothing to escape: a scan that the compiler
/// vectorizes finds that out far faster than serde_json's writer, which looks each byte up in a
/// table (it was a quarter of mapping's instructions), and only text with escapes goes to it.
pub(crate) fn push_json_str(json: &mut Vec<u8>, text: &str) {
    if has_escapes(text) {
        push_json(json, text);
    } else {
        json.reserve(text.len() + 2);
        json.push(b'"');
        json.extend_from_slice(text.as_bytes());
        json.push(b'"');
    }
}

/// Whether JSON text of `text` needs escapes: for a quote, a backslash or a control character
/// (the bytes serde_json escapes). No early exit, so that the loop vectorizes.
pub(crate) fn has_escapes(text: &str) -> bool {
    text.bytes().fold(false, |found, byte| {
        found | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    })
}

/// Appends `value` as JSON text, its text through [`push_json_str`].
pub(crate) fn push_value(json: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => push_json_str(json, text),
        value => push_json(json, value),
    }
}

/// Appends `value` as JSON text. Writing a `serde_json::Value` or a string into memory cannot
/// fail: its map keys are strings and a `Vec` takes every byte.
pub(crate) fn push_json<T: serde::Serialize + ?Sized>(json: &mut Vec<u8>, value: &T) {
    if let Err(error) = serde_json::to_writer(&mut *json, value) {
        unreachable!("JSON values serialize into memory: {error}");
    }
}

/// JSON text as a string.
pub(crate) fn into_text(json: Vec<u8>) -> String {
    match String::from_utf8(json) {
        Ok(json) => json,
        Err(_) => unreachable!("serde_json writes UTF-8"),
    }
}

/// Closes a record's JSON text.
pub(crate) fn close(mut json: Vec<u8>) -> String {
    json.push(b'}');
    into_text(json)
}

/// A record ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRecord {
    /// The provider's id for it.
    pub id: String,
    /// The model record as JSON text (an object), provenance first; for a tombstone, the
    /// provenance only. Mapping writes it directly, so that no tree of the record is built.
    json: String,
    /// The provider says it was deleted.
    pub deleted: bool,
}

impl MappedRecord {
    /// A record from a model object (provenance included).
    pub fn from_data(id: String, data: &Map<String, Value>, deleted: bool) -> Self {
        let mut json = Vec::new();
        push_json(&mut json, data);
        Self {
            id,
            json: into_text(json),
            deleted,
        }
    }

    /// A record from its JSON text (as mapping wrote it, or as a sink stored it).
    pub(crate) fn from_json(id: String, json: String, deleted: bool) -> Self {
        Self { id, json, deleted }
    }

    /// The model record as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The model record's JSON text, taken.
    pub fn into_json(self) -> String {
        self.json
    }

    /// The model record as a JSON object (it fails only for text a sink was handed from
    /// elsewhere).
    pub fn data(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// A stored record as the model record again: its provenance, from the columns the store keeps
/// it in, then its model fields (the stored JSON, whose own provenance fields, in rows written
/// before the store kept them apart, give way to the columns').
pub fn with_provenance(
    data: &str,
    user_id: &str,
    integration_id: &str,
    platform: &str,
    object_id: &str,
) -> Result<Map<String, Value>, serde_json::Error> {
    let fields: Map<String, Value> = serde_json::from_str(data)?;
    let mut record = Map::with_capacity(fields.len() + 4);
    for (name, value) in
        crate::models::PROVENANCE_FIELDS
            .iter()
            .zip([user_id, integration_id, platform, object_id])
    {
        record.insert((*name).to_owned(), Value::String(value.to_owned()));
    }
    for (name, value) in fields {
        if !crate::models::PROVENANCE_FIELDS.contains(&name.as_str()) {
            record.insert(name, value);
        }
    }
    Ok(record)
}

/// A record that could not be mapped or did not fit its model; kept with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The provider's id, when it could be read.
    pub id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The raw record as the provider sent it.
    pub raw: Value,
}

/// A mapped record in the form every sink stores: its JSON text, shared (so that binding it
/// hands the text to a database driver without a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The provider's id.
    pub id: Arc<str>,
    /// The model record as JSON, provenance included; for a tombstone, the provenance only.
    pub json: Arc<str>,
    /// The provider says it was deleted.
    pub deleted: bool,
}

impl From<MappedRecord> for StoredRecord {
    fn from(record: MappedRecord) -> Self {
        Self {
            id: Arc::from(record.id.as_str()),
            deleted: record.deleted,
            json: Arc::from(record.into_json()),
        }
    }
}

impl StoredRecord {
    /// The record as a mapped record again.
    pub fn mapped(&self) -> MappedRecord {
        MappedRecord::from_json(self.id.to_string(), self.json.to_string(), self.deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text is written as serde_json writes it, whichever character needs an escape and
    /// wherever it stands (the scan that finds escapes works in blocks of bytes: a character in
    /// the first, middle or last block, or in the tail after the last whole block, is found).
    #[test]
    fn text_is_written_as_serde_json_writes_it() {
        let mut characters: Vec<char> = (0..=0x7f_u8).map(char::from).collect();
        characters.extend(['\u{80}', 'ü', '\u{2028}', '😀']);
        for length in [0_usize, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
            for at in [0, length / 2, length.saturating_sub(1)] {
                for &character in &characters {
                    let mut text: Vec<char> = vec!['a'; length];
                    if length > 0 {
                        text[at] = character;
                    }
                    let text: String = text.into_iter().collect();
                    let mut written = Vec::new();
                    push_json_str(&mut written, &text);
                    assert_eq!(
                        String::from_utf8(written).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{character:?} at {at} of {length}"
                    );
                }
            }
        }
    }
}
