//! The recent warnings and errors the ops page shows: a `tracing` layer keeps the last
//! [`KEPT`] WARN and ERROR events of the process in a ring, with their message, target, fields
//! and the request id of the request they happened in.
//!
//! Secrets are never logged (a house rule); as a second guard, a field whose name says it holds
//! one (`token`, `secret`, `password`, …) is kept as `<redacted>`, and long values are cut.

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How many events the ring keeps.
pub const KEPT: usize = 100;
const MAX_VALUE_CHARS: usize = 300;
/// Field names that may hold a secret, matched as substrings of the lowercased name.
const SECRET_NAMES: [&str; 8] = [
    "token",
    "secret",
    "password",
    "authorization",
    "cookie",
    "pin",
    "key",
    "card",
];

/// One warning or error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorEvent {
    /// RFC 3339.
    pub at: String,
    pub level: &'static str,
    pub target: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
    pub request_id: Option<String>,
}

/// The ring of recent events.
#[derive(Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<ErrorEvent>>,
}

impl RecentErrors {
    fn push(&self, event: ErrorEvent) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The newest `limit` events, newest first.
    pub fn newest(&self, limit: usize) -> Vec<ErrorEvent> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(limit).cloned().collect()
    }
}

/// The process's ring (the layer installed by `crate::telemetry::init` fills it).
pub fn recent() -> &'static RecentErrors {
    static RECENT: OnceLock<RecentErrors> = OnceLock::new();
    RECENT.get_or_init(RecentErrors::default)
}

/// The layer that fills a ring.
pub struct ErrorRing {
    ring: &'static RecentErrors,
}

impl ErrorRing {
    /// A layer filling the process's ring.
    pub fn process() -> ErrorRing {
        ErrorRing { ring: recent() }
    }

    /// A layer filling `ring` (tests).
    pub fn filling(ring: &'static RecentErrors) -> ErrorRing {
        ErrorRing { ring }
    }
}

fn redacted(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| lower.contains(s))
}

fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_VALUE_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Fields {
    fn keep(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = cut(value);
        } else if redacted(field.name()) {
            self.fields
                .push((field.name().to_string(), "<redacted>".into()));
        } else {
            self.fields.push((field.name().to_string(), cut(value)));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.keep(field, format!("{value:?}"));
    }
}

/// A span's request id, kept in its extensions for the events inside it.
struct SpanRequestId(String);

#[derive(Default)]
struct FindRequestId(Option<String>);

impl Visit for FindRequestId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "request_id" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "request_id" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S> Layer<S> for ErrorRing
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut found = FindRequestId::default();
        attrs.record(&mut found);
        if let (Some(request_id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let request_id = ctx.event_scope(event).and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<SpanRequestId>()
                    .map(|r| r.0.clone())
            })
        });
        let at = super::feed::rfc3339(time::OffsetDateTime::now_utc());
        self.ring.push(ErrorEvent {
            at,
            level: if level == Level::ERROR {
                "ERROR"
            } else {
                "WARN"
            },
            target: event.metadata().target().to_string(),
            message: fields.message,
            fields: fields.fields,
            request_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_newest_first_with_secrets_redacted() {
        static RING: OnceLock<RecentErrors> = OnceLock::new();
        let ring = RING.get_or_init(RecentErrors::default);
        let subscriber = tracing_subscriber::registry().with(ErrorRing::filling(ring));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            let span = tracing::info_span!("HTTP request", request_id = "req-42");
            span.in_scope(|| {
                tracing::warn!(
                    api_token = "tok_live_123",
                    destination = "oms",
                    "delivery failed"
                );
            });
            tracing::error!(password = "hunter2", "sign-in broke");
        });
        let kept = ring.newest(10);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].level, "ERROR");
        assert_eq!(kept[0].message, "sign-in broke");
        assert_eq!(kept[0].request_id, None);
        assert_eq!(kept[1].level, "WARN");
        assert_eq!(kept[1].request_id.as_deref(), Some("req-42"));
        assert!(
            kept[1]
                .fields
                .contains(&("destination".into(), "\"oms\"".into()))
                || kept[1]
                    .fields
                    .contains(&("destination".into(), "oms".into()))
        );
        let text = format!("{kept:?}");
        assert!(
            !text.contains("tok_live_123") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn the_ring_keeps_only_the_newest() {
        let ring = RecentErrors::default();
        for i in 0..KEPT + 5 {
            ring.push(ErrorEvent {
                at: String::new(),
                level: "WARN",
                target: "t".into(),
                message: format!("{i}"),
                fields: Vec::new(),
                request_id: None,
            });
        }
        let newest = ring.newest(KEPT * 2);
        assert_eq!(newest.len(), KEPT);
        assert_eq!(newest[0].message, format!("{}", KEPT + 4));
        assert_eq!(newest[KEPT - 1].message, "5");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(MAX_VALUE_CHARS + 10);
        let cut = cut(long);
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS + 1);
    }
}
