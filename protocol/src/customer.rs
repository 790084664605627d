//! Customers as stored by the hub.

use crate::codec::Stored;
use crate::ids::{BasketId, CustomerId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A registered customer. The password is kept only as an argon2id PHC string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: CustomerId,
    /// Lower-cased, trimmed; unique.
    pub email: String,
    pub name: String,
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The customer's one basket, shared by every device and channel.
    #[serde(default)]
    pub basket: Option<BasketId>,
    /// The customer asked for no marketing email (an unsubscribe link, or the account page).
    #[serde(default)]
    pub marketing_opt_out: bool,
}

impl std::fmt::Debug for CustomerRecord {
    /// Leaves the password hash out, so it never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRecord")
            .field("id", &self.id)
            .field("basket", &self.basket)
            .finish_non_exhaustive()
    }
}

impl Stored for CustomerRecord {
    const KIND: &'static str = "customer";
    const VERSION: u16 = 1;
}

/// Normalises an email for lookup: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A plausible email: one `@`, something before it, a dot in the domain, no spaces, ≤ 254 chars.
pub fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
}

/// A sign-in session. Stored under a hash of its token, so a copy of the database holds no
/// usable token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub customer: CustomerId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Stored for SessionRecord {
    const KIND: &'static str = "session";
    const VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.co", "ada.lovelace@example.com"] {
            assert!(is_plausible_email(good), "{good}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a b@c.de", "a@b.co.", "a@b@c.de",
        ] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }
}
