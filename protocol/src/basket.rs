//! The basket: which SKUs in which quantities. A basket holds no prices; it is priced on every
//! read by [`crate::pricing::price_basket`] from the current catalog, so a client can never set a
//! price and a price change reaches every open basket.

use crate::codec::Stored;
use crate::ids::{BasketId, CheckoutId, CustomerId, Sku};
use crate::money::Currency;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The largest quantity of one SKU on one basket line.
pub const MAX_LINE_QUANTITY: u32 = 999;

/// Who a basket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum BasketOwner {
    Customer(CustomerId),
    /// Reachable only with the basket's own secret token.
    Anonymous,
}

/// One line: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    pub sku: Sku,
    pub quantity: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

/// Why a basket change was refused. A refused change leaves the basket as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasketError {
    #[error("quantity {requested} is out of range: a line holds 1 to {max} units", max = MAX_LINE_QUANTITY)]
    QuantityOutOfRange { requested: i64 },
    #[error("only {available} of {sku} available, {requested} requested")]
    InsufficientStock {
        sku: Sku,
        available: i64,
        requested: i64,
    },
    #[error("the basket has no line for {0}")]
    LineNotFound(Sku),
    #[error("this basket was merged into the customer's basket")]
    Merged,
    #[error("a basket holds at most {max} coupon codes: remove one first", max = MAX_COUPONS)]
    TooManyCoupons,
    #[error("the basket has no coupon {0}")]
    CouponNotFound(String),
    /// A payment for this basket is in progress: it cannot change until the payment is cancelled
    /// or has expired.
    #[error("a payment for this basket is in progress: cancel the payment to change the basket")]
    Locked(CheckoutId),
}

/// A basket of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basket {
    pub id: BasketId,
    pub owner: BasketOwner,
    pub currency: Currency,
    pub lines: Vec<BasketLine>,
    /// Grows by one with every change; clients use it to order live updates.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Set once an anonymous basket has been merged into a customer's basket; it is then closed.
    #[serde(default)]
    pub merged_into: Option<BasketId>,
    /// The checkout whose payment is in progress: the basket is locked on every device until it
    /// is paid, cancelled or expired.
    #[serde(default)]
    pub checkout: Option<CheckoutId>,
    /// Coupon codes the shopper entered (normalised: trimmed, upper case), checked by the hub
    /// when entered and again on every pricing; at most [`MAX_COUPONS`].
    #[serde(default)]
    pub coupons: Vec<String>,
    /// The latest pulls of this basket's lines onto a store's till, newest last (at most
    /// [`MAX_TILL_PULLS`]): a retried pull answers what the first one took, and moves nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub till_pulls: Vec<TillPull>,
}

/// What a till pull took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TillPulled {
    pub lines: Vec<(Sku, u32)>,
    /// False for a pull made before (a retry): nothing changed.
    pub changed: bool,
}

/// The most till pulls a basket remembers.
pub const MAX_TILL_PULLS: usize = 20;

/// A till took a basket's lines (`docs/pos.md`, "Customers at the till").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillPull {
    /// The pull's id, made by the node (the same for every retry of one pull).
    pub id: String,
    /// The SKUs and quantities that moved.
    pub lines: Vec<(Sku, u32)>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// When the till gave the lines back (it voided the sale): a pull is given back once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub returned: Option<OffsetDateTime>,
}

/// The most coupon codes one basket holds.
pub const MAX_COUPONS: usize = 5;

/// A coupon code as typed by a shopper, normalised for matching: trimmed and upper case. `None`
/// when it cannot be a code (empty, longer than 64 characters, or other than letters, digits,
/// `-` and `_`).
pub fn normalize_coupon(code: &str) -> Option<String> {
    let code = code.trim();
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| code.to_ascii_uppercase())
}

fn check_quantity(requested: i64) -> Result<u32, BasketError> {
    if (1..=MAX_LINE_QUANTITY as i64).contains(&requested) {
        Ok(requested as u32)
    } else {
        Err(BasketError::QuantityOutOfRange { requested })
    }
}

impl Basket {
    pub fn new(
        id: BasketId,
        owner: BasketOwner,
        currency: Currency,
        now: OffsetDateTime,
    ) -> Basket {
        Basket {
            id,
            owner,
            currency,
            lines: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
            merged_into: None,
            checkout: None,
            coupons: Vec::new(),
            till_pulls: Vec::new(),
        }
    }

    /// Moves the lines a till may take (`sellable` says which SKUs) out of the basket for the
    /// till pull `id`, and remembers the pull. A pull already made answers what it took and
    /// changes nothing (`changed` is false), so a retry never moves a line twice.
    pub fn pull_to_till(
        &mut self,
        id: &str,
        sellable: impl Fn(&Sku) -> bool,
        now: OffsetDateTime,
    ) -> Result<TillPulled, BasketError> {
        if let Some(done) = self.till_pulls.iter().find(|p| p.id == id) {
            return Ok(TillPulled {
                lines: done.lines.clone(),
                changed: false,
            });
        }
        self.open()?;
        let (moved, kept): (Vec<BasketLine>, Vec<BasketLine>) =
            self.lines.drain(..).partition(|l| sellable(&l.sku));
        self.lines = kept;
        let lines: Vec<(Sku, u32)> = moved.into_iter().map(|l| (l.sku, l.quantity)).collect();
        self.till_pulls.push(TillPull {
            id: id.to_string(),
            lines: lines.clone(),
            at: now,
            returned: None,
        });
        if self.till_pulls.len() > MAX_TILL_PULLS {
            let extra = self.till_pulls.len() - MAX_TILL_PULLS;
            self.till_pulls.drain(..extra);
        }
        self.touch(now);
        Ok(TillPulled {
            lines,
            changed: true,
        })
    }

    /// Gives the lines of the till pull `id` back to the basket (the till voided the sale),
    /// added to what the basket holds now (a line holds at most [`MAX_LINE_QUANTITY`]; stock is
    /// checked again at checkout, as for any line). `None` if this basket has no such pull; a
    /// pull given back before answers its lines with `changed` false and changes nothing.
    pub fn return_from_till(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TillPulled>, BasketError> {
        let Some(at) = self.till_pulls.iter().position(|p| p.id == id) else {
            return Ok(None);
        };
        let lines = self.till_pulls[at].lines.clone();
        if self.till_pulls[at].returned.is_some() {
            return Ok(Some(TillPulled {
                lines,
                changed: false,
            }));
        }
        self.open()?;
        for (sku, quantity) in &lines {
            match self.lines.iter_mut().find(|l| l.sku == *sku) {
                Some(line) => line.quantity = (line.quantity + quantity).min(MAX_LINE_QUANTITY),
                None => self.lines.push(BasketLine {
                    sku: sku.clone(),
                    quantity: (*quantity).min(MAX_LINE_QUANTITY),
                    added_at: now,
                }),
            }
        }
        self.till_pulls[at].returned = Some(now);
        self.touch(now);
        Ok(Some(TillPulled {
            lines,
            changed: true,
        }))
    }

    /// Adds a normalised coupon code (a code already there changes nothing and is not an
    /// error). Returns whether the basket changed.
    pub fn add_coupon(&mut self, code: String, now: OffsetDateTime) -> Result<bool, BasketError> {
        self.open()?;
        if self.coupons.contains(&code) {
            return Ok(false);
        }
        if self.coupons.len() >= MAX_COUPONS {
            return Err(BasketError::TooManyCoupons);
        }
        self.coupons.push(code);
        self.touch(now);
        Ok(true)
    }

    /// Removes a coupon code.
    pub fn remove_coupon(&mut self, code: &str, now: OffsetDateTime) -> Result<(), BasketError> {
        self.open()?;
        let before = self.coupons.len();
        self.coupons.retain(|c| c != code);
        if self.coupons.len() == before {
            return Err(BasketError::CouponNotFound(code.to_string()));
        }
        self.touch(now);
        Ok(())
    }

    /// The quantity of `sku` in the basket (0 if none).
    pub fn quantity_of(&self, sku: &Sku) -> u32 {
        self.lines
            .iter()
            .find(|l| &l.sku == sku)
            .map_or(0, |l| l.quantity)
    }

    /// Units over all lines.
    pub fn item_count(&self) -> u64 {
        self.lines.iter().map(|l| u64::from(l.quantity)).sum()
    }

    fn open(&self) -> Result<(), BasketError> {
        if self.merged_into.is_some() {
            return Err(BasketError::Merged);
        }
        match self.checkout {
            Some(c) => Err(BasketError::Locked(c)),
            None => Ok(()),
        }
    }

    /// Locks the basket for a checkout (a new version, so every device sees it).
    pub fn lock(&mut self, checkout: CheckoutId, now: OffsetDateTime) -> Result<(), BasketError> {
        self.open()?;
        self.checkout = Some(checkout);
        self.touch(now);
        Ok(())
    }

    /// Unlocks the basket if `checkout` holds it, keeping its lines (cancelled or expired
    /// payment). Returns whether it was locked by that checkout.
    pub fn unlock(&mut self, checkout: CheckoutId, now: OffsetDateTime) -> bool {
        if self.checkout != Some(checkout) {
            return false;
        }
        self.checkout = None;
        self.touch(now);
        true
    }

    /// Empties and unlocks the basket after `checkout` was paid; a basket that is no longer
    /// locked by it (the hold expired and the shopper went on) is left as it is.
    pub fn complete(&mut self, checkout: CheckoutId, now: OffsetDateTime) -> bool {
        if self.checkout != Some(checkout) {
            return false;
        }
        self.checkout = None;
        self.lines.clear();
        self.coupons.clear();
        self.touch(now);
        true
    }

    fn touch(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }

    /// Adds `quantity` units of `sku` (to its line, if any); the line's new quantity must stay
    /// within 1..=999 and within `available`. Returns the line's new quantity.
    pub fn add(
        &mut self,
        sku: Sku,
        quantity: i64,
        available: i64,
        now: OffsetDateTime,
    ) -> Result<u32, BasketError> {
        self.open()?;
        let quantity = check_quantity(quantity)?;
        let current = self.quantity_of(&sku);
        let wanted = check_quantity(i64::from(current) + i64::from(quantity))?;
        if i64::from(wanted) > available {
            return Err(BasketError::InsufficientStock {
                sku,
                available: available.max(0),
                requested: wanted.into(),
            });
        }
        match self.lines.iter_mut().find(|l| l.sku == sku) {
            Some(line) => line.quantity = wanted,
            None => self.lines.push(BasketLine {
                sku,
                quantity: wanted,
                added_at: now,
            }),
        }
        self.touch(now);
        Ok(wanted)
    }

    /// Sets the quantity of an existing line (1..=999, within `available`).
    pub fn set_quantity(
        &mut self,
        sku: &Sku,
        quantity: i64,
        available: i64,
        now: OffsetDateTime,
    ) -> Result<(), BasketError> {
        self.open()?;
        let quantity = check_quantity(quantity)?;
        if self.quantity_of(sku) == 0 {
            return Err(BasketError::LineNotFound(sku.clone()));
        }
        if i64::from(quantity) > available {
            return Err(BasketError::InsufficientStock {
                sku: sku.clone(),
                available: available.max(0),
                requested: quantity.into(),
            });
        }
        if let Some(line) = self.lines.iter_mut().find(|l| &l.sku == sku) {
            line.quantity = quantity;
        }
        self.touch(now);
        Ok(())
    }

    /// Removes a line.
    pub fn remove(&mut self, sku: &Sku, now: OffsetDateTime) -> Result<(), BasketError> {
        self.open()?;
        let before = self.lines.len();
        self.lines.retain(|l| &l.sku != sku);
        if self.lines.len() == before {
            return Err(BasketError::LineNotFound(sku.clone()));
        }
        self.touch(now);
        Ok(())
    }

    /// Removes every line and coupon.
    pub fn clear(&mut self, now: OffsetDateTime) -> Result<(), BasketError> {
        self.open()?;
        self.lines.clear();
        self.coupons.clear();
        self.touch(now);
        Ok(())
    }

    /// Adds the lines of another basket (quantities added, each capped by `available` for its SKU
    /// and by 999). Returns what was moved per SKU; units that did not fit are left out.
    pub fn absorb(
        &mut self,
        other: &[BasketLine],
        available: impl Fn(&Sku) -> i64,
        now: OffsetDateTime,
    ) -> Result<Vec<(Sku, u32)>, BasketError> {
        self.open()?;
        let mut moved = Vec::new();
        for line in other {
            let current = i64::from(self.quantity_of(&line.sku));
            let cap = available(&line.sku).min(i64::from(MAX_LINE_QUANTITY));
            let room = (cap - current).max(0);
            let take = room.min(i64::from(line.quantity));
            if take > 0 {
                self.add(line.sku.clone(), take, cap, now)?;
                moved.push((line.sku.clone(), take as u32));
            }
        }
        Ok(moved)
    }

    /// Closes an anonymous basket after its lines went into `into`.
    pub fn mark_merged(&mut self, into: BasketId, now: OffsetDateTime) {
        self.lines.clear();
        self.merged_into = Some(into);
        self.touch(now);
    }
}

impl Stored for Basket {
    const KIND: &'static str = "basket";
    const VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    //! Model-based test: random operation sequences against a plain map of quantities.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(usize, i64),
        Set(usize, i64),
        Remove(usize),
        Clear,
    }

    const SKUS: [&str; 4] = ["A", "B", "C", "D"];
    const STOCK: [i64; 4] = [0, 5, 50, 5000];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, -2i64..1100).prop_map(|(s, q)| Op::Add(s, q)),
            2 => (0..4usize, -2i64..1100).prop_map(|(s, q)| Op::Set(s, q)),
            1 => (0..4usize).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    fn sku(i: usize) -> Sku {
        Sku::parse(SKUS[i]).expect("valid sku")
    }

    proptest! {
        #[test]
        fn basket_matches_a_simple_model(ops in proptest::collection::vec(op(), 0..60)) {
            let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
            let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
            let mut model: BTreeMap<usize, i64> = BTreeMap::new();
            for op in ops {
                let before = basket.clone();
                let ok = match op {
                    Op::Add(s, q) => {
                        let new = model.get(&s).copied().unwrap_or(0) + q;
                        let valid = (1..=999).contains(&q) && new <= 999 && new <= STOCK[s];
                        if valid { model.insert(s, new); }
                        prop_assert_eq!(basket.add(sku(s), q, STOCK[s], now).is_ok(), valid);
                        valid
                    }
                    Op::Set(s, q) => {
                        let valid = model.contains_key(&s) && (1..=999).contains(&q) && q <= STOCK[s];
                        if valid { model.insert(s, q); }
                        prop_assert_eq!(basket.set_quantity(&sku(s), q, STOCK[s], now).is_ok(), valid);
                        valid
                    }
                    Op::Remove(s) => {
                        let valid = model.remove(&s).is_some();
                        prop_assert_eq!(basket.remove(&sku(s), now).is_ok(), valid);
                        valid
                    }
                    Op::Clear => {
                        model.clear();
                        prop_assert!(basket.clear(now).is_ok());
                        true
                    }
                };
                if ok {
                    prop_assert_eq!(basket.version, before.version + 1);
                } else {
                    prop_assert_eq!(&basket, &before, "a refused change must change nothing");
                }
                let actual: BTreeMap<usize, i64> = basket.lines.iter()
                    .map(|l| (SKUS.iter().position(|s| *s == l.sku.as_str()).expect("known sku"), i64::from(l.quantity)))
                    .collect();
                prop_assert_eq!(&actual, &model);
                prop_assert_eq!(basket.lines.len(), model.len(), "one line per SKU");
            }
        }

        #[test]
        fn absorb_adds_quantities_capped_by_stock(a in 0u32..20, b in 1u32..20, stock in 0i64..30) {
            let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
            let s = Sku::parse("X").expect("valid sku");
            let mut mine = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
            if a > 0 && i64::from(a) <= stock { mine.add(s.clone(), a.into(), stock, now).expect("adds"); }
            let start = i64::from(mine.quantity_of(&s));
            let theirs = [BasketLine { sku: s.clone(), quantity: b, added_at: now }];
            mine.absorb(&theirs, |_| stock, now).expect("open basket");
            let expected = (start + i64::from(b)).min(stock.max(start));
            prop_assert_eq!(i64::from(mine.quantity_of(&s)), expected);
        }
    }

    #[test]
    fn merged_basket_is_closed() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let mut b = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
        b.mark_merged(BasketId::new(), now);
        assert_eq!(b.add(sku(2), 1, 10, now), Err(BasketError::Merged));
    }

    #[test]
    fn a_till_pull_moves_the_lines_once_and_a_retry_moves_nothing() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
        basket.add(sku(1), 2, 5, now).expect("added");
        basket.add(sku(2), 1, 50, now).expect("added");
        basket.add(sku(3), 4, 5000, now).expect("added");
        // The till cannot sell D: it stays in the web basket.
        let first = basket
            .pull_to_till("pull-1", |s| *s != sku(3), now)
            .expect("pulled");
        assert!(first.changed);
        assert_eq!(first.lines, vec![(sku(1), 2), (sku(2), 1)]);
        assert_eq!(basket.lines.len(), 1);
        let version = basket.version;
        basket.add(sku(1), 1, 5, now).expect("added after the pull");
        let retry = basket
            .pull_to_till("pull-1", |_| true, now)
            .expect("retried");
        assert!(!retry.changed);
        assert_eq!(retry.lines, first.lines);
        assert_eq!(basket.version, version + 1, "the retry changed nothing");
        assert_eq!(basket.lines.len(), 2);
        for i in 0..MAX_TILL_PULLS + 3 {
            basket
                .pull_to_till(&format!("p{i}"), |_| true, now)
                .expect("pulled");
        }
        assert_eq!(basket.till_pulls.len(), MAX_TILL_PULLS);
    }

    #[test]
    fn a_voided_till_sale_gives_its_pull_back_once() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
        basket.add(sku(1), 2, 5, now).expect("added");
        basket.add(sku(2), 1, 50, now).expect("added");
        basket
            .pull_to_till("sale-1", |_| true, now)
            .expect("pulled");
        assert!(basket.lines.is_empty());
        assert_eq!(
            basket.return_from_till("sale-2", now),
            Ok(None),
            "no such pull"
        );
        // The shopper added one more of A on the web meanwhile: the quantities add up.
        basket.add(sku(1), 1, 5, now).expect("added");
        let back = basket
            .return_from_till("sale-1", now)
            .expect("open")
            .expect("the pull");
        assert!(back.changed);
        assert_eq!(back.lines, vec![(sku(1), 2), (sku(2), 1)]);
        let held: Vec<(Sku, u32)> = basket
            .lines
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect();
        assert_eq!(held, vec![(sku(1), 3), (sku(2), 1)]);
        let version = basket.version;
        let again = basket
            .return_from_till("sale-1", now)
            .expect("open")
            .expect("the pull");
        assert!(!again.changed);
        assert_eq!(basket.version, version, "given back once");
        assert_eq!(basket.lines.len(), 2);
        // A pull is not pulled again after it was given back.
        let retry = basket
            .pull_to_till("sale-1", |_| true, now)
            .expect("retried");
        assert!(!retry.changed);
        assert_eq!(basket.lines.len(), 2);
        // A basket locked by a payment takes nothing back.
        basket
            .pull_to_till("sale-3", |_| true, now)
            .expect("pulled");
        basket.add(sku(0), 1, 5, now).expect("added");
        basket.lock(CheckoutId::new(), now).expect("locked");
        assert!(matches!(
            basket.return_from_till("sale-3", now),
            Err(BasketError::Locked(_))
        ));
        // Stored pulls from before `returned` existed still read.
        let old = TillPull {
            id: "p".into(),
            lines: vec![(sku(1), 1)],
            at: now,
            returned: None,
        };
        let json = serde_json::to_value(&old).expect("encodes");
        assert!(json.get("returned").is_none());
        let back: TillPull = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, old);
    }
}
