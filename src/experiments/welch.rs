//! Seed statistics: mean, sample standard deviation, and Welch's t interval for the difference of
//! two arms' means (unequal variances, Welch-Satterthwaite degrees of freedom), with Student's t
//! quantile computed here from the regularised incomplete beta function.

/// Mean of `x` (NaN when empty).
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (n - 1); NaN below two values.
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// A confidence interval of `mean(b) - mean(a)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub difference: f64,
    pub low: f64,
    pub high: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
}

/// Welch's two-sided interval at `confidence` (0.95) for mean(b) - mean(a); None unless both
/// sides have two values or more. Where both variances are zero the interval is the difference
/// itself.
pub fn welch_interval(a: &[f64], b: &[f64], confidence: f64) -> Option<Interval> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (va, vb) = (
        std_dev(a).powi(2) / a.len() as f64,
        std_dev(b).powi(2) / b.len() as f64,
    );
    let difference = mean(b) - mean(a);
    let se = (va + vb).sqrt();
    if se == 0.0 {
        return Some(Interval {
            difference,
            low: difference,
            high: difference,
            df: f64::INFINITY,
        });
    }
    let df = (va + vb).powi(2) / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    let half = student_t_quantile(0.5 + confidence / 2.0, df) * se;
    Some(Interval {
        difference,
        low: difference - half,
        high: difference + half,
        df,
    })
}

/// The `p` quantile (0.5 < p < 1) of Student's t with `df` degrees of freedom, by bisection on
/// the distribution function (monotone, so the bisection cannot miss).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.5 && p < 1.0 && df > 0.0, "quantile {p} of t({df})");
    let (mut lo, mut hi) = (0.0, 1.0);
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(T <= t) for Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz),
/// using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        // The even and the odd term of the fraction.
        for coeff in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 / guard(1.0 + coeff * d);
            c = guard(1.0 + coeff / c);
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, nine coefficients: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        // scipy 1.17's stats.t.ppf(0.975, df).
        for (df, q) in [
            (1.0, 12.706_204_736_174_694),
            (2.0, 4.302_652_729_749_462),
            (3.0, 3.182_446_305_283_707_8),
            (3.7, 2.867_520_707_191_189_5),
            (10.0, 2.228_138_851_986_274),
            (1000.0, 1.962_339_080_826_408_3),
        ] {
            let got = student_t_quantile(0.975, df);
            assert!((got - q).abs() < 1e-9 * q, "df {df}: {got} against {q}");
        }
        assert!((student_t_cdf(0.0, 5.0) - 0.5).abs() < 1e-15);
        assert!((student_t_cdf(-2.0, 4.0) + student_t_cdf(2.0, 4.0) - 1.0).abs() < 1e-14);
    }

    #[test]
    fn welch_interval_by_hand() {
        let a = [1.0, 2.0, 3.0];
        let b = [2.0, 4.0, 6.0, 8.0];
        let iv = welch_interval(&a, &b, 0.95).unwrap();
        // va = 1/3, vb = (20/3)/4 = 5/3; df = 4 / ((1/9)/2 + (25/9)/3).
        let df = 4.0 / ((1.0 / 9.0) / 2.0 + (25.0 / 9.0) / 3.0);
        assert!((iv.df - df).abs() < 1e-12);
        assert_eq!(iv.difference, 3.0);
        let half = student_t_quantile(0.975, df) * 2f64.sqrt();
        assert!((iv.high - 3.0 - half).abs() < 1e-12 && (3.0 - iv.low - half).abs() < 1e-12);
        assert!(welch_interval(&a, &[1.0], 0.95).is_none());
        let same = welch_interval(&[2.0, 2.0], &[3.0, 3.0], 0.95).unwrap();
        assert_eq!((same.low, same.high), (1.0, 1.0));
        assert!((std_dev(&b) - (20.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }
}
