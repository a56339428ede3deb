//! Distributed evaluation: every rank generates its share of the samples, computes features and
//! logits; the float64 feature sums are all-reduced and the logits gathered, and rank 0 computes
//! FID and IS. Sample i is the same whatever the number of ranks (its noise comes from its chunk's
//! own seed), so N ranks give the single-rank numbers.

use tch::{Device, Kind, Tensor};

use super::classifier::{self, Classifier};
use super::fid::{FeatureStats, FidStats};
use super::inception::{self, InceptionV3};
use super::inception_score::{inception_score, Order, DEFAULT_SEED, DEFAULT_SPLITS};
use super::npz;
use crate::config::{Config, EvalConfig, FeatureNetKind};
use crate::data::Dataset;
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::samples;

/// The network whose features and logits define FID and IS.
pub enum FeatureNet {
    FmnistClassifier(Box<Classifier>),
    Inception(Box<InceptionV3>),
}

impl FeatureNet {
    pub fn load(cfg: &EvalConfig, device: Device) -> Result<Self> {
        match cfg.feature_net {
            FeatureNetKind::FmnistClassifier => Ok(Self::FmnistClassifier(Box::new(
                Classifier::load(&cfg.weights, device)?,
            ))),
            FeatureNetKind::Inception => Ok(Self::Inception(Box::new(InceptionV3::load(
                &cfg.weights,
                device,
            )?))),
        }
    }

    /// Metric-name suffix that says which network the numbers come from.
    pub fn label(&self) -> &'static str {
        match self {
            Self::FmnistClassifier(_) => "fmnist_classifier",
            Self::Inception(_) => "inception",
        }
    }

    pub fn dim(&self) -> i64 {
        match self {
            Self::FmnistClassifier(_) => classifier::FEATURES,
            Self::Inception(_) => inception::FEATURES,
        }
    }

    /// (features, logits) for images in [-1, 1] as G produces them.
    pub fn features(&self, images: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| match self {
            Self::FmnistClassifier(c) => c.forward(images),
            // pytorch-fid takes RGB in [0, 1]; grayscale is replicated.
            Self::Inception(net) => {
                let x = (images + 1.0) / 2.0;
                let x = if x.size()[1] == 1 {
                    x.repeat([1, 3, 1, 1])
                } else {
                    x
                };
                net.forward(&x)
            }
        })
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scores {
    pub fid: f64,
    pub is_mean: f64,
    pub is_std: f64,
    pub samples: i64,
    pub seconds: f64,
}

/// Reference statistics of a dataset's images, computed across ranks (each takes every W-th chunk).
pub fn dataset_stats(
    comm: &dyn Comm,
    net: &FeatureNet,
    data: &Dataset,
    batch: i64,
    device: Device,
) -> Result<FidStats> {
    let n = data.len() as i64;
    let mut stats = FeatureStats::new(net.dim(), device);
    let chunks = (n + batch - 1) / batch;
    for k in (comm.rank() as i64..chunks).step_by(comm.size()) {
        let idx: Vec<i64> = (k * batch..((k + 1) * batch).min(n)).collect();
        let (x, _) = data.batch(&idx, device);
        stats.add(&net.features(&x).0)?;
    }
    reduce_stats(comm, &stats)?.finish()
}

fn reduce_stats(comm: &dyn Comm, stats: &FeatureStats) -> Result<FeatureStats> {
    let mut flat = stats.to_flat().contiguous();
    comm.all_reduce_sum(&mut flat)?;
    FeatureStats::from_flat(stats.dim(), &flat)
}

/// Loads the reference statistics, or computes them from `data` and writes them (rank 0).
pub fn reference_stats(
    comm: &dyn Comm,
    cfg: &EvalConfig,
    net: &FeatureNet,
    data: &Dataset,
    device: Device,
) -> Result<FidStats> {
    let path = &cfg.reference_stats;
    if path.exists() {
        return npz::load_fid_stats(path);
    }
    let stats = dataset_stats(comm, net, data, cfg.batch, device)?;
    if comm.rank() == 0 {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        npz::save_fid_stats(path, &stats)?;
    }
    Ok(stats)
}

/// Generates `num_samples` class-balanced samples with `generate` (z, y) -> images, spread over the
/// ranks, and scores them against `reference`. Returns the scores on rank 0, None elsewhere.
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
    let chunks = (n + batch - 1) / batch;
    let mut stats = FeatureStats::new(net.dim(), device);
    let mut my_logits: Vec<u8> = Vec::new();
    for k in (comm.rank() as i64..chunks).step_by(comm.size()) {
        let size = batch.min(n - k * batch);
        let (z, _) = samples::fixed_inputs(1, size, z_dim, seed.wrapping_add(k as u64), device);
        let y = (Tensor::arange_start(k * batch, k * batch + size, (Kind::Int64, device)))
            .remainder(num_classes);
        let images = generate(&z, &y);
        let (f, logits) = net.features(&images);
        stats.add(&f)?;
        let logits = logits
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous();
        for word in [k, size, logits.size()[1]] {
            my_logits.extend((word as u64).to_le_bytes());
        }
        my_logits.extend(
            Vec::<f32>::try_from(&logits.view([-1]))
                .expect("f32")
                .iter()
                .flat_map(|v| v.to_le_bytes()),
        );
    }
    let total = reduce_stats(comm, &stats)?;
    let gathered = comm.all_gather_bytes(&my_logits)?;
    if comm.rank() != 0 {
        return Ok(None);
    }
    let fid = total.finish()?.frechet_distance(reference)?;
    // Records: chunk index, sample count, logit width (u64 each), then the f32 logits.
    let mut chunks_by_index = Vec::new();
    for bytes in &gathered {
        let mut at = 0;
        while at < bytes.len() {
            let word = |i: usize| {
                u64::from_le_bytes(
                    bytes[at + 8 * i..at + 8 * i + 8]
                        .try_into()
                        .expect("8 bytes"),
                ) as i64
            };
            let (k, size, width) = (word(0), word(1), word(2));
            at += 24;
            let len = (size * width * 4) as usize;
            let values: Vec<f32> = bytes[at..at + len]
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
    let logits = Tensor::from_slice(&all)
        .view([n, classes])
        .to_kind(Kind::Double);
    let is = inception_score(&logits, DEFAULT_SPLITS, Order::NumpyShuffle(DEFAULT_SEED))?;
    Ok(Some(Scores {
        fid,
        is_mean: is.mean,
        is_std: is.std,
        samples: n,
        seconds: started.elapsed().as_secs_f64(),
    }))
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
    let net = FeatureNet::load(&cfg.eval, device)?;
    let data = Dataset::load(&cfg.data, &cfg.model)?;
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
