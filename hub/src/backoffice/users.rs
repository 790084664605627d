//! Back-office users: people with roles, created by an admin, who call the back-office API with
//! per-user tokens (shown once, stored as SHA-256). A password (argon2id) is optional: with one,
//! the user signs in to the back-office pages (`super::session`). A disabled user's tokens and
//! sessions stop working at once.

use super::audit::{Actor, Change};
use super::store::{self, key, prefix, Batch};
use super::{Backoffice, BackofficeError};
use crate::storage::{Result, StorageError};
use protocol::{FieldError, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;
use ulid::Ulid;

/// What a back-office user may do. A user may hold several roles; no role implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users and tokens, reads the audit list.
    Admin,
    /// Creates and edits promotions.
    Merchandiser,
    /// Creates promotions and coupons, exports coupon batches.
    Marketer,
    /// Reads.
    Analyst,
    /// Approves promotions (never their own).
    Approver,
    /// Customer service: reads.
    Support,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Merchandiser,
        Role::Marketer,
        Role::Analyst,
        Role::Approver,
        Role::Support,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Merchandiser => "merchandiser",
            Role::Marketer => "marketer",
            Role::Analyst => "analyst",
            Role::Approver => "approver",
            Role::Support => "support",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role '{s}': one of {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

/// A back-office user's id (a ULID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Ulid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for UserId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> std::result::Result<UserId, Self::Err> {
        Ulid::from_string(s).map(UserId)
    }
}

impl UserId {
    pub(crate) fn bytes(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }
}

/// A stored back-office user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    /// Lower case.
    pub email: String,
    pub name: String,
    pub roles: BTreeSet<Role>,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The TOTP secret (base32) once enrolment is confirmed: sign-in then asks for a code.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// A secret shown for enrolment, not yet confirmed with a code.
    #[serde(default)]
    pub totp_pending: Option<String>,
    /// The step of the last code accepted (a code is never accepted twice).
    #[serde(default)]
    pub totp_last_step: Option<u64>,
}

impl Stored for UserRecord {
    const KIND: &'static str = "bo_user";
    const VERSION: u16 = 1;
}

/// A user as the API shows it (no password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub has_password: bool,
    /// Whether sign-in asks for a TOTP code.
    pub totp: bool,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> UserView {
        UserView {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            roles: u.roles.clone(),
            has_password: u.password_hash.is_some(),
            totp: u.totp_secret.is_some(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A stored API token (its secret only as a hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: Ulid,
    pub user: UserId,
    pub name: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub revoked_at: Option<OffsetDateTime>,
}

impl Stored for TokenRecord {
    const KIND: &'static str = "bo_token";
    const VERSION: u16 = 1;
}

/// A token as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenView {
    pub id: Ulid,
    pub user: UserId,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> TokenView {
        TokenView {
            id: t.id,
            user: t.user,
            name: t.name.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just issued: the secret is in this answer only.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

/// The signed-in back-office user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackOfficeUser {
    pub id: UserId,
    pub email: String,
    pub roles: BTreeSet<Role>,
}

impl BackOfficeUser {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Ok when the user holds `role`; otherwise a 403 "needs role …".
    pub fn require(&self, role: Role) -> std::result::Result<(), BackofficeError> {
        self.require_any(&[role])
    }

    /// Ok when the user holds one of `roles`; otherwise a 403 naming them.
    pub fn require_any(&self, roles: &[Role]) -> std::result::Result<(), BackofficeError> {
        if roles.iter().any(|r| self.has(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(BackofficeError::Forbidden {
            code: "role_required",
            message: format!("needs role {}", names.join(" or ")),
        })
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("send a back-office API token as Authorization: Bearer <token>")]
    Missing,
    #[error("this token is unknown, revoked, or its user is disabled")]
    Invalid,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Body of `POST /api/v1/admin/users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub password: Option<String>,
}

/// Body of `PATCH /api/v1/admin/users/{id}`: what to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

const TOKEN_PREFIX: &str = "bo_";
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;

pub(crate) fn user_key(id: UserId) -> Vec<u8> {
    key("user", &[&id.bytes()])
}

fn email_key(email: &str) -> Vec<u8> {
    key("email", &[email.as_bytes()])
}

fn token_key(hash: &[u8; 32]) -> Vec<u8> {
    key("tok", &[hash])
}

fn user_token_key(user: UserId, token: Ulid) -> Vec<u8> {
    key("utok", &[&user.bytes(), &token.0.to_be_bytes()])
}

fn check_email(raw: &str, errors: &mut Vec<FieldError>) -> String {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !valid {
        errors.push(FieldError::new(
            "email",
            "an email address such as ana@example.com",
        ));
    }
    email
}

fn check_name(raw: &str, errors: &mut Vec<FieldError>) -> String {
    let name = raw.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("name", "a name of 1 to 200 characters"));
    }
    name
}

fn check_roles(raw: &[String], errors: &mut Vec<FieldError>) -> BTreeSet<Role> {
    let mut roles = BTreeSet::new();
    for r in raw {
        match r.trim().parse::<Role>() {
            Ok(role) => {
                roles.insert(role);
            }
            Err(reason) => errors.push(FieldError::new("roles", reason)),
        }
    }
    if raw.is_empty() {
        errors.push(FieldError::new(
            "roles",
            format!("at least one of {}", Role::ALL.map(Role::as_str).join(", ")),
        ));
    }
    roles
}

fn check_password(raw: &str, errors: &mut Vec<FieldError>) {
    let n = raw.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        errors.push(FieldError::new(
            "password",
            format!("a password of {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
}

async fn hash_password(password: String) -> std::result::Result<String, BackofficeError> {
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| BackofficeError::Storage(StorageError::Io(e.to_string())))?
        .map_err(|e| BackofficeError::Storage(StorageError::Io(e.to_string())))
}

impl Backoffice {
    /// Creates a user (admin only; the caller checked that).
    pub async fn create_user(
        &self,
        actor: &Actor,
        new: NewUser,
    ) -> std::result::Result<UserView, BackofficeError> {
        let mut errors = Vec::new();
        let email = check_email(&new.email, &mut errors);
        let name = check_name(&new.name, &mut errors);
        let roles = check_roles(&new.roles, &mut errors);
        if let Some(p) = &new.password {
            check_password(p, &mut errors);
        }
        if !errors.is_empty() {
            return Err(BackofficeError::Invalid(errors));
        }
        let password_hash = match new.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let _lock = self.writes.lock().await;
        if self.store.get(&email_key(&email))?.is_some() {
            return Err(BackofficeError::Conflict {
                code: "email_taken",
                message: format!("a back-office user with email {email} exists"),
            });
        }
        let now = self.now();
        let user = UserRecord {
            id: UserId(Ulid::new()),
            email,
            name,
            roles,
            password_hash,
            disabled: false,
            created_at: now,
            updated_at: now,
            totp_secret: None,
            totp_pending: None,
            totp_last_step: None,
        };
        let view = UserView::from(&user);
        let mut batch = Batch::new();
        batch.put(user_key(user.id), &user)?;
        batch.put_raw(email_key(&user.email), user.id.bytes().to_vec());
        self.stage_audit(
            &mut batch,
            Change::<(), _> {
                actor,
                action: "user.create",
                subject: format!("user/{}", user.id),
                before: None,
                after: Some(&view),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(user = %user.id, by = %actor.id(), "back-office user created");
        Ok(view)
    }

    pub(crate) fn user_record(
        &self,
        id: UserId,
    ) -> std::result::Result<UserRecord, BackofficeError> {
        store::get::<UserRecord>(self.store.as_ref(), &user_key(id))?
            .ok_or_else(|| BackofficeError::NotFound(format!("user {id}")))
    }

    pub fn user(&self, id: UserId) -> std::result::Result<UserView, BackofficeError> {
        self.user_record(id).map(|u| UserView::from(&u))
    }

    pub fn users(&self) -> Result<Vec<UserView>> {
        Ok(
            store::scan_all::<UserRecord>(self.store.as_ref(), b"user/")?
                .iter()
                .map(UserView::from)
                .collect(),
        )
    }

    /// Changes a user's name, roles, password or disabled flag.
    pub async fn update_user(
        &self,
        actor: &Actor,
        id: UserId,
        patch: UserPatch,
    ) -> std::result::Result<UserView, BackofficeError> {
        let mut errors = Vec::new();
        let name = patch.name.as_deref().map(|n| check_name(n, &mut errors));
        let roles = patch.roles.as_deref().map(|r| check_roles(r, &mut errors));
        if let Some(p) = &patch.password {
            check_password(p, &mut errors);
        }
        if !errors.is_empty() {
            return Err(BackofficeError::Invalid(errors));
        }
        let password_hash = match patch.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let _lock = self.writes.lock().await;
        let before = self.user_record(id)?;
        let mut after = before.clone();
        if let Some(name) = name {
            after.name = name;
        }
        if let Some(roles) = roles {
            after.roles = roles;
        }
        if let Some(hash) = password_hash {
            after.password_hash = Some(hash);
        }
        if let Some(disabled) = patch.disabled {
            after.disabled = disabled;
        }
        if after == before {
            return Ok(UserView::from(&before));
        }
        after.updated_at = self.now();
        let view = UserView::from(&after);
        let mut batch = Batch::new();
        batch.put(user_key(id), &after)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action: "user.update",
                subject: format!("user/{id}"),
                before: Some(&UserView::from(&before)),
                after: Some(&view),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(user = %id, by = %actor.id(), disabled = after.disabled, "back-office user updated");
        Ok(view)
    }

    /// Issues a new API token for a user; the secret is returned once.
    pub async fn issue_token(
        &self,
        actor: &Actor,
        user: UserId,
        name: Option<String>,
    ) -> std::result::Result<IssuedToken, BackofficeError> {
        let name = name.map(|n| n.trim().to_string()).unwrap_or_default();
        if name.chars().count() > 100 {
            return Err(BackofficeError::Invalid(vec![FieldError::new(
                "name",
                "a token name of at most 100 characters",
            )]));
        }
        let secret = crate::auth::random_token(32)
            .map_err(|e| BackofficeError::Storage(StorageError::Io(e.to_string())))?;
        let token = format!("{TOKEN_PREFIX}{secret}");
        let hash = crate::auth::token_hash(&token);
        let _lock = self.writes.lock().await;
        self.user_record(user)?;
        let record = TokenRecord {
            id: Ulid::new(),
            user,
            name,
            hash: hex::encode(hash),
            created_at: self.now(),
            created_by: actor.id(),
            revoked_at: None,
        };
        let view = TokenView::from(&record);
        let mut batch = Batch::new();
        batch.put(token_key(&hash), &record)?;
        batch.put(user_token_key(user, record.id), &record)?;
        self.stage_audit(
            &mut batch,
            Change::<(), _> {
                actor,
                action: "token.issue",
                subject: format!("user/{user}/token/{}", record.id),
                before: None,
                after: Some(&view),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(user = %user, token = %record.id, by = %actor.id(), "back-office token issued");
        Ok(IssuedToken { view, token })
    }

    pub fn tokens(&self, user: UserId) -> std::result::Result<Vec<TokenView>, BackofficeError> {
        self.user_record(user)?;
        Ok(
            store::scan_all::<TokenRecord>(self.store.as_ref(), &prefix("utok", &user.bytes()))?
                .iter()
                .map(TokenView::from)
                .collect(),
        )
    }

    /// Revokes a token: it stops working at once. Revoking it again changes nothing.
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        user: UserId,
        token: Ulid,
    ) -> std::result::Result<TokenView, BackofficeError> {
        let _lock = self.writes.lock().await;
        let k = user_token_key(user, token);
        let before = store::get::<TokenRecord>(self.store.as_ref(), &k)?
            .ok_or_else(|| BackofficeError::NotFound(format!("token {token} of user {user}")))?;
        if before.revoked_at.is_some() {
            return Ok(TokenView::from(&before));
        }
        let mut after = before.clone();
        after.revoked_at = Some(self.now());
        let hash: [u8; 32] = hex::decode(&before.hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| StorageError::Io(format!("token {token} has a malformed hash")))?;
        let view = TokenView::from(&after);
        let mut batch = Batch::new();
        batch.delete(token_key(&hash));
        batch.put(k, &after)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action: "token.revoke",
                subject: format!("user/{user}/token/{token}"),
                before: Some(&TokenView::from(&before)),
                after: Some(&view),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(user = %user, token = %token, by = %actor.id(), "back-office token revoked");
        Ok(view)
    }

    /// The user a bearer token belongs to, if the token is live and the user enabled.
    pub fn authenticate(&self, token: &str) -> std::result::Result<BackOfficeUser, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::Invalid);
        }
        let hash = crate::auth::token_hash(token);
        let record = store::get::<TokenRecord>(self.store.as_ref(), &token_key(&hash))?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(AuthError::Invalid)?;
        let user = store::get::<UserRecord>(self.store.as_ref(), &user_key(record.user))?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Invalid)?;
        Ok(BackOfficeUser {
            id: user.id,
            email: user.email,
            roles: user.roles,
        })
    }

    /// Checks an email and password: the user when they match and the user is enabled.
    /// Takes as long for an unknown email.
    pub async fn verify_password(
        &self,
        email: &str,
        password: &str,
    ) -> std::result::Result<Option<BackOfficeUser>, StorageError> {
        Ok(self
            .password_matches(email, password)
            .await?
            .map(|u| BackOfficeUser {
                id: u.id,
                email: u.email,
                roles: u.roles,
            }))
    }

    /// The enabled user whose email and password these are (verified against a decoy for an
    /// unknown email, so both take as long).
    pub(crate) async fn password_matches(
        &self,
        email: &str,
        password: &str,
    ) -> std::result::Result<Option<UserRecord>, StorageError> {
        let email = email.trim().to_lowercase();
        let user = match self.store.get(&email_key(&email))? {
            Some(id) => match <[u8; 16]>::try_from(id.as_slice()) {
                Ok(b) => store::get::<UserRecord>(
                    self.store.as_ref(),
                    &user_key(UserId(Ulid(u128::from_be_bytes(b)))),
                )?,
                Err(_) => None,
            },
            None => None,
        };
        let phc = user
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| crate::auth::decoy_hash().to_string());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &phc))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok(user.filter(|u| ok && !u.disabled && u.password_hash.is_some()))
    }
}
