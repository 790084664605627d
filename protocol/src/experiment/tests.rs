//! Assignment properties, validation table, and the statistics against published values.

use super::stats::*;
use super::*;
use crate::ids::{AnonymousId, CustomerId};
use proptest::prelude::*;

fn customer(n: u128) -> Subject {
    Subject::Customer(CustomerId(ulid::Ulid(n)))
}

fn spec(weights: &[u32]) -> Vec<VariantSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| VariantSpec {
            key: format!("v{i}"),
            weight_bp: *w,
            description: String::new(),
        })
        .collect()
}

/// 2 to 5 positive weights summing to exactly 10 000 basis points.
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=100, 2..=5).prop_map(|raw| {
        let sum: u32 = raw.iter().sum();
        let mut out: Vec<u32> = raw.iter().map(|r| (r * BUCKETS / sum).max(1)).collect();
        let assigned: u32 = out.iter().sum();
        // The rounding remainder goes to the largest weight, so every weight stays positive.
        if let Some(i) = (0..out.len()).max_by_key(|i| out[*i]) {
            out[i] = out[i] + BUCKETS - assigned;
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same (salt, subject) always lands in the same bucket, inside [0, 10000), and
    /// customers and anonymous shoppers with the same ULID are different subjects.
    #[test]
    fn assignment_is_deterministic(salt in "[a-z0-9-]{1,20}", id in any::<u128>()) {
        let c = customer(id);
        let b = bucket(&salt, &c);
        prop_assert!(b < BUCKETS);
        prop_assert_eq!(b, bucket(&salt, &c));
        prop_assert_eq!(b, bucket(&salt.clone(), &customer(id)));
        let a = Subject::Anonymous(AnonymousId(ulid::Ulid(id)));
        prop_assert_eq!(bucket(&salt, &a), bucket(&salt, &a));
    }
}

proptest! {
    // Each case hashes 100 000 subjects; a few dozen cases cover many splits.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Over 100 000 subjects each variant gets its configured share within 5 standard
    /// deviations of the binomial count (σ = √(n·p·(1−p)), e.g. ±0.79 % of n at 50 %). With up
    /// to 5 variants × 24 cases checked per run, 5σ (two-sided tail 5.7·10⁻⁷ per check) keeps a
    /// correct hash from failing more than about once in 10 000 runs, while a biased hash or an
    /// off-by-one in the cumulative weights fails at once.
    #[test]
    fn splits_converge_to_the_configured_ratio(
        weights in weights(),
        salt in "[a-z0-9-]{1,20}",
        start in any::<u64>(),
    ) {
        let variants = spec(&weights);
        let n: u64 = 100_000;
        let mut counts = vec![0u64; variants.len()];
        // Ids spread like ULIDs: a time part and a random part that differ per subject.
        let mut id = u128::from(start) << 64;
        for i in 0..n {
            id = id.wrapping_add(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835 ^ u128::from(i));
            let b = bucket(&salt, &customer(id));
            let v = variant_at(&variants, b).expect("a variant");
            let index = variants.iter().position(|x| x.key == v.key).expect("known");
            counts[index] += 1;
        }
        for (count, w) in counts.iter().zip(&weights) {
            let p = f64::from(*w) / f64::from(BUCKETS);
            let expected = n as f64 * p;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            prop_assert!(
                (*count as f64 - expected).abs() <= 5.0 * sigma,
                "weight {w} bp: {count} of {n}, expected {expected:.0} ± {:.0}", 5.0 * sigma
            );
        }
    }

    /// The cumulative mapping gives each variant exactly its weight in buckets.
    #[test]
    fn buckets_map_to_variants_by_exact_weight(weights in weights()) {
        let variants = spec(&weights);
        let mut counts = vec![0u32; variants.len()];
        for b in 0..BUCKETS {
            let v = variant_at(&variants, b).expect("a variant");
            counts[variants.iter().position(|x| x.key == v.key).expect("known")] += 1;
        }
        prop_assert_eq!(counts, weights);
    }
}

fn input(key: &str, weight_bp: Option<u32>, percent: Option<f64>) -> VariantInput {
    VariantInput {
        key: key.into(),
        weight_bp,
        percent,
        description: String::new(),
    }
}

#[test]
fn variants_that_do_not_add_up_are_refused_with_the_field() {
    type Case = (
        &'static str,
        Vec<VariantInput>,
        Option<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "50/50 in basis points",
            vec![input("a", Some(5000), None), input("b", Some(5000), None)],
            None,
        ),
        (
            "percentages with decimals",
            vec![
                input("a", None, Some(33.34)),
                input("b", None, Some(33.33)),
                input("c", None, Some(33.33)),
            ],
            None,
        ),
        (
            "sum below 100 %",
            vec![input("a", Some(5000), None), input("b", Some(4000), None)],
            Some(("variants", "add up to 90.00 %")),
        ),
        (
            "sum above 100 %",
            vec![input("a", None, Some(60.0)), input("b", None, Some(50.0))],
            Some(("variants", "add up to 110.00 %")),
        ),
        (
            "one variant",
            vec![input("a", Some(10000), None)],
            Some(("variants", "at least 2 variants")),
        ),
        (
            "duplicate keys",
            vec![input("a", Some(5000), None), input("a", Some(5000), None)],
            Some(("variants[1].key", "used twice")),
        ),
        (
            "zero weight",
            vec![input("a", Some(10000), None), input("b", Some(0), None)],
            Some(("variants[1].weight_bp", "above 0")),
        ),
        (
            "no weight",
            vec![input("a", Some(10000), None), input("b", None, None)],
            Some(("variants[1].weight_bp", "needs a weight")),
        ),
        (
            "both weights",
            vec![
                input("a", Some(5000), Some(50.0)),
                input("b", Some(5000), None),
            ],
            Some(("variants[0].weight_bp", "not both")),
        ),
        (
            "three decimals",
            vec![
                input("a", None, Some(50.005)),
                input("b", None, Some(49.995)),
            ],
            Some(("variants[0].percent", "two decimals")),
        ),
        (
            "bad key",
            vec![input("a b", Some(5000), None), input("b", Some(5000), None)],
            Some(("variants[0].key", "letters, digits")),
        ),
    ];
    for (name, variants, expected) in cases {
        let result = variants_from(&variants);
        match (result, expected) {
            (Ok(_), None) => {}
            (Err(errors), Some((field, words))) => assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(words)),
                "{name}: expected {field} '{words}', got {errors:?}"
            ),
            (other, expected) => panic!("{name}: got {other:?}, expected {expected:?}"),
        }
    }
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance
}

/// Standard normal table values (any statistics text's Table A).
#[test]
fn the_normal_distribution_matches_the_table() {
    let table = [
        (0.0, 0.5),
        (1.0, 0.841_344_7),
        (1.644_853_6, 0.95),
        (1.959_964, 0.975),
        (2.575_829, 0.995),
        (3.090_232, 0.999),
        (-1.959_964, 0.025),
        (-3.0, 0.001_349_9),
    ];
    for (z, p) in table {
        assert!(
            close(normal_cdf(z), p, 2e-7),
            "Φ({z}) = {} ≠ {p}",
            normal_cdf(z)
        );
    }
    assert!(close(erfc(1.0), 0.157_299_207_050_285, 1e-7));
    assert!(close(
        normal_sf(5.0) / 2.866_515_718_791_939e-7,
        1.0,
        1.2e-6
    ));
}

/// Chi-square critical values (upper 5 % and 0.1 % points, e.g. NIST/SEMATECH e-Handbook
/// table 1.3.6.7.4): the tail beyond each is the stated p to the table's 3 decimals.
#[test]
fn chi_square_tails_match_the_critical_values() {
    let table = [
        (1, 3.841, 0.05),
        (2, 5.991, 0.05),
        (3, 7.815, 0.05),
        (4, 9.488, 0.05),
        (5, 11.070, 0.05),
        (9, 16.919, 0.05),
        (1, 10.828, 0.001),
        (2, 13.816, 0.001),
        (3, 16.266, 0.001),
        (4, 18.467, 0.001),
    ];
    for (df, x, p) in table {
        let q = chi_square_sf(x, df);
        assert!(
            close(q / p, 1.0, 2e-3),
            "Q({x}; {df}) = {q}, table says {p}"
        );
    }
    assert_eq!(chi_square_sf(0.0, 3), 1.0);
}

/// Newcombe (1998), "Interval estimation for the difference between independent proportions",
/// Statistics in Medicine 17, Table II: method 10 (hybrid score) and method 1 (Wald) for
/// 56/70 − 48/80, 9/10 − 3/10 and 5/56 − 0/29.
#[test]
fn difference_intervals_match_newcombe_1998() {
    let cases = [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ];
    for ((x1, n1, x2, n2), (low, high)) in cases {
        let (l, h) = newcombe(x1, n1, x2, n2, Z_95).expect("defined");
        assert!(
            close(l, low, 5e-5) && close(h, high, 5e-5),
            "{x1}/{n1} − {x2}/{n2}: ({l:.4}, {h:.4}), paper ({low}, {high})"
        );
    }
    let (l, h) = wald(56, 70, 48, 80, Z_95).expect("defined");
    assert!(
        close(l, 0.0575, 5e-5) && close(h, 0.3425, 5e-5),
        "Wald ({l}, {h})"
    );
}

/// The pooled z-test on the same 56/70 vs 48/80, worked by hand: pooled p = 104/150,
/// SE = √(p(1−p)(1/70 + 1/80)) = 0.075467, z = 0.2 / SE = 2.6502, two-sided p = 0.00805. Its
/// square is Pearson's chi-square of the 2×2 table (7.0234 with 1 df), an identity every text
/// states.
#[test]
fn the_pooled_z_test_matches_the_worked_example() {
    let (z, p) = two_proportion_z(56, 70, 48, 80).expect("defined");
    assert!(close(z, 2.650_17, 1e-4), "z = {z}");
    assert!(close(p, 0.008_045, 2e-5), "p = {p}");
    // Pearson chi-square of [[56, 14], [48, 32]] by its expected counts.
    let observed: [f64; 4] = [56.0, 14.0, 48.0, 32.0];
    let expected = [
        70.0 * 104.0 / 150.0,
        70.0 * 46.0 / 150.0,
        80.0 * 104.0 / 150.0,
        80.0 * 46.0 / 150.0,
    ];
    let chi: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e).powi(2) / e)
        .sum();
    assert!(close(z * z, chi, 1e-9));
    assert!(close(chi_square_sf(chi, 1), p, 1e-7));
    assert_eq!(two_proportion_z(0, 10, 0, 10), None);
    assert_eq!(two_proportion_z(1, 0, 0, 10), None);
}

#[test]
fn the_report_flags_a_sample_ratio_mismatch_and_compares_with_the_control() {
    let arm = |key: &str, exposures, conversions| Arm {
        key: key.into(),
        weight_bp: 5000,
        exposures,
        conversions,
    };
    // 5000 vs 4500 on a 50/50 split: chi-square 26.3, p ≈ 3e-7.
    let skewed = report(&[arm("control", 5000, 500), arm("treatment", 4500, 540)]);
    let srm = skewed.sample_ratio.as_ref().expect("computed");
    assert!(srm.mismatch && srm.p_value < 1e-6, "{srm:?}");
    assert!(skewed.warnings[0].contains("sample-ratio mismatch"));
    let treatment = skewed.variants[1].vs_control.as_ref().expect("compared");
    assert!(close(treatment.difference, 0.02, 1e-12));
    assert!(close(
        treatment.relative_uplift.expect("defined"),
        0.2,
        1e-12
    ));
    assert!(treatment.significant && treatment.ci95_low > 0.0);
    assert!(skewed.variants[0].vs_control.is_none() && skewed.variants[0].control);

    let fair = report(&[arm("control", 5030, 500), arm("treatment", 4970, 505)]);
    assert!(!fair.sample_ratio.expect("computed").mismatch);
    assert!(fair.warnings.is_empty());
    let empty = report(&[arm("control", 0, 0), arm("treatment", 0, 0)]);
    assert!(empty.sample_ratio.is_none() && empty.variants[1].vs_control.is_none());
}
