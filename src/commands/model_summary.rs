//! `sagan model-summary`: parameter counts and tensor shapes of a config's networks.
use tch::{Device, Kind, Tensor};

use crate::cli::ModelSummaryArgs;
use crate::config::Config;
use crate::error::Result;
use crate::model::{self, BnMode, Discriminator, Generator, SnMode};

pub struct ModelSummary {
    pub g_params: i64,
    pub d_params: i64,
    pub g_output: Vec<i64>,
    pub d_output: Vec<i64>,
    pub g_attention: usize,
    pub d_attention: usize,
}

/// Builds G and D on the CPU and runs a batch of 2 through them.
/// One table row per config.
pub fn run(args: ModelSummaryArgs) -> Result<u8> {
    println!(
        "{:<28} {:>12} {:>12} {:>18} {:>8} {:>5} {:>5}",
        "config", "G params", "D params", "G output", "D out", "G att", "D att"
    );
    for path in &args.configs {
        let cfg = Config::load(path, &args.overrides)?;
        let s = summarise(&cfg)?;
        println!(
            "{:<28} {:>12} {:>12} {:>18} {:>8} {:>5} {:>5}",
            path.display(),
            s.g_params,
            s.d_params,
            format!("{:?}", s.g_output),
            format!("{:?}", s.d_output),
            s.g_attention,
            s.d_attention
        );
    }
    Ok(0)
}

pub fn summarise(cfg: &Config) -> Result<ModelSummary> {
    let m = &cfg.model;
    let g = Generator::new(m, Device::Cpu)?;
    let d = Discriminator::new(m, Device::Cpu)?;
    g.sn.refresh(SnMode::Detached);
    d.sn.refresh(SnMode::Detached);
    let z = Tensor::randn([2, m.z_dim], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, m.num_classes - 1]);
    let x = tch::no_grad(|| g.forward(&z, &y, BnMode::Batch));
    let logits = tch::no_grad(|| d.forward(&x, &y));
    Ok(ModelSummary {
        g_params: model::parameter_count(&g.vs),
        d_params: model::parameter_count(&d.vs),
        g_output: x.size(),
        d_output: logits.size(),
        g_attention: g.gammas().len(),
        d_attention: d.gammas().len(),
    })
}
