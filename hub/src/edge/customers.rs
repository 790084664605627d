//! Customers at a store's till (`docs/pos.md`, "Customers at the till"): the node-facing
//! endpoints a till calls through its edge node, authenticated with the node's credential like
//! the sync WebSocket.
//!
//! - `POST /api/v1/edge/customers/lookup {"by", "value"}`: an exact match by email, phone or
//!   loyalty number → only what the till shows (id, name, masked email, loyalty number).
//!   There is no listing and no partial match; each node may make [`MAX_LOOKUPS_PER_MINUTE`]
//!   lookups a minute and [`MAX_MISSES`] that find no one (or are malformed) per
//!   [`MISS_WINDOW`], then gets `429`, so a node's credential cannot enumerate customers.
//! - `POST /api/v1/edge/customers/{id}/basket/pull {"pull"}`: moves the customer's basket lines
//!   to the till, idempotent by the pull id (scoped to the node), and answers SKUs and
//!   quantities only: the node prices them.

use crate::app::HubHandle;
use crate::backend::TillKey;
use crate::edge::Node;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use protocol::customer::mask_email;
use protocol::replication::ReplicaId;
use protocol::CustomerId;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lookups (and pulls) one node may make per minute.
pub const MAX_LOOKUPS_PER_MINUTE: usize = 60;
/// Lookups that find no one (or are malformed) one node may make per [`MISS_WINDOW`].
pub const MAX_MISSES: usize = 20;
pub const MISS_WINDOW: Duration = Duration::from_secs(600);

/// The per-node guard against enumeration: recent calls and recent misses, per node.
#[derive(Default)]
pub struct LookupGuard {
    calls: Mutex<BTreeMap<ReplicaId, Windows>>,
}

#[derive(Default)]
struct Windows {
    calls: VecDeque<Instant>,
    misses: VecDeque<Instant>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl LookupGuard {
    /// Counts a call by `node`, or refuses it with the seconds to wait.
    fn admit(&self, node: &ReplicaId) -> Result<(), u64> {
        let now = Instant::now();
        let mut all = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(node.clone()).or_default();
        prune(&mut w.calls, now, Duration::from_secs(60));
        prune(&mut w.misses, now, MISS_WINDOW);
        let wait = |q: &VecDeque<Instant>, window: Duration| {
            q.front().map_or(1, |t| {
                window
                    .saturating_sub(now.duration_since(*t))
                    .as_secs()
                    .max(1)
            })
        };
        if w.misses.len() >= MAX_MISSES {
            return Err(wait(&w.misses, MISS_WINDOW));
        }
        if w.calls.len() >= MAX_LOOKUPS_PER_MINUTE {
            return Err(wait(&w.calls, Duration::from_secs(60)));
        }
        w.calls.push_back(now);
        Ok(())
    }

    /// Counts a lookup by `node` that found no one.
    fn missed(&self, node: &ReplicaId) {
        let mut all = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(node.clone())
            .or_default()
            .misses
            .push_back(Instant::now());
    }
}

/// Registers the routes (`guard` is made once, outside the server's per-worker factory).
pub fn configure(guard: web::Data<LookupGuard>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::scope("/api/v1/edge/customers")
                .app_data(guard)
                .app_data(channels::error::json_config())
                .route("/lookup", web::post().to(lookup))
                .route("/{id}/basket/pull", web::post().to(pull)),
        );
    }
}

/// The node whose credential the request carries (not retired), else 401.
async fn node_of(req: &HttpRequest, handle: &HubHandle) -> Result<Node, ApiError> {
    let unauthorized = |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    let credential = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "edge_credential_required",
                "send the node's credential as Authorization: Bearer <credential>",
            )
        })?;
    let node = handle
        .edge
        .nodes
        .authenticate(credential)
        .cloned()
        .ok_or_else(|| unauthorized("unknown_node", "no edge node has this credential"))?;
    let retired = handle
        .edge
        .live()
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
        .into_iter()
        .any(|n| n.replica == node.replica && n.retired.is_some());
    if retired {
        return Err(unauthorized("node_retired", "this replica id is retired"));
    }
    Ok(node)
}

fn too_many(retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_lookups",
        format!("too many customer lookups from this store: try again in {retry_after} s"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    /// `email`, `phone` or `loyalty_number`.
    by: String,
    value: String,
}

/// `POST /api/v1/edge/customers/lookup`.
#[tracing::instrument(name = "till_customer_lookup", skip_all, fields(node, by))]
async fn lookup(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    guard: web::Data<LookupGuard>,
    body: web::Json<LookupBody>,
) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req, &handle).await?;
    tracing::Span::current().record("node", tracing::field::display(&node.replica));
    tracing::Span::current().record("by", body.by.as_str());
    guard.admit(&node.replica).map_err(too_many)?;
    let key = match TillKey::parse(&body.by, &body.value) {
        Ok(k) => k,
        Err(e) => {
            guard.missed(&node.replica);
            return Err(e.into());
        }
    };
    let Some(customer) = handle.backend.till_lookup(&key).await? else {
        guard.missed(&node.replica);
        tracing::info!("no customer matched");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_match",
            "no customer has exactly this: check it with the customer, or sell without one",
        ));
    };
    tracing::info!(customer = %customer.id, "customer found for a till");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"customer": {
            "id": customer.id,
            "name": customer.name,
            "email_masked": mask_email(&customer.email),
            "loyalty_number": customer.loyalty_number,
        }})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    /// The pull's id, made by the node (letters, digits, `-`, `_`, `:`; at most 100): the same
    /// for every retry of one pull.
    pull: String,
}

/// `POST /api/v1/edge/customers/{id}/basket/pull`.
#[tracing::instrument(name = "till_basket_pull", skip_all, fields(node, customer))]
async fn pull(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    guard: web::Data<LookupGuard>,
    path: web::Path<String>,
    body: web::Json<PullBody>,
) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req, &handle).await?;
    tracing::Span::current().record("node", tracing::field::display(&node.replica));
    guard.admit(&node.replica).map_err(too_many)?;
    let customer = path
        .parse::<CustomerId>()
        .map_err(|_| ApiError::not_found("customer"))?;
    tracing::Span::current().record("customer", tracing::field::display(&customer));
    let pull = body.into_inner().pull;
    let valid = !pull.is_empty()
        && pull.len() <= 100
        && pull
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid_pull",
            "'pull' is the pull's id: 1 to 100 letters, digits, '-', '_' or ':'",
        ));
    }
    // Scoped to the node: one node can never replay or read another's pull.
    let id = format!("{}:{pull}", node.replica);
    let lines = handle
        .backend
        .pull_to_till(customer, id, node.name.clone())
        .await?;
    tracing::info!(lines = lines.len(), "basket pulled onto a till");
    Ok(HttpResponse::Ok().json(json!({
        "pull": pull,
        "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
    })))
}
