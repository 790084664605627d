//! `GET /backoffice/analytics`: the funnel, revenue by channel and day, and the top products,
//! as SVG charts drawn here from `crate::experience::reports` (analysts, marketers, admins).

use super::charts;
use super::{BackOfficeSession, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::experience::reports::{self, ProductSort, Range};
use actix_web::{web, HttpRequest, HttpResponse};
use channels::Backend;
use minijinja::{context, Value};
use protocol::{Currency, Money};
use serde::Deserialize;
use std::collections::BTreeMap;

const PERIODS: [i64; 3] = [7, 30, 90];
const TOP_PRODUCTS: usize = 10;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/analytics").route(web::get().to(show)));
}

#[derive(Deserialize)]
pub struct AnalyticsQuery {
    days: Option<i64>,
}

/// Net revenue per (day, channel) in one currency, in minor units, from the report's rows.
fn revenue_series(
    rows: &[reports::RevenueRow],
    currency: Currency,
    days: &[String],
) -> Vec<(String, Vec<i64>)> {
    let mut by_channel: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.currency == currency.code()) {
        let Some(i) = days.iter().position(|d| *d == row.day) else {
            continue;
        };
        let Ok(net) = Money::parse_decimal(&row.net, currency) else {
            continue;
        };
        by_channel
            .entry(row.channel.as_str())
            .or_insert_with(|| vec![0; days.len()])[i] += net.minor;
    }
    by_channel
        .into_iter()
        .map(|(c, v)| (c.to_string(), v))
        .collect()
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    query: web::Query<AnalyticsQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Analytics::ROLES)?;
    let days_back = query.days.filter(|d| PERIODS.contains(d)).unwrap_or(30);
    let to = handle.backend.deps.clock.now().date();
    let from = to - time::Duration::days(days_back - 1);
    let range = Range {
        from,
        to,
        channel: None,
    };
    let r = range.clone();
    let funnel = handle
        .experience
        .read(move |a| reports::funnel(a, &r))
        .await?;
    let r = range.clone();
    let revenue = handle
        .experience
        .read(move |a| reports::revenue(a, &r))
        .await?;
    let r = range.clone();
    let products = handle
        .experience
        .read(move |a| reports::products(a, &r, ProductSort::Units, TOP_PRODUCTS))
        .await?;

    let stages = [
        ("Viewed a product", funnel.total.product_view),
        ("Added to basket", funnel.total.basket_add),
        ("Started checkout", funnel.total.checkout_started),
        ("Placed an order", funnel.total.order_placed),
    ];
    let funnel_rows: Vec<(String, i64)> = stages
        .iter()
        .map(|(l, v)| (l.to_string(), i64::try_from(*v).unwrap_or(i64::MAX)))
        .collect();
    let funnel_svg = charts::bars("Shoppers at each step", &funnel_rows, |v| v.to_string());

    let days: Vec<String> = (0..days_back)
        .map(|i| (from + time::Duration::days(i)).to_string())
        .collect();
    let currency = revenue
        .totals
        .first()
        .and_then(|t| Currency::parse(&t.currency).ok())
        .unwrap_or(Currency::EUR);
    let series = revenue_series(&revenue.rows, currency, &days);
    let money = |v: i64| super::format_money(Money::new(v, currency));
    let revenue_svg = charts::stacked_columns(
        &format!("Net revenue by day and channel ({currency})"),
        &days,
        &series,
        money,
    );
    // The legend's swatches take the palette's order by class (no inline styles under the CSP).
    let legend: Vec<Value> = series
        .iter()
        .map(|(name, _)| Value::from(name.as_str()))
        .collect();

    let catalog = handle.backend.catalog();
    let product_rows: Vec<(String, i64)> = products
        .iter()
        .map(|p| {
            let name = p
                .product
                .parse::<protocol::ProductId>()
                .ok()
                .and_then(|id| catalog.product(id).map(|p| p.name.clone()))
                .unwrap_or_else(|| p.product.clone());
            (name, i64::try_from(p.units).unwrap_or(i64::MAX))
        })
        .collect();
    let products_svg = charts::bars("Units sold", &product_rows, |v| v.to_string());
    let product_rows: Vec<Value> = products
        .iter()
        .zip(&product_rows)
        .map(|(p, (name, _))| context! { name => name, views => p.views, adds => p.adds, units => p.units })
        .collect();

    pages.render(
        &req,
        &session,
        "analytics.html",
        context! {
            days => days_back,
            periods => PERIODS,
            from => from.to_string(),
            to => to.to_string(),
            funnel => Value::from_safe_string(funnel_svg),
            conversion => funnel.conversion.map(|c| format!("{:.1} %", c * 100.0)),
            estimated => funnel.estimated,
            revenue => Value::from_safe_string(revenue_svg),
            legend => legend,
            totals => revenue.totals,
            products => Value::from_safe_string(products_svg),
            product_table => product_rows,
        },
    )
}
