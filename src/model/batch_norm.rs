//! Batch norm for G: class-conditional (per-class gamma and beta) inside the blocks, plain affine
//! before the output.
use tch::{nn, Tensor};

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
}

impl BatchNorm {
    pub fn new(p: &nn::Path, c: i64, eps: f64, momentum: f64) -> Self {
        Self {
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
            eps,
            momentum,
        }
    }

    /// Normalises without an affine transform.
    pub fn normalise(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let (mean, var) = match mode {
            BnMode::Train | BnMode::Running => (Some(&self.running_mean), Some(&self.running_var)),
            BnMode::Batch => (None, None),
        };
        Tensor::batch_norm(
            x,
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

    pub fn forward(&self, x: &Tensor, y: &Tensor, mode: BnMode) -> Tensor {
        let c = self.gamma.size()[1];
        let g = self.gamma.index_select(0, y).view([-1, c, 1, 1]);
        let b = self.beta.index_select(0, y).view([-1, c, 1, 1]);
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

    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        self.bn.normalise(x, mode) * self.weight.view([1, -1, 1, 1]) + self.bias.view([1, -1, 1, 1])
    }
}
