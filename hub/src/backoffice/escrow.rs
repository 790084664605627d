//! The back office's side of coupon redemptions at the stores (`hub/src/edge/coupons.rs` runs
//! the escrow): which public codes the stores may redeem, how many uses of a limited code are
//! away at the stores (granted to their nodes, used there or not), and the stores' uses by
//! customer.
//!
//! A limited code's `uses` counts every use that can no longer happen online: the orders'
//! (counted by [`Backoffice::redeem`]) plus the uses away at the stores, kept under `cedge` +
//! code so that the online part is `uses − away`. The online check (`uses >= max_uses`) then
//! refuses a use the stores hold, without knowing about them. Raising `away` beyond what the
//! limit leaves is refused; lowering it (a store handed rights back) always succeeds.

use super::store::{key, read_u64, Batch};
use super::Backoffice;
use crate::edge::coupons::StoreCoupon;
use crate::storage::Result;
use protocol::CustomerId;
use time::OffsetDateTime;
use ulid::Ulid;

/// Uses of a limited public code away at the stores.
fn away_key(code: &str) -> Vec<u8> {
    key("cedge", &[code.as_bytes()])
}

/// A customer's uses of a code (hub and stores); the same key the coupon module counts
/// online uses under, so the online per-customer limit counts the stores' uses.
fn customer_uses_key(code: &str, customer: CustomerId) -> Vec<u8> {
    key("cuse", &[code.as_bytes(), &customer.to_bytes()])
}

/// Marks a store sale's use of a code as counted.
fn store_use_key(code: &str, sale: Ulid) -> Vec<u8> {
    key("cstoreuse", &[code.as_bytes(), &sale.0.to_be_bytes()])
}

impl Backoffice {
    fn read_counter(&self, k: &[u8]) -> Result<u64> {
        Ok(self.store.get(k)?.map_or(0, |v| read_u64(&v)))
    }

    /// The public codes of the live promotions not expired at `now`, as the stores see them.
    /// A promotion limited in total or per customer is not among what the stores price with
    /// ([`crate::edge::coupons::node_promotions`]), so its codes are left out: a store could
    /// never redeem them, and rights granted of them would only be lost to online orders (the
    /// coupon pass calls back what was granted before).
    pub fn store_coupons(&self, now: OffsetDateTime) -> Result<Vec<StoreCoupon>> {
        let live = self.live();
        let mut out = Vec::new();
        for p in live.promotions() {
            if crate::edge::coupons::limited(p) {
                continue;
            }
            for c in self.coupons(p.id.as_str())? {
                if c.batch.is_some() || c.limits.expires_at.is_some_and(|e| e <= now) {
                    continue;
                }
                let away = self.read_counter(&away_key(&c.code))?;
                out.push(StoreCoupon {
                    online: c.uses.saturating_sub(away),
                    away,
                    code: c.code,
                    promotion: c.promotion,
                    max_uses: c.limits.max_uses,
                    max_uses_per_customer: c.limits.max_uses_per_customer,
                    expires_at: c.limits.expires_at,
                });
            }
        }
        Ok(out)
    }

    /// Sets the uses of a limited code away at the stores to `away`. Answers the online uses,
    /// or `None` when raising it would take more than the limit leaves after the online uses
    /// and the pending checkouts' reservations (nothing changes).
    pub async fn set_store_share(&self, code: &str, away: u64) -> Result<Option<u64>> {
        let _lock = self.writes.lock().await;
        let Some(mut coupon) = self.stored_coupon(code)? else {
            return Ok(None);
        };
        let before = self.read_counter(&away_key(code))?;
        let online = coupon.uses.saturating_sub(before);
        if away > before {
            // Pending checkouts' reservations are held hub-locally: a grant never takes them.
            let reserved = self.coupon_held(code, None, self.now(), None)?.total;
            let taken = online.saturating_add(reserved).saturating_add(away);
            if coupon.limits.max_uses.is_some_and(|max| taken > max) {
                return Ok(None);
            }
        }
        if away != before {
            coupon.uses = online.saturating_add(away);
            let mut batch = Batch::new();
            self.stage_coupon(&mut batch, &coupon)?;
            batch.put_raw(away_key(code), away.to_be_bytes().to_vec());
            self.commit(batch).await?;
            tracing::info!(%code, away, online, "coupon uses away at the stores");
        }
        Ok(Some(online))
    }

    /// Counts a store sale's use of a code, once per sale: a code without a total limit counts
    /// it in its `uses` (a limited one counted it when it was granted); a customer's use counts
    /// against the per-customer limit online too. Answers the customer's uses and the limit
    /// when they now exceed it (two stores redeemed offline), for a conflict record.
    pub async fn record_store_use(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        sale: Ulid,
    ) -> Result<Option<(u64, u64)>> {
        let _lock = self.writes.lock().await;
        let marker = store_use_key(code, sale);
        if self.store.get(&marker)?.is_some() {
            return Ok(None);
        }
        let coupon = self.stored_coupon(code)?;
        let mut batch = Batch::new();
        batch.put_raw(marker, Vec::new());
        if let Some(mut c) = coupon.clone().filter(|c| c.limits.max_uses.is_none()) {
            c.uses += 1;
            self.stage_coupon(&mut batch, &c)?;
        }
        let mut over = None;
        if let Some(customer) = customer {
            let k = customer_uses_key(code, customer);
            let used = self.read_counter(&k)? + 1;
            batch.put_raw(k, used.to_be_bytes().to_vec());
            if let Some(max) = coupon.and_then(|c| c.limits.max_uses_per_customer) {
                if used > max {
                    over = Some((used, max));
                }
            }
        }
        self.commit(batch).await?;
        Ok(over)
    }

    /// The uses of a code away at the stores.
    pub fn store_share(&self, code: &str) -> Result<u64> {
        self.read_counter(&away_key(code))
    }
}
