//! What a clerk finds a customer by at the till: their phone number and loyalty number
//! (`docs/pos.md`, "Customers at the till"). The customer actor is their only writer; each is
//! unique, claimed in the storage index in the same unit of work as the record.

use super::CustomerActor;
use crate::storage::{Change, CustomerAlias, StorageError, UnitOfWork};
use actix::prelude::*;

/// Sets or clears the customer's phone number and loyalty number (`None`: leave it; `Some(None)`:
/// remove it). Values are already normalised. `Conflict` when another customer holds one.
#[derive(Message, Clone)]
#[rtype(result = "Result<protocol::CustomerRecord, StorageError>")]
pub struct SetInStore {
    pub phone: Option<Option<String>>,
    pub loyalty_number: Option<Option<String>>,
}

/// The changes that move one alias from `old` to `new` for `customer`.
fn alias_changes(
    unit: &mut UnitOfWork,
    customer: protocol::CustomerId,
    old: Option<&String>,
    new: Option<&String>,
    make: fn(String) -> CustomerAlias,
) {
    if old == new {
        return;
    }
    if let Some(old) = old {
        unit.changes.push(Change::ReleaseAlias(make(old.clone())));
    }
    if let Some(new) = new {
        unit.changes.push(Change::ClaimAlias {
            alias: make(new.clone()),
            customer,
        });
    }
}

impl Handler<SetInStore> for CustomerActor {
    type Result = AtomicResponse<Self, Result<protocol::CustomerRecord, StorageError>>;

    fn handle(&mut self, msg: SetInStore, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = self.deps.clock.now();
        let mut next = self.customer.clone();
        if let Some(phone) = msg.phone {
            next.phone = phone;
        }
        if let Some(loyalty) = msg.loyalty_number {
            next.loyalty_number = loyalty;
        }
        let mut unit = UnitOfWork::new();
        let id = next.id;
        alias_changes(
            &mut unit,
            id,
            self.customer.phone.as_ref(),
            next.phone.as_ref(),
            CustomerAlias::Phone,
        );
        alias_changes(
            &mut unit,
            id,
            self.customer.loyalty_number.as_ref(),
            next.loyalty_number.as_ref(),
            CustomerAlias::Loyalty,
        );
        unit.changes.push(Change::PutCustomer(next.clone()));
        let storage = self.deps.storage.clone();
        let sealed = self.deps.fence.seal(&id, unit);
        AtomicResponse::new(Box::pin(
            async move { storage.commit(sealed?).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    act.customer = next.clone();
                    Ok(next)
                }),
        ))
    }
}

/// Gives the customer the loyalty number `candidate` (normalised, made by the hub) unless they
/// have one already: answers the record either way. `Conflict` when another customer holds
/// the candidate (the caller tries another).
#[derive(Message, Clone)]
#[rtype(result = "Result<protocol::CustomerRecord, StorageError>")]
pub struct IssueLoyaltyNumber {
    pub candidate: String,
}

impl Handler<IssueLoyaltyNumber> for CustomerActor {
    type Result = AtomicResponse<Self, Result<protocol::CustomerRecord, StorageError>>;

    fn handle(&mut self, msg: IssueLoyaltyNumber, ctx: &mut Context<Self>) -> Self::Result {
        if self.customer.loyalty_number.is_some() {
            self.last_active = self.deps.clock.now();
            let record = self.customer.clone();
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(record))));
        }
        let set = SetInStore {
            phone: None,
            loyalty_number: Some(Some(msg.candidate)),
        };
        <Self as Handler<SetInStore>>::handle(self, set, ctx)
    }
}
