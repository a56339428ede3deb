//! Inception Score from classifier logits, following torch-fidelity 0.4.0
//! (`metric_isc.isc_features_to_metric`) step for step.
use tch::{Kind, TchError, Tensor};

use super::numpy_rng::legacy_permutation;
use crate::error::{Error, Result};

/// torch-fidelity's defaults: `isc_splits = 10` (defined in config, whose validation needs it)
/// and `rng_seed = 2020`.
pub const DEFAULT_SPLITS: usize = crate::config::IS_SPLITS;
pub const DEFAULT_SEED: u32 = 2020;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionScore {
    pub mean: f64,
    /// Population standard deviation over the splits (`np.std`, ddof 0), as torch-fidelity reports.
    pub std: f64,
}

/// How the samples are ordered before they are cut into splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// As given (torch-fidelity's `samples_shuffle=False`).
    AsGiven,
    /// `numpy.random.RandomState(seed).permutation(n)`, torch-fidelity's own shuffle; with
    /// [`DEFAULT_SEED`] the score equals torch-fidelity's default one for the same logits.
    NumpyShuffle(u32),
}

/// `mean, std` over `splits` parts of `exp(mean_x KL(p(y|x) || p(y)))`, `p(y)` being the part's
/// mean prediction. `logits` is `[n, classes]`; everything runs in float64 on its device.
pub fn inception_score(logits: &Tensor, splits: usize, order: Order) -> Result<InceptionScore> {
    let size = logits.size();
    if size.len() != 2 || splits == 0 || (size[0] as usize) < splits {
        return Err(TchError::Shape(format!(
            "Inception Score: expected logits [n >= {splits}, classes] for {splits} splits, got {size:?}"
        ))
        .into());
    }
    let n = size[0];
    tch::no_grad(|| -> Result<InceptionScore> {
        let mut x = logits.f_to_kind(Kind::Double)?;
        if x.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(Error::Model(
                "Inception Score: the logits are not all finite (NaN or inf from the classifier)"
                    .into(),
            ));
        }
        if let Order::NumpyShuffle(seed) = order {
            let perm = Tensor::from_slice(&legacy_permutation(seed, n as usize))
                .f_to_device(x.device())?;
            x = x.f_index_select(0, &perm)?;
        }
        let p = x.f_softmax(1, Kind::Double)?;
        let log_p = x.f_log_softmax(1, Kind::Double)?;
        let splits = splits as i64;
        let mut scores = Vec::with_capacity(splits as usize);
        for i in 0..splits {
            let (start, end) = (i * n / splits, (i + 1) * n / splits);
            let p_part = p.f_narrow(0, start, end - start)?;
            let log_p_part = log_p.f_narrow(0, start, end - start)?;
            let log_q = p_part.f_mean_dim(0, true, Kind::Double)?.f_log()?;
            // A class no sample of the part predicts at all (p underflowed to 0) gives 0 * -inf;
            // its contribution to the KL is 0, not NaN. The logits were checked finite, so no
            // other NaN can be hidden here.
            let kl = (&p_part * (&log_p_part - &log_q)).f_nan_to_num(0.0, None, None)?;
            let kl = kl
                .f_sum_dim_intlist(1, false, Kind::Double)?
                .f_mean(Kind::Double)?;
            scores.push(kl.f_double_value(&[])?.exp());
        }
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / scores.len() as f64;
        Ok(InceptionScore {
            mean,
            std: var.sqrt(),
        })
    })
}
