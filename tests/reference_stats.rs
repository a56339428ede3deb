//! Reference statistics are only used when they were computed from what the run would compute
//! them from (src/metrics/reference.rs), through the real `sagan fid-stats` command on a small
//! Fashion-MNIST-format dataset and random classifier weights. Files written by pytorch-fid are
//! produced and read back with the venv's numpy and pytorch-fid (`$SAGAN_PYTHON`, else
//! `.venv/bin/python`).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

mod common;
use common::{bin, default_config, ok, sets};

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn stats_files(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/stats_files.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = ok(&out);
    text.lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or(serde_json::Value::Null)
}

/// Untrained classifier weights; each call draws different ones.
fn write_weights(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = sagan::metrics::classifier::Classifier::new(tch::Device::Cpu, 10);
    c.vs.save(path).unwrap();
    path.to_path_buf()
}

const IMAGES: u32 = 300;

struct Setup {
    /// The working directory of every command; sagan's cache lands beside the weights, in
    /// `weights/fid_stats/`, not here.
    dir: tempfile::TempDir,
    w1: PathBuf,
    w2: PathBuf,
    d1: PathBuf,
    d2: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    Setup {
        w1: write_weights(&p.join("weights/w1.safetensors")),
        w2: write_weights(&p.join("weights/w2.safetensors")),
        d1: common::write_fmnist_like(&p.join("d1"), IMAGES, 1),
        d2: common::write_fmnist_like(&p.join("d2"), IMAGES, 2),
        dir,
    }
}

impl Setup {
    /// `sagan fid-stats` with weights `w`, data `d`, and more `--set`s / arguments.
    fn fid_stats(&self, w: &Path, d: &Path, more: &[String], args: &[&str]) -> Output {
        let mut pairs = vec![
            format!("eval.weights={}", w.display()),
            format!("data.path={}", d.display()),
            "train.threads=1".into(),
        ];
        pairs.extend_from_slice(more);
        Command::new(bin())
            .current_dir(self.dir.path())
            .args(["fid-stats", "--config", &default_config()])
            .args(sets(&pairs))
            .args(args)
            .output()
            .unwrap()
    }

    /// Ensures the cached statistics for (w, d); returns the file and the command's output.
    fn cached(&self, w: &Path, d: &Path) -> (PathBuf, String) {
        let text = ok(&self.fid_stats(w, d, &[], &[]));
        let line = text
            .lines()
            .find(|l| l.contains(" images -> "))
            .unwrap_or_else(|| panic!("no result line in {text}"));
        let rel = line
            .split(" -> ")
            .nth(1)
            .unwrap()
            .split(" (")
            .next()
            .unwrap();
        (self.dir.path().join(rel), text)
    }

    fn explicit(&self, path: &Path) -> Vec<String> {
        vec![format!("eval.reference_stats={}", path.display())]
    }
}

fn provenance(path: &Path) -> serde_json::Value {
    let text = sagan::metrics::load_provenance(path)
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no provenance", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mu(path: &Path) -> Vec<f64> {
    let s = sagan::metrics::load_fid_stats(path).unwrap();
    Vec::<f64>::try_from(&s.mu).unwrap()
}

fn failure(out: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "command succeeded:\n{text}");
    text
}

#[test]
fn configs_that_differ_get_different_cache_files() {
    let s = setup();
    let (a, text_a) = s.cached(&s.w1, &s.d1);
    let (b, _) = s.cached(&s.w2, &s.d1);
    let (c, _) = s.cached(&s.w1, &s.d2);
    for p in [&a, &b, &c] {
        assert!(p.exists(), "{}", p.display());
        assert!(
            p.starts_with(s.dir.path().join("weights/fid_stats")),
            "{}",
            p.display()
        );
    }
    assert!(
        !s.dir.path().join(".cache").exists(),
        "the cache depends on the working directory"
    );
    assert!(a != b && a != c && b != c, "{a:?} {b:?} {c:?}");
    assert!(text_a.contains("computing"), "{text_a}");
    // What the file says it was computed from is what it was computed from.
    let p = provenance(&a);
    assert_eq!(p["weights_sha256"], sha256_hex(&s.w1));
    assert_eq!(p["feature_net"], "fmnist-classifier");
    assert_eq!(p["num_images"], IMAGES);
    assert_eq!(p["resolution"], 32);
    assert_eq!(p["channels"], 1);
    assert_ne!(p["images_sha256"], provenance(&c)["images_sha256"]);
    // The same config again finds its file and uses it as it is.
    let before = std::fs::read(&a).unwrap();
    let (again, text) = s.cached(&s.w1, &s.d1);
    assert_eq!(again, a);
    assert!(!text.contains("computing"), "{text}");
    assert_eq!(std::fs::read(&a).unwrap(), before);
}

#[test]
fn a_stale_cache_file_is_recomputed() {
    let s = setup();
    let (a, _) = s.cached(&s.w1, &s.d1);
    let (b, _) = s.cached(&s.w2, &s.d1);
    let (want_provenance, want_mu) = (provenance(&a), mu(&a));
    std::fs::copy(&b, &a).unwrap();
    let (again, text) = s.cached(&s.w1, &s.d1);
    assert_eq!(again, a);
    assert!(text.contains("recomputing"), "{text}");
    assert!(
        text.contains("weights_sha256") && !text.contains("images_sha256"),
        "{text}"
    );
    assert_eq!(provenance(&a), want_provenance);
    assert_eq!(mu(&a), want_mu);
}

#[test]
fn an_explicit_file_from_elsewhere_is_refused_naming_what_differs() {
    let s = setup();
    let x = s.dir.path().join("named.npz");
    ok(&s.fid_stats(&s.w2, &s.d1, &[], &["--out", x.to_str().unwrap()]));
    let before = std::fs::read(&x).unwrap();

    let text = failure(&s.fid_stats(&s.w1, &s.d1, &s.explicit(&x), &[]));
    assert!(text.contains(&x.display().to_string()), "{text}");
    assert!(text.contains("refusing"), "{text}");
    assert!(
        text.contains("weights_sha256") && !text.contains("images_sha256"),
        "{text}"
    );

    let text = failure(&s.fid_stats(&s.w2, &s.d2, &s.explicit(&x), &[]));
    assert!(
        text.contains("images_sha256") && !text.contains("weights_sha256"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&x).unwrap(),
        before,
        "a named file is never rewritten"
    );

    // The file it does match is used as it is.
    let text = ok(&s.fid_stats(&s.w2, &s.d1, &s.explicit(&x), &[]));
    assert!(!text.contains("computing"), "{text}");
}

#[test]
fn a_pytorch_fid_file_is_used_with_a_warning() {
    let s = setup();
    let ours = s.dir.path().join("ours.npz");
    ok(&s.fid_stats(&s.w1, &s.d1, &[], &["--out", ours.to_str().unwrap()]));
    // pytorch-fid reads our file (provenance and all) and writes its own without provenance.
    let theirs = s.dir.path().join("pytorch_fid.npz");
    let info = stats_files(&["strip", ours.to_str().unwrap(), theirs.to_str().unwrap()]);
    assert_eq!(
        info["arrays"],
        serde_json::json!(["mu", "provenance", "sigma"])
    );
    assert_eq!(info["dim"], 128);
    assert_eq!(info["provenance"], provenance(&ours));
    assert!(sagan::metrics::load_provenance(&theirs).unwrap().is_none());

    let text = ok(&s.fid_stats(&s.w1, &s.d1, &s.explicit(&theirs), &[]));
    assert!(!text.contains("computing"), "{text}");
    for part in [
        "warning",
        "no provenance",
        theirs.to_str().unwrap(),
        "fmnist-classifier",
        s.w1.to_str().unwrap(),
        &sha256_hex(&s.w1),
        &format!("all {IMAGES} training images"),
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }

    // Statistics of another feature dimension cannot be this network's.
    let wrong = s.dir.path().join("wrong_dim.npz");
    stats_files(&["random", wrong.to_str().unwrap(), "64"]);
    let text = failure(&s.fid_stats(&s.w1, &s.d1, &s.explicit(&wrong), &[]));
    assert!(text.contains("64-d") && text.contains("128-d"), "{text}");
}

#[test]
fn pytorch_fid_computes_the_same_distance_from_our_files() {
    let s = setup();
    let (a, _) = s.cached(&s.w1, &s.d1);
    let (c, _) = s.cached(&s.w1, &s.d2);
    let theirs = stats_files(&["fid", a.to_str().unwrap(), c.to_str().unwrap()])["fid"]
        .as_f64()
        .unwrap();
    let cmp = ok(&Command::new(bin())
        .args([
            "fid-stats",
            "--compare",
            a.to_str().unwrap(),
            c.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let ours: f64 = cmp.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(theirs > 0.0);
    // Same float64 inputs; scipy's sqrtm and our eigh-based square root agree to ~1e-9.
    assert!(
        (ours - theirs).abs() <= 1e-6 * theirs,
        "ours {ours} vs pytorch-fid {theirs}"
    );
}
