//! The inbox: the last accepted messages in memory, bounded by count and by bytes, oldest dropped
//! first. Messages that share a Message-ID are all kept (SMTP delivers at least once) and every
//! copy after the first points at it through `duplicate_of`.

use super::headers::{self, Headers};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use ulid::Ulid;

/// One accepted message as the sink stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// Assigned by the sink on acceptance; also in the `250` reply to `DATA`.
    pub id: Ulid,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: SystemTime,
    /// Who the SMTP client said the message is from and for (not the headers).
    pub envelope: Envelope,
    /// A few header fields, unfolded; Subject, From and To with RFC 2047 encoded words decoded.
    pub headers: Headers,
    /// Size of the message in octets, after dot-unstuffing.
    pub size: usize,
    /// The id of the first stored message with the same Message-ID, while it is still stored.
    pub duplicate_of: Option<Ulid>,
    /// The whole message, headers and body; bytes that are not UTF-8 are shown as U+FFFD.
    #[serde(skip)]
    pub raw: String,
}

/// The SMTP envelope: `MAIL FROM` (empty for the null reverse path) and every accepted `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
}

impl StoredMessage {
    /// The message body: what follows the header section, or nothing if there is no blank line.
    pub fn body(&self) -> &str {
        let (_, body_start) = headers::fields(&self.raw);
        self.raw.get(body_start..).unwrap_or_default()
    }

    /// Every header field in order, unfolded, as written (encoded words not decoded).
    pub fn header_fields(&self) -> Vec<(String, String)> {
        headers::fields(&self.raw).0
    }
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The shared inbox. Critical sections are short (no I/O under the lock), so a plain mutex does.
#[derive(Debug)]
pub(super) struct Store {
    inner: Mutex<Inner>,
    max_messages: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    messages: VecDeque<Arc<StoredMessage>>,
    /// Message-ID → the first stored message carrying it.
    first_by_message_id: HashMap<String, Ulid>,
    bytes: usize,
}

impl Store {
    /// A store that keeps at most `max_messages` messages and `max_bytes` of message text (but
    /// always the newest message).
    pub(super) fn new(max_messages: usize, max_bytes: usize) -> Store {
        Store {
            inner: Mutex::default(),
            max_messages,
            max_bytes,
        }
    }

    pub(super) fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// Stores an accepted message and returns what was stored.
    pub(super) fn insert(&self, envelope: Envelope, raw: &[u8]) -> Arc<StoredMessage> {
        let raw = String::from_utf8_lossy(raw).into_owned();
        let headers = Headers::parse(&raw);
        let mut inner = self.lock();
        let message_id = headers.message_id.clone();
        let duplicate_of = message_id
            .as_ref()
            .and_then(|m| inner.first_by_message_id.get(m).copied());
        let message = Arc::new(StoredMessage {
            id: Ulid::new(),
            received_at: SystemTime::now(),
            envelope,
            headers,
            size: raw.len(),
            duplicate_of,
            raw,
        });
        if let (Some(message_id), None) = (message_id, duplicate_of) {
            inner.first_by_message_id.insert(message_id, message.id);
        }
        inner.bytes += message.size;
        inner.messages.push_back(Arc::clone(&message));
        while inner.messages.len() > self.max_messages
            || (inner.bytes > self.max_bytes && inner.messages.len() > 1)
        {
            inner.drop_oldest();
        }
        message
    }

    /// Every stored message, oldest first.
    pub(super) fn all(&self) -> Vec<Arc<StoredMessage>> {
        self.lock().messages.iter().cloned().collect()
    }

    /// The newest `limit` messages, newest first, optionally only those with `to` among their
    /// envelope recipients (compared without regard to case).
    pub(super) fn newest(&self, to: Option<&str>, limit: usize) -> Vec<Arc<StoredMessage>> {
        self.lock()
            .messages
            .iter()
            .rev()
            .filter(|m| {
                to.is_none_or(|to| m.envelope.to.iter().any(|r| r.eq_ignore_ascii_case(to)))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    pub(super) fn get(&self, id: Ulid) -> Option<Arc<StoredMessage>> {
        self.lock().messages.iter().find(|m| m.id == id).cloned()
    }

    /// Empties the store and returns how many messages it held.
    pub(super) fn clear(&self) -> usize {
        let mut inner = self.lock();
        let count = inner.messages.len();
        *inner = Inner::default();
        count
    }

    /// The lock, even if a thread panicked holding it: every update leaves `Inner` consistent
    /// before anything that could panic, so the data is still good.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn drop_oldest(&mut self) {
        if let Some(old) = self.messages.pop_front() {
            self.bytes -= old.size;
            if let Some(message_id) = &old.headers.message_id {
                if self.first_by_message_id.get(message_id) == Some(&old.id) {
                    self.first_by_message_id.remove(message_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            from: "shop@omnihub.test".into(),
            to: vec!["ann@x.test".into()],
        }
    }

    fn message(message_id: &str, subject: &str) -> Vec<u8> {
        format!("Message-ID: {message_id}\r\nSubject: {subject}\r\n\r\nHello\r\n").into_bytes()
    }

    #[test]
    fn flags_copies_of_a_message_id_and_forgets_evicted_firsts() {
        let store = Store::new(3, usize::MAX);
        let first = store.insert(envelope(), &message("<a@x>", "one"));
        let copy = store.insert(envelope(), &message("<a@x>", "one again"));
        let other = store.insert(envelope(), &message("<b@x>", "two"));
        assert_eq!(first.duplicate_of, None);
        assert_eq!(copy.duplicate_of, Some(first.id));
        assert_eq!(other.duplicate_of, None);
        // Evicting the first copy forgets it: the next copy stands alone.
        store.insert(envelope(), &message("<c@x>", "three"));
        let later = store.insert(envelope(), &message("<a@x>", "one, third time"));
        assert_eq!(later.duplicate_of, None);
        assert_eq!(store.all().len(), 3);
    }

    #[test]
    fn drops_the_oldest_beyond_the_count_and_the_bytes() {
        let store = Store::new(2, usize::MAX);
        let ids: Vec<Ulid> = (0..3)
            .map(|i| {
                store
                    .insert(envelope(), &message(&format!("<{i}@x>"), "s"))
                    .id
            })
            .collect();
        let kept: Vec<Ulid> = store.all().iter().map(|m| m.id).collect();
        assert_eq!(kept, ids[1..]);

        let one = message("<1@x>", "s").len();
        let store = Store::new(10, 2 * one);
        for i in 0..3 {
            store.insert(envelope(), &message(&format!("<{i}@x>"), "s"));
        }
        assert_eq!(store.all().len(), 2);
        // The newest is kept even when alone it is over the byte budget.
        let store = Store::new(10, 1);
        store.insert(envelope(), &message("<big@x>", "s"));
        assert_eq!(store.all().len(), 1);
    }

    #[test]
    fn filters_by_recipient_newest_first() {
        let store = Store::new(10, usize::MAX);
        let a = store.insert(envelope(), &message("<1@x>", "a"));
        let mut other = envelope();
        other.to = vec!["bob@x.test".into(), "Ann@X.test".into()];
        let b = store.insert(other, &message("<2@x>", "b"));
        store.insert(
            Envelope {
                from: String::new(),
                to: vec!["carl@x.test".into()],
            },
            &message("<3@x>", "c"),
        );
        let ids: Vec<Ulid> = store
            .newest(Some("ann@x.test"), 10)
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [b.id, a.id]);
        assert_eq!(store.newest(None, 1).len(), 1);
        assert_eq!(store.clear(), 3);
        assert!(store.all().is_empty());
    }
}
