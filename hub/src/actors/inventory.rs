//! Inventory, sharded by SKU: each shard actor owns the stock levels of its SKUs at every
//! location — on hand, held for checkouts, and available to promise.

use crate::storage::{Change, Storage, StorageError, UnitOfWork};
use actix::prelude::*;
use protocol::{LocationId, Sku, StockLevel};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// One shard's state.
pub struct InventoryShard {
    storage: Arc<dyn Storage>,
    levels: HashMap<(LocationId, Sku), StockLevel>,
}

/// Units available to promise for each SKU at a location, in order.
#[derive(Message)]
#[rtype(result = "Vec<i64>")]
pub struct Available {
    pub location: LocationId,
    pub skus: Vec<Sku>,
}

/// Sets stock levels (a count, a receipt from the ERP or the demo seed) in one durable unit.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SetStock(pub Vec<StockLevel>);

/// Loads levels into the shard at start-up (no write).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Load(pub Vec<StockLevel>);

impl Actor for InventoryShard {
    type Context = Context<Self>;
}

impl Handler<Available> for InventoryShard {
    type Result = MessageResult<Available>;

    fn handle(&mut self, msg: Available, _ctx: &mut Context<Self>) -> Self::Result {
        let loc = msg.location;
        MessageResult(
            msg.skus
                .into_iter()
                .map(|sku| {
                    self.levels
                        .get(&(loc.clone(), sku))
                        .map_or(0, StockLevel::available_to_promise)
                })
                .collect(),
        )
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
                    for level in levels {
                        act.levels
                            .insert((level.location.clone(), level.sku.clone()), level);
                    }
                    Ok(())
                }),
        ))
    }
}

impl Handler<Load> for InventoryShard {
    type Result = ();

    fn handle(&mut self, msg: Load, _ctx: &mut Context<Self>) {
        for level in msg.0 {
            self.levels
                .insert((level.location.clone(), level.sku.clone()), level);
        }
    }
}

/// The shards, addressed by SKU.
#[derive(Clone)]
pub struct Inventory {
    shards: Arc<Vec<Addr<InventoryShard>>>,
}

impl Inventory {
    /// Starts `count` shards and loads them from storage.
    pub async fn start(storage: Arc<dyn Storage>, count: usize) -> Result<Inventory, StorageError> {
        let levels = storage.stock_levels().await?;
        let shards: Vec<Addr<InventoryShard>> = (0..count.max(1))
            .map(|_| {
                InventoryShard {
                    storage: storage.clone(),
                    levels: HashMap::new(),
                }
                .start()
            })
            .collect();
        let inventory = Inventory {
            shards: Arc::new(shards),
        };
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); inventory.shards.len()];
        for level in levels {
            per_shard[inventory.index(&level.sku)].push(level);
        }
        for (shard, levels) in inventory.shards.iter().zip(per_shard) {
            shard
                .send(Load(levels))
                .await
                .map_err(|_| StorageError::Closed)?;
        }
        Ok(inventory)
    }

    fn index(&self, sku: &Sku) -> usize {
        let mut h = DefaultHasher::new();
        sku.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    /// Available-to-promise units of each SKU at `location`, in order.
    pub async fn available(
        &self,
        location: &LocationId,
        skus: &[Sku],
    ) -> Result<Vec<i64>, MailboxError> {
        let mut out = vec![0; skus.len()];
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, sku) in skus.iter().enumerate() {
            groups.entry(self.index(sku)).or_default().push(i);
        }
        for (shard, positions) in groups {
            let asked: Vec<Sku> = positions.iter().map(|i| skus[*i].clone()).collect();
            let answer = self.shards[shard]
                .send(Available {
                    location: location.clone(),
                    skus: asked,
                })
                .await?;
            for (pos, units) in positions.into_iter().zip(answer) {
                out[pos] = units;
            }
        }
        Ok(out)
    }

    /// Sets stock levels durably (one unit of work per shard).
    pub async fn set(&self, levels: Vec<StockLevel>) -> Result<(), StorageError> {
        let mut per_shard: Vec<Vec<StockLevel>> = vec![Vec::new(); self.shards.len()];
        for level in levels {
            per_shard[self.index(&level.sku)].push(level);
        }
        for (shard, levels) in self
            .shards
            .iter()
            .zip(per_shard)
            .filter(|(_, l)| !l.is_empty())
        {
            shard
                .send(SetStock(levels))
                .await
                .map_err(|_| StorageError::Closed)??;
        }
        Ok(())
    }
}
