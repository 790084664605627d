//! The event feed: the log in append order, tailed from a cursor. A consumer reads what was
//! appended after its cursor and, when it is caught up, waits for the storage's wake-up (bumped
//! after every durable append) instead of polling. Late events (an edge node's offline board
//! events, hours old) get a sequence when they reach the hub, so they come after every cursor
//! that was already past them in time.
//!
//! A consumer keeps its cursor durably with the state it derives (see
//! [`super::store::Write::cursor`]), so a restart resumes exactly.

use crate::storage::{Result, SharedEvents, Storage, StorageError};
use std::sync::Arc;
use tokio::sync::watch;

/// A reader of the log from a cursor.
pub struct Feed {
    log: Arc<dyn Storage>,
    appended: watch::Receiver<u64>,
    cursor: u64,
}

impl Feed {
    /// Reads after `cursor` (the last sequence the consumer has handled; 0 for the start).
    pub fn new(log: Arc<dyn Storage>, cursor: u64) -> Feed {
        let appended = log.appended();
        Feed {
            log,
            appended,
            cursor,
        }
    }

    /// The last sequence handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Up to `limit` events after the cursor, waiting until there is at least one; moves the
    /// cursor past them. The events may be shared with the log's other readers (see
    /// [`crate::storage::EventLog::read_shared`]).
    pub async fn next(&mut self, limit: usize) -> Result<SharedEvents> {
        loop {
            // Marked seen before the read: an append after it wakes the wait below.
            self.appended.borrow_and_update();
            let batch = self.log.read_shared(self.cursor, limit).await?;
            if let Some(last) = batch.last() {
                self.cursor = last.seq;
                return Ok(batch);
            }
            self.appended
                .changed()
                .await
                .map_err(|_| StorageError::Closed)?;
        }
    }
}
