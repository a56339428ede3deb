//! Distributed evaluation: every rank generates its share of the samples, computes features and
//! logits; the float64 feature sums are all-reduced, the logits gathered to rank 0, and rank 0
//! computes FID and IS. Sample i is the same whatever the number of ranks (its noise comes from its
//! chunk's own seed), so N ranks give the single-rank numbers.
//!
//! Generated images are quantised to uint8 exactly as the training images are stored (and as the
//! sample grids are written), so generated and real images reach the feature network through the
//! same path, as they do when pytorch-fid or torch-fidelity read PNG files.
//!
//! # Batch statistics
//!
//! The generator samples with batch statistics in its batch norms (`BnMode::Batch`), as in
//! training, and as BigGAN-PyTorch and StudioGAN evaluate G_ema by default. Running statistics
//! would not describe G_ema: they are accumulated from G's activations (not G_ema's averaged
//! weights) with momentum 0.001, i.e. over roughly the last thousand steps, and would need
//! re-estimating ("standing statistics") before every evaluation to be meaningful. With batch
//! statistics every image is normalised together with the others of its forward pass, so
//! [`evaluate`] generates only full chunks of `eval.batch` images (class-balanced, the surplus of
//! the last one dropped): no image is normalised by a tiny remainder batch. The scores still
//! depend on `eval.batch` as any batch-statistics protocol does (slightly, through the noise of
//! the batch moments); compare runs at the same `eval.batch`.

use tch::{Device, Kind, Tensor};

use super::classifier;
use super::features::reduce_stats;
pub use super::features::{dataset_stats, label, FeatureNet};
use super::fid::{FeatureStats, FidStats};
use super::inception_score::{inception_score, Order, DEFAULT_SEED, DEFAULT_SPLITS};
use super::reference;
use crate::config::{Config, DatasetKind, EvalConfig, FeatureNetKind};
use crate::data::Dataset;
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::model::inputs;

/// What to do instead, for messages about a feature network that cannot work.
const USE_INCEPTION: &str =
    "set eval.feature_net = \"inception\" and eval.weights to pytorch-fid's \
     Inception weights converted to safetensors (docs/metrics.md), or eval.enabled = false";

/// Checks, before anything starts, that `cfg.eval`'s feature network can score this run's images
/// and that its weights are there. Run on every rank, so every rank stops with the same message
/// instead of failing inside libtorch at the first evaluation.
pub fn check_fits(cfg: &Config) -> Result<()> {
    let e = &cfg.eval;
    match e.feature_net {
        FeatureNetKind::FmnistClassifier => check_classifier_fits(cfg)?,
        FeatureNetKind::Inception => {
            let c = cfg.model.img_channels;
            if c != 1 && c != 3 {
                return Err(Error::Eval(format!(
                    "Inception takes 1-channel (replicated) or 3-channel images, but \
                     model.img_channels = {c}; set eval.enabled = false"
                )));
            }
        }
    }
    check_weights_present(e)
}

/// The classifier is a 10-class Fashion-MNIST CNN on 1-channel 32x32 images; anything else would
/// either crash in its first layers or give numbers that mean nothing.
fn check_classifier_fits(cfg: &Config) -> Result<()> {
    let m = &cfg.model;
    let mut misfits = Vec::new();
    if cfg.data.dataset != DatasetKind::FashionMnist {
        let name = toml::Value::try_from(cfg.data.dataset).map(|v| v.to_string());
        misfits.push(format!(
            "data.dataset = {} (its features mean nothing for other images)",
            name.unwrap_or_default()
        ));
    }
    if m.img_channels != classifier::CHANNELS {
        misfits.push(format!("model.img_channels = {}", m.img_channels));
    }
    if m.resolution != classifier::RESOLUTION {
        misfits.push(format!("model.resolution = {}", m.resolution));
    }
    if m.num_classes != classifier::CLASSES {
        misfits.push(format!("model.num_classes = {}", m.num_classes));
    }
    if misfits.is_empty() {
        return Ok(());
    }
    // A Fashion-MNIST run that differs only in resolution can also go back to the classifier's.
    let only_resolution = misfits.len() == 1 && m.resolution != classifier::RESOLUTION;
    let or_resolution = if only_resolution {
        format!(" (or model.resolution = {})", classifier::RESOLUTION)
    } else {
        String::new()
    };
    Err(Error::Eval(format!(
        "eval.feature_net = \"fmnist-classifier\" scores Fashion-MNIST images of {} channel, \
         {res}x{res} pixels, {} classes, but this run has {}: {USE_INCEPTION}{or_resolution}",
        classifier::CHANNELS,
        classifier::CLASSES,
        misfits.join(", "),
        res = classifier::RESOLUTION,
    )))
}

/// The weights file must exist; the message says how to make or get it.
fn check_weights_present(e: &EvalConfig) -> Result<()> {
    if e.weights.is_file() {
        return Ok(());
    }
    let w = e.weights.display();
    let what = if e.weights.as_os_str().is_empty() {
        "eval.weights is empty".to_string()
    } else {
        format!("eval.weights = {w}: no such file")
    };
    Err(Error::Eval(match e.feature_net {
        FeatureNetKind::FmnistClassifier => format!(
            "{what}. Build the classifier once with `sagan train-classifier --out {w}` (a few \
             minutes on a CPU), or point eval.weights at it"
        ),
        FeatureNetKind::Inception => format!(
            "{what}. Inception FID/IS need pytorch-fid's weights: download \
             pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid, release \
             fid_weights) where there is internet, convert it once with `.venv/bin/python \
             scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth {target}` \
             (docs/metrics.md); or set eval.enabled = false",
            target = if e.weights.as_os_str().is_empty() {
                "inception.safetensors".to_string()
            } else {
                w.to_string()
            }
        ),
    }))
}

/// Images in [-1, 1] (G's tanh range) to the uint8 pixels they would be saved as:
/// round((x + 1) * 127.5), clamped, the inverse of `to_signed_unit` and what `output::grid::grid`
/// writes.
pub fn quantise(images: &Tensor) -> Tensor {
    ((images.detach().clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub fid: f64,
    pub is_mean: f64,
    pub is_std: f64,
    pub samples: i64,
    pub seconds: f64,
    /// The share of samples the feature network classifies as the class they were generated for;
    /// only where its classes are the dataset's (the Fashion-MNIST classifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_accuracy: Option<f64>,
}

/// Loads the reference statistics, or computes them from `data` and writes them (rank 0), after
/// checking what a cached file was computed from (see `metrics::reference`). Collective.
pub fn reference_stats(
    comm: &dyn Comm,
    cfg: &EvalConfig,
    net: &FeatureNet,
    data: &Dataset,
    device: Device,
) -> Result<FidStats> {
    Ok(reference::ensure_reference_stats(comm, cfg, net, data, device)?.0)
}

/// The chunks of an evaluation of `n` samples in batches of `batch`: (chunk index, samples kept).
/// Every chunk is generated whole (`batch` images); only the last keeps fewer.
pub fn chunk_plan(n: i64, batch: i64) -> Vec<(i64, i64)> {
    let chunks = (n + batch - 1) / batch;
    (0..chunks).map(|k| (k, batch.min(n - k * batch))).collect()
}

/// One chunk's logits as a gather record: chunk index, sample count, logit width (u64 each), then
/// the f32 logits.
fn logits_record(k: i64, logits: &Tensor) -> Vec<u8> {
    let logits = logits
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
        .contiguous();
    let (rows, width) = logits.size2().expect("[n, classes] logits");
    let mut out: Vec<u8> = [k, rows, width]
        .iter()
        .flat_map(|&w| (w as u64).to_le_bytes())
        .collect();
    out.extend(
        Vec::<f32>::try_from(&logits.view([-1]))
            .expect("f32")
            .iter()
            .flat_map(|v| v.to_le_bytes()),
    );
    out
}

/// The gathered records as one `[n, classes]` float64 tensor in chunk order.
fn logits_from_records(gathered: &[Vec<u8>], n: i64) -> Result<Tensor> {
    let malformed = |r: usize| Error::Dist(format!("malformed logits record from rank {r}"));
    let mut chunks_by_index = Vec::new();
    for (r, bytes) in gathered.iter().enumerate() {
        let mut at = 0;
        while at < bytes.len() {
            let word = |i: usize| -> Result<i64> {
                let b = bytes.get(at + 8 * i..at + 8 * i + 8).ok_or(malformed(r))?;
                Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64)
            };
            let (k, size, width) = (word(0)?, word(1)?, word(2)?);
            at += 24;
            let len = (size * width * 4) as usize;
            let values: Vec<f32> = bytes
                .get(at..at + len)
                .ok_or(malformed(r))?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            chunks_by_index.push((k, width, values));
            at += len;
        }
    }
    chunks_by_index.sort_by_key(|c| c.0);
    let classes = chunks_by_index.first().map(|c| c.1).unwrap_or(0);
    let all: Vec<f32> = chunks_by_index.into_iter().flat_map(|c| c.2).collect();
    if all.len() as i64 != n * classes {
        return Err(Error::Dist(format!(
            "gathered {} logits for {n} samples of width {classes}",
            all.len()
        )));
    }
    Ok(Tensor::from_slice(&all)
        .view([n, classes])
        .to_kind(Kind::Double))
}

/// Generates `num_samples` class-balanced samples with `generate` (z, y) -> images in [-1, 1],
/// spread over the ranks in full chunks of `eval.batch` (see the module docs), and scores them
/// against `reference`. Returns the scores on rank 0, None elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    comm: &dyn Comm,
    net: &FeatureNet,
    reference: &FidStats,
    generate: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    num_classes: i64,
    z_dim: i64,
    cfg: &EvalConfig,
    seed: u64,
    device: Device,
) -> Result<Option<Scores>> {
    let started = std::time::Instant::now();
    let (n, batch) = (cfg.num_samples, cfg.batch);
    // Every rank sees the same config, so every rank stops here together, before any collective.
    if n < DEFAULT_SPLITS as i64 || batch <= 0 {
        return Err(Error::Model(format!(
            "evaluation needs `eval.num_samples` >= {DEFAULT_SPLITS} (IS splits) and `eval.batch` \
             > 0, got {n} and {batch}"
        )));
    }
    let mut stats = FeatureStats::new(net.dim(), device);
    let mut my_logits: Vec<u8> = Vec::new();
    for (k, keep) in chunk_plan(n, batch)
        .into_iter()
        .skip(comm.rank())
        .step_by(comm.size())
    {
        let (z, _) = inputs::fixed_inputs(1, batch, z_dim, seed.wrapping_add(k as u64), device);
        let y = Tensor::arange_start(k * batch, (k + 1) * batch, (Kind::Int64, device))
            .remainder(num_classes);
        let pixels = quantise(&generate(&z, &y)).narrow(0, 0, keep);
        let (f, logits) = net.features(&pixels);
        stats.add(&f)?;
        my_logits.extend(logits_record(k, &logits));
    }
    let total = reduce_stats(comm, &stats)?;
    let Some(gathered) = comm.gather_bytes(&my_logits, 0)? else {
        return Ok(None);
    };
    let fid = total.finish()?.frechet_distance(reference)?;
    let logits = logits_from_records(&gathered, n)?;
    let is = inception_score(&logits, DEFAULT_SPLITS, Order::NumpyShuffle(DEFAULT_SEED))?;
    // Sample i was generated for class i mod num_classes (see the labels above).
    let class_accuracy = net.classifies(num_classes).then(|| {
        let asked = Tensor::arange(n, (Kind::Int64, logits.device())).remainder(num_classes);
        accuracy(&logits, &asked)
    });
    Ok(Some(Scores {
        fid,
        is_mean: is.mean,
        is_std: is.std,
        samples: n,
        seconds: started.elapsed().as_secs_f64(),
        class_accuracy,
    }))
}

/// The share of rows of `logits` whose largest entry is at `labels`.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    logits
        .argmax(1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Double)
        .mean(None)
        .double_value(&[])
}

/// Scores a saved G_ema (safetensors with the generator's variable names) under `cfg`.
pub fn evaluate_checkpoint(
    cfg: &Config,
    comm: &dyn Comm,
    device: Device,
    weights: &std::path::Path,
) -> Result<Option<Scores>> {
    let g = crate::model::Generator::new(&cfg.model, device)?;
    let file = crate::checkpoint::weights::read(weights, None)?;
    crate::checkpoint::weights::copy_into(
        weights,
        "G_ema",
        &crate::model::named_variables(&g.vs),
        &file.tensors,
    )?;
    g.sn.refresh(crate::model::SnMode::Detached);
    check_fits(cfg)?;
    let net = FeatureNet::load(&cfg.eval, device)?;
    let data = Dataset::load(&cfg.data, &cfg.model, comm)?;
    let reference = reference_stats(comm, &cfg.eval, &net, &data, device)?;
    let generate =
        |z: &Tensor, y: &Tensor| tch::no_grad(|| g.forward(z, y, crate::model::BnMode::Batch));
    evaluate(
        comm,
        &net,
        &reference,
        &generate,
        cfg.model.num_classes,
        cfg.model.z_dim,
        &cfg.eval,
        cfg.train.seed as u64 ^ 0xe7a1,
        device,
    )
}
