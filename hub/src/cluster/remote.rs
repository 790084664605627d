//! Calls between nodes: the hub's own work on a basket or customer another node owns.
//!
//! Requests that name their entity are forwarded whole ([`super::forward`]). The hub's own
//! callers — a payment webhook (it names a checkout), the checkout sweeper, sign-in's merge of
//! the anonymous basket into the customer's, the admin API's refunds, an OMS report, a store's
//! pickup report — reach an actor from wherever they run. When its shard is another node's,
//! the call goes there as a [`Call`]: `POST /internal/v1/cluster/call`, the body a
//! `protocol::codec` envelope, with the cluster secret (`[cluster] secret`, the same on every
//! node) in `X-Omnihub-Cluster-Secret` and `X-Omnihub-Forwarded-By: <node>`. The owner checks the
//! secret (constant time), that it owns the call's shard — it never sends a call on, so no
//! loop —, runs it on its local actor and answers a [`Reply`] or the error, encoded the same way.
//!
//! While the shard has no owner (moving), or its owner refuses connections or answers that it
//! no longer owns it, the caller looks again every 50 ms, up to its patience (the failover
//! bound); a call that was sent and then broke off is not sent again (the caller's own retry —
//! the sweeper's next round, the provider's next delivery — decides). Without a secret every
//! such call is refused, and the caller gets `unavailable` as before.

use super::ownership::{Owner, OwnershipView};
use super::{shard_of, ClusterError};
use crate::payments::client::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::BackendError;
use protocol::codec::{self, Stored};
use protocol::order::{CheckoutRecord, FulfilmentUpdate, OrderRecord};
use protocol::{
    Basket, BasketId, BasketLine, Channel, CheckoutId, CustomerId, Money, OrderId, Subject,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Where a node takes calls from the others.
pub const CALL_PATH: &str = "/internal/v1/cluster/call";
/// The cluster secret on a call between nodes.
pub const SECRET_HEADER: &str = "x-omnihub-cluster-secret";

/// Why a pending checkout ends without payment (the actor's `EndReason`, on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    Cancelled,
    HoldExpired,
}

/// Work for the actor of another node's basket or customer. Every call is one the hub makes
/// itself (system access, or access its caller established, as noted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    /// A verified paid session (webhook, reconciliation, the success redirect).
    PaymentSucceeded {
        basket: BasketId,
        checkout: CheckoutId,
        session: Session,
    },
    PaymentFailed {
        basket: BasketId,
        checkout: CheckoutId,
        message: String,
    },
    /// Ends a pending checkout as the hub (the sweeper, an expired session).
    EndCheckout {
        basket: BasketId,
        checkout: CheckoutId,
        why: Ending,
    },
    SettleOrder {
        basket: BasketId,
        order: OrderId,
    },
    RefundOrder {
        basket: BasketId,
        order: OrderId,
        amount: Option<Money>,
        reason: String,
        cancel: bool,
        idempotency_key: Option<String>,
    },
    Fulfilment {
        basket: BasketId,
        order: OrderId,
        update: FulfilmentUpdate,
        source: String,
    },
    Pickup {
        basket: BasketId,
        report: protocol::replication::pickup::PickupReport,
    },
    /// The customer's basket id, made if they have none.
    EnsureBasket {
        customer: CustomerId,
    },
    /// Merges the anonymous basket `from` (its token was checked by the caller) into `into`.
    Merge {
        from: BasketId,
        into: BasketId,
        channel: Channel,
        subject: Subject,
    },
    /// `into` absorbs a merged basket's lines and coupons, storing the closed source with it.
    Absorb {
        into: BasketId,
        lines: Vec<BasketLine>,
        coupons: Vec<String>,
        closed_source: Basket,
    },
    /// Moves the customer's basket lines to a till (an edge node's pull `id`).
    TillPull {
        customer: CustomerId,
        id: String,
        store: String,
    },
    /// Gives a till pull back to the customer's basket.
    TillReturn {
        customer: CustomerId,
        id: String,
        store: String,
    },
    /// The customer record's part of an erasure.
    EraseRecord {
        customer: CustomerId,
        placeholder_email: String,
        sessions: Vec<[u8; 32]>,
    },
    /// An order's part of an erasure, through its basket.
    EraseOrder {
        basket: BasketId,
        order: OrderId,
        placeholder_email: String,
    },
}

impl Call {
    /// The shard whose owner runs the call.
    pub fn shard(&self) -> u64 {
        match self {
            Call::PaymentSucceeded { basket, .. }
            | Call::PaymentFailed { basket, .. }
            | Call::EndCheckout { basket, .. }
            | Call::SettleOrder { basket, .. }
            | Call::RefundOrder { basket, .. }
            | Call::Fulfilment { basket, .. }
            | Call::Pickup { basket, .. }
            | Call::EraseOrder { basket, .. } => shard_of(basket),
            Call::EnsureBasket { customer }
            | Call::TillPull { customer, .. }
            | Call::TillReturn { customer, .. }
            | Call::EraseRecord { customer, .. } => shard_of(customer),
            Call::Merge { from, .. } => shard_of(from),
            Call::Absorb { into, .. } => shard_of(into),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Call::PaymentSucceeded { .. } => "payment_succeeded",
            Call::PaymentFailed { .. } => "payment_failed",
            Call::EndCheckout { .. } => "end_checkout",
            Call::SettleOrder { .. } => "settle_order",
            Call::RefundOrder { .. } => "refund_order",
            Call::Fulfilment { .. } => "fulfilment",
            Call::Pickup { .. } => "pickup",
            Call::EnsureBasket { .. } => "ensure_basket",
            Call::Merge { .. } => "merge",
            Call::Absorb { .. } => "absorb",
            Call::TillPull { .. } => "till_pull",
            Call::TillReturn { .. } => "till_return",
            Call::EraseRecord { .. } => "erase_record",
            Call::EraseOrder { .. } => "erase_order",
        }
    }
}

/// What a call answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Done,
    Order(Box<OrderRecord>),
    Ended(Box<CheckoutRecord>, Option<Box<OrderRecord>>),
    Ensured(BasketId, Option<Box<Basket>>),
    /// Lines moved (a till pull), and whether this call moved them (a return).
    Lines(Vec<(protocol::Sku, u32)>, bool),
}

impl Reply {
    fn unexpected(&self) -> BackendError {
        BackendError::Unavailable(format!("another node answered an unexpected {self:?}"))
    }

    pub fn order(self) -> Result<OrderRecord, BackendError> {
        match self {
            Reply::Order(o) => Ok(*o),
            other => Err(other.unexpected()),
        }
    }

    pub fn done(self) -> Result<(), BackendError> {
        match self {
            Reply::Done => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    pub fn ended(self) -> Result<(CheckoutRecord, Option<OrderRecord>), BackendError> {
        match self {
            Reply::Ended(c, o) => Ok((*c, o.map(|o| *o))),
            other => Err(other.unexpected()),
        }
    }

    pub fn lines(self) -> Result<(Vec<(protocol::Sku, u32)>, bool), BackendError> {
        match self {
            Reply::Lines(lines, changed) => Ok((lines, changed)),
            other => Err(other.unexpected()),
        }
    }

    pub fn ensured(self) -> Result<(BasketId, Option<Basket>), BackendError> {
        match self {
            Reply::Ensured(id, b) => Ok((id, b.map(|b| *b))),
            other => Err(other.unexpected()),
        }
    }
}

/// A [`BackendError`] on the wire (its codes are the owner's own, turned back into the same
/// static strings).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum WireError {
    NotFound(String),
    Unprocessable {
        code: String,
        message: String,
    },
    BadCredentials,
    EmailTaken,
    Unauthenticated,
    Unavailable(String),
    Invalid {
        code: String,
        message: String,
        fields: Vec<protocol::checkout::FieldError>,
    },
    Conflict {
        code: String,
        message: String,
        /// JSON text.
        details: Option<String>,
    },
    RateLimited {
        retry_after: u64,
        message: String,
    },
    PaymentUnavailable(String),
}

impl From<BackendError> for WireError {
    fn from(e: BackendError) -> WireError {
        match e {
            BackendError::NotFound(what) => WireError::NotFound(what.into()),
            BackendError::Unprocessable { code, message } => WireError::Unprocessable {
                code: code.into(),
                message,
            },
            BackendError::BadCredentials => WireError::BadCredentials,
            BackendError::EmailTaken => WireError::EmailTaken,
            BackendError::Unauthenticated => WireError::Unauthenticated,
            BackendError::Unavailable(m) => WireError::Unavailable(m),
            BackendError::Invalid {
                code,
                message,
                fields,
            } => WireError::Invalid {
                code: code.into(),
                message,
                fields,
            },
            BackendError::Conflict {
                code,
                message,
                details,
            } => WireError::Conflict {
                code: code.into(),
                message,
                details: details.map(|d| d.to_string()),
            },
            BackendError::RateLimited {
                retry_after,
                message,
            } => WireError::RateLimited {
                retry_after,
                message,
            },
            BackendError::PaymentUnavailable(m) => WireError::PaymentUnavailable(m),
        }
    }
}

impl From<WireError> for BackendError {
    fn from(e: WireError) -> BackendError {
        match e {
            WireError::NotFound(what) => BackendError::NotFound(intern(&what)),
            WireError::Unprocessable { code, message } => BackendError::Unprocessable {
                code: intern(&code),
                message,
            },
            WireError::BadCredentials => BackendError::BadCredentials,
            WireError::EmailTaken => BackendError::EmailTaken,
            WireError::Unauthenticated => BackendError::Unauthenticated,
            WireError::Unavailable(m) => BackendError::Unavailable(m),
            WireError::Invalid {
                code,
                message,
                fields,
            } => BackendError::Invalid {
                code: intern(&code),
                message,
                fields,
            },
            WireError::Conflict {
                code,
                message,
                details,
            } => BackendError::Conflict {
                code: intern(&code),
                message,
                details: details.and_then(|d| serde_json::from_str(&d).ok()),
            },
            WireError::RateLimited {
                retry_after,
                message,
            } => BackendError::RateLimited {
                retry_after,
                message,
            },
            WireError::PaymentUnavailable(m) => BackendError::PaymentUnavailable(m),
        }
    }
}

/// The `&'static str` for an error code or entity name from another node: the codes are the
/// hub's own (a fixed set), each kept once; past [`INTERNED`] distinct ones (never, unless a
/// node misbehaves), a generic one.
fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    const INTERNED: usize = 512;
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = seen.get(s) {
        return known;
    }
    if seen.len() >= INTERNED || s.len() > 64 {
        return "error";
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// A call on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct CallFrame {
    call: Call,
}

impl Stored for CallFrame {
    const KIND: &'static str = "cluster_call";
    const VERSION: u16 = 1;
}

/// An answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct AnswerFrame {
    answer: Result<Reply, WireError>,
}

impl Stored for AnswerFrame {
    const KIND: &'static str = "cluster_answer";
    const VERSION: u16 = 1;
}

/// Runs calls from other nodes on this node's actors (the hub's backend).
#[async_trait::async_trait]
pub trait Callee: Send + Sync {
    /// Runs `call` here, on the local actor (never sent on to another node).
    async fn serve(&self, call: Call) -> Result<Reply, BackendError>;
}

/// This node's side of calls between nodes: it sends calls to owners and checks the ones it
/// receives.
pub struct Peers {
    view: Arc<OwnershipView>,
    secret: Option<SecretString>,
    client: reqwest::Client,
    patience: Duration,
}

fn unavailable(message: &str) -> BackendError {
    BackendError::Unavailable(message.to_string())
}

/// What came back from one attempt.
enum Attempt {
    Answered(Result<Reply, BackendError>),
    /// Not sent, or refused before running (nothing happened): look again.
    Again(&'static str),
}

impl Peers {
    /// `patience`: how long a call waits for a moving shard to get an owner (the failover
    /// bound, as for forwarded requests).
    pub fn new(
        view: Arc<OwnershipView>,
        secret: Option<SecretString>,
        patience: Duration,
    ) -> Result<Peers, ClusterError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            // As for forwarding: a refused connection is safe to try again, a pooled one
            // closed under a sent call is not.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ClusterError::Config(format!("no HTTP client for node calls: {e}")))?;
        let secret = secret.filter(|s| !s.expose_secret().is_empty());
        if secret.is_none() {
            tracing::warn!(
                "[cluster] secret is not set: this node neither sends nor takes calls to other \
                 nodes' actors (webhooks, sign-in merges and the sweeper on their shards fail)"
            );
        }
        Ok(Peers {
            view,
            secret,
            client,
            patience,
        })
    }

    /// The ownership view the peers route by.
    pub fn view(&self) -> &Arc<OwnershipView> {
        &self.view
    }

    /// Runs `call` at the owner of its shard: `Ok(None)` when that is this node (run it here),
    /// the owner's answer otherwise. Waits up to the patience while the shard has no owner or
    /// its owner cannot take the call yet.
    pub async fn call(&self, call: &Call) -> Result<Option<Reply>, BackendError> {
        let shard = call.shard();
        let deadline = tokio::time::Instant::now() + self.patience;
        let body = codec::encode(&CallFrame { call: call.clone() })
            .map_err(|e| unavailable(&e.to_string()))?;
        loop {
            let why = match self.view.owner(shard) {
                Some(Owner { token: Some(_), .. }) => return Ok(None),
                Some(Owner {
                    address: Some(address),
                    node_id,
                    ..
                }) => {
                    let span =
                        tracing::info_span!("node_call", call = call.name(), owner = %node_id);
                    match tracing::Instrument::instrument(self.send(&address, body.clone()), span)
                        .await
                    {
                        Attempt::Answered(answer) => return answer.map(Some),
                        Attempt::Again(why) => why,
                    }
                }
                _ => "the entity is moving between nodes: retry in a moment",
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(why));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, address: &str, body: Vec<u8>) -> Attempt {
        let Some(secret) = &self.secret else {
            return Attempt::Answered(Err(unavailable(
                "another hub node owns this entity and no cluster secret is set to call it",
            )));
        };
        let url = format!("{}{CALL_PATH}", address.trim_end_matches('/'));
        let sent = self
            .client
            .post(&url)
            .header(SECRET_HEADER, secret.expose_secret())
            .header(super::forward::FORWARDED_BY, self.view.node_id())
            .header("content-type", "application/msgpack")
            .body(body)
            .send()
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(e) if e.is_connect() => {
                tracing::warn!(owner = %address, error = %e, "the owner does not answer");
                return Attempt::Again("the owning node did not answer: retry");
            }
            Err(e) => {
                // Sent, perhaps run: not sent again.
                tracing::warn!(owner = %address, error = %e, "a call to the owner failed");
                return Attempt::Answered(Err(unavailable(
                    "the owning node did not answer: retry",
                )));
            }
        };
        let status = res.status().as_u16();
        let bytes = match res.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(owner = %address, error = %e, "the owner's answer broke off");
                return Attempt::Answered(Err(unavailable(
                    "the owning node's answer broke off: retry",
                )));
            }
        };
        match status {
            200 => match codec::decode::<AnswerFrame>(&bytes) {
                Ok(frame) => Attempt::Answered(frame.answer.map_err(BackendError::from)),
                Err(e) => Attempt::Answered(Err(unavailable(&format!(
                    "the owning node's answer is unreadable: {e}"
                )))),
            },
            // It does not own the shard (any more): nothing ran; look again.
            503 => Attempt::Again("another node owns this entity now: retry"),
            _ => {
                tracing::error!(owner = %address, status, "another node refused a call");
                Attempt::Answered(Err(unavailable(&format!(
                    "another hub node refused the call ({status}): check [cluster] secret"
                ))))
            }
        }
    }

    /// Whether `req` carries this cluster's secret.
    fn authentic(&self, req: &HttpRequest) -> bool {
        let (Some(secret), Some(given)) = (&self.secret, req.headers().get(SECRET_HEADER)) else {
            return false;
        };
        secret
            .expose_secret()
            .as_bytes()
            .ct_eq(given.as_bytes())
            .into()
    }
}

fn refused(status: u16, code: &str, message: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut res = HttpResponse::build(status);
    if status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
        res.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
    }
    res.json(serde_json::json!({ "error": { "code": code, "message": message } }))
}

/// `POST /internal/v1/cluster/call`: a call from another node (`web::Data<Peers>` and
/// `web::Data<dyn Callee>` in the app; without them, 404).
pub async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    peers: Option<web::Data<Peers>>,
    callee: Option<web::Data<dyn Callee>>,
) -> HttpResponse {
    let (Some(peers), Some(callee)) = (peers, callee) else {
        return refused(404, "not_found", "no such endpoint");
    };
    if !peers.authentic(&req) || !req.headers().contains_key(super::forward::FORWARDED_BY) {
        return refused(
            401,
            "unauthorized",
            "calls between nodes need the cluster secret",
        );
    }
    let call = match codec::decode::<CallFrame>(&body) {
        Ok(frame) => frame.call,
        Err(e) => return refused(400, "bad_call", &format!("unreadable call: {e}")),
    };
    // Never sent on: a call for a shard this node does not hold goes back to the caller, who
    // looks again.
    if !peers.view.owner(call.shard()).is_some_and(|o| o.is_local()) {
        return refused(
            503,
            "not_owner",
            "this node does not own the entity: look again",
        );
    }
    let name = call.name();
    let answer = callee.serve(call).await.map_err(WireError::from);
    if let Err(e) = &answer {
        tracing::debug!(call = name, error = ?e, "a call from another node failed");
    }
    match codec::encode(&AnswerFrame { answer }) {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("application/msgpack")
            .body(bytes),
        Err(e) => refused(500, "encode", &e.to_string()),
    }
}

impl From<crate::actors::checkout::EndReason> for Ending {
    fn from(r: crate::actors::checkout::EndReason) -> Ending {
        use crate::actors::checkout::EndReason;
        match r {
            EndReason::Cancelled => Ending::Cancelled,
            EndReason::HoldExpired => Ending::HoldExpired,
        }
    }
}

impl From<Ending> for crate::actors::checkout::EndReason {
    fn from(r: Ending) -> crate::actors::checkout::EndReason {
        use crate::actors::checkout::EndReason;
        match r {
            Ending::Cancelled => EndReason::Cancelled,
            Ending::HoldExpired => EndReason::HoldExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_the_wire_unchanged() {
        let cases = vec![
            BackendError::NotFound("checkout"),
            BackendError::Conflict {
                code: "basket_locked",
                message: "locked".into(),
                details: Some(serde_json::json!({"a": 1})),
            },
            BackendError::Unavailable("later".into()),
            BackendError::RateLimited {
                retry_after: 3,
                message: "slow".into(),
            },
        ];
        for e in cases {
            let frame = AnswerFrame {
                answer: Err(WireError::from(e.clone())),
            };
            let back: AnswerFrame =
                codec::decode(&codec::encode(&frame).expect("encodes")).expect("decodes");
            let back = BackendError::from(back.answer.expect_err("an error"));
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
    }

    #[test]
    fn codes_are_interned_once() {
        let a = intern("basket_locked");
        let b = intern(&String::from("basket_locked"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern(&"x".repeat(100)), "error");
    }
}
