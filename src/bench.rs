//! `sagan bench-allreduce`: the gradient-averaging path measured against a raw in-place
//! all-reduce of the same bytes (run under mpirun; see scripts/bench.sh).
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::dist::buckets::GradientBuckets;
use crate::dist::launch;
use crate::error::Result;
use crate::model::{self, Discriminator, Generator};

pub struct AllReduceFigures {
    pub bytes: usize,
    pub bucketed_seconds: f64,
    pub raw_seconds: f64,
}

/// Median seconds of `iters` calls of `f`, after one warm-up call.
fn median_time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(crate::train::run::median(&mut times))
}

pub fn all_reduce(cfg: &Config, iters: usize) -> Result<Option<AllReduceFigures>> {
    let rank = launch::join(cfg)?;
    let comm = rank.comm;
    let g = Generator::new(&cfg.model, rank.device)?;
    let d = Discriminator::new(&cfg.model, rank.device)?;
    let mut params = model::parameters(&g.vs);
    params.extend(model::parameters(&d.vs));
    let loss: Tensor = params
        .iter()
        .map(|(_, p)| p.square().sum(Kind::Float))
        .sum();
    loss.backward();
    let bucket_bytes = (cfg.dist.bucket_mb * 1024.0 * 1024.0) as usize;
    let bytes: usize = params.iter().map(|(_, p)| p.numel() * 4).sum();
    let mut buckets = GradientBuckets::new("bench", &params, bucket_bytes)?;
    let bucketed = median_time(iters, || buckets.all_reduce(comm, 0).map(|_| ()))?;
    let mut flat = Tensor::ones([(bytes / 4) as i64], (Kind::Float, Device::Cpu));
    let raw = median_time(iters, || comm.all_reduce_sum(&mut flat))?;
    launch::finalize(comm);
    Ok((comm.rank() == 0).then_some(AllReduceFigures {
        bytes,
        bucketed_seconds: bucketed,
        raw_seconds: raw,
    }))
}
