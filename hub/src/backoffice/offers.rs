//! The back office as the basket's [`Offers`]: the live promotions, coupon checks, redemption
//! with an order, and the guard against guessing.

use super::Backoffice;
use crate::actors::offers::Offers;
use async_trait::async_trait;
use protocol::promotion::{PromotionId, PromotionSet};
use protocol::{CustomerId, OrderId};
use std::sync::Arc;
use time::OffsetDateTime;

#[async_trait]
impl Offers for Backoffice {
    fn guard(&self, client: &str) -> Result<(), u64> {
        Backoffice::guard(self, client).map_err(|r| r.seconds)
    }

    fn record_invalid(&self, client: &str) {
        Backoffice::record_invalid(self, client);
    }

    async fn check_coupon(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
    ) -> Result<String, String> {
        self.coupon_promotion(code, customer, now)
            .map(|p| p.to_string())
    }

    fn live(&self) -> Arc<PromotionSet> {
        Backoffice::live(self)
    }

    fn coupon_promotion(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
    ) -> Result<PromotionId, String> {
        self.check(code, customer, now)
            .map(|grant| grant.promotion)
            .map_err(|refusal| refusal.to_string())
    }

    async fn redeem(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        order: OrderId,
    ) -> Result<(), String> {
        Backoffice::redeem(self, code, customer, order)
            .await
            .map(|_| ())
            .map_err(|refusal| refusal.to_string())
    }

    fn usage(
        &self,
        customer: Option<CustomerId>,
        promotions: &[PromotionId],
    ) -> std::collections::BTreeMap<PromotionId, protocol::promotion::Usage> {
        Backoffice::usage(self, customer, promotions).unwrap_or_else(|e| {
            // Unknown usage reads as none: a limit is then checked again when the order
            // records its uses.
            tracing::warn!(error = %e, "cannot read promotion usage");
            Default::default()
        })
    }

    async fn record_uses(
        &self,
        promotions: &[PromotionId],
        customer: Option<CustomerId>,
        order: OrderId,
    ) -> Result<(), String> {
        Backoffice::record_uses(self, promotions, customer, order)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release_uses(&self, promotions: &[PromotionId], order: OrderId) -> Result<(), String> {
        Backoffice::release_uses(self, promotions, order)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release(&self, code: &str, order: OrderId) -> Result<(), String> {
        Backoffice::release(self, code, order)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
