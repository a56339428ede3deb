//! `sagan train`: the loop around the trainer. After every step it runs the duties the
//! [`Schedule`] says are due; rank 0 alone reports (console, metrics.jsonl, TensorBoard) and writes
//! samples, checkpoints and weights; every rank takes part in evaluation and in every collective
//! decision (preemption, checkpoints).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Tensor;

use super::checkpointing::{self, RunRecord, StartPoint};
use super::preemption::Preemption;
use super::run_dir::{self, StartMode};
use super::schedule::{Duty, Schedule};
use super::stats::median;
use super::trainer::Trainer;
use crate::checkpoint::{self, BestScore, Checkpointer};
use crate::config::DatasetKind;
use crate::data::class_names;
use crate::distributed::agree;
use crate::error::{Error, Result};
use crate::metrics::eval::{self, FeatureNet, Scores};
use crate::metrics::real_data::{self, RealDataScores};
use crate::metrics::FidStats;
use crate::model;
use crate::model::inputs;
use crate::output::status_line::{self, StatusLine};
use crate::output::StepStats;
use crate::output::{grid, png};
use crate::output::{Reporter, StepReport};

/// What a finished run reports.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub steps: i64,
    pub world_size: usize,
    pub global_batch: i64,
    pub final_stats: StepStats,
    /// Median seconds per step of this process's part of the run (since its last resume).
    pub median_step_seconds: f64,
    /// Share of the step time this rank spent in gradient all-reduces (this session).
    pub allreduce_share: f64,
    pub images_per_second: f64,
    /// Attention gammas by block (`G.attention.1`, `D.attention.0`).
    pub gammas: BTreeMap<String, f64>,
    pub resyncs: usize,
    /// Steps skipped for non-finite gradients under autocast (see `train::undo`).
    pub skipped_steps: usize,
    /// The network behind FID and IS, the suffix of every metric name (`fmnist_classifier`).
    pub feature_net: Option<String>,
    /// Scores before the first step, by network (`G_ema`), named for the feature network
    /// (`FID_fmnist_classifier`, `IS_fmnist_classifier`, `IS_fmnist_classifier_std`).
    pub scores_start: Option<BTreeMap<String, serde_json::Value>>,
    /// Scores at the end: `G_ema`, and the raw `G` when `eval.score_g`.
    pub scores_end: Option<BTreeMap<String, serde_json::Value>>,
    /// The best G_ema FID of the run and its step (its checkpoint is kept).
    pub best: Option<serde_json::Value>,
    /// What Fashion-MNIST's test images score on the same feature network (the references).
    pub real_data: Option<RealDataScores>,
    /// Steps trained by this process (fewer than `steps` after a resume).
    pub steps_this_session: usize,
    pub run_dir: PathBuf,
}

/// How `sagan train` ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Box<RunSummary>),
    /// A signal asked to stop: checkpointed at this step (exit 75, resume with --resume).
    Preempted {
        step: i64,
    },
}

struct Evaluator {
    net: FeatureNet,
    reference: FidStats,
    /// The test set's scores (rank 0, Fashion-MNIST on its classifier): what generated images
    /// are read against.
    real_data: Option<RealDataScores>,
}

impl Evaluator {
    fn new(t: &Trainer) -> Result<Option<Self>> {
        if !t.cfg.eval.enabled {
            return Ok(None);
        }
        eval::check_fits(&t.cfg)?;
        let net = FeatureNet::load(&t.cfg.eval, t.device)?;
        let reference = eval::reference_stats(t.comm, &t.cfg.eval, &net, &t.data, t.device)?;
        let c = &t.cfg;
        let real_data = (t.comm.rank() == 0
            && c.data.dataset == DatasetKind::FashionMnist
            && net.classifies(c.model.num_classes)
            && real_data::test_split_present(&c.data.path))
        .then(|| {
            real_data::fashion_mnist_test(
                &net,
                &reference,
                &c.data.path,
                c.model.resolution,
                t.device,
            )
        })
        .transpose()?;
        Ok(Some(Evaluator {
            net,
            reference,
            real_data,
        }))
    }

    /// Scores G_ema, or the raw G with `raw_g` (as its weights are now, see
    /// [`Trainer::sample_g_current`]).
    fn run(&self, t: &Trainer, raw_g: bool) -> Result<Option<Scores>> {
        let m = &t.cfg.model;
        let ema = |z: &Tensor, y: &Tensor| t.sample(z, y);
        let raw = |z: &Tensor, y: &Tensor| t.sample_g_current(z, y);
        let generate: &dyn Fn(&Tensor, &Tensor) -> Tensor = if raw_g { &raw } else { &ema };
        eval::evaluate(
            t.comm,
            &self.net,
            &self.reference,
            generate,
            m.num_classes,
            m.z_dim,
            &t.cfg.eval,
            t.cfg.train.seed as u64 ^ 0xe7a1,
            t.device,
        )
    }
}

/// Rank 0's writers.
struct Outputs {
    reporter: Reporter,
    checkpoints: Checkpointer,
}

/// One run of the loop: the trainer and everything its duties need.
struct Run {
    t: Trainer,
    evaluator: Option<Evaluator>,
    out: Option<Outputs>,
    record: RunRecord,
    grid: (Tensor, Tensor),
    /// The grid rows' labels: class names, or numbers.
    row_labels: Vec<String>,
    schedule: Schedule,
    preemption: Preemption,
    step_times: Vec<f64>,
    allreduce_times: Vec<f64>,
    stats: StepStats,
    /// The step of the newest checkpoint, known to every rank (checkpoints start with collectives).
    last_checkpoint: Option<i64>,
    status: StatusLine,
}

/// Trains `t` from the start `mode` asks for. `preemption` was installed before the trainer was
/// built, so a signal during start-up is not lost: the run then stops after its first step.
pub fn run(mut t: Trainer, mode: StartMode, preemption: Preemption) -> Result<Outcome> {
    // Everything that can fail comes before anything is written to the run directory.
    let evaluator = Evaluator::new(&t)?;
    let (start, found) = checkpointing::decide_start(&t, &mode)?;
    let rank0 = t.comm.rank() == 0;
    if rank0 {
        for note in &start.notes {
            println!("sagan: {note}");
        }
    }
    if let Some(state) = &start.resumed {
        checkpointing::restore(&mut t, state, found)?;
    }
    let out = if rank0 {
        Some(open_outputs(&t, &start)?)
    } else {
        None
    };
    let record = RunRecord {
        best: start.resumed.as_ref().and_then(|s| s.best),
        eval_start: start.resumed.as_ref().and_then(|s| s.eval_start.clone()),
    };
    let c = &t.cfg;
    let classes = inputs::grid_classes(c.model.num_classes, c.output.sample_classes);
    let row_labels = class_names::row_labels(c.data.dataset, c.model.num_classes, &classes);
    let grid = inputs::grid_inputs(
        &classes,
        c.output.samples_per_class,
        c.model.z_dim,
        c.train.seed as u64 ^ 0x5a6a,
        t.device,
    );
    let status = StatusLine::new(c.output.progress, rank0);
    let run = Run {
        schedule: Schedule::new(&t.cfg),
        t,
        evaluator,
        out,
        record,
        grid,
        row_labels,
        preemption,
        step_times: Vec::new(),
        allreduce_times: Vec::new(),
        stats: StepStats::default(),
        // A resumed run has its checkpoint of that step already.
        last_checkpoint: start.resumed.as_ref().map(|s| s.step),
        status,
    };
    run.announce();
    run.train()
}

fn open_outputs(t: &Trainer, start: &StartPoint) -> Result<Outputs> {
    let dir = &t.cfg.output.dir;
    if start.clear_outputs {
        run_dir::clear(dir)?;
    }
    let resumed_at = start.resumed.as_ref().map(|s| s.step);
    Ok(Outputs {
        reporter: Reporter::open(dir, &t.cfg.to_toml(), resumed_at)?,
        checkpoints: Checkpointer::new(dir, t.cfg.train.keep_checkpoints as usize),
    })
}

impl Run {
    fn announce(&self) {
        let t = &self.t;
        if t.comm.rank() == 0 && t.step >= t.cfg.train.steps {
            println!(
                "sagan: the run is at step {} of train.steps = {}: nothing to train; writing its final outputs again",
                t.step, t.cfg.train.steps
            );
        } else if t.comm.rank() == 0 {
            println!(
                "sagan: {} rank(s), backend {}, device {:?}, G {} params, D {} params, steps {} to {} of global batch {}",
                t.comm.size(),
                t.comm.name(),
                t.device,
                model::parameter_count(&t.g.vs),
                model::parameter_count(&t.d.vs),
                t.step + 1,
                t.cfg.train.steps,
                t.cfg.train.batch_size
            );
            if t.comm.size() > 1 {
                println!("sagan: {}", t.gradient_plan());
            }
            if t.device == tch::Device::Cpu {
                println!(
                    "sagan: CPU tensors allocated by {} (train.host_memory)",
                    crate::host::alloc::serving(t.cfg.train.host_memory)
                );
            }
        }
        if t.comm.rank() == 0 && !t.cfg.eval.enabled {
            println!(
                "sagan: evaluation is off (eval.enabled = false): no FID/IS for this run \
                 (`sagan show-config --explain` lists the eval keys)"
            );
        }
    }

    fn train(mut self) -> Result<Outcome> {
        if let (Some(e), Some(o)) = (&self.evaluator, self.out.as_mut()) {
            if let (Some(r), 0) = (&e.real_data, self.t.step) {
                o.reporter.real_data(e.net.label(), r)?;
            }
        }
        if self.t.step == 0 && self.t.cfg.eval.at_start {
            self.record.eval_start = self.evaluate(false)?.map(|s| serde_json::json!(s));
        }
        let started = Instant::now();
        let total = self.t.cfg.train.steps;
        while self.t.step < total {
            let t0 = Instant::now();
            self.stats = self.t.train_step()?;
            self.step_times.push(t0.elapsed().as_secs_f64());
            self.allreduce_times.push(self.stats.allreduce_seconds);
            if let Some(o) = self.out.as_mut() {
                o.checkpoints.poll()?;
            }
            if crate::distributed::abort::aborting() {
                // The watchdog is ending the job: do nothing more that could look like progress.
                std::thread::park();
            }
            let duties = self.schedule.due(self.t.step, total);
            if !duties.is_empty() {
                self.status.clear();
            }
            for duty in duties {
                self.t.after_step(duty.name());
                match duty {
                    Duty::Log => self.log()?,
                    Duty::BufferCheck => drop(self.t.check_buffers()?),
                    Duty::Samples => self.samples(None)?,
                    Duty::Evaluate => self.periodic_evaluation()?,
                    Duty::Checkpoint => self.checkpoint(false)?,
                    Duty::Preemption if self.preempted()? => {
                        return Ok(Outcome::Preempted { step: self.t.step })
                    }
                    Duty::Preemption => {}
                }
            }
            self.draw_status();
        }
        self.status.clear();
        self.finish(started.elapsed().as_secs_f64())
    }

    /// The progress line, its rate and ETA from the last `train.log_every` steps.
    fn draw_status(&mut self) {
        let (t, times, stats) = (&self.t, &self.step_times, &self.stats);
        self.status.update(|| {
            let window = &times[times
                .len()
                .saturating_sub(t.cfg.train.log_every.max(1) as usize)..];
            let per_step = window.iter().sum::<f64>() / window.len().max(1) as f64;
            let rate = t.cfg.train.batch_size as f64 / per_step.max(1e-12);
            status_line::line(t.step, t.cfg.train.steps, rate, per_step, stats)
        });
    }

    fn log(&mut self) -> Result<()> {
        let Some(o) = self.out.as_mut() else {
            return Ok(());
        };
        let t = &self.t;
        let window = t.cfg.train.log_every as usize;
        let recent = |v: &[f64]| -> f64 { v[v.len().saturating_sub(window)..].iter().sum() };
        let n = self.step_times.len().min(window).max(1) as f64;
        let per_step = recent(&self.step_times) / n;
        o.reporter.step(&StepReport {
            step: t.step,
            stats: &self.stats,
            gammas: &t.named_gammas(),
            resyncs: t.resyncs,
            skipped_steps: t.skipped_steps,
            lr_g: t.opt_g.lr,
            lr_d: t.opt_d.lr,
            images_per_second: t.cfg.train.batch_size as f64 / per_step,
            seconds_per_step: per_step,
            allreduce_share: recent(&self.allreduce_times) / recent(&self.step_times).max(1e-12),
        })
    }

    /// Sample grids and attention figures; every rank averages BN statistics, rank 0 draws.
    fn samples(&mut self, png: Option<&Path>) -> Result<()> {
        self.t.average_bn_statistics()?;
        let Some(o) = self.out.as_mut() else {
            return Ok(());
        };
        let dir = &self.t.cfg.output.dir;
        let periodic = dir.join(format!("samples_{:06}.png", self.t.step));
        let png = png.unwrap_or(&periodic);
        write_grids(&self.t, &mut o.reporter, &self.grid, &self.row_labels, png)
    }

    /// Scores G_ema (or the raw G with `raw_g`) on every rank; rank 0 gets them and reports.
    fn evaluate(&mut self, raw_g: bool) -> Result<Option<Scores>> {
        let Some(e) = &self.evaluator else {
            return Ok(None);
        };
        self.t.average_bn_statistics()?;
        let scores = e.run(&self.t, raw_g)?;
        if let (Some(o), Some(s)) = (self.out.as_mut(), &scores) {
            let network = if raw_g { "G" } else { "G_ema" };
            o.reporter.scores(self.t.step, e.net.label(), network, s)?;
        }
        Ok(scores)
    }

    /// Evaluates; a new best score is checkpointed at once, so that its checkpoint can be kept.
    fn periodic_evaluation(&mut self) -> Result<()> {
        let scores = self.evaluate(false)?;
        let best_here = self.note_best(scores.as_ref());
        // Only rank 0 has the scores, and a checkpoint starts with a collective: it decides.
        if agree::rank0_decides(self.t.comm, || Ok(best_here))? {
            self.checkpoint(false)?;
        }
        Ok(())
    }

    /// Records a new best FID (rank 0, which has the scores); true when it is one.
    fn note_best(&mut self, scores: Option<&Scores>) -> bool {
        let step = self.t.step;
        let better = |fid: f64| self.record.best.is_none_or(|b| fid < b.fid);
        match scores {
            Some(s) if better(s.fid) => {
                self.record.best = Some(BestScore { step, fid: s.fid });
                true
            }
            _ => false,
        }
    }

    /// A checkpoint of the current step: BN statistics averaged on every rank, then rank 0
    /// snapshots and writes (in the background unless `wait`).
    fn checkpoint(&mut self, wait: bool) -> Result<()> {
        if self.last_checkpoint == Some(self.t.step) {
            return match self.out.as_mut() {
                Some(o) if wait => o.checkpoints.finish(),
                _ => Ok(()),
            };
        }
        self.last_checkpoint = Some(self.t.step);
        self.t.average_bn_statistics()?;
        let Some(o) = self.out.as_mut() else {
            return Ok(());
        };
        let t0 = Instant::now();
        let snap = checkpointing::snapshot(&self.t, &self.record)?;
        o.checkpoints.submit(snap, t0.elapsed().as_secs_f64(), wait)
    }

    /// Whether any rank was signalled; if so, checkpoints and returns true once every rank knows
    /// the checkpoint is complete.
    fn preempted(&mut self) -> Result<bool> {
        if let Some(sig) = self.preemption.received_here() {
            eprintln!(
                "sagan: {sig} received{}",
                crate::distributed::abort::rank_suffix()
            );
        }
        if !self.preemption.agreed(self.t.comm)? {
            return Ok(false);
        }
        if self.t.comm.rank() == 0 {
            println!(
                "sagan: preempted: checkpointing at step {} and exiting with code {} (continue with --resume)",
                self.t.step,
                super::preemption::EXIT_PREEMPTED
            );
        }
        self.checkpoint(true)?;
        if let Some(o) = self.out.as_mut() {
            o.reporter.flush()?;
        }
        // No rank leaves before rank 0 has the checkpoint on disk.
        self.t.comm.barrier()?;
        Ok(true)
    }

    fn finish(mut self, elapsed: f64) -> Result<Outcome> {
        let eval_end = self.evaluate(false)?;
        self.note_best(eval_end.as_ref());
        let eval_end_g = if self.t.cfg.eval.score_g {
            self.evaluate(true)?
        } else {
            None
        };
        let grid_png = self.t.cfg.output.dir.join("samples.png");
        self.samples(Some(&grid_png))?;
        self.checkpoint(true)?;
        let t = &self.t;
        if t.cfg.dist.dump_rank_state {
            let d = t.cfg.output.dir.join("rank_state");
            std::fs::create_dir_all(&d).map_err(|e| Error::Io {
                path: d.clone(),
                source: e,
            })?;
            save_weights(
                &t.replicated_state(),
                &d.join(format!("rank{}.safetensors", t.comm.rank())),
                &BTreeMap::new(),
            )?;
        }
        let label = self.evaluator.as_ref().map(|e| e.net.label());
        let named = |s: &Scores| label.map(|l| named_scores(l, s));
        let start: Option<Scores> = self
            .record
            .eval_start
            .clone()
            .and_then(|v| serde_json::from_value(v).ok());
        let scores_start = start
            .as_ref()
            .and_then(named)
            .map(|v| BTreeMap::from([("G_ema".to_string(), v)]));
        let mut end = BTreeMap::new();
        for (network, s) in [("G_ema", &eval_end), ("G", &eval_end_g)] {
            if let Some(v) = s.as_ref().and_then(named) {
                end.insert(network.to_string(), v);
            }
        }
        let best = match (label, self.record.best) {
            (Some(l), Some(b)) => {
                Some(serde_json::json!({ "step": b.step, format!("FID_{l}"): b.fid }))
            }
            _ => None,
        };
        let summary = RunSummary {
            steps: t.step,
            world_size: t.comm.size(),
            global_batch: t.cfg.train.batch_size,
            final_stats: self.stats,
            median_step_seconds: median(&mut self.step_times.clone()),
            allreduce_share: self.allreduce_times.iter().sum::<f64>()
                / self.step_times.iter().sum::<f64>().max(1e-12),
            images_per_second: t.cfg.train.batch_size as f64 * self.step_times.len() as f64
                / elapsed.max(1e-9),
            gammas: t.named_gammas().into_iter().collect(),
            resyncs: t.resyncs,
            skipped_steps: t.skipped_steps,
            feature_net: label.map(str::to_string),
            scores_start,
            scores_end: (!end.is_empty()).then_some(end),
            best,
            real_data: self.evaluator.as_ref().and_then(|e| e.real_data),
            steps_this_session: self.step_times.len(),
            run_dir: t.cfg.output.dir.clone(),
        };
        if let Some(o) = self.out.as_mut() {
            write_final(t, &summary, o)?;
            if let Some(l) = label {
                print_scores(
                    l,
                    t.step,
                    start.as_ref(),
                    eval_end.as_ref(),
                    eval_end_g.as_ref(),
                );
            }
            print_where_to_look(&t.cfg.output.dir, &t.g.attention_names());
        }
        Ok(Outcome::Finished(Box::new(summary)))
    }
}

/// Rank 0's last words: final weights beside the checkpoints, summary.json, the console summary.
fn write_final(t: &Trainer, summary: &RunSummary, o: &mut Outputs) -> Result<()> {
    let dir = &t.cfg.output.dir;
    o.reporter.flush()?;
    let cfg_toml = t.cfg.to_toml();
    for (name, vs) in t.networks() {
        let tensors = model::named_variables(vs);
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        let meta = checkpoint::weights_metadata(&cfg_toml, t.step, name, &names);
        save_weights(&tensors, &dir.join(format!("{name}.safetensors")), &meta)?;
    }
    let p = dir.join("summary.json");
    let json = serde_json::to_string_pretty(summary).expect("serialisable");
    std::fs::write(&p, json).map_err(|e| Error::Io { path: p, source: e })?;
    let s = &summary.final_stats;
    println!(
        "done: step {} ({} this session), median {:.3} s/step, {:.1} images/s; final D loss {:.4} (real {:.4} + fake {:.4}), G loss {:.4}; samples in {}",
        t.step,
        summary.steps_this_session,
        summary.median_step_seconds,
        summary.images_per_second,
        s.d_loss_real + s.d_loss_fake,
        s.d_loss_real,
        s.d_loss_fake,
        s.g_loss,
        dir.join("samples.png").display()
    );
    Ok(())
}

/// Scores as summary.json gives them: each named for the feature network (`label`).
fn named_scores(label: &str, s: &Scores) -> serde_json::Value {
    serde_json::json!({
        format!("FID_{label}"): s.fid,
        format!("IS_{label}"): s.is_mean,
        format!("IS_{label}_std"): s.is_std,
        "class_accuracy": s.class_accuracy,
        "samples": s.samples,
    })
}

/// The final console line of the scores: the start, G_ema at the end, and the raw G's.
fn print_scores(
    label: &str,
    step: i64,
    start: Option<&Scores>,
    ema: Option<&Scores>,
    raw: Option<&Scores>,
) {
    let Some(ema) = ema else {
        return;
    };
    let at_start = |f: fn(&Scores) -> f64| {
        start
            .map(|s| format!("{:.3} at step 0 -> ", f(s)))
            .unwrap_or_default()
    };
    let raw_part =
        |f: fn(&Scores) -> f64| raw.map(|s| format!(", G {:.3}", f(s))).unwrap_or_default();
    let percent = |s: &Scores| s.class_accuracy.map_or(f64::NAN, |a| 100.0 * a);
    let class_part = if ema.class_accuracy.is_some() {
        format!(
            "; class accuracy: {}G_ema {:.1}%{}",
            start
                .map(|s| format!("{:.1}% at step 0 -> ", percent(s)))
                .unwrap_or_default(),
            percent(ema),
            raw.map(|s| format!(", G {:.1}%", percent(s)))
                .unwrap_or_default()
        )
    } else {
        String::new()
    };
    println!(
        "FID_{label}: {}G_ema {:.3}{} at step {step}; IS_{label}: {}G_ema {:.3}{}{class_part}",
        at_start(|s| s.fid),
        ema.fid,
        raw_part(|s| s.fid),
        at_start(|s| s.is_mean),
        ema.is_mean,
        raw_part(|s| s.is_mean),
    );
}

/// Rank 0's last lines: where to look at what the run made.
fn print_where_to_look(dir: &Path, attention: &[String]) {
    println!("To look at the results:");
    println!(
        "  samples (one row per class, G_ema): {}",
        dir.join("samples.png").display()
    );
    for name in attention {
        println!(
            "  where G's attention looks (query pixels and their attention maps): {}",
            dir.join(format!("attention_G.{name}.png")).display()
        );
    }
    println!(
        "  curves (losses, FID, IS, class accuracy, attention gammas) and images: tensorboard --logdir {}",
        dir.parent().unwrap_or(dir).display()
    );
}

/// The fixed-noise grids (one row per grid class) of G and G_ema and G_ema's attention figures, to
/// TensorBoard and to `png` (G_ema's grid) and the attention PNGs beside it. Generated in chunks of
/// whole rows of at most `eval.batch` images; each attention figure annotates the first image of
/// each row from the very forward pass that drew the grid.
fn write_grids(
    t: &Trainer,
    r: &mut Reporter,
    grid: &(Tensor, Tensor),
    row_labels: &[String],
    png: &Path,
) -> Result<()> {
    let per_class = t.cfg.output.samples_per_class;
    let rows = grid.0.size()[0] / per_class;
    let chunk_rows = (t.cfg.eval.batch / per_class).max(1);
    let names = t.g_ema.attention_names();
    let (mut ema, mut raw, mut firsts) = (Vec::new(), Vec::new(), Vec::new());
    let mut maps: Vec<Vec<Tensor>> = names.iter().map(|_| Vec::new()).collect();
    for first_row in (0..rows).step_by(chunk_rows as usize) {
        let n = chunk_rows.min(rows - first_row) * per_class;
        let (z, y) = (
            grid.0.narrow(0, first_row * per_class, n),
            grid.1.narrow(0, first_row * per_class, n),
        );
        let (images, chunk_maps) = t.sample_with_attention(&z, &y);
        let row_starts =
            Tensor::arange_start_step(0, n, per_class, (tch::Kind::Int64, images.device()));
        firsts.push(images.index_select(0, &row_starts));
        for (all, m) in maps.iter_mut().zip(&chunk_maps) {
            all.push(m.index_select(0, &row_starts).to_device(tch::Device::Cpu));
        }
        ema.push(images);
        raw.push(t.sample_g(&z, &y));
    }
    let ema = grid::grid(&Tensor::cat(&ema, 0), rows);
    let ema_labelled = grid::labelled(&ema, row_labels);
    r.image("samples/G_ema", &ema_labelled, t.step)?;
    r.image(
        "samples/G",
        &grid::labelled(&grid::grid(&Tensor::cat(&raw, 0), rows), row_labels),
        t.step,
    )?;
    let firsts = Tensor::cat(&firsts, 0);
    for (name, m) in names.iter().zip(&maps) {
        let overlay = grid::labelled(
            &grid::attention_overlay(
                &firsts,
                &Tensor::cat(m, 0),
                &[(0.3, 0.3), (0.5, 0.5), (0.7, 0.6)],
            ),
            row_labels,
        );
        r.image(&format!("attention/G.{name}"), &overlay, t.step)?;
        png::save_png(
            &overlay,
            &png.with_file_name(format!("attention_G.{name}.png")),
        )?;
    }
    let pixels: Vec<f64> = Vec::<f32>::try_from(&ema.to_kind(tch::Kind::Float).view([-1]))
        .expect("f32 pixels")
        .into_iter()
        .map(f64::from)
        .collect();
    r.histogram("samples/G_ema_pixels", &pixels, t.step)?;
    png::save_png(&ema_labelled, png)?;
    r.flush()
}

/// Writes through a temporary file and a rename, so a crash never leaves a torn weights file.
pub fn save_weights(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let cpu = checkpoint::snapshot_tensors(tensors);
    checkpoint::weights::write(&tmp, &cpu, metadata)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(())
}
