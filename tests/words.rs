//! Clear words: every key documented (and docs/config.md up to date), every option with help text,
//! metric names that carry their feature network, and `fid-stats --compare` that says 0 for a file
//! against itself and refuses options it would ignore.
use std::path::Path;
use std::process::Command;

mod common;
use common::{bin, default_config, failed, ok, sets, untrained_classifier, write_small_fmnist};

#[test]
fn explain_documents_every_key_and_docs_config_md_is_its_output() {
    let text = ok(&Command::new(bin())
        .args(["show-config", "--explain"])
        .output()
        .unwrap());
    let stdout = text.trim_end_matches('\n').to_string() + "\n";
    for (key, default) in sagan::config::explain::flatten(&sagan::config::Config::default()) {
        let row = format!("| `{key}` | `{}` |", sagan::config::explain::show(&default));
        assert!(stdout.contains(&row), "no row {row:?} in:\n{stdout}");
    }
    let md = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
    let on_disk = std::fs::read_to_string(&md).unwrap_or_default();
    let generated = String::from_utf8(
        Command::new(bin())
            .args(["show-config", "--explain"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        on_disk == generated,
        "docs/config.md is out of date: regenerate it with \
         `target/release/sagan show-config --explain > docs/config.md`"
    );
    // With a config, its values are shown beside the defaults.
    let with = ok(&Command::new(bin())
        .args(["show-config", "--explain", "--config", &default_config()])
        .args(sets(&["train.steps=77".into()]))
        .output()
        .unwrap());
    assert!(with.contains("| `train.steps` | `77` | `1000` |"), "{with}");
}

/// Every option has help text (src/cli.rs checks each one through clap); here, as a user sees it.
#[test]
fn options_explain_themselves() {
    let help = ok(&Command::new(bin())
        .args(["train", "--help"])
        .output()
        .unwrap());
    assert!(
        help.contains("--config <FILE>") && help.contains("The run's TOML config"),
        "{help}"
    );
    assert!(help.contains("relative to the current directory"), "{help}");
    let help = ok(&Command::new(bin())
        .args(["fid-stats", "--help"])
        .output()
        .unwrap());
    assert!(
        help.contains("--config <FILE>") && help.contains("feature network"),
        "{help}"
    );
}

/// `sagan eval` and `fid-stats --compare` name their numbers for the feature network; a file
/// against itself is 0, not a round-off negative; options --compare would ignore are refused.
#[test]
fn eval_and_compare_name_the_feature_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cls = untrained_classifier(&d.join("cls.safetensors"));
    let data = write_small_fmnist(&d.join("data"), 200);
    let mut common_sets = vec![
        "model.g_ch=16".to_string(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "train.threads=1".into(),
        format!("data.path={}", data.display()),
    ];
    let mut train = common_sets.clone();
    train.extend([
        "train.steps=1".into(),
        "eval.enabled=false".into(),
        format!("output.dir={}", d.join("run").display()),
    ]);
    ok(&Command::new(bin())
        .args(["train", "--config", &default_config()])
        .args(sets(&train))
        .output()
        .unwrap());
    common_sets.extend([
        format!("eval.weights={}", cls.display()),
        format!("eval.reference_stats={}", d.join("ref.npz").display()),
        "eval.num_samples=50".into(),
        "eval.batch=50".into(),
    ]);
    let text = ok(&Command::new(bin())
        .args(["eval", "--config", &default_config(), "--checkpoint"])
        .arg(d.join("run/G_ema.safetensors"))
        .args(sets(&common_sets))
        .output()
        .unwrap());
    assert!(
        text.contains(": FID_fmnist_classifier ") && text.contains("  IS_fmnist_classifier "),
        "{text}"
    );
    // No bare "FID <number>" anywhere.
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        !words
            .windows(2)
            .any(|w| w[0] == "FID" && w[1].parse::<f64>().is_ok()),
        "{text}"
    );

    let stats = d.join("ref.npz");
    let same = ok(&Command::new(bin())
        .args(["fid-stats", "--compare"])
        .args([&stats, &stats])
        .output()
        .unwrap());
    // Round-off may leave a tiny positive value; never a negative one.
    let words: Vec<&str> = same.split_whitespace().collect();
    assert_eq!(words[0], "FID_fmnist_classifier", "{same}");
    let fid: f64 = words[1].parse().unwrap();
    assert!(
        (0.0..1e-6).contains(&fid) && !words[1].starts_with('-'),
        "{same}"
    );
    for extra in [
        vec!["--config".to_string(), default_config()],
        vec!["--out".into(), d.join("x.npz").display().to_string()],
        vec!["--set".into(), "eval.batch=10".into()],
    ] {
        let err = failed(
            &Command::new(bin())
                .args(["fid-stats", "--compare"])
                .args([&stats, &stats])
                .args(&extra)
                .output()
                .unwrap(),
        );
        assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
    }
}
