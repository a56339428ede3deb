//! Spectral normalisation (Miyato et al.) with persistent u/v buffers and the layers that use it.
//!
//! `W / sigma` is computed once per training step by [`SpectralNorm::refresh`] and reused by every
//! forward of that step, so D's real and fake passes see the same normalised weight.
use std::cell::RefCell;
use std::rc::Rc;

use tch::{nn, Kind, Tensor};

/// What a refresh does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnMode {
    /// One power iteration (updates u, v), then W/sigma with gradient through W.
    PowerIteration,
    /// W/sigma from the current u, v with gradient through W.
    Fixed,
    /// W/sigma from the current u, v, no gradient (the net is only a function of its input here).
    Detached,
}

/// Sigma has settled when one more iteration moves it by less than this, relatively.
const WARM_UP_TOLERANCE: f64 = 1e-6;
/// Enough for every layer of the shipped architectures to settle well inside the tolerance above;
/// the bound only matters for pathological (near-degenerate) spectra.
const WARM_UP_MAX_ITERATIONS: usize = 500;

pub struct SpectralNorm {
    pub weight: Tensor,
    pub u: Tensor,
    pub v: Tensor,
    eps: f64,
    /// False: W is used as it is (the layer keeps its u, v buffers but never divides by sigma).
    normalise: bool,
    normalised: RefCell<Option<Tensor>>,
}

fn l2_normalise(x: &Tensor, eps: f64) -> Tensor {
    x / (x.norm() + eps)
}

impl SpectralNorm {
    /// Registers `weight` (trainable, Xavier-uniform with the given fans) and the `weight_u`,
    /// `weight_v` buffers under `p`.
    pub fn new(p: &nn::Path, shape: &[i64], fan_in: i64, fan_out: i64, eps: f64) -> Rc<Self> {
        Self::with_normalisation(p, shape, fan_in, fan_out, eps, true)
    }

    /// As [`SpectralNorm::new`]; `normalise = false` makes a plain layer with the same variables.
    pub fn with_normalisation(
        p: &nn::Path,
        shape: &[i64],
        fan_in: i64,
        fan_out: i64,
        eps: f64,
        normalise: bool,
    ) -> Rc<Self> {
        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
        let weight = p.var(
            "weight",
            shape,
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let rows = shape[0];
        let cols: i64 = shape[1..].iter().product();
        let mut u = p.zeros_no_train("weight_u", &[rows]);
        let mut v = p.zeros_no_train("weight_v", &[cols]);
        tch::no_grad(|| {
            u.copy_(&l2_normalise(
                &Tensor::randn([rows], (Kind::Float, p.device())),
                eps,
            ));
            v.copy_(&l2_normalise(
                &Tensor::randn([cols], (Kind::Float, p.device())),
                eps,
            ));
        });
        Rc::new(Self {
            weight,
            u,
            v,
            eps,
            normalise,
            normalised: RefCell::new(None),
        })
    }

    fn matrix(&self) -> Tensor {
        self.weight.view([self.weight.size()[0], -1])
    }

    /// One power iteration: updates u and v from the current W, nothing else.
    pub fn power_iteration(&self) {
        if !self.normalise {
            return;
        }
        // fp32 even inside an autocast region: CUDA autocast would run `mv` in bf16.
        let _fp32 = crate::host::autocast::Fp32Guard::new(self.weight.device());
        tch::no_grad(|| {
            let w = self.matrix();
            let v = l2_normalise(&w.tr().mv(&self.u), self.eps);
            let u = l2_normalise(&w.mv(&v), self.eps);
            self.v.shallow_clone().copy_(&v);
            self.u.shallow_clone().copy_(&u);
        });
    }

    /// Power iterations until sigma settles (relative change below `tol`, at most `max` rounds),
    /// so that sigma is the top singular value from the start rather than the estimate of random u
    /// and v. Deterministic: ranks that start from the same u, v and W end identical.
    pub fn warm_up(&self, tol: f64, max: usize) {
        let mut last = self.sigma();
        for _ in 0..max {
            self.power_iteration();
            let sigma = self.sigma();
            let settled = (sigma - last).abs() <= tol * sigma.abs();
            last = sigma;
            if settled {
                break;
            }
        }
    }

    pub fn refresh(&self, mode: SnMode) {
        let _fp32 = crate::host::autocast::Fp32Guard::new(self.weight.device());
        if mode == SnMode::PowerIteration {
            self.power_iteration();
        }
        let compute = || {
            let w = if self.normalise {
                let sigma = self.u.dot(&self.matrix().mv(&self.v));
                &self.weight / sigma
            } else if mode == SnMode::Detached {
                // no_grad does not cut a leaf's own requires_grad: detach explicitly.
                self.weight.detach()
            } else {
                self.weight.shallow_clone()
            };
            if w.dim() == 4 {
                // Convolution weights in channels-last layout (NHWC strides, NCHW shape): oneDNN
                // then runs the convolutions in NHWC, without reordering every activation to and
                // from its blocked layout on each call. The same values, another memory order.
                w.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
            } else {
                w
            }
        };
        let w = if mode == SnMode::Detached {
            tch::no_grad(compute)
        } else {
            compute()
        };
        *self.normalised.borrow_mut() = Some(w);
    }

    /// The normalised weight of the current step.
    pub fn weight(&self) -> Tensor {
        self.normalised
            .borrow()
            .as_ref()
            .expect("SpectralNorm::refresh must run before the first forward")
            .shallow_clone()
    }

    /// sigma estimated from the current u, v (for diagnostics and tests).
    pub fn sigma(&self) -> f64 {
        tch::no_grad(|| self.u.dot(&self.matrix().mv(&self.v)).double_value(&[]))
    }
}

/// Collects every spectrally normalised weight of a network so they can be refreshed together.
#[derive(Default)]
pub struct SnRegistry {
    layers: RefCell<Vec<Rc<SpectralNorm>>>,
    pub eps: f64,
    /// False: the layers made here keep their weights unnormalised (`model.g_spectral_norm`).
    normalise: bool,
}

impl SnRegistry {
    pub fn new(eps: f64) -> Self {
        Self {
            layers: RefCell::new(Vec::new()),
            eps,
            normalise: true,
        }
    }

    /// A registry whose layers are spectrally normalised only when `normalise`.
    pub fn normalising(self, normalise: bool) -> Self {
        Self { normalise, ..self }
    }

    pub fn make(&self, p: &nn::Path, shape: &[i64], fan_in: i64, fan_out: i64) -> Rc<SpectralNorm> {
        let sn =
            SpectralNorm::with_normalisation(p, shape, fan_in, fan_out, self.eps, self.normalise);
        self.layers.borrow_mut().push(sn.clone());
        sn
    }

    pub fn refresh(&self, mode: SnMode) {
        for l in self.layers.borrow().iter() {
            l.refresh(mode);
        }
    }

    /// One power iteration on every layer, without normalising (G_ema tracks its own averaged
    /// weights this way, once per EMA update).
    pub fn power_iteration(&self) {
        for l in self.layers.borrow().iter() {
            l.power_iteration();
        }
    }

    /// Converges every layer's u and v (see [`SpectralNorm::warm_up`]); networks do this once, at
    /// construction.
    pub fn warm_up(&self) {
        for l in self.layers.borrow().iter() {
            l.warm_up(WARM_UP_TOLERANCE, WARM_UP_MAX_ITERATIONS);
        }
    }

    /// The layers, in construction order (for tests and diagnostics).
    pub fn layers(&self) -> Vec<Rc<SpectralNorm>> {
        self.layers.borrow().clone()
    }

    pub fn len(&self) -> usize {
        self.layers.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct SnConv2d {
    pub sn: Rc<SpectralNorm>,
    pub bias: Option<Tensor>,
    padding: i64,
}

impl SnConv2d {
    pub fn new(reg: &SnRegistry, p: nn::Path, c_in: i64, c_out: i64, k: i64, bias: bool) -> Self {
        let sn = reg.make(&p, &[c_out, c_in, k, k], c_in * k * k, c_out * k * k);
        let bias = bias.then(|| p.zeros("bias", &[c_out]));
        Self {
            sn,
            bias,
            padding: k / 2,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let out = x.conv2d(
            &self.sn.weight(),
            self.bias.as_ref(),
            [1, 1],
            [self.padding, self.padding],
            [1, 1],
            1,
        );
        // libtorch picks the output layout from the input's and the weight's, and takes a tensor
        // whose strides fit both layouts (one channel, a 1x1 kernel) for NCHW: D's first
        // convolutions, on one-channel images, sent NCHW activations down its residual stream,
        // and every ReLU gradient and convolution meeting them paid for the mismatch (a ReLU
        // gradient over mixed layouts is a strided loop, 10x slower).
        if out.size()[1] > 1 && out.stride()[1] != 1 {
            super::channels_last(&out)
        } else {
            out
        }
    }
}

pub struct SnLinear {
    pub sn: Rc<SpectralNorm>,
    pub bias: Option<Tensor>,
}

impl SnLinear {
    pub fn new(reg: &SnRegistry, p: nn::Path, d_in: i64, d_out: i64, bias: bool) -> Self {
        let sn = reg.make(&p, &[d_out, d_in], d_in, d_out);
        let bias = bias.then(|| p.zeros("bias", &[d_out]));
        Self { sn, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.sn.weight(), self.bias.as_ref())
    }
}

/// Class embedding of D's projection head: the (classes x C) table is spectrally normalised.
pub struct SnEmbedding {
    pub sn: Rc<SpectralNorm>,
}

impl SnEmbedding {
    pub fn new(reg: &SnRegistry, p: nn::Path, classes: i64, dim: i64) -> Self {
        Self {
            sn: reg.make(&p, &[classes, dim], classes, dim),
        }
    }

    pub fn forward(&self, y: &Tensor) -> Tensor {
        Tensor::embedding(&self.sn.weight(), y, -1, false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Autocast;
    use tch::Device;

    /// Inside a bf16 autocast region the power iteration and W / sigma are what they are outside
    /// it, bit for bit, and fp32 (CUDA autocast would otherwise take `mv` to bf16).
    #[test]
    fn power_iteration_and_normalisation_ignore_autocast() {
        let make = || {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let sn = SpectralNorm::new(&(vs.root() / "w"), &[16, 8, 3, 3], 72, 144, 1e-12);
            (vs, sn)
        };
        let ((_a, plain), (_b, mixed)) = (make(), make());
        plain.refresh(SnMode::PowerIteration);
        crate::host::autocast::run(Autocast::Bf16, Device::Cpu, || {
            mixed.refresh(SnMode::PowerIteration)
        });
        for (x, y) in [(&plain.u, &mixed.u), (&plain.v, &mixed.v)] {
            assert_eq!(y.kind(), Kind::Float);
            assert!(x.equal(y));
        }
        assert_eq!(mixed.weight().kind(), Kind::Float);
        assert!(plain.weight().equal(&mixed.weight()));
    }

    #[test]
    fn convolutions_hand_on_channels_last_activations_whatever_their_input() {
        let vs = nn::VarStore::new(Device::Cpu);
        let reg = SnRegistry::new(1e-12);
        reg.refresh(SnMode::PowerIteration);
        // One input channel or a 1x1 kernel: strides that fit both layouts, which libtorch reads
        // as NCHW.
        for (c_in, k) in [(1, 3), (1, 1), (8, 1), (8, 3)] {
            let conv = SnConv2d::new(&reg, vs.root() / format!("c{c_in}_{k}"), c_in, 16, k, true);
            reg.refresh(SnMode::PowerIteration);
            for x in [
                Tensor::randn([4, c_in, 8, 8], (tch::Kind::Float, Device::Cpu)),
                crate::model::channels_last(&Tensor::randn(
                    [4, c_in, 8, 8],
                    (tch::Kind::Float, Device::Cpu),
                )),
            ] {
                let out = conv.forward(&x);
                assert_eq!(
                    out.stride()[1],
                    1,
                    "{c_in} channel(s), {k}x{k} kernel: output strides {:?}",
                    out.stride()
                );
            }
        }
    }

    #[test]
    fn power_iteration_converges_to_the_top_singular_value() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let reg = SnRegistry::new(1e-12);
        let conv = SnConv2d::new(&reg, vs.root() / "c", 16, 32, 3, true);
        for _ in 0..200 {
            reg.refresh(SnMode::PowerIteration);
        }
        let w = conv.sn.weight().reshape([32, -1]);
        let s = w.svd(true, true).1.double_value(&[0]);
        assert!(
            (s - 1.0).abs() < 1e-3,
            "top singular value of W/sigma is {s}"
        );
        let raw = conv
            .sn
            .weight
            .view([32, -1])
            .svd(true, true)
            .1
            .double_value(&[0]);
        assert!((conv.sn.sigma() - raw).abs() / raw < 1e-3);
    }

    #[test]
    fn a_registry_without_normalisation_uses_its_weights_as_they_are() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let reg = SnRegistry::new(1e-12).normalising(false);
        let conv = SnConv2d::new(&reg, vs.root() / "c", 8, 16, 3, true);
        let lin = SnLinear::new(&reg, vs.root() / "l", 8, 4, false);
        let u0 = conv.sn.u.copy();
        for mode in [SnMode::PowerIteration, SnMode::Fixed, SnMode::Detached] {
            reg.refresh(mode);
            assert!(conv.sn.weight().equal(&conv.sn.weight));
            assert!(lin.sn.weight().equal(&lin.sn.weight));
            assert_eq!(lin.sn.weight().requires_grad(), mode != SnMode::Detached);
        }
        // The raw weights have sigma well away from 1, so the test would see a division.
        assert!(
            (conv.sn.sigma() - 1.0).abs() > 0.1,
            "sigma {}",
            conv.sn.sigma()
        );
        assert!(conv.sn.u.equal(&u0), "u moved without normalisation");
    }

    #[test]
    fn normalised_weight_is_reused_until_refreshed() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let reg = SnRegistry::new(1e-12);
        let lin = SnLinear::new(&reg, vs.root() / "l", 8, 4, false);
        reg.refresh(SnMode::PowerIteration);
        let u0 = lin.sn.u.copy();
        let a = lin.sn.weight();
        let b = lin.sn.weight();
        assert_eq!(a.data_ptr(), b.data_ptr());
        reg.refresh(SnMode::Fixed);
        assert!(lin.sn.u.equal(&u0), "Fixed must not run a power iteration");
        reg.refresh(SnMode::PowerIteration);
        assert!(!lin.sn.u.equal(&u0));
    }
}
