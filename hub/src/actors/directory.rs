//! The directory: the one writer of the id → actor map. It activates a customer or basket actor
//! with the state the caller loaded from storage (or hands back the one already active), and
//! forgets actors as they passivate.
//!
//! Lookups do not go through the directory's mailbox: it publishes the map as a
//! [`DirectoryView`] that request handlers read directly, so the common case — the actor is
//! already active — costs no hop to the directory's thread. Only the directory writes the view.

use super::basket::BasketActor;
use super::customer::CustomerActor;
use super::Deps;
use actix::prelude::*;
use protocol::{Basket, BasketId, CustomerId, CustomerRecord};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The published map of active entity actors (read by anyone, written by the directory only).
#[derive(Default)]
pub struct DirectoryView {
    baskets: RwLock<HashMap<BasketId, Addr<BasketActor>>>,
    customers: RwLock<HashMap<CustomerId, Addr<CustomerActor>>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave a map half-written (inserts and removes are
    // single calls), so a poisoned lock is still a consistent map.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl DirectoryView {
    /// The active basket actor, if any.
    pub fn basket(&self, id: BasketId) -> Option<Addr<BasketActor>> {
        read(&self.baskets)
            .get(&id)
            .filter(|a| a.connected())
            .cloned()
    }

    /// The active customer actor, if any.
    pub fn customer(&self, id: CustomerId) -> Option<Addr<CustomerActor>> {
        read(&self.customers)
            .get(&id)
            .filter(|a| a.connected())
            .cloned()
    }
}

/// Spreads new actors over the entity arbiters and keeps the view.
pub struct Directory {
    deps: Deps,
    arbiters: Vec<ArbiterHandle>,
    next: usize,
    view: Arc<DirectoryView>,
    activations: u64,
    passivations: u64,
}

/// Activates a basket actor with its stored state (or returns the one already active).
#[derive(Message)]
#[rtype(result = "Addr<BasketActor>")]
pub struct ActivateBasket(pub Basket);

/// Activates a customer actor with its stored state (or returns the one already active).
#[derive(Message)]
#[rtype(result = "Addr<CustomerActor>")]
pub struct ActivateCustomer(pub CustomerRecord);

/// An actor passivated (or was found stopped): forget it if it is still the registered one.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Deregister {
    Basket(BasketId, Addr<BasketActor>),
    Customer(CustomerId, Addr<CustomerActor>),
}

/// Stops every active actor of a shard (it moves to another node, or its lease was lost);
/// answers once they have stopped, so a unit in flight has committed or failed by then.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopShard(pub u64);

/// Stops an entity actor at once (its shard left this node); the directory has forgotten it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

impl Handler<Evict> for BasketActor {
    type Result = ();

    fn handle(&mut self, _msg: Evict, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Evict> for CustomerActor {
    type Result = ();

    fn handle(&mut self, _msg: Evict, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Active actors and lifetime counts.
#[derive(Message)]
#[rtype(result = "DirectoryStats")]
pub struct Stats;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DirectoryStats {
    pub active_baskets: usize,
    pub active_customers: usize,
    pub activations: u64,
    pub passivations: u64,
}

impl Directory {
    pub fn new(deps: Deps, arbiters: Vec<ArbiterHandle>, view: Arc<DirectoryView>) -> Directory {
        Directory {
            deps,
            arbiters,
            next: 0,
            view,
            activations: 0,
            passivations: 0,
        }
    }

    fn arbiter(&mut self) -> ArbiterHandle {
        self.next = self.next.wrapping_add(1);
        self.arbiters[self.next % self.arbiters.len()].clone()
    }
}

impl Actor for Directory {
    type Context = Context<Self>;
}

impl Handler<ActivateBasket> for Directory {
    type Result = MessageResult<ActivateBasket>;

    fn handle(&mut self, msg: ActivateBasket, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0.id;
        if let Some(addr) = self.view.basket(id) {
            return MessageResult(addr);
        }
        let deps = self.deps.clone();
        let me = ctx.address();
        let arbiter = self.arbiter();
        let addr =
            BasketActor::start_in_arbiter(&arbiter, move |_| BasketActor::new(msg.0, deps, me));
        write(&self.view.baskets).insert(id, addr.clone());
        self.activations += 1;
        MessageResult(addr)
    }
}

impl Handler<ActivateCustomer> for Directory {
    type Result = MessageResult<ActivateCustomer>;

    fn handle(&mut self, msg: ActivateCustomer, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0.id;
        if let Some(addr) = self.view.customer(id) {
            return MessageResult(addr);
        }
        let deps = self.deps.clone();
        let me = ctx.address();
        let arbiter = self.arbiter();
        let addr =
            CustomerActor::start_in_arbiter(&arbiter, move |_| CustomerActor::new(msg.0, deps, me));
        write(&self.view.customers).insert(id, addr.clone());
        self.activations += 1;
        MessageResult(addr)
    }
}

/// Removes `id` from `map` if it still maps to `addr` (a newer activation stays).
fn forget<K: std::hash::Hash + Eq, A: Actor>(
    map: &RwLock<HashMap<K, Addr<A>>>,
    id: &K,
    addr: &Addr<A>,
) -> bool {
    let mut map = write(map);
    if map.get(id).is_some_and(|a| a == addr) {
        map.remove(id);
        true
    } else {
        false
    }
}

impl Handler<Deregister> for Directory {
    type Result = ();

    fn handle(&mut self, msg: Deregister, _ctx: &mut Context<Self>) {
        let removed = match msg {
            Deregister::Basket(id, addr) => forget(&self.view.baskets, &id, &addr),
            Deregister::Customer(id, addr) => forget(&self.view.customers, &id, &addr),
        };
        if removed {
            self.passivations += 1;
        }
    }
}

/// Removes from `map` every actor whose id is in `shard`; answers them.
fn take_shard<K: crate::cluster::ShardKey + std::hash::Hash + Eq + Copy, A: Actor>(
    map: &RwLock<HashMap<K, Addr<A>>>,
    shard: u64,
) -> Vec<Addr<A>> {
    let mut map = write(map);
    let ids: Vec<K> = map
        .keys()
        .filter(|id| crate::cluster::shard_of(*id) == shard)
        .copied()
        .collect();
    ids.iter().filter_map(|id| map.remove(id)).collect()
}

impl Handler<StopShard> for Directory {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopShard, _ctx: &mut Context<Self>) -> Self::Result {
        let baskets = take_shard(&self.view.baskets, msg.0);
        let customers = take_shard(&self.view.customers, msg.0);
        self.passivations += (baskets.len() + customers.len()) as u64;
        Box::pin(async move {
            // A closed mailbox is an actor already gone: nothing to wait for.
            for addr in baskets {
                let _ = addr.send(Evict).await;
            }
            for addr in customers {
                let _ = addr.send(Evict).await;
            }
        })
    }
}

#[async_trait::async_trait]
impl crate::cluster::ShardActivations for Addr<Directory> {
    async fn stop_shard(&self, shard: u64) {
        if let Err(e) = self.send(StopShard(shard)).await {
            tracing::warn!(shard, error = %e, "cannot stop the shard's actors");
        }
    }
}

impl Handler<Stats> for Directory {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(DirectoryStats {
            active_baskets: read(&self.view.baskets).len(),
            active_customers: read(&self.view.customers).len(),
            activations: self.activations,
            passivations: self.passivations,
        })
    }
}
