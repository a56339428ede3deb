//! Gradient averaging: gradients are copied into a few large flat buckets, each all-reduced once,
//! then written back, so a network costs a handful of collectives instead of one per tensor.
use tch::{Kind, Tensor};

use super::comm::Comm;
use crate::error::{Error, Result};

/// Groups consecutive tensors into buckets of at most `bucket_bytes` (0 = one bucket); a tensor
/// larger than the limit gets a bucket of its own.
pub fn plan_buckets(sizes_bytes: &[usize], bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = 0;
    for (i, &s) in sizes_bytes.iter().enumerate() {
        if bucket_bytes > 0 && acc > 0 && acc + s > bucket_bytes {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += s;
    }
    if start < sizes_bytes.len() {
        out.push(start..sizes_bytes.len());
    }
    out
}

/// Gradient averaging for one network. The flat bucket buffers live as long as the network:
/// reusing the same memory each step lets MPI's transports reuse their registrations, where a fresh
/// buffer per step made the average several times slower than the bare all-reduce.
pub struct GradientBuckets {
    net: String,
    params: Vec<(String, Tensor)>,
    ranges: Vec<std::ops::Range<usize>>,
    buffers: Vec<Tensor>,
    /// The buffers are slices of the gradients' own flat tensor: nothing to copy in or out.
    in_place: bool,
    /// Seconds spent inside the all-reduce collectives themselves (waiting for the other ranks
    /// included), since the last [`GradientBuckets::take_comm_seconds`].
    comm_seconds: f64,
}

impl GradientBuckets {
    /// `params` must already have gradient tensors (see [`crate::train::adam::Adam::new`]), so that
    /// every rank issues the same collectives.
    pub fn new(net: &str, params: &[(String, Tensor)], bucket_bytes: usize) -> Result<Self> {
        let mut sizes = Vec::with_capacity(params.len());
        for (name, p) in params {
            if !p.grad().defined() {
                return Err(Error::Train(format!(
                    "{net} parameter {name} has no gradient tensor"
                )));
            }
            sizes.push(p.numel() * p.kind().elt_size_in_bytes());
        }
        let ranges = plan_buckets(&sizes, bucket_bytes);
        let buffers = ranges
            .iter()
            .map(|r| {
                let n: i64 = params[r.clone()]
                    .iter()
                    .map(|(_, p)| p.numel() as i64)
                    .sum();
                let (_, first) = &params[r.start];
                Tensor::zeros([n], (first.kind(), first.device()))
            })
            .collect();
        Ok(Self {
            net: net.to_string(),
            params: params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            ranges,
            buffers,
            in_place: false,
            comm_seconds: 0.0,
        })
    }

    /// Buckets over gradients that already lie back to back in `flat_grad`, in the order of
    /// `params` (as [`crate::train::adam::Adam`] keeps them): each bucket is a slice of it, so
    /// averaging copies nothing.
    pub fn over_flat(
        net: &str,
        params: &[(String, Tensor)],
        flat_grad: &Tensor,
        bucket_bytes: usize,
    ) -> Result<Self> {
        let mut b = Self::new(net, params, bucket_bytes)?;
        let mut offset = 0;
        for (range, buffer) in b.ranges.iter().zip(&mut b.buffers) {
            let n = buffer.numel() as i64;
            for (name, p) in &params[range.clone()] {
                let expected = flat_grad.narrow(0, offset, p.numel() as i64);
                offset += p.numel() as i64;
                if p.grad().data_ptr() != expected.data_ptr() {
                    return Err(Error::Train(format!(
                        "{net} parameter {name}: its gradient is not where the flat gradient \
                         tensor says"
                    )));
                }
            }
            *buffer = flat_grad.narrow(0, offset - n, n);
        }
        b.in_place = true;
        Ok(b)
    }

    /// Averages the gradients over all ranks in place and returns the squared global gradient
    /// norm: a 0-dim f64 tensor on the gradients' device, not read to the host, so that a GPU
    /// step is never stalled here. A NaN or infinity anywhere makes it non-finite; the trainer
    /// reads it with the step's statistics and then asks [`GradientBuckets::not_finite`] for
    /// the culprits.
    pub fn all_reduce(&mut self, comm: &dyn Comm) -> Result<Tensor> {
        let world = comm.size() as f64;
        let mut sq_norm: Option<Tensor> = None;
        let _guard = tch::no_grad_guard();
        for (range, flat) in self.ranges.iter().zip(&mut self.buffers) {
            let grads: Vec<Tensor> = if self.in_place {
                Vec::new()
            } else {
                self.params[range.clone()]
                    .iter()
                    .map(|(_, p)| p.grad().view([-1]))
                    .collect()
            };
            let sq = if comm.size() > 1 {
                if !self.in_place {
                    let _ = Tensor::f_cat_out(flat, &grads, 0)?;
                }
                let t0 = std::time::Instant::now();
                comm.all_reduce_sum(flat)?;
                self.comm_seconds += t0.elapsed().as_secs_f64();
                let _ = flat.g_div_scalar_(world);
                if !self.in_place {
                    // One op for the whole bucket: per-tensor copies cost more in dispatch than
                    // in bytes.
                    let sizes: Vec<i64> = grads.iter().map(|g| g.numel() as i64).collect();
                    flat.f_split_with_sizes_copy_out(&grads, sizes.as_slice(), 0)?;
                }
                // One pass, no temporary: the norm also carries any NaN or infinity.
                flat.norm().to_kind(Kind::Double).square()
            } else if self.in_place {
                flat.norm().to_kind(Kind::Double).square()
            } else {
                // A single rank only needs the norm: no copy at all.
                let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
                Tensor::stack(&norms, 0)
                    .to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
            };
            sq_norm = Some(match sq_norm {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
        Ok(sq_norm.unwrap_or_else(|| Tensor::zeros([], (Kind::Double, tch::Device::Cpu))))
    }

    /// The error for step `step` whose averaged gradient was not finite, naming the parameters
    /// whose gradients hold a NaN or infinity.
    pub fn not_finite(&self, step: i64) -> Error {
        let bad: Vec<&str> = self
            .params
            .iter()
            .filter(|(_, p)| !bool::try_from(p.grad().isfinite().all()).unwrap_or(false))
            .map(|(n, _)| n.as_str())
            .collect();
        let place = match bad.len() {
            0 => "its norm overflows, or another rank contributed NaN or infinity".to_string(),
            n if n <= 5 => format!("NaN or infinity in {}", bad.join(", ")),
            n => format!(
                "NaN or infinity in {} and {} more",
                bad[..5].join(", "),
                n - 5
            ),
        };
        Error::Train(format!(
            "step {step}: the averaged {} gradient is not finite ({place}): training diverged and \
             stops here; nothing from this step is saved, and the last checkpoint (if any) is \
             kept for --resume (with a lower learning rate, say)",
            self.net
        ))
    }
}

impl GradientBuckets {
    /// The all-reduce time accumulated since the last call, and resets it.
    pub fn take_comm_seconds(&mut self) -> f64 {
        std::mem::take(&mut self.comm_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_respect_the_limit_and_cover_everything() {
        let b = plan_buckets(&[10, 10, 10, 50, 5], 25);
        assert_eq!(b, vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(plan_buckets(&[10, 10, 10], 0), vec![0..3]);
        assert!(plan_buckets(&[], 10).is_empty());
    }
}
