//! `sagan bench-train`: timed training steps with no outputs, the sagan side of
//! bench/side_by_side.py; one JSON line of figures from rank 0.
use std::path::Path;
use std::time::Instant;

use tch::Device;

use crate::config::Config;
use crate::distributed::job;
use crate::error::Result;
use crate::model;
use crate::train::stats;

pub fn run(
    config: &Path,
    overrides: &[String],
    warmup: i64,
    steps: i64,
    phases: bool,
) -> Result<u8> {
    let cfg = super::load_for_a_rank(config, overrides)?;
    if let Some(f) = train(&cfg, warmup, steps.max(1), phases)? {
        println!("{}", serde_json::to_string(&f).expect("serialisable"));
    }
    Ok(0)
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
    let rank = job::join(cfg)?;
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
        stats::standard_deviation(&work),
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
    let median_step_s = stats::median(&mut times);
    let figures = TrainFigures {
        implementation: "sagan",
        world: comm.size(),
        device: match rank.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        threads: tch::get_num_threads(),
        allocator: crate::host::alloc::serving(cfg.train.host_memory),
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
    job::finalize(comm);
    Ok(root.then_some(figures))
}
