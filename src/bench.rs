//! Benchmarks: `sagan bench-allreduce`, the gradient-averaging path measured against a raw in-place
//! all-reduce of the same bytes (run under mpirun; see scripts/bench.sh); `sagan bench-train`,
//! timed training steps with no outputs, the sagan side of bench/side_by_side.py.
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::dist::buckets::GradientBuckets;
use crate::dist::{launch, Comm};
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
    let figures = time_all_reduces(cfg, comm, rank.device, iters)?;
    launch::finalize(comm);
    Ok((comm.rank() == 0).then_some(figures))
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
        bytes,
        bucketed_seconds: bucketed,
        raw_seconds: raw,
    })
}

/// What `sagan bench-train` measured (rank 0's view; RSS of every rank).
#[derive(Debug, serde::Serialize)]
pub struct TrainFigures {
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    pub world: usize,
    /// Where rank 0 trained: "cpu" or "cuda:N".
    pub device: String,
    pub threads: i32,
    /// Who serves CPU allocations on rank 0: "tcmalloc", or glibc under the `train.host_memory`
    /// policy applied.
    pub allocator: String,
    pub global_batch: i64,
    pub median_step_s: f64,
    pub images_per_s: f64,
    /// Share of the timed steps spent inside the gradient all-reduces, waiting for the slower
    /// rank included.
    pub allreduce_share: f64,
    /// The same share on each rank: a rank that always waits least is the one the others wait
    /// for, a systematic imbalance rather than step-to-step noise.
    pub allreduce_share_per_rank: Vec<f64>,
    /// Mean milliseconds per step each rank spent outside the all-reduces (its own work).
    pub work_ms_per_rank: Vec<f64>,
    /// Standard deviation of that work from step to step, per rank: the jitter that makes the
    /// faster rank wait at each all-reduce even when no rank is slower on average.
    pub work_ms_sd_per_rank: Vec<f64>,
    /// Gradient averaging alone (ranks lined up first, see
    /// [`crate::train::Trainer::time_gradient_averaging`]) as a share of the median step; 0 for
    /// one rank.
    pub allreduce_transfer_share: f64,
    /// Peak resident set of each rank (VmHWM), MiB.
    pub peak_rss_mib: Vec<f64>,
    /// Mean milliseconds per step of each phase of the step (rank 0).
    pub phases_ms: Vec<(String, f64)>,
    pub g_params: i64,
    pub d_params: i64,
}

fn standard_deviation(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// This process's peak resident set in KiB (Linux: VmHWM of /proc/self/status; 0 elsewhere).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `warmup` untimed then `steps` timed training steps of `cfg` (no outputs written), under mpirun
/// for more ranks; the figures come back on rank 0. With `phases`, the timed steps are also
/// split by phase (a few clock reads per step).
pub fn train(cfg: &Config, warmup: i64, steps: i64, phases: bool) -> Result<Option<TrainFigures>> {
    let rank = launch::join(cfg)?;
    let comm = rank.comm;
    let mut t = crate::train::Trainer::new(cfg.clone(), comm, rank.device)?;
    for _ in 0..warmup {
        t.train_step()?;
    }
    if phases {
        t.phases = Some(Default::default());
    }
    let mut times = Vec::with_capacity(steps as usize);
    let mut work = Vec::with_capacity(steps as usize);
    let mut comm_seconds = 0.0;
    for _ in 0..steps {
        let t0 = Instant::now();
        let s = t.train_step()?;
        let step = t0.elapsed().as_secs_f64();
        times.push(step);
        work.push((step - s.allreduce_seconds) * 1e3);
        comm_seconds += s.allreduce_seconds;
    }
    let total: f64 = times.iter().sum();
    let transfer = if comm.size() > 1 {
        t.time_gradient_averaging(5)?
    } else {
        0.0
    };
    let rss = comm.all_gather_bytes(&peak_rss_kib().to_le_bytes())?;
    let f64s = |b: &Vec<u8>, i: usize| {
        b.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(f64::NAN, f64::from_le_bytes)
    };
    let mine = [
        comm_seconds / total.max(1e-12),
        (total - comm_seconds) * 1e3 / steps.max(1) as f64,
        standard_deviation(&work),
    ];
    let per_rank = comm.all_gather_bytes(
        &mine
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )?;
    let phases_ms = t
        .phases
        .take()
        .map(|c| {
            c.seconds
                .into_iter()
                .filter(|(p, _)| *p != "between steps" || steps > 1)
                .map(|(p, s)| (p.to_string(), s * 1e3 / steps.max(1) as f64))
                .collect()
        })
        .unwrap_or_default();
    let median_step_s = crate::train::run::median(&mut times);
    let figures = TrainFigures {
        implementation: "sagan",
        world: comm.size(),
        device: match rank.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        threads: tch::get_num_threads(),
        allocator: crate::alloc::serving(cfg.train.host_memory),
        global_batch: cfg.train.batch_size,
        median_step_s,
        images_per_s: cfg.train.batch_size as f64 / median_step_s,
        allreduce_share: comm_seconds / total.max(1e-12),
        allreduce_transfer_share: transfer / median_step_s.max(1e-12),
        allreduce_share_per_rank: per_rank.iter().map(|b| f64s(b, 0)).collect(),
        work_ms_per_rank: per_rank.iter().map(|b| f64s(b, 1)).collect(),
        work_ms_sd_per_rank: per_rank.iter().map(|b| f64s(b, 2)).collect(),
        peak_rss_mib: rss
            .iter()
            .map(|b| {
                let kib = u64::from_le_bytes(b.as_slice().try_into().unwrap_or([0; 8]));
                kib as f64 / 1024.0
            })
            .collect(),
        phases_ms,
        g_params: model::parameter_count(&t.g.vs),
        d_params: model::parameter_count(&t.d.vs),
    };
    drop(t);
    let root = comm.rank() == 0;
    launch::finalize(comm);
    Ok(root.then_some(figures))
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
    }
}
