//! The promotion engine's data-driven cases: every `tests/data/promotions/*.json` file holds a
//! default context and a list of cases (lines, promotions, context, what must come out). Each
//! case is also checked against the engine's invariants: it is priced again with its lines in
//! reverse order (same outcome), the per-SKU discounts add up to the discount, none exceeds its
//! line, and every promotion of the case passes `validate`.

use protocol::promotion::{
    evaluate, validate, PromoLine, Promotion, PromotionContext, PromotionOutcome, PromotionSet,
};
use protocol::{CategoryId, Currency, Money, Sku};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// Merged under each case's `context`.
    context: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// `[sku, category, brand, unit price (decimal), quantity]`, in the context's currency.
    lines: Vec<(String, String, String, String, u32)>,
    promotions: Vec<Promotion>,
    #[serde(default)]
    context: Value,
    /// Further SKUs the catalog sells, with their price (for `validate`).
    #[serde(default)]
    catalog: BTreeMap<String, String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// SKU → discount (decimal); SKUs left out have none.
    #[serde(default)]
    line_discounts: BTreeMap<String, String>,
    discount: String,
    /// Ids, in application order.
    applied: Vec<String>,
    /// Id → a substring of its reason.
    #[serde(default)]
    not_applied: BTreeMap<String, String>,
    /// Ids that must be neither applied nor explained (about products not in the basket).
    #[serde(default)]
    absent: Vec<String>,
    /// Id → applications.
    #[serde(default)]
    times: BTreeMap<String, u32>,
    #[serde(default)]
    free_shipping: bool,
    /// `[sku, quantity, promotion]`.
    #[serde(default)]
    gifts: Vec<(String, u32, String)>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/promotions")
}

fn merged(base: &Value, over: &Value) -> Value {
    let mut out = base.clone();
    if let (Some(target), Some(extra)) = (out.as_object_mut(), over.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    out
}

fn money(text: &str, currency: Currency, what: &str) -> Money {
    Money::parse_decimal(text, currency)
        .unwrap_or_else(|e| panic!("{what}: '{text}' is not an amount in {currency}: {e}"))
}

fn sku(text: &str) -> Sku {
    Sku::parse(text).expect("a valid SKU in the case file")
}

fn lines_of(case: &Case, currency: Currency) -> Vec<PromoLine> {
    case.lines
        .iter()
        .map(|(s, category, brand, price, quantity)| PromoLine {
            sku: sku(s),
            category: CategoryId(category.clone()),
            brand: brand.clone(),
            unit_price: money(price, currency, &case.name),
            quantity: *quantity,
        })
        .collect()
}

/// Checks the case's promotions are definitions `validate` accepts, with the lines, the
/// case's catalog and the gift prices as the catalog.
fn check_valid(case: &Case, lines: &[PromoLine], ctx: &PromotionContext) {
    let mut prices: BTreeMap<Sku, Money> = lines
        .iter()
        .map(|l| (l.sku.clone(), l.unit_price))
        .collect();
    prices.extend(ctx.gift_prices.clone());
    for (s, price) in &case.catalog {
        prices.insert(sku(s), money(price, ctx.currency, &case.name));
    }
    for p in &case.promotions {
        if let Err(errors) = validate(&p.spec, |s| prices.get(s).copied()) {
            panic!("{}: promotion {} is refused: {errors:?}", case.name, p.id);
        }
    }
}

fn check_invariants(case: &Case, lines: &[PromoLine], outcome: &PromotionOutcome) {
    let sum: i64 = outcome.line_discounts.values().map(|m| m.minor).sum();
    assert_eq!(
        sum, outcome.discount.minor,
        "{}: line discounts add up",
        case.name
    );
    for (s, d) in &outcome.line_discounts {
        let total: i64 = lines
            .iter()
            .filter(|l| &l.sku == s)
            .map(|l| l.unit_price.minor * i64::from(l.quantity))
            .sum();
        assert!(
            d.minor > 0 && d.minor <= total,
            "{}: {s} discounted {d} of {total}",
            case.name
        );
    }
}

fn check_expected(case: &Case, outcome: &PromotionOutcome, currency: Currency) {
    let name = &case.name;
    let e = &case.expect;
    let want: BTreeMap<Sku, Money> = e
        .line_discounts
        .iter()
        .map(|(s, d)| (sku(s), money(d, currency, name)))
        .collect();
    assert_eq!(outcome.line_discounts, want, "{name}: line discounts");
    assert_eq!(
        outcome.discount,
        money(&e.discount, currency, name),
        "{name}: discount"
    );
    let applied: Vec<&str> = outcome.applied.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        applied, e.applied,
        "{name}: applied ({:?})",
        outcome.not_applied
    );
    for (id, part) in &e.not_applied {
        let found = outcome.not_applied.iter().find(|n| n.id.as_str() == id);
        let Some(found) = found else {
            panic!(
                "{name}: {id} is not among the not applied: {:?}",
                outcome.not_applied
            );
        };
        assert!(
            found.reason.contains(part.as_str()),
            "{name}: {id}'s reason '{}' does not say '{part}'",
            found.reason
        );
    }
    for id in &e.absent {
        let listed = outcome.applied.iter().any(|a| a.id.as_str() == id)
            || outcome.not_applied.iter().any(|n| n.id.as_str() == id);
        assert!(!listed, "{name}: {id} should not be listed: {outcome:?}");
    }
    for (id, times) in &e.times {
        let a = outcome.applied.iter().find(|a| a.id.as_str() == id);
        assert_eq!(a.map(|a| a.times), Some(*times), "{name}: times of {id}");
    }
    assert_eq!(
        outcome.free_shipping, e.free_shipping,
        "{name}: free shipping"
    );
    let gifts: Vec<(String, u32, String)> = outcome
        .gifts
        .iter()
        .map(|g| (g.sku.to_string(), g.quantity, g.promotion.to_string()))
        .collect();
    assert_eq!(gifts, e.gifts, "{name}: gifts");
    // Every promotion about the basket is explained one way or the other, once.
    let explained = outcome.applied.len() + outcome.not_applied.len();
    assert_eq!(
        explained,
        case.promotions.len() - e.absent.len(),
        "{name}: every promotion about the basket is explained once: {outcome:?}"
    );
}

fn run_case(case: &Case, base: &Value) {
    let ctx: PromotionContext = serde_json::from_value(merged(base, &case.context))
        .unwrap_or_else(|e| panic!("{}: bad context: {e}", case.name));
    let lines = lines_of(case, ctx.currency);
    check_valid(case, &lines, &ctx);
    let set = PromotionSet::new(case.promotions.clone());
    let outcome = evaluate(&lines, &set, &ctx);
    check_invariants(case, &lines, &outcome);
    check_expected(case, &outcome, ctx.currency);
    let mut reversed = lines.clone();
    reversed.reverse();
    let mut shuffled_promotions = case.promotions.clone();
    shuffled_promotions.reverse();
    let again = evaluate(&reversed, &PromotionSet::new(shuffled_promotions), &ctx);
    assert_eq!(
        again, outcome,
        "{}: depends on the order of lines or promotions",
        case.name
    );
}

#[test]
fn promotion_cases() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/promotions exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut count = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable case file");
        let file: CaseFile =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.cases {
            run_case(case, &file.context);
            count += 1;
        }
    }
    assert!(count >= 40, "only {count} cases in {} files", files.len());
}
