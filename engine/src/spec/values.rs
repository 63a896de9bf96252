//! Small value types of the spec language: durations, JSONPaths, templates, conditions, hosts.
//!
//! Each is a string in YAML. Their JSON Schemas carry an `x-expected` hint that the validator
//! shows when a value has the wrong shape, so an author reads "expected a duration such as
//! `15m`" instead of a regular expression.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time written as a whole number and a unit: `500ms`, `30s`, `15m`, `2h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a duration; expected a whole number and a unit (ms, s, m, h, d), such as `15m`"
)]
pub struct DurationError(String);

impl Duration {
    /// The duration as the standard library type.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// A duration of the given number of seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || DurationError(text.to_owned());
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (digits, unit) = text.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| invalid())?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        let millis = amount.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        Ok(Self(std::time::Duration::from_millis(millis)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let units = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        for (size, unit) in units {
            if millis != 0 && millis.is_multiple_of(size) {
                return write!(f, "{}{unit}", millis / size);
            }
        }
        write!(f, "{millis}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A length of time: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`).",
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h|d)$",
            "examples": ["30s", "15m", "1d"],
            "x-expected": "a duration such as `30s`, `15m` or `1d`"
        })
    }
}

/// An amount of data written as a whole number and a unit: `512KiB`, `64MiB`, `1GiB` (powers of
/// 1024), `500KB`, `10MB` (powers of 1000), or `B` for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a size; expected a whole number and a unit (B, KB, MB, GB, KiB, MiB, GiB), such as `64MiB`"
)]
pub struct ByteSizeError(String);

impl ByteSize {
    /// A size of `bytes` bytes.
    pub const fn bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// A size of `mebibytes` MiB.
    pub const fn mebibytes(mebibytes: u64) -> Self {
        Self(mebibytes << 20)
    }

    /// The size in bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

const BYTE_UNITS: [(&str, u64); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ByteSizeError(text.to_owned());
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (digits, unit) = text.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| invalid())?;
        let (_, size) = BYTE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        amount.checked_mul(*size).map(Self).ok_or_else(invalid)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in &BYTE_UNITS[..3] {
            if self.0 != 0 && self.0.is_multiple_of(*size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An amount of data: a whole number and a unit (`B`, `KB`, `MB`, `GB`, or `KiB`, `MiB`, `GiB` for powers of 1024).",
            "type": "string",
            "pattern": "^[0-9]+(B|KB|MB|GB|KiB|MiB|GiB)$",
            "examples": ["64MiB", "512KiB"],
            "x-expected": "a size such as `64MiB` or `512KiB`"
        })
    }
}

/// Declares a string newtype whose meaning is checked by the validator (compiled as a JSONPath,
/// a template, ...), with its JSON Schema description and the hint shown on a wrong shape.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $schema_name:literal, $description:literal, $expected:literal, [$($example:literal),*]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The text as written in the spec.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": $description,
                    "type": "string",
                    "minLength": 1,
                    "examples": [$($example),*],
                    "x-expected": $expected
                })
            }
        }
    };
}

checked_string!(
    /// An RFC 9535 JSONPath, such as `$.nextPageToken` or `$.mediaItems[*]`.
    JsonPath,
    "JsonPath",
    "An RFC 9535 JSONPath query, starting with `$`.",
    "a JSONPath such as `$.items[*]`",
    ["$.nextPageToken", "$.mediaItems[*]"]
);

checked_string!(
    /// A minijinja template; plain text is a template that renders itself.
    Template,
    "Template",
    "A minijinja template such as `{{ config.workspace_id }}`; plain text renders as itself. Besides minijinja's own filters: `times(n)` multiplies (`*` is refused), `epoch_seconds` (or `epoch_seconds('%Y-%m-%d %H:%M:%S %z')`) reads a date-time as seconds since 1970, `latin1_utf8` repairs Meta's mangled text.",
    "a template such as `{{ parent.calendar_id }}`",
    ["/v1/mediaItems", "Bearer {{ secrets.api_key }}"]
);

checked_string!(
    /// A minijinja expression that is true or false, such as `record.status == 'cancelled'`.
    Condition,
    "Condition",
    "A minijinja expression that evaluates to true or false.",
    "an expression such as `record.status == 'cancelled'`",
    ["record.status == 'cancelled'", "response.ok == false"]
);

checked_string!(
    /// An `https://` URL.
    Url,
    "Url",
    "An absolute https URL.",
    "an https URL",
    ["https://oauth2.googleapis.com/token"]
);

checked_string!(
    /// A host the connector may call: `api.example.com`, or `*.example.com` for its subdomains.
    HostPattern,
    "HostPattern",
    "A host name the connector may call, or `*.` and a domain for any of its subdomains.",
    "a host such as `api.example.com` or `*.example.com`",
    ["photoslibrary.googleapis.com", "*.googleusercontent.com"]
);

impl HostPattern {
    /// Whether `host` is this host, or one of its subdomains when the pattern starts with `*.`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self.0.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host.eq_ignore_ascii_case(&self.0),
        }
    }
}

/// Where a value comes from: a JSONPath into the record (text starting with `$`) or a template.
///
/// Used for map entries, the source id and parent fields, so one rule holds everywhere: a
/// string that starts with `$` is a JSONPath, any other string is a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Select a value from the record.
    Path(JsonPath),
    /// Render a template over the record and its context.
    Template(Template),
}

impl ValueSource {
    /// The text as written in the spec.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Path(path) => path.as_str(),
            Self::Template(template) => template.as_str(),
        }
    }
}

impl From<String> for ValueSource {
    fn from(text: String) -> Self {
        if text.starts_with('$') {
            Self::Path(JsonPath(text))
        } else {
            Self::Template(Template(text))
        }
    }
}

impl Serialize for ValueSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ValueSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

impl JsonSchema for ValueSource {
    fn schema_name() -> Cow<'static, str> {
        "ValueSource".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A JSONPath into the record when it starts with `$` (`$.id`), otherwise a template (`{{ record.kind }}-{{ record.id }}`).",
            "type": "string",
            "minLength": 1,
            "examples": ["$.id", "{{ parent.calendar_id }}/{{ record.id }}"],
            "x-expected": "a JSONPath such as `$.id` or a template"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_each_unit_and_print_back() {
        for (text, millis) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("15m", 900_000),
            ("2h", 7_200_000),
        ] {
            let duration: Duration = text.parse().unwrap();
            assert_eq!(duration.get().as_millis(), millis);
            assert_eq!(duration.to_string(), text);
        }
        assert_eq!("1d".parse::<Duration>().unwrap().get().as_secs(), 86_400);
    }

    #[test]
    fn durations_refuse_other_shapes() {
        for text in [
            "",
            "15",
            "m",
            "1.5h",
            "15 m",
            "-1s",
            "1w",
            "99999999999999999999d",
        ] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should not parse"
            );
        }
    }

    #[test]
    fn host_patterns_match_exact_hosts_and_subdomains_only() {
        let exact = HostPattern::from("api.example.com");
        assert!(exact.matches("api.example.com"));
        assert!(exact.matches("API.example.com"));
        assert!(!exact.matches("evil-api.example.com"));
        let wildcard = HostPattern::from("*.example.com");
        assert!(wildcard.matches("a.example.com"));
        assert!(wildcard.matches("a.b.example.com"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("badexample.com"));
    }

    #[test]
    fn value_sources_are_paths_when_they_start_with_a_dollar() {
        assert!(matches!(
            ValueSource::from("$.id".to_owned()),
            ValueSource::Path(_)
        ));
        assert!(matches!(
            ValueSource::from("{{ record.id }}".to_owned()),
            ValueSource::Template(_)
        ));
        assert!(matches!(
            ValueSource::from("photo".to_owned()),
            ValueSource::Template(_)
        ));
    }
}
