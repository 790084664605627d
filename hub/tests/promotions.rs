//! Baskets, quotes and checkouts priced with the live promotions and coupons, through the
//! shopper API of a real hub on port 0. Promotions and coupons are made the way a business user
//! makes them (back-office API, four-eyes approval); payments go through the payment simulator,
//! running in this process, and the success redirect (`/confirm`), which asks the provider.

mod common;

use common::{client, spawn_with, TestHub};
use hub::clock::SystemClock;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use simulators::payments::{PaymentSim, PaymentsConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

const ADMIN: &str = "promotions-admin-token";
const VISA: &str = "4242424242424242";
/// The test catalog's reduced VAT rate (every product) and the standard rate (shipping).
const REDUCED: i64 = 700;
const STANDARD: i64 = 1900;

fn eur(minor: i64) -> Value {
    json!({"minor": minor, "currency": "EUR"})
}

/// Who asks for a basket: a guest with the basket's token, or a signed-in customer.
#[derive(Clone, Debug)]
enum Who {
    Guest(String),
    Customer(String),
}

/// Which channel a request names (`X-Channel`); `None` sends no header.
type Via<'a> = Option<&'a str>;

struct Shop {
    hub: TestHub,
    sim: PaymentSim,
    c: reqwest::Client,
    /// A merchandiser and marketer (writes promotions and coupons, exports codes).
    author: String,
    /// An approver (approves the author's promotions).
    approver: String,
}

impl Shop {
    async fn start() -> Shop {
        Shop::start_with(|_| {}).await
    }

    /// A hub wired to an in-process payment simulator, with the common test catalog (BEANS
    /// 12.99, TEA 4.50; both at the reduced rate) and two back-office users.
    async fn start_with(tune: impl FnOnce(&mut hub::HubSettings)) -> Shop {
        let sim = PaymentSim::start(PaymentsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..PaymentsConfig::default()
        })
        .await
        .expect("the payment simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = common::settings(dir.path());
        s.admin_token = Some(ADMIN.to_string().into());
        s.payments.base_url = sim.base_url();
        tune(&mut s);
        let hub = spawn_with(dir, s, Arc::new(SystemClock), true).await;
        let c = client();
        let author = user_with_token(
            &hub,
            &c,
            "author@example.com",
            &["merchandiser", "marketer"],
        )
        .await;
        let approver = user_with_token(&hub, &c, "approver@example.com", &["approver"]).await;
        Shop {
            hub,
            sim,
            c,
            author,
            approver,
        }
    }

    fn url(&self, path: &str) -> String {
        self.hub.url(path)
    }

    /// Creates a promotion as the author: a draft, not live yet.
    async fn draft(&self, id: &str, name: &str, spec: Value) {
        let (status, body) = send(
            self.c
                .post(self.url("/api/v1/backoffice/promotions"))
                .bearer_auth(&self.author)
                .json(&json!({"id": id, "name": name, "spec": spec})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "create {id}: {body}");
    }

    async fn approve(&self, id: &str) {
        let (status, body) = send(
            self.c
                .post(self.url(&format!("/api/v1/backoffice/promotions/{id}/approve")))
                .bearer_auth(&self.approver),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "approve {id}: {body}");
        assert_eq!(body["status"], "active", "{body}");
    }

    /// Creates and approves a promotion: it is live.
    async fn promotion(&self, id: &str, name: &str, spec: Value) {
        self.draft(id, name, spec).await;
        self.approve(id).await;
    }

    /// A public coupon code for a promotion.
    async fn coupon(&self, promotion: &str, code: &str) {
        let (status, body) = send(
            self.c
                .post(self.url(&format!(
                    "/api/v1/backoffice/promotions/{promotion}/coupons"
                )))
                .bearer_auth(&self.author)
                .json(&json!({"code": code})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "coupon {code}: {body}");
    }

    /// A public coupon code for a promotion, with limits (`max_uses`, `max_uses_per_customer`).
    async fn limited_coupon(&self, promotion: &str, code: &str, limits: Value) {
        let mut body = json!({"code": code});
        if let (Value::Object(body), Value::Object(limits)) = (&mut body, limits) {
            body.extend(limits);
        }
        let (status, body) = send(
            self.c
                .post(self.url(&format!(
                    "/api/v1/backoffice/promotions/{promotion}/coupons"
                )))
                .bearer_auth(&self.author)
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "coupon {code}: {body}");
    }

    /// A batch of single-use codes for a promotion; answers the link of its CSV export and the
    /// codes in it.
    async fn batch(&self, promotion: &str, count: u32) -> (String, Vec<String>) {
        let (status, batch) = send(
            self.c
                .post(self.url(&format!(
                    "/api/v1/backoffice/promotions/{promotion}/coupon-batches"
                )))
                .bearer_auth(&self.author)
                .json(&json!({"count": count, "prefix": "ONCE-"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "batch: {batch}");
        let csv = batch["csv"].as_str().expect("csv link").to_string();
        let codes = self.exported(&csv).await.into_keys().collect();
        (csv, codes)
    }

    /// A batch export: code → used.
    async fn exported(&self, csv: &str) -> BTreeMap<String, bool> {
        let res = self
            .c
            .get(self.url(csv))
            .bearer_auth(&self.author)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.expect("csv");
        text.lines()
            .skip(1)
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields[0].to_string(), fields[4] == "true")
            })
            .collect()
    }

    fn as_(&self, rb: RequestBuilder, who: &Who, via: Via<'_>) -> RequestBuilder {
        let rb = match who {
            Who::Guest(token) => rb.header("X-Basket-Token", token),
            Who::Customer(session) => rb.bearer_auth(session),
        };
        match via {
            Some(channel) => rb.header("X-Channel", channel),
            None => rb,
        }
    }

    /// A new guest basket (made on the web) with these lines, added on `via`.
    async fn guest_basket(&self, lines: &[(&str, i64)], via: Via<'_>) -> (String, Who) {
        let (status, created) = send(
            self.c
                .post(self.url("/api/v1/baskets"))
                .header("X-Channel", "web"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().expect("id").to_string();
        let who = Who::Guest(created["token"].as_str().expect("token").to_string());
        for (sku, quantity) in lines {
            self.add(&id, &who, via, sku, *quantity).await;
        }
        (id, who)
    }

    /// Adds units of a SKU; answers the basket.
    async fn add(&self, id: &str, who: &Who, via: Via<'_>, sku: &str, quantity: i64) -> Value {
        let rb = self
            .c
            .post(self.url(&format!("/api/v1/baskets/{id}/lines")))
            .json(&json!({"sku": sku, "quantity": quantity}));
        let (status, body) = send(self.as_(rb, who, via)).await;
        assert_eq!(status, StatusCode::OK, "add {sku}: {body}");
        body
    }

    async fn basket(&self, id: &str, who: &Who) -> Value {
        let rb = self.c.get(self.url(&format!("/api/v1/baskets/{id}")));
        let (status, body) = send(self.as_(rb, who, None)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The basket page (HTML) as the guest's browser sees it.
    async fn page(&self, who: &Who) -> String {
        let Who::Guest(token) = who else {
            panic!("the page test uses a guest's basket cookie");
        };
        let res = self
            .c
            .get(self.url("/basket"))
            .header("Cookie", format!("omnihub_basket={token}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.expect("html")
    }

    /// Enters a coupon code: the status, the body and the `Retry-After` header.
    async fn enter(&self, id: &str, who: &Who, code: &str) -> (StatusCode, Value, Option<u64>) {
        self.enter_from(id, who, code, None).await
    }

    async fn enter_from(
        &self,
        id: &str,
        who: &Who,
        code: &str,
        forwarded_for: Option<&str>,
    ) -> (StatusCode, Value, Option<u64>) {
        let mut rb = self
            .c
            .post(self.url(&format!("/api/v1/baskets/{id}/coupons")))
            .json(&json!({"code": code}));
        if let Some(ip) = forwarded_for {
            rb = rb.header("X-Forwarded-For", ip);
        }
        let res = self.as_(rb, who, None).send().await.expect("sent");
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (status, res.json().await.expect("a JSON body"), retry_after)
    }

    /// The quote to Germany with standard shipping, as asked on `via`.
    async fn quote(&self, id: &str, who: &Who, via: Via<'_>) -> Value {
        let rb = self.c.get(self.url(&format!(
            "/api/v1/baskets/{id}/quote?country=DE&shipping_method=standard"
        )));
        let (status, body) = send(self.as_(rb, who, via)).await;
        assert_eq!(status, StatusCode::OK, "quote: {body}");
        body["breakdown"].clone()
    }

    /// Starts a checkout to Berlin with standard shipping; it must succeed.
    async fn checkout(&self, id: &str, who: &Who, via: Via<'_>) -> Value {
        let (status, checkout) = self.try_checkout(id, who, via, "standard").await;
        assert_eq!(status, StatusCode::CREATED, "checkout: {checkout}");
        assert_eq!(checkout["state"], "payment_pending");
        checkout
    }

    /// Asks for a checkout to Berlin by `method`: the status and the body.
    async fn try_checkout(
        &self,
        id: &str,
        who: &Who,
        via: Via<'_>,
        method: &str,
    ) -> (StatusCode, Value) {
        let mut body = json!({
            "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
            "shipping_method": method,
        });
        if let Who::Guest(_) = who {
            body["email"] = json!("guest@example.com");
        }
        let rb = self
            .c
            .post(self.url(&format!("/api/v1/baskets/{id}/checkout")))
            .json(&body);
        send(self.as_(rb, who, via)).await
    }

    /// Cancels a pending checkout as its shopper; answers the checkout.
    async fn cancel(&self, checkout: &Value, who: &Who) -> Value {
        let id = checkout["id"].as_str().expect("checkout id");
        let rb = self
            .c
            .post(self.url(&format!("/api/v1/checkouts/{id}/cancel")));
        let (status, body) = send(self.as_(rb, who, None)).await;
        assert_eq!(status, StatusCode::OK, "cancel: {body}");
        body
    }

    /// Units of a SKU the shop can still promise online (product detail by slug).
    async fn available(&self, slug: &str) -> i64 {
        let (status, body) = send(self.c.get(self.url(&format!("/api/v1/products/{slug}")))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["variants"][0]["available"]
            .as_i64()
            .unwrap_or_else(|| panic!("no availability: {body}"))
    }

    /// The provider's session of a checkout.
    async fn session(&self, checkout: &Value) -> Value {
        let url = checkout["payment_url"].as_str().expect("payment_url");
        let session = url.rsplit('/').next().expect("a session id");
        let (status, body) = send(
            self.c
                .get(format!(
                    "{}/v1/checkout/sessions/{session}",
                    self.sim.base_url()
                ))
                .bearer_auth("sk_test_omnihub"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Pays a checkout with the simulator's success card, then comes back from the payment
    /// page; answers the checkout, paid.
    async fn pay(&self, checkout: &Value, who: &Who) -> Value {
        let session = self.session(checkout).await;
        let id = session["id"].as_str().expect("session id");
        let (status, body) = send(
            self.c
                .post(format!(
                    "{}/_sim/checkout/sessions/{id}/pay",
                    self.sim.base_url()
                ))
                .json(&json!({"card": VISA})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "pay: {body}");
        let checkout_id = checkout["id"].as_str().expect("checkout id");
        let rb = self
            .c
            .post(self.url(&format!("/api/v1/checkouts/{checkout_id}/confirm")));
        let (status, done) = send(self.as_(rb, who, None)).await;
        assert_eq!(status, StatusCode::OK, "confirm: {done}");
        assert_eq!(done["state"], "paid", "{done}");
        done
    }
}

/// Creates a back-office user with the admin token and issues it a token.
async fn user_with_token(
    hub: &TestHub,
    c: &reqwest::Client,
    email: &str,
    roles: &[&str],
) -> String {
    let (status, user) = send(
        c.post(hub.url("/api/v1/admin/users"))
            .bearer_auth(ADMIN)
            .json(&json!({"email": email, "name": "Tester", "roles": roles})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_str().expect("id");
    let (status, token) = send(
        c.post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "tests"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().expect("token").to_string()
}

async fn send(rb: RequestBuilder) -> (StatusCode, Value) {
    let res = rb.send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

fn minor(v: &Value) -> i64 {
    v["minor"]
        .as_i64()
        .unwrap_or_else(|| panic!("not money: {v}"))
}

/// The tax in a tax-inclusive gross amount, rounded half up (amounts here are positive).
fn included_tax(gross: i64, rate_bp: i64) -> i64 {
    let denominator = 10_000 + rate_bp;
    (2 * gross * rate_bp + denominator) / (2 * denominator)
}

/// Discount per SKU of a basket's or a breakdown's lines.
fn discounts(lines: &Value) -> BTreeMap<String, i64> {
    lines
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku").to_string(),
                minor(&l["discount"]),
            )
        })
        .collect()
}

/// Tax per rate: rate → (gross, tax).
fn taxes(taxes: &Value) -> BTreeMap<i64, (i64, i64)> {
    taxes
        .as_array()
        .expect("taxes")
        .iter()
        .map(|t| {
            (
                t["rate_bp"].as_i64().expect("rate"),
                (minor(&t["gross"]), minor(&t["tax"])),
            )
        })
        .collect()
}

/// A basket's figures add up: the discount is the sum of the line discounts (and of the
/// applied promotions' amounts), the total is the subtotal less the discount, and each rate's
/// tax is taken on its lines after their discounts.
fn assert_adds_up(basket: &Value) {
    let lines = basket["lines"].as_array().expect("lines");
    let subtotal: i64 = lines.iter().map(|l| minor(&l["line_total"])).sum();
    let discount: i64 = lines.iter().map(|l| minor(&l["discount"])).sum();
    assert_eq!(minor(&basket["subtotal"]), subtotal, "{basket}");
    assert_eq!(minor(&basket["discount"]), discount, "{basket}");
    assert_eq!(minor(&basket["total"]), subtotal - discount, "{basket}");
    let applied: i64 = basket["promotions"]["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| minor(&a["amount"]))
        .sum();
    assert_eq!(applied, discount, "the promotions' amounts: {basket}");
    let mut by_rate: BTreeMap<i64, i64> = BTreeMap::new();
    for l in lines {
        *by_rate
            .entry(l["tax_rate_bp"].as_i64().expect("rate"))
            .or_default() += minor(&l["line_total"]) - minor(&l["discount"]);
    }
    let expected: BTreeMap<i64, (i64, i64)> = by_rate
        .into_iter()
        .map(|(rate, gross)| (rate, (gross, included_tax(gross, rate))))
        .collect();
    assert_eq!(taxes(&basket["taxes"]), expected, "{basket}");
}

fn applied_ids(basket: &Value) -> Vec<&str> {
    basket["promotions"]["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect()
}

/// Why promotion `id` did not apply, if it is among the basket's `not_applied`.
fn not_applied_reason<'a>(basket: &'a Value, id: &str) -> Option<&'a str> {
    basket["promotions"]["not_applied"]
        .as_array()
        .expect("not_applied")
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["reason"].as_str())
}

fn coupon_status<'a>(basket: &'a Value, code: &str) -> Option<&'a Value> {
    basket["coupons"]
        .as_array()
        .expect("coupons")
        .iter()
        .find(|c| c["code"] == code)
}

#[actix_web::test]
async fn a_basket_promotion_applies_over_its_threshold_with_discounted_lines_and_tax() {
    let shop = Shop::start().await;
    shop.draft(
        "TENOFF",
        "10 % off from 30 euros",
        json!({
            "conditions": [{"type": "min_subtotal", "amount": eur(3000)}],
            "benefit": {"type": "percent_off_basket", "percent_bp": 1000},
        }),
    )
    .await;
    let (id, who) = shop
        .guest_basket(&[("BEANS", 2), ("TEA", 1)], Some("web"))
        .await;

    // A draft prices nothing.
    let b = shop.basket(&id, &who).await;
    assert_eq!(minor(&b["discount"]), 0, "{b}");
    assert!(applied_ids(&b).is_empty() && not_applied_reason(&b, "TENOFF").is_none());

    // Approved, it is live: the next read prices with it.
    shop.approve("TENOFF").await;
    let b = shop.basket(&id, &who).await;
    assert_adds_up(&b);
    assert_eq!(minor(&b["subtotal"]), 2 * 1299 + 450);
    // 10 % of 30.48 is 3.048, rounded to 3.05, spread by the lines' weight: 2.60 and 0.45.
    assert_eq!(
        b["promotions"]["applied"],
        json!([{"id": "TENOFF", "name": "10 % off from 30 euros", "amount": eur(305), "times": 1}])
    );
    assert_eq!(
        discounts(&b["lines"]),
        BTreeMap::from([("BEANS".to_string(), 260), ("TEA".to_string(), 45)])
    );
    assert_eq!(minor(&b["discount"]), 305);
    assert_eq!(minor(&b["total"]), 2743);
    assert_eq!(taxes(&b["taxes"]), BTreeMap::from([(REDUCED, (2743, 179))]));
    assert_eq!(b["promotions"]["free_shipping"], false);
    assert_eq!(b["promotions"]["gifts"], json!([]));

    // Below the threshold it does not apply, and says why.
    let rb = shop
        .c
        .delete(shop.url(&format!("/api/v1/baskets/{id}/lines/TEA")));
    let (status, b) = send(shop.as_(rb, &who, Some("web"))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_adds_up(&b);
    assert_eq!(minor(&b["discount"]), 0);
    assert_eq!(minor(&b["total"]), 2598);
    assert!(applied_ids(&b).is_empty(), "{b}");
    assert_eq!(
        not_applied_reason(&b, "TENOFF"),
        Some("needs a basket of at least EUR 30.00")
    );
    assert_eq!(
        b["promotions"]["not_applied"][0]["name"],
        "10 % off from 30 euros"
    );
}

#[actix_web::test]
async fn coupons_are_checked_explained_removed_and_guessing_is_refused() {
    // The hub believes 127.0.0.1 as a proxy, so X-Forwarded-For names other clients.
    let shop = Shop::start_with(|s| {
        s.channels.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    shop.promotion(
        "WELCOME",
        "Welcome: 15 % off",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "percent_off_basket", "percent_bp": 1500},
        }),
    )
    .await;
    shop.promotion(
        "BIGSPEND",
        "10 euros off from 100 euros",
        json!({
            "conditions": [{"type": "coupon"}, {"type": "min_subtotal", "amount": eur(10000)}],
            "benefit": {"type": "amount_off_basket", "amount": eur(1000)},
            "combination": {"type": "stackable", "group": "big"},
        }),
    )
    .await;
    shop.coupon("WELCOME", "WELCOME10").await;
    shop.coupon("BIGSPEND", "BIG-SPENDER").await;
    let (id, who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let before = shop.basket(&id, &who).await;
    // A promotion behind a coupon is not shown to a basket that has not entered its code.
    assert_eq!(not_applied_reason(&before, "WELCOME"), None, "{before}");

    // An unknown code: 422 with the reason, and the basket as it was.
    let (status, body, _) = shop.enter(&id, &who, "NOPE-0001").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_coupon");
    assert_eq!(body["error"]["message"], "this coupon code is not known");
    assert_eq!(shop.basket(&id, &who).await, before, "nothing changed");

    // A public code, typed in any case: kept, applied, and the basket priced with it.
    let (status, b, _) = shop.enter(&id, &who, " welcome10 ").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["coupons"],
        json!([{"code": "WELCOME10", "applied": true}])
    );
    assert_eq!(applied_ids(&b), ["WELCOME"]);
    assert_eq!(minor(&b["discount"]), 195, "15 % of 12.99 is 1.9485");
    assert_adds_up(&b);
    assert!(b["version"].as_u64() > before["version"].as_u64());

    // A code whose promotion's condition is not met: kept, not applied, and why.
    let (status, b, _) = shop.enter(&id, &who, "big-spender").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        coupon_status(&b, "BIG-SPENDER"),
        Some(
            &json!({"code": "BIG-SPENDER", "applied": false, "message": "needs a basket of at least EUR 100.00"})
        )
    );
    assert_eq!(minor(&b["discount"]), 195);
    // The basket page says the same: the promotion and its amount, each code and its state.
    let page = shop.page(&who).await;
    for text in [
        "Welcome: 15 % off",
        "-€1.95",
        "€11.04",
        "WELCOME10",
        "BIG-SPENDER",
        "needs a basket of at least EUR 100.00",
    ] {
        assert!(page.contains(text), "{text} is not on the page: {page}");
    }
    // Met, it applies too: another stackable group stacks on what WELCOME left.
    let b = shop.add(&id, &who, None, "BEANS", 7).await;
    assert_eq!(
        coupon_status(&b, "BIG-SPENDER").map(|c| &c["applied"]),
        Some(&json!(true))
    );
    assert_eq!(applied_ids(&b), ["WELCOME", "BIGSPEND"]);
    assert_eq!(
        minor(&b["discount"]),
        1559 + 1000,
        "15 % of 103.92, then 10.00"
    );
    assert_adds_up(&b);

    // Removed (in any case), it no longer prices; removing it again is a 404.
    let remove = |code: &str| {
        shop.as_(
            shop.c
                .delete(shop.url(&format!("/api/v1/baskets/{id}/coupons/{code}"))),
            &who,
            None,
        )
    };
    let (status, b) = send(remove("big-spender")).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["coupons"],
        json!([{"code": "WELCOME10", "applied": true}])
    );
    assert_eq!(applied_ids(&b), ["WELCOME"]);
    assert_eq!(minor(&b["discount"]), 1559);
    let (status, body) = send(remove("BIG-SPENDER")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Guessing: after five invalid codes from one client (one so far), the next is refused
    // with Retry-After, valid or not, and the basket is left alone.
    for n in 2..=5 {
        let (status, body, _) = shop.enter(&id, &who, &format!("GUESS-000{n}")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "guess {n}: {body}"
        );
    }
    let kept = shop.basket(&id, &who).await;
    for code in ["GUESS-0006", "BIG-SPENDER"] {
        let (status, body, retry_after) = shop.enter(&id, &who, code).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{code}: {body}");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(
            retry_after.is_some_and(|s| (1..=600).contains(&s)),
            "Retry-After: {retry_after:?}"
        );
    }
    assert_eq!(shop.basket(&id, &who).await, kept);
    // Another client is not held back by this one's guesses.
    let (status, b, _) = shop
        .enter_from(&id, &who, "BIG-SPENDER", Some("203.0.113.9"))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert!(coupon_status(&b, "BIG-SPENDER").is_some());
}

#[actix_web::test]
async fn a_checkout_is_priced_like_its_quote_and_its_order_uses_up_a_single_use_code() {
    let shop = Shop::start().await;
    shop.promotion(
        "VIP",
        "VIP: 20 % off beans",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["BEANS"]}, "percent_bp": 2000},
        }),
    )
    .await;
    let (csv, codes) = shop.batch("VIP", 3).await;
    assert_eq!(codes.len(), 3);
    let code = &codes[0];

    let (id, who) = shop.guest_basket(&[("BEANS", 2), ("TEA", 1)], None).await;
    let (status, b, _) = shop.enter(&id, &who, code).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        coupon_status(&b, code).map(|c| &c["applied"]),
        Some(&json!(true))
    );
    assert_adds_up(&b);
    let expected = BTreeMap::from([("BEANS".to_string(), 520), ("TEA".to_string(), 0)]);
    assert_eq!(
        discounts(&b["lines"]),
        expected,
        "20 % of 25.98 on beans only"
    );

    // The quote carries the basket's discount per line, and taxes each rate on what is left
    // (items at the reduced rate, shipping at the standard rate).
    let quote = shop.quote(&id, &who, None).await;
    assert_eq!(discounts(&quote["lines"]), expected, "{quote}");
    assert_eq!(quote["discount"], b["discount"]);
    assert_eq!(minor(&quote["shipping"]["price"]), 490);
    assert_eq!(
        taxes(&quote["taxes"]),
        BTreeMap::from([
            (REDUCED, (2528, included_tax(2528, REDUCED))),
            (STANDARD, (490, included_tax(490, STANDARD))),
        ])
    );
    assert_eq!(minor(&quote["total"]), 2528 + 490);

    // The checkout is priced as quoted, and the provider asked for exactly that.
    let checkout = shop.checkout(&id, &who, None).await;
    assert_eq!(checkout["breakdown"], quote);
    assert_eq!(
        shop.session(&checkout).await["amount_total"],
        json!(2528 + 490)
    );
    assert!(
        !exported_used(&shop, &csv, code).await,
        "not used before payment"
    );

    let done = shop.pay(&checkout, &who).await;
    let number = done["order"]["number"].as_str().expect("order number");
    let url = done["order"]["url"].as_str().expect("order url");
    let key = url.split("key=").nth(1).expect("the order's key");
    let (status, order) = send(
        shop.c
            .get(shop.url(&format!("/api/v1/orders/lookup?number={number}&key={key}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(
        order["breakdown"], quote,
        "the order keeps the discounted lines"
    );
    assert_eq!(minor(&order["paid"]), 2528 + 490);

    // The order used the code: it is used up for everyone else; the batch's other codes work.
    assert!(
        exported_used(&shop, &csv, code).await,
        "the export shows it used"
    );
    let (other, other_who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let (status, body, _) = shop.enter(&other, &other_who, code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_coupon");
    assert_eq!(body["error"]["message"], "this coupon has been used up");
    let (status, b, _) = shop.enter(&other, &other_who, &codes[1]).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(minor(&b["discount"]), 260);

    // The shop cancels the order: the code's use is given back, and it works again.
    let (status, cancelled) = send(
        shop.c
            .post(shop.url(&format!("/api/v1/admin/orders/{number}/cancel")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert!(cancelled["cancelled"].is_string(), "{cancelled}");
    assert!(
        !exported_used(&shop, &csv, code).await,
        "the use was given back"
    );
    let (status, b, _) = shop.enter(&other, &other_who, code).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        coupon_status(&b, code).map(|c| &c["applied"]),
        Some(&json!(true))
    );
}

async fn exported_used(shop: &Shop, csv: &str, code: &str) -> bool {
    *shop
        .exported(csv)
        .await
        .get(code)
        .unwrap_or_else(|| panic!("{code} is not in the export"))
}

#[actix_web::test]
async fn a_mobile_only_promotion_prices_mobile_requests_and_not_web_ones() {
    let shop = Shop::start().await;
    shop.promotion(
        "APP3",
        "3 euros off in the app",
        json!({
            "conditions": [{"type": "channel", "any_of": ["mobile"]}],
            "benefit": {"type": "amount_off_basket", "amount": eur(300)},
        }),
    )
    .await;
    let (id, who) = shop.guest_basket(&[("BEANS", 1)], Some("web")).await;
    let b = shop.basket(&id, &who).await;
    assert_eq!(minor(&b["discount"]), 0);
    assert_eq!(not_applied_reason(&b, "APP3"), Some("not on channel web"));

    let b = shop.add(&id, &who, Some("mobile"), "TEA", 1).await;
    assert_eq!(applied_ids(&b), ["APP3"], "{b}");
    assert_eq!(minor(&b["discount"]), 300);
    assert_adds_up(&b);

    // A refused change from the web leaves the basket priced for the app.
    let rb = shop
        .c
        .post(shop.url(&format!("/api/v1/baskets/{id}/lines")))
        .json(&json!({"sku": "BEANS", "quantity": 5000}));
    let (status, body) = send(shop.as_(rb, &who, Some("web"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(minor(&shop.basket(&id, &who).await["discount"]), 300);

    // A quote and a checkout are priced for the channel that asks.
    let mobile = shop.quote(&id, &who, Some("mobile")).await;
    assert_eq!(minor(&mobile["discount"]), 300, "{mobile}");
    assert_eq!(discounts(&mobile["lines"]), discounts(&b["lines"]));
    let web = shop.quote(&id, &who, Some("web")).await;
    assert_eq!(minor(&web["discount"]), 0, "{web}");
    assert_eq!(minor(&web["total"]) - minor(&mobile["total"]), 300);

    // The next change on the web prices for the web again.
    let b = shop.add(&id, &who, Some("web"), "TEA", 1).await;
    assert_eq!(minor(&b["discount"]), 0, "{b}");
    assert_eq!(not_applied_reason(&b, "APP3"), Some("not on channel web"));

    let checkout = shop.checkout(&id, &who, Some("mobile")).await;
    assert_eq!(
        checkout["breakdown"],
        shop.quote(&id, &who, Some("mobile")).await
    );
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 300);
}

#[actix_web::test]
async fn a_first_order_promotion_is_for_customers_who_never_ordered() {
    let shop = Shop::start().await;
    shop.promotion(
        "FIRST5",
        "5 % off your first order",
        json!({
            "conditions": [{"type": "first_order"}],
            "benefit": {"type": "percent_off_basket", "percent_bp": 500},
        }),
    )
    .await;

    // A guest is not known to have never ordered.
    let (guest, guest_who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let b = shop.basket(&guest, &guest_who).await;
    assert_eq!(
        not_applied_reason(&b, "FIRST5"),
        Some("only for a first order")
    );

    let ada = shop.hub.register(&shop.c, "ada@example.com").await;
    let who = Who::Customer(ada["session_token"].as_str().expect("token").to_string());
    let id = ada["basket"]["id"].as_str().expect("basket id").to_string();
    let b = shop.add(&id, &who, None, "BEANS", 1).await;
    assert_eq!(applied_ids(&b), ["FIRST5"], "{b}");
    assert_eq!(minor(&b["discount"]), 65, "5 % of 12.99");
    assert_adds_up(&b);
    let quote = shop.quote(&id, &who, None).await;
    assert_eq!(discounts(&quote["lines"]), discounts(&b["lines"]));
    let checkout = shop.checkout(&id, &who, None).await;
    assert_eq!(checkout["breakdown"], quote);
    shop.pay(&checkout, &who).await;

    // After that order, it is no longer a first order: not in the basket, nor the quote.
    let b = shop.add(&id, &who, None, "BEANS", 1).await;
    assert_eq!(minor(&b["discount"]), 0, "{b}");
    assert_eq!(
        not_applied_reason(&b, "FIRST5"),
        Some("only for a first order")
    );
    let quote = shop.quote(&id, &who, None).await;
    assert_eq!(minor(&quote["discount"]), 0, "{quote}");
}

#[actix_web::test]
async fn a_guests_coupon_follows_them_into_their_account() {
    let shop = Shop::start().await;
    shop.promotion(
        "HELLO",
        "Hello: 1 euro off",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "amount_off_basket", "amount": eur(100)},
        }),
    )
    .await;
    shop.coupon("HELLO", "HELLO-1").await;
    let (guest, who) = shop.guest_basket(&[("TEA", 2)], None).await;
    let Who::Guest(token) = &who else {
        panic!("a guest");
    };
    let (status, b, _) = shop.enter(&guest, &who, "hello-1").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(minor(&b["discount"]), 100);

    // Registering with the basket's token merges the basket: lines and coupon.
    let (status, signed_in) = send(
        shop.c
            .post(shop.url("/api/v1/customers"))
            .header("X-Basket-Token", token)
            .json(&json!({"email": "guest@example.com", "name": "Grace", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{signed_in}");
    let b = &signed_in["basket"];
    assert_eq!(b["owner"], "customer");
    assert_ne!(b["id"], guest.as_str());
    assert_eq!(b["lines"][0]["quantity"], 2);
    assert_eq!(
        b["coupons"],
        json!([{"code": "HELLO-1", "applied": true}]),
        "{b}"
    );
    assert_eq!(minor(&b["discount"]), 100);
    assert_adds_up(b);
}

#[actix_web::test]
async fn a_shopper_cannot_claim_the_till_channel_with_a_header() {
    let shop = Shop::start().await;
    shop.promotion(
        "TILL3",
        "3 euros off at the till",
        json!({
            "conditions": [{"type": "channel", "any_of": ["pos", "board"]}],
            "benefit": {"type": "amount_off_basket", "amount": eur(300)},
        }),
    )
    .await;
    let (id, who) = shop.guest_basket(&[("BEANS", 1)], Some("web")).await;

    // Naming the till or a board on the shopper API is refused, and changes nothing.
    for channel in ["pos", "POS", "board", "voice"] {
        let rb = shop
            .c
            .post(shop.url(&format!("/api/v1/baskets/{id}/lines")))
            .json(&json!({"sku": "TEA", "quantity": 1}));
        let (status, body) = send(shop.as_(rb, &who, Some(channel))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{channel}: {body}");
        assert_eq!(body["error"]["code"], "invalid_channel", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("web or mobile"), "{message}");
    }
    let rb = shop.c.get(shop.url(&format!(
        "/api/v1/baskets/{id}/quote?country=DE&shipping_method=standard"
    )));
    let (status, body) = send(shop.as_(rb, &who, Some("pos"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "quote: {body}");
    let (status, body) = shop.try_checkout(&id, &who, Some("pos"), "standard").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "checkout: {body}");
    assert_eq!(body["error"]["code"], "invalid_channel");

    // The basket is as it was: one line, priced for the web, no till promotion.
    let b = shop.basket(&id, &who).await;
    assert_eq!(b["lines"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(minor(&b["discount"]), 0, "{b}");
    assert_eq!(not_applied_reason(&b, "TILL3"), Some("not on channel web"));
    let checkout = shop.checkout(&id, &who, Some("web")).await;
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 0, "{checkout}");
}

/// Two guests, each with BEANS and the code in their basket; answers (basket, who) of each.
async fn two_baskets_with(shop: &Shop, code: Option<&str>) -> [(String, Who); 2] {
    let mut out = Vec::new();
    for _ in 0..2 {
        let (id, who) = shop.guest_basket(&[("BEANS", 1)], None).await;
        if let Some(code) = code {
            let (status, b, _) = shop.enter(&id, &who, code).await;
            assert_eq!(status, StatusCode::OK, "{b}");
            assert_eq!(
                coupon_status(&b, code).map(|c| &c["applied"]),
                Some(&json!(true)),
                "{b}"
            );
        }
        out.push((id, who));
    }
    out.try_into().expect("two baskets")
}

#[actix_web::test]
async fn two_checkouts_at_once_cannot_both_use_a_coupons_last_use() {
    let shop = Shop::start().await;
    shop.promotion(
        "LASTONE",
        "The last one: 2 euros off",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
        }),
    )
    .await;
    shop.limited_coupon("LASTONE", "LAST-ONE", json!({"max_uses": 1}))
        .await;
    let [(a, a_who), (b, b_who)] = two_baskets_with(&shop, Some("LAST-ONE")).await;

    // Both check out at the same moment: exactly one gets the coupon, the other is refused
    // with the reason, and neither is charged without being told.
    let (first, second) = tokio::join!(
        shop.try_checkout(&a, &a_who, None, "standard"),
        shop.try_checkout(&b, &b_who, None, "standard"),
    );
    let outcomes = [(first, &a, &a_who), (second, &b, &b_who)];
    let won: Vec<_> = outcomes
        .iter()
        .filter(|((status, _), _, _)| *status == StatusCode::CREATED)
        .collect();
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|((status, _), _, _)| *status != StatusCode::CREATED)
        .collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{outcomes:?}");
    let ((_, winner), winner_basket, winner_who) = won[0];
    let ((status, refusal), loser_basket, loser_who) = lost[0];
    assert_eq!(minor(&winner["breakdown"]["discount"]), 200, "{winner}");
    assert_eq!(*status, StatusCode::CONFLICT, "{refusal}");
    assert_eq!(refusal["error"]["code"], "coupon_unavailable", "{refusal}");
    let message = refusal["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("LAST-ONE") && message.contains("used up"),
        "{message}"
    );

    // The winner's basket, locked while it pays, still shows its coupon; the loser's says it
    // is used up (reserved by the pending checkout) and prices without it.
    let w = shop.basket(winner_basket, winner_who).await;
    assert_eq!(
        coupon_status(&w, "LAST-ONE").map(|c| &c["applied"]),
        Some(&json!(true)),
        "{w}"
    );
    let l = shop.basket(loser_basket, loser_who).await;
    assert_eq!(
        coupon_status(&l, "LAST-ONE"),
        Some(
            &json!({"code": "LAST-ONE", "applied": false, "message": "this coupon has been used up"})
        ),
        "{l}"
    );
    assert_eq!(minor(&l["discount"]), 0);

    // The winner cancels: the use is given back, and the other shopper gets it.
    shop.cancel(winner, winner_who).await;
    let l = shop.basket(loser_basket, loser_who).await;
    assert_eq!(minor(&l["discount"]), 200, "{l}");
    let checkout = shop.checkout(loser_basket, loser_who, None).await;
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 200);
    shop.pay(&checkout, loser_who).await;

    // Used by that order: the first shopper's next checkout is refused with the reason.
    let (status, body) = shop
        .try_checkout(winner_basket, winner_who, None, "standard")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "coupon_unavailable");
}

#[actix_web::test]
async fn two_checkouts_at_once_cannot_both_use_a_promotions_last_use() {
    let shop = Shop::start().await;
    shop.promotion(
        "FIRSTONE",
        "The first order gets 2 euros off",
        json!({
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
            "limits": {"per_order": null, "per_customer": null, "total": 1},
        }),
    )
    .await;
    let [(a, a_who), (b, b_who)] = two_baskets_with(&shop, None).await;
    for (id, who) in [(&a, &a_who), (&b, &b_who)] {
        assert_eq!(applied_ids(&shop.basket(id, who).await), ["FIRSTONE"]);
    }

    // Both check out at the same moment: one checkout holds the promotion, the other is priced
    // without it (as its basket now shows), never both with it.
    let (first, second) = tokio::join!(
        shop.try_checkout(&a, &a_who, None, "standard"),
        shop.try_checkout(&b, &b_who, None, "standard"),
    );
    for (status, body) in [&first, &second] {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    let mut discounts = [
        minor(&first.1["breakdown"]["discount"]),
        minor(&second.1["breakdown"]["discount"]),
    ];
    discounts.sort_unstable();
    assert_eq!(discounts, [0, 200], "{first:?} {second:?}");
    let (winner, winner_who, loser, loser_who) = if minor(&first.1["breakdown"]["discount"]) == 200
    {
        (&first.1, &a_who, &b, &b_who)
    } else {
        (&second.1, &b_who, &a, &a_who)
    };
    let l = shop.basket(loser, loser_who).await;
    assert_eq!(
        not_applied_reason(&l, "FIRSTONE"),
        Some("limit reached: 1 of 1 uses in total"),
        "{l}"
    );

    // Paid, the use is the order's: the promotion stays used up.
    shop.pay(winner, winner_who).await;
    let (other, other_who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let o = shop.basket(&other, &other_who).await;
    assert_eq!(
        not_applied_reason(&o, "FIRSTONE"),
        Some("limit reached: 1 of 1 uses in total"),
        "{o}"
    );
}

#[actix_web::test]
async fn a_checkout_that_runs_out_of_time_gives_its_reserved_coupon_back() {
    let shop = Shop::start_with(|s| {
        s.checkout.hold_for = std::time::Duration::from_secs(2);
        s.checkout.sweep_every = std::time::Duration::from_millis(100);
    })
    .await;
    shop.promotion(
        "LASTONE",
        "The last one: 2 euros off",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
        }),
    )
    .await;
    shop.limited_coupon("LASTONE", "LAST-ONE", json!({"max_uses": 1}))
        .await;
    let [(a, a_who), (b, b_who)] = two_baskets_with(&shop, Some("LAST-ONE")).await;
    let held = shop.checkout(&a, &a_who, None).await;
    assert_eq!(minor(&held["breakdown"]["discount"]), 200);
    let (status, body) = shop.try_checkout(&b, &b_who, None, "standard").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The first shopper never pays: when the hold runs out, the checkout expires and the use
    // comes back.
    let id = held["id"].as_str().expect("checkout id");
    common::eventually(std::time::Duration::from_secs(30), || async {
        let rb = shop.c.get(shop.url(&format!("/api/v1/checkouts/{id}")));
        let (status, checkout) = send(shop.as_(rb, &a_who, None)).await;
        assert_eq!(status, StatusCode::OK, "{checkout}");
        (checkout["state"] == "expired").then_some(())
    })
    .await;
    let basket = shop.basket(&b, &b_who).await;
    assert_eq!(
        coupon_status(&basket, "LAST-ONE").map(|c| &c["applied"]),
        Some(&json!(true)),
        "{basket}"
    );
    let checkout = shop.checkout(&b, &b_who, None).await;
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 200);
}

/// Waits (polling the clock) until a checkout's stock hold has ended.
async fn after_the_hold(checkout: &Value) {
    let ends = checkout["hold_expires_at"]
        .as_str()
        .expect("hold_expires_at");
    let ends = time::OffsetDateTime::parse(ends, &time::format_description::well_known::Rfc3339)
        .expect("a time");
    common::eventually(std::time::Duration::from_secs(30), || async {
        (time::OffsetDateTime::now_utc() > ends + time::Duration::milliseconds(200)).then_some(())
    })
    .await;
}

/// A hub whose holds end after a second and whose sweeper does not come round in these tests:
/// as when the provider cannot be reached to expire a session, a checkout stays payable after
/// its hold ran out.
async fn shop_with_a_short_hold() -> Shop {
    Shop::start_with(|s| {
        s.checkout.hold_for = std::time::Duration::from_secs(1);
        s.checkout.sweep_every = std::time::Duration::from_secs(3600);
    })
    .await
}

#[actix_web::test]
async fn a_coupons_last_use_stays_reserved_while_its_checkout_can_still_be_paid() {
    let shop = shop_with_a_short_hold().await;
    shop.promotion(
        "LASTONE",
        "The last one: 2 euros off",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
        }),
    )
    .await;
    shop.limited_coupon("LASTONE", "LAST-ONE", json!({"max_uses": 1}))
        .await;
    let [(a, a_who), (b, b_who)] = two_baskets_with(&shop, Some("LAST-ONE")).await;
    let first = shop.checkout(&a, &a_who, None).await;
    assert_eq!(minor(&first["breakdown"]["discount"]), 200);

    // The hold ran out, the payment page is still open: the use is still the first
    // checkout's, so a second shopper cannot take it.
    after_the_hold(&first).await;
    let l = shop.basket(&b, &b_who).await;
    assert_eq!(
        coupon_status(&l, "LAST-ONE").map(|c| &c["applied"]),
        Some(&json!(false)),
        "{l}"
    );
    let (status, body) = shop.try_checkout(&b, &b_who, None, "standard").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "coupon_unavailable", "{body}");

    // The first shopper pays late: the order gets the use it was priced with, once.
    shop.pay(&first, &a_who).await;
    let used = shop
        .hub
        .handle
        .backoffice
        .coupons("LASTONE")
        .expect("coupons")
        .into_iter()
        .find(|c| c.code == "LAST-ONE")
        .expect("the code")
        .uses;
    assert_eq!(used, 1);
    let (status, body) = shop.try_checkout(&b, &b_who, None, "standard").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[actix_web::test]
async fn a_promotions_last_use_stays_reserved_while_its_checkout_can_still_be_paid() {
    let shop = shop_with_a_short_hold().await;
    shop.promotion(
        "FIRSTONE",
        "The first order gets 2 euros off",
        json!({
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
            "limits": {"per_order": null, "per_customer": null, "total": 1},
        }),
    )
    .await;
    let [(a, a_who), (b, b_who)] = two_baskets_with(&shop, None).await;
    let first = shop.checkout(&a, &a_who, None).await;
    assert_eq!(minor(&first["breakdown"]["discount"]), 200);
    after_the_hold(&first).await;
    let second = shop.checkout(&b, &b_who, None).await;
    assert_eq!(
        minor(&second["breakdown"]["discount"]),
        0,
        "the only use is still held by the first checkout: {second}"
    );
    shop.pay(&first, &a_who).await;
    shop.pay(&second, &b_who).await;
    let p = protocol::promotion::PromotionId::parse("FIRSTONE").expect("id");
    let usage = shop
        .hub
        .handle
        .backoffice
        .usage(None, std::slice::from_ref(&p))
        .expect("usage");
    assert_eq!(usage[&p].total, 1, "used once, by the order priced with it");
}

#[actix_web::test]
async fn a_promotion_or_coupon_limited_per_customer_is_for_signed_in_customers() {
    let shop = Shop::start().await;
    shop.promotion(
        "ONCEEACH",
        "1 euro off, once per customer",
        json!({
            "benefit": {"type": "amount_off_basket", "amount": eur(100)},
            "combination": {"type": "stackable", "group": "once"},
            "limits": {"per_order": null, "per_customer": 1, "total": null},
        }),
    )
    .await;
    shop.promotion(
        "MEMBERS",
        "Members: 2 euros off, twice each",
        json!({
            "conditions": [{"type": "coupon"}],
            "benefit": {"type": "amount_off_basket", "amount": eur(200)},
            "combination": {"type": "stackable", "group": "members"},
            "limits": {"per_order": null, "per_customer": 2, "total": null},
        }),
    )
    .await;
    shop.coupon("MEMBERS", "MEMBERS-2").await;

    // A guest has no count: the promotion is left out, with the reason, and the code is refused.
    let (guest, guest_who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let b = shop.basket(&guest, &guest_who).await;
    assert!(applied_ids(&b).is_empty(), "{b}");
    assert_eq!(
        not_applied_reason(&b, "ONCEEACH"),
        Some("limited to 1 use per customer: sign in to get it")
    );
    let (status, body, _) = shop.enter(&guest, &guest_who, "MEMBERS-2").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this coupon is limited per customer: sign in to use it"
    );
    let checkout = shop.checkout(&guest, &guest_who, None).await;
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 0, "{checkout}");

    // Signed in, both apply, and the order counts against the customer's limit.
    let ada = shop.hub.register(&shop.c, "ada@example.com").await;
    let who = Who::Customer(ada["session_token"].as_str().expect("token").to_string());
    let id = ada["basket"]["id"].as_str().expect("basket id").to_string();
    shop.add(&id, &who, None, "BEANS", 1).await;
    let (status, b, _) = shop.enter(&id, &who, "members-2").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(applied_ids(&b), ["ONCEEACH", "MEMBERS"], "{b}");
    let checkout = shop.checkout(&id, &who, None).await;
    assert_eq!(minor(&checkout["breakdown"]["discount"]), 300);
    shop.pay(&checkout, &who).await;
    let b = shop.add(&id, &who, None, "BEANS", 1).await;
    assert_eq!(
        not_applied_reason(&b, "ONCEEACH"),
        Some("limit reached: 1 of 1 uses by this customer"),
        "{b}"
    );
}

#[actix_web::test]
async fn a_free_gift_of_a_sku_in_the_basket_holds_both_units() {
    let shop = Shop::start().await;
    shop.promotion(
        "TEAGIFT",
        "A free tea with your beans",
        json!({
            "conditions": [{"type": "skus", "skus": ["BEANS"]}],
            "benefit": {"type": "free_gift", "sku": "TEA", "quantity": 1},
        }),
    )
    .await;
    assert_eq!(shop.available("green-tea").await, 5);
    let (id, who) = shop.guest_basket(&[("BEANS", 1), ("TEA", 2)], None).await;
    let b = shop.basket(&id, &who).await;
    assert_eq!(applied_ids(&b), ["TEAGIFT"], "{b}");

    // Two teas bought and one given: the checkout holds three.
    let checkout = shop.checkout(&id, &who, None).await;
    let teas: u64 = checkout["breakdown"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["sku"] == "TEA")
        .filter_map(|l| l["quantity"].as_u64())
        .sum();
    assert_eq!(teas, 3, "{checkout}");
    assert_eq!(shop.available("green-tea").await, 2);

    // Cancelled, all three come back; paid, all three are sold.
    shop.cancel(&checkout, &who).await;
    assert_eq!(shop.available("green-tea").await, 5);
    let checkout = shop.checkout(&id, &who, None).await;
    shop.pay(&checkout, &who).await;
    assert_eq!(shop.available("green-tea").await, 2);
}

#[actix_web::test]
async fn free_shipping_wins_or_loses_alike_on_the_basket_and_at_checkout() {
    let shop = Shop::start().await;
    shop.promotion(
        "FREESHIP",
        "Free delivery",
        json!({"benefit": {"type": "free_shipping"}, "combination": {"type": "exclusive"}}),
    )
    .await;
    shop.promotion(
        "THREEOFF",
        "3 euros off",
        json!({
            "benefit": {"type": "amount_off_basket", "amount": eur(300)},
            "combination": {"type": "exclusive"},
        }),
    )
    .await;

    // Standard delivery to Germany costs 4.90 under 50 euros: free delivery is worth more
    // than 3 euros off, on the basket as at checkout — whatever the method.
    let (id, who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    let b = shop.basket(&id, &who).await;
    assert_eq!(applied_ids(&b), ["FREESHIP"], "{b}");
    assert_eq!(b["promotions"]["free_shipping"], true);
    assert_eq!(
        not_applied_reason(&b, "THREEOFF"),
        Some("beaten by exclusive promotion FREESHIP (EUR 4.90 > EUR 3.00)")
    );
    let quote = shop.quote(&id, &who, None).await;
    assert_eq!(
        (
            minor(&quote["discount"]),
            minor(&quote["shipping"]["price"])
        ),
        (0, 0)
    );
    let (status, express) = shop.try_checkout(&id, &who, None, "express").await;
    assert_eq!(status, StatusCode::CREATED, "{express}");
    assert_eq!(
        (
            minor(&express["breakdown"]["discount"]),
            minor(&express["breakdown"]["shipping"]["price"])
        ),
        (0, 0),
        "{express}"
    );
    shop.cancel(&express, &who).await;

    // From 50 euros standard delivery is free anyway: 3 euros off wins on the basket, and at
    // checkout, even by express (free delivery is valued at the cheapest option).
    let b = shop.add(&id, &who, None, "BEANS", 3).await;
    assert_eq!(applied_ids(&b), ["THREEOFF"], "{b}");
    assert_eq!(b["promotions"]["free_shipping"], false);
    let (status, express) = shop.try_checkout(&id, &who, None, "express").await;
    assert_eq!(status, StatusCode::CREATED, "{express}");
    assert_eq!(
        (
            minor(&express["breakdown"]["discount"]),
            minor(&express["breakdown"]["shipping"]["price"])
        ),
        (300, 990),
        "{express}"
    );
}

#[actix_web::test]
async fn an_ipv6_guesser_is_held_back_across_its_64() {
    // The hub believes 127.0.0.1 as a proxy, so X-Forwarded-For names the clients.
    let shop = Shop::start_with(|s| {
        s.channels.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    let (id, who) = shop.guest_basket(&[("BEANS", 1)], None).await;
    for n in 1..=5 {
        let client = format!("2001:db8:7:7::{n}");
        let (status, body, _) = shop
            .enter_from(&id, &who, &format!("GUESS-000{n}"), Some(&client))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{client}: {body}");
    }
    // A fresh address of the same /64 is the same client.
    let (status, body, retry_after) = shop
        .enter_from(
            &id,
            &who,
            "GUESS-0006",
            Some("2001:db8:7:7:1234:5678:9abc:def0"),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry_after.is_some(), "Retry-After");
    // The next /64 is someone else; IPv4 clients count per address.
    for client in ["2001:db8:7:8::1", "198.51.100.7"] {
        let (status, body, _) = shop.enter_from(&id, &who, "GUESS-0007", Some(client)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{client}: {body}");
    }
}
