//! The experience layer's stored state, folded from the event log: a customer's [`Profile`]
//! (the micro view) and the daily [`Aggregates`] behind the reports (the macro view). Both are
//! pure folds over [`Event`]s, so the hub updates them incrementally as events arrive and a
//! test can compare them with a full recomputation.

pub mod aggregates;
pub mod profile;
pub mod segments;
pub mod sketch;

pub use aggregates::{Aggregates, BasketTrack, ChannelDay, DayKey, ProductCounts, Revenue};
pub use profile::{BasketSummary, Profile, RecentSearch, RecentView};
pub use sketch::{subject_hash, DistinctSketch};

use crate::event::Event;
use crate::money::{Currency, Money};

/// The money an order or refund event carries: `amount` (a decimal) with `currency`, or the
/// older `total`/`amount` forms `EUR 12.50` and a bare decimal with `currency`.
pub fn event_money(event: &Event) -> Option<Money> {
    let text = event
        .payload
        .get("amount")
        .or_else(|| event.payload.get("total"))?;
    let (currency, decimal) = match text.trim().split_once(' ') {
        Some((code, decimal)) => (Currency::parse(code).ok()?, decimal),
        None => (
            Currency::parse(event.payload.get("currency")?).ok()?,
            text.as_str(),
        ),
    };
    Money::parse_decimal(decimal, currency).ok()
}

/// The product an event is about: its slug when it carries one, else its SKU.
pub fn event_product(event: &Event) -> Option<&str> {
    ["slug", "sku"]
        .iter()
        .filter_map(|k| event.payload.get(*k))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// The units of an order event: `products` (`slug:quantity,…`) when present, else `skus`.
pub fn event_items(event: &Event) -> Vec<(&str, u64)> {
    let list = event
        .payload
        .get("products")
        .or_else(|| event.payload.get("skus"));
    list.map(|l| {
        l.split(',')
            .filter_map(|item| {
                let (name, qty) = item.rsplit_once(':')?;
                Some((name, qty.parse().ok()?))
            })
            .filter(|(name, _)| !name.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The store an event happened at or is fulfilled from: `store`, else `location`, else
/// `online`.
pub fn event_store(event: &Event) -> &str {
    event
        .payload
        .get("store")
        .or_else(|| event.payload.get("location"))
        .map_or("online", String::as_str)
}

/// A search text as the reports count it: trimmed, lower case, inner spaces collapsed.
pub fn normalize_query(query: &str) -> String {
    query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests;
