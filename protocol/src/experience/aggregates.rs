//! The macro view: per day (UTC) and channel, the funnel's distinct subjects, revenue and
//! orders per store, product and search counts, and basket abandonment.
//!
//! Every update is order-independent (set unions, sums, a minimum), so the state after any
//! interleaving of batches and late events equals a recomputation over the whole log. Basket
//! abandonment is counted on the day and channel of a basket's first add; when a late event
//! moves that first add (or an order arrives for it), the basket's old contribution is taken
//! back and its new one added.

use super::{event_items, event_money, event_product, event_store, normalize_query};
use super::{subject_hash, DistinctSketch};
use crate::codec::Stored;
use crate::event::{Event, EventKind};
use crate::ids::EventId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::{Date, OffsetDateTime};

/// The funnel's stages, in order.
pub const FUNNEL: [EventKind; 4] = [
    EventKind::ProductView,
    EventKind::BasketLineAdded,
    EventKind::CheckoutStarted,
    EventKind::OrderPlaced,
];

/// A bucket: one UTC day on one channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DayKey {
    pub day: Date,
    pub channel: String,
}

impl DayKey {
    pub fn of(e: &Event) -> DayKey {
        DayKey {
            day: e.at.to_offset(time::UtcOffset::UTC).date(),
            channel: e.channel.as_str().to_string(),
        }
    }
}

/// One day on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDay {
    pub key: DayKey,
    /// Distinct subjects per [`FUNNEL`] stage.
    pub funnel: [DistinctSketch; 4],
    /// Store → currency → revenue.
    #[serde(default)]
    pub revenue: BTreeMap<String, BTreeMap<String, Revenue>>,
    /// Product (slug, else SKU) → counts.
    #[serde(default)]
    pub products: BTreeMap<String, ProductCounts>,
    /// Normalised search text → counts.
    #[serde(default)]
    pub searches: BTreeMap<String, SearchCounts>,
    /// Baskets whose first add was on this day and channel, and how many of them were ordered.
    #[serde(default)]
    pub baskets: u64,
    #[serde(default)]
    pub baskets_ordered: u64,
    #[serde(default)]
    pub events: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revenue {
    pub orders: u64,
    pub gross_minor: i64,
    pub refunded_minor: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCounts {
    pub views: u64,
    pub adds: u64,
    pub units: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchCounts {
    pub searches: u64,
    pub no_results: u64,
}

/// What the aggregates remember of one basket, to count its abandonment once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketTrack {
    pub basket: String,
    /// The earliest add: (time, event id) decide, the bucket is counted.
    pub first_add: Option<FirstAdd>,
    pub ordered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstAdd {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub event: EventId,
    pub key: DayKey,
}

impl Stored for ChannelDay {
    const KIND: &'static str = "analytics_day";
    const VERSION: u16 = 1;
}

impl Stored for BasketTrack {
    const KIND: &'static str = "analytics_basket";
    const VERSION: u16 = 1;
}

impl ChannelDay {
    pub fn new(key: DayKey) -> ChannelDay {
        ChannelDay {
            key,
            funnel: Default::default(),
            revenue: BTreeMap::new(),
            products: BTreeMap::new(),
            searches: BTreeMap::new(),
            baskets: 0,
            baskets_ordered: 0,
            events: 0,
        }
    }
}

/// All buckets and basket tracks, with what changed since the last [`Aggregates::take_dirty`].
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    pub days: BTreeMap<DayKey, ChannelDay>,
    pub baskets: HashMap<String, BasketTrack>,
    dirty_days: BTreeSet<DayKey>,
    dirty_baskets: BTreeSet<String>,
}

impl PartialEq for Aggregates {
    fn eq(&self, other: &Aggregates) -> bool {
        self.days == other.days && self.baskets == other.baskets
    }
}

impl Aggregates {
    /// Rebuilds from stored buckets and tracks (nothing dirty).
    pub fn restore(
        days: impl IntoIterator<Item = ChannelDay>,
        baskets: impl IntoIterator<Item = BasketTrack>,
    ) -> Aggregates {
        Aggregates {
            days: days.into_iter().map(|d| (d.key.clone(), d)).collect(),
            baskets: baskets.into_iter().map(|b| (b.basket.clone(), b)).collect(),
            dirty_days: BTreeSet::new(),
            dirty_baskets: BTreeSet::new(),
        }
    }

    /// The buckets and basket tracks changed since the last call.
    pub fn take_dirty(&mut self) -> (Vec<ChannelDay>, Vec<BasketTrack>) {
        let days = std::mem::take(&mut self.dirty_days)
            .into_iter()
            .filter_map(|k| self.days.get(&k).cloned())
            .collect();
        let baskets = std::mem::take(&mut self.dirty_baskets)
            .into_iter()
            .filter_map(|b| self.baskets.get(&b).cloned())
            .collect();
        (days, baskets)
    }

    fn bucket(&mut self, key: &DayKey) -> &mut ChannelDay {
        if !self.dirty_days.contains(key) {
            self.dirty_days.insert(key.clone());
        }
        self.days
            .entry(key.clone())
            .or_insert_with(|| ChannelDay::new(key.clone()))
    }

    /// Folds one event in.
    pub fn apply(&mut self, e: &Event) {
        let key = DayKey::of(e);
        let day = self.bucket(&key);
        day.events += 1;
        if let Some(stage) = FUNNEL.iter().position(|k| *k == e.kind) {
            day.funnel[stage].insert(subject_hash(&e.subject));
        }
        match e.kind {
            EventKind::ProductView => {
                if let Some(p) = event_product(e) {
                    day.products.entry(p.to_string()).or_default().views += 1;
                }
            }
            EventKind::BasketLineAdded => {
                if let Some(p) = event_product(e) {
                    day.products.entry(p.to_string()).or_default().adds += 1;
                }
                if let Some(basket) = e.payload.get("basket") {
                    self.track(basket, |t| {
                        let earlier = t
                            .first_add
                            .as_ref()
                            .is_none_or(|f| (e.at, e.id) < (f.at, f.event));
                        if earlier {
                            t.first_add = Some(FirstAdd {
                                at: e.at,
                                event: e.id,
                                key: key.clone(),
                            });
                        }
                    });
                }
            }
            EventKind::Search => {
                if let Some(q) = e.payload.get("query") {
                    let counts = day.searches.entry(normalize_query(q)).or_default();
                    counts.searches += 1;
                    if e.payload.get("results").map(String::as_str) == Some("0") {
                        counts.no_results += 1;
                    }
                }
            }
            EventKind::OrderPlaced => {
                let store = event_store(e).to_string();
                if let Some(m) = event_money(e) {
                    let r = day
                        .revenue
                        .entry(store)
                        .or_default()
                        .entry(m.currency.code().to_string())
                        .or_default();
                    r.orders += 1;
                    r.gross_minor += m.minor;
                }
                for (product, units) in event_items(e) {
                    day.products.entry(product.to_string()).or_default().units += units;
                }
                if let Some(basket) = e.payload.get("basket") {
                    self.track(basket, |t| t.ordered = true);
                }
            }
            EventKind::OrderRefunded | EventKind::OrderCancelled => {
                if let Some(m) = event_money(e).filter(|m| m.minor > 0) {
                    day.revenue
                        .entry(event_store(e).to_string())
                        .or_default()
                        .entry(m.currency.code().to_string())
                        .or_default()
                        .refunded_minor += m.minor;
                }
            }
            _ => {}
        }
    }

    /// Changes a basket's track and moves its abandonment contribution accordingly.
    fn track(&mut self, basket: &str, change: impl FnOnce(&mut BasketTrack)) {
        let track = self
            .baskets
            .entry(basket.to_string())
            .or_insert_with(|| BasketTrack {
                basket: basket.to_string(),
                first_add: None,
                ordered: false,
            });
        let before = track.clone();
        change(track);
        if *track == before {
            return;
        }
        let after = track.clone();
        self.dirty_baskets.insert(basket.to_string());
        if let Some(f) = &before.first_add {
            let day = self.bucket(&f.key);
            day.baskets = day.baskets.saturating_sub(1);
            if before.ordered {
                day.baskets_ordered = day.baskets_ordered.saturating_sub(1);
            }
        }
        if let Some(f) = &after.first_add {
            let day = self.bucket(&f.key);
            day.baskets += 1;
            if after.ordered {
                day.baskets_ordered += 1;
            }
        }
    }
}
