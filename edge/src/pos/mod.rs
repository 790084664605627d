//! The in-store POS's staff and tills (`docs/pos.md`): staff sign in with a personal PIN
//! (argon2id, locked after [`MAX_PIN_FAILURES`] consecutive failures until a manager unlocks),
//! get a session token, open a till with a float, ring up sales on it, and close it with a cash
//! count that produces a Z-report.
//!
//! Everything here is node-local and goes nowhere: it lives in the `pos` tree, written through
//! [`Store::local_change`] (under the writer lock, one transaction, flushed). A sale rung up at
//! a till changes the till's running totals in the sale's own write ([`till::ring_up`]); the
//! hub gets the staff id as the sale's `clerk`.
//!
//! | key (`pos` tree)                     | value                 |
//! |--------------------------------------|-----------------------|
//! | `f` + staff id                       | [`staff::PinFailures`] |
//! | `a` + SHA-256 of the session token   | [`staff::StaffSession`] |
//! | `t` + till id                        | [`till::TillState`]   |
//! | `z` + till id + `0x00` + n (be u64)  | [`till::ZReport`]     |
//! | `m` + sale id + line (be u32)        | [`overrides::ManualAdjustmentRecord`] (the audit) |
//! | `g` + grant id                       | [`overrides::ApprovalGrant`] (the POS page) |
//! | `C` + customer id                    | [`customers::TillCustomer`] (found on the hub) |
//! | `ks` / `ko` + card payment id        | [`card::CardState`] (card tender) / open index |

pub mod card;
pub mod customers;
pub(crate) mod http;
pub mod overrides;
pub(crate) mod pages;
pub(crate) mod pages_returns;
pub(crate) mod pickups;
pub mod returns;
pub mod staff;
pub mod till;

use crate::config::{PosSettings, StaffMember, StaffRole};
use crate::ops::OpError;
use crate::storage::StoreError;
use crate::store::Store;
use argon2::password_hash::{PasswordHasher, SaltString};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use staff::{PinFailures, StaffSession};
pub use till::{TillSale, TillState, TillTotals, ZReport};

/// Consecutive wrong PINs after which a staff member is locked until a manager unlocks them.
pub const MAX_PIN_FAILURES: u32 = 5;

/// The clock staff sessions and tills are judged by: the system's, or a manual one in tests.
#[derive(Debug, Clone, Default)]
pub struct PosClock {
    manual: Option<Arc<AtomicU64>>,
}

impl PosClock {
    /// The system clock.
    pub fn system() -> PosClock {
        PosClock { manual: None }
    }

    /// A clock that stands still at `start_ms` until [`PosClock::advance`] moves it (tests).
    pub fn manual(start_ms: u64) -> PosClock {
        PosClock {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.manual {
            let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            ms.fetch_add(by, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => crate::store::now_ms(),
        }
    }
}

/// Who is calling the API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A machine client with the node's API token: everything but staff-only acts.
    Node,
    /// A signed-in staff member.
    Staff(SignedIn),
}

/// A staff member behind a valid session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub id: String,
    pub name: String,
    pub role: StaffRole,
    /// The key the session is stored under (never the token itself).
    pub(crate) token_hash: [u8; 32],
    pub started_ms: u64,
}

/// Why a POS request is refused; a refused request changed nothing (a wrong PIN is counted).
#[derive(Debug, thiserror::Error)]
pub enum PosError {
    #[error("no staff member '{0}' at this store: check the staff id")]
    UnknownStaff(String),
    #[error("a PIN is 4 to 8 digits")]
    PinFormat,
    #[error("wrong PIN: {left} {} left before the staff member is locked", if *left == 1 { "try" } else { "tries" })]
    WrongPin { left: u32 },
    #[error(
        "staff member '{0}' is locked after {MAX_PIN_FAILURES} wrong PINs: ask a manager to unlock"
    )]
    Locked(String),
    /// No valid staff session: `code` is `unauthenticated` or `session_expired`.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("no till '{till}' at this store; its tills are: {known}")]
    UnknownTill { till: String, known: String },
    #[error("cannot hash the PIN: {0}")]
    Hash(String),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl PosError {
    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> PosError {
        PosError::Op(OpError::Conflict {
            code,
            message: message.into(),
        })
    }

    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> PosError {
        PosError::Op(OpError::invalid(code, message))
    }
}

/// The POS: its staff directory, tills and clock, over the node's store.
pub struct Pos {
    pub(crate) store: Arc<Store>,
    staff: BTreeMap<String, StaffMember>,
    tills: Vec<String>,
    pub(crate) currency: protocol::Currency,
    idle_ms: u64,
    /// A session ends this long after its sign-in, however busy.
    max_age_ms: u64,
    clock: PosClock,
}

impl Pos {
    pub fn new(store: Arc<Store>, settings: &PosSettings, clock: PosClock) -> Pos {
        Pos {
            store,
            staff: settings
                .staff
                .iter()
                .map(|m| (m.id.clone(), m.clone()))
                .collect(),
            tills: settings.tills.clone(),
            currency: settings.currency,
            idle_ms: u64::try_from(settings.session_idle.as_millis()).unwrap_or(u64::MAX),
            max_age_ms: u64::try_from(settings.session_max_age.as_millis()).unwrap_or(u64::MAX),
            clock,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn member(&self, id: &str) -> Option<&StaffMember> {
        self.staff.get(id)
    }

    /// The staff who may sign in, by id.
    pub(crate) fn staff_list(&self) -> impl Iterator<Item = &StaffMember> {
        self.staff.values()
    }

    /// The store's tills, as configured.
    pub(crate) fn tills(&self) -> &[String] {
        &self.tills
    }

    /// The till id if this store has it.
    pub(crate) fn known_till(&self, till: &str) -> Result<(), PosError> {
        if self.tills.iter().any(|t| t == till) {
            return Ok(());
        }
        Err(PosError::UnknownTill {
            till: till.chars().take(40).collect(),
            known: if self.tills.is_empty() {
                "none (list them in [pos] tills)".into()
            } else {
                self.tills.join(", ")
            },
        })
    }
}

/// Whether `pin` has the form of a PIN: 4 to 8 ASCII digits.
pub fn is_pin(pin: &str) -> bool {
    (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

/// The argon2id PHC string of a PIN (4 to 8 digits), for a `[[pos.staff]]` entry's `pin_hash`.
pub fn hash_pin(pin: &str) -> Result<String, PosError> {
    if !is_pin(pin) {
        return Err(PosError::PinFormat);
    }
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| PosError::Hash(format!("the random source failed: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PosError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PosError::Hash(e.to_string()))
}
