//! A shopper's own data: the download (`GET /api/v1/customers/me/data`) and erasure
//! (`POST /api/v1/customers/me/erasure`, with the password). The rules are in
//! `docs/privacy.md`; in short:
//!
//! - the customer record keeps its id, basket and creation time; email becomes a pseudonymous
//!   placeholder, name, phone and loyalty number are removed, sign-in is disabled, marketing
//!   is off, board consent and segments are dropped and every session is revoked;
//! - the profile moves to a stable pseudonym (an HMAC of the customer id under the
//!   deployment's link secret) without search texts, basket or joined anonymous ids;
//! - the customer's events (and those of anonymous ids joined to them) keep their id, time,
//!   channel, kind and sequence, take the pseudonym as subject and lose the payload keys in
//!   [`PII_KEYS`];
//! - orders stay for accounting (amounts, lines, taxes, country) with the address replaced by
//!   a marker and the email by the placeholder;
//! - the aggregates are untouched: they hold counts and sums, no person.

use super::Experience;
use crate::app::HubHandle;
use crate::storage::{
    Change, CustomerStore, EventLog, OrderStore, Result, StorageError, UnitOfWork,
};
use hmac::{Hmac, Mac};
use protocol::{AnonymousId, CustomerId, Event, Subject};
use sha2::Sha256;
use std::collections::HashSet;

/// Payload keys dropped from a pseudonymised event: what could name or reach the person, or
/// link the pseudonym back to an id they used.
pub const PII_KEYS: [&str; 8] = [
    "email",
    "name",
    "phone",
    "address",
    "query",
    "anonymous_id",
    "loyalty_number",
    "code",
];
/// The marker an erased order's address carries.
pub const ERASED: &str = "[erased]";
/// Events read per page while pseudonymising.
const PAGE: usize = 10_000;

/// The stable pseudonym of an erased customer.
pub async fn pseudonym(handle: &HubHandle, customer: CustomerId) -> Result<AnonymousId> {
    let secret = handle.storage.link_secret().await?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret)
        .map_err(|e| StorageError::Io(format!("pseudonym key: {e}")))?;
    mac.update(b"erasure:");
    mac.update(&customer.to_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(AnonymousId(ulid::Ulid(u128::from_be_bytes(id))))
}

/// The event as erasure leaves it.
pub fn pseudonymised(mut e: Event, pseudonym: AnonymousId) -> Event {
    e.subject = Subject::Anonymous(pseudonym);
    for k in PII_KEYS {
        e.payload.remove(k);
    }
    e
}

/// Erases the customer's personal data (see the module docs). Idempotent: running it again
/// finds nothing more to change.
pub async fn erase(handle: &HubHandle, customer: CustomerId) -> Result<AnonymousId> {
    let experience: &Experience = &handle.experience;
    let pseudonym = pseudonym(handle, customer).await?;
    // Every event so far is in the profile before it moves.
    experience.caught_up().await?;
    let linked: HashSet<AnonymousId> = experience
        .profile(Subject::Customer(customer))
        .await?
        .map(|p| p.anonymous_ids.into_iter().collect())
        .unwrap_or_default();
    experience
        .analyst
        .send(super::analyst::Erase {
            customer,
            pseudonym,
        })
        .await
        .map_err(|_| StorageError::Closed)??;
    // No linked app (the voice skill) acts for them any more.
    handle.oauth.revoke_all_of(customer).await?;
    let sessions = handle.storage.sessions_of(customer).await?;
    handle
        .backend
        .erase_record(
            customer,
            format!("erased-{pseudonym}@erased.invalid"),
            sessions,
        )
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?;
    handle
        .boards
        .set_audience(customer, &protocol::board::BoardAudience::default())
        .await?;
    erase_orders(handle, customer, pseudonym).await?;
    pseudonymise_events(handle, customer, &linked, pseudonym).await?;
    Ok(pseudonym)
}

async fn erase_orders(
    handle: &HubHandle,
    customer: CustomerId,
    pseudonym: AnonymousId,
) -> Result<()> {
    let mut unit = UnitOfWork::new();
    for mut order in handle.storage.orders_of(customer, usize::MAX).await? {
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
        order.email = format!("erased-{pseudonym}@erased.invalid");
        unit = unit.with(Change::PutOrder(order));
    }
    if unit.changes.is_empty() {
        return Ok(());
    }
    crate::storage::Committer::commit(handle.storage.as_ref(), unit).await
}

/// Rewrites the customer's events, and those of anonymous ids joined to them, in place. A full
/// pass over the log (anonymous events have no index); erasure is rare.
async fn pseudonymise_events(
    handle: &HubHandle,
    customer: CustomerId,
    linked: &HashSet<AnonymousId>,
    pseudonym: AnonymousId,
) -> Result<()> {
    let theirs = |s: &Subject| match s {
        Subject::Customer(c) => *c == customer,
        Subject::Anonymous(a) => linked.contains(a),
    };
    let mut cursor = 0;
    loop {
        let page = handle.storage.read_sequenced(cursor, PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        let rewritten: Vec<Event> = page
            .into_iter()
            .filter(|s| theirs(&s.event.subject))
            .map(|s| pseudonymised(s.event, pseudonym))
            .collect();
        if !rewritten.is_empty() {
            handle.storage.rewrite(rewritten, None).await?;
        }
    }
    handle.storage.rewrite(Vec::new(), Some(customer)).await
}
