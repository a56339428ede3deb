//! What real images score: the references a generator's FID, IS and class accuracy are read
//! against. Fashion-MNIST's test set scored on the run's feature network: its FID against the
//! training-set statistics is the floor any generator can reach with this protocol (a perfect
//! generator draws new images from the same distribution, as the test set is), its IS and the
//! classifier's accuracy on it the ceiling.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::eval::accuracy;
use super::features::FeatureNet;
use super::fid::{FeatureStats, FidStats};
use super::inception_score::{inception_score, Order, DEFAULT_SEED, DEFAULT_SPLITS};
use crate::data::dataset::fashion_mnist;
use crate::error::Result;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct RealDataScores {
    /// How many test images were scored.
    pub images: i64,
    /// FID of the test set against the training-set reference statistics.
    pub fid_test_vs_train: f64,
    pub is_mean: f64,
    pub is_std: f64,
    /// The feature classifier's accuracy on the test set.
    pub class_accuracy: f64,
}

impl RealDataScores {
    /// One console line, each number named as the generated ones are.
    pub fn describe(&self, label: &str) -> String {
        format!(
            "real data ({} Fashion-MNIST test images): FID_{label} {:.3} against the training \
             statistics (the floor), IS_{label} {:.3} ± {:.3}, class accuracy {:.1}% (the ceilings)",
            self.images,
            self.fid_test_vs_train,
            self.is_mean,
            self.is_std,
            100.0 * self.class_accuracy
        )
    }

    /// (name, value) pairs, named as the generated images' metrics are.
    pub fn metrics(&self, label: &str) -> [(String, f64); 3] {
        [
            (format!("FID_{label}_test_vs_train"), self.fid_test_vs_train),
            (format!("IS_{label}_test"), self.is_mean),
            (format!("class_accuracy_{label}_test"), self.class_accuracy),
        ]
    }
}

/// Whether `data_dir` holds Fashion-MNIST's test split (`t10k-*`, gzipped or not) beside the
/// training split; a training set without one (a subset, a test fixture) has no references.
pub fn test_split_present(data_dir: &Path) -> bool {
    crate::data::native::has_idx_pair(data_dir, "test")
}

/// Scores Fashion-MNIST's test split (from the IDX files in `data_dir`, at `resolution`) on `net`
/// against the training set's `reference`. Runs on one rank, without collectives.
pub fn fashion_mnist_test(
    net: &FeatureNet,
    reference: &FidStats,
    data_dir: &Path,
    resolution: i64,
    device: Device,
) -> Result<RealDataScores> {
    let test = fashion_mnist(data_dir, "test", resolution)?;
    let n = test.len() as i64;
    let mut stats = FeatureStats::new(net.dim(), device);
    let mut logits = Vec::new();
    let batch = 1000;
    for start in (0..n).step_by(batch as usize) {
        let pixels = test
            .images(start as usize, batch.min(n - start) as usize)?
            .to_device(device);
        let (f, l) = net.features(&pixels);
        stats.add(&f)?;
        logits.push(l.to_kind(Kind::Double));
    }
    let logits = Tensor::cat(&logits, 0);
    let labels = Tensor::from_slice(test.labels()).to_device(logits.device());
    let is = inception_score(&logits, DEFAULT_SPLITS, Order::NumpyShuffle(DEFAULT_SEED))?;
    Ok(RealDataScores {
        images: n,
        fid_test_vs_train: stats.finish()?.frechet_distance(reference)?,
        is_mean: is.mean,
        is_std: is.std,
        class_accuracy: accuracy(&logits, &labels),
    })
}
