//! Personalization (`docs/personalization.md`): content slots with variants per segment and
//! channel, resolved for a shopper with the reason, and "bought together" / "viewed together"
//! recommendations computed from the event log.
//!
//! - [`Personalization`] holds the slots (kept in the back office's tree, so each change and
//!   its audit entry are one batch; read from memory), resolves them
//!   ([`Personalization::resolve`] for a shopper, [`Personalization::preview`] for a segment
//!   list) and reads the recommendations.
//! - [`recommender::Recommender`] tails the event feed with its own cursor and keeps the pair
//!   counts and top lists.
//! - [`routes`]: the admin API under `/api/v1/admin/slots` and
//!   `/api/v1/admin/recommendations/{sku}`. Shoppers reach slots through the channels
//!   (`Backend::slot`: `GET /api/v1/slots/{slot}`, the storefront's home and product pages);
//!   boards through the audience lookup; marketing mails through the automation scheduler.
//!
//! The rest of the hub reaches it through a [`PersonalizationHook`] in the actors' `Deps`,
//! connected once the experience layer runs.

pub mod recommender;
pub mod routes;

use crate::backoffice::audit::Actor as AuditActor;
use crate::backoffice::kept::KeptChange;
use crate::backoffice::{Backoffice, BackofficeError};
use crate::clock::Clock;
use crate::edge::boards::HubBoards;
use crate::experience::reports::{self, ProductSort, Range};
use crate::experience::Experience;
use crate::storage::{Storage, StorageError};
use actix::prelude::*;
use arc_swap::ArcSwap;
use channels::backend::SlotView;
use protocol::experiment::Surface;
use protocol::personalization::{
    resolve_with, Content, Neighbour, Recommendations, Relation, SlotChannel, SlotName, SlotRecord,
    SlotRequest, SlotSpec, Strategy,
};
use protocol::{
    AnonymousId, CatalogSnapshot, Channel, CustomerId, FieldError, LocationId, Product, Sku,
    Subject,
};
use recommender::{RecommendationStore, Recommender};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// The back-office tree's key space of slots.
const SPACE: &str = "slot";
/// The days `top_products` looks back.
const TOP_PRODUCT_DAYS: i64 = 30;

/// The personalization of a running hub, once connected.
#[derive(Clone, Default)]
pub struct PersonalizationHook(Arc<OnceLock<Arc<Personalization>>>);

impl PersonalizationHook {
    /// Connects the running personalization (once; later calls change nothing).
    pub fn connect(&self, p: Arc<Personalization>) {
        let _ = self.0.set(p);
    }

    pub fn get(&self) -> Option<&Arc<Personalization>> {
        self.0.get()
    }
}

/// What a slot change can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// 422 with every problem and its JSON path.
    #[error("the slot is not valid")]
    Invalid(Vec<FieldError>),
    /// 404.
    #[error("slot {0} is not configured")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Backoffice(#[from] BackofficeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What personalization works with.
pub struct Start {
    pub storage: Arc<dyn Storage>,
    /// Where the recommender keeps its tree (`recommendations`).
    pub keyspace: crate::storage::kv::Keyspace,
    pub backoffice: Arc<Backoffice>,
    pub experience: Experience,
    pub boards: Arc<HubBoards>,
    pub catalog: Arc<ArcSwap<CatalogSnapshot>>,
    pub inventory: crate::actors::inventory::Inventory,
    pub clock: Arc<dyn Clock>,
    /// The A/B tests slot variants may be bound to.
    pub experiments: crate::experiments::Experiments,
    /// Whether the recommender folds here at once (`Alone`) or follows until
    /// [`Personalization::run_recommender`] makes this node its holder (`Standby`).
    pub role: crate::cluster::singleton::Role,
}

/// Slots and recommendations.
pub struct Personalization {
    backoffice: Arc<Backoffice>,
    slots: ArcSwap<BTreeMap<SlotName, SlotRecord>>,
    experience: Experience,
    boards: Arc<HubBoards>,
    catalog: Arc<ArcSwap<CatalogSnapshot>>,
    inventory: crate::actors::inventory::Inventory,
    clock: Arc<dyn Clock>,
    experiments: crate::experiments::Experiments,
    store: Arc<RecommendationStore>,
    processed: watch::Receiver<u64>,
    /// The recommender's own thread.
    arbiter: ArbiterHandle,
    recommender: Addr<Recommender>,
    /// Change notifications between hub nodes, once followed.
    pub(crate) changes: OnceLock<crate::cluster::notify::Changes>,
}

impl Personalization {
    /// Loads the slots and starts the recommender from its stored cursor.
    pub fn start(start: Start) -> Result<Arc<Personalization>, StorageError> {
        let slots: BTreeMap<SlotName, SlotRecord> = start
            .backoffice
            .kept_all::<SlotRecord>(SPACE)?
            .into_iter()
            .map(|r| (r.slot, r))
            .collect();
        let store = Arc::new(RecommendationStore::open(&start.keyspace)?);
        let log: Arc<dyn Storage> = start.storage.clone();
        let (recommender, processed) =
            Recommender::load(log, store.clone(), start.catalog.clone(), start.role)?;
        let arbiter = Arbiter::new().handle();
        let recommender = Recommender::start_in_arbiter(&arbiter, move |_| recommender);
        Ok(Arc::new(Personalization {
            backoffice: start.backoffice,
            slots: ArcSwap::from_pointee(slots),
            experience: start.experience,
            boards: start.boards,
            catalog: start.catalog,
            inventory: start.inventory,
            clock: start.clock,
            experiments: start.experiments,
            store,
            processed,
            arbiter,
            recommender,
            changes: OnceLock::new(),
        }))
    }

    /// Folds on this node while it holds the `Recommender` singleton (started `Standby`).
    pub fn run_recommender(
        &self,
        singletons: &crate::cluster::singleton::Singletons,
    ) -> crate::cluster::singleton::SingletonHandle {
        let recommender = self.recommender.clone();
        singletons.run(
            crate::cluster::singleton::Singleton::Recommender,
            move |mut term| {
                let recommender = recommender.clone();
                async move {
                    let lead = crate::cluster::singleton::Lead(Some(term.clone()));
                    if recommender.send(lead).await.is_err() {
                        return;
                    }
                    term.stopped().await;
                    let _ = recommender
                        .send(crate::cluster::singleton::Lead(None))
                        .await;
                }
            },
        )
    }

    /// Stops the recommender (its thread ends; what it wrote stays).
    pub fn stop(&self) {
        self.arbiter.stop();
    }

    /// Waits until the recommender has durably folded in everything appended so far.
    pub async fn caught_up(&self) -> Result<(), StorageError> {
        let target = *crate::storage::EventLog::appended(self.experience.storage.as_ref()).borrow();
        let mut processed = self.processed.clone();
        processed
            .wait_for(|p| *p >= target)
            .await
            .map(|_| ())
            .map_err(|_| StorageError::Closed)
    }

    // -----------------------------------------------------------------------------------------
    // Slots.

    /// Every configured slot.
    pub fn slots(&self) -> Vec<SlotRecord> {
        self.slots.load().values().cloned().collect()
    }

    pub fn slot(&self, slot: SlotName) -> Option<SlotRecord> {
        self.slots.load().get(&slot).cloned()
    }

    /// Checks a slot as sent (every problem with its JSON path) against the catalog and the
    /// experiments (a variant bound to one must name a content experiment and its variant).
    pub fn check(&self, slot: SlotName, body: &serde_json::Value) -> Result<SlotSpec, SlotError> {
        let catalog = self.catalog.load();
        let known = |sku: &Sku| catalog.product_by_sku(sku).is_some();
        let experiments = |key: &str| -> Result<Vec<String>, String> {
            match self.experiments.get(key) {
                None => Err(format!(
                    "unknown experiment '{key}': create it first (POST /api/v1/admin/experiments)"
                )),
                Some(e) if e.surface == Surface::Promotion => Err(format!(
                    "experiment {key} tests a promotion: bind content to a storefront or board experiment"
                )),
                Some(e) => Ok(e.variants.iter().map(|v| v.key.clone()).collect()),
            }
        };
        SlotSpec::parse_with(slot, body, &known, &experiments).map_err(SlotError::Invalid)
    }

    /// Creates or replaces a slot, audited; answers the stored record.
    pub async fn put(
        &self,
        actor: &AuditActor,
        slot: SlotName,
        body: &serde_json::Value,
    ) -> Result<SlotRecord, SlotError> {
        let spec = self.check(slot, body)?;
        let now = self.clock.now();
        let after = self
            .backoffice
            .change_kept::<SlotRecord>(actor, SPACE, slot.as_str(), |before| {
                let record = SlotRecord {
                    slot,
                    spec,
                    version: before.map_or(1, |b| b.version + 1),
                    updated_at: now,
                    updated_by: actor.id(),
                };
                let action = if before.is_some() {
                    "slot.update"
                } else {
                    "slot.create"
                };
                Ok(KeptChange::Put(record, action))
            })
            .await?;
        let record = after.ok_or(SlotError::NotConfigured(slot.as_str()))?;
        self.publish(slot, Some(record.clone()));
        Ok(record)
    }

    /// Removes a slot (its built-in behaviour returns), audited.
    pub async fn delete(&self, actor: &AuditActor, slot: SlotName) -> Result<(), SlotError> {
        self.backoffice
            .change_kept::<SlotRecord>(actor, SPACE, slot.as_str(), |before| match before {
                Some(_) => Ok(KeptChange::Remove("slot.delete")),
                None => Err(BackofficeError::NotFound(format!("slot {}", slot.as_str()))),
            })
            .await?;
        self.publish(slot, None);
        Ok(())
    }

    /// Reads the stored slots again (another hub node changed one).
    pub fn reload_slots(&self) -> Result<(), StorageError> {
        let slots: BTreeMap<SlotName, SlotRecord> = self
            .backoffice
            .kept_all::<SlotRecord>(SPACE)?
            .into_iter()
            .map(|r| (r.slot, r))
            .collect();
        self.slots.store(Arc::new(slots));
        Ok(())
    }

    fn publish(&self, slot: SlotName, record: Option<SlotRecord>) {
        if let Some(changes) = self.changes.get() {
            changes.announce(crate::cluster::notify::Topic::Slots);
        }
        self.slots.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            match &record {
                Some(r) => next.insert(slot, r.clone()),
                None => next.remove(&slot),
            };
            next
        });
    }

    /// The segment keys of a shopper: their profile's (the segment engine's), and the segments
    /// a marketer gave a customer with their board audience (`docs/boards.md`).
    pub async fn segments_of(&self, subject: Subject) -> Result<Vec<String>, StorageError> {
        let mut segments = self
            .experience
            .profile(subject)
            .await?
            .map(|p| p.segments)
            .unwrap_or_default();
        if let Subject::Customer(c) = subject {
            if let Some(a) = self.boards.audience(c)? {
                segments.extend(a.segments);
            }
        }
        segments.sort();
        segments.dedup();
        Ok(segments)
    }

    /// A slot for a shopper (`None`: anonymous without an id) on a channel; `product` is the
    /// product page's SKU for recommendations. `anonymous` is the anonymous id the same
    /// request carries (a signed-in browser keeps its cookie): a slot variant bound to an
    /// experiment assigns the shopper through [`crate::experiments::Experiments::expose`]
    /// (sticky, the anonymous visit's variant carried over at sign-in), which records the
    /// exposure once per subject. `Err(NotConfigured)` for a slot with neither a configuration
    /// nor a built-in default.
    pub async fn resolve(
        &self,
        subject: Option<Subject>,
        anonymous: Option<AnonymousId>,
        slot: SlotName,
        channel: SlotChannel,
        product: Option<&Sku>,
    ) -> Result<SlotView, SlotError> {
        let segments = match subject {
            Some(s) => self.segments_of(s).await?,
            None => Vec::new(),
        };
        let mut failed = None;
        let mut assigned: HashMap<String, Option<String>> = HashMap::new();
        let experiments = &self.experiments;
        let mut experiment = |key: &str| -> Option<String> {
            let subject = subject?;
            assigned
                .entry(key.to_string())
                .or_insert_with(|| {
                    match experiments.expose(key, subject, anonymous, event_channel(channel)) {
                        Ok(Some(Ok(a))) => Some(a.variant),
                        Ok(_) => None,
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    }
                })
                .clone()
        };
        let view = self
            .view(slot, &segments, channel, product, &mut experiment)
            .await;
        if let Some(e) = failed {
            // The shopper sees the content for no experiment; the page still shows.
            tracing::error!(slot = slot.as_str(), error = %e, "a slot's experiment assignment failed");
        }
        view
    }

    /// A slot for a shopper of these segments (and these experiment variants, by experiment
    /// key): the "see as segment" preview. Nothing is recorded.
    pub async fn preview(
        &self,
        slot: SlotName,
        segments: &[String],
        experiments: &BTreeMap<String, String>,
        channel: SlotChannel,
        product: Option<&Sku>,
    ) -> Result<SlotView, SlotError> {
        let mut experiment = |key: &str| experiments.get(key).cloned();
        self.view(slot, segments, channel, product, &mut experiment)
            .await
    }

    async fn view(
        &self,
        slot: SlotName,
        segments: &[String],
        channel: SlotChannel,
        product: Option<&Sku>,
        experiment: &mut (dyn FnMut(&str) -> Option<String> + Send),
    ) -> Result<SlotView, SlotError> {
        let record = self.slot(slot);
        let builtin;
        let (spec, configured) = match &record {
            Some(r) => (&r.spec, true),
            None => {
                builtin = builtin_spec(slot).ok_or(SlotError::NotConfigured(slot.as_str()))?;
                (&builtin, false)
            }
        };
        let request = SlotRequest {
            channel,
            segments,
            now: self.clock.now(),
        };
        let r = resolve_with(spec, &request, experiment);
        let products = match r.content {
            Content::Recommendations(rec) => self.recommend(rec, product).await?,
            _ => Vec::new(),
        };
        let (reason_code, reason) = if configured {
            (r.code, r.reason.clone())
        } else {
            (
                "not_configured",
                format!("built-in default: slot {} is not configured", slot.as_str()),
            )
        };
        Ok(SlotView {
            slot,
            variant: r.variant_id().to_string(),
            position: r.position,
            content: r.content.clone(),
            reason,
            reason_code,
            experiment: r.experiment.clone().map(|(experiment, variant)| {
                channels::backend::SlotExperiment {
                    experiment,
                    variant,
                }
            }),
            products,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Recommendations.

    /// The top neighbours of a SKU in a relation, as stored (admin view).
    pub fn neighbours(
        &self,
        relation: Relation,
        sku: &Sku,
    ) -> Result<Vec<Neighbour>, StorageError> {
        self.store.neighbours(relation, sku.as_str())
    }

    /// The products a recommendation shows next to `product` (a SKU of the product page): one
    /// SKU per product, best first, never the page's own product, only products in the catalog
    /// with units to sell online.
    async fn recommend(
        &self,
        rec: &Recommendations,
        product: Option<&Sku>,
    ) -> Result<Vec<Sku>, StorageError> {
        let catalog = self.catalog.load_full();
        let own = product.and_then(|s| catalog.product_by_sku(s));
        // (score, sku) candidates, best first.
        let candidates: Vec<(u64, Sku)> = match rec.strategy {
            Strategy::BoughtTogether => self.related(&catalog, own, Relation::BoughtTogether)?,
            Strategy::ViewedTogether => self.related(&catalog, own, Relation::ViewedTogether)?,
            Strategy::TopProducts => self.top_products(&catalog).await?,
            Strategy::Skus => rec.skus.iter().map(|s| (0, s.clone())).collect(),
        };
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for (_, sku) in candidates {
            let Some(p) = catalog.product_by_sku(&sku) else {
                continue;
            };
            if own.is_some_and(|o| o.id == p.id) || seen.contains(&p.id) {
                continue;
            }
            let sellable = self
                .inventory
                .available(&LocationId::online(), std::slice::from_ref(&sku))
                .first()
                .is_some_and(|n| *n > 0);
            if !sellable {
                continue;
            }
            seen.push(p.id);
            out.push(sku);
            if out.len() >= rec.count as usize {
                break;
            }
        }
        Ok(out)
    }

    /// Every product related to any variant of `own`, scored by the sum of its SKUs' counts.
    fn related(
        &self,
        catalog: &CatalogSnapshot,
        own: Option<&Product>,
        relation: Relation,
    ) -> Result<Vec<(u64, Sku)>, StorageError> {
        let Some(own) = own else {
            return Ok(Vec::new());
        };
        let mut by_product: HashMap<protocol::ProductId, (u64, u64, Sku)> = HashMap::new();
        for v in &own.variants {
            for n in self.store.neighbours(relation, v.sku.as_str())? {
                let Ok(sku) = Sku::parse(&n.sku) else {
                    continue;
                };
                let Some(p) = catalog.product_by_sku(&sku) else {
                    continue;
                };
                let entry = by_product.entry(p.id).or_insert((0, 0, sku.clone()));
                entry.0 += n.count;
                // The product's best SKU stands for it.
                if n.count > entry.1 {
                    entry.1 = n.count;
                    entry.2 = sku;
                }
            }
        }
        let mut out: Vec<(u64, Sku)> = by_product
            .into_values()
            .map(|(score, _, sku)| (score, sku))
            .collect();
        out.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
        Ok(out)
    }

    /// The best sellers of the last [`TOP_PRODUCT_DAYS`] days by units (all channels).
    async fn top_products(
        &self,
        catalog: &CatalogSnapshot,
    ) -> Result<Vec<(u64, Sku)>, StorageError> {
        let to = self.clock.now().date();
        let range = Range {
            from: to - time::Duration::days(TOP_PRODUCT_DAYS - 1),
            to,
            channel: None,
        };
        let rows = self
            .experience
            .read(move |a| reports::products(a, &range, ProductSort::Units, 50))
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.units > 0)
            .filter_map(|r| {
                let p = catalog.product_by_slug(&r.product).or_else(|| {
                    Sku::parse(&r.product)
                        .ok()
                        .and_then(|s| catalog.product_by_sku(&s))
                })?;
                Some((r.units, p.variants.first()?.sku.clone()))
            })
            .collect())
    }

    /// The board item for a consenting customer at a board (`None`: no board item slot, or its
    /// content is not for boards).
    pub async fn board_item(
        &self,
        customer: CustomerId,
    ) -> Result<Option<protocol::board::BoardItem>, SlotError> {
        match self
            .resolve(
                Some(Subject::Customer(customer)),
                None,
                SlotName::BoardItem,
                SlotChannel::Board,
                None,
            )
            .await
        {
            Ok(view) => Ok(match view.content {
                Content::BoardItem(item) => Some(item),
                _ => None,
            }),
            Err(SlotError::NotConfigured(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The email block for a customer's marketing mail (`None`: no email block slot).
    pub async fn email_block(
        &self,
        customer: CustomerId,
    ) -> Result<Option<protocol::personalization::EmailBlock>, SlotError> {
        match self
            .resolve(
                Some(Subject::Customer(customer)),
                None,
                SlotName::EmailBlock,
                SlotChannel::Email,
                None,
            )
            .await
        {
            Ok(view) => Ok(match view.content {
                Content::EmailBlock(block) => Some(block),
                _ => None,
            }),
            Err(SlotError::NotConfigured(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The event channel of a slot's exposure. Events have no email channel: an email block's
/// exposure is recorded on `web`, where the mail's links lead.
fn event_channel(channel: SlotChannel) -> Channel {
    match channel {
        SlotChannel::Web | SlotChannel::Email => Channel::Web,
        SlotChannel::Mobile => Channel::Mobile,
        SlotChannel::Pos => Channel::Pos,
        SlotChannel::Board => Channel::Board,
        SlotChannel::Voice => Channel::Voice,
        SlotChannel::Chat => Channel::Chat,
    }
}

/// What a slot does when no one configured it: recommendations show what was bought with the
/// product; the other slots have none (the storefront keeps its own hero).
fn builtin_spec(slot: SlotName) -> Option<SlotSpec> {
    match slot {
        SlotName::ProductRecommendations => Some(SlotSpec {
            variants: Vec::new(),
            default: Content::Recommendations(Recommendations {
                strategy: Strategy::BoughtTogether,
                count: 4,
                skus: Vec::new(),
                title: None,
            }),
        }),
        SlotName::HomeHero | SlotName::BoardItem | SlotName::EmailBlock => None,
    }
}

impl Personalization {
    /// The demo's slots, unless some are configured: a coffee hero, board item and email block
    /// for the segment `coffee-lovers` (the demo shopper's), recommendations that differ in the
    /// app. Audited as the admin token's.
    pub async fn seed_demo(&self) -> Result<(), SlotError> {
        if !self.slots.load().is_empty() {
            return Ok(());
        }
        let catalog = self.catalog.load_full();
        let in_category = |id: &str| {
            catalog
                .products()
                .iter()
                .find(|p| p.category.0 == id)
                .or_else(|| catalog.products().first())
                .and_then(|p| p.variants.first())
                .map(|v| v.sku.to_string())
        };
        let (Some(coffee), Some(tea)) = (in_category("coffee"), in_category("tea")) else {
            return Ok(());
        };
        let lovers = serde_json::json!({"segments": ["coffee-lovers"]});
        let slots = [
            (
                SlotName::HomeHero,
                serde_json::json!({
                    "variants": [{"id": "coffee-lovers", "targeting": lovers,
                        "content": {"title": "Freshly roasted, picked for you",
                            "text": "New beans from the roastery every week. You like coffee: here is what just arrived.",
                            "sku": coffee, "link": "/c/coffee"}}],
                    "default": {"title": "Good things for every day, online and in store",
                        "text": "Freshly roasted coffee, fine tea and everything around them. Fill your basket here and finish in the app or at the till: it is the same basket everywhere.",
                        "sku": tea, "link": "/c/tea"}
                }),
            ),
            (
                SlotName::ProductRecommendations,
                serde_json::json!({
                    "variants": [{"id": "app", "targeting": {"channels": ["mobile"]},
                        "content": {"strategy": "viewed_together", "count": 4,
                            "title": "Others also looked at"}}],
                    "default": {"strategy": "bought_together", "count": 4}
                }),
            ),
            (
                SlotName::BoardItem,
                serde_json::json!({
                    "variants": [{"id": "coffee-lovers", "targeting": lovers,
                        "content": {"id": "picked-beans", "title": "Freshly roasted this week", "sku": coffee}}],
                    "default": {"id": "welcome-back", "title": "Welcome back", "body": "Ask us about this week's offers."}
                }),
            ),
            (
                SlotName::EmailBlock,
                serde_json::json!({
                    "variants": [{"id": "coffee-lovers", "targeting": lovers,
                        "content": {"title": "New beans in the roastery",
                            "text": "Our roasters picked three new single origins this week.",
                            "link": "/c/coffee"}}],
                    "default": {"title": "See what is new", "text": "New arrivals in every aisle.", "link": "/"}
                }),
            ),
        ];
        for (slot, body) in slots {
            self.put(&AuditActor::AdminToken, slot, &body).await?;
        }
        Ok(())
    }
}
