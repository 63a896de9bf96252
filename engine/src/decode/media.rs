//! Media and other files as documents of their facts: a photo, video or document found in an
//! export (Takeout Photos, Apple's iCloud Photos and iCloud Drive) becomes
//! `{size, blake3, content_type, kind, ...}` with, where the file says them, `width`, `height`,
//! `taken_at` (RFC 3339; a time the camera wrote without its offset is `taken_at_local`),
//! `duration_seconds`, `camera_make`, `camera_model`, `latitude`, `longitude` and `altitude`.
//!
//! A file is read through once, with flat memory whatever its size: its BLAKE3 and size as it
//! streams by, and its first and last MiB kept. Metadata is read from those (nom-exif, over a
//! reader that seeks in them and reads zeros between), which is where EXIF and a video's `moov`
//! box are, at the start or the end. `content_type` comes from the first bytes (infer).

use std::io::{BufRead, Read, Seek, SeekFrom};

use serde_json::{Map, Value, json};

use super::DecodeError;

/// The bytes kept from each end of a file for its metadata.
const KEPT: usize = 1 << 20;

/// A file read through: its size and hash, and its first and last bytes.
struct Digest {
    size: u64,
    hash: blake3::Hasher,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Digest {
    fn of(mut reader: impl Read) -> std::io::Result<Self> {
        let mut digest = Self {
            size: 0,
            hash: blake3::Hasher::new(),
            head: Vec::new(),
            tail: Vec::new(),
        };
        let mut buffer = vec![0_u8; 256 * 1024];
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => return Ok(digest),
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let chunk = &buffer[..read];
            digest.hash.update(chunk);
            digest.size += read as u64;
            let to_head = chunk.len().min(KEPT - digest.head.len());
            digest.head.extend_from_slice(&chunk[..to_head]);
            digest.tail.extend_from_slice(&chunk[to_head..]);
            if digest.tail.len() > 2 * KEPT {
                let excess = digest.tail.len() - KEPT;
                digest.tail.drain(..excess);
            }
        }
    }

    fn whole(bytes: &[u8]) -> Self {
        let split = bytes.len().min(KEPT);
        let tail_start = bytes.len().saturating_sub(KEPT).max(split);
        Self {
            size: bytes.len() as u64,
            hash: {
                let mut hash = blake3::Hasher::new();
                hash.update(bytes);
                hash
            },
            head: bytes[..split].to_vec(),
            tail: bytes[tail_start..].to_vec(),
        }
    }

    /// Keeps at most [`KEPT`] bytes of the tail.
    fn settle(&mut self) {
        if self.tail.len() > KEPT {
            let excess = self.tail.len() - KEPT;
            self.tail.drain(..excess);
        }
    }
}

/// The file as a parser sees it: the head and the tail where they are, zeros between.
struct Sparse<'d> {
    digest: &'d Digest,
    at: u64,
}

impl Read for Sparse<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let digest = self.digest;
        if self.at >= digest.size || buffer.is_empty() {
            return Ok(0);
        }
        let head_end = digest.head.len() as u64;
        let tail_start = digest.size - digest.tail.len() as u64;
        let available = (digest.size - self.at).min(buffer.len() as u64);
        let read = if self.at < head_end {
            let start = self.at as usize;
            let count = (available as usize).min(digest.head.len() - start);
            buffer[..count].copy_from_slice(&digest.head[start..start + count]);
            count
        } else if self.at >= tail_start {
            let start = (self.at - tail_start) as usize;
            let count = (available as usize).min(digest.tail.len() - start);
            buffer[..count].copy_from_slice(&digest.tail[start..start + count]);
            count
        } else {
            let count = available.min(tail_start - self.at) as usize;
            buffer[..count].fill(0);
            count
        };
        self.at += read as u64;
        Ok(read)
    }
}

impl Seek for Sparse<'_> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        let target = match position {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.digest.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.at.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.at = target;
        Ok(target)
    }
}

/// Reads the file `reader` holds through and writes its facts, as JSON, into `frame`; `false`
/// when the file was read already. Every byte consumed is added to `offset`.
pub(super) fn next_file<R: BufRead>(
    reader: &mut Option<R>,
    frame: &mut Vec<u8>,
    offset: &mut u64,
) -> Result<bool, DecodeError> {
    let Some(reader) = reader.take() else {
        return Ok(false);
    };
    let mut digest = Digest::of(reader).map_err(|error| DecodeError::new("input", error))?;
    digest.settle();
    *offset += digest.size;
    let facts = facts_of(&digest);
    serde_json::to_writer(&mut *frame, &facts).map_err(|error| DecodeError::new("media", error))?;
    Ok(true)
}

/// The facts of a file held whole (an API's body).
pub fn facts(bytes: &[u8]) -> Value {
    facts_of(&Digest::whole(bytes))
}

fn facts_of(digest: &Digest) -> Value {
    let mut facts = Map::new();
    facts.insert("size".to_owned(), json!(digest.size));
    facts.insert(
        "blake3".to_owned(),
        json!(digest.hash.finalize().to_hex().as_str()),
    );
    let sniffed = infer::get(&digest.head);
    let content_type = sniffed.map(|kind| kind.mime_type());
    facts.insert("content_type".to_owned(), json!(content_type));
    let kind = match sniffed.as_ref().map(infer::Type::matcher_type) {
        Some(infer::MatcherType::Image) => "photo",
        Some(infer::MatcherType::Video) => "video",
        Some(infer::MatcherType::Audio) => "audio",
        _ => "other",
    };
    facts.insert("kind".to_owned(), json!(kind));
    // The parser has panicked on crafted files before (nom-exif #1, #34, #63): such a file is
    // one without metadata, not the end of the import.
    let metadata = std::panic::catch_unwind(|| metadata(digest)).unwrap_or_default();
    facts.extend(metadata);
    if !facts.contains_key("width")
        && let Some((width, height)) = pixel_size(&digest.head)
    {
        facts.insert("width".to_owned(), json!(width));
        facts.insert("height".to_owned(), json!(height));
    }
    Value::Object(facts)
}

/// What EXIF or a video's boxes say.
fn metadata(digest: &Digest) -> Map<String, Value> {
    use nom_exif::{ExifTag, MediaKind, MediaParser, MediaSource, TrackInfoTag};

    let mut found = Map::new();
    let Ok(source) = MediaSource::seekable(Sparse { digest, at: 0 }) else {
        return found;
    };
    let mut parser = MediaParser::new();
    match source.kind() {
        MediaKind::Image => {
            let Ok(iter) = parser.parse_exif(source) else {
                return found;
            };
            let exif: nom_exif::Exif = iter.into();
            let text = |tag| {
                exif.get(tag)
                    .and_then(|value| value.as_str())
                    .map(|text| text.trim().to_owned())
                    .filter(|text| !text.is_empty())
            };
            let number = |tag| exif.get(tag).and_then(|value| value.try_as_integer());
            if let Some(taken) = exif
                .get(ExifTag::DateTimeOriginal)
                .or_else(|| exif.get(ExifTag::CreateDate))
                .and_then(|value| value.as_datetime())
            {
                match taken.aware() {
                    Some(aware) => found.insert("taken_at".to_owned(), json!(aware.to_rfc3339())),
                    None => found.insert(
                        "taken_at_local".to_owned(),
                        json!(taken.into_naive().format("%Y-%m-%dT%H:%M:%S").to_string()),
                    ),
                };
            }
            if let Some(make) = text(ExifTag::Make) {
                found.insert("camera_make".to_owned(), json!(make));
            }
            if let Some(model) = text(ExifTag::Model) {
                found.insert("camera_model".to_owned(), json!(model));
            }
            let width = number(ExifTag::ExifImageWidth).or_else(|| number(ExifTag::ImageWidth));
            let height = number(ExifTag::ExifImageHeight).or_else(|| number(ExifTag::ImageHeight));
            if let (Some(width), Some(height)) = (width, height) {
                found.insert("width".to_owned(), json!(width));
                found.insert("height".to_owned(), json!(height));
            }
            if let Some(gps) = exif.gps_info() {
                insert_position(
                    &mut found,
                    gps.latitude_decimal(),
                    gps.longitude_decimal(),
                    gps.altitude_meters(),
                );
            }
        }
        MediaKind::Track => {
            let Ok(track) = parser.parse_track(source) else {
                return found;
            };
            // QuickTime counts from 1904: a creation time of 0 is none.
            if let Some(created) = track
                .get(TrackInfoTag::CreateDate)
                .and_then(|value| value.as_datetime())
                .and_then(|value| value.aware())
                .filter(|created| created.timestamp() > 0)
            {
                found.insert("taken_at".to_owned(), json!(created.to_rfc3339()));
            }
            if let Some(duration) = track
                .get(TrackInfoTag::DurationMs)
                .and_then(|value| value.as_u64())
            {
                found.insert(
                    "duration_seconds".to_owned(),
                    json!(duration as f64 / 1000.0),
                );
            }
            let dimension = |tag| track.get(tag).and_then(|value| value.as_u32());
            if let (Some(width), Some(height)) = (
                dimension(TrackInfoTag::Width),
                dimension(TrackInfoTag::Height),
            ) {
                found.insert("width".to_owned(), json!(width));
                found.insert("height".to_owned(), json!(height));
            }
            for (tag, key) in [
                (TrackInfoTag::Make, "camera_make"),
                (TrackInfoTag::Model, "camera_model"),
            ] {
                if let Some(text) = track.get(tag).and_then(|value| value.as_str()) {
                    found.insert(key.to_owned(), json!(text.trim()));
                }
            }
            if let Some(gps) = track.gps_info() {
                insert_position(
                    &mut found,
                    gps.latitude_decimal(),
                    gps.longitude_decimal(),
                    gps.altitude_meters(),
                );
            }
        }
    }
    found
}

fn insert_position(
    found: &mut Map<String, Value>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    altitude: Option<f64>,
) {
    let usable =
        |value: Option<f64>, bound: f64| value.filter(|v| v.is_finite() && v.abs() <= bound);
    // 0,0 is where cameras without a fix write their position.
    if let (Some(latitude), Some(longitude)) = (usable(latitude, 90.0), usable(longitude, 180.0))
        && (latitude, longitude) != (0.0, 0.0)
    {
        found.insert("latitude".to_owned(), json!(latitude));
        found.insert("longitude".to_owned(), json!(longitude));
        if let Some(altitude) = altitude.filter(|value| value.is_finite()) {
            found.insert("altitude".to_owned(), json!(altitude));
        }
    }
}

/// A PNG's, a WebP's or a JPEG's size in pixels from its header (for images without EXIF
/// sizes).
fn pixel_size(head: &[u8]) -> Option<(u32, u32)> {
    if head.get(..4) == Some(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return webp_size(head);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") && head.get(12..16) == Some(b"IHDR") {
        let width = u32::from_be_bytes(head.get(16..20)?.try_into().ok()?);
        let height = u32::from_be_bytes(head.get(20..24)?.try_into().ok()?);
        return Some((width, height));
    }
    if !head.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // JPEG: walk the segments to the frame header (SOF0-SOF15 but DHT, JPG and DAC).
    let mut at = 2;
    while at + 4 <= head.len() {
        if head[at] != 0xFF {
            return None;
        }
        let marker = head[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let length = usize::from(u16::from_be_bytes([head[at + 2], head[at + 3]]));
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes(head.get(at + 5..at + 7)?.try_into().ok()?);
            let width = u16::from_be_bytes(head.get(at + 7..at + 9)?.try_into().ok()?);
            return Some((u32::from(width), u32::from(height)));
        }
        if length < 2 || marker == 0xDA {
            return None;
        }
        at += 2 + length;
    }
    None
}

/// A WebP's canvas size: extended (`VP8X`), lossy (`VP8 `) or lossless (`VP8L`).
fn webp_size(head: &[u8]) -> Option<(u32, u32)> {
    let u24 = |at: usize| -> Option<u32> {
        let bytes = head.get(at..at + 3)?;
        Some(u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16)
    };
    let u16_at = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_le_bytes(
            head.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    match head.get(12..16)? {
        b"VP8X" => Some((u24(24)? + 1, u24(27)? + 1)),
        b"VP8 " if head.get(23..26) == Some(&[0x9d, 0x01, 0x2a]) => {
            Some((u16_at(26)? & 0x3fff, u16_at(28)? & 0x3fff))
        }
        b"VP8L" if head.get(20) == Some(&0x2f) => {
            let bits = u32::from_le_bytes(head.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webp_sizes_from_their_headers() {
        let mut extended = b"RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        extended.extend_from_slice(&[0x37, 0x04, 0x00, 0x37, 0x04, 0x00]);
        assert_eq!(pixel_size(&extended), Some((1080, 1080)));
        let mut lossy = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\x30\x01\x00\x9d\x01\x2a".to_vec();
        lossy.extend_from_slice(&640_u16.to_le_bytes());
        lossy.extend_from_slice(&480_u16.to_le_bytes());
        assert_eq!(pixel_size(&lossy), Some((640, 480)));
        let mut lossless = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        let bits: u32 = (100 - 1) | ((50 - 1) << 14);
        lossless.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(pixel_size(&lossless), Some((100, 50)));
        assert_eq!(pixel_size(b"RIFF\0\0\0\0WEBPVP8X"), None);
    }

    #[test]
    fn a_photo_has_its_time_camera_size_and_place() {
        // A JPEG with EXIF as a phone writes it (see `tests_support::jpeg`).
        let bytes = super::tests_support::jpeg();
        let facts = facts(&bytes);
        assert_eq!(facts["content_type"], "image/jpeg", "{facts}");
        assert_eq!(facts["kind"], "photo");
        assert_eq!(facts["size"], bytes.len());
        assert_eq!(facts["blake3"], blake3::hash(&bytes).to_hex().as_str());
        assert_eq!(facts["taken_at"], "2024-07-04T18:15:02+02:00", "{facts}");
        assert_eq!(facts["camera_make"], "Google");
        assert_eq!(facts["camera_model"], "Pixel 8");
        assert_eq!(
            (&facts["width"], &facts["height"]),
            (&json!(4032), &json!(3024))
        );
        let latitude = facts["latitude"].as_f64().unwrap();
        let longitude = facts["longitude"].as_f64().unwrap();
        assert!((latitude - 52.516_275).abs() < 1e-4, "{facts}");
        assert!((longitude - 13.377_704).abs() < 1e-4, "{facts}");
    }

    #[test]
    fn a_large_file_is_hashed_whole_and_read_with_flat_memory() {
        // 5 MiB of zeros after a PNG header: the head and tail are kept, the middle hashed.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\0\x80\x08\x06\0\0\0".to_vec();
        png.resize(5 << 20, 0);
        let mut frame = Vec::new();
        let mut offset = 0;
        let mut reader = Some(&png[..]);
        assert!(next_file(&mut reader, &mut frame, &mut offset).unwrap());
        assert!(!next_file(&mut reader, &mut frame, &mut offset).unwrap());
        let facts: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(facts["blake3"], blake3::hash(&png).to_hex().as_str());
        assert_eq!(facts["size"], 5 << 20);
        assert_eq!(offset, 5 << 20);
        assert_eq!(
            (&facts["width"], &facts["height"]),
            (&json!(256), &json!(128))
        );
        assert_eq!(facts["content_type"], "image/png");
    }

    #[test]
    fn anything_else_is_a_file_without_metadata() {
        for bytes in [
            &b""[..],
            b"%PDF-1.4\n",
            b"\xFF\xD8\xFF\xE1\xFF\xFFExif\0\0MM",
            &[0_u8; 100],
        ] {
            let facts = facts(bytes);
            assert_eq!(facts["size"], bytes.len());
            assert!(facts.get("taken_at").is_none());
        }
        assert_eq!(facts(b"%PDF-1.4\n")["content_type"], "application/pdf");
    }
}

/// Test files built byte by byte (the connectors' fixtures are built the same way by
/// `tests/fixtures/media.py`).
#[cfg(test)]
mod tests_support {
    /// A big-endian TIFF IFD entry.
    fn entry(out: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }

    /// A minimal JPEG whose EXIF says: Make Google, Model Pixel 8, 4032×3024, taken
    /// 2024:07:04 18:15:02 at +02:00, at 52°30'58.59"N 13°22'39.73"E.
    pub(super) fn jpeg() -> Vec<u8> {
        // TIFF: header, IFD0 (Make, Model, ExifIFD, GPSIFD), Exif IFD, GPS IFD, then data.
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        let ifd0 = 8;
        let ifd0_len = 2 + 4 * 12 + 4;
        let exif_ifd = ifd0 + ifd0_len;
        let exif_len = 2 + 4 * 12 + 4;
        let gps_ifd = exif_ifd + exif_len;
        let gps_len = 2 + 4 * 12 + 4;
        let data = gps_ifd + gps_len;
        let make = b"Google\0";
        let model = b"Pixel 8\0";
        let taken = b"2024:07:04 18:15:02\0";
        let offset = b"+02:00\0";
        let (make_at, model_at) = (data, data + make.len());
        let taken_at = model_at + model.len();
        let offset_at = taken_at + taken.len();
        let latitude_at = offset_at + offset.len();
        let longitude_at = latitude_at + 24;
        // IFD0
        tiff.extend_from_slice(&4_u16.to_be_bytes());
        entry(&mut tiff, 0x010F, 2, make.len() as u32, make_at as u32);
        entry(&mut tiff, 0x0110, 2, model.len() as u32, model_at as u32);
        entry(&mut tiff, 0x8769, 4, 1, exif_ifd as u32);
        entry(&mut tiff, 0x8825, 4, 1, gps_ifd as u32);
        tiff.extend_from_slice(&0_u32.to_be_bytes());
        // Exif IFD
        tiff.extend_from_slice(&4_u16.to_be_bytes());
        entry(&mut tiff, 0x9003, 2, taken.len() as u32, taken_at as u32);
        entry(&mut tiff, 0x9011, 2, offset.len() as u32, offset_at as u32);
        entry(&mut tiff, 0xA002, 4, 1, 4032);
        entry(&mut tiff, 0xA003, 4, 1, 3024);
        tiff.extend_from_slice(&0_u32.to_be_bytes());
        // GPS IFD: refs inline ("N\0", "E\0"), positions as three rationals each.
        tiff.extend_from_slice(&4_u16.to_be_bytes());
        entry(&mut tiff, 0x0001, 2, 2, u32::from_be_bytes(*b"N\0\0\0"));
        entry(&mut tiff, 0x0002, 5, 3, latitude_at as u32);
        entry(&mut tiff, 0x0003, 2, 2, u32::from_be_bytes(*b"E\0\0\0"));
        entry(&mut tiff, 0x0004, 5, 3, longitude_at as u32);
        tiff.extend_from_slice(&0_u32.to_be_bytes());
        assert_eq!(tiff.len(), data);
        for text in [&make[..], model, taken, offset] {
            tiff.extend_from_slice(text);
        }
        for (numerator, denominator) in [
            (52_u32, 1_u32),
            (30, 1),
            (5859, 100),
            (13, 1),
            (22, 1),
            (3973, 100),
        ] {
            tiff.extend_from_slice(&numerator.to_be_bytes());
            tiff.extend_from_slice(&denominator.to_be_bytes());
        }
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        let app1_len = (2 + 6 + tiff.len()) as u16;
        jpeg.extend_from_slice(&app1_len.to_be_bytes());
        jpeg.extend_from_slice(b"Exif\0\0");
        jpeg.extend_from_slice(&tiff);
        // SOF0: 8 bits, 3024 high, 4032 wide, 3 components.
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
        jpeg.extend_from_slice(&3024_u16.to_be_bytes());
        jpeg.extend_from_slice(&4032_u16.to_be_bytes());
        jpeg.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        jpeg
    }
}
