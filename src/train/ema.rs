//! Exponential moving average of G's parameters into G_ema (BigGAN's recipe); buffers are copied.
use tch::{nn, Tensor};

use crate::model;

pub struct Ema {
    pairs_params: Vec<(Tensor, Tensor)>,
    pairs_buffers: Vec<(Tensor, Tensor)>,
    pub decay: f64,
    pub start: i64,
}

impl Ema {
    /// Pairs `source` and `target` variables by name; the stores must come from the same config.
    pub fn new(source: &nn::VarStore, target: &nn::VarStore, decay: f64, start: i64) -> Self {
        let pair = |a: Vec<(String, Tensor)>, b: Vec<(String, Tensor)>| {
            assert_eq!(a.len(), b.len(), "EMA networks differ");
            a.into_iter()
                .zip(b)
                .map(|((na, ta), (nb, tb))| {
                    assert_eq!(na, nb, "EMA networks differ");
                    (ta, tb)
                })
                .collect()
        };
        let ema = Self {
            pairs_params: pair(model::parameters(source), model::parameters(target)),
            pairs_buffers: pair(model::buffers(source), model::buffers(target)),
            decay,
            start,
        };
        ema.update(0);
        ema
    }

    /// Averages after `start` (and when decay > 0); copies before.
    pub fn update(&self, step: i64) {
        let average = step >= self.start && self.decay > 0.0;
        tch::no_grad(|| {
            for (src, dst) in &self.pairs_params {
                let mut dst = dst.shallow_clone();
                if average {
                    let _ = dst.lerp_(src, 1.0 - self.decay);
                } else {
                    dst.copy_(src);
                }
            }
            for (src, dst) in &self.pairs_buffers {
                dst.shallow_clone().copy_(src);
            }
        });
    }
}
