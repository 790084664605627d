//! The analyst: one actor that tails the event feed in batches and keeps the profiles and the
//! aggregates up to date. It owns both (reports and profile reads are messages to it), writes
//! what each batch changed together with its cursor in one atomic write, and folds the next
//! batch while that write is in flight (the next write then carries both: a group commit).
//!
//! Profiles: an event is filed under its subject's profile; an anonymous id joined to a
//! customer (a `signed_in` or `registered` event carrying `anonymous_id`) files under the
//! customer, and the anonymous profile built so far is folded into the customer's at the join.
//! The first join of an anonymous id wins (a shared device stays with its first customer).
//!
//! Segments: after folding a batch the analyst re-evaluates the segments of every profile the
//! batch changed, and between batches it runs bounded steps of background work (profiles whose
//! due time passed on the injected clock, backfills of new or changed segments, letting a
//! deleted segment's members go); see [`super::segments`].
//!
//! In a cluster the analyst folds on one node only, the holder of the `Analyst` singleton
//! ([`Role::Holding`], every write fenced by its term); the others are on [`Role::Standby`]:
//! they fold nothing and follow the stored state (reloaded when the stored cursor moves), so
//! reports and profiles read the same everywhere and [`super::Experience::caught_up`] waits
//! for the cursor the holder advances. A new holder starts from the stored state and cursor.

use super::feed::Feed;
use super::segments::{SegmentDefinition, SegmentEngine, SegmentStatus, Work};
use super::store::{ExperienceStore, Write};
use crate::clock::Clock;
use crate::cluster::singleton::{Lead, Role};
use crate::storage::{Result, SharedEvents, Storage, StorageError};
use actix::prelude::*;
use protocol::experience::{Aggregates, Profile};
use protocol::{AnonymousId, CustomerId, Event, EventKind, Subject};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// The analyst's cursor name in the experience tree.
pub const CONSUMER: &str = "analytics";
/// Events read per batch.
const BATCH: usize = 4096;
/// Profiles kept in memory; beyond, the cache is dropped after a durable write.
const PROFILE_CACHE: usize = 100_000;
/// Pause before reading again after a storage error.
const RETRY: Duration = Duration::from_secs(1);
/// How often (in real time) the analyst looks for segment work: due profiles by the injected
/// clock, backfills, deletions. Finding none is one short index scan.
const SEGMENT_TICK: Duration = Duration::from_secs(1);
/// How often a standby looks whether the holder stored more (one key read).
const STANDBY_REFRESH: Duration = Duration::from_millis(200);

/// The analyst's state.
pub struct Analyst {
    storage: Arc<dyn Storage>,
    store: Arc<ExperienceStore>,
    /// Taken while a read is in flight.
    feed: Option<Feed>,
    aggregates: Aggregates,
    profiles: HashMap<Subject, Profile>,
    changed_profiles: HashSet<Subject>,
    removed_profiles: HashSet<Subject>,
    /// Anonymous id → the customer it was joined to (`None`: looked up, not joined).
    owners: HashMap<AnonymousId, Option<CustomerId>>,
    new_aliases: Vec<(AnonymousId, CustomerId)>,
    removed_aliases: Vec<AnonymousId>,
    erased: HashMap<CustomerId, AnonymousId>,
    new_erasures: Vec<(CustomerId, AnonymousId)>,
    /// The last sequence folded in memory.
    handled: u64,
    writing: bool,
    /// Answers owed once the changes made before them are durable.
    waiting: Vec<oneshot::Sender<Result<()>>>,
    /// The last sequence durably handled.
    durable: watch::Sender<u64>,
    /// Bumped when the state is reloaded: a read started before is dropped.
    generation: u64,
    clock: Arc<dyn Clock>,
    segments: SegmentEngine,
    /// Segment work found more to do: look again as soon as the write is durable.
    segment_work: bool,
    role: Role,
}

/// A customer's (or anonymous shopper's) profile, `None` if they have none.
#[derive(Message)]
#[rtype(result = "Result<Option<Profile>>")]
pub struct GetProfile(pub Subject);

/// Runs a read over the aggregates (a report) inside the actor.
pub struct ReadAggregates<R, F>(pub F, pub std::marker::PhantomData<R>);

impl<R: 'static, F: FnOnce(&Aggregates) -> R + Send + 'static> Message for ReadAggregates<R, F> {
    type Result = R;
}

/// Replaces the segment definitions (after a change, or at start): new and changed segments
/// are evaluated over every profile in the background, deleted ones let their members go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncSegments(pub Vec<SegmentDefinition>);

/// Every segment's evaluation status, by segment id.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, SegmentStatus>")]
pub struct SegmentStatuses;

/// Erases a customer's profile: moves it to `pseudonym` without its identifying parts, and
/// files later events of the customer under the pseudonym. Answers once durable.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Erase {
    pub customer: CustomerId,
    pub pseudonym: AnonymousId,
}

impl Analyst {
    /// Loads the stored state and its cursor.
    pub fn load(
        storage: Arc<dyn Storage>,
        store: Arc<ExperienceStore>,
        clock: Arc<dyn Clock>,
        definitions: Vec<SegmentDefinition>,
        role: Role,
    ) -> Result<(Analyst, watch::Receiver<u64>)> {
        let cursor = store.cursor(CONSUMER)?;
        let (days, baskets) = store.aggregates()?;
        let erased = store.erased_all()?.into_iter().collect();
        let (durable, processed) = watch::channel(cursor);
        let segments = SegmentEngine::load(&store, definitions)?;
        let analyst = Analyst {
            feed: Some(Feed::new(storage.clone(), cursor)),
            storage,
            store,
            aggregates: Aggregates::restore(days, baskets),
            profiles: HashMap::new(),
            changed_profiles: HashSet::new(),
            removed_profiles: HashSet::new(),
            owners: HashMap::new(),
            new_aliases: Vec::new(),
            removed_aliases: Vec::new(),
            erased,
            new_erasures: Vec::new(),
            handled: cursor,
            writing: false,
            waiting: Vec::new(),
            durable,
            generation: 0,
            clock,
            segments,
            segment_work: true,
            role,
        };
        Ok((analyst, processed))
    }

    /// Whether this analyst folds (and writes) rather than follows.
    fn folds(&self) -> bool {
        !matches!(self.role, Role::Standby)
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.folds() {
            return;
        }
        let Some(mut feed) = self.feed.take() else {
            return;
        };
        let generation = self.generation;
        ctx.spawn(
            async move {
                let batch = feed.next(BATCH).await;
                (feed, batch)
            }
            .into_actor(self)
            .map(move |(feed, batch), act, ctx| {
                if generation != act.generation {
                    // Read for a state since reloaded: dropped (the fresh feed reads again).
                    return act.pump(ctx);
                }
                act.feed = Some(feed);
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "the analyst could not read the event feed; retrying");
                        ctx.run_later(RETRY, |act, ctx| act.pump(ctx));
                        return;
                    }
                };
                match act.fold_batch(&batch).and_then(|()| act.evaluate_changed()) {
                    Ok(()) => {
                        act.write(ctx);
                        act.pump(ctx);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the analyst could not fold a batch; reloading");
                        act.recover(ctx);
                    }
                }
            }),
        );
    }

    /// Starts over from the stored state once no write is in flight.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            ctx.run_later(RETRY, |act, ctx| act.recover(ctx));
        } else {
            self.reload(ctx);
        }
    }

    fn fold_batch(&mut self, batch: &SharedEvents) -> Result<()> {
        for s in batch.iter() {
            self.fold(&s.event)?;
            self.handled = s.seq;
        }
        Ok(())
    }

    /// Folds one event into the aggregates and its owner's profile.
    pub fn fold(&mut self, e: &Event) -> Result<()> {
        self.aggregates.apply(e);
        if let (Subject::Customer(customer), EventKind::SignedIn | EventKind::Registered) =
            (e.subject, e.kind)
        {
            let anonymous = e
                .payload
                .get("anonymous_id")
                .and_then(|a| a.parse::<AnonymousId>().ok());
            if let Some(anonymous) = anonymous {
                self.join(anonymous, customer)?;
            }
        }
        let owner = self.owner(e.subject)?;
        self.profile_mut(owner)?.apply(e);
        Ok(())
    }

    /// The profile an event of `subject` is filed under.
    fn owner(&mut self, subject: Subject) -> Result<Subject> {
        Ok(match subject {
            Subject::Customer(c) => match self.erased.get(&c) {
                Some(pseudonym) => Subject::Anonymous(*pseudonym),
                None => subject,
            },
            Subject::Anonymous(a) => match self.joined(a)? {
                Some(c) => self.owner(Subject::Customer(c))?,
                None => subject,
            },
        })
    }

    fn joined(&mut self, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
        if let Some(known) = self.owners.get(&anonymous) {
            return Ok(*known);
        }
        let found = self.store.alias(anonymous)?;
        self.owners.insert(anonymous, found);
        Ok(found)
    }

    fn join(&mut self, anonymous: AnonymousId, customer: CustomerId) -> Result<()> {
        if self.joined(anonymous)?.is_some() {
            return Ok(());
        }
        self.owners.insert(anonymous, Some(customer));
        self.new_aliases.push((anonymous, customer));
        let anon = Subject::Anonymous(anonymous);
        let owner = self.owner(Subject::Customer(customer))?;
        let folded = self.take_profile(anon)?;
        let profile = self.profile_mut(owner)?;
        match folded {
            Some(p) => profile.absorb(p),
            None => {
                profile.anonymous_ids.insert(anonymous);
            }
        }
        Ok(())
    }

    fn take_profile(&mut self, subject: Subject) -> Result<Option<Profile>> {
        let found = match self.profiles.remove(&subject) {
            Some(p) => Some(p),
            None => self.store.profile(&subject)?,
        };
        if let Some(p) = &found {
            self.segments.forget(p);
            self.changed_profiles.remove(&subject);
            self.removed_profiles.insert(subject);
        }
        Ok(found)
    }

    fn profile_mut(&mut self, subject: Subject) -> Result<&mut Profile> {
        if !self.profiles.contains_key(&subject) {
            let stored = self
                .store
                .profile(&subject)?
                .unwrap_or_else(|| Profile::new(subject));
            self.profiles.insert(subject, stored);
        }
        self.removed_profiles.remove(&subject);
        self.changed_profiles.insert(subject);
        self.profiles
            .get_mut(&subject)
            .ok_or_else(|| StorageError::Io("profile cache".into()))
    }

    /// Writes everything changed since the last write, with the cursor, unless a write is in
    /// flight (its completion starts the next one).
    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || !self.folds() {
            return;
        }
        let durable = *self.durable.borrow();
        let nothing = self.changed_profiles.is_empty()
            && self.removed_profiles.is_empty()
            && self.new_erasures.is_empty()
            && self.segments.is_clean()
            && self.handled == durable;
        if nothing {
            for w in self.waiting.drain(..) {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let cursor = self.handled;
        let waiting = std::mem::take(&mut self.waiting);
        let write = match self.stage(cursor) {
            Ok(w) => w,
            Err(e) => return self.failed(e, waiting, ctx),
        };
        self.writing = true;
        let store = self.store.clone();
        let term = match &self.role {
            Role::Holding(term) => Some(term.clone()),
            Role::Alone | Role::Standby => None,
        };
        ctx.spawn(
            async move {
                tokio::task::spawn_blocking(move || match term {
                    Some(term) => store.commit_fenced(write, &term),
                    None => store.commit(write),
                })
                .await
                .map_err(|e| StorageError::Io(e.to_string()))?
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.writing = false;
                match result {
                    Ok(()) => {
                        act.durable.send_replace(cursor);
                        for w in waiting {
                            let _ = w.send(Ok(()));
                        }
                        if act.profiles.len() > PROFILE_CACHE && act.changed_profiles.is_empty() {
                            act.profiles.clear();
                            act.owners.clear();
                        }
                        act.write(ctx);
                        if act.segment_work {
                            act.segment_step(ctx);
                        }
                    }
                    Err(e) => act.failed(e, waiting, ctx),
                }
            }),
        );
    }

    fn stage(&mut self, cursor: u64) -> Result<Write> {
        let mut write = Write::default();
        write.cursor(CONSUMER, cursor);
        for subject in self.changed_profiles.drain() {
            if let Some(p) = self.profiles.get(&subject) {
                write.profile(p)?;
            }
        }
        for subject in self.removed_profiles.drain() {
            write.remove_profile(&subject);
        }
        for (a, c) in self.new_aliases.drain(..) {
            write.alias(a, c);
        }
        for a in self.removed_aliases.drain(..) {
            write.remove_alias(a);
        }
        for (c, p) in self.new_erasures.drain(..) {
            write.erased(c, p);
        }
        let (days, baskets) = self.aggregates.take_dirty();
        for d in &days {
            write.day(d)?;
        }
        for b in &baskets {
            write.basket(b)?;
        }
        self.segments.stage(&mut write)?;
        Ok(write)
    }

    /// A write failed: what is in memory is ahead of what is stored, so the analyst starts
    /// over from the stored state and cursor (nothing is counted twice).
    fn failed(
        &mut self,
        e: StorageError,
        waiting: Vec<oneshot::Sender<Result<()>>>,
        ctx: &mut Context<Self>,
    ) {
        for w in waiting {
            let _ = w.send(Err(e.clone()));
        }
        if matches!(e, StorageError::Fenced) {
            // Another node folds now; its `Lead(None)` for this node is on its way.
            tracing::info!("the analyst was taken over by another node; following it");
            self.role = Role::Standby;
        } else {
            tracing::error!(error = %e, "the analyst could not store its state; reloading");
        }
        self.reload(ctx);
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let loaded = Analyst::load(
            self.storage.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.segments.definitions(),
            self.role.clone(),
        );
        match loaded {
            Ok((mut fresh, _)) => {
                fresh.durable = self.durable.clone();
                fresh.waiting = std::mem::take(&mut self.waiting);
                fresh.generation = self.generation + 1;
                *self = fresh;
                // What is stored is durably folded (by this node or the holder).
                let stored = self.handled;
                self.durable.send_if_modified(|d| {
                    let moved = stored > *d;
                    *d = (*d).max(stored);
                    moved
                });
                self.pump(ctx);
            }
            Err(e) => {
                tracing::error!(error = %e, "the analyst could not reload its state; retrying");
                ctx.run_later(RETRY, |act, ctx| act.reload(ctx));
            }
        }
    }
}

impl Actor for Analyst {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
        ctx.run_interval(SEGMENT_TICK, |act, ctx| {
            act.segment_work = true;
            act.segment_step(ctx);
        });
        ctx.run_interval(STANDBY_REFRESH, |act, ctx| act.follow(ctx));
    }
}

impl Analyst {
    /// On a standby: reloads the stored state when the holder stored more.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        if self.folds() || self.writing {
            return;
        }
        match self.store.cursor(CONSUMER) {
            Ok(stored) if stored != self.handled => self.reload(ctx),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the standby analyst cannot read the cursor"),
        }
    }
}

impl Handler<Lead> for Analyst {
    type Result = ();

    fn handle(&mut self, msg: Lead, ctx: &mut Context<Self>) {
        match msg.0 {
            Some(term) => {
                // The term's holder key is claimed: everything stored before is readable.
                tracing::info!("the analyst folds on this node");
                self.role = Role::Holding(term);
                self.recover(ctx);
            }
            None => {
                self.role = Role::Standby;
                // A read in flight is dropped; a write in flight ends on its own (fenced if
                // the next holder claimed first).
                self.generation += 1;
                self.feed = None;
                for w in self.waiting.drain(..) {
                    let _ = w.send(Err(StorageError::Io(
                        "the analyst moved to another node; try again".into(),
                    )));
                }
            }
        }
    }
}

impl Handler<GetProfile> for Analyst {
    type Result = Result<Option<Profile>>;

    fn handle(&mut self, msg: GetProfile, _ctx: &mut Context<Self>) -> Self::Result {
        let subject = match msg.0 {
            Subject::Customer(c) => match self.erased.get(&c) {
                Some(_) => return Ok(None),
                None => msg.0,
            },
            other => other,
        };
        match self.profiles.get(&subject) {
            Some(p) => Ok(Some(p.clone())),
            None => self.store.profile(&subject),
        }
    }
}

impl<R: 'static, F: FnOnce(&Aggregates) -> R + Send + 'static> Handler<ReadAggregates<R, F>>
    for Analyst
{
    type Result = MessageResult<ReadAggregates<R, F>>;

    fn handle(&mut self, msg: ReadAggregates<R, F>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&self.aggregates))
    }
}

impl Handler<Erase> for Analyst {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Erase, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if !self.folds() {
            // The holder is the one writer of profiles; the erasure job stays recorded and
            // the holder finishes it (`crate::experience::privacy::resume`).
            let _ = tx.send(Err(StorageError::Io(
                "the analyst runs on another node; the erasure is finished there".into(),
            )));
            return Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? });
        }
        match self.erase(msg.customer, msg.pseudonym) {
            Ok(()) => {
                self.waiting.push(tx);
                self.write(ctx);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? })
    }
}

impl Analyst {
    fn erase(&mut self, customer: CustomerId, pseudonym: AnonymousId) -> Result<()> {
        let profile = self.take_profile(Subject::Customer(customer))?;
        self.erased.insert(customer, pseudonym);
        self.new_erasures.push((customer, pseudonym));
        if let Some(mut p) = profile {
            for a in std::mem::take(&mut p.anonymous_ids) {
                self.owners.remove(&a);
                self.removed_aliases.push(a);
            }
            let pseudonymous = Subject::Anonymous(pseudonym);
            p.erase(pseudonymous);
            self.removed_profiles.remove(&pseudonymous);
            self.changed_profiles.insert(pseudonymous);
            self.profiles.insert(pseudonymous, p);
        }
        Ok(())
    }
}

impl Analyst {
    /// Re-evaluates the segments of every profile changed since the last write.
    fn evaluate_changed(&mut self) -> Result<()> {
        let now = self.clock.now();
        for subject in &self.changed_profiles {
            if let Some(p) = self.profiles.get_mut(subject) {
                self.segments.reconcile(p, now);
            }
        }
        Ok(())
    }

    /// One bounded step of segment work, when no write is in flight (the step reads the
    /// indexes from the store, which must hold everything staged before).
    fn segment_step(&mut self, ctx: &mut Context<Self>) {
        if self.writing || !self.segment_work || !self.folds() {
            return;
        }
        let now = self.clock.now();
        let work = self
            .segments
            .work(&self.store, now)
            .and_then(|work| match work {
                Work::Idle => Ok(false),
                Work::Evaluate(subjects) => {
                    for subject in subjects {
                        self.evaluate_stored(subject, now)?;
                    }
                    Ok(true)
                }
            });
        match work {
            Ok(more) => {
                self.segment_work = more;
                self.write(ctx);
            }
            Err(e) => {
                tracing::error!(error = %e, "the analyst could not evaluate segments; reloading");
                self.recover(ctx);
            }
        }
    }

    /// Evaluates one profile if it exists (in the cache or the store).
    fn evaluate_stored(&mut self, subject: Subject, now: time::OffsetDateTime) -> Result<()> {
        if !self.profiles.contains_key(&subject) {
            match self.store.profile(&subject)? {
                Some(p) => {
                    self.profiles.insert(subject, p);
                }
                None => return Ok(()),
            }
        }
        if let Some(p) = self.profiles.get_mut(&subject) {
            if self.segments.reconcile(p, now) {
                self.removed_profiles.remove(&subject);
                self.changed_profiles.insert(subject);
            }
        }
        Ok(())
    }
}

impl Handler<SyncSegments> for Analyst {
    type Result = ();

    fn handle(&mut self, msg: SyncSegments, ctx: &mut Context<Self>) {
        self.segments.sync(msg.0);
        self.segment_work = true;
        self.write(ctx);
        self.segment_step(ctx);
    }
}

impl Handler<SegmentStatuses> for Analyst {
    type Result = MessageResult<SegmentStatuses>;

    fn handle(&mut self, _: SegmentStatuses, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.segments.statuses())
    }
}
