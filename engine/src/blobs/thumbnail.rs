//! Thumbnails of stored photos: a small JPEG for a grid, made from the blob once and kept as a
//! blob of its own.
//!
//! Decoding is bounded (the image's sides and the decoder's memory), so a hostile file fails
//! with an error instead of exhausting the machine. JPEG, PNG, GIF and WebP are read; HEIC (most
//! iPhone photos) has no pure-Rust decoder and gets no thumbnail, nor does video.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::{BlobError, BlobHash, BlobRef, BlobStore, Expected};

/// The longest side of a thumbnail, in pixels: sharp in a grid cell on a high-density screen.
pub const THUMBNAIL_SIDE: u32 = 320;

/// The largest stored file a thumbnail is made from: beyond it, decoding costs more than a grid
/// is worth (and a photo that large is not a phone's).
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// The widest and tallest image decoded (a 200-megapixel phone photo is 16,320 wide).
const MAX_SIDE: u32 = 20_000;

/// The most memory a decoder may take: an 8-bit RGBA image of 100 megapixels.
const MAX_DECODE_BYTES: u64 = 400 << 20;

/// The types a thumbnail can be made from.
pub fn can_thumbnail(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/jpg" | "image/pjpeg" | "image/png" | "image/gif" | "image/webp"
    )
}

/// Why no thumbnail was made.
#[derive(Debug, thiserror::Error)]
#[error("no thumbnail: {0}")]
pub struct ThumbnailError(String);

/// A JPEG at most [`THUMBNAIL_SIDE`] pixels on its longer side, upright as the photo's EXIF
/// orientation says, from the bytes of a photo. CPU-bound: run it off the async workers.
pub fn render(bytes: &[u8]) -> Result<Vec<u8>, ThumbnailError> {
    let fail = |error: image::ImageError| ThumbnailError(error.to_string());
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| ThumbnailError(error.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(fail)?;
    let orientation = decoder.orientation().map_err(fail)?;
    let mut photo = DynamicImage::from_decoder(decoder).map_err(fail)?;
    photo.apply_orientation(orientation);
    // `thumbnail` scales to fit, up as well as down: a photo already small is kept at its size.
    let small = if photo.width() <= THUMBNAIL_SIDE && photo.height() <= THUMBNAIL_SIDE {
        photo.into_rgb8()
    } else {
        photo.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).into_rgb8()
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&small)
        .map_err(fail)?;
    Ok(out)
}

impl BlobStore {
    /// Makes a thumbnail of the photo stored as `hash` (of `content_type`) and stores it as a
    /// blob; `None` when none can be made (not a photo of a type read here, too large, or not
    /// readable as one: the reason is logged).
    pub async fn make_thumbnail(
        &self,
        hash: &BlobHash,
        content_type: &str,
    ) -> Result<Option<BlobRef>, BlobError> {
        if !can_thumbnail(content_type) || self.size(hash).await? > MAX_SOURCE_BYTES {
            return Ok(None);
        }
        let bytes = self.read_all(hash).await?;
        let rendered = tokio::task::spawn_blocking(move || render(&bytes))
            .await
            .map_err(|error| ThumbnailError(error.to_string()));
        let jpeg = match rendered.and_then(|rendered| rendered) {
            Ok(jpeg) => jpeg,
            Err(error) => {
                tracing::info!(blob = %hash.to_hex(), %error, "no thumbnail of the photo");
                return Ok(None);
            }
        };
        let mut writer = self.writer(MAX_SOURCE_BYTES).await?;
        writer.write(&jpeg).await?;
        let stored = writer
            .finish(
                self,
                Expected {
                    size: None,
                    checksum: None,
                    content_type: Some("image/jpeg".to_owned()),
                },
            )
            .await?;
        Ok(Some(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `width` x `height`, as a camera app would not make it but any encoder does.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let picture = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(picture)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn a_thumbnail_keeps_the_aspect_and_fits_the_side() {
        let thumbnail = render(&png(1600, 900)).unwrap();
        let made = image::load_from_memory(&thumbnail).unwrap();
        assert_eq!((made.width(), made.height()), (320, 180));
        assert_eq!(
            image::guess_format(&thumbnail).unwrap(),
            image::ImageFormat::Jpeg
        );
        // Smaller than the side: kept as large as it is.
        let made = image::load_from_memory(&render(&png(40, 30)).unwrap()).unwrap();
        assert_eq!((made.width(), made.height()), (40, 30));
    }

    #[test]
    fn what_is_not_a_photo_or_too_large_is_refused_without_a_panic() {
        assert!(render(b"not an image at all").is_err());
        // A PNG header that claims a 100,000-pixel-wide image.
        let mut huge = png(1, 1);
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(render(&huge).is_err());
        // Cut short.
        let whole = png(64, 64);
        assert!(render(&whole[..whole.len() / 2]).is_err());
    }
}
