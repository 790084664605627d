//! The backend in a cluster: the hub's own calls to a basket or customer another node owns go
//! to that node ([`crate::cluster::remote`]), and calls from other nodes run here.

use super::{unavailable, HubBackend};
use crate::actors::basket::{Absorb, Absorber, Access, BasketFailure, GetView, MergeInto};
use crate::actors::checkout::{
    ApplyFulfilment, EndCheckout, EndReason, PaymentFailed, PaymentSucceeded, RefundOrder,
    SettleOrder,
};
use crate::actors::customer::EnsureBasket;
use crate::actors::directory::ActivateBasket;
use crate::cluster::remote::{Call, Callee, Peers, Reply};
use crate::cluster::ShardKey;
use crate::monitor::metrics::Queued;
use async_trait::async_trait;
use channels::{BackendError, BasketView};
use protocol::order::{CheckoutRecord, OrderRecord};
use protocol::{BasketId, Channel, CheckoutId, CustomerId, Subject};
use std::sync::Arc;

impl HubBackend {
    /// In a cluster: calls between nodes go through `peers`.
    pub fn with_peers(mut self, peers: Arc<Peers>) -> HubBackend {
        self.peers = Some(peers);
        self
    }

    /// Runs `call` at the owner of `key`'s shard when that is another node (waiting while it
    /// moves); `Ok(None)`: this node owns it (or there is no cluster), run it here.
    pub(crate) async fn elsewhere<K: ShardKey>(
        &self,
        key: &K,
        call: impl FnOnce() -> Call,
    ) -> Result<Option<Reply>, BackendError> {
        match &self.peers {
            Some(peers) if !self.deps.fence.owns(key) => peers.call(&call()).await,
            _ => Ok(None),
        }
    }

    /// The customer's basket id, made (and its actor started) if they have none; on the node
    /// that owns the customer.
    pub(super) async fn customer_basket(
        &self,
        customer: CustomerId,
    ) -> Result<BasketId, BackendError> {
        if let Some(reply) = self
            .elsewhere(&customer, || Call::EnsureBasket { customer })
            .await?
        {
            return Ok(reply.ensured()?.0);
        }
        self.ensure_basket_here(customer).await
    }

    async fn ensure_basket_here(&self, customer: CustomerId) -> Result<BasketId, BackendError> {
        let (id, created) = self
            .ask_customer(customer, EnsureBasket)
            .await?
            .map_err(unavailable)?;
        if let Some(basket) = created {
            let _queued = Queued::at("directory");
            self.directory
                .send(ActivateBasket(basket))
                .await
                .map_err(unavailable)?;
        }
        Ok(id)
    }

    /// The basket as `access` may see it: from its actor here, or, when another node owns it,
    /// its stored state (the actor commits before it adopts) priced here.
    pub(super) async fn view_anywhere(
        &self,
        id: BasketId,
        access: Access,
    ) -> Result<BasketView, BackendError> {
        if self.peers.is_none() || self.deps.fence.owns(&id) {
            return self.ask_basket(id, GetView(access)).await;
        }
        let basket = self
            .deps
            .storage
            .basket(id)
            .await
            .map_err(unavailable)?
            .filter(|b| access.allows(b))
            .ok_or(BackendError::NotFound("basket"))?;
        Ok(crate::actors::basket::view_of(
            &basket,
            &self.deps,
            Default::default(),
        ))
    }

    /// Merges the anonymous basket `from` (the caller checked its token) into `into`, on the
    /// node that owns `from`; `into` may be on a third node.
    pub(super) async fn merge(
        &self,
        from: BasketId,
        into: BasketId,
        channel: Channel,
        subject: Subject,
    ) -> Result<(), BackendError> {
        let call = || Call::Merge {
            from,
            into,
            channel,
            subject,
        };
        if let Some(reply) = self.elsewhere(&from, call).await? {
            return reply.done();
        }
        self.merge_here(from, into, channel, subject).await
    }

    async fn merge_here(
        &self,
        from: BasketId,
        into: BasketId,
        channel: Channel,
        subject: Subject,
    ) -> Result<(), BackendError> {
        let merge = MergeInto {
            access: Access {
                customer: None,
                holds_token: true,
                system: false,
            },
            into: self.absorber(into).await?,
            into_id: into,
            channel,
            subject,
        };
        self.ask_basket(from, merge).await.map(|_| ())
    }

    /// What sends [`Absorb`] to `into`'s actor: here, or at the node that owns it.
    async fn absorber(&self, into: BasketId) -> Result<Absorber, BackendError> {
        let peers = match &self.peers {
            Some(peers) if !self.deps.fence.owns(&into) => peers.clone(),
            _ => {
                let addr = self
                    .basket_actor(into)
                    .await?
                    .ok_or(BackendError::NotFound("basket"))?;
                return Ok(Absorber::local(addr));
            }
        };
        let deps = self.deps.clone();
        Ok(Absorber(Arc::new(move |msg: Absorb| {
            let peers = peers.clone();
            let deps = deps.clone();
            Box::pin(async move {
                let call = Call::Absorb {
                    into,
                    lines: msg.lines,
                    coupons: msg.coupons,
                    closed_source: msg.closed_source,
                };
                match peers.call(&call).await {
                    Ok(Some(reply)) => reply.done().map_err(BasketFailure::Elsewhere)?,
                    // It moved here during the merge: the shopper signs in again.
                    Ok(None) => {
                        return Err(BasketFailure::Elsewhere(BackendError::Unavailable(
                            "the basket moved between nodes during the merge: retry".into(),
                        )))
                    }
                    Err(e) => return Err(BasketFailure::Elsewhere(e)),
                }
                let basket = deps
                    .storage
                    .basket(into)
                    .await?
                    .ok_or(BasketFailure::NotFound)?;
                Ok(crate::actors::basket::view_of(
                    &basket,
                    &deps,
                    Default::default(),
                ))
            })
        })))
    }

    /// Ends a pending checkout as the hub (the sweeper, an expired session), at its basket's
    /// owner.
    pub(crate) async fn end_checkout_as_hub(
        &self,
        basket: BasketId,
        checkout: CheckoutId,
        why: EndReason,
    ) -> Result<(CheckoutRecord, Option<OrderRecord>), BackendError> {
        let call = || Call::EndCheckout {
            basket,
            checkout,
            why: why.into(),
        };
        if let Some(reply) = self.elsewhere(&basket, call).await? {
            return reply.ended();
        }
        self.ask_basket(
            basket,
            EndCheckout {
                access: Access::system(),
                checkout,
                why,
            },
        )
        .await
    }

    /// Does what the hub owes on an order, at its basket's owner.
    pub(crate) async fn settle_order(
        &self,
        basket: BasketId,
        order: protocol::OrderId,
    ) -> Result<OrderRecord, BackendError> {
        if let Some(reply) = self
            .elsewhere(&basket, || Call::SettleOrder { basket, order })
            .await?
        {
            return reply.order();
        }
        self.ask_basket(basket, SettleOrder { order }).await
    }
}

/// The source names a fulfilment report may carry (`ApplyFulfilment::source` is static).
fn fulfilment_source(source: &str) -> Result<&'static str, BackendError> {
    match source {
        "oms" => Ok("oms"),
        "logistics" => Ok("logistics"),
        other => Err(BackendError::Unprocessable {
            code: "unknown_source",
            message: format!("unknown fulfilment source '{other}'"),
        }),
    }
}

#[async_trait]
impl Callee for HubBackend {
    async fn serve(&self, call: Call) -> Result<Reply, BackendError> {
        let order = |o: OrderRecord| Reply::Order(Box::new(o));
        match call {
            Call::PaymentSucceeded {
                basket,
                checkout,
                session,
            } => self
                .ask_basket(basket, PaymentSucceeded { checkout, session })
                .await
                .map(order),
            Call::PaymentFailed {
                basket,
                checkout,
                message,
            } => self
                .ask_basket(basket, PaymentFailed { checkout, message })
                .await
                .map(|()| Reply::Done),
            Call::EndCheckout {
                basket,
                checkout,
                why,
            } => self
                .ask_basket(
                    basket,
                    EndCheckout {
                        access: Access::system(),
                        checkout,
                        why: why.into(),
                    },
                )
                .await
                .map(|(c, o)| Reply::Ended(Box::new(c), o.map(Box::new))),
            Call::SettleOrder { basket, order: id } => self
                .ask_basket(basket, SettleOrder { order: id })
                .await
                .map(order),
            Call::RefundOrder {
                basket,
                order: id,
                amount,
                reason,
                cancel,
                idempotency_key,
            } => self
                .ask_basket(
                    basket,
                    RefundOrder {
                        order: id,
                        amount,
                        reason,
                        cancel,
                        idempotency_key,
                    },
                )
                .await
                .map(order),
            Call::Fulfilment {
                basket,
                order: id,
                update,
                source,
            } => {
                let msg = ApplyFulfilment {
                    order: id,
                    update,
                    source: fulfilment_source(&source)?,
                };
                self.ask_basket(basket, msg).await.map(order)
            }
            Call::Pickup { basket, report } => self
                .ask_basket(basket, crate::actors::pickup::ApplyPickup(report))
                .await
                .map(order),
            Call::EnsureBasket { customer } => self
                .ensure_basket_here(customer)
                .await
                .map(|id| Reply::Ensured(id, None)),
            Call::Merge {
                from,
                into,
                channel,
                subject,
            } => self
                .merge_here(from, into, channel, subject)
                .await
                .map(|()| Reply::Done),
            Call::TillPull {
                customer,
                id,
                store,
            } => self
                .pull_to_till_here(customer, id, store)
                .await
                .map(|lines| Reply::Lines(lines, true)),
            Call::TillReturn {
                customer,
                id,
                store,
            } => self
                .return_from_till_here(customer, id, store)
                .await
                .map(|(lines, changed)| Reply::Lines(lines, changed)),
            Call::EraseRecord {
                customer,
                placeholder_email,
                sessions,
            } => self
                .ask_customer(
                    customer,
                    crate::actors::customer::EraseRecord {
                        placeholder_email,
                        sessions,
                    },
                )
                .await?
                .map(|()| Reply::Done)
                .map_err(unavailable),
            Call::EraseOrder {
                basket,
                order: id,
                placeholder_email,
            } => self
                .ask_basket(
                    basket,
                    crate::actors::checkout::EraseOrder {
                        order: id,
                        placeholder_email,
                    },
                )
                .await
                .map(|()| Reply::Done),
            Call::Absorb {
                into,
                lines,
                coupons,
                closed_source,
            } => self
                .ask_basket(
                    into,
                    Absorb {
                        lines,
                        coupons,
                        closed_source,
                    },
                )
                .await
                .map(|_| Reply::Done),
        }
    }
}
