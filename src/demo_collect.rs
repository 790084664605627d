//! `omnihub demo`: one paid click-and-collect order for a demo store, placed the way a guest
//! shopper places it (basket, checkout with *Collect in store*, the card typed on the payment
//! simulator's hosted page), so the store's till has an order on its "Click & collect" screen.
//! Placed once per data directory: a restart finds the order and leaves it as it is.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Who collects the demo's pickup order (a guest: the order confirmation and the "ready for
/// pickup" mail go to the mail sink).
const SHOPPER_EMAIL: &str = "clara.collect@example.com";
const SHOPPER_NAME: &str = "Clara Collect";
/// How long the store's stock may take to reach the hub as rights it can promise.
const RIGHTS_WAIT: Duration = Duration::from_secs(60);

/// Where the demo's pickup order goes and who is asked on the way.
pub struct PickupDemo<'a> {
    pub hub: &'a str,
    pub admin_token: &'a str,
    /// The store's node API and its bearer token.
    pub store: &'a str,
    pub store_token: &'a str,
    /// The store's location id (`store-berlin`).
    pub location: &'a str,
}

impl PickupDemo<'_> {
    /// The number of the demo's pickup order: the one placed at an earlier start, or a new one,
    /// paid, once the hub holds rights at the store.
    pub fn ensure_order(&self) -> anyhow::Result<String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            // The hosted payment page answers a good card with a redirect to the shop.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        if let Some(number) = self.placed_before(&client)? {
            return Ok(number);
        }
        let sku = self.promisable_sku(&client)?;
        let (basket, token) = self.basket(&client, &sku)?;
        self.wait_for_pickup_option(&client, &basket, &token)?;
        let checkout: Value = client
            .post(format!("{}/api/v1/baskets/{basket}/checkout", self.hub))
            .header("X-Basket-Token", &token)
            .json(&json!({
                "email": SHOPPER_EMAIL,
                "address": {"name": SHOPPER_NAME},
                "shipping_method": self.method(),
            }))
            .send()
            .map_err(anyhow::Error::from)
            .and_then(answer)
            .context("checking out for pickup")?;
        let payment_url = checkout["payment_url"]
            .as_str()
            .context("the checkout has no payment page")?;
        let paid = client
            .post(payment_url)
            .form(&[
                ("card_number", "4242 4242 4242 4242"),
                ("card_expiry", "12 / 34"),
                ("card_cvc", "123"),
                ("cardholder_name", SHOPPER_NAME),
            ])
            .send()?;
        if !paid.status().is_redirection() {
            bail!(
                "the payment page did not accept the test card ({})",
                paid.status()
            );
        }
        let id = checkout["id"].as_str().context("a checkout id")?;
        self.wait_paid(&client, id, &token)
    }

    fn method(&self) -> String {
        format!("collect:{}", self.location)
    }

    /// The number of an order the demo placed at this store before, if any (newest first).
    fn placed_before(&self, client: &reqwest::blocking::Client) -> anyhow::Result<Option<String>> {
        let mut before: Option<String> = None;
        loop {
            let mut url = format!("{}/api/v1/admin/orders?limit=200", self.hub);
            if let Some(b) = &before {
                url.push_str(&format!("&before={b}"));
            }
            let page: Value = client
                .get(url)
                .bearer_auth(self.admin_token)
                .send()
                .map_err(anyhow::Error::from)
                .and_then(answer)?;
            let orders = page["orders"].as_array().cloned().unwrap_or_default();
            let ours = orders
                .iter()
                .find(|o| o["email"] == SHOPPER_EMAIL && o["pickup"]["location"] == self.location);
            if let Some(o) = ours {
                return Ok(o["number"].as_str().map(str::to_string));
            }
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_string()),
                None => return Ok(None),
            }
        }
    }

    /// The SKU of which the hub holds the most rights at the store, as the node sees it, once
    /// it holds any (the node grants them after the opening delivery).
    fn promisable_sku(&self, client: &reqwest::blocking::Client) -> anyhow::Result<String> {
        let deadline = Instant::now() + RIGHTS_WAIT;
        loop {
            let stock: Value = client
                .get(format!("{}/api/v1/stock", self.store))
                .bearer_auth(self.store_token)
                .send()
                .map_err(anyhow::Error::from)
                .and_then(answer)?;
            let best = stock["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["hub_rights"].as_u64().is_some_and(|r| r > 0))
                .max_by_key(|i| i["hub_rights"].as_u64());
            if let Some(sku) = best.and_then(|i| i["sku"].as_str()) {
                return Ok(sku.to_string());
            }
            if Instant::now() > deadline {
                bail!("the store granted the hub no stock to promise within {RIGHTS_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A guest basket with one unit of `sku`: (id, token).
    fn basket(
        &self,
        client: &reqwest::blocking::Client,
        sku: &str,
    ) -> anyhow::Result<(String, String)> {
        let created: Value = client
            .post(format!("{}/api/v1/baskets", self.hub))
            .send()
            .map_err(anyhow::Error::from)
            .and_then(answer)?;
        let id = created["id"].as_str().context("a basket id")?.to_string();
        let token = created["token"]
            .as_str()
            .context("a basket token")?
            .to_string();
        client
            .post(format!("{}/api/v1/baskets/{id}/lines", self.hub))
            .header("X-Basket-Token", &token)
            .json(&json!({"sku": sku, "quantity": 1}))
            .send()
            .map_err(anyhow::Error::from)
            .and_then(answer)
            .with_context(|| format!("adding {sku} to the pickup basket"))?;
        Ok((id, token))
    }

    /// Waits until the hub offers the store as a pickup option for the basket (the node's
    /// grant has reached the hub).
    fn wait_for_pickup_option(
        &self,
        client: &reqwest::blocking::Client,
        basket: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let method = self.method();
        let deadline = Instant::now() + RIGHTS_WAIT;
        loop {
            let quote: Value = client
                .get(format!(
                    "{}/api/v1/baskets/{basket}/quote?country=DE",
                    self.hub
                ))
                .header("X-Basket-Token", token)
                .send()
                .map_err(anyhow::Error::from)
                .and_then(answer)?;
            let offered = quote["shipping_options"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["id"] == method.as_str());
            if offered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the hub did not offer {method} within {RIGHTS_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for the provider's webhook to turn the checkout into an order: its number.
    fn wait_paid(
        &self,
        client: &reqwest::blocking::Client,
        checkout: &str,
        token: &str,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen: Value = client
                .get(format!("{}/api/v1/checkouts/{checkout}", self.hub))
                .header("X-Basket-Token", token)
                .send()
                .map_err(anyhow::Error::from)
                .and_then(answer)?;
            if seen["state"] == "paid" {
                if let Some(number) = seen["order"]["number"].as_str() {
                    return Ok(number.to_string());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the pickup checkout was not paid within 30 s (state {})",
                    seen["state"]
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A JSON answer, or an error that says what the server refused and why.
fn answer(res: reqwest::blocking::Response) -> anyhow::Result<Value> {
    let status = res.status();
    let url = res.url().path().to_string();
    let body: Value = res.json().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status}: {}", body["error"]["message"]);
    }
    Ok(body)
}

/// The banner's line about the demo's pickup order at `store_name` (the node serves the till's
/// pages too); why there is none when it could not be placed (the rest of the demo runs on).
pub fn banner_line(demo: &PickupDemo<'_>, store_name: &str) -> String {
    match demo.ensure_order() {
        Ok(number) => format!(
            "{number} (paid by {SHOPPER_NAME}) to pick and hand over at {store_name}: {}/pos/collect",
            demo.store
        ),
        Err(e) => {
            eprintln!("the demo's click-and-collect order could not be placed: {e:#}");
            format!("no demo pickup order at {store_name} ({e}); check out with \"Collect in store\" yourself")
        }
    }
}
