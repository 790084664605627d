//! A store's click-and-collect report applied to its order, on the order's basket actor (the
//! one writer of the order): the pickup state only moves forward, so a report applied twice
//! changes nothing the second time. The step to "ready for pickup" mails the shopper, in the
//! same unit of work as the order, with a key per order (queued once, one `Message-ID`).

use super::basket::BasketActor;
use crate::storage::{Change, UnitOfWork};
use actix::prelude::*;
use protocol::order::OrderRecord;
use protocol::replication::{PickupReport, PickupState};
use protocol::{Event, EventKind};

/// Applies a store's report about a pickup order.
#[derive(Message, Clone)]
#[rtype(result = "Result<OrderRecord, super::checkout::CheckoutFailure>")]
pub struct ApplyPickup(pub PickupReport);

impl Handler<ApplyPickup> for BasketActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, super::checkout::CheckoutFailure>>;

    fn handle(&mut self, msg: ApplyPickup, _ctx: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                use super::checkout::CheckoutFailure;
                let mut order = deps
                    .storage
                    .order(msg.0.order)
                    .await?
                    .filter(|o| o.basket == basket)
                    .ok_or(CheckoutFailure::NotFound)?;
                let before = order.clone();
                let now = deps.clock.now();
                let moved = order.apply_pickup(&msg.0, now);
                if order == before {
                    return Ok(order);
                }
                let mut unit = UnitOfWork::new()
                    .with(Change::PutOrder(order.clone()))
                    .with_event(
                        Event::new(now, order.subject, order.channel, EventKind::OrderUpdated)
                            .with("order", order.id)
                            .with("number", &order.number)
                            .with("status", order.status())
                            .with("source", "store"),
                    );
                let store = order.pickup.as_ref().map(|p| p.store_name.clone());
                if let (Some(PickupState::Ready), Some(store), None) =
                    (moved, store, order.cancelled.as_ref())
                {
                    unit.outbox
                        .push(crate::fulfilment::email::ready_for_pickup(
                            &order,
                            &store,
                            &deps.checkout.public_url,
                            now,
                        ));
                }
                deps.storage.commit(unit).await?;
                deps.outbox.wake();
                tracing::info!(order = %order.number, status = order.status(), "pickup report applied");
                Ok(order)
            }
            .into_actor(self),
        ))
    }
}
