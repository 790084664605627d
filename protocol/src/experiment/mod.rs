//! A/B tests: an experiment's definition ([`Experiment`]), its validation (splits that do not
//! add up to exactly 100 % are refused, with the field), the deterministic assignment of a
//! subject to a variant ([`bucket`], [`Experiment::variant_for`]) and the statistics of its
//! report ([`stats`]).
//!
//! # Assignment
//! A subject's bucket is the first 8 bytes of SHA-256 over
//! `"omnihub-experiment\0" + salt + "\0" + subject`, big-endian, modulo 10 000 (the subject is
//! `c:<customer ulid>` or `a:<anonymous ulid>`). SHA-256 is fixed by its standard, so a bucket
//! never changes with a compiler or crate version (unlike `DefaultHasher`), and the modulo bias
//! of 2^64 over 10 000 buckets is below 10^-15. The bucket picks the variant by cumulative
//! weights in their order: with weights 5000/5000, buckets 0–4999 are the first variant. The
//! salt defaults to the experiment's key, so two experiments split the same shoppers
//! independently.
//!
//! Assignment here is a pure function of (experiment, subject); what the hub adds — the first
//! exposure kept per subject, carried from an anonymous visit to the customer at sign-in — is in
//! `hub::experiments`.

pub mod stats;

#[cfg(test)]
mod tests;

use crate::board::is_plain_id;
use crate::checkout::FieldError;
use crate::codec::Stored;
use crate::event::{EventKind, Subject};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// The buckets a subject can fall in: weights are in basis points of this.
pub const BUCKETS: u32 = 10_000;
/// Most variants of one experiment.
pub const MAX_VARIANTS: usize = 20;
/// Most audience segments of one experiment.
pub const MAX_AUDIENCE: usize = 32;
const MAX_TEXT: usize = 2_000;

/// Where the variants are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// Storefront content (a page block, a personalization slot).
    Storefront,
    /// A promotion restricted to variants (its `experiment` condition).
    Promotion,
    /// In-store board content.
    Board,
}

/// What counts as a conversion: the subject's first such event after their first exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    #[default]
    OrderPlaced,
    BasketLineAdded,
    CheckoutStarted,
}

impl Goal {
    /// The event kind that converts.
    pub fn kind(self) -> EventKind {
        match self {
            Goal::OrderPlaced => EventKind::OrderPlaced,
            Goal::BasketLineAdded => EventKind::BasketLineAdded,
            Goal::CheckoutStarted => EventKind::CheckoutStarted,
        }
    }
}

/// Draft → running → stopped; never back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    Draft,
    Running,
    Stopped,
}

impl ExperimentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Draft => "draft",
            ExperimentStatus::Running => "running",
            ExperimentStatus::Stopped => "stopped",
        }
    }
}

/// One arm of an experiment; the first is the control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSpec {
    pub key: String,
    /// Share of the traffic in basis points of [`BUCKETS`] (5000 = 50 %).
    pub weight_bp: u32,
    #[serde(default)]
    pub description: String,
}

/// An experiment as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub hypothesis: String,
    pub surface: Surface,
    /// The first variant is the control the others are compared with.
    pub variants: Vec<VariantSpec>,
    /// Segment keys; a subject in any of them takes part (empty: everyone).
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default)]
    pub goal: Goal,
    /// Mixed into the hash (defaults to the key).
    pub salt: String,
    pub status: ExperimentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
    /// Who created it (a back-office user id or `admin-token`).
    pub created_by: String,
}

impl Stored for Experiment {
    const KIND: &'static str = "experiment";
    const VERSION: u16 = 1;
}

/// A variant's share as given by a client: basis points or a percentage (at most two
/// decimals), exactly one of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub key: String,
    #[serde(default)]
    pub weight_bp: Option<u32>,
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub description: String,
}

/// Checks variants as a client sent them: at least 2 and at most [`MAX_VARIANTS`], unique plain
/// keys, each weight above zero given once (basis points or a percentage with at most two
/// decimals), summing to exactly 100 %. Every problem is reported with its field.
pub fn variants_from(input: &[VariantInput]) -> Result<Vec<VariantSpec>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if input.len() < 2 {
        errors.push(FieldError::new(
            "variants",
            format!(
                "an experiment needs at least 2 variants (a control and a challenger), not {}",
                input.len()
            ),
        ));
    }
    if input.len() > MAX_VARIANTS {
        errors.push(FieldError::new(
            "variants",
            format!("at most {MAX_VARIANTS} variants"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(input.len());
    let mut total: u64 = 0;
    let mut weights_ok = true;
    for (i, v) in input.iter().enumerate() {
        let key = v.key.trim();
        if !is_plain_id(key) {
            errors.push(FieldError::new(
                &format!("variants[{i}].key"),
                "a variant key is 1 to 64 letters, digits, '-' or '_'",
            ));
        } else if !seen.insert(key.to_string()) {
            errors.push(FieldError::new(
                &format!("variants[{i}].key"),
                format!("variant key '{key}' is used twice: keys must be unique"),
            ));
        }
        if v.description.chars().count() > MAX_TEXT {
            errors.push(FieldError::new(
                &format!("variants[{i}].description"),
                format!("at most {MAX_TEXT} characters"),
            ));
        }
        match weight_of(v) {
            Ok(bp) => {
                total += u64::from(bp);
                out.push(VariantSpec {
                    key: key.to_string(),
                    weight_bp: bp,
                    description: v.description.trim().to_string(),
                });
            }
            Err((field, message)) => {
                weights_ok = false;
                errors.push(FieldError::new(&format!("variants[{i}].{field}"), message));
            }
        }
    }
    if weights_ok && !input.is_empty() && total != u64::from(BUCKETS) {
        errors.push(FieldError::new(
            "variants",
            format!(
                "the weights add up to {} % ({total} basis points): they must add up to exactly 100 % (10000 basis points)",
                percent_text(total)
            ),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn percent_text(bp: u64) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

fn weight_of(v: &VariantInput) -> Result<u32, (&'static str, String)> {
    let bp = match (v.weight_bp, v.percent) {
        (Some(_), Some(_)) => {
            return Err((
                "weight_bp",
                "give weight_bp or percent, not both".to_string(),
            ))
        }
        (None, None) => {
            return Err((
                "weight_bp",
                "a variant needs a weight: weight_bp (5000 = 50 %) or percent".to_string(),
            ))
        }
        (Some(bp), None) => bp,
        (None, Some(p)) => {
            let scaled = p * 100.0;
            let rounded = scaled.round();
            if !p.is_finite() || (scaled - rounded).abs() > 1e-6 || !(0.0..=100.0).contains(&p) {
                return Err((
                    "percent",
                    format!("{p} is not a percentage from 0 to 100 with at most two decimals"),
                ));
            }
            // In 0..=10000 (checked above), so the cast is exact.
            rounded as u32
        }
    };
    if bp == 0 {
        return Err((
            "weight_bp",
            "a variant's weight must be above 0".to_string(),
        ));
    }
    if bp > BUCKETS {
        return Err(("weight_bp", format!("{bp} basis points is more than 100 %")));
    }
    Ok(bp)
}

/// Checks an experiment's texts and audience (its variants are checked by [`variants_from`]).
pub fn check_fields(
    key: &str,
    name: &str,
    hypothesis: &str,
    audience: &[String],
    salt: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !is_plain_id(key) {
        errors.push(FieldError::new(
            "key",
            "an experiment key is 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if name.trim().is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("name", "a name is 1 to 200 characters"));
    }
    if hypothesis.chars().count() > MAX_TEXT {
        errors.push(FieldError::new(
            "hypothesis",
            format!("at most {MAX_TEXT} characters"),
        ));
    }
    if audience.len() > MAX_AUDIENCE {
        errors.push(FieldError::new(
            "audience",
            format!("at most {MAX_AUDIENCE} segments"),
        ));
    }
    for (i, s) in audience.iter().enumerate() {
        if !is_plain_id(s) {
            errors.push(FieldError::new(
                &format!("audience[{i}]"),
                "a segment key is 1 to 64 letters, digits, '-' or '_'",
            ));
        }
    }
    if salt.is_empty() || salt.len() > 64 {
        errors.push(FieldError::new("salt", "a salt is 1 to 64 bytes"));
    }
    errors
}

/// The subject as hashed: `c:<ulid>` or `a:<ulid>`.
pub fn subject_text(subject: &Subject) -> String {
    match subject {
        Subject::Customer(c) => format!("c:{c}"),
        Subject::Anonymous(a) => format!("a:{a}"),
    }
}

/// The subject's bucket in `[0, BUCKETS)` for an experiment's salt (see the module docs).
pub fn bucket(salt: &str, subject: &Subject) -> u32 {
    let mut hash = Sha256::new();
    hash.update(b"omnihub-experiment\0");
    hash.update(salt.as_bytes());
    hash.update(b"\0");
    hash.update(subject_text(subject).as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below BUCKETS, so it fits.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// The variant a bucket falls in by cumulative weights (the last one if the weights fall short,
/// which validation rules out).
pub fn variant_at(variants: &[VariantSpec], bucket: u32) -> Option<&VariantSpec> {
    let mut upper = 0u32;
    for v in variants {
        upper = upper.saturating_add(v.weight_bp);
        if bucket < upper {
            return Some(v);
        }
    }
    variants.last()
}

impl Experiment {
    /// The variant the hash gives `subject`, with its bucket.
    pub fn variant_for(&self, subject: &Subject) -> Option<(&VariantSpec, u32)> {
        let b = bucket(&self.salt, subject);
        variant_at(&self.variants, b).map(|v| (v, b))
    }

    /// Whether a subject in `segments` takes part (an empty audience takes everyone).
    pub fn admits(&self, segments: &[String]) -> bool {
        self.audience.is_empty() || self.audience.iter().any(|a| segments.contains(a))
    }

    pub fn has_variant(&self, key: &str) -> bool {
        self.variants.iter().any(|v| v.key == key)
    }

    /// The control: the first variant.
    pub fn control(&self) -> Option<&VariantSpec> {
        self.variants.first()
    }
}
