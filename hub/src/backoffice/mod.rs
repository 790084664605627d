//! The back office's domain: business users with roles and API tokens, the promotion lifecycle
//! (draft → approved → scheduled/active → ended, never approved by its author), coupons (public
//! codes and private single-use batches, with limits and a guard against guessing), the ERP's
//! promotion and coupon feeds, and an append-only audit list of every change.
//!
//! [`Backoffice`] is the entry point: [`Backoffice::live`] is the set of live promotions that
//! pricing applies, [`Backoffice::check`] / [`Backoffice::redeem`] / [`Backoffice::release`] use
//! coupons, [`Backoffice::reserve`] / [`Backoffice::commit_reservation`] /
//! [`Backoffice::release_reservation`] hold a pending checkout's limited uses (see
//! [`reservations`]), [`Backoffice::guard`] / [`Backoffice::record_invalid`] rate-limit code
//! guessing (IPv6 clients by their /64),
//! [`Backoffice::appliers`] are the importer's feed appliers, and [`routes::configure`] mounts
//! the API (`/api/v1/admin/users`, `/api/v1/backoffice/*`). Handlers authenticate with the
//! [`users::BackOfficeUser`] extractor and check roles with [`users::BackOfficeUser::require`].
//!
//! Records live in the `backoffice` sled tree behind [`store::BackofficeStore`]. Changes are
//! serialised by one write lock (they are rare and small) and each is one atomic, flushed batch
//! with its audit entry. Reads go straight to the store.

pub mod audit;
pub mod coupons;
mod escrow;
pub mod feeds;
pub(crate) mod kept;
mod offers;
pub mod promotions;
pub mod reservations;
pub mod routes;
pub mod store;
pub mod usage;
pub mod users;

#[cfg(test)]
mod tests;

use crate::clock::Clock;
use crate::storage::StorageError;
use arc_swap::ArcSwap;
use promotions::{LiveSet, PromotionRecord};
use protocol::{CatalogSnapshot, FieldError};
use serde::{Deserialize, Deserializer};
use std::sync::Arc;
use std::time::Duration;
use store::{BackofficeStore, Batch};
use time::OffsetDateTime;

pub use coupons::{CouponGrant, CouponRefusal, RetryAfter};
pub use promotions::Status;
pub use users::{BackOfficeUser, Role};

/// Settings of the back office (`[backoffice]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackofficeSettings {
    /// Invalid coupon codes a client may type within `coupon_guess_window` before it is refused.
    pub coupon_guess_limit: u32,
    #[serde(deserialize_with = "human")]
    pub coupon_guess_window: Duration,
    /// How often the live promotions are republished when nothing changed but the clock.
    #[serde(deserialize_with = "human")]
    pub publish_every: Duration,
}

impl Default for BackofficeSettings {
    fn default() -> Self {
        BackofficeSettings {
            coupon_guess_limit: 5,
            coupon_guess_window: Duration::from_secs(600),
            publish_every: Duration::from_secs(1),
        }
    }
}

fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration such as 10m or 30s: {e}"
        ))
    })
}

/// What a back-office operation can fail with; routes map each to its status.
#[derive(Debug, thiserror::Error)]
pub enum BackofficeError {
    /// 422 with the fields to fix.
    #[error("invalid: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// 404.
    #[error("{0} not found")]
    NotFound(String),
    /// 409: the request does not fit the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 403: the caller may not do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The back office: users, promotions, coupons and the live promotion set.
pub struct Backoffice {
    store: Arc<dyn BackofficeStore>,
    clock: Arc<dyn Clock>,
    catalog: Arc<ArcSwap<CatalogSnapshot>>,
    settings: BackofficeSettings,
    /// Serialises changes: each reads, decides and commits alone.
    writes: tokio::sync::Mutex<()>,
    /// Approved promotions not ended by hand: live now or later.
    candidates: ArcSwap<Vec<Arc<PromotionRecord>>>,
    published: Arc<ArcSwap<LiveSet>>,
    /// Serialises republishing, so versions never go backwards.
    publishing: std::sync::Mutex<()>,
    guard: coupons::CouponGuard,
}

impl Backoffice {
    /// Opens the back office on its store and publishes the live promotions.
    pub fn open(
        store: Arc<dyn BackofficeStore>,
        clock: Arc<dyn Clock>,
        catalog: Arc<ArcSwap<CatalogSnapshot>>,
        settings: BackofficeSettings,
    ) -> Result<Arc<Backoffice>, StorageError> {
        let guard = coupons::CouponGuard::new(
            settings.coupon_guess_limit,
            settings.coupon_guess_window,
            clock.clone(),
        );
        let backoffice = Arc::new(Backoffice {
            store,
            clock,
            catalog,
            settings,
            writes: tokio::sync::Mutex::new(()),
            candidates: ArcSwap::from_pointee(Vec::new()),
            published: Arc::new(ArcSwap::from_pointee(LiveSet::empty())),
            publishing: std::sync::Mutex::new(()),
            guard,
        });
        backoffice.reload_candidates()?;
        backoffice.refresh();
        Ok(backoffice)
    }

    /// Republishes the live set every `publish_every`, so it follows the clock for readers of
    /// [`Backoffice::published`] (and, later, edge nodes) even when nothing else changes. Must
    /// run inside an actix System or a tokio runtime.
    pub fn start_timer(self: &Arc<Self>) {
        let every = self.settings.publish_every.max(Duration::from_millis(50));
        let backoffice = Arc::downgrade(self);
        actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(backoffice) = backoffice.upgrade() else {
                    break;
                };
                backoffice.refresh_if_due();
            }
        });
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Commits a batch durably, off the async runtime.
    async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(batch))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
    }
}
