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
}
