//! `omnihub bench pricing`: the promotion engine's benchmark (issue 7, benchmark b). It builds a
//! catalog of products in many categories and brands, and a set of active promotions of every
//! kind — most about products a given basket does not hold, some that apply, some exclusive,
//! some held back by a condition or a limit — each accepted by [`protocol::promotion::validate`].
//! Then it prices baskets of 20 lines many times with
//! [`protocol::pricing::price_basket_with_promotions`], the function the hub and the edge nodes
//! call, and prints the latency percentiles against the target (p99 under 1 ms).
//!
//! Everything is generated from a seed, so two runs measure the same work. It runs in-process
//! and does no I/O; build it with `--release` for figures that mean something. Entry points:
//! [`PricingBench`] and [`pricing`].

use protocol::catalog::{Category, CategoryId, Product, Variant};
use protocol::channel::Channel;
use protocol::promotion::{
    validate, Benefit, Combination, Condition, Limits, Promotion, PromotionContext, PromotionId,
    PromotionSet, PromotionSpec, Target, Tier, Usage,
};
use protocol::{
    Basket, BasketId, BasketOwner, CatalogSnapshot, Currency, LocationId, Money, ProductId, Sku,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The target for the 99th percentile.
const TARGET_P99: Duration = Duration::from_millis(1);
const CATEGORIES: usize = 40;
const BRANDS: usize = 25;
/// Different baskets priced in turn.
const BASKETS: usize = 200;
/// Promotion groups the stackable promotions are spread over.
const GROUPS: u64 = 6;

/// The arguments of `omnihub bench pricing`.
#[derive(Debug, Clone, PartialEq)]
pub struct PricingBench {
    pub promotions: usize,
    pub products: usize,
    pub lines: usize,
    pub iterations: usize,
    pub seed: u64,
}

impl Default for PricingBench {
    fn default() -> Self {
        PricingBench {
            promotions: 1_000,
            products: 5_000,
            lines: 20,
            iterations: 20_000,
            seed: 7,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum PricingBenchError {
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("generated promotion {id} was refused: {reasons}")]
    Refused { id: String, reasons: String },
    #[error("pricing failed: {0}")]
    Pricing(#[from] protocol::pricing::PricingError),
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PricingReport {
    pub set_build: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
    /// Per pricing, on average: promotions looked at (applied or explained) and applied.
    pub looked_at: f64,
    pub applied: f64,
}

/// A small deterministic generator (SplitMix64): the same seed, the same catalog and baskets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn sku_of(i: usize) -> Sku {
    Sku::parse(&format!("SKU-{i:06}")).expect("letters, digits and a dash make a valid SKU")
}

fn category_of(i: usize) -> CategoryId {
    CategoryId(format!("category-{}", i % CATEGORIES))
}

fn brand_of(i: usize) -> String {
    format!("Brand {}", i % BRANDS)
}

fn catalog(products: usize, rng: &mut Rng) -> CatalogSnapshot {
    let categories = (0..CATEGORIES)
        .map(|i| Category {
            id: category_of(i),
            name: format!("Category {i}"),
            description: String::new(),
            position: i as u32,
        })
        .collect();
    let products = (0..products)
        .map(|i| Product {
            id: ProductId::new(),
            slug: format!("product-{i}"),
            name: format!("Product {i}"),
            brand: brand_of(rng.index(BRANDS)),
            description: String::new(),
            category: category_of(rng.index(CATEGORIES)),
            tax_rate_bp: if rng.chance(30) { 700 } else { 1900 },
            tax_class: protocol::STANDARD_TAX_CLASS.into(),
            image: String::new(),
            variants: vec![Variant {
                sku: sku_of(i),
                title: "Default".into(),
                price: eur(100 + rng.below(14_900) as i64),
                compare_at: None,
                barcode: None,
                weight_grams: 500,
            }],
            attributes: Default::default(),
        })
        .collect();
    CatalogSnapshot::new(1, categories, products)
}

/// A target of 1 to 3 SKUs, one category or one brand.
fn some_products(rng: &mut Rng, products: usize) -> Target {
    match rng.below(3) {
        0 => Target::Skus {
            skus: (0..1 + rng.index(3))
                .map(|_| sku_of(rng.index(products)))
                .collect(),
        },
        1 => Target::Categories {
            categories: vec![category_of(rng.index(CATEGORIES))],
        },
        _ => Target::Brands {
            brands: vec![brand_of(rng.index(BRANDS))],
        },
    }
}

/// A benefit by a mix close to a retailer's: mostly percentages and amounts on some products.
fn benefit(rng: &mut Rng, products: usize) -> Benefit {
    let percent = |rng: &mut Rng| 500 + 500 * rng.below(6) as u32;
    match rng.below(100) {
        0..=34 => Benefit::PercentOff {
            target: some_products(rng, products),
            percent_bp: percent(rng),
        },
        35..=44 => Benefit::AmountOff {
            target: some_products(rng, products),
            amount: eur(100 * (1 + rng.below(10) as i64)),
        },
        // 0.50 is below every price of the catalog (1.00 and up).
        45..=52 => Benefit::AmountOffEach {
            target: some_products(rng, products),
            amount: eur(50),
        },
        53..=62 => Benefit::BuyXGetY {
            buy: Target::Categories {
                categories: vec![category_of(rng.index(CATEGORIES))],
            },
            buy_quantity: 1 + rng.below(2) as u32,
            get: some_products(rng, products),
            get_quantity: 1,
            percent_bp: if rng.chance(50) { 10_000 } else { 5_000 },
        },
        63..=70 => Benefit::Tiered {
            target: some_products(rng, products),
            tiers: vec![
                Tier {
                    min_quantity: Some(2),
                    min_subtotal: None,
                    percent_bp: 500,
                },
                Tier {
                    min_quantity: Some(4),
                    min_subtotal: Some(eur(5_000)),
                    percent_bp: 1_000,
                },
            ],
        },
        71..=78 => Benefit::FixedPrice {
            target: some_products(rng, products),
            price: eur(500 + 100 * rng.below(20) as i64),
        },
        79..=86 => Benefit::PercentOffBasket {
            percent_bp: 500 + 500 * rng.below(2) as u32,
        },
        87..=91 => Benefit::AmountOffBasket { amount: eur(500) },
        92..=95 => Benefit::FreeShipping,
        _ => Benefit::FreeGift {
            sku: sku_of(rng.index(products)),
            quantity: 1,
        },
    }
}

/// Conditions: basket-wide benefits always have one that often fails (a threshold, a segment,
/// a channel, a coupon, a time window); others sometimes.
fn conditions(rng: &mut Rng, benefit: &Benefit, now: OffsetDateTime) -> Vec<Condition> {
    let basket_wide = matches!(
        benefit,
        Benefit::PercentOffBasket { .. }
            | Benefit::AmountOffBasket { .. }
            | Benefit::FreeShipping
            | Benefit::FreeGift { .. }
    );
    let mut out = Vec::new();
    if basket_wide {
        out.push(Condition::MinSubtotal {
            amount: eur(5_000 + 5_000 * rng.below(10) as i64),
        });
    }
    if basket_wide || rng.chance(30) {
        out.push(match rng.below(5) {
            0 => Condition::Segment {
                any_of: vec![["vip", "staff", "students"][rng.index(3)].to_string()],
            },
            1 => Condition::Channel {
                any_of: vec![[Channel::Web, Channel::Pos, Channel::Mobile][rng.index(3)]],
            },
            2 => Condition::Coupon,
            3 => Condition::Store {
                any_of: vec![LocationId(format!("store-{}", rng.below(5)))],
            },
            _ => Condition::Window {
                from: Some(now - time::Duration::days(rng.below(10) as i64 - 3)),
                until: Some(now + time::Duration::days(7)),
                weekdays: Vec::new(),
                from_minute: Some(480),
                until_minute: Some(1200),
            },
        });
    }
    out
}

fn promotions(count: usize, products: usize, rng: &mut Rng, now: OffsetDateTime) -> Vec<Promotion> {
    (0..count)
        .map(|i| {
            let benefit = benefit(rng, products);
            let conditions = conditions(rng, &benefit, now);
            let combination = if rng.chance(5) {
                Combination::Exclusive
            } else {
                Combination::Stackable {
                    group: format!("group-{}", rng.below(GROUPS)),
                }
            };
            let limits = Limits {
                per_order: matches!(benefit, Benefit::BuyXGetY { .. }).then_some(3),
                per_customer: rng.chance(10).then_some(1),
                total: rng.chance(10).then_some(10_000),
            };
            Promotion {
                id: PromotionId(format!("PROMO-{i:04}")),
                name: format!("Promotion {i}"),
                spec: PromotionSpec {
                    conditions,
                    benefit,
                    combination,
                    priority: rng.below(10) as i32,
                    limits,
                },
                created_seq: i as u64,
            }
        })
        .collect()
}

/// `lines` distinct SKUs, 1 to 3 of each.
fn basket(products: usize, lines: usize, rng: &mut Rng, now: OffsetDateTime) -> Basket {
    let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
    while basket.lines.len() < lines {
        let sku = sku_of(rng.index(products));
        if basket.lines.iter().all(|l| l.sku != sku) {
            let quantity = 1 + rng.below(3) as i64;
            // Within the line limits by construction.
            let _ = basket.add(sku, quantity, 1_000, now);
        }
    }
    basket
}

fn context(promotions: &[Promotion], rng: &mut Rng, now: OffsetDateTime) -> PromotionContext {
    let mut ctx = PromotionContext::new(Currency::EUR, Channel::Web, now);
    // A signed-in shopper: promotions limited per customer are evaluated (a guest skips them).
    ctx.known_customer = true;
    ctx.segments.insert("vip".into());
    ctx.shipping = Some(eur(490));
    for p in promotions {
        if matches!(p.spec.conditions.as_slice(), [.., Condition::Coupon]) && rng.chance(20) {
            ctx.coupons.insert(p.id.clone());
        }
        if p.spec.limits.per_customer.is_some() && rng.chance(50) {
            ctx.usage.insert(
                p.id.clone(),
                Usage {
                    by_customer: 1,
                    total: 10,
                },
            );
        }
    }
    ctx
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Runs the benchmark and prints its figures.
pub fn pricing(args: PricingBench) -> Result<PricingReport, PricingBenchError> {
    if args.promotions == 0 || args.iterations == 0 || args.lines == 0 {
        return Err(PricingBenchError::BadArguments(
            "promotions, lines and iterations must be at least 1".into(),
        ));
    }
    if args.lines > args.products / 2 {
        return Err(PricingBenchError::BadArguments(format!(
            "{} lines need at least {} products",
            args.lines,
            args.lines * 2
        )));
    }
    let now =
        OffsetDateTime::from_unix_timestamp(1_772_620_200).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut rng = Rng(args.seed);
    let catalog = catalog(args.products, &mut rng);
    let promotions = promotions(args.promotions, args.products, &mut rng, now);
    let lowest = |sku: &Sku| {
        catalog
            .product_by_sku(sku)
            .and_then(|p| p.variant(sku))
            .map(|v| v.price)
    };
    for p in &promotions {
        validate(&p.spec, lowest).map_err(|errors| PricingBenchError::Refused {
            id: p.id.to_string(),
            reasons: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })?;
    }
    let exclusive = promotions
        .iter()
        .filter(|p| p.spec.combination == Combination::Exclusive)
        .count();
    let ctx = context(&promotions, &mut rng, now);
    let started = Instant::now();
    let set = PromotionSet::new(promotions);
    let set_build = started.elapsed();
    let baskets: Vec<Basket> = (0..BASKETS)
        .map(|_| basket(args.products, args.lines, &mut rng, now))
        .collect();
    println!(
        "omnihub bench pricing: {} active promotions ({exclusive} exclusive), {} products, {}-line baskets, {} pricings",
        args.promotions, args.products, args.lines, args.iterations
    );
    if cfg!(debug_assertions) {
        println!("  (a debug build: build with --release for meaningful figures)");
    }
    let lookup = |sku: &Sku| catalog.product_by_sku(sku);
    let mut times = Vec::with_capacity(args.iterations);
    let (mut looked_at, mut applied) = (0usize, 0usize);
    for i in 0..args.iterations {
        let basket = &baskets[i % baskets.len()];
        let started = Instant::now();
        let priced = protocol::pricing::price_basket_with_promotions(basket, lookup, &set, &ctx)?;
        times.push(started.elapsed());
        let priced = black_box(priced);
        applied += priced.promotions.applied.len();
        looked_at += priced.promotions.applied.len() + priced.promotions.not_applied.len();
    }
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let report = PricingReport {
        set_build,
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        max: times[times.len() - 1],
        mean: total / u32::try_from(times.len()).unwrap_or(u32::MAX),
        looked_at: looked_at as f64 / args.iterations as f64,
        applied: applied as f64 / args.iterations as f64,
    };
    print_report(&report);
    Ok(report)
}

fn print_report(r: &PricingReport) {
    println!(
        "  promotion set built (sorted and indexed) in {}",
        micros(r.set_build)
    );
    println!(
        "  per basket: {:.1} promotions looked at (applied or explained), {:.1} applied",
        r.looked_at, r.applied
    );
    println!(
        "  latency: p50 {}, p99 {}, max {}, mean {}",
        micros(r.p50),
        micros(r.p99),
        micros(r.max),
        micros(r.mean)
    );
    let verdict = if r.p99 < TARGET_P99 { "met" } else { "NOT met" };
    println!("  target p99 < 1 ms: {verdict}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_prices_and_reports() {
        let report = pricing(PricingBench {
            promotions: 200,
            products: 500,
            lines: 20,
            iterations: 50,
            seed: 3,
        })
        .expect("runs");
        assert!(report.p50 <= report.p99 && report.p99 <= report.max);
        assert!(report.looked_at > 0.0 && report.looked_at < 200.0);
        assert!(report.applied > 0.0, "some promotions apply: {report:?}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let zero = PricingBench {
            iterations: 0,
            ..PricingBench::default()
        };
        assert!(matches!(
            pricing(zero),
            Err(PricingBenchError::BadArguments(_))
        ));
        let tiny = PricingBench {
            products: 10,
            ..PricingBench::default()
        };
        assert!(matches!(
            pricing(tiny),
            Err(PricingBenchError::BadArguments(_))
        ));
    }
}
