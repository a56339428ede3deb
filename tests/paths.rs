//! Relative paths in a config file resolve against the file's directory, those given with `--set`
//! against the current directory; a run started from anywhere reads and writes the same places.
use std::path::Path;
use std::process::Command;

mod common;
use common::{bin, ok, sets, write_small_fmnist};

/// The overrides of a tiny CPU run that leave every path to the config file.
fn tiny(steps: i64) -> Vec<String> {
    sets(&[
        format!("train.steps={steps}"),
        "model.g_ch=16".into(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "train.threads=1".into(),
        "train.log_every=1".into(),
    ])
}

/// `exp/run.toml` with relative data and output paths, its data in `exp/data`, and an empty
/// directory `elsewhere/` to start from.
fn experiment(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let exp = root.join("exp");
    write_small_fmnist(&exp.join("data"), 64);
    let cfg = exp.join("run.toml");
    std::fs::write(
        &cfg,
        "[data]\ndataset = \"fashion-mnist\"\npath = \"data\"\n\n\
         [output]\ndir = \"./runs/first\"\n\n\
         [eval]\nenabled = false\nweights = \"../models/cls.safetensors\"\n",
    )
    .unwrap();
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    (cfg, elsewhere)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn paths_in_a_config_are_relative_to_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let (cfg, elsewhere) = experiment(&root);
    ok(&Command::new(bin())
        .current_dir(&elsewhere)
        .args(["train", "--config"])
        .arg(&cfg)
        .args(tiny(2))
        .output()
        .unwrap());
    let run = root.join("exp/runs/first");
    assert!(
        run.join("summary.json").is_file(),
        "no run in {}",
        run.display()
    );
    assert!(
        entries(&elsewhere).is_empty(),
        "the working directory got {:?}",
        entries(&elsewhere)
    );
    // The run's config.toml holds absolute paths, so it means the same wherever it is read.
    let saved: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        saved["data"]["path"].as_str().unwrap(),
        root.join("exp/data").to_str().unwrap()
    );
    assert_eq!(
        saved["output"]["dir"].as_str().unwrap(),
        run.to_str().unwrap()
    );
    assert_eq!(
        saved["eval"]["weights"].as_str().unwrap(),
        root.join("models/cls.safetensors").to_str().unwrap()
    );
}

#[test]
fn paths_given_with_set_are_relative_to_the_current_directory() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let (cfg, elsewhere) = experiment(&root);
    // A relative --config too: it is found from the current directory, its paths from its own.
    ok(&Command::new(bin())
        .current_dir(&elsewhere)
        .args(["train", "--config", "../exp/run.toml"])
        .args(tiny(1))
        .args(sets(&["output.dir=mine/run".into()]))
        .output()
        .unwrap());
    assert!(elsewhere.join("mine/run/summary.json").is_file());
    assert!(!root.join("exp/runs").exists());
    assert!(cfg.exists());
}

/// show-config prints the resolved paths: the shipped default, read from another directory, names
/// the repository's `.cache/` and `runs/`.
#[test]
fn show_config_prints_resolved_paths() {
    let elsewhere = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let text = ok(&Command::new(bin())
        .current_dir(elsewhere.path())
        .args(["show-config", "--config"])
        .arg(repo.join("configs/fmnist32.toml"))
        .output()
        .unwrap());
    let cfg: toml::Table = text.parse().unwrap();
    assert_eq!(
        cfg["eval"]["weights"].as_str().unwrap(),
        repo.join(".cache/fmnist_classifier.safetensors")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        cfg["output"]["dir"].as_str().unwrap(),
        repo.join("runs/fmnist32").to_str().unwrap()
    );
}
