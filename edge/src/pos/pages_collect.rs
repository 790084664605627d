//! The till's "Click & collect" screen (`/pos/collect`): the store's pick list with a form per
//! order to mark it picked (with what could not be found) and to hand it over. The same
//! operations as `/api/v1/pickups` ([`crate::store::Store::pick`],
//! [`crate::store::Store::hand_over`]), so it works offline; forms carry the session's CSRF
//! token and are refused from another origin, like every POS form.

use super::{blocking, check_form, chrome, error_page, render, require, see_other, when};
use crate::api::ApiState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use protocol::Sku;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// `GET /pos/collect[?done=<number>]`: the pick list.
pub(super) async fn page(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let who = match require(&state, &req).await {
        Ok(w) => w,
        Err(res) => return res,
    };
    let store = state.store.clone();
    let list = match blocking(move || Ok(store.pickups(10)?)).await {
        Ok(l) => l,
        Err(e) => return error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    };
    let pickups: Vec<serde_json::Value> = list
        .iter()
        .map(|p| {
            let mut v = crate::pos::pickups::view(p);
            v["open"] = json!(p.is_open());
            v["received"] = json!(when(p.received_ms));
            v["collected"] = json!(p.handed_over_ms.map(when));
            v
        })
        .collect();
    let open = list.iter().filter(|p| p.is_open()).count();
    let chrome = chrome(&state, Some(&who), None).await;
    render(
        StatusCode::OK,
        "collect.html",
        json!({
            "chrome": chrome,
            "pickups": pickups,
            "open": open,
            "done": query.get("done"),
        }),
    )
}

/// `POST /pos/collect/{order}` with `action=pick` (and `short_<SKU>=<units>` for what could
/// not be found) or `action=handover`.
pub(super) async fn act(
    state: web::Data<ApiState>,
    req: HttpRequest,
    order: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let form = form.into_inner();
    let csrf = form.get("csrf").map(String::as_str).unwrap_or_default();
    let who = match check_form(&state, &req, csrf).await {
        Ok(w) => w,
        Err(res) => return res,
    };
    let action = form.get("action").map(String::as_str).unwrap_or_default();
    let store = state.store.clone();
    let clerk = Some(who.id.clone());
    let done = match action {
        "pick" => {
            let short = match short_of(&form) {
                Ok(s) => s,
                Err(message) => {
                    return error_page(
                        &state,
                        Some(&who),
                        StatusCode::UNPROCESSABLE_ENTITY,
                        message,
                    )
                    .await
                }
            };
            blocking(move || Ok(store.pick(&order, &short, clerk)?)).await
        }
        "handover" => blocking(move || Ok(store.hand_over(&order, clerk)?)).await,
        _ => {
            return error_page(
                &state,
                Some(&who),
                StatusCode::BAD_REQUEST,
                "Choose Picked or Hand over.".into(),
            )
            .await
        }
    };
    match done {
        Ok(p) => see_other(&format!("/pos/collect?done={}", p.order.number)),
        Err(e) => error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    }
}

/// The `short_<SKU>` fields of a pick form (empty or 0: nothing short).
fn short_of(form: &HashMap<String, String>) -> Result<BTreeMap<Sku, u32>, String> {
    let mut short = BTreeMap::new();
    for (name, value) in form {
        let Some(sku) = name.strip_prefix("short_") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let n: u32 = value
            .parse()
            .map_err(|_| format!("Missing units for {sku} must be a whole number, like 1."))?;
        if n == 0 {
            continue;
        }
        let sku = Sku::parse(sku).map_err(|e| e.to_string())?;
        short.insert(sku, n);
    }
    Ok(short)
}
