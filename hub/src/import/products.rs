//! The products feed: one row per variant ([`protocol::feed::ProductRow`]), grouped into products
//! by the ERP's product code.
//!
//! Rules (a rule broken rejects the whole row, naming the field):
//! - `product` `[A-Za-z0-9._-]` 1–64; `sku` the hub's SKU rules; `name` 1–200 characters;
//!   `category` a slug `[a-z0-9-]` 1–64 (created when new, named by `category_name` or after the
//!   slug); `tax_class` `standard` (default), `reduced` or `zero`, whose rate in the home market
//!   becomes the product's `tax_rate_bp`; `barcode` empty or an EAN-13 with a valid check digit;
//!   `weight_grams` a whole number (default 0); `attributes` `key=value` pairs separated by `;`;
//!   `price` a decimal of 0 or more in `currency`, which must be the catalog's (empty: the
//!   catalog's) — other currencies go to the prices feed; `active` true (default) or false;
//!   `version` required.
//! - An ERP product code gets a stable product id, kept by the importer. A SKU stays with the
//!   product that first had it. A SKU already in the catalog from elsewhere (e.g. the demo) is
//!   taken over, with its product's id.
//! - An active variant needs a price: from this row, an earlier row, or the price book.
//! - `active=false` withdraws the variant; a product with no active variant leaves the catalog.
//! - Product fields (name, brand, description, category, tax class, attributes) are shared by
//!   the variants of a product: the latest row applied sets them. The slug is made from the name
//!   (plus the product code when another product has it) and changes only with the name.
//! - Ordering: a row older than the variant's applied version is stale; the same version with
//!   the same content is unchanged; the same version with other content is rejected.

use super::catalog::{self, Book, CatalogSide, Changes};
use super::fields::{self, Check};
use super::store::{ProductState, VariantState};
use super::{FeedApplier, ImportError, Row, RowError, RowOutcome};
use async_trait::async_trait;
use protocol::checkout::Market;
use protocol::feed::{FeedKind, PRODUCT_COLUMNS};
use protocol::{CatalogSnapshot, Category, CategoryId, Currency, Money, ProductId, Sku};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A product row that passed every field rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFields {
    pub code: String,
    pub sku: Sku,
    pub name: String,
    pub brand: String,
    pub description: String,
    pub category: CategoryId,
    pub category_name: String,
    pub title: String,
    pub tax_class: String,
    pub tax_rate_bp: u32,
    pub barcode: Option<String>,
    pub weight_grams: u32,
    pub attributes: BTreeMap<String, String>,
    pub price: Option<Money>,
    pub active: bool,
    pub version: u64,
    pub digest: String,
}

/// Whether `code` is a valid EAN-13: 13 digits, the last the check digit of the first twelve
/// (weights 1 and 3 alternating from the left).
pub fn ean13_ok(code: &str) -> bool {
    let digits: Vec<u32> = code.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 13 || code.len() != 13 {
        return false;
    }
    let sum: u32 = digits[..12]
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    (10 - sum % 10) % 10 == digits[12]
}

/// `key=value;key=value` into a map (keys 1–64, values up to 256 characters, no key twice).
pub fn attributes(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "'{pair}' is not key=value: write attributes as key=value pairs separated by ';'"
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.chars().count() > 64 || v.chars().count() > 256 {
            return Err(format!(
                "'{pair}': a key is 1 to 64 characters and a value at most 256"
            ));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("attribute '{k}' is given twice"));
        }
    }
    Ok(out)
}

/// A URL slug from a name: lower-case ASCII letters and digits, other runs become one `-`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    slug.chars()
        .take(80)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn category_slug(row: &Row) -> Result<CategoryId, RowError> {
    let v = fields::required(row, "category", "the category's slug, e.g. coffee")?;
    let ok = v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(CategoryId(v.to_string()))
    } else {
        Err(row.error(
            "category",
            format!("'{v}' is not a category slug: use 1 to 64 of a-z, 0-9 and '-'"),
        ))
    }
}

fn tax(row: &Row, home: &Market) -> Result<(String, u32), RowError> {
    let class = match row.get("tax_class") {
        "" => protocol::STANDARD_TAX_CLASS,
        c => c,
    };
    if !matches!(class, "standard" | "reduced" | "zero") {
        return Err(row.error(
            "tax_class",
            format!("'{class}' is not a tax class: use standard, reduced or zero"),
        ));
    }
    match home.rate(class) {
        Some(rate) => Ok((class.to_string(), rate)),
        None => Err(row.error(
            "tax_class",
            format!(
                "the home market {} has no rate for tax class {class}: add it to \
                 [[checkout.markets]] or use another class",
                home.country
            ),
        )),
    }
}

fn barcode(row: &Row) -> Result<Option<String>, RowError> {
    match row.get("barcode") {
        "" => Ok(None),
        b if ean13_ok(b) => Ok(Some(b.to_string())),
        b => Err(row.error(
            "barcode",
            format!("'{b}' is not an EAN-13: 13 digits whose last is the check digit"),
        )),
    }
}

fn weight(row: &Row) -> Result<u32, RowError> {
    match row.get("weight_grams") {
        "" => Ok(0),
        w => w.parse::<u32>().map_err(|_| {
            row.error(
                "weight_grams",
                format!("'{w}' is not a weight: a whole number of grams, like 550"),
            )
        }),
    }
}

fn base_price(row: &Row, catalog: Currency) -> Result<Option<Money>, RowError> {
    if row.get("price").is_empty() {
        return Ok(None);
    }
    let currency = fields::currency(row, "currency", Some(catalog))?;
    if currency != catalog {
        return Err(row.error(
            "currency",
            format!(
                "the base price must be in {}, the catalog's currency; send prices in {} with \
                 the prices feed",
                catalog.code(),
                currency.code()
            ),
        ));
    }
    fields::amount(row, "price", currency)
}

/// Checks every field of a product row; all errors at once.
pub fn validate(
    row: &Row,
    catalog: Currency,
    home: &Market,
) -> Result<ProductFields, Vec<RowError>> {
    let mut c = Check::new(row);
    let code = c.take(fields::code(row, "product", 64, false));
    let sku = c.take(fields::sku(row));
    let name = c.take(
        fields::required(row, "name", "the product's name")
            .and_then(|_| fields::text(row, "name", 200)),
    );
    let brand = c.take(fields::text(row, "brand", 100));
    let description = c.take(fields::text(row, "description", 5000));
    let category = c.take(category_slug(row));
    let category_name = c.take(fields::text(row, "category_name", 100));
    let title = c.take(fields::text(row, "variant_title", 100));
    let tax = c.take(tax(row, home));
    let barcode = c.take(barcode(row));
    let weight_grams = c.take(weight(row));
    let attributes =
        c.take(attributes(row.get("attributes")).map_err(|e| row.error("attributes", e)));
    let price = c.take(base_price(row, catalog));
    let active = c.take(fields::boolean(row, "active", true));
    let version = c.take(fields::version(row));
    match (
        code,
        sku,
        name,
        brand,
        description,
        category,
        category_name,
        title,
        tax,
        barcode,
        weight_grams,
        attributes,
        price,
        active,
        version,
    ) {
        (
            Some(code),
            Some(sku),
            Some(name),
            Some(brand),
            Some(description),
            Some(category),
            Some(category_name),
            Some(title),
            Some((tax_class, tax_rate_bp)),
            Some(barcode),
            Some(weight_grams),
            Some(attributes),
            Some(price),
            Some(active),
            Some(version),
        ) if c.errors.is_empty() => Ok(ProductFields {
            code,
            sku,
            name,
            brand,
            description,
            category,
            category_name,
            title: if title.is_empty() {
                "Default".into()
            } else {
                title
            },
            tax_class,
            tax_rate_bp,
            barcode,
            weight_grams,
            attributes,
            price,
            active,
            version,
            digest: fields::digest(row, PRODUCT_COLUMNS),
        }),
        _ => Err(c.errors),
    }
}

/// The products feed's applier.
pub struct ProductsApplier {
    side: Arc<CatalogSide>,
}

impl ProductsApplier {
    pub fn new(side: Arc<CatalogSide>) -> ProductsApplier {
        ProductsApplier { side }
    }
}

#[async_trait]
impl FeedApplier for ProductsApplier {
    fn feed(&self) -> FeedKind {
        FeedKind::Products
    }

    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
        let started = std::time::Instant::now();
        let checked: Vec<Result<ProductFields, Vec<RowError>>> = rows
            .iter()
            .map(|r| validate(r, self.side.currency(), self.side.home()))
            .collect();
        let validated = started.elapsed();
        let mut book = self.side.lock().await;
        let snapshot = self.side.snapshot();
        let now = self.side.now_ms();
        let mut changes = Changes::default();
        let outcomes = rows
            .iter()
            .zip(checked)
            .map(|(row, checked)| match checked {
                Err(errors) => RowOutcome::Rejected(errors),
                Ok(f) => Page {
                    side: &self.side,
                    book: &book,
                    snapshot: &snapshot,
                    now,
                }
                .apply(&mut changes, row, f),
            })
            .collect();
        tracing::debug!(
            rows = rows.len(),
            validate_ms = validated.as_millis() as u64,
            decide_ms = (started.elapsed() - validated).as_millis() as u64,
            "product rows decided"
        );
        self.side.commit(&mut book, changes).await?;
        Ok(outcomes)
    }
}

/// One page being applied: what the rows are decided against.
struct Page<'a> {
    side: &'a CatalogSide,
    book: &'a Book,
    snapshot: &'a CatalogSnapshot,
    now: i64,
}

impl Page<'_> {
    fn apply(&self, changes: &mut Changes, row: &Row, f: ProductFields) -> RowOutcome {
        let existing = changes.variant(self.book, &f.sku).cloned();
        let applied = existing.as_ref().and_then(|e| e.version);
        let same = existing.as_ref().is_some_and(|e| e.digest == f.digest);
        let entity = format!("SKU {}", f.sku);
        if let Some(outcome) = fields::by_version(row, f.version, applied, same, &entity) {
            return outcome;
        }
        let id = match self.owner(changes, row, &f, existing.as_ref()) {
            Ok(id) => id,
            Err(e) => return RowOutcome::Rejected(vec![e]),
        };
        // A SKU taken over from the catalog just now brings its catalog price.
        let existing = changes.variant(self.book, &f.sku).cloned();
        let priced = f.price.is_some()
            || existing.as_ref().is_some_and(|e| e.base_price.is_some())
            || catalog::effective(changes.entries(self.book, &f.sku), self.now).is_some();
        if f.active && !priced {
            return RowOutcome::Rejected(vec![row.error(
                "price",
                format!(
                    "a new variant needs a price: give price (and currency {}) here, or send \
                     its price in the prices feed first",
                    self.side.currency().code()
                ),
            )]);
        }
        self.stage(changes, id, f, existing);
        RowOutcome::Applied
    }

    /// The product the row's variant belongs to: its own, the one its product code names, the
    /// catalog product already holding the SKU, or a new one.
    fn owner(
        &self,
        changes: &mut Changes,
        row: &Row,
        f: &ProductFields,
        existing: Option<&VariantState>,
    ) -> Result<ProductId, RowError> {
        let named = changes.code(self.book, &f.code);
        let holder = match existing {
            Some(e) => Some(e.product),
            None => self.snapshot.product_by_sku(&f.sku).map(|p| p.id),
        };
        let Some(holder) = holder else {
            // No holder and no product of this code yet: a new product id.
            return Ok(named.unwrap_or_default());
        };
        let holder_code = changes
            .product(self.book, holder)
            .and_then(|p| p.code.clone());
        let conflict = match (&holder_code, named) {
            (Some(c), _) => c != &f.code,
            (None, Some(other)) => other != holder,
            (None, None) => false,
        };
        if conflict {
            let owner = holder_code.unwrap_or_else(|| {
                self.snapshot
                    .product(holder)
                    .map_or_else(|| holder.to_string(), |p| p.slug.clone())
            });
            return Err(row.error(
                "sku",
                format!(
                    "SKU {} belongs to product {owner}, not {}: a SKU stays with its product",
                    f.sku, f.code
                ),
            ));
        }
        if existing.is_none() {
            self.side.adopt(self.book, changes, &f.sku);
        }
        Ok(holder)
    }

    /// A slug for product `id` named `name`, unique in the catalog and the book.
    fn unique_slug(&self, changes: &Changes, id: ProductId, name: &str, code: &str) -> String {
        let base = match slugify(name) {
            s if s.is_empty() => slugify(code),
            s => s,
        };
        let free = |slug: &str| {
            changes
                .slug_owner(self.book, slug)
                .is_none_or(|owner| owner == id)
                && self
                    .snapshot
                    .product_by_slug(slug)
                    .is_none_or(|p| p.id == id)
        };
        let with_code = format!("{base}-{}", slugify(code));
        if free(&base) {
            return base;
        }
        if free(&with_code) {
            return with_code;
        }
        (2u32..)
            .map(|n| format!("{with_code}-{n}"))
            .find(|s| free(s))
            .unwrap_or(with_code)
    }

    fn stage(
        &self,
        changes: &mut Changes,
        id: ProductId,
        f: ProductFields,
        existing: Option<VariantState>,
    ) {
        if changes.product(self.book, id).is_none() {
            changes.new_products.insert(id);
            changes.products.insert(
                id,
                ProductState {
                    id,
                    code: None,
                    slug: String::new(),
                    name: String::new(),
                    brand: String::new(),
                    description: String::new(),
                    category: f.category.clone(),
                    tax_class: f.tax_class.clone(),
                    tax_rate_bp: f.tax_rate_bp,
                    image: String::new(),
                    attributes: BTreeMap::new(),
                    skus: Vec::new(),
                },
            );
        }
        let renamed = changes
            .product(self.book, id)
            .is_none_or(|p| p.slug.is_empty() || p.name != f.name);
        let slug = renamed.then(|| self.unique_slug(changes, id, &f.name, &f.code));
        self.stage_category(changes, &f);
        changes.codes.insert(f.code.clone(), id);
        if let Some(slug) = &slug {
            changes.slugs.insert(slug.clone(), id);
        }
        if let Some(p) = changes.product_mut(self.book, id) {
            p.code = Some(f.code);
            if let Some(slug) = slug {
                p.image = format!("/images/{slug}.svg");
                p.slug = slug;
            }
            p.name = f.name;
            p.brand = f.brand;
            p.description = f.description;
            p.category = f.category;
            p.tax_class = f.tax_class;
            p.tax_rate_bp = f.tax_rate_bp;
            p.attributes = f.attributes;
            if !p.skus.contains(&f.sku) {
                p.skus.push(f.sku.clone());
            }
        }
        let (base_price, base_compare_at) = match (f.price, &existing) {
            (Some(p), _) => (Some(p), None),
            (None, Some(e)) => (e.base_price, e.base_compare_at),
            (None, None) => (None, None),
        };
        changes.variants.insert(
            f.sku.clone(),
            VariantState {
                sku: f.sku,
                product: id,
                title: f.title,
                barcode: f.barcode,
                weight_grams: f.weight_grams,
                base_price,
                base_compare_at,
                active: f.active,
                version: Some(f.version),
                digest: f.digest,
            },
        );
        changes.touched.insert(id);
    }

    /// Creates the row's category when new; renames it when the row names it otherwise.
    fn stage_category(&self, changes: &mut Changes, f: &ProductFields) {
        let named = |slug: &str| {
            let mut name = slug.replace('-', " ");
            if let Some(first) = name.get(..1) {
                name.replace_range(..1, &first.to_ascii_uppercase());
            }
            name
        };
        if let Some(staged) = changes.categories.iter_mut().find(|c| c.id == f.category) {
            if !f.category_name.is_empty() {
                staged.name = f.category_name.clone();
            }
            return;
        }
        match self.snapshot.category(&f.category) {
            Some(c) if !f.category_name.is_empty() && c.name != f.category_name => {
                changes.categories.push(Category {
                    name: f.category_name.clone(),
                    ..c.clone()
                });
            }
            Some(_) => {}
            None => {
                let position = catalog::next_position(self.snapshot, changes);
                changes.categories.push(Category {
                    id: f.category.clone(),
                    name: if f.category_name.is_empty() {
                        named(&f.category.0)
                    } else {
                        f.category_name.clone()
                    },
                    description: String::new(),
                    position,
                });
            }
        }
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

    fn home() -> Market {
        protocol::checkout::CheckoutConfig::default().markets[0].clone()
    }

    fn row(pairs: &[(&str, &str)]) -> Row {
        let mut fields: BTreeMap<String, String> = [
            ("product", "COF-1"),
            ("sku", "COF-1-500"),
            ("name", "House Beans"),
            ("category", "coffee"),
            ("price", "12.90"),
            ("currency", "EUR"),
            ("version", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            fields.insert(k.to_string(), v.to_string());
        }
        Row { number: 3, fields }
    }

    #[test]
    fn a_good_row_reads_every_field() {
        let f = validate(
            &row(&[
                ("tax_class", "reduced"),
                ("barcode", "4006381333931"),
                ("weight_grams", "550"),
                ("attributes", "origin=Ethiopia; roast = light"),
                ("active", "true"),
                ("variant_title", "500 g"),
            ]),
            Currency::EUR,
            &home(),
        )
        .expect("valid");
        assert_eq!(f.tax_rate_bp, 700, "the home market's reduced rate");
        assert_eq!(f.price, Some(Money::new(1290, Currency::EUR)));
        assert_eq!(f.attributes.get("roast").map(String::as_str), Some("light"));
        assert_eq!(f.title, "500 g");
        assert_eq!(f.barcode.as_deref(), Some("4006381333931"));
        let defaults = validate(&row(&[]), Currency::EUR, &home()).expect("valid");
        assert_eq!(
            (defaults.tax_class.as_str(), defaults.tax_rate_bp),
            ("standard", 1900)
        );
        assert_eq!(
            (defaults.title.as_str(), defaults.weight_grams),
            ("Default", 0)
        );
        assert!(defaults.active);
    }

    #[test]
    fn every_bad_field_is_named_with_what_to_fix() {
        let cases: &[Case] = &[
            (&[("product", "")], "product", "required"),
            (&[("product", "a b")], "product", "not a valid product"),
            (&[("sku", "bad sku")], "sku", "invalid SKU"),
            (&[("name", "")], "name", "required"),
            (&[("category", "Coffee")], "category", "slug"),
            (
                &[("tax_class", "luxury")],
                "tax_class",
                "standard, reduced or zero",
            ),
            (&[("barcode", "4006381333932")], "barcode", "EAN-13"),
            (&[("barcode", "40063813339")], "barcode", "EAN-13"),
            (&[("weight_grams", "-5")], "weight_grams", "grams"),
            (&[("attributes", "origin")], "attributes", "key=value"),
            (&[("attributes", "a=1;a=2")], "attributes", "twice"),
            (&[("price", "12,90")], "price", "amount in EUR"),
            (&[("price", "-1")], "price", "negative"),
            (&[("currency", "USD")], "currency", "catalog's currency"),
            (&[("currency", "EURO")], "currency", "unknown currency"),
            (&[("active", "maybe")], "active", "true or false"),
            (&[("version", "")], "version", "required"),
            (&[("version", "v2")], "version", "whole number"),
        ];
        for (pairs, field, reason) in cases {
            let errors = validate(&row(pairs), Currency::EUR, &home()).expect_err(field);
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == *field && e.row == 3 && e.reason.contains(reason)),
                "{pairs:?}: {errors:?}"
            );
        }
        let many = validate(
            &row(&[("sku", ""), ("price", "x"), ("version", "")]),
            Currency::EUR,
            &home(),
        )
        .expect_err("three problems");
        assert_eq!(many.len(), 3, "all errors at once: {many:?}");
    }

    #[test]
    fn a_home_market_without_the_class_refuses_it() {
        let mut market = home();
        market.tax_rates.remove("zero");
        let errors =
            validate(&row(&[("tax_class", "zero")]), Currency::EUR, &market).expect_err("no rate");
        assert!(errors[0].reason.contains("no rate"), "{errors:?}");
    }

    #[test]
    fn ean13_check_digits() {
        for good in ["4006381333931", "5901234123457", "0000000000000"] {
            assert!(ean13_ok(good), "{good}");
        }
        for bad in [
            "4006381333930",
            "400638133393",
            "40063813339311",
            "400638133393a",
            "４006381333931",
        ] {
            assert!(!ean13_ok(bad), "{bad}");
        }
    }

    #[test]
    fn slugs_are_lower_case_ascii_with_single_dashes() {
        assert_eq!(slugify("House Beans — 500 g!"), "house-beans-500-g");
        assert_eq!(slugify("  Crème Brûlée  "), "cr-me-br-l-e");
        assert_eq!(slugify("***"), "");
        assert_eq!(slugify(&"a".repeat(100)).len(), 80);
    }
}
