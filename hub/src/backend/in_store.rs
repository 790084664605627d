//! Customers in stores (`docs/pos.md`, "Customers at the till"): the phone number and loyalty
//! number a shopper sets on their account, the exact-match lookup a store's till asks for, and
//! the pull of the customer's basket onto the till.

use super::{unavailable, HubBackend};
use crate::actors::basket::{PullToTill, ReturnFromTill};
use crate::actors::customer::{GetCustomer, IssueLoyaltyNumber, SetInStore};
use crate::storage::{CustomerAlias, StorageError};
use channels::backend::{InStoreChange, InStoreDetails};
use channels::BackendError;
use protocol::customer::{is_plausible_email, normalize_email, normalize_loyalty, normalize_phone};
use protocol::{CustomerId, CustomerRecord, Sku};

/// What a till looks a customer up by, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TillKey {
    Email(String),
    Phone(String),
    Loyalty(String),
}

impl TillKey {
    /// Checks and normalises what the clerk typed. A partial value (too short, not an email)
    /// is refused with what to fix, before any lookup.
    pub fn parse(by: &str, value: &str) -> Result<TillKey, BackendError> {
        let invalid = |message: String| BackendError::Unprocessable {
            code: "invalid_lookup",
            message,
        };
        match by {
            "email" => {
                let email = normalize_email(value);
                if is_plausible_email(&email) {
                    Ok(TillKey::Email(email))
                } else {
                    Err(invalid(
                        "type the customer's whole email address, e.g. ada@example.com".into(),
                    ))
                }
            }
            "phone" => normalize_phone(value).map(TillKey::Phone).map_err(invalid),
            "loyalty_number" => normalize_loyalty(value)
                .map(TillKey::Loyalty)
                .map_err(invalid),
            other => Err(invalid(format!(
                "look a customer up by 'email', 'phone' or 'loyalty_number', not '{}'",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

/// Fresh numbers tried before giving up (a clash is already a one-in-billions chance).
const ISSUE_ATTEMPTS: usize = 5;

/// A new loyalty number: `7` and 11 random digits.
fn loyalty_candidate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    let n = u64::from_le_bytes(bytes) % 100_000_000_000;
    Ok(format!("7{n:011}"))
}

fn details(c: &CustomerRecord) -> InStoreDetails {
    InStoreDetails {
        phone: c.phone.clone(),
        loyalty_number: c.loyalty_number.clone(),
    }
}

/// A typed value normalised, `None` (remove) kept.
fn normalised(
    value: Option<Option<String>>,
    check: fn(&str) -> Result<String, String>,
    code: &'static str,
) -> Result<Option<Option<String>>, BackendError> {
    match value {
        Some(Some(v)) => check(&v)
            .map(|n| Some(Some(n)))
            .map_err(|message| BackendError::Unprocessable { code, message }),
        other => Ok(other),
    }
}

impl HubBackend {
    pub(crate) async fn in_store_details(
        &self,
        customer: CustomerId,
    ) -> Result<InStoreDetails, BackendError> {
        let record = self.ask_customer(customer, GetCustomer).await?;
        Ok(details(&record))
    }

    pub(crate) async fn set_in_store_details(
        &self,
        customer: CustomerId,
        change: InStoreChange,
    ) -> Result<InStoreDetails, BackendError> {
        let msg = SetInStore {
            phone: normalised(change.phone, normalize_phone, "invalid_phone")?,
            loyalty_number: normalised(
                change.loyalty_number,
                normalize_loyalty,
                "invalid_loyalty_number",
            )?,
        };
        match self.ask_customer(customer, msg).await? {
            Ok(record) => Ok(details(&record)),
            Err(StorageError::Conflict(message)) => Err(BackendError::Conflict {
                code: "already_taken",
                message: format!("{message}: check it, or ask the shop"),
                details: None,
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The customer's loyalty number, made now if they have none: `7` and 11 random digits
    /// (hard to guess, and the till's lookups are rate-limited). A number another customer
    /// holds is skipped for a fresh one.
    pub(crate) async fn issue_loyalty(
        &self,
        customer: CustomerId,
    ) -> Result<InStoreDetails, BackendError> {
        for _ in 0..ISSUE_ATTEMPTS {
            let candidate = loyalty_candidate().map_err(unavailable)?;
            match self
                .ask_customer(customer, IssueLoyaltyNumber { candidate })
                .await?
            {
                Ok(record) => return Ok(details(&record)),
                Err(StorageError::Conflict(_)) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable("no free loyalty number after several tries"))
    }

    /// The customer with exactly this key, if any.
    pub async fn till_lookup(&self, key: &TillKey) -> Result<Option<CustomerRecord>, BackendError> {
        let storage = &self.deps.storage;
        let found = match key {
            TillKey::Email(email) => storage.customer_by_email(email).await,
            TillKey::Phone(p) => {
                storage
                    .customer_by_alias(&CustomerAlias::Phone(p.clone()))
                    .await
            }
            TillKey::Loyalty(l) => {
                storage
                    .customer_by_alias(&CustomerAlias::Loyalty(l.clone()))
                    .await
            }
        };
        found.map_err(unavailable)
    }

    /// Moves the customer's basket lines to a till (pull `id`, idempotent); answers what moved.
    pub async fn pull_to_till(
        &self,
        customer: CustomerId,
        id: String,
        store: String,
    ) -> Result<Vec<(Sku, u32)>, BackendError> {
        // At the node that owns the customer (and so their basket): the till's edge node may be
        // connected to any node.
        let call = || crate::cluster::remote::Call::TillPull {
            customer,
            id: id.clone(),
            store: store.clone(),
        };
        if let Some(reply) = self.elsewhere(&customer, call).await? {
            return reply.lines().map(|(lines, _)| lines);
        }
        self.pull_to_till_here(customer, id, store).await
    }

    pub(super) async fn pull_to_till_here(
        &self,
        customer: CustomerId,
        id: String,
        store: String,
    ) -> Result<Vec<(Sku, u32)>, BackendError> {
        // The customer must exist; their basket is made if they have none (an empty pull).
        self.ask_customer(customer, GetCustomer).await?;
        let basket = self.customer_basket(customer).await?;
        let pulled = self.ask_basket(basket, PullToTill { id, store }).await?;
        Ok(pulled.lines)
    }

    /// Gives the till pull `id` back to the customer's basket (the till voided the sale);
    /// answers the lines given back and whether this call gave them (false: given before).
    pub async fn return_from_till(
        &self,
        customer: CustomerId,
        id: String,
        store: String,
    ) -> Result<(Vec<(Sku, u32)>, bool), BackendError> {
        let call = || crate::cluster::remote::Call::TillReturn {
            customer,
            id: id.clone(),
            store: store.clone(),
        };
        if let Some(reply) = self.elsewhere(&customer, call).await? {
            return reply.lines();
        }
        self.return_from_till_here(customer, id, store).await
    }

    pub(super) async fn return_from_till_here(
        &self,
        customer: CustomerId,
        id: String,
        store: String,
    ) -> Result<(Vec<(Sku, u32)>, bool), BackendError> {
        self.ask_customer(customer, GetCustomer).await?;
        let basket = self.customer_basket(customer).await?;
        match self
            .ask_basket(basket, ReturnFromTill { id, store })
            .await?
        {
            Some(back) => Ok((back.lines, back.changed)),
            None => Err(BackendError::NotFound("till pull")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_loyalty_number_is_one_a_till_can_look_up() {
        for _ in 0..50 {
            let n = loyalty_candidate().expect("random");
            assert_eq!(n.len(), 12, "{n}");
            assert!(n.starts_with('7'));
            assert_eq!(normalize_loyalty(&n), Ok(n.clone()));
        }
        assert_ne!(loyalty_candidate().ok(), loyalty_candidate().ok());
    }
}
