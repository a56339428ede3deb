//! Channel conversion, centre crop and antialiased resize of decoded images, the way Pillow does
//! them, so that a packed dataset matches what a PyTorch pipeline would have fed.
//!
//! The filter is Pillow's `Image.BICUBIC` (Catmull-Rom, a = -0.5) with the kernel widened by the
//! scale factor when shrinking, which is what makes it antialiased: every source pixel contributes.
//! It is Pillow's default for `Image.resize` and what clean-fid recommends for preparing FID data;
//! Lanczos rings more on hard edges for little gain at these sizes. `fast_image_resize` implements
//! Pillow's convolution in SIMD integer arithmetic; its speed is in docs/performance.md ("Data
//! loading"), and tests/data.rs checks the agreement with Pillow, within 1 level.
use fast_image_resize as fr;

/// The filter every resize in sagan uses (documented in docs/data.md and in packed headers).
pub const FILTER_NAME: &str = "antialiased bicubic (Catmull-Rom, a = -0.5; Pillow's Image.BICUBIC)";

/// A decoded image: `channels` interleaved 8-bit samples per pixel (1 gray, 2 gray+alpha, 3 RGB,
/// 4 RGBA), rows top to bottom.
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// Pillow's `convert("L")` of an RGB pixel: ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Converts to 1 (gray) or 3 (RGB) interleaved channels as Pillow's `convert("L")` /
/// `convert("RGB")` would: alpha is dropped, not composited (torchvision's ImageFolder loader does
/// the same), gray is replicated to RGB, RGB goes to gray through the 601-2 luma.
pub fn to_channels(img: Decoded, want: u8) -> Decoded {
    let (w, h, c) = (img.width, img.height, img.channels);
    if c == want {
        return img;
    }
    let px = &img.pixels;
    let n = (w * h) as usize;
    let mut out = Vec::with_capacity(n * want as usize);
    match (c, want) {
        (1, 3) => px.iter().for_each(|&v| out.extend([v, v, v])),
        (2, 1) => out.extend(px.chunks_exact(2).map(|p| p[0])),
        (2, 3) => px
            .chunks_exact(2)
            .for_each(|p| out.extend([p[0], p[0], p[0]])),
        (3, 1) => out.extend(px.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]))),
        (4, 1) => out.extend(px.chunks_exact(4).map(|p| luma(p[0], p[1], p[2]))),
        (4, 3) => px
            .chunks_exact(4)
            .for_each(|p| out.extend_from_slice(&p[..3])),
        _ => unreachable!("conversion {c} -> {want} channels"),
    }
    Decoded {
        width: w,
        height: h,
        channels: want,
        pixels: out,
    }
}

/// The central square of a `width` x `height` image: (left, top, side). Integer offsets, rounded
/// down (an odd excess leaves the extra column or row on the right or bottom).
pub fn centre_square(width: u32, height: u32) -> (u32, u32, u32) {
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side)
}

/// Centre-crops `img` (1 or 3 channels) to a square and resizes it to `res` x `res` with
/// [`FILTER_NAME`]. Returns interleaved (HWC) pixels.
pub fn crop_resize(img: &Decoded, res: u32) -> Vec<u8> {
    let pixel_type = match img.channels {
        1 => fr::PixelType::U8,
        3 => fr::PixelType::U8x3,
        c => unreachable!("resize of {c}-channel pixels (convert first)"),
    };
    let (left, top, side) = centre_square(img.width, img.height);
    if side == res && img.width == res && img.height == res {
        return img.pixels.clone();
    }
    // Two one-dimensional passes, horizontal first, each rounded and clipped to 8 bits, as Pillow
    // does (a single fast_image_resize call keeps the intermediate unclipped, which at hard edges,
    // e.g. Fashion-MNIST upscaled, differs from Pillow by up to 20 levels). Like Pillow, the
    // kernel may reach past the crop box into the rest of the image, so the first pass keeps the
    // rows the second pass's kernel can touch (its support, 2 x the scale, plus a guard row).
    let options = |left: f64, top: f64, width: f64, height: f64| {
        fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
            .crop(left, top, width, height)
    };
    let margin = (2.0 * (side as f64 / res as f64).max(1.0)).ceil() as u32 + 1;
    let (y0, y1) = (
        top.saturating_sub(margin),
        (top + side + margin).min(img.height),
    );
    let mut resizer = fr::Resizer::new();
    let src = fr::images::ImageRef::new(img.width, img.height, &img.pixels, pixel_type)
        .expect("buffer matches its dimensions");
    let mut rows = fr::images::Image::new(res, y1 - y0, pixel_type);
    resizer
        .resize(
            &src,
            &mut rows,
            &options(left as f64, y0 as f64, side as f64, (y1 - y0) as f64),
        )
        .expect("same pixel type on both sides");
    let mut dst = fr::images::Image::new(res, res, pixel_type);
    resizer
        .resize(
            &rows,
            &mut dst,
            &options(0.0, (top - y0) as f64, res as f64, side as f64),
        )
        .expect("same pixel type on both sides");
    dst.into_vec()
}

/// Interleaved HWC pixels to planar CHW, the layout of packed files and of the model's input.
pub fn hwc_to_chw(hwc: &[u8], channels: usize, out: &mut [u8]) {
    let plane = hwc.len() / channels;
    if channels == 1 {
        out.copy_from_slice(hwc);
        return;
    }
    for (i, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = v;
        }
    }
}

/// Planar CHW to interleaved HWC.
pub fn chw_to_hwc(chw: &[u8], channels: usize) -> Vec<u8> {
    let plane = chw.len() / channels;
    let mut out = vec![0u8; chw.len()];
    for c in 0..channels {
        for i in 0..plane {
            out[i * channels + c] = chw[c * plane + i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pillow_fixed_point() {
        // Pillow: L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn conversions_drop_alpha_and_replicate_gray() {
        let rgba = Decoded {
            width: 1,
            height: 1,
            channels: 4,
            pixels: vec![10, 20, 30, 0],
        };
        assert_eq!(to_channels(rgba, 3).pixels, vec![10, 20, 30]);
        let la = Decoded {
            width: 1,
            height: 1,
            channels: 2,
            pixels: vec![99, 7],
        };
        assert_eq!(to_channels(la, 3).pixels, vec![99, 99, 99]);
    }

    #[test]
    fn centre_square_rounds_down() {
        assert_eq!(centre_square(500, 375), (62, 0, 375));
        assert_eq!(centre_square(3, 8), (0, 2, 3));
    }

    #[test]
    fn layout_round_trip() {
        let hwc: Vec<u8> = (0..24).collect();
        let mut chw = vec![0; 24];
        hwc_to_chw(&hwc, 3, &mut chw);
        assert_eq!(&chw[..4], &[0, 3, 6, 9]);
        assert_eq!(chw_to_hwc(&chw, 3), hwc);
    }

    #[test]
    fn a_constant_image_stays_constant_and_same_size_is_identity() {
        let img = Decoded {
            width: 50,
            height: 30,
            channels: 3,
            pixels: vec![77; 50 * 30 * 3],
        };
        assert!(crop_resize(&img, 16).iter().all(|&v| v == 77));
        let square = Decoded {
            width: 8,
            height: 8,
            channels: 1,
            pixels: (0..64).collect(),
        };
        assert_eq!(crop_resize(&square, 8), square.pixels);
    }
}
