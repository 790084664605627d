//! ERP feeds: the wire format shared by the ERP simulator (which serves and pushes them) and the
//! hub's importer (which validates and applies them). `docs/erp-feeds.md` is the reference.
//!
//! Every field travels as text, in JSON (`{"rows": [...]}`) and in CSV (a header row with the
//! column names below): a feed row is data from outside, validated field by field by the
//! importer, which reports a bad row with its number, field and reason and applies the rest.
//! An empty string means "absent".
//!
//! Ordering and idempotency: every row carries the ERP's `version` of the entity (a number that
//! grows with each change of that entity in the ERP). The importer ignores a row whose version
//! is lower than the one it applied (an out-of-order update) and reports a row equal to what is
//! applied as unchanged. Stock deltas are movements with their own id (`movement`), applied once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The five feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    Products,
    Prices,
    Stock,
    Promotions,
    Coupons,
}

impl FeedKind {
    pub const ALL: [FeedKind; 5] = [
        FeedKind::Products,
        FeedKind::Prices,
        FeedKind::Stock,
        FeedKind::Promotions,
        FeedKind::Coupons,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Products => "products",
            FeedKind::Prices => "prices",
            FeedKind::Stock => "stock",
            FeedKind::Promotions => "promotions",
            FeedKind::Coupons => "coupons",
        }
    }

    pub fn parse(text: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The CSV header of this feed, in column order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            FeedKind::Products => PRODUCT_COLUMNS,
            FeedKind::Prices => PRICE_COLUMNS,
            FeedKind::Stock => STOCK_COLUMNS,
            FeedKind::Promotions => PROMOTION_COLUMNS,
            FeedKind::Coupons => COUPON_COLUMNS,
        }
    }

    /// Guesses the feed from a file name such as `products.csv` or `stock-2026-11-26.json`.
    pub fn from_file_name(name: &str) -> Option<FeedKind> {
        let lower = name.to_ascii_lowercase();
        let base = lower.rsplit(['/', '\\']).next().unwrap_or(&lower);
        FeedKind::ALL.into_iter().find(|k| {
            base.starts_with(k.as_str()) || base.starts_with(&k.as_str()[..k.as_str().len() - 1])
        })
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One variant of one product: a product with three variants is three rows sharing `product`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductRow {
    /// The ERP's product code (`[A-Za-z0-9._-]`, 1–64): the product's identity.
    pub product: String,
    /// The variant's SKU (the hub's SKU rules).
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub description: String,
    /// Category slug (`[a-z0-9-]`); created when new.
    pub category: String,
    /// Category display name (defaults to the slug).
    pub category_name: String,
    /// What distinguishes the variant, e.g. `500 g` (defaults to `Default`).
    pub variant_title: String,
    /// `standard`, `reduced` or `zero`.
    pub tax_class: String,
    /// EAN-13 with a valid check digit, or empty.
    pub barcode: String,
    pub weight_grams: String,
    /// `key=value` pairs separated by `;`, e.g. `origin=Ethiopia;roast=light`.
    pub attributes: String,
    /// Base price of the default price list, tax included, decimal (`12.90`); the prices feed
    /// may override it. A new variant needs a price from one or the other.
    pub price: String,
    pub currency: String,
    /// `true` (default) or `false`: a withdrawn variant is no longer sold.
    pub active: String,
    /// The ERP's version of this row's entity (a non-negative integer).
    pub version: String,
}

/// A price of a SKU on a price list in a currency, valid from a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PriceRow {
    pub sku: String,
    /// Price list (default `retail`, the one the shop sells at).
    pub price_list: String,
    pub currency: String,
    /// Decimal, tax included.
    pub price: String,
    /// A former price shown struck through, or empty.
    pub compare_at: String,
    /// RFC 3339; empty: now.
    pub valid_from: String,
    /// RFC 3339; empty: open-ended.
    pub valid_until: String,
    pub version: String,
}

/// A stock level (a count) or a movement (a delta) of a SKU at a location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StockRow {
    pub sku: String,
    /// `online` (the web warehouse) or a store location known to the hub.
    pub location: String,
    /// `level` (an absolute count) or `delta` (a movement: receipt, damage, ...).
    pub kind: String,
    /// Units: the level (≥ 0) or the signed delta.
    pub quantity: String,
    /// A delta's unique id, so a movement is applied once however often it is sent.
    pub movement: String,
    pub version: String,
}

/// A promotion; `definition` is the JSON of [`crate::promotion::PromotionSpec`] (conditions,
/// benefit, combination, limits), the same in JSON and CSV feeds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionRow {
    /// The ERP's promotion code (`[A-Za-z0-9._-]`, 1–64).
    pub id: String,
    pub name: String,
    pub description: String,
    pub definition: String,
    /// `true` (default) or `false` to end it.
    pub active: String,
    pub version: String,
}

/// A public coupon code for a promotion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CouponRow {
    /// 4–32 of `[A-Z0-9-]` (matched case-insensitively).
    pub code: String,
    /// The promotion the code unlocks.
    pub promotion: String,
    /// Empty: unlimited.
    pub max_uses: String,
    pub max_uses_per_customer: String,
    /// RFC 3339; empty: no expiry.
    pub expires_at: String,
    pub version: String,
}

pub const PRODUCT_COLUMNS: &[&str] = &[
    "product",
    "sku",
    "name",
    "brand",
    "description",
    "category",
    "category_name",
    "variant_title",
    "tax_class",
    "barcode",
    "weight_grams",
    "attributes",
    "price",
    "currency",
    "active",
    "version",
];
pub const PRICE_COLUMNS: &[&str] = &[
    "sku",
    "price_list",
    "currency",
    "price",
    "compare_at",
    "valid_from",
    "valid_until",
    "version",
];
pub const STOCK_COLUMNS: &[&str] = &["sku", "location", "kind", "quantity", "movement", "version"];
pub const PROMOTION_COLUMNS: &[&str] = &[
    "id",
    "name",
    "description",
    "definition",
    "active",
    "version",
];
pub const COUPON_COLUMNS: &[&str] = &[
    "code",
    "promotion",
    "max_uses",
    "max_uses_per_customer",
    "expires_at",
    "version",
];

/// One page of a pulled JSON feed: `GET /feeds/{feed}?since=<cursor>&limit=<n>`. A CSV page
/// carries the same `next_cursor` and `has_more` in the `X-Next-Cursor` and `X-Has-More`
/// headers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedPage {
    pub feed: FeedKind,
    /// Rows as JSON objects; values are strings (numbers are accepted and read as text).
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass as `since` for the next page; the same cursor again when nothing is new.
    pub next_cursor: String,
    pub has_more: bool,
}

/// The header carrying a pushed feed's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "{t}.{raw body}">`, keyed with the shared import secret (the scheme of the payment
/// provider's webhooks).
pub const SIGNATURE_HEADER: &str = "X-Omnihub-Signature";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_round_trip_and_files_are_recognised() {
        for k in FeedKind::ALL {
            assert_eq!(FeedKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            FeedKind::from_file_name("data/products.csv"),
            Some(FeedKind::Products)
        );
        assert_eq!(
            FeedKind::from_file_name("stock-2026.json"),
            Some(FeedKind::Stock)
        );
        assert_eq!(
            FeedKind::from_file_name("price.csv"),
            Some(FeedKind::Prices)
        );
        assert_eq!(FeedKind::from_file_name("orders.csv"), None);
    }
}
