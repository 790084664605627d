//! Back-office sign-in: email and password (argon2id), then a TOTP code for users who enrolled
//! one; sessions kept as SHA-256 hashes of their cookie token, with an idle and an absolute
//! expiry; a CSRF token per session (synchronizer token) for every form and every cookie-borne
//! API call that changes something.
//!
//! Failed attempts (a wrong password, a wrong code) are counted per account (the typed email,
//! known or not, so a lockout tells nothing about which emails exist) and per client address;
//! over either limit the answer is "try again in N seconds" before any password is checked.

use super::audit::{Actor, Change};
use super::coupons::RetryAfter;
use super::store::{self, key, Batch};
use super::users::{user_key, BackOfficeUser, UserId, UserRecord};
use super::{totp, Backoffice, BackofficeError};
use crate::storage::{Result, StorageError};
use protocol::Stored;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

/// The session cookie (HttpOnly, SameSite=Strict, Secure when configured).
pub const SESSION_COOKIE: &str = "omnihub_bo_session";
/// A session waiting for its TOTP code lives this long.
const SECOND_FACTOR_FOR: Duration = Duration::from_secs(5 * 60);
/// `last_seen` is written at most this often per session (idle expiry is this coarse).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// How far a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The password was right; a TOTP code is due.
    SecondFactor,
    /// Signed in.
    Active,
}

/// A stored session (under the SHA-256 of its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: Ulid,
    pub user: UserId,
    pub stage: Stage,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    pub address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

impl Stored for SessionRecord {
    const KIND: &'static str = "bo_session";
    const VERSION: u16 = 1;
}

/// A live, signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Ulid,
    pub user: BackOfficeUser,
    pub name: String,
    pub csrf: String,
    /// Whether the user signs in with a TOTP code.
    pub totp: bool,
}

/// What a sign-in attempt came to.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: set this token as the session cookie.
    Done { token: String, session: Session },
    /// The password was right; ask for a code, with this token as the cookie meanwhile.
    SecondFactor { token: String },
    /// Wrong email, wrong password, or a disabled user: all look the same.
    Refused,
    /// Too many failures lately: try again after this many seconds.
    Limited(RetryAfter),
}

fn session_key(token: &str) -> Vec<u8> {
    key("sess", &[&crate::auth::token_hash(token)])
}

fn normalise(email: &str) -> String {
    email.trim().to_lowercase()
}

fn random(bytes: usize) -> std::result::Result<String, BackofficeError> {
    crate::auth::random_token(bytes)
        .map_err(|e| BackofficeError::Storage(StorageError::Io(e.to_string())))
}

/// What the audit list shows of a session.
#[derive(Serialize)]
struct SessionAudit<'a> {
    session: String,
    address: &'a str,
    second_factor: bool,
}

impl Backoffice {
    fn limited(&self, account: &str, address: &str) -> Option<RetryAfter> {
        let by_account = self.sign_in_accounts.guard(account).err();
        let by_address = self.sign_in_addresses.guard(address).err();
        match (by_account, by_address) {
            (Some(a), Some(b)) => Some(RetryAfter {
                seconds: a.seconds.max(b.seconds),
            }),
            (a, b) => a.or(b),
        }
    }

    fn failed(&self, account: &str, address: &str) {
        self.sign_in_accounts.record_invalid(account);
        self.sign_in_addresses.record_invalid(address);
    }

    /// Checks an email and password from the client at `address`; see [`SignIn`].
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        address: &str,
    ) -> std::result::Result<SignIn, BackofficeError> {
        let email = normalise(email);
        if let Some(wait) = self.limited(&email, address) {
            return Ok(SignIn::Limited(wait));
        }
        let Some(user) = self.password_matches(&email, password).await? else {
            self.failed(&email, address);
            tracing::info!("back-office sign-in refused");
            return Ok(SignIn::Refused);
        };
        let stage = if user.totp_secret.is_some() {
            Stage::SecondFactor
        } else {
            Stage::Active
        };
        let token = random(32)?;
        let now = self.now();
        let record = SessionRecord {
            id: Ulid::new(),
            user: user.id,
            stage,
            csrf: random(24)?,
            address: address.to_string(),
            created_at: now,
            last_seen: now,
        };
        let _lock = self.writes.lock().await;
        let mut batch = Batch::new();
        self.stage_expired_sessions(&mut batch, now)?;
        batch.put(session_key(&token), &record)?;
        if stage == Stage::Active {
            self.stage_sign_in_audit(&mut batch, &user, &record)?;
        }
        self.commit(batch).await?;
        Ok(match stage {
            Stage::SecondFactor => SignIn::SecondFactor { token },
            Stage::Active => {
                tracing::info!(user = %user.id, "back-office user signed in");
                SignIn::Done {
                    token,
                    session: session_of(&record, &user),
                }
            }
        })
    }

    fn stage_sign_in_audit(
        &self,
        batch: &mut Batch,
        user: &UserRecord,
        record: &SessionRecord,
    ) -> Result<()> {
        let actor = Actor::User(BackOfficeUser {
            id: user.id,
            email: user.email.clone(),
            roles: user.roles.clone(),
        });
        self.stage_audit(
            batch,
            Change::<(), _> {
                actor: &actor,
                action: "session.sign_in",
                subject: format!("user/{}", user.id),
                before: None,
                after: Some(&SessionAudit {
                    session: record.id.to_string(),
                    address: &record.address,
                    second_factor: record.stage == Stage::SecondFactor
                        || user.totp_secret.is_some(),
                }),
            },
        )
    }

    /// Removes sessions past their expiry (run at each sign-in; sessions are few).
    fn stage_expired_sessions(&self, batch: &mut Batch, now: OffsetDateTime) -> Result<()> {
        for (k, v) in self.store.scan(b"sess/", None, usize::MAX)? {
            let expired = match protocol::codec::decode::<SessionRecord>(&v) {
                Ok(s) => !self.fresh(&s, now),
                Err(_) => true,
            };
            if expired {
                batch.delete(k);
            }
        }
        Ok(())
    }

    fn fresh(&self, s: &SessionRecord, now: OffsetDateTime) -> bool {
        match s.stage {
            Stage::SecondFactor => now < s.created_at + SECOND_FACTOR_FOR,
            Stage::Active => {
                now < s.created_at + self.settings.session_lifetime
                    && now < s.last_seen + self.settings.session_idle
            }
        }
    }

    /// The session of a cookie token waiting for its TOTP code, with its user.
    fn pending(&self, token: &str) -> Result<Option<(SessionRecord, UserRecord)>> {
        let Some(record) = store::get::<SessionRecord>(self.store.as_ref(), &session_key(token))?
        else {
            return Ok(None);
        };
        if record.stage != Stage::SecondFactor || !self.fresh(&record, self.now()) {
            return Ok(None);
        }
        let user = store::get::<UserRecord>(self.store.as_ref(), &user_key(record.user))?
            .filter(|u| !u.disabled && u.totp_secret.is_some());
        Ok(user.map(|u| (record, u)))
    }

    /// Whether a cookie token is a session waiting for its code.
    pub fn awaits_second_factor(&self, token: &str) -> Result<bool> {
        Ok(self.pending(token)?.is_some())
    }

    /// Checks the TOTP code of a session waiting for it; on success the session is signed in
    /// under a new token (the one that waited is dropped).
    #[tracing::instrument(skip_all)]
    pub async fn second_factor(
        &self,
        token: &str,
        code: &str,
        address: &str,
    ) -> std::result::Result<SignIn, BackofficeError> {
        let _lock = self.writes.lock().await;
        let Some((record, user)) = self.pending(token)? else {
            return Ok(SignIn::Refused);
        };
        if let Some(wait) = self.limited(&user.email, address) {
            return Ok(SignIn::Limited(wait));
        }
        let now = self.now();
        let secret = user.totp_secret.clone().unwrap_or_default();
        let Some(step) = totp::verify(&secret, code, now, user.totp_last_step) else {
            self.failed(&user.email, address);
            tracing::info!(user = %user.id, "back-office TOTP code refused");
            return Ok(SignIn::Refused);
        };
        let mut user = user;
        user.totp_last_step = Some(step);
        let active = SessionRecord {
            stage: Stage::Active,
            last_seen: now,
            created_at: now,
            ..record
        };
        let fresh = random(32)?;
        let mut batch = Batch::new();
        batch.delete(session_key(token));
        batch.put(session_key(&fresh), &active)?;
        batch.put(user_key(user.id), &user)?;
        self.stage_sign_in_audit(&mut batch, &user, &active)?;
        self.commit(batch).await?;
        tracing::info!(user = %user.id, "back-office user signed in with a TOTP code");
        Ok(SignIn::Done {
            token: fresh,
            session: session_of(&active, &user),
        })
    }

    /// The live session of a cookie token (signed in, not expired, user enabled), noting that
    /// it was used.
    pub async fn session(&self, token: &str) -> Result<Option<Session>> {
        let k = session_key(token);
        let Some(record) = store::get::<SessionRecord>(self.store.as_ref(), &k)? else {
            return Ok(None);
        };
        let now = self.now();
        if record.stage != Stage::Active || !self.fresh(&record, now) {
            return Ok(None);
        }
        let Some(user) = store::get::<UserRecord>(self.store.as_ref(), &user_key(record.user))?
            .filter(|u| !u.disabled)
        else {
            return Ok(None);
        };
        if now - record.last_seen >= TOUCH_EVERY {
            let _lock = self.writes.lock().await;
            // Read again under the lock: a sign-out meanwhile must not be undone.
            if let Some(mut current) = store::get::<SessionRecord>(self.store.as_ref(), &k)? {
                current.last_seen = now;
                let mut batch = Batch::new();
                batch.put(k, &current)?;
                self.commit(batch).await?;
            }
        }
        Ok(Some(session_of(&record, &user)))
    }

    /// Ends the session of a cookie token (whatever its stage). Ending it again does nothing.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        let _lock = self.writes.lock().await;
        let k = session_key(token);
        let Some(record) = store::get::<SessionRecord>(self.store.as_ref(), &k)? else {
            return Ok(());
        };
        let mut batch = Batch::new();
        batch.delete(k);
        if let Some(user) = store::get::<UserRecord>(self.store.as_ref(), &user_key(record.user))? {
            let actor = Actor::User(BackOfficeUser {
                id: user.id,
                email: user.email.clone(),
                roles: user.roles.clone(),
            });
            self.stage_audit(
                &mut batch,
                Change::<_, ()> {
                    actor: &actor,
                    action: "session.sign_out",
                    subject: format!("user/{}", user.id),
                    before: Some(&SessionAudit {
                        session: record.id.to_string(),
                        address: &record.address,
                        second_factor: user.totp_secret.is_some(),
                    }),
                    after: None,
                },
            )?;
        }
        self.commit(batch).await?;
        Ok(())
    }

    /// Starts (or restarts) TOTP enrolment for a user: a new secret, pending until confirmed.
    /// Answers the secret and its `otpauth://` URI.
    pub async fn start_totp(
        &self,
        user: UserId,
    ) -> std::result::Result<(String, String), BackofficeError> {
        let secret = totp::new_secret()
            .map_err(|e| BackofficeError::Storage(StorageError::Io(e.to_string())))?;
        let _lock = self.writes.lock().await;
        let mut record = self.user_record(user)?;
        record.totp_pending = Some(secret.clone());
        let uri = totp::otpauth_uri(&self.settings.totp_issuer, &record.email, &secret);
        let mut batch = Batch::new();
        // Not audited: nothing changes for sign-in until the code confirms it.
        batch.put(user_key(user), &record)?;
        self.commit(batch).await?;
        Ok((secret, uri))
    }

    /// The pending enrolment's secret and URI, if one was started.
    pub fn pending_totp(
        &self,
        user: UserId,
    ) -> std::result::Result<Option<(String, String)>, BackofficeError> {
        let record = self.user_record(user)?;
        Ok(record.totp_pending.map(|secret| {
            let uri = totp::otpauth_uri(&self.settings.totp_issuer, &record.email, &secret);
            (secret, uri)
        }))
    }

    /// Confirms enrolment with a code from the app: from now on sign-in asks for one. `false`
    /// when the code does not match (or nothing is pending).
    pub async fn confirm_totp(
        &self,
        actor: &Actor,
        user: UserId,
        code: &str,
    ) -> std::result::Result<bool, BackofficeError> {
        let _lock = self.writes.lock().await;
        let before = self.user_record(user)?;
        let Some(secret) = before.totp_pending.clone() else {
            return Ok(false);
        };
        let Some(step) = totp::verify(&secret, code, self.now(), None) else {
            return Ok(false);
        };
        let mut after = before.clone();
        after.totp_secret = Some(secret);
        after.totp_pending = None;
        after.totp_last_step = Some(step);
        after.updated_at = self.now();
        self.commit_user_change(actor, "user.totp_enrol", &before, &after)
            .await?;
        Ok(true)
    }

    /// Removes a user's TOTP (an admin, for a lost phone): sign-in asks only for the password
    /// until the user enrols again.
    pub async fn reset_totp(
        &self,
        actor: &Actor,
        user: UserId,
    ) -> std::result::Result<(), BackofficeError> {
        let _lock = self.writes.lock().await;
        let before = self.user_record(user)?;
        if before.totp_secret.is_none() && before.totp_pending.is_none() {
            return Ok(());
        }
        let mut after = before.clone();
        after.totp_secret = None;
        after.totp_pending = None;
        after.totp_last_step = None;
        after.updated_at = self.now();
        self.commit_user_change(actor, "user.totp_reset", &before, &after)
            .await
    }

    async fn commit_user_change(
        &self,
        actor: &Actor,
        action: &str,
        before: &UserRecord,
        after: &UserRecord,
    ) -> std::result::Result<(), BackofficeError> {
        let mut batch = Batch::new();
        batch.put(user_key(after.id), after)?;
        self.stage_audit(
            &mut batch,
            Change {
                actor,
                action,
                subject: format!("user/{}", after.id),
                before: Some(&super::users::UserView::from(before)),
                after: Some(&super::users::UserView::from(after)),
            },
        )?;
        self.commit(batch).await?;
        tracing::info!(user = %after.id, by = %actor.id(), action, "back-office user changed");
        Ok(())
    }

    /// How long a session cookie may live (the absolute lifetime).
    pub fn session_lifetime(&self) -> Duration {
        self.settings.session_lifetime
    }
}

fn session_of(record: &SessionRecord, user: &UserRecord) -> Session {
    Session {
        id: record.id,
        user: BackOfficeUser {
            id: user.id,
            email: user.email.clone(),
            roles: user.roles.clone(),
        },
        name: user.name.clone(),
        csrf: record.csrf.clone(),
        totp: user.totp_secret.is_some(),
    }
}
