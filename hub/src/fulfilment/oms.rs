//! The OMS deliverer: `POST {base}/orders` with the order, idempotent at the OMS by order id;
//! the outbox message id travels as `X-Message-Id`.

use crate::config::OmsSettings;
use crate::outbox::{Deliverer, DeliveryError};
use async_trait::async_trait;
use protocol::OutboxMessage;
use secrecy::ExposeSecret;

/// The outbox destination of the OMS.
pub const DESTINATION: &str = "oms";

pub struct OmsDeliverer {
    http: reqwest::Client,
    base: String,
    key: secrecy::SecretString,
}

impl OmsDeliverer {
    pub fn new(settings: &OmsSettings) -> Result<OmsDeliverer, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("omnihub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OmsDeliverer {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            key: settings.api_key.clone(),
        })
    }
}

#[async_trait]
impl Deliverer for OmsDeliverer {
    fn destination(&self) -> &'static str {
        DESTINATION
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let path = match message.kind.as_str() {
            "order.placed" => "/orders".to_string(),
            "order.cancelled" => {
                let body: serde_json::Value = serde_json::from_str(&message.payload)
                    .map_err(|e| DeliveryError::Reject(format!("unreadable payload: {e}")))?;
                let id = body["order_id"].as_str().unwrap_or_default();
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(DeliveryError::Reject("no order id in the payload".into()));
                }
                format!("/orders/{id}/cancel")
            }
            other => {
                return Err(DeliveryError::Reject(format!(
                    "the OMS takes no message of kind {other}"
                )))
            }
        };
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose_secret())
            .header("X-Message-Id", message.id.to_string())
            .header("Content-Type", "application/json")
            .body(message.payload.clone())
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(format!("OMS unreachable: {e}")))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let body: String = res
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let reason = format!("OMS answered {status}: {body}");
        if status.is_client_error()
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
            && status != reqwest::StatusCode::UNAUTHORIZED
        {
            Err(DeliveryError::Reject(reason))
        } else {
            Err(DeliveryError::Retry(reason))
        }
    }
}
