//! Evaluation on the embedded default: the classifier's accuracy, FID/IS across ranks, and a real
//! training run whose FID falls.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;
use common::{bin, default_config, mpirun, ok, sets};

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
    let acc = c
        .accuracy(Path::new("/usr/share/datasets/fashion-mnist"))
        .unwrap();
    assert!(acc >= 0.90, "test accuracy {acc}");
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
    assert!(fid1 > 0.0 && is1 >= 1.0);
    assert!(
        (fid1 - fid2).abs() <= 1e-9 * fid1.max(1.0) + 2e-9,
        "FID {fid1} (1 rank) vs {fid2} (2 ranks)"
    );
    assert!((is1 - is2).abs() <= 1e-9, "IS {is1} vs {is2}");
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

#[test]
fn a_short_two_rank_run_lowers_the_classifier_fid() {
    let dir = tempfile::tempdir().unwrap();
    let cls = trained_classifier();
    let args = sets(&[
        "train.steps=150".into(),
        "train.sample_every=0".into(),
        format!("output.dir={}", dir.path().join("run").display()),
        format!("eval.weights={}", cls.display()),
        format!(
            "eval.reference_stats={}",
            dir.path().join("ref.npz").display()
        ),
        "eval.num_samples=2000".into(),
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
    let start = summary["scores_start"]["G_ema"]["FID_fmnist_classifier"]
        .as_f64()
        .unwrap();
    let end = summary["scores_end"]["G_ema"]["FID_fmnist_classifier"]
        .as_f64()
        .unwrap();
    assert_eq!(summary["feature_net"], "fmnist_classifier");
    assert!(
        end < 0.8 * start,
        "FID_fmnist_classifier {start} -> {end}\n{text}"
    );
    assert!(text.contains("FID_fmnist_classifier"), "{text}");
}
