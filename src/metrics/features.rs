//! The feature networks behind FID and IS (the Fashion-MNIST classifier or Inception v3), the
//! names that tie every metric to its network, and a dataset's feature statistics across ranks.
use tch::{Device, Kind, Tensor};

use super::classifier::{self, Classifier};
use super::fid::{FeatureStats, FidStats};
use super::inception::{self, InceptionV3};
use crate::config::{EvalConfig, FeatureNetKind};
use crate::data::dataset::to_signed_unit;
use crate::data::Dataset;
use crate::distributed::Comm;
use crate::error::Result;

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

    /// Whether the network's classes are a run's `num_classes` dataset classes, so that its
    /// prediction for a generated image can be checked against the class it was asked for.
    pub fn classifies(&self, num_classes: i64) -> bool {
        matches!(self, Self::FmnistClassifier(_)) && num_classes == classifier::CLASSES
    }

    /// Metric-name suffix that says which network the numbers come from.
    pub fn label(&self) -> &'static str {
        label(match self {
            Self::FmnistClassifier(_) => FeatureNetKind::FmnistClassifier,
            Self::Inception(_) => FeatureNetKind::Inception,
        })
    }

    pub fn dim(&self) -> i64 {
        match self {
            Self::FmnistClassifier(_) => classifier::FEATURES,
            Self::Inception(_) => inception::FEATURES,
        }
    }

    /// FID features of uint8 `[N, C, H, W]` images (pytorch-fid's input path for Inception).
    pub fn fid_features(&self, pixels: &Tensor) -> Tensor {
        tch::no_grad(|| match self {
            Self::FmnistClassifier(c) => c.forward(&to_signed_unit(pixels)).0,
            // pytorch-fid reads images with ToTensor(): uint8 / 255.
            Self::Inception(net) => net.pool3(&(rgb(pixels).to_kind(Kind::Float) / 255.0)),
        })
    }

    /// (FID features, IS logits) of uint8 `[N, C, H, W]` images. For Inception these are two
    /// passes: the features through pytorch-fid's input path, the logits through
    /// torch-fidelity's (TF1 resize of the uint8 pixels), so each metric equals its reference
    /// implementation's; the classifier gives both from one pass.
    pub fn features(&self, pixels: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| match self {
            Self::FmnistClassifier(c) => c.forward(&to_signed_unit(pixels)),
            Self::Inception(net) => (self.fid_features(pixels), net.is_logits(&rgb(pixels))),
        })
    }
}

/// The suffix of metric names computed on `kind` (FID_fmnist_classifier, IS_inception), so a
/// number never travels without the network it was measured with.
pub fn label(kind: FeatureNetKind) -> &'static str {
    match kind {
        FeatureNetKind::FmnistClassifier => "fmnist_classifier",
        FeatureNetKind::Inception => "inception",
    }
}

/// Grayscale is replicated to the three channels Inception takes, as image readers do.
fn rgb(pixels: &Tensor) -> Tensor {
    if pixels.size()[1] == 1 {
        pixels.repeat([1, 3, 1, 1])
    } else {
        pixels.shallow_clone()
    }
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
        let pixels = data
            .images((k * batch) as usize, batch.min(n - k * batch) as usize)?
            .to_device(device);
        stats.add(&net.fid_features(&pixels))?;
    }
    reduce_stats(comm, &stats)?.finish()
}

/// `stats` summed over the ranks (float64 sums, so the order of ranks does not matter).
pub fn reduce_stats(comm: &dyn Comm, stats: &FeatureStats) -> Result<FeatureStats> {
    let mut flat = stats.to_flat().contiguous();
    comm.all_reduce_sum(&mut flat)?;
    FeatureStats::from_flat(stats.dim(), &flat)
}
