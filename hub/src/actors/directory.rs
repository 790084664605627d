//! The directory: finds the active actor for a customer or basket id, or activates one with the
//! state the caller loaded from storage. Entity actors deregister here when they passivate.

use super::basket::BasketActor;
use super::customer::CustomerActor;
use super::Deps;
use actix::prelude::*;
use protocol::{Basket, BasketId, CustomerId, CustomerRecord};
use std::collections::HashMap;

/// Maps ids to live actors; spreads new actors over the entity arbiters.
pub struct Directory {
    deps: Deps,
    arbiters: Vec<ArbiterHandle>,
    next: usize,
    baskets: HashMap<BasketId, Addr<BasketActor>>,
    customers: HashMap<CustomerId, Addr<CustomerActor>>,
    activations: u64,
    passivations: u64,
}

/// The active basket actor, if any.
#[derive(Message)]
#[rtype(result = "Option<Addr<BasketActor>>")]
pub struct FindBasket(pub BasketId);

/// Activates a basket actor with its stored state (or returns the one already active).
#[derive(Message)]
#[rtype(result = "Addr<BasketActor>")]
pub struct ActivateBasket(pub Basket);

/// The active customer actor, if any.
#[derive(Message)]
#[rtype(result = "Option<Addr<CustomerActor>>")]
pub struct FindCustomer(pub CustomerId);

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
    pub fn new(deps: Deps, arbiters: Vec<ArbiterHandle>) -> Directory {
        Directory {
            deps,
            arbiters,
            next: 0,
            baskets: HashMap::new(),
            customers: HashMap::new(),
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

impl Handler<FindBasket> for Directory {
    type Result = Option<Addr<BasketActor>>;

    fn handle(&mut self, msg: FindBasket, _ctx: &mut Context<Self>) -> Self::Result {
        self.baskets.get(&msg.0).filter(|a| a.connected()).cloned()
    }
}

impl Handler<ActivateBasket> for Directory {
    type Result = MessageResult<ActivateBasket>;

    fn handle(&mut self, msg: ActivateBasket, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0.id;
        if let Some(addr) = self.baskets.get(&id).filter(|a| a.connected()) {
            return MessageResult(addr.clone());
        }
        let deps = self.deps.clone();
        let me = ctx.address();
        let arbiter = self.arbiter();
        let addr =
            BasketActor::start_in_arbiter(&arbiter, move |_| BasketActor::new(msg.0, deps, me));
        self.baskets.insert(id, addr.clone());
        self.activations += 1;
        MessageResult(addr)
    }
}

impl Handler<FindCustomer> for Directory {
    type Result = Option<Addr<CustomerActor>>;

    fn handle(&mut self, msg: FindCustomer, _ctx: &mut Context<Self>) -> Self::Result {
        self.customers
            .get(&msg.0)
            .filter(|a| a.connected())
            .cloned()
    }
}

impl Handler<ActivateCustomer> for Directory {
    type Result = MessageResult<ActivateCustomer>;

    fn handle(&mut self, msg: ActivateCustomer, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0.id;
        if let Some(addr) = self.customers.get(&id).filter(|a| a.connected()) {
            return MessageResult(addr.clone());
        }
        let deps = self.deps.clone();
        let me = ctx.address();
        let arbiter = self.arbiter();
        let addr =
            CustomerActor::start_in_arbiter(&arbiter, move |_| CustomerActor::new(msg.0, deps, me));
        self.customers.insert(id, addr.clone());
        self.activations += 1;
        MessageResult(addr)
    }
}

impl Handler<Deregister> for Directory {
    type Result = ();

    fn handle(&mut self, msg: Deregister, _ctx: &mut Context<Self>) {
        let removed = match msg {
            Deregister::Basket(id, addr) => {
                self.baskets.get(&id).is_some_and(|a| *a == addr)
                    && self.baskets.remove(&id).is_some()
            }
            Deregister::Customer(id, addr) => {
                self.customers.get(&id).is_some_and(|a| *a == addr)
                    && self.customers.remove(&id).is_some()
            }
        };
        if removed {
            self.passivations += 1;
        }
    }
}

impl Handler<Stats> for Directory {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(DirectoryStats {
            active_baskets: self.baskets.len(),
            active_customers: self.customers.len(),
            activations: self.activations,
            passivations: self.passivations,
        })
    }
}
