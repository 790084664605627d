//! Tailing the event log from JetStream instead of PostgreSQL: the same [`Sequenced`] values,
//! in the same order, as `EventLog::read_sequenced` hands out, resumable from any log sequence
//! the stream still holds.
//!
//! The reader is an ordered consumer (ephemeral, flow-controlled, re-created by the client
//! when it misses a message), started at the stream message that should hold the event after
//! the cursor: the relay keeps the stream a gap-free copy of the log, so stream and log
//! sequences differ by a constant. Every message's [`super::SEQ_HEADER`] is checked anyway:
//! events at or below the cursor are skipped (a republished event), and a jump past the next
//! sequence stops the reader with [`JetStreamError::Gap`] rather than hand out a log with a hole.

use super::{event_stream, log_seq, JetStreamError, Names, Result};
use crate::storage::Sequenced;
use async_nats::jetstream::{self, consumer};
use futures_util::{FutureExt, StreamExt};
use protocol::{codec, Event};

/// A reader of the event stream from a cursor.
pub struct EventStreamReader {
    messages: consumer::pull::Ordered,
    cursor: u64,
    /// What stopped the last batch after some events: answered by the next call, so the
    /// events before it are handed out first.
    failed: Option<JetStreamError>,
}

impl EventStreamReader {
    /// Reads after `cursor` (the last log sequence the consumer has handled; 0 for the start).
    /// [`JetStreamError::Truncated`] if the stream no longer holds the next event (read those
    /// from PostgreSQL, then open the reader at a later cursor).
    pub async fn open(
        js: &jetstream::Context,
        names: &Names,
        cursor: u64,
    ) -> Result<EventStreamReader> {
        let mut stream = event_stream(js, names).await?;
        let state = stream
            .info()
            .await
            .map_err(|e| JetStreamError::api("reading the event stream's state", e))?
            .state
            .clone();
        let start = if state.messages == 0 {
            // Nothing to place the cursor by: start with the next message published (the
            // header check refuses it if it is past the cursor's next event).
            state.last_sequence + 1
        } else {
            let first = stream
                .get_raw_message(state.first_sequence)
                .await
                .map_err(|e| JetStreamError::api("reading the event stream's first message", e))?;
            let first_log = log_seq(state.first_sequence, Some(&first.headers))?;
            if cursor + 1 < first_log {
                return Err(JetStreamError::Truncated {
                    after: cursor,
                    first: first_log,
                });
            }
            state.first_sequence + (cursor + 1 - first_log)
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| JetStreamError::api("creating the reader's consumer", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| JetStreamError::api("subscribing to the event stream", e))?;
        Ok(EventStreamReader {
            messages,
            cursor,
            failed: None,
        })
    }

    /// The last log sequence handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Up to `limit` events after the cursor, waiting until there is at least one; moves the
    /// cursor past them. Events read before a failure are handed out first, and the failure
    /// with the next call; after a failure, open a new reader at [`Self::cursor`].
    pub async fn next(&mut self, limit: usize) -> Result<Vec<Sequenced>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut batch = Vec::new();
        while batch.len() < limit.max(1) {
            match self.read_one(batch.is_empty()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => break,
                Err(e) if batch.is_empty() => return Err(e),
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// The next event after the cursor (moving it), waiting for one if `wait`; `None` if none
    /// has arrived and `wait` is false.
    async fn read_one(&mut self, wait: bool) -> Result<Option<Sequenced>> {
        loop {
            let next = if wait {
                self.messages.next().await
            } else {
                // Only what has already arrived: the caller gets what there is now.
                match self.messages.next().now_or_never() {
                    Some(next) => next,
                    None => return Ok(None),
                }
            };
            let message = next
                .ok_or(JetStreamError::Closed)?
                .map_err(|e| JetStreamError::api("reading the event stream", e))?;
            let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let seq = log_seq(stream_seq, message.headers.as_ref())?;
            if seq <= self.cursor {
                continue;
            }
            if seq != self.cursor + 1 {
                return Err(JetStreamError::Gap {
                    after: self.cursor,
                    got: seq,
                });
            }
            let event: Event = codec::decode(&message.payload)?;
            self.cursor = seq;
            return Ok(Some(Sequenced { seq, event }));
        }
    }
}
