//! Marketing automation (`docs/automation.md`): abandoned-basket reminders, back-in-stock notes
//! and win-back mail, each under the same rules — consent, frequency cap, quiet hours — and each
//! message sent or suppressed recorded with its reason.
//!
//! - Triggers come from the actors themselves: the basket actor writes a pending reminder in the
//!   unit of work of a change of a customer basket's lines and tells [`Triggers`] once it is
//!   committed (the scheduler arms what a crash left pending at its start), the inventory shards tell the scheduler when
//!   a SKU's online stock comes back (`Restocked`), and a daily timer scans the orders.
//! - [`scheduler::Scheduler`] is the one actor that holds the durable timers
//!   ([`store::AutomationStore`], keyspace tree `automation`): it wakes at the next due time on the
//!   injected clock, runs each timer once, and queues mail through the email outbox (keys per
//!   timer, so a rerun after a crash never mails twice).
//! - Routes: `GET /basket/restore` (the signed link in a reminder, [`links`]),
//!   `GET /api/v1/admin/automation/messages`, `POST /api/v1/admin/automation/run` ([`routes`]).

pub mod links;
pub mod routes;
pub mod rules;
pub mod scheduler;
pub mod store;

use crate::storage::StorageError;
use actix::Addr;
use protocol::automation::{PendingReminder, StockSubscription};
use protocol::{Basket, BasketOwner, CustomerId, Sku};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use time::OffsetDateTime;

pub use scheduler::{RunDue, RunReport, Scheduler};
pub use store::{AutomationStore, KvAutomationStore, MessageFilter};

/// `[automation]`: which triggers run, their delays, and the rules every marketing mail obeys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutomationSettings {
    /// Remind customers of baskets left with lines.
    pub abandoned_basket: bool,
    /// How long after the last change of a basket's lines the reminder goes, e.g. `1h`.
    #[serde(deserialize_with = "crate::config::human")]
    pub abandoned_after: Duration,
    /// Tell subscribers when a SKU's online stock comes back.
    pub back_in_stock: bool,
    /// Invite back customers whose last order is old.
    pub win_back: bool,
    /// A customer whose last order is older than this many days is invited back …
    pub win_back_after_days: u32,
    /// … unless they had a win-back mail in the last this many days.
    pub win_back_every_days: u32,
    /// Orders read per batch by the daily win-back scan, and the most mails one scan sends.
    pub win_back_batch: usize,
    /// At most this many marketing mails per customer per `cap_window` (0: no cap).
    pub frequency_cap: u32,
    #[serde(deserialize_with = "crate::config::human")]
    pub cap_window: Duration,
    /// Quiet hours in the deployment's local time, `HH:MM`: mail due in them waits for their
    /// end. Equal start and end: no quiet hours.
    pub quiet_start: String,
    pub quiet_end: String,
    /// The deployment's (store's) offset from UTC, e.g. `+01:00`.
    pub utc_offset: String,
    /// How long a basket-restore link works, e.g. `7d`.
    #[serde(deserialize_with = "crate::config::human")]
    pub link_valid_for: Duration,
}

impl Default for AutomationSettings {
    fn default() -> Self {
        AutomationSettings {
            abandoned_basket: true,
            abandoned_after: Duration::from_secs(3600),
            back_in_stock: true,
            win_back: true,
            win_back_after_days: 60,
            win_back_every_days: 90,
            win_back_batch: 500,
            frequency_cap: 1,
            cap_window: Duration::from_secs(24 * 3600),
            quiet_start: "21:00".into(),
            quiet_end: "08:00".into(),
            utc_offset: "+01:00".into(),
            link_valid_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why automation could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The scheduler is not running (stopped, or not started yet).
    #[error("the automation scheduler is not running")]
    Stopped,
    /// In a cluster: another node holds the automation timers and runs them.
    #[error("the automation timers run on another node")]
    Elsewhere,
}

/// What the actors call: cheap to clone, works (and does nothing for the scheduler) before the
/// scheduler is connected.
#[derive(Clone)]
pub struct Triggers {
    store: Arc<dyn AutomationStore>,
    scheduler: Arc<OnceLock<Addr<Scheduler>>>,
}

impl Triggers {
    pub fn new(store: Arc<dyn AutomationStore>) -> Triggers {
        Triggers {
            store,
            scheduler: Arc::new(OnceLock::new()),
        }
    }

    /// Connects the running scheduler (once).
    pub fn connect(&self, scheduler: Addr<Scheduler>) {
        let _ = self.scheduler.set(scheduler);
    }

    /// The reminder a change of a basket's lines at `at` calls for: a customer basket with
    /// lines (re)arms its reminder; anonymous baskets have no email to remind. The caller
    /// writes it in the unit of work of the change ([`Change::PutPendingReminder`]) and, once
    /// committed, hands it to [`Triggers::arm`].
    ///
    /// [`Change::PutPendingReminder`]: crate::storage::Change::PutPendingReminder
    pub fn reminder(basket: &Basket, at: OffsetDateTime) -> Option<PendingReminder> {
        let BasketOwner::Customer(customer) = basket.owner else {
            return None;
        };
        if basket.merged_into.is_some() || basket.lines.is_empty() {
            return None;
        }
        Some(PendingReminder {
            customer,
            basket: basket.id,
            at,
        })
    }

    /// After the commit: arms the committed reminder (the scheduler clears it once armed; a
    /// crash before that leaves it for the scheduler's start).
    pub fn arm(&self, reminder: PendingReminder) {
        if let Some(s) = self.scheduler.get() {
            s.do_send(scheduler::BasketChanged(reminder));
        }
    }

    /// Subscribes a customer to a SKU's back-in-stock note; answers whether it is new (a second
    /// subscription changes nothing).
    pub async fn subscribe(
        &self,
        customer: CustomerId,
        sku: Sku,
        now: OffsetDateTime,
    ) -> Result<bool, AutomationError> {
        self.store
            .subscribe(StockSubscription {
                customer,
                sku,
                created_at: now,
            })
            .await
    }

    /// Whether a customer waits for a SKU.
    pub async fn subscribed(
        &self,
        customer: CustomerId,
        sku: &Sku,
    ) -> Result<bool, AutomationError> {
        Ok(self
            .store
            .subscribers(sku)
            .await?
            .iter()
            .any(|s| s.customer == customer))
    }
}

/// A customer's back-in-stock subscription, as the channels ask for it: the SKU must be in the
/// catalog and sold out online.
pub async fn subscribe_back_in_stock(
    deps: &crate::actors::Deps,
    customer: CustomerId,
    sku: &Sku,
) -> Result<bool, channels::BackendError> {
    let name = match deps.catalog.load().product_by_sku(sku) {
        Some(p) => p.name.clone(),
        None => return Err(channels::BackendError::NotFound("product")),
    };
    let available = deps
        .inventory
        .available(&protocol::LocationId::online(), std::slice::from_ref(sku))
        .first()
        .copied()
        .unwrap_or(0);
    if available > 0 {
        return Err(channels::BackendError::Conflict {
            code: "in_stock",
            message: format!("{name} ({sku}) is in stock: add it to your basket instead"),
            details: None,
        });
    }
    deps.automation
        .subscribe(customer, sku.clone(), deps.clock.now())
        .await
        .map_err(|e| channels::BackendError::Unavailable(e.to_string()))
}

#[cfg(test)]
// figment's `Jail` closure returns figment's own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_environment_shortens_the_delay_and_switches_quiet_hours_off() {
        figment::Jail::expect_with(|jail| {
            let s = crate::HubSettings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.automation.abandoned_after, Duration::from_secs(3600));
            jail.set_env("OMNIHUB_HUB_AUTOMATION__ABANDONED_AFTER", "2m");
            jail.set_env("OMNIHUB_HUB_AUTOMATION__QUIET_START", "00:00");
            jail.set_env("OMNIHUB_HUB_AUTOMATION__QUIET_END", "00:00");
            let s = crate::HubSettings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.automation.abandoned_after, Duration::from_secs(120));
            let rules = rules::Rules::of(&s.automation).map_err(|e| e.to_string())?;
            assert_eq!(rules.quiet, None);
            jail.set_env("OMNIHUB_HUB_AUTOMATION__QUIET_END", "24:00");
            let s = crate::HubSettings::load(None).map_err(|e| e.to_string())?;
            assert!(rules::Rules::of(&s.automation).is_err_and(|e| e.starts_with("quiet_end")));
            Ok(())
        });
    }
}
