//! Interaction events: every view, search, basket change and sign-in on every channel, recorded
//! for the digital experience platform (profiles, analytics, personalization, automation).

use crate::channel::Channel;
use crate::codec::Stored;
use crate::ids::{AnonymousId, CustomerId, EventId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Who acted: a known customer, or an anonymous shopper (browser or app install).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Customer(CustomerId),
    Anonymous(AnonymousId),
}

/// What happened. Newer versions may add kinds; an unknown one reads as [`EventKind::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PageView,
    ProductView,
    Search,
    BasketLineAdded,
    BasketLineChanged,
    BasketLineRemoved,
    BasketCleared,
    BasketMerged,
    /// A coupon code entered on a basket (payload: `basket`, `code`).
    CouponApplied,
    CouponRemoved,
    Registered,
    SignedIn,
    SignedOut,
    CheckoutStarted,
    CheckoutCancelled,
    CheckoutExpired,
    PaymentFailed,
    PaymentSucceeded,
    OrderPlaced,
    OrderRefunded,
    OrderCancelled,
    /// The OMS or the carrier moved an order on (payload: `status`, `source`).
    OrderUpdated,
    /// A board showed an item (payload: `board`, `store`, `item`, `segment`?).
    BoardImpression,
    /// A shopper touched or scanned at a board (payload: `board`, `store`, `item`?, `action`).
    BoardInteraction,
    /// One turn of a conversation with the assistant, by voice or chat (payload: `intent`,
    /// `outcome`).
    AssistantTurn,
    /// A shopper was shown an experiment's variant (payload: `experiment`, `variant`); recorded
    /// once per experiment and subject, at the first exposure.
    ExperimentExposure,
    /// The customer gave or withdrew a consent (payload: `channel`, `purpose`, `granted`,
    /// `source`).
    ConsentChanged,
    #[serde(other)]
    Unknown,
}

/// One interaction. `payload` holds the kind's details as text (e.g. `sku`, `quantity`,
/// `query`, `results`, `path`), so new details need no schema change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub subject: Subject,
    pub channel: Channel,
    pub kind: EventKind,
    #[serde(default)]
    pub payload: BTreeMap<String, String>,
}

impl Event {
    /// A new event now-ish: the caller passes the time.
    pub fn new(at: OffsetDateTime, subject: Subject, channel: Channel, kind: EventKind) -> Event {
        Event {
            id: EventId::new(),
            at,
            subject,
            channel,
            kind,
            payload: BTreeMap::new(),
        }
    }

    /// Adds a payload entry.
    pub fn with(mut self, key: &str, value: impl ToString) -> Event {
        self.payload.insert(key.to_string(), value.to_string());
        self
    }
}

impl Stored for Event {
    const KIND: &'static str = "event";
    const VERSION: u16 = 1;
}

/// Events stored together in the log: `events[i]` has the append sequence `first + i`. One
/// record per few hundred events keeps an append to one write per chunk (plus a small id index
/// entry per event), and a reader in append order decodes chunks instead of looking up events
/// one by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventChunk {
    pub first: u64,
    pub events: Vec<Event>,
}

impl EventChunk {
    /// The sequence of the chunk's last event (`first - 1` when empty).
    pub fn last(&self) -> u64 {
        (self.first + self.events.len() as u64).saturating_sub(1)
    }
}

impl Stored for EventChunk {
    const KIND: &'static str = "event_chunk";
    const VERSION: u16 = 1;
}

/// An [`EventChunk`] over borrowed events: encodes to the same bytes, so the log's writer can
/// store events it keeps (for readers of the log's tail) without a copy.
#[derive(Debug, Serialize)]
pub struct EventChunkRef<'a> {
    pub first: u64,
    pub events: &'a [&'a Event],
}

impl EventChunkRef<'_> {
    /// The stored bytes, as [`crate::codec::encode`] of the equivalent [`EventChunk`].
    pub fn encode(&self) -> Result<Vec<u8>, crate::codec::CodecError> {
        crate::codec::encode_as::<EventChunk, _>(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn a_borrowed_chunk_encodes_to_the_bytes_of_the_owned_one() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let events: Vec<Event> = (0..3)
            .map(|i| {
                Event::new(
                    at,
                    Subject::Customer(CustomerId::new()),
                    Channel::Web,
                    EventKind::Search,
                )
                .with("query", format!("coffee {i}"))
            })
            .collect();
        let owned = EventChunk {
            first: 41,
            events: events.clone(),
        };
        let refs: Vec<&Event> = events.iter().collect();
        let borrowed = EventChunkRef {
            first: 41,
            events: &refs,
        }
        .encode()
        .expect("encodes");
        assert_eq!(borrowed, encode(&owned).expect("encodes"));
        assert_eq!(decode::<EventChunk>(&borrowed), Ok(owned));
    }

    #[test]
    fn events_round_trip_and_tolerate_new_kinds() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let e = Event::new(
            at,
            Subject::Customer(CustomerId::new()),
            Channel::Web,
            EventKind::Search,
        )
        .with("query", "coffee")
        .with("results", 12);
        assert_eq!(decode::<Event>(&encode(&e).expect("encodes")), Ok(e));
        assert_eq!(
            serde_json::from_str::<EventKind>("\"hologram_wave\"").ok(),
            Some(EventKind::Unknown)
        );
    }
}
