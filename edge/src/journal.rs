//! The journal: every sale (and deficit) the node makes is appended to `journal.log` and
//! fsync'd before the API answers, so a store's unsynced sales survive even a database that will
//! not reopen. Once the hub acknowledges the outbox entries covering them, they are compacted
//! away (the unacknowledged tail is rewritten to a temporary file, fsync'd and renamed over the
//! journal). A rebuilt node replays an old journal with [`crate::replay_journal`].
//!
//! Acknowledgements are written into the journal as markers (`acked_upto`): appended between
//! rewrites, and at the head of every rewritten file. A replay skips every record at or below
//! the last marker, so whatever a crash leaves behind (a record appended again on open from an
//! outbox entry whose prune was not durable yet), a sale the hub acknowledged is never recorded
//! a second time.
//!
//! Format: records one after another, each `len: u32 LE`, `crc32: u32 LE` (of the payload),
//! then the payload: a [`JournalRecord`] encoded by `protocol::codec`. A torn or damaged record
//! ends the readable part; on open, the damaged file is kept beside the journal for the operator
//! and the journal continues from its readable part.

use crate::storage::StoreError;
use protocol::codec::{decode, encode, Stored};
use protocol::replication::{DeficitRecord, ReplicaId, ReturnRecord, SaleRecord};
use protocol::LocationId;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journal's file name in the data dir.
pub const JOURNAL_FILE: &str = "journal.log";

/// The largest record accepted when reading (a sale of 100 lines is a few KiB).
const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
const HEADER_BYTES: u64 = 8;

/// One change's sale and deficit records, with the own seq of the outbox entry covering them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub seq: u64,
    pub replica: ReplicaId,
    pub location: LocationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<SaleRecord>,
    #[serde(default)]
    pub deficits: Vec<DeficitRecord>,
    /// Goods taken back at a till (a return, with its refunds), journaled like a sale so a
    /// rebuilt node can still send it to the hub (the card refund is owed to the customer).
    #[serde(default, rename = "return", skip_serializing_if = "Option::is_none")]
    pub returned: Option<ReturnRecord>,
    /// A marker, not a change: the hub acknowledged every record up to this seq. A rebuilt node
    /// replays only what comes after the last marker, so a sale the hub already counted is
    /// never recorded (and its stock taken) a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_upto: Option<u64>,
}

impl Stored for JournalRecord {
    const KIND: &'static str = "edge.journal";
    const VERSION: u16 = 1;
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct JournalScan {
    pub records: Vec<JournalRecord>,
    /// Byte ranges of the records, in file order.
    spans: Vec<(u64, u64)>,
    /// Bytes of the readable part.
    pub readable_bytes: u64,
    /// Bytes after it that did not read as a record (a torn write or damage).
    pub unreadable_bytes: u64,
}

/// Reads a journal file (a missing file reads as empty).
pub fn read_journal(path: &Path) -> Result<JournalScan, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut scan = JournalScan::default();
    let mut at = 0usize;
    while let Some((record, next)) = read_one(&bytes, at) {
        scan.spans.push((at as u64, (next - at) as u64));
        scan.records.push(record);
        at = next;
    }
    scan.readable_bytes = at as u64;
    scan.unreadable_bytes = (bytes.len() - at) as u64;
    Ok(scan)
}

fn read_one(bytes: &[u8], at: usize) -> Option<(JournalRecord, usize)> {
    let header = bytes.get(at..at + HEADER_BYTES as usize)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let start = at + HEADER_BYTES as usize;
    let payload = bytes.get(start..start + len as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let record = decode::<JournalRecord>(payload).ok()?;
    Some((record, start + len as usize))
}

fn frame(record: &JournalRecord) -> Result<Vec<u8>, StoreError> {
    let payload = encode(record)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD_BYTES)
        .ok_or_else(|| StoreError::Corrupt("journal record too large".into()))?;
    let mut out = Vec::with_capacity(payload.len() + HEADER_BYTES as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The live journal of a node.
pub(crate) struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Unit tests make `append` fail with this set.
    #[cfg(test)]
    pub(crate) fail_append: std::sync::atomic::AtomicBool,
}

struct Inner {
    file: File,
    /// Where every record of the file is.
    index: Vec<Span>,
    len: u64,
    /// The highest acknowledgement marker written.
    marked: u64,
}

/// One record of the file: its seq, offset and length, and whether it is a marker.
#[derive(Debug, Clone, Copy)]
struct Span {
    seq: u64,
    at: u64,
    len: u64,
    marker: bool,
}

fn marker(acked: u64, replica: &ReplicaId, location: &LocationId) -> JournalRecord {
    JournalRecord {
        seq: acked,
        replica: replica.clone(),
        location: location.clone(),
        sale: None,
        deficits: Vec::new(),
        returned: None,
        acked_upto: Some(acked),
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the records it holds.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<JournalRecord>), StoreError> {
        let path = dir.join(JOURNAL_FILE);
        let scan = read_journal(&path)?;
        if scan.unreadable_bytes > 0 {
            let aside = dir.join(format!(
                "{JOURNAL_FILE}.damaged-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            tracing::error!(
                path = %path.display(),
                kept_as = %aside.display(),
                unreadable_bytes = scan.unreadable_bytes,
                readable_records = scan.records.len(),
                "the journal ends in bytes that do not read as a record (a torn write or damage); the file is kept and the journal continues from its readable part"
            );
            std::fs::copy(&path, &aside)?;
        }
        let index: Vec<Span> = scan
            .records
            .iter()
            .zip(&scan.spans)
            .map(|(r, (at, len))| Span {
                seq: r.seq,
                at: *at,
                len: *len,
                marker: r.acked_upto.is_some(),
            })
            .collect();
        let journal = Journal {
            path: path.clone(),
            inner: Mutex::new(Inner {
                file: open_append(&path)?,
                index: Vec::new(),
                len: 0,
                marked: scan
                    .records
                    .iter()
                    .filter_map(|r| r.acked_upto)
                    .max()
                    .unwrap_or(0),
            }),
            #[cfg(test)]
            fail_append: std::sync::atomic::AtomicBool::new(false),
        };
        {
            let mut inner = journal.lock()?;
            if scan.unreadable_bytes > 0 {
                // Keep exactly the readable records.
                journal.rewrite(&mut inner, &index, |_| true, None)?;
            } else {
                inner.index = index;
                inner.len = scan.readable_bytes;
            }
        }
        Ok((journal, scan.records))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Corrupt("journal lock poisoned".into()))
    }

    /// Appends records and fsyncs before returning.
    pub fn append(&self, records: &[JournalRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock()?;
        self.append_locked(&mut inner, records)
    }

    fn append_locked(
        &self,
        inner: &mut Inner,
        records: &[JournalRecord],
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.fail_append.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected journal failure").into());
        }
        let mut bytes = Vec::new();
        let mut added = Vec::with_capacity(records.len());
        for r in records {
            let framed = frame(r)?;
            added.push(Span {
                seq: r.seq,
                at: inner.len + bytes.len() as u64,
                len: framed.len() as u64,
                marker: r.acked_upto.is_some(),
            });
            bytes.extend_from_slice(&framed);
        }
        if let Err(e) = inner
            .file
            .write_all(&bytes)
            .and_then(|_| inner.file.sync_data())
        {
            // A partial write is cut off so the next record starts on a record boundary.
            let len = inner.len;
            let _ = inner.file.set_len(len);
            return Err(e.into());
        }
        inner.len += bytes.len() as u64;
        inner.index.extend(added);
        Ok(())
    }

    /// Records in the journal (sales and deficits; acknowledgement markers are not counted).
    pub fn records(&self) -> usize {
        self.lock()
            .map_or(0, |i| i.index.iter().filter(|s| !s.marker).count())
    }

    /// The highest acknowledgement marker in the journal (0 without one).
    pub fn marked(&self) -> u64 {
        self.lock().map_or(0, |i| i.marked)
    }

    /// Drops the records covered by `acked` (the hub has them). Rewrites the file only when at
    /// least half of its records are acknowledged, so a long catch-up does not rewrite it at
    /// every ack; a rewritten file starts with an `acked_upto` marker. Between rewrites, an
    /// acknowledgement is recorded as a marker appended (fsync'd like a record).
    pub fn compact(
        &self,
        acked: u64,
        replica: &ReplicaId,
        location: &LocationId,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let records = inner.index.iter().filter(|s| !s.marker).count();
        let done = inner
            .index
            .iter()
            .filter(|s| !s.marker && s.seq <= acked)
            .count();
        if done == 0 {
            return Ok(false);
        }
        if done * 2 < records {
            if inner.marked < acked {
                self.append_locked(&mut inner, &[marker(acked, replica, location)])?;
                inner.marked = acked;
            }
            return Ok(false);
        }
        let index = inner.index.clone();
        let head = marker(acked, replica, location);
        self.rewrite(
            &mut inner,
            &index,
            |s| !s.marker && s.seq > acked,
            Some(&head),
        )?;
        inner.marked = inner.marked.max(acked);
        Ok(true)
    }

    /// Writes `head` (if any) and the kept records of `index` to a temporary file, fsyncs it,
    /// renames it over the journal and fsyncs the directory, then appends to the new file.
    fn rewrite(
        &self,
        inner: &mut Inner,
        index: &[Span],
        keep: impl Fn(&Span) -> bool,
        head: Option<&JournalRecord>,
    ) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("log.tmp");
        let mut source = File::open(&self.path)?;
        let mut out = File::create(&tmp)?;
        let mut kept = Vec::new();
        let mut len = 0u64;
        if let Some(head) = head {
            let framed = frame(head)?;
            out.write_all(&framed)?;
            kept.push(Span {
                seq: head.seq,
                at: 0,
                len: framed.len() as u64,
                marker: head.acked_upto.is_some(),
            });
            len += framed.len() as u64;
        }
        let mut buf = Vec::new();
        for span in index.iter().copied() {
            if !keep(&span) {
                continue;
            }
            buf.resize(span.len as usize, 0);
            source.seek(SeekFrom::Start(span.at))?;
            source.read_exact(&mut buf)?;
            out.write_all(&buf)?;
            kept.push(Span { at: len, ..span });
            len += span.len;
        }
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        inner.file = open_append(&self.path)?;
        inner.index = kept;
        inner.len = len;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::replication::Hlc;
    use protocol::{Currency, Money, Sku};
    use ulid::Ulid;

    fn record(seq: u64) -> JournalRecord {
        let me = ReplicaId("berlin".into());
        let at = Hlc {
            ms: seq,
            c: 0,
            r: me.clone(),
        };
        JournalRecord {
            seq,
            replica: me.clone(),
            location: LocationId("store-berlin".into()),
            sale: Some(SaleRecord {
                id: Ulid::new(),
                number: format!("berlin-{seq:06}"),
                replica: me.clone(),
                location: LocationId("store-berlin".into()),
                at: at.clone(),
                lines: vec![],
                total: Money::new(100, Currency::EUR),
                taxes: vec![],
                payments: vec![],
                customer: None,
                clerk: None,
                promotions: Default::default(),
                coupons: Vec::new(),
            }),
            deficits: vec![DeficitRecord {
                id: Ulid::new(),
                replica: me,
                location: LocationId("store-berlin".into()),
                sku: Sku::parse("COF-1").expect("sku"),
                units: 1,
                reason: "override".into(),
                sale: None,
                clerk: None,
                at,
            }],
            returned: None,
            acked_upto: None,
        }
    }

    fn me() -> (ReplicaId, LocationId) {
        (
            ReplicaId("berlin".into()),
            LocationId("store-berlin".into()),
        )
    }

    fn seqs(records: &[JournalRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn appended_records_read_back_after_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written: Vec<JournalRecord> = (1..=3).map(record).collect();
        {
            let (journal, found) = Journal::open(dir.path()).expect("opens");
            assert!(found.is_empty());
            journal.append(&written[..1]).expect("appends");
            journal.append(&written[1..]).expect("appends");
            assert_eq!(journal.records(), 3);
        }
        let (journal, found) = Journal::open(dir.path()).expect("reopens");
        assert_eq!(found, written);
        assert_eq!(journal.records(), 3);
    }

    #[test]
    fn compaction_keeps_exactly_the_unacknowledged_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (journal, _) = Journal::open(dir.path()).expect("opens");
        let written: Vec<JournalRecord> = (1..=6).map(record).collect();
        journal.append(&written).expect("appends");
        let (replica, location) = me();
        assert!(
            !journal.compact(2, &replica, &location).expect("compacts"),
            "a third acknowledged: not worth a rewrite yet"
        );
        // ... but the acknowledgement is marked, so a replay skips what the hub has.
        let scan = read_journal(&dir.path().join(JOURNAL_FILE)).expect("reads");
        assert_eq!(
            scan.records.last().and_then(|r| r.acked_upto),
            Some(2),
            "an acknowledgement marker"
        );
        assert!(journal.compact(4, &replica, &location).expect("compacts"));
        let path = dir.path().join(JOURNAL_FILE);
        let scan = read_journal(&path).expect("reads");
        assert_eq!(seqs(&scan.records), vec![4, 5, 6]);
        assert_eq!(
            scan.records[0].acked_upto,
            Some(4),
            "the rewritten file starts with its acknowledgement"
        );
        assert_eq!(journal.records(), 2, "markers are not records");
        assert_eq!(journal.marked(), 4);
        // Appending goes on in the new file.
        journal.append(&[record(7)]).expect("appends");
        assert_eq!(
            seqs(&read_journal(&path).expect("reads").records),
            vec![4, 5, 6, 7]
        );
        assert!(journal.compact(7, &replica, &location).expect("compacts"));
        let scan = read_journal(&path).expect("reads");
        assert_eq!(seqs(&scan.records), vec![7]);
        assert_eq!(scan.records[0].acked_upto, Some(7), "only the marker");
        assert_eq!(journal.records(), 0);
        // Nothing left to drop: no rewrite, no marker, however often it is asked.
        assert!(!journal.compact(7, &replica, &location).expect("compacts"));
        assert!(!journal.compact(9, &replica, &location).expect("compacts"));
        assert_eq!(read_journal(&path).expect("reads").records.len(), 1);
        assert!(!dir.path().join("journal.log.tmp").exists());
        // The marker survives reopening.
        drop(journal);
        let (journal, found) = Journal::open(dir.path()).expect("reopens");
        assert_eq!((journal.records(), journal.marked()), (0, 7));
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_kept_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written: Vec<JournalRecord> = (1..=2).map(record).collect();
        {
            let (journal, _) = Journal::open(dir.path()).expect("opens");
            journal.append(&written).expect("appends");
        }
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).expect("reads");
        let whole = bytes.len();
        // A third record torn mid-write, and a flipped bit would read the same way.
        bytes.extend_from_slice(&frame(&record(3)).expect("frames")[..20]);
        std::fs::write(&path, &bytes).expect("writes");
        let scan = read_journal(&path).expect("reads");
        assert_eq!((scan.records.len(), scan.unreadable_bytes), (2, 20));

        let (journal, found) = Journal::open(dir.path()).expect("reopens");
        assert_eq!(found, written);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), whole as u64);
        journal.append(&[record(4)]).expect("appends");
        assert_eq!(
            seqs(&read_journal(&path).expect("reads").records),
            vec![1, 2, 4]
        );
        let kept_aside = std::fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("damaged"));
        assert!(kept_aside);
    }

    #[test]
    fn a_damaged_payload_fails_its_checksum() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = frame(&record(1)).expect("frames");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).expect("writes");
        let scan = read_journal(&path).expect("reads");
        assert!(scan.records.is_empty());
        assert_eq!(scan.unreadable_bytes, bytes.len() as u64);
    }
}
