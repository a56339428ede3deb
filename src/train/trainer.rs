//! One SAGAN training step per call, identical on every rank: D step(s), G step, EMA.
use tch::{Device, Kind, Tensor};

use super::adam::Adam;
use super::ema::Ema;
use super::loss;
use crate::config::Config;
use crate::data::{Dataset, DistributedSampler, Loader};
use crate::dist::buckets::GradientBuckets;
use crate::dist::{sync, Comm};
use crate::error::Result;
use crate::model::{self, BnMode, Discriminator, Generator, SnMode};

/// What one step measured (rank-local losses; gradient norms are of the averaged gradients).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StepStats {
    pub d_loss_real: f64,
    pub d_loss_fake: f64,
    pub g_loss: f64,
    pub d_real: f64,
    pub d_fake: f64,
    pub d_grad_norm: f64,
    pub g_grad_norm: f64,
}

pub struct Trainer {
    pub cfg: Config,
    pub device: Device,
    pub comm: Box<dyn Comm>,
    pub g: Generator,
    pub d: Discriminator,
    pub g_ema: Generator,
    pub opt_g: Adam,
    pub opt_d: Adam,
    ema: Ema,
    loader: Loader,
    /// The training set (reference statistics for evaluation come from it).
    pub data: Dataset,
    batch: i64,
    g_buckets: GradientBuckets,
    d_buckets: GradientBuckets,
    /// Generator steps completed.
    pub step: i64,
    /// Buffers re-broadcast because ranks disagreed.
    pub resyncs: usize,
}

impl Trainer {
    pub fn new(cfg: Config, comm: Box<dyn Comm>, device: Device) -> Result<Self> {
        let (rank, world) = (comm.rank() as i64, comm.size() as i64);
        let batch = cfg.batch_per_rank(world)?;
        let data = Dataset::load(&cfg.data, &cfg.model)?;
        // Same initial weights everywhere; rank 0's are broadcast anyway, so this is belt and braces.
        tch::manual_seed(cfg.train.seed);
        let g = Generator::new(&cfg.model, device)?;
        let d = Discriminator::new(&cfg.model, device)?;
        let g_ema = Generator::new(&cfg.model, device)?;
        for vs in [&g.vs, &d.vs, &g_ema.vs] {
            sync::broadcast_from_root(comm.as_ref(), &model::named_variables(vs))?;
        }
        let t = &cfg.train;
        let opt_g = Adam::new(
            model::parameters(&g.vs),
            t.lr_g,
            t.beta1,
            t.beta2,
            t.adam_eps,
        );
        let opt_d = Adam::new(
            model::parameters(&d.vs),
            t.lr_d,
            t.beta1,
            t.beta2,
            t.adam_eps,
        );
        let ema = Ema::new(&g.vs, &g_ema.vs, t.ema_decay, t.ema_start);
        let bucket_bytes = (cfg.dist.bucket_mb * 1024.0 * 1024.0) as usize;
        let g_buckets = GradientBuckets::new("G", opt_g.params(), bucket_bytes)?;
        let d_buckets = GradientBuckets::new("D", opt_d.params(), bucket_bytes)?;
        let sampler = DistributedSampler {
            len: data.len(),
            rank: rank as usize,
            world: world as usize,
            seed: t.seed as u64,
            drop_remainder: cfg.data.drop_remainder,
            global_batch: t.batch_size as usize,
        };
        let loader = Loader::new(&data, sampler, batch as usize, 0, 4, device);
        // Noise differs per rank (StyleGAN2-ADA's seed * world + rank).
        tch::manual_seed(t.seed * world + rank);
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
            loader,
            data,
            batch,
            g_buckets,
            d_buckets,
            step: 0,
            resyncs: 0,
        })
    }

    fn noise(&self) -> (Tensor, Tensor) {
        let z = Tensor::randn(
            [self.batch, self.cfg.model.z_dim],
            (Kind::Float, self.device),
        );
        let y = Tensor::randint(
            self.cfg.model.num_classes,
            [self.batch],
            (Kind::Int64, self.device),
        );
        (z, y)
    }

    pub fn train_step(&mut self) -> Result<StepStats> {
        let mut s = StepStats::default();
        self.g.sn.refresh(SnMode::PowerIteration);
        for _ in 0..self.cfg.train.d_steps {
            // The official code updates D's u on the real pass; one refresh serves both passes.
            self.d.sn.refresh(SnMode::PowerIteration);
            let real = self.loader.next_batch();
            let (z, y_fake) = self.noise();
            let fake = tch::no_grad(|| self.g.forward(&z, &y_fake, BnMode::Train));
            let d_real = self.d.forward(&real.images, &real.labels);
            let d_fake = self.d.forward(&fake, &y_fake);
            let (l_real, l_fake) = loss::d_hinge(&d_real, &d_fake);
            self.opt_d.zero_grad();
            (&l_real + &l_fake).backward();
            s.d_grad_norm = self.d_buckets.all_reduce(self.comm.as_ref(), self.step)?;
            self.opt_d.step();
            s.d_loss_real = l_real.double_value(&[]);
            s.d_loss_fake = l_fake.double_value(&[]);
            s.d_real = d_real.mean(None).double_value(&[]);
            s.d_fake = d_fake.mean(None).double_value(&[]);
        }
        // D's weights changed: normalise them again, without a power iteration or gradient.
        self.d.sn.refresh(SnMode::Detached);
        let (z, y) = self.noise();
        let g_loss = loss::g_hinge(&self.d.forward(&self.g.forward(&z, &y, BnMode::Train), &y));
        self.opt_g.zero_grad();
        g_loss.backward();
        s.g_grad_norm = self.g_buckets.all_reduce(self.comm.as_ref(), self.step)?;
        self.opt_g.step();
        s.g_loss = g_loss.double_value(&[]);
        self.step += 1;
        self.ema.update(self.step);
        let every = self.cfg.dist.sync_check_every;
        if every > 0 && self.step % every == 0 {
            self.check_buffers()?;
        }
        Ok(s)
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
            for name in sync::check_and_repair(self.comm.as_ref(), &sn)? {
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
            sync::average(self.comm.as_ref(), &stats)?;
        }
        Ok(())
    }

    /// Everything that must be identical across ranks, by name: parameters and buffers of G, D and
    /// G_ema, and both optimisers' moments.
    pub fn replicated_state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (net, vs) in [
            ("G", &self.g.vs),
            ("D", &self.d.vs),
            ("G_ema", &self.g_ema.vs),
        ] {
            out.extend(
                model::named_variables(vs)
                    .into_iter()
                    .map(|(n, t)| (format!("{net}.{n}"), t)),
            );
        }
        for (opt, adam) in [("adam_G", &self.opt_g), ("adam_D", &self.opt_d)] {
            out.extend(
                adam.state()
                    .into_iter()
                    .map(|(n, t)| (format!("{opt}.{n}"), t)),
            );
        }
        out
    }

    /// Attention gammas by network and position (`G_0`, `D_0`, ...).
    pub fn named_gammas(&self) -> Vec<(String, f64)> {
        let named = |net: &str, gs: Vec<Tensor>| -> Vec<(String, f64)> {
            gs.iter()
                .enumerate()
                .map(|(i, g)| (format!("{net}_{i}"), g.double_value(&[0])))
                .collect()
        };
        let mut out = named("G", self.g.gammas());
        out.extend(named("D", self.d.gammas()));
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
}
