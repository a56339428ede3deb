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
use super::gathered_rows;
use super::inception_score::{inception_score, Order, DEFAULT_SEED, DEFAULT_SPLITS};
use super::kernel_distance::{self, kid};
use super::precision_recall::precision_recall;
use super::real_features::{self, RealFeatures};
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
    /// KID's mean and standard deviation over its subsets, with `eval.kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid_std: Option<f64>,
    /// Improved precision and recall, with `eval.precision_recall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
}

impl Scores {
    /// KID and precision/recall, those computed, named for the feature network (`label`) as
    /// FID and IS are: `KID_<label>`, `KID_<label>_std`, `precision_<label>`, `recall_<label>`.
    pub fn real_sample_metrics(&self, label: &str) -> Vec<(String, f64)> {
        [
            ("KID", "", self.kid_mean),
            ("KID", "_std", self.kid_std),
            ("precision", "", self.precision),
            ("recall", "", self.recall),
        ]
        .into_iter()
        .filter_map(|(name, suffix, v)| v.map(|v| (format!("{name}_{label}{suffix}"), v)))
        .collect()
    }
}

/// What generated samples are scored against: the training set's FID statistics, and on rank 0
/// the real sample's features when KID or precision/recall are on (`real_features`).
pub struct Reference {
    pub fid: FidStats,
    pub real: Option<RealFeatures>,
}

impl From<FidStats> for Reference {
    fn from(fid: FidStats) -> Self {
        Self { fid, real: None }
    }
}

/// The FID reference statistics (`reference_stats`) and, when `cfg` asks for KID or
/// precision/recall, the real sample's features. Collective.
pub fn reference(
    comm: &dyn Comm,
    cfg: &EvalConfig,
    net: &FeatureNet,
    data: &Dataset,
    device: Device,
) -> Result<Reference> {
    Ok(Reference {
        fid: reference_stats(comm, cfg, net, data, device)?,
        real: real_features::compute(comm, cfg, net, data, device)?,
    })
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

/// Generates `num_samples` class-balanced samples with `generate` (z, y) -> images in [-1, 1],
/// spread over the ranks in full chunks of `eval.batch` (see the module docs), and scores them
/// against `reference`. Returns the scores on rank 0, None elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    comm: &dyn Comm,
    net: &FeatureNet,
    reference: &Reference,
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
    let mut my_features: Vec<u8> = Vec::new();
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
        my_logits.extend(gathered_rows::record(k, &logits));
        if real_features::wanted(cfg) {
            my_features.extend(gathered_rows::record(k, &f));
        }
    }
    let total = reduce_stats(comm, &stats)?;
    let gathered_logits = comm.gather_bytes(&my_logits, 0)?;
    let gathered_features = match real_features::wanted(cfg) {
        true => comm.gather_bytes(&my_features, 0)?,
        false => None,
    };
    let Some(gathered) = gathered_logits else {
        return Ok(None);
    };
    let fid = total.finish()?.frechet_distance(&reference.fid)?;
    let logits = gathered_rows::assemble(&gathered, n, "logits")?;
    let is = inception_score(&logits, DEFAULT_SPLITS, Order::NumpyShuffle(DEFAULT_SEED))?;
    // Sample i was generated for class i mod num_classes (see the labels above).
    let class_accuracy = net.classifies(num_classes).then(|| {
        let asked = Tensor::arange(n, (Kind::Int64, logits.device())).remainder(num_classes);
        accuracy(&logits, &asked)
    });
    let mut scores = Scores {
        fid,
        is_mean: is.mean,
        is_std: is.std,
        samples: n,
        seconds: 0.0,
        class_accuracy,
        kid_mean: None,
        kid_std: None,
        precision: None,
        recall: None,
    };
    if let Some(gathered) = gathered_features {
        let features = gathered_rows::assemble(&gathered, n, "feature")?;
        against_real_features(&mut scores, cfg, &features, reference.real.as_ref())?;
    }
    scores.seconds = started.elapsed().as_secs_f64();
    Ok(Some(scores))
}

/// KID and precision/recall of the generated `features` against the real sample, as `cfg` asks.
fn against_real_features(
    scores: &mut Scores,
    cfg: &EvalConfig,
    features: &Tensor,
    real: Option<&RealFeatures>,
) -> Result<()> {
    let Some(real) = real else {
        return Err(Error::Eval(
            "eval.kid or eval.precision_recall is on, but no real features were computed for \
             this evaluation"
                .into(),
        ));
    };
    let features = features.to_device(real.features.device());
    if cfg.kid {
        let k = kid(
            &features,
            &real.features,
            cfg.kid_subsets,
            cfg.kid_subset_size,
            kernel_distance::DEFAULT_SEED,
        )?;
        scores.kid_mean = Some(k.mean);
        scores.kid_std = Some(k.std);
    }
    if let Some(manifold) = &real.manifold {
        let pr = precision_recall(&features, manifold, cfg.pr_k)?;
        scores.precision = Some(pr.precision);
        scores.recall = Some(pr.recall);
    }
    Ok(())
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
    let reference = reference(comm, &cfg.eval, &net, &data, device)?;
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
