//! What pricing needs from promotions and coupons, behind a trait: the back office implements it
//! (hub/src/backoffice); [`NoOffers`] stands in where there are none (tests, tools).

use async_trait::async_trait;
use protocol::promotion::{PromotionId, PromotionSet};
use protocol::{CheckoutId, CustomerId, OrderId};
use std::sync::Arc;
use time::OffsetDateTime;

/// The limited uses a checkout holds while its payment is pending: reserved when it starts,
/// counted against every limit as if used, made uses when its order is placed, given back when
/// it ends without one. A reservation lapses by itself at `until` (when the checkout's payment
/// session can no longer be paid), so one left behind by a crash never holds a use for longer
/// than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub customer: Option<CustomerId>,
    /// Normalised coupon codes in the checkout's price.
    pub coupons: Vec<String>,
    /// The promotions in the checkout's price.
    pub promotions: Vec<PromotionId>,
    pub until: OffsetDateTime,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveFailure {
    /// A coupon code in the price cannot be used any more (used up meanwhile by other orders or
    /// pending checkouts): the code and why, in words for the shopper.
    #[error("coupon {code}: {reason}")]
    Coupon { code: String, reason: String },
    /// A promotion in the price reached one of its limits meanwhile.
    #[error("promotion {name}: {reason}")]
    Promotion { name: String, reason: String },
    /// The counts could not be read or written: try again.
    #[error("coupon and promotion limits cannot be checked right now: {0}")]
    Unavailable(String),
}

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

    /// [`Offers::coupon_promotion`] for pricing the basket of checkout `own` (its pending
    /// checkout, if any), whose own reservation does not count against it.
    fn coupon_promotion_for(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        _own: Option<CheckoutId>,
    ) -> Result<PromotionId, String> {
        self.coupon_promotion(code, customer, now)
    }

    /// [`Offers::usage`] (which counts pending checkouts' reservations as uses) leaving out the
    /// reservation of checkout `own`.
    fn usage_for(
        &self,
        customer: Option<CustomerId>,
        promotions: &[PromotionId],
        _own: Option<CheckoutId>,
    ) -> std::collections::BTreeMap<PromotionId, protocol::promotion::Usage> {
        self.usage(customer, promotions)
    }

    /// Reserves the limited uses of a checkout's coupons and promotions, all or none, checking
    /// every limit against the uses and the other checkouts' reservations. The same checkout
    /// again answers `Ok` and changes nothing but a later `until`, which extends it.
    async fn reserve(
        &self,
        _checkout: CheckoutId,
        _reservation: &Reservation,
    ) -> Result<(), ReserveFailure> {
        Ok(())
    }

    /// Turns a checkout's reservation into its order's uses (coupons redeemed, promotion uses
    /// counted), once. `Ok(false)`: the checkout holds no reservation (never made, released,
    /// or already turned into uses).
    async fn commit_reservation(
        &self,
        _checkout: CheckoutId,
        _order: OrderId,
    ) -> Result<bool, String> {
        Ok(false)
    }

    /// Gives back a checkout's reservation (it ended without an order); idempotent.
    async fn release_reservation(&self, _checkout: CheckoutId) -> Result<(), String> {
        Ok(())
    }

    // ---- Coupons at the stores' tills (the edge escrow, hub/src/edge/coupons.rs) ----------
    // Implemented by the back office in hub/src/backoffice/escrow.rs.

    /// The public codes of the live promotions, unexpired at `now`, for the stores' nodes.
    fn store_coupons(
        &self,
        _now: OffsetDateTime,
    ) -> Result<Vec<crate::edge::coupons::StoreCoupon>, String> {
        Ok(Vec::new())
    }

    /// Sets how many uses of a limited code are away at the stores (granted, used there or
    /// not), so that the online limit counts them: answers the online uses, or `None` when that
    /// would take more than the limit leaves (nothing changes).
    async fn set_store_share(&self, _code: &str, _away: u64) -> Result<Option<u64>, String> {
        Ok(None)
    }

    /// Counts a store sale's use of a code (once per sale); answers the customer's uses and the
    /// per-customer limit when they now exceed it.
    async fn record_store_use(
        &self,
        _code: &str,
        _customer: Option<CustomerId>,
        _sale: ulid::Ulid,
    ) -> Result<Option<(u64, u64)>, String> {
        Ok(None)
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
