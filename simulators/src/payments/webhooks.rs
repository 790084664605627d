//! Events and their delivery to webhook endpoints, signed as Stripe signs them.
//!
//! Every event is kept (bounded) for `GET /v1/events`, and queued to each endpoint that enabled
//! its type. One background task per endpoint takes the queue in order and hands each event to a
//! delivery of its own, at most `webhook_concurrency` of them in flight per endpoint (as Stripe,
//! which sends concurrently and promises no order): `POST` of the event JSON with
//! `Stripe-Signature: t={unix},v1={hex HMAC-SHA256 of "{t}.{body}" keyed with the whole whsec_
//! secret}`, 10 s timeout. A delivery takes its slot when it is taken off the queue and gives it
//! back once its first attempt is answered, so with a concurrency of 1 first attempts arrive
//! strictly in queue order, one at a time; with more, they may overtake each other. A failed
//! delivery (error or non-2xx) is retried in the background after 0.5 s, 1 s, 2 s, 4 s and 8 s —
//! six attempts in all — without holding a slot, so it blocks no other delivery. The queue is
//! bounded, and so are the deliveries retrying at once; an event that finds the queue full is
//! logged as `dropped`, a failure that finds the retries full as `failed`. Webhook faults
//! (duplicate, delay, reorder, drop, pause) act here: each copy of a duplicated event is a
//! delivery of its own; `delay_ms` is waited inside the delivery's slot; `reorder` takes what is
//! queued newest-first; `drop_next` and `pause` act as deliveries are taken off the queue, in
//! queue order.

use super::faults::Faults;
use super::objects::{list, new_id};
use super::API_VERSION;
use crate::common::lock;
use crate::common::webhooks::{Sender, Style, Target};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub(super) use crate::common::webhooks::Delivery;

/// Events waiting per endpoint before new ones are dropped; also the most deliveries of one
/// endpoint retrying at once.
const QUEUE_CAP: usize = 10_000;
/// The most deliveries in flight per endpoint that `--webhook-concurrency` may ask for.
pub(super) const MAX_CONCURRENCY: usize = 1_024;
/// `Stripe-Signature` for a payload: `t={t},v1={hex}`.
#[cfg(test)]
fn signature(secret: &str, timestamp: i64, payload: &str) -> String {
    crate::common::webhooks::signature(secret, timestamp, payload)
}

/// The request that raised an event (`event.request`).
#[derive(Debug, Clone, Default)]
pub(super) struct RequestInfo {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

struct Endpoint {
    target: Target,
    enabled_events: Vec<String>,
    created: i64,
    description: Option<String>,
    metadata: Map<String, Value>,
    queue: mpsc::Sender<Arc<Value>>,
}

impl Endpoint {
    fn wants(&self, kind: &str) -> bool {
        self.enabled_events.iter().any(|e| e == "*" || e == kind)
    }

    fn json(&self, with_secret: bool) -> Value {
        let mut json = json!({
            "id": self.target.endpoint,
            "object": "webhook_endpoint",
            "api_version": null,
            "application": null,
            "created": self.created,
            "description": self.description,
            "enabled_events": self.enabled_events,
            "livemode": false,
            "metadata": self.metadata,
            "status": "enabled",
            "url": self.target.url,
        });
        if with_secret {
            json["secret"] = json!(self.target.secret);
        }
        json
    }
}

#[derive(Default)]
struct Inner {
    endpoints: Vec<Endpoint>,
    events: HashMap<String, Arc<Value>>,
    event_order: VecDeque<String>,
}

struct State {
    inner: Mutex<Inner>,
    sender: Arc<Sender>,
    event_cap: usize,
}

/// The events and the webhook endpoints; cheap to clone.
#[derive(Clone)]
pub(super) struct Webhooks {
    state: Arc<State>,
}

impl Webhooks {
    /// Spawns the delivery tasks on `runtime`; each endpoint has up to `concurrency` (at least
    /// 1) first attempts in flight.
    pub(super) fn new(
        faults: Arc<Mutex<Faults>>,
        runtime: Handle,
        event_cap: usize,
        concurrency: usize,
    ) -> Result<Webhooks, reqwest::Error> {
        let style = Style {
            user_agent: "Stripe/1.0 (+https://stripe.com/docs/webhooks) omnihub-sim",
            signature_header: "stripe-signature",
            content_type: "application/json; charset=utf-8",
            retry_cap: QUEUE_CAP,
            retry_scope: " of this endpoint",
        };
        let sender = Sender::new(
            style,
            faults,
            runtime,
            concurrency.clamp(1, MAX_CONCURRENCY),
        )?;
        Ok(Webhooks {
            state: Arc::new(State {
                inner: Mutex::new(Inner::default()),
                sender,
                event_cap: event_cap.max(1),
            }),
        })
    }

    /// Adds an endpoint and starts its delivery task; returns its JSON with the secret.
    pub(super) fn add_endpoint(
        &self,
        url: String,
        secret: String,
        enabled_events: Vec<String>,
        description: Option<String>,
        metadata: Map<String, Value>,
        now: i64,
    ) -> Value {
        let target = Target {
            endpoint: Some(new_id("we")),
            url,
            secret,
        };
        let queue = self.state.sender.open(target.clone(), QUEUE_CAP);
        let endpoint = Endpoint {
            target: target.clone(),
            enabled_events,
            created: now,
            description,
            metadata,
            queue,
        };
        let json = endpoint.json(true);
        lock(&self.state.inner).endpoints.push(endpoint);
        json
    }

    pub(super) fn endpoint_count(&self) -> usize {
        lock(&self.state.inner).endpoints.len()
    }

    pub(super) fn endpoint(&self, id: &str) -> Option<Value> {
        lock(&self.state.inner)
            .endpoints
            .iter()
            .find(|e| e.target.endpoint.as_deref() == Some(id))
            .map(|e| e.json(false))
    }

    pub(super) fn endpoints(&self) -> Value {
        let inner = lock(&self.state.inner);
        let data = inner.endpoints.iter().map(|e| e.json(false)).collect();
        list(data, "/v1/webhook_endpoints", false)
    }

    /// Removes an endpoint; its task ends once its queue is sent.
    pub(super) fn delete_endpoint(&self, id: &str) -> bool {
        let mut inner = lock(&self.state.inner);
        let before = inner.endpoints.len();
        inner
            .endpoints
            .retain(|e| e.target.endpoint.as_deref() != Some(id));
        inner.endpoints.len() < before
    }

    /// Records an event and queues it to every endpoint that wants it; returns the event.
    pub(super) fn publish(
        &self,
        kind: &str,
        object: Value,
        request: &RequestInfo,
        now: i64,
    ) -> Arc<Value> {
        let mut inner = lock(&self.state.inner);
        let pending = inner.endpoints.iter().filter(|e| e.wants(kind)).count();
        let event = Arc::new(json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": {"object": object},
            "livemode": false,
            "pending_webhooks": pending,
            "request": {"id": request.id, "idempotency_key": request.idempotency_key},
            "type": kind,
        }));
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        inner.events.insert(id.clone(), Arc::clone(&event));
        inner.event_order.push_back(id);
        while inner.event_order.len() > self.state.event_cap {
            if let Some(old) = inner.event_order.pop_front() {
                inner.events.remove(&old);
            }
        }
        let full: Vec<Target> = inner
            .endpoints
            .iter()
            .filter(|e| e.wants(kind))
            .filter(|e| e.queue.try_send(Arc::clone(&event)).is_err())
            .map(|e| e.target.clone())
            .collect();
        for target in full {
            warn!(endpoint = ?target.endpoint, "webhook queue full: event dropped");
            self.state
                .sender
                .dropped(&event, &target, "the endpoint's queue was full");
        }
        debug!(kind, pending, "event published");
        event
    }

    pub(super) fn event(&self, id: &str) -> Option<Arc<Value>> {
        lock(&self.state.inner).events.get(id).cloned()
    }

    /// The newest events, optionally of one type.
    pub(super) fn events(&self, limit: usize, kind: Option<&str>) -> Value {
        let inner = lock(&self.state.inner);
        let mut matching = inner
            .event_order
            .iter()
            .rev()
            .filter_map(|id| inner.events.get(id))
            .filter(|e| kind.is_none_or(|k| e["type"] == k));
        let data: Vec<Value> = matching
            .by_ref()
            .take(limit)
            .map(|e| (**e).clone())
            .collect();
        let more = matching.next().is_some();
        list(data, "/v1/events", more)
    }

    pub(super) fn deliveries(&self) -> Vec<Delivery> {
        self.state.sender.deliveries()
    }

    /// Stops every delivery task (queued and retrying deliveries are abandoned).
    pub(super) fn stop(&self) {
        self.state.sender.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_stripe_documented_scheme() {
        // HMAC-SHA256("whsec_test", "1.{}"), computed independently with Python's hmac module.
        assert_eq!(
            signature("whsec_test", 1, "{}"),
            "t=1,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
    }
}
