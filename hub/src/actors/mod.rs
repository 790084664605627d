//! The hub's actors. Entity actors (one per customer, one per basket) are *virtual*: the
//! [`directory::Directory`] activates them from storage on first use, they own their entity
//! alone, and they passivate after an idle time. Shared-state actors: the catalog (writes through
//! an actor, reads from an immutable snapshot), inventory shards, and the event recorder.

pub mod basket;
pub mod catalog;
pub mod checkout;
pub mod customer;
pub mod directory;
pub mod inventory;
pub mod offers;
pub mod pickup;
pub mod recorder;

use crate::clock::Clock;
use crate::storage::Storage;
use arc_swap::ArcSwap;
use protocol::CatalogSnapshot;
use std::sync::Arc;
use std::time::Duration;

/// What every entity actor needs, cloned into each.
#[derive(Clone)]
pub struct Deps {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<ArcSwap<CatalogSnapshot>>,
    pub inventory: inventory::Inventory,
    pub recorder: actix::Addr<recorder::Recorder>,
    pub lifecycle: Lifecycle,
    pub checkout: Arc<checkout::CheckoutDeps>,
    /// The outbox's delivery workers (woken after a unit that queued messages).
    pub outbox: crate::outbox::OutboxWorkers,
    /// Live promotions and coupons (the back office's, or none).
    pub offers: Arc<dyn offers::Offers>,
    /// Marketing automation's triggers (basket changes arm reminders).
    pub automation: crate::automation::Triggers,
    /// A/B tests: pricing asks for the shopper's variants of promotion experiments.
    pub experiments: crate::experiments::Experiments,
    /// Content slots and recommendations (connected once the experience layer runs).
    pub personalization: crate::personalization::PersonalizationHook,
    /// What a customer's or basket's unit of work carries: its shard's fencing token in a
    /// cluster, nothing on the embedded storage (`crate::cluster::Fence`).
    pub fence: crate::cluster::Fence,
}

/// When entity actors passivate.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Idle time after which an actor flushes, deregisters and stops.
    pub passivate_after: Duration,
    /// How often an actor checks whether it is idle.
    pub check_every: Duration,
}

/// Whether an actor idle since `last_active` should passivate now.
pub fn idle_expired(clock: &dyn Clock, last_active: time::OffsetDateTime, after: Duration) -> bool {
    clock.now() - last_active >= after
}
