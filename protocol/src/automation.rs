//! Marketing automation as the hub stores it: durable timers, back-in-stock subscriptions and
//! the log of every marketing message sent or suppressed, with the reason.

use crate::codec::Stored;
use crate::ids::{CustomerId, Sku};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

/// What a timer does when it is due. Newer versions may add kinds; an unknown one reads as
/// [`TimerKind::Unknown`] and is dropped when due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Remind a customer of the basket they left (subject: the customer id).
    AbandonedBasket,
    /// Tell a SKU's subscribers it is back (subject: the SKU).
    BackInStock,
    /// The daily scan for customers to win back (subject: `daily`).
    WinBack,
    #[serde(other)]
    Unknown,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::AbandonedBasket => "abandoned_basket",
            TimerKind::BackInStock => "back_in_stock",
            TimerKind::WinBack => "win_back",
            TimerKind::Unknown => "unknown",
        }
    }
}

/// A durable timer: runs once at `due` (or later, if the hub was down). Arming a timer with the
/// `dedupe` key of a waiting one replaces it (a basket change pushes its reminder back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: Ulid,
    pub kind: TimerKind,
    pub subject: String,
    pub dedupe: String,
    #[serde(with = "time::serde::rfc3339")]
    pub due: OffsetDateTime,
    /// When the trigger happened (e.g. the basket change): what "since" means when it is due.
    #[serde(with = "time::serde::rfc3339")]
    pub armed_at: OffsetDateTime,
}

impl Stored for Timer {
    const KIND: &'static str = "automation_timer";
    const VERSION: u16 = 1;
}

/// A customer basket's lines changed: its reminder is to be (re)armed. Written in the same unit
/// of work as the basket change and cleared once the scheduler armed the timer, so a crash
/// between the commit and the arming loses no reminder: the scheduler arms what it finds at
/// start. One per customer (a newer change replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReminder {
    pub customer: CustomerId,
    pub basket: crate::ids::BasketId,
    /// When the lines changed: the reminder is due `abandoned_after` later.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Stored for PendingReminder {
    const KIND: &'static str = "pending_reminder";
    const VERSION: u16 = 1;
}

/// A customer asked to be told when a SKU is back in stock; ends when the note is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockSubscription {
    pub customer: CustomerId,
    pub sku: Sku,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Stored for StockSubscription {
    const KIND: &'static str = "stock_subscription";
    const VERSION: u16 = 1;
}

/// Which marketing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    AbandonedBasket,
    BackInStock,
    WinBack,
    #[serde(other)]
    Unknown,
}

impl MessageKind {
    pub const ALL: [MessageKind; 3] = [
        MessageKind::AbandonedBasket,
        MessageKind::BackInStock,
        MessageKind::WinBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::AbandonedBasket => "abandoned_basket",
            MessageKind::BackInStock => "back_in_stock",
            MessageKind::WinBack => "win_back",
            MessageKind::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Queued in the email outbox.
    Sent,
    /// Not sent, for good (the reason says why).
    Suppressed,
    /// Not sent yet: it will be tried again later (quiet hours).
    Deferred,
    #[serde(other)]
    Unknown,
}

/// Why a message was sent, suppressed or deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Every rule allowed it.
    Allowed,
    /// The customer gave no consent to marketing email (or unsubscribed).
    NoConsent,
    /// The customer already had the most marketing email the frequency cap allows.
    FrequencyCap,
    /// Due in quiet hours: moved to their end.
    QuietHours,
    /// The customer ordered since the basket changed.
    BasketConverted,
    /// The basket has no lines any more.
    BasketEmptied,
    /// A payment for the basket is in progress.
    CheckoutInProgress,
    /// The basket is no longer the customer's (merged, replaced).
    BasketGone,
    /// This occurrence was mailed before.
    AlreadySent,
    /// The SKU sold out again before the note went out.
    OutOfStockAgain,
    /// The product left the catalog.
    ProductGone,
    /// The customer account no longer exists.
    CustomerGone,
    /// The trigger is switched off in the configuration.
    Disabled,
    #[serde(other)]
    Unknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::NoConsent => "no_consent",
            Reason::FrequencyCap => "frequency_cap",
            Reason::QuietHours => "quiet_hours",
            Reason::BasketConverted => "basket_converted",
            Reason::BasketEmptied => "basket_emptied",
            Reason::CheckoutInProgress => "checkout_in_progress",
            Reason::BasketGone => "basket_gone",
            Reason::AlreadySent => "already_sent",
            Reason::OutOfStockAgain => "out_of_stock_again",
            Reason::ProductGone => "product_gone",
            Reason::CustomerGone => "customer_gone",
            Reason::Disabled => "disabled",
            Reason::Unknown => "unknown",
        }
    }
}

/// One entry of the message log: a marketing message sent, suppressed or deferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: Ulid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub customer: CustomerId,
    pub kind: MessageKind,
    pub outcome: Outcome,
    pub reason: Reason,
    /// What the message is about: the basket id, the SKU, or empty.
    #[serde(default)]
    pub subject: String,
    /// The timer that made it.
    #[serde(default)]
    pub timer: Option<Ulid>,
    /// The outbox key of a sent message (its `Message-ID` derives from it).
    #[serde(default)]
    pub email_key: Option<String>,
    /// A deferred message's new time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deferred_to: Option<OffsetDateTime>,
    /// The basket version a reminder showed (so an unchanged basket is not mailed twice).
    #[serde(default)]
    pub basket_version: Option<u64>,
}

impl Stored for MessageRecord {
    const KIND: &'static str = "automation_message";
    const VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn records_round_trip_and_unknown_kinds_read_as_unknown() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let timer = Timer {
            id: Ulid::new(),
            kind: TimerKind::AbandonedBasket,
            subject: "c".into(),
            dedupe: "abandoned:c".into(),
            due: now,
            armed_at: now,
        };
        assert_eq!(
            decode::<Timer>(&encode(&timer).expect("encodes")).expect("decodes"),
            timer
        );
        let kind: TimerKind = serde_json::from_str("\"birthday\"").expect("reads");
        assert_eq!(kind, TimerKind::Unknown);
        let reason: Reason = serde_json::from_str("\"weather\"").expect("reads");
        assert_eq!(reason, Reason::Unknown);
        assert_eq!(MessageKind::parse("win_back"), Some(MessageKind::WinBack));
        assert_eq!(MessageKind::parse("nope"), None);
    }
}
