//! Checkout: a basket priced for delivery to one country — the shipping address and its checks,
//! the shipping options, and the [`Breakdown`] (lines, discount, shipping, tax per rate, total)
//! that the API returns, the page shows, the order stores and the payment is for.
//!
//! Everything comes from a typed [`CheckoutConfig`]: the markets (tax rate per tax class, and
//! whether prices include tax) and the shipping zones with their methods and rates.
//!
//! # The pricing rule
//! The rounding rule of [`crate::pricing`] applies unchanged, with its functions:
//! - Markets whose prices include tax show the catalog's shelf price; a market whose prices
//!   exclude tax shows the shelf price less the home-market tax it includes
//!   ([`crate::catalog::Product::tax_rate_bp`]), per unit, rounded half away from zero.
//! - The discount is spread over the lines by largest remainder ([`crate::pricing::allocate`]),
//!   in SKU order, so the breakdown does not depend on the order of the basket's lines.
//! - Tax is computed per rate on the summed amounts of that rate — items after discount and
//!   shipping (at its method's tax class) together, never per line: with tax included,
//!   [`crate::pricing::included_tax`]; with tax excluded, `round(net × rate)`.
//! - Shipping is free when the subtotal after discount is at least the method's `free_over`.
//!
//! - With promotions, [`price_checkout_with_line_discounts`] takes the engine's discount per SKU
//!   (see [`crate::promotion`]) instead of one basket discount: no spreading, each line keeps
//!   its own; free shipping makes the chosen method's price zero; gifts are lines discounted in
//!   full.
//!
//! Entry points: [`Address::validated`], [`CheckoutConfig::validate`],
//! [`CheckoutConfig::shipping_options`], [`price_checkout`],
//! [`price_checkout_with_line_discounts`].

mod address;
mod breakdown;
mod config;
mod shipping;
#[cfg(test)]
pub(crate) mod test_support;

pub use address::{Address, FieldError};
pub use breakdown::{price_checkout, price_checkout_with_line_discounts, Breakdown, LineDiscounts};
pub use config::{
    CheckoutConfig, Market, PriceBand, Rate, ShippingMethodConfig, ShippingZone, WeightBand,
};
pub use shipping::ShippingOption;

use crate::ids::Sku;
use crate::money::{Money, MoneyError};
use crate::pricing::PricingError;

/// Why a basket could not be checked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("the basket is empty: add something to it before checking out")]
    EmptyBasket,
    #[error("no longer sold: {}; remove it from the basket to continue", sku_list(.0))]
    Unavailable(Vec<Sku>),
    #[error("we do not deliver to '{0}'")]
    CountryNotServed(String),
    #[error("shipping method '{0}' is not available for this basket and destination: choose one of the shipping options")]
    UnknownShippingMethod(String),
    #[error("no tax rate for tax class '{tax_class}' in {country}: the checkout configuration needs one")]
    NoTaxRate { country: String, tax_class: String },
    #[error("a discount cannot be negative ({0})")]
    NegativeDiscount(Money),
    /// A configuration that [`CheckoutConfig::validate`] would have refused.
    #[error("the checkout configuration is invalid: {0}")]
    Config(String),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

fn sku_list(skus: &[Sku]) -> String {
    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", ")
}
