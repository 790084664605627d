//! Forwarding: any node accepts any request, and a request for a basket or customer another
//! node owns goes to that node over HTTP, once.
//!
//! Where the owner is known from the request itself:
//! - `/api/v1/baskets/{id}/…`: the basket id in the path;
//! - `/api/v1/customers/me…`: the signed-in customer, from the session token (`Authorization:
//!   Bearer`, or the session cookie), looked up in storage; the storefront's `/account…`
//!   pages and `POST /api/v1/baskets` likewise
//!   (a signed-in customer's basket is in their shard);
//! - `/api/v1/checkouts/{id}…` and the storefront's `/checkout/{id}/…`: the checkout's basket,
//!   looked up in storage;
//! - the current basket (`/api/v1/basket`, `/basket…`, `/checkout`): the session's customer,
//!   or else the basket token's basket.
//!
//! The hub's own calls to another node's actors (webhooks, the sweeper, sign-in's merge) go
//! node to node instead ([`super::remote`]).
//!
//! Anything else is served where it lands. A request for a shard this node holds is served
//! here. One another node holds is sent there: same method, path and query, body, and headers
//! but the hop-by-hop ones, plus `X-Omnihub-Forwarded-By: <this node>` and the client's
//! address in `X-Forwarded-For`; the owner's answer goes back as it is. The owner checks the
//! credentials again itself: forwarding grants nothing.
//!
//! A request that was forwarded already is never forwarded again: if this node does not own
//! its shard (it moved meanwhile), it gets `503` with `Retry-After: 1` and a JSON error. The
//! same answer when no node holds the shard (moving right now) or the owner cannot be reached.
//! WebSocket upgrades are not forwarded (a client reconnects; see `docs/scaling.md`).

use super::ownership::{Owner, OwnershipView};
use super::{shard_of, ClusterError};
use crate::storage::Storage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use protocol::{BasketId, CheckoutId};
use std::sync::Arc;
use std::time::Duration;

/// Set on a forwarded request: the node that forwarded it.
pub const FORWARDED_BY: &str = "x-omnihub-forwarded-by";

/// The largest request body forwarded.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Headers that belong to one connection, never passed on.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// What a request addresses, as far as routing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Basket(BasketId),
    /// The customer signed in with this session token.
    Session(String),
    /// The anonymous basket this basket token reaches.
    BasketToken(String),
    /// The basket of this checkout.
    Checkout(CheckoutId),
}

/// The session token a request carries: bearer first, then the session cookie.
fn session_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    if let Some(token) = bearer {
        return Some(token.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == channels::context::SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The basket token a request carries: the header first, then the basket cookie.
fn basket_token(headers: &HeaderMap) -> Option<String> {
    let header = headers
        .get(channels::context::BASKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    header
        .or_else(|| cookie(headers, channels::context::BASKET_COOKIE))
        .filter(|t| !t.is_empty() && t.len() <= 128)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What `path` (with these headers) addresses, if it addresses one basket or customer.
///
/// The shopper's current basket (`/api/v1/basket`, the storefront's `/basket…` pages) is the
/// signed-in customer's (their basket lives in their shard, see
/// [`super::Fence::new_basket_of`]), or else the anonymous basket of the basket token.
pub fn target_of(path: &str, headers: &HeaderMap) -> Option<Target> {
    // The current basket, and the storefront's checkout page that starts a payment for it.
    if path == "/api/v1/basket" || under(path, "/basket") || path == "/checkout" {
        return session_token(headers)
            .map(Target::Session)
            .or_else(|| basket_token(headers).map(Target::BasketToken));
    }
    if let Some(rest) = path.strip_prefix("/api/v1/baskets/") {
        let id = rest.split('/').next().unwrap_or_default();
        return id.parse().ok().map(Target::Basket);
    }
    // A signed-in customer asking for a basket gets theirs (made in their shard).
    if path == "/api/v1/baskets" {
        return session_token(headers).map(Target::Session);
    }
    // A checkout's pages and API: its basket's actor writes it.
    let checkout = path
        .strip_prefix("/api/v1/checkouts/")
        .or_else(|| path.strip_prefix("/checkout/"));
    if let Some(rest) = checkout {
        let id = rest.split('/').next().unwrap_or_default();
        return id.parse().ok().map(Target::Checkout);
    }
    // The signed-in customer's API and the storefront's account pages.
    if under(path, "/api/v1/customers/me") || under(path, "/account") {
        return session_token(headers).map(Target::Session);
    }
    None
}

/// Forwards requests to their shard's owner (`web::Data<Forwarder>` in the app, and
/// [`route`] as middleware).
pub struct Forwarder {
    view: Arc<OwnershipView>,
    sessions: Arc<dyn Storage>,
    client: reqwest::Client,
    /// How long a request waits for a moving shard to get an owner, or for an owner that
    /// does not answer to be replaced, before it is refused (`503`).
    patience: Duration,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Local,
    Forward(String),
    Refuse(&'static str, &'static str),
}

impl Forwarder {
    pub fn new(
        view: Arc<OwnershipView>,
        sessions: Arc<dyn Storage>,
    ) -> Result<Forwarder, ClusterError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per forward: a pooled one to a node that is stopping may be
            // closed under a request that was sent (not safe to send again), while a refused
            // connection is (the request waits for the shard's next owner). Costs a local
            // TCP handshake per forward.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ClusterError::Config(format!("no HTTP client for forwarding: {e}")))?;
        Ok(Forwarder {
            view,
            sessions,
            client,
            patience: Duration::ZERO,
        })
    }

    /// Lets a request wait up to `patience` while its shard moves (a graceful hand-over takes
    /// about one `heartbeat_every`; a dead owner's shards move within the failover bound),
    /// polling this node's view, instead of answering `503` at once.
    pub fn with_patience(mut self, patience: Duration) -> Forwarder {
        self.patience = patience;
        self
    }

    async fn shard(&self, target: Target) -> Option<u64> {
        match target {
            Target::Basket(id) => Some(shard_of(&id)),
            Target::Session(token) => {
                match self.sessions.session(crate::auth::token_hash(&token)).await {
                    Ok(session) => session.map(|s| shard_of(&s.customer)),
                    Err(e) => {
                        // Served here, where the handler answers the storage error itself.
                        tracing::warn!(error = %e, "cannot look the session up for routing");
                        None
                    }
                }
            }
            Target::Checkout(id) => match self.sessions.checkout(id).await {
                Ok(record) => record.map(|c| shard_of(&c.basket)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look the checkout up for routing");
                    None
                }
            },
            Target::BasketToken(token) => {
                let hash = crate::auth::token_hash(&token);
                match self.sessions.basket_for_token(hash).await {
                    Ok(basket) => basket.map(|b| shard_of(&b)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look the basket token up for routing");
                        None
                    }
                }
            }
        }
    }

    async fn decide(&self, req: &ServiceRequest) -> Decision {
        let Some(target) = target_of(req.path(), req.headers()) else {
            return Decision::Local;
        };
        let Some(shard) = self.shard(target).await else {
            return Decision::Local;
        };
        let forwarded = req.headers().contains_key(FORWARDED_BY);
        match self.view.owner(shard) {
            Some(Owner { token: Some(_), .. }) => Decision::Local,
            _ if forwarded => Decision::Refuse(
                "not_owner",
                "this node no longer owns the entity and does not forward twice: retry",
            ),
            _ if req.headers().contains_key(header::UPGRADE) => Decision::Refuse(
                "not_owner",
                "another node owns this entity: reconnect to try another node",
            ),
            Some(Owner {
                address: Some(address),
                ..
            }) => Decision::Forward(address),
            _ => Decision::Refuse(
                "shard_moving",
                "the entity is moving between nodes: retry in a moment",
            ),
        }
    }

    /// Sends the request (its body read already) to `address`: the owner's response, or
    /// `Err` when the owner could not be reached (nothing was sent: safe to try again).
    async fn send(
        &self,
        http: &actix_web::HttpRequest,
        body: web::Bytes,
        address: &str,
    ) -> Result<HttpResponse, HttpResponse> {
        let path = http
            .uri()
            .path_and_query()
            .map_or_else(|| http.path().to_string(), |p| p.as_str().to_string());
        let url = format!("{}{}", address.trim_end_matches('/'), path);
        let method = match reqwest::Method::from_bytes(http.method().as_str().as_bytes()) {
            Ok(m) => m,
            Err(_) => return Ok(error(405, "bad_method", "unknown method")),
        };
        let mut out = self.client.request(method, &url);
        for (name, value) in passed_on(http.headers()) {
            out = out.header(name.as_str(), value.as_bytes());
        }
        let client = http.peer_addr().map(|a| a.ip().to_string());
        let chain = match (http.headers().get("x-forwarded-for"), client) {
            (Some(prior), Some(ip)) => prior.to_str().ok().map(|p| format!("{p}, {ip}")),
            (None, ip) => ip,
            (Some(prior), None) => prior.to_str().ok().map(str::to_string),
        };
        if let Some(chain) = chain {
            out = out.header("x-forwarded-for", chain);
        }
        out = out.header(FORWARDED_BY, self.view.node_id());
        match out.body(body).send().await {
            Ok(res) => Ok(answer(res).await),
            Err(e) if e.is_connect() => {
                tracing::warn!(owner = %address, error = %e, "the owner does not answer");
                Err(refuse(
                    "owner_unavailable",
                    "the owning node did not answer: retry",
                ))
            }
            Err(e) => {
                // Sent, perhaps handled: not sent again (the client decides).
                tracing::warn!(owner = %address, error = %e, "forwarding failed");
                Ok(refuse(
                    "owner_unavailable",
                    "the owning node did not answer: retry",
                ))
            }
        }
    }
}

/// Reads the whole request body (at most [`MAX_BODY`]).
async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, HttpResponse> {
    let mut payload = req.parts_mut().1.take();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) if body.len() + c.len() <= MAX_BODY => body.extend_from_slice(&c),
            Ok(_) => {
                return Err(error(
                    413,
                    "body_too_large",
                    "the request body is too large",
                ))
            }
            Err(e) => {
                return Err(error(
                    400,
                    "bad_body",
                    &format!("the request body broke off: {e}"),
                ))
            }
        }
    }
    Ok(body.freeze())
}

/// A payload that yields `body` (a request served here after its body was read to forward it).
fn payload_of(body: web::Bytes) -> actix_web::dev::Payload {
    let stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(futures_util::stream::once(async move { Ok(body) }));
    actix_web::dev::Payload::from(stream)
}

/// The headers to pass on: all but hop-by-hop ones and those `Connection` names.
fn passed_on(headers: &HeaderMap) -> Vec<(header::HeaderName, header::HeaderValue)> {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !HOP_BY_HOP.contains(&n)
                && !named.iter().any(|c| c == n)
                && n != FORWARDED_BY
                && n != "x-forwarded-for"
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The owner's response, as this node's.
async fn answer(res: reqwest::Response) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(res.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut out = HttpResponse::build(status);
    for (name, value) in res.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(n.as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append_header((n, v));
        }
    }
    match res.bytes().await {
        Ok(body) => out.body(body.to_vec()),
        Err(e) => {
            tracing::warn!(error = %e, "the owner's response broke off");
            refuse(
                "owner_unavailable",
                "the owning node's answer broke off: retry",
            )
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .json(serde_json::json!({ "error": { "code": code, "message": message } }))
}

/// `503` with a retry hint.
fn refuse(code: &str, message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "1"))
        .json(serde_json::json!({
            "error": { "code": code, "message": message, "retry_after": 1 }
        }))
}

/// The middleware (`App::wrap(from_fn(route))`): with a `web::Data<Forwarder>` in the app,
/// requests for another node's baskets and customers go there; without one (the embedded
/// storage) every request is served here.
///
/// While the shard is moving (no owner known), or its owner does not answer, the request
/// waits up to the forwarder's patience, looking again every 50 ms: a graceful hand-over is
/// invisible to clients, a dead owner costs them the wait.
pub async fn route(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(forwarder) = req.app_data::<web::Data<Forwarder>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let deadline = tokio::time::Instant::now() + forwarder.patience;
    let mut body: Option<web::Bytes> = None;
    loop {
        let decision = forwarder.decide(&req).await;
        let patient = tokio::time::Instant::now() < deadline;
        match decision {
            Decision::Local => {
                if let Some(body) = body.take() {
                    req.set_payload(payload_of(body));
                }
                return Ok(next.call(req).await?.map_into_left_body());
            }
            Decision::Forward(address) => {
                let bytes = match &body {
                    Some(b) => b.clone(),
                    None => match read_body(&mut req).await {
                        Ok(b) => {
                            body = Some(b.clone());
                            b
                        }
                        Err(res) => return Ok(req.into_response(res).map_into_right_body()),
                    },
                };
                let span = tracing::info_span!("forward", owner = %address, path = %req.path());
                let sent = tracing::Instrument::instrument(
                    forwarder.send(req.request(), bytes, &address),
                    span,
                )
                .await;
                match sent {
                    Ok(res) => return Ok(req.into_response(res).map_into_right_body()),
                    Err(res) if !patient => {
                        return Ok(req.into_response(res).map_into_right_body())
                    }
                    Err(_) => {}
                }
            }
            Decision::Refuse("shard_moving", _) if patient => {}
            Decision::Refuse(code, message) => {
                return Ok(req
                    .into_response(refuse(code, message))
                    .map_into_right_body());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn targets_come_from_the_path_or_the_session() {
        let id = BasketId::new();
        let checkout = CheckoutId::new();
        let none = headers(&[]);
        let cases: Vec<(String, HeaderMap, Option<Target>)> = vec![
            (
                format!("/api/v1/baskets/{id}"),
                none.clone(),
                Some(Target::Basket(id)),
            ),
            (
                format!("/api/v1/baskets/{id}/lines/SKU-1"),
                none.clone(),
                Some(Target::Basket(id)),
            ),
            ("/api/v1/baskets/not-an-id/lines".into(), none.clone(), None),
            ("/api/v1/baskets".into(), none.clone(), None),
            (
                "/api/v1/baskets".into(),
                headers(&[("authorization", "Bearer abc")]),
                Some(Target::Session("abc".into())),
            ),
            (
                format!("/api/v1/checkouts/{checkout}/cancel"),
                none.clone(),
                Some(Target::Checkout(checkout)),
            ),
            (
                format!("/checkout/{checkout}/return"),
                none.clone(),
                Some(Target::Checkout(checkout)),
            ),
            ("/checkout/not-an-id/return".into(), none.clone(), None),
            (
                "/checkout".into(),
                headers(&[("x-basket-token", "t")]),
                Some(Target::BasketToken("t".into())),
            ),
            ("/api/v1/products".into(), none.clone(), None),
            ("/api/v1/customers/me".into(), none.clone(), None),
            (
                "/api/v1/customers/me/consents".into(),
                headers(&[("authorization", "Bearer abc")]),
                Some(Target::Session("abc".into())),
            ),
            (
                "/api/v1/customers/me".into(),
                headers(&[("cookie", "a=1; omnihub_session=xyz; b=2")]),
                Some(Target::Session("xyz".into())),
            ),
            (
                "/account/phone".into(),
                headers(&[("cookie", "omnihub_session=xyz")]),
                Some(Target::Session("xyz".into())),
            ),
            (
                "/accounts".into(),
                headers(&[("authorization", "Bearer abc")]),
                None,
            ),
            (
                "/api/v1/customers/meh".into(),
                headers(&[("authorization", "Bearer abc")]),
                None,
            ),
        ];
        for (path, h, want) in cases {
            assert_eq!(target_of(&path, &h), want, "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("host", "a"),
            ("content-length", "3"),
            ("x-omnihub-forwarded-by", "spoofed"),
            ("cookie", "omnihub_session=s"),
            ("content-type", "application/json"),
        ]);
        let mut kept: Vec<String> = passed_on(&h)
            .into_iter()
            .map(|(n, _)| n.as_str().to_string())
            .collect();
        kept.sort();
        assert_eq!(kept, ["content-type", "cookie"]);
    }
}
