//! The fixed-noise sample grids and attention figures of a run: drawn by G and G_ema, written to
//! TensorBoard and as PNG files in the run directory.
use std::path::Path;

use tch::Tensor;

use super::trainer::Trainer;
use crate::error::Result;
use crate::output::{grid, png, Reporter};

/// The fixed-noise grids (one row per grid class) of G and G_ema and G_ema's attention figures, to
/// TensorBoard and to `png` (G_ema's grid) and the attention PNGs beside it. Generated in chunks of
/// whole rows of at most `eval.batch` images; each attention figure annotates the first image of
/// each row from the very forward pass that drew the grid.
pub fn write_grids(
    t: &Trainer,
    r: &mut Reporter,
    grid: &(Tensor, Tensor),
    row_labels: &[String],
    png: &Path,
) -> Result<()> {
    let per_class = t.cfg.output.samples_per_class;
    let rows = grid.0.size()[0] / per_class;
    let chunk_rows = (t.cfg.eval.batch / per_class).max(1);
    let names = t.g_ema.attention_names();
    let (mut ema, mut raw, mut firsts) = (Vec::new(), Vec::new(), Vec::new());
    let mut maps: Vec<Vec<Tensor>> = names.iter().map(|_| Vec::new()).collect();
    for first_row in (0..rows).step_by(chunk_rows as usize) {
        let n = chunk_rows.min(rows - first_row) * per_class;
        let (z, y) = (
            grid.0.narrow(0, first_row * per_class, n),
            grid.1.narrow(0, first_row * per_class, n),
        );
        let (images, chunk_maps) = t.sample_with_attention(&z, &y);
        let row_starts =
            Tensor::arange_start_step(0, n, per_class, (tch::Kind::Int64, images.device()));
        firsts.push(images.index_select(0, &row_starts));
        for (all, m) in maps.iter_mut().zip(&chunk_maps) {
            all.push(m.index_select(0, &row_starts).to_device(tch::Device::Cpu));
        }
        ema.push(images);
        raw.push(t.sample_g(&z, &y));
    }
    let ema = grid::grid(&Tensor::cat(&ema, 0), rows);
    let ema_labelled = grid::labelled(&ema, row_labels);
    r.image("samples/G_ema", &ema_labelled, t.step)?;
    r.image(
        "samples/G",
        &grid::labelled(&grid::grid(&Tensor::cat(&raw, 0), rows), row_labels),
        t.step,
    )?;
    let firsts = Tensor::cat(&firsts, 0);
    for (name, m) in names.iter().zip(&maps) {
        let overlay = grid::labelled(
            &grid::attention_overlay(
                &firsts,
                &Tensor::cat(m, 0),
                &[(0.3, 0.3), (0.5, 0.5), (0.7, 0.6)],
            ),
            row_labels,
        );
        r.image(&format!("attention/G.{name}"), &overlay, t.step)?;
        png::save_png(
            &overlay,
            &png.with_file_name(format!("attention_G.{name}.png")),
        )?;
    }
    let pixels: Vec<f64> = Vec::<f32>::try_from(&ema.to_kind(tch::Kind::Float).view([-1]))
        .expect("f32 pixels")
        .into_iter()
        .map(f64::from)
        .collect();
    r.histogram("samples/G_ema_pixels", &pixels, t.step)?;
    png::save_png(&ema_labelled, png)?;
    r.flush()
}
