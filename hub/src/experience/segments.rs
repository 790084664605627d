//! Segments on the hub.
//!
//! **Definitions** (key, name, rule) are business records: they live in the back-office tree
//! under `segment/<key>`, each change committed with its audit entry
//! ([`crate::backoffice::Backoffice::commit_audited`]). After a change the routes hand the
//! whole list to the analyst ([`super::analyst::SyncSegments`]); at start the analyst is given
//! it too, so a crash between the two only delays evaluation.
//!
//! **Evaluation** belongs to the analyst, the single writer of profiles: [`SegmentEngine`]
//! keeps each segment's [`SegmentState`] (the rule version evaluated, the backfill cursor over
//! existing profiles, the member count), and stages, in the analyst's own atomic writes, the
//! per-segment member index (`member/<segment><subject>` → entered at) and the due-time index
//! (`due/<time><subject>`: when time alone could change a profile's memberships). The analyst
//! re-evaluates a profile when a batch changes it, when its due time passes, and while a new
//! or changed segment is backfilled or a deleted one's members are let go, in bounded batches.

use super::store::{ExperienceStore, Write};
use crate::backoffice::audit::{Actor, Audited};
use crate::backoffice::store::{get, key, scan_all, BackofficeStore, Batch};
use crate::backoffice::Backoffice;
use crate::storage::{Result, StorageError};
use protocol::experience::segments::{parse, LiveSegment, ParseError, Reconciled, Rule};
use protocol::experience::Profile;
use protocol::{Stored, Subject};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use ulid::Ulid;

/// Profiles evaluated per backfill step, members let go per step of a deletion, due profiles
/// per sweep step: bounded, so feed batches and reads interleave.
pub const STEP: usize = 512;

/// A segment as a marketer defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDefinition {
    /// Stable across rule changes; a segment created again with a deleted one's key gets a
    /// new id.
    pub id: Ulid,
    pub key: String,
    pub name: String,
    /// The rule as written.
    pub rule_text: String,
    pub rule: Rule,
    /// Bumped by every rule change (a changed rule is evaluated over every profile again).
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Stored for SegmentDefinition {
    const KIND: &'static str = "segment";
    const VERSION: u16 = 1;
}

impl SegmentDefinition {
    /// The JSON the API shows and the audit list keeps.
    pub fn view(&self) -> serde_json::Value {
        json!({
            "id": self.id.to_string(),
            "key": self.key,
            "name": self.name,
            "rule": self.rule_text,
            "canonical": self.rule.to_string(),
            "ast": self.rule,
            "version": self.version,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }

    fn live(&self) -> LiveSegment {
        LiveSegment {
            id: self.id.to_string(),
            key: self.key.clone(),
            rule: self.rule.clone(),
        }
    }
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why a segment change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// 422 `invalid_rule` with the position.
    #[error("rule: {0}")]
    Rule(ParseError),
    /// 422 `invalid_field`.
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// 409: the key is taken.
    #[error("a segment with key {0:?} exists")]
    Duplicate(String),
    /// 404.
    #[error("segment {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A new segment, as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    pub key: String,
    pub name: String,
    pub rule: String,
}

/// A change to a segment: its name, its rule, or both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentPatch {
    pub name: Option<String>,
    pub rule: Option<String>,
}

fn record_key(segment_key: &str) -> Vec<u8> {
    key("segment", &[segment_key.as_bytes()])
}

/// Checks a key: lower-case letters, digits and `-`, 1 to 64, starting with a letter or digit.
pub fn check_key(k: &str) -> std::result::Result<(), SegmentError> {
    let ok = (1..=64).contains(&k.len())
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SegmentError::Field {
            field: "key",
            message: format!(
                "{k:?}: 1 to 64 lower-case letters, digits and '-', starting with a letter or digit"
            ),
        })
    }
}

fn check_name(name: &str) -> std::result::Result<String, SegmentError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(SegmentError::Field {
            field: "name",
            message: "1 to 100 characters".into(),
        });
    }
    Ok(name.to_string())
}

/// Every segment definition, by key.
pub fn definitions(bo: &Backoffice) -> Result<Vec<SegmentDefinition>> {
    scan_all(bo.records(), b"segment/")
}

/// One segment definition.
pub fn definition(bo: &Backoffice, segment_key: &str) -> Result<Option<SegmentDefinition>> {
    get(bo.records(), &record_key(segment_key))
}

fn put(batch: &mut Batch, def: &SegmentDefinition) -> Result<()> {
    batch.put(record_key(&def.key), def)
}

/// Creates a segment (the caller checked the role).
pub async fn create(
    bo: &Backoffice,
    actor: &Actor,
    new: NewSegment,
    now: OffsetDateTime,
) -> std::result::Result<SegmentDefinition, SegmentError> {
    check_key(&new.key)?;
    let name = check_name(&new.name)?;
    let rule = parse(&new.rule).map_err(SegmentError::Rule)?;
    bo.commit_audited(actor, |store: &dyn BackofficeStore, batch: &mut Batch| {
        if get::<SegmentDefinition>(store, &record_key(&new.key))?.is_some() {
            return Err(SegmentError::Duplicate(new.key.clone()));
        }
        let def = SegmentDefinition {
            id: Ulid::new(),
            key: new.key.clone(),
            name,
            rule_text: new.rule.clone(),
            rule,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        put(batch, &def)?;
        let audited = Audited {
            action: "segment.create",
            subject: format!("segment/{}", def.key),
            before: None,
            after: Some(def.view()),
        };
        Ok((def, audited))
    })
    .await
}

/// Renames a segment and/or changes its rule (a rule change bumps the version, so every
/// profile is evaluated again).
pub async fn update(
    bo: &Backoffice,
    actor: &Actor,
    segment_key: &str,
    patch: SegmentPatch,
    now: OffsetDateTime,
) -> std::result::Result<SegmentDefinition, SegmentError> {
    let name = patch.name.as_deref().map(check_name).transpose()?;
    let rule = match &patch.rule {
        Some(text) => Some((text.clone(), parse(text).map_err(SegmentError::Rule)?)),
        None => None,
    };
    bo.commit_audited(actor, |store: &dyn BackofficeStore, batch: &mut Batch| {
        let before = get::<SegmentDefinition>(store, &record_key(segment_key))?
            .ok_or_else(|| SegmentError::NotFound(segment_key.to_string()))?;
        let mut after = before.clone();
        if let Some(name) = name {
            after.name = name;
        }
        if let Some((text, rule)) = rule {
            if rule != before.rule {
                after.version += 1;
            }
            after.rule_text = text;
            after.rule = rule;
        }
        after.updated_at = now;
        put(batch, &after)?;
        let audited = Audited {
            action: "segment.update",
            subject: format!("segment/{}", after.key),
            before: Some(before.view()),
            after: Some(after.view()),
        };
        Ok((after, audited))
    })
    .await
}

/// Deletes a segment (its members are let go in the background).
pub async fn delete(
    bo: &Backoffice,
    actor: &Actor,
    segment_key: &str,
) -> std::result::Result<SegmentDefinition, SegmentError> {
    bo.commit_audited(actor, |store: &dyn BackofficeStore, batch: &mut Batch| {
        let before = get::<SegmentDefinition>(store, &record_key(segment_key))?
            .ok_or_else(|| SegmentError::NotFound(segment_key.to_string()))?;
        batch.delete(record_key(segment_key));
        let audited = Audited {
            action: "segment.delete",
            subject: format!("segment/{segment_key}"),
            before: Some(before.view()),
            after: None,
        };
        Ok((before, audited))
    })
    .await
}

/// A segment's evaluation, kept by the analyst beside the profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    pub id: Ulid,
    pub key: String,
    /// The definition version being (or last) evaluated.
    pub version: u64,
    /// While existing profiles are being evaluated: the last one done (subject bytes; empty
    /// before the first).
    pub backfill: Option<Vec<u8>>,
    /// Profiles evaluated by the current backfill.
    pub evaluated: u64,
    pub members: u64,
    /// The definition was deleted: its members are being let go.
    pub dropping: bool,
}

impl Stored for SegmentState {
    const KIND: &'static str = "segment_state";
    const VERSION: u16 = 1;
}

/// A segment's evaluation status, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentStatus {
    /// `evaluating` (existing profiles are being evaluated), `ready`, or `deleting`.
    pub state: &'static str,
    pub members: u64,
    /// Profiles evaluated so far while `evaluating`.
    pub evaluated: u64,
    pub version: u64,
}

/// The analyst's segment evaluation: live rules, their states, and the index changes staged
/// for the next write.
#[derive(Default)]
pub struct SegmentEngine {
    definitions: Vec<SegmentDefinition>,
    live: Vec<LiveSegment>,
    states: BTreeMap<String, SegmentState>,
    dirty: Vec<Ulid>,
    members: Vec<(Ulid, Subject, Option<OffsetDateTime>)>,
    dues: Vec<(OffsetDateTime, Subject, bool)>,
}

/// What one maintenance step found to evaluate.
pub enum Work {
    /// Nothing to do.
    Idle,
    /// Evaluate these subjects (those without a stored profile only lose their index entries).
    Evaluate(Vec<Subject>),
}

impl SegmentEngine {
    /// Loads the stored states and reconciles them with the definitions.
    pub fn load(store: &ExperienceStore, definitions: Vec<SegmentDefinition>) -> Result<Self> {
        let mut engine = SegmentEngine::default();
        for s in store.segment_states()? {
            engine.states.insert(s.id.to_string(), s);
        }
        engine.sync(definitions);
        Ok(engine)
    }

    /// The definitions last given.
    pub fn definitions(&self) -> Vec<SegmentDefinition> {
        self.definitions.clone()
    }

    /// Takes a new list of definitions: a new segment or a changed rule starts a backfill, a
    /// missing one starts letting its members go.
    pub fn sync(&mut self, definitions: Vec<SegmentDefinition>) {
        let mut seen = Vec::new();
        for d in &definitions {
            let id = d.id.to_string();
            seen.push(id.clone());
            let fresh = SegmentState {
                id: d.id,
                key: d.key.clone(),
                version: d.version,
                backfill: Some(Vec::new()),
                evaluated: 0,
                members: 0,
                dropping: false,
            };
            match self.states.get_mut(&id) {
                Some(s) if s.version == d.version && !s.dropping => {}
                Some(s) => {
                    s.version = d.version;
                    s.backfill = Some(Vec::new());
                    s.evaluated = 0;
                    s.dropping = false;
                    self.dirty.push(d.id);
                }
                None => {
                    self.states.insert(id, fresh);
                    self.dirty.push(d.id);
                }
            }
        }
        for (id, s) in self.states.iter_mut() {
            if !seen.contains(id) && !s.dropping {
                s.dropping = true;
                s.backfill = None;
                self.dirty.push(s.id);
            }
        }
        self.live = definitions.iter().map(SegmentDefinition::live).collect();
        self.definitions = definitions;
    }

    /// Every segment's status, by id.
    pub fn statuses(&self) -> BTreeMap<String, SegmentStatus> {
        self.states
            .iter()
            .map(|(id, s)| {
                let state = if s.dropping {
                    "deleting"
                } else if s.backfill.is_some() {
                    "evaluating"
                } else {
                    "ready"
                };
                let status = SegmentStatus {
                    state,
                    members: s.members,
                    evaluated: s.evaluated,
                    version: s.version,
                };
                (id.clone(), status)
            })
            .collect()
    }

    /// Evaluates every live segment for a profile at `now`, staging the index changes; says
    /// whether the profile changed.
    pub fn reconcile(&mut self, profile: &mut Profile, now: OffsetDateTime) -> bool {
        let out: Reconciled = protocol::experience::segments::reconcile(profile, &self.live, now);
        let subject = profile.subject;
        for id in &out.entered {
            self.count(id, true);
            if let Ok(id) = id.parse::<Ulid>() {
                self.members.push((id, subject, Some(now)));
            }
        }
        for id in &out.left {
            self.count(id, false);
            if let Ok(id) = id.parse::<Ulid>() {
                self.members.push((id, subject, None));
            }
        }
        if out.due != out.previous_due {
            if let Some(old) = out.previous_due {
                self.dues.push((old, subject, false));
            }
            if let Some(new) = out.due {
                self.dues.push((new, subject, true));
            }
        }
        out.changed()
    }

    fn count(&mut self, id: &str, entered: bool) {
        if let Some(s) = self.states.get_mut(id) {
            s.members = if entered {
                s.members + 1
            } else {
                s.members.saturating_sub(1)
            };
            self.dirty.push(s.id);
        }
    }

    /// A profile is gone (joined into a customer's, or erased): its index entries go too.
    pub fn forget(&mut self, profile: &Profile) {
        for id in profile.memberships.keys() {
            self.count(id, false);
            if let Ok(id) = id.parse::<Ulid>() {
                self.members.push((id, profile.subject, None));
            }
        }
        if let Some(due) = profile.segments_due {
            self.dues.push((due, profile.subject, false));
        }
    }

    /// The next bounded step of background work at `now`: profiles whose due time passed,
    /// else a backfill step, else a step of letting a deleted segment's members go.
    pub fn work(&mut self, store: &ExperienceStore, now: OffsetDateTime) -> Result<Work> {
        let due = store.due_until(now, STEP)?;
        if !due.is_empty() {
            // Removed here, whatever the profile says: a stale entry must not come back.
            for (at, subject) in &due {
                self.dues.push((*at, *subject, false));
            }
            return Ok(Work::Evaluate(due.into_iter().map(|(_, s)| s).collect()));
        }
        let backfilling = self
            .states
            .values_mut()
            .find(|s| s.backfill.is_some() && !s.dropping);
        if let Some(s) = backfilling {
            let after = s.backfill.clone().unwrap_or_default();
            let subjects = store.profiles_after(&after, STEP)?;
            s.evaluated += subjects.len() as u64;
            s.backfill = match subjects.last() {
                Some(last) if subjects.len() == STEP => {
                    Some(super::store::subject_bytes(last).to_vec())
                }
                _ => None,
            };
            self.dirty.push(s.id);
            return Ok(Work::Evaluate(subjects));
        }
        let dropping = self.states.values().find(|s| s.dropping).cloned();
        if let Some(s) = dropping {
            let members = store.members(s.id, None, STEP)?;
            if members.is_empty() {
                self.states.remove(&s.id.to_string());
                self.dirty.push(s.id);
                return Ok(Work::Idle);
            }
            for (subject, _) in &members {
                self.members.push((s.id, *subject, None));
            }
            return Ok(Work::Evaluate(
                members.into_iter().map(|(s, _)| s).collect(),
            ));
        }
        Ok(Work::Idle)
    }

    /// Whether nothing is staged.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty() && self.members.is_empty() && self.dues.is_empty()
    }

    /// Stages what changed into the analyst's write.
    pub fn stage(&mut self, write: &mut Write) -> Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort();
        dirty.dedup();
        for id in dirty {
            write.segment_state(id, self.states.get(&id.to_string()))?;
        }
        for (segment, subject, entered) in self.members.drain(..) {
            write.member(segment, &subject, entered);
        }
        for (at, subject, present) in self.dues.drain(..) {
            write.due(at, &subject, present);
        }
        Ok(())
    }
}

/// The demo's segments: (key, name, rule).
pub const DEMO_SEGMENTS: [(&str, &str, &str); 4] = [
    (
        "coffee-lovers",
        "Coffee lovers",
        r#"viewed(category = "coffee") >= 2 within 30d"#,
    ),
    ("high-value", "High value", r#"lifetime_value("EUR") > 100"#),
    (
        "store-visitors",
        "Store visitors",
        "visited_store within 30d",
    ),
    (
        "lapsed",
        "Lapsed customers",
        "orders >= 1 and orders within 60d = 0",
    ),
];

/// Creates the demo segments (as the admin token) if there are no segments yet, and hands
/// them to the analyst.
pub async fn seed_demo(
    bo: &Backoffice,
    experience: &super::Experience,
    now: OffsetDateTime,
) -> std::result::Result<(), SegmentError> {
    if !definitions(bo)?.is_empty() {
        return Ok(());
    }
    for (key, name, rule) in DEMO_SEGMENTS {
        let new = NewSegment {
            key: key.into(),
            name: name.into(),
            rule: rule.into(),
        };
        create(bo, &Actor::AdminToken, new, now).await?;
    }
    experience.sync_segments(definitions(bo)?).await?;
    Ok(())
}
