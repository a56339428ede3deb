//! `sagan compare` on hand-made run directories whose answers are known: grouping by config
//! (seeds together), means and standard deviations, the best step, and Welch's interval
//! checked against SciPy's `ttest_ind(equal_var=False).confidence_interval()`.
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{bin, default_config, ok};

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// G_ema's scores at one evaluation: step, FID, IS, class accuracy.
type Eval = (i64, f64, f64, f64);

/// A run directory as `sagan train` leaves it: the resolved config.toml (from show-config),
/// metrics.jsonl with G_ema's evaluations and, when `finished`, summary.json with the last one
/// as the end scores.
fn make_run(dir: &Path, seed: i64, sets: &[&str], evals: &[Eval], finished: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["show-config", "--config", &default_config()]);
    for s in sets
        .iter()
        .copied()
        .chain([format!("train.seed={seed}").as_str()])
    {
        cmd.args(["--set", s]);
    }
    cmd.arg("--set")
        .arg(format!("output.dir={}", dir.display()));
    let toml = ok(&cmd.output().unwrap());
    std::fs::write(dir.join("config.toml"), toml.trim()).unwrap();
    let label = "fmnist_classifier";
    let mut lines = String::new();
    for &(step, fid, is, acc) in evals {
        lines += &serde_json::json!({"step": step, "stats": {"g_loss": 0.1}}).to_string();
        lines += "\n";
        lines += &serde_json::json!({
            "step": step, "network": "G_ema", "feature_net": label,
            "eval": {"fid": fid, "is_mean": is, "is_std": 0.1, "samples": 2000, "seconds": 1.0,
                     "class_accuracy": acc},
            format!("FID_{label}"): fid, format!("IS_{label}"): is,
        })
        .to_string();
        lines += "\n";
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    if finished {
        let &(step, fid, is, acc) = evals.last().unwrap();
        let summary = serde_json::json!({
            "steps": step, "feature_net": label,
            "scores_end": {"G_ema": {format!("FID_{label}"): fid, format!("IS_{label}"): is,
                                     "class_accuracy": acc}},
        });
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    }
}

/// compare.csv as (arm, metric) -> its columns.
fn read_csv(path: &Path) -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "arm,metric,n,mean,std,diff,diff_low,diff_high,diff_df"
    );
    lines
        .map(|l| {
            let f: Vec<String> = l.split(',').map(str::to_string).collect();
            (f[0].clone(), f[1].clone(), f[2..].to_vec())
        })
        .collect()
}

fn cell<'a>(rows: &'a [(String, String, Vec<String>)], arm: &str, metric: &str) -> &'a [String] {
    &rows
        .iter()
        .find(|(a, m, _)| a == arm && m == metric)
        .unwrap_or_else(|| panic!("no row {arm},{metric}"))
        .2
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

#[test]
fn seeds_are_grouped_and_the_statistics_are_the_known_ones() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let ref_fid = [30.0, 32.0, 34.0];
    let ref_is = [5.0, 5.5, 6.0];
    for (seed, (&fid, &is)) in ref_fid.iter().zip(&ref_is).enumerate() {
        // Seed 1's best FID (31) comes before its end.
        let mid = if seed == 1 { 31.0 } else { fid + 10.0 };
        let evals = [
            (250, 90.0, 3.0, 0.4),
            (500, mid, 4.5, 0.6),
            (750, fid, is, 0.70 + 0.02 * seed as f64),
        ];
        make_run(
            &runs.join(format!("ref-{seed}")),
            seed as i64,
            &[],
            &evals,
            true,
        );
    }
    let b_fid = [25.0, 29.0, 27.5, 26.0];
    let b_is = [6.0, 6.2, 6.1, 6.3];
    for (seed, (&fid, &is)) in b_fid.iter().zip(&b_is).enumerate() {
        let evals = [
            (250, 80.0, 3.5, 0.5),
            (500, fid + 5.0, 5.0, 0.7),
            (750, fid, is, 0.8),
        ];
        make_run(
            &runs.join(format!("x-{seed}")),
            seed as i64,
            &["model.g_attn_res=[8]"],
            &evals,
            true,
        );
    }
    // An unfinished seed of the second arm: counted, not averaged.
    make_run(
        &runs.join("x-9"),
        9,
        &["model.g_attn_res=[8]"],
        &[(250, 1.0, 9.0, 0.99)],
        false,
    );

    let text = ok(&Command::new(bin())
        .arg("compare")
        .arg(&runs)
        .output()
        .unwrap());
    let (a, b) = ("model.g_attn_res=[16]", "model.g_attn_res=[8]");
    assert!(text.contains(&format!("| {a} | 3 of 3 |")), "{text}");
    assert!(text.contains(&format!("| {b} | 4 of 5 |")), "{text}");
    assert!(text.contains(&format!("Difference from `{a}`")), "{text}");
    let rows = read_csv(&runs.join("compare.csv"));

    let fid = cell(&rows, a, "fid_end");
    assert_eq!(fid[0], "3");
    assert_eq!(num(&fid[1]), 32.0);
    assert!((num(&fid[2]) - 2.0).abs() < 1e-12, "{fid:?}");
    assert!(
        fid[3].is_empty(),
        "the reference arm has no difference: {fid:?}"
    );
    let best = cell(&rows, a, "fid_best");
    assert!(
        (num(&best[1]) - (30.0 + 31.0 + 34.0) / 3.0).abs() < 1e-12,
        "{best:?}"
    );
    let best_step = cell(&rows, a, "best_step");
    assert!((num(&best_step[1]) - (750.0 + 500.0 + 750.0) / 3.0).abs() < 1e-9);
    let acc = cell(&rows, a, "class_accuracy_end");
    assert!((num(&acc[1]) - 0.72).abs() < 1e-12 && (num(&acc[2]) - 0.02).abs() < 1e-12);

    // Welch's interval of mean(b) - mean(a), as SciPy computes it.
    let script = "import sys, json\nfrom scipy import stats\nout = {}\n\
                  for name, a, b in json.loads(sys.argv[1]):\n\
                  \x20   r = stats.ttest_ind(b, a, equal_var=False)\n\
                  \x20   ci = r.confidence_interval(0.95)\n\
                  \x20   out[name] = [float(ci.low), float(ci.high), float(r.df)]\n\
                  print(json.dumps(out))\n";
    let data = serde_json::json!([["fid_end", ref_fid, b_fid], ["is_end", ref_is, b_is]]);
    let py = Command::new(python())
        .args(["-c", script, &data.to_string()])
        .output()
        .unwrap();
    let expect: serde_json::Value = serde_json::from_str(&ok(&py)).unwrap();
    for metric in ["fid_end", "is_end"] {
        let c = cell(&rows, b, metric);
        assert_eq!(c[0], "4");
        let (lo, hi, df) = (num(&c[4]), num(&c[5]), num(&c[6]));
        let e = &expect[metric];
        for (got, want) in [(lo, &e[0]), (hi, &e[1]), (df, &e[2])] {
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{metric}: {got} against SciPy's {want}"
            );
        }
        assert!((num(&c[3]) - (lo + hi) / 2.0).abs() < 1e-9);
    }
    let png = runs.join("compare.png");
    let img = image::open(&png).unwrap();
    assert!(img.width() > 500 && img.height() > 300);
    assert!(std::fs::read_to_string(runs.join("compare.md"))
        .unwrap()
        .contains("4 of 5"));
}

#[test]
fn a_sweep_names_its_arms_and_keeps_its_order() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("sw");
    // Directory order (a-late before z-first) differs from the sweep's order.
    let arms = [("z-first", "model.g_ch=16"), ("a-late", "model.g_ch=24")];
    let mut runs = Vec::new();
    for (arm, set) in arms {
        for seed in 0..2 {
            let dir = out.join(arm).join(format!("seed{seed}"));
            let evals = [(100, 40.0 + seed as f64, 5.0, 0.6)];
            make_run(&dir, seed, &[set], &evals, true);
            runs.push(serde_json::json!({
                "name": format!("{arm}/seed{seed}"), "arm": arm, "seed": seed, "dir": dir,
                "sets": [set], "steps": 100,
            }));
        }
    }
    let manifest = serde_json::json!({
        "base": default_config(), "grid": "g.toml", "arms": ["z-first", "a-late"],
        "seeds": [0, 1], "runs": runs,
    });
    std::fs::write(out.join("sweep.json"), manifest.to_string()).unwrap();
    let report = root.path().join("report");
    let text = ok(&Command::new(bin())
        .arg("compare")
        .arg(&out)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap());
    let z = text.find("| z-first | 2 of 2 |").expect(&text);
    let a = text.find("| a-late | 2 of 2 |").expect(&text);
    assert!(z < a, "{text}");
    assert!(text.contains("Difference from `z-first`"), "{text}");
    assert!(report.join("compare.csv").is_file() && report.join("compare.png").is_file());
}

#[test]
fn runs_scored_on_different_networks_are_refused() {
    let root = tempfile::tempdir().unwrap();
    make_run(
        &root.path().join("r1"),
        0,
        &[],
        &[(10, 5.0, 2.0, 0.5)],
        true,
    );
    let other = root.path().join("r2");
    make_run(&other, 1, &[], &[(10, 5.0, 2.0, 0.5)], true);
    let m = std::fs::read_to_string(other.join("metrics.jsonl")).unwrap();
    std::fs::write(
        other.join("metrics.jsonl"),
        m.replace("fmnist_classifier", "inception"),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("compare")
        .arg(root.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not comparable"),
        "{err}"
    );
    let o = Command::new(bin())
        .args(["compare", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir: no such directory"));
}
