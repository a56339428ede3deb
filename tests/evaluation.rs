//! Evaluation on the embedded default: the classifier's accuracy, FID/IS across ranks, and a real
//! training run whose FID falls.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sagan::config::EvalConfig;
use sagan::data::dataset::{fashion_mnist, to_signed_unit};
use sagan::distributed::LocalComm;
use sagan::metrics::classifier::Classifier;
use sagan::metrics::eval::{evaluate, FeatureNet, Reference};
use sagan::metrics::real_data;
use sagan::metrics::{FeatureStats, FidStats};
use tch::{Device, Kind, Tensor};

mod common;
use common::{bin, default_config, mpirun, ok, sets};

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The trained classifier, built once per test binary by the real command.
fn trained_classifier() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fmnist_classifier.safetensors");
        let out = Command::new(bin())
            .args(["train-classifier", "--out", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = ok(&out);
        eprintln!("{text}");
        path
    })
}

#[test]
fn the_default_classifier_reaches_90_percent() {
    let path = trained_classifier();
    let c = sagan::metrics::classifier::Classifier::load(path, tch::Device::Cpu).unwrap();
    let acc = c.accuracy(Path::new(FMNIST)).unwrap();
    assert!(acc >= 0.90, "test accuracy {acc}");
}

/// The first `per_class` test images of each class, uint8 `[10, per_class, 1, 32, 32]`.
fn test_images_by_class(per_class: usize) -> Tensor {
    let test = fashion_mnist(Path::new(FMNIST), "test", 32).unwrap();
    let by_class: Vec<Tensor> = (0..10)
        .map(|c| {
            let idx: Vec<i64> = (0..test.len() as i64)
                .filter(|&i| test.labels()[i as usize] == c)
                .take(per_class)
                .collect();
            Tensor::stack(
                &idx.iter()
                    .map(|&i| test.images(i as usize, 1).unwrap().squeeze_dim(0))
                    .collect::<Vec<_>>(),
                0,
            )
        })
        .collect();
    Tensor::stack(&by_class, 0)
}

/// Class accuracy checks each sample against the class it was generated for: a "generator" that
/// returns real test images of the class asked for scores about the classifier's test accuracy,
/// one that answers with the next class scores about nothing. Both through chunks of `eval.batch`
/// that do not line up with the classes.
#[test]
fn class_accuracy_compares_each_sample_with_the_class_it_was_generated_for() {
    let net = FeatureNet::FmnistClassifier(Box::new(
        Classifier::load(trained_classifier(), Device::Cpu).unwrap(),
    ));
    let real = test_images_by_class(100);
    let answer = |shift: i64| {
        let real = real.shallow_clone();
        move |z: &Tensor, y: &Tensor| {
            // A different real image per sample (the noise picks which), of class y + shift.
            let which = (z.select(1, 0).abs() * 1000.0)
                .to_kind(Kind::Int64)
                .remainder(100);
            let class = (y + shift).remainder(10);
            let flat = real.view([1000, 1, 32, 32]);
            to_signed_unit(&flat.index_select(0, &(class * 100 + which)))
        }
    };
    let cfg = EvalConfig {
        num_samples: 1500,
        batch: 64,
        ..EvalConfig::default()
    };
    let reference = Reference::from(FidStats {
        mu: Tensor::zeros([128], (Kind::Double, Device::Cpu)),
        sigma: Tensor::eye(128, (Kind::Double, Device::Cpu)),
    });
    let score = |shift: i64| {
        evaluate(
            &LocalComm,
            &net,
            &reference,
            &answer(shift),
            10,
            8,
            &cfg,
            3,
            Device::Cpu,
        )
        .unwrap()
        .unwrap()
        .class_accuracy
        .expect("the classifier's classes are the dataset's")
    };
    let (right, wrong) = (score(0), score(1));
    assert!(right >= 0.85, "real images of the asked class: {right}");
    assert!(wrong <= 0.1, "real images of the next class: {wrong}");
}

/// The real-data references: the test set's class accuracy is the classifier's test accuracy,
/// its FID against the training statistics is small and its IS near the number of classes.
#[test]
fn the_real_data_references_score_the_test_set() {
    let net = FeatureNet::FmnistClassifier(Box::new(
        Classifier::load(trained_classifier(), Device::Cpu).unwrap(),
    ));
    let classifier = Classifier::load(trained_classifier(), Device::Cpu).unwrap();
    let train = fashion_mnist(Path::new(FMNIST), "train", 32).unwrap();
    let mut stats = FeatureStats::new(128, Device::Cpu);
    for start in (0..train.len()).step_by(1000) {
        stats
            .add(&net.fid_features(&train.images(start, 1000.min(train.len() - start)).unwrap()))
            .unwrap();
    }
    let r = real_data::fashion_mnist_test(
        &net,
        &stats.finish().unwrap(),
        Path::new(FMNIST),
        32,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.images, 10_000);
    let acc = classifier.accuracy(Path::new(FMNIST)).unwrap();
    assert!(
        (r.class_accuracy - acc).abs() < 1e-12,
        "{r:?} vs accuracy {acc}"
    );
    assert!(
        r.fid_test_vs_train > 0.0 && r.fid_test_vs_train < 5.0,
        "{r:?}"
    );
    assert!(r.is_mean > 6.0 && r.is_mean <= 10.0, "{r:?}");
    assert!(real_data::test_split_present(Path::new(FMNIST)));
    assert!(!real_data::test_split_present(Path::new(env!(
        "CARGO_MANIFEST_DIR"
    ))));
}

/// (FID, IS) from `sagan eval`'s line, whose metrics are named for the classifier.
fn parse_eval(text: &str) -> (f64, f64) {
    let line = text
        .lines()
        .find(|l| l.contains(": FID_fmnist_classifier "))
        .unwrap_or_else(|| panic!("no eval line in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |w: &str| {
        words[words.iter().position(|x| *x == w).unwrap() + 1]
            .parse::<f64>()
            .unwrap()
    };
    (at("FID_fmnist_classifier"), at("IS_fmnist_classifier"))
}

/// The value after `metric` on `sagan eval`'s line.
fn metric_in(text: &str, metric: &str) -> f64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == metric)
        .unwrap_or_else(|| panic!("no {metric} in {text}"));
    words[at + 1].parse().unwrap()
}

#[test]
fn fid_and_is_on_two_ranks_equal_the_single_rank_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Any fixed networks will do: an untrained classifier (0 epochs) and a G after 3 steps.
    let cls = d.join("cls.safetensors");
    ok(&Command::new(bin())
        .args([
            "train-classifier",
            "--epochs",
            "0",
            "--out",
            cls.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let small = [
        "model.g_ch=16".to_string(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "train.threads=1".into(),
    ];
    let mut train = small.to_vec();
    train.extend([
        "train.steps=3".into(),
        "eval.enabled=false".into(),
        format!("output.dir={}", d.join("run").display()),
    ]);
    ok(&Command::new(bin())
        .args(["train", "--config", &default_config()])
        .args(sets(&train))
        .output()
        .unwrap());
    let g = d.join("run/G_ema.safetensors");
    let eval_args = |stats: &str| {
        let mut e = small.to_vec();
        e.extend([
            format!("eval.weights={}", cls.display()),
            format!("eval.reference_stats={}", d.join(stats).display()),
            "eval.num_samples=1100".into(),
            "eval.batch=100".into(),
            "eval.kid=true".into(),
            "eval.kid_subsets=10".into(),
            "eval.kid_subset_size=500".into(),
            "eval.precision_recall=true".into(),
        ]);
        e
    };
    let one = ok(&Command::new(bin())
        .args([
            "eval",
            "--config",
            &default_config(),
            "--checkpoint",
            g.to_str().unwrap(),
        ])
        .args(sets(&eval_args("one.npz")))
        .output()
        .unwrap());
    let two = ok(&mpirun(2)
        .arg(bin())
        .args([
            "eval",
            "--config",
            &default_config(),
            "--checkpoint",
            g.to_str().unwrap(),
        ])
        .args(sets(&eval_args("two.npz")))
        .output()
        .unwrap());
    let (fid1, is1) = parse_eval(&one);
    let (fid2, is2) = parse_eval(&two);
    let accuracy = |text: &str| {
        let at = text.find("class accuracy ").expect("a class accuracy") + 15;
        text[at..].split('%').next().unwrap().to_string()
    };
    assert_eq!(accuracy(&one), accuracy(&two), "{one}\n{two}");
    assert!(fid1 > 0.0 && is1 >= 1.0);
    assert!(
        (fid1 - fid2).abs() <= 1e-9 * fid1.max(1.0) + 2e-9,
        "FID {fid1} (1 rank) vs {fid2} (2 ranks)"
    );
    assert!((is1 - is2).abs() <= 1e-9, "IS {is1} vs {is2}");
    // KID and precision/recall see every rank's features, gathered in sample order.
    for metric in [
        "KID_fmnist_classifier",
        "precision_fmnist_classifier",
        "recall_fmnist_classifier",
    ] {
        let (v1, v2) = (metric_in(&one, metric), metric_in(&two, metric));
        assert!(
            (v1 - v2).abs() <= 1e-9 * v1.abs().max(1.0),
            "{metric} {v1} vs {v2}"
        );
    }
    // The reference statistics computed by one and by two ranks agree too.
    let cmp = ok(&Command::new(bin())
        .args([
            "fid-stats",
            "--compare",
            d.join("one.npz").to_str().unwrap(),
            d.join("two.npz").to_str().unwrap(),
        ])
        .output()
        .unwrap());
    assert!(cmp.starts_with("FID_fmnist_classifier "), "{cmp}");
    let fid: f64 = cmp.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((0.0..1e-6).contains(&fid), "{cmp}");
}

/// The default config learns what it is asked for: a short 2-rank run lowers FID and lifts the
/// class accuracy of G_ema's samples well above chance (10%).
#[test]
fn a_short_two_rank_run_lowers_the_fid_and_learns_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let cls = trained_classifier();
    let args = sets(&[
        "train.steps=300".into(),
        "train.sample_every=0".into(),
        format!("output.dir={}", dir.path().join("run").display()),
        format!("eval.weights={}", cls.display()),
        format!(
            "eval.reference_stats={}",
            dir.path().join("ref.npz").display()
        ),
        "eval.num_samples=2000".into(),
        "eval.every=0".into(),
        "eval.kid=true".into(),
        "eval.precision_recall=true".into(),
    ]);
    let text = ok(&mpirun(2)
        .arg(bin())
        .args(["train", "--config", &default_config()])
        .args(&args)
        .output()
        .unwrap());
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap(),
    )
    .unwrap();
    let score = |when: &str, key: &str| summary[when]["G_ema"][key].as_f64().unwrap();
    assert_eq!(summary["feature_net"], "fmnist_classifier");
    let (start, end) = (
        score("scores_start", "FID_fmnist_classifier"),
        score("scores_end", "FID_fmnist_classifier"),
    );
    assert!(
        end < 0.8 * start,
        "FID_fmnist_classifier {start} -> {end}\n{text}"
    );
    let (acc0, acc) = (
        score("scores_start", "class_accuracy"),
        score("scores_end", "class_accuracy"),
    );
    assert!(
        acc0 < 0.2 && acc >= 0.25,
        "class accuracy {acc0} -> {acc} (chance: 0.1)\n{text}"
    );
    // KID falls and precision (realism) and recall (coverage) rise with the training.
    let kid = |when: &str| score(when, "KID_fmnist_classifier");
    assert!(
        kid("scores_end") < 0.8 * kid("scores_start"),
        "KID {} -> {}\n{text}",
        kid("scores_start"),
        kid("scores_end")
    );
    for metric in ["precision_fmnist_classifier", "recall_fmnist_classifier"] {
        let (a, b) = (score("scores_start", metric), score("scores_end", metric));
        assert!(b > a, "{metric} {a} -> {b}\n{text}");
    }
    // The references were scored once, from the real test split.
    assert!(
        summary["real_data"]["class_accuracy"].as_f64().unwrap() > 0.9,
        "{summary}"
    );
    assert!(text.contains("FID_fmnist_classifier"), "{text}");
}
