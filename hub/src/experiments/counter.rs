//! The counter: tails the event feed with its own cursor and keeps, per experiment and variant,
//! the distinct exposed subjects and those of them who converted (their experiment's goal
//! event, after their first exposure in feed order, counted once). Each batch's changes and the
//! cursor are one atomic, flushed batch, so a restart resumes exactly: nothing counted
//! twice, nothing missed.
//!
//! Subjects: an anonymous id joined to a customer (a `signed_in` or `registered` event with
//! `anonymous_id`; the first join wins, as in the analyst) is that customer. At the join the
//! anonymous shopper's tally moves to the customer; if the customer has one already (exposed
//! on another device before signing in here), the customer's stays and the anonymous one is
//! taken out of its variant's counts, so the person counts once. The anonymous assignment is
//! carried to a customer without one, so every channel shows the same variant afterwards.
//!
//! Conversions after an experiment stopped (by event time) are not counted.

use super::{subject_key, AssignmentRecord, Experiments};
use crate::cluster::singleton::Term;
use crate::experience::feed::Feed;
use crate::storage::kv::Tree;
use crate::storage::{Result, SharedEvents, Storage, StorageError};
use actix::prelude::*;
use protocol::experiment::Experiment;
use protocol::{codec, AnonymousId, CustomerId, Event, EventKind, Stored, Subject};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Events read per batch.
const BATCH: usize = 4096;
/// Pause before reading again after a storage error.
const RETRY: Duration = Duration::from_secs(1);
const CURSOR_KEY: &[u8] = b"cursor";

/// Distinct subjects of one variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantCount {
    pub exposures: u64,
    pub conversions: u64,
}

/// The counts of one experiment, by variant key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub variants: BTreeMap<String, VariantCount>,
}

impl Stored for Counts {
    const KIND: &'static str = "exp_counts";
    const VERSION: u16 = 1;
}

/// What the counter knows of one exposed subject in one experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    variant: String,
    converted: bool,
}

impl Stored for Tally {
    const KIND: &'static str = "exp_tally";
    const VERSION: u16 = 1;
}

fn count_key(experiment: &str) -> Vec<u8> {
    let mut k = b"count/".to_vec();
    k.extend_from_slice(experiment.as_bytes());
    k
}

pub(super) fn alias_key(anonymous: AnonymousId) -> Vec<u8> {
    let mut k = b"alias/".to_vec();
    k.extend_from_slice(&anonymous.to_bytes());
    k
}

fn get<T: Stored>(tree: &Tree, key: &[u8]) -> Result<Option<T>> {
    tree.get(key)?
        .map(|v| codec::decode(&v).map_err(StorageError::from))
        .transpose()
}

/// The last sequence the counter has durably handled (0: none).
pub(super) fn stored_cursor(tree: &Tree) -> Result<u64> {
    Ok(tree
        .get(CURSOR_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// The customer an anonymous id was joined to.
pub(super) fn alias(tree: &Tree, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
    Ok(tree
        .get(alias_key(anonymous))?
        .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
        .map(|b| CustomerId(ulid::Ulid(u128::from_be_bytes(b)))))
}

/// The stored counts of an experiment (empty before its first exposure).
pub(super) fn counts(tree: &Tree, experiment: &str) -> Result<Counts> {
    Ok(get(tree, &count_key(experiment))?.unwrap_or_default())
}

/// Starts the counter on a thread of its own from its stored cursor; with a singleton's
/// `term`, every batch is fenced by it and the counter ends when the term is taken over.
pub(super) fn spawn(
    experiments: Experiments,
    storage: Arc<dyn Storage>,
    term: Option<Term>,
) -> Result<ArbiterHandle> {
    let cursor = stored_cursor(&experiments.inner.tree)?;
    let arbiter = Arbiter::new();
    let handle = arbiter.handle();
    // The thread is the counter's alone, so its keyspace reads and writes may block it.
    arbiter.spawn(async move {
        let mut feed = Feed::new(storage.clone(), cursor);
        loop {
            let batch = match feed.next(BATCH).await {
                Ok(b) => b,
                Err(StorageError::Closed) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the experiment counter could not read the event feed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            match count(&experiments, &batch, term.as_ref()) {
                Ok(last) => {
                    experiments.inner.counted.send_replace(last);
                }
                Err(StorageError::Fenced) => {
                    tracing::info!("the experiment counter was taken over by another node; stopping");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the experiment counter could not store a batch; starting over from its cursor");
                    tokio::time::sleep(RETRY).await;
                    match stored_cursor(&experiments.inner.tree) {
                        Ok(c) => feed = Feed::new(storage.clone(), c),
                        Err(e) => tracing::error!(error = %e, "the experiment counter could not read its cursor"),
                    }
                }
            }
        }
    });
    Ok(handle)
}

/// Folds a batch and stores what changed with the cursor; answers the new cursor.
fn count(experiments: &Experiments, batch: &SharedEvents, term: Option<&Term>) -> Result<u64> {
    let definitions = experiments.all();
    let mut pass = Pass {
        tree: &experiments.inner.tree,
        definitions: &definitions,
        tallies: HashMap::new(),
        counts: HashMap::new(),
        aliases: HashMap::new(),
    };
    let mut last = 0;
    for s in batch.iter() {
        pass.fold(&s.event)?;
        last = s.seq;
    }
    let mut write = crate::storage::kv::Batch::default();
    for (k, t) in &pass.tallies {
        match t {
            Some(t) => write.insert(k.as_slice(), codec::encode(t)?),
            None => write.remove(k.as_slice()),
        }
    }
    for (experiment, c) in &pass.counts {
        write.insert(count_key(experiment), codec::encode(c)?);
    }
    for (a, c) in &pass.aliases {
        write.insert(alias_key(*a), c.to_bytes().to_vec());
    }
    write.insert(CURSOR_KEY, last.to_be_bytes().to_vec());
    match term {
        Some(term) => term.apply(&experiments.inner.keyspace, &experiments.inner.tree, &write)?,
        None => experiments.inner.tree.apply_batch(write)?,
    }
    experiments.inner.keyspace.flush()?;
    Ok(last)
}

/// One batch's changes over the stored state.
struct Pass<'a> {
    tree: &'a Tree,
    definitions: &'a BTreeMap<String, Arc<Experiment>>,
    /// `None`: removed.
    tallies: HashMap<Vec<u8>, Option<Tally>>,
    counts: HashMap<String, Counts>,
    aliases: HashMap<AnonymousId, CustomerId>,
}

impl Pass<'_> {
    fn fold(&mut self, e: &Event) -> Result<()> {
        match (e.kind, e.subject) {
            (EventKind::ExperimentExposure, _) => self.exposure(e)?,
            (EventKind::SignedIn | EventKind::Registered, Subject::Customer(customer)) => {
                let anonymous = e
                    .payload
                    .get("anonymous_id")
                    .and_then(|a| a.parse::<AnonymousId>().ok());
                if let Some(anonymous) = anonymous {
                    self.join(anonymous, customer, e)?;
                }
            }
            _ => {}
        }
        self.conversion(e)
    }

    fn alias(&mut self, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
        if let Some(c) = self.aliases.get(&anonymous) {
            return Ok(Some(*c));
        }
        alias(self.tree, anonymous)
    }

    /// The subject an event counts for: a joined anonymous id is its customer.
    fn root(&mut self, subject: Subject) -> Result<Subject> {
        Ok(match subject {
            Subject::Anonymous(a) => self.alias(a)?.map_or(subject, Subject::Customer),
            customer => customer,
        })
    }

    fn tally(&self, key: &[u8]) -> Result<Option<Tally>> {
        match self.tallies.get(key) {
            Some(t) => Ok(t.clone()),
            None => get(self.tree, key),
        }
    }

    fn count_mut(&mut self, experiment: &str, variant: &str) -> Result<&mut VariantCount> {
        if !self.counts.contains_key(experiment) {
            let stored = counts(self.tree, experiment)?;
            self.counts.insert(experiment.to_string(), stored);
        }
        Ok(self
            .counts
            .entry(experiment.to_string())
            .or_default()
            .variants
            .entry(variant.to_string())
            .or_default())
    }

    fn exposure(&mut self, e: &Event) -> Result<()> {
        let (Some(key), Some(variant)) = (e.payload.get("experiment"), e.payload.get("variant"))
        else {
            return Ok(());
        };
        let known = self
            .definitions
            .get(key)
            .is_some_and(|d| d.has_variant(variant));
        if !known {
            return Ok(());
        }
        let root = self.root(e.subject)?;
        let k = subject_key("tally", key, &root);
        if self.tally(&k)?.is_some() {
            return Ok(());
        }
        self.tallies.insert(
            k,
            Some(Tally {
                variant: variant.clone(),
                converted: false,
            }),
        );
        self.count_mut(key, variant)?.exposures += 1;
        Ok(())
    }

    fn conversion(&mut self, e: &Event) -> Result<()> {
        let goals: Vec<Arc<Experiment>> = self
            .definitions
            .values()
            .filter(|d| d.goal.kind() == e.kind && d.stopped_at.is_none_or(|s| e.at < s))
            .cloned()
            .collect();
        if goals.is_empty() {
            return Ok(());
        }
        let root = self.root(e.subject)?;
        for d in goals {
            let k = subject_key("tally", &d.key, &root);
            if let Some(mut t) = self.tally(&k)?.filter(|t| !t.converted) {
                t.converted = true;
                self.count_mut(&d.key, &t.variant)?.conversions += 1;
                self.tallies.insert(k, Some(t));
            }
        }
        Ok(())
    }

    fn join(&mut self, anonymous: AnonymousId, customer: CustomerId, e: &Event) -> Result<()> {
        if self.alias(anonymous)?.is_some() {
            return Ok(());
        }
        self.aliases.insert(anonymous, customer);
        let (anon, cust) = (Subject::Anonymous(anonymous), Subject::Customer(customer));
        let keys: Vec<String> = self.definitions.keys().cloned().collect();
        for key in keys {
            self.merge_tallies(&key, &anon, &cust)?;
            carry_assignment(self.tree, &key, &anon, &cust, e)?;
        }
        Ok(())
    }

    fn merge_tallies(&mut self, key: &str, anon: &Subject, cust: &Subject) -> Result<()> {
        let (ak, ck) = (
            subject_key("tally", key, anon),
            subject_key("tally", key, cust),
        );
        let Some(a) = self.tally(&ak)? else {
            return Ok(());
        };
        self.tallies.insert(ak, None);
        match self.tally(&ck)? {
            None => {
                self.tallies.insert(ck, Some(a));
            }
            Some(mut c) => {
                let counted = self.count_mut(key, &a.variant)?;
                counted.exposures = counted.exposures.saturating_sub(1);
                if a.converted {
                    if c.converted || c.variant != a.variant {
                        counted.conversions = counted.conversions.saturating_sub(1);
                    } else {
                        // The conversion stays counted, now the customer's.
                        c.converted = true;
                        self.tallies.insert(ck, Some(c));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Gives a customer without an assignment the one their anonymous visit had (first writer wins,
/// so a repeat after a failed batch changes nothing).
fn carry_assignment(
    tree: &Tree,
    key: &str,
    anon: &Subject,
    cust: &Subject,
    e: &Event,
) -> Result<()> {
    let Some(a) = get::<AssignmentRecord>(tree, &subject_key("assign", key, anon))? else {
        return Ok(());
    };
    let carried = AssignmentRecord {
        variant: a.variant,
        at: e.at,
        carried: true,
    };
    // An existing assignment is the customer's own and stays: the swap's refusal is expected.
    let _ = tree.compare_and_swap(
        subject_key("assign", key, cust),
        None,
        Some(codec::encode(&carried)?.as_slice()),
    )?;
    Ok(())
}
