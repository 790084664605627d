//! The reports over the aggregates: funnel, revenue, products, searches and abandonment, for a
//! date range (UTC days, both ends included, at most [`MAX_DAYS`]) and optionally one channel.
//!
//! Funnel counts are distinct subjects per stage. Each day keeps a mergeable distinct-count
//! sketch per stage (exact up to 512 subjects, HyperLogLog beyond, about 1.6 % standard
//! error), so a multi-day total is the size of the **union** of the days' subjects — a shopper
//! seen on three days counts once — not a sum of daily uniques. The per-day rows are each
//! day's own distinct counts.

use protocol::experience::aggregates::FUNNEL;
use protocol::experience::{Aggregates, ChannelDay, DayKey, DistinctSketch};
use protocol::{Currency, Money};
use serde::Serialize;
use std::collections::BTreeMap;
use time::Date;

/// The widest range a report covers.
pub const MAX_DAYS: i64 = 366;
/// The channels a report can be filtered by.
pub const CHANNELS: [&str; 6] = ["web", "mobile", "pos", "board", "voice", "chat"];
/// The funnel's stage names, in order (the CSV header and JSON keys).
pub const STAGES: [&str; 4] = [
    "product_view",
    "basket_add",
    "checkout_started",
    "order_placed",
];

/// Which days and channel a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub from: Date,
    pub to: Date,
    pub channel: Option<String>,
}

impl Range {
    fn days<'a>(&'a self, a: &'a Aggregates) -> impl Iterator<Item = &'a ChannelDay> + 'a {
        let start = DayKey {
            day: self.from,
            channel: String::new(),
        };
        a.days
            .range(start..)
            .map(|(_, d)| d)
            .take_while(|d| d.key.day <= self.to)
            .filter(|d| self.channel.as_ref().is_none_or(|c| *c == d.key.channel))
    }
}

fn decimal(minor: i64, currency: &str) -> String {
    Currency::parse(currency)
        .map(|c| Money::new(minor, c).to_decimal_string())
        .unwrap_or_else(|_| minor.to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelRow {
    pub day: String,
    pub channel: String,
    pub product_view: u64,
    pub basket_add: u64,
    pub checkout_started: u64,
    pub order_placed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    pub rows: Vec<FunnelRow>,
    /// Distinct subjects over the whole range (the union of the days).
    pub total: FunnelRow,
    /// Whether any count is a sketch estimate rather than exact.
    pub estimated: bool,
    /// order_placed / product_view over the range.
    pub conversion: Option<f64>,
}

fn funnel_row(day: String, channel: String, sketches: &[DistinctSketch; 4]) -> FunnelRow {
    FunnelRow {
        day,
        channel,
        product_view: sketches[0].count(),
        basket_add: sketches[1].count(),
        checkout_started: sketches[2].count(),
        order_placed: sketches[3].count(),
    }
}

pub fn funnel(a: &Aggregates, range: &Range) -> Funnel {
    let mut rows = Vec::new();
    let mut union: [DistinctSketch; 4] = Default::default();
    for d in range.days(a) {
        rows.push(funnel_row(
            d.key.day.to_string(),
            d.key.channel.clone(),
            &d.funnel,
        ));
        for (u, s) in union.iter_mut().zip(&d.funnel) {
            u.merge(s);
        }
    }
    let channel = range.channel.clone().unwrap_or_else(|| "all".into());
    let total = funnel_row("total".into(), channel, &union);
    let conversion =
        (total.product_view > 0).then(|| total.order_placed as f64 / total.product_view as f64);
    debug_assert_eq!(FUNNEL.len(), STAGES.len());
    Funnel {
        rows,
        estimated: union.iter().any(DistinctSketch::is_estimate),
        total,
        conversion,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueRow {
    pub day: String,
    pub channel: String,
    pub store: String,
    pub currency: String,
    pub orders: u64,
    pub gross: String,
    pub refunded: String,
    pub net: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueTotal {
    pub currency: String,
    pub orders: u64,
    pub gross: String,
    pub refunded: String,
    pub net: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueReport {
    pub rows: Vec<RevenueRow>,
    pub totals: Vec<RevenueTotal>,
}

pub fn revenue(a: &Aggregates, range: &Range) -> RevenueReport {
    let mut rows = Vec::new();
    let mut totals: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
    for d in range.days(a) {
        for (store, currencies) in &d.revenue {
            for (currency, r) in currencies {
                rows.push(RevenueRow {
                    day: d.key.day.to_string(),
                    channel: d.key.channel.clone(),
                    store: store.clone(),
                    currency: currency.clone(),
                    orders: r.orders,
                    gross: decimal(r.gross_minor, currency),
                    refunded: decimal(r.refunded_minor, currency),
                    net: decimal(r.gross_minor - r.refunded_minor, currency),
                });
                let t = totals.entry(currency.clone()).or_default();
                t.0 += r.orders;
                t.1 += r.gross_minor;
                t.2 += r.refunded_minor;
            }
        }
    }
    let totals = totals
        .into_iter()
        .map(|(currency, (orders, gross, refunded))| RevenueTotal {
            orders,
            gross: decimal(gross, &currency),
            refunded: decimal(refunded, &currency),
            net: decimal(gross - refunded, &currency),
            currency,
        })
        .collect();
    RevenueReport { rows, totals }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductRow {
    pub product: String,
    pub views: u64,
    pub adds: u64,
    pub units: u64,
}

/// What the top products are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductSort {
    Views,
    Adds,
    Units,
}

pub fn products(a: &Aggregates, range: &Range, sort: ProductSort, limit: usize) -> Vec<ProductRow> {
    let mut sums: BTreeMap<&str, ProductRow> = BTreeMap::new();
    for d in range.days(a) {
        for (product, c) in &d.products {
            let row = sums.entry(product).or_insert_with(|| ProductRow {
                product: product.clone(),
                views: 0,
                adds: 0,
                units: 0,
            });
            row.views += c.views;
            row.adds += c.adds;
            row.units += c.units;
        }
    }
    let mut rows: Vec<ProductRow> = sums.into_values().collect();
    let score = |r: &ProductRow| match sort {
        ProductSort::Views => r.views,
        ProductSort::Adds => r.adds,
        ProductSort::Units => r.units,
    };
    rows.sort_by(|x, y| {
        score(y)
            .cmp(&score(x))
            .then_with(|| x.product.cmp(&y.product))
    });
    rows.truncate(limit);
    rows
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchRow {
    pub query: String,
    pub searches: u64,
    pub no_results: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchReport {
    /// Most searched first.
    pub top: Vec<SearchRow>,
    /// Searches that found nothing, most frequent first.
    pub no_results: Vec<SearchRow>,
}

pub fn searches(a: &Aggregates, range: &Range, limit: usize) -> SearchReport {
    let mut sums: BTreeMap<&str, SearchRow> = BTreeMap::new();
    for d in range.days(a) {
        for (query, c) in &d.searches {
            let row = sums.entry(query).or_insert_with(|| SearchRow {
                query: query.clone(),
                searches: 0,
                no_results: 0,
            });
            row.searches += c.searches;
            row.no_results += c.no_results;
        }
    }
    let all: Vec<SearchRow> = sums.into_values().collect();
    let ranked = |key: fn(&SearchRow) -> u64| {
        let mut rows: Vec<SearchRow> = all.iter().filter(|r| key(r) > 0).cloned().collect();
        rows.sort_by(|x, y| key(y).cmp(&key(x)).then_with(|| x.query.cmp(&y.query)));
        rows.truncate(limit);
        rows
    };
    SearchReport {
        top: ranked(|r| r.searches),
        no_results: ranked(|r| r.no_results),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbandonmentRow {
    pub day: String,
    pub channel: String,
    /// Baskets whose first line was added that day on that channel.
    pub baskets: u64,
    pub ordered: u64,
    pub abandoned: u64,
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbandonmentReport {
    pub rows: Vec<AbandonmentRow>,
    pub total: AbandonmentRow,
}

fn abandonment_row(day: String, channel: String, baskets: u64, ordered: u64) -> AbandonmentRow {
    let abandoned = baskets.saturating_sub(ordered);
    AbandonmentRow {
        day,
        channel,
        baskets,
        ordered,
        abandoned,
        rate: (baskets > 0).then(|| abandoned as f64 / baskets as f64),
    }
}

pub fn abandonment(a: &Aggregates, range: &Range) -> AbandonmentReport {
    let mut rows = Vec::new();
    let (mut baskets, mut ordered) = (0, 0);
    for d in range.days(a).filter(|d| d.baskets > 0) {
        rows.push(abandonment_row(
            d.key.day.to_string(),
            d.key.channel.clone(),
            d.baskets,
            d.baskets_ordered,
        ));
        baskets += d.baskets;
        ordered += d.baskets_ordered;
    }
    let channel = range.channel.clone().unwrap_or_else(|| "all".into());
    AbandonmentReport {
        rows,
        total: abandonment_row("total".into(), channel, baskets, ordered),
    }
}
