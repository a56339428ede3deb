//! `sagan bench-allreduce`: the gradient-averaging path (buckets, as training runs it) timed
//! against one raw in-place all-reduce of the same bytes, under mpirun (see bench/run.sh).
use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::distributed::buckets::GradientBuckets;
use crate::distributed::{job, Comm};
use crate::error::Result;
use crate::model::{self, Discriminator, Generator};
use crate::train::stats;

/// Prints both timings on rank 0, as a sentence or as one JSON line.
pub fn run(config: &Path, overrides: &[String], iters: usize, json: bool) -> Result<u8> {
    let cfg = super::load_for_a_rank(config, overrides)?;
    if let Some(f) = all_reduce(&cfg, iters)? {
        if json {
            println!("{}", f.to_json());
            return Ok(0);
        }
        let gbs = |s: f64| f.bytes as f64 / s / 1e9;
        println!(
            "all-reduce of {:.2} MB (G+D gradients) over {} ranks: {} buckets {:.3} ms ({:.3} GB/s), raw MPI_Allreduce {:.3} ms ({:.3} GB/s)",
            f.bytes as f64 / 1e6,
            f.ranks,
            f.buckets,
            f.bucketed_seconds * 1e3,
            gbs(f.bucketed_seconds),
            f.raw_seconds * 1e3,
            gbs(f.raw_seconds)
        );
    }
    Ok(0)
}

pub struct AllReduceFigures {
    pub ranks: usize,
    pub bytes: usize,
    pub buckets: usize,
    pub bucket_bytes: usize,
    pub bucketed_seconds: f64,
    pub raw_seconds: f64,
}

impl AllReduceFigures {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ranks": self.ranks,
            "bytes": self.bytes,
            "buckets": self.buckets,
            "bucket_bytes": self.bucket_bytes,
            "bucketed_s": self.bucketed_seconds,
            "raw_s": self.raw_seconds,
        })
    }
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
    Ok(stats::median(&mut times))
}

pub fn all_reduce(cfg: &Config, iters: usize) -> Result<Option<AllReduceFigures>> {
    let rank = job::join(cfg)?;
    let comm = rank.comm;
    let figures = time_all_reduces(cfg, comm, rank.device, iters)?;
    // MPI answers nothing once finalized, not even the rank.
    let first = comm.rank() == 0;
    job::finalize(comm);
    Ok(first.then_some(figures))
}

/// Both timings of [`all_reduce`] on `device`, which must be the communicator's (NCCL takes only
/// tensors on its GPU). Each timed call waits for its collectives: NCCL only queues them.
fn time_all_reduces(
    cfg: &Config,
    comm: &dyn Comm,
    device: Device,
    iters: usize,
) -> Result<AllReduceFigures> {
    let g = Generator::new(&cfg.model, device)?;
    let d = Discriminator::new(&cfg.model, device)?;
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
    let bucketed = median_time(iters, || {
        let _ = buckets.all_reduce(comm)?;
        comm.wait()
    })?;
    let mut flat = Tensor::ones([(bytes / 4) as i64], (Kind::Float, device));
    let raw = median_time(iters, || {
        comm.all_reduce_sum(&mut flat)?;
        comm.wait()
    })?;
    Ok(AllReduceFigures {
        ranks: comm.size(),
        bytes,
        buckets: buckets.count(),
        bucket_bytes,
        bucketed_seconds: bucketed,
        raw_seconds: raw,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Two ranks as far as the benchmark can tell: records the device of every tensor reduced
    /// and counts the waits for queued collectives.
    #[derive(Default)]
    struct Recorder {
        devices: Mutex<Vec<Device>>,
        waits: Mutex<usize>,
    }

    impl Comm for Recorder {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
            self.devices.lock().unwrap().push(t.device());
            Ok(())
        }
        fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
            Ok(())
        }
        fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(vec![bytes.to_vec(); 2])
        }
        fn gather_bytes(&self, _bytes: &[u8], _root: usize) -> Result<Option<Vec<Vec<u8>>>> {
            Ok(None)
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn wait(&self) -> Result<()> {
            *self.waits.lock().unwrap() += 1;
            Ok(())
        }
    }

    /// Every tensor handed to the collectives is on the rank's device (NCCL refuses any other),
    /// and every timed call waits for its collectives (NCCL returns once they are queued).
    #[test]
    fn all_reduce_timings_reduce_on_the_rank_device_and_wait_for_completion() {
        let mut cfg = Config::default();
        (cfg.model.g_ch, cfg.model.d_ch) = (8, 8);
        cfg.dist.bucket_mb = 0.01;
        let comm = Recorder::default();
        let iters = 3;
        let f = time_all_reduces(&cfg, &comm, Device::Cpu, iters).unwrap();
        let devices = comm.devices.lock().unwrap().clone();
        assert!(
            devices.len() > 2 * (iters + 1),
            "{} collectives",
            devices.len()
        );
        assert!(devices.iter().all(|&d| d == Device::Cpu), "{devices:?}");
        // One warm-up and `iters` timed calls of each of the two measurements.
        assert_eq!(*comm.waits.lock().unwrap(), 2 * (iters + 1));
        let g = Generator::new(&cfg.model, Device::Cpu).unwrap();
        let d = Discriminator::new(&cfg.model, Device::Cpu).unwrap();
        let params = model::parameter_count(&g.vs) + model::parameter_count(&d.vs);
        assert_eq!(f.bytes, params as usize * 4);
        assert_eq!(f.ranks, 2);
        // Each timed bucketed call is one collective per bucket.
        assert_eq!(devices.len(), (iters + 1) * (f.buckets + 1));
        assert_eq!(f.to_json()["buckets"], f.buckets);
    }
}
