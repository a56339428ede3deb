//! Fixed class-conditional noise and image grids (one row per class) saved as PNG.
use std::path::Path;

use rand_core::{RngCore, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, IoContext, Result};

/// `per_class` latents for each class, drawn from their own generator so they never disturb (or
/// depend on) the training RNG: the same grid inputs at every step and on every resume.
pub fn fixed_inputs(
    num_classes: i64,
    per_class: i64,
    z_dim: i64,
    seed: u64,
    device: Device,
) -> (Tensor, Tensor) {
    let n = (num_classes * per_class * z_dim) as usize;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let uniform =
        |rng: &mut rand_pcg::Pcg64| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut z = Vec::with_capacity(n);
    while z.len() < n {
        // Box-Muller: two standard normals from two uniforms.
        let (a, b) = (uniform(&mut rng), uniform(&mut rng));
        let r = (-2.0 * a.ln()).sqrt();
        z.push((r * (std::f64::consts::TAU * b).cos()) as f32);
        z.push((r * (std::f64::consts::TAU * b).sin()) as f32);
    }
    z.truncate(n);
    let z = Tensor::from_slice(&z)
        .view([num_classes * per_class, z_dim])
        .to_device(device);
    let y = Tensor::arange(num_classes, (Kind::Int64, device))
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
}

/// At most `wanted` classes (0 = all), spread evenly over the `num_classes`, for grids: ImageNet's
/// 1,000 rows would neither fit one forward pass nor be readable.
pub fn grid_classes(num_classes: i64, wanted: i64) -> Vec<i64> {
    let n = if wanted <= 0 {
        num_classes
    } else {
        wanted.min(num_classes)
    };
    (0..n).map(|i| i * num_classes / n).collect()
}

/// `per_class` fixed latents for each of `classes` (see [`fixed_inputs`]), labels row by row.
pub fn grid_inputs(
    classes: &[i64],
    per_class: i64,
    z_dim: i64,
    seed: u64,
    device: Device,
) -> (Tensor, Tensor) {
    let rows = classes.len() as i64;
    let (z, _) = fixed_inputs(rows, per_class, z_dim, seed, device);
    let y = Tensor::from_slice(classes)
        .to_device(device)
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
}

/// Lays out (rows * cols, C, H, W) images in [-1, 1] as one (3, rows*(H+2), cols*(W+2)) uint8 grid
/// with a 1-pixel border; grayscale is replicated to RGB.
pub fn grid(images: &Tensor, rows: i64) -> Tensor {
    let (n, c, h, w) = images.size4().expect("NCHW images");
    let cols = n / rows;
    let x = ((images.detach().to_device(Device::Cpu).clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8);
    let x = x.constant_pad_nd([1, 1, 1, 1]);
    let x = x
        .view([rows, cols, c, h + 2, w + 2])
        .permute([2, 0, 3, 1, 4])
        .reshape([c, rows * (h + 2), cols * (w + 2)]);
    if c == 1 {
        x.repeat([3, 1, 1])
    } else {
        x
    }
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
    let encoded =
        crate::log::tensorboard::encode_png(w as u32, h as u32, color, &pixels).map_err(|e| {
            Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, encoded).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

/// A grid from [`grid`] (or [`attention_overlay`]) with `labels` in a column on its left, one per
/// grid row (class names, or numbers).
pub fn labelled(grid: &Tensor, labels: &[String]) -> Tensor {
    let (_, height, _) = grid.size3().expect("CHW grid");
    let rows = labels.len() as i64;
    if rows == 0 {
        return grid.shallow_clone();
    }
    let column = crate::labels::label_column(labels, height / rows);
    Tensor::cat(&[column.to_device(grid.device()), grid.shallow_clone()], 2)
}

/// Attention-figure tiles are at least this many pixels on a side: small images are enlarged by a
/// whole factor (nearest neighbour, so every image pixel stays a sharp square) until the attention
/// heat and the query marks can be seen.
pub const ATTENTION_TILE_PX: i64 = 96;

/// The whole factor that brings `side` pixels to at least [`ATTENTION_TILE_PX`].
pub fn attention_zoom(side: i64) -> i64 {
    ((ATTENTION_TILE_PX + side - 1) / side).max(1)
}

/// The paper's attention figure: for each image (a row), the image itself and, for each query
/// position, where that position attends: the attention weights over the key grid, upsampled and
/// laid over the image in red, the query marked in green. Tiles are enlarged to at least
/// [`ATTENTION_TILE_PX`] pixels. `map` is (N, queries = h*w, keys) from a square h x w feature
/// map; `queries` are (row, col) fractions of the image.
pub fn attention_overlay(images: &Tensor, map: &Tensor, queries: &[(f64, f64)]) -> Tensor {
    let (n, _, h, w) = images.size4().expect("NCHW images");
    let zoom = attention_zoom(h.min(w));
    let (h_img, w_img) = (h * zoom, w * zoom);
    let (_, q_count, keys) = map.size3().expect("(N, queries, keys) map");
    let side = (q_count as f64).sqrt().round() as i64;
    let key_side = (keys as f64).sqrt().round() as i64;
    let gray = ((images.detach().to_device(Device::Cpu).clamp(-1.0, 1.0) + 1.0) / 2.0)
        .mean_dim(1, true, Kind::Float)
        .upsample_nearest2d([h_img, w_img], None, None);
    let map = map.detach().to_device(Device::Cpu).to_kind(Kind::Float);
    // The query mark: 2x2 image pixels.
    let mark = 2 * zoom;
    let mut tiles = Vec::new();
    for i in 0..n {
        let g = gray.get(i);
        tiles.push(g.repeat([3, 1, 1]));
        for &(fy, fx) in queries {
            let (qy, qx) = ((fy * side as f64) as i64, (fx * side as f64) as i64);
            let w = map
                .get(i)
                .get(qy * side + qx)
                .view([1, 1, key_side, key_side]);
            let w = &w / w.max().clamp_min(1e-12);
            let heat = w
                .upsample_bilinear2d([h_img, w_img], false, None, None)
                .view([1, h_img, w_img]);
            let red = &g * 0.5 + &heat * 0.5;
            let other = &g * 0.5;
            let tile = Tensor::cat(&[red, other.shallow_clone(), other], 0);
            let (py, px) = ((fy * h_img as f64) as i64, (fx * w_img as f64) as i64);
            tile.narrow(1, py.min(h_img - mark), mark)
                .narrow(2, px.min(w_img - mark), mark)
                .copy_(&Tensor::from_slice(&[0.0f32, 1.0, 0.0]).view([3, 1, 1]));
            tiles.push(tile);
        }
    }
    let tiles = Tensor::stack(&tiles, 0) * 2.0 - 1.0;
    grid(&tiles, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_each_image_in_its_cell() {
        let imgs = Tensor::zeros([6, 1, 4, 5], (Kind::Float, Device::Cpu)) - 1.0;
        // Image 4 (row 1, col 1 of a 2x3 grid) white.
        let _ = imgs.get(4).fill_(1.0);
        let g = grid(&imgs, 2);
        assert_eq!(g.size(), vec![3, 2 * 6, 3 * 7]);
        assert_eq!(g.int64_value(&[0, 6 + 1, 7 + 1]), 255);
        assert_eq!(g.int64_value(&[0, 1, 1]), 0);
    }

    #[test]
    fn grid_classes_are_bounded_and_spread() {
        assert_eq!(grid_classes(10, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(grid_classes(10, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(grid_classes(3, 10), vec![0, 1, 2]);
        let many = grid_classes(1000, 10);
        assert_eq!(many, vec![0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
        let (_, y) = grid_inputs(&many[..2], 3, 8, 1, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(&y).unwrap(),
            vec![0, 0, 0, 100, 100, 100]
        );
    }

    #[test]
    fn fixed_inputs_are_reproducible_and_normal() {
        let (z1, y) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        let (z2, _) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        assert!(z1.equal(&z2));
        assert_eq!(y.int64_value(&[8]), 1);
        assert!(z1.mean(None).double_value(&[]).abs() < 0.1);
        assert!((z1.std(true).double_value(&[]) - 1.0).abs() < 0.1);
    }
}
