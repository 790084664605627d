//! Reservations: the limited uses a checkout holds while its payment is pending. A coupon code
//! with `max_uses` or `max_uses_per_customer` and a promotion with `limits.total` or
//! `limits.per_customer` are reserved when the checkout starts — checked against the uses *and*
//! the other checkouts' reservations, under the back office's write lock, so two checkouts
//! racing for the last use cannot both get it — become uses when the order is placed, and are
//! given back when the checkout ends without one.
//!
//! A reservation is stored under the checkout (`resv/{checkout}`, everything it holds) and
//! indexed under each limited code (`cresv/{code}\0{checkout}`) and promotion
//! (`presv/{promotion}\0{checkout}`), so counting the reservations of one code is a prefix scan.
//! It lapses at its `until`: when the checkout's payment session can no longer be paid (its
//! expiry plus the slack the checkout's end allows the provider), not when its stock hold
//! ends — a payment can go through after the hold ran out (the sweeper could not expire the
//! session), and its order must then find the uses it was priced with. Until then only the
//! checkout's end (cancelled, expired at the provider, paid) gives it back. A lapsed
//! reservation no longer counts, and the next reservation of the same code or promotion
//! deletes it, so one left behind by a crash never holds a use for longer than its session.
//! Reserving again for the same checkout with a later `until` extends it (the provider kept
//! the session open longer than asked).

use super::store::{self, key, prefix, Batch};
use super::Backoffice;
use crate::actors::offers::{Reservation, ReserveFailure};
use crate::storage::{Result, StorageError};
use protocol::promotion::{Limits, PromotionId};
use protocol::{CheckoutId, CustomerId, OrderId, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// A checkout's reservation, as stored: everything in its price, limited or not (the order
/// uses them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub checkout: CheckoutId,
    pub customer: Option<CustomerId>,
    /// Normalised codes.
    pub coupons: Vec<String>,
    pub promotions: Vec<PromotionId>,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Stored for ReservationRecord {
    const KIND: &'static str = "bo_reservation";
    const VERSION: u16 = 1;
}

/// One reserved use of a limited code or promotion, indexed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedUse {
    pub checkout: CheckoutId,
    pub customer: Option<CustomerId>,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

impl Stored for ReservedUse {
    const KIND: &'static str = "bo_reserved_use";
    const VERSION: u16 = 1;
}

/// Reservations that count now under one code or promotion: in total and by one customer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub total: u64,
    pub by_customer: u64,
}

fn reservation_key(checkout: CheckoutId) -> Vec<u8> {
    key("resv", &[&checkout.to_bytes()])
}

fn coupon_index(code: &str) -> Vec<u8> {
    prefix("cresv", code.as_bytes())
}

fn coupon_hold_key(code: &str, checkout: CheckoutId) -> Vec<u8> {
    key("cresv", &[code.as_bytes(), &checkout.to_bytes()])
}

fn promotion_index(promotion: &PromotionId) -> Vec<u8> {
    prefix("presv", promotion.as_str().as_bytes())
}

fn promotion_hold_key(promotion: &PromotionId, checkout: CheckoutId) -> Vec<u8> {
    key(
        "presv",
        &[promotion.as_str().as_bytes(), &checkout.to_bytes()],
    )
}

fn limited(limits: &Limits) -> bool {
    limits.total.is_some() || limits.per_customer.is_some()
}

impl Backoffice {
    /// The reserved uses under an index that count at `now`: not lapsed, not `except`'s.
    fn held(
        &self,
        index: &[u8],
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        except: Option<CheckoutId>,
    ) -> Result<Held> {
        let mut held = Held::default();
        for (_, value) in self.store.scan(index, None, usize::MAX)? {
            let reserved: ReservedUse = protocol::codec::decode(&value)?;
            if reserved.until <= now || Some(reserved.checkout) == except {
                continue;
            }
            held.total += 1;
            if customer.is_some() && reserved.customer == customer {
                held.by_customer += 1;
            }
        }
        Ok(held)
    }

    /// Reserved uses of a code (normalised) that count at `now`, leaving out `except`'s.
    pub(super) fn coupon_held(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        except: Option<CheckoutId>,
    ) -> Result<Held> {
        self.held(&coupon_index(code), customer, now, except)
    }

    /// Reserved uses of a promotion that count at `now`, leaving out `except`'s.
    pub(super) fn promotion_held(
        &self,
        promotion: &PromotionId,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        except: Option<CheckoutId>,
    ) -> Result<Held> {
        self.held(&promotion_index(promotion), customer, now, except)
    }

    /// The limits of a promotion: from the live set (what pricing used), else its record.
    fn limits_of(&self, promotion: &PromotionId) -> Result<Option<(String, Limits)>> {
        if let Some(p) = self.live().promotions().iter().find(|p| &p.id == promotion) {
            return Ok(Some((p.name.clone(), p.spec.limits.clone())));
        }
        Ok(self
            .promotion_record(promotion.as_str())?
            .map(|p| (p.name, p.spec.limits)))
    }

    /// Why a promotion cannot take one more use by `customer` now, counting the uses and the
    /// reservations of checkouts other than `own`; `None` when it can.
    fn promotion_refusal(
        &self,
        promotion: &PromotionId,
        limits: &Limits,
        customer: Option<CustomerId>,
        own: CheckoutId,
    ) -> Result<Option<String>> {
        let usage = self
            .usage_for(customer, std::slice::from_ref(promotion), Some(own))?
            .remove(promotion)
            .unwrap_or_default();
        if let Some(limit) = limits.per_customer {
            if customer.is_none() {
                return Ok(Some("it is limited per customer: sign in to get it".into()));
            }
            if usage.by_customer >= limit {
                return Ok(Some(
                    "you have already used it as often as it allows".into(),
                ));
            }
        }
        if limits.total.is_some_and(|total| usage.total >= total) {
            return Ok(Some("it has just been used up by other orders".into()));
        }
        Ok(None)
    }

    /// Reserves the limited uses of a checkout's coupons and promotions, all or none (see the
    /// module docs). The same checkout again changes nothing but a later `until`, which
    /// extends its reservation; a checkout whose price holds nothing limited stores nothing
    /// (its order then redeems with [`Backoffice::redeem`]).
    pub async fn reserve(
        &self,
        checkout: CheckoutId,
        reservation: &Reservation,
    ) -> std::result::Result<(), ReserveFailure> {
        let unavailable = |e: StorageError| ReserveFailure::Unavailable(e.to_string());
        if reservation.coupons.is_empty() && reservation.promotions.is_empty() {
            return Ok(());
        }
        let _lock = self.writes.lock().await;
        let now = self.now();
        if let Some(record) =
            store::get::<ReservationRecord>(self.store.as_ref(), &reservation_key(checkout))
                .map_err(unavailable)?
        {
            return self
                .extend(record, reservation.until, now)
                .await
                .map_err(unavailable);
        }
        let customer = reservation.customer;
        let held = ReservedUse {
            checkout,
            customer,
            until: reservation.until,
        };
        let mut batch = Batch::new();
        let mut indexes = Vec::new();
        for code in &reservation.coupons {
            let Some(coupon) = self.stored_coupon(code).map_err(unavailable)? else {
                continue;
            };
            let limits = &coupon.limits;
            if limits.max_uses.is_none() && limits.max_uses_per_customer.is_none() {
                continue;
            }
            if let Err(refusal) = self.limit_refusal(&coupon, customer, now, Some(checkout)) {
                return Err(match refusal {
                    super::CouponRefusal::Unavailable => {
                        ReserveFailure::Unavailable("coupon storage failed".into())
                    }
                    other => ReserveFailure::Coupon {
                        code: code.clone(),
                        reason: other.to_string(),
                    },
                });
            }
            batch
                .put(coupon_hold_key(code, checkout), &held)
                .map_err(unavailable)?;
            indexes.push(coupon_index(code));
        }
        for promotion in &reservation.promotions {
            let Some((name, limits)) = self.limits_of(promotion).map_err(unavailable)? else {
                continue;
            };
            if !limited(&limits) {
                continue;
            }
            if let Some(reason) = self
                .promotion_refusal(promotion, &limits, customer, checkout)
                .map_err(unavailable)?
            {
                return Err(ReserveFailure::Promotion { name, reason });
            }
            batch
                .put(promotion_hold_key(promotion, checkout), &held)
                .map_err(unavailable)?;
            indexes.push(promotion_index(promotion));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.purge_lapsed(&indexes, now, &mut batch)
            .map_err(unavailable)?;
        let record = ReservationRecord {
            checkout,
            customer,
            coupons: reservation.coupons.clone(),
            promotions: reservation.promotions.clone(),
            until: reservation.until,
            created_at: now,
        };
        batch
            .put(reservation_key(checkout), &record)
            .map_err(unavailable)?;
        self.commit(batch).await.map_err(unavailable)?;
        tracing::info!(%checkout, "coupon and promotion uses reserved");
        Ok(())
    }

    /// Moves the end of a checkout's reservation to `until` when that is later and the
    /// reservation has not lapsed (a lapsed one may have lost its uses to other checkouts
    /// already: it is not revived).
    async fn extend(
        &self,
        mut record: ReservationRecord,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        if until <= record.until || record.until <= now {
            return Ok(());
        }
        record.until = until;
        let held = ReservedUse {
            checkout: record.checkout,
            customer: record.customer,
            until,
        };
        let mut batch = Batch::new();
        let holds = record
            .coupons
            .iter()
            .map(|c| coupon_hold_key(c, record.checkout))
            .chain(
                record
                    .promotions
                    .iter()
                    .map(|p| promotion_hold_key(p, record.checkout)),
            );
        for k in holds {
            if self.store.get(&k)?.is_some() {
                batch.put(k, &held)?;
            }
        }
        batch.put(reservation_key(record.checkout), &record)?;
        self.commit(batch).await?;
        tracing::info!(checkout = %record.checkout, %until, "reservation extended");
        Ok(())
    }

    /// Stages the removal of the lapsed reservations found under these indexes, whole.
    fn purge_lapsed(
        &self,
        indexes: &[Vec<u8>],
        now: OffsetDateTime,
        batch: &mut Batch,
    ) -> Result<()> {
        let mut lapsed = BTreeSet::new();
        for index in indexes {
            for (k, value) in self.store.scan(index, None, usize::MAX)? {
                let reserved: ReservedUse = protocol::codec::decode(&value)?;
                if reserved.until <= now && lapsed.insert(reserved.checkout) {
                    match store::get::<ReservationRecord>(
                        self.store.as_ref(),
                        &reservation_key(reserved.checkout),
                    )? {
                        Some(record) => stage_release(batch, &record),
                        None => batch.delete(k),
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns a checkout's reservation into its order's uses, in one batch: each code redeemed
    /// and each promotion counted (once per order), the reservation removed. `false` when the
    /// checkout holds none.
    pub async fn commit_reservation(&self, checkout: CheckoutId, order: OrderId) -> Result<bool> {
        let _lock = self.writes.lock().await;
        let Some(record) =
            store::get::<ReservationRecord>(self.store.as_ref(), &reservation_key(checkout))?
        else {
            return Ok(false);
        };
        let now = self.now();
        let mut batch = Batch::new();
        for code in &record.coupons {
            self.stage_redemption(&mut batch, code, record.customer, order, now)?;
        }
        self.stage_uses(&mut batch, &record.promotions, record.customer, order)?;
        stage_release(&mut batch, &record);
        self.commit(batch).await?;
        tracing::info!(%checkout, %order, "reserved coupon and promotion uses used by the order");
        Ok(true)
    }

    /// Gives back a checkout's reservation; `false` when it holds none.
    pub async fn release_reservation(&self, checkout: CheckoutId) -> Result<bool> {
        let _lock = self.writes.lock().await;
        let Some(record) =
            store::get::<ReservationRecord>(self.store.as_ref(), &reservation_key(checkout))?
        else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        stage_release(&mut batch, &record);
        self.commit(batch).await?;
        tracing::info!(%checkout, "reserved coupon and promotion uses given back");
        Ok(true)
    }
}

/// Removes a reservation and every index entry it may have.
fn stage_release(batch: &mut Batch, record: &ReservationRecord) {
    for code in &record.coupons {
        batch.delete(coupon_hold_key(code, record.checkout));
    }
    for promotion in &record.promotions {
        batch.delete(promotion_hold_key(promotion, record.checkout));
    }
    batch.delete(reservation_key(record.checkout));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoffice::audit::Actor;
    use crate::backoffice::coupons::NewCoupon;
    use crate::backoffice::promotions::NewPromotion;
    use crate::backoffice::store::{BackofficeStore, KvBackofficeStore, MemoryStore};
    use crate::backoffice::users::NewUser;
    use crate::backoffice::{BackOfficeUser, BackofficeSettings, CouponRefusal};
    use crate::clock::ManualClock;
    use crate::storage::sled::SledStorage;
    use arc_swap::ArcSwap;
    use serde_json::json;
    use std::sync::Arc;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-01 09:00 UTC);

    fn open(store: Arc<dyn BackofficeStore>, clock: &ManualClock) -> Arc<Backoffice> {
        let catalog = protocol::CatalogSnapshot::new(1, Vec::new(), Vec::new());
        Backoffice::open(
            store,
            Arc::new(clock.clone()),
            Arc::new(ArcSwap::from_pointee(catalog)),
            BackofficeSettings::default(),
        )
        .expect("opens")
    }

    async fn user(bo: &Backoffice, email: &str, role: &str) -> Actor {
        let view = bo
            .create_user(
                &Actor::AdminToken,
                NewUser {
                    email: email.into(),
                    name: "Someone".into(),
                    roles: vec![role.into()],
                    password: None,
                },
            )
            .await
            .expect("user");
        Actor::User(BackOfficeUser {
            id: view.id,
            email: view.email,
            roles: view.roles,
        })
    }

    /// A live promotion `id`, 1 euro off the basket, with these limits and conditions.
    async fn live(bo: &Backoffice, id: &str, limits: serde_json::Value, coupon: bool) {
        let author = user(bo, &format!("a-{id}@example.com"), "merchandiser").await;
        let approver = user(bo, &format!("b-{id}@example.com"), "approver").await;
        let conditions = if coupon {
            json!([{"type": "coupon"}])
        } else {
            json!([])
        };
        let spec = json!({
            "conditions": conditions,
            "benefit": {"type": "amount_off_basket", "amount": {"minor": 100, "currency": "EUR"}},
            "limits": limits,
        });
        bo.create_promotion(
            &author,
            NewPromotion {
                id: id.into(),
                name: format!("Promotion {id}"),
                description: String::new(),
                spec,
                starts_at: None,
                ends_at: None,
            },
        )
        .await
        .expect("created");
        bo.approve_promotion(&approver, id).await.expect("approved");
    }

    async fn coupon(bo: &Backoffice, promotion: &str, code: &str, max_uses: Option<u64>) {
        let marketer = user(bo, &format!("m-{code}@example.com"), "marketer").await;
        bo.create_coupon(
            &marketer,
            promotion,
            NewCoupon {
                code: code.into(),
                max_uses,
                max_uses_per_customer: None,
                expires_at: None,
            },
        )
        .await
        .expect("coupon");
    }

    fn hold(
        customer: Option<CustomerId>,
        coupons: &[&str],
        promotions: &[&str],
        until: OffsetDateTime,
    ) -> Reservation {
        Reservation {
            customer,
            coupons: coupons.iter().map(|c| c.to_string()).collect(),
            promotions: promotions
                .iter()
                .map(|p| PromotionId::parse(p).expect("id"))
                .collect(),
            until,
        }
    }

    fn memory() -> (Arc<Backoffice>, ManualClock) {
        let clock = ManualClock::new(T0);
        (open(Arc::new(MemoryStore::default()), &clock), clock)
    }

    #[actix_web::test]
    async fn a_reserved_use_counts_until_the_order_uses_it_or_it_is_given_back() {
        let (bo, _clock) = memory();
        live(&bo, "ONE", json!({}), true).await;
        coupon(&bo, "ONE", "LAST-ONE", Some(1)).await;
        let until = T0 + time::Duration::minutes(15);
        let (c1, c2) = (CheckoutId::new(), CheckoutId::new());
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &["ONE"], until))
            .await
            .expect("the last use");
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &["ONE"], until))
            .await
            .expect("the same checkout again");
        assert_eq!(
            bo.check("LAST-ONE", None, T0),
            Err(CouponRefusal::UsedUp),
            "reserved for c1"
        );
        assert!(
            bo.check_for("LAST-ONE", None, T0, Some(c1)).is_ok(),
            "but not against c1 itself"
        );
        assert_eq!(
            bo.reserve(c2, &hold(None, &["LAST-ONE"], &["ONE"], until))
                .await,
            Err(ReserveFailure::Coupon {
                code: "LAST-ONE".into(),
                reason: "this coupon has been used up".into()
            })
        );

        assert!(bo.release_reservation(c1).await.expect("released"));
        assert!(!bo.release_reservation(c1).await.expect("once"));
        assert!(bo.check("LAST-ONE", None, T0).is_ok(), "given back");
        bo.reserve(c2, &hold(None, &["LAST-ONE"], &["ONE"], until))
            .await
            .expect("c2 now");
        let order = OrderId::new();
        assert!(bo.commit_reservation(c2, order).await.expect("used"));
        assert!(!bo.commit_reservation(c2, order).await.expect("once"));
        assert_eq!(
            bo.stored_coupon("LAST-ONE").expect("read").map(|c| c.uses),
            Some(1)
        );
        let p = PromotionId::parse("ONE").expect("id");
        assert_eq!(
            bo.usage(None, std::slice::from_ref(&p)).expect("usage")[&p].total,
            1
        );
        assert_eq!(bo.check("LAST-ONE", None, T0), Err(CouponRefusal::UsedUp));
        // The order's use is an ordinary redemption: a cancelled order gives it back.
        assert!(bo.release("LAST-ONE", order).await.expect("released"));
        assert!(bo.check("LAST-ONE", None, T0).is_ok());
    }

    #[actix_web::test]
    async fn a_lapsed_reservation_no_longer_counts_and_is_cleared() {
        let (bo, clock) = memory();
        live(&bo, "ONE", json!({}), true).await;
        coupon(&bo, "ONE", "LAST-ONE", Some(1)).await;
        let (c1, c2) = (CheckoutId::new(), CheckoutId::new());
        let until = T0 + time::Duration::minutes(15);
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &[], until))
            .await
            .expect("reserved");
        clock.advance(std::time::Duration::from_secs(15 * 60));
        let now = T0 + time::Duration::minutes(15);
        assert!(
            bo.check("LAST-ONE", None, now).is_ok(),
            "c1's hold ended: its reservation no longer counts"
        );
        bo.reserve(
            c2,
            &hold(None, &["LAST-ONE"], &[], now + time::Duration::minutes(15)),
        )
        .await
        .expect("c2");
        assert!(
            !bo.release_reservation(c1).await.expect("read"),
            "c2's reservation cleared c1's"
        );
        assert_eq!(bo.check("LAST-ONE", None, now), Err(CouponRefusal::UsedUp));
    }

    #[actix_web::test]
    async fn reserving_again_with_a_later_end_extends_the_reservation_which_still_lapses() {
        let (bo, clock) = memory();
        live(&bo, "ONE", json!({}), true).await;
        coupon(&bo, "ONE", "LAST-ONE", Some(1)).await;
        let c1 = CheckoutId::new();
        let minutes = |m| T0 + time::Duration::minutes(m);
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &["ONE"], minutes(15)))
            .await
            .expect("reserved");
        // The payment session stays open longer than asked: the reservation follows it.
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &["ONE"], minutes(40)))
            .await
            .expect("extended");
        // An earlier end never shortens it.
        bo.reserve(c1, &hold(None, &["LAST-ONE"], &["ONE"], minutes(20)))
            .await
            .expect("unchanged");
        clock.advance(std::time::Duration::from_secs(30 * 60));
        assert_eq!(
            bo.check("LAST-ONE", None, minutes(30)),
            Err(CouponRefusal::UsedUp),
            "still c1's at 30 minutes"
        );
        // Past its end it lapses all the same (a crash left it behind).
        assert!(bo.check("LAST-ONE", None, minutes(40)).is_ok());
    }

    #[actix_web::test]
    async fn promotion_limits_count_reservations_per_customer_and_in_total() {
        let (bo, _clock) = memory();
        live(&bo, "TWO", json!({"per_customer": 1, "total": 2}), false).await;
        let until = T0 + time::Duration::minutes(15);
        let (ana, bob, cy) = (CustomerId::new(), CustomerId::new(), CustomerId::new());
        let promotion = |name: &str, reason: &str| ReserveFailure::Promotion {
            name: name.into(),
            reason: reason.into(),
        };
        bo.reserve(CheckoutId::new(), &hold(Some(ana), &[], &["TWO"], until))
            .await
            .expect("ana");
        assert_eq!(
            bo.reserve(CheckoutId::new(), &hold(Some(ana), &[], &["TWO"], until))
                .await,
            Err(promotion(
                "Promotion TWO",
                "you have already used it as often as it allows"
            ))
        );
        assert_eq!(
            bo.reserve(CheckoutId::new(), &hold(None, &[], &["TWO"], until))
                .await,
            Err(promotion(
                "Promotion TWO",
                "it is limited per customer: sign in to get it"
            ))
        );
        bo.reserve(CheckoutId::new(), &hold(Some(bob), &[], &["TWO"], until))
            .await
            .expect("bob");
        assert_eq!(
            bo.reserve(CheckoutId::new(), &hold(Some(cy), &[], &["TWO"], until))
                .await,
            Err(promotion(
                "Promotion TWO",
                "it has just been used up by other orders"
            ))
        );
        let p = PromotionId::parse("TWO").expect("id");
        let usage = bo
            .usage(Some(ana), std::slice::from_ref(&p))
            .expect("usage")[&p];
        assert_eq!((usage.by_customer, usage.total), (1, 2));
    }

    #[actix_web::test]
    async fn reservations_survive_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(T0);
        let checkout = CheckoutId::new();
        {
            let storage = SledStorage::open(dir.path(), 8).expect("opens");
            let bo = open(
                KvBackofficeStore::open(&storage.keyspace()).expect("tree"),
                &clock,
            );
            live(&bo, "ONE", json!({}), true).await;
            coupon(&bo, "ONE", "LAST-ONE", Some(1)).await;
            bo.reserve(
                checkout,
                &hold(
                    None,
                    &["LAST-ONE"],
                    &["ONE"],
                    T0 + time::Duration::minutes(15),
                ),
            )
            .await
            .expect("reserved");
        }
        // The storage's writer thread lets go of the database shortly after the last handle.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let storage = loop {
            match SledStorage::open(dir.path(), 8) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "cannot reopen: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let bo = open(
            KvBackofficeStore::open(&storage.keyspace()).expect("tree"),
            &clock,
        );
        assert_eq!(
            bo.check("LAST-ONE", None, T0),
            Err(CouponRefusal::UsedUp),
            "still reserved after the restart"
        );
        assert!(bo.release_reservation(checkout).await.expect("released"));
        assert!(bo.check("LAST-ONE", None, T0).is_ok());
    }
}
