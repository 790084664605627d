//! A customer's (or an anonymous shopper's) profile: what they did, on which channels, and what
//! it was worth. Identity and consents are not copied here: they are read from the customer
//! record when the profile is shown, so erasing the record erases them everywhere.

use super::segments::{Activity, Membership};
use super::{event_money, event_product, event_store, normalize_query};
use crate::codec::Stored;
use crate::event::{Event, EventKind, Subject};
use crate::ids::AnonymousId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// How many recent product views and searches a profile keeps.
pub const RECENT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub subject: Subject,
    /// Anonymous ids joined into this customer's profile (at sign-in or registration).
    #[serde(default)]
    pub anonymous_ids: BTreeSet<AnonymousId>,
    /// Events per channel.
    #[serde(default)]
    pub channels: BTreeMap<String, u64>,
    /// Newest first.
    #[serde(default)]
    pub recent_views: Vec<RecentView>,
    /// Newest first.
    #[serde(default)]
    pub searches: Vec<RecentSearch>,
    #[serde(default)]
    pub basket: Option<BasketSummary>,
    #[serde(default)]
    pub orders: u64,
    /// Per currency, in minor units: orders placed less refunds.
    #[serde(default)]
    pub lifetime_value: BTreeMap<String, i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_seen: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(default)]
    pub stores_visited: BTreeSet<String>,
    #[serde(default)]
    pub events: u64,
    /// The keys of the segments this profile is in, sorted (kept by the segments engine).
    #[serde(default)]
    pub segments: Vec<String>,
    /// Segment id → membership (key and since when), kept by the segments engine.
    #[serde(default)]
    pub memberships: BTreeMap<String, Membership>,
    /// Hourly and total event counts per fact, for segment rules.
    #[serde(default)]
    pub activity: Activity,
    /// When time passing alone could next change a membership (see
    /// [`super::segments::reconcile`]).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub segments_due: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub product: String,
    pub channel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSearch {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub query: String,
    pub results: Option<u64>,
    pub channel: String,
}

/// The current basket as the events tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketSummary {
    pub basket: String,
    /// SKU → quantity.
    pub lines: BTreeMap<String, u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Stored for Profile {
    const KIND: &'static str = "profile";
    const VERSION: u16 = 1;
}

impl Profile {
    pub fn new(subject: Subject) -> Profile {
        Profile {
            subject,
            anonymous_ids: BTreeSet::new(),
            channels: BTreeMap::new(),
            recent_views: Vec::new(),
            searches: Vec::new(),
            basket: None,
            orders: 0,
            lifetime_value: BTreeMap::new(),
            first_seen: None,
            last_seen: None,
            stores_visited: BTreeSet::new(),
            events: 0,
            segments: Vec::new(),
            memberships: BTreeMap::new(),
            activity: Activity::default(),
            segments_due: None,
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, e: &Event) {
        let channel = e.channel.as_str().to_string();
        self.events += 1;
        self.activity.apply(e);
        *self.channels.entry(channel.clone()).or_default() += 1;
        self.seen(e.at);
        if matches!(e.channel, crate::Channel::Pos | crate::Channel::Board)
            || e.payload.contains_key("store")
        {
            self.stores_visited.insert(event_store(e).to_string());
        }
        match e.kind {
            EventKind::ProductView => {
                if let Some(product) = event_product(e) {
                    push_recent(
                        &mut self.recent_views,
                        RecentView {
                            at: e.at,
                            product: product.to_string(),
                            channel,
                        },
                        |v| v.at,
                    );
                }
            }
            EventKind::Search => {
                if let Some(q) = e.payload.get("query") {
                    push_recent(
                        &mut self.searches,
                        RecentSearch {
                            at: e.at,
                            query: normalize_query(q),
                            results: e.payload.get("results").and_then(|r| r.parse().ok()),
                            channel,
                        },
                        |s| s.at,
                    );
                }
            }
            EventKind::BasketLineAdded
            | EventKind::BasketLineChanged
            | EventKind::BasketLineRemoved
            | EventKind::BasketCleared => self.basket_change(e),
            EventKind::BasketMerged => {
                if let Some(into) = e.payload.get("into") {
                    let lines = self.basket.take().map(|b| b.lines).unwrap_or_default();
                    self.basket = Some(BasketSummary {
                        basket: into.clone(),
                        lines,
                        updated_at: e.at,
                    });
                }
            }
            EventKind::OrderPlaced => {
                self.orders += 1;
                if let Some(m) = event_money(e) {
                    *self
                        .lifetime_value
                        .entry(m.currency.code().to_string())
                        .or_default() += m.minor;
                }
                let ordered = e.payload.get("basket");
                if self.basket.as_ref().map(|b| &b.basket) == ordered {
                    self.basket = None;
                }
            }
            EventKind::OrderRefunded | EventKind::OrderCancelled => {
                if let Some(m) = event_money(e).filter(|m| m.minor > 0) {
                    *self
                        .lifetime_value
                        .entry(m.currency.code().to_string())
                        .or_default() -= m.minor;
                }
            }
            _ => {}
        }
    }

    fn seen(&mut self, at: OffsetDateTime) {
        self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));
    }

    fn basket_change(&mut self, e: &Event) {
        let Some(basket) = e.payload.get("basket") else {
            return;
        };
        let summary = match &mut self.basket {
            Some(b) if &b.basket == basket => b,
            slot => slot.insert(BasketSummary {
                basket: basket.clone(),
                lines: BTreeMap::new(),
                updated_at: e.at,
            }),
        };
        summary.updated_at = summary.updated_at.max(e.at);
        let sku = e.payload.get("sku").cloned().unwrap_or_default();
        let quantity: u64 = e
            .payload
            .get("quantity")
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        match e.kind {
            EventKind::BasketLineAdded => *summary.lines.entry(sku).or_default() += quantity,
            EventKind::BasketLineChanged => {
                summary.lines.insert(sku, quantity);
            }
            EventKind::BasketLineRemoved => {
                summary.lines.remove(&sku);
            }
            _ => summary.lines.clear(),
        }
    }

    /// Joins an anonymous shopper's profile into this (the customer's) one.
    pub fn absorb(&mut self, other: Profile) {
        if let Subject::Anonymous(a) = other.subject {
            self.anonymous_ids.insert(a);
        }
        self.anonymous_ids.extend(other.anonymous_ids);
        for (channel, n) in other.channels {
            *self.channels.entry(channel).or_default() += n;
        }
        for v in other.recent_views {
            push_recent(&mut self.recent_views, v, |v| v.at);
        }
        for s in other.searches {
            push_recent(&mut self.searches, s, |s| s.at);
        }
        if let Some(b) = other.basket {
            if self
                .basket
                .as_ref()
                .is_none_or(|mine| mine.updated_at < b.updated_at)
            {
                self.basket = Some(b);
            }
        }
        self.orders += other.orders;
        for (currency, minor) in other.lifetime_value {
            *self.lifetime_value.entry(currency).or_default() += minor;
        }
        for at in other.first_seen.into_iter().chain(other.last_seen) {
            self.seen(at);
        }
        self.stores_visited.extend(other.stores_visited);
        self.events += other.events;
        self.activity.absorb(other.activity);
    }

    /// Removes what could identify the person (erasure): the joined anonymous ids, search
    /// texts, the basket id and segment memberships; counts, channels and values stay.
    pub fn erase(&mut self, pseudonym: Subject) {
        self.subject = pseudonym;
        self.anonymous_ids.clear();
        self.searches.clear();
        self.basket = None;
        self.segments.clear();
        self.memberships.clear();
        self.segments_due = None;
        self.activity.erase();
    }
}

/// Inserts newest first by time and keeps the newest [`RECENT`].
fn push_recent<T>(list: &mut Vec<T>, item: T, at: impl Fn(&T) -> OffsetDateTime) {
    let when = at(&item);
    let position = list.iter().position(|x| at(x) < when).unwrap_or(list.len());
    list.insert(position, item);
    list.truncate(RECENT);
}
