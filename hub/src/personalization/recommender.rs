//! The recommender: a consumer of the event feed with its own cursor (`recommendations`), on
//! its own thread like the analyst. It folds each batch of `order_placed` and `product_view`
//! events into "bought together" and "viewed together" ([`protocol::personalization::recommend`])
//! and writes what the batch changed — pair counts, top lists, viewing sessions — with its
//! cursor in one atomic, flushed batch, so a restart resumes exactly: nothing counted twice,
//! nothing missed.
//!
//! Memory stays bounded: a batch's changes are kept until they are written, everything else is
//! read from the tree (`recommendations`) when needed. Keys: `c{r}{a}\0{b}` → count (8 bytes,
//! big-endian), `n{r}{sku}` → `Neighbours`, `s{subject}` → `Session`, `kcursor` → sequence,
//! where `{r}` is `b` (bought) or `v` (viewed).
//!
//! In a cluster it folds on the holder of the `Recommender` singleton only (every commit
//! fenced by the term, starting from the stored cursor); the others read the tree and follow
//! the stored cursor, so [`super::Personalization::caught_up`] works on every node.

use crate::cluster::singleton::{Lead, Role, Term};
use crate::experience::feed::Feed;
use crate::storage::kv::{Batch, Keyspace, Tree};
use crate::storage::{Result, Storage, StorageError};
use actix::prelude::*;
use arc_swap::ArcSwap;
use protocol::personalization::recommend::{fold, Neighbours};
use protocol::personalization::{CoStore, Neighbour, Observation, Relation, Session};
use protocol::{codec, CatalogSnapshot, Subject};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The recommender's cursor name.
pub const CONSUMER: &str = "recommendations";
/// Events read per batch (large: a pair touched many times in a batch is written once).
const BATCH: usize = 65_536;
/// Entries kept in memory between batches; beyond, the cache is dropped after a commit and
/// refilled from the tree as batches need it.
const CACHE_ENTRIES: usize = 500_000;
/// Pause before reading again after a storage error.
const RETRY: Duration = Duration::from_secs(1);

fn tag(relation: Relation) -> u8 {
    match relation {
        Relation::BoughtTogether => b'b',
        Relation::ViewedTogether => b'v',
    }
}

fn count_key(relation: Relation, a: &str, b: &str) -> Vec<u8> {
    let mut k = vec![b'c', tag(relation)];
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn neighbours_key(relation: Relation, of: &str) -> Vec<u8> {
    let mut k = vec![b'n', tag(relation)];
    k.extend_from_slice(of.as_bytes());
    k
}

fn session_key(subject: &Subject) -> Vec<u8> {
    let mut k = vec![b's'];
    match subject {
        Subject::Customer(c) => {
            k.push(b'c');
            k.extend_from_slice(&c.to_bytes());
        }
        Subject::Anonymous(a) => {
            k.push(b'a');
            k.extend_from_slice(&a.to_bytes());
        }
    }
    k
}

const CURSOR_KEY: &[u8] = b"kcursor";

/// The recommendations tree.
pub struct RecommendationStore {
    keyspace: Keyspace,
    tree: Tree,
}

impl RecommendationStore {
    pub fn open(keyspace: &Keyspace) -> Result<RecommendationStore> {
        let tree = keyspace.open_tree("recommendations")?;
        Ok(RecommendationStore {
            keyspace: keyspace.clone(),
            tree,
        })
    }

    /// The last sequence durably folded in (0: none).
    pub fn cursor(&self) -> Result<u64> {
        Ok(self
            .tree
            .get(CURSOR_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The top neighbours of a SKU, best first.
    pub fn neighbours(&self, relation: Relation, sku: &str) -> Result<Vec<Neighbour>> {
        match self.tree.get(neighbours_key(relation, sku))? {
            Some(v) => Ok(codec::decode::<Neighbours>(&v)?.list),
            None => Ok(Vec::new()),
        }
    }

    fn count(&self, relation: Relation, a: &str, b: &str) -> Result<u64> {
        Ok(self
            .tree
            .get(count_key(relation, a, b))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn session(&self, subject: &Subject) -> Result<Option<Session>> {
        self.tree
            .get(session_key(subject))?
            .map(|v| codec::decode::<Session>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    /// Writes a batch's changes and the cursor atomically and durably (if `term` still holds
    /// the recommender, when there is one).
    fn commit(
        &self,
        changes: &Changes,
        names: &Names,
        cursor: u64,
        term: Option<&Term>,
    ) -> Result<()> {
        let mut batch = Batch::default();
        for ((r, a, b), n) in &changes.counts {
            batch.insert(
                count_key(*r, names.name(*a), names.name(*b)),
                n.to_be_bytes().to_vec(),
            );
        }
        for ((r, of), list) in &changes.neighbours {
            batch.insert(
                neighbours_key(*r, names.name(*of)),
                codec::encode(&Neighbours { list: list.clone() })?,
            );
        }
        for (subject, session) in &changes.sessions {
            batch.insert(session_key(subject), codec::encode(session)?);
        }
        batch.insert(CURSOR_KEY, cursor.to_be_bytes().to_vec());
        match term {
            Some(term) => term.apply(&self.keyspace, &self.tree, &batch)?,
            None => self.tree.apply_batch(batch)?,
        }
        self.tree.flush()?;
        Ok(())
    }
}

/// SKUs by number, so the fold's maps are keyed by small integers (no string copied per
/// lookup). Kept with the cache and dropped with it.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, sku: &str) -> u32 {
        if let Some(id) = self.ids.get(sku) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(sku.to_string());
        self.ids.insert(sku.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

type PairKey = (Relation, u32, u32);
type ListKey = (Relation, u32);

/// What one batch changed, read through to the tree for the rest.
#[derive(Default)]
struct Changes {
    counts: HashMap<PairKey, u64>,
    neighbours: HashMap<ListKey, Vec<Neighbour>>,
    sessions: HashMap<Subject, Session>,
}

/// What is durably stored, as far as the recommender has read or written it since the cache
/// was last dropped (a missing count is 0, a missing list empty, a missing session `None`).
/// Only committed changes enter it, so a failed batch leaves it true.
#[derive(Default)]
struct Cache {
    names: Names,
    counts: HashMap<PairKey, u64>,
    neighbours: HashMap<ListKey, Vec<Neighbour>>,
    sessions: HashMap<Subject, Option<Session>>,
}

impl Cache {
    fn len(&self) -> usize {
        self.counts.len() + self.neighbours.len() + self.sessions.len()
    }

    /// Takes in a batch's changes once they are durable.
    fn absorb(&mut self, changes: Changes) {
        self.counts.extend(changes.counts);
        self.neighbours.extend(changes.neighbours);
        self.sessions
            .extend(changes.sessions.into_iter().map(|(k, v)| (k, Some(v))));
        if self.len() > CACHE_ENTRIES {
            *self = Cache::default();
        }
    }
}

/// A batch's view: its own changes, then the cache, then the tree (filling the cache).
struct Overlay<'a> {
    store: &'a RecommendationStore,
    cache: &'a mut Cache,
    changes: Changes,
}

impl Overlay<'_> {
    fn pair(&mut self, relation: Relation, a: &str, b: &str) -> PairKey {
        (relation, self.cache.names.id(a), self.cache.names.id(b))
    }

    /// A pair's count before this batch's changes.
    fn stored_count(&mut self, key: PairKey) -> Result<u64> {
        if let Some(n) = self.cache.counts.get(&key) {
            return Ok(*n);
        }
        let names = &self.cache.names;
        let n = self
            .store
            .count(key.0, names.name(key.1), names.name(key.2))?;
        self.cache.counts.insert(key, n);
        Ok(n)
    }

    /// A top list before this batch's changes.
    fn stored_neighbours(&mut self, key: ListKey) -> Result<&Vec<Neighbour>> {
        if !self.cache.neighbours.contains_key(&key) {
            let list = self.store.neighbours(key.0, self.cache.names.name(key.1))?;
            self.cache.neighbours.insert(key, list);
        }
        Ok(&self.cache.neighbours[&key])
    }

    fn stored_session(&mut self, subject: &Subject) -> Result<Option<Session>> {
        if let Some(s) = self.cache.sessions.get(subject) {
            return Ok(s.clone());
        }
        let stored = self.store.session(subject)?;
        self.cache.sessions.insert(*subject, stored.clone());
        Ok(stored)
    }
}

impl CoStore for Overlay<'_> {
    type Error = StorageError;

    fn count(&mut self, relation: Relation, a: &str, b: &str) -> Result<u64> {
        let key = self.pair(relation, a, b);
        match self.changes.counts.get(&key) {
            Some(n) => Ok(*n),
            None => self.stored_count(key),
        }
    }

    fn set_count(&mut self, relation: Relation, a: &str, b: &str, count: u64) {
        let key = self.pair(relation, a, b);
        self.changes.counts.insert(key, count);
    }

    fn add_one(&mut self, relation: Relation, a: &str, b: &str) -> Result<u64> {
        let key = self.pair(relation, a, b);
        if let Some(n) = self.changes.counts.get_mut(&key) {
            *n += 1;
            return Ok(*n);
        }
        let n = self.stored_count(key)? + 1;
        self.changes.counts.insert(key, n);
        Ok(n)
    }

    fn neighbours(&mut self, relation: Relation, of: &str) -> Result<Vec<Neighbour>> {
        let key = (relation, self.cache.names.id(of));
        match self.changes.neighbours.get(&key) {
            Some(list) => Ok(list.clone()),
            None => self.stored_neighbours(key).cloned(),
        }
    }

    fn update_neighbours(
        &mut self,
        relation: Relation,
        of: &str,
        change: &mut dyn FnMut(&mut Vec<Neighbour>) -> bool,
    ) -> Result<()> {
        let key = (relation, self.cache.names.id(of));
        if let Some(list) = self.changes.neighbours.get_mut(&key) {
            change(list);
            return Ok(());
        }
        // First change in this batch: copied out of the cache (or the tree) once, then changed
        // in place for the rest of the batch.
        let mut list = self.stored_neighbours(key)?.clone();
        if change(&mut list) {
            self.changes.neighbours.insert(key, list);
        }
        Ok(())
    }

    fn set_neighbours(&mut self, relation: Relation, of: &str, list: Vec<Neighbour>) {
        let key = (relation, self.cache.names.id(of));
        self.changes.neighbours.insert(key, list);
    }

    fn session(&mut self, subject: &Subject) -> Result<Option<Session>> {
        match self.changes.sessions.get(subject) {
            Some(s) => Ok(Some(s.clone())),
            None => self.stored_session(subject),
        }
    }

    fn take_session(&mut self, subject: &Subject) -> Result<Option<Session>> {
        match self.changes.sessions.remove(subject) {
            Some(s) => Ok(Some(s)),
            None => self.stored_session(subject),
        }
    }

    fn set_session(&mut self, subject: &Subject, session: Session) {
        self.changes.sessions.insert(*subject, session);
    }
}

/// The recommender's state.
pub struct Recommender {
    storage: Arc<dyn Storage>,
    store: Arc<RecommendationStore>,
    catalog: Arc<ArcSwap<CatalogSnapshot>>,
    /// Taken while a read or a write is in flight.
    feed: Option<Feed>,
    /// Taken with the feed (`None` also after a fold panicked: it starts empty again).
    cache: Option<Cache>,
    /// The last sequence durably folded in.
    durable: watch::Sender<u64>,
    role: Role,
    /// Bumped when the role changes: a batch read or folded before is dropped.
    generation: u64,
}

impl Recommender {
    /// Loads the cursor; answers the actor and a watch of what it has durably folded in.
    pub fn load(
        storage: Arc<dyn Storage>,
        store: Arc<RecommendationStore>,
        catalog: Arc<ArcSwap<CatalogSnapshot>>,
        role: Role,
    ) -> Result<(Recommender, watch::Receiver<u64>)> {
        let cursor = store.cursor()?;
        let (durable, processed) = watch::channel(cursor);
        Ok((
            Recommender {
                feed: Some(Feed::new(storage.clone(), cursor)),
                cache: Some(Cache::default()),
                storage,
                store,
                catalog,
                durable,
                role,
                generation: 0,
            },
            processed,
        ))
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.role.works() {
            return;
        }
        let Some(mut feed) = self.feed.take() else {
            return;
        };
        let mut cache = self.cache.take().unwrap_or_default();
        let store = self.store.clone();
        let catalog = self.catalog.clone();
        let term = self.role.term().cloned();
        let generation = self.generation;
        ctx.spawn(
            async move {
                let cursor = feed.cursor();
                let (cache, result) = match feed.next(BATCH).await {
                    Ok(batch) => {
                        let last = feed.cursor();
                        let folded = tokio::task::spawn_blocking(move || {
                            let result =
                                fold_batch(&store, &catalog, &mut cache, &batch, last, term.as_ref());
                            (cache, result)
                        })
                        .await;
                        match folded {
                            Ok((cache, result)) => (Some(cache), result),
                            Err(e) => (None, Err(StorageError::Io(e.to_string()))),
                        }
                    }
                    Err(e) => (Some(cache), Err(e)),
                };
                (feed, cache, cursor, result)
            }
            .into_actor(self)
            .map(move |(feed, cache, cursor, result), act, ctx| {
                if generation != act.generation {
                    // The role changed meanwhile: `Lead` started over from the stored cursor.
                    return;
                }
                act.cache = cache;
                match result {
                    Ok(last) => {
                        act.feed = Some(feed);
                        act.durable.send_replace(last);
                        act.pump(ctx);
                    }
                    Err(StorageError::Fenced) => {
                        tracing::info!("the recommender was taken over by another node; following it");
                        act.follow_from_store();
                    }
                    Err(e) => {
                        // Nothing of the batch was written: read it again from the stored cursor.
                        tracing::error!(error = %e, "the recommender could not fold a batch; retrying");
                        act.feed = Some(Feed::new(act.storage.clone(), cursor));
                        ctx.run_later(RETRY, |act, ctx| act.pump(ctx));
                    }
                }
            }),
        );
    }
}

/// Folds a batch over the cache and commits what it changed with the cursor `last`; the
/// changes enter the cache only once they are durable.
fn fold_batch(
    store: &RecommendationStore,
    catalog: &ArcSwap<CatalogSnapshot>,
    cache: &mut Cache,
    batch: &crate::storage::SharedEvents,
    last: u64,
    term: Option<&Term>,
) -> Result<u64> {
    let snapshot = catalog.load();
    let mut overlay = Overlay {
        store,
        cache,
        changes: Changes::default(),
    };
    for s in batch.iter() {
        let sku_of_slug = |slug: &str| {
            snapshot
                .product_by_slug(slug)
                .and_then(|p| p.variants.first())
                .map(|v| v.sku.to_string())
        };
        if let Some(o) = Observation::of(&s.event, sku_of_slug) {
            fold(&mut overlay, &o)?;
        }
    }
    let Overlay { cache, changes, .. } = overlay;
    store.commit(&changes, &cache.names, last, term)?;
    cache.absorb(changes);
    Ok(last)
}

impl Actor for Recommender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
        ctx.run_interval(STANDBY_REFRESH, |act, _| {
            if !act.role.works() {
                act.follow_stored_cursor();
            }
        });
    }
}

/// How often a standby reads the holder's stored cursor.
const STANDBY_REFRESH: Duration = Duration::from_millis(200);

impl Recommender {
    /// Stops folding here: another node does.
    fn follow_from_store(&mut self) {
        self.role = Role::Standby;
        self.generation += 1;
        self.feed = None;
        self.cache = None;
    }

    /// What the holder stored is durably folded.
    fn follow_stored_cursor(&mut self) {
        match self.store.cursor() {
            Ok(stored) => {
                self.durable.send_if_modified(|d| {
                    let moved = stored > *d;
                    *d = (*d).max(stored);
                    moved
                });
            }
            Err(e) => tracing::warn!(error = %e, "the standby recommender cannot read the cursor"),
        }
    }
}

impl Handler<Lead> for Recommender {
    type Result = ();

    fn handle(&mut self, msg: Lead, ctx: &mut Context<Self>) {
        match msg.0 {
            Some(term) => {
                // Start over from what the previous holder stored (the cache may be stale).
                self.generation += 1;
                match self.store.cursor() {
                    Ok(cursor) => {
                        tracing::info!(cursor, "the recommender folds on this node");
                        self.role = Role::Holding(term);
                        self.feed = Some(Feed::new(self.storage.clone(), cursor));
                        self.cache = Some(Cache::default());
                        self.pump(ctx);
                    }
                    Err(e) => {
                        // The term's work goes on; the next term (or a restart) tries again.
                        tracing::error!(error = %e, "the recommender cannot read its cursor; not folding");
                    }
                }
            }
            None => self.follow_from_store(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::personalization::recommend::MemoryCoStore;
    use protocol::AnonymousId;
    use time::OffsetDateTime;

    /// Views and orders over a few SKUs and shoppers, deterministic for `seed`.
    fn observations(seed: u64, n: usize) -> Vec<Observation> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let shoppers: Vec<Subject> = (0..6)
            .map(|_| Subject::Anonymous(AnonymousId::new()))
            .collect();
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
        (0..n)
            .map(|i| {
                let at = start + time::Duration::minutes(i as i64);
                if next(10) == 0 {
                    Observation::Order((0..3).map(|_| format!("SKU-{}", next(8))).collect())
                } else {
                    Observation::View {
                        subject: shoppers[next(6) as usize],
                        at,
                        sku: format!("SKU-{}", next(8)),
                    }
                }
            })
            .collect()
    }

    /// Folding in batches over the cache, committing each, stores what one fold in memory
    /// computes — also when the cache is dropped between batches or a batch is thrown away
    /// uncommitted and folded again.
    #[test]
    fn batches_over_the_cache_store_what_a_fold_in_memory_computes() {
        for seed in 1..=20u64 {
            let db = sled::Config::new()
                .temporary(true)
                .open()
                .expect("a temporary database");
            let store = RecommendationStore::open(&Keyspace::sled(db)).expect("the tree");
            let all = observations(seed, 300);
            let mut model = MemoryCoStore::default();
            for o in &all {
                fold(&mut model, o).expect("folded");
            }
            let mut cache = Cache::default();
            for (i, batch) in all.chunks(37).enumerate() {
                if i % 3 == 1 {
                    // A failed batch: folded, never committed, so nothing of it is kept.
                    let mut overlay = Overlay {
                        store: &store,
                        cache: &mut cache,
                        changes: Changes::default(),
                    };
                    for o in batch {
                        fold(&mut overlay, o).expect("folded");
                    }
                }
                if i % 4 == 3 {
                    cache = Cache::default();
                }
                let mut overlay = Overlay {
                    store: &store,
                    cache: &mut cache,
                    changes: Changes::default(),
                };
                for o in batch {
                    fold(&mut overlay, o).expect("folded");
                }
                let changes = overlay.changes;
                store
                    .commit(&changes, &cache.names, i as u64 + 1, None)
                    .expect("committed");
                cache.absorb(changes);
            }
            for ((relation, of), list) in &model.neighbours {
                assert_eq!(
                    &store.neighbours(*relation, of).expect("read"),
                    list,
                    "seed {seed}: {relation:?} of {of}"
                );
            }
            for ((relation, a, b), n) in &model.counts {
                assert_eq!(
                    store.count(*relation, a, b).expect("read"),
                    *n,
                    "seed {seed}"
                );
            }
        }
    }
}
