//! One suite of the storage traits' semantics, generic over the implementation: sled runs it in
//! every `cargo test`; PostgreSQL runs it under the `cluster-tests` feature (each test in a
//! schema of its own, dropped afterwards). The sled implementation's behaviour is the spec.
//!
//! Each case is an `async fn(Arc<S>)`; [`suite!`] makes one `#[tokio::test]` per case for a
//! harness that opens a fresh store, runs the case and cleans up.

use super::oauth::{OAuthChange, OAuthStore};
use super::{
    Change, CustomerAlias, ImportMarks, Result, Sequenced, Storage, StorageError, UnitOfWork,
};
use protocol::automation::PendingReminder;
use protocol::checkout::{Breakdown, ShippingOption};
use protocol::oauth::{OAuthCode, OAuthGrant, OAuthToken, OAuthTokenKind};
use protocol::order::{CheckoutRecord, CheckoutState, HoldRecord, OrderRecord};
use protocol::{
    AnonymousId, Basket, BasketId, BasketOwner, Category, CategoryId, Channel, CheckoutId,
    Currency, CustomerId, CustomerRecord, Event, EventId, EventKind, LocationId, Money, OrderId,
    OutboxMessage, Product, ProductId, SessionRecord, Sku, StockLevel, Subject,
};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What the suite runs against: every storage trait.
pub trait Conformant: Storage + OAuthStore {}

impl Conformant for super::sled::SledStorage {}

impl Conformant for super::postgres::PgStorage {}

/// One `#[tokio::test]` per case, each run by `$harness` on a fresh store.
macro_rules! suite {
    ($harness:path) => {
        $crate::storage::conformance::suite!(@cases $harness;
            baskets_and_their_tokens_round_trip,
            an_email_is_claimed_once,
            concurrent_claims_of_one_email_let_one_win,
            an_alias_is_idempotent_for_its_owner_and_refused_to_others,
            sessions_are_found_by_token_and_customer,
            catalog_and_stock_are_replaced_and_removed,
            a_checkout_makes_one_order,
            concurrent_orders_for_one_checkout_let_one_win,
            orders_are_listed_newest_first_and_by_number,
            holds_and_marks_round_trip,
            a_failed_unit_writes_nothing,
            the_outbox_keeps_order_keys_and_dead_letters,
            events_are_sequenced_once_by_id,
            concurrent_appends_leave_no_gaps,
            erasure_pseudonymises_and_forgets,
            a_pending_reminder_is_cleared_only_as_armed,
            the_link_secret_is_made_once,
            oauth_codes_are_spent_once_and_dead_ones_listed,
        );
    };
    (@cases $harness:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $harness(|s| $crate::storage::conformance::$case(s)).await;
            }
        )*
    };
}
pub(crate) use suite;

/// Runs a case on a fresh sled store in a temporary directory.
pub async fn on_sled<F, Fut>(case: F)
where
    F: FnOnce(Arc<super::sled::SledStorage>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = super::sled::SledStorage::open(dir.path(), 8).expect("sled opens");
    case(storage).await;
}

mod sled_suite {
    super::suite!(super::on_sled);
}

// ---- fixtures ----------------------------------------------------------------------------

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("a valid time")
}

/// A ULID whose time part is `ms`: ids made in a known order.
fn ulid_at(ms: u64) -> ulid::Ulid {
    ulid::Ulid::from_parts(1_700_000_000_000 + ms, rand_bits())
}

fn rand_bits() -> u128 {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("randomness");
    u128::from_be_bytes(b)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn basket(owner: BasketOwner) -> Basket {
    Basket::new(BasketId::new(), owner, Currency::EUR, at(0))
}

fn customer(email: &str) -> CustomerRecord {
    serde_json::from_value(json!({
        "id": CustomerId::new(),
        "email": email,
        "name": "Ann Example",
        "password_hash": "x",
        "created_at": "2026-01-05T10:00:00Z",
    }))
    .expect("a customer")
}

fn breakdown() -> Breakdown {
    Breakdown {
        currency: Currency::EUR,
        country: "DE".into(),
        prices_include_tax: true,
        lines: Vec::new(),
        item_count: 0,
        subtotal: eur(0),
        discount: eur(0),
        shipping: ShippingOption {
            id: "standard".into(),
            name: "Standard".into(),
            price: eur(0),
            delivery: "2–3 working days".into(),
        },
        taxes: Vec::new(),
        tax_total: eur(0),
        total: eur(0),
        weight_grams: 0,
    }
}

fn address() -> serde_json::Value {
    json!({ "name": "Ann", "line1": "Hauptstraße 1", "city": "Berlin", "postcode": "10115",
            "country": "DE" })
}

fn checkout(state: CheckoutState, id: CheckoutId) -> CheckoutRecord {
    serde_json::from_value(json!({
        "id": id,
        "basket": BasketId::new(),
        "basket_version": 1,
        "owner": BasketOwner::Anonymous,
        "channel": Channel::Web,
        "subject": Subject::Anonymous(AnonymousId::new()),
        "email": "ann@x.test",
        "address": address(),
        "breakdown": breakdown(),
        "state": state,
        "attempt": 1,
        "created_at": "2026-01-05T10:00:00Z",
        "hold_until": "2026-01-05T10:15:00Z",
    }))
    .expect("a checkout")
}

fn order(
    id: OrderId,
    number: &str,
    checkout: CheckoutId,
    customer: Option<CustomerId>,
) -> OrderRecord {
    serde_json::from_value(json!({
        "id": id,
        "number": number,
        "checkout": checkout,
        "basket": BasketId::new(),
        "customer": customer,
        "subject": Subject::Anonymous(AnonymousId::new()),
        "email": "ann@x.test",
        "channel": Channel::Web,
        "address": address(),
        "breakdown": breakdown(),
        "payment": { "provider": "sim", "session_id": "cs_1", "amount": eur(0) },
        "progress": "paid",
        "lookup_key": "k",
        "created_at": "2026-01-05T10:00:00Z",
        "stock_committed": true,
    }))
    .expect("an order")
}

fn event(ms: u64, subject: Subject) -> Event {
    let mut e = Event::new(at(0), subject, Channel::Web, EventKind::ProductView).with("n", ms);
    e.id = EventId(ulid_at(ms));
    e
}

fn message(destination: &str, ms: u64, key: &str) -> OutboxMessage {
    let mut m = OutboxMessage::new(
        destination,
        "order.placed",
        key.to_string(),
        "{}".into(),
        at(ms as i64),
    );
    m.id = ulid_at(ms);
    m
}

fn conflict(outcome: Result<()>) -> bool {
    matches!(outcome, Err(StorageError::Conflict(_)))
}

/// Waits (with a deadline) until `appended()` reaches `n`.
async fn appended_reaches<S: Storage + ?Sized>(s: &S, n: u64) {
    let mut rx = s.appended();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= n))
        .await
        .expect("appended() reaches the last append in time")
        .expect("the watch is open");
}

// ---- cases -------------------------------------------------------------------------------

pub async fn baskets_and_their_tokens_round_trip<S: Conformant>(s: Arc<S>) {
    let b = basket(BasketOwner::Anonymous);
    let hash = [7u8; 32];
    s.commit(
        UnitOfWork::new()
            .with(Change::PutBasket(b.clone()))
            .with(Change::PutBasketToken {
                token_hash: hash,
                basket: b.id,
            }),
    )
    .await
    .expect("committed");
    assert_eq!(s.basket(b.id).await.expect("read"), Some(b.clone()));
    assert_eq!(s.basket_for_token(hash).await.expect("read"), Some(b.id));
    assert_eq!(s.basket_for_token([8u8; 32]).await.expect("read"), None);
    assert_eq!(s.basket(BasketId::new()).await.expect("read"), None);
    let mut changed = b.clone();
    changed.version = 2;
    s.commit(UnitOfWork::new().with(Change::PutBasket(changed.clone())))
        .await
        .expect("committed");
    assert_eq!(s.basket(b.id).await.expect("read"), Some(changed));
}

pub async fn an_email_is_claimed_once<S: Conformant>(s: Arc<S>) {
    let ann = customer("ann@x.test");
    let bob = customer("ann@x.test");
    let claim = |c: &CustomerRecord| {
        UnitOfWork::new()
            .with(Change::ClaimEmail {
                email: c.email.clone(),
                customer: c.id,
            })
            .with(Change::PutCustomer(c.clone()))
    };
    s.commit(claim(&ann)).await.expect("the first claim");
    assert!(
        conflict(s.commit(claim(&bob)).await),
        "a second claim conflicts"
    );
    assert_eq!(
        s.customer(bob.id).await.expect("read"),
        None,
        "all or nothing"
    );
    assert_eq!(
        s.customer_by_email("ann@x.test").await.expect("read"),
        Some(ann.clone())
    );
    // Claiming again, even for the same customer, conflicts (the sled semantics).
    assert!(conflict(s.commit(claim(&ann)).await));
    s.commit(UnitOfWork::new().with(Change::ReleaseEmail("ann@x.test".into())))
        .await
        .expect("released");
    assert_eq!(s.customer_by_email("ann@x.test").await.expect("read"), None);
    s.commit(claim(&bob))
        .await
        .expect("claimed after the release");
    assert_eq!(
        s.customer_by_email("ann@x.test").await.expect("read"),
        Some(bob)
    );
}

pub async fn concurrent_claims_of_one_email_let_one_win<S: Conformant>(s: Arc<S>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let c = customer("race@x.test");
            let unit = UnitOfWork::new()
                .with(Change::ClaimEmail {
                    email: c.email.clone(),
                    customer: c.id,
                })
                .with(Change::PutCustomer(c.clone()));
            (c.id, s.commit(unit).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, outcome) = t.await.expect("the task ran");
        match outcome {
            Ok(()) => winners.push(id),
            Err(StorageError::Conflict(_)) => {
                assert_eq!(s.customer(id).await.expect("read"), None, "a loser wrote");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let found = s.customer_by_email("race@x.test").await.expect("read");
    assert_eq!(found.map(|c| c.id), Some(winners[0]));
}

pub async fn an_alias_is_idempotent_for_its_owner_and_refused_to_others<S: Conformant>(s: Arc<S>) {
    let ann = customer("ann@x.test");
    let bob = customer("bob@x.test");
    let phone = CustomerAlias::Phone("+4915112345678".into());
    let claim = |c: &CustomerRecord| {
        UnitOfWork::new()
            .with(Change::PutCustomer(c.clone()))
            .with(Change::ClaimAlias {
                alias: phone.clone(),
                customer: c.id,
            })
    };
    s.commit(claim(&ann)).await.expect("claimed");
    s.commit(claim(&ann))
        .await
        .expect("claimed again by its owner");
    assert!(conflict(s.commit(claim(&bob)).await));
    assert_eq!(s.customer(bob.id).await.expect("read"), None);
    assert_eq!(
        s.customer_by_alias(&phone)
            .await
            .expect("read")
            .map(|c| c.id),
        Some(ann.id)
    );
    let loyalty = CustomerAlias::Loyalty("+4915112345678".into());
    assert_eq!(
        s.customer_by_alias(&loyalty).await.expect("read"),
        None,
        "kinds differ"
    );
    s.commit(UnitOfWork::new().with(Change::ReleaseAlias(phone.clone())))
        .await
        .expect("released");
    s.commit(claim(&bob))
        .await
        .expect("claimed after the release");
    assert_eq!(
        s.customer_by_alias(&phone)
            .await
            .expect("read")
            .map(|c| c.id),
        Some(bob.id)
    );
}

pub async fn sessions_are_found_by_token_and_customer<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let session = SessionRecord {
        customer: ann,
        created_at: at(0),
        expires_at: at(3600),
    };
    let other = SessionRecord {
        customer: CustomerId::new(),
        ..session.clone()
    };
    s.commit(
        UnitOfWork::new()
            .with(Change::PutSession {
                token_hash: [1; 32],
                session: session.clone(),
            })
            .with(Change::PutSession {
                token_hash: [2; 32],
                session: session.clone(),
            })
            .with(Change::PutSession {
                token_hash: [3; 32],
                session: other,
            }),
    )
    .await
    .expect("committed");
    assert_eq!(s.session([1; 32]).await.expect("read"), Some(session));
    let mut mine = s.sessions_of(ann).await.expect("read");
    mine.sort();
    assert_eq!(mine, vec![[1; 32], [2; 32]]);
    s.commit(UnitOfWork::new().with(Change::DeleteSession {
        token_hash: [1; 32],
    }))
    .await
    .expect("deleted");
    assert_eq!(s.session([1; 32]).await.expect("read"), None);
    assert_eq!(s.sessions_of(ann).await.expect("read"), vec![[2; 32]]);
}

pub async fn catalog_and_stock_are_replaced_and_removed<S: Conformant>(s: Arc<S>) {
    let category = Category {
        id: CategoryId("tees".into()),
        name: "Tees".into(),
        description: String::new(),
        position: 1,
    };
    let product = |slug: &str| -> Product {
        serde_json::from_value(json!({
            "id": ProductId::new(), "slug": slug, "name": slug, "brand": "B",
            "description": "", "category": "tees", "tax_rate_bp": 1900, "image": "",
            "variants": [],
        }))
        .expect("a product")
    };
    let (a, b) = (product("a"), product("b"));
    let level = |sku: &str, location: &str, on_hand: i64| StockLevel {
        sku: Sku::parse(sku).expect("a sku"),
        location: LocationId(location.into()),
        on_hand,
        held: 0,
    };
    s.commit(
        UnitOfWork::new()
            .with(Change::PutCategory(category.clone()))
            .with(Change::PutProduct(a.clone()))
            .with(Change::PutProduct(b.clone()))
            .with(Change::PutStock(level("TEE-1", "web", 5)))
            .with(Change::PutStock(level("TEE-1", "store-1", 2))),
    )
    .await
    .expect("committed");
    s.commit(
        UnitOfWork::new()
            .with(Change::DeleteProduct(a.id))
            .with(Change::PutStock(level("TEE-1", "web", 4))),
    )
    .await
    .expect("committed");
    let (categories, products) = s.catalog().await.expect("read");
    assert_eq!(categories, vec![category]);
    assert_eq!(products, vec![b]);
    let mut levels = s.stock_levels().await.expect("read");
    levels.sort_by(|x, y| x.location.0.cmp(&y.location.0));
    assert_eq!(
        levels,
        vec![level("TEE-1", "store-1", 2), level("TEE-1", "web", 4)]
    );
}

pub async fn a_checkout_makes_one_order<S: Conformant>(s: Arc<S>) {
    let c = checkout(CheckoutState::PaymentPending, CheckoutId::new());
    s.commit(UnitOfWork::new().with(Change::PutCheckout(c.clone())))
        .await
        .expect("committed");
    assert_eq!(s.checkout(c.id).await.expect("read"), Some(c.clone()));
    assert_eq!(s.open_checkouts(10).await.expect("read"), vec![c.clone()]);
    let first = order(OrderId::new(), "W-000001", c.id, None);
    let paid = CheckoutRecord {
        state: CheckoutState::Paid,
        ..c.clone()
    };
    s.commit(
        UnitOfWork::new()
            .with(Change::CreateOrder(first.clone()))
            .with(Change::PutCheckout(paid.clone())),
    )
    .await
    .expect("the first order");
    assert!(s.open_checkouts(10).await.expect("read").is_empty());
    let b = basket(BasketOwner::Anonymous);
    let second = order(OrderId::new(), "W-000002", c.id, None);
    let outcome = s
        .commit(
            UnitOfWork::new()
                .with(Change::PutBasket(b.clone()))
                .with(Change::CreateOrder(second.clone())),
        )
        .await;
    assert!(conflict(outcome), "a checkout has one order");
    assert_eq!(s.basket(b.id).await.expect("read"), None, "all or nothing");
    assert_eq!(s.order(second.id).await.expect("read"), None);
    assert_eq!(
        s.order_for_checkout(c.id).await.expect("read"),
        Some(first.id)
    );
    assert_eq!(s.order(first.id).await.expect("read"), Some(first));
}

pub async fn concurrent_orders_for_one_checkout_let_one_win<S: Conformant>(s: Arc<S>) {
    let checkout = CheckoutId::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let o = order(OrderId::new(), &format!("W-{i:06}"), checkout, None);
            (
                o.id,
                s.commit(UnitOfWork::new().with(Change::CreateOrder(o)))
                    .await,
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, outcome) = t.await.expect("the task ran");
        match outcome {
            Ok(()) => winners.push(id),
            Err(StorageError::Conflict(_)) => {
                assert_eq!(s.order(id).await.expect("read"), None, "a loser wrote")
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "one payment, one order");
    assert_eq!(
        s.order_for_checkout(checkout).await.expect("read"),
        Some(winners[0])
    );
}

pub async fn orders_are_listed_newest_first_and_by_number<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let mut all = Vec::new();
    for i in 1..=5u64 {
        let customer = (i % 2 == 1).then_some(ann);
        let o = order(
            OrderId(ulid_at(i)),
            &format!("W-{i:06}"),
            CheckoutId::new(),
            customer,
        );
        s.commit(UnitOfWork::new().with(Change::CreateOrder(o.clone())))
            .await
            .expect("committed");
        all.push(o);
    }
    let ids = |v: Vec<OrderRecord>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.orders(None, 10).await.expect("read")),
        all.iter().rev().map(|o| o.id).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(s.orders(Some(all[3].id), 2).await.expect("read")),
        vec![all[2].id, all[1].id]
    );
    assert_eq!(
        ids(s.orders_of(ann, 10).await.expect("read")),
        vec![all[4].id, all[2].id, all[0].id]
    );
    assert_eq!(
        ids(s.orders_of(ann, 1).await.expect("read")),
        vec![all[4].id]
    );
    assert_eq!(
        s.order_by_number("W-000003")
            .await
            .expect("read")
            .map(|o| o.id),
        Some(all[2].id)
    );
    assert_eq!(s.order_by_number("W-000009").await.expect("read"), None);
    assert_eq!(s.last_order_sequence("W").await.expect("read"), 5);
    assert_eq!(s.last_order_sequence("X").await.expect("read"), 0);
    // An order that owes work is listed until the work is done.
    assert!(s.orders_owing_work(10).await.expect("read").is_empty());
    let mut owing = all[1].clone();
    owing.restock_due = true;
    s.commit(UnitOfWork::new().with(Change::PutOrder(owing.clone())))
        .await
        .expect("committed");
    assert_eq!(
        ids(s.orders_owing_work(10).await.expect("read")),
        vec![owing.id]
    );
    owing.restock_due = false;
    s.commit(UnitOfWork::new().with(Change::PutOrder(owing.clone())))
        .await
        .expect("committed");
    assert!(s.orders_owing_work(10).await.expect("read").is_empty());
    assert_eq!(s.order(owing.id).await.expect("read"), Some(owing));
}

pub async fn holds_and_marks_round_trip<S: Conformant>(s: Arc<S>) {
    let checkout = CheckoutId::new();
    let hold = |sku: &str| HoldRecord {
        checkout,
        sku: Sku::parse(sku).expect("a sku"),
        location: LocationId("web".into()),
        quantity: 2,
        until: at(900),
    };
    let marks = ImportMarks {
        id: ulid::Ulid::new(),
        digests: vec![9; 32],
    };
    s.commit(
        UnitOfWork::new()
            .with(Change::PutHold(hold("TEE-1")))
            .with(Change::PutHold(hold("TEE-2")))
            .with(Change::MarkWebhookEvent("evt_1".into()))
            .with(Change::PutImportMarks(marks.clone())),
    )
    .await
    .expect("committed");
    s.commit(UnitOfWork::new().with(Change::DeleteHold {
        checkout,
        sku: Sku::parse("TEE-1").expect("a sku"),
        location: LocationId("web".into()),
    }))
    .await
    .expect("committed");
    assert_eq!(s.holds().await.expect("read"), vec![hold("TEE-2")]);
    assert!(s.webhook_seen("evt_1").await.expect("read"));
    assert!(!s.webhook_seen("evt_2").await.expect("read"));
    assert_eq!(s.import_marks().await.expect("read"), vec![marks]);
}

pub async fn a_failed_unit_writes_nothing<S: Conformant>(s: Arc<S>) {
    let ann = customer("ann@x.test");
    s.commit(UnitOfWork::new().with(Change::ClaimEmail {
        email: ann.email.clone(),
        customer: ann.id,
    }))
    .await
    .expect("claimed");
    let b = basket(BasketOwner::Anonymous);
    let e = event(1, Subject::Anonymous(AnonymousId::new()));
    let unit = UnitOfWork::new()
        .with(Change::PutBasket(b.clone()))
        .with(Change::MarkWebhookEvent("evt_x".into()))
        .with(Change::ClaimEmail {
            email: ann.email.clone(),
            customer: CustomerId::new(),
        })
        .with_message(message("oms", 1, "once"))
        .with_event(e.clone());
    assert!(conflict(s.commit(unit).await));
    assert_eq!(s.basket(b.id).await.expect("read"), None);
    assert!(!s.webhook_seen("evt_x").await.expect("read"));
    assert!(s.pending("oms", 10).await.expect("read").is_empty());
    assert!(s.read_sequenced(0, 10).await.expect("read").is_empty());
    // The key of the message in the failed unit was not used up.
    s.commit(UnitOfWork::new().with_message(message("oms", 2, "once")))
        .await
        .expect("committed");
    assert_eq!(s.pending("oms", 10).await.expect("read").len(), 1);
}

pub async fn the_outbox_keeps_order_keys_and_dead_letters<S: Conformant>(s: Arc<S>) {
    let (m1, m2, m3) = (
        message("oms", 1, ""),
        message("oms", 2, ""),
        message("oms", 3, ""),
    );
    let mail = message("email", 4, "email:confirmation:1");
    // Queued in another order than their ids: read back in id (queue time) order.
    s.commit(
        UnitOfWork::new()
            .with_message(m3.clone())
            .with_message(m1.clone())
            .with_message(mail.clone()),
    )
    .await
    .expect("committed");
    // A message whose key was queued before is left out; the rest of the unit stands.
    let again = message("email", 5, "email:confirmation:1");
    s.commit(
        UnitOfWork::new()
            .with_message(m2.clone())
            .with_message(again.clone()),
    )
    .await
    .expect("committed");
    let ids = |v: Vec<OutboxMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.pending("oms", 10).await.expect("read")),
        vec![m1.id, m2.id, m3.id]
    );
    assert_eq!(
        ids(s.pending("oms", 2).await.expect("read")),
        vec![m1.id, m2.id]
    );
    assert_eq!(
        ids(s.pending("email", 10).await.expect("read")),
        vec![mail.id]
    );
    let backlog = s.backlog().await.expect("read");
    assert_eq!(backlog["oms"].pending, 3);
    assert_eq!(backlog["oms"].dead, 0);
    assert_eq!(backlog["oms"].oldest, Some(m1.created_at));
    assert_eq!(backlog["email"].pending, 1);

    let mut retried = m1.clone();
    retried.attempts = 3;
    s.commit(
        UnitOfWork::new()
            .with(Change::AckOutbox {
                destination: "oms".into(),
                id: m2.id,
            })
            .with(Change::PutOutbox(retried.clone()))
            .with(Change::DeadLetter(m3.clone())),
    )
    .await
    .expect("committed");
    assert_eq!(
        s.pending("oms", 10).await.expect("read"),
        vec![retried.clone()]
    );
    assert_eq!(
        s.dead_letters("oms", 10).await.expect("read"),
        vec![m3.clone()]
    );
    assert_eq!(
        s.dead_letter("oms", m3.id).await.expect("read"),
        Some(m3.clone())
    );
    assert_eq!(s.dead_letter("email", m3.id).await.expect("read"), None);
    let backlog = s.backlog().await.expect("read");
    assert_eq!((backlog["oms"].pending, backlog["oms"].dead), (1, 1));

    s.commit(UnitOfWork::new().with(Change::RetryDeadLetter(m3.clone())))
        .await
        .expect("committed");
    assert_eq!(
        ids(s.pending("oms", 10).await.expect("read")),
        vec![m1.id, m3.id]
    );
    assert!(s.dead_letters("oms", 10).await.expect("read").is_empty());
    s.commit(
        UnitOfWork::new()
            .with(Change::DeadLetter(m3.clone()))
            .with(Change::AckOutbox {
                destination: "oms".into(),
                id: m1.id,
            })
            .with(Change::AckOutbox {
                destination: "email".into(),
                id: mail.id,
            }),
    )
    .await
    .expect("committed");
    s.commit(UnitOfWork::new().with(Change::DiscardDeadLetter {
        destination: "oms".into(),
        id: m3.id,
    }))
    .await
    .expect("committed");
    assert!(s.dead_letters("oms", 10).await.expect("read").is_empty());
    let backlog = s.backlog().await.expect("read");
    assert!(
        backlog.values().all(|b| b.pending == 0 && b.dead == 0),
        "{backlog:?}"
    );
}

pub async fn events_are_sequenced_once_by_id<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let anon = || Subject::Anonymous(AnonymousId::new());
    let first: Vec<Event> = (1..=4)
        .map(|i| {
            event(
                i,
                if i % 2 == 0 {
                    Subject::Customer(ann)
                } else {
                    anon()
                },
            )
        })
        .collect();
    s.append(first.clone().into()).await.expect("appended");
    // A repeat of two events with a new one: the repeats keep their first sequence.
    let late = event(0, Subject::Customer(ann));
    let again: Arc<[Event]> = vec![first[1].clone(), late.clone(), first[3].clone()].into();
    s.append(again).await.expect("appended");
    // Events committed with a unit of work are sequenced too.
    let paid = event(5, Subject::Customer(ann));
    s.commit(UnitOfWork::new().with_event(paid.clone()))
        .await
        .expect("committed");
    appended_reaches(&*s, 6).await;
    assert_eq!(*s.appended().borrow(), 6);
    let read = s.read_sequenced(0, 100).await.expect("read");
    let want: Vec<(u64, EventId)> = vec![
        (1, first[0].id),
        (2, first[1].id),
        (3, first[2].id),
        (4, first[3].id),
        (5, late.id),
        (6, paid.id),
    ];
    assert_eq!(
        read.iter().map(|x| (x.seq, x.event.id)).collect::<Vec<_>>(),
        want
    );
    assert_eq!(read[0].event, first[0]);
    let page = s.read_sequenced(2, 2).await.expect("read");
    assert_eq!(page.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(s.read_sequenced(6, 10).await.expect("read").is_empty());
    // Newest first (by id) for a customer's timeline.
    let timeline: Vec<EventId> = s
        .timeline(ann, 3)
        .await
        .expect("read")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(timeline, vec![paid.id, first[3].id, first[1].id]);
}

pub async fn concurrent_appends_leave_no_gaps<S: Conformant>(s: Arc<S>) {
    const TASKS: u64 = 6;
    const ROUNDS: u64 = 15;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let n = t * 1_000 + r * 10;
                let batch = vec![
                    event(n, Subject::Anonymous(AnonymousId::new())),
                    event(n + 1, Subject::Anonymous(AnonymousId::new())),
                ];
                let outcome = if r % 2 == 0 {
                    s.append(batch.into()).await
                } else {
                    let mut unit = UnitOfWork::new();
                    unit.events = batch;
                    s.commit(unit).await
                };
                outcome.expect("appended");
            }
        }));
    }
    // A reader tails the log meanwhile: it never sees a gap.
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let total = TASKS * ROUNDS * 2;
            let mut last = 0;
            let mut rx = s.appended();
            while last < total {
                let read = s.read_sequenced(last, 1_000).await.expect("read");
                for x in &read {
                    assert_eq!(x.seq, last + 1, "no gap below what a reader sees");
                    last = x.seq;
                }
                if read.is_empty() {
                    tokio::time::timeout(Duration::from_secs(10), rx.changed())
                        .await
                        .expect("an append is announced in time")
                        .expect("the watch is open");
                }
            }
            last
        })
    };
    for t in tasks {
        t.await.expect("the task ran");
    }
    let total = TASKS * ROUNDS * 2;
    assert_eq!(reader.await.expect("the reader ran"), total);
    appended_reaches(&*s, total).await;
    let read = s.read_sequenced(0, 10_000).await.expect("read");
    assert_eq!(read.len() as u64, total);
    let ids: std::collections::HashSet<EventId> = read.iter().map(|x| x.event.id).collect();
    assert_eq!(ids.len() as u64, total, "each event once");
}

pub async fn erasure_pseudonymises_and_forgets<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let before = event(1, Subject::Customer(ann)).with("email", "ann@x.test");
    s.append(vec![before.clone()].into())
        .await
        .expect("appended");
    let pseudonym = AnonymousId::new();
    s.commit(UnitOfWork::new().with(Change::MarkErased {
        customer: ann,
        pseudonym,
    }))
    .await
    .expect("marked");
    // A late event about the erased customer is stored pseudonymised.
    let late = event(2, Subject::Customer(ann)).with("email", "ann@x.test");
    s.append(vec![late.clone()].into()).await.expect("appended");
    let read = s.read_sequenced(0, 10).await.expect("read");
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].event.id, late.id);
    assert_eq!(
        read[1].event,
        protocol::privacy::pseudonymised(late.clone(), pseudonym)
    );
    assert_eq!(read[0].event, before, "earlier events wait for the rewrite");
    // The rewrite replaces in place (same id, same sequence) and forgets the timeline.
    let rewritten = protocol::privacy::pseudonymised(before.clone(), pseudonym);
    let unknown = event(9, Subject::Customer(ann));
    // An event not in the log, and one given at another event's sequence, change nothing.
    let misplaced = protocol::privacy::pseudonymised(late.clone(), pseudonym).with("x", "y");
    s.rewrite(
        vec![
            Sequenced {
                seq: 1,
                event: rewritten.clone(),
            },
            Sequenced {
                seq: 3,
                event: unknown.clone(),
            },
            Sequenced {
                seq: 1,
                event: misplaced,
            },
        ],
        Some(ann),
    )
    .await
    .expect("rewritten");
    let read = s.read_sequenced(0, 10).await.expect("read");
    assert_eq!(read.len(), 2, "an event not in the log is not added");
    assert_eq!((read[0].seq, &read[0].event), (1, &rewritten));
    assert_eq!(
        read[1].event,
        protocol::privacy::pseudonymised(late.clone(), pseudonym)
    );
    assert!(s.timeline(ann, 10).await.expect("read").is_empty());
}

pub async fn a_pending_reminder_is_cleared_only_as_armed<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let armed = PendingReminder {
        customer: ann,
        basket: BasketId::new(),
        at: at(0),
    };
    let newer = PendingReminder {
        at: at(60),
        ..armed.clone()
    };
    let other = PendingReminder {
        customer: CustomerId::new(),
        ..armed.clone()
    };
    s.commit(
        UnitOfWork::new()
            .with(Change::PutPendingReminder(armed.clone()))
            .with(Change::PutPendingReminder(other.clone())),
    )
    .await
    .expect("committed");
    s.commit(UnitOfWork::new().with(Change::PutPendingReminder(newer.clone())))
        .await
        .expect("replaced");
    s.clear_pending_reminder(&armed).await.expect("cleared");
    let mut pending = s.pending_reminders().await.expect("read");
    pending.sort_by_key(|r| r.at);
    assert_eq!(
        pending,
        vec![other.clone(), newer.clone()],
        "the newer one stays"
    );
    s.clear_pending_reminder(&newer).await.expect("cleared");
    assert_eq!(s.pending_reminders().await.expect("read"), vec![other]);
}

pub async fn the_link_secret_is_made_once<S: Conformant>(s: Arc<S>) {
    let secret = s.link_secret().await.expect("read");
    assert_ne!(secret, [0; 32]);
    assert_eq!(s.link_secret().await.expect("read"), secret);
}

pub async fn oauth_codes_are_spent_once_and_dead_ones_listed<S: Conformant>(s: Arc<S>) {
    let ann = CustomerId::new();
    let grant = |id: ulid::Ulid, revoked: bool| OAuthGrant {
        id,
        client_id: "voice".into(),
        customer: ann,
        scope: vec!["basket".into()],
        created_at: at(0),
        revoked_at: revoked.then(|| at(10)),
    };
    let (g1, g2) = (grant(ulid_at(1), false), grant(ulid_at(2), false));
    let code = OAuthCode {
        grant: g1.id,
        client_id: "voice".into(),
        customer: ann,
        redirect_uri: "https://x.test/cb".into(),
        scope: vec!["basket".into()],
        code_challenge: None,
        expires_at: at(60),
    };
    let token = |grant: ulid::Ulid, expires: i64| OAuthToken {
        kind: OAuthTokenKind::Access,
        grant,
        client_id: "voice".into(),
        customer: ann,
        scope: vec!["basket".into()],
        issued_at: at(0),
        expires_at: at(expires),
    };
    let oauth = |c: OAuthChange| Change::OAuth(c);
    s.commit(
        UnitOfWork::new()
            .with(oauth(OAuthChange::PutGrant(g1.clone())))
            .with(oauth(OAuthChange::PutGrant(g2.clone())))
            .with(oauth(OAuthChange::PutCode {
                code_hash: [1; 32],
                code: code.clone(),
            }))
            .with(oauth(OAuthChange::PutToken {
                token_hash: [2; 32],
                token: token(g1.id, 3600),
            }))
            .with(oauth(OAuthChange::PutToken {
                token_hash: [3; 32],
                token: token(g2.id, 3600),
            }))
            .with(oauth(OAuthChange::PutToken {
                token_hash: [4; 32],
                token: token(g1.id, 30),
            })),
    )
    .await
    .expect("committed");
    assert_eq!(s.oauth_code([1; 32]).await.expect("read"), Some(code));
    assert_eq!(
        s.oauth_token([2; 32]).await.expect("read"),
        Some(token(g1.id, 3600))
    );
    assert_eq!(s.oauth_grant(g1.id).await.expect("read"), Some(g1.clone()));
    assert_eq!(
        s.oauth_grants_of(ann).await.expect("read"),
        vec![g1.clone(), g2.clone()]
    );
    // Spending a code stores the grant's tokens all or nothing, once.
    let spend = || {
        UnitOfWork::new()
            .with(oauth(OAuthChange::Spend {
                hash: [1; 32],
                grant: g1.id,
            }))
            .with(oauth(OAuthChange::DeleteCode { code_hash: [1; 32] }))
    };
    s.commit(spend()).await.expect("spent");
    assert!(conflict(s.commit(spend()).await), "spent once");
    assert_eq!(s.oauth_spent([1; 32]).await.expect("read"), Some(g1.id));
    assert_eq!(s.oauth_spent([9; 32]).await.expect("read"), None);
    assert_eq!(s.oauth_code([1; 32]).await.expect("read"), None);
    // Revoking g2 drops it from the customer's linked apps; its tokens become dead.
    s.commit(UnitOfWork::new().with(oauth(OAuthChange::PutGrant(grant(g2.id, true)))))
        .await
        .expect("revoked");
    assert_eq!(
        s.oauth_grants_of(ann).await.expect("read"),
        vec![g1.clone()]
    );
    let mut dead: Vec<[u8; 32]> = s
        .oauth_dead(at(120), 10)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|c| match c {
            OAuthChange::DeleteToken { token_hash } => Some(token_hash),
            _ => None,
        })
        .collect();
    dead.sort();
    assert_eq!(dead, vec![[3; 32], [4; 32]], "revoked, and expired");
    s.commit(UnitOfWork::new().with(oauth(OAuthChange::DeleteToken {
        token_hash: [4; 32],
    })))
    .await
    .expect("deleted");
    assert_eq!(s.oauth_token([4; 32]).await.expect("read"), None);
}
