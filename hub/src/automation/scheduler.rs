//! The automation scheduler: the one actor that arms and runs the durable timers. It wakes at
//! the next due time on the injected clock (at least every [`MAX_SLEEP`], so a clock that jumps
//! is caught up), runs every due timer once, and can be poked ([`RunDue`]) by tests and the admin
//! API. Runs are serialised by the actor, so a timer never runs twice at once; a run's mail is
//! queued (keyed by the timer) before the run is recorded, so a crash in between reruns it and
//! the outbox drops the second copy.
//!
//! In a cluster every node arms timers in the shared store, but only the holder of the
//! `AutomationTimers` singleton wakes up and runs them ([`crate::cluster::singleton::Lead`]); a
//! standby's scheduler sleeps, and a new holder runs what fell due at once.

use super::rules::{self, Rules};
use super::store::{AutomationStore, Finish, MessageFilter};
use super::{AutomationError, AutomationSettings};
use crate::actors::Deps;
use crate::fulfilment::email::{self, MarketingRecipient};
use crate::storage::UnitOfWork;
use actix::prelude::*;
use protocol::automation::{
    MessageKind, MessageRecord, Outcome, PendingReminder, Reason, StockSubscription, Timer,
    TimerKind,
};
use protocol::{BasketOwner, CustomerId, CustomerRecord, LocationId, OutboxMessage, Sku};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

/// The longest the scheduler sleeps before it looks at its timers again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// After a failed run, the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Timers read per step of a run.
const STEP: usize = 64;

const WIN_BACK_DEDUPE: &str = "win_back";

/// What the scheduler works with.
pub struct Env {
    pub settings: AutomationSettings,
    pub rules: Rules,
    pub store: Arc<dyn AutomationStore>,
    pub deps: Deps,
    pub public_url: String,
}

/// The scheduler's state.
pub struct Scheduler {
    env: Arc<Env>,
    /// The pending wake-up and when it fires (on the clock).
    wake: Option<(SpawnHandle, OffsetDateTime)>,
    /// Whether this node runs the timers (always, embedded; the holder's, in a cluster).
    leading: bool,
}

/// A customer basket's lines changed (committed, with this pending reminder): arm or push back
/// its reminder, then clear the pending one.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BasketChanged(pub PendingReminder);

/// Runs every timer due now; answers what happened.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<RunReport, AutomationError>")]
pub struct RunDue;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    pub timers: usize,
    pub sent: usize,
    pub suppressed: usize,
    pub deferred: usize,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due: Option<OffsetDateTime>,
}

impl Scheduler {
    /// Starts the scheduler: arms the daily win-back timer if it is missing, the basket
    /// reminders a crash left pending (committed, never armed), and catches up restocks a crash
    /// may have lost (a subscribed SKU that is in stock now).
    pub async fn start(env: Arc<Env>) -> Result<Addr<Scheduler>, AutomationError> {
        Scheduler::start_as(env, true).await
    }

    /// Like [`Scheduler::start`] on a cluster node: it runs no timer until it is told it
    /// leads ([`crate::cluster::singleton::Lead`]).
    pub async fn start_standby(env: Arc<Env>) -> Result<Addr<Scheduler>, AutomationError> {
        Scheduler::start_as(env, false).await
    }

    async fn start_as(env: Arc<Env>, leading: bool) -> Result<Addr<Scheduler>, AutomationError> {
        let now = env.deps.clock.now();
        for pending in env.deps.storage.pending_reminders().await? {
            arm_reminder(&env, &pending).await?;
        }
        if env.settings.win_back && env.store.timer(WIN_BACK_DEDUPE).await?.is_none() {
            env.store
                .arm(
                    timer(TimerKind::WinBack, "daily", WIN_BACK_DEDUPE, now, now),
                    false,
                )
                .await?;
        }
        let in_stock: Vec<Sku> = env
            .store
            .subscribed_skus()
            .await?
            .into_iter()
            .filter(|sku| available(&env.deps, sku) > 0)
            .collect();
        let addr = Scheduler {
            env,
            wake: None,
            leading,
        }
        .start();
        if !in_stock.is_empty() {
            addr.do_send(crate::actors::inventory::Restocked(in_stock));
        }
        Ok(addr)
    }

    /// Sets the wake-up for `due` unless an earlier one is pending.
    fn wake_at(&mut self, due: OffsetDateTime, ctx: &mut Context<Self>) {
        if !self.leading {
            // The holder finds it in the shared store (at its next wake-up at the latest).
            return;
        }
        if let Some((handle, at)) = self.wake {
            if at <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let now = self.env.deps.clock.now();
        let wait = Duration::try_from(due - now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.wake = None;
            ctx.notify(RunDue);
        });
        self.wake = Some((handle, due));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.leading {
            ctx.notify(RunDue);
        }
    }
}

impl Handler<crate::cluster::singleton::Lead> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: crate::cluster::singleton::Lead, ctx: &mut Context<Self>) {
        self.leading = msg.0.is_some();
        if self.leading {
            tracing::info!("the automation timers run on this node");
            ctx.notify(RunDue);
        } else if let Some((handle, _)) = self.wake.take() {
            ctx.cancel_future(handle);
        }
    }
}

fn timer(
    kind: TimerKind,
    subject: &str,
    dedupe: &str,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> Timer {
    Timer {
        id: Ulid::new(),
        kind,
        subject: subject.to_string(),
        dedupe: dedupe.to_string(),
        due,
        armed_at: now,
    }
}

fn available(deps: &Deps, sku: &Sku) -> i64 {
    deps.inventory
        .available(&LocationId::online(), std::slice::from_ref(sku))
        .first()
        .copied()
        .unwrap_or(0)
}

impl Handler<BasketChanged> for Scheduler {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: BasketChanged, _ctx: &mut Context<Self>) -> Self::Result {
        let env = self.env.clone();
        AtomicResponse::new(Box::pin(
            async move {
                match arm_reminder(&env, &msg.0).await {
                    Ok(due) => due,
                    Err(e) => {
                        // Still pending in storage: the next start arms it.
                        tracing::warn!(error = %e, basket = %msg.0.basket, "cannot arm a basket reminder");
                        None
                    }
                }
            }
            .into_actor(self)
            .map(|due, act, ctx| {
                if let Some(due) = due {
                    act.wake_at(due, ctx);
                }
            }),
        ))
    }
}

/// Arms (or pushes back) a customer's basket reminder, then clears the pending one; answers
/// when it is due (`None` with the trigger switched off: the pending one is cleared all the
/// same).
async fn arm_reminder(
    env: &Env,
    pending: &PendingReminder,
) -> Result<Option<OffsetDateTime>, AutomationError> {
    let mut due = None;
    if env.settings.abandoned_basket {
        let at = pending.at + env.settings.abandoned_after;
        let customer = pending.customer.to_string();
        let t = timer(
            TimerKind::AbandonedBasket,
            &customer,
            &format!("abandoned:{customer}"),
            at,
            pending.at,
        );
        env.store.arm(t, true).await?;
        due = Some(at);
    }
    env.deps.storage.clear_pending_reminder(pending).await?;
    Ok(due)
}

impl Handler<crate::actors::inventory::Restocked> for Scheduler {
    type Result = AtomicResponse<Self, ()>;

    fn handle(
        &mut self,
        msg: crate::actors::inventory::Restocked,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let env = self.env.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if !env.settings.back_in_stock {
                    return None;
                }
                let now = env.deps.clock.now();
                let mut armed = None;
                for sku in msg.0 {
                    let waiting = match env.store.subscribers(&sku).await {
                        Ok(s) => !s.is_empty(),
                        Err(e) => {
                            tracing::warn!(error = %e, %sku, "cannot read back-in-stock subscribers");
                            false
                        }
                    };
                    if !waiting {
                        continue;
                    }
                    let t = timer(TimerKind::BackInStock, sku.as_str(), &format!("stock:{sku}"), now, now);
                    // A note already waiting (deferred to the end of quiet hours) stays as it is.
                    match env.store.arm(t, false).await {
                        Ok(_) => armed = Some(now),
                        Err(e) => tracing::warn!(error = %e, %sku, "cannot arm a back-in-stock note"),
                    }
                }
                armed
            }
            .into_actor(self)
            .map(|due, act, ctx| {
                if let Some(due) = due {
                    act.wake_at(due, ctx);
                }
            }),
        ))
    }
}

impl Handler<RunDue> for Scheduler {
    type Result = AtomicResponse<Self, Result<RunReport, AutomationError>>;

    fn handle(&mut self, _: RunDue, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.leading {
            return AtomicResponse::new(Box::pin(fut::ready(Err(AutomationError::Elsewhere))));
        }
        let env = self.env.clone();
        AtomicResponse::new(Box::pin(
            async move { run_due(&env).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    let now = act.env.deps.clock.now();
                    match &res {
                        Ok(report) => {
                            let next = report.next_due.unwrap_or(now + MAX_SLEEP);
                            act.wake_at(next, ctx);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "automation run failed; trying again soon");
                            act.wake_at(now + RETRY_AFTER, ctx);
                        }
                    }
                    res
                }),
        ))
    }
}

/// Runs every due timer, in due order.
async fn run_due(env: &Env) -> Result<RunReport, AutomationError> {
    let mut report = RunReport::default();
    loop {
        let now = env.deps.clock.now();
        let due = env.store.due(now, STEP).await?;
        if due.is_empty() {
            break;
        }
        for t in due {
            let finish = run_timer(env, &t, now).await?;
            for r in &finish.records {
                match r.outcome {
                    Outcome::Sent => report.sent += 1,
                    Outcome::Suppressed => report.suppressed += 1,
                    Outcome::Deferred => report.deferred += 1,
                    Outcome::Unknown => {}
                }
            }
            env.store.finish(finish).await?;
            report.timers += 1;
        }
    }
    report.next_due = env.store.next_due().await?;
    Ok(report)
}

/// What a check of the rules decided for one mail.
enum Verdict {
    Send,
    Suppress(Reason),
    Defer(OffsetDateTime),
}

/// Consent, quiet hours, then the frequency cap, for a marketing mail to `customer` at `now`.
async fn verdict(
    env: &Env,
    customer: &CustomerRecord,
    now: OffsetDateTime,
) -> Result<Verdict, AutomationError> {
    if !rules::may_email_marketing(customer) {
        return Ok(Verdict::Suppress(Reason::NoConsent));
    }
    if let Some(until) = env.rules.quiet_until(now) {
        return Ok(Verdict::Defer(until));
    }
    let history = history(env, customer.id).await?;
    if env.rules.capped(&history, now) {
        return Ok(Verdict::Suppress(Reason::FrequencyCap));
    }
    Ok(Verdict::Send)
}

async fn history(env: &Env, customer: CustomerId) -> Result<Vec<MessageRecord>, AutomationError> {
    env.store
        .messages(MessageFilter {
            customer: Some(customer),
            kind: None,
            limit: 200,
        })
        .await
}

fn record(
    kind: MessageKind,
    customer: CustomerId,
    t: &Timer,
    now: OffsetDateTime,
    outcome: Outcome,
    reason: Reason,
) -> MessageRecord {
    MessageRecord {
        id: Ulid::new(),
        at: now,
        customer,
        kind,
        outcome,
        reason,
        subject: String::new(),
        timer: Some(t.id),
        email_key: None,
        deferred_to: None,
        basket_version: None,
    }
}

/// The mail with the customer's email block, if the `email_block` slot has one for them (a
/// slot that cannot be read leaves the mail as it is: the block is extra).
async fn personalised(env: &Env, customer: CustomerId, message: OutboxMessage) -> OutboxMessage {
    let Some(p) = env.deps.personalization.get() else {
        return message;
    };
    match p.email_block(customer).await {
        Ok(Some(block)) => email::with_block(message, &block, &env.public_url),
        Ok(None) => message,
        Err(e) => {
            tracing::warn!(error = %e, "the email block could not be resolved; sent without");
            message
        }
    }
}

/// Queues mail in the email outbox (each keyed, so queued once) and wakes its worker.
async fn queue(env: &Env, messages: Vec<OutboxMessage>) -> Result<(), AutomationError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut unit = UnitOfWork::new();
    for m in messages {
        unit = unit.with_message(m);
    }
    env.deps.storage.commit(unit).await?;
    env.deps.outbox.wake();
    Ok(())
}

fn unsubscribe_url(env: &Env, secret: &[u8; 32], customer: CustomerId) -> String {
    crate::unsubscribe::url(&env.public_url, secret, customer)
}

async fn run_timer(env: &Env, t: &Timer, now: OffsetDateTime) -> Result<Finish, AutomationError> {
    match t.kind {
        TimerKind::AbandonedBasket => abandoned_basket(env, t, now).await,
        TimerKind::BackInStock => back_in_stock(env, t, now).await,
        TimerKind::WinBack => win_back(env, t, now).await,
        TimerKind::Unknown => {
            tracing::warn!(timer = %t.id, "dropping a timer of a kind this build does not know");
            Ok(Finish {
                timer: Some(t.clone()),
                ..Finish::default()
            })
        }
    }
}

/// A deferred copy of a timer: same id (so its mail keeps its key), new due time.
fn deferred(t: &Timer, until: OffsetDateTime) -> Timer {
    Timer {
        due: until,
        ..t.clone()
    }
}

async fn abandoned_basket(
    env: &Env,
    t: &Timer,
    now: OffsetDateTime,
) -> Result<Finish, AutomationError> {
    let kind = MessageKind::AbandonedBasket;
    let mut finish = Finish {
        timer: Some(t.clone()),
        ..Finish::default()
    };
    let Ok(customer_id) = t.subject.parse::<CustomerId>() else {
        return Ok(finish);
    };
    let suppress = |reason: Reason| record(kind, customer_id, t, now, Outcome::Suppressed, reason);
    if !env.settings.abandoned_basket {
        finish.records.push(suppress(Reason::Disabled));
        return Ok(finish);
    }
    let Some(customer) = env.deps.storage.customer(customer_id).await? else {
        finish.records.push(suppress(Reason::CustomerGone));
        return Ok(finish);
    };
    let basket = match customer.basket {
        Some(id) => env.deps.storage.basket(id).await?,
        None => None,
    };
    let Some(basket) =
        basket.filter(|b| b.owner == BasketOwner::Customer(customer_id) && b.merged_into.is_none())
    else {
        finish.records.push(suppress(Reason::BasketGone));
        return Ok(finish);
    };
    let with_basket = |mut r: MessageRecord| {
        r.subject = basket.id.to_string();
        r.basket_version = Some(basket.version);
        r
    };
    let ordered = env
        .deps
        .storage
        .orders_of(customer_id, 5)
        .await?
        .iter()
        .any(|o| o.created_at >= t.armed_at);
    let reason = if ordered {
        Some(Reason::BasketConverted)
    } else if basket.checkout.is_some() {
        Some(Reason::CheckoutInProgress)
    } else if basket.lines.is_empty() {
        Some(Reason::BasketEmptied)
    } else {
        None
    };
    if let Some(reason) = reason {
        finish.records.push(with_basket(suppress(reason)));
        return Ok(finish);
    }
    let already = history(env, customer_id).await?.iter().any(|r| {
        r.kind == kind
            && r.outcome == Outcome::Sent
            && r.subject == basket.id.to_string()
            && r.basket_version == Some(basket.version)
    });
    if already {
        finish
            .records
            .push(with_basket(suppress(Reason::AlreadySent)));
        return Ok(finish);
    }
    match verdict(env, &customer, now).await? {
        Verdict::Suppress(reason) => finish.records.push(with_basket(suppress(reason))),
        Verdict::Defer(until) => {
            let mut r = with_basket(record(
                kind,
                customer_id,
                t,
                now,
                Outcome::Deferred,
                Reason::QuietHours,
            ));
            r.deferred_to = Some(until);
            finish.records.push(r);
            finish.next = Some(deferred(t, until));
        }
        Verdict::Send => {
            let view = crate::actors::basket::view_of(
                &basket,
                &env.deps,
                crate::pricing::Hints::default(),
            );
            let secret = env.deps.storage.link_secret().await?;
            let expires = now + env.settings.link_valid_for;
            let link = super::links::url(&env.public_url, &secret, customer_id, basket.id, expires);
            let unsubscribe = unsubscribe_url(env, &secret, customer_id);
            let occurrence = t.id.to_string();
            let message = email::abandoned_basket(
                &MarketingRecipient {
                    customer: customer_id,
                    to: &customer.email,
                    occurrence: &occurrence,
                    unsubscribe_url: &unsubscribe,
                },
                &view.priced.lines,
                &link,
                now,
            );
            let message = personalised(env, customer_id, message).await;
            let mut r = with_basket(record(
                kind,
                customer_id,
                t,
                now,
                Outcome::Sent,
                Reason::Allowed,
            ));
            r.email_key = Some(message.key.clone());
            queue(env, vec![message]).await?;
            finish.records.push(r);
        }
    }
    Ok(finish)
}

async fn back_in_stock(
    env: &Env,
    t: &Timer,
    now: OffsetDateTime,
) -> Result<Finish, AutomationError> {
    let kind = MessageKind::BackInStock;
    let mut finish = Finish {
        timer: Some(t.clone()),
        ..Finish::default()
    };
    let Ok(sku) = Sku::parse(&t.subject) else {
        return Ok(finish);
    };
    let subscribers: Vec<StockSubscription> = env.store.subscribers(&sku).await?;
    let catalog = env.deps.catalog.load();
    let product = catalog.product_by_sku(&sku);
    let in_stock = available(&env.deps, &sku) > 0;
    let quiet = env.rules.quiet_until(now);
    let secret = env.deps.storage.link_secret().await?;
    let mut mail = Vec::new();
    for s in subscribers {
        let suppress = |reason: Reason| {
            let mut r = record(kind, s.customer, t, now, Outcome::Suppressed, reason);
            r.subject = sku.to_string();
            r
        };
        // Final outcomes end the subscription; a sell-out before the note keeps it for the next
        // restock, quiet hours keep it for their end.
        let (r, ends) = match (env.settings.back_in_stock, product, in_stock) {
            (false, _, _) => (suppress(Reason::Disabled), true),
            (true, None, _) => (suppress(Reason::ProductGone), true),
            (true, Some(_), false) => (suppress(Reason::OutOfStockAgain), false),
            (true, Some(p), true) => match env.deps.storage.customer(s.customer).await? {
                None => (suppress(Reason::CustomerGone), true),
                Some(customer) => match verdict(env, &customer, now).await? {
                    Verdict::Suppress(reason) => (suppress(reason), true),
                    Verdict::Defer(until) => {
                        let mut r = record(
                            kind,
                            s.customer,
                            t,
                            now,
                            Outcome::Deferred,
                            Reason::QuietHours,
                        );
                        r.subject = sku.to_string();
                        r.deferred_to = Some(until);
                        (r, false)
                    }
                    Verdict::Send => {
                        let unsubscribe = unsubscribe_url(env, &secret, s.customer);
                        let occurrence = t.id.to_string();
                        let product_url =
                            format!("{}/p/{}", env.public_url.trim_end_matches('/'), p.slug);
                        let message = email::back_in_stock(
                            &MarketingRecipient {
                                customer: s.customer,
                                to: &customer.email,
                                occurrence: &occurrence,
                                unsubscribe_url: &unsubscribe,
                            },
                            &sku,
                            &p.name,
                            &product_url,
                            now,
                        );
                        let message = personalised(env, s.customer, message).await;
                        let mut r =
                            record(kind, s.customer, t, now, Outcome::Sent, Reason::Allowed);
                        r.subject = sku.to_string();
                        r.email_key = Some(message.key.clone());
                        mail.push(message);
                        (r, true)
                    }
                },
            },
        };
        if ends {
            finish.ended.push((sku.clone(), s.customer));
        }
        finish.records.push(r);
    }
    if let (Some(until), true) = (quiet, in_stock) {
        finish.next = Some(deferred(t, until));
    }
    queue(env, mail).await?;
    Ok(finish)
}

/// The latest order time of every customer, read newest first in bounded batches.
async fn last_orders(env: &Env) -> Result<HashMap<CustomerId, OffsetDateTime>, AutomationError> {
    let mut last: HashMap<CustomerId, OffsetDateTime> = HashMap::new();
    let mut before = None;
    loop {
        let page = env
            .deps
            .storage
            .orders(before, env.settings.win_back_batch)
            .await?;
        for o in &page {
            if let Some(c) = o.customer {
                let at = last.entry(c).or_insert(o.created_at);
                *at = (*at).max(o.created_at);
            }
        }
        match page.last() {
            Some(o) if page.len() == env.settings.win_back_batch => before = Some(o.id),
            _ => break,
        }
    }
    Ok(last)
}

async fn win_back(env: &Env, t: &Timer, now: OffsetDateTime) -> Result<Finish, AutomationError> {
    let kind = MessageKind::WinBack;
    let mut finish = Finish {
        timer: Some(t.clone()),
        next: Some(timer(
            TimerKind::WinBack,
            "daily",
            WIN_BACK_DEDUPE,
            now + Duration::from_secs(24 * 3600),
            now,
        )),
        ..Finish::default()
    };
    if !env.settings.win_back {
        finish.next = None;
        return Ok(finish);
    }
    if let Some(until) = env.rules.quiet_until(now) {
        finish.next = Some(deferred(t, until));
        return Ok(finish);
    }
    let last = last_orders(env).await?;
    let mut histories = HashMap::new();
    for c in last.keys() {
        histories.insert(*c, history(env, *c).await?);
    }
    let candidates = rules::win_back_candidates(
        &last,
        now,
        env.settings.win_back_after_days,
        env.settings.win_back_every_days,
        |c| histories.get(&c).cloned().unwrap_or_default(),
    );
    let secret = env.deps.storage.link_secret().await?;
    let occurrence = t.id.to_string();
    let mut mail = Vec::new();
    for c in candidates.into_iter().take(env.settings.win_back_batch) {
        let suppress = |reason: Reason| record(kind, c, t, now, Outcome::Suppressed, reason);
        let Some(customer) = env.deps.storage.customer(c).await? else {
            continue;
        };
        // The cap is read from the log as it was before this scan: one mail per customer here.
        match verdict(env, &customer, now).await? {
            Verdict::Suppress(reason) => finish.records.push(suppress(reason)),
            Verdict::Defer(_) => {}
            Verdict::Send => {
                let unsubscribe = unsubscribe_url(env, &secret, c);
                let message = email::win_back(
                    &MarketingRecipient {
                        customer: c,
                        to: &customer.email,
                        occurrence: &occurrence,
                        unsubscribe_url: &unsubscribe,
                    },
                    &customer.name,
                    &format!("{}/", env.public_url.trim_end_matches('/')),
                    now,
                );
                let message = personalised(env, c, message).await;
                let mut r = record(kind, c, t, now, Outcome::Sent, Reason::Allowed);
                r.email_key = Some(message.key.clone());
                mail.push(message);
                finish.records.push(r);
            }
        }
    }
    queue(env, mail).await?;
    Ok(finish)
}
