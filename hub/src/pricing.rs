//! Pricing with promotions for the hub's channels: the context a basket is priced in (channel,
//! time, the coupons entered, a first order, whether the shopper is signed in, what free
//! shipping is worth), the live promotions from [`Offers`], and the one engine in `protocol` —
//! so the basket page, the app, a quote and a checkout agree to the cent.
//!
//! Free shipping is valued at the cheapest shipping option for the basket as it is: to the
//! shop's home country (its first market) on the basket page, to the destination in a quote and
//! a checkout — whichever method is then chosen. So a basket and a checkout to the home country
//! choose the same promotions, and picking a dearer method never changes which ones win.
//!
//! [`Offers`]: crate::actors::offers::Offers

use crate::actors::Deps;
use channels::backend::CouponStatus;
use protocol::checkout::LineDiscounts;
use protocol::pricing::{PricedBasket, PricingError};
use protocol::promotion::{PromotionContext, PromotionId};
use protocol::{Basket, BasketOwner, CatalogSnapshot, Channel, CustomerId, Money, Subject};
use time::OffsetDateTime;

/// What the hub knows about the shopper besides the basket.
#[derive(Debug, Clone, Copy)]
pub struct Hints {
    /// The channel the basket is priced for (the last one it was changed on; a checkout's own).
    pub channel: Channel,
    /// The customer has never ordered.
    pub first_order: bool,
    /// Whom an anonymous basket's A/B tests assign for: the anonymous id its last change came
    /// with (a customer's basket is always its customer's).
    pub assignee: Option<Subject>,
}

impl Default for Hints {
    fn default() -> Hints {
        Hints {
            channel: Channel::Web,
            first_order: false,
            assignee: None,
        }
    }
}

/// Whom A/B tests assign a shopper's request for: the signed-in customer, else the anonymous
/// id the client sent (none without one: a fresh id per request would change the variant).
pub fn assignee_of(shopper: &channels::Shopper) -> Option<Subject> {
    shopper
        .customer
        .map(Subject::Customer)
        .or(shopper.anonymous.map(Subject::Anonymous))
}

fn customer_of(basket: &Basket) -> Option<CustomerId> {
    match basket.owner {
        BasketOwner::Customer(c) => Some(c),
        BasketOwner::Anonymous => None,
    }
}

/// The basket's coupon codes, each with the promotion it unlocks now or why it does not.
type Coupons = Vec<(String, Result<PromotionId, String>)>;

/// The promotion context of a basket now, and what its coupon codes unlock.
pub fn context(
    deps: &Deps,
    basket: &Basket,
    hints: Hints,
    now: OffsetDateTime,
) -> (PromotionContext, Coupons) {
    let customer = customer_of(basket);
    let mut ctx = PromotionContext::new(basket.currency, hints.channel, now);
    ctx.first_order = hints.first_order && customer.is_some();
    ctx.known_customer = customer.is_some();
    // The basket's own pending checkout holds reservations: they are its own, not a use by
    // someone else.
    let own = basket.checkout;
    let coupons: Coupons = basket
        .coupons
        .iter()
        .map(|code| {
            (
                code.clone(),
                deps.offers.coupon_promotion_for(code, customer, now, own),
            )
        })
        .collect();
    for (_, unlocked) in &coupons {
        if let Ok(promotion) = unlocked {
            ctx.coupons.insert(promotion.clone());
        }
    }
    // Usage only matters for promotions with a limit on it.
    let limited: Vec<PromotionId> = deps
        .offers
        .live()
        .promotions()
        .iter()
        .filter(|p| p.spec.limits.per_customer.is_some() || p.spec.limits.total.is_some())
        .map(|p| p.id.clone())
        .collect();
    if !limited.is_empty() {
        ctx.usage = deps.offers.usage_for(customer, &limited, own);
    }
    ctx.experiments = experiment_variants(deps, basket, customer, hints);
    (ctx, coupons)
}

/// The shopper's variants of the experiments the live promotions are restricted to. A basket
/// with lines priced with a running promotion experiment is its owner's exposure to it; an
/// empty basket shows no promotion, so it exposes nobody.
fn experiment_variants(
    deps: &Deps,
    basket: &Basket,
    customer: Option<CustomerId>,
    hints: Hints,
) -> std::collections::BTreeMap<String, String> {
    let subject = customer.map(Subject::Customer).or(hints.assignee);
    let (Some(subject), false) = (subject, basket.lines.is_empty()) else {
        return Default::default();
    };
    let live = deps.offers.live();
    let keys: std::collections::BTreeSet<&str> = live
        .promotions()
        .iter()
        .flat_map(|p| &p.spec.conditions)
        .filter_map(|c| match c {
            protocol::promotion::Condition::Experiment { experiment, .. } => {
                Some(experiment.as_str())
            }
            _ => None,
        })
        .collect();
    if keys.is_empty() {
        return Default::default();
    }
    deps.experiments.for_pricing(keys, subject, hints.channel)
}

/// What free shipping is worth when promotions are compared: the price of the cheapest
/// shipping option to `country` for the basket as it is (no discount), or `None` when nothing
/// ships there.
pub fn shipping_value(
    deps: &Deps,
    catalog: &CatalogSnapshot,
    basket: &Basket,
    country: &str,
) -> Option<Money> {
    deps.checkout
        .pricing
        .shipping_options(basket, |sku| catalog.product_by_sku(sku), country)
        .ok()?
        .first()
        .map(|option| option.price)
}

/// The shop's home country: its first market's, where a basket is assumed to ship until the
/// shopper names a destination.
pub fn home_country(deps: &Deps) -> Option<&str> {
    deps.checkout
        .pricing
        .markets
        .first()
        .map(|m| m.country.as_str())
}

/// What each coupon code did to the priced basket, in words.
fn coupon_statuses(priced: &PricedBasket, coupons: Coupons) -> Vec<CouponStatus> {
    coupons
        .into_iter()
        .map(|(code, unlocked)| match unlocked {
            Ok(promotion) => {
                let applied = priced.promotions.applied.iter().any(|a| a.id == promotion);
                let message = (!applied).then(|| {
                    priced
                        .promotions
                        .not_applied
                        .iter()
                        .find(|n| n.id == promotion)
                        .map_or_else(
                            || "its promotion does not concern these items".to_string(),
                            |n| n.reason.clone(),
                        )
                });
                CouponStatus {
                    code,
                    applied,
                    message,
                }
            }
            Err(reason) => CouponStatus {
                code,
                applied: false,
                message: Some(reason),
            },
        })
        .collect()
}

/// Prices a basket with the live promotions: the priced basket and its coupons' statuses.
pub fn price(
    deps: &Deps,
    basket: &Basket,
    hints: Hints,
) -> Result<(PricedBasket, Vec<CouponStatus>), PricingError> {
    let catalog = deps.catalog.load();
    let (mut ctx, coupons) = context(deps, basket, hints, deps.clock.now());
    // Priced as a checkout to the home country would be (see the module docs).
    ctx.shipping = home_country(deps).and_then(|c| shipping_value(deps, &catalog, basket, c));
    let live = deps.offers.live();
    let mut priced = protocol::pricing::price_basket_with_promotions(
        basket,
        |sku| catalog.product_by_sku(sku),
        &live,
        &ctx,
    )?;
    // A promotion behind a coupon the shopper has not entered is nobody else's business: its
    // name is not shown to every basket (a private batch's promotion stays private). Nor is an
    // A/B test's promotion for another variant: knowing of it would bias the test.
    priced.promotions.not_applied.retain(|n| {
        let hidden = live.promotions().iter().any(|p| {
            p.id == n.id
                && p.spec.conditions.iter().any(|c| match c {
                    protocol::promotion::Condition::Coupon => !ctx.coupons.contains(&n.id),
                    protocol::promotion::Condition::Experiment { .. } => true,
                    _ => false,
                })
        });
        !hidden
    });
    let statuses = coupon_statuses(&priced, coupons);
    Ok((priced, statuses))
}

/// The promotions a checkout of this basket gets: its line discounts (for
/// [`protocol::checkout::price_checkout_with_line_discounts`]), the promotions that applied and
/// the coupon codes whose promotion applied (to redeem with the order).
pub struct CheckoutOffers {
    pub discounts: LineDiscounts,
    pub promotions: Vec<PromotionId>,
    pub coupons: Vec<String>,
    /// Codes on the basket that could not be used when this price was made (used up or held
    /// by another checkout, expired, ...), with the reason: a checkout refuses them rather
    /// than leave them out of the price.
    pub unusable: Vec<(String, String)>,
}

/// Evaluates the live promotions for a checkout of `basket` now; free shipping is worth
/// `shipping` (see [`shipping_value`]).
pub fn checkout_offers(
    deps: &Deps,
    catalog: &CatalogSnapshot,
    basket: &Basket,
    hints: Hints,
    shipping: Option<Money>,
) -> Result<CheckoutOffers, PricingError> {
    let (mut ctx, coupons) = context(deps, basket, hints, deps.clock.now());
    ctx.shipping = shipping;
    let live = deps.offers.live();
    let outcome =
        protocol::pricing::evaluate_basket(basket, |sku| catalog.product_by_sku(sku), &live, &ctx)?;
    let promotions: Vec<PromotionId> = outcome.applied.iter().map(|a| a.id.clone()).collect();
    let unusable = coupons
        .iter()
        .filter_map(|(code, unlocked)| {
            unlocked
                .as_ref()
                .err()
                .map(|reason| (code.clone(), reason.clone()))
        })
        .collect();
    let coupons = coupons
        .into_iter()
        .filter_map(|(code, unlocked)| {
            unlocked
                .ok()
                .filter(|p| {
                    promotions.contains(p) || outcome.gifts.iter().any(|g| &g.promotion == p)
                })
                .map(|_| code)
        })
        .collect();
    Ok(CheckoutOffers {
        discounts: LineDiscounts::from(&outcome),
        promotions,
        coupons,
        unusable,
    })
}
