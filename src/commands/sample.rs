//! `sagan sample`: images from a generator's weights file alone. Every weights file sagan writes
//! carries the config it was trained with in its metadata (see `checkpoint::weights_metadata`), so
//! the generator is rebuilt from the file, without the run's config file or directory.
//!
//! Samples are drawn as everywhere else in sagan: with batch statistics in the batch norms, all
//! images in one forward pass, W / sigma from the stored spectral-norm vectors (no power
//! iteration). The noise is `inputs::grid_inputs`'s for the seed (truncated with `--truncation`),
//! or an interpolation's (`--interpolate`). `--tensors` writes z, y and the images so that another
//! implementation (examples/load_g_ema.py) can be checked against these; `--npz` writes the
//! images for external evaluators.
use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Tensor};

use crate::checkpoint::weights;
use crate::cli::{Interpolate, SampleArgs};
use crate::config::Config;
use crate::data::class_names;
use crate::error::{Error, IoContext, Result};
use crate::metrics::npz;
use crate::model::inputs;
use crate::model::{self, BnMode, Generator, SnMode};
use crate::output::{grid, png};

/// What to draw and where to write it.
pub struct Request<'a> {
    pub weights: &'a Path,
    pub png: &'a Path,
    pub tensors: Option<&'a Path>,
    /// A directory for every sample as its own PNG.
    pub images: Option<&'a Path>,
    /// Classes, one grid row each; empty: `output.sample_classes` of the file's config.
    pub classes: &'a [i64],
    pub per_class: i64,
    pub seed: u64,
    pub truncation: Option<f64>,
    pub interpolate: Option<Interpolate>,
    pub npz: Option<&'a Path>,
}

/// What was drawn.
pub struct Drawn {
    /// "G_ema" or "G", from the file's metadata.
    pub network: String,
    pub step: i64,
    pub rows: usize,
}

/// A generator rebuilt from a weights file, with what its metadata says about it.
pub struct Loaded {
    pub g: Generator,
    pub cfg: Config,
    pub network: String,
    pub step: i64,
}

/// Rebuilds the generator a sagan weights file holds (G or G_ema), from its metadata and tensors.
pub fn load_generator(path: &Path, device: Device) -> Result<Loaded> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let file = weights::read(path, None)?;
    let meta = |key: &str| {
        file.metadata.get(key).cloned().ok_or_else(|| {
            bad(format!(
                "no `{key}` in its safetensors metadata: not a weights file written by sagan"
            ))
        })
    };
    let network = meta("network")?;
    if network != "G" && network != "G_ema" {
        return Err(bad(format!(
            "holds network {network}, not a generator (G or G_ema)"
        )));
    }
    let step = meta("step")?
        .parse()
        .map_err(|e| bad(format!("metadata `step` is not a number: {e}")))?;
    let origin = format!("{} (its metadata)", path.display());
    let cfg = Config::from_toml_str(&meta("config")?, &origin, &[])?;
    let g = Generator::new(&cfg.model, device)?;
    weights::copy_into(
        path,
        &network,
        &model::named_variables(&g.vs),
        &file.tensors,
    )?;
    g.sn.refresh(SnMode::Detached);
    Ok(Loaded {
        g,
        cfg,
        network,
        step,
    })
}

/// The classes to draw: the request's (checked), else the config's grid classes.
fn classes(requested: &[i64], cfg: &Config) -> Result<Vec<i64>> {
    let n = cfg.model.num_classes;
    if requested.is_empty() {
        return Ok(inputs::grid_classes(n, cfg.output.sample_classes));
    }
    match requested.iter().find(|&&c| !(0..n).contains(&c)) {
        Some(c) => Err(Error::Model(format!(
            "--classes: class {c} does not exist; the model has classes 0 to {}",
            n - 1
        ))),
        None => Ok(requested.to_vec()),
    }
}

/// Every image (`[rows * per_class, C, H, W]` in [-1, 1], row by row) as its own PNG in `dir`,
/// named by class number, class name and column.
fn write_each(
    images: &Tensor,
    classes: &[i64],
    per_class: i64,
    names: &[String],
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let pixels = crate::metrics::eval::quantise(images).to_device(Device::Cpu);
    for (row, (class, name)) in classes.iter().zip(names).enumerate() {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let slug = if slug == class.to_string() {
            String::new()
        } else {
            format!("_{slug}")
        };
        for col in 0..per_class {
            let image = pixels.get(row as i64 * per_class + col);
            let path = dir.join(format!("class{class}{slug}_{col:03}.png"));
            png::save_png(&image, &path)?;
        }
    }
    Ok(())
}

/// Draws the grid (and what the options add) on the CPU and says where it went.
pub fn run(args: SampleArgs) -> Result<u8> {
    let request = Request {
        weights: &args.weights,
        png: &args.out,
        tensors: args.tensors.as_deref(),
        images: args.images.as_deref(),
        classes: &args.classes,
        per_class: args.per_class,
        seed: args.seed,
        truncation: args.truncation,
        interpolate: args.interpolate,
        npz: args.npz.as_deref(),
    };
    let drawn = draw(&request, Device::Cpu)?;
    println!(
        "{} ({} at step {}): {} classes x {} samples -> {}",
        args.weights.display(),
        drawn.network,
        drawn.step,
        drawn.rows,
        args.per_class,
        args.out.display()
    );
    if let Some(dir) = &args.images {
        println!("  and each sample as a PNG in {}", dir.display());
    }
    if let Some(file) = &args.npz {
        println!(
            "  and the images as uint8 NHWC in {} (arr_0)",
            file.display()
        );
    }
    Ok(0)
}

/// Draws the grid (and the files) the request asks for.
pub fn draw(r: &Request, device: Device) -> Result<Drawn> {
    check(r)?;
    let Loaded {
        g,
        cfg,
        network,
        step,
    } = load_generator(r.weights, device)?;
    let classes = classes(r.classes, &cfg)?;
    let (z, y) = inputs_for(r, &classes, &cfg, device);
    let images = tch::no_grad(|| g.forward(&z, &y, BnMode::Batch));
    let rows = classes.len();
    let mut names = class_names::row_labels(cfg.data.dataset, cfg.model.num_classes, &classes);
    if r.interpolate == Some(Interpolate::Class) {
        names = (0..rows)
            .map(|i| format!("{} > {}", names[i], names[(i + 1) % rows]))
            .collect();
    }
    let grid = grid::labelled(&grid::grid(&images, rows as i64), &names);
    png::save_png(&grid, r.png)?;
    if let Some(dir) = r.images {
        write_each(&images, &classes, r.per_class, &names, dir)?;
    }
    if let Some(path) = r.tensors {
        let tensors: Vec<(String, Tensor)> = [("z", &z), ("y", &y), ("images", &images)]
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.to_device(Device::Cpu).contiguous()))
            .collect();
        let meta = BTreeMap::from([
            ("weights".to_string(), r.weights.display().to_string()),
            ("seed".to_string(), r.seed.to_string()),
            (
                "about".to_string(),
                "z, y and G(z, y) in [-1, 1], drawn by `sagan sample` in one forward pass with \
                 batch statistics"
                    .to_string(),
            ),
        ]);
        weights::write(path, &tensors, &meta)?;
    }
    if let Some(path) = r.npz {
        write_npz(path, &images, (y.dim() == 1).then_some(&y))?;
    }
    Ok(Drawn {
        network,
        step,
        rows,
    })
}

fn check(r: &Request) -> Result<()> {
    let least = if r.interpolate.is_some() { 2 } else { 1 };
    if r.per_class < least {
        return Err(Error::Model(format!(
            "--per-class must be >= {least}{}, got {}",
            if least == 2 {
                " (the steps of an interpolation)"
            } else {
                ""
            },
            r.per_class
        )));
    }
    if let Some(t) = r.truncation {
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::Model(format!(
                "--truncation must be a number > 0 (values of |z| above it are drawn again), got {t}"
            )));
        }
    }
    Ok(())
}

/// The noise and classes (indices, or class weights for a class interpolation) of the request.
fn inputs_for(r: &Request, classes: &[i64], cfg: &Config, device: Device) -> (Tensor, Tensor) {
    let (steps, z_dim, t) = (r.per_class, cfg.model.z_dim, r.truncation);
    match r.interpolate {
        None => inputs::grid_inputs_truncated(classes, steps, z_dim, r.seed, t, device),
        Some(Interpolate::Z) => {
            inputs::noise_interpolation(classes, steps, z_dim, r.seed, t, device)
        }
        Some(Interpolate::Class) => {
            let n = cfg.model.num_classes;
            inputs::class_interpolation(classes, n, steps, z_dim, r.seed, t, device)
        }
    }
}

/// The images as uint8 `[N, H, W, C]` (`arr_0`), and the class of each (`labels`) when given.
fn write_npz(path: &Path, images: &Tensor, labels: Option<&Tensor>) -> Result<()> {
    let nhwc = crate::metrics::eval::quantise(images)
        .permute([0, 2, 3, 1])
        .contiguous()
        .to_device(Device::Cpu);
    let shape: Vec<usize> = nhwc.size().iter().map(|&d| d as usize).collect();
    let bytes = Vec::<u8>::try_from(&nhwc.view([-1])).expect("uint8 images");
    let mut members = vec![("arr_0.npy", npz::encode_npy_u8_shaped(&shape, &bytes))];
    if let Some(y) = labels {
        let y = Vec::<i64>::try_from(&y.to_device(Device::Cpu)).expect("int64 labels");
        members.push(("labels.npy", npz::encode_npy_i64(&y)));
    }
    npz::write_npz(path, &members)
}
