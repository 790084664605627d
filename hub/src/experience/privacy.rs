//! A shopper's own data: the download (`GET /api/v1/customers/me/data`) and erasure
//! (`POST /api/v1/customers/me/erasure`, with the password). The rules are in
//! `docs/experience.md` ("Privacy"); in short:
//!
//! - an erasure is a durable job ([`ErasureJob`], keyspace tree `privacy`), recorded before its
//!   first step and updated after each; every step is idempotent, and the hub resumes
//!   unfinished jobs at start ([`resume`]);
//! - the same write that records the job marks the customer erased in storage, so events of
//!   the customer id appended from then on (late ones, or ones recorded while it runs) are
//!   stored pseudonymised;
//! - the profile moves to a stable pseudonym (an HMAC of the customer id under the
//!   deployment's link secret) without search texts, basket or joined anonymous ids;
//! - linked apps are unlinked; pending mail to the customer and dead letters addressed to them
//!   are dropped;
//! - the customer record keeps its id, basket and creation time; email becomes a pseudonymous
//!   placeholder, name, phone and loyalty number are removed, sign-in is disabled, every
//!   consent is withdrawn, board segments are dropped and every session is revoked;
//! - orders stay for accounting (amounts, lines, taxes, country) with the address replaced by
//!   a marker and the email by the placeholder, written by the actor of the order's basket;
//! - the customer's events (and those of anonymous ids joined to them) keep their id, time,
//!   channel, kind and sequence, take the pseudonym as subject and keep only the payload keys
//!   their kind allows ([`protocol::privacy::kept_keys`]);
//! - the A/B tests' records of the customer and their joined anonymous ids (assignments,
//!   the counter's per-subject tallies) move to the pseudonym and the sign-in joins pointing
//!   at them are dropped; the per-variant counts are untouched, so reports stay the same;
//! - the aggregates are untouched: they hold counts and sums, no person.

use super::Experience;
use crate::app::HubHandle;
use crate::storage::kv::Tree;
use crate::storage::{Change, Result, Sequenced, StorageError, UnitOfWork};
use hmac::{Hmac, Mac};
use protocol::codec::{decode, encode};
use protocol::privacy::{ErasureJob, ErasureStep};
use protocol::{AnonymousId, CustomerId, Subject};
use sha2::Sha256;
use std::collections::HashSet;

/// The marker an erased order's address carries.
pub use crate::actors::checkout::ERASED;
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

pub use protocol::privacy::pseudonymised;

/// Mails in the outbox and dead letters read per pass while scrubbing.
const OUTBOX_PAGE: usize = 100_000;

/// The tree of unfinished erasure jobs (key: the customer id).
fn jobs(handle: &HubHandle) -> Result<Tree> {
    handle.keyspace.open_tree("privacy")
}

/// Stores a job's progress durably.
async fn save(tree: &Tree, job: &ErasureJob) -> Result<()> {
    tree.insert(job.customer.to_bytes(), encode(job)?)?;
    tree.flush_async().await?;
    Ok(())
}

/// The customer's unfinished job, or a new one recorded durably (with the storage mark that
/// pseudonymises their later events) before any step runs.
async fn job_for(handle: &HubHandle, tree: &Tree, customer: CustomerId) -> Result<ErasureJob> {
    if let Some(raw) = tree.get(customer.to_bytes())? {
        return Ok(decode(&raw)?);
    }
    let experience: &Experience = &handle.experience;
    let pseudonym = pseudonym(handle, customer).await?;
    // Every event so far is in the profile before its joined anonymous ids are read.
    experience.caught_up().await?;
    let linked: Vec<AnonymousId> = experience
        .profile(Subject::Customer(customer))
        .await?
        .map(|p| p.anonymous_ids.into_iter().collect())
        .unwrap_or_default();
    let job = ErasureJob {
        customer,
        pseudonym,
        linked,
        requested_at: handle.backend.deps.clock.now(),
        done: Vec::new(),
    };
    handle
        .storage
        .commit(UnitOfWork::new().with(Change::MarkErased {
            customer,
            pseudonym,
        }))
        .await?;
    save(tree, &job).await?;
    Ok(job)
}

/// Erases the customer's personal data (see the module docs): records the job, then runs
/// its steps in order, recording each. Idempotent: asked again, it resumes an unfinished job
/// or runs a finished one's steps again, finding nothing more to change.
pub async fn erase(handle: &HubHandle, customer: CustomerId) -> Result<AnonymousId> {
    let tree = jobs(handle)?;
    let mut job = job_for(handle, &tree, customer).await?;
    while let Some(step) = job.next_step() {
        run_step(handle, &job, step).await?;
        job.finish(step);
        save(&tree, &job).await?;
        tracing::debug!(customer = %customer, step = step.as_str(), "erasure step done");
    }
    // The storage mark stays: it is what pseudonymises the customer's later events.
    tree.remove(customer.to_bytes())?;
    tree.flush_async().await?;
    Ok(job.pseudonym)
}

/// Runs the erasures a stop or a crash interrupted; called at start.
pub async fn resume(handle: &HubHandle) -> Result<usize> {
    let tree = jobs(handle)?;
    let mut customers = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        customers.push(decode::<ErasureJob>(&v)?.customer);
    }
    for customer in &customers {
        tracing::info!(%customer, "resuming an interrupted erasure");
        erase(handle, *customer).await?;
    }
    Ok(customers.len())
}

/// One step; each finds nothing to change when run again.
async fn run_step(handle: &HubHandle, job: &ErasureJob, step: ErasureStep) -> Result<()> {
    let customer = job.customer;
    match step {
        ErasureStep::Profile => handle
            .experience
            .analyst
            .send(super::analyst::Erase {
                customer,
                pseudonym: job.pseudonym,
            })
            .await
            .map_err(|_| StorageError::Closed)?,
        ErasureStep::Links => handle.oauth.revoke_all_of(customer).await.map(|_| ()),
        ErasureStep::Outbox => scrub_outbox(handle, customer).await,
        ErasureStep::Record => {
            let sessions = handle.storage.sessions_of(customer).await?;
            handle
                .backend
                .erase_record(customer, job.placeholder_email(), sessions)
                .await
                .map_err(|e| StorageError::Io(e.to_string()))
        }
        ErasureStep::Audience => {
            handle
                .boards
                .set_audience(customer, &protocol::board::BoardAudience::default())
                .await
        }
        ErasureStep::Orders => erase_orders(handle, customer, &job.placeholder_email()).await,
        ErasureStep::Events => {
            let linked: HashSet<AnonymousId> = job.linked.iter().copied().collect();
            pseudonymise_events(handle, customer, &linked, job.pseudonym).await
        }
        ErasureStep::Experiments => {
            handle
                .experiments
                .erase(
                    handle.storage.as_ref(),
                    customer,
                    &job.linked,
                    job.pseudonym,
                )
                .await
        }
        ErasureStep::Unknown => Ok(()),
    }
}

/// Drops pending mail to the customer's address and dead letters addressed to it: a message
/// queued for them (a reminder, a receipt) would otherwise still carry their address and go
/// out after the erasure.
async fn scrub_outbox(handle: &HubHandle, customer: CustomerId) -> Result<()> {
    let Some(record) = handle.storage.customer(customer).await? else {
        return Ok(());
    };
    let destination = crate::fulfilment::email::DESTINATION;
    let to_them = |m: &protocol::OutboxMessage| {
        serde_json::from_str::<serde_json::Value>(&m.payload)
            .ok()
            .is_some_and(|p| p["to"].as_str() == Some(record.email.as_str()))
    };
    let mut unit = UnitOfWork::new();
    for m in handle.storage.pending(destination, OUTBOX_PAGE).await? {
        if to_them(&m) {
            unit = unit.with(Change::AckOutbox {
                destination: m.destination,
                id: m.id,
            });
        }
    }
    for m in handle
        .storage
        .dead_letters(destination, OUTBOX_PAGE)
        .await?
    {
        if to_them(&m) {
            unit = unit.with(Change::DiscardDeadLetter {
                destination: m.destination,
                id: m.id,
            });
        }
    }
    if unit.changes.is_empty() {
        return Ok(());
    }
    tracing::info!(%customer, dropped = unit.changes.len(), "mail to an erased customer dropped");
    handle.storage.commit(unit).await
}

/// Erases each order through the actor of its basket, which is the one writer of its orders
/// (fulfilment reports are applied there too); an order whose basket no actor can load is
/// written directly, since nothing else writes it.
async fn erase_orders(handle: &HubHandle, customer: CustomerId, placeholder: &str) -> Result<()> {
    for order in handle.storage.orders_of(customer, usize::MAX).await? {
        match handle
            .backend
            .erase_order(order.basket, order.id, placeholder.to_string())
            .await
        {
            Ok(()) => {}
            Err(channels::BackendError::NotFound(_)) => {
                let erased = crate::actors::checkout::erased_order(order.clone(), placeholder);
                if erased != order {
                    handle
                        .storage
                        .commit(UnitOfWork::new().with(Change::PutOrder(erased)))
                        .await?;
                }
            }
            Err(e) => return Err(StorageError::Io(e.to_string())),
        }
    }
    Ok(())
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
        let rewritten: Vec<Sequenced> = page
            .into_iter()
            .filter(|s| theirs(&s.event.subject))
            .map(|s| Sequenced {
                seq: s.seq,
                event: pseudonymised(s.event, pseudonym),
            })
            .collect();
        if !rewritten.is_empty() {
            handle.storage.rewrite(rewritten, None).await?;
        }
    }
    handle.storage.rewrite(Vec::new(), Some(customer)).await
}
