//! The hub's side of the conversational assistant (`docs/voice.md`, "Assistant and chat"): the
//! stores shoppers can visit (the edge nodes), a store's stock as the hub last heard it from the
//! node, and the checkout link the assistant emails instead of ever completing a checkout.

use super::{unavailable, HubBackend};
use crate::fulfilment::email;
use crate::storage::UnitOfWork;
use channels::backend::{CheckoutLinkSent, StoreView};
use channels::{Backend, BackendError, Shopper};
use protocol::{Channel, CustomerId, LocationId, Sku};

impl HubBackend {
    /// One store per location owned by an edge node, named as the node's configuration says.
    pub(crate) fn assistant_stores(&self) -> Vec<StoreView> {
        let Some(edge) = self.deps.checkout.edge.as_ref() else {
            return Vec::new();
        };
        let mut stores: Vec<StoreView> = Vec::new();
        for node in edge.nodes().iter() {
            match stores.iter_mut().find(|s| s.location == node.location.0) {
                // The latest node of a location (after a rebuild) names it.
                Some(known) if !node.name.trim().is_empty() => known.name = node.name.clone(),
                Some(_) => {}
                None => stores.push(StoreView {
                    location: node.location.0.clone(),
                    name: node.name.clone(),
                }),
            }
        }
        stores
    }

    /// Units available at a store: the levels its node reported, less what the hub holds
    /// there for click-and-collect checkouts. `None` where the hub has no level.
    pub(crate) fn assistant_store_stock(&self, location: &str, skus: &[Sku]) -> Vec<Option<i64>> {
        let location = LocationId(location.to_string());
        skus.iter()
            .map(|sku| {
                self.deps
                    .inventory
                    .level(&location, sku)
                    .map(|l| l.available_to_promise())
            })
            .collect()
    }

    pub(crate) fn assistant_checkout_url(&self) -> String {
        format!(
            "{}/checkout",
            self.deps.checkout.public_url.trim_end_matches('/')
        )
    }

    /// Queues the checkout-link mail to the customer's account address with their basket's
    /// lines and total (once per basket version: asking again without a change sends nothing
    /// new).
    pub(crate) async fn assistant_send_checkout_link(
        &self,
        customer: CustomerId,
        channel: Channel,
    ) -> Result<CheckoutLinkSent, BackendError> {
        let account = self.customer(customer).await?;
        let shopper = Shopper {
            customer: Some(customer),
            ..Shopper::default()
        };
        let basket = self
            .current_basket(&shopper)
            .await?
            .filter(|b| !b.priced.lines.is_empty())
            .ok_or_else(|| BackendError::Unprocessable {
                code: "empty_basket",
                message: "the basket is empty: add something first".into(),
            })?;
        let url = self.assistant_checkout_url();
        let message = email::checkout_link(
            &email::CheckoutLink {
                to: &account.email,
                name: &account.name,
                lines: &basket.priced.lines,
                total: basket.priced.total,
                checkout_url: &url,
                channel: channel.as_str(),
                occurrence: &format!("{}:{}", basket.id, basket.version),
            },
            self.deps.clock.now(),
        );
        self.deps
            .storage
            .commit(UnitOfWork::new().with_message(message))
            .await
            .map_err(unavailable)?;
        self.deps.outbox.wake();
        Ok(CheckoutLinkSent {
            url,
            email: account.email,
        })
    }
}
