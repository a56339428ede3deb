//! `sagan gpu-check`: one run that proves or disproves every CUDA path of the trainer on this
//! machine's first GPU, for launch/gpu-check.sh on a lent GPU machine without a Rust toolchain.
//!
//! Each check runs on its own and records pass, fail or skip with its figures; the report
//! (`gpu-check.json` and `gpu-check.md` in `--out`) is rewritten after every check, so a check that
//! hangs or kills the process still leaves the ones before it. Without CUDA the same checks run on
//! the CPU (against itself), which exercises this logic anywhere; the verdict is then "no_cuda".
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::store;
use crate::cli::GpuCheckArgs;
use crate::config::{Autocast, Config};
use crate::distributed::grad_ready::GradReadyHooks;
use crate::distributed::nccl::NcclComm;
use crate::distributed::{cuda_driver, device, Comm, LocalComm};
use crate::error::{Error, IoContext, Result};
use crate::output::StepStats;
use crate::train::checkpointing::{self, RunRecord};
use crate::train::Trainer;

/// CUDA against CPU, fp32, from the same weights, data and noise: losses and gradient norms agree
/// to this relative difference (the GPU may run convolutions in TF32, and the order of sums
/// differs), over [`COMPARED_STEPS`] steps.
pub const CPU_TOLERANCE: f64 = 2e-2;
const COMPARED_STEPS: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    seconds: f64,
    detail: String,
    figures: Map<String, Value>,
}

/// The checks so far, written out after each.
#[derive(Serialize)]
struct Report {
    /// "pass", "fail", or "no_cuda" (the checks then ran on the CPU, as a test of this command).
    result: &'static str,
    device: String,
    checks: Vec<Check>,
    #[serde(skip)]
    out: Option<PathBuf>,
}

/// What the command was asked for.
pub struct Options {
    /// Timed training steps per throughput check.
    pub steps: i64,
    /// Where gpu-check.json and gpu-check.md go (none: the console only).
    pub out: Option<PathBuf>,
}

/// Runs every check; returns the verdict ("pass", "fail", "no_cuda").
/// Exit code 0 when every check passed, 1 when one failed, 3 without CUDA (the checks then ran
/// on the CPU, as a test of the command).
pub fn run(args: GpuCheckArgs) -> Result<u8> {
    let cfg = super::load_for_a_rank(&args.config, &args.overrides)?;
    let opts = Options {
        steps: args.steps,
        out: args.out,
    };
    Ok(match check_all(cfg, &opts)? {
        "pass" => 0,
        "no_cuda" => 3,
        _ => 1,
    })
}

pub fn check_all(cfg: Config, opts: &Options) -> Result<&'static str> {
    let cuda = tch::Cuda::is_available();
    let dev = if cuda { Device::Cuda(0) } else { Device::Cpu };
    let mut r = Report {
        result: if cuda { "pass" } else { "no_cuda" },
        device: describe(dev),
        checks: Vec::new(),
        out: opts.out.clone(),
    };
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    println!("gpu-check on {}", r.device);
    r.check("cuda", |f| cuda_check(f, cuda));
    r.check("train_fp32_vs_cpu", |f| fp32_against_cpu(f, &cfg, dev));
    r.check("train_bf16", |f| bf16_steps(f, &cfg, dev));
    for (name, res, mode) in [
        ("throughput_32px_fp32", None, Autocast::Off),
        ("throughput_32px_bf16", None, Autocast::Bf16),
        ("throughput_128px_fp32", Some(128), Autocast::Off),
        ("throughput_128px_bf16", Some(128), Autocast::Bf16),
    ] {
        r.check(name, |f| {
            if res.is_some() && !cuda {
                return Ok(skip(
                    "128 px is timed on CUDA only (minutes per step on a CPU)",
                ));
            }
            let cfg = at_resolution(&cfg, res, mode);
            throughput(f, cfg, dev, opts.steps)
        });
    }
    r.check("checkpoint_resume", |f| {
        checkpoint_round_trips(f, &cfg, dev)
    });
    r.check("overlap_hooks", |f| hooks_fire(f, dev));
    r.check("nccl", |f| {
        if !cuda {
            return Ok(skip("NCCL needs CUDA"));
        }
        nccl_one_rank(f, dev)
    });
    r.write();
    println!("gpu-check: {}", r.result);
    Ok(r.result)
}

fn skip(why: &str) -> Outcome {
    Outcome::Skip(why.into())
}

/// What a check that did not fail says: passed, or skipped and why.
enum Outcome {
    Pass(String),
    Skip(String),
}

impl From<String> for Outcome {
    fn from(detail: String) -> Self {
        Outcome::Pass(detail)
    }
}

impl Report {
    fn check<O: Into<Outcome>>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Map<String, Value>) -> Result<O>,
    ) {
        let t0 = Instant::now();
        let mut figures = Map::new();
        let (status, detail) = match f(&mut figures).map(Into::into) {
            Ok(Outcome::Pass(d)) => (Status::Pass, d),
            Ok(Outcome::Skip(d)) => (Status::Skip, d),
            Err(e) => (Status::Fail, e.to_string()),
        };
        if status == Status::Fail && self.result == "pass" {
            self.result = "fail";
        }
        let seconds = t0.elapsed().as_secs_f64();
        println!("[{status:?}] {name} ({seconds:.1} s): {detail}");
        self.checks.push(Check {
            name,
            status,
            seconds,
            detail,
            figures,
        });
        self.write();
    }

    /// Both files, each written whole then renamed into place.
    fn write(&self) {
        let Some(dir) = &self.out else { return };
        let json = serde_json::to_string_pretty(self).unwrap_or_default();
        for (file, text) in [("gpu-check.json", json), ("gpu-check.md", self.markdown())] {
            if let Err(e) = write_whole(&dir.join(file), &text) {
                eprintln!("sagan: warning: gpu-check: {e}");
            }
        }
    }

    fn markdown(&self) -> String {
        let mut md = format!(
            "# sagan gpu-check\n\nResult: **{}** on {}\n\n| check | status | seconds | detail |\n|---|---|---|---|\n",
            self.result, self.device
        );
        for c in &self.checks {
            md.push_str(&format!(
                "| {} | {:?} | {:.1} | {} |\n",
                c.name,
                c.status,
                c.seconds,
                c.detail.replace('|', "\\|").replace('\n', " ")
            ));
        }
        md.push_str("\n## Figures\n\n");
        for c in self.checks.iter().filter(|c| !c.figures.is_empty()) {
            md.push_str(&format!(
                "- {}: {}\n",
                c.name,
                Value::Object(c.figures.clone())
            ));
        }
        md
    }
}

fn write_whole(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

fn describe(dev: Device) -> String {
    match dev {
        Device::Cuda(i) => format!(
            "CUDA device {i} ({})",
            cuda_driver::device_name(i).unwrap_or_else(|| "name unknown".into())
        ),
        _ => "CPU (no CUDA: the checks run on the CPU to test this command)".into(),
    }
}

fn cuda_check(f: &mut Map<String, Value>, cuda: bool) -> Result<Outcome> {
    f.insert(
        "libtorch".into(),
        crate::checkpoint::LIBTORCH_VERSION.into(),
    );
    f.insert(
        "libtorch_cuda_loaded".into(),
        device::libtorch_cuda_loaded().into(),
    );
    f.insert("driver".into(), cuda_driver::driver_status().into());
    if !cuda {
        return Err(Error::Dist(format!(
            "no CUDA: {}",
            device::cuda_diagnosis()
        )));
    }
    f.insert("devices".into(), tch::Cuda::device_count().into());
    f.insert("cudnn".into(), tch::Cuda::cudnn_is_available().into());
    Ok(format!("{} CUDA device(s)", tch::Cuda::device_count()).into())
}

fn sync(dev: Device) {
    if let Device::Cuda(i) = dev {
        tch::Cuda::synchronize(i as i64);
    }
}

fn record_memory(f: &mut Map<String, Value>, dev: Device) {
    if let Some((used, total)) = dev
        .is_cuda()
        .then(|| cuda_driver::memory_in_use(0))
        .flatten()
    {
        f.insert("device_memory_used_mib".into(), (used >> 20).into());
        f.insert("device_memory_total_mib".into(), (total >> 20).into());
    }
}

/// A trainer on `dev` that starts from `from`'s state exactly (weights, buffers, moments): the CUDA
/// generator draws other initial weights than the CPU's from the same seed.
fn trainer_like(from: &Trainer, dev: Device) -> Result<Trainer> {
    let t = Trainer::new(from.cfg.clone(), &LocalComm, dev)?;
    tch::no_grad(|| {
        for ((_, dst), (_, src)) in t.replicated_state().iter().zip(from.replicated_state()) {
            dst.shallow_clone().copy_(&src);
        }
    });
    Ok(t)
}

fn stats_of(s: &StepStats) -> [(&'static str, f64); 5] {
    [
        ("d_loss_real", s.d_loss_real),
        ("d_loss_fake", s.d_loss_fake),
        ("g_loss", s.g_loss),
        ("d_grad_norm", s.d_grad_norm),
        ("g_grad_norm", s.g_grad_norm),
    ]
}

/// Relative difference with a floor, so that values near zero compare absolutely.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

fn fp32_against_cpu(f: &mut Map<String, Value>, cfg: &Config, dev: Device) -> Result<Outcome> {
    let mut cfg = cfg.clone();
    cfg.train.autocast = Autocast::Off;
    let mut cpu = Trainer::new(cfg, &LocalComm, Device::Cpu)?;
    let mut gpu = trainer_like(&cpu, dev)?;
    let mut worst: (f64, String) = (0.0, String::new());
    for step in 1..=COMPARED_STEPS {
        let (a, b) = (cpu.train_step()?, gpu.train_step()?);
        for ((name, x), (_, y)) in stats_of(&a).into_iter().zip(stats_of(&b)) {
            let d = match rel(x, y) {
                d if d.is_nan() => f64::INFINITY,
                d => d,
            };
            f.insert(format!("step{step}.{name}"), json!([x, y]));
            if d > worst.0 || worst.1.is_empty() {
                worst = (d, format!("step {step} {name}: CPU {x}, {dev:?} {y}"));
            }
        }
    }
    f.insert("worst_relative_difference".into(), worst.0.into());
    f.insert("tolerance".into(), CPU_TOLERANCE.into());
    if worst.0 > CPU_TOLERANCE || !worst.0.is_finite() {
        return Err(Error::Train(format!(
            "{dev:?} and the CPU differ by {:.2e} relatively (tolerance {CPU_TOLERANCE:.0e}): {}",
            worst.0, worst.1
        )));
    }
    Ok(format!(
        "{COMPARED_STEPS} steps from the same state: losses and gradient norms within {:.2e} of the CPU's ({})",
        worst.0, worst.1
    )
    .into())
}

fn bf16_steps(f: &mut Map<String, Value>, cfg: &Config, dev: Device) -> Result<Outcome> {
    let mut cfg = cfg.clone();
    cfg.train.autocast = Autocast::Bf16;
    let mut t = Trainer::new(cfg, &LocalComm, dev)?;
    let mut last = StepStats::default();
    for _ in 0..COMPARED_STEPS * 2 {
        last = t.train_step()?;
    }
    f.insert("skipped_steps".into(), t.skipped_steps.into());
    for (name, v) in stats_of(&last) {
        f.insert(name.into(), v.into());
    }
    let finite = stats_of(&last).iter().all(|(_, v)| v.is_finite());
    let weights_finite = t.replicated_state().iter().all(|(_, x)| {
        x.kind() == Kind::Float && bool::try_from(x.isfinite().all()).unwrap_or(false)
    });
    if !finite || !weights_finite {
        return Err(Error::Train(format!(
            "bf16 autocast on {dev:?}: last step {last:?}, fp32 finite weights: {weights_finite}"
        )));
    }
    Ok(format!(
        "{} steps under bf16 autocast: finite losses, fp32 finite weights, {} skipped",
        COMPARED_STEPS * 2,
        t.skipped_steps
    )
    .into())
}

/// `cfg` at another resolution, with attention where the 128 px ImageNet config has it (on the
/// 32x32 feature maps), or as given.
fn at_resolution(cfg: &Config, res: Option<i64>, mode: Autocast) -> Config {
    let mut c = cfg.clone();
    c.train.autocast = mode;
    if let Some(r) = res {
        c.model.resolution = r;
        c.model.g_attn_res = vec![32];
        c.model.d_attn_res = vec![32];
    }
    c
}

fn throughput(f: &mut Map<String, Value>, cfg: Config, dev: Device, steps: i64) -> Result<Outcome> {
    let (batch, res) = (cfg.train.batch_size, cfg.model.resolution);
    let mut t = Trainer::new(cfg, &LocalComm, dev)?;
    for _ in 0..3 {
        t.train_step()?;
    }
    sync(dev);
    let t0 = Instant::now();
    for _ in 0..steps {
        t.train_step()?;
    }
    sync(dev);
    let secs = t0.elapsed().as_secs_f64();
    let ips = (steps * batch) as f64 / secs;
    f.insert("resolution".into(), res.into());
    f.insert("batch".into(), batch.into());
    f.insert("steps".into(), steps.into());
    f.insert("images_per_second".into(), ips.into());
    f.insert("ms_per_step".into(), (secs * 1e3 / steps as f64).into());
    record_memory(f, dev);
    Ok(format!("{ips:.1} images/s ({steps} steps of batch {batch} at {res} px)").into())
}

/// A checkpoint written on `dev`, restored on `dev` and on the CPU, and a CPU checkpoint restored
/// on `dev`: every tensor bit for bit each way.
fn checkpoint_round_trips(
    f: &mut Map<String, Value>,
    cfg: &Config,
    dev: Device,
) -> Result<Outcome> {
    let mut t = Trainer::new(cfg.clone(), &LocalComm, dev)?;
    t.train_step()?;
    let dir = std::env::temp_dir().join(format!("sagan-gpu-check-{}", std::process::id()));
    let result = (|| {
        let written = store::write(
            &dir.join("a"),
            checkpointing::snapshot(&t, &RunRecord::default())?,
            1,
        )?;
        f.insert("bytes".into(), written.bytes.into());
        f.insert("write_seconds".into(), written.seconds.into());
        let same = restored(&written.dir, &t, dev)?;
        let on_cpu = restored(&written.dir, &t, Device::Cpu)?;
        let back_dir = store::write(
            &dir.join("b"),
            checkpointing::snapshot(&on_cpu, &RunRecord::default())?,
            1,
        )?;
        let back = restored(&back_dir.dir, &on_cpu, dev)?;
        for (what, a, b) in [
            ("resume on the same device", &t, &same),
            ("resume on the CPU", &t, &on_cpu),
            ("a CPU checkpoint resumed on the device", &on_cpu, &back),
        ] {
            let differing = differing(a, b);
            if !differing.is_empty() || a.step != b.step {
                return Err(Error::Train(format!(
                    "{what}: {} tensor(s) differ (e.g. {:?}), steps {} and {}",
                    differing.len(),
                    differing.first(),
                    a.step,
                    b.step
                )));
            }
        }
        Ok(format!(
            "{} tensors bit for bit: {dev:?} -> {dev:?}, {dev:?} -> CPU, CPU -> {dev:?}",
            t.replicated_state().len()
        )
        .into())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn restored(dir: &Path, like: &Trainer, dev: Device) -> Result<Trainer> {
    let found = store::load(dir)?;
    let mut fresh = Trainer::new(like.cfg.clone(), &LocalComm, dev)?;
    let state = found.state.clone();
    checkpointing::restore(&mut fresh, &state, Some(found))?;
    Ok(fresh)
}

/// Names of the replicated tensors that differ between `a` and `b` (compared on the CPU).
fn differing(a: &Trainer, b: &Trainer) -> Vec<String> {
    a.replicated_state()
        .iter()
        .zip(b.replicated_state())
        .filter(|((_, x), (_, y))| !x.to_device(Device::Cpu).equal(&y.to_device(Device::Cpu)))
        .map(|((n, _), _)| n.clone())
        .collect()
}

/// The post-accumulate-grad hooks behind `dist.overlap` fire once per parameter on `dev`, after
/// the gradient is in place (on CUDA from libtorch's device thread).
fn hooks_fire(f: &mut Map<String, Value>, dev: Device) -> Result<Outcome> {
    use std::sync::{Arc, Mutex};
    let params: Vec<Tensor> = (1..=4)
        .map(|n| Tensor::ones([n * 1000], (Kind::Float, dev)).set_requires_grad(true))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::<(usize, bool)>::new()));
    let caller = std::thread::current().id();
    let hooks = {
        let seen = seen.clone();
        GradReadyHooks::register(
            &params,
            Box::new(move |i| {
                let other_thread = std::thread::current().id() != caller;
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, other_thread));
            }),
        )?
    };
    let loss: Tensor = params
        .iter()
        .enumerate()
        .map(|(i, p)| (p * (i + 1) as f64).sum(Kind::Float))
        .sum();
    loss.backward();
    sync(dev);
    drop(hooks);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut fired: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    fired.sort_unstable();
    let grads_right = params.iter().enumerate().all(|(i, p)| {
        let want = (i + 1) as f64 * p.numel() as f64;
        p.grad().sum(Kind::Double).double_value(&[]) == want
    });
    f.insert("fired".into(), json!(fired));
    f.insert(
        "on_another_thread".into(),
        seen.iter().filter(|(_, o)| *o).count().into(),
    );
    if fired != [0, 1, 2, 3] || !grads_right {
        return Err(Error::Dist(format!(
            "hooks fired for {fired:?} (want [0, 1, 2, 3] once each); gradients right: {grads_right}"
        )));
    }
    Ok(format!(
        "4 hooks fired once each, {} from another thread than backward's caller",
        seen.iter().filter(|(_, o)| *o).count()
    )
    .into())
}

fn nccl_one_rank(f: &mut Map<String, Value>, dev: Device) -> Result<Outcome> {
    let nccl = NcclComm::new(Box::new(LocalComm), 0)?;
    f.insert("version".into(), nccl.version().into());
    f.insert("library".into(), nccl.library().into());
    // libtorch's current stream, where the collectives run (0x0: its default, legacy stream).
    let stream = crate::distributed::cuda_stream::current_stream(0).map_err(Error::Dist)?;
    f.insert("stream".into(), format!("{stream:p}").into());
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
    sync(dev);
    let iters = 20;
    let t0 = Instant::now();
    for _ in 0..iters {
        nccl.all_reduce_sum(&mut x)?;
    }
    nccl.wait()?;
    let secs = t0.elapsed().as_secs_f64() / iters as f64;
    f.insert("all_reduce_ms_64mib".into(), (secs * 1e3).into());
    // The watchdog's way out of a stuck collective: after an abort every collective fails.
    let doomed = NcclComm::new(Box::new(LocalComm), 0)?;
    doomed.abort()?;
    let after = doomed.all_reduce_sum(&mut x);
    drop(doomed);
    match after {
        Err(e) if e.to_string().contains("aborted") => {}
        other => {
            return Err(Error::Dist(format!(
                "an all-reduce on an aborted communicator gave {other:?}, not an error"
            )))
        }
    }
    drop(nccl);
    Ok(format!(
        "NCCL {}: all-reduce and broadcast right, 64 MiB all-reduce {:.3} ms; abort makes later collectives fail; destroyed",
        f["version"].as_str().unwrap_or("?"),
        secs * 1e3
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences_have_a_floor() {
        assert_eq!(rel(1.0, 1.0), 0.0);
        assert!((rel(2.0, 1.0) - 0.5).abs() < 1e-12);
        assert!((rel(1e-6, 0.0) - 1e-3).abs() < 1e-12);
        assert!(rel(f64::NAN, 1.0).is_nan());
    }
}
