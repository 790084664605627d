//! The back office as the basket's [`Offers`]: the live promotions, coupon checks, redemption
//! with an order, and the guard against guessing.

use super::Backoffice;
use crate::actors::offers::{Offers, Reservation, ReserveFailure};
use async_trait::async_trait;
use protocol::promotion::{PromotionId, PromotionSet};
use protocol::{CheckoutId, CustomerId, OrderId};
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
        Offers::coupon_promotion_for(self, code, customer, now, None)
    }

    fn coupon_promotion_for(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        own: Option<CheckoutId>,
    ) -> Result<PromotionId, String> {
        self.check_for(code, customer, now, own)
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
        Offers::usage_for(self, customer, promotions, None)
    }

    fn usage_for(
        &self,
        customer: Option<CustomerId>,
        promotions: &[PromotionId],
        own: Option<CheckoutId>,
    ) -> std::collections::BTreeMap<PromotionId, protocol::promotion::Usage> {
        Backoffice::usage_for(self, customer, promotions, own).unwrap_or_else(|e| {
            // Unknown usage reads as none: a limit is then checked again when a checkout
            // reserves its uses.
            tracing::warn!(error = %e, "cannot read promotion usage");
            Default::default()
        })
    }

    async fn reserve(
        &self,
        checkout: CheckoutId,
        reservation: &Reservation,
    ) -> Result<(), ReserveFailure> {
        Backoffice::reserve(self, checkout, reservation).await
    }

    async fn commit_reservation(
        &self,
        checkout: CheckoutId,
        order: OrderId,
    ) -> Result<bool, String> {
        Backoffice::commit_reservation(self, checkout, order)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release_reservation(&self, checkout: CheckoutId) -> Result<(), String> {
        Backoffice::release_reservation(self, checkout)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
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

    // ---- Coupons at the stores' tills (hub/src/backoffice/escrow.rs) ------------------------

    fn store_coupons(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::edge::coupons::StoreCoupon>, String> {
        Backoffice::store_coupons(self, now).map_err(|e| e.to_string())
    }

    async fn set_store_share(&self, code: &str, away: u64) -> Result<Option<u64>, String> {
        Backoffice::set_store_share(self, code, away)
            .await
            .map_err(|e| e.to_string())
    }

    async fn record_store_use(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        sale: ulid::Ulid,
    ) -> Result<Option<(u64, u64)>, String> {
        Backoffice::record_store_use(self, code, customer, sale)
            .await
            .map_err(|e| e.to_string())
    }
}
