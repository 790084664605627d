//! The experience layer's own tree (`experience`): consumer cursors, profiles, anonymous
//! ids joined to customers, the daily aggregates and basket tracks. A consumer writes the state
//! a batch changed **and** its cursor in one atomic batch, so after a restart it resumes exactly
//! where its last durable write left off: nothing counted twice, nothing missed.

use super::segments::SegmentState;
use crate::storage::kv::{Keyspace, Tree};
use crate::storage::{Result, StorageError};
use protocol::experience::{BasketTrack, ChannelDay, DayKey, Profile};
use protocol::{codec, AnonymousId, CustomerId, Stored, Subject};
use time::OffsetDateTime;
use ulid::Ulid;

/// Reads and writes of the `experience` tree.
pub struct ExperienceStore {
    keyspace: Keyspace,
    tree: Tree,
}

fn key(prefix: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 1 + rest.len());
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    k.extend_from_slice(rest);
    k
}

/// A subject in 17 bytes: `c` or `a`, then the ULID.
pub fn subject_bytes(subject: &Subject) -> [u8; 17] {
    let (tag, id) = match subject {
        Subject::Customer(c) => (b'c', c.to_bytes()),
        Subject::Anonymous(a) => (b'a', a.to_bytes()),
    };
    let mut out = [0u8; 17];
    out[0] = tag;
    out[1..].copy_from_slice(&id);
    out
}

/// The subject of [`subject_bytes`].
pub fn subject_from(bytes: &[u8]) -> Option<Subject> {
    let id = ulid::Ulid(u128::from_be_bytes(
        <[u8; 16]>::try_from(bytes.get(1..17)?).ok()?,
    ));
    match bytes.first()? {
        b'c' => Some(Subject::Customer(CustomerId(id))),
        b'a' => Some(Subject::Anonymous(AnonymousId(id))),
        _ => None,
    }
}

fn subject_key(subject: &Subject) -> Vec<u8> {
    key("profile", &subject_bytes(subject))
}

fn member_key(segment: Ulid, subject: &Subject) -> Vec<u8> {
    let mut rest = segment.to_bytes().to_vec();
    rest.extend_from_slice(&subject_bytes(subject));
    key("member", &rest)
}

/// Due times sort as unsigned big-endian bytes: the sign bit flipped.
fn due_key(at: OffsetDateTime, subject: &Subject) -> Vec<u8> {
    let secs = (at.unix_timestamp() as u64) ^ (1 << 63);
    let mut rest = secs.to_be_bytes().to_vec();
    rest.extend_from_slice(&subject_bytes(subject));
    key("due", &rest)
}

fn time_bytes(at: OffsetDateTime) -> Vec<u8> {
    at.unix_timestamp_nanos().to_be_bytes().to_vec()
}

fn time_from(bytes: &[u8]) -> Option<OffsetDateTime> {
    let nanos = i128::from_be_bytes(<[u8; 16]>::try_from(bytes).ok()?);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

fn day_key(k: &DayKey) -> Vec<u8> {
    let mut rest = k.day.to_julian_day().to_be_bytes().to_vec();
    rest.extend_from_slice(k.channel.as_bytes());
    key("day", &rest)
}

/// One atomic write of a consumer: changed state plus its cursor.
#[derive(Default)]
pub struct Write {
    batch: crate::storage::kv::Batch,
}

impl Write {
    pub fn cursor(&mut self, consumer: &str, seq: u64) {
        self.batch.insert(
            key("cursor", consumer.as_bytes()),
            seq.to_be_bytes().to_vec(),
        );
    }

    pub fn profile(&mut self, p: &Profile) -> Result<()> {
        self.put(subject_key(&p.subject), p)
    }

    pub fn remove_profile(&mut self, subject: &Subject) {
        self.batch.remove(subject_key(subject));
    }

    pub fn alias(&mut self, anonymous: AnonymousId, customer: CustomerId) {
        self.batch.insert(
            key("alias", &anonymous.to_bytes()),
            customer.to_bytes().to_vec(),
        );
    }

    pub fn remove_alias(&mut self, anonymous: AnonymousId) {
        self.batch.remove(key("alias", &anonymous.to_bytes()));
    }

    /// Remembers that a customer was erased and the pseudonym their events now carry.
    pub fn erased(&mut self, customer: CustomerId, pseudonym: AnonymousId) {
        self.batch.insert(
            key("erased", &customer.to_bytes()),
            pseudonym.to_bytes().to_vec(),
        );
    }

    pub fn day(&mut self, d: &ChannelDay) -> Result<()> {
        self.put(day_key(&d.key), d)
    }

    pub fn basket(&mut self, b: &BasketTrack) -> Result<()> {
        self.put(key("basket", b.basket.as_bytes()), b)
    }

    /// A segment's evaluation state (`None`: removed).
    pub fn segment_state(&mut self, id: Ulid, state: Option<&SegmentState>) -> Result<()> {
        let k = key("segstate", &id.to_bytes());
        match state {
            Some(s) => self.put(k, s),
            None => {
                self.batch.remove(k);
                Ok(())
            }
        }
    }

    /// A subject entered a segment at `entered` (`None`: left it).
    pub fn member(&mut self, segment: Ulid, subject: &Subject, entered: Option<OffsetDateTime>) {
        let k = member_key(segment, subject);
        match entered {
            Some(at) => self.batch.insert(k, time_bytes(at)),
            None => self.batch.remove(k),
        }
    }

    /// Adds (or removes) a subject's entry in the due-time index.
    pub fn due(&mut self, at: OffsetDateTime, subject: &Subject, present: bool) {
        let k = due_key(at, subject);
        if present {
            self.batch.insert(k, Vec::new());
        } else {
            self.batch.remove(k);
        }
    }

    fn put<T: Stored>(&mut self, k: Vec<u8>, value: &T) -> Result<()> {
        self.batch.insert(k, codec::encode(value)?);
        Ok(())
    }
}

impl ExperienceStore {
    pub fn open(keyspace: &Keyspace) -> Result<ExperienceStore> {
        let tree = keyspace.open_tree("experience")?;
        Ok(ExperienceStore {
            keyspace: keyspace.clone(),
            tree,
        })
    }

    /// Applies a write atomically and durably.
    pub fn commit(&self, write: Write) -> Result<()> {
        self.tree.apply_batch(write.batch)?;
        self.tree.flush()
    }

    /// Applies a write atomically and durably if `term` still holds its singleton
    /// (`StorageError::Fenced`, nothing written, once another node took it over).
    pub fn commit_fenced(
        &self,
        write: Write,
        term: &crate::cluster::singleton::Term,
    ) -> Result<()> {
        term.apply(&self.keyspace, &self.tree, &write.batch)?;
        self.tree.flush()
    }

    /// A consumer's cursor: the last sequence it has durably handled (0: none).
    pub fn cursor(&self, consumer: &str) -> Result<u64> {
        Ok(self
            .tree
            .get(key("cursor", consumer.as_bytes()))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn profile(&self, subject: &Subject) -> Result<Option<Profile>> {
        self.get(&subject_key(subject))
    }

    /// The customer an anonymous id was joined to.
    pub fn alias(&self, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
        Ok(self
            .tree
            .get(key("alias", &anonymous.to_bytes()))?
            .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
            .map(|b| CustomerId(ulid::Ulid(u128::from_be_bytes(b)))))
    }

    /// Every erased customer with their pseudonym.
    pub fn erased_all(&self) -> Result<Vec<(CustomerId, AnonymousId)>> {
        let prefix = key("erased", &[]);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let ids = <[u8; 16]>::try_from(&k[prefix.len()..])
                .ok()
                .zip(<[u8; 16]>::try_from(v.as_slice()).ok());
            if let Some((c, a)) = ids {
                out.push((
                    CustomerId(ulid::Ulid(u128::from_be_bytes(c))),
                    AnonymousId(ulid::Ulid(u128::from_be_bytes(a))),
                ));
            }
        }
        Ok(out)
    }

    /// Every daily bucket and basket track (loaded once at start).
    pub fn aggregates(&self) -> Result<(Vec<ChannelDay>, Vec<BasketTrack>)> {
        Ok((self.scan("day")?, self.scan("basket")?))
    }

    /// Every segment's evaluation state.
    pub fn segment_states(&self) -> Result<Vec<SegmentState>> {
        self.scan("segstate")
    }

    /// Up to `limit` subjects whose due time is at or before `now`, with that time.
    pub fn due_until(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(OffsetDateTime, Subject)>> {
        let prefix = key("due", &[]);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix).take(limit) {
            let (k, _) = kv?;
            let rest = &k[prefix.len()..];
            let secs = <[u8; 8]>::try_from(rest.get(..8).unwrap_or_default())
                .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
            let (Some(at), Some(subject)) = (secs, subject_from(rest.get(8..).unwrap_or_default()))
            else {
                continue;
            };
            if at > now {
                break;
            }
            out.push((at, subject));
        }
        Ok(out)
    }

    /// Up to `limit` subjects with a stored profile, in key order, after `after`
    /// ([`subject_bytes`]; empty for the start).
    pub fn profiles_after(&self, after: &[u8], limit: usize) -> Result<Vec<Subject>> {
        let prefix = key("profile", &[]);
        let mut start = prefix.clone();
        start.extend_from_slice(after);
        if !after.is_empty() {
            // The next key after `after` (keys under the prefix are all 17 bytes long).
            start.push(0);
        }
        let mut out = Vec::new();
        for kv in self.tree.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) || out.len() == limit {
                break;
            }
            out.extend(subject_from(&k[prefix.len()..]));
        }
        Ok(out)
    }

    /// Up to `limit` members of a segment after `after`, in subject order, with the time
    /// they entered.
    pub fn members(
        &self,
        segment: Ulid,
        after: Option<&Subject>,
        limit: usize,
    ) -> Result<Vec<(Subject, OffsetDateTime)>> {
        let prefix = key("member", &segment.to_bytes());
        let start = match after {
            Some(s) => {
                let mut k = member_key(segment, s);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for kv in self.tree.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() == limit {
                break;
            }
            if let (Some(s), Some(at)) = (subject_from(&k[prefix.len()..]), time_from(&v)) {
                out.push((s, at));
            }
        }
        Ok(out)
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        self.tree
            .get(k)?
            .map(|v| codec::decode::<T>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    fn scan<T: Stored>(&self, prefix: &str) -> Result<Vec<T>> {
        self.tree
            .scan_prefix(key(prefix, &[]))
            .map(|kv| kv.and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from)))
            .collect()
    }
}
