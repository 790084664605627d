//! A profile's activity as segment rules count it: per whole hour, how many events of each
//! fact (`viewed`, `viewed:category=coffee`, …), kept for [`MAX_WINDOW_HOURS`] before the
//! newest hour seen, plus totals ever. Folding is order-independent (sums, and a cut-off that
//! depends only on the newest event), so late events land in their own hour and any batching
//! gives the same state as a recomputation.

use super::{hour_of, Fact, MAX_WINDOW_HOURS};
use crate::event::{Event, EventKind};
use crate::experience::{event_product, event_store, normalize_query};
use crate::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hourly and total event counts per fact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Hour since the Unix epoch (UTC) → fact key → events.
    #[serde(default)]
    pub hours: BTreeMap<u32, BTreeMap<String, u32>>,
    /// Fact key → events ever.
    #[serde(default)]
    pub totals: BTreeMap<String, u64>,
}

/// The counter key of a fact, with an optional `(field, value)` filter.
pub fn fact_key(fact: Fact, filter: Option<(&str, &str)>) -> String {
    match filter {
        None => fact.name().to_string(),
        Some((field, value)) => format!("{}:{field}={value}", fact.name()),
    }
}

/// The counter keys one event adds to.
fn keys_of(e: &Event) -> Vec<String> {
    let mut keys = vec![
        fact_key(Fact::ChannelUsed, None),
        fact_key(Fact::ChannelUsed, Some(("channel", e.channel.as_str()))),
    ];
    match e.kind {
        EventKind::ProductView => {
            keys.push(fact_key(Fact::Viewed, None));
            if let Some(product) = event_product(e) {
                keys.push(fact_key(Fact::Viewed, Some(("product", product))));
            }
            if let Some(category) = e.payload.get("category").filter(|c| !c.is_empty()) {
                keys.push(fact_key(
                    Fact::Viewed,
                    Some(("category", category.as_str())),
                ));
            }
        }
        EventKind::BasketLineAdded => {
            keys.push(fact_key(Fact::AddedToBasket, None));
            if let Some(product) = event_product(e) {
                keys.push(fact_key(Fact::AddedToBasket, Some(("product", product))));
            }
        }
        EventKind::OrderPlaced => keys.push(fact_key(Fact::Ordered, None)),
        EventKind::Search => {
            keys.push(fact_key(Fact::Searched, None));
            if let Some(q) = e.payload.get("query") {
                let q = normalize_query(q);
                if !q.is_empty() {
                    keys.push(fact_key(Fact::Searched, Some(("query", q.as_str()))));
                }
            }
        }
        _ => {}
    }
    let at_store =
        matches!(e.channel, Channel::Pos | Channel::Board) || e.payload.contains_key("store");
    let store = event_store(e);
    if at_store && store != "online" {
        keys.push(fact_key(Fact::VisitedStore, None));
        keys.push(fact_key(Fact::VisitedStore, Some(("store", store))));
    }
    keys
}

impl Activity {
    /// Folds one event in.
    pub fn apply(&mut self, e: &Event) {
        let hour = hour_of(e.at);
        let keys = keys_of(e);
        let bucket = self.hours.entry(hour).or_default();
        for k in &keys {
            *bucket.entry(k.clone()).or_default() += 1;
        }
        for k in keys {
            *self.totals.entry(k).or_default() += 1;
        }
        self.prune();
    }

    /// Adds another profile's activity (an anonymous shopper joined to a customer).
    pub fn absorb(&mut self, other: Activity) {
        for (hour, facts) in other.hours {
            let bucket = self.hours.entry(hour).or_default();
            for (k, n) in facts {
                *bucket.entry(k).or_default() += n;
            }
        }
        for (k, n) in other.totals {
            *self.totals.entry(k).or_default() += n;
        }
        self.prune();
    }

    /// Drops search texts (erasure): they may identify the person.
    pub fn erase(&mut self) {
        let searched = format!("{}:", Fact::Searched.name());
        for facts in self.hours.values_mut() {
            facts.retain(|k, _| !k.starts_with(&searched));
        }
        self.totals.retain(|k, _| !k.starts_with(&searched));
    }

    /// Drops hours more than [`MAX_WINDOW_HOURS`] before the newest: no window reaches them.
    fn prune(&mut self) {
        let Some(newest) = self.hours.keys().next_back().copied() else {
            return;
        };
        let keep = newest.saturating_sub(MAX_WINDOW_HOURS);
        if self
            .hours
            .keys()
            .next()
            .is_some_and(|oldest| *oldest < keep)
        {
            self.hours = self.hours.split_off(&keep);
        }
    }
}
