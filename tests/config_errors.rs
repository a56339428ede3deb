//! Bad configs fail with a message that names the file and the key.
use std::process::Command;

fn show_config(toml: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sagan"))
        .arg("show-config")
        .arg("--config")
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // An error caused by an override names the override; any other, the file.
    let from_override = stderr.contains("error: --set ");
    if !out.status.success() && !from_override {
        assert!(
            stderr.contains("bad.toml"),
            "error does not name the file: {stderr}"
        );
    }
    (out.status.success(), stderr)
}

fn assert_error(toml: &str, extra: &[&str], needles: &[&str]) {
    let (ok, stderr) = show_config(toml, extra);
    assert!(!ok, "config was accepted: {toml}");
    for n in needles {
        assert!(stderr.contains(n), "error lacks {n:?}: {stderr}");
    }
}

#[test]
fn unknown_key() {
    assert_error(
        "[train]\nlearning_rate = 0.1\n",
        &[],
        &["train.learning_rate", "unknown field"],
    );
}

#[test]
fn unknown_section() {
    assert_error("[trian]\nsteps = 1\n", &[], &["unknown field `trian`"]);
}

#[test]
fn wrong_type() {
    assert_error(
        "[train]\nlr_d = \"fast\"\n",
        &[],
        &["train.lr_d", "invalid type"],
    );
}

#[test]
fn negative_learning_rate() {
    assert_error("[train]\nlr_g = -1e-4\n", &[], &["train.lr_g", "> 0"]);
}

#[test]
fn attention_where_the_architecture_has_no_such_resolution() {
    assert_error(
        "[model]\nresolution = 32\ng_attn_res = [64]\n",
        &[],
        &["model.g_attn_res", "no 64x64"],
    );
    assert_error(
        "[model]\nresolution = 128\nd_attn_res = [128]\n",
        &[],
        &["model.d_attn_res", "no 128x128"],
    );
}

#[test]
fn unknown_resolution() {
    assert_error(
        "[model]\nresolution = 48\n",
        &[],
        &["model.resolution", "48"],
    );
}

#[test]
fn bad_override_is_named() {
    assert_error("", &["--set", "train.steps=-5"], &["train.steps", "> 0"]);
    assert_error("", &["--set", "nonsense"], &["--set nonsense"]);
}

/// A mistake in an override is reported as that override's, never as the file's.
#[test]
fn override_errors_name_the_override_not_the_file() {
    let cases: [(&str, &[&str]); 4] = [
        ("train.step=20", &["unknown field `step`", "`train.step`"]),
        ("train.steps=-5", &["`train.steps` must be > 0"]),
        ("train.lr_d=fast", &["`train.lr_d`", "invalid type"]),
        ("model.resolution=48", &["`model.resolution`", "48"]),
    ];
    for (spec, needles) in cases {
        let (ok, stderr) = show_config("[train]\nsteps = 10\n", &["--set", spec]);
        assert!(!ok, "--set {spec} was accepted");
        assert!(
            stderr.contains(&format!("error: --set {spec}: ")),
            "does not name the override: {stderr}"
        );
        assert!(!stderr.contains("bad.toml"), "blames the file: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "error lacks {n:?}: {stderr}");
        }
    }
    // The file's own mistakes are still the file's, whatever else is overridden.
    let (_, stderr) = show_config("[train]\nsteps = -1\n", &["--set", "train.lr_d=0.001"]);
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("`train.steps`")
            && !stderr.contains("--set"),
        "{stderr}"
    );
}

#[test]
fn batch_must_split_over_ranks() {
    let cfg =
        sagan::config::Config::from_toml_str("[train]\nbatch_size = 30\n", "x.toml", &[]).unwrap();
    let err = cfg.batch_per_rank(4).unwrap_err().to_string();
    assert!(
        err.contains("train.batch_size") && err.contains("4 ranks"),
        "{err}"
    );
    assert_eq!(cfg.batch_per_rank(3).unwrap(), 10);
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["fmnist32", "cifar10_32", "imagenet128"] {
        let path = format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let (ok, stderr) = show_config(&std::fs::read_to_string(&path).unwrap(), &[]);
        assert!(ok, "{name}: {stderr}");
    }
}

#[test]
fn attention_after_a_size_that_several_blocks_share_is_ambiguous() {
    // The 32x32 discriminator's last three blocks all end at 8x8.
    assert_error(
        "[model]\nd_attn_res = [8]\n",
        &[],
        &["model.d_attn_res", "after blocks [1, 2, 3]", "occurs once"],
    );
}

/// Start-up refuses data that cannot fill the model or one batch, before anything runs.
fn train_error(sets: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagan"));
    cmd.args(["train", "--config"])
        .arg(format!(
            "{}/configs/fmnist32.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(["--set", "eval.enabled=false", "--set"])
        .arg(format!("output.dir={}", dir.path().join("run").display()));
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        !dir.path().join("run").exists(),
        "the run directory was created"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn fewer_classes_or_images_than_the_model_needs_are_start_up_errors() {
    let e = train_error(&["model.num_classes=12"]);
    assert!(
        e.contains("10 classes") && e.contains("`model.num_classes` = 12"),
        "{e}"
    );
    let e = train_error(&["train.batch_size=100000"]);
    assert!(
        e.contains("60000 images") && e.contains("fewer than one global batch"),
        "{e}"
    );
}

#[test]
fn kid_and_precision_recall_settings_must_fit_the_sample_count() {
    let base = "[eval]\nenabled = true\nnum_samples = 500\n";
    assert_error(
        &format!("{base}kid = true\nkid_subset_size = 1000\n"),
        &[],
        &[
            "eval.kid_subset_size",
            "from 2 to eval.num_samples (500), got 1000",
        ],
    );
    assert_error(
        &format!("{base}kid = true\nkid_subsets = 0\n"),
        &[],
        &["eval.kid_subsets", "> 0"],
    );
    assert_error(
        &format!("{base}precision_recall = true\npr_k = 500\n"),
        &[],
        &["eval.pr_k", "from 1 to eval.num_samples - 1 (499), got 500"],
    );
    // Off, the same numbers are not checked: they are not used.
    let (ok, stderr) = show_config(&format!("{base}kid_subset_size = 1000\n"), &[]);
    assert!(ok, "{stderr}");
}

#[test]
fn augmentation_policy_names_known_transforms() {
    assert_error(
        "[train]\naugment = \"diffaugment\"\naugment_policy = \"color,flip\"\n",
        &[],
        &[
            "train.augment_policy",
            "\"flip\"",
            "color, translation, cutout",
        ],
    );
    assert_error(
        "[train]\naugment = \"diffaugment\"\naugment_policy = \"\"\n",
        &[],
        &["train.augment_policy", "at least one transform"],
    );
    assert_error(
        "[train]\naugment = \"random\"\n",
        &[],
        &["train.augment", "unknown variant"],
    );
}
