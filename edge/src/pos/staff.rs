//! Staff sign-in: a PIN checked against the argon2id hash in the node's settings, wrong PINs
//! counted durably (a restart does not reset them), a lock after [`MAX_PIN_FAILURES`] in a row
//! until a manager unlocks, and session tokens stored only as their SHA-256, ending after an
//! idle time or a maximum age. Neither PINs nor tokens are ever logged.
//!
//! A sign-in counts its attempt *before* the PIN is checked and, when it matches, takes back
//! the failures counted up to it (unless a lock was reached meanwhile): parallel guesses cannot
//! get past the lock, and a crash in between counts as a wrong PIN (the safe side).

use super::{is_pin, Caller, Pos, PosError, SignedIn, MAX_PIN_FAILURES};
use crate::config::{StaffMember, StaffRole};
use crate::ops::OpError;
use crate::storage::{WriteSet, T};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use protocol::codec::Stored;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Wrong PINs in a row of one staff member (`f` + staff id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinFailures {
    pub failures: u32,
}

impl Stored for PinFailures {
    const KIND: &'static str = "edge.pos.pin_failures";
    const VERSION: u16 = 1;
}

impl PinFailures {
    pub fn locked(&self) -> bool {
        self.failures >= MAX_PIN_FAILURES
    }
}

/// A signed-in staff member's session (`a` + SHA-256 of the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffSession {
    pub staff: String,
    pub started_ms: u64,
    /// Last use (stored at most every [`touch_every`]), from which the idle time runs.
    pub seen_ms: u64,
}

impl Stored for StaffSession {
    const KIND: &'static str = "edge.pos.staff_session";
    const VERSION: u16 = 1;
}

/// The prefix of staff session tokens (tells them apart from the node's API token).
pub const TOKEN_PREFIX: &str = "st_";

fn failures_key(staff: &str) -> Vec<u8> {
    let mut k = vec![b'f'];
    k.extend_from_slice(staff.as_bytes());
    k
}

fn session_key(hash: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![b'a'];
    k.extend_from_slice(hash);
    k
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> Result<String, PosError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| PosError::Hash(format!("the random source failed: {e}")))?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

fn pin_matches(pin: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(pin.as_bytes(), &h)
            .is_ok()
    })
}

/// How often a session's last use is written: often enough for the idle time, not per request.
fn touch_every(idle_ms: u64) -> u64 {
    (idle_ms / 4).min(60_000)
}

/// A new session: the token (shown once to the till, never stored) and who it is for.
pub struct NewSession {
    pub token: String,
    pub who: SignedIn,
    /// When it ends if it is not used before (ms since the epoch).
    pub idle_until_ms: u64,
}

impl Pos {
    /// Signs a staff member in with their PIN: a session, or why not (a wrong PIN is counted;
    /// the [`MAX_PIN_FAILURES`]th in a row locks them).
    #[tracing::instrument(skip(self, pin))]
    pub fn sign_in(&self, staff_id: &str, pin: &str) -> Result<NewSession, PosError> {
        let member = self
            .member(staff_id)
            .ok_or_else(|| PosError::UnknownStaff(staff_id.chars().take(40).collect()))?
            .clone();
        if !is_pin(pin) {
            return Err(PosError::PinFormat);
        }
        let counted = self.count_and_verify(&member, pin)?;
        let token = new_token()?;
        let hash = token_hash(&token);
        let now = self.now_ms();
        let session = StaffSession {
            staff: member.id.clone(),
            started_ms: now,
            seen_ms: now,
        };
        self.settle_good_pin(&member.id, counted, &hash, &session)?;
        tracing::info!(staff = %member.id, role = ?member.role, "staff signed in");
        Ok(NewSession {
            token,
            who: SignedIn {
                id: member.id,
                name: member.name,
                role: member.role,
                token_hash: hash,
                started_ms: now,
            },
            idle_until_ms: now.saturating_add(self.idle_ms),
        })
    }

    /// After a good PIN: stores the session and takes back the failures counted up to this
    /// attempt, in one change. Wrong PINs sent in parallel may have reached the lock since this
    /// attempt was counted: then the lock stands (only a manager lifts it) and no session is
    /// made.
    fn settle_good_pin(
        &self,
        staff: &str,
        counted: PinFailures,
        hash: &[u8; 32],
        session: &StaffSession,
    ) -> Result<(), PosError> {
        let key = failures_key(staff);
        self.store.local_change(|db| {
            let now: PinFailures = db.get(T::Pos, &key)?.unwrap_or_default();
            // This attempt's own count reaching the limit is no lock (its PIN was right); only
            // wrong PINs counted after it are.
            if now.locked() && now.failures > counted.failures {
                return Err(PosError::Locked(staff.to_string()));
            }
            let left = PinFailures {
                failures: now.failures.saturating_sub(counted.failures),
            };
            let mut w = WriteSet::default();
            w.put(T::Pos, key.clone(), &left)?;
            w.put(T::Pos, session_key(hash), session)?;
            Ok((w, ()))
        })
    }

    /// Counts a PIN attempt of `member` durably *before* checking it, then checks it: the
    /// failures counted up to this attempt (the caller takes them back once it acted), or why
    /// not. Shared by sign-in and a manager's approval, so both count toward the same lock.
    fn count_and_verify(&self, member: &StaffMember, pin: &str) -> Result<PinFailures, PosError> {
        let key = failures_key(&member.id);
        let counted = self.store.local_change(|db| {
            let mut f: PinFailures = db.get(T::Pos, &key)?.unwrap_or_default();
            if f.locked() {
                return Err(PosError::Locked(member.id.clone()));
            }
            f.failures += 1;
            let mut w = WriteSet::default();
            w.put(T::Pos, key.clone(), &f)?;
            Ok((w, f))
        })?;
        use secrecy::ExposeSecret;
        if !pin_matches(pin, member.pin_hash.expose_secret()) {
            tracing::warn!(staff = %member.id, failures = counted.failures, "wrong PIN");
            if counted.locked() {
                return Err(PosError::Locked(member.id.clone()));
            }
            return Err(PosError::WrongPin {
                left: MAX_PIN_FAILURES - counted.failures,
            });
        }
        Ok(counted)
    }

    /// Checks a staff member's PIN as a sign-in does (counted toward their lock), clearing
    /// their count when it matches.
    pub(crate) fn check_pin(&self, member: &StaffMember, pin: &str) -> Result<(), PosError> {
        if !is_pin(pin) {
            return Err(PosError::PinFormat);
        }
        let counted = self.count_and_verify(member, pin)?;
        // Take back the failures counted up to this attempt; a lock reached meanwhile by wrong
        // PINs sent in parallel stands (this attempt's own count reaching the limit is not a
        // lock: its PIN was right).
        let key = failures_key(&member.id);
        self.store.local_change(|db| {
            let now: PinFailures = db.get(T::Pos, &key)?.unwrap_or_default();
            if now.locked() && now.failures > counted.failures {
                return Err(PosError::Locked(member.id.clone()));
            }
            let left = PinFailures {
                failures: now.failures.saturating_sub(counted.failures),
            };
            let mut w = WriteSet::default();
            w.put(T::Pos, key.clone(), &left)?;
            Ok((w, ()))
        })
    }

    /// The staff member behind a session token, if the session is valid; an idle one, or one
    /// older than the maximum session age, ends here. A use of the session: it keeps it alive.
    pub fn authenticate(&self, token: &str) -> Result<SignedIn, PosError> {
        self.check_session(token, true)
    }

    /// Like [`Pos::authenticate`], but changes nothing: not the last use (a background poll
    /// such as the POS pages' status badge must not keep an unattended till signed in), and an
    /// ended session is not removed here.
    pub fn peek(&self, token: &str) -> Result<SignedIn, PosError> {
        self.check_session(token, false)
    }

    fn check_session(&self, token: &str, touch: bool) -> Result<SignedIn, PosError> {
        let hash = token_hash(token);
        let key = session_key(&hash);
        let unknown = || PosError::Unauthenticated {
            code: "unauthenticated",
            message: "this staff session is signed out or unknown: sign in again with your PIN"
                .into(),
        };
        let session: StaffSession = self.store.db().get(T::Pos, &key)?.ok_or_else(unknown)?;
        let now = self.now_ms();
        let idle = now.saturating_sub(session.seen_ms);
        let age = now.saturating_sub(session.started_ms);
        let ended = if idle > self.idle_ms {
            Some(("unused for more than", self.idle_ms))
        } else if age > self.max_age_ms {
            Some(("signed in more than", self.max_age_ms))
        } else {
            None
        };
        if let Some((why, limit)) = ended {
            if touch {
                self.store.local_change(|db| {
                    let mut w = WriteSet::default();
                    if db.contains(T::Pos, &key)? {
                        w.remove(T::Pos, key.clone());
                    }
                    Ok::<_, PosError>((w, ()))
                })?;
            }
            let ago = if why.starts_with("signed") {
                " ago"
            } else {
                ""
            };
            return Err(PosError::Unauthenticated {
                code: "session_expired",
                message: format!(
                    "the staff session was {why} {}{ago}: sign in again with your PIN",
                    humantime::format_duration(std::time::Duration::from_millis(limit))
                ),
            });
        }
        let member = self
            .member(&session.staff)
            .ok_or_else(|| PosError::Unauthenticated {
                code: "unauthenticated",
                message: format!(
                    "'{}' is no longer on this store's staff list: ask a manager",
                    session.staff
                ),
            })?
            .clone();
        if touch && idle >= touch_every(self.idle_ms) {
            self.store.local_change(|db| {
                let mut w = WriteSet::default();
                // Not if it ended meanwhile (a sign-out in parallel).
                if db.contains(T::Pos, &key)? {
                    let touched = StaffSession {
                        seen_ms: now,
                        ..session.clone()
                    };
                    w.put(T::Pos, key.clone(), &touched)?;
                }
                Ok::<_, PosError>((w, ()))
            })?;
        }
        Ok(SignedIn {
            id: member.id,
            name: member.name,
            role: member.role,
            token_hash: hash,
            started_ms: session.started_ms,
        })
    }

    /// Ends a session.
    pub fn sign_out(&self, who: &SignedIn) -> Result<(), PosError> {
        let key = session_key(&who.token_hash);
        self.store.local_change(|db| {
            let mut w = WriteSet::default();
            if db.contains(T::Pos, &key)? {
                w.remove(T::Pos, key);
            }
            Ok::<_, PosError>((w, ()))
        })?;
        tracing::info!(staff = %who.id, "staff signed out");
        Ok(())
    }

    /// Clears a staff member's wrong PINs (and so their lock). A manager's act (or the node's
    /// API token, for the operator when no manager can sign in). Answers whether they were
    /// locked.
    #[tracing::instrument(skip(self, by))]
    pub fn unlock(&self, by: &Caller, staff_id: &str) -> Result<bool, PosError> {
        let by_id =
            match by {
                Caller::Staff(s) if s.role == StaffRole::Manager => s.id.as_str(),
                Caller::Staff(_) => return Err(PosError::Forbidden(
                    "unlocking a staff member needs a manager: ask a manager to sign in and unlock"
                        .into(),
                )),
                Caller::Node => "node API token",
            };
        let member = self.member(staff_id).ok_or_else(|| {
            OpError::NotFound(format!(
                "staff member '{}'",
                staff_id.chars().take(40).collect::<String>()
            ))
        })?;
        let key = failures_key(&member.id);
        let was = self.store.local_change(|db| {
            let f: PinFailures = db.get(T::Pos, &key)?.unwrap_or_default();
            let mut w = WriteSet::default();
            if f.failures > 0 {
                w.put(T::Pos, key.clone(), &PinFailures::default())?;
            }
            Ok::<_, PosError>((w, f))
        })?;
        tracing::info!(staff = %member.id, by = %by_id, was_locked = was.locked(), "staff unlocked");
        Ok(was.locked())
    }

    /// A staff member's wrong PINs in a row.
    pub fn pin_failures(&self, staff_id: &str) -> Result<PinFailures, PosError> {
        Ok(self
            .store
            .db()
            .get(T::Pos, &failures_key(staff_id))?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PosSettings;
    use crate::store::{Identity, Store};
    use protocol::replication::ReplicaId;
    use protocol::LocationId;
    use std::sync::Arc;

    fn pos(dir: &std::path::Path) -> Pos {
        let store = Store::open(
            dir,
            4,
            Identity {
                replica: ReplicaId("r1".into()),
                location: LocationId("store-berlin".into()),
                store_name: "Berlin".into(),
                safety_buffer: 2,
                online_share_percent: 50,
            },
        )
        .expect("opens");
        Pos::new(
            Arc::new(store),
            &PosSettings::default(),
            super::super::PosClock::manual(1_800_000_000_000),
        )
    }

    fn set_failures(pos: &Pos, staff: &str, failures: u32) {
        pos.store
            .local_change(|_| {
                let mut w = WriteSet::default();
                w.put(T::Pos, failures_key(staff), &PinFailures { failures })?;
                Ok::<_, PosError>((w, ()))
            })
            .expect("written");
    }

    fn session() -> StaffSession {
        StaffSession {
            staff: "cleo".into(),
            started_ms: 1,
            seen_ms: 1,
        }
    }

    #[test]
    fn a_good_pin_does_not_lift_a_lock_reached_in_parallel() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pos = pos(dir.path());
        // This attempt was counted as the first; four parallel wrong guesses came after it.
        set_failures(&pos, "cleo", 5);
        let hash = [7u8; 32];
        let counted = PinFailures { failures: 1 };
        let refused = pos.settle_good_pin("cleo", counted, &hash, &session());
        assert!(matches!(refused, Err(PosError::Locked(_))), "{refused:?}");
        assert_eq!(pos.pin_failures("cleo").expect("reads").failures, 5);
        let stored: Option<StaffSession> = pos
            .store
            .db()
            .get(T::Pos, &session_key(&hash))
            .expect("reads");
        assert_eq!(stored, None, "no session for a locked member");
    }

    #[test]
    fn a_good_pin_takes_back_only_the_failures_counted_up_to_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pos = pos(dir.path());
        // Two earlier wrong PINs and this attempt were counted (3); one wrong guess came in
        // parallel after it (4): it stays counted.
        set_failures(&pos, "cleo", 4);
        let hash = [8u8; 32];
        let counted = PinFailures { failures: 3 };
        pos.settle_good_pin("cleo", counted, &hash, &session())
            .expect("signs in");
        assert_eq!(pos.pin_failures("cleo").expect("reads").failures, 1);
        let stored: Option<StaffSession> = pos
            .store
            .db()
            .get(T::Pos, &session_key(&hash))
            .expect("reads");
        assert_eq!(stored, Some(session()));
    }

    #[test]
    fn the_right_pin_after_four_wrong_ones_signs_in() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pos = pos(dir.path());
        // Four wrong PINs, then this attempt (the fifth count): its PIN was right.
        set_failures(&pos, "cleo", 5);
        let hash = [9u8; 32];
        let counted = PinFailures { failures: 5 };
        pos.settle_good_pin("cleo", counted, &hash, &session())
            .expect("signs in");
        assert_eq!(pos.pin_failures("cleo").expect("reads").failures, 0);
    }
}
