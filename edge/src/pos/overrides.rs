//! Manual price adjustments at the till (issue 6, POS point 2): a sale line's price overridden
//! or discounted by hand, only with a manager's approval — their staff id, their PIN (checked
//! like a sign-in: a wrong PIN counts toward *their* lock) and a reason. Every approved
//! adjustment is kept in the POS audit, written in the sale's own database write, and counted
//! on the till's Z-report. The PIN is never stored nor logged.
//!
//! | key (`pos` tree)                                  | value                        |
//! |---------------------------------------------------|------------------------------|
//! | `m` + sale id (16 bytes) + line index (be u32)    | [`ManualAdjustmentRecord`]   |
//! | `g` + grant id (hex)                              | [`ApprovalGrant`] (POS page) |

use super::{is_pin, Caller, Pos, PosError};
use crate::config::StaffRole;
use crate::ops::{ApprovalRequest, Approved, ManualAdjustmentRequest, ManualDiscountRequest};
use crate::storage::{StoreError, TillMark, WriteSet, T};
use crate::store::PricedManual;
use protocol::codec::Stored;
use protocol::replication::SaleRecord;
use protocol::{Money, Sku};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// The shortest and longest reason for a manual adjustment, in characters.
pub const REASON_CHARS: std::ops::RangeInclusive<usize> = 3..=200;
/// The most audit entries one listing returns.
pub const MAX_AUDIT_LIST: usize = 500;

/// One approved manual adjustment of one sale line, as the audit keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualAdjustmentRecord {
    pub sale: Ulid,
    pub number: String,
    /// The till and session it was rung up at (absent for a sale with the node's API token).
    #[serde(default)]
    pub till: Option<TillMark>,
    /// Who rang the sale up (the sale's clerk).
    #[serde(default)]
    pub rung_by: Option<String>,
    /// The manager who approved, with their PIN.
    pub approved_by: String,
    pub reason: String,
    /// The line's index in the sale request.
    pub line: u32,
    pub sku: Sku,
    pub quantity: u32,
    pub shelf_price: Money,
    /// The new unit price, for a price override.
    #[serde(default)]
    pub new_price: Option<Money>,
    /// The percent off, for a discount given in percent.
    #[serde(default)]
    pub percent: Option<u32>,
    /// What the adjustment took off the line.
    pub discount: Money,
    /// The line's total after it.
    pub line_total: Money,
    pub at_ms: u64,
}

impl Stored for ManualAdjustmentRecord {
    const KIND: &'static str = "edge.pos.manual_adjustment";
    const VERSION: u16 = 1;
}

impl ManualAdjustmentRecord {
    /// `price_override` or `manual_discount`.
    pub fn kind(&self) -> &'static str {
        if self.new_price.is_some() {
            "price_override"
        } else {
            "manual_discount"
        }
    }
}

fn audit_key(sale: Ulid, line: u32) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(&sale.to_bytes());
    k.extend_from_slice(&line.to_be_bytes());
    k
}

/// Adds the audit entries of a sale's manual adjustments to the sale's writes (the caller
/// holds the writer lock and commits them with the sale).
pub(crate) fn record(
    writes: &mut WriteSet,
    sale: &SaleRecord,
    till: Option<&TillMark>,
    manual: &[PricedManual],
    at_ms: u64,
) -> Result<(), StoreError> {
    for m in manual {
        let approved = &m.approved;
        let line = u32::try_from(m.line).unwrap_or(u32::MAX);
        let entry = ManualAdjustmentRecord {
            sale: sale.id,
            number: sale.number.clone(),
            till: till.cloned(),
            rung_by: sale.clerk.clone(),
            approved_by: approved.manager.clone(),
            reason: approved.reason.clone(),
            line,
            sku: m.sku.clone(),
            quantity: m.quantity,
            shelf_price: m.shelf_price,
            new_price: m.new_price,
            percent: m.percent,
            discount: m.discount,
            line_total: m.total,
            at_ms,
        };
        writes.put(T::Pos, audit_key(sale.id, line), &entry)?;
        tracing::info!(
            sale = %sale.number,
            line,
            sku = %m.sku,
            rung_by = sale.clerk.as_deref().unwrap_or("-"),
            approved_by = %approved.manager,
            discount = %m.discount,
            "manual price adjustment approved"
        );
    }
    Ok(())
}

/// How long a manager's approval given on the POS page stays usable for its sale.
pub const GRANT_TTL_MS: u64 = 4 * 3600 * 1000;

/// A manager's approval of one line's adjustment given on the POS page (`g` + grant id): the
/// PIN was checked when it was given, so the page carries only the grant's id, never the PIN.
/// It is good only for the clerk who asked, on the sale (idempotency key) it was given for,
/// for that SKU and that adjustment, for [`GRANT_TTL_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalGrant {
    pub clerk: String,
    pub sale_key: String,
    pub sku: Sku,
    pub price_override: Option<String>,
    pub discount_amount: Option<String>,
    pub discount_percent: Option<u32>,
    pub manager: String,
    pub reason: String,
    pub created_ms: u64,
}

impl Stored for ApprovalGrant {
    const KIND: &'static str = "edge.pos.approval_grant";
    const VERSION: u16 = 1;
}

impl ApprovalGrant {
    pub fn adjustment(&self) -> ManualAdjustmentRequest {
        ManualAdjustmentRequest {
            price_override: self.price_override.clone(),
            manual_discount: (self.discount_amount.is_some() || self.discount_percent.is_some())
                .then(|| ManualDiscountRequest {
                    amount: self.discount_amount.clone(),
                    percent: self.discount_percent,
                }),
        }
    }
}

fn grant_key(id: &str) -> Vec<u8> {
    let mut k = vec![b'g'];
    k.extend_from_slice(id.as_bytes());
    k
}

impl Pos {
    /// A manager approves one line's adjustment on the POS page (PIN checked as in
    /// [`Pos::approve`]): the id of the grant the page carries instead of the PIN.
    pub(crate) fn grant(
        &self,
        who: &super::SignedIn,
        sale_key: &str,
        sku: &Sku,
        adjustment: &ManualAdjustmentRequest,
        approval: &ApprovalRequest,
    ) -> Result<String, PosError> {
        let approved = self.approve(approval)?;
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| PosError::Hash(format!("the random source failed: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let grant = ApprovalGrant {
            clerk: who.id.clone(),
            sale_key: sale_key.to_string(),
            sku: sku.clone(),
            price_override: adjustment.price_override.clone(),
            discount_amount: adjustment
                .manual_discount
                .as_ref()
                .and_then(|d| d.amount.clone()),
            discount_percent: adjustment.manual_discount.as_ref().and_then(|d| d.percent),
            manager: approved.manager,
            reason: approved.reason,
            created_ms: self.now_ms(),
        };
        let key = grant_key(&id);
        self.store.local_change(|_| {
            let mut w = WriteSet::default();
            w.put(T::Pos, key, &grant)?;
            Ok::<_, PosError>((w, ()))
        })?;
        Ok(id)
    }

    /// The grant `id` if it is good for `who` on the sale `sale_key` for `sku`.
    pub(crate) fn grant_for(
        &self,
        who: &super::SignedIn,
        sale_key: &str,
        sku: &Sku,
        id: &str,
    ) -> Result<Option<ApprovalGrant>, PosError> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let grant: Option<ApprovalGrant> = self.store.db().get(T::Pos, &grant_key(id))?;
        let now = self.now_ms();
        Ok(grant.filter(|g| {
            g.clerk == who.id
                && !sale_key.is_empty()
                && g.sale_key == sale_key
                && g.sku == *sku
                && now.saturating_sub(g.created_ms) <= GRANT_TTL_MS
        }))
    }

    /// Checks a manager's approval of manual adjustments: a reason of 3 to 200 characters, a
    /// staff member who is a manager, and their PIN — counted like a sign-in, so wrong PINs
    /// here lock the manager as wrong PINs at sign-in do.
    #[tracing::instrument(skip_all, fields(manager = %a.manager.chars().take(40).collect::<String>()))]
    pub fn approve(&self, a: &ApprovalRequest) -> Result<Approved, PosError> {
        let reason = a.reason.as_deref().map(str::trim).unwrap_or_default();
        let chars = reason.chars().count();
        if !REASON_CHARS.contains(&chars) || reason.chars().any(char::is_control) {
            return Err(PosError::invalid(
                "reason_required",
                format!(
                    "a manual adjustment needs the manager's reason: approval.reason of {} to {} characters without control characters",
                    REASON_CHARS.start(),
                    REASON_CHARS.end()
                ),
            ));
        }
        let member = self
            .member(&a.manager)
            .ok_or_else(|| {
                PosError::Forbidden(format!(
                    "no staff member '{}' at this store: approval.manager must be a manager's staff id",
                    a.manager.chars().take(40).collect::<String>()
                ))
            })?
            .clone();
        if member.role != StaffRole::Manager {
            return Err(PosError::Forbidden(format!(
                "'{}' is not a manager: a price override or manual discount must be approved by a manager with their PIN",
                member.id
            )));
        }
        if !is_pin(&a.pin) {
            return Err(PosError::PinFormat);
        }
        self.check_pin(&member, &a.pin)?;
        tracing::info!(manager = %member.id, "manager approved a manual adjustment");
        Ok(Approved {
            manager: member.id,
            reason: reason.to_string(),
        })
    }

    /// The audit of manual adjustments made at or after `since_ms`, oldest first (at most
    /// [`MAX_AUDIT_LIST`]). For a manager or the node's API token.
    pub fn audit(
        &self,
        by: &Caller,
        since_ms: u64,
    ) -> Result<Vec<ManualAdjustmentRecord>, PosError> {
        if let Caller::Staff(s) = by {
            if s.role != StaffRole::Manager {
                return Err(PosError::Forbidden(
                    "the audit of manual adjustments is for managers: ask a manager to sign in"
                        .into(),
                ));
            }
        }
        let mut start = vec![b'm'];
        // Sale ids are ULIDs, ordered by the time they were made: start a little before.
        start.extend_from_slice(&Ulid::from_parts(since_ms.saturating_sub(60_000), 0).to_bytes());
        let mut out = Vec::new();
        for kv in self.store.db().tree(T::Pos).range(start..) {
            let (key, value) = kv.map_err(StoreError::from)?;
            if key.first() != Some(&b'm') {
                break;
            }
            let entry: ManualAdjustmentRecord =
                protocol::decode(&value).map_err(StoreError::from)?;
            if entry.at_ms >= since_ms {
                out.push(entry);
                if out.len() >= MAX_AUDIT_LIST {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// `GET /api/v1/pos/audit?since=<RFC 3339 time>`: the approved manual adjustments made since
/// then (all without `since`), oldest first; for a manager's session or the node's API token.
pub(crate) async fn audit_route(
    state: actix_web::web::Data<crate::api::ApiState>,
    req: actix_web::HttpRequest,
    query: actix_web::web::Query<AuditQuery>,
) -> Result<actix_web::HttpResponse, crate::api::ApiError> {
    use crate::api::{blocking, rfc3339, ApiError};
    use actix_web::http::StatusCode;
    use actix_web::HttpMessage;
    let by = req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a manager's session token or the node's API token as Authorization: Bearer",
        )
    })?;
    let since_ms = match query.since.as_deref() {
        None => 0,
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_since",
                        "since must be an RFC 3339 time, e.g. 2026-11-27T08:00:00Z",
                    )
                })?
        }
    };
    let pos = state.pos.clone();
    let entries = blocking(move || Ok(pos.audit(&by, since_ms)?)).await?;
    let money = |m: Money| m.to_decimal_string();
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "at": rfc3339(e.at_ms),
                "sale_id": e.sale.to_string(),
                "sale": e.number,
                "till": e.till.as_ref().map(|t| t.till.clone()),
                "rung_by": e.rung_by,
                "approved_by": e.approved_by,
                "reason": e.reason,
                "line": e.line,
                "sku": e.sku,
                "quantity": e.quantity,
                "kind": e.kind(),
                "currency": e.shelf_price.currency.code(),
                "shelf_price": money(e.shelf_price),
                "new_price": e.new_price.map(money),
                "percent": e.percent,
                "discount": money(e.discount),
                "line_total": money(e.line_total),
            })
        })
        .collect();
    Ok(actix_web::HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(
            serde_json::json!({ "adjustments": list, "truncated": list.len() >= MAX_AUDIT_LIST }),
        ))
}

/// The query of `GET /api/v1/pos/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    since: Option<String>,
}
