//! The ERP's promotions and coupons feeds (`protocol::feed::{PromotionRow, CouponRow}`), applied
//! by the importer through [`FeedApplier`]. The ERP is the authority for its own promotions:
//! they arrive approved (authored by `erp`), `active=false` ends them, and the back office may
//! not edit or approve them. A row's `version` orders updates: lower is stale, the same content
//! again is unchanged. A back-office promotion or code with the same id is never overwritten.

use super::audit::{Actor, Change};
use super::coupons::{code_problem, normalize, public_index_key, CouponLimits, CouponRecord};
use super::promotions::{HistoryEntry, PromotionRecord, Stamp, Status};
use super::store::Batch;
use super::{Backoffice, BackofficeError};
use crate::import::{FeedApplier, ImportError, Row, RowError, RowOutcome};
use async_trait::async_trait;
use protocol::feed::FeedKind;
use protocol::promotion::{PromotionId, PromotionSpec};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

impl Backoffice {
    /// The importer's appliers for the promotions and coupons feeds.
    pub fn appliers(self: &Arc<Self>) -> Vec<Arc<dyn FeedApplier>> {
        vec![
            Arc::new(PromotionsFeed(self.clone())),
            Arc::new(CouponsFeed(self.clone())),
        ]
    }
}

fn storage(e: BackofficeError) -> ImportError {
    ImportError::Storage(e.to_string())
}

fn version(row: &Row, errors: &mut Vec<RowError>) -> Option<u64> {
    match row.get("version").parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(row.error("version", "a non-negative integer (the ERP's version)"));
            None
        }
    }
}

fn optional_count(row: &Row, field: &str, errors: &mut Vec<RowError>) -> Option<u64> {
    let text = row.get(field);
    if text.is_empty() {
        return None;
    }
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errors.push(row.error(
                field,
                "a whole number of at least 1, or empty for unlimited",
            ));
            None
        }
    }
}

/// A promotion row, checked.
struct ErpPromotion {
    id: PromotionId,
    name: String,
    description: String,
    spec: PromotionSpec,
    active: bool,
    version: u64,
}

struct PromotionsFeed(Arc<Backoffice>);

impl PromotionsFeed {
    fn parse(&self, row: &Row) -> Result<ErpPromotion, Vec<RowError>> {
        let mut errors = Vec::new();
        let id = PromotionId::parse(row.get("id"))
            .map_err(|e| errors.push(row.error("id", e.to_string())))
            .ok();
        let name = row.get("name").to_string();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(row.error("name", "1 to 200 characters"));
        }
        let description = row.get("description").to_string();
        if description.chars().count() > 2000 {
            errors.push(row.error("description", "at most 2000 characters"));
        }
        let spec = match PromotionSpec::from_json(row.get("definition")) {
            Ok(spec) => match self.0.validate_spec("definition", &spec) {
                Ok(()) => Some(spec),
                Err(fields) => {
                    errors.extend(fields.into_iter().map(|f| {
                        let at = f.field.strip_prefix("definition.").unwrap_or(&f.field);
                        row.error("definition", format!("{at}: {}", f.message))
                    }));
                    None
                }
            },
            Err(e) => {
                errors.push(row.error(
                    "definition",
                    format!("not a promotion definition (JSON): {e}"),
                ));
                None
            }
        };
        let active = match row.get("active") {
            "" | "true" => Some(true),
            "false" => Some(false),
            _ => {
                errors.push(row.error("active", "true or false"));
                None
            }
        };
        let version = version(row, &mut errors);
        match (id, spec, active, version) {
            (Some(id), Some(spec), Some(active), Some(version)) if errors.is_empty() => {
                Ok(ErpPromotion {
                    id,
                    name,
                    description,
                    spec,
                    active,
                    version,
                })
            }
            _ => Err(errors),
        }
    }
}

#[async_trait]
impl FeedApplier for PromotionsFeed {
    fn feed(&self) -> FeedKind {
        FeedKind::Promotions
    }

    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let outcome = match self.parse(&row) {
                Ok(p) => self.0.apply_erp_promotion(&row, p).await.map_err(storage)?,
                Err(errors) => RowOutcome::Rejected(errors),
            };
            out.push(outcome);
        }
        Ok(out)
    }
}

impl Backoffice {
    async fn apply_erp_promotion(
        &self,
        row: &Row,
        p: ErpPromotion,
    ) -> Result<RowOutcome, BackofficeError> {
        let _lock = self.writes.lock().await;
        let before = self.promotion_record(p.id.as_str())?;
        if let Some(b) = &before {
            match b.erp_version {
                None => {
                    return Ok(RowOutcome::Rejected(vec![row.error(
                        "id",
                        format!("{} is a back-office promotion, not the ERP's", p.id),
                    )]))
                }
                Some(v) if p.version < v => return Ok(RowOutcome::Stale),
                Some(v) => {
                    let same = p.version == v
                        && b.name == p.name
                        && b.description == p.description
                        && b.spec == p.spec
                        && b.ended.is_none() == p.active;
                    if same {
                        return Ok(RowOutcome::Unchanged);
                    }
                }
            }
        }
        let now = self.now();
        let erp = Actor::Erp;
        let stamp = Stamp {
            by: erp.id(),
            at: now,
        };
        let mut batch = Batch::new();
        let mut after = match &before {
            Some(b) => b.clone(),
            None => PromotionRecord {
                id: p.id.clone(),
                name: String::new(),
                description: String::new(),
                spec: p.spec.clone(),
                starts_at: None,
                ends_at: None,
                author: erp.id(),
                editors: BTreeSet::from([erp.id()]),
                approved: None,
                ended: None,
                created_at: now,
                updated_at: now,
                created_seq: self.next_promotion_seq(&mut batch)?,
                erp_version: None,
                history: Vec::new(),
            },
        };
        after.name = p.name;
        after.description = p.description;
        after.spec = p.spec;
        after.erp_version = Some(p.version);
        after.updated_at = now;
        if after.approved.is_none() {
            after.approved = Some(stamp.clone());
        }
        after.ended = match (p.active, after.ended.take()) {
            (true, _) => None,
            (false, Some(ended)) => Some(ended),
            (false, None) => Some(stamp),
        };
        let status = after.status_at(now);
        after.history.push(HistoryEntry {
            at: now,
            by: erp.id(),
            action: format!("erp_version_{}", p.version),
            status,
        });
        let action = if before.is_some() {
            "promotion.erp_update"
        } else {
            "promotion.erp_create"
        };
        self.save_promotion(batch, &erp, action, before.as_ref(), &after)
            .await?;
        tracing::info!(promotion = %after.id, version = p.version, active = status != Status::Ended, "ERP promotion applied");
        Ok(RowOutcome::Applied)
    }
}

/// A coupon row, checked.
struct ErpCoupon {
    code: String,
    promotion: PromotionId,
    limits: CouponLimits,
    version: u64,
}

struct CouponsFeed(Arc<Backoffice>);

fn parse_coupon(row: &Row) -> Result<ErpCoupon, Vec<RowError>> {
    let mut errors = Vec::new();
    let code = normalize(row.get("code"));
    if let Some(problem) = code_problem(&code) {
        errors.push(row.error("code", problem));
    }
    let promotion = PromotionId::parse(row.get("promotion"))
        .map_err(|e| errors.push(row.error("promotion", e.to_string())))
        .ok();
    let max_uses = optional_count(row, "max_uses", &mut errors);
    let max_uses_per_customer = optional_count(row, "max_uses_per_customer", &mut errors);
    let expires_at = match row.get("expires_at") {
        "" => None,
        text => OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| {
                errors.push(row.error(
                    "expires_at",
                    "an RFC 3339 time such as 2026-12-31T23:59:59Z",
                ))
            })
            .ok(),
    };
    let version = version(row, &mut errors);
    match (promotion, version) {
        (Some(promotion), Some(version)) if errors.is_empty() => Ok(ErpCoupon {
            code,
            promotion,
            limits: CouponLimits {
                max_uses,
                max_uses_per_customer,
                expires_at,
            },
            version,
        }),
        _ => Err(errors),
    }
}

#[async_trait]
impl FeedApplier for CouponsFeed {
    fn feed(&self) -> FeedKind {
        FeedKind::Coupons
    }

    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let outcome = match parse_coupon(&row) {
                Ok(c) => self.0.apply_erp_coupon(&row, c).await.map_err(storage)?,
                Err(errors) => RowOutcome::Rejected(errors),
            };
            out.push(outcome);
        }
        Ok(out)
    }
}

impl Backoffice {
    async fn apply_erp_coupon(
        &self,
        row: &Row,
        c: ErpCoupon,
    ) -> Result<RowOutcome, BackofficeError> {
        let _lock = self.writes.lock().await;
        if self.promotion_record(c.promotion.as_str())?.is_none() {
            return Ok(RowOutcome::Rejected(vec![row.error(
                "promotion",
                format!("unknown promotion {}", c.promotion),
            )]));
        }
        let before = self.stored_coupon(&c.code)?;
        if let Some(b) = &before {
            match b.erp_version {
                None => {
                    return Ok(RowOutcome::Rejected(vec![row.error(
                        "code",
                        format!("{} is a back-office code, not the ERP's", c.code),
                    )]))
                }
                Some(v) if c.version < v => return Ok(RowOutcome::Stale),
                Some(v) => {
                    if c.version == v && b.promotion == c.promotion && b.limits == c.limits {
                        return Ok(RowOutcome::Unchanged);
                    }
                }
            }
        }
        let erp = Actor::Erp;
        let after = CouponRecord {
            code: c.code.clone(),
            promotion: c.promotion.clone(),
            limits: c.limits,
            batch: None,
            uses: before.as_ref().map_or(0, |b| b.uses),
            created_at: before.as_ref().map_or_else(|| self.now(), |b| b.created_at),
            created_by: erp.id(),
            erp_version: Some(c.version),
        };
        let mut batch = Batch::new();
        if let Some(b) = before.as_ref().filter(|b| b.promotion != after.promotion) {
            batch.delete(public_index_key(&b.promotion, &b.code));
        }
        self.stage_coupon(&mut batch, &after)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor: &erp,
                action: if before.is_some() {
                    "coupon.erp_update"
                } else {
                    "coupon.erp_create"
                },
                subject: format!("coupon/{}", after.code),
                before: before.as_ref(),
                after: Some(&after),
            },
        )?;
        self.commit(batch).await?;
        Ok(RowOutcome::Applied)
    }
}
