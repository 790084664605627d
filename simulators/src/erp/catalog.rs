//! The generated catalog: every fact about product `p`, variant `v`, its prices and its stock
//! levels is a pure function of the seed and the index, so nothing is stored for an entity
//! until it changes, 100,000 products cost a few megabytes, and the same seed gives the same
//! catalog on every run. Sale dates are counted from an anchor (midnight UTC of the day the
//! simulator started, unless set), so they are in the future when the simulator runs.
//!
//! Identities: product code `ERP-{p:06}` (p from 1), SKU `ERP-{p:06}-{v}` (v from 1, 1–3
//! variants), barcode an EAN-13 `40{p*4+v:010}` plus its check digit.

use protocol::catalog::CategoryId;
use protocol::feed::{CouponRow, PriceRow, ProductRow, PromotionRow, StockRow};
use protocol::promotion::{Benefit, Combination, Condition, Limits, PromotionSpec, Target};
use protocol::{Currency, Money};
use std::time::{Duration, UNIX_EPOCH};

/// The most products a catalog may have (barcodes have room for them; memory stays sane).
pub(crate) const MAX_PRODUCTS: u32 = 1_000_000;

const DAY: i64 = 86_400;

/// SplitMix64 over `(seed, domain, index)`: one independent stream per entity, so an entity's
/// facts do not depend on any other entity. Not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, domain: u64, index: u64) -> Rng {
        let mut rng = Rng(seed
            ^ domain.wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: i64, high: i64) -> i64 {
        let span = high.saturating_sub(low).saturating_add(1).max(1);
        low + (self.next_u64() % span as u64) as i64
    }

    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// An element of a non-empty constant table.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Entity streams, so that two kinds of entity with the same index draw different numbers.
mod domain {
    pub(super) const PRODUCT: u64 = 1;
    pub(super) const VARIANT: u64 = 2;
    pub(super) const PRICES: u64 = 3;
    pub(super) const LEVEL: u64 = 4;
    pub(super) const DELTAS: u64 = 5;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Coffee,
    Tea,
    Gear,
    Cups,
    Gift,
}

struct Category {
    slug: &'static str,
    name: &'static str,
    kind: Kind,
    tax_class: &'static str,
}

const CATEGORIES: [Category; 8] = [
    Category {
        slug: "coffee-beans",
        name: "Coffee beans",
        kind: Kind::Coffee,
        tax_class: "reduced",
    },
    Category {
        slug: "ground-coffee",
        name: "Ground coffee",
        kind: Kind::Coffee,
        tax_class: "reduced",
    },
    Category {
        slug: "tea",
        name: "Tea",
        kind: Kind::Tea,
        tax_class: "reduced",
    },
    Category {
        slug: "brewers",
        name: "Brewers",
        kind: Kind::Gear,
        tax_class: "standard",
    },
    Category {
        slug: "grinders",
        name: "Grinders",
        kind: Kind::Gear,
        tax_class: "standard",
    },
    Category {
        slug: "mugs",
        name: "Mugs & cups",
        kind: Kind::Cups,
        tax_class: "standard",
    },
    Category {
        slug: "accessories",
        name: "Accessories",
        kind: Kind::Gear,
        tax_class: "standard",
    },
    Category {
        slug: "gift-boxes",
        name: "Gift boxes",
        kind: Kind::Gift,
        tax_class: "standard",
    },
];

const BRANDS: [&str; 10] = [
    "Röstwerk",
    "Hafenbohne",
    "Kaffeekontor",
    "Alpenglut",
    "Nordlicht",
    "Bohnenbund",
    "Tassenglück",
    "Spreewerk",
    "Elbröster",
    "Morgenrot",
];
const COFFEE_ORIGINS: [&str; 10] = [
    "Ethiopia",
    "Colombia",
    "Brazil",
    "Guatemala",
    "Kenya",
    "Sumatra",
    "Honduras",
    "Peru",
    "Rwanda",
    "India",
];
const COFFEE_STYLES: [&str; 6] = [
    "Espresso",
    "Filter",
    "Crema",
    "Reserve",
    "House Blend",
    "Single Origin",
];
const ROASTS: [&str; 3] = ["light", "medium", "dark"];
const PROCESSES: [&str; 3] = ["washed", "natural", "honey"];
const TEA_ORIGINS: [&str; 6] = ["Assam", "Darjeeling", "Ceylon", "Yunnan", "Uji", "Nilgiri"];
const TEA_TYPES: [&str; 4] = ["black", "green", "oolong", "white"];
const GEAR: [&str; 10] = [
    "Pour-Over Dripper",
    "French Press",
    "Moka Pot",
    "Cold Brew Jar",
    "Hand Grinder",
    "Burr Grinder",
    "Milk Jug",
    "Tamper",
    "Coffee Scale",
    "Gooseneck Kettle",
];
const GEAR_STYLES: [&str; 5] = ["Classic", "Compact", "Pro", "Travel", "Studio"];
const MATERIALS: [&str; 4] = ["steel", "glass", "ceramic", "wood"];
const CUPS: [&str; 4] = ["Espresso Cup", "Latte Mug", "Travel Mug", "Cappuccino Cup"];
const GIFTS: [&str; 3] = ["Tasting Box", "Discovery Set", "Barista Kit"];

/// Variant titles, price multipliers (percent of the base price) and weights (grams).
fn variant_table(kind: Kind) -> [(&'static str, i64, i64); 3] {
    match kind {
        Kind::Coffee => [
            ("250 g", 100, 262),
            ("500 g", 185, 515),
            ("1 kg", 340, 1_025),
        ],
        Kind::Tea => [("50 g", 100, 58), ("100 g", 180, 110), ("250 g", 400, 268)],
        Kind::Gear => [("Black", 100, 0), ("White", 100, 0), ("Copper", 115, 0)],
        Kind::Cups => [
            ("Small", 100, 210),
            ("Medium", 115, 290),
            ("Large", 130, 380),
        ],
        Kind::Gift => [
            ("Small", 100, 900),
            ("Large", 170, 1_600),
            ("Deluxe", 250, 2_400),
        ],
    }
}

/// The base price range of a kind, whole euros.
fn price_range(kind: Kind) -> (i64, i64) {
    match kind {
        Kind::Coffee => (6, 18),
        Kind::Tea => (3, 12),
        Kind::Gear => (14, 149),
        Kind::Cups => (8, 24),
        Kind::Gift => (19, 49),
    }
}

/// The prices generated for a variant, in feed order: always `RetailEur`, the others for
/// some variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PriceKind {
    /// `retail`, EUR, open-ended: the product row's base price.
    RetailEur,
    /// `member`, EUR, 10 % below retail.
    MemberEur,
    /// `retail`, USD.
    RetailUsd,
    /// `retail`, EUR, 20 % off for a week starting 1–14 days after the anchor.
    SaleEur,
}

/// A stock movement: the generated ones and those added through the test API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    pub variant: u32,
    pub location: u16,
    pub quantity: i64,
    pub movement: String,
}

/// What one product is, before its variants.
struct ProductFacts {
    category: &'static Category,
    brand: &'static str,
    name: String,
    description: String,
    /// `key=value` pairs shared by the variants.
    attributes: String,
    base_minor: i64,
}

/// The catalog's shape and its generator.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub seed: u64,
    pub products: u32,
    pub locations: Vec<String>,
    /// Unix seconds that sale dates count from.
    pub anchor: i64,
    /// The first variant id of each product, plus the variant count at the end.
    first_variant: Vec<u32>,
}

impl Catalog {
    pub(crate) fn new(seed: u64, products: u32, locations: Vec<String>, anchor: i64) -> Catalog {
        let mut first_variant = Vec::with_capacity(products as usize + 1);
        let mut next = 0u32;
        for p in 1..=products {
            first_variant.push(next);
            next += variant_count(seed, p);
        }
        first_variant.push(next);
        Catalog {
            seed,
            products,
            locations,
            anchor,
            first_variant,
        }
    }

    /// Variants in all (variant ids are `0..variants()`).
    pub(crate) fn variants(&self) -> u32 {
        self.first_variant.last().copied().unwrap_or(0)
    }

    /// `(product number, variant number)`, both from 1, of a variant id.
    pub(crate) fn product_of(&self, variant: u32) -> (u32, u32) {
        let index = self.first_variant.partition_point(|&f| f <= variant) - 1;
        let product = index as u32 + 1;
        (product, variant - self.first_variant[index] + 1)
    }

    /// The variant ids of product `p` (from 1).
    pub(crate) fn variants_of(&self, product: u32) -> std::ops::Range<u32> {
        let i = product as usize - 1;
        self.first_variant[i]..self.first_variant[i + 1]
    }

    pub(crate) fn sku(&self, variant: u32) -> String {
        let (p, v) = self.product_of(variant);
        format!("{}-{v}", product_code(p))
    }

    /// The product number of a product code this catalog has.
    pub(crate) fn product_by_code(&self, code: &str) -> Option<u32> {
        let p: u32 = code.strip_prefix("ERP-")?.parse().ok()?;
        ((1..=self.products).contains(&p) && product_code(p) == code).then_some(p)
    }

    /// The variant id of a SKU this catalog has.
    pub(crate) fn variant_by_sku(&self, sku: &str) -> Option<u32> {
        let (code, v) = sku.rsplit_once('-')?;
        let p = self.product_by_code(code)?;
        let v: u32 = v.parse().ok()?;
        let range = self.variants_of(p);
        let variant = range.start.checked_add(v.checked_sub(1)?)?;
        (range.contains(&variant) && self.sku(variant) == sku).then_some(variant)
    }

    pub(crate) fn location_index(&self, location: &str) -> Option<u16> {
        self.locations
            .iter()
            .position(|l| l == location)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn product_facts(&self, p: u32) -> ProductFacts {
        let mut rng = Rng::new(self.seed, domain::PRODUCT, u64::from(p));
        let _variants = rng.next_u64(); // drawn by `variant_count`
        let category = &CATEGORIES[rng.below(CATEGORIES.len())];
        let brand = rng.pick(&BRANDS);
        let (low, high) = price_range(category.kind);
        let base_minor = rng.between(low, high) * 100 + 90;
        let (name, description, attributes) = match category.kind {
            Kind::Coffee => {
                let (origin, style) = (rng.pick(&COFFEE_ORIGINS), rng.pick(&COFFEE_STYLES));
                let (roast, process) = (rng.pick(&ROASTS), rng.pick(&PROCESSES));
                (
                    format!("{origin} {style}"),
                    format!("{origin} beans, {process}, {roast} roast. Roasted by {brand}."),
                    format!("origin={origin};roast={roast};process={process}"),
                )
            }
            Kind::Tea => {
                let (origin, kind) = (rng.pick(&TEA_ORIGINS), rng.pick(&TEA_TYPES));
                (
                    format!("{origin} {} Tea", capitalised(kind)),
                    format!("Loose-leaf {kind} tea from {origin}, packed by {brand}."),
                    format!("origin={origin};type={kind}"),
                )
            }
            Kind::Gear => {
                let (style, item) = (rng.pick(&GEAR_STYLES), rng.pick(&GEAR));
                let material = rng.pick(&MATERIALS);
                (
                    format!("{style} {item}"),
                    format!(
                        "A {} {item} in {material}, by {brand}.",
                        style.to_lowercase()
                    ),
                    format!("material={material}"),
                )
            }
            Kind::Cups => {
                let item = rng.pick(&CUPS);
                (
                    format!("{brand} {item}"),
                    format!(
                        "A ceramic {} made for {brand}; dishwasher safe.",
                        item.to_lowercase()
                    ),
                    "material=ceramic".to_owned(),
                )
            }
            Kind::Gift => {
                let item = rng.pick(&GIFTS);
                let origin = rng.pick(&COFFEE_ORIGINS);
                (
                    format!("{brand} {item}"),
                    format!(
                        "A {} with coffee from {origin} and more.",
                        item.to_lowercase()
                    ),
                    format!("contents=coffee;origin={origin}"),
                )
            }
        };
        ProductFacts {
            category,
            brand,
            name,
            description,
            attributes,
            base_minor,
        }
    }

    /// The variant's price on the retail list in EUR (its base price), in cents.
    fn retail_minor(&self, facts: &ProductFacts, v: u32) -> i64 {
        let (_, percent, _) = variant_table(facts.category.kind)[v as usize - 1];
        // Rounded to whole ten cents.
        (facts.base_minor * percent + 500) / 1000 * 10
    }

    /// The generated product row of a variant (its version left empty).
    pub(crate) fn product_row(&self, variant: u32) -> ProductRow {
        let (p, v) = self.product_of(variant);
        let facts = self.product_facts(p);
        let mut rng = Rng::new(self.seed, domain::VARIANT, u64::from(variant));
        let (title, _, weight) = variant_table(facts.category.kind)[v as usize - 1];
        let weight = if weight == 0 {
            rng.between(150, 2_500)
        } else {
            weight
        };
        let mut attributes = facts.attributes.clone();
        if facts.category.kind == Kind::Gear {
            attributes.push_str(";color=");
            attributes.push_str(&title.to_lowercase());
        }
        ProductRow {
            product: product_code(p),
            sku: format!("{}-{v}", product_code(p)),
            name: facts.name.clone(),
            brand: facts.brand.to_owned(),
            description: facts.description.clone(),
            category: facts.category.slug.to_owned(),
            category_name: facts.category.name.to_owned(),
            variant_title: title.to_owned(),
            tax_class: facts.category.tax_class.to_owned(),
            barcode: ean13(40 * 10_000_000_000 + u64::from(p) * 4 + u64::from(v)),
            weight_grams: weight.to_string(),
            attributes,
            price: eur(self.retail_minor(&facts, v)),
            currency: "EUR".to_owned(),
            active: "true".to_owned(),
            version: String::new(),
        }
    }

    /// The prices generated for a variant, in feed order.
    pub(crate) fn price_kinds(&self, variant: u32) -> Vec<PriceKind> {
        let mut rng = Rng::new(self.seed, domain::PRICES, u64::from(variant));
        let mut kinds = vec![PriceKind::RetailEur];
        if rng.one_in(4) {
            kinds.push(PriceKind::MemberEur);
        }
        if rng.one_in(5) {
            kinds.push(PriceKind::RetailUsd);
        }
        if rng.one_in(10) {
            kinds.push(PriceKind::SaleEur);
        }
        kinds
    }

    /// A generated price row (its version left empty).
    pub(crate) fn price_row(&self, variant: u32, kind: PriceKind) -> PriceRow {
        let (p, v) = self.product_of(variant);
        let retail = self.retail_minor(&self.product_facts(p), v);
        let mut row = PriceRow {
            sku: format!("{}-{v}", product_code(p)),
            price_list: "retail".to_owned(),
            currency: "EUR".to_owned(),
            price: eur(retail),
            ..PriceRow::default()
        };
        match kind {
            PriceKind::RetailEur => {}
            PriceKind::MemberEur => {
                row.price_list = "member".to_owned();
                row.price = eur((retail * 9 + 50) / 100 * 10);
            }
            PriceKind::RetailUsd => {
                row.currency = "USD".to_owned();
                // 8 % above the euro price, ending in .99.
                row.price = money((retail * 108 / 100) / 100 * 100 + 99, Currency::USD);
            }
            PriceKind::SaleEur => {
                let mut rng = Rng::new(self.seed, domain::PRICES, u64::from(variant) | 1 << 40);
                let from = self.anchor + rng.between(1, 14) * DAY;
                row.price = eur((retail * 8 + 50) / 100 * 10);
                row.compare_at = eur(retail);
                row.valid_from = rfc3339(from);
                row.valid_until = rfc3339(from + 7 * DAY);
            }
        }
        row
    }

    /// The generated stock level of a variant at a location: up to 300 online, up to 30 in a
    /// store, sometimes none.
    pub(crate) fn level(&self, variant: u32, location: u16) -> i64 {
        let index = u64::from(variant) * self.locations.len() as u64 + u64::from(location);
        let mut rng = Rng::new(self.seed, domain::LEVEL, index);
        let online = self
            .locations
            .get(usize::from(location))
            .map(String::as_str)
            == Some("online");
        match (online, rng.one_in(if online { 10 } else { 5 })) {
            (_, true) => 0,
            (true, false) => rng.between(1, 300),
            (false, false) => rng.between(1, 30),
        }
    }

    pub(crate) fn level_row(&self, variant: u32, location: u16, quantity: i64) -> StockRow {
        StockRow {
            sku: self.sku(variant),
            location: self.locations[usize::from(location)].clone(),
            kind: "level".to_owned(),
            quantity: quantity.to_string(),
            movement: String::new(),
            version: String::new(),
        }
    }

    pub(crate) fn delta_row(&self, delta: &Delta) -> StockRow {
        StockRow {
            sku: self.sku(delta.variant),
            location: self.locations[usize::from(delta.location)].clone(),
            kind: "delta".to_owned(),
            quantity: delta.quantity.to_string(),
            movement: delta.movement.clone(),
            version: String::new(),
        }
    }

    /// `count` movements after the generated levels: mostly receipts, some removals that never
    /// take a level below zero. Movement ids are `MV-00000001` on.
    pub(crate) fn deltas(&self, count: u32) -> Vec<Delta> {
        let mut rng = Rng::new(self.seed, domain::DELTAS, 0);
        let mut moved = std::collections::HashMap::new();
        let (variants, locations) = (self.variants(), self.locations.len());
        let mut deltas = Vec::with_capacity(count as usize);
        for n in 1..=count {
            let variant = rng.below(variants as usize) as u32;
            let location = rng.below(locations) as u16;
            let on_hand = moved
                .entry((variant, location))
                .or_insert_with(|| self.level(variant, location));
            let quantity = if *on_hand > 0 && rng.one_in(3) {
                -rng.between(1, (*on_hand).min(3))
            } else {
                rng.between(1, 24)
            };
            *on_hand += quantity;
            deltas.push(Delta {
                variant,
                location,
                quantity,
                movement: movement_id(u64::from(n)),
            });
        }
        deltas
    }

    /// The generated promotions, their definitions [`PromotionSpec`]s as the engine reads them:
    /// a coupon promotion, an automatic one, one on a category and an ended exclusive one.
    pub(crate) fn promotions(&self) -> Vec<PromotionRow> {
        let at_least = |eur: i64| Condition::MinSubtotal {
            amount: Money::new(eur * 100, Currency::EUR),
        };
        let percent_off = |target: Target, percent: u32| Benefit::PercentOff {
            target,
            percent_bp: percent * 100,
        };
        let stackable = |group: &str| Combination::Stackable {
            group: group.to_owned(),
        };
        let row = |id: &str, name: &str, description: &str, spec: PromotionSpec, active: bool| {
            PromotionRow {
                id: id.to_owned(),
                name: name.to_owned(),
                description: description.to_owned(),
                // A spec is plain data: serialising it cannot fail.
                definition: serde_json::to_string(&spec).unwrap_or_default(),
                active: active.to_string(),
                version: String::new(),
            }
        };
        vec![
            row(
                "PROMO-WELCOME10",
                "Welcome 10 %",
                "10 % off a basket of 50 EUR or more with the code WELCOME10 or HELLO10.",
                PromotionSpec {
                    conditions: vec![at_least(50), Condition::Coupon],
                    benefit: percent_off(Target::All, 10),
                    combination: stackable("welcome"),
                    priority: 10,
                    limits: Limits {
                        per_customer: Some(1),
                        ..Limits::default()
                    },
                },
                true,
            ),
            row(
                "PROMO-BIG15",
                "Big basket 15 %",
                "15 % off baskets of 150 EUR or more.",
                PromotionSpec {
                    conditions: vec![at_least(150)],
                    benefit: percent_off(Target::All, 15),
                    combination: stackable("basket"),
                    priority: 20,
                    limits: Limits::default(),
                },
                true,
            ),
            row(
                "PROMO-COFFEE20",
                "Coffee beans 20 %",
                "20 % off coffee beans with the code COFFEE20.",
                PromotionSpec {
                    conditions: vec![Condition::Coupon],
                    benefit: percent_off(
                        Target::Categories {
                            categories: vec![CategoryId("coffee-beans".to_owned())],
                        },
                        20,
                    ),
                    combination: stackable("coffee"),
                    priority: 15,
                    limits: Limits {
                        total: Some(1000),
                        ..Limits::default()
                    },
                },
                true,
            ),
            row(
                "PROMO-WINTER20",
                "Winter sale 20 %",
                "20 % off baskets of 100 EUR or more with the code WINTER20, alone.",
                PromotionSpec {
                    conditions: vec![at_least(100), Condition::Coupon],
                    benefit: percent_off(Target::All, 20),
                    combination: Combination::Exclusive,
                    priority: 30,
                    limits: Limits::default(),
                },
                false,
            ),
        ]
    }

    /// Public codes for the coupon promotions (one of them expired).
    pub(crate) fn coupons(&self) -> Vec<CouponRow> {
        let coupon =
            |code: &str, promotion: &str, max: &str, per_customer: &str, expires: Option<i64>| {
                CouponRow {
                    code: code.to_owned(),
                    promotion: promotion.to_owned(),
                    max_uses: max.to_owned(),
                    max_uses_per_customer: per_customer.to_owned(),
                    expires_at: expires.map(rfc3339).unwrap_or_default(),
                    version: String::new(),
                }
            };
        vec![
            coupon("WELCOME10", "PROMO-WELCOME10", "", "1", None),
            coupon(
                "HELLO10",
                "PROMO-WELCOME10",
                "5000",
                "1",
                Some(self.anchor + 30 * DAY),
            ),
            coupon(
                "COFFEE20",
                "PROMO-COFFEE20",
                "1000",
                "1",
                Some(self.anchor + 90 * DAY),
            ),
            coupon(
                "WINTER20",
                "PROMO-WINTER20",
                "500",
                "1",
                Some(self.anchor - DAY),
            ),
        ]
    }
}

fn variant_count(seed: u64, product: u32) -> u32 {
    let mut rng = Rng::new(seed, domain::PRODUCT, u64::from(product));
    1 + (rng.next_u64() % 3) as u32
}

pub(crate) fn product_code(p: u32) -> String {
    format!("ERP-{p:06}")
}

pub(crate) fn movement_id(n: u64) -> String {
    format!("MV-{n:08}")
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn eur(minor: i64) -> String {
    money(minor, Currency::EUR)
}

fn money(minor: i64, currency: Currency) -> String {
    Money::new(minor, currency).to_decimal_string()
}

/// `2026-11-26T00:00:00Z`.
pub(crate) fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Midnight UTC of the day `unix` falls in.
pub(crate) fn midnight(unix: i64) -> i64 {
    unix.div_euclid(DAY) * DAY
}

/// The EAN-13 of a 12-digit body: the body and its check digit.
pub(crate) fn ean13(body: u64) -> String {
    let digits = format!("{body:012}");
    let check = check_digit(&digits).unwrap_or(0);
    format!("{digits}{check}")
}

/// Whether `text` is 13 digits with a correct EAN-13 check digit.
pub(crate) fn ean13_valid(text: &str) -> bool {
    text.len() == 13
        && text.bytes().all(|b| b.is_ascii_digit())
        && check_digit(&text[..12]) == text[12..].parse().ok()
}

/// The check digit of 12 digits: weights 1 and 3 alternating from the left.
fn check_digit(twelve: &str) -> Option<u32> {
    let mut sum = 0;
    for (i, c) in twelve.chars().enumerate() {
        let d = c.to_digit(10)?;
        sum += if i % 2 == 0 { d } else { 3 * d };
    }
    Some((10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(products: u32) -> Catalog {
        let locations = ["online", "store-berlin"].map(str::to_owned).to_vec();
        Catalog::new(7, products, locations, 1_800_000_000)
    }

    #[test]
    fn ean13_check_digits() {
        assert!(ean13_valid("4006381333931"));
        assert!(!ean13_valid("4006381333932"));
        assert!(!ean13_valid("400638133393"));
        assert!(!ean13_valid("40063813339a1"));
        assert_eq!(ean13(400_638_133_393), "4006381333931");
        assert_eq!(ean13(590_123_412_345), "5901234123457");
    }

    #[test]
    fn skus_and_variants_round_trip() {
        let c = catalog(50);
        assert!(c.variants() >= 50 && c.variants() <= 150);
        for variant in 0..c.variants() {
            let sku = c.sku(variant);
            assert_eq!(c.variant_by_sku(&sku), Some(variant), "{sku}");
            let (p, _) = c.product_of(variant);
            assert!(c.variants_of(p).contains(&variant));
        }
        for bad in [
            "ERP-000001-0",
            "ERP-000001-4",
            "ERP-1-1",
            "ERP-000051-1",
            "ERP-000001",
            "x",
        ] {
            assert_eq!(c.variant_by_sku(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_are_deterministic_valid_and_seed_dependent() {
        let (a, b) = (catalog(30), catalog(30));
        let other = Catalog::new(8, 30, a.locations.clone(), a.anchor);
        let mut differs = false;
        for variant in 0..a.variants() {
            let row = a.product_row(variant);
            assert_eq!(row, b.product_row(variant));
            assert!(ean13_valid(&row.barcode), "{}", row.barcode);
            assert!(Money::parse_decimal(&row.price, Currency::EUR).is_ok());
            assert!(row.attributes.contains('='));
            let retail = a.price_row(variant, PriceKind::RetailEur);
            assert_eq!(
                retail.price, row.price,
                "the base price is the retail price"
            );
            differs |= variant < other.variants() && other.product_row(variant) != row;
        }
        assert!(differs, "another seed gives another catalog");
    }

    #[test]
    fn promotions_are_valid_specs_and_coupons_name_them() {
        let c = catalog(20);
        let price = |sku: &protocol::Sku| {
            let variant = c.variant_by_sku(sku.as_str())?;
            let row = c.product_row(variant);
            Money::parse_decimal(&row.price, Currency::EUR).ok()
        };
        let promotions = c.promotions();
        for row in &promotions {
            let spec = PromotionSpec::from_json(&row.definition).expect("the engine reads it");
            assert_eq!(
                protocol::promotion::validate(&spec, price),
                Ok(()),
                "{}",
                row.id
            );
        }
        for coupon in c.coupons() {
            assert!(promotions.iter().any(|p| p.id == coupon.promotion));
        }
    }

    #[test]
    fn generated_deltas_never_go_below_zero_and_ids_are_unique() {
        let c = catalog(20);
        let deltas = c.deltas(500);
        let mut on_hand = std::collections::HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for d in &deltas {
            let level = on_hand
                .entry((d.variant, d.location))
                .or_insert_with(|| c.level(d.variant, d.location));
            *level += d.quantity;
            assert!(*level >= 0);
            assert!(ids.insert(d.movement.clone()));
        }
        assert!(deltas.iter().any(|d| d.quantity < 0));
    }
}
