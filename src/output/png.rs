//! PNG files and bytes: sample grids on disk and images inside TensorBoard events.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, IoContext, Result};

/// PNG bytes of 8-bit pixels laid out row by row.
pub fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    pixels: &[u8],
) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(encoded)
}

/// Writes a (3, H, W) uint8 image as PNG, through a temporary file and a rename. (tch's own image
/// writer ignores failures, so a full disk or a bad path would go unnoticed.)
pub fn save_png(grid: &Tensor, path: &Path) -> Result<()> {
    let (c, h, w) = grid.size3()?;
    let hwc = grid
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu)
        .permute([1, 2, 0])
        .contiguous()
        .view([-1]);
    let pixels = Vec::<u8>::try_from(&hwc)?;
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("{c} channels: PNG grids are gray or RGB")),
            })
        }
    };
    let encoded = encode_png(w as u32, h as u32, color, &pixels).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, encoded).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}
