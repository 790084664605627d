//! NATS JetStream as the cluster's event stream (`docs/scaling.md`). PostgreSQL stays the
//! transactional source of truth: events commit in the same transaction as the entity change
//! ([`crate::storage::UnitOfWork`]), and
//!
//! - [`relay::EventRelay`] (one across the cluster, under a lease) publishes the committed log,
//!   in sequence order, to the stream `<prefix>EVENTS` (subjects `<prefix>events.<kind>`), with
//!   the event id as `Nats-Msg-Id` and the log sequence in the [`SEQ_HEADER`] header;
//! - [`reader::EventStreamReader`] tails that stream from a log sequence, handing out the same
//!   [`crate::storage::Sequenced`] values in the same order as `EventLog::read_sequenced`, so
//!   analytics, export and ML load leaves the database;
//! - [`outbox::OutboxRelay`] moves committed integration messages to the work queue
//!   `<prefix>OUTBOX`, which every node's [`outbox::DeliveryConsumer`] pulls from, so exactly
//!   one node delivers each message.
//!
//! This module holds no records: PostgreSQL keeps them, and the dead letters.

pub mod outbox;
pub mod reader;
pub mod relay;
#[cfg(all(test, feature = "cluster-tests"))]
mod tests;

use crate::storage::StorageError;
use async_nats::jetstream::{self, stream};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The header carrying an event's log sequence (decimal).
pub const SEQ_HEADER: &str = "Omnihub-Seq";

/// What went wrong between the hub and JetStream.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// The NATS server did not answer (the URL is never part of the message: it may hold a
    /// password).
    #[error("connecting to NATS failed: {0}")]
    Connect(String),
    /// A JetStream API call or a publish failed.
    #[error("JetStream {what} failed: {message}")]
    Api { what: &'static str, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Codec(#[from] protocol::CodecError),
    /// A stream message is not one the relay publishes (no or a bad sequence header).
    #[error("stream message {stream_seq} is not a relayed event: {reason}")]
    Malformed { stream_seq: u64, reason: String },
    /// The stream no longer holds the events after `after` (expired, or purged): read them from
    /// PostgreSQL instead.
    #[error("the stream no longer holds the events after {after}; its first is {first}")]
    Truncated { after: u64, first: u64 },
    /// The stream skipped sequences: it is not a copy of the log (should never happen; the
    /// reader stops rather than hand out a log with a hole).
    #[error("the stream jumps from sequence {after} to {got}")]
    Gap { after: u64, got: u64 },
    /// Another relay appended to the stream since this one read its end (a relay whose lease
    /// ran out): this one must read the end again.
    #[error("another relay published to the stream")]
    Overtaken,
    /// The reader's subscription ended (the connection closed).
    #[error("the stream subscription ended")]
    Closed,
}

impl JetStreamError {
    fn api(what: &'static str, e: impl std::fmt::Display) -> JetStreamError {
        JetStreamError::Api {
            what,
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, JetStreamError>;

/// Stream and subject names under one prefix (`[cluster] stream_prefix`): several deployments,
/// or tests, share a NATS server without meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// `prefix` may hold ASCII letters, digits, `_` and `-` only (stream names and subject
    /// tokens allow no `.`, `*`, `>` or spaces).
    pub fn new(prefix: &str) -> std::result::Result<Names, String> {
        if prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Ok(Names {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(format!(
                "stream_prefix {prefix:?} may hold only ASCII letters, digits, '_' and '-'"
            ))
        }
    }

    /// The event stream: `<prefix>EVENTS`.
    pub fn events_stream(&self) -> String {
        format!("{}EVENTS", self.prefix)
    }

    /// Every event subject: `<prefix>events.>`.
    pub fn events_subjects(&self) -> String {
        format!("{}events.>", self.prefix)
    }

    /// The subject of one kind of event: `<prefix>events.<kind>` (the kind's snake_case name).
    pub fn event_subject(&self, kind: protocol::EventKind) -> String {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        format!("{}events.{name}", self.prefix)
    }
}

/// Connects to NATS at `url` (`nats://host:4222`, credentials in it are never logged) and
/// answers its JetStream context.
pub async fn connect(url: &SecretString, client_name: &str) -> Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url.expose_secret())
        .await
        .map_err(|e| JetStreamError::Connect(e.kind().to_string()))?;
    Ok(jetstream::new(client))
}

/// The event stream, created if missing: file storage, kept by limits (not consumed away), and
/// JetStream's duplicate window for `Nats-Msg-Id`.
pub async fn event_stream(js: &jetstream::Context, names: &Names) -> Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: names.events_stream(),
        subjects: vec![names.events_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| JetStreamError::api("creating the event stream", e))
}

/// The log sequence a relayed message carries.
fn log_seq(stream_seq: u64, headers: Option<&async_nats::HeaderMap>) -> Result<u64> {
    let malformed = |reason: &str| JetStreamError::Malformed {
        stream_seq,
        reason: reason.into(),
    };
    headers
        .and_then(|h| h.get(SEQ_HEADER))
        .ok_or_else(|| malformed("no sequence header"))?
        .as_str()
        .parse::<u64>()
        .map_err(|_| malformed("the sequence header is not a number"))
}
