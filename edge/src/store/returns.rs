//! Returns and exchanges against a sale's receipt (`docs/pos.md`, "Returns and exchanges").
//!
//! A return is checked against the sale and every return already made of it (here, and at other
//! stores as far as the hub knows), then recorded in one change: the units go back on this
//! store's shelf (on hand and as many new sell rights: a restock, never an undone consumption),
//! the refund goes to the sale's tenders (cards by their payment reference, the rest in cash
//! from the till), the till's refund totals move, and an immutable [`ReturnRecord`] goes to the
//! hub with the change's outbox entry. An exchange also records the sale of the new goods in the
//! same change, paid first with the value of the goods brought back.
//!
//! | key (`sales` tree)             | value          |
//! |--------------------------------|----------------|
//! | `r` + return id                | [`ReturnEntry`] |
//! | `q` + sale id + return id      | [`IdRef`] (the returns of a sale) |
//! | `N` + return number            | [`IdRef`]      |
//! | `k` + `return:` + key          | [`IdRef`] (idempotency) |
//! | `creturns`                     | [`ReturnSeq`]  |

use super::change::Change;
use super::check::{check_idempotency_key, parse_payments, price_sale};
use super::Store;
use crate::ops::{
    clean_text, FieldProblem, ManualAdjustments, OpError, PaymentMethod, PaymentRequest,
    SaleLineRequest, SaleReceipt, SaleRequest, Shortage,
};
use crate::pos::TillSale;
use crate::storage::{idempotency_key, IdRef, SaleEntry, StoreError, TillMark, T};
use protocol::codec::Stored;
use protocol::replication::{ReturnLine, ReturnRecord, SalePayment, SaleRecord};
use protocol::{Money, Sku};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use ulid::Ulid;

/// The method of the part of a return set against an exchange's new goods (in the return's
/// refunds), and the reference prefix of the voucher that pays for them (in the new sale).
pub const EXCHANGE: &str = "exchange";

/// A return as stored here: the record and the till it was paid out of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnEntry {
    pub record: ReturnRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub till: Option<TillMark>,
}

impl Stored for ReturnEntry {
    const KIND: &'static str = "edge.return";
    const VERSION: u16 = 1;
}

/// The next return number of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnSeq {
    pub next: u64,
}

impl Stored for ReturnSeq {
    const KIND: &'static str = "edge.return_seq";
    const VERSION: u16 = 1;
}

const RETURN_SEQ: &[u8] = b"creturns";

fn return_key(id: Ulid) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn of_sale_prefix(sale: Ulid) -> Vec<u8> {
    let mut k = vec![b'q'];
    k.extend_from_slice(&sale.0.to_be_bytes());
    k
}

fn return_number_key(number: &str) -> Vec<u8> {
    let mut k = vec![b'N'];
    k.extend_from_slice(number.as_bytes());
    k
}

/// One line to take back: the line of the receipt (its index), how many units, and whether
/// they go back on the shelf (false for damaged goods).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnLineRequest {
    pub line: i64,
    pub quantity: i64,
    #[serde(default = "yes")]
    pub restock: bool,
}

fn yes() -> bool {
    true
}

/// New goods sold in the same transaction as a return; the value of the goods returned pays
/// for them first, `payments` the rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    pub lines: Vec<SaleLineRequest>,
    #[serde(default)]
    pub payments: Vec<PaymentRequest>,
}

/// What to take back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    /// The receipt number (or sale id) of the original sale.
    pub receipt: String,
    pub lines: Vec<ReturnLineRequest>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub exchange: Option<ExchangeRequest>,
}

/// A sale as a return sees it: the record, whether this node made it, and every return of it
/// known here (made here, or merged by the hub from other stores).
#[derive(Debug, Clone)]
pub struct ReturnableSale {
    pub sale: SaleRecord,
    pub local: bool,
    pub returns: Vec<ReturnRecord>,
}

impl ReturnableSale {
    /// Units of sale line `line` returned so far.
    pub fn returned(&self, line: usize) -> u64 {
        self.returns
            .iter()
            .flat_map(|r| r.lines.iter())
            .filter(|l| l.line as usize == line)
            .map(|l| u64::from(l.quantity))
            .sum()
    }

    /// Units of sale line `line` that may still come back.
    pub fn returnable(&self, line: usize) -> u64 {
        self.sale.lines.get(line).map_or(0, |l| {
            u64::from(l.quantity).saturating_sub(self.returned(line))
        })
    }

    /// Whether it is an online order (found through the hub by its order number): it is
    /// refunded to its payment only, never in cash from the till.
    pub fn online_order(&self) -> bool {
        self.sale.location == protocol::LocationId::online()
    }

    /// Adds returns not known yet (by id).
    pub fn learn(&mut self, more: Vec<ReturnRecord>) {
        let known: BTreeSet<Ulid> = self.returns.iter().map(|r| r.id).collect();
        self.returns
            .extend(more.into_iter().filter(|r| !known.contains(&r.id)));
    }

    /// What `quantity` more units of line `line` are refunded at: the line's total shared out
    /// so that all its units together come to exactly the line's total.
    pub fn refund_value(&self, line: usize, quantity: u64) -> Option<Money> {
        let l = self.sale.lines.get(line)?;
        let sold = i128::from(l.quantity.max(1));
        let before = i128::from(self.returned(line));
        let after = before + i128::from(quantity);
        let total = i128::from(l.total.minor);
        let minor = total * after / sold - total * before / sold;
        Some(Money::new(i64::try_from(minor).ok()?, l.total.currency))
    }
}

/// A return as checked and priced, before it is recorded.
#[derive(Debug, Clone)]
pub struct PlannedReturn {
    pub lines: Vec<ReturnLine>,
    /// The value of the goods returned.
    pub total: Money,
    pub reason: Option<String>,
}

/// Who takes a return back, at which till, and the manager who approved it (if one did).
#[derive(Debug, Clone)]
pub struct ReturnBy {
    pub till: TillSale,
    pub approved_by: Option<String>,
    /// A refund above this needs `approved_by`.
    pub approval_over: Money,
}

/// A return as recorded.
#[derive(Debug, Clone)]
pub struct ReturnReceipt {
    pub entry: ReturnEntry,
    /// The sale of an exchange's new goods.
    pub exchange: Option<SaleReceipt>,
    pub replayed: bool,
}

impl ReturnReceipt {
    /// Paid back to the customer (cash and card), not counting what went to an exchange.
    pub fn refunded(&self) -> Money {
        refunded(&self.entry.record)
    }
}

/// What a return paid back (cash and card), not counting what went to an exchange.
pub fn refunded(r: &ReturnRecord) -> Money {
    let minor = r
        .refunds
        .iter()
        .filter(|p| p.method != EXCHANGE)
        .map(|p| p.amount.minor)
        .sum();
    Money::new(minor, r.total.currency)
}

/// Checks the lines of a return against the sale and what came back of it before.
pub fn plan(sale: &ReturnableSale, req: &ReturnRequest) -> Result<PlannedReturn, OpError> {
    if req.lines.is_empty() {
        return Err(OpError::invalid(
            "no_lines",
            "a return needs at least one line: {\"line\": <the receipt line's index>, \"quantity\": <units>}",
        ));
    }
    let mut problems = Vec::new();
    let reason = clean_text("reason", req.reason.as_deref(), &mut problems);
    let mut wanted: BTreeMap<usize, (u64, bool)> = BTreeMap::new();
    let count = sale.sale.lines.len();
    for (i, l) in req.lines.iter().enumerate() {
        let Some(line) = usize::try_from(l.line).ok().filter(|n| *n < count) else {
            problems.push(FieldProblem {
                field: format!("lines[{i}].line"),
                message: format!(
                    "receipt {} has lines 0 to {}",
                    sale.sale.number,
                    count.saturating_sub(1)
                ),
            });
            continue;
        };
        if !(1..=i64::from(protocol::MAX_LINE_QUANTITY)).contains(&l.quantity) {
            problems.push(FieldProblem {
                field: format!("lines[{i}].quantity"),
                message: "return 1 unit or more".into(),
            });
            continue;
        }
        if wanted
            .insert(line, (l.quantity.unsigned_abs(), l.restock))
            .is_some()
        {
            problems.push(FieldProblem {
                field: format!("lines[{i}].line"),
                message: format!("line {line} is named twice: give its units once"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(OpError::fields(
            "invalid_return",
            "the return has invalid fields: see details",
            problems,
        ));
    }
    let currency = sale.sale.total.currency;
    let mut total = Money::zero(currency);
    let mut lines = Vec::with_capacity(wanted.len());
    for (line, (quantity, restocked)) in wanted {
        let sold = &sale.sale.lines[line];
        let left = sale.returnable(line);
        if quantity > left {
            return Err(OpError::Conflict {
                code: "over_return",
                message: format!(
                    "line {line} of receipt {} ({}): {} sold, {} returned already, so at most {left} more can come back, not {quantity}",
                    sale.sale.number,
                    sold.sku,
                    sold.quantity,
                    sale.returned(line)
                ),
            });
        }
        let amount = sale.refund_value(line, quantity).ok_or_else(|| {
            OpError::invalid("invalid_return", "the line's value is out of range")
        })?;
        total = total.checked_add(amount).map_err(|_| {
            OpError::invalid("invalid_return", "the return's value is out of range")
        })?;
        lines.push(ReturnLine {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            sku: sold.sku.clone(),
            name: sold.name.clone(),
            quantity: u32::try_from(quantity).unwrap_or(u32::MAX),
            amount,
            restocked,
        });
    }
    Ok(PlannedReturn {
        lines,
        total,
        reason,
    })
}

impl Store {
    /// Fills in the provider reference of the sale's card payments taken offline (a sale record
    /// is immutable: it was made before the authorisation) from this node's card states, so
    /// their refunds go back to the card. A card payment whose authorisation is still pending,
    /// or that was declined or flagged, cannot be refunded yet: refused, nothing changes (no
    /// cash paid out for a card payment that may never be paid).
    fn card_references(&self, sale: &mut ReturnableSale) -> Result<(), OpError> {
        let local = sale.local;
        for p in sale.sale.payments.iter_mut() {
            let (true, None, Some(tender)) = (p.method == "card", &p.reference, &p.card) else {
                continue;
            };
            let state = if local {
                crate::pos::card::state_of(self, &tender.payment)?
            } else {
                None
            };
            match state {
                Some(s) if s.phase == crate::pos::card::CardPhase::Authorised => {
                    p.reference = s.reference.clone();
                }
                Some(s) if s.phase != crate::pos::card::CardPhase::PendingAuth => {
                    return Err(OpError::Conflict {
                        code: "card_payment_flagged",
                        message: format!(
                            "the card payment ({} ···· {}) of this receipt was {}: it is flagged for follow-up, so its goods cannot be refunded at the till",
                            tender.brand,
                            tender.last4,
                            s.phase.as_str().replace('_', " ")
                        ),
                    });
                }
                _ => {
                    return Err(OpError::Conflict {
                        code: "card_authorisation_pending",
                        message: format!(
                            "the card payment ({} ···· {}) of this receipt was taken offline and is not authorised yet: take the return once it is (after the store is back online){}",
                            tender.brand,
                            tender.last4,
                            if local { "" } else { ", at the store that sold it" }
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// What was refunded of a receipt (exchange credit aside) by returns no manager approved.
pub fn refunded_unapproved(sale: &ReturnableSale) -> i64 {
    sale.returns
        .iter()
        .filter(|r| r.approved_by.is_none())
        .flat_map(|r| r.refunds.iter())
        .filter(|p| p.method != EXCHANGE)
        .map(|p| p.amount.minor)
        .sum()
}

/// " (and 40.00 refunded on this receipt before without a manager)", or nothing.
pub fn unapproved_note(before: i64, currency: protocol::Currency) -> String {
    if before > 0 {
        format!(
            " (and {} refunded on this receipt before without a manager)",
            Money::new(before, currency)
        )
    } else {
        String::new()
    }
}

/// Shares `amount` out over the sale's tenders: each card payment with a reference first, up to
/// what it paid less what was refunded to it before; the rest in cash (cash, vouchers, and
/// card payments with no reference to refund to).
pub fn allocate(sale: &ReturnableSale, amount: Money) -> Vec<SalePayment> {
    let mut left = amount.minor;
    let mut out = Vec::new();
    for p in &sale.sale.payments {
        let (true, Some(reference)) = (p.method == "card", p.reference.as_ref()) else {
            continue;
        };
        let before: i64 = sale
            .returns
            .iter()
            .flat_map(|r| r.refunds.iter())
            .filter(|r| r.method == "card" && r.reference.as_ref() == Some(reference))
            .map(|r| r.amount.minor)
            .sum();
        let take = (p.amount.minor - before).clamp(0, left);
        if take > 0 {
            out.push(SalePayment {
                method: "card".into(),
                amount: Money::new(take, amount.currency),
                reference: Some(reference.clone()),
                card: None,
            });
            left -= take;
        }
    }
    if left > 0 {
        out.push(SalePayment {
            method: "cash".into(),
            amount: Money::new(left, amount.currency),
            reference: None,
            card: None,
        });
    }
    out
}

/// An online order is refunded to the card it was paid with, through the hub: a refund that
/// would need cash (the order's payment has less left than the goods are worth: the back office
/// refunded some of it already) is refused.
fn refuse_cash_for_order(
    sale: &ReturnableSale,
    refunds: &[SalePayment],
    back: Money,
) -> Result<(), OpError> {
    let cash: i64 = refunds
        .iter()
        .filter(|p| p.method == "cash")
        .map(|p| p.amount.minor)
        .sum();
    if cash == 0 {
        return Ok(());
    }
    let card = Money::new(back.minor - cash, back.currency);
    Err(OpError::Conflict {
        code: "over_refund",
        message: format!(
            "online order {} can still be refunded {card} to its payment, and these goods come to {back}: part of the order was refunded already (from the back office). Take back fewer items, or ask the back office",
            sale.sale.number
        ),
    })
}

impl Store {
    /// A sale of this node by receipt number (as typed, or in upper or lower case) or id.
    pub fn sale_for_return(&self, receipt: &str) -> Result<Option<SaleRecord>, StoreError> {
        let typed = receipt.trim();
        for candidate in [
            typed.to_string(),
            typed.to_ascii_uppercase(),
            typed.to_ascii_lowercase(),
        ] {
            if let Some(found) = self.find_sale(&candidate)? {
                return Ok(Some(found.entry.sale));
            }
        }
        Ok(None)
    }

    /// The returns of a sale recorded on this node, oldest first.
    pub fn returns_of_sale(&self, sale: Ulid) -> Result<Vec<ReturnRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.tree(T::Sales).scan_prefix(of_sale_prefix(sale)) {
            let (_, v) = kv?;
            let r: IdRef = protocol::decode(&v)?;
            if let Some(e) = self.db.get::<ReturnEntry>(T::Sales, &return_key(r.id))? {
                out.push(e.record);
            }
        }
        Ok(out)
    }

    /// A return recorded here, by id or number.
    pub fn find_return(&self, id_or_number: &str) -> Result<Option<ReturnEntry>, StoreError> {
        let typed = id_or_number.trim();
        if let Ok(id) = Ulid::from_string(typed) {
            if let Some(e) = self.db.get(T::Sales, &return_key(id))? {
                return Ok(Some(e));
            }
        }
        match self
            .db
            .get::<IdRef>(T::Sales, &return_number_key(&typed.to_ascii_uppercase()))?
        {
            Some(r) => self.db.get(T::Sales, &return_key(r.id)),
            None => Ok(None),
        }
    }

    fn return_receipt(&self, id: Ulid, replayed: bool) -> Result<ReturnReceipt, OpError> {
        let entry: ReturnEntry = self
            .db
            .get(T::Sales, &return_key(id))?
            .ok_or_else(|| OpError::NotFound(format!("return {id}")))?;
        let exchange = match entry.record.exchange_sale {
            Some(s) => self.sale(s)?,
            None => None,
        };
        Ok(ReturnReceipt {
            entry,
            exchange,
            replayed,
        })
    }

    /// The return first recorded with this idempotency key, if one was.
    pub fn replayed_return(
        &self,
        idempotency: Option<&str>,
    ) -> Result<Option<ReturnReceipt>, OpError> {
        let Some(key) = check_idempotency_key(idempotency)? else {
            return Ok(None);
        };
        match self
            .db
            .get::<IdRef>(T::Sales, &idempotency_key(&format!("return:{key}")))?
        {
            Some(found) => {
                self.refuse_if_failed()?;
                self.db.flush()?;
                Ok(Some(self.return_receipt(found.id, true)?))
            }
            None => Ok(None),
        }
    }

    /// Records a return (and an exchange's new sale) at a till, in one change. `sale` carries
    /// the returns known elsewhere (the hub's); the node's own are read again under the writer
    /// lock, so two returns of one receipt at once cannot both take the same units back. A retry
    /// with the same idempotency key answers the first return unchanged.
    #[tracing::instrument(skip_all, fields(sale = %sale.sale.id, till = %by.till.till))]
    pub fn take_return(
        &self,
        mut sale: ReturnableSale,
        req: &ReturnRequest,
        by: &ReturnBy,
        idempotency: Option<&str>,
    ) -> Result<ReturnReceipt, OpError> {
        let idem = check_idempotency_key(idempotency)?.map(|k| format!("return:{k}"));
        if let Some(r) = self.replayed_return(idempotency)? {
            return Ok(r);
        }
        let now = self.corrected_now()?;
        let exchange = match &req.exchange {
            Some(x) => {
                let probe = SaleRequest {
                    lines: x.lines.clone(),
                    payments: Vec::new(),
                    customer: sale.sale.customer,
                    clerk: None,
                    override_reason: None,
                    coupons: Vec::new(),
                };
                let priced = price_sale(
                    &self.catalog(),
                    &self.me.location,
                    now,
                    &probe,
                    &[],
                    &ManualAdjustments::default(),
                )?;
                Some((probe, priced))
            }
            None => None,
        };
        let mut w = self.writer()?;
        if let Some(r) = self.replayed_return(idempotency)? {
            return Ok(r);
        }
        sale.learn(self.returns_of_sale(sale.sale.id)?);
        let planned = plan(&sale, req)?;
        let currency = planned.total.currency;
        // What the new goods take of the return's value, and what is left to pay back.
        let credit = exchange
            .as_ref()
            .map_or(0, |(_, p)| p.total.minor.min(planned.total.minor));
        let back = Money::new(planned.total.minor - credit, currency);
        // Refunds of this receipt made before without a manager count too: a large return
        // split into small ones still needs one.
        let before = refunded_unapproved(&sale);
        if back.minor.saturating_add(before) > by.approval_over.minor && by.approved_by.is_none() {
            return Err(OpError::Conflict {
                code: "manager_approval_required",
                message: format!(
                    "refunding {back}{} is above {} and needs a manager: a manager signs in, or sends \"approval\" with their PIN",
                    unapproved_note(before, currency),
                    by.approval_over
                ),
            });
        }
        let mut refunds = Vec::new();
        if credit > 0 {
            refunds.push(SalePayment {
                method: EXCHANGE.into(),
                amount: Money::new(credit, currency),
                reference: None,
                card: None,
            });
        }
        self.card_references(&mut sale)?;
        refunds.extend(allocate(&sale, back));
        if sale.online_order() {
            refuse_cash_for_order(&sale, &refunds, back)?;
        }
        let mut ch = Change::new(self, &mut w);
        let at = ch.stamp();
        let seq: ReturnSeq = self
            .db
            .get(T::Sales, RETURN_SEQ)?
            .unwrap_or(ReturnSeq { next: 1 });
        let prefix = protocol::replication::receipt_prefix(&self.me.location, &self.me.replica);
        let number = format!("{prefix}-R{:06}", seq.next);
        ch.writes.put(
            T::Sales,
            RETURN_SEQ.to_vec(),
            &ReturnSeq { next: seq.next + 1 },
        )?;
        let id = Ulid::new();
        let mut units: BTreeMap<Sku, u64> = BTreeMap::new();
        for l in planned.lines.iter().filter(|l| l.restocked) {
            *units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
        }
        for (sku, n) in &units {
            ch.add_stock(sku, *n)?;
        }
        let exchange_sale = match exchange {
            Some((probe, priced)) => Some(
                self.exchange_sale(
                    &mut ch,
                    probe,
                    priced,
                    req.exchange
                        .as_ref()
                        .map(|x| x.payments.clone())
                        .unwrap_or_default(),
                    Money::new(credit, currency),
                    &number,
                    by,
                    &at,
                )?,
            ),
            None => None,
        };
        for sku in units.keys() {
            ch.policy(sku)?;
        }
        let record = ReturnRecord {
            id,
            number: number.clone(),
            replica: self.me.replica.clone(),
            location: self.me.location.clone(),
            at,
            sale: sale.sale.id,
            sale_number: sale.sale.number.clone(),
            sale_location: sale.sale.location.clone(),
            lines: planned.lines,
            total: planned.total,
            refunds,
            clerk: Some(by.till.staff.clone()),
            approved_by: by.approved_by.clone(),
            reason: planned.reason,
            exchange_sale: exchange_sale.as_ref().map(|s| s.id),
        };
        let till = crate::pos::returns::ring(
            self.db(),
            &mut ch.writes,
            &by.till,
            &record,
            exchange_sale.as_ref(),
        )?;
        if let Some(new_sale) = exchange_sale {
            let entry = SaleEntry {
                sale: new_sale,
                deficits: Vec::new(),
                replayed_from: None,
                till: Some(till.clone()),
            };
            ch.record_sale(&entry, None)?;
        }
        let entry = ReturnEntry {
            record,
            till: Some(till),
        };
        ch.writes.put(T::Sales, return_key(id), &entry)?;
        let mut link = of_sale_prefix(sale.sale.id);
        link.extend_from_slice(&id.0.to_be_bytes());
        ch.writes.put(T::Sales, link, &IdRef { id })?;
        ch.writes
            .put(T::Sales, return_number_key(&number), &IdRef { id })?;
        if let Some(key) = &idem {
            ch.writes
                .put(T::Sales, idempotency_key(key), &IdRef { id })?;
        }
        ch.record_return(&entry.record);
        ch.finish()?;
        drop(w);
        tracing::info!(number = %entry.record.number, sale = %entry.record.sale_number, total = %entry.record.total, "return recorded");
        let exchange = match entry.record.exchange_sale {
            Some(e) => self.sale(e)?,
            None => None,
        };
        Ok(ReturnReceipt {
            entry,
            exchange,
            replayed: false,
        })
    }

    /// Records a return from an old node's journal again (same id and number) unless it is
    /// here already: its restocked units go back on this store's shelf and the record goes to
    /// the hub (which keeps it once by id). Answers whether it was recorded.
    pub(super) fn replay_return(
        &self,
        r: ReturnRecord,
        from: &protocol::replication::ReplicaId,
        report: &mut crate::ops::ReplayReport,
    ) -> Result<bool, OpError> {
        if r.location != self.me.location {
            report.skipped.push(format!(
                "return {} ({}) was taken at {}, not at this node's location {}",
                r.number, r.id, r.location, self.me.location
            ));
            return Ok(false);
        }
        let mut w = self.writer()?;
        if self.db.contains(T::Sales, &return_key(r.id))? {
            report.already_present += 1;
            return Ok(false);
        }
        let mut ch = Change::new(self, &mut w);
        let mut units: BTreeMap<Sku, u64> = BTreeMap::new();
        for l in r.lines.iter().filter(|l| l.restocked) {
            *units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
        }
        for (sku, n) in &units {
            ch.add_stock(sku, *n)?;
            ch.policy(sku)?;
        }
        let id = r.id;
        let mut link = of_sale_prefix(r.sale);
        link.extend_from_slice(&id.0.to_be_bytes());
        ch.writes.put(T::Sales, link, &IdRef { id })?;
        ch.writes
            .put(T::Sales, return_number_key(&r.number), &IdRef { id })?;
        let entry = ReturnEntry {
            record: r,
            till: None,
        };
        ch.writes.put(T::Sales, return_key(id), &entry)?;
        ch.record_return(&entry.record);
        ch.finish()?;
        tracing::info!(number = %entry.record.number, from = %from, "return replayed from an old journal");
        Ok(true)
    }

    /// The sale of an exchange's new goods, inside the return's change: paid first by a voucher
    /// worth `credit` (the goods returned), then by `payments`; no override, no coupons.
    #[allow(clippy::too_many_arguments)]
    fn exchange_sale(
        &self,
        ch: &mut Change<'_>,
        mut req: SaleRequest,
        priced: super::check::PricedSale,
        payments: Vec<PaymentRequest>,
        credit: Money,
        return_number: &str,
        by: &ReturnBy,
        at: &protocol::replication::Hlc,
    ) -> Result<SaleRecord, OpError> {
        req.payments = payments;
        if credit.minor > 0 {
            req.payments.insert(
                0,
                PaymentRequest {
                    method: PaymentMethod::Voucher,
                    amount: credit.to_decimal_string(),
                    reference: Some(format!("{EXCHANGE} {return_number}")),
                    card: None,
                },
            );
        }
        let payments = parse_payments(&req, priced.total)?;
        // Units set aside for click-and-collect are not the exchange's either.
        super::pickup::refuse_held(ch, &priced.units)?;
        let mut short = Vec::new();
        for (sku, qty) in &priced.units {
            let held = ch.held(sku)?;
            if held < *qty {
                short.push(Shortage {
                    sku: sku.clone(),
                    requested: *qty,
                    held,
                });
            }
        }
        if !short.is_empty() {
            return Err(OpError::InsufficientRights(short));
        }
        let number = protocol::replication::receipt_number(
            &protocol::replication::receipt_prefix(&self.me.location, &self.me.replica),
            ch.cursors.next_receipt,
        );
        ch.cursors.next_receipt += 1;
        let sale = SaleRecord {
            id: Ulid::new(),
            number,
            replica: self.me.replica.clone(),
            location: self.me.location.clone(),
            at: at.clone(),
            lines: priced.lines,
            total: priced.total,
            taxes: priced.taxes,
            payments,
            customer: req.customer,
            clerk: Some(by.till.staff.clone()),
            promotions: priced.promotions,
            coupons: Vec::new(),
        };
        for (sku, qty) in &priced.units {
            ch.take_stock(sku, *qty)?;
            ch.policy(sku)?;
        }
        Ok(sale)
    }
}
