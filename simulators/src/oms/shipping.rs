//! Asking the logistics simulator for shipments: `POST {logistics}/shipments`, idempotent by
//! the OMS's shipment id (`reference`), so a call retried after a lost answer gets the same
//! tracking number. While the logistics simulator is unreachable or failing, the shipment waits
//! and is asked for again a simulated second later; at most [`IN_FLIGHT`] calls run at once.

use super::book::{ShipJob, Tracking};
use super::{lock, OmsConfig, Shared};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Shipping calls in flight at once.
const IN_FLIGHT: usize = 32;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Logistics {
    client: reqwest::Client,
    url: String,
    api_key: String,
    slots: Arc<Semaphore>,
}

impl Logistics {
    pub(super) fn new(config: &OmsConfig) -> Result<Logistics, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .user_agent("omnihub-sim-oms")
            .build()?;
        Ok(Logistics {
            client,
            url: format!("{}/shipments", config.logistics_url.trim_end_matches('/')),
            api_key: config.logistics_api_key.clone(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        })
    }

    async fn create(&self, job: &ShipJob) -> Result<Tracking, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&job.body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the logistics simulator answered {status}"));
        }
        response.json().await.map_err(|e| e.to_string())
    }
}

/// Ships one shipment: on success records its tracking and publishes `order.shipped`; on
/// failure schedules another try.
pub(super) async fn ship(shared: Arc<Shared>, job: ShipJob) {
    match shared.logistics.create(&job).await {
        Ok(tracking) => {
            let mut book = lock(&shared.book);
            let now = shared.clock.unix();
            if let Some(event) = book.shipped(&job.order_id, &job.shipment_id, tracking, now) {
                debug!(order_id = %job.order_id, "shipment shipped");
                shared.webhooks.publish(event);
            }
        }
        Err(error) => {
            warn!(order_id = %job.order_id, %error, "no shipment from the logistics simulator; retrying");
            lock(&shared.book).retry_shipping(&job, shared.clock.now_ms());
        }
    }
}
