//! Erasure of a customer's personal data, as pure rules: the durable job that makes it
//! resumable ([`ErasureJob`], its steps in order) and what is left of an event once it is
//! pseudonymised ([`pseudonymised`]: an allow-list of payload keys per kind, so a key nobody
//! reviewed — an app's own, or one added later — is dropped rather than kept).

use crate::codec::Stored;
use crate::event::{Event, EventKind, Subject};
use crate::ids::{AnonymousId, CustomerId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One step of an erasure, in the order they run. Each is idempotent: run again after a crash,
/// it finds nothing more to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStep {
    /// The profile moves to the pseudonym.
    Profile,
    /// Linked apps are unlinked.
    Links,
    /// Pending mail to the customer and dead letters addressed to them are dropped (before the
    /// record, whose email tells which they are).
    Outbox,
    /// The customer record: email, name, phone, loyalty number, password, consents, sessions.
    Record,
    /// The board audience record (segments).
    Audience,
    /// Orders: address and email replaced, through the actor of the order's basket.
    Orders,
    /// The event log: subject and payload of their events.
    Events,
    /// The A/B tests' records (assignments, the counter's tallies, sign-in joins): moved to
    /// the pseudonym, so the reports' counts stay as they were.
    Experiments,
    #[serde(other)]
    Unknown,
}

impl ErasureStep {
    /// Every step, in order.
    pub const ALL: [ErasureStep; 8] = [
        ErasureStep::Profile,
        ErasureStep::Links,
        ErasureStep::Outbox,
        ErasureStep::Record,
        ErasureStep::Audience,
        ErasureStep::Orders,
        ErasureStep::Events,
        ErasureStep::Experiments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErasureStep::Profile => "profile",
            ErasureStep::Links => "links",
            ErasureStep::Outbox => "outbox",
            ErasureStep::Record => "record",
            ErasureStep::Audience => "audience",
            ErasureStep::Orders => "orders",
            ErasureStep::Events => "events",
            ErasureStep::Experiments => "experiments",
            ErasureStep::Unknown => "unknown",
        }
    }
}

/// An erasure asked for and not finished: recorded durably before its first step, updated
/// after each, removed when the last is done. The hub resumes unfinished jobs at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureJob {
    pub customer: CustomerId,
    /// The stable pseudonym the customer's data moves to.
    pub pseudonym: AnonymousId,
    /// Anonymous ids joined to the customer, read before the profile moved (their events are
    /// the customer's too).
    pub linked: Vec<AnonymousId>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// The steps finished so far.
    #[serde(default)]
    pub done: Vec<ErasureStep>,
}

impl ErasureJob {
    /// The next step to run, `None` when every step is done.
    pub fn next_step(&self) -> Option<ErasureStep> {
        ErasureStep::ALL
            .into_iter()
            .find(|s| !self.done.contains(s))
    }

    /// Marks a step finished.
    pub fn finish(&mut self, step: ErasureStep) {
        if !self.done.contains(&step) {
            self.done.push(step);
        }
    }

    /// The placeholder address the erased record and orders carry (never deliverable).
    pub fn placeholder_email(&self) -> String {
        placeholder_email(self.pseudonym)
    }
}

impl Stored for ErasureJob {
    const KIND: &'static str = "erasure_job";
    const VERSION: u16 = 1;
}

/// The placeholder email of an erased customer.
pub fn placeholder_email(pseudonym: AnonymousId) -> String {
    format!("erased-{pseudonym}@erased.invalid")
}

/// The payload keys an event of `kind` keeps once pseudonymised: ids of things (baskets,
/// orders, products, boards), counts and amounts; never text a person typed or that names or
/// reaches them (`query`, `code`, `email`, `anonymous_id`, …). A kind not listed keeps nothing.
pub fn kept_keys(kind: EventKind) -> &'static [&'static str] {
    use EventKind::*;
    match kind {
        PageView => &["status"],
        ProductView => &["slug", "sku", "category"],
        Search => &["results"],
        BasketLineAdded => &[
            "basket",
            "sku",
            "quantity",
            "slug",
            "store",
            "returned_from_till",
        ],
        BasketLineChanged => &["basket", "sku", "quantity"],
        BasketLineRemoved => &["basket", "sku"],
        BasketCleared => &["basket"],
        BasketMerged => &["into", "from"],
        CouponApplied | CouponRemoved => &["basket"],
        Registered | SignedIn | SignedOut => &[],
        CheckoutStarted => &["basket", "checkout", "total"],
        CheckoutCancelled | CheckoutExpired | PaymentFailed => &["basket", "checkout", "reason"],
        PaymentSucceeded | OrderPlaced => &[
            "checkout",
            "order",
            "number",
            "total",
            "amount",
            "currency",
            "basket",
            "store",
            "products",
            "skus",
            "promotions",
            "sale",
            "location",
            "replica",
            "lines",
        ],
        OrderRefunded | OrderCancelled => &["order", "amount", "store"],
        OrderUpdated => &["order", "number", "status", "source"],
        BoardImpression => &["board", "store", "item", "segment"],
        BoardInteraction => &["board", "store", "item", "action"],
        AssistantTurn => &["intent", "outcome"],
        ConsentChanged => &["channel", "purpose", "granted", "source"],
        ExperimentExposure => &["experiment", "variant", "surface"],
        Unknown => &[],
    }
}

/// The event as erasure leaves it: the pseudonym as subject, and only the kind's
/// [`kept_keys`] in the payload. Id, time, channel and kind stay.
pub fn pseudonymised(mut e: Event, pseudonym: AnonymousId) -> Event {
    e.subject = Subject::Anonymous(pseudonym);
    let kept = kept_keys(e.kind);
    e.payload.retain(|k, _| kept.contains(&k.as_str()));
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time")
    }

    /// A kind, a payload as sent, and the keys left after pseudonymisation.
    type Case = (
        EventKind,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn payloads_keep_only_their_kinds_allowed_keys() {
        let pseudonym = AnonymousId::new();
        let table: [Case; 5] = [
            (
                EventKind::Search,
                &[("query", "ada lovelace's address"), ("results", "0")],
                &["results"],
            ),
            (
                EventKind::BasketLineAdded,
                &[
                    ("basket", "B"),
                    ("sku", "BEANS"),
                    ("note", "for Ada, 1 Main St"),
                ],
                &["basket", "sku"],
            ),
            (
                EventKind::SignedIn,
                &[("anonymous_id", "A"), ("email", "ada@example.com")],
                &[],
            ),
            (
                EventKind::BoardInteraction,
                &[
                    ("board", "b1"),
                    ("action", "scan"),
                    ("loyalty_number", "70004242"),
                ],
                &["action", "board"],
            ),
            (EventKind::Unknown, &[("whatever", "x")], &[]),
        ];
        for (kind, payload, kept) in table {
            let mut e = Event::new(
                at(),
                Subject::Customer(CustomerId::new()),
                Channel::Web,
                kind,
            );
            for (k, v) in payload {
                e = e.with(k, v);
            }
            let id = e.id;
            let p = pseudonymised(e, pseudonym);
            assert_eq!(p.subject, Subject::Anonymous(pseudonym));
            assert_eq!(p.id, id);
            let keys: Vec<&str> = p.payload.keys().map(String::as_str).collect();
            assert_eq!(keys, kept, "{kind:?}");
        }
    }

    #[test]
    fn a_job_runs_its_steps_in_order_once() {
        let mut job = ErasureJob {
            customer: CustomerId::new(),
            pseudonym: AnonymousId::new(),
            linked: Vec::new(),
            requested_at: at(),
            done: Vec::new(),
        };
        let mut ran = Vec::new();
        while let Some(step) = job.next_step() {
            ran.push(step);
            job.finish(step);
            job.finish(step);
        }
        assert_eq!(ran, ErasureStep::ALL);
        assert_eq!(job.done.len(), ErasureStep::ALL.len());
        assert!(job.placeholder_email().ends_with("@erased.invalid"));
    }
}
