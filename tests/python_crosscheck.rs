//! Checks the attention block and the SN layers against tests/python/check_attention.py, an
//! independent PyTorch implementation of the official formulas, on the same weights.
//!
//! The interpreter is `$SAGAN_PYTHON`, else `.venv/bin/python` (it needs torch and safetensors).
use std::path::PathBuf;
use std::process::Command;

use sagan::config::AttentionKind;
use sagan::model::attention::SelfAttention;
use sagan::model::named_variables;
use sagan::model::spectral_norm::{SnConv2d, SnLinear, SnMode, SnRegistry};
use tch::{nn, Device, Kind, Tensor};

/// The official code's power-iteration epsilon; the Python side hard-codes the same value.
const SN_EPS: f64 = 1e-12;

fn is_sn_buffer(name: &str) -> bool {
    name.ends_with(".weight_u") || name.ends_with(".weight_v")
}

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[test]
fn attention_and_sn_layers_match_an_independent_pytorch_implementation() {
    tch::manual_seed(20240611);
    let dev = Device::Cpu;
    let vs = nn::VarStore::new(dev);
    let reg = SnRegistry::new(SN_EPS);
    let root = vs.root();
    let official = SelfAttention::new(&reg, &root / "official", 32, AttentionKind::Official);
    let paper = SelfAttention::new(&reg, &root / "paper", 32, AttentionKind::Paper);
    let conv = SnConv2d::new(&reg, &root / "conv", 4, 8, 3, true);
    let lin = SnLinear::new(&reg, &root / "lin", 16, 10, true);

    // gamma = 0 would make the attention output equal x and hide every error in o; zero biases
    // would hide a missing or misplaced bias.
    tch::no_grad(|| {
        let _ = official.gamma.shallow_clone().fill_(0.7);
        let _ = paper.gamma.shallow_clone().fill_(-0.45);
        for b in [&conv.bias, &lin.bias] {
            let b = b.as_ref().expect("built with a bias");
            b.shallow_clone()
                .copy_(&Tensor::randn(b.size(), (Kind::Float, dev)));
        }
    });

    // Python must repeat the power iteration from the same starting point, so it gets u and v as
    // they were before the refresh; the refreshed ones are stored separately to compare against.
    let before: Vec<(String, Tensor)> = named_variables(&vs)
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect();
    assert!(
        before.iter().filter(|(n, _)| is_sn_buffer(n)).count() == 2 * reg.len(),
        "every SN layer must have weight_u and weight_v buffers"
    );
    reg.refresh(SnMode::PowerIteration);

    let x_attn = Tensor::randn([2, 32, 16, 16], (Kind::Float, dev));
    let x_conv = Tensor::randn([2, 4, 9, 9], (Kind::Float, dev));
    let x_lin = Tensor::randn([5, 16], (Kind::Float, dev));
    let (y_official, map_official) = tch::no_grad(|| official.forward_with_map(&x_attn));
    let (y_paper, map_paper) = tch::no_grad(|| paper.forward_with_map(&x_attn));
    let y_conv = tch::no_grad(|| conv.forward(&x_conv));
    let y_lin = tch::no_grad(|| lin.forward(&x_lin));

    let mut out: Vec<(String, Tensor)> = before;
    for (name, t) in named_variables(&vs) {
        if is_sn_buffer(&name) {
            out.push((format!("updated.{name}"), t.detach().copy()));
        }
    }
    for (name, t) in [
        ("input.attn", &x_attn),
        ("input.conv", &x_conv),
        ("input.lin", &x_lin),
        ("output.official", &y_official),
        ("output.paper", &y_paper),
        ("output.conv", &y_conv),
        ("output.lin", &y_lin),
        ("map.official", &map_official),
        ("map.paper", &map_paper),
    ] {
        out.push((name.to_string(), t.detach().contiguous()));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("crosscheck.safetensors");
    Tensor::write_safetensors(&out, &file).expect("write safetensors");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_attention.py");
    let py = python();
    let res = Command::new(&py)
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    // Shown on success too (with --nocapture), so the measured differences can be reported.
    println!("{stdout}");
    assert!(
        res.status.success(),
        "{} {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        py.display(),
        script.display(),
        res.status
    );
}
