//! Records other modules keep in the back office's tree (personalization's content slots), so
//! that a change of one and its audit entry are one atomic, flushed batch like the back
//! office's own. Keys are `{space}/{id}`.

use super::audit::{Actor, Audited};
use super::store::{get, key, scan_all};
use super::{Backoffice, BackofficeError};
use crate::storage::StorageError;
use protocol::Stored;
use serde::Serialize;

/// What a change of a kept record does.
pub(crate) enum KeptChange<T> {
    /// Stores the new value, audited as `action`.
    Put(T, &'static str),
    /// Removes the record, audited as `action`.
    Remove(&'static str),
}

impl Backoffice {
    /// Every record under `space`, in key order.
    pub(crate) fn kept_all<T: Stored>(&self, space: &str) -> Result<Vec<T>, StorageError> {
        let mut prefix = space.as_bytes().to_vec();
        prefix.push(b'/');
        scan_all(self.store.as_ref(), &prefix)
    }

    /// Changes the record `{space}/{id}`: `decide` sees its current value (under the write
    /// lock, so changes never interleave) and answers the change, or refuses it. Answers the
    /// value after the change.
    pub(crate) async fn change_kept<T: Stored + Serialize>(
        &self,
        actor: &Actor,
        space: &str,
        id: &str,
        decide: impl FnOnce(Option<&T>) -> Result<KeptChange<T>, BackofficeError>,
    ) -> Result<Option<T>, BackofficeError> {
        let k = key(space, &[id.as_bytes()]);
        let subject = format!("{space}/{id}");
        self.commit_audited(actor, move |store, batch| {
            let before: Option<T> = get(store, &k)?;
            let (after, action) = match decide(before.as_ref())? {
                KeptChange::Put(value, action) => {
                    batch.put(k, &value)?;
                    (Some(value), action)
                }
                KeptChange::Remove(action) => {
                    batch.delete(k);
                    (None, action)
                }
            };
            let audited = Audited {
                action,
                subject,
                before: json(before.as_ref())?,
                after: json(after.as_ref())?,
            };
            Ok((after, audited))
        })
        .await
    }
}

fn json<T: Serialize>(value: Option<&T>) -> Result<Option<serde_json::Value>, StorageError> {
    value
        .map(|v| serde_json::to_value(v).map_err(|e| StorageError::Io(e.to_string())))
        .transpose()
}
