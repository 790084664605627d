//! The sale screen's Customer panel (`docs/pos.md`, "Customers at the till"): find a customer
//! on the hub by loyalty number, email or phone (exact), attach them to the sale, pull their
//! web/mobile basket onto it, or remove them. The customer travels with the sale in the page
//! (`cust`, and `pulled` once their basket is on it) like `cart`; only a customer this node
//! found on the hub can be attached. Offline, finding and pulling are refused with the
//! node's "needs the hub" message and the sale goes on without a customer.

use super::{check_form, see_other, till_refusal, Draft};
use crate::api::{blocking, ApiState};
use crate::pos::customers::{find, pull_basket, recall, HubDesk, TillCustomer};
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

/// Refuses to ring up a sale whose customer this node never found (a hand-edited address).
pub(super) async fn check_attached(state: &ApiState, draft: &Draft) -> Result<(), String> {
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
    let draft = match Draft::parse(&form.cart, &form.coupons)
        .and_then(|d| d.with_key(&form.key))
        .and_then(|d| d.with_adjustments(&form.adj))
        .and_then(|d| d.with_customer(&form.cust, &form.pulled))
    {
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
