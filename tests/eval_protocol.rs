//! The sampling protocol of evaluation: full chunks of `eval.batch` generated images (sampling
//! uses batch statistics, so a small remainder batch would be normalised differently), quantised
//! to uint8 like the training images, the first `eval.num_samples` of them scored; and the config
//! errors that keep an evaluation from failing on rank 0 alone.
use std::cell::RefCell;

use sagan::config::{Config, EvalConfig};
use sagan::distributed::LocalComm;
use sagan::metrics::classifier::Classifier;
use sagan::metrics::eval::{evaluate, quantise, FeatureNet};
use sagan::metrics::inception_score::{inception_score, Order, DEFAULT_SEED, DEFAULT_SPLITS};
use sagan::metrics::{FeatureStats, FidStats};
use sagan::model::inputs::fixed_inputs;
use tch::{Device, Kind, Tensor};

const Z_DIM: i64 = 1024;
const SEED: u64 = 77;

/// A stand-in generator that, like G sampling with batch statistics, normalises each latent
/// dimension over the batch it is given: a 10-image batch gives images unlike a 100-image one.
fn batch_normalised(z: &Tensor, _y: &Tensor) -> Tensor {
    let mean = z.mean_dim(0, true, Kind::Float);
    let std = z.std_dim(0, true, true);
    ((z - mean) / (std + 1e-5)).tanh().view([-1, 1, 32, 32])
}

fn classifier() -> FeatureNet {
    tch::manual_seed(5);
    FeatureNet::FmnistClassifier(Box::new(Classifier::new(Device::Cpu, 10)))
}

fn reference() -> FidStats {
    FidStats {
        mu: Tensor::zeros([128], (Kind::Double, Device::Cpu)),
        sigma: Tensor::eye(128, (Kind::Double, Device::Cpu)),
    }
}

#[test]
fn every_generated_chunk_is_a_full_batch_and_the_first_n_samples_are_scored() {
    let net = classifier();
    let (n, batch) = (1010, 100);
    let cfg = EvalConfig {
        num_samples: n,
        batch,
        ..EvalConfig::default()
    };
    let sizes = RefCell::new(Vec::new());
    let generate = |z: &Tensor, y: &Tensor| {
        assert_eq!(z.size()[0], y.size()[0]);
        sizes.borrow_mut().push(z.size()[0]);
        batch_normalised(z, y)
    };
    let scores = evaluate(
        &LocalComm,
        &net,
        &reference().into(),
        &generate,
        10,
        Z_DIM,
        &cfg,
        SEED,
        Device::Cpu,
    )
    .unwrap()
    .expect("rank 0 gets the scores");
    assert_eq!(*sizes.borrow(), vec![batch; 11], "chunk sizes");
    assert_eq!(scores.samples, n);

    // The same scores from the protocol spelled out: chunk k holds samples k*batch.., its noise
    // seeded by SEED + k; all images quantised to uint8; the last chunk's surplus dropped.
    let mut feats = FeatureStats::new(128, Device::Cpu);
    let mut logits = Vec::new();
    for k in 0..11 {
        let (z, _) = fixed_inputs(1, batch, Z_DIM, SEED + k as u64, Device::Cpu);
        let y = Tensor::arange_start(k * batch, (k + 1) * batch, (Kind::Int64, Device::Cpu))
            .remainder(10);
        let pixels = quantise(&batch_normalised(&z, &y));
        assert_eq!(pixels.kind(), Kind::Uint8);
        let keep = batch.min(n - k * batch);
        let (f, l) = net.features(&pixels.narrow(0, 0, keep));
        feats.add(&f).unwrap();
        logits.push(l);
    }
    let fid = feats
        .finish()
        .unwrap()
        .frechet_distance(&reference())
        .unwrap();
    let is = inception_score(
        &Tensor::cat(&logits, 0),
        DEFAULT_SPLITS,
        Order::NumpyShuffle(DEFAULT_SEED),
    )
    .unwrap();
    assert!(
        (scores.fid - fid).abs() <= 1e-9 * fid,
        "{} vs {fid}",
        scores.fid
    );
    assert!((scores.is_mean - is.mean).abs() <= 1e-12 * is.mean);

    // A tiny remainder batch would have changed the scores: its images are normalised alone.
    let tail = batch_normalised(
        &fixed_inputs(1, 10, Z_DIM, SEED + 10, Device::Cpu).0,
        &Tensor::zeros([10], (Kind::Int64, Device::Cpu)),
    );
    let full = batch_normalised(
        &fixed_inputs(1, batch, Z_DIM, SEED + 10, Device::Cpu).0,
        &Tensor::zeros([batch], (Kind::Int64, Device::Cpu)),
    )
    .narrow(0, 0, 10);
    let moved = (quantise(&tail).to_kind(Kind::Float) - quantise(&full).to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        moved > 1.0,
        "remainder images differ by {moved} grey levels"
    );
}

#[test]
fn quantise_rounds_like_the_saved_images() {
    let x = Tensor::from_slice(&[-1.5f32, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0]);
    let q = Vec::<u8>::try_from(&quantise(&x)).unwrap();
    // round((x + 1) * 127.5) after clamping to [-1, 1]; 0 -> 127.5 rounds half to even (128).
    assert_eq!(q, vec![0, 0, 0, 128, 191, 255, 255]);
    // And back through the dataset's scaling, every level is where it started.
    let levels = Tensor::arange(256, (Kind::Uint8, Device::Cpu));
    let back = quantise(&sagan::data::dataset::to_signed_unit(&levels));
    assert_eq!(
        Vec::<u8>::try_from(&back).unwrap(),
        (0..=255).collect::<Vec<u8>>()
    );
}

#[test]
fn too_few_samples_for_the_is_splits_is_a_config_error() {
    let err = Config::from_toml_str(
        "",
        "x.toml",
        &["eval.enabled=true".into(), "eval.num_samples=9".into()],
    )
    .unwrap_err()
    .to_string();
    // The override set the value, so the error names the override, not the file.
    assert!(
        err.contains("--set eval.num_samples=9")
            && !err.contains("x.toml")
            && err.contains("`eval.num_samples`")
            && err.contains(">= 10"),
        "{err}"
    );
    Config::from_toml_str(
        "",
        "x.toml",
        &["eval.enabled=true".into(), "eval.num_samples=10".into()],
    )
    .unwrap();
}
