//! The prices feed: the price book ([`protocol::feed::PriceRow`]) — a price of a SKU on a price
//! list in a currency, valid from a time (empty: since always) until a time (empty:
//! open-ended), with an optional struck-through `compare_at`.
//!
//! Every entry is stored. The storefront sells one price list (`import.price_list`, default
//! `retail`) in one currency (the catalog's): the entry of that list and currency valid now
//! becomes the variant's shelf price (the latest start wins, then the higher version), and a
//! timer applies entries whose window opens or closes later. Entries of other lists or
//! currencies are stored and reported as applied, for the channels that will sell them.
//!
//! Rules: `sku` known to the hub (imported by the products feed, or in the catalog); `price_list`
//! `[A-Za-z0-9._-]` 1–32, empty is `retail`; `currency` an ISO 4217 code the hub knows; `price`
//! and `compare_at` decimals of 0 or more in that currency; `valid_from`/`valid_until` RFC 3339,
//! `valid_until` after `valid_from`; `version` required. An entry is identified by (sku, list,
//! currency, valid_from): a lower version is stale, the same version and content unchanged.

use super::catalog::{CatalogSide, Changes};
use super::fields::{self, Check};
use super::store::{self, PriceEntry};
use super::{FeedApplier, ImportError, Row, RowError, RowOutcome};
use async_trait::async_trait;
use protocol::feed::{FeedKind, PRICE_COLUMNS};
use protocol::{Currency, Money, Sku};
use std::sync::Arc;

/// The price list of a row that names none.
pub const DEFAULT_LIST: &str = "retail";

/// A price row that passed every field rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceFields {
    pub sku: Sku,
    pub list: String,
    pub currency: Currency,
    pub price: Money,
    pub compare_at: Option<Money>,
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub version: u64,
    pub digest: String,
}

/// Checks every field of a price row; all errors at once.
pub fn validate(row: &Row) -> Result<PriceFields, Vec<RowError>> {
    let mut c = Check::new(row);
    let sku = c.take(fields::sku(row));
    let list = match row.get("price_list") {
        "" => Some(DEFAULT_LIST.to_string()),
        _ => c.take(fields::code(row, "price_list", 32, false)),
    };
    let currency = c.take(fields::currency(row, "currency", None));
    let (price, compare_at) = match currency {
        Some(cur) => {
            let price = c.take(
                fields::required(row, "price", "the price, a decimal like 12.90")
                    .and_then(|_| fields::amount(row, "price", cur)),
            );
            (
                price.flatten(),
                c.take(fields::amount(row, "compare_at", cur)),
            )
        }
        None => (None, None),
    };
    let from_ms = c.take(fields::time_ms(row, "valid_from"));
    let until_ms = c.take(fields::time_ms(row, "valid_until"));
    if let (Some(Some(from)), Some(Some(until))) = (from_ms, until_ms) {
        if until <= from {
            c.fail("valid_until", "must be after valid_from");
        }
    }
    let version = c.take(fields::version(row));
    match (
        sku, list, currency, price, compare_at, from_ms, until_ms, version,
    ) {
        (
            Some(sku),
            Some(list),
            Some(currency),
            Some(price),
            Some(compare_at),
            Some(from_ms),
            Some(until_ms),
            Some(version),
        ) if c.errors.is_empty() => Ok(PriceFields {
            sku,
            list,
            currency,
            price,
            compare_at,
            from_ms,
            until_ms,
            version,
            digest: fields::digest(row, PRICE_COLUMNS),
        }),
        _ => Err(c.errors),
    }
}

/// The prices feed's applier.
pub struct PricesApplier {
    side: Arc<CatalogSide>,
}

impl PricesApplier {
    pub fn new(side: Arc<CatalogSide>) -> PricesApplier {
        PricesApplier { side }
    }

    /// The entry stored (or staged by this page) under the row's key.
    fn existing(
        &self,
        changes: &Changes,
        f: &PriceFields,
        key: &[u8],
    ) -> Result<Option<PriceEntry>, ImportError> {
        let staged = match self.sells(f) {
            true => changes
                .prices
                .get(&f.sku)
                .and_then(|v| v.iter().find(|e| e.from_ms == f.from_ms)),
            false => changes.other_prices.get(key),
        };
        if let Some(e) = staged {
            return Ok(Some(e.clone()));
        }
        Ok(self.side.store().get::<PriceEntry>(key)?)
    }

    /// Whether the row is of the list and currency the storefront sells at.
    fn sells(&self, f: &PriceFields) -> bool {
        f.list == self.side.price_list() && f.currency == self.side.currency()
    }

    fn apply_row(
        &self,
        book: &super::catalog::Book,
        changes: &mut Changes,
        row: &Row,
        f: PriceFields,
    ) -> Result<RowOutcome, ImportError> {
        if changes.variant(book, &f.sku).is_none()
            && self.side.adopt(book, changes, &f.sku).is_none()
        {
            return Ok(RowOutcome::Rejected(vec![row.error(
                "sku",
                format!(
                    "unknown SKU {}: import it with the products feed first",
                    f.sku
                ),
            )]));
        }
        let key = store::price_key(&f.sku, &f.list, f.currency, f.from_ms);
        let existing = self.existing(changes, &f, &key)?;
        let applied = existing.as_ref().map(|e| e.version);
        let same = existing.is_some_and(|e| e.digest == f.digest);
        if let Some(outcome) = fields::by_version(row, f.version, applied, same, "this price") {
            return Ok(outcome);
        }
        let sells = self.sells(&f);
        let entry = PriceEntry {
            sku: f.sku,
            list: f.list,
            currency: f.currency,
            from_ms: f.from_ms,
            until_ms: f.until_ms,
            price: f.price,
            compare_at: f.compare_at,
            version: f.version,
            digest: f.digest,
        };
        if sells {
            if let Some(v) = changes.variant(book, &entry.sku) {
                changes.touched.insert(v.product);
            }
            changes.put_price(entry);
        } else {
            changes.other_prices.insert(key, entry);
        }
        Ok(RowOutcome::Applied)
    }
}

#[async_trait]
impl FeedApplier for PricesApplier {
    fn feed(&self) -> FeedKind {
        FeedKind::Prices
    }

    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
        let checked: Vec<Result<PriceFields, Vec<RowError>>> = rows.iter().map(validate).collect();
        let mut book = self.side.lock().await;
        let mut changes = Changes::default();
        let mut outcomes = Vec::with_capacity(rows.len());
        for (row, checked) in rows.iter().zip(checked) {
            outcomes.push(match checked {
                Err(errors) => RowOutcome::Rejected(errors),
                Ok(f) => self.apply_row(&book, &mut changes, row, f)?,
            });
        }
        self.side.commit(&mut book, changes).await?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields to set, the field named in the error, a part of its reason.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );
    use std::collections::BTreeMap;

    fn row(pairs: &[(&str, &str)]) -> Row {
        let mut fields: BTreeMap<String, String> = [
            ("sku", "COF-1-500"),
            ("currency", "EUR"),
            ("price", "11.50"),
            ("version", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            fields.insert(k.to_string(), v.to_string());
        }
        Row { number: 9, fields }
    }

    #[test]
    fn a_good_row_with_defaults() {
        let f = validate(&row(&[])).expect("valid");
        assert_eq!(f.list, "retail");
        assert_eq!(f.price, Money::new(1150, Currency::EUR));
        assert_eq!((f.from_ms, f.until_ms, f.compare_at), (None, None, None));
        let f = validate(&row(&[
            ("price_list", "staff"),
            ("currency", "JPY"),
            ("price", "1500"),
            ("compare_at", "1800"),
            ("valid_from", "2026-12-01T00:00:00Z"),
            ("valid_until", "2026-12-24T00:00:00Z"),
        ]))
        .expect("valid");
        assert_eq!(f.price, Money::new(1500, Currency::JPY));
        assert_eq!(f.compare_at, Some(Money::new(1800, Currency::JPY)));
        assert!(f.from_ms < f.until_ms);
    }

    #[test]
    fn every_bad_field_is_named_with_what_to_fix() {
        let cases: &[Case] = &[
            (&[("sku", "")], "sku", "required"),
            (&[("currency", "XXX")], "currency", "unknown currency"),
            (&[("currency", "")], "currency", "required"),
            (&[("price", "")], "price", "required"),
            (&[("price", "cheap")], "price", "not an amount"),
            (&[("price", "-0.01")], "price", "negative"),
            (
                &[("currency", "JPY"), ("price", "12.50")],
                "price",
                "0 decimals",
            ),
            (&[("compare_at", "x")], "compare_at", "not an amount"),
            (&[("price_list", "staff list")], "price_list", "not a valid"),
            (&[("valid_from", "tomorrow")], "valid_from", "RFC 3339"),
            (
                &[
                    ("valid_from", "2026-12-02T00:00:00Z"),
                    ("valid_until", "2026-12-02T00:00:00Z"),
                ],
                "valid_until",
                "after valid_from",
            ),
            (&[("version", "")], "version", "required"),
        ];
        for (pairs, field, reason) in cases {
            let errors = validate(&row(pairs)).expect_err(field);
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == *field && e.row == 9 && e.reason.contains(reason)),
                "{pairs:?}: {errors:?}"
            );
        }
    }
}
