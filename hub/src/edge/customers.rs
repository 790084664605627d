//! Customers at a store's till (`docs/pos.md`, "Customers at the till"): the node-facing
//! endpoints a till calls through its edge node, authenticated with the node's credential like
//! the sync WebSocket.
//!
//! - `POST /api/v1/edge/customers/lookup {"by", "value"}`: an exact match by email, phone or
//!   loyalty number → only what the till shows (id, name, masked email, loyalty number).
//!   There is no listing and no partial match; each node may make
//!   [`LookupLimits::per_minute`] calls a minute and [`LookupLimits::misses`] lookups that
//!   find no one (or are malformed) per [`LookupLimits::miss_window`] (`[edge.customer_lookups]`
//!   in the hub's configuration), then gets `429`, so a node's credential cannot enumerate
//!   customers.
//! - `POST /api/v1/edge/customers/{id}/basket/pull {"pull"}`: moves the customer's basket lines
//!   to the till, idempotent by the pull id (scoped to the node), and answers SKUs and
//!   quantities only: the node prices them.
//! - `POST /api/v1/edge/customers/{id}/basket/return {"pull"}`: the till voided the sale the
//!   pull went onto; its lines go back to the customer's basket, once (a retry answers the same
//!   lines with `"returned": false`).

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

/// How many lookups a node may make: `[edge.customer_lookups]` in the hub's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookupLimits {
    /// Lookups, pulls and returns one node may make per minute.
    pub per_minute: usize,
    /// Lookups that find no one (or are malformed) one node may make per `miss_window`.
    pub misses: usize,
    /// e.g. `10m`.
    #[serde(deserialize_with = "crate::config::human")]
    pub miss_window: Duration,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            per_minute: 60,
            misses: 20,
            miss_window: Duration::from_secs(600),
        }
    }
}

impl LookupLimits {
    /// Refuses limits that would shut every till out.
    pub fn check(&self) -> Result<(), String> {
        if self.per_minute == 0 || self.misses == 0 || self.miss_window.is_zero() {
            return Err("[edge.customer_lookups]: per_minute, misses and miss_window must be more than 0 (they limit lookups; they cannot switch them off)".into());
        }
        Ok(())
    }
}

/// The per-node guard against enumeration: recent calls and recent misses, per node.
pub struct LookupGuard {
    limits: LookupLimits,
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
    pub fn new(limits: LookupLimits) -> LookupGuard {
        LookupGuard {
            limits,
            calls: Mutex::default(),
        }
    }

    /// Counts a call by `node`, or refuses it with the seconds to wait.
    fn admit(&self, node: &ReplicaId) -> Result<(), u64> {
        let now = Instant::now();
        let mut all = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(node.clone()).or_default();
        prune(&mut w.calls, now, Duration::from_secs(60));
        let (per_minute, misses, miss_window) = (
            self.limits.per_minute,
            self.limits.misses,
            self.limits.miss_window,
        );
        prune(&mut w.misses, now, miss_window);
        let wait = |q: &VecDeque<Instant>, window: Duration| {
            q.front().map_or(1, |t| {
                window
                    .saturating_sub(now.duration_since(*t))
                    .as_secs()
                    .max(1)
            })
        };
        if w.misses.len() >= misses {
            return Err(wait(&w.misses, miss_window));
        }
        if w.calls.len() >= per_minute {
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
                .route("/{id}/basket/pull", web::post().to(pull))
                .route("/{id}/basket/return", web::post().to(give_back)),
        );
    }
}

/// The node whose credential the request carries (not retired), else 401.
async fn node_of(req: &HttpRequest, handle: &HubHandle) -> Result<Node, ApiError> {
    super::session::authenticated_node(req, &handle.edge).await
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
    let (customer, id) = pull_target(&node, &path, body.into_inner().pull)?;
    let lines = handle
        .backend
        .pull_to_till(customer, id.scoped.clone(), node.name.clone())
        .await?;
    tracing::info!(lines = lines.len(), "basket pulled onto a till");
    Ok(HttpResponse::Ok().json(json!({
        "pull": id.pull,
        "lines": lines_json(&lines),
    })))
}

fn lines_json(lines: &[(protocol::Sku, u32)]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
        .collect()
}

/// A pull's id as the node sent it, and as the hub keeps it (scoped to the node: one node
/// can never replay, read or give back another's pull).
struct PullId {
    pull: String,
    scoped: String,
}

/// The customer and the pull a pull or a give-back names.
fn pull_target(node: &Node, path: &str, pull: String) -> Result<(CustomerId, PullId), ApiError> {
    let customer = path
        .parse::<CustomerId>()
        .map_err(|_| ApiError::not_found("customer"))?;
    tracing::Span::current().record("customer", tracing::field::display(&customer));
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
    let scoped = format!("{}:{pull}", node.replica);
    Ok((customer, PullId { pull, scoped }))
}

/// `POST /api/v1/edge/customers/{id}/basket/return`: the till voided the sale; the pull's
/// lines go back to the customer's basket.
#[tracing::instrument(name = "till_basket_return", skip_all, fields(node, customer))]
async fn give_back(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    guard: web::Data<LookupGuard>,
    path: web::Path<String>,
    body: web::Json<PullBody>,
) -> Result<HttpResponse, ApiError> {
    let node = node_of(&req, &handle).await?;
    tracing::Span::current().record("node", tracing::field::display(&node.replica));
    guard.admit(&node.replica).map_err(too_many)?;
    let (customer, id) = pull_target(&node, &path, body.into_inner().pull)?;
    let (lines, returned) = match handle
        .backend
        .return_from_till(customer, id.scoped, node.name.clone())
        .await
    {
        Ok(back) => back,
        Err(channels::BackendError::NotFound("till pull")) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "pull_not_found",
                "this store pulled nothing onto a sale with this id from the customer's basket",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        lines = lines.len(),
        returned,
        "till sale voided: pull given back"
    );
    Ok(HttpResponse::Ok().json(json!({
        "pull": id.pull,
        "lines": lines_json(&lines),
        "returned": returned,
    })))
}

#[cfg(test)]
// figment's `Jail` closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_held_to_the_configured_limits_and_other_nodes_are_not() {
        let guard = LookupGuard::new(LookupLimits {
            per_minute: 4,
            misses: 2,
            miss_window: Duration::from_secs(600),
        });
        let berlin = ReplicaId::node("berlin").expect("a replica id");
        let paris = ReplicaId::node("paris").expect("a replica id");
        for _ in 0..4 {
            assert_eq!(guard.admit(&berlin), Ok(()));
        }
        let wait = guard
            .admit(&berlin)
            .expect_err("the fifth call in a minute");
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(guard.admit(&paris), Ok(()), "limits are per node");
        guard.missed(&paris);
        guard.missed(&paris);
        let wait = guard.admit(&paris).expect_err("two misses are the limit");
        assert!((500..=600).contains(&wait), "{wait}");
    }

    #[test]
    fn limits_come_from_the_configuration_and_cannot_be_zero() {
        figment::Jail::expect_with(|jail| {
            let d = crate::config::HubSettings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(d.edge.customer_lookups, LookupLimits::default());
            assert_eq!(d.edge.customer_lookups.per_minute, 60);
            assert_eq!(d.edge.customer_lookups.misses, 20);
            assert_eq!(
                d.edge.customer_lookups.miss_window,
                Duration::from_secs(600)
            );
            jail.create_file(
                "l.toml",
                "[edge.customer_lookups]\nper_minute = 10\nmiss_window = \"1m\"\n",
            )?;
            jail.set_env("OMNIHUB_HUB_EDGE__CUSTOMER_LOOKUPS__MISSES", "5");
            let s = crate::config::HubSettings::load(Some(std::path::Path::new("l.toml")))
                .map_err(|e| e.to_string())?;
            let want = LookupLimits {
                per_minute: 10,
                misses: 5,
                miss_window: Duration::from_secs(60),
            };
            assert_eq!(s.edge.customer_lookups, want);
            assert_eq!(s.edge.check(), Ok(()));
            jail.set_env("OMNIHUB_HUB_EDGE__CUSTOMER_LOOKUPS__MISSES", "0");
            let s = crate::config::HubSettings::load(Some(std::path::Path::new("l.toml")))
                .map_err(|e| e.to_string())?;
            assert!(s
                .edge
                .check()
                .is_err_and(|e| e.contains("customer_lookups")));
            Ok(())
        });
    }
}
