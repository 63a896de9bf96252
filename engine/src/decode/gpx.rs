//! GPX 1.0 and 1.1 (a workout route, a recorded track): the points, in order, with what the
//! device measured at each.
//!
//! A file becomes one document:
//!
//! ```json
//! {"version": "1.1", "creator": "Apple Health Export", "time": "2024-03-20T08:15:30Z",
//!  "name": "Route 2024-03-17 6:42pm",
//!  "tracks": [{"name": "Route 2024-03-17 6:42pm", "points": 1520}],
//!  "points": [{"latitude": 52.516275, "longitude": 13.376887, "elevation_meters": 34.5,
//!              "at": "2024-03-17T16:59:17Z", "speed_meters_per_second": 2.81,
//!              "course_degrees": 92.46, "horizontal_accuracy_meters": 4.72,
//!              "vertical_accuracy_meters": 3.28}],
//!  "started_at": "2024-03-17T16:59:17Z", "ended_at": "2024-03-17T17:42:09Z",
//!  "waypoints": [], "route_points": []}
//! ```
//!
//! `points` are the track points (`trkpt`) of every track and segment in document order, the
//! recorded path; `route_points` (`rtept`) a planned route's, `waypoints` (`wpt`) marked places.
//! Extensions are read by their local name whatever their namespace: Apple's unprefixed
//! `speed`, `course`, `hAcc`, `vAcc` and Garmin's `gpxtpx:hr`, `gpxtpx:cad` get the names
//! above; any other value a point carries is kept under `extensions`, so no fact is lost.
//!
//! Written on quick-xml rather than the `gpx` crate, which drops `<extensions>`: there Apple
//! keeps each point's speed, heading and accuracy.

use quick_xml::events::BytesStart;
use serde_json::{Map, Number, Value};

use super::DecodeError;
use super::xml::{Sink, walk};

/// The names points' well-known values get; the first names are those devices write.
const KNOWN: &[(&str, &str)] = &[
    ("ele", "elevation_meters"),
    ("time", "at"),
    ("speed", "speed_meters_per_second"),
    ("course", "course_degrees"),
    ("hAcc", "horizontal_accuracy_meters"),
    ("vAcc", "vertical_accuracy_meters"),
    ("hr", "heart_rate"),
    ("cad", "cadence"),
];

/// Which list a point element adds to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PointKind {
    Track,
    Route,
    Way,
}

impl PointKind {
    fn of(name: &[u8]) -> Option<Self> {
        match name {
            b"trkpt" => Some(Self::Track),
            b"rtept" => Some(Self::Route),
            b"wpt" => Some(Self::Way),
            _ => None,
        }
    }
}

/// The point being read.
struct OpenPoint {
    kind: PointKind,
    /// The stack depth of its element.
    depth: usize,
    fields: Map<String, Value>,
    extensions: Map<String, Value>,
}

/// Reads a GPX file into its document: each element's local name, and the text of the
/// innermost, as the walk goes.
#[derive(Default)]
struct Gpx {
    stack: Vec<Vec<u8>>,
    text: String,
    document: Map<String, Value>,
    tracks: Vec<Value>,
    lists: [Vec<Value>; 3],
    point: Option<OpenPoint>,
    saw_root: bool,
}

impl Sink for Gpx {
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), String> {
        let name = start.local_name().as_ref().to_vec();
        if self.stack.is_empty() && name != b"gpx" {
            return Err("the file is not GPX: its root is not `<gpx>`".to_owned());
        }
        opened(
            start,
            &name,
            &self.stack,
            &mut self.document,
            &mut self.tracks,
            &mut self.point,
        )?;
        self.saw_root = true;
        self.stack.push(name);
        self.text.clear();
        Ok(())
    }

    fn text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn close(&mut self) -> Result<(), String> {
        let text = std::mem::take(&mut self.text);
        closed(
            &mut self.stack,
            text.trim(),
            &mut self.document,
            &mut self.tracks,
            &mut self.lists,
            &mut self.point,
        );
        Ok(())
    }

    fn depth(&self) -> usize {
        self.stack.len()
    }
}

/// Decodes a whole GPX file.
pub(super) fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let mut gpx = Gpx::default();
    walk("GPX", body, &mut gpx)?;
    if !gpx.saw_root {
        return Err(DecodeError::new(
            "GPX",
            "the file is not GPX: its root is not `<gpx>`",
        ));
    }
    let Gpx {
        mut document,
        tracks,
        lists,
        ..
    } = gpx;
    let [points, route_points, waypoints] = lists;
    let time_of = |point: Option<&Value>| point.and_then(|point| point.get("at")).cloned();
    let started = time_of(points.iter().find(|point| point.get("at").is_some()));
    let ended = time_of(points.iter().rev().find(|point| point.get("at").is_some()));
    if !document.contains_key("name")
        && let Some(name) = tracks.iter().find_map(|track| track.get("name"))
    {
        document.insert("name".to_owned(), name.clone());
    }
    document.insert("tracks".to_owned(), Value::Array(tracks));
    document.insert("points".to_owned(), Value::Array(points));
    document.insert("route_points".to_owned(), Value::Array(route_points));
    document.insert("waypoints".to_owned(), Value::Array(waypoints));
    document.insert("started_at".to_owned(), started.unwrap_or(Value::Null));
    document.insert("ended_at".to_owned(), ended.unwrap_or(Value::Null));
    Ok(Value::Object(document))
}

/// An element opened inside the open `stack`.
fn opened(
    start: &BytesStart<'_>,
    name: &[u8],
    stack: &[Vec<u8>],
    document: &mut Map<String, Value>,
    tracks: &mut Vec<Value>,
    point: &mut Option<OpenPoint>,
) -> Result<(), String> {
    let attribute = |key: &[u8]| -> Result<Option<String>, String> {
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| e.to_string())?;
            if attribute.key.local_name().as_ref() == key {
                let value = attribute.unescape_value().map_err(|e| e.to_string())?;
                return Ok(Some(value.trim().to_owned()));
            }
        }
        Ok(None)
    };
    if stack.is_empty() && name == b"gpx" {
        for key in ["version", "creator"] {
            if let Some(value) = attribute(key.as_bytes())? {
                document.insert(key.to_owned(), Value::String(value));
            }
        }
        return Ok(());
    }
    if point.is_some() {
        return Ok(());
    }
    if name == b"trk" && stack.len() == 1 {
        tracks.push(Value::Object(Map::from_iter([(
            "points".to_owned(),
            Value::from(0),
        )])));
        return Ok(());
    }
    if let Some(kind) = PointKind::of(name) {
        let coordinate = |key: &str| -> Result<f64, String> {
            let text = attribute(key.as_bytes())?
                .ok_or_else(|| format!("a `{}` has no `{key}`", String::from_utf8_lossy(name)))?;
            text.parse::<f64>()
                .ok()
                .filter(|value| value.is_finite())
                .ok_or_else(|| format!("`{key}=\"{text}\"` is not a number"))
        };
        let (latitude, longitude) = (coordinate("lat")?, coordinate("lon")?);
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(format!(
                "a point at latitude {latitude}, longitude {longitude} is off the globe"
            ));
        }
        let mut fields = Map::with_capacity(10);
        fields.insert("latitude".to_owned(), number(latitude));
        fields.insert("longitude".to_owned(), number(longitude));
        *point = Some(OpenPoint {
            kind,
            depth: stack.len(),
            fields,
            extensions: Map::new(),
        });
    }
    Ok(())
}

/// The innermost open element closed, with its (trimmed) text.
fn closed(
    stack: &mut Vec<Vec<u8>>,
    text: &str,
    document: &mut Map<String, Value>,
    tracks: &mut [Value],
    lists: &mut [Vec<Value>; 3],
    point: &mut Option<OpenPoint>,
) {
    let Some(name) = stack.pop() else {
        return;
    };
    let depth = stack.len();
    if let Some(open) = point {
        if depth == open.depth {
            let Some(open) = point.take() else {
                return;
            };
            let mut fields = open.fields;
            if !open.extensions.is_empty() {
                fields.insert("extensions".to_owned(), Value::Object(open.extensions));
            }
            let list = match open.kind {
                PointKind::Track => {
                    if let Some(Value::Object(track)) = tracks.last_mut() {
                        let count = track.get("points").and_then(Value::as_u64).unwrap_or(0);
                        track.insert("points".to_owned(), Value::from(count + 1));
                    }
                    0
                }
                PointKind::Route => 1,
                PointKind::Way => 2,
            };
            lists[list].push(Value::Object(fields));
            return;
        }
        // A value inside the point: a leaf with text (containers such as `extensions` or
        // Garmin's `TrackPointExtension` hold the leaves).
        if text.is_empty() {
            return;
        }
        let local = String::from_utf8_lossy(&name);
        match KNOWN.iter().find(|(gpx, _)| *gpx == local) {
            Some((_, "at")) => {
                open.fields
                    .insert("at".to_owned(), Value::String(utc(text)));
            }
            Some((_, known)) => {
                let value = text
                    .parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite())
                    .map_or_else(|| Value::String(text.to_owned()), number);
                open.fields.insert((*known).to_owned(), value);
            }
            None => {
                let value = text
                    .parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite())
                    .map_or_else(|| Value::String(text.to_owned()), number);
                open.extensions.insert(local.into_owned(), value);
            }
        }
        return;
    }
    // `gpx/metadata/{name,time,desc}` (1.1) or `gpx/{name,time,desc}` (1.0); a track's own.
    let parent = stack.last().map(Vec::as_slice);
    let field = match name.as_slice() {
        b"name" => "name",
        b"time" => "time",
        b"desc" => "description",
        b"type" => "type",
        _ => return,
    };
    if text.is_empty() {
        return;
    }
    match (depth, parent) {
        (1, Some(b"gpx")) | (2, Some(b"metadata")) => {
            let value = if field == "time" {
                utc(text)
            } else {
                text.to_owned()
            };
            document.insert(field.to_owned(), Value::String(value));
        }
        (2, Some(b"trk")) => {
            if let Some(Value::Object(track)) = tracks.last_mut() {
                track.insert(field.to_owned(), Value::String(text.to_owned()));
            }
        }
        _ => {}
    }
}

/// A GPX time as RFC 3339. GPX times are UTC ("not local time", GPX 1.1); one written without
/// its `Z` is read as UTC, and text that is no time at all is kept as it is.
fn utc(text: &str) -> String {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return at.to_string();
    }
    match text.parse::<jiff::civil::DateTime>() {
        Ok(civil) => civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_or_else(|_| text.to_owned(), |zoned| zoned.timestamp().to_string()),
        Err(_) => text.to_owned(),
    }
}

fn number(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="Apple Health Export" xmlns="http://www.topografix.com/GPX/1/1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <metadata>
    <time>2024-03-20T08:15:30Z</time>
  </metadata>
  <trk>
    <name>Route 2024-03-17 6:42pm</name>
    <trkseg>
      <trkpt lon="13.376887" lat="52.516275"><ele>34.512695</ele><time>2024-03-17T16:59:17Z</time><extensions><speed>2.814003</speed><course>92.460938</course><hAcc>4.716391</hAcc><vAcc>3.282152</vAcc></extensions></trkpt>
      <trkpt lon="13.376929" lat="52.516273"><ele>34.531738</ele><time>2024-03-17T16:59:18Z</time><extensions><speed>2.853412</speed><course>93.164062</course><hAcc>4.531827</hAcc><vAcc>3.150871</vAcc></extensions></trkpt>
    </trkseg>
  </trk>
</gpx>"#;

    #[test]
    fn apple_routes_become_points_with_speed_heading_and_accuracy() {
        let route = decode(APPLE.as_bytes()).unwrap();
        assert_eq!(route["creator"], "Apple Health Export");
        assert_eq!(route["time"], "2024-03-20T08:15:30Z");
        assert_eq!(route["name"], "Route 2024-03-17 6:42pm");
        assert_eq!(route["tracks"][0]["points"], 2);
        assert_eq!(route["started_at"], "2024-03-17T16:59:17Z");
        assert_eq!(route["ended_at"], "2024-03-17T16:59:18Z");
        let first = &route["points"][0];
        assert_eq!(first["latitude"], 52.516275);
        assert_eq!(first["longitude"], 13.376887);
        assert_eq!(first["elevation_meters"], 34.512695);
        assert_eq!(first["speed_meters_per_second"], 2.814003);
        assert_eq!(first["course_degrees"], 92.460938);
        assert_eq!(first["horizontal_accuracy_meters"], 4.716391);
        assert_eq!(first["vertical_accuracy_meters"], 3.282152);
        assert!(first.get("extensions").is_none());
    }

    #[test]
    fn garmin_extensions_and_gpx_1_0_times_are_read() {
        let garmin = r#"<gpx version="1.0" creator="Garmin" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">
<time>2021-05-01T07:00:00</time>
<trk><name>Morning Ride</name><type>cycling</type><trkseg>
<trkpt lat="-33.8688" lon="151.2093"><time>2021-05-01T07:00:01</time><sat>9</sat>
<extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>131</gpxtpx:hr><gpxtpx:cad>88</gpxtpx:cad><gpxtpx:atemp>17.5</gpxtpx:atemp></gpxtpx:TrackPointExtension></extensions></trkpt>
</trkseg><trkseg><trkpt lat="-33.8689" lon="151.2094"/></trkseg></trk>
<wpt lat="-33.86" lon="151.2"><name>Café</name></wpt>
</gpx>"#;
        let route = decode(garmin.as_bytes()).unwrap();
        assert_eq!(route["time"], "2021-05-01T07:00:00Z");
        assert_eq!(route["name"], "Morning Ride");
        assert_eq!(route["tracks"][0]["type"], "cycling");
        assert_eq!(route["tracks"][0]["points"], 2, "both segments' points");
        let first = &route["points"][0];
        assert_eq!(first["at"], "2021-05-01T07:00:01Z");
        assert_eq!(first["heart_rate"], 131.0);
        assert_eq!(first["cadence"], 88.0);
        assert_eq!(first["extensions"]["atemp"], 17.5);
        assert_eq!(first["extensions"]["sat"], 9.0);
        assert_eq!(route["points"][1]["latitude"], -33.8689);
        assert_eq!(
            route["ended_at"], "2021-05-01T07:00:01Z",
            "the last timed point"
        );
        assert_eq!(route["waypoints"][0]["extensions"]["name"], "Café");
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        for (body, reason) in [
            ("<kml/>", "not GPX"),
            ("<gpx><trk><trkseg><trkpt lat=\"1\"/>", "no `lon`"),
            ("<gpx><wpt lat=\"91\" lon=\"0\"/></gpx>", "off the globe"),
            ("<gpx><wpt lat=\"x\" lon=\"0\"/></gpx>", "not a number"),
            ("<gpx><trk><trkseg>", "truncated"),
            ("<gpx><name>&xxe;</name></gpx>", "unknown entity"),
        ] {
            let error = decode(body.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(reason), "{body}: {error}");
        }
        let deep = format!(
            "<gpx>{}",
            "<a>".repeat(super::super::xml::MAX_XML_DEPTH + 1)
        );
        assert!(
            decode(deep.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("nested")
        );
    }
}
