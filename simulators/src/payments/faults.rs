//! Faults injected on demand through `/_sim/faults`: slow, failing and hanging `/v1` calls, and
//! duplicated, delayed, reordered, dropped or held-back webhooks. They apply to `/v1/*` calls
//! and webhook deliveries only — never to `/_sim/*` or the hosted payment page.

use crate::common::faults::{
    next_call, set, CallFault, HasWebhookFaults, WebhookFaults, WebhookFaultsUpdate,
};
use serde::{Deserialize, Serialize};

/// The faults in force; `GET /_sim/faults` shows them, `DELETE /_sim/faults` resets them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct Faults {
    /// Added to every `/v1` call, in milliseconds.
    pub latency_ms: u64,
    /// The next this-many `/v1` calls are answered 500 `api_error` without being processed.
    pub fail_next: u64,
    /// The next this-many `/v1` calls are held for [`crate::common::faults::HOLD`] before being
    /// processed, so a client's timeout fires first.
    pub timeout_next: u64,
    pub webhooks: WebhookFaults,
}

/// A partial update from `POST /_sim/faults`: absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultsUpdate {
    latency_ms: Option<u64>,
    fail_next: Option<u64>,
    timeout_next: Option<u64>,
    webhooks: Option<WebhookFaultsUpdate>,
}

impl Faults {
    pub(super) fn apply(&mut self, update: FaultsUpdate) {
        let FaultsUpdate {
            latency_ms,
            fail_next,
            timeout_next,
            webhooks,
        } = update;
        set(&mut self.latency_ms, latency_ms);
        set(&mut self.fail_next, fail_next);
        set(&mut self.timeout_next, timeout_next);
        if let Some(w) = webhooks {
            self.webhooks.apply(w);
        }
    }

    /// Takes the faults for the next `/v1` call (counting down `fail_next` and `timeout_next`;
    /// there is no outage here).
    pub(super) fn next_call(&mut self) -> CallFault {
        next_call(
            self.latency_ms,
            false,
            &mut self.fail_next,
            &mut self.timeout_next,
        )
    }
}

impl HasWebhookFaults for Faults {
    fn webhook_faults(&mut self) -> &mut WebhookFaults {
        &mut self.webhooks
    }
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
}
