//! Customers at the till (`docs/pos.md`, "Customers at the till"). The hub owns customers, so
//! finding one and pulling their web/mobile basket onto the till need the hub: the node asks it
//! over HTTP with its own credential (the one its sync uses), and while the node is offline
//! both are refused with `503 needs_hub` — the sale goes on without a customer.
//!
//! - `POST /api/v1/pos/customers/lookup {"email" | "phone" | "loyalty_number"}` (a staff
//!   session): an exact match on the hub → `{"customer": {id, name, email_masked,
//!   loyalty_number}}`. The node keeps that (and only that) in its `pos` tree (key `C` +
//!   customer id), so the till can show who is attached and only a customer found here can be
//!   attached to a sale.
//! - `POST /api/v1/pos/customers/{id}/basket/pull {"sale"}`: the customer's basket lines leave
//!   their web basket for this sale; the pull's id is the sale's idempotency key, so a retry
//!   moves nothing more and answers the same lines. The lines are priced here, from the node's
//!   catalog: the body carries no price, and one that tries is refused.
//! - `POST /api/v1/pos/customers/{id}/basket/return {"sale"}`: the sale was voided, so the
//!   lines its pull took go back to the customer's web basket, once (a retry answers the same
//!   lines with `"returned": false`). Refused once the sale is rung up (that is a return).

use super::{Caller, PosError, SignedIn};
use crate::api::{blocking, ApiError, ApiState};
use crate::config::EdgeSettings;
use crate::storage::{WriteSet, T};
use crate::store::Store;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use protocol::codec::Stored;
use protocol::{CustomerId, Sku};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long the node waits for the hub before telling the clerk it needs the hub.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

/// A customer as the till knows them: what the hub answered to an exact lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillCustomer {
    pub id: CustomerId,
    pub name: String,
    pub email_masked: String,
    #[serde(default)]
    pub loyalty_number: Option<String>,
}

impl Stored for TillCustomer {
    const KIND: &'static str = "edge.pos.till_customer";
    const VERSION: u16 = 1;
}

fn customer_key(id: &CustomerId) -> Vec<u8> {
    let mut k = vec![b'C'];
    k.extend_from_slice(id.to_string().as_bytes());
    k
}

/// A line pulled from the customer's basket, priced by the node.
#[derive(Debug, Clone)]
pub struct PulledLine {
    pub sku: Sku,
    pub quantity: u32,
}

/// The node's way to the hub for customers.
pub struct HubDesk {
    client: reqwest::Client,
    /// `http://host:port` of the hub (from the sync URL).
    base: String,
    credential: SecretString,
    store: Arc<Store>,
}

fn needs_hub() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "needs_hub",
        "finding a customer needs the hub, and this node cannot reach it now: go on with the sale without a customer",
    )
}

/// The hub's refusal codes the till passes on (anything else is `hub_refused`).
fn known_code(code: &str) -> &'static str {
    match code {
        "no_match" => "no_match",
        "invalid_lookup" => "invalid_lookup",
        "too_many_lookups" => "too_many_lookups",
        "not_found" => "not_found",
        "basket_locked" => "basket_locked",
        "invalid_pull" => "invalid_pull",
        "pull_not_found" => "pull_not_found",
        _ => "hub_refused",
    }
}

impl HubDesk {
    pub fn new(settings: &EdgeSettings, store: Arc<Store>) -> HubDesk {
        let client = reqwest::Client::builder()
            .timeout(HUB_TIMEOUT)
            .connect_timeout(HUB_TIMEOUT)
            .build()
            .unwrap_or_default();
        HubDesk {
            client,
            base: settings.hub_http_base(),
            credential: SecretString::from(settings.credential_text().to_string()),
            store,
        }
    }

    /// POSTs `body` to the hub's `path` with the node's credential: the JSON answer, the
    /// hub's refusal as the node's error, or `needs_hub` when the node is offline or the hub
    /// cannot be reached.
    async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        if !self.store.sync_state().connected {
            return Err(needs_hub());
        }
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.credential.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the hub could not be reached for a customer");
                needs_hub()
            })?;
        let status = res.status();
        let answer: serde_json::Value = res.json().await.map_err(|e| {
            tracing::warn!(error = %e, "the hub's answer about a customer did not read");
            needs_hub()
        })?;
        if status.is_success() {
            return Ok(answer);
        }
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("the hub refused")
            .to_string();
        if status.is_server_error() || status == reqwest::StatusCode::UNAUTHORIZED {
            tracing::warn!(%status, code, "the hub refused a customer call");
            return Err(needs_hub());
        }
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        Err(ApiError::new(status, known_code(code), message))
    }

    /// An exact lookup on the hub by `by` (`email`, `phone`, `loyalty_number`).
    pub async fn lookup(&self, by: &str, value: &str) -> Result<TillCustomer, ApiError> {
        let answer = self
            .call(
                "/api/v1/edge/customers/lookup",
                json!({"by": by, "value": value}),
            )
            .await?;
        serde_json::from_value(answer["customer"].clone()).map_err(|e| {
            tracing::warn!(error = %e, "the hub's customer did not read");
            needs_hub()
        })
    }

    /// Moves the customer's basket lines onto the sale `sale_key` (idempotent by it).
    pub async fn pull(
        &self,
        customer: &CustomerId,
        sale_key: &str,
    ) -> Result<Vec<PulledLine>, ApiError> {
        let answer = self
            .call(
                &format!("/api/v1/edge/customers/{customer}/basket/pull"),
                json!({"pull": sale_key}),
            )
            .await?;
        Ok(read_lines(&answer))
    }

    /// Gives the pull made for the sale `sale_key` back to the customer's basket (the sale was
    /// voided); idempotent by the key.
    pub async fn give_back(
        &self,
        customer: &CustomerId,
        sale_key: &str,
    ) -> Result<GivenBack, ApiError> {
        let answer = self
            .call(
                &format!("/api/v1/edge/customers/{customer}/basket/return"),
                json!({"pull": sale_key}),
            )
            .await?;
        Ok(GivenBack {
            lines: read_lines(&answer),
            returned: answer["returned"].as_bool().unwrap_or(false),
        })
    }
}

/// The SKUs and quantities of the hub's answer about a pull.
fn read_lines(answer: &serde_json::Value) -> Vec<PulledLine> {
    let mut lines = Vec::new();
    for l in answer["lines"].as_array().into_iter().flatten() {
        let sku = l["sku"].as_str().and_then(|s| Sku::parse(s).ok());
        let quantity = l["quantity"].as_u64().and_then(|q| u32::try_from(q).ok());
        match (sku, quantity) {
            (Some(sku), Some(quantity)) if quantity > 0 => lines.push(PulledLine { sku, quantity }),
            _ => tracing::warn!(line = %l, "a pulled line did not read"),
        }
    }
    lines
}

/// What a voided sale gave back to the customer's web basket.
#[derive(Debug, Clone)]
pub struct GivenBack {
    pub lines: Vec<PulledLine>,
    /// False when an earlier call gave them back already.
    pub returned: bool,
}

/// Remembers a customer found on the hub, so the till can show and attach them.
pub(crate) fn remember(store: &Store, c: &TillCustomer) -> Result<(), PosError> {
    store.local_change(|_| {
        let mut w = WriteSet::default();
        w.put(T::Pos, customer_key(&c.id), c)?;
        Ok::<_, PosError>((w, ()))
    })
}

fn voided_key(sale_key: &str) -> Vec<u8> {
    let mut k = vec![b'V'];
    k.extend_from_slice(sale_key.as_bytes());
    k
}

/// A sale voided after its pull went back to the web basket (`pos` tree, key `V` + sale key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct VoidedSale {
    customer: CustomerId,
}

impl Stored for VoidedSale {
    const KIND: &'static str = "edge.pos.voided_sale";
    const VERSION: u16 = 1;
}

/// Whether the sale `sale_key` was voided with its pull given back: such a sale is never rung
/// up or pulled again (its lines are in the web basket again). A page from before the void
/// (Back) is refused with this.
pub(crate) fn was_voided(store: &Store, sale_key: &str) -> Result<bool, PosError> {
    Ok(store
        .db()
        .get::<VoidedSale>(T::Pos, &voided_key(sale_key))?
        .is_some())
}

/// A customer found on the hub from this node, if any.
pub(crate) fn recall(store: &Store, id: &CustomerId) -> Result<Option<TillCustomer>, PosError> {
    Ok(store.db().get(T::Pos, &customer_key(id))?)
}

/// Finds a customer (an exact match on the hub) and remembers them.
pub(crate) async fn find(
    state: &ApiState,
    desk: &HubDesk,
    by: &str,
    value: &str,
) -> Result<TillCustomer, ApiError> {
    let found = desk.lookup(by, value).await?;
    let (store, c) = (state.store.clone(), found.clone());
    blocking(move || Ok(remember(&store, &c)?)).await?;
    Ok(found)
}

/// Pulls the basket of a customer found here onto the sale `sale_key`: the lines the node
/// sells, and the SKUs it does not (they left the web basket but cannot be sold here).
pub(crate) async fn pull_basket(
    state: &ApiState,
    desk: &HubDesk,
    customer: &CustomerId,
    sale_key: &str,
) -> Result<(Vec<PulledLine>, Vec<Sku>), ApiError> {
    check_pull(state, customer, sale_key).await?;
    let (store, key) = (state.store.clone(), sale_key.to_string());
    if blocking(move || Ok(was_voided(&store, &key)?)).await? {
        return Err(sale_voided());
    }
    let lines = desk.pull(customer, sale_key).await?;
    let catalog = state.store.catalog();
    let (sellable, foreign): (Vec<PulledLine>, Vec<PulledLine>) = lines
        .into_iter()
        .partition(|l| catalog.snapshot.product_by_sku(&l.sku).is_some());
    Ok((sellable, foreign.into_iter().map(|l| l.sku).collect()))
}

fn sale_voided() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "sale_voided",
        "this sale was voided and its items went back to the customer's web basket: start a new sale",
    )
}

/// Checks a sale key and that the customer was found here.
async fn check_pull(
    state: &ApiState,
    customer: &CustomerId,
    sale_key: &str,
) -> Result<(), ApiError> {
    if ulid::Ulid::from_string(sale_key).is_err() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sale_key",
            "'sale' is the sale's idempotency key (a ULID), the same for every retry",
        ));
    }
    let (store, id) = (state.store.clone(), *customer);
    if blocking(move || Ok(recall(&store, &id)?)).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "customer_not_found_here",
            "look the customer up at this till first",
        ));
    }
    Ok(())
}

/// Gives the customer's basket lines pulled onto the sale `sale_key` back to their web basket:
/// the sale was voided. Refused once the sale is rung up (its items are sold: that is a
/// return), so a paid sale never also refills the web basket.
pub(crate) async fn give_back_pull(
    state: &ApiState,
    desk: &HubDesk,
    customer: &CustomerId,
    sale_key: &str,
) -> Result<GivenBack, ApiError> {
    check_pull(state, customer, sale_key).await?;
    let (store, key) = (state.store.clone(), sale_key.to_string());
    let rung_up = blocking(move || Ok(store.sale_recorded(&key).map_err(PosError::from)?)).await?;
    if rung_up {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sale_recorded",
            "this sale is rung up, so its items are the customer's: take them back with a return",
        ));
    }
    let back = desk.give_back(customer, sale_key).await?;
    let (store, key, voided) = (
        state.store.clone(),
        voided_key(sale_key),
        VoidedSale {
            customer: *customer,
        },
    );
    blocking(move || {
        Ok(store.local_change(|_| {
            let mut w = WriteSet::default();
            w.put(T::Pos, key, &voided)?;
            Ok::<_, PosError>((w, ()))
        })?)
    })
    .await?;
    Ok(back)
}

// ---- the JSON API ------------------------------------------------------------------------

fn staff_only(req: &HttpRequest) -> Result<SignedIn, ApiError> {
    match req.extensions().get::<Caller>().cloned() {
        Some(Caller::Staff(who)) => Ok(who),
        Some(Caller::Node) => Err(PosError::Forbidden(
            "finding customers needs a staff member: sign in with POST /api/v1/staff/sessions"
                .into(),
        )
        .into()),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a staff session token as Authorization: Bearer",
        )),
    }
}

/// The routes inside `/api/v1` (behind the token middleware).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pos/customers/lookup", web::post().to(lookup_route))
        .route(
            "/pos/customers/{id}/basket/pull",
            web::post().to(pull_route),
        )
        .route(
            "/pos/customers/{id}/basket/return",
            web::post().to(return_route),
        );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    email: Option<String>,
    phone: Option<String>,
    loyalty_number: Option<String>,
}

async fn lookup_route(
    state: web::Data<ApiState>,
    desk: web::Data<HubDesk>,
    req: HttpRequest,
    body: web::Json<LookupBody>,
) -> Result<HttpResponse, ApiError> {
    let who = staff_only(&req)?;
    let b = body.into_inner();
    let keys: Vec<(&str, String)> = [
        ("email", b.email),
        ("phone", b.phone),
        ("loyalty_number", b.loyalty_number),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let [(by, value)] = keys.as_slice() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_lookup",
            "send exactly one of 'email', 'phone' or 'loyalty_number'",
        ));
    };
    let found = find(&state, &desk, by, value).await?;
    tracing::info!(clerk = %who.id, customer = %found.id, by, "customer attached at the till");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "customer": found })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    /// The sale's idempotency key (a ULID): the same for every retry of the pull.
    sale: String,
}

async fn pull_route(
    state: web::Data<ApiState>,
    desk: web::Data<HubDesk>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PullBody>,
) -> Result<HttpResponse, ApiError> {
    let who = staff_only(&req)?;
    let customer: CustomerId = path
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "customer not found"))?;
    let sale = body.into_inner().sale;
    let (lines, foreign) = pull_basket(&state, &desk, &customer, &sale).await?;
    // Priced here, by the code that prices the sale: never a price from the client or the hub.
    let request = crate::ops::SaleRequest {
        lines: lines
            .iter()
            .map(|l| crate::ops::SaleLineRequest {
                sku: Some(l.sku.to_string()),
                barcode: None,
                quantity: i64::from(l.quantity),
            })
            .collect(),
        payments: Vec::new(),
        customer: Some(customer),
        clerk: None,
        override_reason: None,
        coupons: Vec::new(),
    };
    let priced = if lines.is_empty() {
        Vec::new()
    } else {
        let store = state.store.clone();
        let quote = blocking(move || Ok(store.quote(&request)?)).await?;
        quote
            .lines
            .iter()
            .map(|l| {
                json!({"sku": l.sku, "name": l.name, "quantity": l.quantity,
                       "unit_price": l.unit_price.to_decimal_string(),
                       "total": l.total.to_decimal_string(),
                       "currency": l.unit_price.currency})
            })
            .collect()
    };
    tracing::info!(clerk = %who.id, customer = %customer, lines = lines.len(), "basket pulled onto the till");
    Ok(HttpResponse::Ok().json(json!({
        "sale": sale,
        "lines": priced,
        "not_sold_here": foreign,
    })))
}

async fn return_route(
    state: web::Data<ApiState>,
    desk: web::Data<HubDesk>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PullBody>,
) -> Result<HttpResponse, ApiError> {
    let who = staff_only(&req)?;
    let customer: CustomerId = path
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "customer not found"))?;
    let sale = body.into_inner().sale;
    let back = give_back_pull(&state, &desk, &customer, &sale).await?;
    tracing::info!(clerk = %who.id, customer = %customer, lines = back.lines.len(), returned = back.returned, "voided sale: pull given back");
    Ok(HttpResponse::Ok().json(json!({
        "sale": sale,
        "lines": back.lines.iter().map(|l| json!({"sku": l.sku, "quantity": l.quantity})).collect::<Vec<_>>(),
        "returned": back.returned,
    })))
}

// ---- the receipt's QR code ----------------------------------------------------------------

/// The order number as a QR code, an inline SVG (`None` if it cannot be encoded, e.g. far too
/// long: the receipt then shows the number alone).
pub(crate) fn qr_svg(text: &str) -> Option<String> {
    use qrcode::render::svg;
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    let document = code
        .render::<svg::Color<'_>>()
        .min_dimensions(120, 120)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // Inline in HTML: the `<svg>` element without the XML declaration before it.
    let start = document.find("<svg")?;
    Some(document[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_inline_svg() {
        let svg = qr_svg("S1-2-000123").expect("encodes");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("</svg>"));
        assert!(
            !svg.starts_with("<?xml"),
            "inline, without an XML declaration"
        );
    }
}
