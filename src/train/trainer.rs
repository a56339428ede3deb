//! One SAGAN training step per call, identical on every rank: D step(s), G step, EMA.
//!
//! A step's noise and data depend only on (seed, step) and the global batch, never on how the run
//! got there: each step reseeds from (seed, step, phase) and draws the noise of the whole global
//! batch, of which a rank takes its rows, and the loader starts at the step's global batch. So a
//! resumed run repeats the uninterrupted one exactly, and another world size sees the same samples.
use tch::{Device, Kind, Tensor};

use super::adam::{flatten, Adam};
use super::ema::Ema;
use super::loss;
use super::undo::{StepUndo, MAX_SKIPS_IN_A_ROW};
use crate::config::{Augment, BnStatistics};
use crate::config::{Autocast, Config};
use crate::data::{Dataset, DistributedSampler, Loader, LoaderOptions};
use crate::distributed::buckets::GradientBuckets;
use crate::distributed::{sync, Comm};
use crate::error::{Error, Result};
use crate::model::{self, diff_augment, BnMode, Discriminator, Generator, SnMode};
use crate::output::StepStats;

pub struct Trainer {
    pub cfg: Config,
    pub device: Device,
    pub comm: &'static dyn Comm,
    pub g: Generator,
    pub d: Discriminator,
    pub g_ema: Generator,
    pub opt_g: Adam,
    pub opt_d: Adam,
    ema: Ema,
    /// Started at the first step, at the step's position in the data (after a resume too).
    loader: Option<Loader>,
    /// The training set (reference statistics for evaluation come from it).
    pub data: Dataset,
    batch: i64,
    g_buckets: GradientBuckets,
    d_buckets: GradientBuckets,
    /// Generator steps completed.
    pub step: i64,
    /// Buffers re-broadcast because ranks disagreed.
    pub resyncs: usize,
    /// Steps skipped for non-finite gradients under autocast, in all and in a row.
    pub skipped_steps: usize,
    skips_in_a_row: usize,
    /// Wall time per phase of the step, when a benchmark asks for it (`sagan bench-train`).
    pub phases: Option<PhaseClock>,
    /// DiffAugment's transforms, with `train.augment = "diffaugment"`.
    augment: Option<Vec<diff_augment::Op>>,
}

/// Seed phases of the augmentation draws, above the noise's (0..=d_steps): D step i augments its
/// real images with phase AUGMENT_PHASE + 2i and its fakes with + 2i + 1; G's step follows.
const AUGMENT_PHASE: i64 = 1 << 20;

/// Seconds spent in each phase of the training step, summed over the steps since it was started.
/// On CPUs every op has finished when it returns, so wall time between marks is the phase's cost.
pub struct PhaseClock {
    last: std::time::Instant,
    /// (phase, seconds), in the order phases first ran.
    pub seconds: Vec<(&'static str, f64)>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        Self {
            last: std::time::Instant::now(),
            seconds: Vec::new(),
        }
    }
}

impl PhaseClock {
    /// Charges the time since the previous mark to `phase`.
    pub fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        let dt = (now - self.last).as_secs_f64();
        self.last = now;
        match self.seconds.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, s)) => *s += dt,
            None => self.seconds.push((phase, dt)),
        }
    }
}

/// A 64-bit mix of the seed, the step and the phase within it (SplitMix64's finaliser), so nearby
/// steps get unrelated generator states.
pub fn step_seed(seed: i64, step: i64, phase: i64) -> i64 {
    let mut x = (seed as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((step as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(phase as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as i64
}

fn check_data(cfg: &Config, data: &Dataset) -> Result<()> {
    let bad = |msg: String| Error::Data {
        path: cfg.data.path.clone(),
        msg,
    };
    if data.num_classes < cfg.model.num_classes {
        return Err(bad(format!(
            "the dataset has {} classes but `model.num_classes` = {}: the embeddings of the \
             missing classes would never train; set model.num_classes = {}",
            data.num_classes, cfg.model.num_classes, data.num_classes
        )));
    }
    if (data.len() as i64) < cfg.train.batch_size {
        return Err(bad(format!(
            "the dataset has {} images, fewer than one global batch (`train.batch_size` = {}, \
             split over the ranks): lower train.batch_size or use more images",
            data.len(),
            cfg.train.batch_size
        )));
    }
    Ok(())
}

impl Trainer {
    pub fn new(cfg: Config, comm: &'static dyn Comm, device: Device) -> Result<Self> {
        let world = comm.size() as i64;
        let batch = cfg.batch_per_rank(world)?;
        let data = Dataset::load(&cfg.data, &cfg.model, comm)?;
        check_data(&cfg, &data)?;
        // Same initial weights everywhere; rank 0's are broadcast anyway, so this is belt and braces.
        tch::manual_seed(cfg.train.seed);
        let mut g = Generator::new(&cfg.model, device)?;
        if cfg.model.g_bn == BnStatistics::CrossReplica {
            g.across_ranks(comm);
        }
        let d = Discriminator::new(&cfg.model, device)?;
        let g_ema = Generator::new(&cfg.model, device)?;
        let t = &cfg.train;
        let mut ema = Ema::new(&g, &g_ema, t.ema_decay, t.ema_start);
        for vs in [&g.vs, &d.vs, &g_ema.vs] {
            sync::broadcast_from_root(comm, &model::named_variables(vs))?;
        }
        let adam = |vs, lr| Adam::new(model::parameters(vs), lr, t.beta1, t.beta2, t.adam_eps);
        let (opt_g, opt_d) = (adam(&g.vs, t.lr_g), adam(&d.vs, t.lr_d));
        let bucket_bytes = (cfg.dist.bucket_mb * 1024.0 * 1024.0) as usize;
        let mut g_buckets =
            GradientBuckets::over_flat("G", opt_g.params(), opt_g.flat_grad(), bucket_bytes)?;
        let mut d_buckets =
            GradientBuckets::over_flat("D", opt_d.params(), opt_d.flat_grad(), bucket_bytes)?;
        if cfg.dist.overlap && comm.size() > 1 {
            g_buckets.overlap_with_backward()?;
            d_buckets.overlap_with_backward()?;
        }
        // G_ema's parameters laid out as G's (both in name order), so one op averages them.
        let g_ema_params: Vec<Tensor> = model::parameters(&g_ema.vs)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        ema.use_flat(opt_g.flat_params(), &flatten(&g_ema_params));
        // Every net has a normalised weight from the start, so sampling before any step works.
        for sn in [&g.sn, &d.sn, &g_ema.sn] {
            sn.refresh(SnMode::Detached);
        }
        let augment = (cfg.train.augment == Augment::Diffaugment)
            .then(|| diff_augment::parse_policy(&cfg.train.augment_policy))
            .transpose()?;
        Ok(Self {
            cfg,
            device,
            comm,
            g,
            d,
            g_ema,
            opt_g,
            opt_d,
            ema,
            loader: None,
            data,
            batch,
            g_buckets,
            d_buckets,
            step: 0,
            resyncs: 0,
            skipped_steps: 0,
            skips_in_a_row: 0,
            phases: None,
            augment,
        })
    }

    /// Global batches the sampler has handed out after `step` generator steps.
    pub fn batches_consumed(&self, step: i64) -> u64 {
        (step * self.cfg.train.d_steps) as u64
    }

    pub fn sampler(&self) -> DistributedSampler {
        DistributedSampler {
            len: self.data.len(),
            rank: self.comm.rank(),
            world: self.comm.size(),
            seed: self.cfg.train.seed as u64,
            drop_remainder: self.cfg.data.drop_remainder,
            global_batch: self.cfg.train.batch_size as usize,
        }
    }

    fn loader(&mut self) -> &mut Loader {
        if self.loader.is_none() {
            let start = self.batches_consumed(self.step);
            let sampler = self.sampler();
            let d = &self.cfg.data;
            let opts = LoaderOptions {
                batch_per_rank: self.batch as usize,
                start_batch: start,
                prefetch: d.prefetch as usize,
                workers: if d.workers == 0 {
                    2
                } else {
                    d.workers as usize
                },
                flip: d.flip,
            };
            let loader = Loader::new(&self.data, sampler, &opts, self.device);
            self.loader = Some(loader);
        }
        self.loader.as_mut().expect("just started")
    }

    /// This rank's rows of the global batch's noise and fake labels for `phase` of the step.
    /// Drawn by the CPU generator whatever the device, so that a step's noise is the same on a
    /// GPU as on a CPU (a CUDA generator draws other numbers from the same seed): a run resumed
    /// on another kind of device, and gpu-check's CUDA-against-CPU comparison, see the same z.
    fn noise(&self, phase: i64) -> (Tensor, Tensor) {
        let c = &self.cfg;
        tch::manual_seed(step_seed(c.train.seed, self.step, phase));
        let global = c.train.batch_size;
        let z = Tensor::randn([global, c.model.z_dim], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(c.model.num_classes, [global], (Kind::Int64, Device::Cpu));
        let first = self.comm.rank() as i64 * self.batch;
        let rows = |t: Tensor| {
            let t = t.narrow(0, first, self.batch);
            if !self.device.is_cuda() {
                return t;
            }
            // Page-locked, so that the copy is queued behind the GPU's work instead of waiting
            // for it (as the loader's batches are); pinning failure falls back to a plain copy.
            let t = t.contiguous();
            let t = t.f_internal_pin_memory(self.device).unwrap_or(t);
            t.to_device_(self.device, t.kind(), true, false)
        };
        (rows(z), rows(y))
    }

    /// `images` (this rank's rows of the global batch) augmented with the draws of `phase`, or
    /// as they are without augmentation.
    fn augmented(&self, images: &Tensor, phase: i64) -> Tensor {
        let Some(ops) = &self.augment else {
            return images.shallow_clone();
        };
        let c = &self.cfg;
        let seed = step_seed(c.train.seed, self.step, AUGMENT_PHASE + phase);
        let first = self.comm.rank() as i64 * self.batch;
        let size = c.model.resolution;
        let p = diff_augment::Params::draw(
            seed,
            c.train.batch_size,
            first,
            self.batch,
            size,
            self.device,
        );
        diff_augment::augment(images, ops, &p)
    }

    /// Tells the watchdog that the next collectives belong to `phase` of the step in progress.
    fn at(&self, phase: &'static str) {
        if let Some(dog) = self.comm.watchdog() {
            dog.at(self.step + 1, phase);
        }
    }

    /// The same for a duty run after the step just completed.
    pub fn after_step(&self, duty: &'static str) {
        if let Some(dog) = self.comm.watchdog() {
            dog.at(self.step, duty);
        }
    }

    /// Charges the time since the last mark to `phase` when phases are being timed.
    fn mark(&mut self, phase: &'static str) {
        if let Some(clock) = self.phases.as_mut() {
            clock.mark(phase);
        }
    }

    /// Runs a forward under `train.autocast` (losses and everything outside stay fp32).
    fn amp<T>(&self, f: impl FnOnce() -> T) -> T {
        crate::host::autocast::run(self.cfg.train.autocast, self.device, f)
    }

    /// Turns gradient tracking of D's trainable parameters off (`frozen`) or back on.
    fn freeze_d(&self, frozen: bool) {
        for (_, p) in self.opt_d.params() {
            let _ = p.set_requires_grad(!frozen);
        }
    }

    pub fn train_step(&mut self) -> Result<StepStats> {
        // The step's statistics and gradient norms stay on the device until one read at the end
        // of the step: a GPU runs the whole step without waiting for the host.
        let mut d_stats = Vec::new();
        let mut d_sq_all: Option<Tensor> = None;
        self.mark("between steps");
        let undo = (self.cfg.train.autocast != Autocast::Off)
            .then(|| StepUndo::take(self.changed_by_a_step(), [self.opt_g.step, self.opt_d.step]));
        if undo.is_some() {
            self.mark("undo copy (autocast)");
        }
        self.g.sn.refresh(SnMode::PowerIteration);
        self.mark("SN refresh");
        for i in 0..self.cfg.train.d_steps {
            self.at("D step");
            // The official code updates D's u on the real pass; one refresh serves both passes.
            self.d.sn.refresh(SnMode::PowerIteration);
            self.mark("SN refresh");
            let real = self.loader().next_batch()?;
            let (z, y_fake) = self.noise(i);
            self.mark("data and noise");
            let fake = tch::no_grad(|| self.amp(|| self.g.forward(&z, &y_fake, BnMode::Train)));
            self.mark("D step: G forward (no grad)");
            // D has no batch-coupled layer (no batch norm): one forward of real and fake images
            // together computes the same function of each image as two forwards, with GEMMs
            // twice as tall and half the op dispatches.
            let n_real = real.images.size()[0];
            let real_images = self.augmented(&real.images, 2 * i);
            let fake = self.augmented(&fake.to_kind(real.images.kind()), 2 * i + 1);
            let logits = self.amp(|| {
                self.d.forward(
                    &Tensor::cat(&[&real_images, &fake], 0),
                    &Tensor::cat(&[&real.labels, &y_fake], 0),
                )
            });
            let logits = logits.to_kind(Kind::Float);
            let d_real = logits.narrow(0, 0, n_real);
            let d_fake = logits.narrow(0, n_real, logits.size()[0] - n_real);
            let (l_real, l_fake) = loss::d_hinge(&d_real, &d_fake);
            self.mark("D step: D forward");
            self.opt_d.zero_grad();
            self.d_buckets.arm(self.comm);
            (&l_real + &l_fake).backward();
            self.mark("D step: backward");
            let d_sq = self.d_buckets.all_reduce(self.comm)?;
            self.mark("gradient average and norm");
            self.opt_d.step();
            self.mark("Adam");
            // Every D step's gradients are checked (their sum of squares is finite only if each
            // is); the statistics logged are the last D step's.
            d_sq_all = Some(match d_sq_all {
                Some(acc) => acc + &d_sq,
                None => d_sq.shallow_clone(),
            });
            d_stats = vec![
                l_real.detach(),
                l_fake.detach(),
                d_real.mean(None).detach(),
                d_fake.mean(None).detach(),
                d_sq,
            ];
        }
        self.at("G step");
        // D's weights changed: normalise them again, without a power iteration or gradient.
        self.d.sn.refresh(SnMode::Detached);
        self.mark("SN refresh");
        let (z, y) = self.noise(self.cfg.train.d_steps);
        self.mark("data and noise");
        // Gradients for G's parameters only: D's normalised weights are already detached, and
        // its biases and attention gammas are frozen for this backward (D's gradients are zeroed
        // before its next step anyway, so nothing else changes).
        self.freeze_d(true);
        let g_phase = 2 * self.cfg.train.d_steps;
        let logits = self.amp(|| {
            let fake = self.g.forward(&z, &y, BnMode::Train);
            self.d.forward(&self.augmented(&fake, g_phase), &y)
        });
        let g_loss = loss::g_hinge(&logits.to_kind(Kind::Float));
        self.mark("G step: G and D forward");
        self.opt_g.zero_grad();
        self.g_buckets.arm(self.comm);
        g_loss.backward();
        self.freeze_d(false);
        self.mark("G step: backward");
        let g_sq = self.g_buckets.all_reduce(self.comm)?;
        self.mark("gradient average and norm");
        self.opt_g.step();
        self.mark("Adam");
        // Config validation keeps train.d_steps >= 1, so the D loop above set both.
        let d_sq_all = d_sq_all.expect("train.d_steps >= 1");
        let (mut s, d_sq_all) = read_statistics(d_stats, d_sq_all, g_loss.detach(), g_sq)?;
        self.mark("statistics to host");
        s.allreduce_seconds =
            self.d_buckets.take_comm_seconds() + self.g_buckets.take_comm_seconds();
        self.step += 1;
        if let Some(undo) = undo.filter(|_| !(d_sq_all.is_finite() && s.g_grad_norm.is_finite())) {
            return self.skip(undo, s, d_sq_all.is_finite());
        }
        self.skips_in_a_row = 0;
        // Both networks have been updated by now; a failure here still stops the run before
        // anything of this step is saved.
        if !d_sq_all.is_finite() {
            return Err(self.d_buckets.not_finite(self.step));
        }
        if !s.g_grad_norm.is_finite() {
            return Err(self.g_buckets.not_finite(self.step));
        }
        check_finite_losses(self.step, &s)?;
        self.ema.update(self.step, &self.g_ema);
        self.mark("EMA");
        Ok(s)
    }

    /// Everything a step changes in place: both networks' parameters and Adam moments (flat) and
    /// their buffers (spectral norm's u and v, batch-norm statistics). G_ema changes only after
    /// the step's checks.
    fn changed_by_a_step(&self) -> Vec<Tensor> {
        let mut out: Vec<Tensor> = self.opt_g.flat_state().into();
        out.extend(self.opt_d.flat_state());
        for vs in [&self.g.vs, &self.d.vs] {
            out.extend(model::buffers(vs).into_iter().map(|(_, t)| t));
        }
        out
    }

    /// Undoes the step just run (non-finite gradients under autocast) for G and D together, and
    /// counts it; stops the run after [`MAX_SKIPS_IN_A_ROW`] in a row.
    fn skip(&mut self, undo: StepUndo, mut s: StepStats, d_finite: bool) -> Result<StepStats> {
        let [g_steps, d_steps] = undo.restore();
        self.opt_g.step = g_steps;
        self.opt_d.step = d_steps;
        for sn in [&self.g.sn, &self.d.sn] {
            sn.refresh(SnMode::Detached);
        }
        self.skipped_steps += 1;
        self.skips_in_a_row += 1;
        let net = if d_finite { "G" } else { "D" };
        if self.skips_in_a_row >= MAX_SKIPS_IN_A_ROW {
            return Err(Error::Train(format!(
                "step {}: {net}'s averaged gradient is not finite under train.autocast, the \
                 {MAX_SKIPS_IN_A_ROW}th skipped step in a row: training diverged and stops here \
                 (G and D are as they were before these steps); nothing from them is saved, and \
                 the last checkpoint (if any) is kept for --resume (with a lower learning rate, \
                 or train.autocast = \"off\")",
                self.step
            )));
        }
        if self.comm.rank() == 0 {
            eprintln!(
                "sagan: step {}: {net}'s averaged gradient is not finite under train.autocast; \
                 the step is skipped for G and D together ({} skipped so far)",
                self.step, self.skipped_steps
            );
        }
        s.skipped = true;
        Ok(s)
    }

    /// How gradients are averaged, for the run's opening lines.
    pub fn gradient_plan(&self) -> String {
        format!(
            "gradients all-reduced in {} bucket(s) for G and {} for D of up to {} MiB, {}",
            self.g_buckets.count(),
            self.d_buckets.count(),
            self.cfg.dist.bucket_mb,
            if self.g_buckets.overlapping() {
                "each started during backward once its gradients are complete (dist.overlap)"
            } else {
                "after backward"
            }
        )
    }

    /// Seconds of one step's gradient averaging alone (D's and G's buckets, as the step runs
    /// them), with the ranks lined up by a barrier first, so that no rank's wait for a slower
    /// one counts: the median of `iters` rounds. The gradients are averaged again each round,
    /// so this belongs after training (benchmarks).
    pub fn time_gradient_averaging(&mut self, iters: usize) -> Result<f64> {
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            self.comm.barrier()?;
            let t0 = std::time::Instant::now();
            let _ = self.d_buckets.all_reduce(self.comm)?;
            let _ = self.g_buckets.all_reduce(self.comm)?;
            if let Device::Cuda(i) = self.device {
                tch::Cuda::synchronize(i as i64);
            }
            times.push(t0.elapsed().as_secs_f64());
        }
        self.d_buckets.take_comm_seconds();
        self.g_buckets.take_comm_seconds();
        Ok(crate::train::stats::median(&mut times))
    }

    /// The agreement check of every spectral-norm u/v of G, D and G_ema; differing ones are
    /// re-broadcast from rank 0, counted in `resyncs` and reported. Returns their names. (BN running
    /// statistics legitimately differ, each rank normalising its own batches: see
    /// [`Trainer::average_bn_statistics`].)
    pub fn check_buffers(&mut self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for (net, vs) in [
            ("G", &self.g.vs),
            ("D", &self.d.vs),
            ("G_ema", &self.g_ema.vs),
        ] {
            let sn: Vec<(String, Tensor)> = model::buffers(vs)
                .into_iter()
                .filter(|(n, _)| n.ends_with("weight_u") || n.ends_with("weight_v"))
                .collect();
            for name in sync::check_and_repair(self.comm, &sn)? {
                repaired.push(format!("{net}.{name}"));
            }
        }
        self.resyncs += repaired.len();
        if !repaired.is_empty() && self.comm.rank() == 0 {
            eprintln!(
                "sagan: step {}: ranks disagreed on {} buffer(s), re-broadcast from rank 0: {}",
                self.step,
                repaired.len(),
                repaired.join(", ")
            );
        }
        Ok(repaired)
    }

    /// Replaces every rank's BN running statistics (G and G_ema) with their mean over ranks; run
    /// before evaluation and before anything is saved.
    pub fn average_bn_statistics(&self) -> Result<()> {
        for vs in [&self.g.vs, &self.g_ema.vs] {
            let stats: Vec<(String, Tensor)> = model::buffers(vs)
                .into_iter()
                .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
                .collect();
            sync::average(self.comm, &stats)?;
        }
        Ok(())
    }

    /// Everything that must be identical across ranks, by name: parameters and buffers of G, D and
    /// G_ema, and both optimisers' moments.
    pub fn replicated_state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (net, vs) in self.networks() {
            out.extend(
                model::named_variables(vs)
                    .into_iter()
                    .map(|(n, t)| (format!("{net}.{n}"), t)),
            );
        }
        for (opt, adam) in self.optimisers() {
            out.extend(
                adam.state()
                    .into_iter()
                    .map(|(n, t)| (format!("{opt}.{n}"), t)),
            );
        }
        out
    }

    /// The networks by the names their files and tensors carry.
    pub fn networks(&self) -> [(&'static str, &tch::nn::VarStore); 3] {
        [
            ("G", &self.g.vs),
            ("D", &self.d.vs),
            ("G_ema", &self.g_ema.vs),
        ]
    }

    pub fn optimisers(&self) -> [(&'static str, &Adam); 2] {
        [("adam_G", &self.opt_g), ("adam_D", &self.opt_d)]
    }

    pub fn optimisers_mut(&mut self) -> [(&'static str, &mut Adam); 2] {
        [("adam_G", &mut self.opt_g), ("adam_D", &mut self.opt_d)]
    }

    /// Continues from `step` (the state was restored by the caller): the data restarts there.
    pub fn set_step(&mut self, step: i64, resyncs: usize) {
        self.step = step;
        self.resyncs = resyncs;
        self.loader = None;
        for sn in [&self.g.sn, &self.d.sn, &self.g_ema.sn] {
            sn.refresh(SnMode::Detached);
        }
    }

    /// Attention gammas by network and the block they follow (`G.attention.1`, ...), the names
    /// they have in weights files.
    pub fn named_gammas(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (net, vs) in [("G", &self.g.vs), ("D", &self.d.vs)] {
            for (name, t) in model::parameters(vs) {
                let block = name
                    .strip_suffix(".gamma")
                    .filter(|b| b.starts_with("attention."));
                if let Some(block) = block {
                    out.push((format!("{net}.{block}"), t.double_value(&[0])));
                }
            }
        }
        out
    }

    /// Attention gammas of G then D.
    pub fn gammas(&self) -> Vec<f64> {
        self.g
            .gammas()
            .iter()
            .chain(self.d.gammas().iter())
            .map(|t| t.double_value(&[0]))
            .collect()
    }

    /// Class-conditional samples from G_ema (batch statistics, running statistics untouched).
    pub fn sample(&self, z: &Tensor, y: &Tensor) -> Tensor {
        self.g_ema.sn.refresh(SnMode::Detached);
        tch::no_grad(|| self.g_ema.forward(z, y, BnMode::Batch))
    }

    /// G_ema's samples with the attention maps of its attention blocks.
    pub fn sample_with_attention(&self, z: &Tensor, y: &Tensor) -> (Tensor, Vec<Tensor>) {
        self.g_ema.sn.refresh(SnMode::Detached);
        tch::no_grad(|| self.g_ema.forward_with_maps(z, y, BnMode::Batch))
    }

    /// The same from the raw G. Uses G's normalised weights of the current step, so it neither runs
    /// a power iteration nor perturbs training.
    pub fn sample_g(&self, z: &Tensor, y: &Tensor) -> Tensor {
        tch::no_grad(|| self.g.forward(z, y, BnMode::Batch))
    }

    /// The raw G's samples with its weights as they are now, as G.safetensors holds them (W / sigma
    /// from the current u, v, no power iteration): what scoring the saved G must see. Replaces
    /// G's normalised weights of the step, so it is for after training (the next step would
    /// compute its own anyway).
    pub fn sample_g_current(&self, z: &Tensor, y: &Tensor) -> Tensor {
        self.g.sn.refresh(SnMode::Detached);
        tch::no_grad(|| self.g.forward(z, y, BnMode::Batch))
    }
}

/// The step's one read to the host: D's last statistics and gradient norm (`d_stats`: real and
/// fake losses, mean logits, squared norm), the sum of every D step's squared gradient norms
/// (finite only if each was), G's loss and squared gradient norm.
fn read_statistics(
    mut all: Vec<Tensor>,
    d_sq_all: Tensor,
    g_loss: Tensor,
    g_sq: Tensor,
) -> Result<(StepStats, f64)> {
    all.extend([d_sq_all, g_loss, g_sq]);
    let all: Vec<Tensor> = all.iter().map(|t| t.to_kind(Kind::Double)).collect();
    let v = Vec::<f64>::try_from(Tensor::stack(&all, 0).to_device(Device::Cpu))
        .map_err(|e| Error::Train(format!("reading the step's statistics: {e}")))?;
    let stats = StepStats {
        d_loss_real: v[0],
        d_loss_fake: v[1],
        d_real: v[2],
        d_fake: v[3],
        d_grad_norm: v[4].sqrt(),
        g_loss: v[6],
        g_grad_norm: v[7].sqrt(),
        allreduce_seconds: 0.0,
        skipped: false,
    };
    Ok((stats, v[5]))
}

/// A diverged run stops at the step it diverged, before anything is saved from it.
fn check_finite_losses(step: i64, s: &StepStats) -> Result<()> {
    let losses = [
        ("D loss on real images", s.d_loss_real),
        ("D loss on generated images", s.d_loss_fake),
        ("G loss", s.g_loss),
    ];
    if let Some((what, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::Train(format!(
            "step {step}: the {what} is {v}: training diverged and stops here; nothing from this \
             step is saved, and the last checkpoint (if any) is kept for --resume (with a lower \
             learning rate, say)"
        )));
    }
    Ok(())
}
