//! Exponential moving average of G's parameters into G_ema (BigGAN's recipe).
//!
//! G_ema's spectral norm tracks its own averaged weights: borrowing G's u and v would estimate
//! sigma of W_ema along W_G's singular vectors, which underestimates it and scales every G_ema
//! layer up. So once averaging starts, G_ema runs its own power iteration after every update;
//! before that (a plain copy of G) it copies G's u and v, which then are exactly right.
use tch::Tensor;

use crate::model::{self, Generator};

pub struct Ema {
    params: Vec<(Tensor, Tensor)>,
    /// BN running statistics: G's are the ones that saw data.
    bn_buffers: Vec<(Tensor, Tensor)>,
    sn_vectors: Vec<(Tensor, Tensor)>,
    pub decay: f64,
    pub start: i64,
    /// G's and G_ema's parameters as flat tensors of the same layout, when they are views into
    /// such (see [`Ema::use_flat`]): one op averages the whole network.
    flat: Option<(Tensor, Tensor)>,
}

fn is_sn_vector(name: &str) -> bool {
    name.ends_with("weight_u") || name.ends_with("weight_v")
}

impl Ema {
    /// Pairs `source` and `target` variables by name (the networks must come from the same config)
    /// and makes `target` an exact copy of `source`.
    pub fn new(source: &Generator, target: &Generator, decay: f64, start: i64) -> Self {
        let pair =
            |a: Vec<(String, Tensor)>, b: Vec<(String, Tensor)>| -> Vec<(String, Tensor, Tensor)> {
                assert_eq!(a.len(), b.len(), "EMA networks differ");
                a.into_iter()
                    .zip(b)
                    .map(|((na, ta), (nb, tb))| {
                        assert_eq!(na, nb, "EMA networks differ");
                        (na, ta, tb)
                    })
                    .collect()
            };
        let strip =
            |v: Vec<(String, Tensor, Tensor)>| v.into_iter().map(|(_, a, b)| (a, b)).collect();
        let buffers = pair(model::buffers(&source.vs), model::buffers(&target.vs));
        let (sn, bn): (Vec<_>, Vec<_>) = buffers.into_iter().partition(|(n, _, _)| is_sn_vector(n));
        let ema = Self {
            params: strip(pair(
                model::parameters(&source.vs),
                model::parameters(&target.vs),
            )),
            bn_buffers: strip(bn),
            sn_vectors: strip(sn),
            decay,
            start,
            flat: None,
        };
        ema.copy_all();
        ema
    }

    /// Averages through `source` and `target`, flat tensors whose slices are the parameters'
    /// data, back to back in name order (as [`crate::train::adam::flatten`] leaves them).
    pub fn use_flat(&mut self, source: &Tensor, target: &Tensor) {
        let mut offset = 0;
        for (src, dst) in &self.params {
            let n = src.numel() as i64;
            assert!(
                src.data_ptr() == source.narrow(0, offset, n).data_ptr()
                    && dst.data_ptr() == target.narrow(0, offset, n).data_ptr(),
                "EMA: parameters are not laid out as the flat tensors say"
            );
            offset += n;
        }
        assert_eq!(offset, source.numel() as i64, "EMA: flat tensor size");
        assert_eq!(offset, target.numel() as i64, "EMA: flat tensor size");
        self.flat = Some((source.shallow_clone(), target.shallow_clone()));
    }

    fn averaging(&self, step: i64) -> bool {
        step >= self.start && self.decay > 0.0
    }

    /// After generator step `step`: averages from `start` on, copies before.
    pub fn update(&self, step: i64, target: &Generator) {
        if !self.averaging(step) {
            self.copy_all();
            return;
        }
        tch::no_grad(|| {
            match &self.flat {
                Some((src, dst)) => {
                    let _ = dst.shallow_clone().lerp_(src, 1.0 - self.decay);
                }
                None => {
                    for (src, dst) in &self.params {
                        let _ = dst.shallow_clone().lerp_(src, 1.0 - self.decay);
                    }
                }
            }
            for (src, dst) in &self.bn_buffers {
                dst.shallow_clone().copy_(src);
            }
        });
        target.sn.power_iteration();
    }

    fn copy_all(&self) {
        tch::no_grad(|| {
            let params: &[(Tensor, Tensor)] = match &self.flat {
                Some((src, dst)) => {
                    dst.shallow_clone().copy_(src);
                    &[]
                }
                None => &self.params,
            };
            for (src, dst) in params
                .iter()
                .chain(&self.bn_buffers)
                .chain(&self.sn_vectors)
            {
                dst.shallow_clone().copy_(src);
            }
        });
    }
}
