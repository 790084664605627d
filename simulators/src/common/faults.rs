//! Faults injected on demand through `/_sim/faults`, the payment simulator's set plus an outage:
//! slow, failing, hanging or refused partner API calls, and duplicated, delayed, reordered,
//! dropped or held-back webhooks. They apply to the partner API and to webhook deliveries —
//! never to `/_sim/*`, `/healthz`, the dashboard or a public page.
//!
//! `GET /_sim/faults` shows them, `POST /_sim/faults` updates them partly (absent fields keep
//! their value), `DELETE /_sim/faults` resets them; [`routes`] serves the three.

use super::{error, lock};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the `timeout_next` fault holds a call before processing it.
pub(crate) const HOLD: Duration = Duration::from_secs(30);

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Faults {
    /// Added to every API call, in milliseconds.
    pub latency_ms: u64,
    /// The next this-many API calls are answered 500 without being processed.
    pub fail_next: u64,
    /// The next this-many API calls are held for [`HOLD`] before being processed, so a
    /// client's timeout fires first.
    pub timeout_next: u64,
    /// Every API call is answered 503 while true.
    pub outage: bool,
    pub webhooks: WebhookFaults,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WebhookFaults {
    /// How many times each event is sent (1 = once).
    pub duplicate: u32,
    /// Waited before each delivery, in milliseconds (late webhooks).
    pub delay_ms: u64,
    /// Deliver what is queued newest-first, in batches.
    pub reorder: bool,
    /// The next this-many deliveries are dropped (logged as `dropped`, never sent).
    pub drop_next: u64,
    /// Queue events without sending them until set back to false.
    pub pause: bool,
}

impl Default for WebhookFaults {
    fn default() -> WebhookFaults {
        WebhookFaults {
            duplicate: 1,
            delay_ms: 0,
            reorder: false,
            drop_next: 0,
            pause: false,
        }
    }
}

/// A partial update from `POST /_sim/faults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    latency_ms: Option<u64>,
    fail_next: Option<u64>,
    timeout_next: Option<u64>,
    outage: Option<bool>,
    webhooks: Option<WebhookFaultsUpdate>,
}

/// A partial update of the webhook faults, `"webhooks"` in `POST /_sim/faults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookFaultsUpdate {
    duplicate: Option<u32>,
    delay_ms: Option<u64>,
    reorder: Option<bool>,
    drop_next: Option<u64>,
    pause: Option<bool>,
}

/// What to do with one API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallFault {
    pub latency_ms: u64,
    pub outage: bool,
    pub fail: bool,
    pub hold: bool,
}

impl Faults {
    pub(crate) fn apply(&mut self, update: FaultsUpdate) {
        let FaultsUpdate {
            latency_ms,
            fail_next,
            timeout_next,
            outage,
            webhooks,
        } = update;
        set(&mut self.latency_ms, latency_ms);
        set(&mut self.fail_next, fail_next);
        set(&mut self.timeout_next, timeout_next);
        set(&mut self.outage, outage);
        if let Some(w) = webhooks {
            self.webhooks.apply(w);
        }
    }

    /// Takes the faults for the next API call (counting down `fail_next` and `timeout_next`;
    /// an outage counts nothing down).
    pub(crate) fn next_call(&mut self) -> CallFault {
        next_call(
            self.latency_ms,
            self.outage,
            &mut self.fail_next,
            &mut self.timeout_next,
        )
    }

    /// The faults that differ from none, as `(name, value)` for a dashboard.
    pub(crate) fn active(&self) -> Vec<(&'static str, String)> {
        let w = &self.webhooks;
        [
            (
                "latency_ms",
                self.latency_ms > 0,
                self.latency_ms.to_string(),
            ),
            ("fail_next", self.fail_next > 0, self.fail_next.to_string()),
            (
                "timeout_next",
                self.timeout_next > 0,
                self.timeout_next.to_string(),
            ),
            ("outage", self.outage, "true".into()),
            (
                "webhooks.duplicate",
                w.duplicate > 1,
                w.duplicate.to_string(),
            ),
            ("webhooks.delay_ms", w.delay_ms > 0, w.delay_ms.to_string()),
            ("webhooks.reorder", w.reorder, "true".into()),
            (
                "webhooks.drop_next",
                w.drop_next > 0,
                w.drop_next.to_string(),
            ),
            ("webhooks.pause", w.pause, "true".into()),
        ]
        .into_iter()
        .filter(|(_, on, _)| *on)
        .map(|(name, _, value)| (name, value))
        .collect()
    }
}

impl WebhookFaults {
    /// Applies a partial update (absent fields keep their value; `duplicate` is at least 1).
    pub(crate) fn apply(&mut self, update: WebhookFaultsUpdate) {
        set(&mut self.duplicate, update.duplicate.map(|d| d.max(1)));
        set(&mut self.delay_ms, update.delay_ms);
        set(&mut self.reorder, update.reorder);
        set(&mut self.drop_next, update.drop_next);
        set(&mut self.pause, update.pause);
    }

    /// Whether the next webhook delivery is dropped (counting down `drop_next`).
    pub(crate) fn drop_delivery(&mut self) -> bool {
        take_one(&mut self.drop_next)
    }
}

/// Whatever holds a simulator's webhook faults, for the shared webhook sender.
pub(crate) trait HasWebhookFaults: Send + 'static {
    fn webhook_faults(&mut self) -> &mut WebhookFaults;
}

impl HasWebhookFaults for Faults {
    fn webhook_faults(&mut self) -> &mut WebhookFaults {
        &mut self.webhooks
    }
}

/// The faults for the next API call: `fail_next` and `timeout_next` count down, one at a time
/// and `fail_next` first; an outage counts nothing down.
pub(crate) fn next_call(
    latency_ms: u64,
    outage: bool,
    fail_next: &mut u64,
    timeout_next: &mut u64,
) -> CallFault {
    let fail = !outage && take_one(fail_next);
    let hold = !outage && !fail && take_one(timeout_next);
    CallFault {
        latency_ms,
        outage,
        fail,
        hold,
    }
}

/// Sets `field` when `value` is given.
pub(crate) fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn take_one(counter: &mut u64) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

/// The faults shared by a simulator's handlers and its webhook sender.
pub(crate) type SharedFaults = Arc<Mutex<Faults>>;

/// What every partner API call passes first: the faults in force (outage → 503, latency,
/// `fail_next` → 500, `timeout_next` → held), then the `Authorization: Bearer` key (401).
/// `Err` is the answer to send instead of processing the call.
pub(crate) async fn gate(
    faults: &Mutex<Faults>,
    request: &HttpRequest,
    api_key: &str,
) -> Result<(), HttpResponse> {
    let fault = lock(faults).next_call();
    if fault.outage {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "outage",
            "The service is unavailable (injected outage).",
        ));
    }
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.fail {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "An internal error occurred (injected).",
        ));
    }
    if fault.hold {
        tokio::time::sleep(HOLD).await;
    }
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(api_key) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send the API key as `Authorization: Bearer <key>`.",
        ));
    }
    Ok(())
}

/// `GET|POST|DELETE /_sim/faults` over `faults`.
pub(crate) fn routes(config: &mut web::ServiceConfig, faults: SharedFaults) {
    config
        .app_data(web::Data::from(faults))
        .route("/_sim/faults", web::get().to(show))
        .route("/_sim/faults", web::post().to(update))
        .route("/_sim/faults", web::delete().to(reset));
}

async fn show(faults: web::Data<Mutex<Faults>>) -> HttpResponse {
    HttpResponse::Ok().json(lock(&faults).clone())
}

async fn update(faults: web::Data<Mutex<Faults>>, body: web::Bytes) -> HttpResponse {
    let update: FaultsUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_faults",
                &format!("Invalid faults: {e}"),
            )
        }
    };
    let mut faults = lock(&faults);
    faults.apply(update);
    tracing::info!(faults = ?*faults, "faults changed");
    HttpResponse::Ok().json(faults.clone())
}

async fn reset(faults: web::Data<Mutex<Faults>>) -> HttpResponse {
    let mut faults = lock(&faults);
    *faults = Faults::default();
    HttpResponse::Ok().json(faults.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_updates_keep_the_rest() {
        let mut faults = Faults::default();
        let update: FaultsUpdate =
            serde_json::from_str(r#"{"fail_next": 2, "webhooks": {"duplicate": 3}}"#)
                .unwrap_or_default();
        faults.apply(update);
        let update: FaultsUpdate =
            serde_json::from_str(r#"{"webhooks": {"pause": true}}"#).unwrap_or_default();
        faults.apply(update);
        assert_eq!(faults.webhooks.duplicate, 3);
        assert!(faults.webhooks.pause);
        assert!(faults.next_call().fail);
        assert!(faults.next_call().fail);
        assert!(!faults.next_call().fail);
    }

    #[test]
    fn an_outage_refuses_without_counting_down() {
        let mut faults = Faults {
            outage: true,
            fail_next: 1,
            ..Faults::default()
        };
        let call = faults.next_call();
        assert!(call.outage && !call.fail);
        faults.outage = false;
        assert!(faults.next_call().fail);
    }

    #[test]
    fn only_faults_in_force_are_listed() {
        assert!(Faults::default().active().is_empty());
        let mut faults = Faults {
            fail_next: 2,
            ..Faults::default()
        };
        faults.webhooks.pause = true;
        let names: Vec<&str> = faults.active().iter().map(|f| f.0).collect();
        assert_eq!(names, ["fail_next", "webhooks.pause"]);
    }
}
