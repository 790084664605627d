//! The `Idempotency-Key` header on `POST` requests, as Stripe handles it: the first response for
//! a key (scoped by method and path) is stored — status and body, declines included — and
//! replayed for the same parameters; other parameters get a 400 `idempotency_error`. A request
//! whose key is still being processed gets a 409 `idempotency_error` at once (Stripe's answer;
//! its client libraries retry a 409). Results that never reached the handler — validation of the
//! key itself, injected faults — are not stored, so a retry after a fault is processed afresh.
//! Keys are kept 24 hours, and at most `cap` of them (the oldest go first).

use super::errors::StripeError;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// How long a key is remembered, in seconds.
const KEY_LIFETIME: i64 = 24 * 60 * 60;
/// Longest key accepted, as at Stripe.
const MAX_KEY_LEN: usize = 255;

type Scope = (String, String, String);

enum Entry {
    InProgress {
        params: Value,
    },
    Done {
        params: Value,
        status: u16,
        body: Value,
    },
}

/// What to do with a request that carries a key.
pub(super) enum Claim {
    /// Process it, then [`Keys::finish`] with its result.
    Process,
    /// Send this stored response again.
    Replay { status: u16, body: Value },
}

pub(super) struct Keys {
    entries: HashMap<Scope, (i64, Entry)>,
    order: VecDeque<(i64, Scope)>,
    cap: usize,
}

impl Keys {
    pub(super) fn new(cap: usize) -> Keys {
        Keys {
            entries: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Looks a key up for a request about to be processed.
    pub(super) fn claim(
        &mut self,
        key: &str,
        method: &str,
        path: &str,
        params: &Value,
        now: i64,
    ) -> Result<Claim, StripeError> {
        self.forget_old(now);
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(StripeError::request(format!(
                "Invalid Idempotency-Key: it must be between 1 and {MAX_KEY_LEN} characters long."
            )));
        }
        let scope = (key.to_owned(), method.to_owned(), path.to_owned());
        match self.entries.get(&scope) {
            None => {
                self.entries.insert(
                    scope.clone(),
                    (
                        now,
                        Entry::InProgress {
                            params: params.clone(),
                        },
                    ),
                );
                self.order.push_back((now, scope));
                Ok(Claim::Process)
            }
            Some((_, Entry::InProgress { .. })) => Err(StripeError::idempotency(
                409,
                format!("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
            )),
            Some((_, Entry::Done { params: first, status, body })) => {
                if first != params {
                    return Err(StripeError::idempotency(
                        400,
                        format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                    ));
                }
                Ok(Claim::Replay {
                    status: *status,
                    body: body.clone(),
                })
            }
        }
    }

    /// Stores the result of a processed request. Validation errors (400) are not stored, as at
    /// Stripe: the key is released for a corrected request.
    pub(super) fn finish(
        &mut self,
        key: &str,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) {
        let scope = (key.to_owned(), method.to_owned(), path.to_owned());
        let Some((created, entry)) = self.entries.remove(&scope) else {
            return;
        };
        if status == 400 {
            return;
        }
        let params = match entry {
            Entry::InProgress { params } | Entry::Done { params, .. } => params,
        };
        self.entries.insert(
            scope,
            (
                created,
                Entry::Done {
                    params,
                    status,
                    body: body.clone(),
                },
            ),
        );
    }

    fn forget_old(&mut self, now: i64) {
        while let Some((created, scope)) = self.order.front() {
            let expired = *created + KEY_LIFETIME <= now;
            let stale = self
                .entries
                .get(scope)
                .is_none_or(|(stored, _)| stored != created);
            if !(expired || stale || self.order.len() > self.cap) {
                break;
            }
            if let Some((_, scope)) = self.order.pop_front() {
                if !stale {
                    self.entries.remove(&scope);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_parameters_replay_and_others_are_refused() {
        let mut keys = Keys::new(10);
        let params = json!({"amount": "100"});
        assert!(matches!(
            keys.claim("k", "POST", "/v1/payment_intents", &params, 0),
            Ok(Claim::Process)
        ));
        let in_progress = keys.claim("k", "POST", "/v1/payment_intents", &params, 0);
        assert_eq!(in_progress.err().map(|e| e.status), Some(409));
        keys.finish(
            "k",
            "POST",
            "/v1/payment_intents",
            200,
            &json!({"id": "pi_1"}),
        );
        match keys.claim("k", "POST", "/v1/payment_intents", &params, 1) {
            Ok(Claim::Replay { status, body }) => {
                assert_eq!((status, body), (200, json!({"id": "pi_1"})));
            }
            _ => panic!("expected a replay"),
        }
        let other = keys.claim(
            "k",
            "POST",
            "/v1/payment_intents",
            &json!({"amount": "1"}),
            1,
        );
        assert_eq!(
            other.err().map(|e| (e.status, e.kind)),
            Some((400, "idempotency_error"))
        );
        // Another endpoint is another scope; after 24 hours the key is new again.
        assert!(matches!(
            keys.claim("k", "POST", "/v1/refunds", &params, 1),
            Ok(Claim::Process)
        ));
        assert!(matches!(
            keys.claim(
                "k",
                "POST",
                "/v1/payment_intents",
                &json!({}),
                KEY_LIFETIME + 1
            ),
            Ok(Claim::Process)
        ));
    }

    #[test]
    fn validation_errors_release_the_key() {
        let mut keys = Keys::new(10);
        let params = json!({});
        assert!(keys.claim("k", "POST", "/p", &params, 0).is_ok());
        keys.finish("k", "POST", "/p", 400, &json!({}));
        assert!(matches!(
            keys.claim("k", "POST", "/p", &json!({"a": "1"}), 0),
            Ok(Claim::Process)
        ));
    }
}
