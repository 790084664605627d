//! The promotion lifecycle: draft → approved → scheduled/active → ended, with the author (and
//! anyone who edited the draft) unable to approve it. Time moves a promotion too: an approved one
//! is `scheduled` before its `starts_at`, `active` within its window and `ended` from its
//! `ends_at` — the status is computed from the stored facts and the clock, never stored.
//!
//! The live set (approved and within its window) is published to an `ArcSwap` that pricing
//! reads, with a version bumped on every change; it follows the clock exactly (a read past the
//! next boundary republishes) and a timer republishes even when nobody reads.

use super::audit::{Actor, Change};
use super::store::{self, key, Batch};
use super::{Backoffice, BackofficeError};
use crate::storage::Result;
use protocol::promotion::{Promotion, PromotionId, PromotionSet, PromotionSpec};
use protocol::{FieldError, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::OffsetDateTime;

/// Where a promotion is in its lifecycle, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Scheduled,
    Active,
    Ended,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "draft" => Some(Status::Draft),
            "scheduled" => Some(Status::Scheduled),
            "active" => Some(Status::Active),
            "ended" => Some(Status::Ended),
            _ => None,
        }
    }
}

/// Who did something, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One step of a promotion's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A user id, `admin-token`, `erp`, or `clock` for a move by time.
    pub by: String,
    /// `created`, `edited`, `approved`, `started`, `ended`, `erp_updated`.
    pub action: String,
    pub status: Status,
}

/// A stored promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRecord {
    pub id: PromotionId,
    pub name: String,
    pub description: String,
    pub spec: PromotionSpec,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// Who created it (a user id, or `erp`).
    pub author: String,
    /// The author and everyone who edited it: none of them may approve it.
    pub editors: BTreeSet<String>,
    pub approved: Option<Stamp>,
    pub ended: Option<Stamp>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Creation order (lower is older): the engine's tie-breaker.
    pub created_seq: u64,
    /// The ERP's version, for promotions from its feed (the ERP is their authority).
    pub erp_version: Option<u64>,
    pub history: Vec<HistoryEntry>,
}

impl Stored for PromotionRecord {
    const KIND: &'static str = "bo_promotion";
    const VERSION: u16 = 1;
}

impl PromotionRecord {
    /// The status at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> Status {
        if self.ended.is_some() {
            return Status::Ended;
        }
        if self.approved.is_none() {
            return Status::Draft;
        }
        if self.ends_at.is_some_and(|e| e <= now) {
            Status::Ended
        } else if self.starts_at.is_some_and(|s| s > now) {
            Status::Scheduled
        } else {
            Status::Active
        }
    }

    /// The stored history plus the moves made by the clock up to `now`.
    pub fn history_at(&self, now: OffsetDateTime) -> Vec<HistoryEntry> {
        let mut out = self.history.clone();
        if let Some(approved) = &self.approved {
            let stopped = self.ended.as_ref().map(|e| e.at);
            let before_stop = |t: OffsetDateTime| t <= now && stopped.is_none_or(|s| t < s);
            if let Some(start) = self.starts_at.filter(|s| *s > approved.at) {
                if before_stop(start) && self.ends_at.is_none_or(|e| start < e) {
                    out.push(HistoryEntry {
                        at: start,
                        by: "clock".into(),
                        action: "started".into(),
                        status: Status::Active,
                    });
                }
            }
            if let Some(end) = self.ends_at.filter(|e| *e > approved.at) {
                if before_stop(end) {
                    out.push(HistoryEntry {
                        at: end,
                        by: "clock".into(),
                        action: "ended".into(),
                        status: Status::Ended,
                    });
                }
            }
        }
        out.sort_by_key(|h| h.at);
        out
    }

    /// The promotion as the engine runs it. Its window travels inside it as a condition, so
    /// a store that is offline when the promotion ends stops applying it on time too.
    fn engine_view(&self) -> Promotion {
        let mut spec = self.spec.clone();
        if self.starts_at.is_some() || self.ends_at.is_some() {
            spec.conditions
                .push(protocol::promotion::Condition::Window {
                    from: self.starts_at,
                    until: self.ends_at,
                    weekdays: Vec::new(),
                    from_minute: None,
                    until_minute: None,
                });
        }
        Promotion {
            id: self.id.clone(),
            name: self.name.clone(),
            spec,
            created_seq: self.created_seq,
        }
    }

    /// Whether it may be live now or later (approved, not ended by hand).
    fn candidate(&self) -> bool {
        self.approved.is_some() && self.ended.is_none()
    }
}

/// A promotion as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionView {
    pub id: PromotionId,
    pub name: String,
    pub description: String,
    pub spec: PromotionSpec,
    pub status: Status,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    pub author: String,
    pub approved: Option<Stamp>,
    pub ended: Option<Stamp>,
    /// `backoffice` or `erp`.
    pub source: &'static str,
    pub erp_version: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
}

impl PromotionView {
    pub fn of(p: &PromotionRecord, now: OffsetDateTime, with_history: bool) -> PromotionView {
        PromotionView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            spec: p.spec.clone(),
            status: p.status_at(now),
            starts_at: p.starts_at,
            ends_at: p.ends_at,
            author: p.author.clone(),
            approved: p.approved.clone(),
            ended: p.ended.clone(),
            source: if p.erp_version.is_some() {
                "erp"
            } else {
                "backoffice"
            },
            erp_version: p.erp_version,
            created_at: p.created_at,
            updated_at: p.updated_at,
            history: with_history.then(|| p.history_at(now)),
        }
    }
}

/// Body of `POST /api/v1/backoffice/promotions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPromotion {
    #[serde(alias = "code")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The engine's `PromotionSpec` JSON, read here so its errors name the field.
    pub spec: serde_json::Value,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
}

/// Body of `PATCH /api/v1/backoffice/promotions/{id}` (drafts only): what to change. A window
/// bound set to `null` is removed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub spec: Option<serde_json::Value>,
    #[serde(default, with = "patch_time")]
    pub starts_at: Option<Option<OffsetDateTime>>,
    #[serde(default, with = "patch_time")]
    pub ends_at: Option<Option<OffsetDateTime>>,
}

/// A patch field that tells "absent" (`None`) from `null` (`Some(None)`).
mod patch_time {
    use serde::{Deserialize, Deserializer};
    use time::OffsetDateTime;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "time::serde::rfc3339::option")] Option<OffsetDateTime>);
        Wrap::deserialize(d).map(|w| Some(w.0))
    }
}

/// What pricing reads: the promotions live now, the version of this set, and when it changes
/// next by the clock alone.
#[derive(Debug, Clone)]
pub struct LiveSet {
    pub version: u64,
    /// The engine's indexed set, for pricing.
    pub set: Arc<PromotionSet>,
    /// The same promotions, oldest first (e.g. for the edge nodes' catalog frames).
    pub promotions: Arc<Vec<Promotion>>,
    pub next_change: Option<OffsetDateTime>,
}

impl LiveSet {
    pub(crate) fn empty() -> LiveSet {
        LiveSet {
            version: 0,
            set: Arc::new(PromotionSet::default()),
            promotions: Arc::new(Vec::new()),
            next_change: None,
        }
    }
}

fn promotion_key(id: &PromotionId) -> Vec<u8> {
    key("promo", &[id.as_str().as_bytes()])
}

const SEQ_KEY: &[u8] = b"meta/promoseq";

fn check_text(
    field: &str,
    value: &str,
    required: bool,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> String {
    let value = value.trim().to_string();
    let n = value.chars().count();
    if (required && n == 0) || n > max {
        let min = usize::from(required);
        errors.push(FieldError::new(field, format!("{min} to {max} characters")));
    }
    value
}

fn check_window(
    starts_at: Option<OffsetDateTime>,
    ends_at: Option<OffsetDateTime>,
    errors: &mut Vec<FieldError>,
) {
    if let (Some(s), Some(e)) = (starts_at, ends_at) {
        if e <= s {
            errors.push(FieldError::new("ends_at", "a time after starts_at"));
        }
    }
}

/// The live promotions at `now` among the candidates, oldest first, and the next time the set
/// changes by the clock.
fn live_at(
    candidates: &[Arc<PromotionRecord>],
    now: OffsetDateTime,
) -> (Vec<Promotion>, Option<OffsetDateTime>) {
    let mut live: Vec<&PromotionRecord> = candidates
        .iter()
        .filter(|p| p.status_at(now) == Status::Active)
        .map(Arc::as_ref)
        .collect();
    live.sort_by_key(|p| p.created_seq);
    let next = candidates
        .iter()
        .flat_map(|p| [p.starts_at, p.ends_at])
        .flatten()
        .filter(|t| *t > now)
        .min();
    (
        live.into_iter().map(PromotionRecord::engine_view).collect(),
        next,
    )
}

impl Backoffice {
    /// Reads and checks a spec: it parses as the engine's `PromotionSpec` and passes the
    /// engine's validation against the current catalog.
    pub(crate) fn check_spec(
        &self,
        field: &str,
        json: serde_json::Value,
    ) -> std::result::Result<PromotionSpec, Vec<FieldError>> {
        let spec: PromotionSpec = serde_json::from_value(json).map_err(|e| {
            vec![FieldError::new(
                field,
                format!("not a promotion definition: {e}"),
            )]
        })?;
        self.validate_spec(field, &spec)?;
        Ok(spec)
    }

    pub(crate) fn validate_spec(
        &self,
        field: &str,
        spec: &PromotionSpec,
    ) -> std::result::Result<(), Vec<FieldError>> {
        let catalog = self.catalog.load();
        let price = |sku: &protocol::Sku| {
            catalog
                .product_by_sku(sku)
                .and_then(|p| p.variant(sku))
                .map(|v| v.price)
        };
        protocol::promotion::validate(spec, price).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| FieldError::new(&format!("{field}.{}", e.field), e.reason))
                .collect()
        })
    }

    pub(crate) fn promotion_record(&self, id: &str) -> Result<Option<PromotionRecord>> {
        let Ok(id) = PromotionId::parse(id) else {
            return Ok(None);
        };
        store::get(self.store.as_ref(), &promotion_key(&id))
    }

    fn existing(&self, id: &str) -> std::result::Result<PromotionRecord, BackofficeError> {
        self.promotion_record(id)?
            .ok_or_else(|| BackofficeError::NotFound(format!("promotion {id}")))
    }

    /// Who wrote or edited a promotion (none of them may approve it).
    pub fn promotion_editors(
        &self,
        id: &str,
    ) -> std::result::Result<BTreeSet<String>, BackofficeError> {
        Ok(self.existing(id)?.editors)
    }

    /// The next creation sequence, staged in `batch` (call with the write lock held).
    pub(crate) fn next_promotion_seq(&self, batch: &mut Batch) -> Result<u64> {
        let seq = self.store.get(SEQ_KEY)?.map_or(0, |v| store::read_u64(&v)) + 1;
        batch.put_raw(SEQ_KEY.to_vec(), seq.to_be_bytes().to_vec());
        Ok(seq)
    }

    /// Stages a promotion, its audit entry, and commits; then republishes the live set.
    pub(crate) async fn save_promotion(
        &self,
        mut batch: Batch,
        actor: &Actor,
        action: &str,
        before: Option<&PromotionRecord>,
        after: &PromotionRecord,
    ) -> Result<()> {
        batch.put(promotion_key(&after.id), after)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action,
                subject: format!("promotion/{}", after.id),
                before,
                after: Some(after),
            },
        )?;
        self.commit(batch).await?;
        self.update_candidate(after);
        self.announce(crate::cluster::notify::Topic::Promotions);
        self.refresh();
        Ok(())
    }

    /// Creates a draft (the caller checked the role).
    pub async fn create_promotion(
        &self,
        actor: &Actor,
        new: NewPromotion,
    ) -> std::result::Result<PromotionView, BackofficeError> {
        let mut errors = Vec::new();
        let id = PromotionId::parse(new.id.trim())
            .map_err(|e| errors.push(FieldError::new("id", e.to_string())))
            .ok();
        let name = check_text("name", &new.name, true, 200, &mut errors);
        let description = check_text("description", &new.description, false, 2000, &mut errors);
        check_window(new.starts_at, new.ends_at, &mut errors);
        let spec = self
            .check_spec("spec", new.spec)
            .map_err(|e| errors.extend(e))
            .ok();
        let (Some(id), Some(spec), true) = (id, spec, errors.is_empty()) else {
            return Err(BackofficeError::Invalid(errors));
        };
        let _lock = self.writes.lock().await;
        if store::get::<PromotionRecord>(self.store.as_ref(), &promotion_key(&id))?.is_some() {
            return Err(BackofficeError::Conflict {
                code: "promotion_exists",
                message: format!("a promotion with id {id} exists"),
            });
        }
        let now = self.now();
        let mut batch = Batch::new();
        let record = PromotionRecord {
            id,
            name,
            description,
            spec,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            author: actor.id(),
            editors: BTreeSet::from([actor.id()]),
            approved: None,
            ended: None,
            created_at: now,
            updated_at: now,
            created_seq: self.next_promotion_seq(&mut batch)?,
            erp_version: None,
            history: vec![HistoryEntry {
                at: now,
                by: actor.id(),
                action: "created".into(),
                status: Status::Draft,
            }],
        };
        self.save_promotion(batch, actor, "promotion.create", None, &record)
            .await?;
        tracing::info!(promotion = %record.id, by = %actor.id(), "promotion drafted");
        Ok(PromotionView::of(&record, now, true))
    }

    /// Edits a draft; the editor joins those who may not approve it.
    pub async fn edit_promotion(
        &self,
        actor: &Actor,
        id: &str,
        patch: PromotionPatch,
    ) -> std::result::Result<PromotionView, BackofficeError> {
        let _lock = self.writes.lock().await;
        let before = self.existing(id)?;
        let now = self.now();
        if before.erp_version.is_some() {
            return Err(erp_managed(id));
        }
        if before.status_at(now) != Status::Draft {
            return Err(BackofficeError::Conflict {
                code: "not_draft",
                message: format!(
                    "promotion {id} is {}: only a draft can be edited",
                    status_name(before.status_at(now))
                ),
            });
        }
        let mut errors = Vec::new();
        let mut after = before.clone();
        if let Some(name) = &patch.name {
            after.name = check_text("name", name, true, 200, &mut errors);
        }
        if let Some(description) = &patch.description {
            after.description = check_text("description", description, false, 2000, &mut errors);
        }
        if let Some(starts_at) = patch.starts_at {
            after.starts_at = starts_at;
        }
        if let Some(ends_at) = patch.ends_at {
            after.ends_at = ends_at;
        }
        check_window(after.starts_at, after.ends_at, &mut errors);
        if let Some(spec) = patch.spec {
            match self.check_spec("spec", spec) {
                Ok(spec) => after.spec = spec,
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(BackofficeError::Invalid(errors));
        }
        if after == before {
            return Ok(PromotionView::of(&before, now, true));
        }
        after.editors.insert(actor.id());
        after.updated_at = now;
        after.history.push(HistoryEntry {
            at: now,
            by: actor.id(),
            action: "edited".into(),
            status: Status::Draft,
        });
        self.save_promotion(Batch::new(), actor, "promotion.edit", Some(&before), &after)
            .await?;
        Ok(PromotionView::of(&after, now, true))
    }

    /// One step of a promotion's lifecycle, under the write lock: loads the promotion, lets
    /// `check` refuse the step (with the record and now), lets `stamp` change a copy (given the
    /// actor's stamp), adds `step` to its history and saves it with the audit `action`. Answers
    /// the saved record and now.
    async fn step_promotion(
        &self,
        actor: &Actor,
        id: &str,
        (step, action): (&str, &str),
        check: impl FnOnce(&PromotionRecord, OffsetDateTime) -> std::result::Result<(), BackofficeError>,
        stamp: impl FnOnce(&mut PromotionRecord, Stamp),
    ) -> std::result::Result<(PromotionRecord, OffsetDateTime), BackofficeError> {
        let _lock = self.writes.lock().await;
        let before = self.existing(id)?;
        let now = self.now();
        check(&before, now)?;
        let mut after = before.clone();
        stamp(
            &mut after,
            Stamp {
                by: actor.id(),
                at: now,
            },
        );
        after.updated_at = now;
        let status = after.status_at(now);
        after.history.push(HistoryEntry {
            at: now,
            by: actor.id(),
            action: step.into(),
            status,
        });
        self.save_promotion(Batch::new(), actor, action, Some(&before), &after)
            .await?;
        Ok((after, now))
    }

    /// Approves a draft: it becomes scheduled or active. Nobody who wrote it may approve it,
    /// and its definition is checked again against today's catalog.
    pub async fn approve_promotion(
        &self,
        actor: &Actor,
        id: &str,
    ) -> std::result::Result<PromotionView, BackofficeError> {
        let check = |before: &PromotionRecord, now| {
            if before.erp_version.is_some() {
                return Err(erp_managed(id));
            }
            if before.editors.contains(&actor.id()) {
                return Err(BackofficeError::Forbidden {
                    code: "own_promotion",
                    message: "you cannot approve your own promotion".into(),
                });
            }
            let status = before.status_at(now);
            if status != Status::Draft {
                return Err(BackofficeError::Conflict {
                    code: "not_draft",
                    message: format!(
                        "promotion {id} is {}: only a draft can be approved",
                        status_name(status)
                    ),
                });
            }
            if before.ends_at.is_some_and(|e| e <= now) {
                return Err(BackofficeError::Conflict {
                    code: "window_passed",
                    message: format!("promotion {id} ends before now: move ends_at first"),
                });
            }
            self.validate_spec("spec", &before.spec)
                .map_err(BackofficeError::Invalid)
        };
        let (after, now) = self
            .step_promotion(
                actor,
                id,
                ("approved", "promotion.approve"),
                check,
                |after, stamp| after.approved = Some(stamp),
            )
            .await?;
        let status = after.status_at(now);
        tracing::info!(promotion = %id, by = %actor.id(), status = status_name(status), "promotion approved");
        Ok(PromotionView::of(&after, now, true))
    }

    /// Ends a promotion now (a draft is thereby withdrawn).
    pub async fn end_promotion(
        &self,
        actor: &Actor,
        id: &str,
    ) -> std::result::Result<PromotionView, BackofficeError> {
        let check = |before: &PromotionRecord, now| {
            if before.status_at(now) == Status::Ended {
                return Err(BackofficeError::Conflict {
                    code: "already_ended",
                    message: format!("promotion {id} has ended already"),
                });
            }
            Ok(())
        };
        let (after, now) = self
            .step_promotion(
                actor,
                id,
                ("ended", "promotion.end"),
                check,
                |after, stamp| after.ended = Some(stamp),
            )
            .await?;
        tracing::info!(promotion = %id, by = %actor.id(), "promotion ended");
        Ok(PromotionView::of(&after, now, true))
    }

    /// One promotion with its history.
    pub fn promotion(&self, id: &str) -> std::result::Result<PromotionView, BackofficeError> {
        Ok(PromotionView::of(&self.existing(id)?, self.now(), true))
    }

    /// Every promotion (with `status`, those in it now), oldest first.
    pub fn promotions(&self, status: Option<Status>) -> Result<Vec<PromotionView>> {
        let now = self.now();
        let mut all = store::scan_all::<PromotionRecord>(self.store.as_ref(), b"promo/")?;
        all.sort_by_key(|p| p.created_seq);
        Ok(all
            .iter()
            .filter(|p| status.is_none_or(|s| p.status_at(now) == s))
            .map(|p| PromotionView::of(p, now, false))
            .collect())
    }

    /// Reads the promotions that may be live now or later from the store.
    pub(crate) fn reload_candidates(&self) -> Result<()> {
        let candidates: Vec<Arc<PromotionRecord>> =
            store::scan_all::<PromotionRecord>(self.store.as_ref(), b"promo/")?
                .into_iter()
                .filter(PromotionRecord::candidate)
                .map(Arc::new)
                .collect();
        self.candidates.store(Arc::new(candidates));
        Ok(())
    }

    /// Puts a promotion just written in the candidates, or takes it out.
    fn update_candidate(&self, record: &PromotionRecord) {
        let mut candidates: Vec<Arc<PromotionRecord>> = self
            .candidates
            .load()
            .iter()
            .filter(|p| p.id != record.id)
            .cloned()
            .collect();
        if record.candidate() {
            candidates.push(Arc::new(record.clone()));
        }
        self.candidates.store(Arc::new(candidates));
    }

    /// Republishes the live set at the clock's now; bumps the version when it changed. Runs
    /// after every change of a promotion; the clock's moves are picked up by
    /// [`Backoffice::refresh_if_due`].
    pub fn refresh(&self) {
        let Ok(_publishing) = self.publishing.lock() else {
            return;
        };
        let now = self.now();
        let (promotions, next_change) = live_at(&self.candidates.load(), now);
        let current = self.published.load();
        let next = if *current.promotions == promotions {
            LiveSet {
                next_change,
                ..LiveSet::clone(&current)
            }
        } else {
            let version = next_version(current.version);
            tracing::info!(
                version,
                live = promotions.len(),
                "live promotions published"
            );
            LiveSet {
                version,
                set: Arc::new(PromotionSet::new(promotions.clone())),
                promotions: Arc::new(promotions),
                next_change,
            }
        };
        self.published.store(Arc::new(next));
    }

    /// Republishes when the clock has reached the next start or end of a window.
    pub fn refresh_if_due(&self) {
        let due = self
            .published
            .load()
            .next_change
            .is_some_and(|t| t <= self.now());
        if due {
            self.refresh();
        }
    }

    /// The promotions live now (approved and within their window), as the engine's set: what
    /// pricing applies.
    pub fn live(&self) -> Arc<PromotionSet> {
        self.refresh_if_due();
        self.published.load().set.clone()
    }

    /// The promotions live now, oldest first.
    pub fn live_promotions(&self) -> Arc<Vec<Promotion>> {
        self.refresh_if_due();
        self.published.load().promotions.clone()
    }

    /// The version of the live set (grows with every change of it).
    pub fn live_version(&self) -> u64 {
        self.refresh_if_due();
        self.published.load().version
    }

    /// The published live set, for readers that keep the `ArcSwap` (it follows the clock
    /// within the refresh period; [`Backoffice::live`] follows it exactly).
    pub fn published(&self) -> Arc<arc_swap::ArcSwap<LiveSet>> {
        self.published.clone()
    }
}

/// A version above `previous`: the wall clock in microseconds when that is higher, so versions
/// keep growing across restarts without being stored.
fn next_version(previous: u64) -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    micros.max(previous.saturating_add(1))
}

fn erp_managed(id: &str) -> BackofficeError {
    BackofficeError::Conflict {
        code: "erp_managed",
        message: format!("promotion {id} comes from the ERP: change it there"),
    }
}

pub(crate) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Draft => "draft",
        Status::Scheduled => "scheduled",
        Status::Active => "active",
        Status::Ended => "ended",
    }
}
