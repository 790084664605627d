//! The basket actor: one per basket, the only writer of its basket. Every change is checked
//! (quantity, stock), committed durably, and only then applied, answered and pushed to every
//! live watcher — web, mobile, POS — as a freshly priced view.

mod till_pull;
pub use till_pull::{PullToTill, ReturnFromTill};

use super::directory::{Deregister, Directory};
use super::{idle_expired, Deps};
use crate::storage::{Change, StorageError, UnitOfWork};
use actix::prelude::*;
use channels::backend::CheckoutSummary;
use channels::{BasketCommand, BasketView};
use protocol::automation::PendingReminder;
use protocol::order::CheckoutRecord;
use protocol::{
    Basket, BasketError, BasketLine, BasketOwner, Channel, CustomerId, Event, EventKind,
    LocationId, Money, Subject,
};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// The basket actor's state.
pub struct BasketActor {
    pub(super) basket: Basket,
    pub(super) deps: Deps,
    directory: Addr<Directory>,
    /// Made on the first watcher: most baskets are never watched, and a channel costs memory.
    watchers: Option<broadcast::Sender<BasketView>>,
    last_active: OffsetDateTime,
    /// The checkout that locks the basket, while its payment is pending.
    pub(super) pending: Option<CheckoutRecord>,
    /// When recent checkout attempts started (rate limit).
    pub(super) attempts: std::collections::VecDeque<OffsetDateTime>,
    /// The channel of the last change and whether the customer has never ordered: what the
    /// basket is priced with.
    pub(super) hints: crate::pricing::Hints,
}

/// Who is asking, as checked by the hub before the message was sent.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// The signed-in customer.
    pub customer: Option<CustomerId>,
    /// The request carried this basket's anonymous token.
    pub holds_token: bool,
    /// The hub itself (the payment sweeper, a verified webhook).
    pub system: bool,
}

impl Access {
    /// The hub's own workers.
    pub fn system() -> Access {
        Access {
            customer: None,
            holds_token: false,
            system: true,
        }
    }

    pub(crate) fn allows(self, basket: &Basket) -> bool {
        self.owns(basket.owner)
    }

    /// Whether the asker may reach what a basket with this owner reaches (the basket itself,
    /// its checkouts and its guest orders).
    pub fn owns(self, owner: BasketOwner) -> bool {
        if self.system {
            return true;
        }
        match owner {
            BasketOwner::Customer(c) => self.customer == Some(c),
            BasketOwner::Anonymous => self.holds_token,
        }
    }
}

/// Why a basket message failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BasketFailure {
    /// Unknown or not the asker's.
    #[error("basket not found")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] BasketError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The SKU is not in the catalog.
    #[error("unknown SKU")]
    UnknownSku,
    /// A coupon code that does not apply, and why.
    #[error("{0}")]
    Coupon(String),
    /// Too many invalid coupon codes from this client: try again later.
    #[error("too many invalid coupon codes: try again in {retry_after} seconds")]
    CouponGuessing { retry_after: u64 },
    /// The other basket of a merge is another hub node's, and that node answered this.
    #[error(transparent)]
    Elsewhere(channels::BackendError),
}

/// Reads the priced basket.
#[derive(Message, Clone)]
#[rtype(result = "Result<BasketView, BasketFailure>")]
pub struct GetView(pub Access);

/// Applies a shopper's change.
#[derive(Message, Clone)]
#[rtype(result = "Result<BasketView, BasketFailure>")]
pub struct ApplyCommand {
    pub access: Access,
    pub command: BasketCommand,
    pub channel: Channel,
    pub subject: Subject,
    /// Whom A/B tests assign for: the signed-in customer or the anonymous id the client sent
    /// (none for a client that sent neither: a fresh id per request would change the variant).
    pub assignee: Option<Subject>,
}

/// Subscribes to every later change.
#[derive(Message, Clone)]
#[rtype(result = "Result<(BasketView, broadcast::Receiver<BasketView>), BasketFailure>")]
pub struct Watch(pub Access);

/// Merges this (anonymous) basket into the customer's basket actor `into`, then closes it.
#[derive(Message, Clone)]
#[rtype(result = "Result<BasketView, BasketFailure>")]
pub struct MergeInto {
    pub access: Access,
    /// The basket that absorbs this one: its actor here, or on the node that owns it.
    pub into: Absorber,
    pub into_id: protocol::BasketId,
    pub channel: Channel,
    pub subject: Subject,
}

/// Where a merged basket's lines go: sends [`Absorb`] to the target basket's actor, which may
/// run on another hub node (`crate::cluster::remote`); the backend makes it.
#[derive(Clone)]
pub struct Absorber(
    pub  Arc<
        dyn Fn(
                Absorb,
            )
                -> futures_util::future::BoxFuture<'static, Result<BasketView, BasketFailure>>
            + Send
            + Sync,
    >,
);

impl Absorber {
    /// The target's actor on this node.
    pub fn local(into: Addr<BasketActor>) -> Absorber {
        Absorber(Arc::new(move |msg| {
            let into = into.clone();
            Box::pin(async move {
                into.send(msg)
                    .await
                    .map_err(|_| BasketFailure::Storage(StorageError::Closed))?
            })
        }))
    }
}

/// Absorbs the lines of `source` (capped by stock) and its coupon codes (up to the most a
/// basket holds), and stores the closed `source` in the same unit of work, so a merge happens
/// exactly once.
#[derive(Message, Clone)]
#[rtype(result = "Result<BasketView, BasketFailure>")]
pub struct Absorb {
    pub lines: Vec<BasketLine>,
    pub coupons: Vec<String>,
    pub closed_source: Basket,
}

impl BasketActor {
    pub fn new(basket: Basket, deps: Deps, directory: Addr<Directory>) -> BasketActor {
        let last_active = deps.clock.now();
        BasketActor {
            basket,
            deps,
            directory,
            watchers: None,
            last_active,
            pending: None,
            attempts: std::collections::VecDeque::new(),
            hints: crate::pricing::Hints::default(),
        }
    }

    /// The basket priced from the current catalog.
    pub(super) fn view(&self) -> BasketView {
        let mut view = view_of(&self.basket, &self.deps, self.hints);
        view.checkout = self.pending.as_ref().map(|c| CheckoutSummary {
            id: c.id,
            state: c.state,
            payment_url: c.payment_url.clone(),
            hold_expires_at: c.hold_until,
            total: c.breakdown.total,
            message: c.message.clone(),
        });
        view
    }

    /// Tells every watcher the current view (after a change of the pending checkout).
    pub(super) fn publish(&self) {
        if let Some(watchers) = &self.watchers {
            let _ = watchers.send(self.view());
        }
    }

    pub(super) fn touch(&mut self) {
        self.last_active = self.deps.clock.now();
    }

    /// Adopts a committed state and tells every watcher.
    pub(super) fn adopt(&mut self, next: Basket) -> BasketView {
        self.basket = next;
        if self.basket.checkout.is_none() {
            self.pending = None;
        }
        let view = self.view();
        if let Some(watchers) = &self.watchers {
            let _ = watchers.send(view.clone());
        }
        view
    }
}

/// Prices a basket with the current catalog and the live promotions (the one pricing function
/// every channel uses).
pub fn view_of(basket: &Basket, deps: &Deps, hints: crate::pricing::Hints) -> BasketView {
    let (priced, coupons) = crate::pricing::price(deps, basket, hints).unwrap_or_else(|e| {
        tracing::error!(basket = %basket.id, error = %e, "pricing failed; showing the basket without lines");
        let empty = protocol::pricing::PricedBasket {
            currency: basket.currency,
            lines: Vec::new(),
            unavailable: basket.lines.iter().map(|l| l.sku.clone()).collect(),
            item_count: 0,
            subtotal: Money::zero(basket.currency),
            discount: Money::zero(basket.currency),
            total: Money::zero(basket.currency),
            taxes: Vec::new(),
            promotions: Default::default(),
        };
        (empty, Vec::new())
    });
    let owner = match basket.owner {
        BasketOwner::Customer(_) => "customer",
        BasketOwner::Anonymous => "anonymous",
    };
    BasketView {
        id: basket.id,
        version: basket.version,
        owner,
        priced,
        coupons,
        checkout: None,
    }
}

impl Actor for BasketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A locked basket shows its pending payment: load it before any message is handled.
        if let Some(checkout) = self.basket.checkout {
            let storage = self.deps.storage.clone();
            ctx.wait(
                async move { storage.checkout(checkout).await }
                    .into_actor(self)
                    .map(|res, act, _| match res {
                        Ok(record) => act.pending = record.filter(|r| r.state.is_open()),
                        Err(e) => tracing::error!(basket = %act.basket.id, error = %e, "cannot load the pending checkout"),
                    }),
            );
        }
        // A customer who has never ordered may get first-order promotions.
        if let BasketOwner::Customer(customer) = self.basket.owner {
            let storage = self.deps.storage.clone();
            ctx.wait(
                async move { storage.orders_of(customer, 1).await }
                    .into_actor(self)
                    .map(|res, act, _| match res {
                        Ok(orders) => act.hints.first_order = orders.is_empty(),
                        Err(e) => tracing::warn!(basket = %act.basket.id, error = %e, "cannot tell whether this is a first order"),
                    }),
            );
        }
        let lifecycle = self.deps.lifecycle;
        ctx.run_interval(lifecycle.check_every, move |act, ctx| {
            let idle = idle_expired(
                act.deps.clock.as_ref(),
                act.last_active,
                lifecycle.passivate_after,
            );
            if idle
                && act
                    .watchers
                    .as_ref()
                    .is_none_or(|w| w.receiver_count() == 0)
            {
                // Every change is already durable when acknowledged: nothing left to flush.
                act.directory
                    .do_send(Deregister::Basket(act.basket.id, ctx.address()));
                ctx.stop();
            }
        });
    }
}

impl Handler<GetView> for BasketActor {
    type Result = Result<BasketView, BasketFailure>;

    fn handle(&mut self, msg: GetView, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.0.allows(&self.basket) {
            return Err(BasketFailure::NotFound);
        }
        Ok(self.view())
    }
}

impl Handler<Watch> for BasketActor {
    type Result = Result<(BasketView, broadcast::Receiver<BasketView>), BasketFailure>;

    fn handle(&mut self, msg: Watch, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.0.allows(&self.basket) {
            return Err(BasketFailure::NotFound);
        }
        let receiver = self
            .watchers
            .get_or_insert_with(|| broadcast::channel(16).0)
            .subscribe();
        Ok((self.view(), receiver))
    }
}

fn event_for(
    command: &BasketCommand,
    basket: &Basket,
    channel: Channel,
    subject: Subject,
    at: OffsetDateTime,
) -> Event {
    let (kind, sku, quantity) = match command {
        BasketCommand::Add { sku, quantity } => {
            (EventKind::BasketLineAdded, Some(sku), Some(*quantity))
        }
        BasketCommand::SetQuantity { sku, quantity } => {
            (EventKind::BasketLineChanged, Some(sku), Some(*quantity))
        }
        BasketCommand::Remove { sku } => (EventKind::BasketLineRemoved, Some(sku), None),
        BasketCommand::Clear => (EventKind::BasketCleared, None, None),
        BasketCommand::ApplyCoupon { code, .. } => {
            return Event::new(at, subject, channel, EventKind::CouponApplied)
                .with("basket", basket.id)
                .with(
                    "code",
                    protocol::basket::normalize_coupon(code).unwrap_or_default(),
                );
        }
        BasketCommand::RemoveCoupon { code } => {
            return Event::new(at, subject, channel, EventKind::CouponRemoved)
                .with("basket", basket.id)
                .with("code", code);
        }
    };
    let mut e = Event::new(at, subject, channel, kind).with("basket", basket.id);
    if let Some(sku) = sku {
        e = e.with("sku", sku);
    }
    if let Some(q) = quantity {
        e = e.with("quantity", q);
    }
    e
}

/// Checks and applies a command to a copy of the basket, then commits it.
/// Applies a command and commits the basket, with its pending reminder when the lines changed
/// (`automation::Triggers::reminder`); answers both.
async fn apply(
    deps: Deps,
    mut basket: Basket,
    command: BasketCommand,
) -> Result<(Basket, Option<PendingReminder>), BasketFailure> {
    let now = deps.clock.now();
    let available = |sku: &protocol::Sku| {
        deps.inventory
            .available(&LocationId::online(), std::slice::from_ref(sku))
            .first()
            .copied()
            .unwrap_or(0)
    };
    if let BasketCommand::Add { sku, .. } = &command {
        if deps.catalog.load().product_by_sku(sku).is_none() {
            return Err(BasketFailure::UnknownSku);
        }
    }
    match &command {
        BasketCommand::Add { sku, quantity } => {
            basket.add(sku.clone(), *quantity, available(sku), now)?;
        }
        BasketCommand::SetQuantity { sku, quantity } => {
            basket.set_quantity(sku, *quantity, available(sku), now)?;
        }
        BasketCommand::Remove { sku } => basket.remove(sku, now)?,
        BasketCommand::Clear => basket.clear(now)?,
        BasketCommand::ApplyCoupon { code, client } => {
            let normalized = protocol::basket::normalize_coupon(code);
            let customer = match basket.owner {
                BasketOwner::Customer(c) => Some(c),
                BasketOwner::Anonymous => None,
            };
            deps.offers
                .guard(client)
                .map_err(|retry_after| BasketFailure::CouponGuessing { retry_after })?;
            let checked = match &normalized {
                Some(code) => deps.offers.check_coupon(code, customer, now).await,
                None => {
                    Err("this is not a coupon code: codes are letters, digits and dashes".into())
                }
            };
            match (normalized, checked) {
                (Some(code), Ok(_)) => {
                    basket.add_coupon(code, now)?;
                }
                (_, Err(reason)) => {
                    deps.offers.record_invalid(client);
                    return Err(BasketFailure::Coupon(reason));
                }
                (None, Ok(_)) => return Err(BasketFailure::Coupon("not a coupon code".into())),
            }
        }
        BasketCommand::RemoveCoupon { code } => {
            let code = protocol::basket::normalize_coupon(code).unwrap_or_else(|| code.clone());
            basket.remove_coupon(&code, now)?;
        }
    }
    let lines_changed = !matches!(
        command,
        BasketCommand::ApplyCoupon { .. } | BasketCommand::RemoveCoupon { .. }
    );
    let reminder = lines_changed
        .then(|| crate::automation::Triggers::reminder(&basket, now))
        .flatten();
    let mut unit = UnitOfWork::new().with(Change::PutBasket(basket.clone()));
    if let Some(r) = &reminder {
        unit = unit.with(Change::PutPendingReminder(r.clone()));
    }
    deps.storage
        .commit(deps.fence.seal(&basket.id, unit)?)
        .await?;
    Ok((basket, reminder))
}

impl Handler<ApplyCommand> for BasketActor {
    type Result = AtomicResponse<Self, Result<BasketView, BasketFailure>>;

    fn handle(&mut self, msg: ApplyCommand, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.access.allows(&self.basket) {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(BasketFailure::NotFound))));
        }
        let deps = self.deps.clone();
        let current = self.basket.clone();
        let ApplyCommand {
            command,
            channel,
            subject,
            assignee,
            ..
        } = msg;
        AtomicResponse::new(Box::pin(
            async move {
                apply(deps, current, command.clone())
                    .await
                    .map(|(b, reminder)| (b, reminder, command))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let (next, reminder, command) = res?;
                // Priced for the channel of the last change: a refused one changes nothing.
                if channel != Channel::Unknown {
                    act.hints.channel = channel;
                }
                if assignee.is_some() {
                    act.hints.assignee = assignee;
                }
                let now = act.deps.clock.now();
                let mut event = event_for(&command, &next, channel, subject, now);
                // The product's slug too, so reports join adds with views (which know it).
                let slug = match &command {
                    BasketCommand::Add { sku, .. } => act
                        .deps
                        .catalog
                        .load()
                        .product_by_sku(sku)
                        .map(|p| p.slug.clone()),
                    _ => None,
                };
                if let Some(slug) = slug {
                    event = event.with("slug", slug);
                }
                act.deps.recorder.do_send(super::recorder::Record(event));
                if let Some(reminder) = reminder {
                    act.deps.automation.arm(reminder);
                }
                Ok(act.adopt(next))
            }),
        ))
    }
}

impl Handler<Absorb> for BasketActor {
    type Result = AtomicResponse<Self, Result<BasketView, BasketFailure>>;

    fn handle(&mut self, msg: Absorb, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let deps = self.deps.clone();
        let mut next = self.basket.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let skus: Vec<protocol::Sku> = msg.lines.iter().map(|l| l.sku.clone()).collect();
                let stock = deps.inventory.available(&LocationId::online(), &skus);
                let now = deps.clock.now();
                next.absorb(
                    &msg.lines,
                    |sku| skus.iter().position(|s| s == sku).map_or(0, |i| stock[i]),
                    now,
                )?;
                // The codes were checked when typed; pricing checks them again for the
                // customer (a limit per customer, say) and says why one does not apply.
                for code in msg.coupons {
                    match next.add_coupon(code, now) {
                        Ok(_) => {}
                        Err(BasketError::TooManyCoupons) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                let reminder = crate::automation::Triggers::reminder(&next, now);
                let mut unit = UnitOfWork::new()
                    .with(Change::PutBasket(next.clone()))
                    .with(Change::PutBasket(msg.closed_source));
                if let Some(r) = &reminder {
                    unit = unit.with(Change::PutPendingReminder(r.clone()));
                }
                deps.storage
                    .commit(deps.fence.seal(&next.id, unit)?)
                    .await?;
                Ok((next, reminder))
            }
            .into_actor(self)
            .map(
                |res: Result<(Basket, Option<PendingReminder>), BasketFailure>, act, _| {
                    let (next, reminder) = res?;
                    if let Some(reminder) = reminder {
                        act.deps.automation.arm(reminder);
                    }
                    Ok(act.adopt(next))
                },
            ),
        ))
    }
}

impl Handler<MergeInto> for BasketActor {
    type Result = AtomicResponse<Self, Result<BasketView, BasketFailure>>;

    fn handle(&mut self, msg: MergeInto, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.access.allows(&self.basket) || self.basket.merged_into.is_some() {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(BasketFailure::NotFound))));
        }
        if let Some(checkout) = self.basket.checkout {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(BasketFailure::Rejected(
                BasketError::Locked(checkout),
            )))));
        }
        let now = self.deps.clock.now();
        let lines = self.basket.lines.clone();
        let coupons = self.basket.coupons.clone();
        let mut closed = self.basket.clone();
        closed.mark_merged(msg.into_id, now);
        let MergeInto {
            into,
            channel,
            subject,
            ..
        } = msg;
        AtomicResponse::new(Box::pin(
            async move {
                let view = (into.0)(Absorb {
                    lines,
                    coupons,
                    closed_source: closed.clone(),
                })
                .await?;
                Ok((view, closed))
            }
            .into_actor(self)
            .map(
                move |res: Result<(BasketView, Basket), BasketFailure>, act, _| {
                    let (view, closed) = res?;
                    act.adopt(closed);
                    act.deps.recorder.do_send(super::recorder::Record(
                        Event::new(now, subject, channel, EventKind::BasketMerged)
                            .with("into", view.id)
                            .with("from", act.basket.id),
                    ));
                    Ok(view)
                },
            ),
        ))
    }
}

/// Makes the actor fail as a bug would (tests only): `Stop` stops it without deregistering,
/// `Panic` panics in the handler.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub enum Fail {
    Stop,
    Panic,
}

#[cfg(test)]
impl Handler<Fail> for BasketActor {
    type Result = ();

    fn handle(&mut self, msg: Fail, ctx: &mut Context<Self>) {
        match msg {
            Fail::Stop => ctx.stop(),
            Fail::Panic => panic!("injected failure in basket {}", self.basket.id),
        }
    }
}
