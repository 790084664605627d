//! The experience layer's own sled tree (`experience`): consumer cursors, profiles, anonymous
//! ids joined to customers, the daily aggregates and basket tracks. A consumer writes the state
//! a batch changed **and** its cursor in one atomic batch, so after a restart it resumes exactly
//! where its last durable write left off: nothing counted twice, nothing missed.

use crate::storage::sled::SledStorage;
use crate::storage::{Result, StorageError};
use protocol::experience::{BasketTrack, ChannelDay, DayKey, Profile};
use protocol::{codec, AnonymousId, CustomerId, Stored, Subject};

/// Reads and writes of the `experience` tree.
pub struct ExperienceStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn key(prefix: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 1 + rest.len());
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    k.extend_from_slice(rest);
    k
}

fn subject_key(subject: &Subject) -> Vec<u8> {
    let mut rest = Vec::with_capacity(17);
    match subject {
        Subject::Customer(c) => {
            rest.push(b'c');
            rest.extend_from_slice(&c.to_bytes());
        }
        Subject::Anonymous(a) => {
            rest.push(b'a');
            rest.extend_from_slice(&a.to_bytes());
        }
    }
    key("profile", &rest)
}

fn day_key(k: &DayKey) -> Vec<u8> {
    let mut rest = k.day.to_julian_day().to_be_bytes().to_vec();
    rest.extend_from_slice(k.channel.as_bytes());
    key("day", &rest)
}

/// One atomic write of a consumer: changed state plus its cursor.
#[derive(Default)]
pub struct Write {
    batch: sled::Batch,
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

    fn put<T: Stored>(&mut self, k: Vec<u8>, value: &T) -> Result<()> {
        self.batch.insert(k, codec::encode(value)?);
        Ok(())
    }
}

impl ExperienceStore {
    pub fn open(storage: &SledStorage) -> Result<ExperienceStore> {
        let (db, tree, _events) = storage.module_trees("experience")?;
        Ok(ExperienceStore { db, tree })
    }

    /// Applies a write atomically and durably.
    pub fn commit(&self, write: Write) -> Result<()> {
        self.tree.apply_batch(write.batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    /// A consumer's cursor: the last sequence it has durably handled (0: none).
    pub fn cursor(&self, consumer: &str) -> Result<u64> {
        Ok(self
            .tree
            .get(key("cursor", consumer.as_bytes()))
            .map_err(io)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn profile(&self, subject: &Subject) -> Result<Option<Profile>> {
        self.get(&subject_key(subject))
    }

    /// The customer an anonymous id was joined to.
    pub fn alias(&self, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
        Ok(self
            .tree
            .get(key("alias", &anonymous.to_bytes()))
            .map_err(io)?
            .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
            .map(|b| CustomerId(ulid::Ulid(u128::from_be_bytes(b)))))
    }

    /// Every erased customer with their pseudonym.
    pub fn erased_all(&self) -> Result<Vec<(CustomerId, AnonymousId)>> {
        let prefix = key("erased", &[]);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(io)?;
            let ids = <[u8; 16]>::try_from(&k[prefix.len()..])
                .ok()
                .zip(<[u8; 16]>::try_from(v.as_ref()).ok());
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

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        self.tree
            .get(k)
            .map_err(io)?
            .map(|v| codec::decode::<T>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    fn scan<T: Stored>(&self, prefix: &str) -> Result<Vec<T>> {
        self.tree
            .scan_prefix(key(prefix, &[]))
            .map(|kv| {
                kv.map_err(io)
                    .and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from))
            })
            .collect()
    }
}
