//! The hub's side of checkout outside the basket actor: who may see a checkout or an order,
//! the provider's webhooks, the success redirect, reconciliation and the sweeper that expires
//! holds, and the admin API's refunds and cancellations. Every write goes through the basket
//! actor that owns the checkout (see [`crate::actors::checkout`]).

use crate::actors::basket::Access;
use crate::actors::checkout::{
    CheckoutFailure, EndCheckout, EndReason, PaymentFailed, PaymentSucceeded, RefundOrder,
    StartCheckout,
};
use crate::backend::HubBackend;
use crate::cluster::remote::Call;
use crate::payments::client::{ProviderError, Session};
use channels::backend::{CheckoutInput, CheckoutView, OrderRef, OrderView, QuoteView, RefundView};
use channels::{BackendError, Shopper};
use protocol::checkout::CheckoutError;
use protocol::order::{CheckoutRecord, CheckoutState, OrderRecord};
use protocol::{BasketId, Channel, CheckoutId, Money, OrderId};
use subtle::ConstantTimeEq;

impl From<crate::actors::checkout::FulfilmentFailure> for BackendError {
    fn from(f: crate::actors::checkout::FulfilmentFailure) -> BackendError {
        use crate::actors::checkout::FulfilmentFailure;
        use protocol::order::FulfilmentError;
        match f {
            FulfilmentFailure::Refused(e) => BackendError::Conflict {
                code: match e {
                    FulfilmentError::UnknownShipment(_) => "unknown_shipment",
                    FulfilmentError::Impossible(_) => "impossible_transition",
                },
                message: e.to_string(),
                details: None,
            },
            FulfilmentFailure::Checkout(e) => e.into(),
        }
    }
}

impl From<CheckoutFailure> for BackendError {
    fn from(f: CheckoutFailure) -> BackendError {
        match f {
            CheckoutFailure::NotFound => BackendError::NotFound("checkout"),
            CheckoutFailure::Basket(b) => b.into(),
            CheckoutFailure::Address(fields) => BackendError::Invalid {
                code: "invalid_address",
                message: format!(
                    "the shipping address needs attention: {}",
                    fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                fields,
            },
            CheckoutFailure::Email => BackendError::Invalid {
                code: "invalid_email",
                message: "enter an email address for the order confirmation, like name@example.com"
                    .into(),
                fields: vec![protocol::checkout::FieldError {
                    field: "email".into(),
                    message: "Enter an email address, like name@example.com.".into(),
                }],
            },
            CheckoutFailure::Pricing(e) => pricing_error(e),
            CheckoutFailure::OutOfStock(short) => BackendError::Conflict {
                code: "out_of_stock",
                message: format!(
                    "sorry, there is not enough stock for {}: reduce the quantity or remove the item",
                    short
                        .iter()
                        .map(|(sku, left)| format!("{sku} ({left} left)"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                details: Some(serde_json::json!({
                    "items": short.iter().map(|(sku, left)| serde_json::json!({"sku": sku, "available": left})).collect::<Vec<_>>()
                })),
            },
            CheckoutFailure::OfferUnavailable { code, message } => BackendError::Conflict {
                code,
                message,
                details: None,
            },
            CheckoutFailure::RateLimited(secs) => BackendError::RateLimited {
                retry_after: secs,
                message: format!("too many checkout attempts for this basket: try again in {secs} s"),
            },
            CheckoutFailure::Provider(e) => {
                tracing::warn!(error = %e, "payment provider call failed");
                BackendError::PaymentUnavailable(
                    "the payment service could not be reached and nothing was charged: please try again in a moment"
                        .into(),
                )
            }
            CheckoutFailure::Storage(e) => BackendError::Unavailable(e.to_string()),
            CheckoutFailure::NotPaid => BackendError::Conflict {
                code: "payment_not_completed",
                message: "the payment has not been completed".into(),
                details: None,
            },
            CheckoutFailure::Refused(message) => BackendError::Conflict {
                code: "refused",
                message,
                details: None,
            },
        }
    }
}

fn pricing_error(e: CheckoutError) -> BackendError {
    let field = |code: &'static str, field: &str, message: String| BackendError::Invalid {
        code,
        message: message.clone(),
        fields: vec![protocol::checkout::FieldError {
            field: field.into(),
            message,
        }],
    };
    match e {
        CheckoutError::EmptyBasket => BackendError::Unprocessable {
            code: "basket_empty",
            message: "the basket is empty: add something first".into(),
        },
        CheckoutError::Unavailable(skus) => BackendError::Conflict {
            code: "items_unavailable",
            message: format!(
                "some items are no longer sold: remove {} from the basket",
                skus.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            details: Some(serde_json::json!({ "skus": skus })),
        },
        CheckoutError::CountryNotServed(_) => field("country_not_served", "country", e.to_string()),
        CheckoutError::UnknownShippingMethod(_) => {
            field("unknown_shipping_method", "shipping_method", e.to_string())
        }
        other => BackendError::Unprocessable {
            code: "pricing_failed",
            message: other.to_string(),
        },
    }
}

impl HubBackend {
    /// The link to an order for whoever holds it (the key makes it work for guests).
    pub fn order_url(&self, order: &OrderRecord) -> String {
        format!("/orders/{}?key={}", order.number, order.lookup_key)
    }

    pub(crate) fn order_view(&self, o: &OrderRecord) -> OrderView {
        OrderView {
            id: o.id,
            number: o.number.clone(),
            status: o.status(),
            progress: o.progress,
            created_at: o.created_at,
            channel: o.channel,
            email: o.email.clone(),
            address: o.address.clone(),
            breakdown: o.breakdown.clone(),
            paid: o.payment.amount,
            refunded: o.payment.refunded(),
            refunds: o
                .payment
                .refunds
                .iter()
                .map(|r| RefundView {
                    amount: r.amount,
                    reason: r.reason.clone(),
                    at: r.at,
                })
                .collect(),
            cancelled: o.cancelled.clone(),
            needs_attention: o.needs_attention.clone(),
            url: self.order_url(o),
            shipments: o.shipments.clone(),
            timeline: o.timeline.clone(),
        }
    }

    async fn checkout_view(&self, record: CheckoutRecord) -> Result<CheckoutView, BackendError> {
        let order = match record.order {
            Some(id) => self
                .deps
                .storage
                .order(id)
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?
                .map(|o| OrderRef {
                    id: o.id,
                    number: o.number.clone(),
                    url: self.order_url(&o),
                }),
            None => None,
        };
        Ok(CheckoutView {
            id: record.id,
            basket_id: record.basket,
            state: record.state,
            payment_url: record
                .payment_url
                .clone()
                .filter(|_| record.state.is_open()),
            hold_expires_at: record.hold_until,
            email: record.email,
            address: record.address,
            breakdown: record.breakdown,
            message: record.message,
            order,
        })
    }

    /// A checkout the shopper may see (through its basket); `NotFound` otherwise.
    async fn own_checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<(CheckoutRecord, Access), BackendError> {
        let record = self
            .deps
            .storage
            .checkout(id)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("checkout"))?;
        let access = self.basket_access(shopper, record.basket).await?;
        if access.owns(record.owner) {
            Ok((record, access))
        } else {
            Err(BackendError::NotFound("checkout"))
        }
    }

    pub(crate) async fn checkout_quote(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        country: &str,
        shipping_method: Option<&str>,
        channel: Channel,
    ) -> Result<QuoteView, BackendError> {
        // Only the basket's owner may price it (the stored basket is the actor's: it commits
        // before it adopts).
        let stored = self
            .deps
            .storage
            .basket(basket)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("basket"))?;
        if !self
            .basket_access(shopper, basket)
            .await?
            .owns(stored.owner)
        {
            return Err(BackendError::NotFound("basket"));
        }
        let pricing = &self.deps.checkout.pricing;
        let catalog = self.deps.catalog.load();
        let country = country.trim().to_ascii_uppercase();
        let mut options = pricing
            .shipping_options(&stored, |sku| catalog.product_by_sku(sku), &country)
            .map_err(|e| BackendError::from(CheckoutFailure::Pricing(e)))?;
        // Click-and-collect at each store that can promise the whole basket.
        options.extend(crate::collect::options(&self.deps, &stored).await);
        let method = shipping_method
            .map(str::to_string)
            .or_else(|| options.first().map(|o| o.id.clone()));
        // Priced for the channel that asks, as a checkout from it would be.
        let hints = crate::pricing::Hints {
            channel,
            first_order: crate::actors::checkout::first_order(&self.deps, &stored).await,
            assignee: crate::pricing::assignee_of(shopper),
        };
        let breakdown = match method {
            Some(m) => Some(
                crate::actors::checkout::price_with_offers(
                    &self.deps, &catalog, &stored, hints, &country, &m,
                )
                .map_err(|e| BackendError::from(CheckoutFailure::Pricing(e)))?
                .0,
            ),
            None => None,
        };
        Ok(QuoteView {
            country,
            shipping_options: options,
            breakdown,
        })
    }

    pub(crate) async fn checkout_start(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        input: CheckoutInput,
        channel: Channel,
    ) -> Result<CheckoutView, BackendError> {
        let access = self.basket_access(shopper, basket).await?;
        let record = self
            .ask_basket(
                basket,
                StartCheckout {
                    access,
                    input,
                    channel,
                    subject: shopper.subject(),
                },
            )
            .await?;
        self.checkout_view(record).await
    }

    pub(crate) async fn checkout_get(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        let (record, _) = self.own_checkout(shopper, id).await?;
        self.checkout_view(record).await
    }

    pub(crate) async fn checkout_cancel(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        let (record, access) = self.own_checkout(shopper, id).await?;
        let (record, _) = self
            .ask_basket(
                record.basket,
                EndCheckout {
                    access,
                    checkout: id,
                    why: EndReason::Cancelled,
                },
            )
            .await?;
        self.checkout_view(record).await
    }

    /// The success redirect: never trusted, the provider is asked.
    pub(crate) async fn checkout_return(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        let (record, _) = self.own_checkout(shopper, id).await?;
        if record.state.is_open() {
            if let Some(sid) = &record.session_id {
                match self.deps.checkout.payments.session(sid).await {
                    Ok(s) if s.is_paid() => {
                        self.payment_succeeded(id, s).await?;
                    }
                    Ok(_) => {}
                    // The webhook or the sweeper will settle it; show what is known.
                    Err(e) => {
                        tracing::warn!(checkout = %id, error = %e, "cannot confirm the payment now")
                    }
                }
            }
        }
        self.checkout_get(shopper, id).await
    }

    /// A verified report that a checkout was paid: makes its order (once).
    pub async fn payment_succeeded(
        &self,
        checkout: CheckoutId,
        session: Session,
    ) -> Result<OrderRecord, BackendError> {
        let basket = self.checkout_basket(checkout).await?;
        let call = || Call::PaymentSucceeded {
            basket,
            checkout,
            session: session.clone(),
        };
        if let Some(reply) = self.elsewhere(&basket, call).await? {
            return reply.order();
        }
        self.ask_basket(basket, PaymentSucceeded { checkout, session })
            .await
    }

    /// Makes sure a checkout the provider reports as paid has its order: asks the provider for
    /// the session unless the order already exists.
    pub async fn confirm_checkout(&self, checkout: CheckoutId) -> Result<(), BackendError> {
        let storage = &self.deps.storage;
        let unavailable =
            |e: crate::storage::StorageError| BackendError::Unavailable(e.to_string());
        if storage
            .order_for_checkout(checkout)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Ok(());
        }
        let record = storage
            .checkout(checkout)
            .await
            .map_err(unavailable)?
            .ok_or(BackendError::NotFound("checkout"))?;
        let Some(sid) = record.session_id else {
            return Ok(());
        };
        match self.deps.checkout.payments.session(&sid).await {
            Ok(s) if s.is_paid() => self.payment_succeeded(checkout, s).await.map(|_| ()),
            Ok(_) => Ok(()),
            Err(e) => Err(BackendError::Unavailable(e.to_string())),
        }
    }

    /// A verified report that a card was declined.
    pub async fn payment_failed(
        &self,
        checkout: CheckoutId,
        message: String,
    ) -> Result<(), BackendError> {
        let basket = self.checkout_basket(checkout).await?;
        let call = || Call::PaymentFailed {
            basket,
            checkout,
            message: message.clone(),
        };
        if let Some(reply) = self.elsewhere(&basket, call).await? {
            return reply.done();
        }
        self.ask_basket(basket, PaymentFailed { checkout, message })
            .await
    }

    /// The provider expired a session itself: end the checkout as expired.
    pub async fn session_expired(&self, checkout: CheckoutId) -> Result<(), BackendError> {
        let basket = self.checkout_basket(checkout).await?;
        self.end_checkout_as_hub(basket, checkout, EndReason::HoldExpired)
            .await
            .map(|_| ())
    }

    async fn checkout_basket(&self, checkout: CheckoutId) -> Result<BasketId, BackendError> {
        Ok(self
            .deps
            .storage
            .checkout(checkout)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("checkout"))?
            .basket)
    }

    pub(crate) async fn customer_orders(
        &self,
        customer: protocol::CustomerId,
    ) -> Result<Vec<OrderView>, BackendError> {
        let orders = self
            .deps
            .storage
            .orders_of(customer, 100)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        Ok(orders.iter().map(|o| self.order_view(o)).collect())
    }

    pub(crate) async fn own_order(
        &self,
        shopper: &Shopper,
        id: OrderId,
    ) -> Result<OrderView, BackendError> {
        let order = self
            .deps
            .storage
            .order(id)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("order"))?;
        let mine = match order.customer {
            Some(c) => shopper.customer == Some(c),
            None => self.basket_access(shopper, order.basket).await?.holds_token,
        };
        if mine {
            Ok(self.order_view(&order))
        } else {
            Err(BackendError::NotFound("order"))
        }
    }

    pub(crate) async fn order_with_key(
        &self,
        number: &str,
        key: &str,
    ) -> Result<OrderView, BackendError> {
        let order = self
            .deps
            .storage
            .order_by_number(number)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("order"))?;
        let ok: bool = order.lookup_key.as_bytes().ct_eq(key.as_bytes()).into();
        if ok {
            Ok(self.order_view(&order))
        } else {
            Err(BackendError::NotFound("order"))
        }
    }

    /// Sends a verified fulfilment report to the actor of the order's basket.
    pub async fn apply_fulfilment(
        &self,
        basket: BasketId,
        msg: crate::actors::checkout::ApplyFulfilment,
    ) -> Result<OrderRecord, BackendError> {
        let call = || Call::Fulfilment {
            basket,
            order: msg.order,
            update: msg.update.clone(),
            source: msg.source.to_string(),
        };
        if let Some(reply) = self.elsewhere(&basket, call).await? {
            return reply.order();
        }
        self.ask_basket(basket, msg).await
    }

    /// Admin: an order by id or number.
    pub async fn admin_order(&self, id_or_number: &str) -> Result<OrderRecord, BackendError> {
        let storage = &self.deps.storage;
        let found = match id_or_number.parse::<OrderId>() {
            Ok(id) => storage.order(id).await,
            Err(_) => storage.order_by_number(id_or_number).await,
        };
        found
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .ok_or(BackendError::NotFound("order"))
    }

    /// Admin: orders newest first.
    pub async fn admin_orders(
        &self,
        before: Option<OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderRecord>, BackendError> {
        self.deps
            .storage
            .orders(before, limit)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }

    /// Admin: refunds (part of) an order, or cancels it (refunding what is left).
    pub async fn admin_refund(
        &self,
        order: &OrderRecord,
        amount: Option<Money>,
        reason: String,
        cancel: bool,
        idempotency_key: Option<String>,
    ) -> Result<OrderRecord, BackendError> {
        let call = || Call::RefundOrder {
            basket: order.basket,
            order: order.id,
            amount,
            reason: reason.clone(),
            cancel,
            idempotency_key: idempotency_key.clone(),
        };
        if let Some(reply) = self.elsewhere(&order.basket, call).await? {
            return reply.order();
        }
        self.ask_basket(
            order.basket,
            RefundOrder {
                order: order.id,
                amount,
                reason,
                cancel,
                idempotency_key,
            },
        )
        .await
    }

    /// One pass of the sweeper: expires holds that ran out (the provider's session first),
    /// looks up payments whose webhook is late, settles holds left by a crash, and retries owed
    /// refunds. Safe to run at any time: every step is idempotent.
    ///
    /// In a cluster every node sweeps the checkouts and orders of the baskets whose shards it
    /// holds (their actors are here), so each is swept by one node; the lapsed holds are this
    /// node's inventory's own.
    pub async fn sweep(&self) {
        use futures_util::StreamExt;
        let now = self.deps.clock.now();
        let settings = &self.deps.checkout.settings;
        let open = match self.deps.storage.open_checkouts(1000).await {
            Ok(o) => o
                .into_iter()
                .filter(|c| self.deps.fence.owns(&c.basket))
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!(error = %e, "sweeper cannot read open checkouts");
                return;
            }
        };
        // A few at a time: one slow provider call must not hold up every other checkout.
        futures_util::stream::iter(open)
            .for_each_concurrent(8, |record| async move {
                if now >= record.hold_until {
                    let end = self.end_checkout_as_hub(record.basket, record.id, EndReason::HoldExpired);
                    if let Err(e) = end.await {
                        tracing::warn!(checkout = %record.id, error = %e, "cannot expire the checkout yet");
                    }
                } else if now - record.created_at >= settings.reconcile_after {
                    self.reconcile(&record).await;
                }
            })
            .await;
        for checkout in self.deps.inventory.lapsed_holds(now).await {
            self.settle_lapsed_hold(checkout).await;
        }
        if let Ok(owing) = self.deps.storage.orders_owing_work(100).await {
            // Each node settles the orders of its own shards (their actors live there).
            for order in owing
                .into_iter()
                .filter(|o| self.deps.fence.owns(&o.basket))
            {
                if let Err(e) = self.settle_order(order.basket, order.id).await {
                    tracing::warn!(order = %order.number, error = %e, "owed refund or restock not done yet");
                }
            }
        }
    }

    /// A pending payment with no news: ask the provider.
    async fn reconcile(&self, record: &CheckoutRecord) {
        let Some(sid) = &record.session_id else {
            return;
        };
        match self.deps.checkout.payments.session(sid).await {
            Ok(s) if s.is_paid() => {
                tracing::info!(checkout = %record.id, "payment found by reconciliation");
                if let Err(e) = self.payment_succeeded(record.id, s).await {
                    tracing::warn!(checkout = %record.id, error = %e, "reconciled payment not settled yet");
                }
            }
            Ok(s) if s.status == "expired" => {
                let _ = self.session_expired(record.id).await;
            }
            Ok(_) => {}
            Err(ProviderError::Api { .. }) | Err(ProviderError::Unavailable(_)) => {}
        }
    }

    /// Holds past their time whose checkout is no longer pending (a crash between the order and
    /// the sale): consume them if the checkout was paid, give them back otherwise.
    async fn settle_lapsed_hold(&self, checkout: CheckoutId) {
        let (state, pickup) = match self.deps.storage.checkout(checkout).await {
            Ok(Some(r)) => (
                Some(r.state),
                crate::collect::location_of(&r.breakdown.shipping.id).is_some(),
            ),
            Ok(None) => (None, false),
            Err(_) => return,
        };
        let consume = match state {
            Some(CheckoutState::PaymentPending) => return, // expired through its basket above
            // A paid pickup consumes the hub's rights at the store instead (its promise).
            Some(CheckoutState::Paid) => !pickup,
            _ => false,
        };
        if let Err(e) = self.deps.inventory.end(checkout, consume, None).await {
            tracing::warn!(%checkout, error = %e, "cannot settle a lapsed hold yet");
        }
    }

    /// At start-up: holds of checkouts that were paid or ended before a crash are settled now.
    pub async fn recover_holds(&self) {
        let Ok(holds) = self.deps.storage.holds().await else {
            return;
        };
        let mut seen = std::collections::BTreeSet::new();
        for h in holds {
            if seen.insert(h.checkout) {
                self.settle_lapsed_hold(h.checkout).await;
            }
        }
    }
}
