//! KID and improved precision/recall against torch-fidelity 0.4.0's own `kid_features_to_metric`
//! and `prc_features_to_metric`, and against an independent NumPy/SciPy implementation of each
//! paper's definition (tests/python/kid_pr_reference.py), on the same float64 features.
//!
//! The interpreter is `$SAGAN_PYTHON`, else `.venv/bin/python`.
use std::path::{Path, PathBuf};
use std::process::Command;

use sagan::metrics::kernel_distance::{kid, DEFAULT_SEED, DEFAULT_SUBSETS, DEFAULT_SUBSET_SIZE};
use sagan::metrics::npz::encode_npy_f64;
use sagan::metrics::numpy_rng::Mt19937;
use sagan::metrics::precision_recall::{precision_recall, Manifold, DEFAULT_K};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const DIM: i64 = 32;
const N_FAKE: i64 = 1200;
const N_REAL: i64 = 1100;

/// KID is a difference of three kernel sums of about 10^6 terms each, so rounding in the sums
/// (numpy's pairwise summation against libtorch's) is amplified by the cancellation; the
/// measured agreement is about 1e-12 relative, and a formula slip (a diagonal kept, a wrong
/// normaliser, another subset) moves it by more than 1e-3.
const KID_RTOL: f64 = 1e-9;

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn write_npy(path: &Path, t: &Tensor) {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let values = Vec::<f64>::try_from(&t.contiguous().view([-1])).unwrap();
    std::fs::write(path, encode_npy_f64(&shape, &values)).unwrap();
}

/// Non-negative, correlated features (like pool3 activations); `shift` moves the distribution so
/// that the sets overlap in part and precision and recall fall strictly between 0 and 1.
fn features(n: i64, shift: f64) -> Tensor {
    let mix = Tensor::randn([DIM, DIM], (Kind::Double, Device::Cpu)) / (DIM as f64).sqrt();
    (Tensor::randn([n, DIM], (Kind::Double, Device::Cpu)).mm(&mix) + 0.5 + shift).relu()
}

fn reference(fake: &Tensor, real: &Tensor, subsets: i64, subset_size: i64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    write_npy(&dir.path().join("fake.npy"), fake);
    write_npy(&dir.path().join("real.npy"), real);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kid_pr_reference.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .args([DEFAULT_K, subsets, subset_size].map(|v| v.to_string()))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from kid_pr_reference.py")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(ours: f64, theirs: f64, what: &str) {
    let rel = (ours - theirs).abs() / theirs.abs();
    assert!(
        rel < KID_RTOL,
        "{what}: ours {ours:e}, theirs {theirs:e} (rel {rel:e})"
    );
}

#[test]
fn kid_and_precision_recall_match_torch_fidelity_and_the_papers_definitions() {
    tch::manual_seed(30_000_003);
    let fake = features(N_FAKE, 0.0);
    let real = features(N_REAL, 0.25);
    let r = reference(&fake, &real, DEFAULT_SUBSETS, DEFAULT_SUBSET_SIZE);

    let ours = kid(
        &fake,
        &real,
        DEFAULT_SUBSETS,
        DEFAULT_SUBSET_SIZE,
        DEFAULT_SEED,
    )
    .unwrap();
    for source in ["torch_fidelity", "numpy"] {
        let theirs = &r[source]["kid"];
        close(ours.mean, num(&theirs[0]), &format!("KID mean vs {source}"));
        close(ours.std, num(&theirs[1]), &format!("KID std vs {source}"));
    }
    assert!(
        ours.mean > 10.0 * ours.std,
        "the shift is visible: {ours:?}"
    );

    let manifold = Manifold::new(&real, DEFAULT_K).unwrap();
    let pr = precision_recall(&fake, &manifold, DEFAULT_K).unwrap();
    assert!(
        0.05 < pr.precision && pr.precision < 0.95 && 0.05 < pr.recall && pr.recall < 0.95,
        "the sets overlap in part: {pr:?}"
    );
    // Shares of samples inside balls: the same samples, so the same counts. NumPy's shares are
    // float64 like ours; torch-fidelity takes its mean in float32, so its share is compared as
    // the count it stands for.
    let count = |share: f64, n: i64| (share * n as f64).round() as i64;
    assert_eq!(
        pr.precision,
        num(&r["numpy"]["precision"]),
        "precision vs numpy"
    );
    assert_eq!(pr.recall, num(&r["numpy"]["recall"]), "recall vs numpy");
    let tf = &r["torch_fidelity"];
    assert_eq!(
        count(pr.precision, N_FAKE),
        count(num(&tf["precision"]), N_FAKE),
        "precision"
    );
    assert_eq!(
        count(pr.recall, N_REAL),
        count(num(&tf["recall"]), N_REAL),
        "recall"
    );
    assert!(
        (num(&tf["precision"]) - pr.precision).abs() < 1e-7,
        "float32 rounding only"
    );

    // numpy's choice(n, m, replace=False) is the first m of a permutation of the same stream.
    let choice: Vec<i64> = r["choice_2020"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(Mt19937::new(2020).permutation(50)[..7], choice[..]);
}

#[test]
fn kid_matches_with_small_subsets_too() {
    tch::manual_seed(77);
    let fake = features(300, 0.0);
    let real = features(250, 0.1);
    let r = reference(&fake, &real, 7, 40);
    let ours = kid(&fake, &real, 7, 40, DEFAULT_SEED).unwrap();
    close(ours.mean, num(&r["torch_fidelity"]["kid"][0]), "KID mean");
    close(ours.std, num(&r["torch_fidelity"]["kid"][1]), "KID std");
}
