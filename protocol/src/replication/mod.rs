//! Replication between the hub and the stores' edge nodes (`../shared/REPLICATION.md` is the
//! model): replica ids and the hybrid logical clock, the replicated types — stock on hand
//! ([`OnHand`], a PN-counter from `crdts`), sell rights and coupon redemptions ([`Rights`], a
//! bounded counter), immutable records in a grow-only map ([`GrowMap`]) — the records a store
//! makes ([`SaleRecord`], [`DeficitRecord`]) and the sync frames ([`sync::Frame`]).
//!
//! Every merge here is commutative, associative and idempotent, and never refuses a value; what
//! a person or partner may do is checked when the change is made, not when it is merged.

pub mod clock;
pub mod counter;
pub mod gmap;
pub mod numbers;
pub mod pickup;
pub mod records;
pub mod rights;
pub mod sync;

pub use clock::{Hlc, HybridClock};
pub use counter::OnHand;
pub use gmap::GrowMap;
pub use numbers::{receipt_number, receipt_prefix};
pub use pickup::{PickupLine, PickupOrder, PickupReport, PickupState};
pub use records::{
    CardStatus, CardTender, Command, CommandKind, ConflictRecord, CouponTerms, DeficitRecord,
    ReturnLine, ReturnRecord, SaleLine, SalePayment, SaleRecord, Settlement,
};
pub use rights::{Rights, RightsError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica: the hub, or one edge node. An id is never changed nor reused — a rebuilt node
/// takes a new one (e.g. `berlin-2`) and the operator retires the old one on the hub.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub String);

/// What is wrong with a proposed replica id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid replica id '{0}': use 1 to 40 characters from a-z, 0-9, '-' and '_' (and not 'hub')"
)]
pub struct ReplicaIdError(pub String);

impl ReplicaId {
    /// The hub's replica id.
    pub fn hub() -> ReplicaId {
        ReplicaId("hub".to_string())
    }

    pub fn is_hub(&self) -> bool {
        self.0 == "hub"
    }

    /// An edge node's replica id, checked.
    pub fn node(text: &str) -> Result<ReplicaId, ReplicaIdError> {
        let ok = !text.is_empty()
            && text.len() <= 40
            && text != "hub"
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(ReplicaId(text.to_string()))
        } else {
            Err(ReplicaIdError(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod laws;
