//! JPEG and PNG files to pixels. The format is taken from the file's first bytes, not its name:
//! ImageNet's train set has a PNG and CMYK JPEGs behind `.JPEG` names.
//!
//! JPEG goes through libjpeg-turbo (the `turbojpeg` crate over the system library), the library
//! Pillow bundles: measured on 500x375 JPEGs it decodes bit-for-bit what Pillow decodes, and is
//! the fastest of the three decoders tried (docs/data.md). The pure-Rust decoders differ from
//! Pillow by up to 3 (jpeg-decoder) and 11 (zune-jpeg, the `image` crate's) levels. CMYK and
//! YCCK JPEGs, which libjpeg-turbo cannot convert to RGB, go through the `image` crate; so does
//! PNG.
use std::path::Path;

use super::resize::Decoded;

/// Decodes `bytes` (read from `path`, named in errors) to 8-bit gray, gray+alpha, RGB or RGBA.
pub fn decode(bytes: &[u8], path: &Path) -> std::result::Result<Decoded, String> {
    let img = if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes).map_err(|e| format!("{}: cannot decode JPEG: {e}", path.display()))?
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_with_image(bytes, image::ImageFormat::Png)
            .map_err(|e| format!("{}: cannot decode PNG: {e}", path.display()))?
    } else {
        return Err(format!(
            "{}: neither JPEG nor PNG (first bytes {:02x?})",
            path.display(),
            &bytes[..bytes.len().min(8)]
        ));
    };
    if img.width == 0 || img.height == 0 {
        return Err(format!(
            "{}: empty image ({}x{})",
            path.display(),
            img.width,
            img.height
        ));
    }
    Ok(img)
}

/// libjpeg-turbo with its defaults (accurate integer IDCT, smooth chroma upsampling), as Pillow
/// calls it. A truncated or corrupt file is an error (libjpeg-turbo's warnings count).
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Decoded, String> {
    use turbojpeg::{Colorspace, PixelFormat};
    let header = turbojpeg::read_header(bytes).map_err(|e| e.to_string())?;
    let (format, channels) = match header.colorspace {
        Colorspace::Gray => (PixelFormat::GRAY, 1),
        Colorspace::CMYK | Colorspace::YCCK => {
            return decode_with_image(bytes, image::ImageFormat::Jpeg).map_err(|e| e.to_string())
        }
        _ => (PixelFormat::RGB, 3),
    };
    let img = turbojpeg::decompress(bytes, format).map_err(|e| e.to_string())?;
    Ok(Decoded {
        width: img.width as u32,
        height: img.height as u32,
        channels,
        pixels: img.pixels,
    })
}

fn decode_with_image(
    bytes: &[u8],
    format: image::ImageFormat,
) -> std::result::Result<Decoded, image::ImageError> {
    let img = image::load_from_memory_with_format(bytes, format)?;
    let (width, height) = (img.width(), img.height());
    use image::DynamicImage as D;
    let (channels, pixels) = match img {
        D::ImageLuma8(b) => (1, b.into_raw()),
        D::ImageLumaA8(b) => (2, b.into_raw()),
        D::ImageRgb8(b) => (3, b.into_raw()),
        D::ImageRgba8(b) => (4, b.into_raw()),
        // 16-bit and float images: scaled to 8 bits by the `image` crate's conversion.
        other if other.color().has_alpha() => (4, other.into_rgba8().into_raw()),
        other if other.color().channel_count() <= 2 => (1, other.into_luma8().into_raw()),
        other => (3, other.into_rgb8().into_raw()),
    };
    Ok(Decoded {
        width,
        height,
        channels,
        pixels,
    })
}
