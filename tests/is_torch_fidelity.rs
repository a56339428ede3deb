//! Our Inception Score input path against torch-fidelity 0.4.0's own `FeatureExtractorInceptionV3`
//! on uint8 images (not only on logits): both run the random Inception weights that
//! tests/python/inception_reference.py draws, tests/python/isc_reference.py feeds the images to
//! torch-fidelity. Images are 32x32 (SAGAN's size, where TF1's resize and PyTorch's differ most),
//! 64x80 (non-square) and grayscale 32x32.
//!
//! The interpreter is `$SAGAN_PYTHON`, else `.venv/bin/python`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sagan::metrics::eval::FeatureNet;
use sagan::metrics::inception::{resize_bilinear_tf1, InceptionV3};
use tch::{Device, Kind, Tensor};

/// As in tests/inception_reference.rs: logits carry no error beyond float32 accumulation, 1e-5 of
/// the largest logit magnitude, when the network input is the same. Our TF1 resize reproduces
/// torch-fidelity's operations exactly, so the input is the same bit for bit (checked below).
const LOGITS_RTOL: f64 = 1e-5;

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn run_script(name: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{name}: {}", String::from_utf8_lossy(&out.stdout).trim());
}

fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run_script("inception_reference.py", dir.path());
        run_script("isc_reference.py", dir.path());
        dir
    })
    .path()
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture().join("isc_reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn max_abs(a: &Tensor) -> f64 {
    a.abs().max().to_kind(Kind::Double).double_value(&[])
}

const BATCHES: [&str; 3] = ["rgb32", "rgb64x80", "gray32"];

#[test]
fn tf1_resize_is_torch_fidelitys_bit_for_bit() {
    let r = reference();
    for name in BATCHES {
        let pixels = &r[&format!("{name}.pixels")];
        let rgb = if pixels.size()[1] == 1 {
            pixels.repeat([1, 3, 1, 1])
        } else {
            pixels.shallow_clone()
        };
        let ours = resize_bilinear_tf1(&rgb.to_kind(Kind::Float), 299, 299);
        let diff = max_abs_diff(&ours, &r[&format!("{name}.tf1_resized")]);
        assert_eq!(diff, 0.0, "{name}: TF1 resize differs by {diff}");
    }
}

#[test]
fn is_logits_of_uint8_images_match_torch_fidelity() {
    let r = reference();
    let net = FeatureNet::Inception(Box::new(
        InceptionV3::load(&fixture().join("weights.safetensors"), Device::Cpu).unwrap(),
    ));
    for name in BATCHES {
        let pixels = &r[&format!("{name}.pixels")];
        assert_eq!(pixels.kind(), Kind::Uint8);
        let theirs = &r[&format!("{name}.logits_unbiased")];
        // The path evaluation takes: FeatureNet::features on the quantised pixels.
        let (features, logits) = net.features(pixels);
        assert_eq!(features.size(), [pixels.size()[0], 2048]);
        let scale = max_abs(theirs);
        assert!(
            (1.0..1e4).contains(&scale),
            "{name}: reference logits max {scale}"
        );
        let rel = max_abs_diff(&logits, theirs) / scale;
        // How far pytorch-fid's input path (the one FID keeps) lands from torch-fidelity's: the
        // comparison above must be able to tell the two apart.
        let other = max_abs_diff(&r[&format!("{name}.fid_path_logits")], theirs) / scale;
        eprintln!("{name}: IS logits relative diff {rel:e}; pytorch-fid path would be {other:e}");
        assert!(
            rel <= LOGITS_RTOL,
            "{name}: logits differ by {rel} relative"
        );
        assert!(
            other > 100.0 * LOGITS_RTOL,
            "{name}: the two input paths are indistinguishable ({other}); the test has no power"
        );
    }
}
