//! Emailed receipts of store sales (`docs/pos.md`, "Receipts"): when a merge meets a store
//! sale for the first time and the sale names a customer, the customer's receipt is queued in
//! the hub's email outbox *before* the merge is stored. The outbox queues a key once
//! (`email:store_receipt:{sale id}`) and the mail's `Message-ID` derives from that key, so a
//! crash between the two writes (the node sends the sale again, the merge queues again) or a
//! resync never makes a second, different mail: SMTP's at-least-once gives copies with one
//! `Message-ID` at most.

use super::EdgeError;
use crate::clock::Clock;
use crate::outbox::OutboxWorkers;
use crate::storage::{Storage, UnitOfWork};
use async_trait::async_trait;
use protocol::replication::SaleRecord;
use std::sync::Arc;

/// Work a merge does for the store sales it is about to store for the first time.
#[async_trait]
pub trait SaleFollowUp: Send + Sync {
    /// Runs before the merge that first stores `sales` (made at the store `store`) is
    /// committed; an error fails the merge, which the node then sends again.
    async fn before_store(&self, store: &str, sales: &[SaleRecord]) -> Result<(), EdgeError>;
}

/// Queues the emailed receipt of each sale that names a customer.
pub struct StoreReceipts {
    pub storage: Arc<dyn Storage>,
    pub outbox: OutboxWorkers,
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl SaleFollowUp for StoreReceipts {
    async fn before_store(&self, store: &str, sales: &[SaleRecord]) -> Result<(), EdgeError> {
        let now = self.clock.now();
        let mut unit = UnitOfWork::new();
        for sale in sales {
            let Some(id) = sale.customer else { continue };
            let Some(customer) = self.storage.customer(id).await? else {
                tracing::warn!(sale = %sale.id, customer = %id, "a store sale names an unknown customer: no receipt mailed");
                continue;
            };
            unit = unit.with_message(crate::fulfilment::email::store_receipt(
                sale,
                &customer.email,
                &customer.name,
                store,
                now,
            ));
        }
        if unit.outbox.is_empty() {
            return Ok(());
        }
        let queued = unit.outbox.len();
        self.storage.commit(unit).await?;
        tracing::info!(receipts = queued, "store receipts queued");
        self.outbox.wake();
        Ok(())
    }
}
