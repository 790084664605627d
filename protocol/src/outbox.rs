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
    /// The message body as JSON text (what the destination's protocol carries).
    pub payload: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub attempts: u32,
}

impl Stored for OutboxMessage {
    const KIND: &'static str = "outbox";
    const VERSION: u16 = 1;
}
