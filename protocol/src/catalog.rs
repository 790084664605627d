//! The catalog: categories, products and their variants (each variant is one SKU with one price).

use crate::codec::Stored;
use crate::ids::{ProductId, Sku};
use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A category's slug, e.g. `coffee`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CategoryId(pub String);

impl fmt::Display for CategoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A category of the storefront's navigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub id: CategoryId,
    pub name: String,
    pub description: String,
    /// Order in navigation, lowest first.
    pub position: u32,
}

/// One purchasable variant of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub sku: Sku,
    /// What distinguishes it, e.g. `500 g` or `Size M`.
    pub title: String,
    /// Shelf price, tax included.
    pub price: Money,
    /// A former price to show struck through, if any.
    #[serde(default)]
    pub compare_at: Option<Money>,
    #[serde(default)]
    pub barcode: Option<String>,
}

/// A product as shown on the storefront.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    /// URL-safe unique name, e.g. `ethiopia-yirgacheffe-coffee`.
    pub slug: String,
    pub name: String,
    pub brand: String,
    pub description: String,
    pub category: CategoryId,
    /// VAT rate in basis points (1900 = 19 %), tax included in the prices.
    pub tax_rate_bp: u32,
    /// Path of the product image, served by the hub.
    pub image: String,
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Product {
    /// The variant with this SKU.
    pub fn variant(&self, sku: &Sku) -> Option<&Variant> {
        self.variants.iter().find(|v| &v.sku == sku)
    }

    /// The lowest price among the variants ("from EUR 4.99").
    pub fn from_price(&self) -> Option<Money> {
        self.variants.iter().map(|v| v.price).min_by_key(|m| m.minor)
    }
}

impl Stored for Product {
    const KIND: &'static str = "product";
    const VERSION: u16 = 1;
}

impl Stored for Category {
    const KIND: &'static str = "category";
    const VERSION: u16 = 1;
}
