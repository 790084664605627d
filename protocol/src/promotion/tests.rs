//! Properties of the engine over random baskets and promotions, and the refusals of
//! [`validate`]. The example cases are data: `tests/data/promotions/`.

use super::*;
use crate::catalog::CategoryId;
use crate::channel::Channel;
use crate::ids::Sku;
use crate::money::{Currency, Money};
use proptest::prelude::*;
use std::collections::BTreeMap;
use time::OffsetDateTime;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_772_620_200).expect("valid time")
}

fn ctx() -> PromotionContext {
    let mut ctx = PromotionContext::new(Currency::EUR, Channel::Web, now());
    ctx.shipping = Some(eur(490));
    ctx.gift_prices.insert(sku("GIFT"), eur(999));
    ctx
}

const CATEGORIES: [&str; 3] = ["coffee", "tea", "mugs"];
const BRANDS: [&str; 2] = ["Acme", "Bean"];
const SKUS: [&str; 6] = ["S0", "S1", "S2", "S3", "S4", "S5"];

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::All),
        proptest::sample::subsequence(SKUS.to_vec(), 1..3).prop_map(|s| Target::Skus {
            skus: s.into_iter().map(sku).collect()
        }),
        proptest::sample::select(CATEGORIES.to_vec()).prop_map(|c| Target::Categories {
            categories: vec![CategoryId(c.into())]
        }),
        proptest::sample::select(BRANDS.to_vec()).prop_map(|b| Target::Brands {
            brands: vec![b.into()]
        }),
    ]
}

/// Any benefit, including amounts larger than any line, to test the caps.
fn benefit() -> impl Strategy<Value = Benefit> {
    let bp = 1u32..=10_000;
    let amount = (1i64..20_000).prop_map(eur);
    prop_oneof![
        (target(), bp.clone())
            .prop_map(|(target, percent_bp)| Benefit::PercentOff { target, percent_bp }),
        (target(), amount.clone())
            .prop_map(|(target, amount)| Benefit::AmountOff { target, amount }),
        (target(), amount.clone())
            .prop_map(|(target, amount)| Benefit::AmountOffEach { target, amount }),
        bp.clone()
            .prop_map(|percent_bp| Benefit::PercentOffBasket { percent_bp }),
        amount
            .clone()
            .prop_map(|amount| Benefit::AmountOffBasket { amount }),
        (target(), (0i64..5_000).prop_map(eur))
            .prop_map(|(target, price)| Benefit::FixedPrice { target, price }),
        (target(), 1u32..4, target(), 1u32..3, bp.clone()).prop_map(
            |(buy, buy_quantity, get, get_quantity, percent_bp)| Benefit::BuyXGetY {
                buy,
                buy_quantity,
                get,
                get_quantity,
                percent_bp
            }
        ),
        (target(), 1u32..6, bp.clone()).prop_map(|(target, q, percent_bp)| Benefit::Tiered {
            target,
            tiers: vec![
                Tier {
                    min_quantity: Some(q),
                    min_subtotal: None,
                    percent_bp: percent_bp / 2 + 1
                },
                Tier {
                    min_quantity: Some(q * 2),
                    min_subtotal: None,
                    percent_bp
                },
            ]
        }),
        Just(Benefit::FreeShipping),
        (1u32..3).prop_map(|quantity| Benefit::FreeGift {
            sku: sku("GIFT"),
            quantity
        }),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        (100i64..30_000).prop_map(|m| Condition::MinSubtotal { amount: eur(m) }),
        (1u32..6, target())
            .prop_map(|(quantity, target)| Condition::MinQuantity { quantity, target }),
        proptest::sample::subsequence(SKUS.to_vec(), 1..3).prop_map(|s| Condition::Skus {
            skus: s.into_iter().map(sku).collect()
        }),
        Just(Condition::Channel {
            any_of: vec![Channel::Web]
        }),
        Just(Condition::Channel {
            any_of: vec![Channel::Pos]
        }),
    ]
}

fn promotion() -> impl Strategy<Value = PromotionSpec> {
    let combination = prop_oneof![
        Just(Combination::Exclusive),
        proptest::sample::select(vec!["a", "b", "default"])
            .prop_map(|g| { Combination::Stackable { group: g.into() } }),
    ];
    (
        proptest::collection::vec(condition(), 0..2),
        benefit(),
        combination,
        -2i32..3,
        proptest::option::of(1u32..3),
    )
        .prop_map(
            |(conditions, benefit, combination, priority, per_order)| PromotionSpec {
                conditions,
                benefit,
                combination,
                priority,
                limits: Limits {
                    per_order,
                    ..Limits::default()
                },
            },
        )
}

/// Promotions with ids and ages (`created_seq` repeats on purpose, so ties go down to ids).
fn promotions() -> impl Strategy<Value = Vec<Promotion>> {
    proptest::collection::vec((promotion(), 0u64..4), 0..8).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (spec, created_seq))| Promotion {
                id: PromotionId(format!("P{i}")),
                name: format!("promotion {i}"),
                spec,
                created_seq,
            })
            .collect()
    })
}

/// Lines with distinct SKUs; repeated prices make ties where order could matter.
fn lines() -> impl Strategy<Value = Vec<PromoLine>> {
    let price = prop_oneof![Just(999i64), Just(500), 0i64..20_000];
    proptest::collection::vec(
        (
            price,
            1u32..12,
            proptest::sample::select(CATEGORIES.to_vec()),
            proptest::sample::select(BRANDS.to_vec()),
        ),
        1..7,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (price, quantity, category, brand))| PromoLine {
                sku: sku(SKUS[i % SKUS.len()]),
                category: CategoryId(category.into()),
                brand: brand.into(),
                unit_price: eur(price),
                quantity,
            })
            .collect()
    })
}

/// What the customer gets from an outcome: discounts, gifts at their price, free shipping.
fn value(outcome: &PromotionOutcome, ctx: &PromotionContext) -> i64 {
    let gifts: i64 = outcome
        .gifts
        .iter()
        .map(|g| ctx.gift_prices[&g.sku].minor * i64::from(g.quantity))
        .sum();
    let shipping = if outcome.free_shipping {
        ctx.shipping.map_or(0, |s| s.minor)
    } else {
        0
    };
    outcome.discount.minor + gifts + shipping
}

fn line_totals(lines: &[PromoLine]) -> BTreeMap<Sku, i64> {
    let mut totals = BTreeMap::new();
    for l in lines {
        *totals.entry(l.sku.clone()).or_insert(0) += l.unit_price.minor * i64::from(l.quantity);
    }
    totals
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn discounts_never_exceed_what_they_discount(lines in lines(), promotions in promotions()) {
        let ctx = ctx();
        let outcome = evaluate(&lines, &PromotionSet::new(promotions), &ctx);
        let totals = line_totals(&lines);
        for (s, d) in &outcome.line_discounts {
            prop_assert!(d.minor > 0, "{} has an empty entry", s);
            prop_assert!(d.minor <= totals[s], "{} discounted {} of {}", s, d, totals[s]);
        }
        let subtotal: i64 = totals.values().sum();
        prop_assert!(outcome.discount.minor >= 0);
        prop_assert!(subtotal - outcome.discount.minor >= 0, "the total went negative");
        let sum: i64 = outcome.line_discounts.values().map(|m| m.minor).sum();
        prop_assert_eq!(sum, outcome.discount.minor);
        let applied: i64 = outcome.applied.iter().map(|a| a.amount.minor).sum();
        prop_assert_eq!(applied, outcome.discount.minor);
        prop_assert!(outcome.applied.iter().all(|a| a.times >= 1));
    }

    #[test]
    fn the_order_of_lines_and_promotions_does_not_matter(
        lines in lines(),
        promotions in promotions(),
        seed in any::<u64>(),
    ) {
        let ctx = ctx();
        let outcome = evaluate(&lines, &PromotionSet::new(promotions.clone()), &ctx);
        let mut shuffled_lines = lines.clone();
        let mut shuffled_promotions = promotions.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        let mut next = |n: usize| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % n as u64) as usize };
        for i in (1..shuffled_lines.len()).rev() { let j = next(i + 1); shuffled_lines.swap(i, j); }
        for i in (1..shuffled_promotions.len()).rev() { let j = next(i + 1); shuffled_promotions.swap(i, j); }
        let again = evaluate(&shuffled_lines, &PromotionSet::new(shuffled_promotions), &ctx);
        prop_assert_eq!(again, outcome);
    }

    #[test]
    fn the_winner_is_worth_at_least_every_other_option(lines in lines(), promotions in promotions()) {
        let ctx = ctx();
        let outcome = evaluate(&lines, &PromotionSet::new(promotions.clone()), &ctx);
        let best = value(&outcome, &ctx);
        let stackable: Vec<Promotion> = promotions
            .iter()
            .filter(|p| matches!(p.spec.combination, Combination::Stackable { .. }))
            .cloned()
            .collect();
        let stack = evaluate(&lines, &PromotionSet::new(stackable), &ctx);
        prop_assert!(value(&stack, &ctx) <= best, "the stack alone is worth more");
        for p in promotions.iter().filter(|p| p.spec.combination == Combination::Exclusive) {
            let alone = evaluate(&lines, &PromotionSet::new(vec![p.clone()]), &ctx);
            prop_assert!(value(&alone, &ctx) <= best, "{} alone is worth more", p.id);
        }
        // Every promotion is explained at most once.
        let mut ids: Vec<&str> = outcome.applied.iter().map(|a| a.id.as_str())
            .chain(outcome.not_applied.iter().map(|n| n.id.as_str())).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), n);
    }
}

#[test]
fn an_exclusive_outcome_holds_one_promotion() {
    let lines = [PromoLine {
        sku: sku("A"),
        category: CategoryId("coffee".into()),
        brand: "Acme".into(),
        unit_price: eur(1000),
        quantity: 3,
    }];
    let promotion = |id: &str, seq: u64, combination: Combination, bp: u32| Promotion {
        id: PromotionId(id.into()),
        name: id.into(),
        spec: PromotionSpec {
            conditions: Vec::new(),
            benefit: Benefit::PercentOffBasket { percent_bp: bp },
            combination,
            priority: 0,
            limits: Limits::default(),
        },
        created_seq: seq,
    };
    let set = PromotionSet::new(vec![
        promotion("S1", 1, Combination::Stackable { group: "a".into() }, 1000),
        promotion("S2", 2, Combination::Stackable { group: "b".into() }, 1000),
        promotion("E", 3, Combination::Exclusive, 2000),
    ]);
    let outcome = evaluate(&lines, &set, &ctx());
    // Stack: 10 % of 30.00, then 10 % of 27.00 = 5.70; alone: 20 % = 6.00.
    assert_eq!(outcome.discount, eur(600));
    assert_eq!(outcome.applied.len(), 1);
    assert_eq!(outcome.applied[0].id.as_str(), "E");
    let reasons: Vec<&str> = outcome
        .not_applied
        .iter()
        .map(|n| n.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "beaten by exclusive promotion E (EUR 6.00 > EUR 5.70)",
            "beaten by exclusive promotion E (EUR 6.00 > EUR 5.70)"
        ]
    );
}

/// The refusals of `validate`: (definition, field, a part of the reason).
#[test]
fn validate_refuses_with_reasons() {
    let catalog: BTreeMap<Sku, Money> = [("A", 500), ("B", 1200)]
        .into_iter()
        .map(|(s, p)| (sku(s), eur(p)))
        .collect();
    let check = |json: &str| {
        let spec = PromotionSpec::from_json(json).expect("a readable definition");
        validate(&spec, |s| catalog.get(s).copied())
    };
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"benefit": {"type": "percent_off_basket", "percent_bp": 10001}}"#,
            "benefit.percent_bp",
            "1 to 10000 basis points",
        ),
        (
            r#"{"benefit": {"type": "percent_off", "target": {"type": "all"}, "percent_bp": 0}}"#,
            "benefit.percent_bp",
            "1 to 10000",
        ),
        (
            r#"{"benefit": {"type": "amount_off_basket", "amount": {"minor": -5, "currency": "EUR"}}}"#,
            "benefit.amount",
            "must be more than zero",
        ),
        (
            r#"{"benefit": {"type": "amount_off", "target": {"type": "all"}, "amount": {"minor": 0, "currency": "EUR"}}}"#,
            "benefit.amount",
            "must be more than zero",
        ),
        (
            r#"{"benefit": {"type": "fixed_price", "target": {"type": "skus", "skus": ["A"]}, "price": {"minor": -1, "currency": "EUR"}}}"#,
            "benefit.price",
            "cannot be below zero",
        ),
        (
            r#"{"benefit": {"type": "amount_off_each", "target": {"type": "skus", "skus": ["A", "B"]}, "amount": {"minor": 600, "currency": "EUR"}}}"#,
            "benefit.amount",
            "would make a line price below zero: EUR 6.00 off each unit of A, which costs EUR 5.00",
        ),
        (
            r#"{"benefit": {"type": "amount_off_basket", "amount": {"minor": 2000, "currency": "EUR"}},
                "conditions": [{"type": "min_subtotal", "amount": {"minor": 1500, "currency": "EUR"}}]}"#,
            "benefit.amount",
            "would make a total negative",
        ),
        (
            r#"{"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["NOPE"]}, "percent_bp": 100}}"#,
            "benefit.target.skus[0]",
            "unknown SKU NOPE",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "skus", "skus": ["A", "GONE"]}]}"#,
            "conditions[0].skus[1]",
            "unknown SKU GONE",
        ),
        (
            r#"{"benefit": {"type": "free_gift", "sku": "MUG", "quantity": 1}}"#,
            "benefit.sku",
            "unknown SKU MUG",
        ),
        (
            r#"{"benefit": {"type": "free_gift", "sku": "A", "quantity": 0}}"#,
            "benefit.quantity",
            "at least 1",
        ),
        (
            r#"{"benefit": {"type": "tiered", "target": {"type": "all"}, "tiers": []}}"#,
            "benefit.tiers",
            "at least one tier",
        ),
        (
            r#"{"benefit": {"type": "tiered", "target": {"type": "all"}, "tiers": [{"percent_bp": 500}]}}"#,
            "benefit.tiers[0]",
            "min_quantity or a min_subtotal",
        ),
        (
            r#"{"benefit": {"type": "buy_x_get_y", "buy": {"type": "all"}, "buy_quantity": 0, "get": {"type": "all"}, "get_quantity": 1, "percent_bp": 10000}}"#,
            "benefit.buy_quantity",
            "at least 1",
        ),
        (
            r#"{"benefit": {"type": "buy_x_get_y", "buy": {"type": "all"}, "buy_quantity": 1, "get": {"type": "all"}, "get_quantity": 0, "percent_bp": 10000}}"#,
            "benefit.get_quantity",
            "at least 1",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "window", "from": "2026-03-05T00:00:00Z", "until": "2026-03-05T00:00:00Z"}]}"#,
            "conditions[0].until",
            "must be after from",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "window", "from_minute": 600, "until_minute": 1500}]}"#,
            "conditions[0].until_minute",
            "0 to 1440",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "segment", "any_of": []}]}"#,
            "conditions[0].any_of",
            "at least one segment",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "channel", "any_of": ["hologram"]}]}"#,
            "conditions[0].any_of",
            "unknown channel",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "min_quantity", "quantity": 0}]}"#,
            "conditions[0].quantity",
            "at least 1",
        ),
        (
            r#"{"benefit": {"type": "amount_off_basket", "amount": {"minor": 100, "currency": "USD"}},
                "conditions": [{"type": "min_subtotal", "amount": {"minor": 1000, "currency": "EUR"}}]}"#,
            "benefit.amount",
            "is in USD, but conditions[0].amount is in EUR",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "limits": {"per_customer": 0}}"#,
            "limits.per_customer",
            "at least 1",
        ),
        (
            r#"{"benefit": {"type": "free_shipping"}, "combination": {"type": "stackable", "group": " "}}"#,
            "combination.group",
            "1 to 64 characters",
        ),
    ];
    for (json, field, reason) in cases {
        let errors = check(json).expect_err(json);
        assert!(
            errors
                .iter()
                .any(|e| e.field == *field && e.reason.contains(reason)),
            "{json}: expected {field}: {reason}, got {errors:?}"
        );
    }
    // A good definition passes, and several problems are all reported at once.
    assert_eq!(
        check(
            r#"{"benefit": {"type": "amount_off_each", "target": {"type": "skus", "skus": ["A"]}, "amount": {"minor": 500, "currency": "EUR"}}}"#
        ),
        Ok(())
    );
    let many = check(
        r#"{"benefit": {"type": "buy_x_get_y", "buy": {"type": "skus", "skus": ["X"]}, "buy_quantity": 0, "get": {"type": "all"}, "get_quantity": 0, "percent_bp": 0}}"#,
    )
    .expect_err("four problems");
    assert_eq!(many.len(), 4, "{many:?}");
}
