//! Webhook delivery to one endpoint (the hub's), signed with `Omnihub-Signature`, following the
//! payment simulator's delivery rules.
//!
//! Events are queued (bounded) and one background task takes the queue in order and hands each
//! event to a delivery of its own, at most `concurrency` of them in flight: `POST` of the event
//! JSON with `Omnihub-Signature: t={unix},v1={hex HMAC-SHA256 of "{t}.{body}" keyed with the
//! whole secret}`, 10 s timeout. A delivery gives its slot back once its first attempt is
//! answered; a failure (error or non-2xx) is retried in the background after 0.5 s, 1 s, 2 s,
//! 4 s and 8 s — six attempts in all — without holding a slot. The retries in progress are
//! bounded too; an event that finds the queue full is logged as `dropped`, a failure that finds
//! the retries full as `failed`. Webhook faults (duplicate, delay, reorder, drop, pause) act
//! here as in the payment simulator.

use super::faults::{HasWebhookFaults, SharedFaults, WebhookFaults};
use super::lock;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

/// The header carrying the signature.
pub(crate) const SIGNATURE_HEADER: &str = "omnihub-signature";
/// The most deliveries retrying at once.
pub(crate) const RETRY_CAP: usize = 10_000;
/// Deliveries kept for `GET /_sim/deliveries`.
const LOG_CAP: usize = 2_000;
/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 6;
/// The first retry's wait; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How often a paused queue looks whether it may go on.
const PAUSE_POLL: Duration = Duration::from_millis(20);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// `t={t},v1={hex}`: HMAC-SHA256 of `"{t}.{payload}"` keyed with the whole secret, as Stripe
/// signs.
pub(crate) fn signature(secret: &str, timestamp: i64, payload: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length, so this arm is never taken.
        Err(_) => return format!("t={timestamp}"),
    };
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// One delivery of one event, as `GET /_sim/deliveries` lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivery {
    pub id: u64,
    pub event_id: String,
    pub event_type: String,
    /// The endpoint's id, where a simulator has several endpoints (the payment simulator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub url: String,
    pub attempts: u32,
    /// `queued`, `delivered`, `retrying`, `failed` (all attempts used) or `dropped`.
    pub status: &'static str,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
}

/// Where events go and how deliveries are bounded.
#[derive(Debug, Clone)]
pub(crate) struct WebhookSettings {
    /// No URL: events are recorded nowhere and sent nowhere.
    pub url: Option<String>,
    pub secret: String,
    /// Events waiting before new ones are dropped.
    pub queue_cap: usize,
    /// First attempts in flight at once.
    pub concurrency: usize,
    pub user_agent: &'static str,
}

/// One endpoint deliveries go to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Its id, for simulators with several endpoints.
    pub endpoint: Option<String>,
    pub url: String,
    pub secret: String,
}

/// How a simulator's deliveries look on the wire and in the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub user_agent: &'static str,
    /// The header carrying the signature.
    pub signature_header: &'static str,
    pub content_type: &'static str,
    /// The most deliveries of one queue retrying at once.
    pub retry_cap: usize,
    /// Whose deliveries the retry cap counts, for the log: `""` or `" of this endpoint"`.
    pub retry_scope: &'static str,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<Delivery>,
    next: u64,
}

/// The delivery machinery shared by every queue of a simulator: the HTTP client, the log, the
/// tasks and the faults.
pub(crate) struct Sender {
    style: Style,
    log: Mutex<Log>,
    faults: Arc<Mutex<dyn HasWebhookFaults>>,
    client: reqwest::Client,
    runtime: Handle,
    tasks: Mutex<JoinSet<()>>,
    concurrency: usize,
}

impl Sender {
    /// A sender with up to `concurrency` (at least 1) first attempts in flight per queue.
    pub(crate) fn new(
        style: Style,
        faults: Arc<Mutex<dyn HasWebhookFaults>>,
        runtime: Handle,
        concurrency: usize,
    ) -> Result<Arc<Sender>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .user_agent(style.user_agent)
            .build()?;
        Ok(Arc::new(Sender {
            style,
            log: Mutex::new(Log::default()),
            faults,
            client,
            runtime,
            tasks: Mutex::new(JoinSet::new()),
            concurrency: concurrency.max(1),
        }))
    }

    /// Starts a queue of (at most `queue_cap`) events to `target` and its dispatch task.
    pub(crate) fn open(
        self: &Arc<Self>,
        target: Target,
        queue_cap: usize,
    ) -> mpsc::Sender<Arc<Value>> {
        let (queue, receiver) = mpsc::channel(queue_cap.max(1));
        self.spawn(deliver_queue(Arc::clone(self), target, receiver));
        queue
    }

    /// Logs an event that found its queue full as `dropped`.
    pub(crate) fn dropped(&self, event: &Value, target: &Target, why: &str) {
        let id = self.log_delivery(event, target);
        self.update(id, |d| {
            d.status = "dropped";
            d.last_error = Some(why.into());
        });
    }

    /// The delivery log, oldest first.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.log).entries.iter().cloned().collect()
    }

    /// Stops every delivery task (queued and retrying deliveries are abandoned).
    pub(crate) fn stop(&self) {
        lock(&self.tasks).abort_all();
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
    }

    fn log_delivery(&self, event: &Value, target: &Target) -> u64 {
        let mut log = lock(&self.log);
        log.next += 1;
        let id = log.next;
        log.entries.push_back(Delivery {
            id,
            event_id: event["id"].as_str().unwrap_or_default().to_owned(),
            event_type: event["type"].as_str().unwrap_or_default().to_owned(),
            endpoint: target.endpoint.clone(),
            url: target.url.clone(),
            attempts: 0,
            status: "queued",
            last_status_code: None,
            last_error: None,
        });
        while log.entries.len() > LOG_CAP {
            log.entries.pop_front();
        }
        id
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Delivery)) {
        // Ids grow with the log, so the entry is found from the back.
        if let Some(delivery) = lock(&self.log)
            .entries
            .iter_mut()
            .rev()
            .find(|d| d.id == id)
        {
            change(delivery);
        }
    }

    fn webhook_faults(&self) -> WebhookFaults {
        lock(&self.faults).webhook_faults().clone()
    }
}

/// The sender of a simulator with one endpoint (the hub's); cheap to clone.
#[derive(Clone)]
pub(crate) struct Webhooks {
    inner: Option<(Arc<Sender>, Target, mpsc::Sender<Arc<Value>>)>,
}

impl Webhooks {
    /// Starts the delivery task on `runtime` when a URL is set.
    pub(crate) fn start(
        settings: WebhookSettings,
        faults: SharedFaults,
        runtime: Handle,
    ) -> Result<Webhooks, reqwest::Error> {
        let Some(url) = settings.url else {
            return Ok(Webhooks { inner: None });
        };
        let style = Style {
            user_agent: settings.user_agent,
            signature_header: SIGNATURE_HEADER,
            content_type: "application/json",
            retry_cap: RETRY_CAP,
            retry_scope: "",
        };
        let sender = Sender::new(style, faults, runtime, settings.concurrency)?;
        let target = Target {
            endpoint: None,
            url,
            secret: settings.secret,
        };
        let queue = sender.open(target.clone(), settings.queue_cap);
        Ok(Webhooks {
            inner: Some((sender, target, queue)),
        })
    }

    /// Queues an event (a JSON object with `id` and `type`).
    pub(crate) fn publish(&self, event: Value) {
        let Some((sender, target, queue)) = &self.inner else {
            return;
        };
        let event = Arc::new(event);
        if queue.try_send(Arc::clone(&event)).is_err() {
            warn!(event = %event["id"], "webhook queue full: event dropped");
            sender.dropped(&event, target, "the queue was full");
        }
    }

    /// The delivery log, oldest first.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        match &self.inner {
            Some((sender, _, _)) => sender.deliveries(),
            None => Vec::new(),
        }
    }

    /// Stops every delivery task (queued and retrying deliveries are abandoned).
    pub(crate) fn stop(&self) {
        if let Some((sender, _, _)) = &self.inner {
            sender.stop();
        }
    }
}

/// The dispatch loop of one queue: takes queued events in order (newest-first batches when
/// `reorder` is on) and starts a delivery for each copy (`duplicate`) once a slot is free and
/// `pause` is off. The slot is taken before the event is looked at, so with one slot the next
/// delivery starts only after the last one's first attempt was answered.
async fn deliver_queue(sender: Arc<Sender>, target: Target, mut queue: mpsc::Receiver<Arc<Value>>) {
    let slots = Arc::new(Semaphore::new(sender.concurrency));
    let retries = Arc::new(Semaphore::new(sender.style.retry_cap));
    while let Some(first) = queue.recv().await {
        wait_while_paused(&sender).await;
        let mut batch = vec![first];
        if sender.webhook_faults().reorder {
            while let Ok(event) = queue.try_recv() {
                batch.push(event);
            }
            batch.reverse();
        }
        for event in batch {
            let copies = sender.webhook_faults().duplicate.max(1);
            for _ in 0..copies {
                // The semaphore is never closed, so this only fails if it were.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                wait_while_paused(&sender).await;
                let id = sender.log_delivery(&event, &target);
                if lock(&sender.faults).webhook_faults().drop_delivery() {
                    sender.update(id, |d| d.status = "dropped");
                    continue;
                }
                let delivery = deliver(
                    Arc::clone(&sender),
                    target.clone(),
                    Arc::clone(&event),
                    id,
                    slot,
                    Arc::clone(&retries),
                );
                sender.spawn(delivery);
            }
        }
    }
}

async fn wait_while_paused(sender: &Sender) {
    while sender.webhook_faults().pause {
        tokio::time::sleep(PAUSE_POLL).await;
    }
}

/// One delivery: waits `delay_ms`, sends the first attempt and gives its slot back; a failure
/// goes on retrying without the slot (if fewer than the retry cap retry already).
async fn deliver(
    sender: Arc<Sender>,
    target: Target,
    event: Arc<Value>,
    id: u64,
    slot: tokio::sync::OwnedSemaphorePermit,
    retries: Arc<Semaphore>,
) {
    let delay = sender.webhook_faults().delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let delivered = attempt(&sender, &target, &event, id).await;
    drop(slot);
    if delivered {
        return;
    }
    let Ok(_retrying) = retries.try_acquire_owned() else {
        let Style {
            retry_cap,
            retry_scope,
            ..
        } = sender.style;
        sender.update(id, |d| {
            d.status = "failed";
            d.last_error = Some(format!(
                "not retried: {retry_cap} deliveries{retry_scope} were retrying already"
            ));
        });
        warn!(url = %target.url, event = %event["id"], "webhook delivery not retried: too many retrying");
        return;
    };
    let mut backoff = FIRST_BACKOFF;
    for _ in 1..MAX_ATTEMPTS {
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        if attempt(&sender, &target, &event, id).await {
            return;
        }
    }
    sender.update(id, |d| d.status = "failed");
    warn!(url = %target.url, event = %event["id"], "webhook delivery failed for good");
}

/// Sends an event once; true when the endpoint answered 2xx.
async fn attempt(sender: &Sender, target: &Target, event: &Value, id: u64) -> bool {
    let body = event.to_string();
    let header = signature(&target.secret, super::unix_now(), &body);
    let result = sender
        .client
        .post(&target.url)
        .header("content-type", sender.style.content_type)
        .header(sender.style.signature_header, header)
        .body(body)
        .send()
        .await;
    let (code, error) = match result {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(e) => (e.status().map(|s| s.as_u16()), Some(e.to_string())),
    };
    let ok = error.is_none() && code.is_some_and(|c| (200..300).contains(&c));
    sender.update(id, |d| {
        d.attempts += 1;
        d.last_status_code = code;
        d.last_error = error;
        d.status = if ok { "delivered" } else { "retrying" };
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_stripe_scheme() {
        // The same vector as the payment simulator's: HMAC-SHA256("whsec_test", "1.{}").
        assert_eq!(
            signature("whsec_test", 1, "{}"),
            "t=1,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
    }
}
