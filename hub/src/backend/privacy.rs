//! The customer record's part of an erasure (`crate::experience::privacy`), through the
//! customer's actor so its cached record is replaced too.

use super::{unavailable, HubBackend};
use crate::actors::customer::EraseRecord;
use channels::BackendError;
use protocol::CustomerId;

impl HubBackend {
    /// Replaces the customer's personal data and revokes `sessions` (token hashes).
    pub(crate) async fn erase_record(
        &self,
        customer: CustomerId,
        placeholder_email: String,
        sessions: Vec<[u8; 32]>,
    ) -> Result<(), BackendError> {
        let call = || crate::cluster::remote::Call::EraseRecord {
            customer,
            placeholder_email: placeholder_email.clone(),
            sessions: sessions.clone(),
        };
        if let Some(reply) = self.elsewhere(&customer, call).await? {
            return reply.done();
        }
        self.ask_customer(
            customer,
            EraseRecord {
                placeholder_email,
                sessions,
            },
        )
        .await?
        .map_err(unavailable)
    }

    /// Erases an order's address and email through the actor of its basket (see
    /// [`crate::actors::checkout::EraseOrder`]).
    pub(crate) async fn erase_order(
        &self,
        basket: protocol::BasketId,
        order: protocol::OrderId,
        placeholder_email: String,
    ) -> Result<(), BackendError> {
        let call = || crate::cluster::remote::Call::EraseOrder {
            basket,
            order,
            placeholder_email: placeholder_email.clone(),
        };
        if let Some(reply) = self.elsewhere(&basket, call).await? {
            return reply.done();
        }
        self.ask_basket(
            basket,
            crate::actors::checkout::EraseOrder {
                order,
                placeholder_email,
            },
        )
        .await
    }
}
