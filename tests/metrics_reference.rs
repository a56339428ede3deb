//! FID, Inception Score and the `.npz` stats format against pytorch-fid and torch-fidelity run on
//! the same inputs by tests/python/metrics_reference.py.
//!
//! The interpreter is `$SAGAN_PYTHON`, else `.venv/bin/python` (scripts/setup.sh installs
//! pytorch-fid, torch-fidelity and scipy there).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sagan::metrics::npz::{decode_npy, encode_npy_f64};
use sagan::metrics::numpy_rng::legacy_permutation;
use sagan::metrics::{
    frechet_distance, inception_score, load_fid_stats, save_fid_stats, FeatureStats, FidStats,
    Order,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const DIM: i64 = 64;
const N1: i64 = 500;
const N2: i64 = 400;
const N_LOGITS: i64 = 1003;
const CLASSES: i64 = 100;

/// Agreement required with the Python implementations. The three FIDs compute the same quantity
/// by different float64 routes (sqrtm, general eig, two eighs); the measured spread is about 1e-13
/// relative, so 1e-6 leaves room for other BLAS/LAPACK builds and still catches any formula slip.
const FID_RTOL: f64 = 1e-6;
/// The Inception Score is the same float64 arithmetic in the same order as torch-fidelity's.
const IS_RTOL: f64 = 1e-12;

/// Plain data only: tensors are not `Sync`, so each test rebuilds the ones it needs.
struct Fixture {
    dir: tempfile::TempDir,
    feat1: Vec<f64>,
    feat2: Vec<f64>,
    logits: Vec<f64>,
    /// The stats of feat1 exactly as written to ours.npz.
    mu1: Vec<f64>,
    sigma1: Vec<f64>,
    reference: Value,
}

impl Fixture {
    fn feat1(&self) -> Tensor {
        Tensor::from_slice(&self.feat1).reshape([N1, DIM])
    }
    fn feat2(&self) -> Tensor {
        Tensor::from_slice(&self.feat2).reshape([N2, DIM])
    }
    fn logits(&self) -> Tensor {
        Tensor::from_slice(&self.logits).reshape([N_LOGITS, CLASSES])
    }
    fn ours1(&self) -> FidStats {
        FidStats {
            mu: Tensor::from_slice(&self.mu1),
            sigma: Tensor::from_slice(&self.sigma1).reshape([DIM, DIM]),
        }
    }
}

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).contiguous().reshape([-1])).unwrap()
}

fn write_npy(path: &Path, t: &Tensor) {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    std::fs::write(path, encode_npy_f64(&shape, &to_vec(t))).unwrap();
}

fn read_npy(path: &Path) -> Tensor {
    let a = decode_npy(&std::fs::read(path).unwrap()).unwrap();
    let shape: Vec<i64> = a.shape.iter().map(|&s| s as i64).collect();
    Tensor::from_slice(&a.data).reshape(shape)
}

/// Non-negative, correlated, with means of the order of their spread, like Inception pool3
/// activations: that keeps the `sum x x^T - n mu mu^T` cancellation in play.
fn features(n: i64, shift: f64) -> Tensor {
    let mix = Tensor::randn([DIM, DIM], (Kind::Double, Device::Cpu)) / (DIM as f64).sqrt();
    (Tensor::randn([n, DIM], (Kind::Double, Device::Cpu)).mm(&mix) + 0.5 + shift).relu()
}

/// Stats of `x` accumulated the way an evaluation run does: uneven batches on two "ranks",
/// combined through the flat all-reduce buffer.
fn stats_in_pieces(x: &Tensor) -> FidStats {
    let n = x.size()[0];
    let mut rank0 = FeatureStats::new(DIM, Device::Cpu);
    let mut rank1 = FeatureStats::new(DIM, Device::Cpu);
    let cuts = [0, 37, n / 2, n / 2 + 101, n];
    for (i, w) in cuts.windows(2).enumerate() {
        let rank = if i % 2 == 0 { &mut rank0 } else { &mut rank1 };
        rank.add(&x.narrow(0, w[0], w[1] - w[0])).unwrap();
    }
    let summed = rank0.to_flat() + rank1.to_flat();
    let merged = FeatureStats::from_flat(DIM, &summed).unwrap();
    assert_eq!(merged.count(), n);
    assert!(!merged.rank_deficient());
    merged.finish().unwrap()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        tch::manual_seed(9_000_017);
        let feat1 = features(N1, 0.0);
        let feat2 = features(N2, 0.3);
        let logits = Tensor::randn([N_LOGITS, CLASSES], (Kind::Double, Device::Cpu)) * 3.0;
        let dir = tempfile::tempdir().unwrap();
        write_npy(&dir.path().join("feat1.npy"), &feat1);
        write_npy(&dir.path().join("feat2.npy"), &feat2);
        write_npy(&dir.path().join("logits.npy"), &logits);
        let ours1 = stats_in_pieces(&feat1);
        save_fid_stats(&dir.path().join("ours.npz"), &ours1).unwrap();

        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/metrics_reference.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python().display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let reference =
            serde_json::from_slice(&out.stdout).expect("JSON from metrics_reference.py");
        Fixture {
            dir,
            feat1: to_vec(&feat1),
            feat2: to_vec(&feat2),
            logits: to_vec(&logits),
            mu1: to_vec(&ours1.mu),
            sigma1: to_vec(&ours1.sigma),
            reference,
        }
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn stats_match_numpy_mean_and_cov() {
    let f = fixture();
    let mu = read_npy(&f.dir.path().join("ref_mu1.npy"));
    let sigma = read_npy(&f.dir.path().join("ref_sigma1.npy"));
    let (dmu, dsigma) = (
        max_abs_diff(&f.ours1().mu, &mu),
        max_abs_diff(&f.ours1().sigma, &sigma),
    );
    let scale = sigma.abs().max().double_value(&[]);
    eprintln!("stats vs numpy: max |d mu| = {dmu:.3e}, max |d sigma| = {dsigma:.3e} (max |sigma| {scale:.3})");
    assert!(dmu < 1e-13 && dsigma < 1e-13 * scale);
}

#[test]
fn fid_matches_pytorch_fid_and_torch_fidelity() {
    let f = fixture();
    let ours2 = stats_in_pieces(&f.feat2());
    let fid = ours2.frechet_distance(&f.ours1()).unwrap();
    let fid_12 =
        frechet_distance(&f.ours1().mu, &f.ours1().sigma, &ours2.mu, &ours2.sigma).unwrap();
    let pytorch_fid = num(&f.reference["fid_pytorch_fid"]);
    let fidelity = num(&f.reference["fid_torch_fidelity"]);
    eprintln!(
        "FID ours {fid:.15} (swapped {fid_12:.15}), pytorch-fid {pytorch_fid:.15} (rel {:.2e}), \
         torch-fidelity {fidelity:.15} (rel {:.2e})",
        rel(fid, pytorch_fid),
        rel(fid, fidelity)
    );
    assert!(fid > 1.0, "the two sets differ by construction: {fid}");
    assert!(rel(fid, pytorch_fid) < FID_RTOL);
    assert!(rel(fid, fidelity) < FID_RTOL);
    assert!(rel(fid_12, fid) < FID_RTOL);
}

/// FID(x, x) is 0 exactly in real arithmetic; in float64 it is `2 tr(s) - 2 sum(sqrt(eig(s^2)))`,
/// a difference of two numbers of size `2 tr(s)` whose error is a few ulps per eigenvalue. So the
/// honest bound is relative to the trace: `|FID| <= 1e-12 * tr(s)` (d = 64 eigenvalues at about
/// 1e-16 relative each, with a wide margin). An absolute 1e-6 would only hold for small traces;
/// Inception's 2048-d covariances have traces in the hundreds.
#[test]
fn fid_of_a_set_with_itself_is_zero_up_to_rounding() {
    let f = fixture();
    let fid = f.ours1().frechet_distance(&f.ours1()).unwrap();
    let trace = f.ours1().sigma.trace().double_value(&[]);
    eprintln!(
        "self FID ours {fid:.3e}, pytorch-fid {:.3e}, torch-fidelity {:.3e} (tr sigma {trace:.3})",
        num(&f.reference["self_fid_pytorch_fid"]),
        num(&f.reference["self_fid_torch_fidelity"]),
    );
    assert!(fid.abs() <= 1e-12 * trace, "{fid}");
}

#[test]
fn inception_score_matches_torch_fidelity() {
    let f = fixture();
    let check = |name: &str, order: Order| {
        let ours = inception_score(&f.logits(), 10, order).unwrap();
        let r = f.reference[name].as_array().unwrap();
        let (mean, std) = (num(&r[0]), num(&r[1]));
        eprintln!(
            "IS {name}: ours {:.15} ± {:.15}, torch-fidelity {mean:.15} ± {std:.15} (rel {:.2e}, {:.2e})",
            ours.mean,
            ours.std,
            rel(ours.mean, mean),
            rel(ours.std, std)
        );
        assert!(rel(ours.mean, mean) < IS_RTOL && rel(ours.std, std) < 1e-9);
    };
    check("isc_as_given", Order::AsGiven);
    check("isc_shuffled_2020", Order::NumpyShuffle(2020));
    // The shuffle must matter for the comparison above to mean anything.
    let a = inception_score(&f.logits(), 10, Order::AsGiven).unwrap();
    let b = inception_score(&f.logits(), 10, Order::NumpyShuffle(2020)).unwrap();
    assert!(a.std != b.std);
}

#[test]
fn inception_score_of_uniform_predictions_is_one() {
    let f = fixture();
    let r = f.reference["isc_uniform"].as_array().unwrap();
    let uniform = Tensor::zeros([100, 1008], (Kind::Double, Device::Cpu));
    let ours = inception_score(&uniform, 10, Order::AsGiven).unwrap();
    assert!(
        (ours.mean - 1.0).abs() < 1e-12 && ours.std < 1e-12,
        "{ours:?}"
    );
    assert!((num(&r[0]) - 1.0).abs() < 1e-12);
    // Confident, evenly spread predictions reach the maximum, the number of classes.
    let eye = Tensor::eye(10, (Kind::Double, Device::Cpu)).repeat([10, 1]) * 1000.0;
    let peak = inception_score(&eye, 10, Order::AsGiven).unwrap();
    assert!((peak.mean - 10.0).abs() < 1e-9, "{peak:?}");
}

#[test]
fn inception_score_rejects_bad_input() {
    let bad = Tensor::from_slice(&[0.0, f64::NAN, 1.0, 2.0]).reshape([2, 2]);
    assert!(inception_score(&bad, 1, Order::AsGiven).is_err());
    let few = Tensor::zeros([5, 3], (Kind::Double, Device::Cpu));
    assert!(inception_score(&few, 10, Order::AsGiven).is_err());
}

#[test]
fn shuffle_is_numpys_legacy_permutation() {
    let f = fixture();
    let as_vec = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    for (n, perm) in f.reference["permutation_2020"].as_object().unwrap() {
        assert_eq!(
            legacy_permutation(2020, n.parse().unwrap()),
            as_vec(perm),
            "n = {n}"
        );
    }
    assert_eq!(
        legacy_permutation(7, 5),
        as_vec(&f.reference["permutation_7_of_5"])
    );
    assert_eq!(
        legacy_permutation(u32::MAX, 300),
        as_vec(&f.reference["permutation_max_seed"])
    );
}

#[test]
fn npz_written_by_us_loads_in_pytorch_fid() {
    let f = fixture();
    let loaded = &f.reference["loaded"];
    assert_eq!(loaded["mu_dtype"], "float64");
    assert_eq!(loaded["sigma_dtype"], "float64");
    assert_eq!(loaded["mu_shape"], serde_json::json!([DIM]));
    assert_eq!(loaded["sigma_shape"], serde_json::json!([DIM, DIM]));
    // Bit for bit what we wrote.
    let mu = read_npy(&f.dir.path().join("loaded_mu.npy"));
    let sigma = read_npy(&f.dir.path().join("loaded_sigma.npy"));
    assert!(mu.equal(&f.ours1().mu) && sigma.equal(&f.ours1().sigma));
    assert!(num(&loaded["max_abs_diff_mu"]) < 1e-13);
    assert!(num(&loaded["max_abs_diff_sigma"]) < 1e-12);
    let ours2 = stats_in_pieces(&f.feat2());
    let fid = f.ours1().frechet_distance(&ours2).unwrap();
    assert!(rel(fid, num(&loaded["fid_vs_2"])) < FID_RTOL);
    // And back through our own reader.
    let back = load_fid_stats(&f.dir.path().join("ours.npz")).unwrap();
    assert!(back.mu.equal(&f.ours1().mu) && back.sigma.equal(&f.ours1().sigma));
}

#[test]
fn npz_written_by_numpy_loads_in_ours() {
    let f = fixture();
    let mu = read_npy(&f.dir.path().join("ref_mu2.npy"));
    let sigma = read_npy(&f.dir.path().join("ref_sigma2.npy"));
    for name in ["numpy_savez.npz", "numpy_savez_compressed.npz"] {
        let stats = load_fid_stats(&f.dir.path().join(name)).unwrap();
        assert_eq!(stats.mu.kind(), Kind::Double);
        assert!(stats.mu.equal(&mu) && stats.sigma.equal(&sigma), "{name}");
    }
    let ours2 = stats_in_pieces(&f.feat2());
    assert!(max_abs_diff(&ours2.mu, &mu) < 1e-13);
}

#[test]
fn bad_npz_errors_name_the_file_and_the_problem() {
    let f = fixture();
    let cases = [
        ("bad_missing_sigma.npz", "no array 'sigma'"),
        ("bad_int_sigma.npz", "'<i8', expected float64"),
        ("bad_shape_sigma.npz", "expected [64, 64]"),
    ];
    for (name, expected) in cases {
        let err = load_fid_stats(&f.dir.path().join(name))
            .err()
            .expect(name)
            .to_string();
        assert!(err.contains(name) && err.contains(expected), "{err}");
    }
    let missing = f.dir.path().join("absent.npz");
    let err = load_fid_stats(&missing).err().unwrap().to_string();
    assert!(err.contains("absent.npz"), "{err}");
    let not_zip = f.dir.path().join("feat1.npy");
    let err = load_fid_stats(&not_zip).err().unwrap().to_string();
    assert!(err.contains("feat1.npy") && err.contains("zip"), "{err}");
}

#[test]
fn stats_reject_wrong_shapes_and_warn_on_few_samples() {
    let mut stats = FeatureStats::new(DIM, Device::Cpu);
    assert!(stats
        .add(&Tensor::zeros([3, DIM + 1], (Kind::Float, Device::Cpu)))
        .is_err());
    assert!(stats.finish().is_err(), "no samples");
    let f = fixture();
    stats.add(&f.feat1().narrow(0, 0, 10)).unwrap();
    assert!(stats.rank_deficient());
    let few = stats.finish().unwrap();
    assert_eq!(few.sigma.size(), [DIM, DIM]);
    let two = FeatureStats::new(DIM + 1, Device::Cpu);
    assert!(stats.merge(&two).is_err());
    assert!(frechet_distance(&few.mu, &few.sigma, &few.mu.narrow(0, 0, 3), &few.sigma).is_err());
}
