//! Coupons: public codes with usage limits (in total, per customer) and an expiry, and private
//! batches of single-use, unguessable codes (OS randomness, an alphabet without look-alikes,
//! collision-checked) exported as CSV. Codes are matched case-insensitively (stored in upper
//! case). Redemption is idempotent by order: an order counts once against every limit, and a
//! cancelled order gives its use back. [`CouponGuard`] slows down anyone guessing codes.

use super::audit::{Actor, Change};
use super::promotions::Status;
use super::store::{self, key, prefix, read_u64, Batch};
use super::{Backoffice, BackofficeError};
use crate::clock::Clock;
use crate::storage::{Result, StorageError};
use protocol::promotion::PromotionId;
use protocol::{CheckoutId, CustomerId, FieldError, OrderId, Stored};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

/// The most codes one batch may hold.
pub const MAX_BATCH: u32 = 100_000;
/// Random characters in a batch code: 12 of 32 symbols, 60 bits.
pub const RANDOM_CHARS: usize = 12;
/// Digits and capitals without 0, 1, I and O (easily confused); 32 symbols, so each comes from
/// five random bits without bias.
const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const MIN_CODE: usize = 4;
const MAX_CODE: usize = 32;
const MAX_PREFIX: usize = MAX_CODE - RANDOM_CHARS;

/// Limits of a code. `None`: unlimited / no expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponLimits {
    pub max_uses: Option<u64>,
    pub max_uses_per_customer: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A stored coupon code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRecord {
    /// Upper case.
    pub code: String,
    pub promotion: PromotionId,
    pub limits: CouponLimits,
    /// The private batch the code belongs to (single use); `None` for a public code.
    pub batch: Option<Ulid>,
    /// Orders that redeemed it and were not released.
    pub uses: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    /// The ERP's version, for codes that come from its coupons feed.
    pub erp_version: Option<u64>,
}

impl Stored for CouponRecord {
    const KIND: &'static str = "bo_coupon";
    const VERSION: u16 = 1;
}

/// A batch of single-use codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: Ulid,
    pub promotion: PromotionId,
    pub prefix: String,
    pub count: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl Stored for BatchRecord {
    const KIND: &'static str = "bo_coupon_batch";
    const VERSION: u16 = 1;
}

/// One order's use of a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub order: OrderId,
    pub customer: Option<CustomerId>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Stored for Redemption {
    const KIND: &'static str = "bo_redemption";
    const VERSION: u16 = 1;
}

/// A code that applies: the promotion it unlocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CouponGrant {
    pub promotion: PromotionId,
    /// The code, normalised (upper case).
    pub code: String,
}

/// Why a code does not apply, in words for the shopper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponRefusal {
    #[error("this coupon code is not known")]
    Unknown,
    #[error("this coupon expired")]
    Expired,
    #[error("this coupon has been used up")]
    UsedUp,
    #[error("you have already used this coupon as often as it allows")]
    UsedUpForCustomer,
    #[error("this coupon is limited per customer: sign in to use it")]
    SignInRequired,
    #[error("this coupon's promotion is not running now")]
    PromotionNotLive,
    #[error("coupons cannot be checked right now: try again in a moment")]
    Unavailable,
}

impl From<StorageError> for CouponRefusal {
    fn from(e: StorageError) -> CouponRefusal {
        tracing::error!(error = %e, "coupon storage failed");
        CouponRefusal::Unavailable
    }
}

/// How long a client must wait before trying another code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub seconds: u64,
}

/// Body of `POST …/promotions/{id}/coupons`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCoupon {
    pub code: String,
    pub max_uses: Option<u64>,
    pub max_uses_per_customer: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Body of `POST …/promotions/{id}/coupon-batches`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    pub count: u32,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A code as typed, normalised for matching: trimmed, upper case.
pub fn normalize(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// Why a code is not well formed, or `None`.
pub fn code_problem(code: &str) -> Option<String> {
    let ok = (MIN_CODE..=MAX_CODE).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    (!ok).then(|| {
        format!("a code of {MIN_CODE} to {MAX_CODE} letters, digits and dashes, e.g. SUMMER-24")
    })
}

fn coupon_key(code: &str) -> Vec<u8> {
    key("coupon", &[code.as_bytes()])
}

pub(super) fn public_index_key(promotion: &PromotionId, code: &str) -> Vec<u8> {
    key("pcoupon", &[promotion.as_str().as_bytes(), code.as_bytes()])
}

fn batch_key(id: Ulid) -> Vec<u8> {
    key("batch", &[&id.0.to_be_bytes()])
}

fn promotion_batch_key(promotion: &PromotionId, id: Ulid) -> Vec<u8> {
    key(
        "pbatch",
        &[promotion.as_str().as_bytes(), &id.0.to_be_bytes()],
    )
}

fn batch_code_key(id: Ulid, code: &str) -> Vec<u8> {
    key("bcode", &[&id.0.to_be_bytes(), code.as_bytes()])
}

fn redemption_key(code: &str, order: OrderId) -> Vec<u8> {
    key("redeem", &[code.as_bytes(), &order.to_bytes()])
}

fn customer_uses_key(code: &str, customer: CustomerId) -> Vec<u8> {
    key("cuse", &[code.as_bytes(), &customer.to_bytes()])
}

/// `count` random codes of [`RANDOM_CHARS`] symbols after `prefix`, distinct from each other.
fn random_codes(prefix: &str, count: usize) -> std::result::Result<Vec<String>, StorageError> {
    let mut codes = BTreeSet::new();
    let mut buf = vec![0u8; RANDOM_CHARS * count.max(1)];
    while codes.len() < count {
        getrandom::getrandom(&mut buf)
            .map_err(|_| StorageError::Io("the OS random source failed".into()))?;
        for chunk in buf.chunks(RANDOM_CHARS) {
            if codes.len() == count {
                break;
            }
            let mut code = String::with_capacity(prefix.len() + RANDOM_CHARS);
            code.push_str(prefix);
            code.extend(chunk.iter().map(|b| ALPHABET[usize::from(b & 31)] as char));
            codes.insert(code);
        }
    }
    Ok(codes.into_iter().collect())
}

impl Backoffice {
    fn coupon(&self, code: &str) -> Result<Option<CouponRecord>> {
        store::get(self.store.as_ref(), &coupon_key(code))
    }

    /// Whether a code may be used by `customer` now, without using it: not expired, its
    /// promotion live (and, if that promotion is limited per customer, a signed-in customer),
    /// and a use left (see [`Backoffice::limit_refusal`]).
    fn evaluate(
        &self,
        coupon: &CouponRecord,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        except: Option<CheckoutId>,
    ) -> std::result::Result<(), CouponRefusal> {
        if coupon.limits.expires_at.is_some_and(|e| e <= now) {
            return Err(CouponRefusal::Expired);
        }
        let promotion = self
            .promotion_record(coupon.promotion.as_str())?
            .filter(|p| p.status_at(now) == Status::Active)
            .ok_or(CouponRefusal::PromotionNotLive)?;
        // A guest's uses are not counted: a promotion limited per customer is not for guests.
        if promotion.spec.limits.per_customer.is_some() && customer.is_none() {
            return Err(CouponRefusal::SignInRequired);
        }
        self.limit_refusal(coupon, customer, now, except)
    }

    /// Whether a code has a use left for `customer`: its uses plus the reservations of pending
    /// checkouts (other than `except`) are below `max_uses`, and below `max_uses_per_customer`
    /// for this customer (a guest cannot use a code limited per customer).
    pub(super) fn limit_refusal(
        &self,
        coupon: &CouponRecord,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        except: Option<CheckoutId>,
    ) -> std::result::Result<(), CouponRefusal> {
        let limits = &coupon.limits;
        if limits.max_uses_per_customer.is_some() && customer.is_none() {
            return Err(CouponRefusal::SignInRequired);
        }
        if limits.max_uses.is_none() && limits.max_uses_per_customer.is_none() {
            return Ok(());
        }
        let held = self.coupon_held(&coupon.code, customer, now, except)?;
        if limits
            .max_uses
            .is_some_and(|m| coupon.uses.saturating_add(held.total) >= m)
        {
            return Err(CouponRefusal::UsedUp);
        }
        if let (Some(max), Some(customer)) = (limits.max_uses_per_customer, customer) {
            let used = self
                .store
                .get(&customer_uses_key(&coupon.code, customer))?
                .map_or(0, |v| read_u64(&v));
            if used.saturating_add(held.by_customer) >= max {
                return Err(CouponRefusal::UsedUpForCustomer);
            }
        }
        Ok(())
    }

    /// Checks a code for a customer (`None`: a guest) at `now`: the promotion it unlocks, or
    /// why it does not apply. Uses nothing; pending checkouts' reservations count as uses.
    pub fn check(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
    ) -> std::result::Result<CouponGrant, CouponRefusal> {
        self.check_for(code, customer, now, None)
    }

    /// [`Backoffice::check`] for the basket of checkout `own` (its pending checkout), whose
    /// own reservation does not count against it.
    pub fn check_for(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        now: OffsetDateTime,
        own: Option<CheckoutId>,
    ) -> std::result::Result<CouponGrant, CouponRefusal> {
        let code = normalize(code);
        if code_problem(&code).is_some() {
            return Err(CouponRefusal::Unknown);
        }
        let coupon = self.coupon(&code)?.ok_or(CouponRefusal::Unknown)?;
        self.evaluate(&coupon, customer, now, own)?;
        Ok(CouponGrant {
            promotion: coupon.promotion,
            code,
        })
    }

    /// Uses a code for an order. Idempotent by order: the same order again answers the grant
    /// and counts nothing more. Checks every limit at the clock's now, like [`Backoffice::check`].
    pub async fn redeem(
        &self,
        code: &str,
        customer: Option<CustomerId>,
        order: OrderId,
    ) -> std::result::Result<CouponGrant, CouponRefusal> {
        let code = normalize(code);
        if code_problem(&code).is_some() {
            return Err(CouponRefusal::Unknown);
        }
        let _lock = self.writes.lock().await;
        let coupon = self.coupon(&code)?.ok_or(CouponRefusal::Unknown)?;
        let grant = CouponGrant {
            promotion: coupon.promotion.clone(),
            code: code.clone(),
        };
        if self.store.get(&redemption_key(&code, order))?.is_some() {
            return Ok(grant);
        }
        let now = self.now();
        self.evaluate(&coupon, customer, now, None)?;
        let mut batch = Batch::new();
        self.stage_redemption(&mut batch, &code, customer, order, now)?;
        self.commit(batch).await?;
        tracing::info!(code = %code, order = %order, "coupon redeemed");
        Ok(grant)
    }

    /// Stages an order's use of a code (normalised): one more use of the code and of the
    /// customer, and the redemption record. Nothing when the order used it already, or the
    /// code no longer exists.
    pub(super) fn stage_redemption(
        &self,
        batch: &mut Batch,
        code: &str,
        customer: Option<CustomerId>,
        order: OrderId,
        now: OffsetDateTime,
    ) -> Result<()> {
        if self.store.get(&redemption_key(code, order))?.is_some() {
            return Ok(());
        }
        let Some(mut coupon) = self.coupon(code)? else {
            return Ok(());
        };
        coupon.uses += 1;
        batch.put(coupon_key(code), &coupon)?;
        batch.put(
            redemption_key(code, order),
            &Redemption {
                order,
                customer,
                at: now,
            },
        )?;
        if let Some(c) = customer {
            let k = customer_uses_key(code, c);
            let used = self.store.get(&k)?.map_or(0, |v| read_u64(&v));
            batch.put_raw(k, (used + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Gives back the use an order made of a code (the order was cancelled). `false` when that
    /// order had not used it (or it was released already).
    pub async fn release(&self, code: &str, order: OrderId) -> Result<bool> {
        let code = normalize(code);
        let _lock = self.writes.lock().await;
        let rk = redemption_key(&code, order);
        let Some(redemption) = store::get::<Redemption>(self.store.as_ref(), &rk)? else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch.delete(rk);
        if let Some(mut coupon) = self.coupon(&code)? {
            coupon.uses = coupon.uses.saturating_sub(1);
            batch.put(coupon_key(&code), &coupon)?;
        }
        if let Some(c) = redemption.customer {
            let k = customer_uses_key(&code, c);
            match self.store.get(&k)?.map_or(0, |v| read_u64(&v)) {
                0 | 1 => batch.delete(k),
                n => batch.put_raw(k, (n - 1).to_be_bytes().to_vec()),
            }
        }
        self.commit(batch).await?;
        tracing::info!(code = %code, order = %order, "coupon use released");
        Ok(true)
    }

    /// Refuses a client that typed too many invalid codes lately (the caller answers 429 with
    /// `Retry-After`).
    pub fn guard(&self, client_key: &str) -> std::result::Result<(), RetryAfter> {
        self.guard.guard(client_key)
    }

    /// Counts an invalid code typed by a client.
    pub fn record_invalid(&self, client_key: &str) {
        self.guard.record_invalid(client_key);
    }

    fn check_limits(
        &self,
        max_uses: Option<u64>,
        per_customer: Option<u64>,
        expires_at: Option<OffsetDateTime>,
        errors: &mut Vec<FieldError>,
    ) {
        if max_uses == Some(0) {
            errors.push(FieldError::new(
                "max_uses",
                "at least 1, or leave it out for unlimited",
            ));
        }
        if per_customer == Some(0) {
            errors.push(FieldError::new(
                "max_uses_per_customer",
                "at least 1, or leave it out for unlimited",
            ));
        }
        if expires_at.is_some_and(|e| e <= self.now()) {
            errors.push(FieldError::new("expires_at", "a time in the future"));
        }
    }

    /// A promotion a coupon may be made for: it exists and has not ended.
    fn coupon_target(&self, promotion: &str) -> std::result::Result<PromotionId, BackofficeError> {
        let p = self
            .promotion_record(promotion)?
            .ok_or_else(|| BackofficeError::NotFound(format!("promotion {promotion}")))?;
        if p.status_at(self.now()) == Status::Ended {
            return Err(BackofficeError::Conflict {
                code: "promotion_ended",
                message: format!("promotion {promotion} has ended: it takes no new coupons"),
            });
        }
        Ok(p.id)
    }

    /// Creates a public code for a promotion.
    pub async fn create_coupon(
        &self,
        actor: &Actor,
        promotion: &str,
        new: NewCoupon,
    ) -> std::result::Result<CouponRecord, BackofficeError> {
        let code = normalize(&new.code);
        let mut errors = Vec::new();
        if let Some(problem) = code_problem(&code) {
            errors.push(FieldError::new("code", problem));
        }
        self.check_limits(
            new.max_uses,
            new.max_uses_per_customer,
            new.expires_at,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(BackofficeError::Invalid(errors));
        }
        let _lock = self.writes.lock().await;
        let promotion = self.coupon_target(promotion)?;
        if self.coupon(&code)?.is_some() {
            return Err(BackofficeError::Conflict {
                code: "code_taken",
                message: format!("the code {code} exists already"),
            });
        }
        let coupon = CouponRecord {
            code: code.clone(),
            promotion: promotion.clone(),
            limits: CouponLimits {
                max_uses: new.max_uses,
                max_uses_per_customer: new.max_uses_per_customer,
                expires_at: new.expires_at,
            },
            batch: None,
            uses: 0,
            created_at: self.now(),
            created_by: actor.id(),
            erp_version: None,
        };
        let mut batch = Batch::new();
        self.stage_coupon(&mut batch, &coupon)?;
        self.stage_audit(
            &mut batch,
            Change::<(), _> {
                actor,
                action: "coupon.create",
                subject: format!("coupon/{code}"),
                before: None,
                after: Some(&coupon),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(promotion = %promotion, by = %actor.id(), "public coupon created");
        Ok(coupon)
    }

    /// Writes a public code and its index entry.
    pub(crate) fn stage_coupon(&self, batch: &mut Batch, coupon: &CouponRecord) -> Result<()> {
        batch.put(coupon_key(&coupon.code), coupon)?;
        batch.put_raw(
            public_index_key(&coupon.promotion, &coupon.code),
            Vec::new(),
        );
        Ok(())
    }

    pub(crate) fn stored_coupon(&self, code: &str) -> Result<Option<CouponRecord>> {
        self.coupon(code)
    }

    /// The public codes of a promotion.
    pub fn coupons(&self, promotion: &str) -> Result<Vec<CouponRecord>> {
        let index = prefix("pcoupon", promotion.as_bytes());
        let mut out = Vec::new();
        for (k, _) in self.store.scan(&index, None, usize::MAX)? {
            let code = String::from_utf8_lossy(&k[index.len()..]).into_owned();
            if let Some(c) = self.coupon(&code)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Generates a batch of single-use codes for a promotion.
    pub async fn create_batch(
        &self,
        actor: &Actor,
        promotion: &str,
        new: NewBatch,
    ) -> std::result::Result<BatchRecord, BackofficeError> {
        let prefix = normalize(&new.prefix);
        let mut errors = Vec::new();
        if !(1..=MAX_BATCH).contains(&new.count) {
            errors.push(FieldError::new("count", format!("1 to {MAX_BATCH} codes")));
        }
        let prefix_ok = prefix.len() <= MAX_PREFIX
            && prefix
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if !prefix_ok {
            errors.push(FieldError::new(
                "prefix",
                format!("at most {MAX_PREFIX} letters, digits and dashes, e.g. VIP-"),
            ));
        }
        self.check_limits(Some(1), None, new.expires_at, &mut errors);
        if !errors.is_empty() {
            return Err(BackofficeError::Invalid(errors));
        }
        let _lock = self.writes.lock().await;
        let promotion = self.coupon_target(promotion)?;
        let record = BatchRecord {
            id: Ulid::new(),
            promotion: promotion.clone(),
            prefix: prefix.clone(),
            count: new.count,
            expires_at: new.expires_at,
            created_at: self.now(),
            created_by: actor.id(),
        };
        let store = self.store.clone();
        let template = CouponRecord {
            code: String::new(),
            promotion: promotion.clone(),
            limits: CouponLimits {
                max_uses: Some(1),
                max_uses_per_customer: None,
                expires_at: new.expires_at,
            },
            batch: Some(record.id),
            uses: 0,
            created_at: record.created_at,
            created_by: record.created_by.clone(),
            erp_version: None,
        };
        let id = record.id;
        let count = new.count as usize;
        // Generating and collision-checking 100,000 codes blocks for a while: off the runtime.
        let mut batch = tokio::task::spawn_blocking(move || -> Result<Batch> {
            let mut batch = Batch::new();
            let mut codes = BTreeSet::new();
            while codes.len() < count {
                for code in random_codes(&prefix, count - codes.len())? {
                    if !codes.contains(&code) && store.get(&coupon_key(&code))?.is_none() {
                        codes.insert(code);
                    }
                }
            }
            for code in codes {
                let coupon = CouponRecord {
                    code: code.clone(),
                    ..template.clone()
                };
                batch.put(coupon_key(&code), &coupon)?;
                batch.put_raw(batch_code_key(id, &code), Vec::new());
            }
            Ok(batch)
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))??;
        batch.put(batch_key(record.id), &record)?;
        batch.put_raw(promotion_batch_key(&promotion, record.id), Vec::new());
        self.stage_audit(
            &mut batch,
            Change::<(), _> {
                actor,
                action: "coupon_batch.create",
                subject: format!("coupon_batch/{}", record.id),
                before: None,
                after: Some(&record),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(promotion = %promotion, batch = %record.id, count = record.count, by = %actor.id(), "coupon batch created");
        Ok(record)
    }

    /// The batches of a promotion.
    pub fn batches(&self, promotion: &str) -> Result<Vec<BatchRecord>> {
        let index = prefix("pbatch", promotion.as_bytes());
        let mut out = Vec::new();
        for (k, _) in self.store.scan(&index, None, usize::MAX)? {
            let id = <[u8; 16]>::try_from(&k[index.len()..])
                .map(|b| Ulid(u128::from_be_bytes(b)))
                .map_err(|_| StorageError::Io("malformed batch index key".into()))?;
            if let Some(b) = store::get(self.store.as_ref(), &batch_key(id))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// A batch's codes as CSV (`code,promotion,batch,expires_at,used`). The export is audited:
    /// whoever holds the file holds the codes.
    pub async fn export_batch(
        &self,
        actor: &Actor,
        promotion: &str,
        id: Ulid,
    ) -> std::result::Result<String, BackofficeError> {
        let record = store::get::<BatchRecord>(self.store.as_ref(), &batch_key(id))?
            .filter(|b| b.promotion.as_str() == promotion)
            .ok_or_else(|| BackofficeError::NotFound(format!("coupon batch {id}")))?;
        let store = self.store.clone();
        let csv = tokio::task::spawn_blocking(move || -> Result<String> {
            let index = prefix("bcode", &id.0.to_be_bytes());
            let mut out = csv::Writer::from_writer(Vec::new());
            let io = |e: csv::Error| StorageError::Io(e.to_string());
            out.write_record(["code", "promotion", "batch", "expires_at", "used"])
                .map_err(io)?;
            let expires = record
                .expires_at
                .and_then(|e| {
                    e.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            let batch = id.to_string();
            for (k, _) in store.scan(&index, None, usize::MAX)? {
                let code = String::from_utf8_lossy(&k[index.len()..]).into_owned();
                let used = store::get::<CouponRecord>(store.as_ref(), &coupon_key(&code))?
                    .is_some_and(|c| c.uses > 0);
                out.write_record([
                    code.as_str(),
                    record.promotion.as_str(),
                    batch.as_str(),
                    expires.as_str(),
                    if used { "true" } else { "false" },
                ])
                .map_err(io)?;
            }
            let bytes = out
                .into_inner()
                .map_err(|e| StorageError::Io(e.to_string()))?;
            String::from_utf8(bytes).map_err(|e| StorageError::Io(e.to_string()))
        })
        .await
        .map_err(|e| StorageError::Io(e.to_string()))??;
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        self.stage_audit(
            &mut batch,
            Change::<(), ()> {
                actor,
                action: "coupon_batch.export",
                subject: format!("coupon_batch/{id}"),
                before: None,
                after: None,
            },
        )?;
        self.commit(batch).await?;
        Ok(csv)
    }
}

/// Who a client is for the guard: an IPv4 address as it is; an IPv6 address by its /64 prefix,
/// the smallest block a provider hands one subscriber (SLAAC and privacy addresses rotate
/// freely inside it, so the full address would give a guesser a fresh count each time); an
/// IPv4-mapped IPv6 address as its IPv4 address. Anything else (not an address) as given.
pub fn client_key(client: &str) -> String {
    match client.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
        Err(_) => client.to_string(),
    }
}

/// Counts invalid codes per client (see [`client_key`]) in a sliding window: after `limit`
/// within `window`, the client is refused until the oldest of them leaves the window.
pub struct CouponGuard {
    limit: usize,
    window: Duration,
    clock: Arc<dyn Clock>,
    clients: Mutex<HashMap<String, VecDeque<OffsetDateTime>>>,
    records: AtomicU64,
}

/// Every this many recorded codes, clients whose window is empty are forgotten.
const SWEEP_EVERY: u64 = 1024;

impl CouponGuard {
    pub fn new(limit: u32, window: Duration, clock: Arc<dyn Clock>) -> CouponGuard {
        CouponGuard {
            limit: (limit as usize).max(1),
            window,
            clock,
            clients: Mutex::new(HashMap::new()),
            records: AtomicU64::new(0),
        }
    }

    fn prune(&self, times: &mut VecDeque<OffsetDateTime>, now: OffsetDateTime) {
        while times.front().is_some_and(|t| *t + self.window <= now) {
            times.pop_front();
        }
    }

    pub fn guard(&self, client: &str) -> std::result::Result<(), RetryAfter> {
        let now = self.clock.now();
        let client = client_key(client);
        let Ok(mut clients) = self.clients.lock() else {
            return Ok(());
        };
        let Some(times) = clients.get_mut(&client) else {
            return Ok(());
        };
        self.prune(times, now);
        match times.front() {
            Some(oldest) if times.len() >= self.limit => {
                let wait = (*oldest + self.window - now).as_seconds_f64().ceil();
                Err(RetryAfter {
                    seconds: (wait as u64).max(1),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn record_invalid(&self, client: &str) {
        let now = self.clock.now();
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        let times = clients.entry(client_key(client)).or_default();
        self.prune(times, now);
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
        if self.records.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            clients.retain(|_, times| times.back().is_some_and(|t| *t + self.window > now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use time::macros::datetime;

    #[test]
    fn ipv6_clients_are_one_client_per_64_and_ipv4_per_address() {
        let table = [
            ("192.0.2.7", "192.0.2.7"),
            (" 192.0.2.7 ", "192.0.2.7"),
            ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::ffff:192.0.2.9", "192.0.2.9"),
            ("::1", "::/64"),
            ("not-an-address", "not-an-address"),
        ];
        for (client, key) in table {
            assert_eq!(client_key(client), key, "{client}");
        }
    }

    #[test]
    fn a_guesser_rotating_addresses_in_its_64_is_still_refused() {
        let guard = CouponGuard::new(
            3,
            Duration::from_secs(600),
            Arc::new(ManualClock::new(datetime!(2026-03-01 09:00 UTC))),
        );
        for host in 1..=3 {
            let client = format!("2001:db8:aa:bb::{host}");
            assert_eq!(guard.guard(&client), Ok(()), "guess {host}");
            guard.record_invalid(&client);
        }
        assert!(
            guard.guard("2001:db8:aa:bb:ffff:1:2:3").is_err(),
            "another address of the same /64"
        );
        assert_eq!(guard.guard("2001:db8:aa:bc::1"), Ok(()), "the next /64");
        for _ in 0..2 {
            guard.record_invalid("198.51.100.1");
        }
        guard.record_invalid("198.51.100.2");
        assert_eq!(guard.guard("198.51.100.1"), Ok(()), "IPv4: per address");
        guard.record_invalid("198.51.100.1");
        assert!(guard.guard("198.51.100.1").is_err());
        assert_eq!(guard.guard("198.51.100.2"), Ok(()));
    }
}
