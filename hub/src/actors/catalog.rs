//! The catalog actor: the single writer of the catalog. Readers never talk to it; they load the
//! current [`CatalogSnapshot`] from the shared `ArcSwap`, which the actor replaces atomically
//! after each durable change.

use crate::storage::{Change, Storage, StorageError, UnitOfWork};
use actix::prelude::*;
use arc_swap::ArcSwap;
use protocol::{CatalogSnapshot, Category, Product};
use std::collections::HashSet;
use std::sync::Arc;

pub struct CatalogActor {
    storage: Arc<dyn Storage>,
    snapshot: Arc<ArcSwap<CatalogSnapshot>>,
    /// Change notifications between hub nodes, once followed ([`FollowChanges`]).
    changes: Option<crate::cluster::notify::Changes>,
}

/// Announces this node's catalog changes to the other hub nodes and reloads the stored catalog
/// when another node changed it (`crate::cluster::notify`; a no-op embedded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FollowChanges(pub crate::cluster::notify::Changes);

/// Reads the stored catalog again and publishes it as a new snapshot (another node changed it).
#[derive(Message)]
#[rtype(result = "Result<u64, StorageError>")]
pub struct Reload;

impl Handler<FollowChanges> for CatalogActor {
    type Result = ();

    fn handle(&mut self, msg: FollowChanges, ctx: &mut Context<Self>) {
        let me = ctx.address();
        msg.0.on(crate::cluster::notify::Topic::Catalog, move || {
            me.do_send(Reload)
        });
        self.changes = Some(msg.0);
    }
}

impl Handler<Reload> for CatalogActor {
    type Result = AtomicResponse<Self, Result<u64, StorageError>>;

    fn handle(&mut self, _: Reload, _ctx: &mut Context<Self>) -> Self::Result {
        let storage = self.storage.clone();
        AtomicResponse::new(Box::pin(
            async move { storage.catalog().await }
                .into_actor(self)
                .map(|res, act, _| {
                    let (categories, products) = res.inspect_err(|e| {
                        tracing::error!(error = %e, "reloading the catalog another node changed");
                    })?;
                    let version = act.snapshot.load().version + 1;
                    act.snapshot.store(Arc::new(CatalogSnapshot::new(
                        version, categories, products,
                    )));
                    Ok(version)
                }),
        ))
    }
}

/// Upserts categories and products (by id), durably, then publishes a new snapshot.
#[derive(Message)]
#[rtype(result = "Result<u64, StorageError>")]
pub struct Upsert {
    pub categories: Vec<Category>,
    pub products: Vec<Product>,
}

impl CatalogActor {
    /// Loads the stored catalog into a first snapshot and starts the actor.
    pub async fn start(
        storage: Arc<dyn Storage>,
    ) -> Result<(Addr<CatalogActor>, Arc<ArcSwap<CatalogSnapshot>>), StorageError> {
        let (categories, products) = storage.catalog().await?;
        let snapshot = Arc::new(ArcSwap::from_pointee(CatalogSnapshot::new(
            1, categories, products,
        )));
        let addr = CatalogActor {
            storage,
            snapshot: snapshot.clone(),
            changes: None,
        }
        .start();
        Ok((addr, snapshot))
    }
}

impl Actor for CatalogActor {
    type Context = Context<Self>;
}

/// Upserts categories and products and removes products (by id) in one durable unit, then
/// publishes ONE new snapshot (the ERP importer's pages).
#[derive(Message)]
#[rtype(result = "Result<u64, StorageError>")]
pub struct ApplyBatch {
    pub categories: Vec<Category>,
    pub products: Vec<Product>,
    pub remove: Vec<protocol::ProductId>,
}

impl Handler<Upsert> for CatalogActor {
    type Result = AtomicResponse<Self, Result<u64, StorageError>>;

    fn handle(&mut self, msg: Upsert, ctx: &mut Context<Self>) -> Self::Result {
        <Self as Handler<ApplyBatch>>::handle(
            self,
            ApplyBatch {
                categories: msg.categories,
                products: msg.products,
                remove: Vec::new(),
            },
            ctx,
        )
    }
}

impl Handler<ApplyBatch> for CatalogActor {
    type Result = AtomicResponse<Self, Result<u64, StorageError>>;

    fn handle(&mut self, msg: ApplyBatch, _ctx: &mut Context<Self>) -> Self::Result {
        let storage = self.storage.clone();
        let mut unit = UnitOfWork::new();
        unit.changes
            .extend(msg.categories.iter().cloned().map(Change::PutCategory));
        unit.changes
            .extend(msg.products.iter().cloned().map(Change::PutProduct));
        unit.changes
            .extend(msg.remove.iter().copied().map(Change::DeleteProduct));
        AtomicResponse::new(Box::pin(
            async move { storage.commit(unit).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    if let Some(changes) = &act.changes {
                        changes.announce(crate::cluster::notify::Topic::Catalog);
                    }
                    let current = act.snapshot.load();
                    let new_categories: HashSet<&protocol::CategoryId> =
                        msg.categories.iter().map(|c| &c.id).collect();
                    let new_products: HashSet<protocol::ProductId> = msg
                        .products
                        .iter()
                        .map(|p| p.id)
                        .chain(msg.remove.iter().copied())
                        .collect();
                    let mut categories: Vec<Category> = current
                        .categories()
                        .iter()
                        .filter(|c| !new_categories.contains(&c.id))
                        .cloned()
                        .collect();
                    categories.extend(msg.categories);
                    let mut products: Vec<Product> = current
                        .products()
                        .iter()
                        .filter(|p| !new_products.contains(&p.id))
                        .cloned()
                        .collect();
                    products.extend(msg.products);
                    let version = current.version + 1;
                    act.snapshot.store(Arc::new(CatalogSnapshot::new(
                        version, categories, products,
                    )));
                    Ok(version)
                }),
        ))
    }
}
