//! The engine: a [`PromotionSet`] (the active promotions, in application order, indexed by the
//! products they are about) evaluated against a basket's lines in a [`PromotionContext`], giving
//! a [`PromotionOutcome`] with its explanation. The rules are in the module docs of
//! [`crate::promotion`].

use super::benefit::{effect, Effect};
use super::condition::eligibility;
use super::spec::{Benefit, Combination, Condition, Promotion, PromotionId, Target};
use crate::catalog::CategoryId;
use crate::channel::Channel;
use crate::ids::{LocationId, Sku};
use crate::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;

/// One basket line as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoLine {
    pub sku: Sku,
    pub category: CategoryId,
    pub brand: String,
    /// Shelf price of one unit, tax included.
    pub unit_price: Money,
    pub quantity: u32,
}

/// How often a promotion has been used (orders placed with it, and checkouts holding a use
/// while their payment is pending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub by_customer: u32,
    pub total: u64,
}

/// Everything about the pricing besides the lines: who, where, when, with which coupons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionContext {
    /// The basket's currency: promotions with amounts in another currency do not apply.
    pub currency: Currency,
    pub channel: Channel,
    /// The store the basket is priced in (a till, a board), if any.
    #[serde(default)]
    pub store: Option<LocationId>,
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// The customer's segments.
    #[serde(default)]
    pub segments: BTreeSet<String>,
    /// The customer has never ordered (false for an anonymous shopper unless known otherwise).
    #[serde(default)]
    pub first_order: bool,
    /// The shopper is a known customer (signed in, or identified at the till), whose uses of a
    /// promotion are counted. A promotion limited per customer does not apply without one: a
    /// guest has no count, so the limit could not hold.
    #[serde(default)]
    pub known_customer: bool,
    /// Promotions unlocked by the valid coupons presented.
    #[serde(default)]
    pub coupons: BTreeSet<PromotionId>,
    /// Usage so far of the promotions with limits, for this customer and in total.
    #[serde(default)]
    pub usage: BTreeMap<PromotionId, Usage>,
    /// What shipping would cost, when known: free shipping is worth that much when options are
    /// compared (else nothing).
    #[serde(default)]
    pub shipping: Option<Money>,
    /// Unit prices of gift SKUs for [`evaluate`]; a gift without a price here does not apply.
    /// ([`crate::pricing::price_basket_with_promotions`] prices gifts from the catalog instead.)
    #[serde(default)]
    pub gift_prices: BTreeMap<Sku, Money>,
    /// The shopper's variant per running experiment the promotions ask about (experiment key →
    /// variant key); a shopper not in an experiment has no entry.
    #[serde(default)]
    pub experiments: BTreeMap<String, String>,
}

impl PromotionContext {
    /// A context with nothing known about the customer, no store, no coupons.
    pub fn new(currency: Currency, channel: Channel, now: OffsetDateTime) -> PromotionContext {
        PromotionContext {
            currency,
            channel,
            store: None,
            now,
            segments: BTreeSet::new(),
            first_order: false,
            known_customer: false,
            coupons: BTreeSet::new(),
            usage: BTreeMap::new(),
            shipping: None,
            gift_prices: BTreeMap::new(),
            experiments: BTreeMap::new(),
        }
    }
}

/// A gift line a promotion adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    pub sku: Sku,
    pub quantity: u32,
    pub promotion: PromotionId,
}

/// A promotion that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub id: PromotionId,
    pub name: String,
    /// What it took off the lines (its gifts and free shipping are in the outcome).
    pub amount: Money,
    /// Applications (the repeats of a buy-X-get-Y; 1 otherwise).
    pub times: u32,
}

/// A promotion about this basket that did not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotApplied {
    pub id: PromotionId,
    pub name: String,
    pub reason: String,
}

/// The engine's result for one basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionOutcome {
    /// Discount per SKU (only SKUs with one); never more than that SKU's line total.
    pub line_discounts: BTreeMap<Sku, Money>,
    /// The sum of the line discounts.
    pub discount: Money,
    pub free_shipping: bool,
    pub gifts: Vec<Gift>,
    /// In application order.
    pub applied: Vec<Applied>,
    /// In application order.
    pub not_applied: Vec<NotApplied>,
}

impl PromotionOutcome {
    /// The explanation part, as a priced basket carries it.
    pub fn summary(&self) -> PromotionSummary {
        PromotionSummary {
            applied: self.applied.clone(),
            not_applied: self.not_applied.clone(),
            free_shipping: self.free_shipping,
            gifts: self.gifts.clone(),
        }
    }
}

/// What promotions did to a priced basket: shown to the shopper and the cashier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionSummary {
    pub applied: Vec<Applied>,
    pub not_applied: Vec<NotApplied>,
    pub free_shipping: bool,
    pub gifts: Vec<Gift>,
}

/// The active promotions, sorted in application order (priority, higher first; then older
/// first; then by id) and indexed by the products they require, so a basket only looks at the
/// promotions that can concern it. Build it once per change of the promotions and share it.
#[derive(Debug, Clone, Default)]
pub struct PromotionSet {
    promotions: Vec<Promotion>,
    /// Promotions about no product in particular: looked at for every basket.
    always: Vec<usize>,
    by_sku: HashMap<Sku, Vec<usize>>,
    by_category: HashMap<CategoryId, Vec<usize>>,
    by_brand: HashMap<String, Vec<usize>>,
}

/// The products a promotion cannot apply without (one of them must be in the basket).
enum Scope<'a> {
    Skus(&'a [Sku]),
    Categories(&'a [CategoryId]),
    Brands(&'a [String]),
}

fn target_scope(target: &Target) -> Option<Scope<'_>> {
    match target {
        Target::All => None,
        Target::Skus { skus } => Some(Scope::Skus(skus)),
        Target::Categories { categories } => Some(Scope::Categories(categories)),
        Target::Brands { brands } => Some(Scope::Brands(brands)),
    }
}

/// The first product requirement of a promotion: a SKU, category or brand condition, a
/// minimum quantity of some products, or a benefit that only discounts some products.
fn required_scope(promotion: &Promotion) -> Option<Scope<'_>> {
    let spec = &promotion.spec;
    let from_conditions = spec.conditions.iter().find_map(|c| match c {
        Condition::Skus { skus } => Some(Scope::Skus(skus)),
        Condition::Categories { categories } => Some(Scope::Categories(categories)),
        Condition::Brands { brands } => Some(Scope::Brands(brands)),
        Condition::MinQuantity { quantity, target } if *quantity > 0 => target_scope(target),
        _ => None,
    });
    from_conditions.or_else(|| match &spec.benefit {
        Benefit::PercentOff { target, .. }
        | Benefit::AmountOff { target, .. }
        | Benefit::AmountOffEach { target, .. }
        | Benefit::FixedPrice { target, .. }
        | Benefit::Tiered { target, .. } => target_scope(target),
        Benefit::BuyXGetY { get, .. } => target_scope(get),
        Benefit::PercentOffBasket { .. }
        | Benefit::AmountOffBasket { .. }
        | Benefit::FreeShipping
        | Benefit::FreeGift { .. } => None,
    })
}

impl PromotionSet {
    pub fn new(mut promotions: Vec<Promotion>) -> PromotionSet {
        promotions.sort_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then(a.created_seq.cmp(&b.created_seq))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut set = PromotionSet::default();
        for (i, promotion) in promotions.iter().enumerate() {
            match required_scope(promotion) {
                None => set.always.push(i),
                Some(Scope::Skus(skus)) => {
                    for sku in skus {
                        set.by_sku.entry(sku.clone()).or_default().push(i);
                    }
                }
                Some(Scope::Categories(categories)) => {
                    for c in categories {
                        set.by_category.entry(c.clone()).or_default().push(i);
                    }
                }
                Some(Scope::Brands(brands)) => {
                    for b in brands {
                        set.by_brand.entry(b.clone()).or_default().push(i);
                    }
                }
            }
        }
        set.promotions = promotions;
        set
    }

    /// The promotions in application order.
    pub fn promotions(&self) -> &[Promotion] {
        &self.promotions
    }

    pub fn len(&self) -> usize {
        self.promotions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.promotions.is_empty()
    }

    /// The promotions that can concern these lines, in application order.
    fn candidates(&self, basket: &Basket<'_>) -> Vec<usize> {
        let mut found = self.always.clone();
        for l in &basket.lines {
            let lists = [
                self.by_sku.get(&l.line.sku),
                self.by_category.get(&l.line.category),
                self.by_brand.get(&l.line.brand),
            ];
            for list in lists.into_iter().flatten() {
                found.extend_from_slice(list);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// A line the engine works on, with its shelf total.
pub(super) struct Line<'a> {
    pub line: &'a PromoLine,
    pub total: i64,
}

/// The lines in a canonical order (by SKU, then price and quantity), so that nothing depends on
/// the order they were given in. Lines in another currency than the context's, with no units
/// or a negative price, are left out.
pub(super) struct Basket<'a> {
    pub lines: Vec<Line<'a>>,
    pub subtotal: i128,
    pub currency: Currency,
}

impl<'a> Basket<'a> {
    fn new(lines: &'a [PromoLine], currency: Currency) -> Basket<'a> {
        let mut kept: Vec<Line<'a>> = lines
            .iter()
            .filter(|l| l.unit_price.currency == currency && l.quantity > 0)
            .filter(|l| l.unit_price.minor >= 0)
            .filter_map(|l| {
                let total = l.unit_price.minor.checked_mul(i64::from(l.quantity))?;
                Some(Line { line: l, total })
            })
            .collect();
        kept.sort_by(|a, b| {
            (&a.line.sku, a.line.unit_price.minor, a.line.quantity)
                .cmp(&(&b.line.sku, b.line.unit_price.minor, b.line.quantity))
                .then_with(|| a.line.category.cmp(&b.line.category))
                .then_with(|| a.line.brand.cmp(&b.line.brand))
        });
        let subtotal = kept.iter().map(|l| i128::from(l.total)).sum();
        Basket {
            lines: kept,
            subtotal,
            currency,
        }
    }
}

/// One way of combining promotions: the stackable ones together, or one exclusive alone.
struct Choice {
    /// (index in the set, its effect), in application order.
    applied: Vec<(usize, Effect)>,
    remaining: Vec<i64>,
    free_shipping: bool,
    gift_value: i128,
}

impl Choice {
    fn new(basket: &Basket<'_>) -> Choice {
        Choice {
            applied: Vec::new(),
            remaining: basket.lines.iter().map(|l| l.total).collect(),
            free_shipping: false,
            gift_value: 0,
        }
    }

    fn take(&mut self, index: usize, effect: Effect) {
        for (line, discount) in &effect.discounts {
            self.remaining[*line] -= discount;
        }
        self.free_shipping |= effect.free_shipping;
        if let Some((_, _, value)) = &effect.gift {
            self.gift_value += i128::from(*value);
        }
        self.applied.push((index, effect));
    }

    /// Line discounts, plus gifts at their price, plus shipping if it becomes free.
    fn value(&self, shipping: i64) -> i128 {
        let discounts: i128 = self
            .applied
            .iter()
            .map(|(_, e)| i128::from(e.amount()))
            .sum();
        let shipping = if self.free_shipping { shipping } else { 0 };
        discounts + self.gift_value + i128::from(shipping)
    }

    /// The first promotion applied: the one with the highest priority (then the oldest).
    fn head(&self) -> usize {
        self.applied.first().map_or(usize::MAX, |(i, _)| *i)
    }
}

/// Evaluates the promotions of `set` for these lines; gifts are priced from
/// `ctx.gift_prices`.
pub fn evaluate(
    lines: &[PromoLine],
    set: &PromotionSet,
    ctx: &PromotionContext,
) -> PromotionOutcome {
    evaluate_with(lines, set, ctx, &|sku: &Sku| {
        ctx.gift_prices.get(sku).copied()
    })
}

/// [`evaluate`] with gifts priced by `gift_price` (the unit price of a SKU, `None` when it is
/// not sold: such a gift does not apply).
pub fn evaluate_with(
    lines: &[PromoLine],
    set: &PromotionSet,
    ctx: &PromotionContext,
    gift_price: &dyn Fn(&Sku) -> Option<Money>,
) -> PromotionOutcome {
    let basket = Basket::new(lines, ctx.currency);
    let mut options = Options::new(&basket);
    for index in set.candidates(&basket) {
        options.consider(set, index, &basket, ctx, gift_price);
    }
    options.decide(set, &basket, ctx)
}

/// The options being built: the stack, each exclusive promotion alone, and the promotions
/// that did not make it into any option, with why.
struct Options<'s> {
    stacked: Choice,
    /// Stackable group → the promotion that applied in it.
    groups: HashMap<&'s str, usize>,
    exclusive: Vec<Choice>,
    not_applied: Vec<(usize, String)>,
}

impl<'s> Options<'s> {
    fn new(basket: &Basket<'_>) -> Options<'s> {
        Options {
            stacked: Choice::new(basket),
            groups: HashMap::new(),
            exclusive: Vec::new(),
            not_applied: Vec::new(),
        }
    }

    /// Adds promotion `index` (taken in application order) to its option, or explains why not.
    fn consider(
        &mut self,
        set: &'s PromotionSet,
        index: usize,
        basket: &Basket<'_>,
        ctx: &PromotionContext,
        gift_price: &dyn Fn(&Sku) -> Option<Money>,
    ) {
        let promotion = &set.promotions[index];
        if let Err(reason) = eligibility(promotion, basket, ctx) {
            self.not_applied.push((index, reason));
            return;
        }
        let spec = &promotion.spec;
        match &spec.combination {
            Combination::Stackable { group } => {
                if let Some(first) = self.groups.get(group.as_str()) {
                    let first = &set.promotions[*first].id;
                    let reason =
                        format!("only one promotion of group {group} applies: {first} did");
                    self.not_applied.push((index, reason));
                    return;
                }
                let remaining = &self.stacked.remaining;
                match effect(&spec.benefit, &spec.limits, basket, remaining, gift_price) {
                    Ok(e) => {
                        self.stacked.take(index, e);
                        self.groups.insert(group, index);
                    }
                    Err(reason) => self.not_applied.push((index, reason)),
                }
            }
            Combination::Exclusive => {
                let mut alone = Choice::new(basket);
                match effect(
                    &spec.benefit,
                    &spec.limits,
                    basket,
                    &alone.remaining,
                    gift_price,
                ) {
                    Ok(e) => {
                        alone.take(index, e);
                        self.exclusive.push(alone);
                    }
                    Err(reason) => self.not_applied.push((index, reason)),
                }
            }
        }
    }

    /// The option of the larger value wins; on a tie the one whose head comes first in
    /// application order (higher priority, then older). The others are explained.
    fn decide(
        self,
        set: &PromotionSet,
        basket: &Basket<'_>,
        ctx: &PromotionContext,
    ) -> PromotionOutcome {
        let shipping = ctx
            .shipping
            .filter(|s| s.currency == ctx.currency && s.minor > 0)
            .map_or(0, |s| s.minor);
        let mut choices: Vec<(bool, Choice)> =
            self.exclusive.into_iter().map(|c| (false, c)).collect();
        if !self.stacked.applied.is_empty() {
            choices.push((true, self.stacked));
        }
        choices.sort_by(|(_, a), (_, b)| {
            b.value(shipping)
                .cmp(&a.value(shipping))
                .then(a.head().cmp(&b.head()))
        });
        let mut not_applied = self.not_applied;
        let mut choices = choices.into_iter();
        let Some((winner_is_stack, winner)) = choices.next() else {
            return outcome(set, basket, None, not_applied);
        };
        let explain = Explainer {
            set,
            currency: ctx.currency,
            shipping,
        };
        for (_, loser) in choices {
            let reason = explain.lost(&winner, winner_is_stack, &loser);
            not_applied.extend(loser.applied.iter().map(|(i, _)| (*i, reason.clone())));
        }
        outcome(set, basket, Some(winner), not_applied)
    }
}

/// Why the options that lost did.
struct Explainer<'s> {
    set: &'s PromotionSet,
    currency: Currency,
    shipping: i64,
}

impl Explainer<'_> {
    fn money(&self, v: i128) -> Money {
        Money::new(i64::try_from(v).unwrap_or(i64::MAX), self.currency)
    }

    fn lost(&self, winner: &Choice, winner_is_stack: bool, loser: &Choice) -> String {
        let head = &self.set.promotions[winner.head()];
        let by = if winner_is_stack {
            "the stackable promotions".to_string()
        } else {
            format!("exclusive promotion {}", head.id)
        };
        let (won, lost) = (winner.value(self.shipping), loser.value(self.shipping));
        if won > lost {
            return format!(
                "beaten by {by} ({} > {})",
                self.money(won),
                self.money(lost)
            );
        }
        let other = &self.set.promotions[loser.head()];
        let why = if head.spec.priority > other.spec.priority {
            "the higher priority"
        } else if head.created_seq < other.created_seq {
            "the older one"
        } else {
            "the first by id"
        };
        format!("tied with {by} at {}; {why} wins", self.money(won))
    }
}

fn outcome(
    set: &PromotionSet,
    basket: &Basket<'_>,
    winner: Option<Choice>,
    mut not_applied: Vec<(usize, String)>,
) -> PromotionOutcome {
    let currency = basket.currency;
    let mut line_discounts: BTreeMap<Sku, Money> = BTreeMap::new();
    let mut applied = Vec::new();
    let mut gifts = Vec::new();
    let mut free_shipping = false;
    for (index, effect) in winner.iter().flat_map(|w| &w.applied) {
        let promotion = &set.promotions[*index];
        for (line, discount) in &effect.discounts {
            let slot = line_discounts
                .entry(basket.lines[*line].line.sku.clone())
                .or_insert(Money::zero(currency));
            slot.minor = slot.minor.saturating_add(*discount);
        }
        if let Some((sku, quantity, _)) = &effect.gift {
            gifts.push(Gift {
                sku: sku.clone(),
                quantity: *quantity,
                promotion: promotion.id.clone(),
            });
        }
        free_shipping |= effect.free_shipping;
        applied.push(Applied {
            id: promotion.id.clone(),
            name: promotion.name.clone(),
            amount: Money::new(effect.amount(), currency),
            times: effect.times,
        });
    }
    not_applied.sort_by_key(|(i, _)| *i);
    let discount = line_discounts
        .values()
        .fold(0i64, |sum, m| sum.saturating_add(m.minor));
    PromotionOutcome {
        line_discounts,
        discount: Money::new(discount, currency),
        free_shipping,
        gifts,
        applied,
        not_applied: not_applied
            .into_iter()
            .map(|(i, reason)| NotApplied {
                id: set.promotions[i].id.clone(),
                name: set.promotions[i].name.clone(),
                reason,
            })
            .collect(),
    }
}
