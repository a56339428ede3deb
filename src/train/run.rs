//! `sagan train`: the loop around the trainer. After every step it runs the duties the
//! [`Schedule`] says are due; rank 0 alone reports (console, metrics.jsonl, TensorBoard) and writes
//! samples, checkpoints and weights; every rank takes part in evaluation and in every collective
//! decision (preemption, checkpoints).
use std::path::Path;
use std::time::Instant;

use tch::Tensor;

use super::checkpointing::{self, RunRecord, StartPoint};
use super::finish::{self, RunSummary, Session};
use super::preemption::Preemption;
use super::run_dir::{self, StartMode};
use super::sample_grids;
use super::schedule::{Duty, Schedule};
use super::trainer::Trainer;
use crate::checkpoint::{BestScore, Checkpointer};
use crate::config::DatasetKind;
use crate::data::class_names;
use crate::distributed::agree;
use crate::error::Result;
use crate::metrics::eval::{self, FeatureNet, Scores};
use crate::metrics::real_data::{self, RealDataScores};
use crate::model;
use crate::model::inputs;
use crate::output::status_line::{self, StatusLine};
use crate::output::StepStats;
use crate::output::{Reporter, StepReport};

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
    reference: eval::Reference,
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
        let reference = eval::reference(t.comm, &t.cfg.eval, &net, &t.data, t.device)?;
        let c = &t.cfg;
        let real_data = (t.comm.rank() == 0
            && c.data.dataset == DatasetKind::FashionMnist
            && net.classifies(c.model.num_classes)
            && real_data::test_split_present(&c.data.path))
        .then(|| {
            real_data::fashion_mnist_test(
                &net,
                &reference.fid,
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
        sample_grids::write_grids(&self.t, &mut o.reporter, &self.grid, &self.row_labels, png)
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

    /// The last evaluation, grids and checkpoint; then rank 0 writes the final weights and
    /// summary.json.
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
            finish::dump_rank_state(t)?;
        }
        let session = Session {
            stats: self.stats,
            step_times: &self.step_times,
            allreduce_times: &self.allreduce_times,
            elapsed,
            record: &self.record,
            label: self.evaluator.as_ref().map(|e| e.net.label()),
            real_data: self.evaluator.as_ref().and_then(|e| e.real_data),
        };
        let summary = finish::summarise(t, &session, eval_end, eval_end_g);
        if let Some(o) = self.out.as_mut() {
            finish::write_final(t, &summary, &mut o.reporter)?;
        }
        Ok(Outcome::Finished(Box::new(summary)))
    }
}
