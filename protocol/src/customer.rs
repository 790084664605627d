//! Customers as stored by the hub.

use crate::codec::Stored;
use crate::consent::{ConsentChannel, ConsentChoice, ConsentPurpose, ConsentSource, Consents};
use crate::ids::{BasketId, CustomerId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A registered customer. The password is kept only as an argon2id PHC string.
///
/// Version 2 replaced version 1's `marketing_opt_out` (no opt-out meant "may mail") with
/// explicit [`Consents`]; a version-1 record reads as version 2 through [`CustomerRecordWire`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CustomerRecordWire")]
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
    /// What the customer agreed to, per channel and purpose, with the history. Nothing by
    /// default.
    #[serde(default)]
    pub consents: Consents,
    /// The customer's phone number as [`normalize_phone`] keeps it (`+` and digits); unique.
    /// A clerk finds the customer at the till by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The customer's loyalty number ([`normalize_loyalty`]: digits); unique. A clerk finds the
    /// customer at the till by it (typed, or scanned from the loyalty card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_number: Option<String>,
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
    const VERSION: u16 = 2;
    const READS_FROM: u16 = 1;
}

/// A stored customer of either version, as read.
#[derive(Deserialize)]
struct CustomerRecordWire {
    id: CustomerId,
    email: String,
    name: String,
    password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default)]
    basket: Option<BasketId>,
    /// Version 1 only.
    #[serde(default)]
    marketing_opt_out: bool,
    /// Version 2 only.
    #[serde(default)]
    consents: Option<Consents>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    loyalty_number: Option<String>,
}

impl From<CustomerRecordWire> for CustomerRecord {
    /// The migration of a version-1 record: `marketing_opt_out == false` was the default, not
    /// an explicit consent, so it becomes no consent at all; `true` (the customer
    /// unsubscribed) is kept as a withdrawal of email marketing (source `migration`, dated at
    /// the record's creation: the true time was not kept).
    fn from(w: CustomerRecordWire) -> CustomerRecord {
        let consents = w.consents.unwrap_or_else(|| {
            let mut consents = Consents::default();
            if w.marketing_opt_out {
                consents.apply(
                    &[ConsentChoice {
                        channel: ConsentChannel::Email,
                        purpose: ConsentPurpose::Marketing,
                        granted: false,
                    }],
                    w.created_at,
                    ConsentSource::Migration,
                );
            }
            consents
        });
        CustomerRecord {
            id: w.id,
            email: w.email,
            name: w.name,
            password_hash: w.password_hash,
            created_at: w.created_at,
            basket: w.basket,
            consents,
            phone: w.phone,
            loyalty_number: w.loyalty_number,
        }
    }
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

/// A phone number for an exact lookup: spaces, `-`, `.`, `/` and brackets dropped, a leading
/// `00` read as `+`; then `+` and 7 to 15 digits, or 7 to 15 digits. `Err` says what to fix.
pub fn normalize_phone(phone: &str) -> Result<String, String> {
    let kept: String = phone
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')'))
        .collect();
    let (plus, digits) = match kept.strip_prefix('+') {
        Some(rest) => (true, rest.to_string()),
        None => match kept.strip_prefix("00") {
            Some(rest) => (true, rest.to_string()),
            None => (false, kept.clone()),
        },
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "a phone number is digits, optionally after '+' (spaces and dashes are fine)".into(),
        );
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!(
            "a phone number has 7 to 15 digits, this has {}: type the whole number",
            digits.len()
        ));
    }
    Ok(if plus { format!("+{digits}") } else { digits })
}

/// A loyalty number for an exact lookup: spaces and dashes dropped, then 8 to 16 digits.
/// `Err` says what to fix.
pub fn normalize_loyalty(number: &str) -> Result<String, String> {
    let digits: String = number
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a loyalty number is digits (spaces and dashes are fine)".into());
    }
    if !(8..=16).contains(&digits.len()) {
        return Err(format!(
            "a loyalty number has 8 to 16 digits, this has {}: type or scan the whole number",
            digits.len()
        ));
    }
    Ok(digits)
}

/// An email as a clerk may see it: the first character of the local part, `***`, and the
/// domain (`a***@example.com`), so a person at the till can confirm who it is without reading
/// the address.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
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

    /// A version-1 record as the previous build wrote it.
    #[derive(Serialize, Deserialize)]
    struct V1 {
        id: CustomerId,
        email: String,
        name: String,
        password_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        basket: Option<BasketId>,
        marketing_opt_out: bool,
    }
    impl Stored for V1 {
        const KIND: &'static str = "customer";
        const VERSION: u16 = 1;
    }

    #[test]
    fn version_1_records_migrate_without_consent() {
        use crate::codec::{decode, encode};
        let created_at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        for opted_out in [false, true] {
            let old = V1 {
                id: CustomerId::new(),
                email: "ada@example.com".into(),
                name: "Ada".into(),
                password_hash: "phc".into(),
                created_at,
                basket: None,
                marketing_opt_out: opted_out,
            };
            let record: CustomerRecord = decode(&encode(&old).expect("encodes")).expect("reads v1");
            assert_eq!(record.email, "ada@example.com");
            // Neither the default (false) nor an opt-out is a consent.
            assert!(!record
                .consents
                .granted(ConsentChannel::Email, ConsentPurpose::Marketing));
            let history: Vec<_> = record
                .consents
                .history
                .iter()
                .map(|r| (r.granted, r.source, r.at))
                .collect();
            if opted_out {
                assert_eq!(history, vec![(false, ConsentSource::Migration, created_at)]);
            } else {
                assert!(history.is_empty());
            }
            // Written again as version 2, it reads back the same.
            let again: CustomerRecord =
                decode(&encode(&record).expect("encodes")).expect("reads v2");
            assert!(again == record);
        }
    }

    #[test]
    fn phones_loyalty_numbers_and_masks() {
        for (typed, kept) in [
            ("+49 30 1234-567", "+49301234567"),
            ("0049 (30) 1234567", "+49301234567"),
            ("030 1234567", "0301234567"),
        ] {
            assert_eq!(normalize_phone(typed).as_deref(), Ok(kept), "{typed}");
        }
        for bad in [
            "",
            "+",
            "12345",
            "+49 30 abc",
            "1234567890123456",
            "++4930123456",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_loyalty("7000 0001-23").as_deref(),
            Ok("7000000123")
        );
        for bad in ["", "1234567", "12345678901234567", "7000x00012"] {
            assert!(normalize_loyalty(bad).is_err(), "{bad}");
        }
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
    }
}
