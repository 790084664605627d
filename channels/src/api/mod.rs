//! The JSON API for web and mobile apps, under `/api/v1`. Every error is
//! `{"error": {"code", "message"}}` (see [`crate::error`]).

mod catalog;
mod checkout;
pub mod consents;
mod customers;
mod openapi;
mod slots;

pub mod baskets;

use actix_web::web;

/// Registers the API routes and the JSON 404 for unknown API routes.
///
/// Static paths come first and the dynamic ones last, and a basket's routes sit in one scope:
/// actix matches dynamic paths by regular expression, one resource after another, so this keeps
/// the number of expressions tried per request small.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/categories", web::get().to(catalog::categories))
            .route("/products", web::get().to(catalog::list))
            .route("/basket", web::get().to(baskets::current))
            .route("/chat", web::post().to(crate::assistant::chat::post))
            .route("/baskets", web::post().to(baskets::create))
            .route("/customers", web::post().to(customers::register))
            .route("/customers/me", web::get().to(customers::me))
            .route("/customers/me/events", web::get().to(customers::events))
            .route("/customers/me/consents", web::get().to(consents::show))
            .route("/customers/me/consents", web::put().to(consents::change))
            .route("/customers/me/in-store", web::get().to(customers::in_store))
            .route(
                "/customers/me/in-store",
                web::put().to(customers::set_in_store),
            )
            .route(
                "/customers/me/in-store/loyalty-number",
                web::post().to(customers::issue_loyalty_number),
            )
            .route("/sessions", web::post().to(customers::sign_in))
            .route("/sessions/current", web::delete().to(customers::sign_out))
            .route("/orders", web::get().to(checkout::list))
            .route("/orders/lookup", web::get().to(checkout::lookup))
            .route("/products/{slug}", web::get().to(catalog::detail))
            .route("/slots/{slot}", web::get().to(slots::get))
            .route(
                "/products/{sku}/subscriptions",
                web::post().to(catalog::subscribe),
            )
            .route("/orders/{id}", web::get().to(checkout::detail))
            .route("/checkouts/{id}", web::get().to(checkout::read))
            .route("/checkouts/{id}/cancel", web::post().to(checkout::cancel))
            .route("/checkouts/{id}/confirm", web::post().to(checkout::confirm))
            .service(
                web::scope("/baskets/{id}")
                    .route("", web::get().to(baskets::read))
                    .route("/lines", web::post().to(baskets::add_line))
                    .route("/lines", web::delete().to(baskets::clear))
                    .route("/lines/{sku}", web::patch().to(baskets::set_quantity))
                    .route("/lines/{sku}", web::delete().to(baskets::remove_line))
                    .route("/coupons", web::post().to(baskets::apply_coupon))
                    .route("/coupons/{code}", web::delete().to(baskets::remove_coupon))
                    .route("/live", web::get().to(crate::live::basket_socket))
                    .route("/quote", web::get().to(checkout::quote))
                    .route("/checkout", web::post().to(checkout::start))
                    .default_service(web::to(crate::error::api_not_found)),
            )
            .default_service(web::to(crate::error::api_not_found)),
    );
}
