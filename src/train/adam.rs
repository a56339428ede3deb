//! Adam whose state is plain tensors (so checkpoints and cross-rank broadcasts can carry it),
//! computed with the same operations as libtorch's `torch::optim::Adam` (no weight decay, no AMSGrad).
//!
//! The parameters, their gradients and both moments each live in one flat tensor per network (every
//! parameter, gradient and moment a view into its flat tensor), so a step is a handful of ops over
//! the whole network rather than a handful per tensor: what PyTorch's foreach and fused Adam buy.
use tch::{Kind, Tensor};

pub struct Adam {
    params: Vec<(String, Tensor)>,
    flat: Tensor,
    flat_grad: Tensor,
    flat_exp_avg: Tensor,
    flat_exp_avg_sq: Tensor,
    /// Views into the flat moments, one per parameter (for checkpoints and broadcasts).
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub step: i64,
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// Views of `flat` shaped like `shapes`, back to back from its start.
pub fn views(flat: &Tensor, shapes: &[Vec<i64>]) -> Vec<Tensor> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|shape| {
            let n: i64 = shape.iter().product();
            let v = flat.narrow(0, offset, n).view(shape.as_slice());
            offset += n;
            v
        })
        .collect()
}

/// Moves `tensors` (values kept) into one new flat tensor, each becoming a view into it; returns
/// the flat tensor. Every holder of a tensor sees the move (the tensors' data is replaced in place,
/// as `param.data = ...` does in PyTorch). The tensors must share a kind and a device.
pub fn flatten(tensors: &[Tensor]) -> Tensor {
    let (kind, device) = tensors
        .first()
        .map_or((Kind::Float, tch::Device::Cpu), |t| (t.kind(), t.device()));
    let shapes: Vec<Vec<i64>> = tensors.iter().map(|t| t.size()).collect();
    let n: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    let flat = Tensor::zeros([n], (kind, device));
    tch::no_grad(|| {
        for (t, mut view) in tensors.iter().zip(views(&flat, &shapes)) {
            assert!(
                t.kind() == kind && t.device() == device,
                "flattened tensors must share a kind and a device"
            );
            view.copy_(t);
            t.shallow_clone().set_data(&view);
        }
    });
    flat
}

impl Adam {
    /// Also gives every parameter a (zero) gradient tensor, which `zero_grad` then keeps, so a
    /// parameter unused by some backward still has a gradient to all-reduce and step on. The
    /// parameters and gradients become views into flat tensors (see the module documentation).
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Self {
        if !params.is_empty() {
            let touch: Tensor = params.iter().map(|(_, p)| p.sum(p.kind()) * 0.0).sum();
            touch.backward();
        }
        let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let grads: Vec<Tensor> = params.iter().map(|(_, p)| p.grad()).collect();
        let flat = flatten(&tensors);
        let flat_grad = flatten(&grads);
        let _ = tch::no_grad(|| flat_grad.shallow_clone().zero_());
        let shapes: Vec<Vec<i64>> = tensors.iter().map(|t| t.size()).collect();
        let flat_exp_avg = flat.zeros_like().detach();
        let flat_exp_avg_sq = flat.zeros_like().detach();
        Self {
            exp_avg: views(&flat_exp_avg, &shapes),
            exp_avg_sq: views(&flat_exp_avg_sq, &shapes),
            params,
            flat,
            flat_grad,
            flat_exp_avg,
            flat_exp_avg_sq,
            step: 0,
            lr,
            beta1,
            beta2,
            eps,
        }
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// All parameters, back to back in name order (each parameter is a view into it).
    pub fn flat_params(&self) -> &Tensor {
        &self.flat
    }

    /// All gradients, laid out as [`Adam::flat_params`].
    pub fn flat_grad(&self) -> &Tensor {
        &self.flat_grad
    }

    /// The flat tensors a step changes: parameters and both moments (for undoing a step).
    pub fn flat_state(&self) -> [Tensor; 3] {
        [
            self.flat.shallow_clone(),
            self.flat_exp_avg.shallow_clone(),
            self.flat_exp_avg_sq.shallow_clone(),
        ]
    }

    pub fn zero_grad(&self) {
        let _ = tch::no_grad(|| self.flat_grad.shallow_clone().zero_());
    }

    /// One update from the parameters' current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2 = 1.0 - self.beta2.powi(self.step as i32);
        let step_size = self.lr / bias1;
        tch::no_grad(|| {
            let g = &self.flat_grad;
            let m = &mut self.flat_exp_avg;
            let _ = m.g_mul_scalar_(self.beta1);
            let _ = m.g_add_(&(g * (1.0 - self.beta1)));
            let v = &mut self.flat_exp_avg_sq;
            let _ = v.g_mul_scalar_(self.beta2);
            let _ = v.addcmul_(g, &(g * (1.0 - self.beta2)));
            let denom = v.sqrt() / bias2.sqrt() + self.eps;
            let _ = self
                .flat
                .shallow_clone()
                .addcdiv_(&(&self.flat_exp_avg * -step_size), &denom);
        });
    }

    /// Named state tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`), for checkpoints and broadcasts.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            out.push((
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].shallow_clone(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::{nn, Device, Kind};

    #[test]
    fn matches_libtorch_adam_over_ten_steps() {
        tch::manual_seed(11);
        let shapes: [&[i64]; 3] = [&[7, 5], &[5], &[3, 2, 3, 3]];
        let ours_vs = nn::VarStore::new(Device::Cpu);
        let ref_vs = nn::VarStore::new(Device::Cpu);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            let init = Tensor::randn(*s, (Kind::Float, Device::Cpu));
            let mut a = ours_vs.root().zeros(&format!("p{i}"), s);
            let mut b = ref_vs.root().zeros(&format!("p{i}"), s);
            tch::no_grad(|| {
                a.copy_(&init);
                b.copy_(&init);
            });
            ours.push((format!("p{i}"), a));
            theirs.push(b);
        }
        let mut adam = Adam::new(
            ours.iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            4e-4,
            0.0,
            0.9,
            1e-8,
        );
        let mut reference = nn::Adam {
            beta1: 0.0,
            beta2: 0.9,
            wd: 0.0,
            eps: 1e-8,
            amsgrad: false,
        }
        .build(&ref_vs, 4e-4)
        .unwrap();
        for step in 0..10 {
            let targets: Vec<Tensor> = shapes
                .iter()
                .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
                .collect();
            let loss = |ps: &[Tensor]| -> Tensor {
                ps.iter()
                    .zip(&targets)
                    .map(|(p, t)| (p - t).pow_tensor_scalar(2).sum(Kind::Float) * (step + 1) as f64)
                    .sum::<Tensor>()
            };
            adam.zero_grad();
            loss(
                &ours
                    .iter()
                    .map(|(_, p)| p.shallow_clone())
                    .collect::<Vec<_>>(),
            )
            .backward();
            adam.step();
            reference.zero_grad();
            loss(&theirs).backward();
            reference.step();
        }
        for ((_, a), b) in ours.iter().zip(&theirs) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "max abs diff {diff}");
            assert!((a - a.detach().zeros_like()).abs().max().double_value(&[]) > 0.0);
        }
    }
}
