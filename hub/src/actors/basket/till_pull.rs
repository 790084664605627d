//! A store's till takes the customer's basket (`docs/pos.md`, "Customers at the till"): the
//! lines leave this basket and go onto the sale at the till, which prices them itself. The
//! pull is idempotent by its id (kept in the basket, committed with the lines' removal), so a
//! retried pull answers the same lines and moves nothing. When the till voids the sale, the
//! pull is given back (once, by the same id).

use super::{BasketActor, BasketFailure};
use crate::storage::{Change, UnitOfWork};
use actix::prelude::*;
use protocol::basket::TillPulled;
use protocol::{Channel, Event, EventKind, Subject};

/// Moves the basket's lines to a till (pull `id`, made by the node; `store` names it for the
/// customer's timeline). Only SKUs in the catalog move: anything else stays in the basket.
#[derive(Message, Clone)]
#[rtype(result = "Result<TillPulled, BasketFailure>")]
pub struct PullToTill {
    pub id: String,
    pub store: String,
}

impl Handler<PullToTill> for BasketActor {
    type Result = AtomicResponse<Self, Result<TillPulled, BasketFailure>>;

    fn handle(&mut self, msg: PullToTill, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let mut next = self.basket.clone();
        let catalog = self.deps.catalog.load_full();
        let now = self.deps.clock.now();
        let pulled =
            match next.pull_to_till(&msg.id, |sku| catalog.product_by_sku(sku).is_some(), now) {
                Ok(p) => p,
                Err(e) => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e.into())))),
            };
        if !pulled.changed {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(pulled))));
        }
        let moved = Moved {
            kind: EventKind::BasketCleared,
            field: "pulled_to_till",
            store: msg.store,
            lines: &pulled.lines,
        }
        .event(&next, now);
        self.commit_move(next, moved, pulled)
    }
}

/// Gives the lines of the till pull `id` back to the basket: the till voided the sale
/// (`store` names it for the customer's timeline). `None`: this basket has no such pull.
#[derive(Message, Clone)]
#[rtype(result = "Result<Option<TillPulled>, BasketFailure>")]
pub struct ReturnFromTill {
    pub id: String,
    pub store: String,
}

impl Handler<ReturnFromTill> for BasketActor {
    type Result = AtomicResponse<Self, Result<Option<TillPulled>, BasketFailure>>;

    fn handle(&mut self, msg: ReturnFromTill, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let mut next = self.basket.clone();
        let now = self.deps.clock.now();
        let back = match next.return_from_till(&msg.id, now) {
            Ok(Some(back)) if back.changed => back,
            other => {
                let answer = other.map_err(BasketFailure::from);
                return AtomicResponse::new(Box::pin(actix::fut::ready(answer)));
            }
        };
        let moved = Moved {
            kind: EventKind::BasketLineAdded,
            field: "returned_from_till",
            store: msg.store,
            lines: &back.lines,
        }
        .event(&next, now);
        self.commit_move(next, moved, Some(back))
    }
}

/// Lines that moved between a customer's basket and a till, for their timeline.
struct Moved<'a> {
    kind: EventKind,
    /// `pulled_to_till` or `returned_from_till`, naming the store.
    field: &'static str,
    store: String,
    lines: &'a [(protocol::Sku, u32)],
}

impl Moved<'_> {
    /// The customer's event (none for a guest's basket).
    fn event(self, basket: &protocol::Basket, now: time::OffsetDateTime) -> Option<Event> {
        let protocol::BasketOwner::Customer(c) = basket.owner else {
            return None;
        };
        let units: u32 = self.lines.iter().map(|(_, q)| q).sum();
        Some(
            Event::new(now, Subject::Customer(c), Channel::Pos, self.kind)
                .with("basket", basket.id)
                .with(self.field, &self.store)
                .with("lines", self.lines.len())
                .with("units", units),
        )
    }
}

impl BasketActor {
    /// Stores the basket after lines moved to or from a till, then records `event` and adopts
    /// it; answers `answer` once durable.
    fn commit_move<T: 'static>(
        &mut self,
        next: protocol::Basket,
        event: Option<Event>,
        answer: T,
    ) -> AtomicResponse<Self, Result<T, BasketFailure>> {
        let storage = self.deps.storage.clone();
        let unit = UnitOfWork::new().with(Change::PutBasket(next.clone()));
        let sealed = self.deps.fence.seal(&next.id, unit);
        AtomicResponse::new(Box::pin(
            async move { storage.commit(sealed?).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    if let Some(event) = event {
                        act.deps
                            .recorder
                            .do_send(super::super::recorder::Record(event));
                    }
                    act.adopt(next);
                    Ok(answer)
                }),
        ))
    }
}
