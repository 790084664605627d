//! `GET /`: a read-only dashboard for people — the statistics of `/_sim/stats`, the newest
//! orders with their status and tracking numbers, the faults in force and the newest webhook
//! deliveries. It refreshes itself every few seconds and changes nothing.

use super::{lock, Shared};
use crate::common::timestamp;
use actix_web::{web, HttpResponse};
use minijinja::context;
use serde::Serialize;
use std::sync::OnceLock;

/// Rows per table.
const RECENT: usize = 20;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config.route("/", web::get().to(show));
}

fn pages() -> &'static minijinja::Environment<'static> {
    static PAGES: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    PAGES.get_or_init(|| {
        let mut pages = minijinja::Environment::new();
        // The template is part of the binary; a broken one fails `the_template_compiles`.
        let _ = pages.add_template("dashboard.html", include_str!("dashboard.html"));
        pages
    })
}

#[derive(Serialize)]
struct OrderRow {
    number: String,
    order_id: String,
    oms_id: String,
    status: &'static str,
    lines: usize,
    shipments: String,
    deliveries: u64,
    updated: String,
}

async fn show(shared: web::Data<Shared>) -> HttpResponse {
    let (orders, stats) = {
        let book = lock(&shared.book);
        let orders: Vec<OrderRow> = book
            .newest(RECENT)
            .map(|o| OrderRow {
                number: o.request.number.clone(),
                order_id: o.request.order_id.clone(),
                oms_id: o.oms_id.clone(),
                status: o.status.as_str(),
                lines: o.request.lines.len(),
                shipments: o
                    .shipments
                    .iter()
                    .map(|s| match &s.tracking {
                        Some(t) => format!("{} {}", t.carrier, t.tracking_number),
                        None => "pending".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                deliveries: o.deliveries,
                updated: timestamp(o.updated),
            })
            .collect();
        (orders, book.stats())
    };
    let deliveries: Vec<_> = shared
        .webhooks
        .deliveries()
        .into_iter()
        .rev()
        .take(RECENT)
        .collect();
    let page = context! {
        now => timestamp(shared.clock.unix()),
        stats => stats,
        orders => orders,
        faults => lock(&shared.faults).active(),
        deliveries => deliveries,
    };
    match pages()
        .get_template("dashboard.html")
        .and_then(|t| t.render(page))
    {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the dashboard");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The dashboard could not be shown.")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_compiles() {
        assert!(super::pages().get_template("dashboard.html").is_ok());
    }
}
