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
//! Records live in the `backoffice` keyspace tree behind [`store::BackofficeStore`]. Changes are
//! serialised by one write lock (they are rare and small) and each is one atomic, flushed batch
//! with its audit entry. Reads go straight to the store.

pub mod access;
pub mod audit;
pub mod coupons;
mod escrow;
pub mod feeds;
pub(crate) mod kept;
mod offers;
pub mod pages;
pub mod promotions;
pub mod reservations;
pub mod routes;
pub mod session;
pub mod store;
pub mod totp;
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
    /// A back-office session unused this long is signed out, e.g. `30m`.
    #[serde(deserialize_with = "human")]
    pub session_idle: Duration,
    /// A back-office session ends this long after sign-in, however busy, e.g. `12h`.
    #[serde(deserialize_with = "human")]
    pub session_lifetime: Duration,
    /// Failed sign-ins (password or code) allowed per account within `sign_in_window`.
    pub sign_in_failures_per_account: u32,
    /// Failed sign-ins allowed per client address within `sign_in_window`.
    pub sign_in_failures_per_address: u32,
    #[serde(deserialize_with = "human")]
    pub sign_in_window: Duration,
    /// The issuer name authenticator apps show beside the account.
    pub totp_issuer: String,
}

impl Default for BackofficeSettings {
    fn default() -> Self {
        BackofficeSettings {
            coupon_guess_limit: 5,
            coupon_guess_window: Duration::from_secs(600),
            publish_every: Duration::from_secs(1),
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            sign_in_failures_per_account: 5,
            sign_in_failures_per_address: 20,
            sign_in_window: Duration::from_secs(15 * 60),
            totp_issuer: "Omnihub Back Office".into(),
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
    /// Failed sign-ins per account (normalised email, known or not) and per client address.
    sign_in_accounts: coupons::CouponGuard,
    sign_in_addresses: coupons::CouponGuard,
    /// Change notifications between hub nodes, once followed.
    changes: std::sync::OnceLock<crate::cluster::notify::Changes>,
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
        // The same sliding window as the coupon guard, over failed sign-ins.
        let sign_in_accounts = coupons::CouponGuard::new(
            settings.sign_in_failures_per_account,
            settings.sign_in_window,
            clock.clone(),
        );
        let sign_in_addresses = coupons::CouponGuard::new(
            settings.sign_in_failures_per_address,
            settings.sign_in_window,
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
            sign_in_accounts,
            sign_in_addresses,
            changes: std::sync::OnceLock::new(),
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

    /// Announces this node's promotion changes to the other hub nodes and reloads the
    /// promotions when another node changed one (`crate::cluster::notify`; a no-op embedded).
    /// Coupons are read from the store on every use: nothing to reload. Once.
    pub fn follow_changes(self: &Arc<Self>, changes: crate::cluster::notify::Changes) {
        let backoffice = Arc::downgrade(self);
        changes.on(crate::cluster::notify::Topic::Promotions, move || {
            let Some(backoffice) = backoffice.upgrade() else {
                return;
            };
            match backoffice.reload_candidates() {
                Ok(()) => backoffice.refresh(),
                Err(e) => tracing::error!(error = %e, "reloading promotions another node changed"),
            }
        });
        let _ = self.changes.set(changes);
    }

    fn announce(&self, topic: crate::cluster::notify::Topic) {
        if let Some(changes) = self.changes.get() {
            changes.announce(topic);
        }
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
