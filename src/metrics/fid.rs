//! Frechet distance between Gaussians fitted to feature sets (FID when the features are Inception
//! pool3 activations), following pytorch-fid's statistics and value.
use tch::{Device, Kind, TchError, Tensor};

use crate::error::Result;

fn shape_error(msg: String) -> crate::Error {
    TchError::Shape(msg).into()
}

/// Running sums of feature vectors and of their outer products, in float64.
///
/// Kept as plain sums (not a running mean and covariance) so that the stats of several batches or
/// ranks combine by addition: one all-reduce of [`FeatureStats::to_flat`] merges a whole world.
/// The covariance is then formed once as `(S - s s^T / n) / (n - 1)`; in float64 the cancellation
/// in that difference costs about `1e-16 * (mean^2 + var) / var` relative, negligible for
/// Inception-like features whose means and spreads are of one order.
pub struct FeatureStats {
    n: i64,
    sum: Tensor,
    outer: Tensor,
}

/// The Gaussian fitted to a feature set: `mu` (`[d]`) and `sigma` (`[d, d]`, `rowvar=False`,
/// `N - 1` normalisation), both float64, as pytorch-fid stores them in its `.npz` files.
pub struct FidStats {
    pub mu: Tensor,
    pub sigma: Tensor,
}

impl FeatureStats {
    pub fn new(dim: i64, device: Device) -> Self {
        FeatureStats {
            n: 0,
            sum: Tensor::zeros([dim], (Kind::Double, device)),
            outer: Tensor::zeros([dim, dim], (Kind::Double, device)),
        }
    }

    pub fn dim(&self) -> i64 {
        self.sum.size()[0]
    }

    pub fn count(&self) -> i64 {
        self.n
    }

    pub fn device(&self) -> Device {
        self.sum.device()
    }

    /// Adds a batch `[b, d]` of features of any float kind, on any device.
    pub fn add(&mut self, features: &Tensor) -> Result<()> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dim() {
            return Err(shape_error(format!(
                "FID features: expected [batch, {}], got {size:?}",
                self.dim()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            // Cast before the product: a float32 x^T x over 50k samples would already lose the
            // digits the covariance difference needs.
            let x = features
                .f_to_device(self.device())?
                .f_to_kind(Kind::Double)?;
            let _ = self
                .sum
                .f_add_(&x.f_sum_dim_intlist(0, false, Kind::Double)?)?;
            let _ = self.outer.f_add_(&x.f_tr()?.f_mm(&x)?)?;
            Ok(())
        })?;
        self.n += size[0];
        Ok(())
    }

    pub fn merge(&mut self, other: &FeatureStats) -> Result<()> {
        if other.dim() != self.dim() {
            return Err(shape_error(format!(
                "FID stats: cannot merge dimension {} into {}",
                other.dim(),
                self.dim()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            let _ = self.sum.f_add_(&other.sum.f_to_device(self.device())?)?;
            let _ = self
                .outer
                .f_add_(&other.outer.f_to_device(self.device())?)?;
            Ok(())
        })?;
        self.n += other.n;
        Ok(())
    }

    /// `[n, sum (d), outer (d * d)]` as one float64 vector, so a world sums its stats with one
    /// all-reduce. `n` stays exact in float64 up to 2^53 samples.
    pub fn to_flat(&self) -> Tensor {
        tch::no_grad(|| {
            let n = Tensor::from_slice(&[self.n as f64]).to_device(self.device());
            Tensor::cat(&[n, self.sum.shallow_clone(), self.outer.reshape([-1])], 0)
        })
    }

    pub fn from_flat(dim: i64, flat: &Tensor) -> Result<Self> {
        let expected = 1 + dim + dim * dim;
        if flat.size() != [expected] || flat.kind() != Kind::Double {
            return Err(shape_error(format!(
                "FID flat stats for dimension {dim}: expected float64 [{expected}], got {:?} {:?}",
                flat.kind(),
                flat.size()
            )));
        }
        let n = flat.f_double_value(&[0])?;
        if n < 0.0 || n.fract() != 0.0 {
            return Err(shape_error(format!(
                "FID flat stats: sample count {n} is not a count"
            )));
        }
        Ok(FeatureStats {
            n: n as i64,
            // Copies: views would let later `add`s write through into the caller's buffer.
            sum: flat.narrow(0, 1, dim).copy(),
            outer: flat
                .narrow(0, 1 + dim, dim * dim)
                .reshape([dim, dim])
                .copy(),
        })
    }

    /// The sample covariance of `n` points has rank at most `n - 1`, so with `n <= d` it is
    /// singular and the FID is dominated by the missing directions (and not comparable to a
    /// full-rank one).
    pub fn rank_deficient(&self) -> bool {
        self.n <= self.dim()
    }

    /// Mean and covariance; warns on stderr when the covariance is necessarily singular.
    pub fn finish(&self) -> Result<FidStats> {
        if self.n < 2 {
            return Err(shape_error(format!(
                "FID stats: a covariance needs at least 2 samples, have {}",
                self.n
            )));
        }
        if self.rank_deficient() {
            eprintln!(
                "warning: FID statistics from {} samples of dimension {}: the covariance is \
                 singular (rank <= n - 1); the FID will be inflated and not comparable",
                self.n,
                self.dim()
            );
        }
        tch::no_grad(|| {
            let n = self.n as f64;
            let mu = &self.sum / n;
            let sigma = (&self.outer - self.sum.outer(&self.sum) / n) / (n - 1.0);
            // Rounding in x^T x need not be symmetric; eigh reads one triangle only, so make
            // both triangles agree.
            let sigma = (&sigma + sigma.tr()) * 0.5;
            Ok(FidStats { mu, sigma })
        })
    }
}

impl FidStats {
    pub fn dim(&self) -> i64 {
        self.mu.size()[0]
    }

    pub fn frechet_distance(&self, other: &FidStats) -> Result<f64> {
        frechet_distance(&self.mu, &self.sigma, &other.mu, &other.sigma)
    }
}

/// `||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr(sqrt(s1 s2))`, in float64.
///
/// `s1 s2` is not symmetric, which is why pytorch-fid needs a general `sqrtm` (and sometimes an
/// `eps` retry) and torch-fidelity general eigenvalues. It is similar to the symmetric PSD matrix
/// `sqrt(s1) s2 sqrt(s1)`, so `tr(sqrt(s1 s2))` is the sum of the square roots of that matrix's
/// eigenvalues: two `eigh` calls, real throughout, with tiny negative eigenvalues from rounding
/// clamped to 0. Computed on the device of `mu1`.
pub fn frechet_distance(
    mu1: &Tensor,
    sigma1: &Tensor,
    mu2: &Tensor,
    sigma2: &Tensor,
) -> Result<f64> {
    let d = mu1.size();
    if d.len() != 1 || mu2.size() != d {
        return Err(shape_error(format!(
            "FID: means must be vectors of one length, got {:?} and {:?}",
            mu1.size(),
            mu2.size()
        )));
    }
    let square = [d[0], d[0]];
    if sigma1.size() != square || sigma2.size() != square {
        return Err(shape_error(format!(
            "FID: covariances must be {square:?}, got {:?} and {:?}",
            sigma1.size(),
            sigma2.size()
        )));
    }
    tch::no_grad(|| -> Result<f64> {
        let device = mu1.device();
        let f64_on = |t: &Tensor| t.f_to_device(device)?.f_to_kind(Kind::Double);
        let (mu1, s1, mu2, s2) = (f64_on(mu1)?, f64_on(sigma1)?, f64_on(mu2)?, f64_on(sigma2)?);
        let diff = &mu1 - &mu2;
        let mean_term = diff.f_dot(&diff)?.f_double_value(&[])?;
        let trace1 = s1.f_trace()?.f_double_value(&[])?;
        let trace2 = s2.f_trace()?.f_double_value(&[])?;

        let (w, v) = s1.f_linalg_eigh("L")?;
        let root1 = (&v * w.f_clamp_min(0.0)?.f_sqrt()?.f_unsqueeze(0)?).f_mm(&v.f_tr()?)?;
        let inner = root1.f_mm(&s2)?.f_mm(&root1)?;
        let inner = (&inner + inner.f_tr()?) * 0.5;
        let tr_covmean = inner
            .f_linalg_eigvalsh("L")?
            .f_clamp_min(0.0)?
            .f_sqrt()?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
        Ok(clamp_round_off(
            mean_term + trace1 + trace2 - 2.0 * tr_covmean,
            mean_term + trace1 + trace2,
        ))
    })
}

/// A distance is never negative: a value below 0 by round-off (relative to `scale`, the size of
/// the terms that cancel) is 0, as in exact arithmetic; pytorch-fid prints such values as they
/// come (e.g. -4.6e-6 for a file against itself). The square roots of near-zero eigenvalues carry
/// errors of order sqrt(machine epsilon), hence the loose 1e-6. A larger negative value is not
/// round-off and is returned as it is, so that it shows.
pub fn clamp_round_off(fid: f64, scale: f64) -> f64 {
    if fid < 0.0 && fid >= -1e-6 * scale.abs().max(1.0) {
        0.0
    } else {
        fid
    }
}

#[cfg(test)]
mod tests {
    use super::clamp_round_off;

    #[test]
    fn round_off_below_zero_is_zero_and_real_negatives_show() {
        assert_eq!(clamp_round_off(-4.558e-6, 2000.0), 0.0);
        assert_eq!(clamp_round_off(-1e-12, 0.0), 0.0);
        assert_eq!(clamp_round_off(3.5, 2000.0), 3.5);
        assert_eq!(clamp_round_off(-0.5, 2000.0), -0.5);
    }
}
