//! The embedded default's feature network: a small Fashion-MNIST CNN trained by
//! `sagan train-classifier`. Inception weights cannot be downloaded here, so FID and IS of the
//! default run are computed on this network's features and logits, and named for it
//! (`FID_fmnist_classifier`, `IS_fmnist_classifier`); they are not comparable with Inception numbers.
use std::path::Path;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::data::dataset::fashion_mnist;
use crate::error::{Error, Result};

/// Penultimate-layer width: the FID feature dimension.
pub const FEATURES: i64 = 128;
/// What the classifier takes: Fashion-MNIST's grayscale images padded to 32x32, 10 classes.
pub const CHANNELS: i64 = 1;
pub const RESOLUTION: i64 = 32;
pub const CLASSES: i64 = 10;

pub struct Classifier {
    pub vs: nn::VarStore,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Classifier {
    pub fn new(device: Device, classes: i64) -> Self {
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let conv = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Self {
            conv1: nn::conv2d(&p / "conv1", 1, 32, 3, conv),
            conv2: nn::conv2d(&p / "conv2", 32, 64, 3, conv),
            fc1: nn::linear(&p / "fc1", 64 * 8 * 8, FEATURES, Default::default()),
            fc2: nn::linear(&p / "fc2", FEATURES, classes, Default::default()),
            vs,
        }
    }

    /// (features, logits) of (N, 1, 32, 32) images in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.conv1.forward(x).relu().max_pool2d_default(2);
        let h = self.conv2.forward(&h).relu().max_pool2d_default(2);
        let f = self.fc1.forward(&h.flatten(1, -1)).relu();
        let logits = self.fc2.forward(&f);
        (f, logits)
    }

    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Data {
                path: path.to_path_buf(),
                msg: "no classifier weights here; build them with `sagan train-classifier`".into(),
            });
        }
        let mut c = Self::new(device, CLASSES);
        c.vs.load(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            msg: format!("cannot load classifier weights: {e}"),
        })?;
        c.vs.freeze();
        Ok(c)
    }

    /// Test-set accuracy on Fashion-MNIST.
    pub fn accuracy(&self, data_dir: &Path) -> Result<f64> {
        let test = fashion_mnist(data_dir, "test", 32)?;
        let n = test.len() as i64;
        let mut correct = 0i64;
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(1000) {
                let idx: Vec<i64> = (start..(start + 1000).min(n)).collect();
                let (x, y) = test.batch(&idx, self.vs.device())?;
                let (_, logits) = self.forward(&x);
                correct += logits
                    .argmax(1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[]);
            }
            Ok(())
        })?;
        Ok(correct as f64 / n as f64)
    }
}

/// Trains the classifier reproducibly (fixed seed, fixed order) and writes its weights to `out`.
/// Returns the test accuracy.
pub fn train(data_dir: &Path, out: &Path, epochs: i64, device: Device) -> Result<f64> {
    tch::manual_seed(1234);
    let data = fashion_mnist(data_dir, "train", 32)?;
    let c = Classifier::new(device, 10);
    let mut opt = nn::Adam::default().build(&c.vs, 1e-3)?;
    let n = data.len() as i64;
    let batch = 128;
    for epoch in 0..epochs {
        // A short final phase at a lower rate gains about a point of accuracy.
        opt.set_lr(if epoch + 1 == epochs && epochs > 1 {
            2e-4
        } else {
            1e-3
        });
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let order = Vec::<i64>::try_from(&order).expect("int64 permutation");
        for chunk in order.chunks(batch) {
            let (x, y) = data.batch(chunk, device)?;
            let (_, logits) = c.forward(&x);
            let loss = logits.cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
        }
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    c.vs.save(out)?;
    c.accuracy(data_dir)
}
