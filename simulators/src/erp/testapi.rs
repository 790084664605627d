//! The test API (JSON, no key; the simulator listens on loopback by default), under `/test/`
//! and also under `/_sim/`, the prefix of the other simulators' test APIs:
//!
//! - `GET /test/state` → `{"seed", "products", "variants", "locations", "anchor",
//!   "stock_deltas", "feeds": {"<feed>": {"feed", "sequence", "cursor", "rows", "compacted"}},
//!   "faults", "stats"}`.
//! - `POST /test/changes` with one change (`{"type": ...}`) or `{"changes": [...]}` → 200
//!   `{"applied": [{"feed", "key", "version", "sequence"}]}`; a batch is refused whole (422,
//!   404 or 409 with `{"error"}`, naming the change) and then changes nothing.
//! - `GET|POST|DELETE /test/faults`: show, replace the named sections of, clear the faults.
//! - `POST /test/push` `{"feed", "url", "since"?, "format"?: "json"|"csv", "page_size"?}` →
//!   200 the push report (every request's status and answer); 502 `hub_unreachable`.
//! - `GET /healthz` → `ok`.

use super::api::{cursor, parse_cursor, MAX_LIMIT};
use super::changes::{self, Change};
use super::faults::FaultsUpdate;
use super::push::{self, PushError, PushFormat};
use super::{lock, Shared};
use crate::common::{error, is_http_url};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use protocol::feed::FeedKind;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::info;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    for prefix in ["/test", "/_sim"] {
        config.service(
            web::scope(prefix)
                .route("/state", web::get().to(state))
                .route("/changes", web::post().to(apply_changes))
                .route("/faults", web::get().to(show_faults))
                .route("/faults", web::post().to(update_faults))
                .route("/faults", web::delete().to(clear_faults))
                .route("/push", web::post().to(push_now)),
        );
    }
    config.route("/healthz", web::get().to(healthz));
}

fn unprocessable(code: &str, message: &str) -> HttpResponse {
    error(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The JSON of a body, or why it is not JSON.
fn json_body(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(body)
}

fn malformed(e: serde_json::Error) -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        &format!("The body is not JSON: {e}"),
    )
}

async fn state(shared: web::Data<Shared>) -> HttpResponse {
    let sim = lock(&shared.sim);
    let catalog = &sim.store.catalog;
    let feeds: Map<String, Value> = sim
        .store
        .figures()
        .into_iter()
        .map(|f| (f.feed.to_string(), json!(f)))
        .collect();
    HttpResponse::Ok().json(json!({
        "seed": catalog.seed,
        "products": catalog.products,
        "variants": catalog.variants(),
        "locations": catalog.locations,
        "anchor": super::catalog::rfc3339(catalog.anchor),
        "stock_deltas": sim.store.delta_count(),
        "feeds": feeds,
        "faults": sim.faults,
        "stats": sim.stats,
    }))
}

async fn apply_changes(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(e) => return malformed(e),
    };
    let parsed = match value {
        Value::Object(mut object) if object.contains_key("changes") && object.len() == 1 => {
            serde_json::from_value::<Vec<Change>>(object.remove("changes").unwrap_or_default())
        }
        single => serde_json::from_value::<Change>(single).map(|c| vec![c]),
    };
    let batch = match parsed {
        Ok(batch) => batch,
        Err(e) => {
            return unprocessable(
                "invalid_change",
                &format!("Send a change {{\"type\": \"set_price\" | \"update_product\" | \"set_stock\" | \"stock_delta\" | \"end_promotion\" | \"update_coupon\", ...}} or {{\"changes\": [...]}}: {e}"),
            )
        }
    };
    let mut sim = lock(&shared.sim);
    match changes::apply(&mut sim.store, batch) {
        Ok(applied) => {
            sim.applied(&applied);
            drop(sim);
            info!(entities = applied.len(), "changes applied");
            HttpResponse::Ok().json(json!({ "applied": applied }))
        }
        Err(refusal) => error(refusal.status, refusal.code, &refusal.message),
    }
}

async fn show_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&lock(&shared.sim).faults)
}

async fn update_faults(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let update: FaultsUpdate = match json_body(&body).map(serde_json::from_value) {
        Ok(Ok(update)) => update,
        Ok(Err(e)) => return unprocessable("invalid_faults", &format!("Invalid faults: {e}")),
        Err(e) => return malformed(e),
    };
    let mut sim = lock(&shared.sim);
    match sim.faults.apply(update) {
        Ok(()) => {
            info!(faults = ?sim.faults.active(), "faults changed");
            HttpResponse::Ok().json(&sim.faults)
        }
        Err(message) => unprocessable("invalid_faults", &message),
    }
}

async fn clear_faults(shared: web::Data<Shared>) -> HttpResponse {
    let mut sim = lock(&shared.sim);
    sim.faults.clear();
    HttpResponse::Ok().json(&sim.faults)
}

fn default_page_size() -> usize {
    super::api::DEFAULT_LIMIT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    feed: String,
    /// The hub's base URL.
    url: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    format: PushFormat,
    #[serde(default = "default_page_size")]
    page_size: usize,
}

async fn push_now(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let request: PushRequest = match json_body(&body).map(serde_json::from_value) {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            return unprocessable(
                "invalid_push",
                &format!(
                    "Send {{\"feed\", \"url\", \"since\"?, \"format\"?, \"page_size\"?}}: {e}"
                ),
            )
        }
        Err(e) => return malformed(e),
    };
    let Some(feed) = FeedKind::parse(&request.feed) else {
        return unprocessable(
            "unknown_feed",
            "feed is products, prices, stock, promotions or coupons.",
        );
    };
    if !is_http_url(&request.url) {
        return unprocessable("bad_url", "url is the hub's http(s) base URL.");
    }
    if !(1..=MAX_LIMIT).contains(&request.page_size) {
        return unprocessable("bad_page_size", &format!("page_size is 1 to {MAX_LIMIT}."));
    }
    let after = match request.since.as_str() {
        "" => 0,
        since => {
            let head = lock(&shared.sim).store.head(feed);
            match parse_cursor(since).filter(|s| *s <= head) {
                Some(after) => after,
                None => {
                    return unprocessable(
                        "bad_cursor",
                        &format!(
                            "since is empty or a cursor of this feed, c0 to {}.",
                            cursor(head)
                        ),
                    )
                }
            }
        }
    };
    match push::push(
        &shared,
        feed,
        &request.url,
        after,
        request.format,
        request.page_size,
    )
    .await
    {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(e @ PushError::Unreachable { .. }) => {
            error(StatusCode::BAD_GATEWAY, "hub_unreachable", &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "push failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The push could not be prepared.",
            )
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}
