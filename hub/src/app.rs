//! The hub application: opens storage, starts the actors, binds the HTTP server (port 0 in
//! tests) and serves until shut down, then drains events and flushes storage.

use crate::actors::catalog::{CatalogActor, Upsert};
use crate::actors::directory::{Directory, DirectoryStats, DirectoryView, Stats};
use crate::actors::inventory::Inventory;
use crate::actors::recorder::{Drain, Recorder};
use crate::actors::{Deps, Lifecycle};
use crate::backend::HubBackend;
use crate::clock::Clock;
use crate::config::HubSettings;
use crate::storage::sled::SledStorage;
use crate::storage::{Storage, StorageError};
use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use channels::{Backend, BackendError, ChannelState};
use protocol::{Category, LocationId, Product, StockLevel};
use std::net::SocketAddr;
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
}

/// Handles to the running hub's parts, for the binary, the demo seeder and tests.
#[derive(Clone)]
pub struct HubHandle {
    pub backend: Arc<HubBackend>,
    pub directory: Addr<Directory>,
    pub catalog: Addr<CatalogActor>,
    pub inventory: Inventory,
    pub recorder: Addr<Recorder>,
    pub storage: Arc<SledStorage>,
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

    /// Appends every buffered event now (shutdown, tests).
    pub async fn drain_events(&self) {
        let _ = self.recorder.send(Drain).await;
    }
}

/// A built hub: listening, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    address: SocketAddr,
    handle: HubHandle,
    _arbiters: Vec<Arbiter>,
}

/// The demo shopper's credentials.
pub const DEMO_EMAIL: &str = "shopper@example.com";
pub const DEMO_PASSWORD: &str = "omnihub-demo";

impl Application {
    /// Opens storage, starts the actors and binds the listener. Must run inside an actix System.
    pub async fn build(
        settings: HubSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, HubError> {
        let storage = SledStorage::open(&settings.data_dir, settings.cache_mb)?;
        let dyn_storage: Arc<dyn Storage> = storage.clone();
        let (catalog, snapshot) = CatalogActor::start(dyn_storage.clone()).await?;
        let inventory = Inventory::start(dyn_storage.clone(), settings.inventory_shards).await?;
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
        let deps = Deps {
            storage: dyn_storage,
            clock,
            catalog: snapshot,
            inventory: inventory.clone(),
            recorder: recorder.clone(),
            lifecycle,
        };
        let view = Arc::new(DirectoryView::default());
        let directory = Directory::new(
            deps.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
            view.clone(),
        )
        .start();
        let backend = Arc::new(HubBackend::new(
            deps,
            directory.clone(),
            view,
            settings.channels.session_days,
        ));
        let handle = HubHandle {
            backend: backend.clone(),
            directory,
            catalog,
            inventory,
            recorder,
            storage,
        };
        if settings.demo_data {
            seed_demo(&handle).await?;
        }
        let state = web::Data::new(ChannelState::new(backend, settings.channels.clone()));
        let app_handle = web::Data::new(handle.clone());
        let ops = web::Data::new(OpsAccess {
            token: settings.ops_token.clone(),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(state.clone())
                .app_data(app_handle.clone())
                .app_data(ops.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/ops/stats", web::get().to(ops_stats))
                .configure(failpoint_routes)
                .route("/metrics", web::get().to(metrics))
                .service(
                    web::scope("/images")
                        .route("/category/{id}.svg", web::get().to(category_image))
                        .route("/{slug}.svg", web::get().to(product_image)),
                )
                .configure(channels::configure)
        })
        .disable_signals();
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let server = server
            .bind(settings.listen)
            .map_err(|source| HubError::Bind {
                addr: settings.listen,
                source,
            })?;
        let address = server.addrs().first().copied().unwrap_or(settings.listen);
        Ok(Application {
            server: server.run(),
            address,
            handle,
            _arbiters: arbiters,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then drains buffered events and flushes storage.
    pub async fn run(self) -> Result<(), HubError> {
        self.server.await?;
        self.handle.drain_events().await;
        self.handle.storage.flush()?;
        Ok(())
    }
}

/// Loads the demo catalog, stock and shopper if the catalog is empty.
pub async fn seed_demo(handle: &HubHandle) -> Result<(), HubError> {
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
    let registration = channels::backend::Registration {
        email: DEMO_EMAIL.into(),
        name: "Demo Shopper".into(),
        password: DEMO_PASSWORD.into(),
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
        Ok(_) | Err(BackendError::EmailTaken) => Ok(()),
        Err(e) => Err(HubError::Demo(e.to_string())),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(handle: web::Data<HubHandle>) -> HttpResponse {
    if handle.backend.ready().await {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not ready", "storage": handle.storage.healthy()}))
    }
}

/// Resident memory of this process in bytes (Linux), for ops and benchmarks.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Who may read the operations endpoints.
struct OpsAccess {
    token: Option<secrecy::SecretString>,
}

/// Proof that a request may use an operations endpoint: it carries the configured ops token as
/// `Authorization: Bearer`, or no token is configured.
struct OpsAuthorized;

impl actix_web::FromRequest for OpsAuthorized {
    type Error = channels::error::ApiError;
    type Future = std::future::Ready<Result<OpsAuthorized, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        let expected = req
            .app_data::<web::Data<OpsAccess>>()
            .and_then(|a| a.token.clone());
        let Some(expected) = expected else {
            return std::future::ready(Ok(OpsAuthorized));
        };
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes())
            .into();
        std::future::ready(if ok {
            Ok(OpsAuthorized)
        } else {
            Err(channels::error::ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "ops_token_required",
                "send the hub's ops token as Authorization: Bearer <token>",
            ))
        })
    }
}

async fn ops_stats(_: OpsAuthorized, handle: web::Data<HubHandle>) -> HttpResponse {
    let stats = handle.stats().await;
    HttpResponse::Ok().json(serde_json::json!({"actors": stats, "rss_bytes": resident_bytes()}))
}

async fn metrics(_: OpsAuthorized, handle: web::Data<HubHandle>) -> HttpResponse {
    let mut out = String::new();
    if let Some(s) = handle.stats().await {
        out.push_str("# HELP omnihub_active_actors Entity actors active now.\n# TYPE omnihub_active_actors gauge\n");
        out.push_str(&format!("omnihub_active_actors{{kind=\"basket\"}} {}\nomnihub_active_actors{{kind=\"customer\"}} {}\n", s.active_baskets, s.active_customers));
        out.push_str(&format!(
            "# TYPE omnihub_actor_activations_total counter\nomnihub_actor_activations_total {}\n",
            s.activations
        ));
        out.push_str(&format!("# TYPE omnihub_actor_passivations_total counter\nomnihub_actor_passivations_total {}\n", s.passivations));
    }
    if let Some(rss) = resident_bytes() {
        out.push_str(&format!(
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
        ));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
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
