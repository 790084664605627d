//! How often each promotion has been used — by orders, in total and per customer — for the
//! engine's `limits.total` and `limits.per_customer`. An order counts once however often it is
//! recorded, and a cancelled order gives its uses back. A pending checkout's reservation
//! (`super::reservations`) counts as a use until it becomes one or is given back.

use super::store::{key, read_u64, Batch};
use super::Backoffice;
use crate::storage::Result;
use protocol::promotion::{PromotionId, Usage};
use protocol::{CheckoutId, CustomerId, OrderId};
use std::collections::BTreeMap;

fn total_key(promotion: &PromotionId) -> Vec<u8> {
    key("puse", &[promotion.as_str().as_bytes()])
}

fn customer_key(promotion: &PromotionId, customer: CustomerId) -> Vec<u8> {
    key(
        "pcuse",
        &[promotion.as_str().as_bytes(), &customer.to_bytes()],
    )
}

/// Marks an order's use of a promotion; its value is the customer (16 bytes) or empty.
fn order_key(promotion: &PromotionId, order: OrderId) -> Vec<u8> {
    key(
        "puseorder",
        &[promotion.as_str().as_bytes(), &order.to_bytes()],
    )
}

impl Backoffice {
    fn counter(&self, k: &[u8]) -> Result<u64> {
        Ok(self.store.get(k)?.map_or(0, |v| read_u64(&v)))
    }

    /// The uses so far of `promotions` (those with limits), for `customer` and in total,
    /// counting the reservations of pending checkouts as uses.
    pub fn usage(
        &self,
        customer: Option<CustomerId>,
        promotions: &[PromotionId],
    ) -> Result<BTreeMap<PromotionId, Usage>> {
        self.usage_for(customer, promotions, None)
    }

    /// [`Backoffice::usage`] leaving out the reservation of checkout `own`.
    pub fn usage_for(
        &self,
        customer: Option<CustomerId>,
        promotions: &[PromotionId],
        own: Option<CheckoutId>,
    ) -> Result<BTreeMap<PromotionId, Usage>> {
        let now = self.now();
        let mut out = BTreeMap::new();
        for p in promotions {
            let held = self.promotion_held(p, customer, now, own)?;
            let total = self.counter(&total_key(p))?.saturating_add(held.total);
            let by_customer = match customer {
                Some(c) => self
                    .counter(&customer_key(p, c))?
                    .saturating_add(held.by_customer),
                None => 0,
            };
            out.insert(
                p.clone(),
                Usage {
                    by_customer: u32::try_from(by_customer).unwrap_or(u32::MAX),
                    total,
                },
            );
        }
        Ok(out)
    }

    /// Counts an order's use of each promotion, once per order.
    pub async fn record_uses(
        &self,
        promotions: &[PromotionId],
        customer: Option<CustomerId>,
        order: OrderId,
    ) -> Result<()> {
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        self.stage_uses(&mut batch, promotions, customer, order)?;
        self.commit(batch).await
    }

    /// Stages an order's use of each promotion it has not counted yet.
    pub(super) fn stage_uses(
        &self,
        batch: &mut Batch,
        promotions: &[PromotionId],
        customer: Option<CustomerId>,
        order: OrderId,
    ) -> Result<()> {
        for p in promotions {
            let ok = order_key(p, order);
            if self.store.get(&ok)?.is_some() {
                continue;
            }
            let total = self.counter(&total_key(p))? + 1;
            batch.put_raw(total_key(p), total.to_be_bytes().to_vec());
            if let Some(c) = customer {
                let ck = customer_key(p, c);
                let n = self.counter(&ck)? + 1;
                batch.put_raw(ck, n.to_be_bytes().to_vec());
            }
            batch.put_raw(
                ok,
                customer.map_or_else(Vec::new, |c| c.to_bytes().to_vec()),
            );
        }
        Ok(())
    }

    /// Gives back an order's uses (the order was cancelled).
    pub async fn release_uses(&self, promotions: &[PromotionId], order: OrderId) -> Result<()> {
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        for p in promotions {
            let ok = order_key(p, order);
            let Some(marker) = self.store.get(&ok)? else {
                continue;
            };
            batch.delete(ok);
            let total = self.counter(&total_key(p))?.saturating_sub(1);
            batch.put_raw(total_key(p), total.to_be_bytes().to_vec());
            if let Ok(bytes) = <[u8; 16]>::try_from(marker.as_slice()) {
                let c = CustomerId(ulid::Ulid::from_bytes(bytes));
                let ck = customer_key(p, c);
                let n = self.counter(&ck)?.saturating_sub(1);
                batch.put_raw(ck, n.to_be_bytes().to_vec());
            }
        }
        self.commit(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[tokio::test]
    async fn uses_count_once_per_order_and_come_back_on_release() {
        let bo = fixture().bo;
        let p = PromotionId::parse("LIMITED").expect("id");
        let c = CustomerId::new();
        let (o1, o2) = (OrderId::new(), OrderId::new());
        bo.record_uses(std::slice::from_ref(&p), Some(c), o1)
            .await
            .expect("o1");
        bo.record_uses(std::slice::from_ref(&p), Some(c), o1)
            .await
            .expect("o1 again");
        bo.record_uses(std::slice::from_ref(&p), None, o2)
            .await
            .expect("o2");
        let usage = bo.usage(Some(c), std::slice::from_ref(&p)).expect("usage")[&p];
        assert_eq!((usage.by_customer, usage.total), (1, 2));
        bo.release_uses(std::slice::from_ref(&p), o1)
            .await
            .expect("release");
        bo.release_uses(std::slice::from_ref(&p), o1)
            .await
            .expect("release again");
        let usage = bo.usage(Some(c), std::slice::from_ref(&p)).expect("usage")[&p];
        assert_eq!((usage.by_customer, usage.total), (0, 1));
    }
}
