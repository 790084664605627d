//! Erasure of a customer's personal data (`docs/privacy.md`): the record keeps its id, basket
//! and creation time; email, name, phone and loyalty number are replaced or removed, the
//! password can no longer match (sign-in disabled), every consent is withdrawn (source
//! `erasure`) and every session is revoked, all in one unit of work.

use super::CustomerActor;
use crate::storage::{Change, CustomerAlias, StorageError, UnitOfWork};
use actix::prelude::*;

/// Replaces the customer's personal data; `placeholder_email` is the pseudonymous address the
/// record keeps (never deliverable), `sessions` the token hashes of their live sessions.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), StorageError>")]
pub struct EraseRecord {
    pub placeholder_email: String,
    pub sessions: Vec<[u8; 32]>,
}

impl Handler<EraseRecord> for CustomerActor {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, msg: EraseRecord, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = self.deps.clock.now();
        let before = self.customer.clone();
        let mut erased = before.clone();
        erased.email = msg.placeholder_email;
        erased.name = String::new();
        // No PHC string parses from an empty one: no password can match again.
        erased.password_hash = String::new();
        let withdraw_all: Vec<protocol::ConsentChoice> = protocol::ConsentChannel::ALL
            .into_iter()
            .flat_map(|channel| {
                protocol::ConsentPurpose::ALL.map(|purpose| protocol::ConsentChoice {
                    channel,
                    purpose,
                    granted: false,
                })
            })
            .collect();
        erased.consents.apply(
            &withdraw_all,
            self.deps.clock.now(),
            protocol::ConsentSource::Erasure,
        );
        erased.phone = None;
        erased.loyalty_number = None;
        let mut unit = UnitOfWork::new().with(Change::PutCustomer(erased.clone()));
        if before.email != erased.email {
            unit = unit.with(Change::ReleaseEmail(before.email.clone()));
        }
        if let Some(phone) = before.phone {
            unit = unit.with(Change::ReleaseAlias(CustomerAlias::Phone(phone)));
        }
        if let Some(loyalty) = before.loyalty_number {
            unit = unit.with(Change::ReleaseAlias(CustomerAlias::Loyalty(loyalty)));
        }
        for token_hash in msg.sessions {
            unit = unit.with(Change::DeleteSession { token_hash });
        }
        let storage = self.deps.storage.clone();
        let sealed = self.deps.fence.seal(&erased.id, unit);
        AtomicResponse::new(Box::pin(
            async move { storage.commit(sealed?).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    res?;
                    act.customer = erased;
                    Ok(())
                }),
        ))
    }
}
