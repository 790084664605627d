//! The till's Returns screen (`/pos/returns`, `docs/pos.md` "Returns and exchanges"): find a
//! receipt by its number, choose how many units of each line come back, and refund them to the
//! original payment. The same code as `POST /api/v1/returns` ([`super::returns::take`]); no
//! script needed.

use super::pages::{check_form, chrome, render, require, selected_till, show};
use super::returns::{returnable, returnable_json, take, HubLink};
use crate::api::ApiState;
use crate::ops::ApprovalRequest;
use crate::store::{ReturnLineRequest, ReturnRequest};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::Money;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Registers the Returns pages inside the `/pos` scope.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/returns", web::get().to(returns_page))
        .route("/returns", web::post().to(take_return));
}

#[derive(Deserialize)]
struct ReceiptQuery {
    receipt: Option<String>,
}

/// The receipt's lines as the page shows them.
fn sale_view(found: &Value) -> Value {
    let currency = found["sale"]["currency"].as_str().unwrap_or("EUR");
    let money = |v: &Value| {
        v.as_str()
            .and_then(|t| protocol::Currency::parse(currency).ok().map(|c| (t, c)))
            .and_then(|(t, c)| Money::parse_decimal(t, c).ok())
            .map_or_else(|| v.as_str().unwrap_or("").to_string(), show)
    };
    let lines: Vec<Value> = found["lines"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    json!({"line": l["line"], "sku": l["sku"], "name": l["name"], "sold": l["sold"],
                           "returned": l["returned"], "returnable": l["returnable"],
                           "each": money(&l["unit_refund"])})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"number": found["sale"]["number"], "source": found["source"], "lines": lines})
}

async fn page(
    state: &web::Data<ApiState>,
    hub: &web::Data<HubLink>,
    who: &super::SignedIn,
    req: &HttpRequest,
    receipt: Option<&str>,
    done: Option<Value>,
    error: Option<String>,
) -> HttpResponse {
    let till = selected_till(state, req);
    let chrome = chrome(state, Some(who), till.as_deref()).await;
    let mut ctx = json!({"chrome": chrome, "receipt": receipt.unwrap_or(""), "done": done,
                         "error": error, "key": ulid::Ulid::new().to_string(),
                         "limit": show(hub.approval_over),
                         "needs_manager": who.role != crate::config::StaffRole::Manager});
    let mut status = StatusCode::OK;
    if let Some(r) = receipt.filter(|r| !r.trim().is_empty()) {
        match returnable(state, hub, r).await {
            Ok(found) => ctx["sale"] = sale_view(&returnable_json(&found)),
            Err(e) => {
                status = actix_web::ResponseError::status_code(&e);
                if ctx["error"].is_null() {
                    ctx["error"] = json!(e.explain());
                }
            }
        }
    }
    render(status, "returns.html", ctx)
}

async fn returns_page(
    state: web::Data<ApiState>,
    hub: web::Data<HubLink>,
    req: HttpRequest,
    q: web::Query<ReceiptQuery>,
) -> HttpResponse {
    let who = match require(&state, &req).await {
        Ok(w) => w,
        Err(res) => return res,
    };
    page(&state, &hub, &who, &req, q.receipt.as_deref(), None, None).await
}

async fn take_return(
    state: web::Data<ApiState>,
    hub: web::Data<HubLink>,
    req: HttpRequest,
    form: web::Form<BTreeMap<String, String>>,
) -> HttpResponse {
    let form = form.into_inner();
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let who = match check_form(&state, &req, &field("csrf")).await {
        Ok(w) => w,
        Err(res) => return res,
    };
    let receipt = field("receipt");
    let Some(till) = selected_till(&state, &req) else {
        return page(
            &state,
            &hub,
            &who,
            &req,
            Some(&receipt),
            None,
            Some("Choose the till first (on the sale screen).".into()),
        )
        .await;
    };
    let mut lines = Vec::new();
    for (k, v) in &form {
        let (Some(line), Ok(quantity)) = (
            k.strip_prefix('q').and_then(|l| l.parse::<i64>().ok()),
            v.trim().parse::<i64>(),
        ) else {
            continue;
        };
        if quantity > 0 {
            lines.push(ReturnLineRequest {
                line,
                quantity,
                restock: true,
            });
        }
    }
    let reason = field("reason");
    let approval = (!field("manager").is_empty()).then(|| ApprovalRequest {
        manager: field("manager"),
        pin: field("pin"),
        reason: Some(if reason.is_empty() {
            "return approved at the till".into()
        } else {
            reason.clone()
        }),
    });
    let request = ReturnRequest {
        receipt: receipt.clone(),
        lines,
        reason: (!reason.is_empty()).then_some(reason),
        exchange: None,
    };
    let till = super::TillSale {
        till,
        staff: who.id.clone(),
    };
    let key = Some(field("key")).filter(|k| !k.is_empty());
    match take(&state, &hub, &who, till, request, approval, key).await {
        Ok(done) => {
            let r = &done.entry.record;
            let cash: i64 = r
                .refunds
                .iter()
                .filter(|p| p.method == "cash")
                .map(|p| p.amount.minor)
                .sum();
            let view = json!({
                "number": r.number,
                "refunded": show(done.refunded()),
                "refunds": r.refunds.iter().map(|p| json!({"method": p.method, "amount": show(p.amount)})).collect::<Vec<_>>(),
                "cash": (cash > 0).then(|| show(Money::new(cash, r.total.currency))),
            });
            page(&state, &hub, &who, &req, Some(&receipt), Some(view), None).await
        }
        Err(e) => {
            page(
                &state,
                &hub,
                &who,
                &req,
                Some(&receipt),
                None,
                Some(e.explain()),
            )
            .await
        }
    }
}
