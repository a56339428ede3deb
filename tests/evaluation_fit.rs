//! Evaluation fits the data or says why not, at start-up: a feature network that cannot score the
//! run's images stops `sagan train` before anything is created, with a message that says what to
//! set; no shipped config panics or shows libtorch's C++ frames.
use std::path::Path;
use std::process::Command;

mod common;
use common::{assert_clean, bin, failed, ok, sets, small, train};

fn config(name: &str) -> String {
    format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

/// `sagan train --config configs/<name>.toml` into `run` with `extra` overrides; must fail.
fn train_fails(name: &str, run: &Path, extra: &[String]) -> String {
    let mut pairs = vec![
        format!("output.dir={}", run.display()),
        "train.threads=1".to_string(),
    ];
    pairs.extend_from_slice(extra);
    let text = failed(
        &Command::new(bin())
            .args(["train", "--config", &config(name)])
            .args(sets(&pairs))
            .output()
            .unwrap(),
    );
    assert_clean(&text);
    assert!(!run.exists(), "{} was created:\n{text}", run.display());
    text
}

#[test]
fn the_classifier_at_resolution_64_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = small(&dir.path().join("run"), 2);
    args.extend(sets(&[
        "model.resolution=64".into(),
        "eval.enabled=true".into(),
    ]));
    let text = failed(&train(0, &args).output().unwrap());
    assert_clean(&text);
    for needle in [
        "eval.feature_net = \"fmnist-classifier\"",
        "32x32",
        "model.resolution = 64",
        "eval.feature_net = \"inception\"",
        "eval.enabled = false",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
    assert!(!dir.path().join("run").exists());
}

#[test]
fn the_cifar10_config_with_evaluation_on_says_how_to_get_inception() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec!["eval.enabled=true".to_string()];
    // The shipped path, unless this checkout happens to hold the converted weights there.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/inception.safetensors");
    if shipped.exists() {
        extra.push(format!(
            "eval.weights={}",
            dir.path().join("inception.safetensors").display()
        ));
    }
    let text = train_fails("cifar10_32", &dir.path().join("run"), &extra);
    for needle in [
        "evaluation: eval.weights = ",
        "inception.safetensors: no such file",
        "pt_inception-2015-12-05-6726825d.pth",
        "scripts/convert_inception.py",
        "eval.enabled = false",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
}

#[test]
fn the_classifier_on_cifar10_names_everything_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let text = train_fails(
        "cifar10_32",
        &dir.path().join("run"),
        &[
            "eval.enabled=true".into(),
            "eval.feature_net=fmnist-classifier".into(),
        ],
    );
    for needle in [
        "data.dataset = \"cifar10\"",
        "model.img_channels = 3",
        "eval.feature_net = \"inception\"",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
}

/// Every shipped config, with evaluation as shipped and turned on: a clean start-up error (no
/// data here for CIFAR-10 and ImageNet; no Inception weights), never a panic or C++ frames.
#[test]
fn no_shipped_config_panics_at_start_up() {
    let dir = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap();
    let mut names: Vec<String> = dir
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .filter(|n: &String| n != "fmnist32") // it trains; tests/outputs.rs runs it
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        for eval in ["false", "true"] {
            let tmp = tempfile::tempdir().unwrap();
            let run = tmp.path().join("run");
            let out = Command::new(bin())
                .args(["train", "--config", &config(&name)])
                .args(sets(&[
                    format!("output.dir={}", run.display()),
                    format!("eval.enabled={eval}"),
                    "train.steps=1".into(),
                    "train.threads=1".into(),
                ]))
                .output()
                .unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_clean(&text);
            if !out.status.success() {
                assert!(text.contains("sagan: error: "), "{name}: {text}");
                assert!(!run.exists(), "{name}: run directory created:\n{text}");
            }
        }
    }
}

#[test]
fn a_run_without_evaluation_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&train(0, &small(&dir.path().join("run"), 1))
        .output()
        .unwrap());
    assert!(
        text.contains("evaluation is off (eval.enabled = false)"),
        "{text}"
    );
}
