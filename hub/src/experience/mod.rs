//! The experience layer (issue 9): the event feed in append order ([`feed`]), per-customer
//! profiles and incrementally updated aggregates kept by the [`analyst::Analyst`] actor, the
//! reports over them ([`reports`]), event export as NDJSON ([`routes`]), the shopper's data
//! download and erasure ([`privacy`]), and segments evaluated by the analyst as events arrive
//! ([`segments`], API in [`segment_routes`]).
//!
//! Personalization and A/B tests build on this: they read [`Profile`]s (`segments` holds the
//! keys of the segments a profile is in; [`Experience::segments_of`]) and tail the same feed
//! with a cursor of their own.

pub mod analyst;
pub mod feed;
pub mod privacy;
pub mod reports;
pub mod routes;
pub mod segment_routes;
pub mod segments;
pub mod store;

use crate::clock::Clock;
use crate::storage::kv::Keyspace;
use crate::storage::{Result, Storage, StorageError};
use actix::prelude::*;
use analyst::{Analyst, GetProfile, ReadAggregates, SegmentStatuses, SyncSegments};
use protocol::experience::{Aggregates, Profile};
use protocol::Subject;
use segments::{SegmentDefinition, SegmentStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use store::ExperienceStore;
use tokio::sync::watch;

/// Handles to the experience layer.
#[derive(Clone)]
pub struct Experience {
    pub analyst: Addr<Analyst>,
    pub store: Arc<ExperienceStore>,
    pub storage: Arc<dyn Storage>,
    processed: watch::Receiver<u64>,
    /// The analyst's own thread (folding stays off the request and recorder threads).
    arbiter: Arc<ArbiterHandle>,
}

impl Experience {
    /// Opens the experience tree and starts the analyst from its stored cursor, with the
    /// segment definitions (from the back office) and the clock segment windows follow.
    pub fn start(
        storage: Arc<dyn Storage>,
        keyspace: &Keyspace,
        clock: Arc<dyn Clock>,
        segments: Vec<SegmentDefinition>,
    ) -> Result<Experience> {
        Experience::start_as(
            storage,
            keyspace,
            clock,
            segments,
            crate::cluster::singleton::Role::Alone,
        )
    }

    /// Like [`Experience::start`] on a cluster node: the analyst follows the stored state
    /// until [`Experience::run_analyst`] makes this node its holder.
    pub fn start_standby(
        storage: Arc<dyn Storage>,
        keyspace: &Keyspace,
        clock: Arc<dyn Clock>,
        segments: Vec<SegmentDefinition>,
    ) -> Result<Experience> {
        Experience::start_as(
            storage,
            keyspace,
            clock,
            segments,
            crate::cluster::singleton::Role::Standby,
        )
    }

    fn start_as(
        storage: Arc<dyn Storage>,
        keyspace: &Keyspace,
        clock: Arc<dyn Clock>,
        segments: Vec<SegmentDefinition>,
        role: crate::cluster::singleton::Role,
    ) -> Result<Experience> {
        let store = Arc::new(ExperienceStore::open(keyspace)?);
        let (analyst, processed) =
            Analyst::load(storage.clone(), store.clone(), clock, segments, role)?;
        let arbiter = Arbiter::new().handle();
        let analyst = Analyst::start_in_arbiter(&arbiter, move |_| analyst);
        Ok(Experience {
            analyst,
            store,
            storage,
            processed,
            arbiter: Arc::new(arbiter),
        })
    }

    /// Folds on this node while it holds the `Analyst` singleton (a standby analyst, from
    /// [`Experience::start_standby`]); `holding` runs at the start of every term, once the
    /// analyst has it, and then every `every` until the term ends.
    pub fn run_analyst<F, Fut>(
        &self,
        singletons: &crate::cluster::singleton::Singletons,
        every: std::time::Duration,
        holding: F,
    ) -> crate::cluster::singleton::SingletonHandle
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let analyst = self.analyst.clone();
        let holding = Arc::new(holding);
        singletons.run(
            crate::cluster::singleton::Singleton::Analyst,
            move |mut term| {
                let analyst = analyst.clone();
                let holding = holding.clone();
                async move {
                    if analyst
                        .send(crate::cluster::singleton::Lead(Some(term.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        holding().await;
                        tokio::select! {
                            _ = term.stopped() => break,
                            _ = tokio::time::sleep(every) => {}
                        }
                    }
                    let _ = analyst.send(crate::cluster::singleton::Lead(None)).await;
                }
            },
        )
    }

    /// Stops the analyst (its thread ends; what it wrote stays).
    pub fn stop(&self) {
        self.arbiter.stop();
    }

    /// The last event sequence the analyst has durably folded in.
    pub fn processed(&self) -> watch::Receiver<u64> {
        self.processed.clone()
    }

    /// Waits until the analyst has durably folded in everything appended so far.
    pub async fn caught_up(&self) -> Result<()> {
        let target = *crate::storage::EventLog::appended(self.storage.as_ref()).borrow();
        let mut processed = self.processed();
        processed
            .wait_for(|p| *p >= target)
            .await
            .map(|_| ())
            .map_err(|_| StorageError::Closed)
    }

    pub async fn profile(&self, subject: Subject) -> Result<Option<Profile>> {
        self.analyst
            .send(GetProfile(subject))
            .await
            .map_err(|_| StorageError::Closed)?
    }

    /// Runs `read` over the aggregates inside the analyst.
    pub async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Aggregates) -> R + Send + 'static,
    ) -> Result<R> {
        self.analyst
            .send(ReadAggregates(read, std::marker::PhantomData))
            .await
            .map_err(|_| StorageError::Closed)
    }

    /// The keys of the segments a customer (or anonymous shopper) is in, sorted; empty
    /// without a profile.
    pub async fn segments_of(&self, subject: Subject) -> Result<Vec<String>> {
        Ok(self
            .profile(subject)
            .await?
            .map(|p| p.segments)
            .unwrap_or_default())
    }

    /// Hands the analyst the current segment definitions (after a change).
    pub async fn sync_segments(&self, definitions: Vec<SegmentDefinition>) -> Result<()> {
        self.analyst
            .send(SyncSegments(definitions))
            .await
            .map_err(|_| StorageError::Closed)
    }

    /// Every segment's evaluation status, by segment id.
    pub async fn segment_statuses(&self) -> Result<BTreeMap<String, SegmentStatus>> {
        self.analyst
            .send(SegmentStatuses)
            .await
            .map_err(|_| StorageError::Closed)
    }
}
