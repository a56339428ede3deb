//! Kernel Inception Distance (Binkowski et al. 2018), as torch-fidelity 0.4.0 computes it
//! (`metric_kid.kid_features_to_metric`): the unbiased estimate of MMD² under the cubic
//! polynomial kernel k(x, y) = (x·y / d + 1)³, over `subsets` random subsets of `subset_size`
//! generated and real features, reported as the mean and the (population) standard deviation over
//! the subsets. The subsets are drawn as torch-fidelity draws them, with numpy's legacy
//! `RandomState(seed).choice(n, m, replace=False)`, first from the generated then from the real
//! features, subset after subset; so for the same features and seed the numbers are
//! torch-fidelity's, not merely alike in distribution. The arithmetic is float64 whatever the
//! features' type (torch-fidelity keeps the type it is given: float32 for network features).
use tch::{Kind, Tensor};

use super::numpy_rng::Mt19937;
use crate::error::{Error, Result};

/// torch-fidelity's defaults (`defaults.py`).
pub const DEFAULT_SUBSETS: i64 = 100;
pub const DEFAULT_SUBSET_SIZE: i64 = 1000;
pub const DEFAULT_SEED: u32 = 2020;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
}

/// KID between `fake` and `real` features (`[n, d]` each, same `d`; any float kind, any device).
pub fn kid(fake: &Tensor, real: &Tensor, subsets: i64, subset_size: i64, seed: u32) -> Result<Kid> {
    let (n_fake, d) = fake
        .size2()
        .map_err(|e| Error::Eval(format!("KID features: {e}")))?;
    let (n_real, d_real) = real
        .size2()
        .map_err(|e| Error::Eval(format!("KID features: {e}")))?;
    if d != d_real {
        return Err(Error::Eval(format!(
            "KID: generated features have {d} dimensions, real ones {d_real}"
        )));
    }
    if subsets < 1 || subset_size < 2 || subset_size > n_fake.min(n_real) {
        return Err(Error::Eval(format!(
            "KID needs at least 1 subset of at least 2 samples, and no more samples per subset \
             than there are ({n_fake} generated, {n_real} real); got eval.kid_subsets = \
             {subsets}, eval.kid_subset_size = {subset_size}"
        )));
    }
    let fake = fake.to_kind(Kind::Double);
    let real = real.to_kind(Kind::Double);
    let mut rng = Mt19937::new(seed);
    let mut draw = |n: i64| {
        let mut idx = rng.permutation(n as usize);
        idx.truncate(subset_size as usize);
        Tensor::from_slice(&idx).to_device(fake.device())
    };
    let mut mmds = Vec::with_capacity(subsets as usize);
    for _ in 0..subsets {
        let x = fake.index_select(0, &draw(n_fake));
        let y = real.index_select(0, &draw(n_real));
        mmds.push(unbiased_mmd2(&x, &y));
    }
    let n = mmds.len() as f64;
    let mean = mmds.iter().sum::<f64>() / n;
    let std = (mmds.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(Kid { mean, std })
}

/// The cubic polynomial kernel matrix with torch-fidelity's gamma = 1 / d and coef0 = 1.
fn kernel(x: &Tensor, y: &Tensor) -> Tensor {
    let d = x.size()[1] as f64;
    (x.mm(&y.tr()) / d + 1.0).pow_tensor_scalar(3)
}

/// MMD² without the diagonal terms of K_XX and K_YY (the unbiased estimator), K_XY in full.
fn unbiased_mmd2(x: &Tensor, y: &Tensor) -> f64 {
    let m = x.size()[0] as f64;
    let off_diagonal_sum =
        |k: Tensor| k.sum(Kind::Double).double_value(&[]) - k.trace().double_value(&[]);
    let xx = off_diagonal_sum(kernel(x, x));
    let yy = off_diagonal_sum(kernel(y, y));
    let xy = kernel(x, y).sum(Kind::Double).double_value(&[]);
    (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn feats(rows: &[[f64; 2]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 2])
    }

    #[test]
    fn mmd2_by_hand() {
        // d = 2: k(a, b) = (a·b / 2 + 1)^3. X = {(0,0), (2,0)}, Y = {(0,2), (2,2)}.
        // K_XX off-diagonal: k((0,0),(2,0)) = 1, twice: 2. K_YY off-diagonal: k((0,2),(2,2)) =
        // (4/2 + 1)^3 = 27, twice: 54. K_XY: 1, 1, (0 + 1)^3 = 1, (4/2 + 1)^3 = 27: 30.
        // MMD² = (2 + 54) / (2 * 1) - 2 * 30 / 4 = 28 - 15 = 13.
        let x = feats(&[[0.0, 0.0], [2.0, 0.0]]);
        let y = feats(&[[0.0, 2.0], [2.0, 2.0]]);
        assert!((unbiased_mmd2(&x, &y) - 13.0).abs() < 1e-12);
    }

    #[test]
    fn near_zero_for_one_distribution_and_large_for_two() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::randn([600, 16], opts);
        let b = Tensor::randn([600, 16], opts);
        let shifted = Tensor::randn([600, 16], opts) + 1.0;
        let same = kid(&a, &b, 20, 200, DEFAULT_SEED).unwrap();
        let apart = kid(&a, &shifted, 20, 200, DEFAULT_SEED).unwrap();
        assert!(same.mean.abs() < 3.0 * same.std + 1e-3, "{same:?}");
        assert!(
            apart.mean > 10.0 * same.mean.abs().max(same.std),
            "{same:?} {apart:?}"
        );
        // Deterministic under the seed, different under another.
        assert_eq!(kid(&a, &shifted, 20, 200, DEFAULT_SEED).unwrap(), apart);
        assert_ne!(kid(&a, &shifted, 20, 200, 7).unwrap(), apart);
    }

    #[test]
    fn refuses_subsets_larger_than_the_sets() {
        let a = Tensor::zeros([10, 4], (Kind::Float, Device::Cpu));
        let msg = kid(&a, &a, 5, 11, DEFAULT_SEED).unwrap_err().to_string();
        assert!(msg.contains("eval.kid_subset_size = 11"), "{msg}");
        let b = Tensor::zeros([10, 3], (Kind::Float, Device::Cpu));
        assert!(kid(&a, &b, 5, 5, DEFAULT_SEED).is_err());
    }
}
