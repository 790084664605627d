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
use time::OffsetDateTime;
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

    async fn oauth_dead(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<OAuthChange>> {
        let tree = self.entities.clone();
        tokio::task::spawn_blocking(move || dead(&tree, now, limit))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
    }
}

/// The hash a `prefix/hash` key ends with.
fn hash_of(k: &[u8], prefix: &str) -> Option<[u8; 32]> {
    k.get(prefix.len() + 1..)?.try_into().ok()
}

/// See [`OAuthStore::oauth_dead`]: a scan of the codes, then of the tokens.
fn dead(tree: &sled::Tree, now: OffsetDateTime, limit: usize) -> Result<Vec<OAuthChange>> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix(key("oacode", &[])) {
        if out.len() >= limit {
            return Ok(out);
        }
        let (k, v) = kv.map_err(io)?;
        let code: OAuthCode = codec::decode(&v)?;
        if let (true, Some(code_hash)) = (code.expires_at <= now, hash_of(&k, "oacode")) {
            out.push(OAuthChange::DeleteCode { code_hash });
        }
    }
    let mut grants: std::collections::HashMap<Ulid, bool> = std::collections::HashMap::new();
    for kv in tree.scan_prefix(key("oatoken", &[])) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = kv.map_err(io)?;
        let token: OAuthToken = codec::decode(&v)?;
        let active = match grants.get(&token.grant) {
            Some(active) => *active,
            None => {
                let grant: Option<OAuthGrant> =
                    match tree.get(grant_key(token.grant)).map_err(io)? {
                        Some(raw) => Some(codec::decode(&raw)?),
                        None => None,
                    };
                let active = grant.is_some_and(|g| g.is_active());
                grants.insert(token.grant, active);
                active
            }
        };
        if let (true, Some(token_hash)) =
            (token.expires_at <= now || !active, hash_of(&k, "oatoken"))
        {
            out.push(OAuthChange::DeleteToken { token_hash });
        }
    }
    Ok(out)
}
