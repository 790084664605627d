//! Checks of requests before the writer lock is taken: a sale priced from the catalog and its
//! promotions (a client never sets a price), its payments, an adjustment, an idempotency key.

use super::change::Target;
use super::Catalog;
use crate::ops::{
    clean_text, AdjustmentRequest, Approved, FieldProblem, ManualAdjustmentRequest,
    ManualAdjustments, OpError, SaleRequest, MAX_ADJUSTMENT_UNITS, MAX_LINE_QUANTITY,
    MAX_SALE_LINES, MAX_TEXT_CHARS,
};
use crate::storage::AdjustmentKind;
use protocol::money::MoneyError;
use protocol::promotion::{PromotionContext, PromotionSummary};
use protocol::replication::{CouponTerms, SaleLine, SalePayment, SaleRecord};
use protocol::{Basket, BasketId, BasketOwner, Channel, Currency, LocationId, Money, Sku};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Checks and prices a sale request (no lock held) with the promotions that came with the
/// catalog, as the hub prices a basket: on the POS channel, in this store, at `now`, with the
/// promotions the presented coupons unlock (checked by the caller). A coupon whose promotion
/// does not apply to the sale refuses the sale with the engine's reason. Nothing about the
/// customer (segments, first order) is known at the till yet.
pub(super) fn price_sale(
    catalog: &Catalog,
    store: &LocationId,
    now: OffsetDateTime,
    req: &SaleRequest,
    coupons: &[CouponTerms],
    manual: &ManualAdjustments,
) -> Result<PricedSale, OpError> {
    let mut problems = Vec::new();
    if req.lines.is_empty() {
        return Err(OpError::invalid(
            "no_lines",
            "a sale needs at least one line: {\"sku\" or \"barcode\", \"quantity\"}",
        ));
    }
    if req.lines.len() > MAX_SALE_LINES {
        return Err(OpError::invalid(
            "too_many_lines",
            format!("a sale has at most {MAX_SALE_LINES} lines"),
        ));
    }
    let mut unknown = Vec::new();
    let mut wanted: Vec<(Sku, i64)> = Vec::new();
    // Lines with a manual adjustment: (index in the request, SKU, quantity, adjustment).
    let mut adjusted: Vec<(usize, Sku, i64, &ManualAdjustmentRequest)> = Vec::new();
    if manual.lines.len() > req.lines.len() {
        problems.push(FieldProblem {
            field: "lines".into(),
            message: "a manual adjustment names a line the sale does not have".into(),
        });
    }
    for (i, line) in req.lines.iter().enumerate() {
        if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
            problems.push(FieldProblem {
                field: format!("lines[{i}].quantity"),
                message: format!(
                    "quantity {} is out of range: 1 to {MAX_LINE_QUANTITY}",
                    line.quantity
                ),
            });
        }
        let sku = resolve_line(catalog, i, line, &mut problems, &mut unknown);
        let adjustment = manual
            .lines
            .get(i)
            .and_then(Option::as_ref)
            .filter(|a| !a.is_empty());
        match (sku, adjustment) {
            (Some(sku), Some(a)) => adjusted.push((i, sku, line.quantity, a)),
            (Some(sku), None) => wanted.push((sku, line.quantity)),
            (None, _) => {}
        }
    }
    if adjusted
        .iter()
        .any(|(i, ..)| manual.approval_of(*i).is_none())
    {
        return Err(OpError::invalid(
            "manager_approval_required",
            "a price override or manual discount needs a manager's approval: send approval {manager, pin, reason}",
        ));
    }
    let clerk = clean_text("clerk", req.clerk.as_deref(), &mut problems);
    let override_reason = match req.override_reason.as_deref() {
        Some(r) if r.trim().is_empty() => {
            problems.push(FieldProblem {
                field: "override_reason".into(),
                message: "an override needs the clerk's reason".into(),
            });
            None
        }
        other => clean_text("override_reason", other, &mut problems),
    };
    if !problems.is_empty() {
        return Err(OpError::fields(
            "invalid_sale",
            "the sale has invalid fields: see details",
            problems,
        ));
    }
    if !unknown.is_empty() {
        return Err(OpError::fields(
            "unknown_item",
            "some lines name no product in the store's catalog: see details",
            unknown,
        ));
    }
    let currency = wanted
        .iter()
        .map(|(sku, _)| sku)
        .chain(adjusted.iter().map(|(_, sku, _, _)| sku))
        .next()
        .and_then(|sku| catalog.snapshot.product_by_sku(sku)?.variant(sku))
        .map_or(Currency::EUR, |v| v.price.currency);
    let manual_lines = adjusted
        .iter()
        .map(|(i, sku, qty, a)| {
            let approved = manual.approval_of(*i).cloned().unwrap_or_else(|| Approved {
                manager: String::new(),
                reason: String::new(),
            });
            manual_line(catalog, currency, *i, sku, *qty, a, approved)
        })
        .collect::<Result<Vec<_>, OpError>>()?;
    let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, currency, now);
    for (sku, qty) in &wanted {
        basket.add(sku.clone(), *qty, i64::MAX, now).map_err(|e| {
            OpError::fields(
                "invalid_sale",
                "the sale has invalid fields: see details",
                vec![FieldProblem {
                    field: format!("lines ({sku})"),
                    message: format!("{e} (lines of the same SKU are added up)"),
                }],
            )
        })?;
    }
    let mut ctx = PromotionContext::new(currency, Channel::Pos, now);
    ctx.store = Some(store.clone());
    ctx.coupons = coupons.iter().map(|c| c.promotion.clone()).collect();
    let priced = protocol::pricing::price_basket_with_promotions(
        &basket,
        |s| catalog.snapshot.product_by_sku(s),
        &catalog.promotions,
        &ctx,
    )
    .map_err(|e| OpError::invalid("unpriceable", format!("the sale cannot be priced: {e}")))?;
    if !priced.unavailable.is_empty() {
        return Err(OpError::invalid(
            "mixed_currencies",
            format!(
                "{} cannot be sold together with {}: their prices are in another currency",
                priced
                    .unavailable
                    .iter()
                    .map(Sku::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                currency
            ),
        ));
    }
    for c in coupons {
        if !priced
            .promotions
            .applied
            .iter()
            .any(|a| a.id == c.promotion)
        {
            let why = priced
                .promotions
                .not_applied
                .iter()
                .find(|n| n.id == c.promotion)
                .map_or_else(
                    || "its promotion is not running at this store".to_string(),
                    |n| n.reason.clone(),
                );
            return Err(OpError::invalid(
                "coupon_not_applicable",
                format!("coupon {} gives nothing on this sale: {why}", c.code),
            ));
        }
    }
    let mut lines: Vec<SaleLine> = priced
        .lines
        .iter()
        .map(|l| SaleLine {
            sku: l.sku.clone(),
            name: if l.variant.is_empty() || l.variant == "Default" {
                l.name.clone()
            } else {
                format!("{} – {}", l.name, l.variant)
            },
            quantity: l.quantity,
            unit_price: l.unit_price,
            // The engine never discounts a line beyond its total.
            total: Money::new(l.line_total.minor - l.discount.minor, currency),
            tax_rate_bp: l.tax_rate_bp,
        })
        .collect();
    // Units leave the shelf per SKU: a free gift of a SKU also bought is one more of it.
    let mut units: BTreeMap<Sku, u64> = BTreeMap::new();
    for l in &priced.lines {
        *units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
    }
    // Manually adjusted lines follow the promoted ones, outside the promotion engine; the total
    // and the taxes are then those of all the lines, by the protocol's rule (tax per rate on
    // the summed lines of that rate, after discounts).
    let (mut total, mut taxes) = (priced.total, priced.taxes);
    let mut manual_out = Vec::with_capacity(manual_lines.len());
    if !manual_lines.is_empty() {
        for (m, line) in manual_lines {
            *units.entry(line.sku.clone()).or_default() += u64::from(line.quantity);
            manual_out.push(PricedManual {
                sale_line: lines.len(),
                ..m
            });
            lines.push(line);
        }
        let overflow = |_| OpError::invalid("amount_out_of_range", "the sale's total is too large");
        total = Money::sum(currency, lines.iter().map(|l| l.total)).map_err(overflow)?;
        taxes = taxes_of(currency, &lines).map_err(overflow)?;
    }
    Ok(PricedSale {
        units: units.into_iter().collect(),
        lines,
        total,
        taxes,
        manual: manual_out,
        clerk,
        override_reason,
        promotions: PromotionSummary {
            // What did not apply explains a basket being built, not a sale made: the record
            // (replicated to the hub) keeps what applied.
            not_applied: Vec::new(),
            ..priced.promotions
        },
    })
}

/// A manually adjusted line as it was before and after the adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PricedManual {
    /// The line's index in the request.
    pub line: usize,
    /// Its index in the sale record's lines.
    pub sale_line: usize,
    pub sku: Sku,
    pub quantity: u32,
    pub shelf_price: Money,
    /// The new unit price, for a price override.
    pub new_price: Option<Money>,
    /// The percent off, for a discount given in percent.
    pub percent: Option<u32>,
    /// What the adjustment took off the line (at shelf prices).
    pub discount: Money,
    /// The line's total after it.
    pub total: Money,
    /// Who approved it and why.
    pub approved: Approved,
}

fn bad_manual(i: usize, what: &str, message: String) -> OpError {
    OpError::fields(
        "invalid_adjustment",
        format!("line {i}'s manual adjustment is refused: {message}"),
        vec![FieldProblem {
            field: format!("lines[{i}].{what}"),
            message,
        }],
    )
}

/// Prices a manually adjusted line: its shelf price from the catalog, less the adjustment
/// (a price from 0 up to the shelf price, a discount from more than 0 up to the line).
fn manual_line(
    catalog: &Catalog,
    currency: Currency,
    i: usize,
    sku: &Sku,
    quantity: i64,
    a: &ManualAdjustmentRequest,
    approved: Approved,
) -> Result<(PricedManual, SaleLine), OpError> {
    let (product, variant) = catalog
        .snapshot
        .product_by_sku(sku)
        .and_then(|p| p.variant(sku).map(|v| (p, v)))
        .ok_or_else(|| bad_manual(i, "sku", format!("{sku} is not in the catalog")))?;
    let shelf = variant.price;
    if shelf.currency != currency {
        return Err(OpError::invalid(
            "mixed_currencies",
            format!(
                "{sku} cannot be sold together with {currency}: its price is in another currency"
            ),
        ));
    }
    let qty =
        u32::try_from(quantity).map_err(|_| bad_manual(i, "quantity", "out of range".into()))?;
    let too_large =
        |_: MoneyError| bad_manual(i, "quantity", "the line's total is too large".into());
    let line_total = shelf.checked_mul(i64::from(qty)).map_err(too_large)?;
    let amount = |field: &str, text: &str| -> Result<Money, OpError> {
        Money::parse_decimal(text, currency).map_err(|_| {
            bad_manual(
                i,
                field,
                format!(
                    "'{}' is not an amount in {currency}: use a decimal string such as \"2.50\" with at most {} decimals",
                    text.chars().take(32).collect::<String>(),
                    currency.exponent()
                ),
            )
        })
    };
    let (new_price, percent, discount) = match (&a.price_override, &a.manual_discount) {
        (Some(p), None) => {
            let p = amount("price_override", p)?;
            if p.minor < 0 || p.minor > shelf.minor {
                return Err(bad_manual(
                    i,
                    "price_override",
                    format!("the new price {p} must be from 0 up to the shelf price {shelf}"),
                ));
            }
            let new_total = p.checked_mul(i64::from(qty)).map_err(too_large)?;
            (
                Some(p),
                None,
                Money::new(line_total.minor - new_total.minor, currency),
            )
        }
        (None, Some(d)) => match (&d.amount, d.percent) {
            (Some(text), None) => {
                let off = amount("manual_discount.amount", text)?;
                if off.minor <= 0 || off.minor > line_total.minor {
                    return Err(bad_manual(
                        i,
                        "manual_discount.amount",
                        format!("the discount {off} must be more than 0 and at most the line's total {line_total}"),
                    ));
                }
                (None, None, off)
            }
            (None, Some(pct)) => {
                if !(1..=100).contains(&pct) {
                    return Err(bad_manual(
                        i,
                        "manual_discount.percent",
                        format!("{pct} percent is out of range: 1 to 100"),
                    ));
                }
                let off = protocol::pricing::round_div(
                    i128::from(line_total.minor) * i128::from(pct),
                    100,
                );
                let off = i64::try_from(off).map_err(|_| too_large(MoneyError::Overflow))?;
                (None, Some(pct), Money::new(off, currency))
            }
            _ => {
                return Err(bad_manual(
                    i,
                    "manual_discount",
                    "give exactly one of amount and percent".into(),
                ))
            }
        },
        _ => {
            return Err(bad_manual(
                i,
                "price_override",
                "give exactly one of price_override and manual_discount".into(),
            ))
        }
    };
    let total = Money::new(line_total.minor - discount.minor, currency);
    let line = SaleLine {
        sku: sku.clone(),
        name: if variant.title.is_empty() || variant.title == "Default" {
            product.name.clone()
        } else {
            format!("{} – {}", product.name, variant.title)
        },
        quantity: qty,
        unit_price: shelf,
        total,
        tax_rate_bp: product.tax_rate_bp,
    };
    let m = PricedManual {
        line: i,
        sale_line: 0,
        sku: sku.clone(),
        quantity: qty,
        shelf_price: shelf,
        new_price,
        percent,
        discount,
        total,
        approved,
    };
    Ok((m, line))
}

/// Tax per rate of sale lines (tax-inclusive totals), by the protocol's rule: per rate on the
/// summed lines of that rate ([`protocol::pricing::included_tax`]); rates with nothing left
/// out, as the promotion pricing leaves them out.
fn taxes_of(
    currency: Currency,
    lines: &[SaleLine],
) -> Result<Vec<protocol::TaxLine>, protocol::money::MoneyError> {
    let mut by_rate: BTreeMap<u32, i64> = BTreeMap::new();
    for l in lines {
        let slot = by_rate.entry(l.tax_rate_bp).or_default();
        *slot = slot
            .checked_add(l.total.minor)
            .ok_or(protocol::money::MoneyError::Overflow)?;
    }
    Ok(by_rate
        .into_iter()
        .map(|(rate_bp, gross)| protocol::TaxLine {
            rate_bp,
            gross: Money::new(gross, currency),
            tax: Money::new(protocol::pricing::included_tax(gross, rate_bp), currency),
        })
        .filter(|t| t.gross.minor != 0 || t.tax.minor != 0)
        .collect())
}

/// The SKU a sale line names (by SKU or barcode), or a problem noted in `problems` (invalid)
/// or `unknown` (not in the catalog).
fn resolve_line(
    catalog: &Catalog,
    i: usize,
    line: &crate::ops::SaleLineRequest,
    problems: &mut Vec<FieldProblem>,
    unknown: &mut Vec<FieldProblem>,
) -> Option<Sku> {
    match (line.sku.as_deref(), line.barcode.as_deref()) {
        (Some(text), None) => match Sku::parse(text) {
            Ok(sku) if catalog.snapshot.product_by_sku(&sku).is_some() => Some(sku),
            Ok(_) => {
                unknown.push(FieldProblem {
                    field: format!("lines[{i}].sku"),
                    message: format!(
                        "no product with SKU '{text}' in the catalog (version {})",
                        catalog.version()
                    ),
                });
                None
            }
            Err(e) => {
                problems.push(FieldProblem {
                    field: format!("lines[{i}].sku"),
                    message: e.to_string(),
                });
                None
            }
        },
        (None, Some(code)) => match catalog.sku_by_barcode(code.trim()) {
            Some(sku) => Some(sku.clone()),
            None => {
                unknown.push(FieldProblem {
                    field: format!("lines[{i}].barcode"),
                    message: format!(
                        "no product with barcode '{}' in the catalog (version {})",
                        code.chars().take(64).collect::<String>(),
                        catalog.version()
                    ),
                });
                None
            }
        },
        _ => {
            problems.push(FieldProblem {
                field: format!("lines[{i}]"),
                message: "give exactly one of sku and barcode".into(),
            });
            None
        }
    }
}

/// An adjustment request checked.
pub(super) struct CheckedAdjustment {
    pub kind: AdjustmentKind,
    pub sku: Sku,
    pub target: Target,
    pub reason: String,
    pub clerk: Option<String>,
}

/// Checks an adjustment request against the catalog.
pub(super) fn check_adjustment(
    catalog: &Catalog,
    req: &AdjustmentRequest,
) -> Result<CheckedAdjustment, OpError> {
    let (kind, sku_text, amount, reason, clerk) = match req {
        AdjustmentRequest::Receipt {
            sku,
            units,
            reason,
            clerk,
        } => (
            AdjustmentKind::Receipt,
            sku,
            *units,
            reason.as_deref(),
            clerk,
        ),
        AdjustmentRequest::Count {
            sku,
            on_hand,
            reason,
            clerk,
        } => (
            AdjustmentKind::Count,
            sku,
            *on_hand,
            reason.as_deref(),
            clerk,
        ),
        AdjustmentRequest::Damage {
            sku,
            units,
            reason,
            clerk,
        } => (
            AdjustmentKind::Damage,
            sku,
            *units,
            Some(reason.as_str()),
            clerk,
        ),
    };
    let mut problems = Vec::new();
    let sku = match Sku::parse(sku_text) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(FieldProblem {
                field: "sku".into(),
                message: e.to_string(),
            });
            None
        }
    };
    let (field, low) = match kind {
        AdjustmentKind::Count => ("on_hand", 0),
        _ => ("units", 1),
    };
    if !(low..=MAX_ADJUSTMENT_UNITS).contains(&amount) {
        problems.push(FieldProblem {
            field: field.into(),
            message: format!("{amount} is out of range: {low} to {MAX_ADJUSTMENT_UNITS}"),
        });
    }
    let reason_text = clean_text("reason", reason, &mut problems);
    if kind == AdjustmentKind::Damage && reason_text.is_none() {
        problems.push(FieldProblem {
            field: "reason".into(),
            message: "say what happened to the goods".into(),
        });
    }
    let clerk = clean_text("clerk", clerk.as_deref(), &mut problems);
    let Some(sku) = sku.filter(|_| problems.is_empty()) else {
        return Err(OpError::fields(
            "invalid_adjustment",
            "the adjustment has invalid fields: see details",
            problems,
        ));
    };
    if catalog.snapshot.product_by_sku(&sku).is_none() {
        return Err(OpError::fields(
            "unknown_item",
            format!("no product with SKU '{sku}' in the store's catalog"),
            vec![FieldProblem {
                field: "sku".into(),
                message: "not in the catalog".into(),
            }],
        ));
    }
    let reason = reason_text.unwrap_or_else(|| match kind {
        AdjustmentKind::Receipt => "goods received".into(),
        _ => "shelf count".into(),
    });
    let target = match kind {
        AdjustmentKind::Count => Target::Set(amount),
        AdjustmentKind::Receipt => Target::Add(amount.unsigned_abs()),
        _ => Target::Remove(amount.unsigned_abs()),
    };
    Ok(CheckedAdjustment {
        kind,
        sku,
        target,
        reason,
        clerk,
    })
}

pub(super) fn check_idempotency_key(key: Option<&str>) -> Result<Option<String>, OpError> {
    match key {
        None => Ok(None),
        Some(k)
            if !k.is_empty()
                && k.len() <= MAX_TEXT_CHARS
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(OpError::invalid(
            "bad_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_TEXT_CHARS} printable ASCII characters without spaces"),
        )),
    }
}

/// A sale request checked and priced.
pub(super) struct PricedSale {
    /// Units per SKU (lines of one SKU added up).
    pub units: Vec<(Sku, u64)>,
    pub lines: Vec<SaleLine>,
    pub total: Money,
    pub taxes: Vec<protocol::TaxLine>,
    pub clerk: Option<String>,
    pub override_reason: Option<String>,
    /// The manually adjusted lines (approved by a manager), in the order of the sale's lines.
    pub manual: Vec<PricedManual>,
    /// The promotions that applied, gifts and free shipping.
    pub promotions: PromotionSummary,
}

/// Checks the payments: amounts in the sale's currency, together covering the total; only
/// cash may exceed it (the excess is the change due). Apart from [`price_sale`], so a quote
/// prices a sale that has no payments yet.
pub(super) fn parse_payments(req: &SaleRequest, total: Money) -> Result<Vec<SalePayment>, OpError> {
    let currency = total.currency;
    let mut problems = Vec::new();
    let mut payments = Vec::with_capacity(req.payments.len());
    for (i, p) in req.payments.iter().enumerate() {
        let reference = clean_text(
            &format!("payments[{i}].reference"),
            p.reference.as_deref(),
            &mut problems,
        );
        match Money::parse_decimal(&p.amount, currency) {
            Ok(m) if m.minor > 0 => {
                match crate::pos::card::tender_of(p, &format!("payments[{i}]")) {
                    Ok((card, card_reference)) => payments.push(SalePayment {
                        method: p.method.as_str().to_string(),
                        amount: m,
                        reference: card_reference.or(reference),
                        card,
                    }),
                    Err(problem) => problems.push(problem),
                }
            }
            _ => problems.push(FieldProblem {
                field: format!("payments[{i}].amount"),
                message: format!(
                    "'{}' is not a positive amount in {currency}: use a decimal string such as \"12.34\" with at most {} decimals",
                    p.amount.chars().take(32).collect::<String>(),
                    currency.exponent()
                ),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(OpError::fields(
            "invalid_payment",
            "the payments have invalid fields: see details",
            problems,
        ));
    }
    let sum = |cash: Option<bool>| -> Result<i64, OpError> {
        payments
            .iter()
            .filter(|p| cash.is_none_or(|c| (p.method == "cash") == c))
            .try_fold(0i64, |acc, p| acc.checked_add(p.amount.minor))
            .ok_or_else(|| OpError::invalid("invalid_payment", "the payments add up to too much"))
    };
    let paid = sum(None)?;
    let non_cash = sum(Some(false))?;
    if paid < total.minor {
        return Err(OpError::invalid(
            "payment_short",
            format!(
                "the payments ({}) do not cover the total ({}): {} missing",
                Money::new(paid, currency),
                total,
                Money::new(total.minor - paid, currency)
            ),
        ));
    }
    if non_cash > total.minor {
        return Err(OpError::invalid(
            "overpaid",
            format!(
                "card and voucher payments ({}) exceed the total ({}): only cash may exceed it (change is given in cash)",
                Money::new(non_cash, currency),
                total
            ),
        ));
    }
    Ok(payments)
}

/// Cash to hand back: what was paid beyond the total.
pub(crate) fn change_due(sale: &SaleRecord) -> Money {
    let paid: i64 = sale.payments.iter().map(|p| p.amount.minor).sum();
    Money::new((paid - sale.total.minor).max(0), sale.total.currency)
}
