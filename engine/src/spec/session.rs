//! A stream's `session`: a step the person completes before the stream can list (Google
//! Photos' Picker: they choose the photos on Google's page, the stream then lists what they
//! chose).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stream::Request;
use super::values::{Condition, Duration, JsonPath, Template};

/// A session opened before a stream lists: created, handed to the person as a URL, polled
/// until it is ready, then the stream's requests see it as `session` (`{{ session.id }}`),
/// and it is deleted once the run's downloads are done. A stream with a session runs only when
/// it is asked for by name (`connector sync --stream`, or the service's button), since it waits
/// for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The request that creates it (Picker: `POST /v1/sessions`). Templates see `config`.
    pub create: Request,
    /// Where its id is in the answer (`$.id`).
    pub id: JsonPath,
    /// The page the person opens, from the answer (`{{ answer.pickerUri }}/autoclose`).
    pub url: Template,
    /// The request that asks whether it is ready (`GET /v1/sessions/{{ session.id }}`).
    /// Templates see `session` and `config`.
    pub poll: Request,
    /// Whether the poll's answer says it is ready (`answer.mediaItemsSet`).
    pub ready: Condition,
    /// The wait between polls (default 5s, at least 1s).
    #[serde(default = "Session::default_interval")]
    pub interval: Duration,
    /// How long the person has (default 30m, at most 2h); then the stream fails, saying so.
    #[serde(default = "Session::default_timeout")]
    pub timeout: Duration,
    /// The request that deletes it once the run is done with it (`DELETE
    /// /v1/sessions/{{ session.id }}`). Templates see `session` and `config`.
    #[serde(default)]
    pub delete: Option<Request>,
}

impl Session {
    fn default_interval() -> Duration {
        Duration::from_secs(5)
    }

    fn default_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
}
