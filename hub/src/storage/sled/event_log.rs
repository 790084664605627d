//! The event log's layout in its sled tree (`events`):
//!
//! - `c/<first seq, u64 BE>` → an [`EventChunk`]: up to [`CHUNK`] events with consecutive
//!   append sequences, written in one piece;
//! - `e/<event id>` → its sequence (u64 BE): the id index of the events that can arrive twice
//!   (an edge node's sales and board events, anything appended through the checked path), so a
//!   repeat keeps its first sequence. The recorder's events are not in it: their ids are fresh
//!   ULIDs this hub made ([`Fresh`]), so a repeat can only be the recorder's own retry of a
//!   failed append, which the writer remembers in memory;
//! - `t/<customer id><event id>` → the event's sequence (u64 BE; empty in logs written before
//!   fresh events, whose timelines follow the id index): each customer's timeline.
//!
//! An append costs one chunk write per [`CHUNK`] events, a timeline entry per customer event
//! and, for events that can arrive twice, an id index entry; a reader in append order decodes
//! a chunk at a time. Logs written by earlier builds (`s/<seq>` → id, `e/<id>` → the event)
//! are converted at open, a batch at a time, each batch atomic, so a crash mid-way resumes
//! where it stopped.

use super::{io, key, timeline_key};
use crate::storage::{Result, Sequenced, StorageError};
use protocol::{codec, CustomerId, Event, EventChunk, EventChunkRef, EventId};
use std::collections::{BTreeMap, HashSet};

/// Most events in one chunk: small enough that a timeline read decoding one chunk per event
/// stays cheap, large enough that chunk writes are few.
pub const CHUNK: usize = 256;

/// Events converted per atomic batch when an old log is converted.
const CONVERT_BATCH: usize = 8_192;

pub fn chunk_key(first: u64) -> Vec<u8> {
    key("c", &first.to_be_bytes())
}

fn id_key(id: EventId) -> Vec<u8> {
    key("e", &id.to_bytes())
}

fn seq_value(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

fn seq_from(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// The sequence an indexed event has, if it is in the log.
pub fn sequence_of(tree: &sled::Tree, id: EventId) -> Result<Option<u64>> {
    Ok(tree.get(id_key(id)).map_err(io)?.and_then(|v| seq_from(&v)))
}

/// The entries that store `events` (numbered consecutively, in order) and index them: the id
/// index only for the events `fresh` says are not fresh. The chunks are encoded from the
/// events in place (no copy), so the writer can keep them for the log's tail readers.
pub fn entries(
    events: &[Sequenced],
    fresh: impl Fn(usize) -> bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::with_capacity(events.len() / 2 + events.len() / CHUNK + 1);
    let mut refs: Vec<&Event> = Vec::with_capacity(CHUNK);
    for (c, chunk) in events.chunks(CHUNK).enumerate() {
        refs.clear();
        for (j, s) in chunk.iter().enumerate() {
            let e = &s.event;
            if !fresh(c * CHUNK + j) {
                out.push((id_key(e.id), seq_value(s.seq)));
            }
            if let protocol::Subject::Customer(customer) = e.subject {
                out.push((timeline_key(customer, e.id), seq_value(s.seq)));
            }
            refs.push(e);
        }
        let first = chunk[0].seq;
        let encoded = EventChunkRef {
            first,
            events: &refs,
        }
        .encode()?;
        out.push((chunk_key(first), encoded));
    }
    Ok(out)
}

/// The chunk holding `seq`, if any.
fn chunk_with(tree: &sled::Tree, seq: u64) -> Result<Option<EventChunk>> {
    let Some(kv) = tree.range(chunk_key(0)..=chunk_key(seq)).next_back() else {
        return Ok(None);
    };
    let (_, v) = kv.map_err(io)?;
    let chunk: EventChunk = codec::decode(&v)?;
    Ok((chunk.last() >= seq).then_some(chunk))
}

/// The last sequence stored (0 for an empty log).
pub fn last_sequence(tree: &sled::Tree) -> Result<u64> {
    match tree.scan_prefix(key("c", &[])).next_back() {
        Some(kv) => {
            let (_, v) = kv.map_err(io)?;
            Ok(codec::decode::<EventChunk>(&v)?.last())
        }
        None => Ok(0),
    }
}

/// Events with sequences in `after + 1 ..= upto`, in order, at most `limit`.
pub fn read_sequenced(
    tree: &sled::Tree,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Sequenced>> {
    let mut out = Vec::with_capacity(limit.min(16_384));
    if after >= upto || limit == 0 {
        return Ok(out);
    }
    // The chunk holding `after + 1` starts at or before it.
    let start = match tree.range(chunk_key(0)..=chunk_key(after + 1)).next_back() {
        Some(kv) => kv.map_err(io)?.0.to_vec(),
        None => chunk_key(after + 1),
    };
    for kv in tree.range(start..=chunk_key(upto)) {
        let (_, v) = kv.map_err(io)?;
        let chunk: EventChunk = codec::decode(&v)?;
        for (i, event) in chunk.events.into_iter().enumerate() {
            let seq = chunk.first + i as u64;
            if seq <= after {
                continue;
            }
            if seq > upto || out.len() == limit {
                return Ok(out);
            }
            out.push(Sequenced { seq, event });
        }
    }
    Ok(out)
}

/// The events with these sequences, in the order given (missing ones left out).
pub fn events_at(tree: &sled::Tree, seqs: &[u64]) -> Result<Vec<Event>> {
    let mut chunks: BTreeMap<u64, EventChunk> = BTreeMap::new();
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let cached = chunks
            .range(..=seq)
            .next_back()
            .filter(|(_, c)| c.last() >= seq)
            .map(|(first, _)| *first);
        let first = match cached {
            Some(first) => first,
            None => match chunk_with(tree, seq)? {
                Some(chunk) => {
                    let first = chunk.first;
                    chunks.insert(first, chunk);
                    first
                }
                None => continue,
            },
        };
        if let Some(e) = chunks
            .get(&first)
            .and_then(|c| c.events.get((seq - first) as usize))
        {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A customer's events, newest first, at most `limit`.
pub fn timeline(tree: &sled::Tree, customer: CustomerId, limit: usize) -> Result<Vec<Event>> {
    let index = key("t", &customer.to_bytes());
    let mut seqs = Vec::new();
    for kv in tree.scan_prefix(&index).rev().take(limit) {
        let (k, v) = kv.map_err(io)?;
        if let Some(seq) = seq_from(&v) {
            seqs.push(seq);
            continue;
        }
        // An entry written before timelines carried sequences: through the id index.
        let id = <[u8; 16]>::try_from(&k[index.len()..])
            .map(|b| EventId(ulid::Ulid(u128::from_be_bytes(b))));
        if let Ok(id) = id {
            if let Some(seq) = sequence_of(tree, id)? {
                seqs.push(seq);
            }
        }
    }
    events_at(tree, &seqs)
}

/// The writes that replace stored events (same id, at the sequence given) and, with `forget`,
/// drop that customer's timeline index. An event not stored at its sequence is left out.
pub fn rewrite(
    tree: &sled::Tree,
    events: &[Sequenced],
    forget: Option<CustomerId>,
) -> Result<super::Staged> {
    let mut chunks: BTreeMap<u64, EventChunk> = BTreeMap::new();
    for Sequenced { seq, event: e } in events {
        let seq = *seq;
        let cached = chunks
            .range(..=seq)
            .next_back()
            .filter(|(_, c)| c.last() >= seq)
            .map(|(first, _)| *first);
        let first = match cached {
            Some(first) => first,
            None => match chunk_with(tree, seq)? {
                Some(chunk) => {
                    let first = chunk.first;
                    chunks.insert(first, chunk);
                    first
                }
                None => continue,
            },
        };
        if let Some(slot) = chunks
            .get_mut(&first)
            .and_then(|c| c.events.get_mut((seq - first) as usize))
        {
            if slot.id == e.id {
                *slot = e.clone();
            }
        }
    }
    let mut ops = Vec::with_capacity(chunks.len());
    for (first, chunk) in &chunks {
        ops.push((chunk_key(*first), Some(codec::encode(chunk)?)));
    }
    if let Some(customer) = forget {
        for kv in tree.scan_prefix(key("t", &customer.to_bytes())) {
            let (k, _) = kv.map_err(io)?;
            ops.push((k.to_vec(), None));
        }
    }
    Ok(ops)
}

/// Which events of an append are fresh: made by this hub with a new id and never appended
/// before (the recorder's), so no stored event can share their id and the id index is not
/// consulted or written for them. `retried` holds the fresh ids of appends that were applied
/// but not acknowledged (their flush failed): a retry of those keeps their first sequence.
pub struct Fresh<'a> {
    pub flags: &'a [bool],
    pub retried: Option<&'a HashSet<EventId>>,
}

impl Fresh<'_> {
    /// No event is fresh: every one is checked against (and written to) the id index.
    pub const NONE: Fresh<'static> = Fresh {
        flags: &[],
        retried: None,
    };

    fn is(&self, i: usize) -> bool {
        self.flags.get(i).copied().unwrap_or(false)
    }
}

/// Log entries to apply: keys and their values.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Numbers events for the log under the append order: skips any already stored or already
/// numbered in this round, and answers the entries to apply for the rest with the rest
/// themselves, numbered (moved, not copied).
pub fn number(
    tree: &sled::Tree,
    last: &mut u64,
    numbered: &mut HashSet<EventId>,
    events: Vec<Event>,
    fresh: &Fresh<'_>,
) -> Result<(Entries, Vec<Sequenced>)> {
    let mut kept = Vec::with_capacity(events.len());
    let mut kept_fresh = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let is_fresh = fresh.is(i);
        let stored = if is_fresh {
            fresh.retried.is_some_and(|r| r.contains(&e.id))
        } else {
            tree.contains_key(id_key(e.id)).map_err(io)?
        };
        if stored || !numbered.insert(e.id) {
            continue;
        }
        *last += 1;
        kept.push(Sequenced {
            seq: *last,
            event: e,
        });
        kept_fresh.push(is_fresh);
    }
    let entries = entries(&kept, |i| kept_fresh[i])?;
    Ok((entries, kept))
}

/// Converts a log written by an earlier build (`s/<seq>` → id, `e/<id>` → event) to chunks.
pub fn convert_old_layout(db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    let old = key("s", &[]);
    if tree.scan_prefix(&old).next().is_none() {
        return Ok(());
    }
    tracing::info!("converting the event log to chunks (a one-time step)");
    let mut converted = 0u64;
    loop {
        let mut seqs = Vec::new();
        let mut events = Vec::new();
        for kv in tree.scan_prefix(&old).take(CONVERT_BATCH) {
            let (k, id) = kv.map_err(io)?;
            let seq = k
                .len()
                .checked_sub(8)
                .and_then(|at| seq_from(&k[at..]))
                .ok_or_else(|| StorageError::Io("a malformed sequence key".into()))?;
            let raw = tree
                .get(key("e", &id))
                .map_err(io)?
                .ok_or_else(|| StorageError::Io(format!("event of sequence {seq} is missing")))?;
            seqs.push((k.to_vec(), seq));
            events.push(codec::decode::<Event>(&raw)?);
        }
        if seqs.is_empty() {
            break;
        }
        let mut batch = sled::Batch::default();
        // Consecutive runs become chunks (an old log has no gaps, but nothing here relies on it).
        let mut i = 0;
        while i < events.len() {
            let mut j = i + 1;
            while j < events.len() && j - i < CHUNK && seqs[j].1 == seqs[j - 1].1 + 1 {
                j += 1;
            }
            let chunk = EventChunk {
                first: seqs[i].1,
                events: events[i..j].to_vec(),
            };
            batch.insert(chunk_key(chunk.first), codec::encode(&chunk)?);
            i = j;
        }
        for ((k, seq), e) in seqs.iter().zip(&events) {
            batch.insert(id_key(e.id), seq_value(*seq));
            batch.remove(k.as_slice());
        }
        tree.apply_batch(batch).map_err(io)?;
        db.flush().map_err(io)?;
        converted += events.len() as u64;
    }
    tracing::info!(events = converted, "event log converted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{AnonymousId, Channel, EventKind, Subject};
    use time::OffsetDateTime;

    fn db() -> (sled::Db, sled::Tree) {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("a temporary database");
        let tree = db.open_tree("events").expect("the events tree");
        (db, tree)
    }

    fn events(n: usize, customer: CustomerId) -> Vec<Event> {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
        (0..n)
            .map(|i| {
                let subject = if i % 3 == 0 {
                    Subject::Customer(customer)
                } else {
                    Subject::Anonymous(AnonymousId::new())
                };
                Event::new(at, subject, Channel::Web, EventKind::ProductView).with("n", i)
            })
            .collect()
    }

    /// [`number`] over borrowed events, answering the entries only.
    fn number_entries(
        tree: &sled::Tree,
        last: &mut u64,
        numbered: &mut HashSet<EventId>,
        events: &[Event],
        fresh: &Fresh<'_>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        number(tree, last, numbered, events.to_vec(), fresh).map(|(entries, _)| entries)
    }

    fn apply(tree: &sled::Tree, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k, v);
        }
        tree.apply_batch(batch).expect("applied");
    }

    #[test]
    fn appended_events_read_back_in_order_across_chunks_and_once_only() {
        let (_db, tree) = db();
        let customer = CustomerId::new();
        let all = events(CHUNK * 2 + 17, customer);
        let (mut last, mut numbered) = (0, HashSet::new());
        let (head, tail) = all.split_at(100);
        apply(
            &tree,
            number_entries(&tree, &mut last, &mut numbered, head, &Fresh::NONE).expect("numbered"),
        );
        // The tail comes with a repeat of the head's events: they keep their first number.
        let mut again = head[..10].to_vec();
        again.extend_from_slice(tail);
        let mut numbered = HashSet::new();
        apply(
            &tree,
            number_entries(&tree, &mut last, &mut numbered, &again, &Fresh::NONE)
                .expect("numbered"),
        );
        assert_eq!(last, all.len() as u64);
        assert_eq!(last_sequence(&tree).expect("last"), last);
        for after in [0, 1, 99, 100, 255, 256, 257, 600] {
            let read = read_sequenced(&tree, after, last, 1_000).expect("read");
            let want: Vec<&Event> = all.iter().skip(after as usize).collect();
            assert_eq!(read.len(), want.len(), "after {after}");
            for (s, e) in read.iter().zip(want) {
                assert_eq!(&s.event, e);
                assert_eq!(
                    s.seq,
                    (all.iter().position(|x| x.id == e.id).expect("there") + 1) as u64
                );
            }
        }
        let limited = read_sequenced(&tree, 250, 300, 1_000).expect("read");
        assert_eq!(limited.first().map(|s| s.seq), Some(251));
        assert_eq!(limited.last().map(|s| s.seq), Some(300));
        assert_eq!(read_sequenced(&tree, 0, last, 7).expect("read").len(), 7);
        let mine: Vec<&Event> = all
            .iter()
            .filter(|e| e.subject == Subject::Customer(customer))
            .collect();
        let timeline = timeline(&tree, customer, 1_000).expect("timeline");
        assert_eq!(timeline.len(), mine.len());
        // Every event is in the id index (none was fresh).
        assert_eq!(tree.scan_prefix(key("e", &[])).count(), all.len());
    }

    #[test]
    fn a_rewrite_replaces_events_in_place_and_forgets_the_timeline() {
        let (_db, tree) = db();
        let customer = CustomerId::new();
        let all = events(300, customer);
        let (mut last, mut numbered) = (0, HashSet::new());
        apply(
            &tree,
            number_entries(&tree, &mut last, &mut numbered, &all, &Fresh::NONE).expect("numbered"),
        );
        let mut changed: Vec<Sequenced> = read_sequenced(&tree, 0, last, usize::MAX)
            .expect("read")
            .into_iter()
            .filter(|s| s.event.subject == Subject::Customer(customer))
            .map(|s| Sequenced {
                seq: s.seq,
                event: Event {
                    subject: Subject::Anonymous(AnonymousId::new()),
                    ..s.event
                },
            })
            .collect();
        // An event given at a sequence that holds another event is left alone.
        let stranger = Sequenced {
            seq: 2,
            event: events(1, customer).remove(0),
        };
        changed.push(stranger.clone());
        let ops = rewrite(&tree, &changed, Some(customer)).expect("staged");
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        tree.apply_batch(batch).expect("applied");
        let read = read_sequenced(&tree, 0, last, 1_000).expect("read");
        assert_eq!(read.len(), all.len());
        assert!(read
            .iter()
            .all(|s| s.event.subject != Subject::Customer(customer)));
        assert_eq!(read[1].event, all[1]);
        assert!(read.iter().all(|s| s.event.id != stranger.event.id));
        assert!(timeline(&tree, customer, 100).expect("timeline").is_empty());
    }

    #[test]
    fn fresh_events_skip_the_id_index_and_still_keep_their_first_sequence() {
        let (_db, tree) = db();
        let customer = CustomerId::new();
        let checked = events(40, customer);
        let fresh = events(CHUNK + 30, customer);
        let (mut last, mut numbered) = (0, HashSet::new());
        apply(
            &tree,
            number_entries(&tree, &mut last, &mut numbered, &checked, &Fresh::NONE)
                .expect("numbered"),
        );
        // One append mixing fresh events, a repeat of a checked event and a fresh event twice.
        let mut mixed = fresh.clone();
        mixed.push(checked[3].clone());
        mixed.push(fresh[0].clone());
        let mut flags = vec![true; fresh.len()];
        flags.extend([false, true]);
        let mut numbered = HashSet::new();
        let no_retries = HashSet::new();
        let entries = number_entries(
            &tree,
            &mut last,
            &mut numbered,
            &mixed,
            &Fresh {
                flags: &flags,
                retried: Some(&no_retries),
            },
        )
        .expect("numbered");
        apply(&tree, entries);
        assert_eq!(last, (checked.len() + fresh.len()) as u64);
        // Only the checked events are in the id index.
        assert_eq!(tree.scan_prefix(key("e", &[])).count(), checked.len());
        assert!(fresh
            .iter()
            .all(|e| sequence_of(&tree, e.id).expect("read").is_none()));
        // A retry of fresh events whose append failed after it was applied: not numbered again.
        let retried: HashSet<EventId> = fresh[..5].iter().map(|e| e.id).collect();
        let mut numbered = HashSet::new();
        let again = number_entries(
            &tree,
            &mut last,
            &mut numbered,
            &fresh[..5],
            &Fresh {
                flags: &[true; 5],
                retried: Some(&retried),
            },
        )
        .expect("numbered");
        assert!(again.is_empty());
        assert_eq!(last, (checked.len() + fresh.len()) as u64);
        let read: Vec<Event> = read_sequenced(&tree, 0, last, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|s| s.event)
            .collect();
        let want: Vec<Event> = checked.iter().chain(&fresh).cloned().collect();
        assert_eq!(read, want);
        // The timeline holds the customer's events of both kinds, in id order (newest first).
        let mut mine: Vec<&Event> = want
            .iter()
            .filter(|e| e.subject == Subject::Customer(customer))
            .collect();
        mine.sort_by_key(|e| std::cmp::Reverse(e.id));
        let timeline = timeline(&tree, customer, usize::MAX).expect("timeline");
        assert_eq!(timeline.iter().collect::<Vec<_>>(), mine);
    }

    #[test]
    fn a_log_of_the_earlier_layout_is_converted_and_reads_the_same() {
        let (db, tree) = db();
        let customer = CustomerId::new();
        let all = events(CONVERT_BATCH + CHUNK + 5, customer);
        let mut batch = sled::Batch::default();
        for (i, e) in all.iter().enumerate() {
            let seq = i as u64 + 1;
            batch.insert(key("s", &seq.to_be_bytes()), e.id.to_bytes().to_vec());
            batch.insert(id_key(e.id), codec::encode(e).expect("encoded"));
            if let Subject::Customer(c) = e.subject {
                batch.insert(timeline_key(c, e.id), Vec::<u8>::new());
            }
        }
        tree.apply_batch(batch).expect("applied");
        convert_old_layout(&db, &tree).expect("converted");
        assert!(tree.scan_prefix(key("s", &[])).next().is_none());
        assert_eq!(last_sequence(&tree).expect("last"), all.len() as u64);
        let read = read_sequenced(&tree, 0, all.len() as u64, usize::MAX).expect("read");
        let read: Vec<Event> = read.into_iter().map(|s| s.event).collect();
        assert_eq!(read, all);
        let mine = all
            .iter()
            .filter(|e| e.subject == Subject::Customer(customer))
            .count();
        assert_eq!(
            timeline(&tree, customer, usize::MAX)
                .expect("timeline")
                .len(),
            mine
        );
        // Converting again finds nothing to do.
        convert_old_layout(&db, &tree).expect("converted twice");
        assert_eq!(last_sequence(&tree).expect("last"), all.len() as u64);
    }
}
