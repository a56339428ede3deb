//! Batch norm for G: class-conditional (per-class gamma and beta) inside the blocks, plain affine
//! before the output. In training the statistics are those of this rank's batch, or with
//! cross-replica statistics (`model.g_bn`) those of the global batch: the per-channel sums and
//! sums of squares (float64) summed over the ranks in one collective, whose gradient is summed
//! over the ranks in backward (`distributed::backward_sum`).
use tch::{nn, Kind, Tensor};

use crate::distributed::{backward_sum, Comm};

/// How batch norm normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics; running statistics updated (training).
    Train,
    /// Batch statistics; running statistics untouched (sampling from a short run).
    Batch,
    /// Running statistics (inference).
    Running,
}

pub struct BatchNorm {
    pub running_mean: Tensor,
    pub running_var: Tensor,
    eps: f64,
    momentum: f64,
    /// With cross-replica statistics: the ranks to take them over (training only).
    across: Option<&'static dyn Comm>,
}

impl BatchNorm {
    pub fn new(p: &nn::Path, c: i64, eps: f64, momentum: f64) -> Self {
        Self {
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
            eps,
            momentum,
            across: None,
        }
    }

    /// Takes training statistics over the global batch of `comm`'s ranks from now on.
    pub fn across_ranks(&mut self, comm: &'static dyn Comm) {
        self.across = Some(comm);
    }

    /// Normalises without an affine transform.
    pub fn normalise(&self, x: &Tensor, mode: BnMode) -> Tensor {
        if let (BnMode::Train, Some(comm)) = (mode, self.across) {
            return self.normalise_across(&x.to_kind(Kind::Float), comm);
        }
        let (mean, var) = match mode {
            BnMode::Train | BnMode::Running => (Some(&self.running_mean), Some(&self.running_var)),
            BnMode::Batch => (None, None),
        };
        // Statistics and normalisation in fp32: under bf16 autocast the activations arrive in
        // bf16, and running statistics must not take bf16's 8-bit mantissa.
        let x = x.to_kind(tch::Kind::Float);
        Tensor::batch_norm(
            &x,
            None::<&Tensor>,
            None::<&Tensor>,
            mean,
            var,
            mode != BnMode::Running,
            self.momentum,
            self.eps,
            false,
        )
    }
}

impl BatchNorm {
    /// Training-mode batch norm over the global batch; running statistics updated as libtorch
    /// updates them (momentum, unbiased variance), from the global statistics, so they stay the
    /// same on every rank.
    fn normalise_across(&self, x: &Tensor, comm: &'static dyn Comm) -> Tensor {
        let (n, c, h, w) = x.size4().expect("NCHW activations");
        let dims = &[0i64, 2, 3][..];
        let local = Tensor::cat(
            &[
                x.sum_dim_intlist(dims, false, Kind::Double),
                x.square().sum_dim_intlist(dims, false, Kind::Double),
            ],
            0,
        );
        let sums = backward_sum::sum_over_ranks(&local, comm)
            .unwrap_or_else(|e| panic!("cross-replica batch norm: {e}"));
        let count = (n * h * w * comm.size() as i64) as f64;
        let mean = sums.narrow(0, 0, c) / count;
        let var = (sums.narrow(0, c, c) / count - mean.square()).clamp_min(0.0);
        tch::no_grad(|| {
            let m = self.momentum;
            let unbiased = &var * (count / (count - 1.0).max(1.0));
            let mut rm = self.running_mean.shallow_clone();
            let mut rv = self.running_var.shallow_clone();
            rm.copy_(&(&rm * (1.0 - m) + mean.to_kind(Kind::Float) * m));
            rv.copy_(&(&rv * (1.0 - m) + unbiased.to_kind(Kind::Float) * m));
        });
        let shape = [1, c, 1, 1];
        let inv_std = (var + self.eps).rsqrt().to_kind(Kind::Float).view(shape);
        (x - mean.to_kind(Kind::Float).view(shape)) * inv_std
    }
}

pub struct ConditionalBatchNorm {
    bn: BatchNorm,
    gamma: Tensor,
    beta: Tensor,
}

impl ConditionalBatchNorm {
    pub fn new(p: nn::Path, c: i64, classes: i64, eps: f64, momentum: f64) -> Self {
        Self {
            bn: BatchNorm::new(&p, c, eps, momentum),
            gamma: p.ones("gamma", &[classes, c]),
            beta: p.zeros("beta", &[classes, c]),
        }
    }

    pub fn across_ranks(&mut self, comm: &'static dyn Comm) {
        self.bn.across_ranks(comm);
    }

    /// `y`: class indices (int64 `[N]`), or class weights (float `[N, classes]`, rows summing to
    /// 1) whose mixture of the classes' gamma and beta interpolates between classes (`sagan
    /// sample --interpolate class`); one-hot weights give exactly the indexed parameters.
    pub fn forward(&self, x: &Tensor, y: &Tensor, mode: BnMode) -> Tensor {
        let c = self.gamma.size()[1];
        let pick = |p: &Tensor| match y.dim() {
            1 => p.index_select(0, y),
            _ => y.to_kind(p.kind()).mm(p),
        };
        let g = pick(&self.gamma).view([-1, c, 1, 1]);
        let b = pick(&self.beta).view([-1, c, 1, 1]);
        self.bn.normalise(x, mode) * g + b
    }
}

pub struct AffineBatchNorm {
    bn: BatchNorm,
    weight: Tensor,
    bias: Tensor,
}

impl AffineBatchNorm {
    pub fn new(p: nn::Path, c: i64, eps: f64, momentum: f64) -> Self {
        Self {
            bn: BatchNorm::new(&p, c, eps, momentum),
            weight: p.ones("weight", &[c]),
            bias: p.zeros("bias", &[c]),
        }
    }

    pub fn across_ranks(&mut self, comm: &'static dyn Comm) {
        self.bn.across_ranks(comm);
    }

    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.bn.normalise(x, mode) * self.weight.view([1, -1, 1, 1]) + self.bias.view([1, -1, 1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Autocast;
    use tch::{Device, Kind};

    /// One-hot class weights select exactly the classes' parameters; a half-half mixture is the
    /// mean of two classes' outputs (the layer is affine in gamma and beta).
    #[test]
    fn class_weights_mix_the_class_parameters() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cbn = ConditionalBatchNorm::new(vs.root() / "cbn", 3, 4, 1e-5, 0.1);
        tch::no_grad(|| {
            cbn.gamma
                .copy_(&Tensor::randn([4, 3], (Kind::Float, Device::Cpu)));
            cbn.beta
                .copy_(&Tensor::randn([4, 3], (Kind::Float, Device::Cpu)));
        });
        let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let at = |classes: &[i64]| cbn.forward(&x, &Tensor::from_slice(classes), BnMode::Batch);
        let one_hot = Tensor::from_slice(&[0i64, 2])
            .one_hot(4)
            .to_kind(Kind::Float);
        assert!(cbn
            .forward(&x, &one_hot, BnMode::Batch)
            .allclose(&at(&[0, 2]), 1e-6, 1e-6, false));
        let half = Tensor::from_slice(&[0.5f32, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.5]).view([2, 4]);
        let mixed = cbn.forward(&x, &half, BnMode::Batch);
        let mean = (at(&[0, 0]) + at(&[3, 3])) / 2.0;
        assert!(mixed.allclose(&mean, 1e-5, 1e-5, false));
    }

    /// Activations that arrive in bf16 (autocast) are normalised in fp32, and the running
    /// statistics are those of the same values in fp32.
    #[test]
    fn bf16_activations_get_fp32_statistics_and_output() {
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let bn = BatchNorm::new(&(vs.root() / "bn"), 4, 1e-5, 0.1);
            (vs, bn)
        };
        let ((_a, plain), (_b, mixed)) = (make(), make());
        tch::manual_seed(3);
        let x = (Tensor::randn([8, 4, 5, 5], (Kind::Float, Device::Cpu)) * 3.0 + 1.0)
            .to_kind(Kind::BFloat16);
        let want = plain.normalise(&x.to_kind(Kind::Float), BnMode::Train);
        let got = crate::host::autocast::run(Autocast::Bf16, Device::Cpu, || {
            mixed.normalise(&x, BnMode::Train)
        });
        assert_eq!(got.kind(), Kind::Float);
        assert!(got.equal(&want));
        assert_eq!(mixed.running_mean.kind(), Kind::Float);
        assert!(mixed.running_mean.equal(&plain.running_mean));
        assert!(mixed.running_var.equal(&plain.running_var));
    }
}
