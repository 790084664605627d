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
    /// Shipping weight of one unit, packaging included; 0 when unknown.
    #[serde(default)]
    pub weight_grams: u32,
}

/// The tax class of products and shipping methods that name none.
pub const STANDARD_TAX_CLASS: &str = "standard";

/// [`STANDARD_TAX_CLASS`] as a serde default.
pub fn standard_tax_class() -> String {
    STANDARD_TAX_CLASS.to_string()
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
    /// VAT rate in basis points (1900 = 19 %) of the home market, included in the prices: the
    /// rate the storefront and [`crate::pricing::price_basket`] show.
    pub tax_rate_bp: u32,
    /// The tax class (`standard`, `reduced`, `zero`) that picks this product's rate in each
    /// market at checkout ([`crate::checkout`]).
    #[serde(default = "standard_tax_class")]
    pub tax_class: String,
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
        self.variants
            .iter()
            .map(|v| v.price)
            .min_by_key(|m| m.minor)
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

/// How a catalog listing is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best text match first (name order without a query).
    #[default]
    Relevance,
    NameAsc,
    PriceAsc,
    PriceDesc,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "relevance" | "" => Some(Sort::Relevance),
            "name_asc" | "name" => Some(Sort::NameAsc),
            "price_asc" => Some(Sort::PriceAsc),
            "price_desc" => Some(Sort::PriceDesc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::NameAsc => "name_asc",
            Sort::PriceAsc => "price_asc",
            Sort::PriceDesc => "price_desc",
        }
    }
}

/// A catalog listing request.
#[derive(Debug, Clone, Default)]
pub struct CatalogQuery {
    pub text: Option<String>,
    pub category: Option<CategoryId>,
    pub sort: Sort,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug)]
pub struct CatalogPage<'a> {
    pub items: Vec<&'a Product>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Matches over all pages.
    pub total: usize,
}

/// A cursor that was not made by this catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: pass the next_cursor of the previous page unchanged")]
pub struct CursorError;

struct Indexed {
    /// The lower-cased name: the sort key by name.
    sort_name: String,
    name: Vec<String>,
    brand: Vec<String>,
    category: Vec<String>,
    description: Vec<String>,
}

/// An immutable view of the whole catalog with its lookups and search. The hub swaps in a new
/// snapshot on every catalog change; readers never wait for writers.
pub struct CatalogSnapshot {
    pub version: u64,
    categories: Vec<Category>,
    products: Vec<Product>,
    by_sku: std::collections::HashMap<Sku, usize>,
    by_slug: std::collections::HashMap<String, usize>,
    by_id: std::collections::HashMap<ProductId, usize>,
    index: Vec<Indexed>,
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Sort key of a listing cursor: the position after which the next page starts.
/// `S` is `&str` for the keys of a listing and `String` for a decoded cursor.
#[derive(Debug, PartialEq)]
enum CursorKey<S> {
    Score(u32, S, ProductId),
    Name(S, ProductId),
    Price(i64, ProductId),
}

impl CatalogSnapshot {
    pub fn new(
        version: u64,
        mut categories: Vec<Category>,
        mut products: Vec<Product>,
    ) -> CatalogSnapshot {
        categories.sort_by(|a, b| a.position.cmp(&b.position).then(a.name.cmp(&b.name)));
        products.sort_by_cached_key(|p| (p.name.to_lowercase(), p.id));
        let mut by_sku = std::collections::HashMap::new();
        let mut by_slug = std::collections::HashMap::new();
        let mut by_id = std::collections::HashMap::new();
        let mut index = Vec::with_capacity(products.len());
        for (i, p) in products.iter().enumerate() {
            for v in &p.variants {
                by_sku.insert(v.sku.clone(), i);
            }
            by_slug.insert(p.slug.clone(), i);
            by_id.insert(p.id, i);
            let category_name = categories
                .iter()
                .find(|c| c.id == p.category)
                .map_or("", |c| c.name.as_str());
            index.push(Indexed {
                sort_name: p.name.to_lowercase(),
                name: tokens(&p.name),
                brand: tokens(&p.brand),
                category: tokens(category_name),
                description: tokens(&p.description),
            });
        }
        CatalogSnapshot {
            version,
            categories,
            products,
            by_sku,
            by_slug,
            by_id,
            index,
        }
    }

    pub fn empty() -> CatalogSnapshot {
        CatalogSnapshot::new(0, Vec::new(), Vec::new())
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub fn products(&self) -> &[Product] {
        &self.products
    }

    pub fn category(&self, id: &CategoryId) -> Option<&Category> {
        self.categories.iter().find(|c| &c.id == id)
    }

    pub fn product_by_sku(&self, sku: &Sku) -> Option<&Product> {
        self.by_sku.get(sku).map(|i| &self.products[*i])
    }

    pub fn product_by_slug(&self, slug: &str) -> Option<&Product> {
        self.by_slug.get(slug).map(|i| &self.products[*i])
    }

    pub fn product(&self, id: ProductId) -> Option<&Product> {
        self.by_id.get(&id).map(|i| &self.products[*i])
    }

    /// Text score of product `i` for the query terms: every term must match (as a word prefix)
    /// in the name, brand, category or description; name matches weigh most.
    fn score(&self, i: usize, terms: &[String]) -> Option<u32> {
        let ix = &self.index[i];
        let hit = |words: &[String], term: &str| words.iter().any(|w| w.starts_with(term));
        let mut score = 0;
        for term in terms {
            let s = 8 * u32::from(hit(&ix.name, term))
                + 4 * u32::from(hit(&ix.brand, term))
                + 4 * u32::from(hit(&ix.category, term))
                + u32::from(hit(&ix.description, term));
            if s == 0 {
                return None;
            }
            score += s;
        }
        Some(score)
    }

    /// Lists products matching `query`, one page at a time (keyset cursor, stable across
    /// catalog updates).
    pub fn query(&self, query: &CatalogQuery) -> Result<CatalogPage<'_>, CursorError> {
        let terms = query.text.as_deref().map(tokens).unwrap_or_default();
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let mut hits: Vec<(CursorKey<&str>, &Product)> = Vec::new();
        for (i, p) in self.products.iter().enumerate() {
            if query.category.as_ref().is_some_and(|c| &p.category != c) {
                continue;
            }
            let Some(score) = self.score(i, &terms) else {
                continue;
            };
            let price = p.from_price().map_or(0, |m| m.minor);
            let key = match query.sort {
                Sort::Relevance => {
                    CursorKey::Score(u32::MAX - score, self.index[i].sort_name.as_str(), p.id)
                }
                Sort::NameAsc => CursorKey::Name(self.index[i].sort_name.as_str(), p.id),
                Sort::PriceAsc => CursorKey::Price(price, p.id),
                Sort::PriceDesc => CursorKey::Price(-price, p.id),
            };
            hits.push((key, p));
        }
        hits.sort_by(|a, b| cmp_key(&a.0, &b.0));
        let total = hits.len();
        let start = match &after {
            Some(k) => {
                hits.partition_point(|(key, _)| cmp_key(key, k) != std::cmp::Ordering::Greater)
            }
            None => 0,
        };
        let limit = query.limit.clamp(1, 100);
        let page: Vec<&(CursorKey<&str>, &Product)> =
            hits[start.min(total)..].iter().take(limit).collect();
        let next_cursor = if start + page.len() < total {
            page.last().map(|(k, _)| encode_cursor(k))
        } else {
            None
        };
        Ok(CatalogPage {
            items: page.iter().map(|(_, p)| *p).collect(),
            next_cursor,
            total,
        })
    }
}

fn cmp_key<A: AsRef<str>, B: AsRef<str>>(a: &CursorKey<A>, b: &CursorKey<B>) -> std::cmp::Ordering {
    match (a, b) {
        (CursorKey::Score(s1, n1, i1), CursorKey::Score(s2, n2, i2)) => {
            (s1, n1.as_ref(), i1).cmp(&(s2, n2.as_ref(), i2))
        }
        (CursorKey::Name(n1, i1), CursorKey::Name(n2, i2)) => {
            (n1.as_ref(), i1).cmp(&(n2.as_ref(), i2))
        }
        (CursorKey::Price(p1, i1), CursorKey::Price(p2, i2)) => (p1, i1).cmp(&(p2, i2)),
        // A cursor of another sort order: start from the beginning.
        _ => std::cmp::Ordering::Greater,
    }
}

fn encode_cursor(key: &CursorKey<&str>) -> String {
    let raw = match key {
        CursorKey::Score(s, n, id) => format!("s~{s}~{id}~{n}"),
        CursorKey::Name(n, id) => format!("n~~{id}~{n}"),
        CursorKey::Price(p, id) => format!("p~{p}~{id}~"),
    };
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(text: &str) -> Result<CursorKey<String>, CursorError> {
    if !text.len().is_multiple_of(2) || text.len() > 1024 {
        return Err(CursorError);
    }
    let bytes: Result<Vec<u8>, _> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect();
    let raw = String::from_utf8(bytes.map_err(|_| CursorError)?).map_err(|_| CursorError)?;
    let mut parts = raw.splitn(4, '~');
    let (kind, num, id, name) = (parts.next(), parts.next(), parts.next(), parts.next());
    let id: ProductId = id.ok_or(CursorError)?.parse().map_err(|_| CursorError)?;
    let name = name.ok_or(CursorError)?.to_string();
    let num = num.ok_or(CursorError)?;
    match kind {
        Some("s") => Ok(CursorKey::Score(
            num.parse().map_err(|_| CursorError)?,
            name,
            id,
        )),
        Some("n") => Ok(CursorKey::Name(name, id)),
        Some("p") => Ok(CursorKey::Price(num.parse().map_err(|_| CursorError)?, id)),
        _ => Err(CursorError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn product(name: &str, cat: &str, price: i64) -> Product {
        Product {
            id: ProductId::new(),
            slug: name.to_lowercase().replace(' ', "-"),
            name: name.into(),
            brand: "Acme".into(),
            description: format!("A fine {name}"),
            category: CategoryId(cat.into()),
            tax_rate_bp: 1900,
            tax_class: STANDARD_TAX_CLASS.into(),
            image: String::new(),
            variants: vec![Variant {
                sku: Sku::parse(&name.replace(' ', "-")).expect("valid sku"),
                title: "Default".into(),
                price: Money::new(price, Currency::EUR),
                compare_at: None,
                barcode: None,
                weight_grams: 250,
            }],
            attributes: BTreeMap::new(),
        }
    }

    fn snapshot() -> CatalogSnapshot {
        let cats = vec![
            Category {
                id: CategoryId("coffee".into()),
                name: "Coffee".into(),
                description: String::new(),
                position: 1,
            },
            Category {
                id: CategoryId("tea".into()),
                name: "Tea".into(),
                description: String::new(),
                position: 2,
            },
        ];
        let mut products = Vec::new();
        for i in 0..25 {
            products.push(product(
                &format!("Coffee Beans {i:02}"),
                "coffee",
                1000 + i * 10,
            ));
            products.push(product(&format!("Green Tea {i:02}"), "tea", 500 + i * 7));
        }
        CatalogSnapshot::new(1, cats, products)
    }

    #[test]
    fn pages_cover_every_match_once() {
        let snap = snapshot();
        for sort in [
            Sort::Relevance,
            Sort::NameAsc,
            Sort::PriceAsc,
            Sort::PriceDesc,
        ] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = snap
                    .query(&CatalogQuery {
                        text: None,
                        category: Some(CategoryId("tea".into())),
                        sort,
                        cursor: cursor.clone(),
                        limit: 7,
                    })
                    .expect("valid cursor");
                assert_eq!(page.total, 25);
                seen.extend(page.items.iter().map(|p| p.id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!((seen.len(), unique.len()), (25, 25), "{sort:?}");
        }
    }

    #[test]
    fn price_sorts_and_search() {
        let snap = snapshot();
        let page = snap
            .query(&CatalogQuery {
                sort: Sort::PriceDesc,
                limit: 3,
                ..Default::default()
            })
            .expect("ok");
        let prices: Vec<i64> = page
            .items
            .iter()
            .filter_map(|p| p.from_price())
            .map(|m| m.minor)
            .collect();
        assert_eq!(prices, vec![1240, 1230, 1220]);
        let page = snap
            .query(&CatalogQuery {
                text: Some("green te".into()),
                limit: 100,
                ..Default::default()
            })
            .expect("ok");
        assert_eq!(page.total, 25);
        let page = snap
            .query(&CatalogQuery {
                text: Some("coffee".into()),
                limit: 100,
                ..Default::default()
            })
            .expect("ok");
        assert_eq!(
            page.total, 25,
            "category name and product name both match coffee, description too"
        );
        let page = snap
            .query(&CatalogQuery {
                text: Some("nothing-like-it".into()),
                limit: 10,
                ..Default::default()
            })
            .expect("ok");
        assert_eq!(page.total, 0);
        assert!(snap
            .query(&CatalogQuery {
                cursor: Some("zz".into()),
                limit: 10,
                ..Default::default()
            })
            .is_err());
    }
}
