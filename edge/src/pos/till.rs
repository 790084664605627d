//! Tills: opened by a signed-in staff member with a cash float, the sales rung up at them add to
//! the open session's running totals (in each sale's own write), and closed with a count of the
//! drawer, which makes the till's next Z-report: what was sold, how it was paid, and the cash
//! the drawer should hold against what was counted.
//!
//! The node records no refunds yet: the refund figures are kept (zero) so a Z-report keeps its
//! shape when returns arrive.

use super::{Pos, PosError, SignedIn};
use crate::ops::OpError;
use crate::storage::{Db, TillMark, WriteSet, T};
use crate::store::PricedManual;
use protocol::codec::Stored;
use protocol::money::MoneyError;
use protocol::replication::SaleRecord;
use protocol::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use ulid::Ulid;

/// A sale rung up at a till by a signed-in staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TillSale {
    pub till: String,
    /// The staff id: becomes the sale's `clerk`.
    pub staff: String,
}

/// What the sales of one till session came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillTotals {
    /// Sales rung up.
    pub sales: u64,
    /// Their lines at shelf prices (tax included), before promotions.
    pub gross: Money,
    /// What promotions and coupons took off.
    pub discounts: Money,
    /// What the sales came to: `gross − discounts`.
    pub net: Money,
    /// Payments taken, by method (`cash`, `card`, `voucher`).
    pub tenders: BTreeMap<String, Money>,
    /// Cash handed back (cash paid beyond a sale's total).
    pub change_given: Money,
    /// Refunds made (none yet: the node takes no returns so far).
    #[serde(default)]
    pub refunds: u64,
    pub refunded: Money,
    /// The part of `refunded` paid out of the drawer.
    pub cash_refunded: Money,
    /// Lines with a manual price adjustment approved by a manager (absent from totals stored
    /// before adjustments: zero).
    #[serde(default)]
    pub manual_adjustments: u64,
    /// What those adjustments took off (part of `discounts`); `None` reads as zero.
    #[serde(default)]
    pub manual_discount: Option<Money>,
}

impl TillTotals {
    pub fn zero(currency: Currency) -> TillTotals {
        let zero = Money::zero(currency);
        TillTotals {
            sales: 0,
            gross: zero,
            discounts: zero,
            net: zero,
            tenders: BTreeMap::new(),
            change_given: zero,
            refunds: 0,
            refunded: zero,
            cash_refunded: zero,
            manual_adjustments: 0,
            manual_discount: None,
        }
    }

    /// What manual adjustments took off (zero when there were none).
    pub fn manual_total(&self) -> Money {
        self.manual_discount
            .unwrap_or(Money::zero(self.net.currency))
    }

    /// These totals with one more sale (checked: a currency mix or an overflow is an error).
    pub(crate) fn with_sale(
        &self,
        sale: &SaleRecord,
        change: Money,
        manual: &[PricedManual],
    ) -> Result<TillTotals, MoneyError> {
        let mut t = self.clone();
        if !manual.is_empty() {
            let mut off = t.manual_total();
            for m in manual {
                off = off.checked_add(m.discount)?;
            }
            t.manual_discount = Some(off);
            t.manual_adjustments = t
                .manual_adjustments
                .checked_add(manual.len() as u64)
                .ok_or(MoneyError::Overflow)?;
        }
        let mut gross = Money::zero(t.net.currency);
        for l in &sale.lines {
            gross = gross.checked_add(l.unit_price.checked_mul(i64::from(l.quantity))?)?;
        }
        t.sales = t.sales.checked_add(1).ok_or(MoneyError::Overflow)?;
        t.gross = t.gross.checked_add(gross)?;
        t.discounts = t.discounts.checked_add(gross.checked_sub(sale.total)?)?;
        t.net = t.net.checked_add(sale.total)?;
        for p in &sale.payments {
            let zero = Money::zero(t.net.currency);
            let tender = t.tenders.entry(p.method.clone()).or_insert(zero);
            *tender = tender.checked_add(p.amount)?;
        }
        t.change_given = t.change_given.checked_add(change)?;
        Ok(t)
    }

    /// Cash paid in.
    pub fn cash(&self) -> Money {
        self.tenders
            .get("cash")
            .copied()
            .unwrap_or(Money::zero(self.net.currency))
    }
}

/// An open till session: who opened it, with what float, and its sales so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillSession {
    pub id: Ulid,
    pub opened_by: String,
    pub opened_at_ms: u64,
    pub float: Money,
    pub totals: TillTotals,
}

/// A till (`t` + till id): its open session, if any, and the number of its next Z-report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillState {
    #[serde(default)]
    pub open: Option<TillSession>,
    pub next_report: u64,
}

impl Default for TillState {
    fn default() -> Self {
        TillState {
            open: None,
            next_report: 1,
        }
    }
}

/// The report a till's close makes (`z` + till id + `0x00` + number), numbered 1, 2, … per till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZReport {
    pub till: String,
    pub number: u64,
    pub session: Ulid,
    pub opened_by: String,
    pub opened_at_ms: u64,
    pub closed_by: String,
    pub closed_at_ms: u64,
    pub float: Money,
    pub totals: TillTotals,
    /// `float + cash tenders − change given − cash refunds`.
    pub expected_cash: Money,
    pub counted: Money,
    /// `counted − expected_cash`: negative when the drawer is short.
    pub variance: Money,
}

impl Stored for TillState {
    const KIND: &'static str = "edge.pos.till";
    const VERSION: u16 = 1;
}

impl Stored for ZReport {
    const KIND: &'static str = "edge.pos.z_report";
    const VERSION: u16 = 1;
}

pub(crate) fn till_key(till: &str) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(till.as_bytes());
    k
}

fn report_key(till: &str, number: u64) -> Vec<u8> {
    let mut k = vec![b'z'];
    k.extend_from_slice(till.as_bytes());
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

pub(crate) fn closed(till: &str) -> OpError {
    OpError::Conflict {
        code: "till_closed",
        message: format!(
            "till {till} is not open: open it first with POST /api/v1/tills/{till}/open and a float"
        ),
    }
}

/// Adds a sale to its till's open session (the caller holds the writer lock and commits
/// `writes` with the sale), or refuses it when the till is not open.
pub(crate) fn ring_up(
    db: &Db,
    writes: &mut WriteSet,
    at: &TillSale,
    sale: &SaleRecord,
    change: Money,
    manual: &[PricedManual],
) -> Result<TillMark, OpError> {
    let key = till_key(&at.till);
    let mut state: TillState = db.get(T::Pos, &key)?.unwrap_or_default();
    let open = state.open.as_mut().ok_or_else(|| closed(&at.till))?;
    let till_currency = open.float.currency;
    open.totals = open.totals.with_sale(sale, change, manual).map_err(|e| match e {
        MoneyError::CurrencyMismatch(..) => OpError::invalid(
            "wrong_currency",
            format!(
                "the sale is in {} but till {} counts {till_currency}: sell only products priced in {till_currency}",
                sale.total.currency, at.till
            ),
        ),
        _ => OpError::invalid(
            "amount_out_of_range",
            format!("till {}'s totals would overflow: close the till and open it again", at.till),
        ),
    })?;
    let mark = TillMark {
        till: at.till.clone(),
        session: open.id,
    };
    writes.put(T::Pos, key, &state)?;
    Ok(mark)
}

impl Pos {
    /// An amount of the shop's currency, zero or more, as typed in `field`.
    fn cash_amount(&self, field: &str, text: &str) -> Result<Money, PosError> {
        let c = self.currency;
        match Money::parse_decimal(text, c) {
            Ok(m) if m.minor >= 0 => Ok(m),
            Ok(_) => Err(PosError::invalid(
                "invalid_amount",
                format!("{field} cannot be negative: count the cash in the drawer, e.g. \"150.00\""),
            )),
            Err(_) => Err(PosError::invalid(
                "invalid_amount",
                format!(
                    "{field} '{}' is not an amount in {c}: use a decimal string such as \"150.00\" with at most {} decimals",
                    text.chars().take(32).collect::<String>(),
                    c.exponent()
                ),
            )),
        }
    }

    /// Opens a till with a float; one open session per till.
    #[tracing::instrument(skip(self, who), fields(staff = %who.id))]
    pub fn open_till(
        &self,
        who: &SignedIn,
        till: &str,
        float: &str,
    ) -> Result<TillSession, PosError> {
        self.known_till(till)?;
        let float = self.cash_amount("float", float)?;
        let now = self.now_ms();
        let key = till_key(till);
        self.store.local_change(|db| {
            let mut state: TillState = db.get(T::Pos, &key)?.unwrap_or_default();
            if let Some(open) = &state.open {
                return Err(PosError::conflict(
                    "till_open",
                    format!(
                        "till {till} is already open (opened by {}): close it with a cash count first",
                        open.opened_by
                    ),
                ));
            }
            let session = TillSession {
                id: Ulid::new(),
                opened_by: who.id.clone(),
                opened_at_ms: now,
                float,
                totals: TillTotals::zero(float.currency),
            };
            state.open = Some(session.clone());
            let mut w = WriteSet::default();
            w.put(T::Pos, key.clone(), &state)?;
            Ok((w, session))
        })
    }

    /// Closes a till with the cash counted in its drawer: its next Z-report, stored.
    #[tracing::instrument(skip(self, who), fields(staff = %who.id))]
    pub fn close_till(
        &self,
        who: &SignedIn,
        till: &str,
        counted: &str,
    ) -> Result<ZReport, PosError> {
        self.known_till(till)?;
        let counted = self.cash_amount("counted", counted)?;
        let now = self.now_ms();
        let key = till_key(till);
        self.store.local_change(|db| {
            let mut state: TillState = db.get(T::Pos, &key)?.unwrap_or_default();
            let open = state.open.take().ok_or_else(|| {
                PosError::conflict(
                    "till_closed",
                    format!("till {till} is not open: there is nothing to close"),
                )
            })?;
            let report = z_report(till, state.next_report, open, who, now, counted)?;
            state.next_report += 1;
            let mut w = WriteSet::default();
            w.put(T::Pos, key.clone(), &state)?;
            w.put(T::Pos, report_key(till, report.number), &report)?;
            Ok((w, report))
        })
    }

    /// A till's state: open or not, and the running totals while open.
    pub fn till(&self, till: &str) -> Result<TillState, PosError> {
        self.known_till(till)?;
        Ok(self
            .store
            .db()
            .get(T::Pos, &till_key(till))?
            .unwrap_or_default())
    }

    /// A till's Z-report by number.
    pub fn z_report(&self, till: &str, number: u64) -> Result<ZReport, PosError> {
        self.known_till(till)?;
        self.store
            .db()
            .get(T::Pos, &report_key(till, number))?
            .ok_or_else(|| {
                PosError::Op(OpError::NotFound(format!(
                    "Z-report {number} of till {till}"
                )))
            })
    }
}

fn z_report(
    till: &str,
    number: u64,
    open: TillSession,
    who: &SignedIn,
    now: u64,
    counted: Money,
) -> Result<ZReport, PosError> {
    let t = &open.totals;
    let figures = || -> Result<(Money, Money), MoneyError> {
        let expected = open
            .float
            .checked_add(t.cash())?
            .checked_sub(t.change_given)?
            .checked_sub(t.cash_refunded)?;
        Ok((expected, counted.checked_sub(expected)?))
    };
    let (expected_cash, variance) = figures().map_err(|e| {
        PosError::invalid(
            "amount_out_of_range",
            format!("the till's cash figures cannot be computed: {e}"),
        )
    })?;
    Ok(ZReport {
        till: till.to_string(),
        number,
        session: open.id,
        opened_by: open.opened_by.clone(),
        opened_at_ms: open.opened_at_ms,
        closed_by: who.id.clone(),
        closed_at_ms: now,
        float: open.float,
        totals: open.totals.clone(),
        expected_cash,
        counted,
        variance,
    })
}
