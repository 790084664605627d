//! The promotion engine: one set of rules, run by the hub and by every edge node, so a basket
//! gets the same promotions on the web, in the app, at the till and on a board — and can say
//! why.
//!
//! A promotion ([`Promotion`]) is a [`PromotionSpec`] — conditions that must all hold, one
//! benefit, a combination and limits — with an id, a name and an age (`created_seq`). The
//! active promotions are kept in a [`PromotionSet`] (sorted and indexed once); [`evaluate`]
//! prices a basket's [`PromoLine`]s in a [`PromotionContext`] into a [`PromotionOutcome`]:
//! discounts per SKU, free shipping, gifts, and which promotions applied and which did not and
//! why. [`validate`] refuses a bad definition before it is created.
//! [`crate::pricing::price_basket_with_promotions`] puts the outcome on a priced basket and
//! [`crate::checkout::price_checkout_with_line_discounts`] on a checkout.
//!
//! # Which promotions are looked at
//! Conditions and thresholds (minimum subtotal, quantity, tiers) compare the basket at shelf
//! prices, before any promotion. A promotion that requires some product — a SKU, category or
//! brand condition, a minimum quantity of some products, or a benefit that only discounts some
//! products (its first such requirement) — is only looked at when the basket holds one: the
//! [`PromotionSet`] finds those through an index, so the cost grows with the promotions that
//! concern the basket, not with all the promotions. Promotions about products the basket does
//! not hold are not in the explanation; every other promotion is, as applied or not applied.
//!
//! # The combination rule
//! Best for the customer, in linear time — no search over subsets:
//! 1. Promotions are taken in application order: higher `priority` first, then older (lower
//!    `created_seq`), then by id. One that fails a condition, is in another currency than the
//!    basket, or has reached a limit (`per_customer` or `total` by the context's [`Usage`]) is
//!    not applied, with the reason. A promotion limited per customer needs a known customer
//!    ([`PromotionContext::known_customer`]): a guest's uses are not counted, so it is not
//!    applied to a guest ("sign in to get it").
//! 2. Option S, the stackable promotions: each applies in that order to what is left of each
//!    line after the earlier ones, so discounts never exceed a line and never go below zero.
//!    Within one stackable group only the first promotion that gives something applies;
//!    separate groups stack with each other.
//! 3. Each exclusive promotion is evaluated alone on the undiscounted lines, as its own option.
//! 4. The option of the larger value wins: its line discounts, plus its gifts at their unit
//!    price, plus the shipping price ([`PromotionContext::shipping`], zero when unknown) if it
//!    makes shipping free (counted once). On a tie the option holding the promotion that comes
//!    first in application order wins: the higher priority, then the older one. The promotions
//!    of the other options are not applied, with the winner and both values as the reason.
//!
//! # Benefits and rounding
//! Amounts are integer minor units of the basket's currency, whatever its exponent (JPY 0, EUR
//! 2, KWD 3). A percentage is computed once on the total of its target lines (what is left of
//! them), rounded half away from zero ([`crate::pricing::round_div`]), then spread over those
//! lines in proportion to what is left of each by largest remainder
//! ([`crate::pricing::allocate`]); so is an amount off several lines. The lines are sorted by
//! SKU first, so nothing depends on their order in the basket.
//! - Amount off each unit, and fixed price (each unit costs `price`, where it cost more), work
//!   per line on what is left of it.
//! - Buy X get Y: the get units are the cheapest eligible units (by what is left per unit, then
//!   SKU); it applies `n` times for the largest `n` (at most `limits.per_order`) such that the
//!   `n·Y` cheapest get units leave `n·X` buy units besides them. The percentage is taken once
//!   on the value of the chosen units.
//! - Tiered: the best tier whose thresholds the target lines reach gives its percentage.
//! - Free gift: a gift line priced by the caller (a gift whose price is unknown does not apply);
//!   free shipping: a flag for the checkout.
//!
//! Every discount is capped at what is left of its line, so no line and no total is ever
//! negative, and the per-SKU discounts add up to the outcome's discount.

mod benefit;
mod condition;
mod engine;
mod spec;
mod validate;

#[cfg(test)]
mod tests;

pub use engine::{
    evaluate, evaluate_with, Applied, Gift, NotApplied, PromoLine, PromotionContext,
    PromotionOutcome, PromotionSet, PromotionSummary, Usage,
};
pub use spec::{
    Benefit, Combination, Condition, Limits, Promotion, PromotionId, PromotionIdError,
    PromotionSpec, Target, Tier,
};
pub use validate::{validate, SpecError};
