//! Inventory, sharded by SKU: each shard actor is the single writer of the stock levels of its
//! SKUs at every location — on hand, held for checkouts, and available to promise. Writes are
//! serialized by the shard and applied only once durable.
//!
//! Reads (availability on a product page, the stock check when a line is added) do not queue
//! behind writes: each shard publishes its levels in a read view, like the catalog snapshot.

use crate::storage::{Change, Storage, StorageError, UnitOfWork};
use actix::prelude::*;
use protocol::{LocationId, Sku, StockLevel};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

type Levels = HashMap<(LocationId, Sku), StockLevel>;

/// A shard: its writer and its published levels.
type Shard = (Addr<InventoryShard>, Arc<RwLock<Levels>>);

/// One shard: the writer of its SKUs' levels, published in `view`.
pub struct InventoryShard {
    storage: Arc<dyn Storage>,
    view: Arc<RwLock<Levels>>,
}

/// Sets stock levels (a count, a receipt from the ERP or the demo seed) in one durable unit.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SetStock(pub Vec<StockLevel>);

impl Actor for InventoryShard {
    type Context = Context<Self>;
}

fn publish(view: &RwLock<Levels>, levels: Vec<StockLevel>) {
    // Inserts are single calls, so a poisoned lock still holds a consistent map.
    let mut map = view.write().unwrap_or_else(|e| e.into_inner());
    for level in levels {
        map.insert((level.location.clone(), level.sku.clone()), level);
    }
}

impl Handler<SetStock> for InventoryShard {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, msg: SetStock, _ctx: &mut Context<Self>) -> Self::Result {
        let storage = self.storage.clone();
        let levels = msg.0;
        let mut unit = UnitOfWork::new();
        unit.changes
            .extend(levels.iter().cloned().map(Change::PutStock));
        AtomicResponse::new(Box::pin(
            async move { storage.commit(unit).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    publish(&act.view, levels);
                    Ok(())
                }),
        ))
    }
}

/// The shards, addressed by SKU.
#[derive(Clone)]
pub struct Inventory {
    shards: Arc<Vec<Shard>>,
}

impl Inventory {
    /// Starts `count` shards with the stored levels.
    pub async fn start(storage: Arc<dyn Storage>, count: usize) -> Result<Inventory, StorageError> {
        let count = count.max(1);
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); count];
        for level in storage.stock_levels().await? {
            per_shard[shard_of(&level.sku, count)].push(level);
        }
        let shards = per_shard
            .into_iter()
            .map(|levels| {
                let view = Arc::new(RwLock::new(Levels::new()));
                publish(&view, levels);
                let shard = InventoryShard {
                    storage: storage.clone(),
                    view: view.clone(),
                }
                .start();
                (shard, view)
            })
            .collect();
        Ok(Inventory {
            shards: Arc::new(shards),
        })
    }

    fn index(&self, sku: &Sku) -> usize {
        shard_of(sku, self.shards.len())
    }

    /// Available-to-promise units of each SKU at `location`, in order.
    pub fn available(&self, location: &LocationId, skus: &[Sku]) -> Vec<i64> {
        skus.iter()
            .map(|sku| {
                let view = self.shards[self.index(sku)]
                    .1
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                view.get(&(location.clone(), sku.clone()))
                    .map_or(0, StockLevel::available_to_promise)
            })
            .collect()
    }

    /// Sets stock levels durably (one unit of work per shard).
    pub async fn set(&self, levels: Vec<StockLevel>) -> Result<(), StorageError> {
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); self.shards.len()];
        for level in levels {
            per_shard[self.index(&level.sku)].push(level);
        }
        for ((shard, _), levels) in self.shards.iter().zip(per_shard) {
            if !levels.is_empty() {
                shard
                    .send(SetStock(levels))
                    .await
                    .map_err(|_| StorageError::Closed)??;
            }
        }
        Ok(())
    }
}

fn shard_of(sku: &Sku, count: usize) -> usize {
    let mut h = DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() % count as u64) as usize
}
