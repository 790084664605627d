//! Shipping options: which methods of the destination's zone can carry this basket, and at
//! what price.

use super::breakdown::{price_goods, Goods};
use super::config::{parse_amount, CheckoutConfig, Rate, ShippingMethodConfig, ShippingZone};
use super::CheckoutError;
use crate::basket::Basket;
use crate::catalog::Product;
use crate::ids::Sku;
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// A shipping method the shopper can choose, with its price for this basket: tax included where
/// the market's prices include tax, excluded where they do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingOption {
    pub id: String,
    pub name: String,
    pub price: Money,
    /// Delivery time as shown, e.g. `2–3 working days`.
    pub delivery: String,
}

impl ShippingMethodConfig {
    /// The price for a basket of this shipping weight and value (its subtotal after discount),
    /// or `None` when the basket is beyond the method's last band.
    pub fn quote(&self, weight_grams: u64, value: Money) -> Result<Option<Money>, CheckoutError> {
        let amount = |text: &str| parse_amount(text, value.currency).map_err(CheckoutError::Config);
        let price = match &self.rate {
            Rate::Flat { amount: flat } => Some(amount(flat)?),
            Rate::WeightBands { bands } => bands
                .iter()
                .find(|band| weight_grams <= band.up_to_grams)
                .map(|band| amount(&band.amount))
                .transpose()?,
            Rate::PriceBands { bands } => {
                let mut found = None;
                for band in bands {
                    if value.minor <= amount(&band.up_to)?.minor {
                        found = Some(amount(&band.amount)?);
                        break;
                    }
                }
                found
            }
        };
        let free = match &self.free_over {
            Some(threshold) => value.minor >= amount(threshold)?.minor,
            None => false,
        };
        Ok(price.map(|price| {
            if free {
                Money::zero(value.currency)
            } else {
                price
            }
        }))
    }
}

/// The options of a zone for priced goods, cheapest first (configuration order among equals),
/// each with the method it comes from.
pub(super) fn zone_options<'z>(
    zone: &'z ShippingZone,
    goods: &Goods,
) -> Result<Vec<(ShippingOption, &'z ShippingMethodConfig)>, CheckoutError> {
    let value = goods.value()?;
    let mut options = Vec::new();
    for method in &zone.methods {
        if let Some(price) = method.quote(goods.weight_grams, value)? {
            let option = ShippingOption {
                id: method.id.clone(),
                name: method.name.clone(),
                price,
                delivery: method.delivery.clone(),
            };
            options.push((option, method));
        }
    }
    options.sort_by_key(|(option, _)| option.price.minor);
    Ok(options)
}

impl CheckoutConfig {
    /// The shipping options for this basket to this country, cheapest first, with their prices
    /// in the basket currency. Free-shipping thresholds compare the subtotal without a discount;
    /// use [`CheckoutConfig::shipping_options_after_discount`] when one applies. Empty when no
    /// method can carry the basket (too heavy for every band).
    pub fn shipping_options<'a>(
        &self,
        basket: &Basket,
        lookup: impl Fn(&Sku) -> Option<&'a Product>,
        country: &str,
    ) -> Result<Vec<ShippingOption>, CheckoutError> {
        let no_discount = Money::zero(basket.currency);
        self.shipping_options_after_discount(basket, lookup, no_discount, country)
    }

    /// [`CheckoutConfig::shipping_options`] for a basket with a discount: the options and prices
    /// that [`super::price_checkout`] accepts with the same discount.
    pub fn shipping_options_after_discount<'a>(
        &self,
        basket: &Basket,
        lookup: impl Fn(&Sku) -> Option<&'a Product>,
        discount: Money,
        country: &str,
    ) -> Result<Vec<ShippingOption>, CheckoutError> {
        let (_, market, zone) = self.destination(country)?;
        let goods = price_goods(basket, lookup, discount, market)?;
        Ok(zone_options(zone, &goods)?
            .into_iter()
            .map(|(option, _)| option)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkout::test_support::{basket, eur, lookup, product};
    use crate::checkout::{price_checkout, PriceBand};

    /// (id, price in cents) of the options for one product of this price and weight.
    fn options(
        config: &CheckoutConfig,
        country: &str,
        price: i64,
        grams: u32,
        discount: i64,
    ) -> Result<Vec<(String, i64)>, CheckoutError> {
        let products = [product("P", price, "standard", grams)];
        let options = config.shipping_options_after_discount(
            &basket(&products, &[1]),
            lookup(&products),
            eur(discount),
            country,
        )?;
        Ok(options.into_iter().map(|o| (o.id, o.price.minor)).collect())
    }

    /// Expected options: (id, price in cents), cheapest first.
    type Options = &'static [(&'static str, i64)];

    fn ids_prices(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(id, p)| (id.to_string(), *p)).collect()
    }

    #[test]
    fn flat_rates_and_free_shipping_thresholds() {
        let config = CheckoutConfig::default();
        // (country, price, discount, options): free from 50.00 after discount; express never.
        let cases: &[(&str, i64, i64, Options)] = &[
            ("DE", 4999, 0, &[("standard", 490), ("express", 990)]),
            ("DE", 5000, 0, &[("standard", 0), ("express", 990)]),
            ("de", 5001, 0, &[("standard", 0), ("express", 990)]),
            ("DE", 5500, 501, &[("standard", 490), ("express", 990)]),
            ("DE", 5500, 500, &[("standard", 0), ("express", 990)]),
            ("AT", 9999, 0, &[("standard", 690)]),
            ("AT", 10000, 0, &[("standard", 0)]),
            ("GB", 100_000, 0, &[("standard", 1490)]),
        ];
        for (country, price, discount, expected) in cases {
            let got = options(&config, country, *price, 500, *discount).expect("options");
            assert_eq!(got, ids_prices(expected), "{country} {price} − {discount}");
        }
    }

    #[test]
    fn weight_bands_include_their_limit_and_too_heavy_has_no_option() {
        let config = CheckoutConfig::default();
        let cases: &[(&str, u32, Options)] = &[
            ("FR", 0, &[("standard", 690)]),
            ("FR", 2_000, &[("standard", 690)]),
            ("FR", 2_001, &[("standard", 990)]),
            ("FR", 31_500, &[("standard", 1990)]),
            ("FR", 31_501, &[]),
            ("US", 1_000, &[("standard", 1490)]),
            ("US", 1_001, &[("standard", 1990)]),
            ("US", 20_001, &[]),
            ("DE", 50_000, &[("standard", 490), ("express", 990)]),
        ];
        for (country, grams, expected) in cases {
            let got = options(&config, country, 1000, *grams, 0).expect("options");
            assert_eq!(got, ids_prices(expected), "{country} {grams} g");
        }
        let products = [product("P", 1000, "standard", 31_501)];
        let error = price_checkout(
            &basket(&products, &[1]),
            lookup(&products),
            eur(0),
            "FR",
            "standard",
            &config,
        );
        assert_eq!(
            error,
            Err(CheckoutError::UnknownShippingMethod("standard".into()))
        );
    }

    #[test]
    fn price_bands_are_by_subtotal_after_discount() {
        let mut config = CheckoutConfig::default();
        let band = |up_to: &str, amount: &str| PriceBand {
            up_to: up_to.into(),
            amount: amount.into(),
        };
        config.zones[0].methods[1].rate = Rate::PriceBands {
            bands: vec![band("20.00", "5.90"), band("100.00", "3.90")],
        };
        assert_eq!(config.validate(crate::money::Currency::EUR), Ok(()));
        let cases: &[(i64, i64, Options)] = &[
            (2000, 0, &[("standard", 490), ("express", 590)]),
            (2001, 0, &[("express", 390), ("standard", 490)]),
            (2500, 501, &[("standard", 490), ("express", 590)]),
            (10_000, 0, &[("standard", 0), ("express", 390)]),
            (10_001, 0, &[("standard", 0)]),
        ];
        for (price, discount, expected) in cases {
            let got = options(&config, "DE", *price, 100, *discount).expect("options");
            assert_eq!(got, ids_prices(expected), "{price} − {discount}");
        }
    }

    #[test]
    fn unknown_countries_are_not_served() {
        let config = CheckoutConfig::default();
        for country in ["CH", "", "Germany"] {
            let expected = CheckoutError::CountryNotServed(country.to_ascii_uppercase());
            assert_eq!(options(&config, country, 1000, 100, 0), Err(expected));
        }
    }
}
