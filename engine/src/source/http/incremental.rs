//! Incremental sync: what a stream remembers between runs and how it asks for only the changes.
//!
//! A cursor stream remembers the newest value of a record field and sends it (minus the
//! lookback) on the next run; a sync-token stream remembers the token its last page handed out.
//! A change-log stream asks for the log's position before its first (full) pass lists anything,
//! then reads the log from the kept position on later runs. All are remembered only when a pass
//! completes, so a pass that stops half-way repeats with the same value instead of skipping what
//! it had not reached.

use std::cmp::Ordering;

use serde_json::Value;

use crate::decode::document::{Node, token_text};
use crate::extract::CompiledPath;
use crate::source::http::listing::Listing;
use crate::source::http::request::Injection;
use crate::spec::{CursorFormat, Incremental, Paginate, ParamLocation, Template};
use crate::state::StreamState;
use crate::template::{BuildError, Templates};

/// A stream's `incremental`, compiled.
#[derive(Debug, Clone)]
pub enum CompiledIncremental {
    /// Remember the newest value of a record field.
    Cursor {
        /// The field.
        field: CompiledPath,
        /// The request parameter.
        param: String,
        /// Where it goes.
        location: ParamLocation,
        /// How it is written.
        format: CursorFormat,
        /// How far back to start.
        lookback: std::time::Duration,
    },
    /// Remember the last page's token.
    SyncToken {
        /// Where the token is on a page.
        token: CompiledPath,
        /// The request parameter.
        param: String,
        /// Where it goes.
        location: ParamLocation,
        /// Statuses that mean "the token expired; sync everything again".
        reset_on: Vec<u16>,
    },
    /// Remember the last page's pagination token and continue from it.
    PageToken {
        /// Where the token is on a page.
        token: CompiledPath,
        /// Statuses that mean "the token expired; sync everything again".
        reset_on: Vec<u16>,
    },
    /// Read a change log from the kept position.
    ChangeLog(Box<ChangeLog>),
}

/// A compiled `kind: change_log`.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    /// The request for the log's current position; its records path selects the position.
    pub start: Listing,
    /// How the log is read.
    pub log: Listing,
    /// Selects the ids of gone records on a log page.
    pub deleted_ids: Option<CompiledPath>,
    /// Where the next position is on the log's last page.
    pub token: CompiledPath,
    /// Statuses that mean "the position expired; sync everything again".
    pub reset_on: Vec<u16>,
}

impl CompiledIncremental {
    /// Compiles the spec's `incremental`; `connector_headers` go with a change log's requests.
    pub fn compile(
        spec: &Incremental,
        connector_headers: &indexmap::IndexMap<String, Template>,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        Ok(match spec {
            Incremental::Cursor {
                field,
                param,
                location,
                format,
                lookback,
            } => Self::Cursor {
                field: CompiledPath::compile(field.as_str())?,
                param: param.clone(),
                location: *location,
                format: *format,
                lookback: lookback.get(),
            },
            Incremental::SyncToken {
                token,
                param,
                location,
                reset_on,
            } => Self::SyncToken {
                token: CompiledPath::compile(token.as_str())?,
                param: param.clone(),
                location: *location,
                reset_on: reset_on.clone(),
            },
            Incremental::PageToken { token, reset_on } => Self::PageToken {
                token: CompiledPath::compile(token.as_str())?,
                reset_on: reset_on.clone(),
            },
            Incremental::ChangeLog {
                start,
                start_token,
                request,
                paginate,
                records,
                deleted_ids,
                token,
                reset_on,
            } => Self::ChangeLog(Box::new(ChangeLog {
                start: Listing::compile(
                    start,
                    &Paginate::None,
                    start_token,
                    connector_headers,
                    templates,
                )?,
                log: Listing::compile(request, paginate, records, connector_headers, templates)?,
                deleted_ids: deleted_ids
                    .as_ref()
                    .map(|path| CompiledPath::compile(path.as_str()))
                    .transpose()?,
                token: CompiledPath::compile(token.as_str())?,
                reset_on: reset_on.clone(),
            })),
        })
    }

    /// The change log a pass from `state` reads, when it reads one rather than listing
    /// everything: a change-log stream that kept a position.
    pub fn reads_log(&self, state: &StreamState) -> Option<&ChangeLog> {
        match self {
            Self::ChangeLog(log) if state.sync_token.is_some() => Some(log),
            _ => None,
        }
    }

    /// The change log whose position a full pass must ask for before it lists anything.
    pub fn needs_start(&self, state: &StreamState) -> Option<&ChangeLog> {
        match self {
            Self::ChangeLog(log) if state.sync_token.is_none() => Some(log),
            _ => None,
        }
    }

    /// The value a pass sends, from the state of the last completed pass; `None` on the first
    /// run (a full pass).
    pub fn injection(&self, state: &StreamState) -> Option<Injection> {
        match self {
            Self::Cursor {
                param,
                location,
                format,
                lookback,
                ..
            } => {
                let value = state.cursor.as_ref()?;
                Some(Injection {
                    location: *location,
                    name: param.clone(),
                    value: format_cursor(value, *format, *lookback),
                })
            }
            Self::SyncToken {
                param, location, ..
            } => Some(Injection {
                location: *location,
                name: param.clone(),
                value: Value::String(state.sync_token.clone()?),
            }),
            // Sent as the page token instead: see `continues_from`.
            Self::PageToken { .. } => None,
            // The log's own request carries `state.sync_token`.
            Self::ChangeLog(_) => None,
        }
    }

    /// `state` as templates see it: `state.cursor` (as sent, lookback applied) and
    /// `state.sync_token`.
    pub fn template_state(this: Option<&Self>, state: &StreamState) -> minijinja::Value {
        let cursor = match this {
            Some(Self::Cursor {
                format, lookback, ..
            }) => state
                .cursor
                .as_ref()
                .map(|value| format_cursor(value, *format, *lookback)),
            _ => None,
        };
        minijinja::context! {
            cursor => cursor.map(|cursor| minijinja::Value::from(minijinja::value::Serde(cursor))),
            sync_token => state.sync_token.clone(),
        }
    }

    /// The newer of `newest` and `record`'s cursor field.
    pub fn newest(&self, newest: Option<Value>, record: &Node<'_>) -> Option<Value> {
        let Self::Cursor { field, format, .. } = self else {
            return None;
        };
        let Some(value) = field.first_in(record).filter(|value| !value.is_null()) else {
            return newest;
        };
        let value = Value::from(value);
        match &newest {
            Some(current) if compare(current, &value, *format) != Ordering::Less => newest,
            _ => Some(value),
        }
    }

    /// Where a new pass starts other than at the first page: the remembered page token.
    pub fn continues_from(&self, state: &StreamState) -> Option<String> {
        match self {
            Self::PageToken { .. } => state.sync_token.clone(),
            _ => None,
        }
    }

    /// The token a page hands out, if this stream keeps one and the page has it.
    pub fn page_token(&self, body: &Node<'_>) -> Option<String> {
        let token = match self {
            Self::SyncToken { token, .. } | Self::PageToken { token, .. } => token,
            Self::ChangeLog(log) => &log.token,
            Self::Cursor { .. } => return None,
        };
        token_text(token.first_in(body)?)
    }

    /// Whether `status` means the remembered token expired and a full pass is needed.
    pub fn resets_on(&self, status: u16) -> bool {
        match self {
            Self::SyncToken { reset_on, .. } | Self::PageToken { reset_on, .. } => {
                reset_on.contains(&status)
            }
            Self::ChangeLog(log) => log.reset_on.contains(&status),
            Self::Cursor { .. } => false,
        }
    }

    /// The state after a pass that completed: the newer cursor, the page's token.
    pub fn completed(
        this: Option<&Self>,
        before: &StreamState,
        newest: Option<Value>,
        last_page_token: Option<String>,
    ) -> StreamState {
        let format = match this {
            Some(Self::Cursor { format, .. }) => *format,
            _ => CursorFormat::Raw,
        };
        let cursor = match (before.cursor.clone(), newest) {
            (Some(old), Some(new)) if compare(&old, &new, format) == Ordering::Greater => Some(old),
            (old, new) => new.or(old),
        };
        StreamState {
            cursor,
            sync_token: last_page_token.or_else(|| before.sync_token.clone()),
            resume: None,
            listed_all_at: before.listed_all_at,
        }
    }
}

/// A cursor value as an instant, when it is one.
fn instant(value: &Value, format: CursorFormat) -> Option<jiff::Timestamp> {
    match value {
        Value::String(text) => text.parse::<jiff::Timestamp>().ok().or_else(|| {
            // Whole, or with a fraction (Slack's `ts`: "1512085950.000216"), cut to the unit.
            text.parse::<i64>()
                .ok()
                .or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|number| number.is_finite() && number.abs() < 1e17)
                        .map(|number| number.floor() as i64)
                })
                .and_then(|number| epoch(number, format))
        }),
        Value::Number(number) => number.as_i64().and_then(|number| epoch(number, format)),
        _ => None,
    }
}

fn epoch(number: i64, format: CursorFormat) -> Option<jiff::Timestamp> {
    match format {
        CursorFormat::EpochMillis => jiff::Timestamp::from_millisecond(number).ok(),
        _ => jiff::Timestamp::from_second(number).ok(),
    }
}

fn compare(a: &Value, b: &Value, format: CursorFormat) -> Ordering {
    if let (Some(a), Some(b)) = (instant(a, format), instant(b, format)) {
        return a.cmp(&b);
    }
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
        // Numeric ids sent as strings (X's snowflake ids) compare as numbers, whatever their
        // length.
        (Value::String(a), Value::String(b)) => match (a.parse::<u128>(), b.parse::<u128>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.cmp(b),
        },
        _ => Ordering::Equal,
    }
}

/// Writes a remembered value the way the request wants it, `lookback` earlier.
fn format_cursor(value: &Value, format: CursorFormat, lookback: std::time::Duration) -> Value {
    if format == CursorFormat::Raw {
        return value.clone();
    }
    let Some(at) = instant(value, format) else {
        return value.clone();
    };
    let span = jiff::SignedDuration::try_from(lookback).unwrap_or_default();
    let at = at.checked_sub(span).unwrap_or(at);
    match format {
        CursorFormat::EpochSeconds => Value::from(at.as_second()),
        CursorFormat::EpochMillis => Value::from(at.as_millisecond()),
        CursorFormat::Rfc3339 | CursorFormat::Raw => Value::String(at.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursor_values_are_written_in_the_request_format_lookback_applied() {
        let hour = std::time::Duration::from_secs(3600);
        let at = json!("2026-01-02T03:04:05Z");
        assert_eq!(
            format_cursor(&at, CursorFormat::EpochSeconds, hour),
            json!(1_767_323_045 - 3600)
        );
        assert_eq!(
            format_cursor(&at, CursorFormat::Rfc3339, hour),
            json!("2026-01-02T02:04:05Z")
        );
        assert_eq!(
            format_cursor(
                &json!(1_767_323_045_000_i64),
                CursorFormat::EpochMillis,
                hour
            ),
            json!(1_767_319_445_000_i64)
        );
        assert_eq!(
            format_cursor(&json!("abc"), CursorFormat::Raw, hour),
            json!("abc")
        );
        // Slack's `ts`, seconds with a fraction, a day back: whole seconds.
        assert_eq!(
            format_cursor(
                &json!("1512104434.000490"),
                CursorFormat::EpochSeconds,
                hour * 24
            ),
            json!(1_512_018_034)
        );
    }

    #[test]
    fn the_newest_value_wins_by_time_not_by_text() {
        let incremental = CompiledIncremental::Cursor {
            field: CompiledPath::compile("$.at").unwrap(),
            param: "since".into(),
            location: ParamLocation::Query,
            format: CursorFormat::Rfc3339,
            lookback: std::time::Duration::ZERO,
        };
        // Same instant family, different offsets: text order would pick the wrong one.
        let newest = incremental.newest(
            None,
            &Node::from(&json!({"at": "2026-01-02T10:00:00+05:00"})),
        );
        let newest =
            incremental.newest(newest, &Node::from(&json!({"at": "2026-01-02T06:00:00Z"})));
        assert_eq!(newest, Some(json!("2026-01-02T06:00:00Z")));
        let newest = incremental.newest(newest, &Node::from(&json!({"other": 1})));
        assert_eq!(newest, Some(json!("2026-01-02T06:00:00Z")));
    }

    #[test]
    fn numeric_ids_sent_as_strings_compare_as_numbers() {
        let incremental = CompiledIncremental::Cursor {
            field: CompiledPath::compile("$.id").unwrap(),
            param: "since_id".into(),
            location: ParamLocation::Query,
            format: CursorFormat::Raw,
            lookback: std::time::Duration::ZERO,
        };
        let newest = incremental.newest(None, &Node::from(&json!({"id": "999999999999999999"})));
        let newest = incremental.newest(newest, &Node::from(&json!({"id": "1460323737035677698"})));
        assert_eq!(
            newest,
            Some(json!("1460323737035677698")),
            "longer is larger"
        );
    }
}
