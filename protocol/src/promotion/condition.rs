//! Whether a promotion may apply to a basket at all: its currency, its usage limits and its
//! conditions. Each refusal is a sentence for the explanation.

use super::engine::{Basket, PromotionContext};
use super::spec::{weekday_name, Condition, Promotion, Target};
use std::fmt::Display;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset, Weekday};

/// `Ok` when `promotion` may apply in `ctx`, else why not (the first reason found, checking the
/// currency, then the limits, then the conditions in their order).
pub(super) fn eligibility(
    promotion: &Promotion,
    basket: &Basket<'_>,
    ctx: &PromotionContext,
) -> Result<(), String> {
    let spec = &promotion.spec;
    if let Some(other) = spec
        .amounts()
        .into_iter()
        .find(|m| m.currency != ctx.currency)
    {
        return Err(format!(
            "its amounts are in {}, the basket is in {}",
            other.currency, ctx.currency
        ));
    }
    let usage = ctx.usage.get(&promotion.id).copied().unwrap_or_default();
    if let Some(limit) = spec.limits.per_customer {
        if !ctx.known_customer {
            let uses = if limit == 1 { "use" } else { "uses" };
            return Err(format!(
                "limited to {limit} {uses} per customer: sign in to get it"
            ));
        }
        if usage.by_customer >= limit {
            return Err(format!(
                "limit reached: {} of {limit} uses by this customer",
                usage.by_customer
            ));
        }
    }
    if let Some(limit) = spec.limits.total {
        if usage.total >= limit {
            return Err(format!(
                "limit reached: {} of {limit} uses in total",
                usage.total
            ));
        }
    }
    if spec.limits.per_order == Some(0) {
        return Err("limit reached: 0 applications per order".into());
    }
    for condition in &spec.conditions {
        check(condition, promotion, basket, ctx)?;
    }
    Ok(())
}

fn check(
    condition: &Condition,
    promotion: &Promotion,
    basket: &Basket<'_>,
    ctx: &PromotionContext,
) -> Result<(), String> {
    match condition {
        Condition::MinSubtotal { amount } => {
            ok_or(i128::from(amount.minor) <= basket.subtotal, || {
                format!("needs a basket of at least {amount}")
            })
        }
        Condition::MinQuantity { quantity, target } => {
            let units: u64 = basket
                .lines
                .iter()
                .filter(|l| target.matches(l.line))
                .map(|l| u64::from(l.line.quantity))
                .sum();
            ok_or(units >= u64::from(*quantity), || match target {
                Target::All => format!("needs at least {quantity} items (the basket has {units})"),
                _ => format!(
                    "needs at least {quantity} items of its products (the basket has {units})"
                ),
            })
        }
        Condition::Skus { skus } => ok_or(
            basket.lines.iter().any(|l| skus.contains(&l.line.sku)),
            || format!("needs {} in the basket", one_of(skus)),
        ),
        Condition::Categories { categories } => ok_or(
            basket
                .lines
                .iter()
                .any(|l| categories.contains(&l.line.category)),
            || format!("needs a product of {} in the basket", one_of(categories)),
        ),
        Condition::Brands { brands } => ok_or(
            basket.lines.iter().any(|l| brands.contains(&l.line.brand)),
            || format!("needs a product of {} in the basket", one_of(brands)),
        ),
        Condition::Segment { any_of } => {
            ok_or(any_of.iter().any(|s| ctx.segments.contains(s)), || {
                format!("only for customers of segment {}", one_of(any_of))
            })
        }
        Condition::Channel { any_of } => ok_or(any_of.contains(&ctx.channel), || {
            format!("not on channel {}", ctx.channel.as_str())
        }),
        Condition::Store { any_of } => match &ctx.store {
            Some(store) if any_of.contains(store) => Ok(()),
            Some(store) => Err(format!("not in store {store}")),
            None => Err(format!("only in store {}", one_of(any_of))),
        },
        Condition::Window {
            from,
            until,
            weekdays,
            from_minute,
            until_minute,
        } => in_window(
            ctx.now,
            (*from, *until),
            weekdays,
            (*from_minute, *until_minute),
        ),
        Condition::FirstOrder => ok_or(ctx.first_order, || "only for a first order".into()),
        Condition::Coupon => ok_or(ctx.coupons.contains(&promotion.id), || {
            "needs a coupon".into()
        }),
        Condition::Experiment {
            experiment,
            variants,
        } => match ctx.experiments.get(experiment) {
            Some(v) if variants.contains(v) => Ok(()),
            Some(v) => Err(format!(
                "only for variant {} of experiment {experiment}, not {v}",
                one_of(variants)
            )),
            None => Err(format!("only for shoppers in experiment {experiment}")),
        },
    }
}

fn ok_or(holds: bool, reason: impl FnOnce() -> String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(reason())
    }
}

/// `A`, or `one of A, B, C`.
fn one_of<T: Display>(items: &[T]) -> String {
    let names: Vec<String> = items.iter().map(ToString::to_string).collect();
    match names.len() {
        1 => names.join(""),
        _ => format!("one of {}", names.join(", ")),
    }
}

fn in_window(
    now: OffsetDateTime,
    (from, until): (Option<OffsetDateTime>, Option<OffsetDateTime>),
    weekdays: &[Weekday],
    (from_minute, until_minute): (Option<u16>, Option<u16>),
) -> Result<(), String> {
    let now = now.to_offset(UtcOffset::UTC);
    let stamp = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
    if let Some(from) = from.filter(|f| now < *f) {
        return Err(format!("outside its time window: starts {}", stamp(from)));
    }
    if let Some(until) = until.filter(|u| now >= *u) {
        return Err(format!("outside its time window: ended {}", stamp(until)));
    }
    if !weekdays.is_empty() && !weekdays.contains(&now.weekday()) {
        let days: Vec<&str> = weekdays.iter().map(|d| weekday_name(*d)).collect();
        return Err(format!(
            "outside its time window: only on {}",
            days.join(", ")
        ));
    }
    if from_minute.is_some() || until_minute.is_some() {
        let start = from_minute.unwrap_or(0);
        let end = until_minute.unwrap_or(24 * 60);
        let minute = u16::from(now.hour()) * 60 + u16::from(now.minute());
        let inside = if start <= end {
            start <= minute && minute < end
        } else {
            minute >= start || minute < end
        };
        if !inside {
            let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
            return Err(format!(
                "outside its time window: only from {} to {} UTC",
                hhmm(start),
                hhmm(end)
            ));
        }
    }
    Ok(())
}
