//! Our Inception-v3 against pytorch-fid's own `InceptionV3` wrapper, both running random weights
//! that tests/python/inception_reference.py draws and saves (the real ones cannot be downloaded
//! here), on the same non-square images.
//!
//! The interpreter is `$SAGAN_PYTHON`, else `.venv/bin/python` (scripts/setup.sh installs
//! pytorch-fid there).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sagan::metrics::inception::{InceptionV3, CLASSES, FEATURES};
use tch::{Device, Kind, Tensor};

/// pool3 is a mean of ReLU outputs after ~95 conv+BN layers; our ops are the same ATen kernels as
/// PyTorch's in the same order, so only a different conv algorithm choice can move the last bits.
const POOL3_ATOL: f64 = 1e-4;
/// Logits are a 2048-term dot product of pool3 with the fc weight, done by the same `mm` on both
/// sides. A pool3 error at POOL3_ATOL in every feature could move a logit by up to
/// ||fc row||_1 * 1e-4, which bounds nothing useful; what is checked instead is that the logits
/// carry no error beyond float32 accumulation of that sum: 1e-5 of the largest logit magnitude,
/// about 80x float32's unit roundoff, while any structural slip (bias added, wrong layout,
/// transposed weight) is of order 1.
const LOGITS_RTOL: f64 = 1e-5;

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// The Python side runs once for all tests; each test reads the files itself, since tensors are
/// not `Sync`.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/inception_reference.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "reference activations: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        dir
    })
    .path()
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture().join("reference.safetensors"))
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

#[test]
fn matches_pytorch_fid() {
    let reference = reference();
    let net = InceptionV3::load(&fixture().join("weights.safetensors"), Device::Cpu).unwrap();
    let images = &reference["images"];
    let (pool3, logits) = net.forward(images);
    let n = images.size()[0];
    assert_eq!(pool3.size(), [n, FEATURES]);
    assert_eq!(logits.size(), [n, CLASSES]);

    let ref_pool3 = &reference["pool3"];
    // Guards the fixture itself: features all zero or enormous would make the comparison vacuous.
    let scale = max_abs(ref_pool3);
    assert!((0.1..1e3).contains(&scale), "reference pool3 max {scale}");

    let pool3_diff = max_abs_diff(&pool3, ref_pool3);
    let logits_diff = max_abs_diff(&logits, &reference["logits"]);
    let logits_rel = logits_diff / max_abs(&reference["logits"]);
    let biased = net.logits_with_bias(&logits);
    let biased_rel = max_abs_diff(&biased, &reference["logits_with_bias"])
        / max_abs(&reference["logits_with_bias"]);
    eprintln!(
        "pool3 max abs diff {pool3_diff:e} (max |pool3| {scale}); logits max abs diff \
         {logits_diff:e} (relative {logits_rel:e}); biased logits relative {biased_rel:e}"
    );
    assert!(pool3_diff <= POOL3_ATOL, "pool3 differs by {pool3_diff}");
    assert!(
        logits_rel <= LOGITS_RTOL,
        "logits differ by {logits_rel} relative"
    );
    assert!(
        biased_rel <= LOGITS_RTOL,
        "biased logits differ by {biased_rel} relative"
    );
}

/// Callers hand over whatever float type they hold; float64 pixels that are exact float32 values
/// must give exactly the float32 features.
#[test]
fn float64_input_gives_the_same_features() {
    let reference = reference();
    let net = InceptionV3::load(&fixture().join("weights.safetensors"), Device::Cpu).unwrap();
    let images = reference["images"].narrow(0, 0, 1);
    let (a, _) = net.forward(&images);
    let (b, _) = net.forward(&images.to_kind(Kind::Double));
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let mut tensors = Tensor::read_safetensors(fixture().join("weights.safetensors")).unwrap();
    edit(&mut tensors);
    let path = dir.join("edited.safetensors");
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    match InceptionV3::load(path, Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn load_errors_name_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();

    let missing = rewrite_weights(dir.path(), |t| {
        t.retain(|(name, _)| name != "Mixed_6c.branch7x7dbl_3.bn.running_var")
    });
    let msg = load_error(&missing);
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(
        msg.contains("Mixed_6c.branch7x7dbl_3.bn.running_var"),
        "{msg}"
    );

    let misshapen = rewrite_weights(dir.path(), |t| {
        for (name, tensor) in t.iter_mut() {
            if name == "Mixed_7c.branch3x3_2a.conv.weight" {
                *tensor = tensor.transpose(2, 3).contiguous();
            }
        }
    });
    let msg = load_error(&misshapen);
    assert!(msg.contains(&misshapen.display().to_string()), "{msg}");
    assert!(msg.contains("Mixed_7c.branch3x3_2a.conv.weight"), "{msg}");
    assert!(msg.contains("[384, 384, 3, 1]"), "{msg}");

    let extra = rewrite_weights(dir.path(), |t| {
        t.push((
            "AuxLogits.fc.weight".into(),
            Tensor::zeros([1008, 768], (Kind::Float, Device::Cpu)),
        ))
    });
    let msg = load_error(&extra);
    assert!(msg.contains("AuxLogits.fc.weight"), "{msg}");

    let absent = dir.path().join("absent.safetensors");
    let msg = load_error(&absent);
    assert!(msg.contains(&absent.display().to_string()), "{msg}");
    assert!(msg.contains("convert_inception.py"), "{msg}");
}
