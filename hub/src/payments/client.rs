//! The client of the payment provider: Stripe's API, using only documented fields, so it works
//! against the simulator and against real Stripe test mode alike.
//!
//! Requests are form-encoded with bracketed keys and carry the secret key as a bearer token.
//! Every write carries an `Idempotency-Key` derived from what it is for (a checkout and its
//! attempt, a refund of an order), so retrying after a timeout can never charge or refund twice.

use crate::config::PaymentSettings;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a provider call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error object (4xx): retrying the same request will not help.
    #[error("payment provider refused the request ({status} {kind}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Api {
        status: u16,
        kind: String,
        code: Option<String>,
        message: String,
    },
    /// The provider could not be reached or kept failing (timeouts, 5xx) after the retries.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

impl ProviderError {
    /// A 4xx whose error code is `code`.
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, ProviderError::Api { code: Some(c), .. } if c == code)
    }

    /// The provider does not know the object (a 404, `resource_missing`).
    pub fn is_missing(&self) -> bool {
        matches!(self, ProviderError::Api { status: 404, .. }) || self.has_code("resource_missing")
    }
}

/// A Checkout Session, as much of it as the hub reads (also sent between hub nodes).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Session {
    pub id: String,
    #[serde(default)]
    pub url: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds after which it can no longer be paid.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl Session {
    pub fn is_paid(&self) -> bool {
        self.status == "complete" && self.payment_status == "paid"
    }
}

/// A PaymentIntent, as much of it as the hub reads.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    /// `requires_capture` once a manual-capture intent is authorised, `succeeded` once
    /// captured, `canceled`, …
    pub status: String,
    pub amount: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A card payment taken at a store's till, to authorise (`capture_method=manual`).
#[derive(Debug, Clone)]
pub struct NewCardPayment {
    pub amount: i64,
    /// ISO 4217, any case (sent in lower case).
    pub currency: String,
    /// The terminal's token: a provider PaymentMethod id.
    pub payment_method: String,
    pub metadata: Vec<(String, String)>,
    pub idempotency_key: String,
}

/// A refund.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub status: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// One line shown on the provider's payment page.
#[derive(Debug, Clone)]
pub struct PageLine {
    pub name: String,
    pub unit_amount: i64,
    pub quantity: u32,
}

/// What a new Checkout Session is for.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub checkout_id: String,
    pub basket_id: String,
    pub currency: String,
    pub lines: Vec<PageLine>,
    pub email: String,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: i64,
    pub idempotency_key: String,
}

/// The provider client. Cheap to clone.
#[derive(Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    base: String,
    key: secrecy::SecretString,
    retries: u32,
}

impl PaymentClient {
    pub fn new(settings: &PaymentSettings) -> Result<PaymentClient, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("omnihub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        Ok(PaymentClient {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            key: settings.secret_key.clone(),
            retries: settings.retries,
        })
    }

    /// Creates a Checkout Session (mode `payment`) for a frozen checkout.
    pub async fn create_session(&self, s: &NewSession) -> Result<Session, ProviderError> {
        let mut form: Vec<(String, String)> = vec![
            ("mode".into(), "payment".into()),
            ("success_url".into(), s.success_url.clone()),
            ("cancel_url".into(), s.cancel_url.clone()),
            ("client_reference_id".into(), s.checkout_id.clone()),
            ("customer_email".into(), s.email.clone()),
            ("expires_at".into(), s.expires_at.to_string()),
            ("metadata[checkout_id]".into(), s.checkout_id.clone()),
            ("metadata[basket_id]".into(), s.basket_id.clone()),
            (
                "payment_intent_data[metadata][checkout_id]".into(),
                s.checkout_id.clone(),
            ),
        ];
        for (i, line) in s.lines.iter().enumerate() {
            let p = format!("line_items[{i}]");
            form.push((format!("{p}[quantity]"), line.quantity.to_string()));
            form.push((format!("{p}[price_data][currency]"), s.currency.clone()));
            form.push((
                format!("{p}[price_data][unit_amount]"),
                line.unit_amount.to_string(),
            ));
            form.push((
                format!("{p}[price_data][product_data][name]"),
                line.name.clone(),
            ));
        }
        self.send(
            reqwest::Method::POST,
            "/v1/checkout/sessions",
            Some(&form),
            Some(&s.idempotency_key),
        )
        .await
    }

    pub async fn session(&self, id: &str) -> Result<Session, ProviderError> {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/checkout/sessions/{}", path_part(id)),
            None,
            None,
        )
        .await
    }

    /// Expires an open session so it can no longer be paid. A session that is already complete
    /// answers with an error; the caller then reads it.
    pub async fn expire_session(&self, id: &str) -> Result<Session, ProviderError> {
        // Expiring is idempotent by nature: no key, so a stored error is never replayed.
        self.send(
            reqwest::Method::POST,
            &format!("/v1/checkout/sessions/{}/expire", path_part(id)),
            Some(&[]),
            None,
        )
        .await
    }

    /// Creates and confirms a PaymentIntent with `capture_method=manual` for a card read at a
    /// store's terminal: authorised (`requires_capture`), or a 402 decline as
    /// [`ProviderError::Api`].
    pub async fn authorize_card(&self, p: &NewCardPayment) -> Result<PaymentIntent, ProviderError> {
        let mut form: Vec<(String, String)> = vec![
            ("amount".into(), p.amount.to_string()),
            ("currency".into(), p.currency.to_ascii_lowercase()),
            ("payment_method".into(), p.payment_method.clone()),
            ("capture_method".into(), "manual".into()),
            ("confirm".into(), "true".into()),
        ];
        for (k, v) in &p.metadata {
            form.push((format!("metadata[{k}]"), v.clone()));
        }
        self.send(
            reqwest::Method::POST,
            "/v1/payment_intents",
            Some(&form),
            Some(&p.idempotency_key),
        )
        .await
    }

    pub async fn payment_intent(&self, id: &str) -> Result<PaymentIntent, ProviderError> {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/payment_intents/{}", path_part(id)),
            None,
            None,
        )
        .await
    }

    /// Captures an authorised PaymentIntent in full.
    pub async fn capture_intent(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, ProviderError> {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/payment_intents/{}/capture", path_part(id)),
            Some(&[]),
            Some(idempotency_key),
        )
        .await
    }

    /// Cancels a PaymentIntent not captured (the authorisation is released).
    pub async fn cancel_intent(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, ProviderError> {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/payment_intents/{}/cancel", path_part(id)),
            Some(&[]),
            Some(idempotency_key),
        )
        .await
    }

    /// Refunds `amount` (minor units) of a payment.
    pub async fn refund(
        &self,
        payment_intent: &str,
        amount: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Refund, ProviderError> {
        let form = vec![
            ("payment_intent".to_string(), payment_intent.to_string()),
            ("amount".to_string(), amount.to_string()),
            ("metadata[reason]".to_string(), reason.to_string()),
        ];
        self.send(
            reqwest::Method::POST,
            "/v1/refunds",
            Some(&form),
            Some(idempotency_key),
        )
        .await
    }

    /// Sends a request, retrying what is safe to retry (network errors, timeouts, 429, 5xx)
    /// with the same idempotency key, with exponential backoff and jitter.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<&[(String, String)]>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{}", self.base, path);
        let operation = operation_of(path);
        let count = |outcome: &str| {
            crate::monitor::metrics::metrics()
                .payment_calls
                .with_label_values(&[operation, outcome])
                .inc();
        };
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose_secret());
            if let Some(form) = form {
                request = request.form(form);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await;
                    match body {
                        Ok(body) if status.is_success() => {
                            count("ok");
                            return serde_json::from_slice(&body).map_err(|e| {
                                ProviderError::Unavailable(format!(
                                    "unreadable answer from {path}: {e}"
                                ))
                            });
                        }
                        Ok(body)
                            if status.is_client_error()
                                && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                        {
                            count("refused");
                            return Err(api_error(status.as_u16(), &body));
                        }
                        Ok(_) => format!("{path} answered {status}"),
                        Err(e) => format!("{path}: {e}"),
                    }
                }
                Err(e) => format!("{path}: {e}"),
            };
            if attempt >= self.retries {
                count("unavailable");
                return Err(ProviderError::Unavailable(outcome));
            }
            tracing::warn!(attempt, reason = %outcome, "payment provider call failed; retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// The provider operation a path belongs to, for the metrics (never the ids in it).
fn operation_of(path: &str) -> &'static str {
    if path.starts_with("/v1/checkout/sessions") {
        "checkout_session"
    } else if path.starts_with("/v1/payment_intents") {
        "payment_intent"
    } else if path.starts_with("/v1/refunds") {
        "refund"
    } else {
        "other"
    }
}

fn api_error(status: u16, body: &[u8]) -> ProviderError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ProviderError::Api {
            status,
            kind: b.error.kind,
            code: b.error.code,
            message: b.error.message.unwrap_or_default(),
        },
        Err(_) => ProviderError::Api {
            status,
            kind: "unknown".into(),
            code: None,
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

/// 100 ms, 400 ms, 1.6 s, … with up to 50 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(4u64.saturating_pow(attempt.min(6)));
    let mut b = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut b) {
        Ok(()) => u64::from(u16::from_le_bytes(b)) % (base / 2 + 1),
        Err(_) => 0,
    };
    Duration::from_millis(base + jitter)
}

/// An id as one path segment (provider ids are `[A-Za-z0-9_]`; anything else is escaped).
fn path_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xff)
            }
        })
        .collect()
}
