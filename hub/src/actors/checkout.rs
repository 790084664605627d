//! Checkout on the basket actor. The basket actor is the one writer of its basket, of its
//! checkouts and of the orders they become, so a double click, two tabs, a success redirect
//! racing its webhook, and the webhook's duplicates all queue on one mailbox and meet the state
//! the previous one left: one checkout at a time, one order per payment.
//!
//! The path of a payment:
//! 1. `StartCheckout`: validate the address, price with `protocol::checkout`, **reserve** the
//!    limited coupon and promotion uses in the price (a coupon whose last use another order or
//!    pending checkout took is refused; a promotion is priced out again), **hold** the stock
//!    (all or nothing), lock the basket and store the checkout in one unit of work, then open a
//!    Checkout Session at the provider with an idempotency key derived from (checkout, attempt).
//! 2. `PaymentSucceeded` (webhook, success redirect or reconciliation, in any order and any number
//!    of times): one unit of work creates the order (refused by storage if the checkout already
//!    has one), marks the checkout paid and empties the basket; then the holds become a sale and
//!    the reservation the order's uses.
//! 3. `EndCheckout` (the shopper cancels, the hold runs out): expire the provider's session
//!    **first** so the old basket can never be paid, then give the stock and the reserved uses
//!    back and unlock. While the session can still be paid (even after the hold ran out and
//!    the provider could not be asked to expire it) the reservation stays: a late payment
//!    finds its uses. It lapses by itself once the session can no longer be paid (its expiry
//!    plus slack), so one a crash left behind never keeps a coupon from other shoppers for
//!    longer.

use super::basket::{Access, BasketActor, BasketFailure};
use super::inventory::HoldFailure;
use super::offers::{Reservation, ReserveFailure};
use super::Deps;
use crate::auth;
use crate::config::CheckoutSettings;
use crate::payments::client::{NewSession, PageLine, PaymentClient, ProviderError, Session};
use crate::storage::{Change, StorageError, UnitOfWork};
use actix::prelude::*;
use channels::backend::CheckoutInput;
use protocol::checkout::{price_checkout, CheckoutConfig, CheckoutError, FieldError};
use protocol::customer::{is_plausible_email, normalize_email};
use protocol::order::{
    online_order_number, CheckoutRecord, CheckoutState, OrderRecord, PaymentRecord, Progress,
    RefundRecord,
};
use protocol::{
    Basket, BasketError, Channel, CheckoutId, Event, EventKind, LocationId, Money, OrderId, Sku,
    Subject,
};
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;

/// The prefix of online order numbers ([`online_order_number`]: `W-000042`).
pub const ORDER_PREFIX: &str = "W";

/// What checkout needs besides the entity actors' deps.
pub struct CheckoutDeps {
    pub settings: CheckoutSettings,
    pub pricing: CheckoutConfig,
    pub payments: PaymentClient,
    /// Base of the links the provider sends the shopper back to.
    pub public_url: String,
    /// The last online order number this process handed out (embedded storage; in a cluster
    /// the engine mints them: [`crate::storage::OrderStore::next_order_sequence`]).
    pub order_seq: AtomicU64,
    /// The stores' edge nodes, for click-and-collect (`crate::collect`); none: no pickups.
    pub edge: Option<crate::edge::EdgeHandle>,
}

/// Why a checkout step failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckoutFailure {
    #[error("checkout not found")]
    NotFound,
    #[error(transparent)]
    Basket(#[from] BasketFailure),
    #[error("the address needs attention")]
    Address(Vec<FieldError>),
    #[error("an email address is needed for the confirmation")]
    Email,
    #[error(transparent)]
    Pricing(#[from] CheckoutError),
    #[error("not enough stock")]
    OutOfStock(Vec<(Sku, i64)>),
    #[error("too many checkout attempts")]
    RateLimited(u64),
    /// A coupon code on the basket cannot be used any more (`coupon_unavailable`: used up by
    /// other orders or pending checkouts, expired, …), or the promotions kept running out while
    /// it was priced (`promotion_used_up`); `message` says which and what to do.
    #[error("{message}")]
    OfferUnavailable { code: &'static str, message: String },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The provider says the payment has not gone through.
    #[error("the payment has not been completed")]
    NotPaid,
    /// A refund or cancellation the order cannot take.
    #[error("{0}")]
    Refused(String),
}

impl From<HoldFailure> for CheckoutFailure {
    fn from(f: HoldFailure) -> CheckoutFailure {
        match f {
            HoldFailure::Short(s) => CheckoutFailure::OutOfStock(s),
            HoldFailure::Storage(e) => CheckoutFailure::Storage(e),
        }
    }
}

/// Starts a checkout of the basket (or returns the one whose payment is pending).
#[derive(Message, Clone)]
#[rtype(result = "Result<CheckoutRecord, CheckoutFailure>")]
pub struct StartCheckout {
    pub access: Access,
    pub input: CheckoutInput,
    pub channel: Channel,
    pub subject: Subject,
}

/// Why a pending checkout ends without payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The shopper cancelled (or came back from the payment page without paying).
    Cancelled,
    /// The hold ran out.
    HoldExpired,
}

/// Ends a pending checkout without payment (expiring the provider's session first). If the
/// payment went through after all, the answer carries the order instead.
#[derive(Message, Clone)]
#[rtype(result = "Result<(CheckoutRecord, Option<OrderRecord>), CheckoutFailure>")]
pub struct EndCheckout {
    pub access: Access,
    pub checkout: CheckoutId,
    pub why: EndReason,
}

/// The provider reports (webhook) or confirms (redirect, reconciliation) a paid session.
#[derive(Message, Clone)]
#[rtype(result = "Result<OrderRecord, CheckoutFailure>")]
pub struct PaymentSucceeded {
    pub checkout: CheckoutId,
    pub session: Session,
}

/// A card was declined on the provider's page; the page stays open for another try.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), CheckoutFailure>")]
pub struct PaymentFailed {
    pub checkout: CheckoutId,
    pub message: String,
}

/// Refunds part or all of an order (and optionally cancels it). Serialized with everything
/// else that writes the order.
#[derive(Message, Clone)]
#[rtype(result = "Result<OrderRecord, CheckoutFailure>")]
pub struct RefundOrder {
    pub order: OrderId,
    /// `None`: whatever is still refundable.
    pub amount: Option<Money>,
    pub reason: String,
    pub cancel: bool,
    /// Supplied by the caller for retries; derived from the order otherwise.
    pub idempotency_key: Option<String>,
}

type Step<T> = (Option<Basket>, Result<T, CheckoutFailure>);

fn ready<T: 'static>(
    r: Result<T, CheckoutFailure>,
) -> AtomicResponse<BasketActor, Result<T, CheckoutFailure>> {
    AtomicResponse::new(Box::pin(actix::fut::ready(r)))
}

impl BasketActor {
    /// Adopts the outcome of a checkout step: the basket it left (if it changed) and the pending
    /// checkout, then tells every watcher.
    fn settle(&mut self, basket: Option<Basket>, pending: Option<CheckoutRecord>) {
        match basket {
            Some(b) => {
                self.pending = pending.filter(|p| b.checkout == Some(p.id));
                self.adopt(b);
            }
            None => {
                if let Some(p) = pending {
                    if self.basket.checkout == Some(p.id) {
                        self.pending = Some(p).filter(|p| p.state.is_open());
                    }
                }
                self.publish();
            }
        }
    }

    /// The basket's owner has an order now: from here on it is no longer a first order (the
    /// hint was read when the actor started).
    fn ordered(&mut self) {
        self.hints.first_order = false;
    }

    /// The checkout `id` of this basket: the pending one, or from storage.
    fn find_checkout(
        &self,
        id: CheckoutId,
    ) -> impl std::future::Future<Output = Result<CheckoutRecord, CheckoutFailure>> + 'static {
        let pending = self.pending.clone().filter(|p| p.id == id);
        let storage = self.deps.storage.clone();
        let basket = self.basket.id;
        async move {
            let record = match pending {
                Some(p) => Some(p),
                None => storage.checkout(id).await?,
            };
            record
                .filter(|r| r.basket == basket)
                .ok_or(CheckoutFailure::NotFound)
        }
    }
}

impl Handler<StartCheckout> for BasketActor {
    type Result = AtomicResponse<Self, Result<CheckoutRecord, CheckoutFailure>>;

    fn handle(&mut self, msg: StartCheckout, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.access.allows(&self.basket) {
            return ready(Err(BasketFailure::NotFound.into()));
        }
        // One checkout at a time: a double submit, a second tab or another device gets the
        // payment already in progress.
        if let Some(p) = &self.pending {
            return ready(Ok(p.clone()));
        }
        if self.basket.merged_into.is_some() {
            return ready(Err(BasketFailure::Rejected(BasketError::Merged).into()));
        }
        let now = self.deps.clock.now();
        let window = time::Duration::minutes(10);
        while self.attempts.front().is_some_and(|t| *t + window <= now) {
            self.attempts.pop_front();
        }
        let limit = self.deps.checkout.settings.attempts_per_basket as usize;
        if self.attempts.len() >= limit.max(1) {
            let wait = self
                .attempts
                .front()
                .map_or(60, |t| (*t + window - now).whole_seconds().max(1) as u64);
            return ready(Err(CheckoutFailure::RateLimited(wait)));
        }
        let deps = self.deps.clone();
        let basket = self.basket.clone();
        let assignee = self.hints.assignee;
        AtomicResponse::new(Box::pin(
            start(deps, basket, msg, assignee).into_actor(self).map(
                move |(basket, res): Step<CheckoutRecord>, act, _| {
                    // Only attempts that reached the stock and the provider count: a typo in the
                    // address does not lock a shopper out.
                    let counted = !matches!(
                        res,
                        Err(CheckoutFailure::Address(_)
                            | CheckoutFailure::Email
                            | CheckoutFailure::Pricing(_)
                            | CheckoutFailure::Basket(_)
                            | CheckoutFailure::OfferUnavailable { .. })
                    );
                    if counted {
                        act.attempts.push_back(now);
                    }
                    act.settle(basket, res.as_ref().ok().cloned());
                    res
                },
            ),
        ))
    }
}

/// Whether the basket's customer has never ordered (false for a guest, or when unknown).
pub(crate) async fn first_order(deps: &Deps, basket: &Basket) -> bool {
    match basket.owner {
        protocol::BasketOwner::Customer(c) => deps
            .storage
            .orders_of(c, 1)
            .await
            .is_ok_and(|o| o.is_empty()),
        protocol::BasketOwner::Anonymous => false,
    }
}

/// The whole price of a checkout of `basket` with the live promotions: the promotions are
/// evaluated with free shipping worth the cheapest option to the destination (as the basket
/// page values it for the home country, whatever method is chosen: see `crate::pricing`), and
/// their per-line discounts priced into the breakdown.
pub(crate) fn price_with_offers(
    deps: &Deps,
    catalog: &protocol::CatalogSnapshot,
    basket: &Basket,
    hints: crate::pricing::Hints,
    country: &str,
    shipping_method: &str,
) -> Result<(protocol::Breakdown, crate::pricing::CheckoutOffers), CheckoutError> {
    let pricing = &*crate::collect::pricing(deps, shipping_method);
    let lookup = |sku: &Sku| catalog.product_by_sku(sku);
    // Refuses an unknown country or method before promotions are looked at.
    price_checkout(
        basket,
        lookup,
        Money::zero(basket.currency),
        country,
        shipping_method,
        pricing,
    )?;
    let shipping = crate::pricing::shipping_value(deps, catalog, basket, country);
    let offers = crate::pricing::checkout_offers(deps, catalog, basket, hints, shipping)
        .map_err(CheckoutError::from)?;
    let breakdown = protocol::checkout::price_checkout_with_line_discounts(
        basket,
        lookup,
        &offers.discounts,
        country,
        shipping_method,
        pricing,
    )?;
    Ok((breakdown, offers))
}

async fn start(
    deps: Deps,
    basket: Basket,
    msg: StartCheckout,
    assignee: Option<Subject>,
) -> Step<CheckoutRecord> {
    let cfg = deps.checkout.clone();
    // A pickup needs who collects it, not where to deliver (`crate::collect`).
    let address = if crate::collect::location_of(&msg.input.shipping_method).is_some() {
        msg.input.address.validated_for_pickup(&cfg.pricing)
    } else {
        msg.input.address.validated(&cfg.pricing)
    };
    let address = match address {
        Ok(a) => a,
        Err(fields) => return (None, Err(CheckoutFailure::Address(fields))),
    };
    let email = match checkout_email(&deps, &basket, msg.input.email.as_deref()).await {
        Ok(e) => e,
        Err(f) => return (None, Err(f)),
    };
    let now = deps.clock.now();
    let id = CheckoutId::new();
    let hold_until = now + cfg.settings.hold_for;
    // The session is asked to expire then (provider time): the reservation lasts until the
    // provider can no longer take its payment.
    let session_expires_at = session_expiry(&cfg);
    // A code the shopper entered is paid with or not at all: one that cannot be used any more
    // is refused with its reason, never silently left out of the price.
    if let Some(refused) = unusable_coupon(&deps, &basket, now) {
        return (None, Err(refused));
    }
    let hints = crate::pricing::Hints {
        channel: msg.channel,
        first_order: first_order(&deps, &basket).await,
        assignee,
    };
    let target = Target {
        country: &address.country,
        method: &msg.input.shipping_method,
        checkout: id,
        until: payable_until(&deps, session_expires_at),
    };
    let (breakdown, offers) = match price_and_reserve(&deps, &basket, hints, &target).await {
        Ok(priced) => priced,
        Err(e) => return (None, Err(e)),
    };
    let mut record = CheckoutRecord {
        id,
        basket: basket.id,
        basket_version: basket.version,
        owner: basket.owner,
        channel: msg.channel,
        subject: msg.subject,
        email,
        address,
        breakdown,
        state: CheckoutState::PaymentPending,
        attempt: 1,
        session_id: None,
        payment_url: None,
        session_expires_at: None,
        created_at: now,
        hold_until,
        hold_released: false,
        message: None,
        order: None,
        promotions: offers.promotions,
        coupons: offers.coupons,
    };
    let units = record.units();
    if let Err(e) = hold_stock(
        &deps,
        id,
        &record.breakdown.shipping.id,
        &units,
        record.hold_until,
    )
    .await
    {
        release_reservation(&deps, id).await;
        return (None, Err(e.into()));
    }
    let mut locked = basket.clone();
    if let Err(e) = locked.lock(id, now) {
        let _ = deps.inventory.end(id, false, Some(&units)).await;
        release_reservation(&deps, id).await;
        return (None, Err(BasketFailure::Rejected(e).into()));
    }
    let unit = UnitOfWork::new()
        .with(Change::PutCheckout(record.clone()))
        .with(Change::PutBasket(locked.clone()));
    if let Err(e) = deps.fence.commit(&*deps.storage, &locked.id, unit).await {
        let _ = deps.inventory.end(id, false, Some(&units)).await;
        release_reservation(&deps, id).await;
        return (None, Err(e.into()));
    }
    deps.recorder.do_send(super::recorder::Record(
        Event::new(now, msg.subject, msg.channel, EventKind::CheckoutStarted)
            .with("basket", basket.id)
            .with("checkout", id)
            .with("total", record.breakdown.total),
    ));
    let new = new_session(&record, &cfg, session_expires_at);
    match cfg.payments.create_session(&new).await {
        Ok(session) => {
            record.session_id = Some(session.id);
            record.payment_url = session.url;
            let expires_at = session.expires_at.unwrap_or(new.expires_at);
            record.session_expires_at = Some(expires_at);
            if expires_at > new.expires_at {
                // The provider keeps the page open longer than asked: the reservation lasts
                // as long (a reservation of the same checkout only ever grows).
                extend_reservation(&deps, &record, expires_at).await;
            }
            match deps
                .storage
                .commit(UnitOfWork::new().with(Change::PutCheckout(record.clone())))
                .await
            {
                Ok(()) => (Some(locked), Ok(record)),
                Err(e) => (Some(locked), Err(e.into())),
            }
        }
        Err(e) => {
            tracing::warn!(checkout = %id, error = %e, "cannot open the payment; checkout cancelled");
            let _ = deps.inventory.end(id, false, Some(&units)).await;
            release_reservation(&deps, id).await;
            record.state = CheckoutState::Cancelled;
            record.message = Some(
                "The payment service could not be reached and nothing was charged. Please try again in a moment."
                    .into(),
            );
            let mut unlocked = locked;
            unlocked.unlock(id, deps.clock.now());
            let unit = UnitOfWork::new()
                .with(Change::PutCheckout(record))
                .with(Change::PutBasket(unlocked.clone()));
            match deps.fence.commit(&*deps.storage, &unlocked.id, unit).await {
                Ok(()) => (Some(unlocked), Err(e.into())),
                Err(se) => (None, Err(se.into())),
            }
        }
    }
}

/// Where and for which checkout a basket is priced and its uses reserved.
struct Target<'a> {
    country: &'a str,
    method: &'a str,
    checkout: CheckoutId,
    /// When the reservation lapses: when the provider can no longer take the payment
    /// ([`payable_until`]), not the end of the stock hold — a payment made after the hold
    /// ran out still becomes an order (its stock is taken again if there), and must find the
    /// coupon and promotion uses it was priced with.
    until: OffsetDateTime,
}

/// Past its session's expiry plus this slack (for the provider's clock and a payment being
/// completed as it expires) the provider takes no payment for it: [`end`] then gives the
/// checkout up even when the provider cannot be asked, and its reservation has lapsed.
const SESSION_SLACK_SECS: i64 = 300;

/// When the provider is asked to expire a session opened now (unix seconds, provider time):
/// it wants 30 minutes to 24 hours; the hub expires it itself when the hold ends.
fn session_expiry(cfg: &CheckoutDeps) -> i64 {
    let wall = OffsetDateTime::now_utc().unix_timestamp();
    let life = cfg.settings.hold_for.as_secs().clamp(31 * 60, 23 * 3600) as i64;
    wall + life + 60
}

/// The moment, on the hub's clock, after which a session expiring at `expires_at` (unix
/// seconds, provider time) can no longer be paid: its expiry plus [`SESSION_SLACK_SECS`].
/// A checkout's reservation lasts until then, so it never lapses while its payment can still
/// go through; one left behind by a crash lapses then all the same.
fn payable_until(deps: &Deps, expires_at: i64) -> OffsetDateTime {
    let wall = OffsetDateTime::now_utc().unix_timestamp();
    let left = expires_at.saturating_sub(wall).max(0) + SESSION_SLACK_SECS;
    deps.clock.now() + time::Duration::seconds(left)
}

/// Makes a checkout's reservation last until its session, expiring at `expires_at`, can no
/// longer be paid. A failure is logged (the reservation then lapses at the end it has).
async fn extend_reservation(deps: &Deps, record: &CheckoutRecord, expires_at: i64) {
    let reservation = Reservation {
        customer: record.customer(),
        coupons: record.coupons.clone(),
        promotions: record.promotions.clone(),
        until: payable_until(deps, expires_at),
    };
    if let Err(reason) = deps.offers.reserve(record.id, &reservation).await {
        tracing::warn!(checkout = %record.id, %reason, "reservation not extended to the payment session's end");
    }
}

/// How often a checkout is priced again when a promotion in its price reached its limit
/// between pricing and reserving.
const REPRICES: usize = 3;

/// The first coupon code on the basket that can no longer be used (used up, expired, its
/// promotion over), refused with the reason.
fn unusable_coupon(deps: &Deps, basket: &Basket, now: OffsetDateTime) -> Option<CheckoutFailure> {
    let customer = match basket.owner {
        protocol::BasketOwner::Customer(c) => Some(c),
        protocol::BasketOwner::Anonymous => None,
    };
    basket.coupons.iter().find_map(|code| {
        deps.offers
            .coupon_promotion_for(code, customer, now, None)
            .err()
            .map(|reason| coupon_refused(code, &reason))
    })
}

fn coupon_refused(code: &str, reason: &str) -> CheckoutFailure {
    CheckoutFailure::OfferUnavailable {
        code: "coupon_unavailable",
        message: format!(
            "the coupon {code} can no longer be used: {reason}. Remove it from your basket to check out without it."
        ),
    }
}

/// Prices the checkout with the live promotions and reserves the limited coupon and promotion
/// uses in its price until the payment can no longer be made (see
/// `crate::backoffice::reservations`). Another
/// checkout may take the last use of a promotion between the two: the basket is then priced
/// again, now without it (as the basket page shows it), and the checkout goes on at that price.
/// A coupon code is never left out so: one used up meanwhile refuses the checkout.
async fn price_and_reserve(
    deps: &Deps,
    basket: &Basket,
    hints: crate::pricing::Hints,
    target: &Target<'_>,
) -> Result<(protocol::Breakdown, crate::pricing::CheckoutOffers), CheckoutFailure> {
    for _ in 0..REPRICES {
        let (breakdown, offers) = {
            let catalog = deps.catalog.load();
            price_with_offers(deps, &catalog, basket, hints, target.country, target.method)?
        };
        // A code another checkout took the last use of since the check at the start was left
        // out of this price: refused, never dropped silently.
        if let Some((code, reason)) = offers.unusable.first() {
            return Err(coupon_refused(code, reason));
        }
        let reservation = Reservation {
            customer: match basket.owner {
                protocol::BasketOwner::Customer(c) => Some(c),
                protocol::BasketOwner::Anonymous => None,
            },
            coupons: offers.coupons.clone(),
            promotions: offers.promotions.clone(),
            until: target.until,
        };
        match deps.offers.reserve(target.checkout, &reservation).await {
            Ok(()) => return Ok((breakdown, offers)),
            Err(ReserveFailure::Promotion { name, reason }) => {
                tracing::info!(checkout = %target.checkout, promotion = %name, %reason, "a promotion ran out while checking out; priced again without it");
            }
            Err(ReserveFailure::Coupon { code, reason }) => {
                return Err(coupon_refused(&code, &reason))
            }
            Err(ReserveFailure::Unavailable(e)) => return Err(StorageError::Io(e).into()),
        }
    }
    Err(CheckoutFailure::OfferUnavailable {
        code: "promotion_used_up",
        message: "the promotions in your basket are being used up by other orders right now: check your basket and try again in a moment".into(),
    })
}

/// Gives back a checkout's reserved uses. A failure is logged: the reservation then lapses by
/// itself once the checkout's session can no longer be paid.
async fn release_reservation(deps: &Deps, checkout: CheckoutId) {
    if let Err(reason) = deps.offers.release_reservation(checkout).await {
        tracing::warn!(%checkout, %reason, "reserved coupon and promotion uses not given back yet; they lapse with the payment session");
    }
}

/// The coupons and promotions in a placed order's price become its uses: the checkout's
/// reservation, or — a checkout from before reservations, or one whose reservation lapsed or
/// could not be turned into uses — each code redeemed and each promotion counted now (a code
/// used up meanwhile is logged: the order was paid as priced). An order recorded cancelled
/// uses none and gives the reservation back.
async fn use_offers(deps: &Deps, record: &CheckoutRecord, order: &OrderRecord) {
    if order.cancelled.is_some() {
        release_reservation(deps, record.id).await;
        return;
    }
    match deps.offers.commit_reservation(record.id, order.id).await {
        Ok(true) => return,
        Ok(false) => {}
        Err(reason) => {
            tracing::warn!(order = %order.number, %reason, "reserved uses not turned into the order's; counting them one by one")
        }
    }
    for code in &record.coupons {
        if let Err(reason) = deps.offers.redeem(code, record.customer(), order.id).await {
            tracing::warn!(order = %order.number, code = %code, %reason, "coupon not redeemed");
        }
    }
    if !record.promotions.is_empty() {
        if let Err(reason) = deps
            .offers
            .record_uses(&record.promotions, record.customer(), order.id)
            .await
        {
            tracing::warn!(order = %order.number, %reason, "promotion uses not counted");
        }
    }
}

/// The confirmation address: the one given (guests must give one), else the customer's.
async fn checkout_email(
    deps: &Deps,
    basket: &Basket,
    given: Option<&str>,
) -> Result<String, CheckoutFailure> {
    if let Some(email) = given.map(str::trim).filter(|e| !e.is_empty()) {
        return if is_plausible_email(email) {
            Ok(normalize_email(email))
        } else {
            Err(CheckoutFailure::Email)
        };
    }
    match basket.owner {
        protocol::BasketOwner::Customer(c) => deps
            .storage
            .customer(c)
            .await?
            .map(|r| r.email)
            .ok_or(CheckoutFailure::Email),
        protocol::BasketOwner::Anonymous => Err(CheckoutFailure::Email),
    }
}

/// The Checkout Session for a frozen checkout: its lines as the page shows them, unless a
/// discount makes per-line amounts differ from the total (then one line with the total).
fn new_session(record: &CheckoutRecord, cfg: &CheckoutDeps, expires_at: i64) -> NewSession {
    let b = &record.breakdown;
    let mut lines: Vec<PageLine> = b
        .lines
        .iter()
        .map(|l| PageLine {
            name: if l.variant.is_empty() {
                l.name.clone()
            } else {
                format!("{} – {}", l.name, l.variant)
            },
            unit_amount: l.unit_price.minor,
            quantity: l.quantity,
        })
        .collect();
    if b.shipping.price.minor > 0 {
        lines.push(PageLine {
            name: format!("Shipping: {}", b.shipping.name),
            unit_amount: b.shipping.price.minor,
            quantity: 1,
        });
    }
    if !b.prices_include_tax && b.tax_total.minor > 0 {
        lines.push(PageLine {
            name: "Tax".into(),
            unit_amount: b.tax_total.minor,
            quantity: 1,
        });
    }
    let sum: i64 = lines
        .iter()
        .map(|l| l.unit_amount * i64::from(l.quantity))
        .sum();
    if sum != b.total.minor {
        lines = vec![PageLine {
            name: format!("Your order ({} items)", b.item_count),
            unit_amount: b.total.minor,
            quantity: 1,
        }];
    }
    let base = cfg.public_url.trim_end_matches('/');
    NewSession {
        checkout_id: record.id.to_string(),
        basket_id: record.basket.to_string(),
        currency: b.currency.code().to_ascii_lowercase(),
        lines,
        email: record.email.clone(),
        success_url: format!(
            "{base}/checkout/{}/return?session_id={{CHECKOUT_SESSION_ID}}",
            record.id
        ),
        cancel_url: format!("{base}/checkout/{}/cancel", record.id),
        expires_at,
        idempotency_key: format!("checkout-{}-{}", record.id, record.attempt),
    }
}

impl Handler<EndCheckout> for BasketActor {
    type Result =
        AtomicResponse<Self, Result<(CheckoutRecord, Option<OrderRecord>), CheckoutFailure>>;

    fn handle(&mut self, msg: EndCheckout, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if !msg.access.allows(&self.basket) {
            return ready(Err(CheckoutFailure::NotFound));
        }
        let deps = self.deps.clone();
        let basket = self.basket.clone();
        let find = self.find_checkout(msg.checkout);
        AtomicResponse::new(Box::pin(
            async move {
                let record = match find.await {
                    Ok(r) => r,
                    Err(e) => return (None, Err(e)),
                };
                if !record.state.is_open() {
                    let order = match record.order {
                        Some(o) => deps.storage.order(o).await.ok().flatten(),
                        None => None,
                    };
                    return (None, Ok((record, order)));
                }
                end(deps, basket, record, msg.why).await
            }
            .into_actor(self)
            .map(
                |(basket, res): Step<(CheckoutRecord, Option<OrderRecord>)>, act, _| {
                    if matches!(&res, Ok((_, Some(_)))) {
                        act.ordered();
                    }
                    act.settle(basket, res.as_ref().ok().map(|(r, _)| r.clone()));
                    res
                },
            ),
        ))
    }
}

async fn end(
    deps: Deps,
    basket: Basket,
    mut record: CheckoutRecord,
    why: EndReason,
) -> Step<(CheckoutRecord, Option<OrderRecord>)> {
    let payments = deps.checkout.payments.clone();
    let now = deps.clock.now();
    if let Some(sid) = record.session_id.clone() {
        if let Err(expire_error) = payments.expire_session(&sid).await {
            // Refused or unreachable: read the session to learn why.
            let read = payments.session(&sid).await;
            // Past its own expiry (plus slack for clocks), the provider takes no payment for it.
            let wall = OffsetDateTime::now_utc().unix_timestamp();
            let lapsed = record
                .session_expires_at
                .is_some_and(|at| wall > at + SESSION_SLACK_SECS);
            match read {
                Ok(s) if s.is_paid() => {
                    let (b, res) = complete(deps, basket, record.clone(), s).await;
                    return (b, res.map(|o| (paid(record, &o), Some(o))));
                }
                Ok(s) if s.status == "expired" => {}
                // The provider does not know it (another account, a reset test provider): it
                // cannot be paid.
                Err(e) if e.is_missing() && expire_error.is_missing() => {}
                _ if lapsed => {}
                _ => {
                    let grace = deps.checkout.settings.release_after_provider_down;
                    if why == EndReason::HoldExpired && now >= record.hold_until + grace {
                        // The provider is down: the stock goes back (recorded first, so a late
                        // payment knows it must find stock again), the basket stays locked until
                        // the session is known to be expired or paid. The reserved coupon and
                        // promotion uses stay: the session may still be paid, and its order
                        // must find them (they lapse by themselves once it cannot be).
                        if !record.hold_released {
                            record.hold_released = true;
                            let unit = UnitOfWork::new().with(Change::PutCheckout(record.clone()));
                            if let Err(e) = deps.storage.commit(unit).await {
                                return (None, Err(e.into()));
                            }
                        }
                        if let Err(e) = deps
                            .inventory
                            .end(record.id, false, Some(&record.units()))
                            .await
                        {
                            return (None, Err(e.into()));
                        }
                        return (None, Ok((record, None)));
                    }
                    return (None, Err(expire_error.into()));
                }
            }
        }
    }
    if let Err(e) = deps
        .inventory
        .end(record.id, false, Some(&record.units()))
        .await
    {
        return (None, Err(e.into()));
    }
    release_reservation(&deps, record.id).await;
    let (state, kind, message) = match why {
        EndReason::Cancelled => (
            CheckoutState::Cancelled,
            EventKind::CheckoutCancelled,
            "The payment was cancelled; nothing was charged. Your basket is as you left it.",
        ),
        EndReason::HoldExpired => (
            CheckoutState::Expired,
            EventKind::CheckoutExpired,
            "The time to pay ran out and the items were released; nothing was charged. Your basket is as you left it.",
        ),
    };
    let decline = record.message.take();
    record.state = state;
    record.message = Some(match decline {
        Some(d) => format!("{d} {message}"),
        None => message.to_string(),
    });
    let mut unlocked = basket.clone();
    let changed = unlocked.unlock(record.id, now);
    let mut unit = UnitOfWork::new().with(Change::PutCheckout(record.clone()));
    if changed {
        unit.changes.push(Change::PutBasket(unlocked.clone()));
    }
    if let Err(e) = deps.fence.commit(&*deps.storage, &unlocked.id, unit).await {
        return (None, Err(e.into()));
    }
    deps.recorder.do_send(super::recorder::Record(
        Event::new(now, record.subject, record.channel, kind)
            .with("basket", record.basket)
            .with("checkout", record.id),
    ));
    (changed.then_some(unlocked), Ok((record, None)))
}

fn paid(mut record: CheckoutRecord, order: &OrderRecord) -> CheckoutRecord {
    record.state = CheckoutState::Paid;
    record.order = Some(order.id);
    record.message = None;
    record
}

impl Handler<PaymentSucceeded> for BasketActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, CheckoutFailure>>;

    fn handle(&mut self, msg: PaymentSucceeded, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let deps = self.deps.clone();
        let basket = self.basket.clone();
        let find = self.find_checkout(msg.checkout);
        AtomicResponse::new(Box::pin(
            async move {
                match find.await {
                    Ok(record) => complete(deps, basket, record, msg.session).await,
                    Err(e) => (None, Err(e)),
                }
            }
            .into_actor(self)
            .map(|(basket, res): Step<OrderRecord>, act, _| {
                if res.is_ok() {
                    act.ordered();
                }
                if basket.is_some() || res.is_ok() {
                    act.settle(basket, None);
                }
                res
            }),
        ))
    }
}

/// An order by id, from storage.
async fn stored_order(deps: &Deps, id: OrderId) -> Result<OrderRecord, CheckoutFailure> {
    deps.storage
        .order(id)
        .await?
        .ok_or(CheckoutFailure::NotFound)
}

/// The order a checkout already became.
async fn existing_order(deps: &Deps, checkout: CheckoutId) -> Result<OrderRecord, CheckoutFailure> {
    match deps.storage.order_for_checkout(checkout).await? {
        Some(id) => stored_order(deps, id).await,
        None => Err(CheckoutFailure::NotFound),
    }
}

/// Makes the order of a paid checkout, once.
async fn complete(
    deps: Deps,
    basket: Basket,
    record: CheckoutRecord,
    session: Session,
) -> Step<OrderRecord> {
    // Already made (a duplicate webhook, the redirect after the webhook): the same order.
    match deps.storage.order_for_checkout(record.id).await {
        Ok(Some(id)) => {
            let _ = deps
                .inventory
                .end(record.id, true, Some(&record.units()))
                .await;
            let order = stored_order(&deps, id).await;
            // A crash after the order and before its uses leaves the reservation: settle it.
            if let Ok(order) = &order {
                let settled = if order.cancelled.is_none() {
                    deps.offers
                        .commit_reservation(record.id, order.id)
                        .await
                        .map(|_| ())
                } else {
                    deps.offers.release_reservation(record.id).await
                };
                if let Err(reason) = settled {
                    tracing::warn!(order = %order.number, %reason, "reserved uses not settled yet");
                }
            }
            return (None, order);
        }
        Ok(None) => {}
        Err(e) => return (None, Err(e.into())),
    }
    let belongs = session.client_reference_id.as_deref() == Some(&record.id.to_string())
        || session.metadata.get("checkout_id") == Some(&record.id.to_string());
    if !session.is_paid() || !belongs {
        return (None, Err(CheckoutFailure::NotPaid));
    }
    let currency = record.breakdown.total.currency;
    let amount = Money::new(session.amount_total.unwrap_or(0), currency);
    let mut attention = None;
    if amount != record.breakdown.total
        || session.currency.as_deref().map(str::to_ascii_uppercase)
            != Some(currency.code().to_string())
    {
        attention = Some(format!(
            "The amount paid ({amount}) differs from the order total ({}); refunded automatically.",
            record.breakdown.total
        ));
    }
    // The stock, held for this checkout: holding is idempotent, so a hold still in place stays
    // as it is, and one that was given back (the hold ran out, a crash) is taken again if the
    // stock is there. A wrong amount takes no stock.
    let units = record.units();
    let mut stock_ok = false;
    if attention.is_none() {
        let until = deps.clock.now() + deps.checkout.settings.hold_for;
        match hold_stock(
            &deps,
            record.id,
            &record.breakdown.shipping.id,
            &units,
            until,
        )
        .await
        {
            Ok(()) => stock_ok = true,
            Err(HoldFailure::Short(short)) => {
                let names: Vec<String> = short
                    .iter()
                    .map(|(sku, left)| format!("{sku} ({left} left)"))
                    .collect();
                attention = Some(format!(
                    "Paid after its stock hold had ended, and the stock was gone: {}. Refunded automatically.",
                    names.join(", ")
                ));
            }
            Err(HoldFailure::Storage(e)) => return (None, Err(e.into())),
        }
    } else if let Err(e) = deps
        .inventory
        .end(record.id, false, Some(&record.units()))
        .await
    {
        return (None, Err(e.into()));
    }
    // Crash tests stop the hub here: paid at the provider, no order yet.
    fail::fail_point!("checkout.before_order", |_| std::process::abort());
    let now = deps.clock.now();
    // In a cluster the engine mints the number (unique across nodes); one process counts.
    let seq = match deps.storage.next_order_sequence(ORDER_PREFIX).await {
        Ok(Some(minted)) => minted,
        Ok(None) => deps.checkout.order_seq.fetch_add(1, Ordering::SeqCst) + 1,
        Err(e) => return (None, Err(e.into())),
    };
    let lookup_key = match auth::random_token(18) {
        Ok(k) => k,
        Err(e) => return (None, Err(StorageError::Io(e.to_string()).into())),
    };
    let order = OrderRecord {
        id: OrderId::new(),
        number: online_order_number(seq),
        checkout: record.id,
        basket: record.basket,
        customer: record.customer(),
        subject: record.subject,
        email: record.email.clone(),
        channel: record.channel,
        address: record.address.clone(),
        breakdown: record.breakdown.clone(),
        payment: PaymentRecord {
            provider: "stripe".into(),
            session_id: session.id.clone(),
            payment_intent: session.payment_intent.clone(),
            amount,
            refunds: Vec::new(),
        },
        progress: Progress::Paid,
        // An order that cannot be fulfilled is recorded cancelled, with its refund owed.
        cancelled: attention.clone(),
        needs_attention: attention.clone(),
        lookup_key,
        created_at: now,
        refund_due: attention.is_some().then_some(amount),
        stock_committed: stock_ok,
        restock_due: false,
        oms_id: None,
        shipments: Vec::new(),
        timeline: vec![protocol::order::TimelineEntry {
            at: now,
            what: format!("Order placed and paid ({})", record.breakdown.total),
        }],
        returned: false,
        pickup: crate::collect::order_pickup(&deps, &record.breakdown.shipping.id),
    };
    let paid_record = paid(record.clone(), &order);
    let mut after = basket.clone();
    let changed = after.complete(record.id, now);
    let mut unit = UnitOfWork::new()
        .with(Change::CreateOrder(order.clone()))
        .with(Change::PutCheckout(paid_record));
    if changed {
        unit.changes.push(Change::PutBasket(after.clone()));
    }
    // The OMS hears of an order to fulfil in the same unit: never an order it misses, never a
    // message about an order that is not stored.
    // A pickup is fulfilled by its store, not the OMS.
    if order.cancelled.is_none() && order.pickup.is_none() {
        unit.outbox
            .push(crate::fulfilment::order_placed(&order, now));
    }
    unit.outbox
        .push(crate::fulfilment::email::order_confirmation(
            &order,
            &deps.checkout.public_url,
            now,
        ));
    // The payment and the order are recorded with the order itself: a crash keeps all or none.
    for kind in [EventKind::PaymentSucceeded, EventKind::OrderPlaced] {
        unit.events.push(
            Event::new(now, record.subject, record.channel, kind)
                .with("checkout", record.id)
                .with("order", order.id)
                .with("number", &order.number)
                .with("total", order.breakdown.total)
                .with("basket", order.basket)
                .with("amount", order.breakdown.total.to_decimal_string())
                .with("currency", order.breakdown.total.currency)
                .with("store", order_store(&order))
                .with("products", units_payload(&order, |l| &l.product_slug))
                .with("skus", units_payload(&order, |l| l.sku.as_str()))
                .with(
                    "promotions",
                    record
                        .promotions
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
        );
    }
    match deps.fence.commit(&*deps.storage, &after.id, unit).await {
        Ok(()) => {}
        Err(StorageError::Conflict(_)) => {
            // Another path made it first (cannot happen through this actor; storage guards it).
            return (None, existing_order(&deps, record.id).await);
        }
        // The holds stay: a retry (webhook, redirect, reconciliation) finds them, and if the
        // unit was written after all, the retry finds the order and turns them into a sale.
        Err(e) => return (None, Err(e.into())),
    }
    deps.outbox.wake();
    // The coupons and promotions in the price are used by this order (once per order, however
    // often this runs).
    use_offers(&deps, &record, &order).await;
    // A pickup's units are consumed from the hub's rights at the store and put on its pick
    // list; then the hold is given back (the consumption took its place).
    let (order, consume) = if stock_ok && order.pickup.is_some() {
        (promise_pickup(&deps, order).await, false)
    } else {
        (order, true)
    };
    // A pickup whose promise failed keeps its hold at the store until the retry promises it
    // (`settle_owed`).
    let promise_due = order.pickup_promise_due();
    if stock_ok && !promise_due {
        if let Err(e) = deps
            .inventory
            .end(record.id, consume, Some(&record.units()))
            .await
        {
            // The sweeper finds the holds of a paid checkout and consumes them.
            tracing::error!(checkout = %record.id, error = %e, "cannot turn the hold into a sale yet");
        }
    }
    tracing::info!(order = %order.number, checkout = %record.id, total = %order.breakdown.total, "order placed");
    let order = if order.owes() {
        match settle_owed(&deps, order.clone()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(order = %order.number, error = %e, "automatic refund not done yet; the sweeper retries");
                order
            }
        }
    } else {
        order
    };
    (changed.then_some(after), Ok(order))
}

impl Handler<PaymentFailed> for BasketActor {
    type Result = AtomicResponse<Self, Result<(), CheckoutFailure>>;

    fn handle(&mut self, msg: PaymentFailed, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(mut record) = self.pending.clone().filter(|p| p.id == msg.checkout) else {
            return ready(Ok(()));
        };
        record.message = Some(msg.message.clone());
        let storage = self.deps.storage.clone();
        let basket_url = format!(
            "{}/basket",
            self.deps.checkout.public_url.trim_end_matches('/')
        );
        let failed_mail = crate::fulfilment::email::payment_failed(
            record.id,
            record.attempt,
            &record.email,
            &msg.message,
            &basket_url,
            self.deps.clock.now(),
        );
        let outbox = self.deps.outbox.clone();
        let now = self.deps.clock.now();
        let event = Event::new(
            now,
            record.subject,
            record.channel,
            EventKind::PaymentFailed,
        )
        .with("checkout", record.id);
        self.deps.recorder.do_send(super::recorder::Record(event));
        AtomicResponse::new(Box::pin(
            async move {
                let unit = UnitOfWork::new()
                    .with(Change::PutCheckout(record.clone()))
                    .with_message(failed_mail);
                let stored = storage.commit(unit).await.map(|()| record);
                outbox.wake();
                stored
            }
            .into_actor(self)
            .map(|res, act, _| {
                let record = res?;
                act.settle(None, Some(record));
                Ok(())
            }),
        ))
    }
}

impl Handler<RefundOrder> for BasketActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, CheckoutFailure>>;

    fn handle(&mut self, msg: RefundOrder, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                let order = own_order(&deps, basket, msg.order).await?;
                refund(
                    &deps,
                    order,
                    msg.amount,
                    &msg.reason,
                    msg.cancel,
                    msg.idempotency_key,
                )
                .await
            }
            .into_actor(self),
        ))
    }
}

/// Does what the hub still owes on an order (an automatic refund, a restock) and nothing else.
#[derive(Message, Clone)]
#[rtype(result = "Result<OrderRecord, CheckoutFailure>")]
pub struct SettleOrder {
    pub order: OrderId,
}

impl Handler<SettleOrder> for BasketActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, CheckoutFailure>>;

    fn handle(&mut self, msg: SettleOrder, _ctx: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                let order = own_order(&deps, basket, msg.order).await?;
                settle_owed(&deps, order).await
            }
            .into_actor(self),
        ))
    }
}

async fn own_order(
    deps: &Deps,
    basket: protocol::BasketId,
    id: OrderId,
) -> Result<OrderRecord, CheckoutFailure> {
    Some(stored_order(deps, id).await?)
        .filter(|o| o.basket == basket)
        .ok_or(CheckoutFailure::NotFound)
}

/// The pickup promise still owed, the refund still owed (capped by what can still be
/// refunded), then the restock still owed.
async fn settle_owed(deps: &Deps, order: OrderRecord) -> Result<OrderRecord, CheckoutFailure> {
    let mut order = order;
    if order.pickup_promise_due() {
        order = promise_pickup(deps, order).await;
        if order.pickup_promise_due() {
            return Err(CheckoutFailure::Refused(format!(
                "order {} is not on its store's pick list yet",
                order.number
            )));
        }
        // The consumption took the hold's place.
        let units = order_units(&order);
        if let Err(e) = deps
            .inventory
            .end(order.checkout, false, Some(&units))
            .await
        {
            tracing::warn!(order = %order.number, error = %e, "pickup promised; its hold is given back by the sweeper");
        }
    }
    if let Some(due) = order.refund_due {
        let refundable = order.payment.refundable();
        let amount = if due.minor <= refundable.minor {
            due
        } else {
            refundable
        };
        order = refund(deps, order, Some(amount), "automatic refund", false, None).await?;
    }
    if order.restock_due {
        order = restock(deps, order).await?;
    }
    Ok(order)
}

/// Puts a cancelled order's units back on hand, then records that it did.
async fn restock(deps: &Deps, mut order: OrderRecord) -> Result<OrderRecord, CheckoutFailure> {
    let units: Vec<(Sku, u32)> = order
        .breakdown
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    if order.pickup.is_some() {
        // Never left the store's shelf: the node takes the order off its pick list and makes
        // the units sellable again (the command is applied once there).
        let reason = order
            .cancelled
            .clone()
            .unwrap_or_else(|| "cancelled".into());
        crate::collect::release(deps, &order, &reason)
            .await
            .map_err(|e| {
                CheckoutFailure::Refused(format!("the store could not be told yet: {e}"))
            })?;
        if let Some(p) = order.pickup.as_mut() {
            p.released = true;
        }
        // A hold kept for a promise that never happened goes too.
        if let Err(e) = deps
            .inventory
            .end(order.checkout, false, Some(&units))
            .await
        {
            tracing::warn!(order = %order.number, error = %e, "cancelled pickup's hold is given back by the sweeper");
        }
        order.restock_due = false;
        deps.storage
            .commit(UnitOfWork::new().with(Change::PutOrder(order.clone())))
            .await?;
        return Ok(order);
    }
    // A crash between the two steps restocks again on the retry: the units then count twice,
    // which a stock count corrects; never the other way round (lost units nobody knows of).
    deps.inventory
        .restock(&LocationId::online(), &units)
        .await?;
    order.restock_due = false;
    deps.storage
        .commit(UnitOfWork::new().with(Change::PutOrder(order.clone())))
        .await?;
    Ok(order)
}

/// Refunds (part of) an order at the provider and records it; with `cancel`, also cancels the
/// order (refunding what is left) and owes a restock if its units had not left the warehouse.
async fn refund(
    deps: &Deps,
    mut order: OrderRecord,
    amount: Option<Money>,
    reason: &str,
    cancel: bool,
    key: Option<String>,
) -> Result<OrderRecord, CheckoutFailure> {
    if cancel && order.cancelled.is_some() && !order.owes() {
        // Cancelled already: a retry still gives back uses a crash may have kept.
        release_coupons(deps, &order).await;
        return Ok(order);
    }
    if cancel
        && order
            .pickup
            .as_ref()
            .is_some_and(|p| p.state == protocol::replication::PickupState::Collected)
    {
        return Err(CheckoutFailure::Refused(format!(
            "order {} was collected at the store: refund it instead of cancelling",
            order.number
        )));
    }
    if cancel && order.progress > Progress::Packed {
        return Err(CheckoutFailure::Refused(format!(
            "order {} has already shipped: refund it instead of cancelling",
            order.number
        )));
    }
    let refundable = order.payment.refundable();
    let amount = amount.unwrap_or(refundable);
    if amount.currency != refundable.currency || amount.minor < 0 {
        return Err(CheckoutFailure::Refused(format!(
            "a refund of order {} is in {} and at least 0.01",
            order.number, refundable.currency
        )));
    }
    if amount.minor > refundable.minor {
        return Err(CheckoutFailure::Refused(format!(
            "at most {refundable} of order {} can still be refunded",
            order.number
        )));
    }
    let now = deps.clock.now();
    let mut refunded = 0;
    if amount.minor > 0 {
        let intent = order.payment.payment_intent.clone().ok_or_else(|| {
            CheckoutFailure::Refused(format!("order {} has no payment to refund", order.number))
        })?;
        let key = key
            .unwrap_or_else(|| format!("refund-{}-{}", order.id, order.payment.refunds.len() + 1));
        let done = deps
            .checkout
            .payments
            .refund(&intent, amount.minor, reason, &key)
            .await?;
        if !order.payment.refunds.iter().any(|r| r.id == done.id) {
            refunded = done.amount;
            order.payment.refunds.push(RefundRecord {
                id: done.id,
                amount: Money::new(done.amount, amount.currency),
                reason: reason.to_string(),
                at: now,
            });
        }
    }
    // What is still owed shrinks by what was refunded; it is settled only when nothing is left.
    if let Some(due) = order.refund_due {
        let left = (due.minor - refunded).min(order.payment.refundable().minor);
        order.refund_due = (left > 0).then(|| Money::new(left, due.currency));
    }
    if cancel {
        if order.cancelled.is_none() {
            order.cancelled = Some(reason.to_string());
        }
        if order.stock_committed && order.progress <= Progress::Packed {
            order.stock_committed = false;
            order.restock_due = true;
        }
    }
    let kind = if cancel {
        EventKind::OrderCancelled
    } else {
        EventKind::OrderRefunded
    };
    let mut unit = UnitOfWork::new()
        .with(Change::PutOrder(order.clone()))
        .with_event(
            Event::new(now, order.subject, order.channel, kind)
                .with("order", order.id)
                .with("amount", Money::new(refunded, amount.currency))
                .with("store", order_store(&order)),
        );
    if cancel && order.needs_attention.is_none() && order.pickup.is_none() {
        unit.outbox
            .push(crate::fulfilment::order_cancelled(&order, now));
    }
    if let Some(last) = order.payment.refunds.last().filter(|_| refunded > 0) {
        unit.outbox.push(crate::fulfilment::email::refund(
            &order,
            &last.id,
            last.amount,
            &deps.checkout.public_url,
            now,
        ));
    }
    deps.storage.commit(unit).await?;
    deps.outbox.wake();
    if cancel {
        release_coupons(deps, &order).await;
    }
    if order.restock_due {
        order = restock(deps, order).await?;
    }
    Ok(order)
}

/// Gives back the coupon uses of a cancelled order, so its codes (a single-use code, a limit
/// per customer) can be used again. Idempotent by order; a failure is logged, and the next
/// cancellation request for the order tries again.
async fn release_coupons(deps: &Deps, order: &OrderRecord) {
    let (coupons, promotions) = match deps.storage.checkout(order.checkout).await {
        Ok(Some(checkout)) => (checkout.coupons, checkout.promotions),
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(order = %order.number, error = %e, "cannot read the order's coupons to give them back");
            return;
        }
    };
    for code in &coupons {
        if let Err(reason) = deps.offers.release(code, order.id).await {
            tracing::warn!(order = %order.number, code = %code, %reason, "coupon use not given back");
        }
    }
    if let Err(reason) = deps.offers.release_uses(&promotions, order.id).await {
        tracing::warn!(order = %order.number, %reason, "promotion uses not given back");
    }
}

/// A report from the OMS or the carrier about an order, verified by the webhook endpoint.
#[derive(Message, Clone)]
#[rtype(result = "Result<OrderRecord, FulfilmentFailure>")]
pub struct ApplyFulfilment {
    pub order: OrderId,
    pub update: protocol::order::FulfilmentUpdate,
    pub source: &'static str,
}

/// Why a fulfilment report was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FulfilmentFailure {
    #[error(transparent)]
    Refused(#[from] protocol::order::FulfilmentError),
    #[error(transparent)]
    Checkout(#[from] CheckoutFailure),
}

impl From<StorageError> for FulfilmentFailure {
    fn from(e: StorageError) -> FulfilmentFailure {
        FulfilmentFailure::Checkout(e.into())
    }
}

impl Handler<ApplyFulfilment> for BasketActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, FulfilmentFailure>>;

    fn handle(&mut self, msg: ApplyFulfilment, _ctx: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                let mut order = own_order(&deps, basket, msg.order).await?;
                let before = order.clone();
                let now = deps.clock.now();
                let notices = order.apply(msg.update, now)?;
                if order == before {
                    // A repeat or a late report: nothing moves backwards, nothing to store.
                    return Ok(order);
                }
                let mut unit = UnitOfWork::new().with(Change::PutOrder(order.clone()));
                unit.events.push(
                    Event::new(now, order.subject, order.channel, EventKind::OrderUpdated)
                        .with("order", order.id)
                        .with("number", &order.number)
                        .with("status", order.status())
                        .with("source", msg.source),
                );
                let base = deps.checkout.public_url.clone();
                for notice in notices {
                    unit.outbox.push(match notice {
                        protocol::order::Notice::Shipped(shipment) => {
                            crate::fulfilment::shipped_email(&order, &shipment, &base, now)
                        }
                        protocol::order::Notice::Delivered(shipment) => {
                            crate::fulfilment::delivered_email(&order, &shipment, &base, now)
                        }
                    });
                }
                deps.storage.commit(unit).await?;
                deps.outbox.wake();
                if before.cancelled.is_none() && order.cancelled.is_some() {
                    release_coupons(&deps, &order).await;
                }
                Ok(order)
            }
            .into_actor(self),
        ))
    }
}

/// Erasure of a customer's data: the order keeps amounts, lines, taxes and the country; its
/// address becomes `[erased]` and its email the placeholder. Sent to the actor of the order's
/// basket, the one writer of its orders, so a fulfilment report running at the same time
/// cannot write the old address back.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), CheckoutFailure>")]
pub struct EraseOrder {
    pub order: OrderId,
    pub placeholder_email: String,
}

/// The marker an erased order's address carries.
pub const ERASED: &str = "[erased]";

/// The order as erasure leaves it.
pub fn erased_order(mut order: OrderRecord, placeholder_email: &str) -> OrderRecord {
    let country = std::mem::take(&mut order.address.country);
    order.address = protocol::Address {
        name: ERASED.into(),
        line1: String::new(),
        line2: String::new(),
        city: String::new(),
        region: String::new(),
        postcode: String::new(),
        country,
        phone: String::new(),
    };
    order.email = placeholder_email.to_string();
    order
}

impl Handler<EraseOrder> for BasketActor {
    type Result = AtomicResponse<Self, Result<(), CheckoutFailure>>;

    fn handle(&mut self, msg: EraseOrder, _ctx: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                let order = own_order(&deps, basket, msg.order).await?;
                let erased = erased_order(order.clone(), &msg.placeholder_email);
                if erased != order {
                    deps.storage
                        .commit(UnitOfWork::new().with(Change::PutOrder(erased)))
                        .await?;
                }
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

/// Holds a checkout's units where its shipping method takes them from: the pickup store
/// (from the rights the hub holds there, see `crate::collect::hold`) or the online warehouse.
async fn hold_stock(
    deps: &Deps,
    checkout: CheckoutId,
    method: &str,
    units: &[(Sku, u32)],
    until: OffsetDateTime,
) -> Result<(), HoldFailure> {
    match crate::collect::location_of(method) {
        Some(store) => crate::collect::hold(deps, checkout, &store, units, until).await,
        None => {
            deps.inventory
                .hold(checkout, &LocationId::online(), units, until)
                .await
        }
    }
}

/// Puts a paid pickup order on its store's pick list and records that it is promised there;
/// units the hub held too few rights for (a race with the store) flag the order for a person.
async fn promise_pickup(deps: &Deps, mut order: OrderRecord) -> OrderRecord {
    let short = match crate::collect::promise(deps, &order).await {
        Ok(short) => short,
        Err(e) => {
            tracing::error!(order = %order.number, error = %e, "pickup not sent to the store yet");
            return order;
        }
    };
    if let Some(p) = order.pickup.as_mut() {
        p.promised = true;
    }
    if !short.is_empty() && order.needs_attention.is_none() {
        let lines: Vec<String> = short.iter().map(|(s, n)| format!("{s} × {n}")).collect();
        order.needs_attention = Some(format!(
            "The store's stock promised to this pickup ran short ({}): contact the shopper.",
            lines.join(", ")
        ));
    }
    if let Err(e) = deps
        .storage
        .commit(UnitOfWork::new().with(Change::PutOrder(order.clone())))
        .await
    {
        tracing::error!(order = %order.number, error = %e, "pickup promised but not recorded on the order");
    }
    order
}

/// An order's units per SKU line.
fn order_units(order: &OrderRecord) -> Vec<(Sku, u32)> {
    order
        .breakdown
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect()
}

/// Refunds a store's return of an online order (`docs/pos.md`, "Returns and exchanges"): at
/// most what the order's payment can still refund (back-office refunds count), with the
/// return's idempotency key, recorded on the order like any refund. The outer error: the order
/// could not be read; the inner one: the refund's own outcome (`Provider(Api)` is a refusal by
/// the provider, for a person).
#[derive(Message, Clone)]
#[rtype(result = "Result<Result<StoreReturnRefund, CheckoutFailure>, CheckoutFailure>")]
pub struct RefundStoreReturn {
    pub order: OrderId,
    pub amount: Money,
    pub reason: String,
    pub idempotency_key: String,
}

/// What a store return's refund of an online order came to.
#[derive(Debug, Clone)]
pub struct StoreReturnRefund {
    /// The provider's refund id (`None` when nothing was left to refund, or for a replay of a
    /// refund the order already records).
    pub refund: Option<String>,
    /// What was refunded.
    pub amount: Money,
    /// What was asked for beyond what the order's payment could still refund.
    pub short: Money,
}

impl Handler<RefundStoreReturn> for BasketActor {
    type Result =
        AtomicResponse<Self, Result<Result<StoreReturnRefund, CheckoutFailure>, CheckoutFailure>>;

    fn handle(&mut self, msg: RefundStoreReturn, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let deps = self.deps.clone();
        let basket = self.basket.id;
        AtomicResponse::new(Box::pin(
            async move {
                let order = own_order(&deps, basket, msg.order).await?;
                let currency = msg.amount.currency;
                let left = order.payment.refundable().minor;
                let amount = Money::new(msg.amount.minor.min(left).max(0), currency);
                let short = Money::new(msg.amount.minor - amount.minor, currency);
                if amount.minor == 0 {
                    return Ok(Ok(StoreReturnRefund {
                        refund: None,
                        amount,
                        short,
                    }));
                }
                let before = order.payment.refunds.len();
                let key = Some(msg.idempotency_key);
                Ok(refund(&deps, order, Some(amount), &msg.reason, false, key)
                    .await
                    .map(|o| StoreReturnRefund {
                        refund: o
                            .payment
                            .refunds
                            .get(before..)
                            .and_then(|r| r.last())
                            .map(|r| r.id.clone()),
                        amount,
                        short,
                    }))
            }
            .into_actor(self),
        ))
    }
}

/// Where an order is fulfilled, for the DXP's revenue by store: the pickup store, else
/// `online`.
fn order_store(order: &OrderRecord) -> String {
    order
        .pickup
        .as_ref()
        .map_or_else(|| "online".to_string(), |p| p.location.0.clone())
}

/// An order's units as `name:quantity,…` (the event payload's `products` and `skus`).
fn units_payload(order: &OrderRecord, name: impl Fn(&protocol::PricedLine) -> &str) -> String {
    order
        .breakdown
        .lines
        .iter()
        .map(|l| format!("{}:{}", name(l), l.quantity))
        .collect::<Vec<_>>()
        .join(",")
}
