//! The customer actor: one per customer, on every channel. It holds the customer's record and
//! the id of their one basket, so web, mobile, POS and boards all reach the same basket.

mod erase;
mod in_store;
pub use erase::EraseRecord;
pub use in_store::{IssueLoyaltyNumber, SetInStore};

use super::directory::{Deregister, Directory};
use super::{idle_expired, Deps};
use crate::storage::{Change, StorageError, UnitOfWork};
use actix::prelude::*;
use protocol::{
    Basket, BasketId, BasketOwner, Channel, ConsentChoice, ConsentSource, Consents, Currency,
    CustomerRecord, Event, EventKind, Subject,
};
use time::OffsetDateTime;

/// The customer actor's state.
pub struct CustomerActor {
    customer: CustomerRecord,
    deps: Deps,
    directory: Addr<Directory>,
    last_active: OffsetDateTime,
}

/// Reads the customer's record.
#[derive(Message, Clone)]
#[rtype(result = "CustomerRecord")]
pub struct GetCustomer;

/// The customer's basket id, creating the basket (durably) if they have none. Answers the new
/// basket when one was made, so the caller can activate its actor without a read.
#[derive(Message, Clone)]
#[rtype(result = "Result<(BasketId, Option<Basket>), StorageError>")]
pub struct EnsureBasket;

impl CustomerActor {
    pub fn new(customer: CustomerRecord, deps: Deps, directory: Addr<Directory>) -> CustomerActor {
        let last_active = deps.clock.now();
        CustomerActor {
            customer,
            deps,
            directory,
            last_active,
        }
    }
}

impl Actor for CustomerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let lifecycle = self.deps.lifecycle;
        ctx.run_interval(lifecycle.check_every, move |act, ctx| {
            if idle_expired(
                act.deps.clock.as_ref(),
                act.last_active,
                lifecycle.passivate_after,
            ) {
                act.directory
                    .do_send(Deregister::Customer(act.customer.id, ctx.address()));
                ctx.stop();
            }
        });
    }
}

impl Handler<GetCustomer> for CustomerActor {
    type Result = MessageResult<GetCustomer>;

    fn handle(&mut self, _msg: GetCustomer, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = self.deps.clock.now();
        MessageResult(self.customer.clone())
    }
}

impl Handler<EnsureBasket> for CustomerActor {
    type Result = AtomicResponse<Self, Result<(BasketId, Option<Basket>), StorageError>>;

    fn handle(&mut self, _msg: EnsureBasket, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        self.last_active = now;
        if let Some(id) = self.customer.basket {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok((id, None)))));
        }
        let basket = Basket::new(
            self.deps.fence.new_basket_of(&self.customer.id),
            BasketOwner::Customer(self.customer.id),
            Currency::EUR,
            now,
        );
        let mut customer = self.customer.clone();
        customer.basket = Some(basket.id);
        let storage = self.deps.storage.clone();
        let unit = UnitOfWork::new()
            .with(Change::PutBasket(basket.clone()))
            .with(Change::PutCustomer(customer.clone()));
        let sealed = self.deps.fence.seal(&self.customer.id, unit);
        AtomicResponse::new(Box::pin(
            async move { storage.commit(sealed?).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    act.customer = customer;
                    Ok((basket.id, Some(basket)))
                }),
        ))
    }
}

/// Records consent choices made at `source` on `channel`: the record and one
/// `consent_changed` event per changed pair, in one unit of work. Answers the consents.
#[derive(Message, Clone)]
#[rtype(result = "Result<Consents, StorageError>")]
pub struct RecordConsents {
    pub choices: Vec<ConsentChoice>,
    pub source: ConsentSource,
    pub channel: Channel,
}

/// The events of consent changes (`docs/events-schema.md`, `consent_changed`).
pub fn consent_events(
    customer: protocol::CustomerId,
    channel: Channel,
    changed: &[protocol::consent::ConsentRecord],
) -> Vec<Event> {
    changed
        .iter()
        .map(|r| {
            Event::new(
                r.at,
                Subject::Customer(customer),
                channel,
                EventKind::ConsentChanged,
            )
            .with("channel", r.channel.as_str())
            .with("purpose", r.purpose.as_str())
            .with("granted", r.granted)
            .with("source", r.source.as_str())
        })
        .collect()
}

impl Handler<RecordConsents> for CustomerActor {
    type Result = AtomicResponse<Self, Result<Consents, StorageError>>;

    fn handle(&mut self, msg: RecordConsents, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        self.last_active = now;
        let mut customer = self.customer.clone();
        let changed = customer.consents.apply(&msg.choices, now, msg.source);
        if changed.is_empty() {
            let consents = customer.consents;
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(consents))));
        }
        let mut unit = UnitOfWork::new().with(Change::PutCustomer(customer.clone()));
        for event in consent_events(customer.id, msg.channel, &changed) {
            unit = unit.with_event(event);
        }
        let storage = self.deps.storage.clone();
        let sealed = self.deps.fence.seal(&customer.id, unit);
        AtomicResponse::new(Box::pin(
            async move { storage.commit(sealed?).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    let consents = customer.consents.clone();
                    act.customer = customer;
                    Ok(consents)
                }),
        ))
    }
}
