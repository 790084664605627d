//! Account linking in sled: keys `oacode/{hash}`, `oaspent/{hash}` (value: the grant id),
//! `oatoken/{hash}`, `oagrant/{id}` and the index `oacust/{customer}{grant}` of active grants.

use super::{follow_index, id_from, io, key, SledStorage, Staged};
use crate::storage::oauth::{OAuthChange, OAuthStore};
use crate::storage::{Result, StorageError};
use async_trait::async_trait;
use protocol::codec;
use protocol::oauth::{OAuthCode, OAuthGrant, OAuthToken};
use protocol::CustomerId;
use std::collections::HashSet;
use ulid::Ulid;

fn grant_key(id: Ulid) -> Vec<u8> {
    key("oagrant", &id.0.to_be_bytes())
}

fn customer_grant_key(customer: CustomerId, grant: Ulid) -> Vec<u8> {
    let mut rest = customer.to_bytes().to_vec();
    rest.extend_from_slice(&grant.0.to_be_bytes());
    key("oacust", &rest)
}

/// The key/value operations of one change; `Spend` checks that the hash was not spent before
/// (in storage, or earlier in the same group commit).
pub(super) fn stage(
    entities: &sled::Tree,
    change: &OAuthChange,
    claimed: &HashSet<Vec<u8>>,
    new_claims: &mut Vec<Vec<u8>>,
) -> Result<Staged> {
    Ok(match change {
        OAuthChange::PutCode { code_hash, code } => {
            vec![(key("oacode", code_hash), Some(codec::encode(code)?))]
        }
        OAuthChange::DeleteCode { code_hash } => vec![(key("oacode", code_hash), None)],
        OAuthChange::Spend { hash, grant } => {
            let k = key("oaspent", hash);
            let spent = claimed.contains(&k)
                || new_claims.contains(&k)
                || entities.contains_key(&k).map_err(io)?;
            if spent {
                return Err(StorageError::Conflict(
                    "this code or refresh token was already used".into(),
                ));
            }
            new_claims.push(k.clone());
            vec![(k, Some(grant.0.to_be_bytes().to_vec()))]
        }
        OAuthChange::PutGrant(g) => vec![
            (
                customer_grant_key(g.customer, g.id),
                g.is_active().then(Vec::new),
            ),
            (grant_key(g.id), Some(codec::encode(g)?)),
        ],
        OAuthChange::PutToken { token_hash, token } => {
            vec![(key("oatoken", token_hash), Some(codec::encode(token)?))]
        }
        OAuthChange::DeleteToken { token_hash } => vec![(key("oatoken", token_hash), None)],
    })
}

#[async_trait]
impl OAuthStore for SledStorage {
    async fn oauth_code(&self, code_hash: [u8; 32]) -> Result<Option<OAuthCode>> {
        self.get(&key("oacode", &code_hash))
    }

    async fn oauth_spent(&self, hash: [u8; 32]) -> Result<Option<Ulid>> {
        let raw = self.entities.get(key("oaspent", &hash)).map_err(io)?;
        Ok(raw.and_then(|v| id_from(&v)))
    }

    async fn oauth_token(&self, token_hash: [u8; 32]) -> Result<Option<OAuthToken>> {
        self.get(&key("oatoken", &token_hash))
    }

    async fn oauth_grant(&self, id: Ulid) -> Result<Option<OAuthGrant>> {
        self.get(&grant_key(id))
    }

    async fn oauth_grants_of(&self, customer: CustomerId) -> Result<Vec<OAuthGrant>> {
        let index = key("oacust", &customer.to_bytes());
        follow_index(self.entities.clone(), index, "oagrant", false, usize::MAX).await
    }
}
