//! Datasets small enough to read whole, in their distributed form: IDX (MNIST, Fashion-MNIST) and
//! the CIFAR-10/100 binaries. They are brought to the model's resolution in memory
//! ([`fit_resolution`]) or packed by `sagan prepare` like any other input.
use std::path::{Path, PathBuf};

use super::idx;
use super::resize::{chw_to_hwc, crop_resize, hwc_to_chw, Decoded, FILTER_NAME};
use crate::error::{Error, Result};

/// Images at their native size, NCHW uint8, with labels and class names.
pub struct Native {
    pub images: Vec<u8>,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
    /// What was read ("Fashion-MNIST IDX train split of <dir>").
    pub description: String,
}

impl Native {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The file prefix of `split` ("train" or "test") in Fashion-MNIST's IDX naming.
fn split_prefix(split: &str) -> &'static str {
    if split == "train" {
        "train"
    } else {
        "t10k"
    }
}

/// `split`'s IDX file `stem` in `dir`, gzipped or not.
fn idx_file(dir: &Path, split: &str, stem: &str) -> Option<PathBuf> {
    let prefix = split_prefix(split);
    [format!("{prefix}-{stem}.gz"), format!("{prefix}-{stem}")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
}

/// Whether `dir` holds both IDX files of `split`.
pub fn has_idx_pair(dir: &Path, split: &str) -> bool {
    ["images-idx3-ubyte", "labels-idx1-ubyte"]
        .iter()
        .all(|stem| idx_file(dir, split, stem).is_some())
}

/// The IDX pair of `split` ("train" or "test") in `dir`, gzipped or not.
pub fn idx_pair(dir: &Path, split: &str) -> Result<Native> {
    let prefix = split_prefix(split);
    let find = |stem: &str| -> Result<PathBuf> {
        idx_file(dir, split, stem).ok_or_else(|| Error::Data {
            path: dir.to_path_buf(),
            msg: format!(
                "no {prefix}-{stem}(.gz) here; install Debian's dataset-fashion-mnist (scripts/setup.sh does) or set data.path"
            ),
        })
    };
    let img_path = find("images-idx3-ubyte")?;
    let lbl_path = find("labels-idx1-ubyte")?;
    let images = idx::read_idx(&img_path)?;
    let labels = idx::read_idx(&lbl_path)?;
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(Error::Data {
            path: img_path,
            msg: format!(
                "image dims {:?} do not match label dims {:?}",
                images.dims, labels.dims
            ),
        });
    }
    let labels: Vec<u32> = labels.data.iter().map(|&l| l as u32).collect();
    let classes = labels.iter().max().map_or(0, |m| m + 1) as usize;
    // Fashion-MNIST and MNIST share the file names; the folder says which this is.
    let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
    let class_names = (0..classes)
        .map(|i| match super::class_names::FASHION_MNIST.get(i) {
            Some(name) if fashion => name.to_string(),
            _ => i.to_string(),
        })
        .collect();
    Ok(Native {
        images: images.data,
        channels: 1,
        height: images.dims[1] as u32,
        width: images.dims[2] as u32,
        labels,
        class_names,
        description: format!("IDX {split} split of {}", dir.display()),
    })
}

/// Whether 28x28 images go to a 32x32 model by zero-padding rather than resizing.
///
/// Fashion-MNIST (and MNIST) at 32: the 2-pixel border is background (zero) in nearly every
/// image, so padding loses nothing, keeps every pixel as recorded (an 8/7 resize would resample
/// all of them, softening the 1-pixel strokes), and keeps the project's Fashion-MNIST classifier,
/// trained on padded images, and its FID statistics meaningful. Every other size is resized.
pub fn pads(height: u32, width: u32, res: u32) -> bool {
    height == 28 && width == 28 && res == 32
}

/// Brings native images to `res` x `res`: unchanged when they are that size, zero-padded for
/// 28 -> 32 (see [`pads`]), else centre-cropped and resized with [`FILTER_NAME`], over
/// `threads` threads. Returns NCHW bytes and a description of what was done.
pub fn fit_resolution(native: &Native, res: u32, threads: usize) -> (Vec<u8>, String) {
    let (c, h, w) = (native.channels, native.height, native.width);
    let n = native.len();
    if h == res && w == res {
        return (native.images.clone(), format!("native {res}x{res}"));
    }
    let src_bytes = (c * h * w) as usize;
    let dst_bytes = (c * res * res) as usize;
    let mut out = vec![0u8; n * dst_bytes];
    if pads(h, w, res) {
        let (top, left) = ((res - h) / 2, (res - w) / 2);
        for (src, dst) in native
            .images
            .chunks_exact(src_bytes)
            .zip(out.chunks_exact_mut(dst_bytes))
        {
            for (y, row) in src.chunks_exact(w as usize).enumerate() {
                let at = ((y as u32 + top) * res + left) as usize;
                dst[at..at + w as usize].copy_from_slice(row);
            }
        }
        return (out, format!("{h}x{w} zero-padded to {res}x{res}"));
    }
    let per = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (src, dst) in native
            .images
            .chunks(per * src_bytes)
            .zip(out.chunks_mut(per * dst_bytes))
        {
            s.spawn(move || {
                for (img, slot) in src
                    .chunks_exact(src_bytes)
                    .zip(dst.chunks_exact_mut(dst_bytes))
                {
                    let decoded = Decoded {
                        width: w,
                        height: h,
                        channels: c as u8,
                        pixels: chw_to_hwc(img, c as usize),
                    };
                    hwc_to_chw(&crop_resize(&decoded, res), c as usize, slot);
                }
            });
        }
    });
    (
        out,
        format!("{h}x{w} centre-cropped and resized to {res}x{res}, {FILTER_NAME}"),
    )
}
