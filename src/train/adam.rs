//! Adam whose state is plain tensors (so checkpoints and cross-rank broadcasts can carry it),
//! computed with the same operations as libtorch's `torch::optim::Adam` (no weight decay, no AMSGrad).
use tch::Tensor;

pub struct Adam {
    params: Vec<(String, Tensor)>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub step: i64,
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Also gives every parameter a (zero) gradient tensor, which `zero_grad` then keeps, so a
    /// parameter unused by some backward still has a gradient to all-reduce and step on.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Self {
        if !params.is_empty() {
            let touch: Tensor = params.iter().map(|(_, p)| p.sum(p.kind()) * 0.0).sum();
            touch.backward();
        }
        let zeros =
            |ps: &[(String, Tensor)]| ps.iter().map(|(_, p)| p.zeros_like().detach()).collect();
        Self {
            exp_avg: zeros(&params),
            exp_avg_sq: zeros(&params),
            params,
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

    pub fn zero_grad(&self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// One update from the parameters' current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2 = 1.0 - self.beta2.powi(self.step as i32);
        let step_size = self.lr / bias1;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter().enumerate() {
                let g = p.grad();
                let m = &mut self.exp_avg[i];
                let _ = m.g_mul_scalar_(self.beta1);
                let _ = m.g_add_(&(&g * (1.0 - self.beta1)));
                let v = &mut self.exp_avg_sq[i];
                let _ = v.g_mul_scalar_(self.beta2);
                let _ = v.addcmul_(&g, &(&g * (1.0 - self.beta2)));
                let denom = v.sqrt() / bias2.sqrt() + self.eps;
                let _ = p.shallow_clone().addcdiv_(&(&*m * -step_size), &denom);
            }
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
