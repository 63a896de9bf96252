//! Hypernet models: the typed records every stream maps onto.
//!
//! Each model is a Rust struct (its JSON Schema is generated into `schemas/models/`), and every
//! model carries the same provenance fields, which the engine fills in and specs never map:
//! `user_id`, `source_integration_id`, `source_platform` (the connector id) and
//! `source_object_id` (the stream's `key`, else its `id`), and `provider_id` where a stream's
//! `key` is more than the provider's id.

mod catalog;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::spec::ValueKind;

pub use catalog::*;

/// The field that keeps the provider's own id beside a stream's `key` (see
/// [`crate::spec::Stream::key`]); the engine sets it, in the record's data.
pub const PROVIDER_ID: &str = "provider_id";

/// The provenance fields every model has; the engine sets them.
pub const PROVENANCE_FIELDS: [&str; 4] = [
    "user_id",
    "source_integration_id",
    "source_platform",
    "source_object_id",
];

/// What the engine and the validator know of one model field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field's name.
    pub name: &'static str,
    /// The kind of value it holds.
    pub kind: ValueKind,
    /// Whether every record must have it.
    pub required: bool,
    /// For a field with fixed choices (`media_type`), the allowed values.
    pub choices: &'static [&'static str],
    /// The field's documentation.
    pub description: &'static str,
}

/// The kind of value a Rust field type holds, read by the model macro.
pub trait FieldType {
    /// The kind of value.
    const KIND: ValueKind;
    /// Whether the field may be left out.
    const OPTIONAL: bool = false;
    /// The allowed values of a fixed-choice field.
    const CHOICES: &'static [&'static str] = &[];
}

macro_rules! field_kind {
    ($($ty:ty => $kind:ident),* $(,)?) => {
        $(impl FieldType for $ty {
            const KIND: ValueKind = ValueKind::$kind;
        })*
    };
}

field_kind!(
    String => String,
    i64 => Integer,
    f64 => Number,
    bool => Boolean,
    jiff::Timestamp => DateTime,
    jiff::civil::Date => Date,
    DateOrDateTime => DateOrDateTime,
    serde_json::Value => Any,
);

impl<T: FieldType> FieldType for Option<T> {
    const KIND: ValueKind = T::KIND;
    const OPTIONAL: bool = true;
    const CHOICES: &'static [&'static str] = T::CHOICES;
}

impl<T> FieldType for Vec<T> {
    const KIND: ValueKind = ValueKind::Array;
}

/// A calendar date (`2026-03-01`) for all-day values, an RFC 3339 date-time, or a local
/// date-time with no zone (`2026-03-01T18:00:00`: a floating time, such as a Todoist task due
/// at six wherever the person is, or an iCalendar time without `TZID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DateOrDateTime {
    /// An all-day value.
    Date(jiff::civil::Date),
    /// An instant.
    DateTime(jiff::Timestamp),
    /// A wall-clock time in no zone, kept as such: no zone is invented for it.
    Local(jiff::civil::DateTime),
}

/// What a local date-time looks like as stored: `YYYY-MM-DDTHH:MM:SS` with optional fractional
/// seconds, and no offset.
pub const LOCAL_DATE_TIME_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?$";

impl JsonSchema for DateOrDateTime {
    fn schema_name() -> Cow<'static, str> {
        "DateOrDateTime".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A calendar date (`2026-03-01`) for all-day values, an RFC 3339 date-time, or a local date-time with no zone (`2026-03-01T18:00:00`) for a floating time.",
            "type": "string",
            "anyOf": [
                { "format": "date" },
                { "format": "date-time" },
                { "pattern": LOCAL_DATE_TIME_PATTERN }
            ]
        })
    }
}

/// Declares a fixed-choice field type: a snake_case string enum that knows its choices.
macro_rules! choice_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($(#[doc = $vdoc:literal])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $($(#[doc = $vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl FieldType for $name {
            const KIND: ValueKind = ValueKind::String;
            const CHOICES: &'static [&'static str] = &[$($text),*];
        }
    };
}
pub(crate) use choice_enum;

/// Declares a model: its struct with the provenance fields and its field table.
macro_rules! model {
    ($(#[doc = $doc:literal])* $name:ident { $($(#[doc = $fdoc:literal])+ $field:ident : $ty:ty),* $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The Hypernet user who owns the record.
            pub user_id: String,
            /// The integration (connected account) the record was imported through.
            pub source_integration_id: String,
            /// The connector id of the service the record came from, such as `google_photos`.
            pub source_platform: String,
            /// The record's id at the source service: its identity among the stream's records
            /// (the stream's `key`, else its `id`).
            pub source_object_id: String,
            /// The source service's own id for the record, where its identity is more than that
            /// id (a Google Calendar event's id, unique in its calendar); absent where
            /// `source_object_id` is the service's id.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub provider_id: Option<String>,
            $($(#[doc = $fdoc])+ pub $field: $ty,)*
        }

        impl $name {
            /// The mapped fields (all but provenance), in declaration order.
            pub const FIELDS: &'static [FieldInfo] = &[$(FieldInfo {
                name: stringify!($field),
                kind: <$ty as FieldType>::KIND,
                required: !<$ty as FieldType>::OPTIONAL,
                choices: <$ty as FieldType>::CHOICES,
                description: concat!($($fdoc),+),
            }),*];
        }
    };
}
pub(crate) use model;

/// Declares [`ModelKind`] over the model structs.
macro_rules! model_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $model:ident, $text:literal;)*) => {
        /// Which Hypernet model a stream produces, as named in specs (`model: media`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ModelKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ModelKind {
            /// Every model, in catalog order.
            pub const ALL: &'static [ModelKind] = &[$(ModelKind::$variant),*];

            /// The name used in specs and storage.
            pub fn name(self) -> &'static str {
                match self {
                    $(ModelKind::$variant => $text,)*
                }
            }

            /// The mapped fields of the model.
            pub fn fields(self) -> &'static [FieldInfo] {
                match self {
                    $(ModelKind::$variant => $model::FIELDS,)*
                }
            }

            /// The model's JSON Schema.
            pub fn schema(self) -> Schema {
                match self {
                    $(ModelKind::$variant => schemars::schema_for!($model),)*
                }
            }
        }
    };
}

model_kinds! {
    /// A photo, video or audio file: [`Media`].
    Media => Media, "media";
    /// An email message: [`Email`].
    Email => Email, "email";
    /// A person in an address book: [`Contact`].
    Contact => Contact, "contact";
    /// A calendar event: [`Event`].
    Event => Event, "event";
    /// A file or document: [`Document`].
    Document => Document, "document";
    /// A social media post: [`Post`].
    Post => Post, "post";
    /// A note or page: [`Note`].
    Note => Note, "note";
    /// A to-do item: [`Task`].
    Task => Task, "task";
    /// A chat message: [`Message`].
    Message => Message, "message";
    /// A money movement: [`Transaction`].
    Transaction => Transaction, "transaction";
    /// A workout: [`Activity`].
    Activity => Activity, "activity";
    /// A GPS track: [`Route`].
    Route => Route, "route";
    /// A health measurement: [`HealthRecord`].
    HealthRecord => HealthRecord, "health_record";
    /// A track played: [`ListeningEvent`].
    ListeningEvent => ListeningEvent, "listening_event";
    /// Something saved, liked or bookmarked: [`SavedItem`].
    SavedItem => SavedItem, "saved_item";
    /// A photo album: [`Album`].
    Album => Album, "album";
    /// A film or episode watched: [`ViewingEvent`].
    ViewingEvent => ViewingEvent, "viewing_event";
    /// Something bought: [`Purchase`].
    Purchase => Purchase, "purchase";
    /// The user's own profile at a service: [`Profile`].
    Profile => Profile, "profile";
}

impl ModelKind {
    /// The field called `name`, if the model has one.
    pub fn field(self, name: &str) -> Option<&'static FieldInfo> {
        self.fields().iter().find(|field| field.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_tables_agree_with_the_generated_schemas() {
        for &model in ModelKind::ALL {
            let schema = serde_json::to_value(model.schema()).unwrap();
            let properties = schema["properties"].as_object().unwrap();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|name| name.as_str())
                .collect();
            assert_eq!(
                properties.len(),
                model.fields().len() + PROVENANCE_FIELDS.len() + 1,
                "{}: its fields, the provenance and `provider_id`",
                model.name()
            );
            for field in model.fields() {
                assert!(
                    properties.contains_key(field.name),
                    "{}.{}",
                    model.name(),
                    field.name
                );
                assert_eq!(
                    required.contains(&field.name),
                    field.required,
                    "{}.{}",
                    model.name(),
                    field.name
                );
                assert!(
                    !field.description.trim().is_empty(),
                    "{}.{} has no doc",
                    model.name(),
                    field.name
                );
            }
            assert!(
                model.fields().iter().any(|field| field.required),
                "{} requires nothing",
                model.name()
            );
        }
    }

    #[test]
    fn optional_and_choice_fields_are_described() {
        let media_type = ModelKind::Media.field("media_type").unwrap();
        assert!(media_type.required);
        assert_eq!(media_type.choices, ["photo", "video", "audio"]);
        let taken_at = ModelKind::Media.field("taken_at").unwrap();
        assert!(!taken_at.required);
        assert_eq!(taken_at.kind, ValueKind::DateTime);
    }
}
