//! `sagan gpu-check`: a few CUDA training steps and an NCCL all-reduce on this machine's GPU,
//! for launch/gpu-check.sh on a GPU machine without a Rust toolchain.
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::store;
use crate::config::{Autocast, Config};
use crate::dist::nccl::NcclComm;
use crate::dist::{device, Comm, LocalComm};
use crate::error::{Error, Result};
use crate::train::checkpointing::{self, RunRecord};
use crate::train::Trainer;

pub fn run(cfg: Config, steps: i64) -> Result<()> {
    device::require_cuda("gpu-check")?;
    println!("CUDA devices: {}", tch::Cuda::device_count());
    let dev = Device::Cuda(0);
    let mut bf16 = cfg.clone();
    let t = timed_training(cfg, dev, steps)?;
    // The same steps under bf16 autocast (a train step fails on a non-finite loss or gradient).
    bf16.train.autocast = Autocast::Bf16;
    drop(timed_training(bf16, dev, steps)?);

    checkpoint_round_trip(&t)?;

    let nccl = NcclComm::new(Box::new(LocalComm), 0)?;
    println!("NCCL: {} rank(s), library {}", nccl.size(), nccl.library());
    let n = 16 << 20; // 64 MiB of f32
    let mut x = Tensor::arange(n, (Kind::Float, dev));
    let expected = &x * nccl.size() as f64;
    nccl.all_reduce_sum(&mut x)?;
    if !x.equal(&expected) {
        return Err(Error::Dist("NCCL all-reduce returned a wrong sum".into()));
    }
    let mut b = Tensor::full([1024], 7.0, (Kind::Double, dev));
    nccl.broadcast(&mut b, 0)?;
    if b.sum(Kind::Double).double_value(&[]) != 7.0 * 1024.0 {
        return Err(Error::Dist("NCCL broadcast changed the root's data".into()));
    }
    tch::Cuda::synchronize(0);
    let iters = 20;
    let t0 = Instant::now();
    for _ in 0..iters {
        nccl.all_reduce_sum(&mut x)?;
    }
    tch::Cuda::synchronize(0);
    let secs = t0.elapsed().as_secs_f64() / iters as f64;
    nccl.check_async_error()?;
    println!(
        "NCCL all-reduce of {} MiB: {:.3} ms, {:.1} GB/s (results checked)",
        (n * 4) >> 20,
        secs * 1e3,
        (n * 4) as f64 / secs / 1e9
    );
    Ok(())
}

/// A trainer on `dev` after 3 warm-up and `steps` timed steps, whose rate it prints.
fn timed_training(cfg: Config, dev: Device, steps: i64) -> Result<Trainer> {
    let (batch, precision) = (cfg.train.batch_size, cfg.train.autocast);
    let mut t = Trainer::new(cfg, &LocalComm, dev)?;
    for _ in 0..3 {
        t.train_step()?;
    }
    tch::Cuda::synchronize(0);
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(t.train_step()?);
    }
    tch::Cuda::synchronize(0);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "training on {dev:?}, autocast {precision:?}: {steps} steps of batch {batch} in {secs:.2} s = \
         {:.1} images/s; last step {last:?}",
        (steps * batch) as f64 / secs
    );
    Ok(t)
}

/// A checkpoint of the CUDA trainer written, read back and restored into a fresh trainer: every
/// parameter, buffer and Adam moment must come back bit for bit (device -> host -> device).
fn checkpoint_round_trip(t: &Trainer) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sagan-gpu-check-{}", std::process::id()));
    let t0 = Instant::now();
    let snap = checkpointing::snapshot(t, &RunRecord::default())?;
    let paused = t0.elapsed().as_secs_f64();
    let written = store::write(&dir, snap, 1)?;
    let found = store::load(&written.dir)?;
    let mut fresh = Trainer::new(t.cfg.clone(), &LocalComm, t.device)?;
    let state = found.state.clone();
    checkpointing::restore(&mut fresh, &state, Some(found))?;
    let (a, b) = (t.replicated_state(), fresh.replicated_state());
    let differing: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|((_, x), (_, y))| !x.equal(y))
        .map(|((n, _), _)| n.as_str())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    if !differing.is_empty() || fresh.step != t.step {
        return Err(Error::Train(format!(
            "CUDA checkpoint round trip changed {} tensor(s) (e.g. {:?}) or the step",
            differing.len(),
            differing.first()
        )));
    }
    println!(
        "checkpoint on {:?}: {} tensors, {:.1} MB, snapshot {:.1} ms, written in {:.2} s, restored bit for bit",
        t.device,
        a.len(),
        written.bytes as f64 / 1e6,
        paused * 1e3,
        written.seconds
    );
    Ok(())
}
