//! Gradient averaging: gradients are copied into a few large flat buckets, each all-reduced once,
//! then written back, so a network costs a handful of collectives instead of one per tensor.
use tch::Tensor;

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

/// Averages the gradients of `params` over all ranks (see [`crate::train::adam::Adam::new`], which
/// gives every parameter a gradient tensor, so every rank issues the same collectives). Returns the global gradient norm.
/// Fails (naming the step) when any averaged gradient is not finite.
pub fn all_reduce_gradients(
    comm: &dyn Comm,
    params: &[(String, Tensor)],
    bucket_bytes: usize,
    net: &str,
    step: i64,
) -> Result<f64> {
    let mut grads: Vec<Tensor> = params.iter().map(|(_, p)| p.grad()).collect();
    if let Some(((name, _), _)) = params.iter().zip(&grads).find(|(_, g)| !g.defined()) {
        return Err(Error::Train(format!(
            "{net} parameter {name} has no gradient tensor"
        )));
    }
    let sizes: Vec<usize> = grads.iter().map(|g| g.numel() * 4).collect();
    let world = comm.size() as f64;
    let mut sq_norm = 0.0;
    tch::no_grad(|| -> Result<()> {
        for range in plan_buckets(&sizes, bucket_bytes) {
            let parts: Vec<Tensor> = grads[range.clone()]
                .iter()
                .map(|g| g.flatten(0, -1))
                .collect();
            let mut flat = Tensor::cat(&parts, 0);
            if comm.size() > 1 {
                comm.all_reduce_sum(&mut flat)?;
                let _ = flat.g_div_scalar_(world);
            }
            // One pass, no temporary: the norm also exposes any NaN or infinity.
            let sq = flat.norm().double_value(&[]).powi(2);
            if !sq.is_finite() {
                let bad: Vec<&str> = params[range.clone()]
                    .iter()
                    .zip(&grads[range.clone()])
                    .filter(|(_, g)| !bool::try_from(g.isfinite().all()).unwrap_or(false))
                    .map(|((n, _), _)| n.as_str())
                    .collect();
                return Err(Error::Train(format!(
                    "step {step}: non-finite {net} gradient (after averaging) in {}",
                    if bad.is_empty() {
                        "the averaged bucket".to_string()
                    } else {
                        bad.join(", ")
                    }
                )));
            }
            sq_norm += sq;
            if comm.size() > 1 {
                let mut offset = 0;
                for g in &mut grads[range] {
                    let n = g.numel() as i64;
                    g.copy_(&flat.narrow(0, offset, n).view_as(g));
                    offset += n;
                }
            }
        }
        Ok(())
    })?;
    Ok(sq_norm.sqrt())
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
