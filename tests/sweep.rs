//! `sagan sweep` run here: the expansion of a grid over seeds, and a sweep stopped by a signal
//! and started again (finished runs skipped, the checkpointed one resumed, every step once).
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{bin, default_config, logged_steps, ok, wait_for};

/// Tiny runs: small widths, no evaluation, a checkpoint every 10 steps.
fn tiny(steps: i64) -> Vec<String> {
    [
        format!("train.steps={steps}"),
        "model.g_ch=8".into(),
        "model.d_ch=8".into(),
        "model.z_dim=16".into(),
        "train.batch_size=16".into(),
        "train.threads=1".into(),
        "train.log_every=1".into(),
        "train.sample_every=0".into(),
        "train.checkpoint_every=10".into(),
        "eval.enabled=false".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn sweep(grid: &Path, out: &Path, seeds: usize, extra: &[String]) -> Command {
    let mut c = Command::new(bin());
    c.args(["sweep", "--config", &default_config()])
        .arg("--grid")
        .arg(grid)
        .arg("--out")
        .arg(out)
        .args(["--seeds", &seeds.to_string()])
        .args(extra);
    c
}

const TWO_ARMS: &str = r#"
[[arm]]
name = "wide"
set = { "model.g_ch" = 16 }
[[arm]]
name = "plain"
"#;

#[test]
fn a_dry_run_prints_every_run_in_order_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        format!("{TWO_ARMS}\n[cross]\n\"model.attention\" = [\"official\", \"paper\"]\n"),
    )
    .unwrap();
    let out = dir.path().join("sweep");
    let text = ok(&sweep(&grid, &out, 2, &tiny(5))
        .arg("--dry-run")
        .output()
        .unwrap());
    assert!(text.contains("4 arm(s) x 2 seed(s) = 8 run(s)"), "{text}");
    let runs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("[not started]"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut expect = Vec::new();
    for seed in [0, 1] {
        for arm in ["wide", "plain"] {
            for att in ["official", "paper"] {
                expect.push(format!("{arm}+attention={att}/seed{seed}"));
            }
        }
    }
    assert_eq!(runs, expect, "{text}");
    let first = text
        .lines()
        .find(|l| l.contains("wide+attention=paper/seed1"))
        .unwrap();
    assert!(
        first.contains("model.g_ch=16 model.attention=\"paper\" train.seed=1 output.dir="),
        "{first}"
    );
    assert_eq!(text.matches("would run: ").count(), 8, "{text}");
    assert!(!out.exists(), "a dry run created {}", out.display());
}

#[test]
fn a_bad_arm_fails_before_anything_trains_naming_the_arm_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[[arm]]\nname = \"bad\"\nset = { \"model.g_chh\" = 3 }\n",
    )
    .unwrap();
    let out = dir.path().join("sweep");
    let o = sweep(&grid, &out, 1, &tiny(5)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("arm `bad`") && err.contains("model.g_chh"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_stopped_sweep_started_again_skips_the_finished_run_and_resumes_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, TWO_ARMS).unwrap();
    let out = dir.path().join("sweep");
    let steps = 40;
    let mut child = sweep(&grid, &out, 1, &tiny(steps))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = out.join("plain/seed0");
    let mut ended = None;
    wait_for(240.0, || {
        ended = child.try_wait().unwrap();
        ended.is_some() || logged_steps(&second).len() >= 3
    });
    assert!(
        ended.is_none() && logged_steps(&second).len() >= 3,
        "the sweep ended ({ended:?}) or the second run never logged 3 steps:\n{}",
        common::failed(&child.wait_with_output().unwrap())
    );
    common::kill("-USR1", child.id());
    let first = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(first.status.code(), Some(75), "{text}");
    assert!(
        text.contains("stopped by a signal during plain/seed0"),
        "{text}"
    );
    assert!(out.join("wide/seed0/summary.json").is_file(), "{text}");
    assert!(!second.join("summary.json").exists(), "{text}");
    let stopped_at = logged_steps(&second).last().copied().unwrap();
    assert!(stopped_at < steps, "{text}");

    let again = ok(&sweep(&grid, &out, 1, &tiny(steps)).output().unwrap());
    assert!(
        again.contains("wide/seed0: finished before, skipped"),
        "{again}"
    );
    assert!(again.contains("plain/seed0: resuming from step"), "{again}");
    assert!(
        again.contains("1 run(s) trained, 1 finished before, 0 failed"),
        "{again}"
    );
    for run in ["wide/seed0", "plain/seed0"] {
        let d = out.join(run);
        assert_eq!(logged_steps(&d), (1..=steps).collect::<Vec<_>>(), "{run}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["steps"], steps, "{run}");
    }
    let cfg = std::fs::read_to_string(out.join("wide/seed0/config.toml")).unwrap();
    assert!(
        cfg.contains("g_ch = 16") && cfg.contains("seed = 0"),
        "{cfg}"
    );

    // The directory holds this sweep: another one is refused, naming both.
    let o = sweep(&grid, &out, 2, &tiny(steps)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("records another sweep"),
        "{err}"
    );
}

#[test]
fn the_shipped_ablation_grid_expands_against_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let grid = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps/ablations.toml");
    let out = dir.path().join("ablations");
    let text = ok(&sweep(&grid, &out, 3, &[])
        .arg("--dry-run")
        .output()
        .unwrap());
    assert!(text.contains("6 arm(s) x 3 seed(s) = 18 run(s)"), "{text}");
    for arm in [
        "default",
        "attn-none",
        "attn-g8",
        "attn-g32",
        "sn-d-only",
        "ttur",
    ] {
        assert!(
            text.contains(&format!("  {arm}/seed2  [not started]")),
            "{arm}: {text}"
        );
    }
    assert!(!out.exists());
}
