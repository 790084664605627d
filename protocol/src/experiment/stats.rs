//! The statistics of an experiment's report (formulas in `docs/experiments.md`):
//!
//! - conversion rate per variant: converted subjects / exposed subjects;
//! - each variant against the control (the first variant): the difference of rates with a 95 %
//!   **Newcombe** interval (his method 10: the hybrid of two Wilson score intervals, Newcombe
//!   1998), which keeps its coverage near 95 % for small counts and rates near 0 or 1 where the
//!   Wald interval does not; the relative uplift (difference / control rate); and a
//!   two-sided **pooled two-proportion z-test**;
//! - **sample-ratio mismatch**: Pearson's chi-square goodness of fit of the exposed counts
//!   against the configured weights, with k − 1 degrees of freedom; p < 0.001 is a warning (the
//!   split is broken somewhere, so no result can be trusted).
//!
//! The normal tail comes from the complementary error function of *Numerical Recipes* (Press et
//! al., §6.2, `erfcc`: a Chebyshev fit with fractional error below 1.2·10^-7 everywhere), and
//! the chi-square tail from its closed forms for integer degrees of freedom (Abramowitz &
//! Stegun 26.4.4 and 26.4.5), so no numerical integration and no dependency.

use serde::{Deserialize, Serialize};

/// The 97.5th percentile of the standard normal: a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;
/// A sample-ratio mismatch below this p-value is a warning.
pub const SRM_ALPHA: f64 = 0.001;
/// A comparison with a p-value below this is called significant.
pub const ALPHA: f64 = 0.05;

/// The complementary error function (Numerical Recipes `erfcc`, fractional error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// P(Z ≤ z) for a standard normal Z.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// P(Z > z) for a standard normal Z (accurate in the far tail, unlike `1 - normal_cdf`).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// P(X > x) for X chi-square with `df` ≥ 1 degrees of freedom (A&S 26.4.4 for odd `df`,
/// 26.4.5 for even).
pub fn chi_square_sf(x: f64, df: u32) -> f64 {
    if x <= 0.0 || df == 0 {
        return 1.0;
    }
    let q = if df.is_multiple_of(2) {
        // e^(-x/2) · Σ_{r < df/2} (x/2)^r / r!
        let mut term = (-x / 2.0).exp();
        let mut sum = term;
        for r in 1..df / 2 {
            term *= x / 2.0 / f64::from(r);
            sum += term;
        }
        sum
    } else {
        // 2·Q(√x) + 2·φ(√x) · Σ_{r=1}^{(df-1)/2} x^{(2r-1)/2} / (1·3·…·(2r-1))
        let chi = x.sqrt();
        let mut sum = 2.0 * normal_sf(chi);
        let mut term = 2.0 * normal_pdf(chi) * chi;
        for r in 1..=(df - 1) / 2 {
            if r > 1 {
                term *= x / f64::from(2 * r - 1);
            }
            sum += term;
        }
        sum
    };
    q.clamp(0.0, 1.0)
}

/// The Wilson score interval of `x` successes in `n` trials at normal quantile `z`.
pub fn wilson(x: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 || x > n {
        return None;
    }
    let n = n as f64;
    let p = x as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denominator = 1.0 + z2 / n;
    Some((
        ((centre - half) / denominator).max(0.0),
        ((centre + half) / denominator).min(1.0),
    ))
}

/// Newcombe's hybrid score interval (method 10) for p1 − p2 at normal quantile `z`.
pub fn newcombe(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> Option<(f64, f64)> {
    let (l1, u1) = wilson(x1, n1, z)?;
    let (l2, u2) = wilson(x2, n2, z)?;
    let p1 = x1 as f64 / n1 as f64;
    let p2 = x2 as f64 / n2 as f64;
    let d = p1 - p2;
    let low = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let high = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    Some((low, high))
}

/// The Wald interval for p1 − p2 (shown for comparison in the docs' worked example only).
pub fn wald(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let p1 = x1 as f64 / n1 as f64;
    let p2 = x2 as f64 / n2 as f64;
    let se = (p1 * (1.0 - p1) / n1 as f64 + p2 * (1.0 - p2) / n2 as f64).sqrt();
    Some((p1 - p2 - z * se, p1 - p2 + z * se))
}

/// The pooled two-proportion z statistic of p1 − p2 and its two-sided p-value; `None` when it
/// is undefined (an empty group, or a pooled rate of 0 or 1).
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return None;
    }
    let z = (x1 as f64 / n1f - x2 as f64 / n2f) / se;
    Some((z, (2.0 * normal_sf(z.abs())).min(1.0)))
}

/// Pearson's chi-square of observed counts against weights (any positive scale), with its
/// degrees of freedom and p-value; `None` with no observations or fewer than 2 groups.
pub fn goodness_of_fit(observed: &[u64], weights: &[u32]) -> Option<(f64, u32, f64)> {
    let total: u64 = observed.iter().sum();
    let weight_sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 || observed.len() != weights.len() || observed.len() < 2 || weight_sum == 0 {
        return None;
    }
    let mut chi = 0.0;
    for (o, w) in observed.iter().zip(weights) {
        let expected = total as f64 * f64::from(*w) / weight_sum as f64;
        if expected <= 0.0 {
            return None;
        }
        chi += (*o as f64 - expected).powi(2) / expected;
    }
    // At most MAX_VARIANTS groups, so the count fits.
    let df = (observed.len() - 1) as u32;
    Some((chi, df, chi_square_sf(chi, df)))
}

/// What the report needs per variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    pub key: String,
    pub weight_bp: u32,
    pub exposures: u64,
    pub conversions: u64,
}

/// A variant against the control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Conversion rate minus the control's (absolute, as a fraction: 0.012 = 1.2 points).
    pub difference: f64,
    /// 95 % Newcombe interval of the difference.
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// The difference over the control's rate (absent when the control converted nobody).
    pub relative_uplift: Option<f64>,
    /// Pooled two-proportion z statistic and its two-sided p-value (absent when undefined).
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    /// p < 0.05.
    pub significant: bool,
}

/// One variant's row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    pub key: String,
    pub weight_bp: u32,
    pub control: bool,
    pub exposures: u64,
    pub conversions: u64,
    /// Conversions / exposures (absent with no exposures).
    pub conversion_rate: Option<f64>,
    /// Absent for the control and when either side has no exposures.
    pub vs_control: Option<Comparison>,
}

/// The sample-ratio check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRatio {
    pub chi_square: f64,
    pub degrees_of_freedom: u32,
    pub p_value: f64,
    /// p < [`SRM_ALPHA`].
    pub mismatch: bool,
}

/// The statistics of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub variants: Vec<VariantReport>,
    pub sample_ratio: Option<SampleRatio>,
    /// Sentences for the reader (a sample-ratio mismatch, too little data).
    pub warnings: Vec<String>,
}

/// The report of arms in their configured order (the first is the control).
pub fn report(arms: &[Arm]) -> Report {
    let control = arms.first();
    let variants = arms
        .iter()
        .enumerate()
        .map(|(i, arm)| VariantReport {
            key: arm.key.clone(),
            weight_bp: arm.weight_bp,
            control: i == 0,
            exposures: arm.exposures,
            conversions: arm.conversions,
            conversion_rate: rate(arm),
            vs_control: control.filter(|_| i > 0).and_then(|c| compare(arm, c)),
        })
        .collect();
    let observed: Vec<u64> = arms.iter().map(|a| a.exposures).collect();
    let weights: Vec<u32> = arms.iter().map(|a| a.weight_bp).collect();
    let sample_ratio =
        goodness_of_fit(&observed, &weights).map(|(chi_square, df, p)| SampleRatio {
            chi_square,
            degrees_of_freedom: df,
            p_value: p,
            mismatch: p < SRM_ALPHA,
        });
    let mut warnings = Vec::new();
    if let Some(srm) = sample_ratio.as_ref().filter(|s| s.mismatch) {
        warnings.push(format!(
            "sample-ratio mismatch: the exposed counts do not match the configured split (chi-square {:.2}, p = {:.2e} < {SRM_ALPHA}); look for a bug in assignment or exposure before trusting any result",
            srm.chi_square, srm.p_value
        ));
    }
    if arms.iter().any(|a| a.exposures < 30) {
        warnings.push(
            "a variant has fewer than 30 exposed subjects: the normal approximations behind the p-values are rough"
                .into(),
        );
    }
    Report {
        variants,
        sample_ratio,
        warnings,
    }
}

fn rate(arm: &Arm) -> Option<f64> {
    (arm.exposures > 0).then(|| arm.conversions as f64 / arm.exposures as f64)
}

fn compare(arm: &Arm, control: &Arm) -> Option<Comparison> {
    let p = rate(arm)?;
    let pc = rate(control)?;
    let (low, high) = newcombe(
        arm.conversions,
        arm.exposures,
        control.conversions,
        control.exposures,
        Z_95,
    )?;
    let test = two_proportion_z(
        arm.conversions,
        arm.exposures,
        control.conversions,
        control.exposures,
    );
    Some(Comparison {
        difference: p - pc,
        ci95_low: low,
        ci95_high: high,
        relative_uplift: (pc > 0.0).then(|| (p - pc) / pc),
        z: test.map(|t| t.0),
        p_value: test.map(|t| t.1),
        significant: test.is_some_and(|t| t.1 < ALPHA),
    })
}
