//! Image grids (one row per class) with their row labels, and the paper's attention figure.
use tch::{Device, Kind, Tensor};

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

/// A grid from [`grid`] (or [`attention_overlay`]) with `labels` in a column on its left, one per
/// grid row (class names, or numbers).
pub fn labelled(grid: &Tensor, labels: &[String]) -> Tensor {
    let (_, height, _) = grid.size3().expect("CHW grid");
    let rows = labels.len() as i64;
    if rows == 0 {
        return grid.shallow_clone();
    }
    let column = super::font::label_column(labels, height / rows);
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
}
