//! The model definitions. Field names follow the design document's `Media` example: snake_case,
//! units in the name (`file_size_bytes`, `duration_seconds`), instants as `*_at`.

use jiff::Timestamp;
use jiff::civil::Date;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DateOrDateTime, FieldInfo, FieldType, choice_enum, model};
use crate::spec::ValueKind;

choice_enum! {
    /// What kind of media a [`Media`] record is.
    MediaType {
        /// A still image.
        Photo => "photo",
        /// A video.
        Video => "video",
        /// A sound recording.
        Audio => "audio",
    }
}

model! {
    /// A photo, video or audio file (Google Photos, Instagram media, Dropbox images).
    Media {
        /// Photo, video or audio.
        media_type: MediaType,
        /// Where the content can be fetched: a URL at the provider or a path in an archive.
        file_path: String,
        /// The file's size in bytes, where the provider says.
        file_size_bytes: Option<i64>,
        /// The MIME type, such as `image/jpeg`.
        mime_type: Option<String>,
        /// The file name or title.
        title: Option<String>,
        /// The caption or description.
        description: Option<String>,
        /// When the photo or video was taken.
        taken_at: Option<Timestamp>,
        /// Width in pixels.
        width: Option<i64>,
        /// Height in pixels.
        height: Option<i64>,
        /// Length of a video or recording, in seconds.
        duration_seconds: Option<f64>,
        /// The camera's maker.
        camera_make: Option<String>,
        /// The camera's model.
        camera_model: Option<String>,
        /// Where it was taken: degrees north (negative: south), from the file or the provider.
        latitude: Option<f64>,
        /// Where it was taken: degrees east (negative: west).
        longitude: Option<f64>,
        /// The provider's page for the item.
        url: Option<String>,
    }
}

/// A mailbox as an address header names it: a display name and an address, apart
/// (`"Ann Lee" <ann@example.com>` is `{"name": "Ann Lee", "address": "ann@example.com"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    /// The display name, where the header gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address.
    pub address: String,
}

impl super::FieldType for Mailbox {
    const KIND: ValueKind = ValueKind::Object;
}

model! {
    /// An email message (Gmail, Outlook).
    Email {
        /// When the message was sent: its `Date` header (Graph's `sentDateTime`), else when it
        /// arrived.
        sent_at: Timestamp,
        /// When it arrived in the mailbox (Gmail's `internalDate`, Graph's
        /// `receivedDateTime`), where the provider says.
        received_at: Option<Timestamp>,
        /// The conversation the message belongs to.
        thread_id: Option<String>,
        /// The subject line.
        subject: Option<String>,
        /// The sender (`From`), its name and address apart.
        from: Option<Mailbox>,
        /// The `To` recipients.
        to: Option<Vec<Mailbox>>,
        /// The `Cc` recipients.
        cc: Option<Vec<Mailbox>>,
        /// The `Bcc` recipients (a message the person sent, or a draft).
        bcc: Option<Vec<Mailbox>>,
        /// Where replies go (`Reply-To`), when not to the sender.
        reply_to: Option<Vec<Mailbox>>,
        /// A short plain-text excerpt.
        snippet: Option<String>,
        /// The plain-text body.
        body_text: Option<String>,
        /// The HTML body.
        body_html: Option<String>,
        /// Labels or folders.
        labels: Option<Vec<String>>,
        /// Whether the user has read it.
        is_read: Option<bool>,
        /// Size of the whole message in bytes.
        size_bytes: Option<i64>,
        /// How important the sender marked it: `low`, `normal` or `high` (Graph's
        /// `importance`; a message's `Importance` header).
        importance: Option<String>,
    }
}

model! {
    /// A person in an address book.
    Contact {
        /// The name as shown.
        display_name: String,
        /// Given (first) name.
        given_name: Option<String>,
        /// Family (last) name.
        family_name: Option<String>,
        /// Email addresses.
        emails: Option<Vec<String>>,
        /// Phone numbers.
        phones: Option<Vec<String>>,
        /// Company or organization.
        organization: Option<String>,
        /// Job title.
        job_title: Option<String>,
        /// Birthday.
        birthday: Option<Date>,
        /// A photo of the person.
        photo_url: Option<String>,
        /// Free-form notes.
        notes: Option<String>,
    }
}

model! {
    /// A calendar event.
    Event {
        /// The event's title; events without one have an empty title.
        title: String,
        /// When it starts: a date for all-day events, otherwise a date-time.
        start: DateOrDateTime,
        /// When it ends (exclusive for all-day events, as in iCalendar).
        end: Option<DateOrDateTime>,
        /// Whether it lasts whole days.
        all_day: Option<bool>,
        /// The IANA time zone it was created in.
        time_zone: Option<String>,
        /// Where it takes place.
        location: Option<String>,
        /// Details.
        description: Option<String>,
        /// The calendar it belongs to.
        calendar_id: Option<String>,
        /// The organizer's email or name.
        organizer: Option<String>,
        /// Attendees' emails.
        attendees: Option<Vec<String>>,
        /// confirmed, tentative or cancelled, as the provider says.
        status: Option<String>,
        /// The provider's page for the event.
        url: Option<String>,
        /// When the event last changed at the provider.
        updated_at: Option<Timestamp>,
        /// For one occurrence of a recurring event: the series' id at the provider (Google's
        /// `recurringEventId`, Graph's `seriesMasterId`).
        recurring_event_id: Option<String>,
        /// For one occurrence of a recurring event: when the series had it start (it may have
        /// been moved since): what tells a cancelled occurrence apart.
        original_start: Option<DateOrDateTime>,
        /// How the time shows to others: `free`, `busy`, `tentative`, `oof`,
        /// `workingElsewhere` (Graph's `showAs`; Google's transparency as `free` or `busy`).
        show_as: Option<String>,
    }
}

model! {
    /// A file, folder or document (Drive, Dropbox, OneDrive, Notion databases).
    Document {
        /// The file or document name.
        title: String,
        /// The MIME type; provider-native documents have the provider's own.
        mime_type: Option<String>,
        /// Size in bytes; native documents and folders often have none.
        file_size_bytes: Option<i64>,
        /// Whether this is a folder.
        is_folder: Option<bool>,
        /// The path in the user's storage.
        path: Option<String>,
        /// The provider's page for it.
        url: Option<String>,
        /// When it was created.
        created_at: Option<Timestamp>,
        /// When it last changed.
        modified_at: Option<Timestamp>,
        /// A content hash, where the provider gives one.
        content_hash: Option<String>,
        /// When the file last changed on the person's own device, as the provider was told
        /// (Dropbox's `client_modified`), where it differs from `modified_at`.
        client_modified_at: Option<Timestamp>,
    }
}

model! {
    /// A post on a social network (Instagram, X, Facebook, LinkedIn).
    Post {
        /// When it was published.
        published_at: Timestamp,
        /// The post's text or caption.
        text: Option<String>,
        /// The author's handle or name.
        author: Option<String>,
        /// The post's public URL.
        url: Option<String>,
        /// URLs of attached photos and videos.
        media_urls: Option<Vec<String>>,
        /// Likes or favourites.
        like_count: Option<i64>,
        /// Replies or comments.
        reply_count: Option<i64>,
        /// Shares, reposts or retweets.
        share_count: Option<i64>,
        /// The id of the post this replies to.
        in_reply_to: Option<String>,
    }
}

model! {
    /// A note or page (Notion, Evernote).
    Note {
        /// The title; untitled notes have an empty one.
        title: String,
        /// The body as plain text or Markdown.
        content: Option<String>,
        /// Tags.
        tags: Option<Vec<String>>,
        /// When it was created.
        created_at: Option<Timestamp>,
        /// When it last changed.
        updated_at: Option<Timestamp>,
        /// The provider's page for it.
        url: Option<String>,
        /// Whether it is archived or in the trash.
        archived: Option<bool>,
    }
}

model! {
    /// A to-do item (Todoist, Asana, Trello cards).
    Task {
        /// What is to be done.
        title: String,
        /// Details.
        description: Option<String>,
        /// Whether it is done.
        completed: Option<bool>,
        /// When it is due: a date, or a date-time for tasks with a time.
        due: Option<DateOrDateTime>,
        /// When it was completed.
        completed_at: Option<Timestamp>,
        /// When it was created.
        created_at: Option<Timestamp>,
        /// Priority, as the provider numbers it.
        priority: Option<i64>,
        /// The project or list it is in.
        project: Option<String>,
        /// Labels.
        labels: Option<Vec<String>>,
        /// The provider's page for it.
        url: Option<String>,
        /// The provider's id of its project or list.
        project_id: Option<String>,
        /// For a subtask: the provider's id of the task it belongs to.
        parent_id: Option<String>,
        /// How long it is planned to take, in minutes.
        duration_minutes: Option<f64>,
        /// The date it must be done by (beside `due`, when it is planned).
        deadline: Option<Date>,
    }
}

model! {
    /// A chat message (Slack, Teams, Messenger).
    Message {
        /// When it was sent.
        sent_at: Timestamp,
        /// The text; messages with only attachments have an empty text.
        text: String,
        /// The sender's id or name.
        sender: Option<String>,
        /// The channel or conversation.
        channel: Option<String>,
        /// The thread it belongs to.
        thread_id: Option<String>,
        /// When it was last edited.
        edited_at: Option<Timestamp>,
        /// URLs of attached files.
        attachment_urls: Option<Vec<String>>,
        /// How many replies its thread has, for a message that starts one.
        reply_count: Option<i64>,
        /// What kind of message it is when not a plain one, as the provider names it (Slack's
        /// `channel_join`, `bot_message`, `thread_broadcast`).
        subtype: Option<String>,
    }
}

model! {
    /// A money movement on an account (Plaid, Stripe).
    Transaction {
        /// The amount as the provider signs it (Plaid: positive is money out).
        amount: f64,
        /// The day it was booked.
        date: Date,
        /// The ISO 4217 currency code.
        currency: Option<String>,
        /// The description on the statement.
        description: Option<String>,
        /// The merchant's name.
        merchant: Option<String>,
        /// Categories, most general first.
        categories: Option<Vec<String>>,
        /// Whether it is still pending.
        pending: Option<bool>,
        /// The account at the provider.
        account_id: Option<String>,
        /// When it was authorized, where known to the second.
        authorized_at: Option<Timestamp>,
    }
}

model! {
    /// A workout (Strava, Fitbit, Google Fit).
    Activity {
        /// The sport, such as `Run` or `Ride`, as the provider names it.
        activity_type: String,
        /// When it started.
        started_at: Timestamp,
        /// The user's title for it.
        name: Option<String>,
        /// Time from start to end, in seconds.
        elapsed_seconds: Option<f64>,
        /// Time in motion, in seconds.
        moving_seconds: Option<f64>,
        /// Distance in metres.
        distance_meters: Option<f64>,
        /// Total climb in metres.
        elevation_gain_meters: Option<f64>,
        /// Energy in kilocalories.
        calories: Option<f64>,
        /// Average heart rate, beats per minute.
        average_heart_rate: Option<f64>,
        /// Highest heart rate, beats per minute.
        max_heart_rate: Option<f64>,
        /// The `source_object_id` of its GPS track, a [`Route`] record of the same integration.
        route_id: Option<String>,
        /// Who may see it, as the provider says (Strava: `everyone`, `followers_only`,
        /// `only_me`).
        visibility: Option<String>,
    }
}

/// One point of a [`Route`]: where and when, and what the device measured there. GPX 1.1's
/// `trkpt` with the extensions devices write (Apple's `speed`, `course`, `hAcc`, `vAcc`;
/// Garmin's `hr`, `cad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutePoint {
    /// Degrees north (negative: south), WGS 84.
    pub latitude: f64,
    /// Degrees east (negative: west), WGS 84.
    pub longitude: f64,
    /// When the device was there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Height above mean sea level, in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation_meters: Option<f64>,
    /// Speed, in metres a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_meters_per_second: Option<f64>,
    /// Heading, in degrees clockwise from true north.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_degrees: Option<f64>,
    /// How far off the position may be, in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_accuracy_meters: Option<f64>,
    /// How far off the elevation may be, in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical_accuracy_meters: Option<f64>,
    /// Heart rate, beats per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heart_rate: Option<f64>,
    /// Cadence, steps or revolutions a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadence: Option<f64>,
    /// Other values the point carries, by name (a device's own extensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

model! {
    /// A GPS track: where a workout went (Apple Health's workout routes, a GPX file, Strava's
    /// streams).
    Route {
        /// When the first point was recorded.
        started_at: Timestamp,
        /// When the last point was recorded.
        ended_at: Option<Timestamp>,
        /// Its name, as the provider or device wrote it.
        name: Option<String>,
        /// The points, in the order they were recorded.
        points: Vec<RoutePoint>,
        /// The `source_object_id` of the workout it belongs to, an [`Activity`] record of the
        /// same integration, where the provider links them this way round.
        activity_id: Option<String>,
    }
}

model! {
    /// One health measurement (Apple Health, Fitbit, Withings).
    HealthRecord {
        /// What was measured, such as `heart_rate`, `steps` or `weight`.
        record_type: String,
        /// The measured value.
        value: f64,
        /// The unit, such as `count/min`, `count` or `kg`.
        unit: String,
        /// When it was measured, or when the measured period began.
        recorded_at: Timestamp,
        /// When the measured period ended.
        ended_at: Option<Timestamp>,
        /// The device or app that measured it.
        source_device: Option<String>,
        /// For a sample that is a label rather than a measure (a sleep stage, a stood hour,
        /// a mindful session), the label, as the provider names it
        /// (`HKCategoryValueSleepAnalysisAsleepCore`); `value` is then its length in seconds.
        category: Option<String>,
    }
}

model! {
    /// A track the user played (Spotify, Last.fm).
    ListeningEvent {
        /// The track's title.
        track_title: String,
        /// When it was played.
        played_at: Timestamp,
        /// The artists.
        artist_names: Option<Vec<String>>,
        /// The album.
        album: Option<String>,
        /// The track's length in milliseconds.
        duration_ms: Option<i64>,
        /// The provider's page for the track.
        track_url: Option<String>,
        /// The ISRC, where known.
        isrc: Option<String>,
        /// The provider's id of what was played (Spotify: `spotify:track:...` or
        /// `spotify:episode:...`).
        track_uri: Option<String>,
        /// How long it played, in milliseconds (the export's `ms_played`).
        played_ms: Option<i64>,
    }
}

model! {
    /// Something the user saved, liked or bookmarked to come back to (Spotify's liked songs,
    /// YouTube likes, read-later articles, bookmarked posts).
    SavedItem {
        /// The saved thing's title.
        title: String,
        /// When the user saved it; absent where the provider does not say (X's archive
        /// lists likes without their time).
        saved_at: Option<Timestamp>,
        /// What kind of thing it is, as the provider names it (`track`, `album`, `video`,
        /// `article`).
        item_type: Option<String>,
        /// Who made it: the artists, the channel, the authors.
        creators: Option<Vec<String>>,
        /// What it is part of: the album, the series, the publication.
        collection: Option<String>,
        /// The provider's page for it.
        url: Option<String>,
        /// A standard identifier, where known (ISRC for recordings, ISBN, DOI).
        external_id: Option<String>,
    }
}

model! {
    /// A photo album or collection the user made (Google Photos, Facebook). Its photos are
    /// [`Media`] records.
    Album {
        /// The album's title.
        title: String,
        /// Its description.
        description: Option<String>,
        /// When it was made, or when the provider dates it.
        created_at: Option<Timestamp>,
        /// When it was last changed.
        updated_at: Option<Timestamp>,
        /// How many photos and videos it holds, where the provider says.
        item_count: Option<i64>,
        /// Whether it is shared with others (a link, or people invited).
        shared: Option<bool>,
        /// The `source_object_id`s of its photos and videos, [`Media`] records of the same
        /// integration, in the album's order.
        media_ids: Option<Vec<String>>,
        /// The provider's page for it.
        url: Option<String>,
    }
}

model! {
    /// A film or episode the user watched (Netflix, YouTube).
    ViewingEvent {
        /// The title watched.
        title: String,
        /// When it was watched.
        watched_at: Timestamp,
        /// The series, for an episode.
        series_title: Option<String>,
        /// Season number.
        season: Option<i64>,
        /// Episode number.
        episode: Option<i64>,
        /// How long was watched, in seconds.
        duration_seconds: Option<f64>,
        /// The provider's page for the title.
        url: Option<String>,
    }
}

model! {
    /// Something the user bought (Amazon, other shops).
    Purchase {
        /// What was bought.
        item_title: String,
        /// When it was ordered.
        purchased_at: Timestamp,
        /// How many.
        quantity: Option<i64>,
        /// The price paid in total.
        total_amount: Option<f64>,
        /// The ISO 4217 currency code.
        currency: Option<String>,
        /// The seller.
        merchant: Option<String>,
        /// The order it was part of.
        order_id: Option<String>,
        /// The product's page.
        url: Option<String>,
    }
}

model! {
    /// The user's own profile at a service.
    Profile {
        /// The name shown on the profile.
        display_name: String,
        /// The handle or user name.
        username: Option<String>,
        /// The email address on the account.
        email: Option<String>,
        /// The profile text.
        bio: Option<String>,
        /// The profile picture.
        avatar_url: Option<String>,
        /// The public profile page.
        profile_url: Option<String>,
        /// The location on the profile.
        location: Option<String>,
        /// When the account was created.
        created_at: Option<Timestamp>,
    }
}
