//! Integration messages waiting in the transactional outbox: written in the same unit of work as
//! the change that caused them, delivered at least once, deduplicated by id at the receiver.

use crate::codec::Stored;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

/// One message for one destination (e.g. `oms`, `email`, `dxp-export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Stable across retries: receivers deduplicate by it.
    pub id: Ulid,
    pub destination: String,
    /// What the payload is, e.g. `order.placed`.
    pub kind: String,
    /// Queued once per key: a second message with the same key is not queued (e.g.
    /// `email:order_confirmation:{order}`). Empty: no such rule.
    #[serde(default)]
    pub key: String,
    /// The message body as JSON text (what the destination's protocol carries).
    pub payload: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (backoff after a failure); `None`: now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl OutboxMessage {
    /// A new message, due now.
    pub fn new(
        destination: &str,
        kind: &str,
        key: String,
        payload: String,
        now: OffsetDateTime,
    ) -> OutboxMessage {
        OutboxMessage {
            id: Ulid::new(),
            destination: destination.to_string(),
            kind: kind.to_string(),
            key,
            payload,
            created_at: now,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        }
    }

    /// Whether it may be attempted at `now`.
    pub fn due(&self, now: OffsetDateTime) -> bool {
        self.next_attempt_at.is_none_or(|at| at <= now)
    }
}

impl Stored for OutboxMessage {
    const KIND: &'static str = "outbox";
    const VERSION: u16 = 1;
}
