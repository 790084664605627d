//! The priced checkout: items for the destination's market, the chosen shipping, tax per rate
//! and the total.

use super::config::{CheckoutConfig, Market, ShippingZone};
use super::shipping::{zone_options, ShippingOption};
use super::CheckoutError;
use crate::basket::Basket;
use crate::catalog::{Product, Variant};
use crate::ids::Sku;
use crate::money::{Currency, Money, MoneyError};
use crate::pricing::{
    allocate, included_tax, price_basket, priced_line, round_div, PricedLine, PricingError, TaxLine,
};
use crate::promotion::PromotionOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole priced checkout: what the API returns, the page shows, the order stores and the
/// payment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub currency: Currency,
    /// ISO 3166-1 alpha-2 of the destination, upper case.
    pub country: String,
    /// Whether the line prices, subtotal and shipping include tax (else tax is added on top).
    pub prices_include_tax: bool,
    /// The lines as the market shows them; each line's `tax_rate_bp` is the destination's rate
    /// for the product's tax class.
    pub lines: Vec<PricedLine>,
    pub item_count: u64,
    /// Sum of the line totals as shown: gross where prices include tax, net where they do not.
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: ShippingOption,
    /// Tax per rate, items after discount and shipping together; `gross` is always the amount
    /// with tax (net + tax where prices exclude tax). Rates with nothing to tax are left out.
    pub taxes: Vec<TaxLine>,
    pub tax_total: Money,
    /// What the shopper pays: subtotal − discount + shipping, plus `tax_total` where prices
    /// exclude tax.
    pub total: Money,
    /// Shipping weight of the items, packaging included.
    pub weight_grams: u64,
}

/// Prices `basket` for delivery to `country` by `shipping_method` (an id of
/// [`CheckoutConfig::shipping_options`]), with a basket-level `discount` (zero for none).
/// `lookup` gives the product of a SKU, or `None` if it is no longer sold.
pub fn price_checkout<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    discount: Money,
    country: &str,
    shipping_method: &str,
    config: &CheckoutConfig,
) -> Result<Breakdown, CheckoutError> {
    let (country, market, zone) = config.destination(country)?;
    let goods = price_goods(basket, lookup, discount, market)?;
    finish(goods, (country, market, zone), shipping_method, false)
}

/// Discounts from the promotion engine, for [`price_checkout_with_line_discounts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscounts {
    /// Discount per SKU of the basket, on its shelf price (tax included, as the catalog and
    /// [`crate::promotion`] see it); at most that SKU's line total.
    pub by_sku: BTreeMap<Sku, Money>,
    /// The chosen shipping method costs nothing.
    pub free_shipping: bool,
    /// Gift lines (SKU, quantity): added to the items, discounted in full.
    pub gifts: Vec<(Sku, u32)>,
}

impl From<&PromotionOutcome> for LineDiscounts {
    fn from(outcome: &PromotionOutcome) -> LineDiscounts {
        LineDiscounts {
            by_sku: outcome.line_discounts.clone(),
            free_shipping: outcome.free_shipping,
            gifts: outcome
                .gifts
                .iter()
                .map(|g| (g.sku.clone(), g.quantity))
                .collect(),
        }
    }
}

/// [`price_checkout`] with a discount per SKU instead of one spread over the basket, so the
/// tax of each rate is computed on the lines as they are really discounted; with gift lines,
/// and free shipping when `discounts.free_shipping`. Where the market's prices exclude tax, a
/// SKU's discount (given on its shelf price) is scaled to the line's net total:
/// `round(discount × net / shelf)`. A discount for a SKU not in the basket, negative, in
/// another currency or above its line total is refused.
pub fn price_checkout_with_line_discounts<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    discounts: &LineDiscounts,
    country: &str,
    shipping_method: &str,
    config: &CheckoutConfig,
) -> Result<Breakdown, CheckoutError> {
    let (country, market, zone) = config.destination(country)?;
    let currency = basket.currency;
    let mut goods = price_goods(basket, &lookup, Money::zero(currency), market)?;
    for (sku, discount) in &discounts.by_sku {
        discount_sku(&mut goods.lines, sku, *discount, &lookup)?;
    }
    for (sku, quantity) in &discounts.gifts {
        let found = lookup(sku).and_then(|p| p.variant(sku).map(|v| (p, v)));
        let Some((product, variant)) = found.filter(|(_, v)| v.price.currency == currency) else {
            return Err(CheckoutError::Unavailable(vec![sku.clone()]));
        };
        let shelf = priced_line(product, variant, *quantity)?;
        let (mut line, grams) = for_market(shelf, product, variant, market)?;
        line.discount = line.line_total;
        goods.weight_grams += grams;
        goods.lines.push(line);
    }
    goods.subtotal = Money::sum(currency, goods.lines.iter().map(|l| l.line_total))?;
    goods.discount = Money::sum(currency, goods.lines.iter().map(|l| l.discount))?;
    finish(
        goods,
        (country, market, zone),
        shipping_method,
        discounts.free_shipping,
    )
}

/// Puts `discount` (on shelf prices) on the lines of `sku`, scaled to their market totals.
fn discount_sku<'a>(
    lines: &mut [PricedLine],
    sku: &Sku,
    discount: Money,
    lookup: &impl Fn(&Sku) -> Option<&'a Product>,
) -> Result<(), CheckoutError> {
    let currency = discount.currency;
    if discount.minor < 0 {
        return Err(CheckoutError::NegativeDiscount(discount));
    }
    let at: Vec<usize> = (0..lines.len()).filter(|i| &lines[*i].sku == sku).collect();
    let Some(&first) = at.first() else {
        return Err(PricingError::DiscountForAbsentSku(sku.clone()).into());
    };
    Money::zero(lines[first].line_total.currency).checked_add(discount)?; // the currency
    let shelf_price = lookup(sku)
        .and_then(|p| p.variant(sku))
        .map(|v| v.price)
        .ok_or_else(|| CheckoutError::Unavailable(vec![sku.clone()]))?;
    let units: i64 = at.iter().map(|i| i64::from(lines[*i].quantity)).sum();
    let shelf_total = shelf_price.checked_mul(units)?;
    if discount.minor > shelf_total.minor {
        return Err(PricingError::LineDiscountTooLarge {
            sku: sku.clone(),
            discount,
            line_total: shelf_total,
        }
        .into());
    }
    let market_total: i64 = at.iter().map(|i| lines[*i].line_total.minor).sum();
    let scaled = if shelf_total.minor == 0 {
        0
    } else {
        round_div(
            i128::from(discount.minor) * i128::from(market_total),
            i128::from(shelf_total.minor),
        )
    };
    let scaled = i64::try_from(scaled)
        .map_err(|_| MoneyError::Overflow)?
        .min(market_total);
    let weights: Vec<i64> = at.iter().map(|i| lines[*i].line_total.minor).collect();
    for (i, share) in at.into_iter().zip(allocate(scaled, &weights)) {
        lines[i].discount = Money::new(share, currency);
    }
    Ok(())
}

/// The breakdown of priced goods with the chosen shipping (free if `free_shipping`).
fn finish(
    goods: Goods,
    (country, market, zone): (String, &Market, &ShippingZone),
    shipping_method: &str,
    free_shipping: bool,
) -> Result<Breakdown, CheckoutError> {
    let (mut shipping, method) = zone_options(zone, &goods)?
        .into_iter()
        .find(|(option, _)| option.id == shipping_method)
        .ok_or_else(|| CheckoutError::UnknownShippingMethod(shipping_method.to_string()))?;
    if free_shipping {
        shipping.price = Money::zero(shipping.price.currency);
    }
    let shipping_rate = rate_of(market, &method.tax_class)?;
    let taxes = taxes_per_rate(
        &goods.lines,
        (shipping_rate, shipping.price),
        market.prices_include_tax,
    )?;
    let currency = goods.subtotal.currency;
    let tax_total = Money::sum(currency, taxes.iter().map(|t| t.tax))?;
    let mut total = goods.value()?.checked_add(shipping.price)?;
    if !market.prices_include_tax {
        total = total.checked_add(tax_total)?;
    }
    Ok(Breakdown {
        currency,
        country,
        prices_include_tax: market.prices_include_tax,
        item_count: goods.lines.iter().map(|l| u64::from(l.quantity)).sum(),
        lines: goods.lines,
        subtotal: goods.subtotal,
        discount: goods.discount,
        shipping,
        taxes,
        tax_total,
        total,
        weight_grams: goods.weight_grams,
    })
}

/// The basket's items priced for one market, before shipping.
pub(super) struct Goods {
    pub lines: Vec<PricedLine>,
    pub subtotal: Money,
    pub discount: Money,
    pub weight_grams: u64,
}

impl Goods {
    /// The subtotal after discount: what price bands and free-shipping thresholds compare.
    pub fn value(&self) -> Result<Money, MoneyError> {
        self.subtotal.checked_sub(self.discount)
    }
}

/// Prices the items for `market`: shelf prices from [`price_basket`], made net where the market
/// quotes prices without tax, at the market's rate of each product's tax class, with the
/// discount spread over the lines.
pub(super) fn price_goods<'a>(
    basket: &Basket,
    lookup: impl Fn(&Sku) -> Option<&'a Product>,
    discount: Money,
    market: &Market,
) -> Result<Goods, CheckoutError> {
    if basket.lines.is_empty() {
        return Err(CheckoutError::EmptyBasket);
    }
    if discount.minor < 0 {
        return Err(CheckoutError::NegativeDiscount(discount));
    }
    let currency = basket.currency;
    Money::zero(currency).checked_add(discount)?; // the discount's currency
    let shelf = price_basket(basket, &lookup, Money::zero(currency))?;
    if !shelf.unavailable.is_empty() {
        return Err(CheckoutError::Unavailable(shelf.unavailable));
    }
    let mut lines = Vec::with_capacity(shelf.lines.len());
    let mut weight_grams = 0u64;
    for line in shelf.lines {
        let found = lookup(&line.sku).and_then(|p| p.variant(&line.sku).map(|v| (p, v)));
        let Some((product, variant)) = found else {
            return Err(CheckoutError::Unavailable(vec![line.sku]));
        };
        let (line, grams) = for_market(line, product, variant, market)?;
        weight_grams += grams;
        lines.push(line);
    }
    let subtotal = Money::sum(currency, lines.iter().map(|l| l.line_total))?;
    if discount.minor > subtotal.minor {
        return Err(PricingError::DiscountTooLarge { discount, subtotal }.into());
    }
    spread_discount(&mut lines, discount);
    Ok(Goods {
        lines,
        subtotal,
        discount,
        weight_grams,
    })
}

/// A shelf-priced line as `market` shows it (its rate; net where prices exclude tax), and its
/// shipping weight.
fn for_market(
    mut line: PricedLine,
    product: &Product,
    variant: &Variant,
    market: &Market,
) -> Result<(PricedLine, u64), CheckoutError> {
    line.tax_rate_bp = rate_of(market, &product.tax_class)?;
    if !market.prices_include_tax {
        line.unit_price = without_tax(line.unit_price, product.tax_rate_bp);
        line.line_total = line.unit_price.checked_mul(i64::from(line.quantity))?;
    }
    let grams = u64::from(variant.weight_grams) * u64::from(line.quantity);
    Ok((line, grams))
}

fn rate_of(market: &Market, tax_class: &str) -> Result<u32, CheckoutError> {
    market
        .rate(tax_class)
        .ok_or_else(|| CheckoutError::NoTaxRate {
            country: market.country.clone(),
            tax_class: tax_class.to_string(),
        })
}

/// A tax-inclusive price without the tax at `rate_bp`, rounded half away from zero.
fn without_tax(gross: Money, rate_bp: u32) -> Money {
    let net = round_div(
        i128::from(gross.minor) * 10_000,
        10_000 + i128::from(rate_bp),
    );
    // |net| ≤ |gross|, so it fits.
    Money::new(net as i64, gross.currency)
}

/// Spreads the discount by largest remainder over the lines taken in SKU order, so the shares
/// (and the tax) do not depend on the order the lines were added in.
fn spread_discount(lines: &mut [PricedLine], discount: Money) {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by(|a, b| lines[*a].sku.cmp(&lines[*b].sku));
    let weights: Vec<i64> = order.iter().map(|i| lines[*i].line_total.minor).collect();
    for (i, share) in order.into_iter().zip(allocate(discount.minor, &weights)) {
        lines[i].discount = Money::new(share, discount.currency);
    }
}

/// Tax per rate on the summed amounts of that rate: items after discount plus shipping.
fn taxes_per_rate(
    lines: &[PricedLine],
    (shipping_rate, shipping): (u32, Money),
    prices_include_tax: bool,
) -> Result<Vec<TaxLine>, CheckoutError> {
    let currency = shipping.currency;
    let mut by_rate: BTreeMap<u32, Money> = BTreeMap::new();
    by_rate.insert(shipping_rate, shipping);
    for line in lines {
        let amount = line.line_total.checked_sub(line.discount)?;
        let slot = by_rate
            .entry(line.tax_rate_bp)
            .or_insert(Money::zero(currency));
        *slot = slot.checked_add(amount)?;
    }
    let mut taxes = Vec::with_capacity(by_rate.len());
    for (rate_bp, amount) in by_rate.into_iter().filter(|(_, amount)| amount.minor != 0) {
        let line = if prices_include_tax {
            let tax = Money::new(included_tax(amount.minor, rate_bp), currency);
            TaxLine {
                rate_bp,
                gross: amount,
                tax,
            }
        } else {
            let tax = round_div(i128::from(amount.minor) * i128::from(rate_bp), 10_000);
            let tax = Money::new(
                i64::try_from(tax).map_err(|_| MoneyError::Overflow)?,
                currency,
            );
            TaxLine {
                rate_bp,
                gross: amount.checked_add(tax)?,
                tax,
            }
        };
        taxes.push(line);
    }
    Ok(taxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkout::test_support::{basket, eur, lookup, product};
    use proptest::prelude::*;

    /// What a tax case checks: (rate, gross, tax) per rate, the tax total and the total.
    struct Expected {
        taxes: &'static [(u32, i64, i64)],
        tax_total: i64,
        total: i64,
    }

    fn check(breakdown: &Breakdown, expected: &Expected, case: &str) {
        let taxes: Vec<(u32, i64, i64)> = breakdown
            .taxes
            .iter()
            .map(|t| (t.rate_bp, t.gross.minor, t.tax.minor))
            .collect();
        assert_eq!(taxes, expected.taxes, "{case}: taxes");
        assert_eq!(
            breakdown.tax_total.minor, expected.tax_total,
            "{case}: tax total"
        );
        assert_eq!(breakdown.total.minor, expected.total, "{case}: total");
    }

    #[test]
    fn tax_cases() {
        struct Case {
            name: &'static str,
            items: &'static [(&'static str, i64, &'static str, u32)],
            discount: i64,
            country: &'static str,
            method: &'static str,
            expected: Expected,
        }
        let cases = [
            Case {
                // 7 %: 8.98 → 0.5875 → 0.59; 19 %: 19.99 + 4.90 shipping = 24.89 → 3.974 → 3.97.
                name: "DE mixed 19/7 with shipping",
                items: &[("A", 1999, "standard", 1), ("B", 449, "reduced", 2)],
                discount: 0,
                country: "DE",
                method: "standard",
                expected: Expected {
                    taxes: &[(700, 898, 59), (1900, 2489, 397)],
                    tax_total: 456,
                    total: 3387,
                },
            },
            Case {
                // Net 10.00 each (11.90 less 19 %, 10.70 less 7 %); 7.25 % of 10.00 + 14.90
                // shipping = 24.90 is 1.80525 → 1.81; the reduced rate is 0 % in this market.
                name: "US excluding tax",
                items: &[("A", 1190, "standard", 1), ("B", 1070, "reduced", 1)],
                discount: 0,
                country: "us",
                method: "standard",
                expected: Expected {
                    taxes: &[(0, 1000, 0), (725, 2671, 181)],
                    tax_total: 181,
                    total: 2000 + 1490 + 181,
                },
            },
            Case {
                // 4.00 off 30.00 + 10.00 → 3.00 + 1.00; 19 %: 27.00 + 4.90 = 31.90 → 5.09;
                // 7 %: 9.00 → 0.59.
                name: "DE discount spread across rates",
                items: &[("A", 3000, "standard", 1), ("B", 1000, "reduced", 1)],
                discount: 400,
                country: "DE",
                method: "standard",
                expected: Expected {
                    taxes: &[(700, 900, 59), (1900, 3190, 509)],
                    tax_total: 568,
                    total: 4090,
                },
            },
            Case {
                name: "DE zero-rated item with express shipping at 19 %",
                items: &[("Z", 1500, "zero", 1)],
                discount: 0,
                country: "DE",
                method: "express",
                expected: Expected {
                    taxes: &[(0, 1500, 0), (1900, 990, 158)],
                    tax_total: 158,
                    total: 2490,
                },
            },
            Case {
                // Reduced and zero are both 0 % in the UK: one tax line. Shipping 14.90 at 20 %.
                name: "GB zero-rated food merges with zero class",
                items: &[("F", 500, "reduced", 1), ("Z", 700, "zero", 1)],
                discount: 0,
                country: "GB",
                method: "standard",
                expected: Expected {
                    taxes: &[(0, 1200, 0), (2000, 1490, 248)],
                    tax_total: 248,
                    total: 2690,
                },
            },
            Case {
                // Free shipping leaves no 19 % line; 60.00 at 7 % → 3.925 → 3.93.
                name: "DE free shipping, nothing at the shipping rate",
                items: &[("B", 6000, "reduced", 1)],
                discount: 0,
                country: "DE",
                method: "standard",
                expected: Expected {
                    taxes: &[(700, 6000, 393)],
                    tax_total: 393,
                    total: 6000,
                },
            },
        ];
        let config = CheckoutConfig::default();
        for case in cases {
            let products: Vec<Product> = case
                .items
                .iter()
                .map(|(sku, price, class, _)| product(sku, *price, class, 400))
                .collect();
            let quantities: Vec<u32> = case.items.iter().map(|i| i.3).collect();
            let breakdown = price_checkout(
                &basket(&products, &quantities),
                lookup(&products),
                eur(case.discount),
                case.country,
                case.method,
                &config,
            )
            .expect(case.name);
            check(&breakdown, &case.expected, case.name);
        }
    }

    #[test]
    fn the_breakdown_shows_market_prices_and_rates() {
        let products = [
            product("A", 1190, "standard", 250),
            product("B", 1070, "reduced", 500),
        ];
        let config = CheckoutConfig::default();
        let at = |country: &str| {
            price_checkout(
                &basket(&products, &[2, 1]),
                lookup(&products),
                eur(0),
                country,
                "standard",
                &config,
            )
            .expect(country)
        };
        let us = at("US");
        assert!(!us.prices_include_tax && us.country == "US");
        let shown: Vec<(i64, i64, u32)> = us
            .lines
            .iter()
            .map(|l| (l.unit_price.minor, l.line_total.minor, l.tax_rate_bp))
            .collect();
        assert_eq!(shown, [(1000, 2000, 725), (1000, 1000, 0)]);
        assert_eq!(
            (us.subtotal.minor, us.item_count, us.weight_grams),
            (3000, 3, 1000)
        );
        assert_eq!(us.shipping.price.minor, 1490);
        let fr = at("FR");
        let rates: Vec<u32> = fr.lines.iter().map(|l| l.tax_rate_bp).collect();
        assert_eq!((fr.subtotal.minor, rates), (3450, vec![2000, 550]));
        assert_eq!(fr.shipping.name, "Standard delivery");
    }

    #[test]
    fn refusals() {
        let config = CheckoutConfig::default();
        let products = [
            product("A", 1000, "standard", 100),
            product("L", 1000, "luxury", 100),
        ];
        let try_price = |quantities: &[u32], discount: i64, method: &str| {
            price_checkout(
                &basket(&products, quantities),
                lookup(&products),
                eur(discount),
                "DE",
                method,
                &config,
            )
        };
        assert_eq!(
            try_price(&[], 0, "standard"),
            Err(CheckoutError::EmptyBasket)
        );
        assert_eq!(
            try_price(&[1, 1], 0, "standard"),
            Err(CheckoutError::NoTaxRate {
                country: "DE".into(),
                tax_class: "luxury".into()
            })
        );
        assert_eq!(
            try_price(&[1], 1001, "standard"),
            Err(CheckoutError::Pricing(PricingError::DiscountTooLarge {
                discount: eur(1001),
                subtotal: eur(1000)
            }))
        );
        assert_eq!(
            try_price(&[1], -1, "standard"),
            Err(CheckoutError::NegativeDiscount(eur(-1)))
        );
        assert_eq!(
            try_price(&[1], 0, "drone"),
            Err(CheckoutError::UnknownShippingMethod("drone".into()))
        );
        let gone = price_checkout(
            &basket(&products, &[1]),
            |_| None,
            eur(0),
            "DE",
            "standard",
            &config,
        );
        assert_eq!(
            gone,
            Err(CheckoutError::Unavailable(vec![products[0].variants[0]
                .sku
                .clone()]))
        );
        let usd = price_checkout(
            &basket(&products, &[1]),
            lookup(&products),
            Money::new(100, Currency::USD),
            "DE",
            "standard",
            &config,
        );
        assert!(matches!(
            usd,
            Err(CheckoutError::Money(MoneyError::CurrencyMismatch(..)))
        ));
    }

    fn discounts(by_sku: &[(&str, i64)], free_shipping: bool) -> LineDiscounts {
        LineDiscounts {
            by_sku: by_sku
                .iter()
                .map(|(s, d)| (Sku::parse(s).expect("valid sku"), eur(*d)))
                .collect(),
            free_shipping,
            gifts: Vec::new(),
        }
    }

    #[test]
    fn line_discounts_stay_on_their_lines_so_tax_is_per_rate_on_what_was_discounted() {
        let config = CheckoutConfig::default();
        let products = [
            product("A", 3000, "standard", 100),
            product("B", 1000, "reduced", 100),
        ];
        let shelf = basket(&products, &[1, 1]);
        let price = |d: &LineDiscounts| {
            price_checkout_with_line_discounts(
                &shelf,
                lookup(&products),
                d,
                "DE",
                "standard",
                &config,
            )
            .expect("prices")
        };
        // 4.00 off B alone: 7 % on 6.00 → 0.39; 19 % on 30.00 + 4.90 shipping → 5.57.
        let b = price(&discounts(&[("B", 400)], false));
        let shares: Vec<i64> = b.lines.iter().map(|l| l.discount.minor).collect();
        assert_eq!(shares, [0, 400]);
        check(
            &b,
            &Expected {
                taxes: &[(700, 600, 39), (1900, 3490, 557)],
                tax_total: 596,
                total: 4090,
            },
            "B discounted",
        );
        // The same 4.00 as one basket discount is spread 3.00/1.00: other taxes.
        let spread = price_checkout(
            &shelf,
            lookup(&products),
            eur(400),
            "DE",
            "standard",
            &config,
        )
        .expect("prices");
        assert_ne!(spread.taxes, b.taxes);
        // Free shipping: no shipping, 19 % on 30.00 → 4.79.
        let free = price(&discounts(&[("B", 400)], true));
        assert_eq!(free.shipping.price, eur(0));
        check(
            &free,
            &Expected {
                taxes: &[(700, 600, 39), (1900, 3000, 479)],
                tax_total: 518,
                total: 3600,
            },
            "free shipping",
        );
        // No discounts at all: the same breakdown as price_checkout without a discount.
        let plain = price(&LineDiscounts::default());
        let reference =
            price_checkout(&shelf, lookup(&products), eur(0), "DE", "standard", &config)
                .expect("prices");
        assert_eq!(plain, reference);
    }

    #[test]
    fn line_discounts_are_scaled_to_net_prices_and_gifts_are_free_lines() {
        let config = CheckoutConfig::default();
        let products = [
            product("A", 1190, "standard", 250),
            product("G", 1190, "standard", 500),
        ];
        let shelf = basket(&products[..1], &[2]);
        let mut d = discounts(&[("A", 1190)], false);
        d.gifts.push((Sku::parse("G").expect("valid sku"), 1));
        let us = price_checkout_with_line_discounts(
            &shelf,
            lookup(&products),
            &d,
            "US",
            "standard",
            &config,
        )
        .expect("prices");
        // Shelf 23.80 is net 20.00 in the US; 11.90 off the shelf price is 10.00 net.
        let shown: Vec<(&str, i64, i64)> = us
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.line_total.minor, l.discount.minor))
            .collect();
        assert_eq!(shown, [("A", 2000, 1000), ("G", 1000, 1000)]);
        assert_eq!((us.subtotal.minor, us.discount.minor), (3000, 2000));
        assert_eq!((us.item_count, us.weight_grams), (3, 1000));
        // Shipping by weight (1 kg → 14.90) + 7.25 % of 10.00 + 14.90.
        assert_eq!(us.shipping.price, eur(1490));
        assert_eq!(us.total.minor, 1000 + 1490 + 181);
    }

    #[test]
    fn bad_line_discounts_are_refused() {
        let config = CheckoutConfig::default();
        let products = [product("A", 1000, "standard", 100)];
        let shelf = basket(&products, &[2]);
        let try_price = |d: &LineDiscounts| {
            price_checkout_with_line_discounts(
                &shelf,
                lookup(&products),
                d,
                "DE",
                "standard",
                &config,
            )
        };
        assert_eq!(
            try_price(&discounts(&[("A", -1)], false)),
            Err(CheckoutError::NegativeDiscount(eur(-1)))
        );
        assert_eq!(
            try_price(&discounts(&[("A", 2001)], false)),
            Err(CheckoutError::Pricing(PricingError::LineDiscountTooLarge {
                sku: Sku::parse("A").expect("valid sku"),
                discount: eur(2001),
                line_total: eur(2000)
            }))
        );
        assert_eq!(
            try_price(&discounts(&[("Z", 1)], false)),
            Err(CheckoutError::Pricing(PricingError::DiscountForAbsentSku(
                Sku::parse("Z").expect("valid sku")
            )))
        );
        let mut usd = discounts(&[], false);
        usd.by_sku.insert(
            Sku::parse("A").expect("valid sku"),
            Money::new(1, Currency::USD),
        );
        assert!(matches!(
            try_price(&usd),
            Err(CheckoutError::Money(MoneyError::CurrencyMismatch(..)))
        ));
        let mut gift = discounts(&[], false);
        gift.gifts.push((Sku::parse("GONE").expect("valid sku"), 1));
        assert_eq!(
            try_price(&gift),
            Err(CheckoutError::Unavailable(vec![
                Sku::parse("GONE").expect("valid sku")
            ]))
        );
    }

    /// A product's price, tax class and weight, and its quantity in the basket.
    type Item = (i64, &'static str, u32, u32);

    /// Items and a permutation of their basket order.
    fn items() -> impl Strategy<Value = (Vec<Item>, Vec<usize>)> {
        let class = prop_oneof![Just("standard"), Just("reduced"), Just("zero")];
        // Repeated prices make ties for the discount's last cents, where order could matter.
        let price = prop_oneof![Just(999i64), Just(1999), 1i64..50_000];
        proptest::collection::vec((price, class, 0u32..1_000, 1u32..5), 1..6).prop_flat_map(
            |items| {
                let order: Vec<usize> = (0..items.len()).collect();
                (Just(items), Just(order).prop_shuffle())
            },
        )
    }

    proptest! {
        #[test]
        fn breakdowns_add_up(
            (items, order) in items(),
            discount_share in 0i64..=100,
            country in proptest::sample::select(vec!["DE", "AT", "FR", "NL", "BE", "GB", "US"]),
        ) {
            let config = CheckoutConfig::default();
            let products: Vec<Product> = items
                .iter()
                .enumerate()
                .map(|(i, (price, class, grams, _))| product(&format!("S{i}"), *price, class, *grams))
                .collect();
            let quantities: Vec<u32> = items.iter().map(|i| i.3).collect();
            let shelf = basket(&products, &quantities);
            let options = config.shipping_options(&shelf, lookup(&products), country).expect("options");
            let method = options.first().map(|o| o.id.clone()).expect("every basket here ships");
            let market = config.market(country).expect("market");
            let subtotal = price_goods(&shelf, lookup(&products), eur(0), market).expect("goods").subtotal;
            let discount = eur(subtotal.minor * discount_share / 100);
            let price = |basket: &Basket| {
                price_checkout(basket, lookup(&products), discount, country, &method, &config).expect("prices")
            };
            let b = price(&shelf);

            let mut expected = b.subtotal.minor - b.discount.minor + b.shipping.price.minor;
            if !b.prices_include_tax {
                expected += b.tax_total.minor;
            }
            prop_assert_eq!(b.total.minor, expected);
            prop_assert_eq!(b.taxes.iter().map(|t| t.tax.minor).sum::<i64>(), b.tax_total.minor);
            prop_assert_eq!(b.taxes.iter().map(|t| t.gross.minor).sum::<i64>(), b.total.minor);
            prop_assert!(b.taxes.iter().all(|t| t.tax.minor >= 0 && t.gross.minor > 0));
            prop_assert_eq!(b.lines.iter().map(|l| l.discount.minor).sum::<i64>(), discount.minor);
            prop_assert!(b.lines.iter().all(|l| (0..=l.line_total.minor).contains(&l.discount.minor)));

            let permuted: Vec<Product> = order.iter().map(|i| products[*i].clone()).collect();
            let permuted_quantities: Vec<u32> = order.iter().map(|i| quantities[*i]).collect();
            let p = price(&basket(&permuted, &permuted_quantities));
            prop_assert_eq!((&p.taxes, p.tax_total, p.total, p.subtotal), (&b.taxes, b.tax_total, b.total, b.subtotal));
            let mut lines = p.lines.clone();
            lines.sort_by(|x, y| x.sku.cmp(&y.sku));
            let mut original = b.lines.clone();
            original.sort_by(|x, y| x.sku.cmp(&y.sku));
            prop_assert_eq!(lines, original);
        }

        #[test]
        fn shipping_is_free_exactly_from_the_threshold(price in 1i64..20_000, discount_share in 0i64..=100) {
            let config = CheckoutConfig::default();
            let products = [product("P", price, "reduced", 300)];
            let discount = eur(price * discount_share / 100);
            let b = price_checkout(&basket(&products, &[1]), lookup(&products), discount, "DE", "standard", &config)
                .expect("prices");
            let free = price - discount.minor >= 5_000;
            prop_assert_eq!(b.shipping.price.minor, if free { 0 } else { 490 });
        }
    }
}
