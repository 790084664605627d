//! The hub application: opens storage, starts the actors, binds the HTTP server (port 0 in
//! tests) and serves until shut down, then drains events and flushes storage.

use crate::actors::catalog::{CatalogActor, Upsert};
use crate::actors::checkout::CheckoutDeps;
use crate::actors::directory::{Directory, DirectoryStats, DirectoryView, Stats};
use crate::actors::inventory::Inventory;
use crate::actors::recorder::{Drain, Recorder};
use crate::actors::{Deps, Lifecycle};
use crate::admin::AdminAccess;
use crate::backend::HubBackend;
use crate::clock::Clock;
use crate::config::HubSettings;
use crate::payments::client::PaymentClient;
use crate::payments::routes::WebhookSettings;
use crate::storage::sled::SledStorage;
use crate::storage::{Storage, StorageError};
use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use channels::{Backend, BackendError, ChannelState};
use protocol::{Category, LocationId, Product, StockLevel};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What can stop the hub from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Server(#[from] std::io::Error),
    #[error("demo data: {0}")]
    Demo(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Handles to the running hub's parts, for the binary, the demo seeder and tests.
#[derive(Clone)]
pub struct HubHandle {
    pub backend: Arc<HubBackend>,
    pub directory: Addr<Directory>,
    pub catalog: Addr<CatalogActor>,
    pub inventory: Inventory,
    pub recorder: Addr<Recorder>,
    /// The records: sled (embedded) or PostgreSQL (`storage = "cluster"`).
    pub storage: Arc<dyn Storage>,
    /// The modules' own trees (`crate::storage::kv`), in the same backend as `storage`.
    pub keyspace: crate::storage::kv::Keyspace,
    pub outbox: crate::outbox::OutboxWorkers,
    /// The stores' edge nodes: sync sessions, the hub's replica of their locations.
    pub edge: crate::edge::EdgeHandle,
    /// Back-office users, promotions (the live set pricing reads) and coupons.
    pub backoffice: Arc<crate::backoffice::Backoffice>,
    /// The ERP importer: its appliers (register more with `import.register`), runs, cursors.
    pub import: crate::import::Importer,
    /// The in-store boards' playlists and audience (`crate::edge::boards`).
    pub boards: Arc<crate::edge::boards::HubBoards>,
    /// Account linking's authorization server (the voice skill's linked accounts are its
    /// tokens issued to the skill's client, `crate::oauth::VoiceLinks`).
    pub oauth: Arc<crate::oauth::AuthorizationServer>,
    /// The marketing automation scheduler (send it `RunDue` to run what is due now).
    pub automation: Addr<crate::automation::Scheduler>,
    /// Profiles, analytics, event export and privacy (`crate::experience`).
    pub experience: crate::experience::Experience,
    /// A/B tests: definitions, assignments, exposures, counts (`crate::experiments`).
    pub experiments: crate::experiments::Experiments,
    /// Content slots and recommendations (`crate::personalization`).
    pub personalization: Arc<crate::personalization::Personalization>,
    /// Background tasks that are not actors (the checkout sweeper), for readiness.
    pub tasks: crate::monitor::Tasks,
    /// In a cluster: who owns which shard (`None` on the embedded storage).
    pub ownership: Option<Arc<crate::cluster::OwnershipView>>,
    /// In a cluster: the background work that runs once across it (outbox delivery, the
    /// analyst, the counter, the recommender, automation timers, the ERP pull, the OAuth
    /// purge, store card refunds), each while this node holds its singleton. Empty embedded.
    pub singletons: crate::cluster::singleton::SingletonGroup,
    /// Cache changes announced to and followed from the other nodes (embedded: none).
    pub changes: crate::cluster::notify::Changes,
}

impl HubHandle {
    /// Active actors and lifetime counts.
    pub async fn stats(&self) -> Option<DirectoryStats> {
        self.directory.send(Stats).await.ok()
    }

    /// Upserts categories and products, durably.
    pub async fn upsert_catalog(
        &self,
        categories: Vec<Category>,
        products: Vec<Product>,
    ) -> Result<u64, StorageError> {
        self.catalog
            .send(Upsert {
                categories,
                products,
            })
            .await
            .map_err(|_| StorageError::Closed)?
    }

    /// Sets the online stock of SKUs, durably.
    pub async fn set_online_stock(
        &self,
        stock: Vec<(protocol::Sku, i64)>,
    ) -> Result<(), StorageError> {
        self.inventory
            .set(
                stock
                    .into_iter()
                    .map(|(sku, on_hand)| StockLevel {
                        sku,
                        location: LocationId::online(),
                        on_hand,
                        held: 0,
                    })
                    .collect(),
            )
            .await
    }

    /// What waits in the outbox per destination.
    pub async fn storage_backlog(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::storage::OutboxBacklog>, StorageError>
    {
        crate::storage::Outbox::backlog(self.storage.as_ref()).await
    }

    /// Appends every buffered event now (shutdown, tests).
    pub async fn drain_events(&self) {
        let _ = self.recorder.send(Drain).await;
    }
}

/// A built hub: listening, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    address: SocketAddr,
    /// Where `/metrics` is served when `[ops] metrics_address` is set (the bound address).
    metrics_address: Option<SocketAddr>,
    handle: HubHandle,
    /// The ops page's live feed (stopped with the server).
    live: Arc<crate::monitor::feed::LiveFeed>,
    /// What storage was opened, for shutdown (sled's flush; the cluster's leave).
    opened: Opened,
    crash: CrashOnStop,
    _arbiters: Vec<Arbiter>,
}

/// Armed, [`Application::run`] ends like a crash once its server stops: nothing drained, no
/// singleton or shard released (the leases run out), the connections dropped. Failover tests
/// use it to kill a node in-process.
#[derive(Clone, Default)]
pub struct CrashOnStop(Arc<std::sync::atomic::AtomicBool>);

impl CrashOnStop {
    pub fn arm(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn armed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The storage backend a hub opened, as shutdown needs it.
enum Opened {
    Sled(Arc<SledStorage>),
    Cluster {
        pg: Arc<crate::storage::postgres::PgStorage>,
        ownership: crate::cluster::Ownership,
    },
}

/// The directory, known once it starts: shard ownership starts before the actors (their
/// fence needs its view), and has no actors to stop until then.
#[derive(Default)]
struct LateActivations(std::sync::OnceLock<Addr<Directory>>);

#[async_trait::async_trait]
impl crate::cluster::ShardActivations for LateActivations {
    async fn stop_shard(&self, shard: u64) {
        if let Some(directory) = self.0.get() {
            crate::cluster::ShardActivations::stop_shard(directory, shard).await;
        }
    }
}

/// The records, the keyspace and (in a cluster) shard ownership, opened as configured.
struct Stores {
    storage: Arc<dyn Storage>,
    oauth: Arc<dyn crate::storage::oauth::OAuthStore>,
    committer: Arc<dyn crate::storage::Committer>,
    keyspace: crate::storage::kv::Keyspace,
    edge: Arc<dyn crate::edge::store::EdgeStore>,
    fence: crate::cluster::Fence,
    view: Option<Arc<crate::cluster::OwnershipView>>,
    activations: Arc<LateActivations>,
    /// In a cluster: what runs background work once across it (`None` embedded: here).
    singletons: Option<crate::cluster::singleton::Singletons>,
    opened: Opened,
    changes: crate::cluster::notify::Changes,
}

async fn open_stores(settings: &HubSettings, bound: SocketAddr) -> Result<Stores, HubError> {
    let activations = Arc::new(LateActivations::default());
    match settings.storage {
        crate::config::StorageKind::Sled => {
            let storage = SledStorage::open(&settings.data_dir, settings.cache_mb)?;
            Ok(Stores {
                storage: storage.clone(),
                oauth: storage.clone(),
                committer: storage.clone(),
                keyspace: storage.keyspace(),
                edge: crate::edge::sled_store::SledEdgeStore::open(&storage)?,
                fence: crate::cluster::Fence::embedded(),
                view: None,
                activations,
                singletons: None,
                opened: Opened::Sled(storage),
                changes: crate::cluster::notify::Changes::embedded(),
            })
        }
        crate::config::StorageKind::Cluster => {
            use secrecy::ExposeSecret;
            let cluster = &settings.cluster;
            let options: sqlx::postgres::PgConnectOptions =
                cluster.postgres_url.expose_secret().parse().map_err(|_| {
                    // The URL may hold a password: never repeat it.
                    HubError::Config("[cluster]: postgres_url is not a valid URL".into())
                })?;
            // The keyspace runs its queries on a runtime of its own, so it has a pool of its
            // own: a quarter of the connections (the modules' data is the smaller load).
            let kv_pool = (cluster.pool_size / 4).max(2);
            let pg = crate::storage::postgres::PgStorage::connect(
                options.clone(),
                cluster.pool_size.saturating_sub(kv_pool).max(2),
            )
            .await?;
            let keyspace = crate::storage::kv::Keyspace::postgres(options, kv_pool).await?;
            let edge = crate::edge::kv_store::KvEdgeStore::open(&keyspace, pg.clone()).await?;
            let ownership = crate::cluster::Ownership::start(
                pg.clone(),
                cluster.ownership(bound),
                activations.clone(),
            )
            .map_err(|e| HubError::Config(format!("[cluster]: {e}")))?;
            let view = ownership.view();
            let singletons = crate::cluster::singleton::Singletons::cluster(
                pg.clone(),
                keyspace.clone(),
                crate::cluster::singleton::SingletonSettings {
                    node_id: cluster.node_id.clone(),
                    lease_ttl: cluster.lease_ttl,
                    renew_every: cluster.heartbeat_every,
                },
            )
            .map_err(|e| HubError::Config(format!("[cluster]: {e}")))?;
            wait_for_first_shards(&view, cluster.lease_ttl).await;
            let changes = crate::cluster::notify::Changes::listen(&pg, &cluster.node_id).await?;
            Ok(Stores {
                storage: pg.clone(),
                oauth: pg.clone(),
                committer: pg.clone(),
                keyspace,
                edge,
                fence: crate::cluster::Fence::cluster(view.clone()),
                view: Some(view),
                activations,
                singletons: Some(singletons),
                opened: Opened::Cluster { pg, ownership },
                changes,
            })
        }
    }
}

/// Waits (at most `bound`) until this node holds a shard: its first round has run, so start-up
/// work that activates actors (the demo shopper) finds shards here. Shards other nodes still
/// hold come later, when those hand them over; requests for them get `503` meanwhile.
async fn wait_for_first_shards(view: &crate::cluster::OwnershipView, bound: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    while view.local_shards().is_empty() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?bound, "no shard acquired yet; starting anyway");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The demo shopper's credentials.
pub const DEMO_EMAIL: &str = "shopper@example.com";
pub const DEMO_PASSWORD: &str = "omnihub-demo";
/// The demo shopper's phone number and loyalty number (a clerk finds them at the till by these).
pub const DEMO_PHONE: &str = "+49 30 1234567";
pub const DEMO_LOYALTY_NUMBER: &str = "70000001";

/// `storage = "cluster"` needs settings that can work (checked before anything opens).
fn cluster_ready(settings: &HubSettings) -> Result<(), HubError> {
    match settings.storage {
        crate::config::StorageKind::Sled => Ok(()),
        crate::config::StorageKind::Cluster => settings
            .cluster
            .check()
            .map_err(|e| HubError::Config(format!("[cluster]: {e}"))),
    }
}

impl Application {
    /// Opens storage, starts the actors and binds the listener. Must run inside an actix System.
    pub async fn build(
        settings: HubSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, HubError> {
        let listener =
            std::net::TcpListener::bind(settings.listen).map_err(|source| HubError::Bind {
                addr: settings.listen,
                source,
            })?;
        Application::build_on(listener, settings, clock).await
    }

    /// Like [`Application::build`], on a listener the caller bound (tests that must tell
    /// partners the hub's address before the hub starts).
    pub async fn build_on(
        listener: std::net::TcpListener,
        settings: HubSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, HubError> {
        cluster_ready(&settings)?;
        let pricing = settings.checkout.pricing();
        pricing
            .validate(protocol::Currency::EUR)
            .map_err(|e| HubError::Config(format!("[checkout]: {e}")))?;
        settings
            .payments
            .check()
            .map_err(|e| HubError::Config(format!("[payments]: {e}")))?;
        let payments = PaymentClient::new(&settings.payments)
            .map_err(|e| HubError::Config(format!("[payments]: {e}")))?;
        let card_authority = web::Data::new(crate::edge::card::CardAuthority {
            payments: payments.clone(),
        });
        let address = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let automation_rules = crate::automation::rules::Rules::of(&settings.automation)
            .map_err(|e| HubError::Config(format!("[automation]: {e}")))?;
        let Stores {
            storage,
            oauth: oauth_store,
            committer,
            keyspace,
            edge: edge_store,
            fence,
            view: ownership_view,
            activations,
            singletons,
            opened,
            changes,
        } = open_stores(&settings, address).await?;
        let clustered = singletons.is_some();
        let automation_store: Arc<dyn crate::automation::AutomationStore> =
            Arc::new(crate::automation::KvAutomationStore::open(&keyspace)?);
        let triggers = crate::automation::Triggers::new(automation_store.clone());
        let dyn_storage: Arc<dyn Storage> = storage.clone();
        let oauth = Arc::new(
            crate::oauth::AuthorizationServer::new(
                settings.oauth.clone(),
                oauth_store,
                committer,
                clock.clone(),
            )
            .map_err(|e| HubError::Config(format!("[oauth]: {e}")))?,
        );
        let (catalog, snapshot) = CatalogActor::start(dyn_storage.clone()).await?;
        let backoffice = crate::backoffice::Backoffice::open(
            crate::backoffice::store::KvBackofficeStore::open(&keyspace)?,
            clock.clone(),
            snapshot.clone(),
            settings.backoffice.clone(),
        )?;
        backoffice.start_timer();
        let inventory = Inventory::start(dyn_storage.clone(), settings.inventory_shards).await?;
        let edge = crate::edge::replica::EdgeReplica::start_with(
            crate::edge::replica::Start {
                settings: settings.edge.clone(),
                store: edge_store,
                holds: Arc::new(crate::edge::merge::HubHolds {
                    inventory: inventory.clone(),
                    storage: dyn_storage.clone(),
                }),
                inventory: inventory.clone(),
                catalog: snapshot.clone(),
                clock: clock.clone(),
            },
            // The live promotions travel to the nodes with the catalog.
            backoffice.clone(),
        )
        .await
        .map_err(|e| match e {
            crate::edge::EdgeError::Storage(e) => HubError::Storage(e),
            other => HubError::Config(format!("[edge]: {other}")),
        })?;
        let store_returns = crate::edge::returns::Returns::open(&keyspace)?;
        let store_refunds = payments.clone();
        let recorder = Recorder::new(dyn_storage.clone()).start();
        let threads = if settings.actor_threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            settings.actor_threads
        };
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let lifecycle = Lifecycle {
            passivate_after: settings.passivate_after,
            check_every: settings.idle_check_every,
        };
        let oms = crate::fulfilment::oms::OmsDeliverer::new(&settings.oms)
            .map_err(|e| HubError::Config(format!("[oms]: {e}")))?;
        let email = crate::fulfilment::email::EmailDeliverer::new(&settings.email)
            .map_err(|e| HubError::Config(format!("[email]: {e}")))?;
        let deliverers: Vec<Arc<dyn crate::outbox::Deliverer>> =
            vec![Arc::new(oms), Arc::new(email)];
        // Backoff and breakers are about real time, whatever clock the domain logic runs on.
        // In a cluster they start where the outbox singleton is held (below).
        let outbox = if clustered {
            crate::outbox::OutboxWorkers::new(
                deliverers,
                dyn_storage.clone(),
                Arc::new(crate::clock::SystemClock),
                settings.outbox.policy(),
            )
        } else {
            crate::outbox::OutboxWorkers::start(
                deliverers,
                dyn_storage.clone(),
                Arc::new(crate::clock::SystemClock),
                settings.outbox.policy(),
            )
        };
        // Store sales with a customer get their receipt by email (queued with the merge).
        edge.replica
            .send(crate::edge::replica::SetSaleFollowUp(Arc::new(
                crate::edge::receipts::StoreReceipts {
                    storage: dyn_storage.clone(),
                    outbox: outbox.clone(),
                    clock: clock.clone(),
                },
            )))
            .await
            .map_err(|e| HubError::Config(format!("[edge]: {e}")))?;
        let import = crate::import::start(crate::import::Start {
            settings: settings.import.clone(),
            storage: storage.clone(),
            keyspace: keyspace.clone(),
            catalog: catalog.clone(),
            snapshot: snapshot.clone(),
            inventory: inventory.clone(),
            edge: edge.clone(),
            clock: clock.clone(),
            currency: protocol::Currency::EUR,
            home: pricing
                .markets
                .first()
                .cloned()
                .ok_or_else(|| HubError::Config("[checkout]: no market".into()))?,
            pull_now: !clustered,
        })
        .await
        .map_err(|e| match e {
            crate::import::ImportError::Storage(m) => HubError::Storage(StorageError::Io(m)),
            other => HubError::Config(format!("[import]: {other}")),
        })?;
        // The back office applies the ERP's promotions and coupons feeds.
        for applier in backoffice.appliers() {
            import.register(applier);
        }
        let experiments = crate::experiments::Experiments::open(
            &keyspace,
            backoffice.clone(),
            recorder.clone(),
            clock.clone(),
        )?;
        if !clustered {
            experiments.start_counter(dyn_storage.clone())?;
        }
        let log = dyn_storage.clone();
        let personalization_hook = crate::personalization::PersonalizationHook::default();
        let deps = Deps {
            storage: dyn_storage,
            clock: clock.clone(),
            catalog: snapshot,
            inventory: inventory.clone(),
            recorder: recorder.clone(),
            lifecycle,
            checkout: Arc::new(CheckoutDeps {
                settings: settings.checkout.clone(),
                pricing,
                payments,
                public_url: public_url.clone(),
                order_seq: AtomicU64::new(storage.last_order_sequence("W").await?),
                edge: Some(edge.clone()),
            }),
            outbox: outbox.clone(),
            offers: backoffice.clone(),
            automation: triggers.clone(),
            experiments: experiments.clone(),
            personalization: personalization_hook.clone(),
            fence,
        };
        let automation_deps = deps.clone();
        let view = Arc::new(DirectoryView::default());
        let directory = Directory::new(
            deps.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
            view.clone(),
        )
        .start();
        let _ = activations.0.set(directory.clone());
        let mut backend = HubBackend::new(
            deps,
            directory.clone(),
            view,
            settings.channels.session_days,
        );
        // In a cluster, the hub's own calls to other nodes' actors go to them.
        let peers = match &ownership_view {
            Some(view) => {
                let peers = Arc::new(
                    crate::cluster::remote::Peers::new(
                        view.clone(),
                        settings.cluster.secret.clone(),
                        settings.cluster.lease_ttl + settings.cluster.heartbeat_every,
                    )
                    .map_err(|e| HubError::Config(format!("[cluster]: {e}")))?,
                );
                backend = backend.with_peers(peers.clone());
                Some(peers)
            }
            None => None,
        };
        let backend = Arc::new(backend);
        crate::collect::apply_reports(&edge, backend.clone());
        let boards = crate::edge::boards::HubBoards::open(&keyspace)?;
        let experience = if clustered {
            crate::experience::Experience::start_standby(
                storage.clone(),
                &keyspace,
                clock.clone(),
                crate::experience::segments::definitions(&backoffice)?,
            )?
        } else {
            crate::experience::Experience::start(
                storage.clone(),
                &keyspace,
                clock.clone(),
                crate::experience::segments::definitions(&backoffice)?,
            )?
        };
        let personalization =
            crate::personalization::Personalization::start(crate::personalization::Start {
                storage: storage.clone(),
                keyspace: keyspace.clone(),
                backoffice: backoffice.clone(),
                experience: experience.clone(),
                boards: boards.clone(),
                catalog: automation_deps.catalog.clone(),
                inventory: inventory.clone(),
                clock: automation_deps.clock.clone(),
                experiments: experiments.clone(),
                role: if clustered {
                    crate::cluster::singleton::Role::Standby
                } else {
                    crate::cluster::singleton::Role::Alone
                },
            })?;
        personalization_hook.connect(personalization.clone());
        if !clustered {
            store_returns.start_worker(store_refunds.clone(), backend.clone());
        }
        let automation_env = Arc::new(crate::automation::scheduler::Env {
            settings: settings.automation.clone(),
            rules: automation_rules,
            store: automation_store,
            deps: automation_deps,
            public_url,
        });
        let scheduler = if clustered {
            crate::automation::Scheduler::start_standby(automation_env.clone()).await
        } else {
            crate::automation::Scheduler::start(automation_env.clone()).await
        }
        .map_err(|e| match e {
            crate::automation::AutomationError::Storage(e) => HubError::Storage(e),
            other => HubError::Config(format!("[automation]: {other}")),
        })?;
        triggers.connect(scheduler.clone());
        inventory.on_restock(scheduler.clone().recipient());
        let automation_data = web::Data::new(crate::automation::routes::AutomationData {
            env: automation_env,
            scheduler: scheduler.clone(),
        });
        let handle = HubHandle {
            backend: backend.clone(),
            directory,
            catalog,
            inventory,
            recorder,
            storage,
            keyspace: keyspace.clone(),
            outbox,
            edge,
            backoffice: backoffice.clone(),
            import: import.clone(),
            boards,
            oauth: oauth.clone(),
            automation: scheduler,
            experience,
            experiments,
            personalization,
            tasks: crate::monitor::Tasks::default(),
            ownership: ownership_view.clone(),
            singletons: crate::cluster::singleton::SingletonGroup::default(),
            changes: changes.clone(),
        };
        crate::cluster::notify::follow_all(&changes, &handle);
        if settings.demo_data {
            seed_demo(&handle).await?;
        }
        match &singletons {
            // An erasure a stop or crash interrupted finishes before any request can read the
            // customer's data; one that fails again stays recorded for the next start.
            None => {
                if let Err(e) = crate::experience::privacy::resume(&handle).await {
                    tracing::error!(error = %e, "an interrupted erasure could not be finished");
                }
            }
            Some(singletons) => run_once(
                singletons,
                Once {
                    handle: handle.clone(),
                    log,
                    store_returns: store_returns.clone(),
                    store_refunds,
                    pull: settings.import.pull.clone(),
                },
            ),
        }
        // Holds left by a crash are settled before any request can start a new one.
        backend.recover_holds().await;
        let sweeper = backend.clone();
        let every = settings
            .checkout
            .sweep_every
            .max(std::time::Duration::from_millis(50));
        handle.tasks.set_sweeper(actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sweeper.sweep().await;
            }
        }));
        let webhooks = web::Data::new(WebhookSettings {
            secret: settings.payments.webhook_secret.clone(),
            tolerance_secs: settings.payments.webhook_tolerance.as_secs() as i64,
        });
        let fulfilment = web::Data::new(crate::fulfilment::webhooks::FulfilmentSecrets {
            oms: settings.oms.webhook_secret.clone(),
            logistics: settings.oms.logistics_webhook_secret.clone(),
            tolerance_secs: settings.payments.webhook_tolerance.as_secs() as i64,
        });
        let admin = web::Data::new(AdminAccess {
            token: settings.admin_token.clone(),
        });
        let state = web::Data::new(
            ChannelState::new(backend, settings.channels.clone())
                .with_account_linking(oauth.clone()),
        );
        // The voice skill answers through the same assistant as the chat channel; its shoppers
        // come only from account linking.
        let linked: Arc<dyn channels::assistant::LinkedAccounts> =
            Arc::new(crate::oauth::VoiceLinks {
                server: oauth.clone(),
                client_id: settings.voice.link_client_id.clone(),
            });
        let token_limiter = web::Data::new(crate::oauth::limit::TokenLimiter::new(
            &settings.oauth,
            settings.channels.trusted_proxies.clone(),
        ));
        if !clustered {
            crate::oauth::purge::spawn(oauth.clone());
        }
        let voice_data = web::Data::new(
            channels::voice::VoiceState::new(&settings.voice, state.assistant.clone(), linked)
                .map_err(|e| HubError::Config(format!("[voice]: {e}")))?,
        );
        let oauth_data = web::Data::from(oauth);
        let app_handle = web::Data::new(handle.clone());
        let import_routes = web::Data::new(crate::import::routes::ImportRoutes {
            importer: import,
            push_secret: settings.import.push_secret.clone(),
            tolerance_secs: settings.import.signature_tolerance.as_secs() as i64,
            pull: settings.import.pull.clone(),
        });
        let backoffice_data = web::Data::from(backoffice);
        let backoffice_pages = web::Data::new(crate::backoffice::pages::Pages::new(
            settings.channels.secure_cookies,
            settings.channels.trusted_proxies.clone(),
        ));
        let ops = web::Data::new(crate::monitor::auth::OpsAccess::new(
            settings.ops_token.clone(),
            settings.ops.session_for,
            settings.channels.secure_cookies,
        ));
        let metrics_listener = match settings.ops.metrics_address {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|source| HubError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_address = metrics_listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()?;
        let metrics_on = web::Data::new(crate::monitor::http::MetricsListener(metrics_address));
        let live = crate::monitor::feed::LiveFeed::start(handle.clone(), settings.ops.live_every);
        let live_data = web::Data::from(live.clone());
        let ops_sign_ins = web::Data::new(crate::monitor::page::SignInLimit::default());
        let till_lookups = web::Data::new(crate::edge::customers::LookupGuard::new(
            settings.edge.customer_lookups.clone(),
        ));
        // In a cluster, requests for another node's baskets and customers are forwarded there.
        let forwarder = match &ownership_view {
            Some(view) => Some(web::Data::new(
                crate::cluster::forward::Forwarder::new(view.clone(), handle.storage.clone())
                    .map_err(|e| HubError::Config(format!("[cluster]: {e}")))?
                    .with_patience(settings.cluster.lease_ttl + settings.cluster.heartbeat_every),
            )),
            None => None,
        };
        // Calls from other nodes to this node's actors.
        let node_calls = peers.map(|peers| {
            let callee: Arc<dyn crate::cluster::remote::Callee> = handle.backend.clone();
            (web::Data::from(peers), web::Data::from(callee))
        });
        let mut server = HttpServer::new(move || {
            App::new()
                // Innermost: in a cluster (a `web::Data<Forwarder>` present), requests for
                // another node's baskets and customers go there; otherwise it passes through.
                .wrap(actix_web::middleware::from_fn(
                    crate::cluster::forward::route,
                ))
                .wrap(tracing_actix_web::TracingLogger::<
                    crate::telemetry::RequestSpans,
                >::new())
                // Outermost: the request id exists before the root span, and every answer
                // (errors included) is counted.
                .wrap(actix_web::middleware::from_fn(
                    crate::monitor::http::observe,
                ))
                .configure(|cfg| {
                    if let Some(f) = &forwarder {
                        cfg.app_data(f.clone());
                    }
                    if let Some((peers, callee)) = &node_calls {
                        cfg.app_data(peers.clone()).app_data(callee.clone());
                    }
                })
                .service(
                    web::resource(crate::cluster::remote::CALL_PATH)
                        .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                        .route(web::post().to(crate::cluster::remote::receive)),
                )
                .app_data(metrics_on.clone())
                .app_data(live_data.clone())
                .app_data(ops_sign_ins.clone())
                .app_data(state.clone())
                .app_data(app_handle.clone())
                .app_data(ops.clone())
                .app_data(webhooks.clone())
                .app_data(admin.clone())
                .app_data(fulfilment.clone())
                .app_data(backoffice_data.clone())
                .app_data(backoffice_pages.clone())
                .app_data(card_authority.clone())
                .app_data(oauth_data.clone())
                .app_data(token_limiter.clone())
                .configure(crate::oauth::routes::configure)
                .app_data(automation_data.clone())
                .service(
                    web::resource("/webhooks/oms")
                        .app_data(web::PayloadConfig::new(256 * 1024))
                        .route(web::post().to(crate::fulfilment::webhooks::oms)),
                )
                .service(
                    web::resource("/webhooks/logistics")
                        .app_data(web::PayloadConfig::new(256 * 1024))
                        .route(web::post().to(crate::fulfilment::webhooks::logistics)),
                )
                .service(
                    web::resource("/webhooks/payments")
                        .app_data(web::PayloadConfig::new(256 * 1024))
                        .route(web::post().to(crate::payments::routes::receive)),
                )
                .configure(crate::import::routes::configure(import_routes.clone()))
                .configure(crate::backoffice::routes::configure)
                // Before the admin scope, which answers every other /api/v1/admin path.
                .configure(crate::automation::routes::configure)
                .configure(crate::experience::segment_routes::configure)
                .configure(crate::experience::routes::configure)
                .configure(crate::experiments::routes::configure)
                .configure(crate::personalization::routes::configure)
                .configure(crate::admin::configure)
                .route(
                    "/api/v1/edge/sync",
                    web::get().to(crate::edge::session::sync),
                )
                .app_data(web::Data::new(store_returns.clone()))
                .route(
                    "/api/v1/edge/receipts/{receipt}",
                    web::get().to(crate::edge::returns::receipt),
                )
                .configure(crate::edge::customers::configure(till_lookups.clone()))
                .configure(crate::edge::boards::node_routes)
                .configure(crate::edge::card::configure)
                .configure(crate::unsubscribe::configure)
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(crate::monitor::readyz))
                .route("/ops/stats", web::get().to(ops_stats))
                .configure(crate::ops::configure)
                .configure(crate::monitor::page::configure)
                .configure(failpoint_routes)
                .route("/metrics", web::get().to(crate::monitor::metrics_endpoint))
                .service(
                    web::scope("/images")
                        .route("/category/{id}.svg", web::get().to(category_image))
                        .route("/{slug}.svg", web::get().to(product_image)),
                )
                .app_data(voice_data.clone())
                .configure(channels::voice::configure)
                // Before the storefront, whose default service answers every other page.
                .configure(crate::backoffice::pages::configure)
                .configure(channels::configure)
        })
        .disable_signals();
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let mut server = server.listen(listener).map_err(|source| HubError::Bind {
            addr: address,
            source,
        })?;
        if let (Some(metrics), Some(addr)) = (metrics_listener, metrics_address) {
            server = server
                .listen(metrics)
                .map_err(|source| HubError::Bind { addr, source })?;
        }
        Ok(Application {
            server: server.run(),
            address,
            metrics_address,
            handle,
            live,
            opened,
            crash: CrashOnStop::default(),
            _arbiters: arbiters,
        })
    }

    /// What makes [`Application::run`] end like a crash (see [`CrashOnStop`]).
    pub fn crash_on_stop(&self) -> CrashOnStop {
        self.crash.clone()
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }

    /// Where `/metrics` is served when it has a listener of its own (`[ops] metrics_address`).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// The ops page's live feed.
    pub fn live_feed(&self) -> Arc<crate::monitor::feed::LiveFeed> {
        self.live.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then drains buffered events and flushes storage.
    pub async fn run(self) -> Result<(), HubError> {
        self.server.await?;
        self.handle.changes.stop();
        self.live.stop();
        if self.crash.armed() {
            return crash(self.handle, self.opened).await;
        }
        self.handle.import.stop();
        // The work that runs once stops here (what it did is stored with its cursors), and
        // its leases are released: another node takes it over at its next ask.
        self.handle.singletons.stop().await;
        self.handle.drain_events().await;
        match self.opened {
            Opened::Sled(storage) => storage.flush()?,
            Opened::Cluster { pg, ownership } => {
                // Shards handed over (actors stopped, leases released) before the
                // connections close: the other nodes take them on their next round.
                if let Err(e) = ownership.leave().await {
                    tracing::warn!(error = %e, "leaving the cluster failed; leases run out");
                }
                self.handle.keyspace.close().await;
                pg.close().await;
            }
        }
        // The analyst's thread holds the storage: stopped, it lets go of the database (what it
        // folded is stored with its cursor, so a restart resumes where it stopped).
        self.handle.experience.stop();
        self.handle.experiments.stop_counter();
        self.handle.personalization.stop();
        Ok(())
    }
}

/// Ends a hub as if its process died: the singletons' work and the shard rounds end without
/// releasing anything, and the connections close (a write still in flight fails).
async fn crash(handle: HubHandle, opened: Opened) -> Result<(), HubError> {
    handle.singletons.abandon();
    // The abandoned term's workers would otherwise keep polling the closed connections.
    handle.outbox.halt();
    handle.import.stop();
    handle.experience.stop();
    handle.experiments.stop_counter();
    handle.personalization.stop();
    match opened {
        Opened::Sled(_) => {}
        Opened::Cluster { pg, ownership } => {
            ownership.kill();
            handle.keyspace.close().await;
            pg.close().await;
        }
    }
    Ok(())
}

/// How often the analyst's holder finishes erasure jobs left unfinished (one scan of the
/// `privacy` tree, empty when nothing waits).
const ERASURES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the work that runs once across a cluster is started with.
struct Once {
    handle: HubHandle,
    /// The event log the counter reads.
    log: Arc<dyn Storage>,
    store_returns: Arc<crate::edge::returns::Returns>,
    store_refunds: PaymentClient,
    pull: Option<crate::config::PullSettings>,
}

/// Starts, under their singletons, the background work a cluster must run once (each on the
/// node holding its lease, resuming from its stored cursor, its writes fenced by its term),
/// into `handle.singletons`. The checkout sweeper is not among them: each node sweeps the
/// checkouts of its own shards ([`crate::backend::HubBackend::sweep`]).
fn run_once(singletons: &crate::cluster::singleton::Singletons, once: Once) {
    use crate::cluster::singleton::{Lead, Singleton};
    let h = &once.handle;
    let group = &h.singletons;
    let outbox = h.outbox.clone();
    let arbiter = Arbiter::current();
    group.add(singletons.run(Singleton::OutboxDelivery, move |term| {
        let (outbox, arbiter) = (outbox.clone(), arbiter.clone());
        async move { outbox.run_term(term, arbiter).await }
    }));
    // Erasures whose analyst step could not run on another node (or that a stop or crash
    // interrupted) are finished by the analyst's holder: at the start of its term, then every
    // `ERASURES_EVERY`.
    let resumer = h.clone();
    group.add(
        h.experience
            .run_analyst(singletons, ERASURES_EVERY, move || {
                let handle = resumer.clone();
                async move {
                    if let Err(e) = crate::experience::privacy::resume(&handle).await {
                        tracing::error!(error = %e, "an interrupted erasure could not be finished");
                    }
                }
            }),
    );
    group.add(h.experiments.run_counter(singletons, once.log));
    group.add(h.personalization.run_recommender(singletons));
    let scheduler = h.automation.clone();
    group.add(
        singletons.run(Singleton::AutomationTimers, move |mut term| {
            let scheduler = scheduler.clone();
            async move {
                // Answered after a run in flight has finished (runs are atomic in the actor).
                if scheduler.send(Lead(Some(term.clone()))).await.is_ok() {
                    term.stopped().await;
                    let _ = scheduler.send(Lead(None)).await;
                }
            }
        }),
    );
    if let Some(pull) = h.import.run_pull(singletons, once.pull) {
        group.add(pull);
    }
    group.add(crate::oauth::purge::run(singletons, h.oauth.clone()));
    group.add(
        once.store_returns
            .run_worker(singletons, once.store_refunds, h.backend.clone()),
    );
}

/// Loads the demo catalog, stock and shopper if the catalog is empty.
pub async fn seed_demo(handle: &HubHandle) -> Result<(), HubError> {
    crate::experience::segments::seed_demo(
        &handle.backoffice,
        &handle.experience,
        handle.backend.deps.clock.now(),
    )
    .await
    .map_err(|e| HubError::Demo(e.to_string()))?;
    if !handle.backend.catalog().products().is_empty() {
        return Ok(());
    }
    let demo = crate::demo::demo_catalog();
    tracing::info!(
        products = demo.products.len(),
        categories = demo.categories.len(),
        "loading the demo catalog"
    );
    handle
        .upsert_catalog(demo.categories, demo.products)
        .await?;
    handle.set_online_stock(demo.stock).await?;
    handle
        .personalization
        .seed_demo()
        .await
        .map_err(|e| HubError::Demo(e.to_string()))?;
    let registration = channels::backend::Registration {
        email: DEMO_EMAIL.into(),
        name: "Demo Shopper".into(),
        password: DEMO_PASSWORD.into(),
        consents: Vec::new(),
    };
    match handle
        .backend
        .register(
            registration,
            &channels::Shopper::default(),
            protocol::Channel::Web,
        )
        .await
    {
        // The demo shopper can be found at the till by phone or loyalty number, and consents
        // explicitly (source `demo`) to marketing email (so the demo's reminders flow) and to
        // content picked for them on the store boards (segment `coffee-lovers`).
        Ok(signed_in) => {
            let granted = |channel, purpose| protocol::ConsentChoice {
                channel,
                purpose,
                granted: true,
            };
            handle
                .backend
                .set_consents(
                    signed_in.customer.id,
                    vec![
                        granted(
                            protocol::ConsentChannel::Email,
                            protocol::ConsentPurpose::Marketing,
                        ),
                        granted(
                            protocol::ConsentChannel::Board,
                            protocol::ConsentPurpose::Personalization,
                        ),
                    ],
                    protocol::ConsentSource::Demo,
                    protocol::Channel::Web,
                )
                .await
                .map_err(|e| HubError::Demo(e.to_string()))?;
            handle
                .backend
                .set_in_store(
                    signed_in.customer.id,
                    channels::backend::InStoreChange {
                        phone: Some(Some(DEMO_PHONE.into())),
                        loyalty_number: Some(Some(DEMO_LOYALTY_NUMBER.into())),
                    },
                )
                .await
                .map_err(|e| HubError::Demo(e.to_string()))?;
            let audience = protocol::board::BoardAudience {
                consent: true,
                segments: vec!["coffee-lovers".into()],
                customer: None,
                item: None,
                updated_ms: crate::edge::unix_ms(time::OffsetDateTime::now_utc()),
            };
            handle
                .boards
                .set_audience(signed_in.customer.id, &audience)
                .await
                .map_err(|e| HubError::Demo(e.to_string()))
        }
        Err(BackendError::EmailTaken) => Ok(()),
        Err(e) => Err(HubError::Demo(e.to_string())),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Resident memory of this process in bytes (Linux), for ops and benchmarks.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The ops routes' guard (one extractor for every way in: `crate::monitor::auth`).
pub(crate) use crate::monitor::auth::OpsAuthorized;

async fn ops_stats(_: OpsAuthorized, handle: web::Data<HubHandle>) -> HttpResponse {
    let stats = handle.stats().await;
    HttpResponse::Ok().json(serde_json::json!({"actors": stats, "rss_bytes": resident_bytes()}))
}

fn svg(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(body)
}

async fn product_image(handle: web::Data<HubHandle>, slug: web::Path<String>) -> HttpResponse {
    let catalog = handle.backend.catalog();
    match catalog.product_by_slug(&slug) {
        Some(p) => {
            let category = catalog
                .category(&p.category)
                .map_or("", |c| c.name.as_str());
            svg(crate::demo::product_image_svg(p, category))
        }
        None => HttpResponse::NotFound().finish(),
    }
}

async fn category_image(handle: web::Data<HubHandle>, id: web::Path<String>) -> HttpResponse {
    let catalog = handle.backend.catalog();
    match catalog.category(&protocol::CategoryId(id.into_inner())) {
        Some(c) => svg(crate::demo::category_image_svg(c)),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Crash tests arm failpoints over HTTP; the route exists only in `failpoints` builds.
fn failpoint_routes(cfg: &mut web::ServiceConfig) {
    #[cfg(feature = "failpoints")]
    cfg.route("/ops/failpoints", web::post().to(arm_failpoint));
    #[cfg(not(feature = "failpoints"))]
    let _ = cfg;
}

/// Body of `POST /ops/failpoints`: a failpoint name and its actions in the `fail` crate's syntax
/// (e.g. `return`, `1*off->return`, `off`).
#[cfg(feature = "failpoints")]
#[derive(serde::Deserialize)]
struct ArmFailpoint {
    name: String,
    actions: String,
}

#[cfg(feature = "failpoints")]
async fn arm_failpoint(_: OpsAuthorized, body: web::Json<ArmFailpoint>) -> HttpResponse {
    match fail::cfg(&body.name, &body.actions) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => HttpResponse::BadRequest()
            .json(serde_json::json!({"error": {"code": "bad_failpoint", "message": e}})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_are_checked_before_anything_opens() {
        let mut settings = HubSettings::default();
        assert!(cluster_ready(&settings).is_ok(), "sled runs");
        settings.storage = crate::config::StorageKind::Cluster;
        assert!(cluster_ready(&settings).is_ok(), "the cluster runs too");
        settings.cluster.node_id = " ".into();
        let refused = cluster_ready(&settings).expect_err("refused").to_string();
        assert!(refused.contains("[cluster]: node_id"), "{refused}");
    }
}
