//! Checks a promotion's definition before it is created: every problem, each with the field it
//! is in and the reason, so the ERP row or the back-office form can be corrected in one go.

use super::spec::{Benefit, Combination, Condition, Limits, PromotionSpec, Target, Tier};
use crate::channel::Channel;
use crate::ids::Sku;
use crate::money::{Currency, Money};
use serde::{Deserialize, Serialize};

/// One problem of a promotion's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Where, e.g. `benefit.percent_bp` or `conditions[1].skus[0]`.
    pub field: String,
    pub reason: String,
}

/// Checks `spec`; `sku_price` gives the lowest price of a SKU the catalog sells (`None`: an
/// unknown SKU). Refuses percentages above 100 % (or of zero), amounts of zero or less, a fixed
/// price below zero, an amount off each unit larger than a targeted SKU's price, unknown SKUs,
/// empty lists and tiers, zero quantities and limits, a basket amount off larger than the
/// minimum subtotal it requires, amounts in several currencies, and empty time windows.
///
/// Per-unit amounts on category, brand or whole-basket targets cannot be checked against every
/// price here; the engine caps every discount at what is left of its line, so no line and no
/// total ever goes below zero.
pub fn validate(
    spec: &PromotionSpec,
    sku_price: impl Fn(&Sku) -> Option<Money>,
) -> Result<(), Vec<SpecError>> {
    let mut check = Checker {
        sku_price: &sku_price,
        errors: Vec::new(),
        currency: None,
    };
    for (i, condition) in spec.conditions.iter().enumerate() {
        check.condition(&format!("conditions[{i}]"), condition);
    }
    check.benefit(&spec.benefit);
    check.basket_amount_vs_minimum(spec);
    if let Combination::Stackable { group } = &spec.combination {
        if group.trim().is_empty() || group.len() > 64 {
            check.refuse("combination.group", "must be 1 to 64 characters");
        }
    }
    check.limits(&spec.limits);
    if check.errors.is_empty() {
        Ok(())
    } else {
        Err(check.errors)
    }
}

struct Checker<'f> {
    sku_price: &'f dyn Fn(&Sku) -> Option<Money>,
    errors: Vec<SpecError>,
    /// The currency of the first amount seen: every amount must be in it.
    currency: Option<(Currency, String)>,
}

impl Checker<'_> {
    fn refuse(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(SpecError {
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    fn same_currency(&mut self, field: &str, amount: Money) {
        match &self.currency {
            None => self.currency = Some((amount.currency, field.to_string())),
            Some((c, first)) if *c != amount.currency => {
                let reason = format!(
                    "is in {}, but {first} is in {c}: a promotion's amounts are in one currency",
                    amount.currency
                );
                self.refuse(field, reason);
            }
            Some(_) => {}
        }
    }

    fn positive(&mut self, field: &str, amount: Money) {
        self.same_currency(field, amount);
        if amount.minor <= 0 {
            self.refuse(field, format!("must be more than zero, not {amount}"));
        }
    }

    fn percent(&mut self, field: &str, percent_bp: u32) {
        if !(1..=10_000).contains(&percent_bp) {
            self.refuse(
                field,
                format!("must be 1 to 10000 basis points (0.01 % to 100 %), not {percent_bp}"),
            );
        }
    }

    fn at_least_one(&mut self, field: &str, n: u64) {
        if n == 0 {
            self.refuse(field, "must be at least 1");
        }
    }

    fn not_empty<T>(&mut self, field: &str, items: &[T], what: &str) {
        if items.is_empty() {
            self.refuse(field, format!("needs at least one {what}"));
        }
    }

    /// The price of a SKU the catalog sells, or a refusal.
    fn known_sku(&mut self, field: &str, sku: &Sku) -> Option<Money> {
        let price = (self.sku_price)(sku);
        if price.is_none() {
            self.refuse(field, format!("unknown SKU {sku}"));
        }
        price
    }

    fn skus(&mut self, field: &str, skus: &[Sku]) -> Vec<(String, Sku, Money)> {
        self.not_empty(&format!("{field}.skus"), skus, "SKU");
        let mut priced = Vec::new();
        for (i, sku) in skus.iter().enumerate() {
            let at = format!("{field}.skus[{i}]");
            if let Some(price) = self.known_sku(&at, sku) {
                priced.push((at, sku.clone(), price));
            }
        }
        priced
    }

    /// Checks a target; returns the targeted SKUs with their prices (none for other targets).
    fn target(&mut self, field: &str, target: &Target) -> Vec<(String, Sku, Money)> {
        match target {
            Target::All => Vec::new(),
            Target::Skus { skus } => self.skus(field, skus),
            Target::Categories { categories } => {
                self.not_empty(&format!("{field}.categories"), categories, "category");
                Vec::new()
            }
            Target::Brands { brands } => {
                self.not_empty(&format!("{field}.brands"), brands, "brand");
                Vec::new()
            }
        }
    }

    fn condition(&mut self, field: &str, condition: &Condition) {
        match condition {
            Condition::MinSubtotal { amount } => self.positive(&format!("{field}.amount"), *amount),
            Condition::MinQuantity { quantity, target } => {
                self.at_least_one(&format!("{field}.quantity"), u64::from(*quantity));
                self.target(&format!("{field}.target"), target);
            }
            Condition::Skus { skus } => {
                self.skus(field, skus);
            }
            Condition::Categories { categories } => {
                self.not_empty(&format!("{field}.categories"), categories, "category");
            }
            Condition::Brands { brands } => {
                self.not_empty(&format!("{field}.brands"), brands, "brand");
            }
            Condition::Segment { any_of } => {
                self.not_empty(&format!("{field}.any_of"), any_of, "segment");
            }
            Condition::Channel { any_of } => {
                self.not_empty(&format!("{field}.any_of"), any_of, "channel");
                if any_of.contains(&Channel::Unknown) {
                    self.refuse(
                        &format!("{field}.any_of"),
                        "unknown channel: use web, mobile, pos, board, voice or chat",
                    );
                }
            }
            Condition::Store { any_of } => {
                self.not_empty(&format!("{field}.any_of"), any_of, "store");
            }
            Condition::Window {
                from,
                until,
                weekdays: _,
                from_minute,
                until_minute,
            } => {
                if let (Some(from), Some(until)) = (from, until) {
                    if from >= until {
                        self.refuse(&format!("{field}.until"), "must be after from");
                    }
                }
                for (name, minute) in [("from_minute", from_minute), ("until_minute", until_minute)]
                {
                    if minute.is_some_and(|m| m > 24 * 60) {
                        let reason = "is a minute of the day: 0 to 1440";
                        self.refuse(&format!("{field}.{name}"), reason);
                    }
                }
                if from_minute.is_some() && from_minute == until_minute {
                    self.refuse(
                        &format!("{field}.until_minute"),
                        "equals from_minute: the daily window would be empty",
                    );
                }
            }
            Condition::FirstOrder | Condition::Coupon => {}
            Condition::Experiment {
                experiment,
                variants,
            } => {
                if !crate::board::is_plain_id(experiment) {
                    self.refuse(
                        &format!("{field}.experiment"),
                        "an experiment key is 1 to 64 letters, digits, '-' or '_'",
                    );
                }
                self.not_empty(&format!("{field}.variants"), variants, "variant");
            }
        }
    }

    fn benefit(&mut self, benefit: &Benefit) {
        match benefit {
            Benefit::PercentOff { target, percent_bp } => {
                self.target("benefit.target", target);
                self.percent("benefit.percent_bp", *percent_bp);
            }
            Benefit::AmountOff { target, amount } => {
                self.target("benefit.target", target);
                self.positive("benefit.amount", *amount);
            }
            Benefit::AmountOffEach { target, amount } => {
                let priced = self.target("benefit.target", target);
                self.positive("benefit.amount", *amount);
                for (field, sku, price) in priced {
                    self.priced_in_promotion_currency(&field, &sku, price, *amount);
                    if price.currency == amount.currency && amount.minor > price.minor {
                        let reason = format!(
                            "would make a line price below zero: {amount} off each unit of {sku}, which costs {price}"
                        );
                        self.refuse("benefit.amount", reason);
                    }
                }
            }
            Benefit::PercentOffBasket { percent_bp } => {
                self.percent("benefit.percent_bp", *percent_bp);
            }
            Benefit::AmountOffBasket { amount } => self.positive("benefit.amount", *amount),
            Benefit::FixedPrice { target, price } => {
                let priced = self.target("benefit.target", target);
                self.same_currency("benefit.price", *price);
                if price.minor < 0 {
                    self.refuse("benefit.price", format!("cannot be below zero ({price})"));
                }
                for (field, sku, shelf) in priced {
                    self.priced_in_promotion_currency(&field, &sku, shelf, *price);
                }
            }
            Benefit::BuyXGetY {
                buy,
                buy_quantity,
                get,
                get_quantity,
                percent_bp,
            } => {
                self.target("benefit.buy", buy);
                self.target("benefit.get", get);
                self.at_least_one("benefit.buy_quantity", u64::from(*buy_quantity));
                self.at_least_one("benefit.get_quantity", u64::from(*get_quantity));
                self.percent("benefit.percent_bp", *percent_bp);
            }
            Benefit::Tiered { target, tiers } => {
                self.target("benefit.target", target);
                self.not_empty("benefit.tiers", tiers, "tier");
                for (i, tier) in tiers.iter().enumerate() {
                    self.tier(&format!("benefit.tiers[{i}]"), tier);
                }
            }
            Benefit::FreeShipping => {}
            Benefit::FreeGift { sku, quantity } => {
                self.known_sku("benefit.sku", sku);
                self.at_least_one("benefit.quantity", u64::from(*quantity));
            }
        }
    }

    fn priced_in_promotion_currency(
        &mut self,
        field: &str,
        sku: &Sku,
        price: Money,
        amount: Money,
    ) {
        if price.currency != amount.currency {
            let reason = format!(
                "{sku} is priced in {}, the promotion's amounts are in {}",
                price.currency, amount.currency
            );
            self.refuse(field, reason);
        }
    }

    fn tier(&mut self, field: &str, tier: &Tier) {
        if tier.min_quantity.is_none() && tier.min_subtotal.is_none() {
            self.refuse(field, "needs a min_quantity or a min_subtotal");
        }
        if let Some(q) = tier.min_quantity {
            self.at_least_one(&format!("{field}.min_quantity"), u64::from(q));
        }
        if let Some(s) = tier.min_subtotal {
            self.positive(&format!("{field}.min_subtotal"), s);
        }
        self.percent(&format!("{field}.percent_bp"), tier.percent_bp);
    }

    /// An amount off the basket larger than the smallest basket it is given for would take
    /// that basket below zero (the engine would cap it; the definition is still wrong).
    fn basket_amount_vs_minimum(&mut self, spec: &PromotionSpec) {
        let Benefit::AmountOffBasket { amount } = &spec.benefit else {
            return;
        };
        let minimum = spec.conditions.iter().find_map(|c| match c {
            Condition::MinSubtotal { amount } => Some(*amount),
            _ => None,
        });
        if let Some(minimum) = minimum {
            if minimum.currency == amount.currency && amount.minor > minimum.minor {
                let reason = format!(
                    "would make a total negative: {amount} off a basket of at least {minimum}"
                );
                self.refuse("benefit.amount", reason);
            }
        }
    }

    fn limits(&mut self, limits: &Limits) {
        let zero = "must be at least 1 (leave it out for no limit)";
        if limits.per_order == Some(0) {
            self.refuse("limits.per_order", zero);
        }
        if limits.per_customer == Some(0) {
            self.refuse("limits.per_customer", zero);
        }
        if limits.total == Some(0) {
            self.refuse("limits.total", zero);
        }
    }
}
