//! The audit list: who changed what, before and after, when. Append-only: entries are written in
//! the same batch as the change they describe and never rewritten or removed.

use super::store::{key, read_u64, BackofficeStore, Batch};
use super::users::BackOfficeUser;
use super::Backoffice;
use crate::storage::{Result, StorageError};
use protocol::Stored;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A request with the hub's admin token.
    AdminToken,
    /// A back-office user.
    User(BackOfficeUser),
    /// The ERP, through the importer.
    Erp,
    /// An operator with the ops token (the ops page's own sign-in or a bearer).
    OpsToken,
}

impl Actor {
    /// The id recorded as author or approver: a user id, `admin-token` or `erp`.
    pub fn id(&self) -> String {
        match self {
            Actor::AdminToken => "admin-token".into(),
            Actor::User(u) => u.id.to_string(),
            Actor::Erp => "erp".into(),
            Actor::OpsToken => "ops-token".into(),
        }
    }

    fn email(&self) -> Option<String> {
        match self {
            Actor::User(u) => Some(u.email.clone()),
            Actor::AdminToken | Actor::Erp | Actor::OpsToken => None,
        }
    }
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A user id, `admin-token`, `ops-token` or `erp`.
    pub who: String,
    pub who_email: Option<String>,
    /// What was done, e.g. `user.create`, `promotion.approve`.
    pub action: String,
    /// What it was done to, e.g. `user/01J…`, `promotion/SUMMER`.
    pub subject: String,
    /// JSON of the subject before and after (absent when it did not exist); never secrets.
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Stored for AuditEntry {
    const KIND: &'static str = "bo_audit";
    const VERSION: u16 = 1;
}

const SEQ_KEY: &[u8] = b"meta/auditseq";

fn entry_key(seq: u64) -> Vec<u8> {
    key("audit", &[&seq.to_be_bytes()])
}

fn json<T: Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value
        .map(|v| serde_json::to_string(v).map_err(|e| StorageError::Io(e.to_string())))
        .transpose()
}

/// What one change records.
pub struct Change<'a, B: Serialize, A: Serialize> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub subject: String,
    pub before: Option<&'a B>,
    pub after: Option<&'a A>,
}

impl Backoffice {
    /// Adds the audit entry of a change to its batch. Call with the write lock held, once per
    /// batch (the sequence is read from the store).
    pub(crate) fn stage_audit<B: Serialize, A: Serialize>(
        &self,
        batch: &mut Batch,
        change: Change<'_, B, A>,
    ) -> Result<()> {
        let last = self.store.get(SEQ_KEY)?.map_or(0, |v| read_u64(&v));
        let seq = last + 1;
        let entry = AuditEntry {
            seq,
            at: self.now(),
            who: change.actor.id(),
            who_email: change.actor.email(),
            action: change.action.to_string(),
            subject: change.subject,
            before: json(change.before)?,
            after: json(change.after)?,
        };
        batch.put(entry_key(seq), &entry)?;
        batch.put_raw(SEQ_KEY.to_vec(), seq.to_be_bytes().to_vec());
        Ok(())
    }

    /// Audit entries in order, after sequence `after`, at most `limit`.
    pub fn audit(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let after_key = after.map(entry_key);
        self.store
            .scan(b"audit/", after_key.as_deref(), limit)?
            .into_iter()
            .map(|(_, v)| protocol::codec::decode(&v).map_err(StorageError::from))
            .collect()
    }
}

/// What a change made by another module records: the action, what it was done to, and its
/// JSON before and after.
pub struct Audited {
    pub action: &'static str,
    pub subject: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One change of a record another module keeps in the back-office tree (experiments), for
/// [`Backoffice::change_audited`]: what to audit, and the caller's answer.
pub struct AuditedChange<T> {
    /// Returned to the caller once committed.
    pub result: T,
    pub action: &'static str,
    pub subject: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl Backoffice {
    /// Commits a change to records another module keeps in the back-office tree (segments),
    /// with its audit entry, in one batch under the write lock: `stage` reads what it needs
    /// from the store, stages its writes and says what to audit; an error stages nothing.
    pub(crate) async fn commit_audited<T, E: From<StorageError>>(
        &self,
        actor: &Actor,
        stage: impl FnOnce(&dyn BackofficeStore, &mut Batch) -> std::result::Result<(T, Audited), E>,
    ) -> std::result::Result<T, E> {
        let _serialised = self.writes.lock().await;
        let mut batch = Batch::new();
        let (out, audited) = stage(self.store.as_ref(), &mut batch)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action: audited.action,
                subject: audited.subject,
                before: audited.before.as_ref(),
                after: audited.after.as_ref(),
            },
        )?;
        self.commit(batch).await?;
        Ok(out)
    }

    /// [`Backoffice::commit_audited`] for a change that answers an [`AuditedChange`].
    pub(crate) async fn change_audited<T, F>(
        &self,
        actor: &Actor,
        change: F,
    ) -> std::result::Result<T, super::BackofficeError>
    where
        F: FnOnce(
            &dyn BackofficeStore,
            &mut Batch,
        ) -> std::result::Result<AuditedChange<T>, super::BackofficeError>,
    {
        self.commit_audited(actor, |store, batch| {
            let done = change(store, batch)?;
            let audited = Audited {
                action: done.action,
                subject: done.subject,
                before: done.before,
                after: done.after,
            };
            Ok((done.result, audited))
        })
        .await
    }

    /// The back-office tree, for modules that keep records in it (reads only: writes go
    /// through [`Backoffice::commit_audited`]).
    pub(crate) fn records(&self) -> &dyn BackofficeStore {
        self.store.as_ref()
    }
}

/// Which audit entries a page shows. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// A user id, `admin-token` or `erp`, or part of a user's email.
    pub who: Option<String>,
    /// The start of a subject, e.g. `promotion/` or `order/W-1001`.
    pub subject: Option<String>,
    /// Entries on or after this day (UTC).
    pub from: Option<time::Date>,
    /// Entries on or before this day (UTC).
    pub to: Option<time::Date>,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEntry) -> bool {
        let who = self.who.as_deref().map(str::to_lowercase);
        let who_ok = who.as_deref().is_none_or(|w| {
            e.who.to_lowercase() == w
                || e.who_email
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains(w))
        });
        let subject_ok = self
            .subject
            .as_deref()
            .is_none_or(|s| e.subject.starts_with(s));
        let day = e.at.date();
        who_ok
            && subject_ok
            && self.from.is_none_or(|f| day >= f)
            && self.to.is_none_or(|t| day <= t)
    }
}

/// Entries read per step when walking the list backwards.
const AUDIT_CHUNK: u64 = 256;

impl Backoffice {
    /// Records a change made outside the back office's own store (an order refunded by its
    /// actor, a stock count): the entry is written after the change, on its own.
    pub async fn record<B: Serialize, A: Serialize>(&self, change: Change<'_, B, A>) -> Result<()> {
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        self.stage_audit(&mut batch, change)?;
        self.commit(batch).await
    }

    /// Matching entries newest first, older than sequence `before`, at most `limit`; and the
    /// cursor of the next page when there is one.
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<u64>)> {
        let limit = limit.max(1);
        let last = self.store.get(SEQ_KEY)?.map_or(0, |v| read_u64(&v));
        let mut upper = before.unwrap_or(last + 1).min(last + 1);
        let mut out = Vec::new();
        while upper > 1 && out.len() <= limit {
            let lower = upper.saturating_sub(AUDIT_CHUNK).max(1);
            let chunk = self.store.scan(
                b"audit/",
                Some(&entry_key(lower - 1)),
                usize::try_from(upper - lower).unwrap_or(usize::MAX),
            )?;
            for (_, v) in chunk.into_iter().rev() {
                let entry: AuditEntry = protocol::codec::decode(&v)?;
                if filter.matches(&entry) {
                    out.push(entry);
                }
            }
            upper = lower;
        }
        let next = (out.len() > limit).then(|| out[limit - 1].seq);
        out.truncate(limit);
        Ok((out, next))
    }
}
