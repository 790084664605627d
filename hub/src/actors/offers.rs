//! What pricing needs from promotions and coupons, behind a trait: the back office implements it
//! (hub/src/backoffice); [`NoOffers`] stands in where there are none (tests, tools).

use async_trait::async_trait;
use protocol::promotion::{PromotionId, PromotionSet};
use protocol::{CustomerId, OrderId};
use std::sync::Arc;
use time::OffsetDateTime;

/// Promotions and coupons as the basket and checkout actors see them.
#[async_trait]
pub trait Offers: Send + Sync {
    /// Refuses a client that typed too many invalid codes lately: `Err(seconds to wait)`.
    fn guard(&self, client: &str) -> Result<(), u64>;
    /// Counts an invalid code typed by `client`.
    fn record_invalid(&self, client: &str);
    /// Checks a normalised coupon code for this customer now: the promotion it unlocks, or why
    /// it does not apply (unknown, expired, used up), in words for the shopper.
    async fn check_coupon(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
    ) -> Result<String, String>;

    /// The promotions live now, indexed for pricing (cheap: an `Arc` clone).
    fn live(&self) -> Arc<PromotionSet> {
        Arc::new(PromotionSet::default())
    }

    /// The promotion a normalised coupon code unlocks for this customer now, or why it does not
    /// (without using it): what pricing puts in the context.
    fn coupon_promotion(
        &self,
        _code: &str,
        _customer: Option<CustomerId>,
        _now: OffsetDateTime,
    ) -> Result<PromotionId, String> {
        Err("this coupon code is not known".into())
    }

    /// Uses a coupon code for an order, once per order however often it is called.
    async fn redeem(
        &self,
        _code: &str,
        _customer: Option<CustomerId>,
        _order: OrderId,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Gives back the use an order made of a coupon code (the order was cancelled); once per
    /// order however often it is called.
    async fn release(&self, _code: &str, _order: OrderId) -> Result<(), String> {
        Ok(())
    }

    /// Uses so far of these promotions (the ones with limits), by this customer and in total.
    fn usage(
        &self,
        _customer: Option<CustomerId>,
        _promotions: &[PromotionId],
    ) -> std::collections::BTreeMap<PromotionId, protocol::promotion::Usage> {
        Default::default()
    }

    /// Counts an order's use of its promotions, once per order.
    async fn record_uses(
        &self,
        _promotions: &[PromotionId],
        _customer: Option<CustomerId>,
        _order: OrderId,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Gives back a cancelled order's uses of its promotions, once per order.
    async fn release_uses(
        &self,
        _promotions: &[PromotionId],
        _order: OrderId,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// No promotions, no coupons.
pub struct NoOffers;

#[async_trait]
impl Offers for NoOffers {
    fn guard(&self, _client: &str) -> Result<(), u64> {
        Ok(())
    }

    fn record_invalid(&self, _client: &str) {}

    async fn check_coupon(
        &self,
        _code: &str,
        _customer: Option<CustomerId>,
        _now: OffsetDateTime,
    ) -> Result<String, String> {
        Err("this coupon code is not known".into())
    }
}
