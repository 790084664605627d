//! Pricing: the one place where a basket becomes money. The hub's basket actor and the edge nodes
//! call the same functions, so every channel computes the same total.
//!
//! # The rounding rule
//! - Amounts round **half away from zero** to the currency's minor unit ([`round_div`]).
//! - Prices are tax-inclusive. Tax is computed **per rate on the summed lines of that rate**
//!   (after discounts): `tax = round(gross × rate / (1 + rate))`, never per line.
//! - A basket-level discount is spread over the lines in proportion to their totals by the
//!   **largest remainder** method ([`allocate`]), so the line discounts add up to the discount
//!   exactly.
//! - Promotions ([`price_basket_with_promotions`]) give each line its own discount by the rules
//!   of [`crate::promotion`], with the same rounding; gifts are lines discounted in full.

use crate::basket::Basket;
use crate::catalog::{Product, Variant};
use crate::ids::{ProductId, Sku};
use crate::money::{Currency, Money, MoneyError};
use crate::promotion::{
    evaluate_with, PromoLine, PromotionContext, PromotionOutcome, PromotionSet, PromotionSummary,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `numerator / denominator` rounded half away from zero. `denominator` must not be zero.
pub fn round_div(numerator: i128, denominator: i128) -> i128 {
    let (n, d) = if denominator < 0 {
        (-numerator, -denominator)
    } else {
        (numerator, denominator)
    };
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d {
        q + n.signum()
    } else {
        q
    }
}

/// Splits `total` over `weights` in proportion, by largest remainder: the parts add up to
/// `total` exactly and each differs from its exact share by less than one unit. Zero or negative
/// weights get nothing; if no weight is positive, everything goes to the first part.
pub fn allocate(total: i64, weights: &[i64]) -> Vec<i64> {
    let mut parts = vec![0i64; weights.len()];
    if weights.is_empty() {
        return parts;
    }
    let sum: i128 = weights
        .iter()
        .filter(|w| **w > 0)
        .map(|w| i128::from(*w))
        .sum();
    if sum == 0 {
        parts[0] = total;
        return parts;
    }
    let t = i128::from(total);
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let w = i128::from((*w).max(0));
        let exact = t * w;
        let floor = exact.div_euclid(sum);
        parts[i] = floor as i64;
        given += floor;
        if w > 0 {
            remainders.push((exact.rem_euclid(sum), i));
        }
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = t - given;
    for (_, i) in remainders.iter().cycle() {
        if left <= 0 {
            break;
        }
        parts[*i] += 1;
        left -= 1;
    }
    parts
}

/// The tax contained in a tax-inclusive `gross` amount at `rate_bp` basis points.
pub fn included_tax(gross: i64, rate_bp: u32) -> i64 {
    let rate = i128::from(rate_bp);
    round_div(i128::from(gross) * rate, 10_000 + rate) as i64
}

/// One priced basket line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: Sku,
    pub product_id: ProductId,
    pub product_slug: String,
    pub name: String,
    pub variant: String,
    pub image: String,
    pub quantity: u32,
    pub unit_price: Money,
    /// `unit_price × quantity`, before discount.
    pub line_total: Money,
    /// This line's discount: its promotions, or its share of a basket discount.
    pub discount: Money,
    pub tax_rate_bp: u32,
}

/// Tax of one rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    pub rate_bp: u32,
    /// Gross amount (tax included) at this rate, after discount.
    pub gross: Money,
    pub tax: Money,
}

/// A basket with its prices, as every channel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedBasket {
    pub currency: Currency,
    pub lines: Vec<PricedLine>,
    /// SKUs in the basket that are no longer sold; shown, not charged.
    pub unavailable: Vec<Sku>,
    pub item_count: u64,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    /// Tax included in the total, per rate.
    pub taxes: Vec<TaxLine>,
    /// What promotions did (empty when priced without them).
    #[serde(default)]
    pub promotions: PromotionSummary,
}

/// Why a basket could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("discount {discount} exceeds the basket subtotal {subtotal}")]
    DiscountTooLarge { discount: Money, subtotal: Money },
    #[error("discount {discount} on {sku} exceeds that line's total {line_total}")]
    LineDiscountTooLarge {
        sku: Sku,
        discount: Money,
        line_total: Money,
    },
    #[error("a discount for {0}, which is not in the basket")]
    DiscountForAbsentSku(Sku),
}

/// Prices a basket from the current catalog: `lookup` gives the product for a SKU (or `None` if
/// the SKU is no longer sold); `discount` is a basket-level discount (zero for none).
pub fn price_basket<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    discount: Money,
) -> Result<PricedBasket, PricingError> {
    let currency = basket.currency;
    let (shelf, unavailable) = shelf_lines(basket, &lookup)?;
    let mut lines: Vec<PricedLine> = shelf.into_iter().map(|(line, _)| line).collect();
    let subtotal = Money::sum(currency, lines.iter().map(|l| l.line_total))?;
    if discount.minor > subtotal.minor {
        return Err(PricingError::DiscountTooLarge { discount, subtotal });
    }
    subtotal.checked_sub(discount)?; // currency check
    let weights: Vec<i64> = lines.iter().map(|l| l.line_total.minor).collect();
    for (line, share) in lines.iter_mut().zip(allocate(discount.minor, &weights)) {
        line.discount = Money::new(share, currency);
    }
    totals(currency, lines, unavailable, PromotionSummary::default())
}

/// Prices a basket like [`price_basket`], with the promotions of `promotions` instead of a
/// basket-level discount: each line carries the discount the engine gives its SKU, each gift is
/// a line of its own whose discount is its full price, and [`PricedBasket::promotions`] says
/// what applied, what did not and why. Gifts are priced from the catalog (`lookup`); a gift no
/// longer sold does not apply. `ctx.currency` must be the basket's.
pub fn price_basket_with_promotions<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    promotions: &PromotionSet,
    ctx: &PromotionContext,
) -> Result<PricedBasket, PricingError> {
    let currency = basket.currency;
    if ctx.currency != currency {
        return Err(MoneyError::CurrencyMismatch(currency, ctx.currency).into());
    }
    let (shelf, unavailable) = shelf_lines(basket, &lookup)?;
    let outcome = evaluate_lines(&shelf, &lookup, promotions, ctx);
    let mut lines: Vec<PricedLine> = shelf.into_iter().map(|(line, _)| line).collect();
    for (sku, discount) in &outcome.line_discounts {
        let at: Vec<usize> = (0..lines.len()).filter(|i| &lines[*i].sku == sku).collect();
        let weights: Vec<i64> = at.iter().map(|i| lines[*i].line_total.minor).collect();
        for (i, share) in at.into_iter().zip(allocate(discount.minor, &weights)) {
            lines[i].discount = Money::new(share, currency);
        }
    }
    for gift in &outcome.gifts {
        let found = lookup(&gift.sku).and_then(|p| p.variant(&gift.sku).map(|v| (p, v)));
        if let Some((product, variant)) = found.filter(|(_, v)| v.price.currency == currency) {
            let mut line = priced_line(product, variant, gift.quantity)?;
            line.discount = line.line_total;
            lines.push(line);
        }
    }
    let mut priced = totals(currency, lines, unavailable, outcome.summary())?;
    priced
        .taxes
        .retain(|t| t.gross.minor != 0 || t.tax.minor != 0);
    Ok(priced)
}

/// The promotion engine's outcome for a basket at shelf prices, gifts priced from the catalog:
/// what [`price_basket_with_promotions`] applies, for callers that price a checkout
/// ([`crate::checkout::price_checkout_with_line_discounts`]).
pub fn evaluate_basket<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    promotions: &PromotionSet,
    ctx: &PromotionContext,
) -> Result<PromotionOutcome, PricingError> {
    let (shelf, _) = shelf_lines(basket, &lookup)?;
    Ok(evaluate_lines(&shelf, &lookup, promotions, ctx))
}

fn evaluate_lines<'a>(
    shelf: &[ShelfLine<'a>],
    lookup: &impl Fn(&Sku) -> Option<&'a Product>,
    promotions: &PromotionSet,
    ctx: &PromotionContext,
) -> PromotionOutcome {
    let promo_lines: Vec<PromoLine> = shelf
        .iter()
        .map(|(line, product)| PromoLine {
            sku: line.sku.clone(),
            category: product.category.clone(),
            brand: product.brand.clone(),
            unit_price: line.unit_price,
            quantity: line.quantity,
        })
        .collect();
    let gift_price = |sku: &Sku| lookup(sku).and_then(|p| p.variant(sku)).map(|v| v.price);
    evaluate_with(&promo_lines, promotions, ctx, &gift_price)
}

/// A line at its shelf price, with its product.
type ShelfLine<'a> = (PricedLine, &'a Product);

/// The basket's lines at shelf prices with their products, and the SKUs no longer sold (or
/// not in the basket's currency).
fn shelf_lines<'a>(
    basket: &Basket,
    lookup: &impl Fn(&Sku) -> Option<&'a Product>,
) -> Result<(Vec<ShelfLine<'a>>, Vec<Sku>), PricingError> {
    let mut lines = Vec::with_capacity(basket.lines.len());
    let mut unavailable = Vec::new();
    for line in &basket.lines {
        let found = lookup(&line.sku).and_then(|p| p.variant(&line.sku).map(|v| (p, v)));
        match found {
            Some((product, variant)) if variant.price.currency == basket.currency => {
                lines.push((priced_line(product, variant, line.quantity)?, product));
            }
            _ => unavailable.push(line.sku.clone()),
        }
    }
    Ok((lines, unavailable))
}

pub(crate) fn priced_line(
    product: &Product,
    variant: &Variant,
    quantity: u32,
) -> Result<PricedLine, PricingError> {
    Ok(PricedLine {
        sku: variant.sku.clone(),
        product_id: product.id,
        product_slug: product.slug.clone(),
        name: product.name.clone(),
        variant: variant.title.clone(),
        image: product.image.clone(),
        quantity,
        unit_price: variant.price,
        line_total: variant.price.checked_mul(i64::from(quantity))?,
        discount: Money::zero(variant.price.currency),
        tax_rate_bp: product.tax_rate_bp,
    })
}

/// Subtotal, discount (the sum of the line discounts), total and tax per rate of priced lines.
fn totals(
    currency: Currency,
    lines: Vec<PricedLine>,
    unavailable: Vec<Sku>,
    promotions: PromotionSummary,
) -> Result<PricedBasket, PricingError> {
    let subtotal = Money::sum(currency, lines.iter().map(|l| l.line_total))?;
    let discount = Money::sum(currency, lines.iter().map(|l| l.discount))?;
    let mut by_rate: BTreeMap<u32, i64> = BTreeMap::new();
    for line in &lines {
        let net = line.line_total.checked_sub(line.discount)?;
        let slot = by_rate.entry(line.tax_rate_bp).or_default();
        *slot = slot.checked_add(net.minor).ok_or(MoneyError::Overflow)?;
    }
    let taxes = by_rate
        .into_iter()
        .map(|(rate_bp, gross)| TaxLine {
            rate_bp,
            gross: Money::new(gross, currency),
            tax: Money::new(included_tax(gross, rate_bp), currency),
        })
        .collect();
    Ok(PricedBasket {
        currency,
        item_count: lines.iter().map(|l| u64::from(l.quantity)).sum(),
        total: subtotal.checked_sub(discount)?,
        subtotal,
        discount,
        lines,
        unavailable,
        taxes,
        promotions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basket::BasketOwner;
    use crate::catalog::{CategoryId, Variant};
    use crate::ids::BasketId;
    use proptest::prelude::*;
    use time::OffsetDateTime;

    #[test]
    fn rounding_table() {
        // (numerator, denominator, expected): half away from zero.
        let cases = [
            (5, 2, 3),
            (-5, 2, -3),
            (4, 2, 2),
            (7, 3, 2),
            (8, 3, 3),
            (-8, 3, -3),
            (1, 2, 1),
            (-1, 2, -1),
            (1, 3, 0),
            (0, 5, 0),
            (5, -2, -3),
        ];
        for (n, d, want) in cases {
            assert_eq!(round_div(n, d), want, "{n}/{d}");
        }
    }

    #[test]
    fn tax_table() {
        // (gross, rate_bp, tax): 19 % of 119.00 inclusive is 19.00; 7 % of 1.07 is 0.07.
        let cases = [
            (11900, 1900, 1900),
            (107, 700, 7),
            (100, 1900, 16),
            (0, 1900, 0),
            (999, 2000, 167),
            (-11900, 1900, -1900),
        ];
        for (gross, rate, tax) in cases {
            assert_eq!(included_tax(gross, rate), tax, "{gross} at {rate}");
        }
    }

    #[test]
    fn allocation_table() {
        assert_eq!(allocate(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(allocate(10, &[500, 300, 200]), vec![5, 3, 2]);
        assert_eq!(allocate(1, &[1, 1]), vec![1, 0]);
        assert_eq!(allocate(7, &[0, 0]), vec![7, 0]);
        assert_eq!(allocate(5, &[]), Vec::<i64>::new());
    }

    fn product(sku: &str, price: i64, rate: u32) -> Product {
        Product {
            id: ProductId::new(),
            slug: sku.to_lowercase(),
            name: format!("Product {sku}"),
            brand: "Brand".into(),
            description: String::new(),
            category: CategoryId("c".into()),
            tax_rate_bp: rate,
            tax_class: crate::catalog::STANDARD_TAX_CLASS.into(),
            image: String::new(),
            variants: vec![Variant {
                sku: Sku::parse(sku).expect("valid sku"),
                title: "Default".into(),
                price: Money::new(price, Currency::EUR),
                compare_at: None,
                barcode: None,
                weight_grams: 0,
            }],
            attributes: Default::default(),
        }
    }

    #[test]
    fn tax_is_per_rate_on_summed_lines() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let products = [
            product("A", 105, 700),
            product("B", 105, 700),
            product("C", 1190, 1900),
        ];
        let mut b = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
        for p in &products {
            b.add(p.variants[0].sku.clone(), 1, 10, now).expect("adds");
        }
        let priced = price_basket(
            &b,
            |s| products.iter().find(|p| p.variant(s).is_some()),
            Money::zero(Currency::EUR),
        )
        .expect("prices");
        // Per line 105 at 7 % would be 6.87 → 7 each (14); on the sum 210 it is 13.74 → 14.
        assert_eq!(priced.taxes[0].tax.minor, included_tax(210, 700));
        assert_eq!(priced.taxes[1].tax.minor, 190);
        assert_eq!(priced.total.minor, 1400);
    }

    fn promotion(id: &str, json: &str) -> crate::promotion::Promotion {
        crate::promotion::Promotion {
            id: crate::promotion::PromotionId::parse(id).expect("valid id"),
            name: id.to_lowercase(),
            spec: crate::promotion::PromotionSpec::from_json(json).expect("valid definition"),
            created_seq: 1,
        }
    }

    #[test]
    fn promotions_go_on_their_lines_and_gifts_are_free_lines() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let mut products = [
            product("A", 1000, 1900),
            product("B", 500, 700),
            product("G", 999, 1900),
        ];
        products[1].category = CategoryId("tea".into());
        let mut b = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
        b.add(Sku::parse("B").expect("valid sku"), 1, 10, now)
            .expect("adds");
        b.add(Sku::parse("A").expect("valid sku"), 2, 10, now)
            .expect("adds");
        let set = PromotionSet::new(vec![
            promotion(
                "TEA",
                r#"{"benefit": {"type": "percent_off", "target": {"type": "categories", "categories": ["tea"]}, "percent_bp": 2000}}"#,
            ),
            promotion(
                "GIFT",
                r#"{"combination": {"type": "stackable", "group": "gifts"},
                    "benefit": {"type": "free_gift", "sku": "G", "quantity": 1}}"#,
            ),
            promotion(
                "POS",
                r#"{"combination": {"type": "stackable", "group": "pos"},
                    "conditions": [{"type": "channel", "any_of": ["pos"]}],
                    "benefit": {"type": "free_shipping"}}"#,
            ),
        ]);
        let ctx = PromotionContext::new(Currency::EUR, crate::channel::Channel::Web, now);
        let lookup = |s: &Sku| products.iter().find(|p| p.variant(s).is_some());
        let priced = price_basket_with_promotions(&b, lookup, &set, &ctx).expect("prices");
        let lines: Vec<(&str, u32, i64, i64)> = priced
            .lines
            .iter()
            .map(|l| {
                (
                    l.sku.as_str(),
                    l.quantity,
                    l.line_total.minor,
                    l.discount.minor,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [("B", 1, 500, 100), ("A", 2, 2000, 0), ("G", 1, 999, 999)]
        );
        assert_eq!(
            (
                priced.subtotal.minor,
                priced.discount.minor,
                priced.total.minor
            ),
            (3499, 1099, 2400)
        );
        assert_eq!(priced.item_count, 4);
        // The tea discount lowers only the 7 % base; the gift adds nothing at 19 %.
        let taxes: Vec<(u32, i64, i64)> = priced
            .taxes
            .iter()
            .map(|t| (t.rate_bp, t.gross.minor, t.tax.minor))
            .collect();
        assert_eq!(
            taxes,
            [
                (700, 400, included_tax(400, 700)),
                (1900, 2000, included_tax(2000, 1900))
            ]
        );
        let applied: Vec<&str> = priced
            .promotions
            .applied
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(applied, ["GIFT", "TEA"]);
        assert_eq!(priced.promotions.not_applied.len(), 1);
        assert_eq!(
            priced.promotions.not_applied[0].reason,
            "not on channel web"
        );
        assert!(!priced.promotions.free_shipping);
        assert_eq!(priced.promotions.gifts.len(), 1);

        // The outcome for a checkout is the same one.
        let outcome = evaluate_basket(&b, lookup, &set, &ctx).expect("evaluates");
        assert_eq!(outcome.summary(), priced.promotions);
        // Without promotions it is price_basket with no discount.
        let plain = price_basket_with_promotions(&b, lookup, &PromotionSet::default(), &ctx)
            .expect("prices");
        let reference = price_basket(&b, lookup, Money::zero(Currency::EUR)).expect("prices");
        assert_eq!(plain, reference);
        // A context in another currency is refused.
        let yen = PromotionContext::new(Currency::JPY, crate::channel::Channel::Web, now);
        assert_eq!(
            price_basket_with_promotions(&b, lookup, &set, &yen),
            Err(PricingError::Money(MoneyError::CurrencyMismatch(
                Currency::EUR,
                Currency::JPY
            )))
        );
    }

    proptest! {
        #[test]
        fn allocation_is_exact_and_fair(total in -1_000_000i64..1_000_000, weights in proptest::collection::vec(0i64..100_000, 1..20)) {
            let parts = allocate(total, &weights);
            prop_assert_eq!(parts.iter().sum::<i64>(), total);
            let sum: i64 = weights.iter().sum();
            if sum > 0 {
                for (p, w) in parts.iter().zip(&weights) {
                    let exact = total as f64 * *w as f64 / sum as f64;
                    prop_assert!((*p as f64 - exact).abs() < 1.0 + 1e-9, "part {} exact {}", p, exact);
                }
            }
        }

        #[test]
        fn round_div_is_within_half(n in -1_000_000_000i128..1_000_000_000, d in 1i128..100_000) {
            let r = round_div(n, d);
            prop_assert!((r * d - n).abs() * 2 <= d);
            prop_assert_eq!(round_div(-n, d), -r, "symmetric around zero");
        }

        #[test]
        fn priced_basket_adds_up(qs in proptest::collection::vec((1u32..50, 1i64..100_000, prop_oneof![Just(0u32), Just(700u32), Just(1900u32)]), 1..8), discount_share in 0u32..=100) {
            let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
            let products: Vec<Product> = qs.iter().enumerate().map(|(i, (_, price, rate))| product(&format!("S{i}"), *price, *rate)).collect();
            let mut b = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
            for (p, (q, _, _)) in products.iter().zip(&qs) {
                b.add(p.variants[0].sku.clone(), i64::from(*q), 1000, now).expect("adds");
            }
            let subtotal: i64 = products.iter().zip(&qs).map(|(p, (q, _, _))| p.variants[0].price.minor * i64::from(*q)).sum();
            let discount = Money::new(subtotal * i64::from(discount_share) / 100, Currency::EUR);
            let priced = price_basket(&b, |s| products.iter().find(|p| p.variant(s).is_some()), discount).expect("prices");
            prop_assert_eq!(priced.subtotal.minor, subtotal);
            prop_assert_eq!(priced.lines.iter().map(|l| l.discount.minor).sum::<i64>(), discount.minor);
            prop_assert_eq!(priced.total.minor, subtotal - discount.minor);
            prop_assert_eq!(priced.taxes.iter().map(|t| t.gross.minor).sum::<i64>(), priced.total.minor);
        }
    }
}
