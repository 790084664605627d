//! The sale screen's Customer panel (`docs/pos.md`, "Customers at the till"): find a customer
//! on the hub by loyalty number, email or phone (exact), attach them to the sale, pull their
//! web/mobile basket onto it, or remove them. The customer travels with the sale in the page
//! (`cust`, and `pulled` once their basket is on it) like `cart`; only a customer this node
//! found on the hub can be attached. Offline, finding and pulling are refused with the
//! node's "needs the hub" message and the sale goes on without a customer. Voiding a sale
//! that holds the customer's web basket gives the basket back (once, by the sale's key).

use super::{check_form, see_other, till_refusal, Draft};
use crate::api::{blocking, ApiState};
use crate::pos::customers::{
    find, give_back_pull, pull_basket, recall, was_voided, HubDesk, TillCustomer,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use protocol::CustomerId;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub(super) struct CustomerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cart: String,
    #[serde(default)]
    coupons: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    adj: String,
    #[serde(default)]
    cust: String,
    #[serde(default)]
    pulled: String,
    /// `lookup`, `pull` or `detach`.
    #[serde(default)]
    action: String,
    /// What `value` is (`loyalty_number`, `email`, `phone`), for `lookup`.
    #[serde(default)]
    by: String,
    #[serde(default)]
    value: String,
}

async fn known(state: &ApiState, id: CustomerId) -> Option<TillCustomer> {
    let store = state.store.clone();
    blocking(move || Ok(recall(&store, &id)?))
        .await
        .ok()
        .flatten()
}

/// What the panel shows of the sale's customer (`None`: no customer attached).
pub(super) async fn panel(state: &ApiState, draft: &Draft) -> Option<serde_json::Value> {
    let id = draft.customer?;
    Some(match known(state, id).await {
        Some(c) => json!({"found": true, "name": c.name, "email_masked": c.email_masked,
                          "loyalty_number": c.loyalty_number}),
        None => json!({"found": false}),
    })
}

/// Refuses to ring up a sale whose customer this node never found (a hand-edited address), or
/// one voided with its web basket given back (a page from before the void, reached with Back).
pub(super) async fn check_attached(state: &ApiState, draft: &Draft) -> Result<(), String> {
    if draft.pulled && !draft.key.is_empty() {
        let (store, key) = (state.store.clone(), draft.key.clone());
        let voided = blocking(move || Ok(was_voided(&store, &key)?)).await;
        if !matches!(voided, Ok(false)) {
            return Err("This sale was voided and its items went back to the customer's web basket: start a new sale.".into());
        }
    }
    match draft.customer {
        Some(id) if known(state, id).await.is_none() => Err(
            "This till does not know the sale's customer: remove the customer, or look them up again."
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The customer a receipt names (masked email): the hub mails them the receipt.
pub(super) async fn on_receipt(
    state: &ApiState,
    customer: Option<CustomerId>,
) -> Option<serde_json::Value> {
    let c = known(state, customer?).await?;
    Some(json!({"name": c.name, "email_masked": c.email_masked}))
}

/// `POST /pos/customer`: find and attach (`lookup`), pull the web basket (`pull`), or remove
/// the customer (`detach`).
pub(super) async fn customer_action(
    state: web::Data<ApiState>,
    desk: web::Data<HubDesk>,
    req: HttpRequest,
    form: web::Form<CustomerForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let draft = match Draft::read(
        &form.cart,
        &form.coupons,
        &form.key,
        &form.adj,
        &form.cust,
        &form.pulled,
    ) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("The sale on the page could not be read ({e}): start it again.");
            return till_refusal(
                &state,
                &req,
                &who,
                &Draft::default(),
                msg,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    match form.action.as_str() {
        "lookup" => match find(&state, &desk, form.by.trim(), &form.value).await {
            Ok(found) => {
                let mut next = draft.keyed();
                next.customer = Some(found.id);
                next.pulled = false;
                see_other(&next.href())
            }
            Err(e) => {
                let msg = format!("Customer not attached: {}", e.explain());
                till_refusal(&state, &req, &who, &draft, msg, e.status_code()).await
            }
        },
        "pull" => pull(&state, &desk, &req, &who, draft).await,
        "detach" => {
            let mut next = draft;
            next.customer = None;
            next.pulled = false;
            see_other(&next.href())
        }
        _ => {
            till_refusal(
                &state,
                &req,
                &who,
                &draft,
                "Unknown action: reload the till.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// Pulls the customer's basket onto the sale. The pull's id is the sale's key (made now if the
/// sale has none), so a double tap or a reload pulls once and shows the same sale.
async fn pull(
    state: &web::Data<ApiState>,
    desk: &HubDesk,
    req: &HttpRequest,
    who: &crate::pos::SignedIn,
    draft: Draft,
) -> HttpResponse {
    let refuse = |draft: Draft, msg: String, status: StatusCode| {
        let (state, req, who) = (state.clone(), req.clone(), who.clone());
        async move { till_refusal(&state, &req, &who, &draft, msg, status).await }
    };
    let Some(customer) = draft.customer else {
        return refuse(
            draft,
            "Find the customer first.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    if draft.pulled {
        return refuse(
            draft,
            "The customer's web basket is already on this sale.".into(),
            StatusCode::CONFLICT,
        )
        .await;
    }
    let mut base = draft;
    if base.key.is_empty() {
        base.key = ulid::Ulid::new().to_string();
    }
    let (lines, foreign) = match pull_basket(state, desk, &customer, &base.key).await {
        Ok(pulled) => pulled,
        Err(e) => {
            let msg = format!("Web basket not pulled: {}", e.explain());
            return refuse(base, msg, e.status_code()).await;
        }
    };
    let mut next = base.clone();
    next.pulled = true;
    let mut problems: Vec<String> = Vec::new();
    for l in lines {
        if let Err(e) = next.add(l.sku, i64::from(l.quantity)) {
            problems.push(e);
        }
    }
    if !foreign.is_empty() {
        let skus: Vec<String> = foreign.iter().map(ToString::to_string).collect();
        problems.push(format!(
            "not sold at this store (they left the web basket): {}",
            skus.join(", ")
        ));
    }
    if problems.is_empty() {
        return see_other(&next.href());
    }
    // Shown at once (not after a redirect) so the clerk reads it; a reload pulls nothing more.
    let msg = format!("Web basket pulled, but {}", problems.join("; "));
    refuse(next, msg, StatusCode::OK).await
}

/// "Void sale" on a sale the customer's web basket was pulled onto: the pulled lines go back to
/// their web basket, then the till starts a new sale. If the hub cannot take them back now
/// (offline, a payment in progress on the web), the sale stays on screen with what to do: try
/// again, or remove the customer and void (the pulled lines then stay off the web basket).
pub(super) async fn void_pulled(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &crate::pos::SignedIn,
    draft: &Draft,
) -> HttpResponse {
    let Some(customer) = draft.customer else {
        return see_other(&Draft::default().href());
    };
    let Some(desk) = req.app_data::<web::Data<HubDesk>>() else {
        tracing::error!("the hub desk is not configured");
        let msg = "This till cannot reach the hub for customers: remove the customer, then void the sale.";
        return till_refusal(
            state,
            req,
            who,
            draft,
            msg.into(),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    };
    let fresh = Draft::default();
    let done = |msg: String| till_refusal(state, req, who, &fresh, msg, StatusCode::OK);
    match give_back_pull(state, desk, &customer, &draft.key).await {
        Ok(back) => {
            let units: u32 = back.lines.iter().map(|l| l.quantity).sum();
            tracing::info!(clerk = %who.id, %customer, units, returned = back.returned, "sale voided: web basket given back");
            let what = match units {
                0 => "There was nothing to give back to the customer's web basket.".to_string(),
                1 => "The 1 item pulled from the customer's web basket is back in it.".to_string(),
                n => format!("The {n} items pulled from the customer's web basket are back in it."),
            };
            done(format!("Sale voided. {what}")).await
        }
        Err(e) if e.code() == "pull_not_found" => {
            done("Sale voided. The hub no longer knows what was pulled onto it, so nothing went back to the web basket.".into()).await
        }
        Err(e) => {
            let msg = format!(
                "Sale not voided: the customer's web basket could not be given back ({}). Try again, or remove the customer and then void: the pulled items then stay off the web basket.",
                e.explain()
            );
            till_refusal(state, req, who, draft, msg, e.status_code()).await
        }
    }
}
