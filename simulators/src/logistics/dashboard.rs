//! The carrier's pages for people: `GET /`, a read-only dashboard (statistics, the newest
//! shipments with their tracking status, the faults in force, the newest webhook deliveries)
//! that refreshes itself, and the public tracking page `track.html` that `api.rs` serves.

use super::{lock, Shared};
use crate::common::timestamp;
use actix_web::http::StatusCode;
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
        // The templates are part of the binary; a broken one fails `the_templates_compile`.
        let _ = pages.add_template("dashboard.html", include_str!("dashboard.html"));
        let _ = pages.add_template("track.html", include_str!("track.html"));
        pages.add_filter("when", |unix: i64| timestamp(unix));
        pages
    })
}

/// Renders a page, or a plain 500 if the template fails.
pub(super) fn render(status: StatusCode, name: &str, page: minijinja::Value) -> HttpResponse {
    match pages().get_template(name).and_then(|t| t.render(page)) {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, name, "cannot render a page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page could not be shown.")
        }
    }
}

#[derive(Serialize)]
struct ParcelRow {
    id: String,
    reference: String,
    order_id: String,
    carrier: &'static str,
    tracking_number: String,
    status: &'static str,
    created: i64,
}

async fn show(shared: web::Data<Shared>) -> HttpResponse {
    let (parcels, stats) = {
        let parcels = lock(&shared.parcels);
        let rows: Vec<ParcelRow> = parcels
            .newest(RECENT)
            .map(|p| ParcelRow {
                id: p.id.clone(),
                reference: p.request.reference.clone(),
                order_id: p.request.order_id.clone(),
                carrier: p.carrier,
                tracking_number: p.tracking_number.clone(),
                status: p.status.as_str(),
                created: p.created,
            })
            .collect();
        (rows, parcels.stats())
    };
    let deliveries: Vec<_> = shared
        .webhooks
        .deliveries()
        .into_iter()
        .rev()
        .take(RECENT)
        .collect();
    let page = context! {
        now => shared.clock.unix(),
        stats => stats,
        parcels => parcels,
        faults => lock(&shared.faults).active(),
        deliveries => deliveries,
    };
    render(StatusCode::OK, "dashboard.html", page)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_templates_compile() {
        assert!(super::pages().get_template("dashboard.html").is_ok());
        assert!(super::pages().get_template("track.html").is_ok());
    }
}
