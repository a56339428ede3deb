//! Shapes, the attention identity at gamma = 0, and a short real training run on Fashion-MNIST.
use std::collections::HashMap;

use sagan::config::{AttentionKind, Config};
use sagan::distributed::LocalComm;
use sagan::model::attention::SelfAttention;
use sagan::model::spectral_norm::{SnMode, SnRegistry};
use sagan::model::{self, BnMode, Discriminator, Generator};
use sagan::train::Trainer;
use tch::{nn, Device, Kind, Tensor};

#[test]
fn attention_is_identity_at_gamma_zero_and_keeps_shapes() {
    for kind in [AttentionKind::Official, AttentionKind::Paper] {
        for res in [4, 8, 16, 32] {
            let vs = nn::VarStore::new(Device::Cpu);
            let reg = SnRegistry::new(1e-12);
            let a = SelfAttention::new(&reg, vs.root() / "a", 32, kind);
            reg.refresh(SnMode::PowerIteration);
            let x = Tensor::randn([2, 32, res, res], (Kind::Float, Device::Cpu));
            let (y, map) = a.forward_with_map(&x);
            assert!(
                y.equal(&x),
                "{kind:?} at {res}: output differs from input with gamma = 0"
            );
            let keys = if kind == AttentionKind::Official {
                res * res / 4
            } else {
                res * res
            };
            assert_eq!(map.size(), vec![2, res * res, keys]);
            let _ = a.gamma.shallow_clone().detach().fill_(0.5);
            let y = a.forward(&x);
            assert_eq!(y.size(), x.size());
            assert!(!y.equal(&x));
        }
    }
}

#[test]
fn generator_and_discriminator_shapes_for_every_resolution() {
    for (res, attn) in [(32, 16), (64, 32), (128, 32)] {
        let mut cfg = Config::default();
        cfg.model.resolution = res;
        cfg.model.img_channels = 3;
        cfg.model.g_ch = 8;
        cfg.model.d_ch = 8;
        cfg.model.g_attn_res = vec![attn];
        cfg.model.d_attn_res = vec![attn];
        cfg.validate().unwrap();
        let g = Generator::new(&cfg.model, Device::Cpu).unwrap();
        let d = Discriminator::new(&cfg.model, Device::Cpu).unwrap();
        g.sn.refresh(SnMode::PowerIteration);
        d.sn.refresh(SnMode::PowerIteration);
        let z = Tensor::randn([3, cfg.model.z_dim], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 4, 9]);
        let x = g.forward(&z, &y, BnMode::Train);
        assert_eq!(x.size(), vec![3, 3, res, res]);
        assert!(x.abs().max().double_value(&[]) <= 1.0);
        assert_eq!(d.forward(&x, &y).size(), vec![3]);
        assert_eq!(g.gammas().len(), 1);
        assert_eq!(d.gammas().len(), 1);
    }
}

fn small_config(steps: i64) -> Config {
    Config::from_toml_str(
        include_str!("../configs/fmnist32.toml"),
        "configs/fmnist32.toml",
        &[
            format!("train.steps={steps}"),
            "model.g_ch=16".into(),
            "model.d_ch=16".into(),
            "model.z_dim=32".into(),
            "train.batch_size=16".into(),
            "train.ema_start=0".into(),
        ],
    )
    .unwrap()
}

#[test]
fn hundred_steps_on_fashion_mnist_move_every_parameter() {
    tch::set_num_threads(2);
    let cfg = small_config(100);
    let mut t = Trainer::new(cfg, &LocalComm, Device::Cpu).unwrap();
    let before: HashMap<String, Tensor> = [("G", &t.g.vs), ("D", &t.d.vs)]
        .iter()
        .flat_map(|(n, vs)| {
            model::parameters(vs)
                .into_iter()
                .map(move |(k, v)| (format!("{n}.{k}"), v.copy()))
        })
        .collect();
    assert!(t.gammas().iter().all(|&g| g == 0.0));
    for _ in 0..100 {
        let s = t.train_step().unwrap();
        for v in [
            s.d_loss_real,
            s.d_loss_fake,
            s.g_loss,
            s.d_grad_norm,
            s.g_grad_norm,
        ] {
            assert!(
                v.is_finite(),
                "non-finite statistic at step {}: {s:?}",
                t.step
            );
        }
    }
    for (n, vs) in [("G", &t.g.vs), ("D", &t.d.vs)] {
        for (k, v) in model::parameters(vs) {
            let b = &before[&format!("{n}.{k}")];
            assert!(!v.equal(b), "{n}.{k} did not move in 100 steps");
        }
    }
    let gammas = t.gammas();
    assert_eq!(gammas.len(), 2);
    assert!(
        gammas.iter().all(|g| g.abs() > 0.0),
        "attention gammas still at 0: {gammas:?}"
    );
    // G_ema tracks G but is not G.
    let g = model::parameters(&t.g.vs);
    let e = model::parameters(&t.g_ema.vs);
    assert!(g.iter().zip(&e).any(|((_, a), (_, b))| !a.equal(b)));
}

/// The largest relative gap between each layer's sigma (u . W v) and W's top singular value.
fn worst_sigma_error(reg: &SnRegistry) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for (i, l) in reg.layers().iter().enumerate() {
        let w = l.weight.detach();
        let rows = w.size()[0];
        let top = w.view([rows, -1]).svd(true, true).1.double_value(&[0]);
        let err = (l.sigma() - top).abs() / top;
        if err > worst.0 {
            worst = (
                err,
                format!("layer {i} {:?}: sigma {} vs {top}", w.size(), l.sigma()),
            );
        }
    }
    worst
}

#[test]
fn spectral_norm_is_converged_at_construction() {
    tch::manual_seed(5);
    let cfg = small_config(1);
    let g = Generator::new(&cfg.model, Device::Cpu).unwrap();
    let d = Discriminator::new(&cfg.model, Device::Cpu).unwrap();
    for (net, reg) in [("G", &g.sn), ("D", &d.sn)] {
        let (err, at) = worst_sigma_error(reg);
        assert!(err <= 1e-3, "{net}: {at} (relative error {err})");
    }
}

#[test]
fn ema_starting_at_zero_starts_as_an_exact_copy_of_g() {
    let t = Trainer::new(small_config(1), &LocalComm, Device::Cpu).unwrap();
    let (g, e) = (
        model::named_variables(&t.g.vs),
        model::named_variables(&t.g_ema.vs),
    );
    for ((n, a), (_, b)) in g.iter().zip(&e) {
        assert!(a.equal(b), "G_ema.{n} is not G.{n} before the first step");
    }
}

#[test]
fn g_ema_sigma_tracks_its_own_averaged_weights() {
    tch::set_num_threads(2);
    let mut cfg = small_config(60);
    cfg.train.ema_decay = 0.9;
    // The paper's rates, not the CPU default's 8e-4 (whose faster-moving weights one power
    // iteration per update follows within 0.2%, as G's own sigma does): a tracking defect, not
    // the rate, must be what moves sigma here.
    (cfg.train.lr_g, cfg.train.lr_d) = (1e-4, 4e-4);
    let mut t = Trainer::new(cfg, &LocalComm, Device::Cpu).unwrap();
    for _ in 0..60 {
        t.train_step().unwrap();
    }
    let (err, at) = worst_sigma_error(&t.g_ema.sn);
    assert!(err <= 1e-3, "G_ema: {at} (relative error {err})");
    // G_ema's vectors are its own, not copies of G's.
    let (g, e) = (model::buffers(&t.g.vs), model::buffers(&t.g_ema.vs));
    assert!(g
        .iter()
        .zip(&e)
        .any(|((n, a), (_, b))| n.ends_with("weight_u") && !a.equal(b)));
}
