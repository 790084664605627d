//! The audit list: who changed what, before and after, when. Append-only: entries are written in
//! the same batch as the change they describe and never rewritten or removed.

use super::store::{key, read_u64, Batch};
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
}

impl Actor {
    /// The id recorded as author or approver: a user id, `admin-token` or `erp`.
    pub fn id(&self) -> String {
        match self {
            Actor::AdminToken => "admin-token".into(),
            Actor::User(u) => u.id.to_string(),
            Actor::Erp => "erp".into(),
        }
    }

    fn email(&self) -> Option<String> {
        match self {
            Actor::User(u) => Some(u.email.clone()),
            Actor::AdminToken | Actor::Erp => None,
        }
    }
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A user id, `admin-token` or `erp`.
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

/// One change of a record another module keeps in the back-office tree (experiments), for
/// [`Backoffice::change_audited`].
pub struct AuditedChange<T> {
    /// Returned to the caller once committed.
    pub result: T,
    pub action: &'static str,
    pub subject: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl Backoffice {
    /// Runs one change of records kept in the back-office tree by another module: `change`
    /// reads through the store and fills the batch while the write lock is held (so it decides
    /// on what it read), then the batch is committed durably with its audit entry, all or
    /// nothing.
    pub(crate) async fn change_audited<T, F>(
        &self,
        actor: &Actor,
        change: F,
    ) -> std::result::Result<T, super::BackofficeError>
    where
        F: FnOnce(
            &dyn super::store::BackofficeStore,
            &mut Batch,
        ) -> std::result::Result<AuditedChange<T>, super::BackofficeError>,
    {
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        let done = change(self.store.as_ref(), &mut batch)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action: done.action,
                subject: done.subject,
                before: done.before.as_ref(),
                after: done.after.as_ref(),
            },
        )?;
        self.commit(batch).await?;
        Ok(done.result)
    }

    /// The records of the back-office tree, for modules that keep theirs there (reads only:
    /// writes go through [`Backoffice::change_audited`]).
    pub(crate) fn records(&self) -> &dyn super::store::BackofficeStore {
        self.store.as_ref()
    }
}
