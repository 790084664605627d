//! A/B tests (issue 9, point 5): experiments, sticky assignments, exposures, and the counts
//! behind their report (`docs/experiments.md`).
//!
//! - **Definitions** live in the back-office tree (`experiment/<key>`), each change one durable
//!   batch with its audit entry ([`Backoffice::change_audited`]); the hub reads them from an
//!   in-memory copy swapped after each change.
//! - **Assignment** ([`Experiments::assign`]) is sticky: a subject's first exposure is stored
//!   (`assign/<experiment>\0<subject>` in the `experiments` tree), later answers repeat it; a
//!   customer without one inherits their anonymous visit's (from the request's anonymous id, or
//!   when the [`counter`] sees the sign-in join); otherwise the pure hash of
//!   `protocol::experiment` decides. So web, app, till and board show one variant.
//! - **Exposure** ([`Experiments::expose`]) stores the first assignment with compare-and-swap
//!   (one writer wins) and records one `experiment_exposure` event for it, which flows through
//!   the event feed to the [`counter`].
//! - **Counting**: the [`counter`] tails the feed with its own cursor and keeps, durably with
//!   it, the distinct exposed and converted subjects per variant.
//!
//! The merger binds personalization slots and board content with [`Experiments::assign`] and
//! [`Experiments::expose`]; promotions restricted to a variant get the shopper's variants from
//! [`Experiments::for_pricing`].

pub mod counter;
pub mod routes;

use crate::actors::recorder::{Record, Recorder};
use crate::backoffice::audit::{Actor, AuditedChange};
use crate::backoffice::store::{key as bo_key, Batch};
use crate::backoffice::{Backoffice, BackofficeError};
use crate::clock::Clock;
use crate::experience::store::ExperienceStore;
use crate::storage::kv::{Keyspace, Tree};
use crate::storage::{Result, StorageError};
use arc_swap::ArcSwap;
use protocol::experiment::{
    check_fields, variants_from, Experiment, ExperimentStatus, Goal, Surface, VariantInput,
};
use protocol::{codec, AnonymousId, Channel, CustomerId, Event, EventKind, Stored, Subject};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;

/// Why a subject sees their variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reason {
    /// Kept from the subject's first exposure.
    FirstExposure {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Inherited from the shopper's anonymous visit before they signed in.
    CarriedOver,
    /// New: the hash of (experiment, subject) fell in this bucket of 10 000.
    Hashed { bucket: u32 },
}

/// A subject's variant of a running experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub experiment: String,
    pub variant: String,
    pub surface: Surface,
    pub reason: Reason,
}

/// Why a subject takes no part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Excluded {
    NotRunning,
    NotInAudience,
}

/// A subject's stored assignment: their first exposure, or one carried over at sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub variant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default)]
    pub carried: bool,
}

impl Stored for AssignmentRecord {
    const KIND: &'static str = "exp_assignment";
    const VERSION: u16 = 1;
}

/// A new experiment as the admin API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub hypothesis: String,
    pub surface: Surface,
    pub variants: Vec<VariantInput>,
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default)]
    pub goal: Goal,
    #[serde(default)]
    pub salt: Option<String>,
}

/// A change to an experiment: absent fields stay. Variants, goal and salt only while a draft.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentPatch {
    pub name: Option<String>,
    pub hypothesis: Option<String>,
    pub variants: Option<Vec<VariantInput>>,
    pub audience: Option<Vec<String>>,
    pub goal: Option<Goal>,
    pub salt: Option<String>,
}

struct Inner {
    backoffice: Arc<Backoffice>,
    tree: Tree,
    keyspace: Keyspace,
    definitions: ArcSwap<BTreeMap<String, Arc<Experiment>>>,
    profiles: Arc<ExperienceStore>,
    recorder: actix::Addr<Recorder>,
    clock: Arc<dyn Clock>,
    /// The last event sequence the counter has durably handled.
    counted: watch::Sender<u64>,
    /// The counter's thread, once started.
    counter: std::sync::OnceLock<actix::ArbiterHandle>,
    /// Where definition changes are announced to other nodes (a cluster), once followed.
    changes: std::sync::OnceLock<crate::cluster::notify::Changes>,
}

/// The A/B tests: definitions, assignments, exposures and counts.
#[derive(Clone)]
pub struct Experiments {
    inner: Arc<Inner>,
}

fn definition_key(key: &str) -> Vec<u8> {
    bo_key("experiment", &[key.as_bytes()])
}

/// The key of a per-(experiment, subject) record in the `experiments` tree.
pub(crate) fn subject_key(space: &str, experiment: &str, subject: &Subject) -> Vec<u8> {
    let mut k = Vec::with_capacity(space.len() + experiment.len() + 19);
    k.extend_from_slice(space.as_bytes());
    k.push(b'/');
    k.extend_from_slice(experiment.as_bytes());
    k.push(0);
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

fn invalid(errors: Vec<protocol::FieldError>) -> BackofficeError {
    BackofficeError::Invalid(errors)
}

fn json(e: &Experiment) -> Option<serde_json::Value> {
    serde_json::to_value(e).ok()
}

impl Experiments {
    /// Opens the `experiments` tree and loads the definitions.
    pub fn open(
        keyspace: &Keyspace,
        backoffice: Arc<Backoffice>,
        recorder: actix::Addr<Recorder>,
        clock: Arc<dyn Clock>,
    ) -> Result<Experiments> {
        let tree = keyspace.open_tree("experiments")?;
        let profiles = Arc::new(ExperienceStore::open(keyspace)?);
        let counted = watch::channel(counter::stored_cursor(&tree)?).0;
        let experiments = Experiments {
            inner: Arc::new(Inner {
                backoffice,
                tree,
                keyspace: keyspace.clone(),
                definitions: ArcSwap::from_pointee(BTreeMap::new()),
                profiles,
                recorder,
                clock,
                counted,
                counter: std::sync::OnceLock::new(),
                changes: std::sync::OnceLock::new(),
            }),
        };
        experiments.reload()?;
        Ok(experiments)
    }

    fn reload(&self) -> Result<()> {
        let records = self
            .inner
            .backoffice
            .records()
            .scan(b"experiment/", None, usize::MAX)?;
        let mut all = BTreeMap::new();
        for (_, v) in records {
            let e: Experiment = codec::decode(&v)?;
            all.insert(e.key.clone(), Arc::new(e));
        }
        self.inner.definitions.store(Arc::new(all));
        Ok(())
    }

    /// Reloads the definitions when another node changes one, and announces this node's
    /// changes (`crate::cluster::notify`; a no-op with [`Changes::embedded`]). Once.
    ///
    /// [`Changes::embedded`]: crate::cluster::notify::Changes::embedded
    pub fn follow_changes(&self, changes: crate::cluster::notify::Changes) {
        let this = self.clone();
        changes.on(crate::cluster::notify::Topic::Experiments, move || {
            if let Err(e) = this.reload() {
                tracing::error!(error = %e, "reloading experiment definitions another node changed");
            }
        });
        let _ = self.inner.changes.set(changes);
    }

    fn announce_change(&self) {
        if let Some(changes) = self.inner.changes.get() {
            changes.announce(crate::cluster::notify::Topic::Experiments);
        }
    }

    /// Runs the counter once across the cluster (`crate::cluster::singleton`): on the node
    /// holding its lease, from the stored cursor, every batch fenced by the term; when the
    /// term ends the counter's thread stops. Embedded singletons run it at once, unfenced (as
    /// [`Experiments::start_counter`]). Other nodes' reports read the stored counts
    /// ([`Experiments::counts`]).
    pub fn run_counter(
        &self,
        singletons: &crate::cluster::singleton::Singletons,
        storage: Arc<dyn crate::storage::Storage>,
    ) -> crate::cluster::singleton::SingletonHandle {
        let this = self.clone();
        singletons.run(
            crate::cluster::singleton::Singleton::ExperimentCounter,
            move |mut term| {
                let started = counter::spawn(this.clone(), storage.clone(), Some(term.clone()));
                async move {
                    match started {
                        Ok(thread) => {
                            term.stopped().await;
                            thread.stop();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the experiment counter cannot start")
                        }
                    }
                }
            },
        )
    }

    /// Starts the counter (once) from its stored cursor.
    pub fn start_counter(&self, storage: Arc<dyn crate::storage::Storage>) -> Result<()> {
        if self.inner.counter.get().is_none() {
            let handle = counter::spawn(self.clone(), storage, None)?;
            if let Err(extra) = self.inner.counter.set(handle) {
                extra.stop();
            }
        }
        Ok(())
    }

    /// Stops the counter's thread (what it stored stays; a restart resumes from its cursor).
    pub fn stop_counter(&self) {
        if let Some(counter) = self.inner.counter.get() {
            counter.stop();
        }
    }

    /// Every experiment by key.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<Experiment>>> {
        self.inner.definitions.load_full()
    }

    pub fn get(&self, key: &str) -> Option<Arc<Experiment>> {
        self.inner.definitions.load().get(key).cloned()
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// Creates a draft (the caller checked the role).
    pub async fn create(
        &self,
        actor: &Actor,
        new: NewExperiment,
    ) -> std::result::Result<Experiment, BackofficeError> {
        let key = new.key.trim().to_string();
        let salt = new.salt.clone().unwrap_or_else(|| key.clone());
        let mut errors = check_fields(&key, &new.name, &new.hypothesis, &new.audience, &salt);
        let variants = variants_from(&new.variants).unwrap_or_else(|mut e| {
            errors.append(&mut e);
            Vec::new()
        });
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let now = self.now();
        let experiment = Experiment {
            key: key.clone(),
            name: new.name.trim().to_string(),
            hypothesis: new.hypothesis.trim().to_string(),
            surface: new.surface,
            variants,
            audience: new.audience,
            goal: new.goal,
            salt,
            status: ExperimentStatus::Draft,
            created_at: now,
            updated_at: now,
            started_at: None,
            stopped_at: None,
            created_by: actor.id(),
        };
        let stored = experiment.clone();
        let created = self
            .inner
            .backoffice
            .change_audited(actor, move |store, batch| {
                if store.get(&definition_key(&key))?.is_some() {
                    return Err(BackofficeError::Conflict {
                        code: "experiment_exists",
                        message: format!("an experiment with key {key} exists: pick another key"),
                    });
                }
                batch.put(definition_key(&key), &stored)?;
                Ok(AuditedChange {
                    after: json(&stored),
                    result: stored,
                    action: "experiment.create",
                    subject: format!("experiment/{key}"),
                    before: None,
                })
            })
            .await?;
        self.reload()?;
        self.announce_change();
        Ok(created)
    }

    /// Applies a change to a stored experiment under the write lock: `change` decides on the
    /// current record and returns the new one.
    async fn change(
        &self,
        actor: &Actor,
        key: &str,
        action: &'static str,
        change: impl FnOnce(&Experiment) -> std::result::Result<Experiment, BackofficeError>,
    ) -> std::result::Result<Experiment, BackofficeError> {
        let key = key.to_string();
        let changed = self
            .inner
            .backoffice
            .change_audited(actor, move |store, batch: &mut Batch| {
                let before: Experiment =
                    crate::backoffice::store::get(store, &definition_key(&key))?
                        .ok_or_else(|| BackofficeError::NotFound(format!("experiment {key}")))?;
                let after = change(&before)?;
                batch.put(definition_key(&key), &after)?;
                Ok(AuditedChange {
                    before: json(&before),
                    after: json(&after),
                    result: after,
                    action,
                    subject: format!("experiment/{key}"),
                })
            })
            .await?;
        self.reload()?;
        self.announce_change();
        Ok(changed)
    }

    /// Edits an experiment. While it runs, its variants (weights), goal and salt are frozen:
    /// changing them would mix two experiments in one set of counts (409).
    pub async fn patch(
        &self,
        actor: &Actor,
        key: &str,
        patch: ExperimentPatch,
    ) -> std::result::Result<Experiment, BackofficeError> {
        let now = self.now();
        self.change(actor, key, "experiment.update", move |before| {
            let frozen = [
                ("variants", patch.variants.is_some()),
                ("goal", patch.goal.is_some()),
                ("salt", patch.salt.is_some()),
            ];
            if before.status != ExperimentStatus::Draft {
                if let Some((field, _)) = frozen.iter().find(|(_, given)| *given) {
                    return Err(BackofficeError::Conflict {
                        code: "experiment_frozen",
                        message: format!(
                            "experiment {} is {}: its {field} cannot change once it has started, since that would break its statistics (exposures so far were split by the old definition); stop it and create a new experiment instead",
                            before.key,
                            before.status.as_str()
                        ),
                    });
                }
            }
            if before.status == ExperimentStatus::Stopped && patch.audience.is_some() {
                return Err(BackofficeError::Conflict {
                    code: "experiment_stopped",
                    message: format!(
                        "experiment {} is stopped: only its name and hypothesis can change",
                        before.key
                    ),
                });
            }
            let mut after = before.clone();
            if let Some(name) = patch.name {
                after.name = name.trim().to_string();
            }
            if let Some(h) = patch.hypothesis {
                after.hypothesis = h.trim().to_string();
            }
            if let Some(a) = patch.audience {
                after.audience = a;
            }
            if let Some(g) = patch.goal {
                after.goal = g;
            }
            if let Some(s) = patch.salt {
                after.salt = s;
            }
            let mut errors = check_fields(
                &after.key,
                &after.name,
                &after.hypothesis,
                &after.audience,
                &after.salt,
            );
            if let Some(v) = patch.variants {
                match variants_from(&v) {
                    Ok(v) => after.variants = v,
                    Err(mut e) => errors.append(&mut e),
                }
            }
            if !errors.is_empty() {
                return Err(invalid(errors));
            }
            after.updated_at = now;
            Ok(after)
        })
        .await
    }

    /// Starts a draft.
    pub async fn start(
        &self,
        actor: &Actor,
        key: &str,
    ) -> std::result::Result<Experiment, BackofficeError> {
        let now = self.now();
        self.change(actor, key, "experiment.start", move |before| {
            if before.status != ExperimentStatus::Draft {
                return Err(BackofficeError::Conflict {
                    code: "not_draft",
                    message: format!(
                        "experiment {} is {}: only a draft can start (a stopped experiment stays stopped; create a new one)",
                        before.key,
                        before.status.as_str()
                    ),
                });
            }
            let mut after = before.clone();
            after.status = ExperimentStatus::Running;
            after.started_at = Some(now);
            after.updated_at = now;
            Ok(after)
        })
        .await
    }

    /// Stops a running experiment: no new exposures; conversions after this are not counted.
    pub async fn stop(
        &self,
        actor: &Actor,
        key: &str,
    ) -> std::result::Result<Experiment, BackofficeError> {
        let now = self.now();
        self.change(actor, key, "experiment.stop", move |before| {
            if before.status != ExperimentStatus::Running {
                return Err(BackofficeError::Conflict {
                    code: "not_running",
                    message: format!(
                        "experiment {} is {}: only a running experiment can stop",
                        before.key,
                        before.status.as_str()
                    ),
                });
            }
            let mut after = before.clone();
            after.status = ExperimentStatus::Stopped;
            after.stopped_at = Some(now);
            after.updated_at = now;
            Ok(after)
        })
        .await
    }

    fn stored(&self, experiment: &str, subject: &Subject) -> Result<Option<AssignmentRecord>> {
        self.inner
            .tree
            .get(subject_key("assign", experiment, subject))?
            .map(|v| codec::decode(&v).map_err(StorageError::from))
            .transpose()
    }

    /// The customer an anonymous id was joined to at sign-in, as the counter saw it.
    fn joined(&self, anonymous: AnonymousId) -> Result<Option<CustomerId>> {
        counter::alias(&self.inner.tree, anonymous)
    }

    /// Whom to assign: an anonymous id joined to a customer at sign-in is that customer from
    /// then on (a signed-out tab of theirs shows their variant).
    fn resolve(
        &self,
        subject: Subject,
        anonymous: Option<AnonymousId>,
    ) -> Result<(Subject, Option<AnonymousId>)> {
        Ok(match subject {
            Subject::Anonymous(a) => match self.joined(a)? {
                Some(c) => (Subject::Customer(c), Some(a)),
                None => (subject, anonymous),
            },
            customer => (customer, anonymous),
        })
    }

    fn segments(&self, subject: &Subject) -> Result<Vec<String>> {
        Ok(self
            .inner
            .profiles
            .profile(subject)?
            .map(|p| p.segments)
            .unwrap_or_default())
    }

    /// Decides a subject's variant without storing anything; `anonymous` is the anonymous id
    /// the same request carries (a signed-in browser keeps its cookie), whose assignment a
    /// customer without one inherits. The flag says whether the subject's own assignment is
    /// stored already.
    fn decide(
        &self,
        experiment: &Experiment,
        subject: Subject,
        anonymous: Option<AnonymousId>,
    ) -> Result<std::result::Result<(Assignment, bool), Excluded>> {
        if experiment.status != ExperimentStatus::Running {
            return Ok(Err(Excluded::NotRunning));
        }
        let assignment = |variant: String, reason| Assignment {
            experiment: experiment.key.clone(),
            variant,
            surface: experiment.surface,
            reason,
        };
        if let Some(r) = self.stored(&experiment.key, &subject)? {
            let reason = if r.carried {
                Reason::CarriedOver
            } else {
                Reason::FirstExposure { at: r.at }
            };
            return Ok(Ok((assignment(r.variant, reason), true)));
        }
        if let (Subject::Customer(customer), Some(anon)) = (subject, anonymous) {
            // A device shared by two customers stays with the first who signed in on it.
            let joined = self.joined(anon)?;
            if joined.is_none_or(|c| c == customer) {
                if let Some(r) = self.stored(&experiment.key, &Subject::Anonymous(anon))? {
                    return Ok(Ok((assignment(r.variant, Reason::CarriedOver), false)));
                }
            }
        }
        if !experiment.audience.is_empty() && !experiment.admits(&self.segments(&subject)?) {
            return Ok(Err(Excluded::NotInAudience));
        }
        Ok(match experiment.variant_for(&subject) {
            Some((v, bucket)) => Ok((assignment(v.key.clone(), Reason::Hashed { bucket }), false)),
            None => Err(Excluded::NotRunning),
        })
    }

    /// The subject's variant of a running experiment, or `None` (unknown, not running, or
    /// outside its audience). Nothing is stored: see [`Experiments::expose`].
    pub fn assign(&self, key: &str, subject: Subject) -> Result<Option<Assignment>> {
        self.assign_with(key, subject, None)
            .map(|r| r.and_then(|r| r.ok()))
    }

    /// Like [`Experiments::assign`], with the request's anonymous id (see [`Experiments::decide`]),
    /// saying why a subject is excluded; `None` for an unknown experiment.
    pub fn assign_with(
        &self,
        key: &str,
        subject: Subject,
        anonymous: Option<AnonymousId>,
    ) -> Result<Option<std::result::Result<Assignment, Excluded>>> {
        let Some(e) = self.get(key) else {
            return Ok(None);
        };
        let (subject, anonymous) = self.resolve(subject, anonymous)?;
        Ok(Some(self.decide(&e, subject, anonymous)?.map(|(a, _)| a)))
    }

    /// Shows the subject their variant: the first time, the assignment is stored (the first of
    /// concurrent exposures wins) and one `experiment_exposure` event recorded on `channel`.
    /// Answers the variant shown, or `None` when the subject takes no part.
    pub fn expose(
        &self,
        key: &str,
        subject: Subject,
        anonymous: Option<AnonymousId>,
        channel: Channel,
    ) -> Result<Option<std::result::Result<Assignment, Excluded>>> {
        let Some(experiment) = self.get(key) else {
            return Ok(None);
        };
        let (subject, anonymous) = self.resolve(subject, anonymous)?;
        let decided = match self.decide(&experiment, subject, anonymous)? {
            Ok((a, false)) => a,
            Ok((a, true)) => return Ok(Some(Ok(a))),
            Err(excluded) => return Ok(Some(Err(excluded))),
        };
        let now = self.now();
        let record = AssignmentRecord {
            variant: decided.variant.clone(),
            at: now,
            carried: decided.reason == Reason::CarriedOver,
        };
        let k = subject_key("assign", key, &subject);
        let swapped =
            self.inner
                .tree
                .compare_and_swap(&k, None, Some(codec::encode(&record)?.as_slice()))?;
        match swapped {
            Ok(()) => {
                let event = Event::new(now, subject, channel, EventKind::ExperimentExposure)
                    .with("experiment", key)
                    .with("variant", &decided.variant)
                    .with("surface", surface_name(experiment.surface));
                self.inner.recorder.do_send(Record(event));
                Ok(Some(Ok(decided)))
            }
            // Another exposure stored first: that one is the subject's variant.
            Err(_) => Ok(Some(
                self.decide(&experiment, subject, None)?.map(|(a, _)| a),
            )),
        }
    }

    /// The variants of `subject` in the running experiments `keys` (those the live promotions
    /// ask about), exposing the subject to each: a basket priced with a promotion experiment
    /// is its exposure. A storage failure leaves the subject out (logged): pricing goes on.
    pub fn for_pricing<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
        subject: Subject,
        channel: Channel,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for key in keys {
            match self.expose(key, subject, None, channel) {
                Ok(Some(Ok(a))) => {
                    out.insert(a.experiment, a.variant);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(experiment = key, error = %e, "experiment assignment failed; priced without it");
                }
            }
        }
        out
    }

    /// Erasure (`crate::experience::privacy`): moves the records of the customer and of the
    /// anonymous ids joined to them (`linked`) — their assignments and the counter's tallies —
    /// to the pseudonym their events now carry, and drops the sign-in joins pointing at the
    /// customer. The per-variant counts are not touched, so reports stay as they were; a later
    /// goal event of the pseudonym converts its tally as before. Waits for the counter first,
    /// so it writes nothing more under the customer's id (their later events are stored
    /// pseudonymised). Run again, it finds nothing left to move.
    pub async fn erase(
        &self,
        storage: &dyn crate::storage::Storage,
        customer: CustomerId,
        linked: &[AnonymousId],
        pseudonym: AnonymousId,
    ) -> Result<()> {
        self.caught_up(storage).await?;
        let tree = &self.inner.tree;
        let mut joined: Vec<AnonymousId> = linked.to_vec();
        for kv in tree.scan_prefix(b"alias/") {
            let (k, v) = kv?;
            if v.as_slice() == customer.to_bytes().as_slice() {
                if let Some(a) = <[u8; 16]>::try_from(&k[b"alias/".len()..])
                    .ok()
                    .map(|b| AnonymousId(ulid::Ulid(u128::from_be_bytes(b))))
                {
                    if !joined.contains(&a) {
                        joined.push(a);
                    }
                }
            }
        }
        let mut sources = vec![Subject::Customer(customer)];
        sources.extend(joined.iter().map(|a| Subject::Anonymous(*a)));
        let target = Subject::Anonymous(pseudonym);
        let mut batch = crate::storage::kv::Batch::default();
        let mut moved = 0usize;
        for key in self.all().keys() {
            for space in ["assign", "tally"] {
                let to = subject_key(space, key, &target);
                let mut present = tree.get(&to)?.is_some();
                for source in &sources {
                    let from = subject_key(space, key, source);
                    let Some(value) = tree.get(&from)? else {
                        continue;
                    };
                    // The first record found is the person's (the customer's own before an
                    // anonymous visit's); the counts hold every one already.
                    if !present {
                        batch.insert(to.clone(), value);
                        present = true;
                    }
                    batch.remove(from);
                    moved += 1;
                }
            }
        }
        for a in &joined {
            batch.remove(counter::alias_key(*a));
        }
        tree.apply_batch(batch)?;
        self.inner.keyspace.flush_async().await?;
        tracing::info!(%customer, moved, "experiment records moved to the pseudonym");
        Ok(())
    }

    /// The exposed and converted subjects per variant, as the counter has stored them.
    pub fn counts(&self, key: &str) -> Result<counter::Counts> {
        counter::counts(&self.inner.tree, key)
    }

    /// Waits until the counter has durably handled every event appended so far: here, or
    /// (on a cluster node that does not hold the counter) by the holder, whose progress is
    /// the stored cursor.
    pub async fn caught_up(&self, storage: &dyn crate::storage::Storage) -> Result<()> {
        let target = *crate::storage::EventLog::appended(storage).borrow();
        let mut counted = self.inner.counted.subscribe();
        loop {
            if *counted.borrow_and_update() >= target {
                return Ok(());
            }
            let tree = self.inner.tree.clone();
            let stored = tokio::task::spawn_blocking(move || counter::stored_cursor(&tree))
                .await
                .map_err(|e| StorageError::Io(e.to_string()))??;
            if stored >= target {
                return Ok(());
            }
            tokio::select! {
                changed = counted.changed() => changed.map_err(|_| StorageError::Closed)?,
                _ = tokio::time::sleep(CURSOR_POLL) => {}
            }
        }
    }
}

/// How often [`Experiments::caught_up`] reads the stored cursor on a node whose counter is
/// not the one running.
const CURSOR_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn surface_name(s: Surface) -> &'static str {
    match s {
        Surface::Storefront => "storefront",
        Surface::Promotion => "promotion",
        Surface::Board => "board",
    }
}
