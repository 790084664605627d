//! `GET /`: a read-only status page for people — the catalog's shape, every feed's sequence,
//! rows and compacted entries, the faults in force, the newest changes and pushes. It
//! refreshes itself every few seconds and changes nothing.

use super::{lock, Shared};
use actix_web::{web, HttpResponse};
use minijinja::context;
use std::sync::OnceLock;

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

async fn show(shared: web::Data<Shared>) -> HttpResponse {
    let page = {
        let sim = lock(&shared.sim);
        let catalog = &sim.store.catalog;
        context! {
            seed => catalog.seed,
            products => catalog.products,
            variants => catalog.variants(),
            locations => catalog.locations.join(", "),
            feeds => sim.store.figures(),
            stats => sim.stats.clone(),
            faults => sim.faults.active(),
            changes => sim.recent_changes.iter().rev().cloned().collect::<Vec<_>>(),
            pushes => sim.recent_pushes.iter().rev().cloned().collect::<Vec<_>>(),
        }
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
            tracing::error!(error = %e, "cannot render the status page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The status page could not be shown.")
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
