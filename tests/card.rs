//! Card tender at the till (`docs/pos.md`, "Card payments"): the hub and a store's edge node as
//! real processes, the node behind a TCP proxy the test cuts and restores, the payment provider
//! and the payment terminal simulators in-process on their own ports. The terminal reads the
//! card and hands out only a token; the node authorises online through the hub (a
//! PaymentIntent with manual capture, then captured), or takes the card offline within its caps
//! and forwards it once the link is back: authorised, or declined and flagged for follow-up,
//! never twice. No card number is stored anywhere on the node.

mod common;

use common::shop::eventually;
use common::stores::*;
use serde_json::{json, Value};
use simulators::payments::{PaymentSim, PaymentsConfig};
use simulators::terminal::TerminalSim;
use std::path::Path;

const CARD_NUMBERS: [&str; 3] = ["4242424242424242", "4000000000000002", "4000000000009995"];

struct Shop {
    _dir: tempfile::TempDir,
    payments: PaymentSim,
    terminal: TerminalSim,
    hub: common::HubProcess,
    store: Store,
    sku: String,
    /// The SKU's price in minor units.
    price: i64,
}

fn euros(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

impl Shop {
    /// A hub paying through the provider simulator, and store `berlin` with the terminal, its
    /// forwarder looking every 200 ms, and `card` settings (`OMNIHUB_EDGE_POS__CARD__*`) from
    /// `caps(price)`.
    async fn start(caps: impl Fn(i64) -> Vec<(&'static str, String)>) -> Shop {
        let dir = tempfile::tempdir().expect("temp dir");
        let payments = PaymentSim::start(PaymentsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..PaymentsConfig::default()
        })
        .await
        .expect("the provider starts");
        let terminal = TerminalSim::start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("the terminal starts");
        let config = hub_config(dir.path(), &[("berlin", "store-berlin")]);
        let hub = start_hub_paying(dir.path(), &config, &payments.base_url());
        let mut extra = vec![
            ("OMNIHUB_EDGE_POS__CARD__TERMINAL_URL", terminal.base_url()),
            ("OMNIHUB_EDGE_POS__CARD__RETRY_EVERY", "200ms".to_string()),
        ];
        let mut store =
            Store::start_with(dir.path(), "berlin", "store-berlin", hub_addr(&hub), &extra).await;
        store.online().await;
        let (sku, price) = linear_sku(&store).await;
        let caps = caps(price);
        if !caps.is_empty() {
            extra.extend(caps);
            store.restart_with(&extra);
            store.online().await;
        }
        store.receive(&sku, 40).await;
        Shop {
            _dir: dir,
            payments,
            terminal,
            hub,
            store,
            sku,
            price,
        }
    }

    /// The terminal reads a test card (`visa`, `declined`, `insufficient_funds`) for `minor`.
    async fn read(&self, card: &str, minor: i64) -> Value {
        let res = common::http_client()
            .post(format!("{}/v1/readings", self.terminal.base_url()))
            .json(&json!({"amount": minor, "currency": "EUR", "card": card}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 201);
        let read: Value = res.json().await.expect("json");
        json!({"token": read["token"], "brand": read["brand"], "last4": read["last4"]})
    }

    /// Sells `quantity` of the SKU with these payments.
    async fn sell(&self, quantity: u32, payments: Value, key: Option<&str>) -> (u16, Value) {
        self.store
            .post(
                "/api/v1/sales",
                json!({"lines": [{"sku": self.sku, "quantity": quantity}], "payments": payments}),
                key,
            )
            .await
    }

    /// Sells `quantity` paid in full by `card`.
    async fn sell_by_card(&self, card: &str, quantity: u32) -> (u16, Value) {
        let total = self.price * i64::from(quantity);
        let read = self.read(card, total).await;
        self.sell(
            quantity,
            json!([{"method": "card", "amount": euros(total), "card": read}]),
            None,
        )
        .await
    }

    async fn sale(&self, id: &Value) -> Value {
        self.store
            .get(&format!("/api/v1/sales/{}", id.as_str().expect("id")))
            .await
    }

    async fn sale_count(&self) -> usize {
        self.store.sale_ids().await.len()
    }

    /// The provider's PaymentIntent.
    async fn intent(&self, id: &str) -> Value {
        common::http_client()
            .get(format!(
                "{}/v1/payment_intents/{id}",
                self.payments.base_url()
            ))
            .bearer_auth("sk_test_omnihub")
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// The provider's PaymentIntents for one of the node's card payments.
    async fn intents_of(&self, payment: &str) -> Vec<Value> {
        let list: Value = common::http_client()
            .get(format!(
                "{}/v1/payment_intents?limit=100",
                self.payments.base_url()
            ))
            .bearer_auth("sk_test_omnihub")
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        list["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|i| i["metadata"]["store_payment"] == payment)
            .cloned()
            .collect()
    }
}

/// A SKU whose price is the same per unit whatever the quantity (no promotion applies), and
/// its price in minor units.
async fn linear_sku(store: &Store) -> (String, i64) {
    for nth in 0..20 {
        let sku = a_sku(store, nth).await;
        let mut totals = Vec::new();
        for quantity in 1..=3 {
            let (status, quote) = store
                .post(
                    "/api/v1/sales/quote",
                    json!({"lines": [{"sku": sku, "quantity": quantity}]}),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{quote}");
            totals.push(minor_of(&quote["total"], 2));
        }
        if totals[1] == 2 * totals[0] && totals[2] == 3 * totals[0] {
            return (sku, totals[0]);
        }
    }
    panic!("no SKU without a promotion among the first 20");
}

fn start_hub_paying(dir: &Path, config: &Path, payments: &str) -> common::HubProcess {
    tokio::task::block_in_place(|| {
        common::start_hub_with(
            &dir.join("hub"),
            &["--config", config.to_str().expect("utf-8 path")],
            &[
                ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
                ("OMNIHUB_HUB_PAYMENTS__BASE_URL", payments),
            ],
        )
    })
}

/// Every byte the node keeps (database and journal): none is a card number.
fn assert_no_card_number(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in walk(data) {
        all.extend(std::fs::read(&entry).unwrap_or_default());
    }
    for number in CARD_NUMBERS {
        assert!(
            !all.windows(number.len()).any(|w| w == number.as_bytes()),
            "a card number is stored in {}",
            data.display()
        );
    }
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reads the dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn card_of(sale: &Value, i: usize) -> &Value {
    &sale["payments"][i]["card"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_cards_are_authorised_then_captured_and_a_decline_records_nothing() {
    let shop = Shop::start(|_| Vec::new()).await;

    // Online: authorised through the hub with manual capture, recorded with the pi_…, then
    // captured right after the sale.
    let (status, sale) = shop.sell_by_card("visa", 2).await;
    assert_eq!(status, 201, "{sale}");
    let card = card_of(&sale, 0);
    assert_eq!(card["recorded_as"], "Authorised", "{sale}");
    assert_eq!(
        (card["brand"].as_str(), card["last4"].as_str()),
        (Some("visa"), Some("4242"))
    );
    let reference = sale["payments"][0]["reference"]
        .as_str()
        .expect("a reference")
        .to_string();
    assert!(reference.starts_with("pi_"), "{reference}");
    let captured = eventually(WAIT, || async {
        let s = shop.sale(&sale["id"]).await;
        (card_of(&s, 0)["captured"] == true).then_some(s)
    })
    .await;
    assert_eq!(card_of(&captured, 0)["status"], "authorised");
    let intent = shop.intent(&reference).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(intent["capture_method"], "manual", "{intent}");
    assert_eq!(intent["amount"], shop.price * 2, "{intent}");
    assert_eq!(intent["metadata"]["replica"], "berlin", "{intent}");

    // A retry of a keyed card sale gets the first sale; the card is authorised once.
    let read = shop.read("visa", shop.price).await;
    let pay = json!([{"method": "card", "amount": euros(shop.price), "card": read}]);
    let (status, first) = shop.sell(1, pay.clone(), Some("card-retry-1")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = shop.sell(1, pay, Some("card-retry-1")).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], first["id"]);
    let payment = card_of(&first, 0)["payment"].as_str().expect("payment id");
    assert_eq!(shop.intents_of(payment).await.len(), 1);

    // Declines: a clear refusal, nothing recorded, no stock taken.
    let before = shop.sale_count().await;
    let on_hand = shop.store.stock(&shop.sku).await["on_hand"].clone();
    for (card, words) in [
        ("declined", "declined"),
        ("insufficient_funds", "insufficient funds"),
    ] {
        let (status, refused) = shop.sell_by_card(card, 1).await;
        assert_eq!(status, 402, "{refused}");
        assert_eq!(refused["error"]["code"], "card_declined");
        let message = refused["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(words) && message.contains("Nothing was recorded"),
            "{message}"
        );
    }
    assert_eq!(shop.sale_count().await, before);
    assert_eq!(shop.store.stock(&shop.sku).await["on_hand"], on_hand);

    // A card read the node did not authorise cannot be slipped in as a field of the request.
    let read = shop.read("visa", shop.price).await;
    let mut forged = read.clone();
    forged["status"] = json!("Authorised");
    let (status, refused) = shop
        .sell(
            1,
            json!([{"method": "card", "amount": euros(shop.price), "card": forged}]),
            None,
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, refused) = shop
        .sell(
            1,
            json!([{"method": "cash", "amount": euros(shop.price), "card": read}]),
            None,
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_payment", "{refused}");

    // Split tender: part card, part cash; change only from the cash part.
    let total = shop.price * 3;
    let on_card = total / 2;
    let cash_given = total - on_card + 500;
    let read = shop.read("visa", on_card).await;
    let (status, split) = shop
        .sell(
            3,
            json!([{"method": "card", "amount": euros(on_card), "card": read},
                   {"method": "cash", "amount": euros(cash_given)}]),
            None,
        )
        .await;
    assert_eq!(status, 201, "{split}");
    assert_eq!(split["change_due"], "5.00", "{split}");
    assert_eq!(split["payments"][0]["method"], "card");
    assert_eq!(split["payments"][1]["method"], "cash");
    let intent = shop
        .intent(split["payments"][0]["reference"].as_str().expect("pi"))
        .await;
    assert_eq!(intent["amount"], on_card, "{intent}");
    // Two cards for one sale.
    let (a, b) = (
        shop.read("visa", shop.price).await,
        shop.read("visa", shop.price).await,
    );
    let (status, two) = shop
        .sell(
            2,
            json!([{"method": "card", "amount": euros(shop.price), "card": a},
                   {"method": "card", "amount": euros(shop.price), "card": b}]),
            None,
        )
        .await;
    assert_eq!(status, 201, "{two}");
    assert_ne!(
        two["payments"][0]["reference"],
        two["payments"][1]["reference"]
    );
    // More on the card than the total: refused before any card is authorised.
    let read = shop.read("visa", shop.price * 2).await;
    let (status, refused) = shop
        .sell(
            1,
            json!([{"method": "card", "amount": euros(shop.price * 2), "card": read}]),
            None,
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "overpaid");

    assert_no_card_number(&shop.store.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_cards_within_the_caps_are_authorised_or_flagged_after_reconnection() {
    // Caps: two units per card payment, three units outstanding on the node.
    let shop = Shop::start(|price| {
        vec![
            (
                "OMNIHUB_EDGE_POS__CARD__OFFLINE_TRANSACTION_CAP",
                euros(price * 2),
            ),
            ("OMNIHUB_EDGE_POS__CARD__OFFLINE_NODE_CAP", euros(price * 3)),
        ]
    })
    .await;
    let caps = shop.store.get("/api/v1/card/payments").await;
    assert_eq!(
        caps["offline_transaction_cap"],
        euros(shop.price * 2),
        "{caps}"
    );

    shop.store.proxy.cut();
    shop.store.offline().await;

    // Within the caps: recorded as PaidOfflinePendingAuth (the declined card reads fine at the
    // terminal: the provider declines it later).
    let (status, declined_later) = shop.sell_by_card("declined", 1).await;
    assert_eq!(status, 201, "{declined_later}");
    assert_eq!(
        card_of(&declined_later, 0)["recorded_as"],
        "PaidOfflinePendingAuth"
    );
    assert_eq!(
        card_of(&declined_later, 0)["status"],
        "pending_authorisation"
    );
    assert!(declined_later["payments"][0]["reference"].is_null());
    let before = shop.sale_count().await;
    // Over the per-payment cap: refused, nothing recorded.
    let (status, refused) = shop.sell_by_card("visa", 3).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "offline_card_cap");
    assert!(refused["error"]["message"]
        .as_str()
        .expect("message")
        .contains("offline"));
    // Up to the node cap: fine; beyond it: refused, nothing recorded.
    let (status, authorised_later) = shop.sell_by_card("visa", 2).await;
    assert_eq!(status, 201, "{authorised_later}");
    let (status, refused) = shop.sell_by_card("visa", 1).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "offline_card_cap");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains("already holds"),
        "{refused}"
    );
    assert_eq!(shop.sale_count().await, before + 1);
    // With the node cap reached, cash still sells.
    let (status, cash) = shop
        .sell(
            1,
            json!([{"method": "cash", "amount": euros(shop.price)}]),
            None,
        )
        .await;
    assert_eq!(status, 201, "{cash}");

    // The node's storage and journal hold the offline status, never a card number.
    let stored = assert_no_card_number(&shop.store.data);
    let marker = b"PaidOfflinePendingAuth";
    assert!(stored.windows(marker.len()).any(|w| w == marker));
    let journal = std::fs::read(shop.store.data.join(edge_node::JOURNAL_FILE)).expect("journal");
    assert!(
        journal.windows(marker.len()).any(|w| w == marker),
        "the sale journal has it"
    );
    let pending = shop.store.get("/api/v1/card/payments").await;
    assert_eq!(
        pending["outstanding_offline"],
        euros(shop.price * 3),
        "{pending}"
    );

    // Back online: the forwarder authorises one (then captures it) and flags the other.
    shop.store.proxy.restore();
    shop.store.online().await;
    let done = eventually(WAIT, || async {
        let s = shop.sale(&authorised_later["id"]).await;
        (card_of(&s, 0)["captured"] == true).then_some(s)
    })
    .await;
    assert_eq!(card_of(&done, 0)["status"], "authorised", "{done}");
    let reference = card_of(&done, 0)["reference"]
        .as_str()
        .expect("pi")
        .to_string();
    assert_eq!(shop.intent(&reference).await["status"], "succeeded");
    let flagged = eventually(WAIT, || async {
        let s = shop.sale(&declined_later["id"]).await;
        (card_of(&s, 0)["status"] == "declined").then_some(s)
    })
    .await;
    let follow_up = card_of(&flagged, 0)["follow_up"].clone();
    assert!(follow_up.is_string(), "{flagged}");
    let conflicts = shop.store.get("/api/v1/conflicts").await;
    assert!(
        conflicts["conflicts"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["id"] == follow_up && c["kind"] == "card_offline_declined"),
        "{conflicts}"
    );
    // The follow-up reaches the hub.
    eventually(WAIT, || async {
        let view = admin(&shop.hub, "/edge/nodes/berlin").await;
        view["conflicts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == follow_up))
            .then_some(())
    })
    .await;

    // A resync never authorises twice: asking the hub again for the same card payment gives
    // the same intent, and the provider holds one intent per card payment.
    let payment = card_of(&done, 0)["payment"]
        .as_str()
        .expect("payment")
        .to_string();
    let (status, again) = hub_call(
        &shop.hub,
        reqwest::Method::POST,
        "/api/v1/edge/card/authorize",
        &credential("berlin"),
        Some(
            json!({"payment": payment, "amount": shop.price * 2, "currency": "EUR",
                    "token": "pm_card_visa", "offline": true}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reference"], reference.as_str());
    assert_eq!(shop.intents_of(&payment).await.len(), 1);
    // The hub's card endpoints want a node's credential.
    let (status, _) = hub_call(
        &shop.hub,
        reqwest::Method::POST,
        "/api/v1/edge/card/authorize",
        "not-a-node",
        Some(json!({"payment": "cp_x", "amount": 100, "currency": "EUR", "token": "pm_card_visa"})),
    )
    .await;
    assert_eq!(status, 401);
    let pending = shop.store.get("/api/v1/card/payments").await;
    assert_eq!(pending["outstanding_offline"], "0.00", "{pending}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_card_not_uploaded_within_the_deadline_is_flagged_not_authorised() {
    let shop =
        Shop::start(|_| vec![("OMNIHUB_EDGE_POS__CARD__OFFLINE_DEADLINE", "1s".to_string())]).await;
    shop.store.proxy.cut();
    shop.store.offline().await;
    let (status, sale) = shop.sell_by_card("visa", 1).await;
    assert_eq!(status, 201, "{sale}");
    // Flagged by the node while still offline, once the deadline has passed.
    let flagged = eventually(WAIT, || async {
        let s = shop.sale(&sale["id"]).await;
        (card_of(&s, 0)["status"] == "deadline_passed").then_some(s)
    })
    .await;
    let follow_up = card_of(&flagged, 0)["follow_up"].clone();
    assert!(follow_up.is_string(), "{flagged}");
    // Back online: the follow-up reaches the hub, and the card is never authorised.
    shop.store.proxy.restore();
    shop.store.online().await;
    eventually(WAIT, || async {
        let view = admin(&shop.hub, "/edge/nodes/berlin").await;
        view["conflicts"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["id"] == follow_up && c["kind"] == "card_offline_deadline")
            })
            .then_some(())
    })
    .await;
    converged(&shop.hub, &shop.store).await;
    let payment = card_of(&flagged, 0)["payment"].as_str().expect("payment");
    assert!(shop.intents_of(payment).await.is_empty());
    assert_eq!(
        card_of(&shop.sale(&sale["id"]).await, 0)["status"],
        "deadline_passed"
    );
}

/// Signs manager `anna` in at the shop's node, opens till 1, and answers her session token.
async fn open_till(shop: &Shop) -> String {
    let c = common::http_client();
    let res = c
        .post(format!("{}/api/v1/staff/sessions", shop.store.node.base))
        .json(&json!({"staff_id": "anna", "pin": "4711"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let token = res.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let res = c
        .post(format!("{}/api/v1/tills/1/open", shop.store.node.base))
        .bearer_auth(&token)
        .json(&json!({"float": "50.00"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    token
}

/// Returns line 0 of `receipt` (one unit) at till 1.
async fn return_one(shop: &Shop, token: &str, receipt: &str) -> (u16, Value) {
    let res = common::http_client()
        .post(format!("{}/api/v1/returns", shop.store.node.base))
        .bearer_auth(token)
        .header("X-Till", "1")
        .json(&json!({"receipt": receipt, "lines": [{"line": 0, "quantity": 1}]}))
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_sale_taken_offline_is_refunded_to_its_card_only_once_authorised() {
    let hash = edge_node::hash_pin("4711").expect("hashes");
    let shop = Shop::start(move |_| {
        vec![
            ("OMNIHUB_EDGE_POS__TILLS", "[\"1\"]".to_string()),
            (
                "OMNIHUB_EDGE_POS__STAFF",
                format!("[{{id=\"anna\",name=\"Anna\",role=\"manager\",pin_hash=\"{hash}\"}}]"),
            ),
        ]
    })
    .await;
    let token = open_till(&shop).await;
    shop.store.proxy.cut();
    shop.store.offline().await;
    let (status, sale) = shop.sell_by_card("visa", 1).await;
    assert_eq!(status, 201, "{sale}");
    let receipt = sale["number"].as_str().expect("number").to_string();

    // Not authorised yet: no cash goes out for a card payment that may never be paid.
    let (status, refused) = return_one(&shop, &token, &receipt).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "card_authorisation_pending");

    // Authorised after reconnection: the return goes back to that card, through the hub.
    shop.store.proxy.restore();
    shop.store.online().await;
    let done = eventually(WAIT, || async {
        let s = shop.sale(&sale["id"]).await;
        (card_of(&s, 0)["captured"] == true).then_some(s)
    })
    .await;
    let reference = card_of(&done, 0)["reference"]
        .as_str()
        .expect("pi")
        .to_string();
    let (status, taken) = return_one(&shop, &token, &receipt).await;
    assert_eq!(status, 201, "{taken}");
    assert_eq!(taken["refunds"][0]["method"], "card", "{taken}");
    assert_eq!(taken["refunds"][0]["reference"], reference.as_str());
    assert_eq!(taken["cash_refund"], "0.00", "{taken}");
    let refunds = eventually(WAIT, || async {
        let res = common::http_client()
            .get(format!(
                "{}/v1/refunds?payment_intent={reference}",
                shop.payments.base_url()
            ))
            .bearer_auth("sk_test_omnihub")
            .send()
            .await
            .expect("sent");
        let list: Value = res.json().await.expect("json");
        let data = list["data"].as_array().cloned().unwrap_or_default();
        (!data.is_empty()).then_some(data)
    })
    .await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"].as_i64(), Some(shop.price));
}
