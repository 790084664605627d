//! The shopping assistant through the chat API (`POST /api/v1/chat`) of a real hub on port 0
//! with the demo catalog: the conversations of `data/assistant_conversations.json` (utterances
//! in, reply fragments and basket state out), orders and their status, reorder, the checkout
//! link by email, the live basket, bad input, and a voice turn without a linked account (the
//! assistant driven directly).

mod common;

use channels::assistant::{Assistant, AssistantSettings, Intent, Turn};
use channels::{Backend, Shopper};
use common::{client, eventually, spawn_with, LiveBasket, TestHub};
use hub::clock::SystemClock;
use protocol::{Channel, LocationId, Product, Sku, StockLevel};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use simulators::payments::{PaymentSim, PaymentsConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const VISA: &str = "4242424242424242";
/// Units of the single-variant product the Berlin store holds (as its node reported them).
const BERLIN_UNITS: i64 = 7;

/// Who talks: a fresh customer (bearer session) or a guest app (anonymous id, then the basket
/// token the chat hands out).
#[derive(Debug, Clone)]
enum Who {
    Customer(String),
    Guest {
        anonymous: String,
        basket_token: Option<String>,
    },
}

struct Shop {
    hub: TestHub,
    sim: PaymentSim,
    c: reqwest::Client,
    /// A demo product with one variant, well stocked.
    single: Product,
    /// A demo coffee with three variants, all well stocked.
    multi: Product,
}

/// Picks the demo products the conversations talk about.
fn pick_products() -> (Product, Product) {
    let demo = hub::demo::demo_catalog();
    let stock: HashMap<Sku, i64> = demo.stock.iter().cloned().collect();
    let stocked = |p: &Product| p.variants.iter().all(|v| stock[&v.sku] >= 40);
    let single = demo
        .products
        .iter()
        .find(|p| p.variants.len() == 1 && stocked(p) && !p.name.contains('&'))
        .expect("a single-variant demo product")
        .clone();
    let multi = demo
        .products
        .iter()
        .find(|p| p.category.0 == "coffee" && p.variants.len() == 3 && stocked(p))
        .expect("a three-variant demo coffee")
        .clone();
    (single, multi)
}

impl Shop {
    async fn start(tune: impl FnOnce(&mut hub::HubSettings)) -> Shop {
        let sim = PaymentSim::start(PaymentsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..PaymentsConfig::default()
        })
        .await
        .expect("the payment simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = common::settings(dir.path());
        s.demo_data = true;
        s.payments.base_url = sim.base_url();
        s.channels.assistant.chat_turns_per_minute = 10_000;
        tune(&mut s);
        let hub = spawn_with(dir, s, Arc::new(SystemClock), false).await;
        let (single, multi) = pick_products();
        hub.handle
            .inventory
            .set(vec![StockLevel {
                sku: single.variants[0].sku.clone(),
                location: LocationId("store-berlin".into()),
                on_hand: BERLIN_UNITS,
                held: 0,
            }])
            .await
            .expect("store stock set");
        Shop {
            hub,
            sim,
            c: client(),
            single,
            multi,
        }
    }

    async fn customer(&self, email: &str) -> Who {
        let body = self.hub.register(&self.c, email).await;
        Who::Customer(
            body["session_token"]
                .as_str()
                .expect("session token")
                .to_string(),
        )
    }

    fn guest() -> Who {
        Who::Guest {
            anonymous: ulid::Ulid::new().to_string(),
            basket_token: None,
        }
    }

    fn as_(&self, rb: RequestBuilder, who: &Who) -> RequestBuilder {
        match who {
            Who::Customer(token) => rb.bearer_auth(token),
            Who::Guest {
                anonymous,
                basket_token,
            } => {
                let rb = rb.header("x-anonymous-id", anonymous);
                match basket_token {
                    Some(t) => rb.header("x-basket-token", t),
                    None => rb,
                }
            }
        }
    }

    /// Sends one chat message; answers the status and body, remembering a new basket token.
    async fn chat(
        &self,
        who: &mut Who,
        conversation: &mut Option<String>,
        message: &str,
    ) -> (StatusCode, Value) {
        let rb = self
            .c
            .post(self.hub.url("/api/v1/chat"))
            .json(&json!({"message": message, "conversation": conversation}));
        let res = self.as_(rb, who).send().await.expect("sent");
        let status = res.status();
        let body: Value = res.json().await.expect("a JSON body");
        if let Some(c) = body["conversation"].as_str() {
            *conversation = Some(c.to_string());
        }
        if let (Some(token), Who::Guest { basket_token, .. }) = (body["basket_token"].as_str(), who)
        {
            *basket_token = Some(token.to_string());
        }
        (status, body)
    }

    /// The shopper's basket as the shopper API shows it: (item count, lines), (0, 0) for none.
    async fn basket(&self, who: &Who) -> (u64, usize) {
        let res = self
            .as_(self.c.get(self.hub.url("/api/v1/basket")), who)
            .send()
            .await
            .expect("sent");
        if res.status() == StatusCode::NOT_FOUND {
            return (0, 0);
        }
        let body: Value = res.json().await.expect("json");
        (
            body["item_count"].as_u64().expect("item_count"),
            body["lines"].as_array().expect("lines").len(),
        )
    }

    /// Replaces the placeholders of the conversation table.
    fn fill(&self, text: &str) -> String {
        text.replace("{single}", &self.single.name)
            .replace("{multi_variant_2}", &self.multi.variants[1].title)
            .replace("{multi}", &self.multi.name)
    }

    /// Checks out the customer's basket and pays it at the simulator: the order's number.
    async fn place_order(&self, who: &Who) -> String {
        let basket: Value = self
            .as_(self.c.get(self.hub.url("/api/v1/basket")), who)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let id = basket["id"].as_str().expect("basket id");
        let res = self
            .as_(
                self.c
                    .post(self.hub.url(&format!("/api/v1/baskets/{id}/checkout")))
                    .json(&json!({
                        "address": {"name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE"},
                        "shipping_method": "standard",
                    })),
                who,
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::CREATED);
        let checkout: Value = res.json().await.expect("json");
        let url = checkout["payment_url"].as_str().expect("payment_url");
        let session = url.rsplit('/').next().expect("a session id");
        let res = self
            .c
            .post(format!(
                "{}/_sim/checkout/sessions/{session}/pay",
                self.sim.base_url()
            ))
            .json(&json!({"card": VISA}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let checkout_id = checkout["id"].as_str().expect("checkout id");
        let done: Value = self
            .as_(
                self.c.post(
                    self.hub
                        .url(&format!("/api/v1/checkouts/{checkout_id}/confirm")),
                ),
                who,
            )
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(done["state"], "paid", "{done}");
        done["order"]["number"]
            .as_str()
            .expect("order number")
            .to_string()
    }
}

#[derive(Debug, Deserialize)]
struct Conversation {
    name: String,
    #[serde(rename = "as")]
    who: String,
    turns: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    say: String,
    expect: Vec<String>,
    #[serde(default)]
    basket: Option<BasketState>,
    /// The answer carries a link (the checkout).
    #[serde(default)]
    link: bool,
}

#[derive(Debug, Deserialize)]
struct BasketState {
    items: Option<u64>,
    lines: Option<usize>,
}

#[actix_web::test]
async fn conversations_from_the_table() {
    let shop = Shop::start(|_| {}).await;
    let table: Vec<Conversation> =
        serde_json::from_str(include_str!("data/assistant_conversations.json"))
            .expect("the conversation table parses");
    assert!(table.len() >= 10);
    for (n, conversation) in table.iter().enumerate() {
        let mut who = match conversation.who.as_str() {
            "customer" => shop.customer(&format!("table-{n}@example.com")).await,
            "guest" => Shop::guest(),
            other => panic!("unknown shopper '{other}' in '{}'", conversation.name),
        };
        let mut id = None;
        for step in &conversation.turns {
            let say = shop.fill(&step.say);
            let (status, body) = shop.chat(&mut who, &mut id, &say).await;
            let context = format!("'{}', saying {say:?}: {body}", conversation.name);
            assert_eq!(status, StatusCode::OK, "{context}");
            let reply = body["reply"].as_str().expect("reply").to_lowercase();
            for fragment in &step.expect {
                let fragment = shop.fill(fragment).to_lowercase();
                assert!(
                    reply.contains(&fragment),
                    "expected {fragment:?} in {context}"
                );
            }
            assert!(
                !reply.contains("error") && !reply.contains("panick"),
                "{context}"
            );
            assert!(
                body["suggestions"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty()),
                "{context}"
            );
            if step.link {
                assert!(
                    body["link"]
                        .as_str()
                        .is_some_and(|l| l.ends_with("/checkout")),
                    "{context}"
                );
            }
            if let Some(expected) = &step.basket {
                let (items, lines) = shop.basket(&who).await;
                if let Some(want) = expected.items {
                    assert_eq!(items, want, "basket items after {context}");
                }
                if let Some(want) = expected.lines {
                    assert_eq!(lines, want, "basket lines after {context}");
                }
            }
        }
    }
}

#[actix_web::test]
async fn order_status_and_reorder_see_the_customers_own_orders_only() {
    let shop = Shop::start(|_| {}).await;
    let mut ada = shop.customer("ada@example.com").await;
    let mut bob = shop.customer("bob@example.com").await;
    let (mut a, mut b) = (None, None);
    let single = shop.single.name.clone();
    let (_, added) = shop
        .chat(&mut ada, &mut a, &format!("add 2 {single}"))
        .await;
    assert_eq!(added["basket"]["item_count"], 2, "{added}");
    let number = shop.place_order(&ada).await;
    assert_eq!(shop.basket(&ada).await.0, 0, "the paid basket is empty");

    let (_, latest) = shop.chat(&mut ada, &mut a, "where is my order?").await;
    let text = latest["reply"].as_str().expect("reply");
    assert!(
        text.contains(&format!("Your order {number}")) && text.contains("is paid"),
        "{latest}"
    );
    let (_, named) = shop
        .chat(&mut ada, &mut a, &format!("where is my order {number}"))
        .await;
    assert!(
        named["reply"].as_str().is_some_and(|r| r.contains(&number)),
        "{named}"
    );

    // Another customer asking for Ada's number learns nothing about it.
    let (status, refused) = shop
        .chat(&mut bob, &mut b, &format!("where is my order {number}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = refused["reply"].as_str().expect("reply");
    assert!(
        text.contains(&format!("could not find an order {number}")) && !text.contains("paid"),
        "{refused}"
    );
    let (_, nothing) = shop.chat(&mut bob, &mut b, "reorder").await;
    assert!(
        nothing["reply"]
            .as_str()
            .is_some_and(|r| r.contains("no earlier order")),
        "{nothing}"
    );
    assert_eq!(shop.basket(&bob).await, (0, 0));

    let (_, again) = shop.chat(&mut ada, &mut a, "order again").await;
    let text = again["reply"].as_str().expect("reply");
    assert!(
        text.contains(&format!("2 × {single}")) && text.contains("today's prices"),
        "{again}"
    );
    assert_eq!(shop.basket(&ada).await, (2, 1));

    // Every turn is an event of the chat channel.
    let Who::Customer(token) = &ada else {
        panic!("ada is a customer")
    };
    let events = eventually(Duration::from_secs(5), || async {
        shop.hub.handle.drain_events().await;
        let body: Value = shop
            .c
            .get(shop.hub.url("/api/v1/customers/me/events?limit=100"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let turns: Vec<Value> = body["items"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "assistant_turn")
            .cloned()
            .collect();
        (turns.len() >= 4).then_some(turns)
    })
    .await;
    assert!(events.iter().all(|e| e["channel"] == "chat"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["payload"]["intent"] == "reorder" && e["payload"]["outcome"] == "added"),
        "{events:?}"
    );
}

#[actix_web::test]
async fn checkout_is_a_link_by_email_never_a_payment() {
    let shop = Shop::start(|_| {}).await;
    let mut ada = shop.customer("links@example.com").await;
    let mut id = None;
    shop.chat(&mut ada, &mut id, &format!("add {}", shop.single.name))
        .await;
    let (status, body) = shop.chat(&mut ada, &mut id, "check out").await;
    assert_eq!(status, StatusCode::OK);
    let reply = body["reply"].as_str().expect("reply");
    assert!(
        reply.contains("emailed a link") && reply.contains("l***@example.com"),
        "{body}"
    );
    assert_eq!(
        body["link"].as_str(),
        Some(shop.hub.url("/checkout").as_str())
    );
    // The basket is still open: nothing was checked out.
    let basket: Value = shop
        .as_(shop.c.get(shop.hub.url("/api/v1/basket")), &ada)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(basket.get("checkout").is_none(), "{basket}");
    let mail = eventually(Duration::from_secs(5), || async {
        let storage = &shop.hub.handle.storage;
        let mut all = storage.pending("email", 100).await.ok()?;
        all.extend(storage.dead_letters("email", 100).await.ok()?);
        all.into_iter().find(|m| m.kind == "checkout_link")
    })
    .await;
    let payload: Value = serde_json::from_str(&mail.payload).expect("payload json");
    assert_eq!(payload["to"], "links@example.com");
    assert_eq!(payload["checkout_url"], shop.hub.url("/checkout"));
    assert_eq!(payload["lines"][0]["name"], shop.single.name.as_str());
    assert_eq!(payload["channel"], "chat");
}

#[actix_web::test]
async fn a_chat_added_item_reaches_the_live_basket_within_a_second() {
    let shop = Shop::start(|_| {}).await;
    let mut ada = shop.customer("live-chat@example.com").await;
    let Who::Customer(token) = &ada else {
        panic!("a customer")
    };
    let created: Value = shop
        .c
        .post(shop.hub.url("/api/v1/baskets"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let basket = created["id"].as_str().expect("basket id");
    let (mut live, first) = LiveBasket::open(&shop.hub, basket, token).await;
    assert_eq!(first["item_count"], 0);

    let mut id = None;
    let (_, body) = shop
        .chat(
            &mut ada,
            &mut id,
            &format!("add a dozen {}", shop.single.name),
        )
        .await;
    assert_eq!(body["basket"]["item_count"], 12, "{body}");
    let seen = live
        .wait_for_items(12, Duration::from_secs(1))
        .await
        .expect("the web basket's live socket shows the chat's line within a second");
    assert_eq!(
        seen["lines"][0]["sku"],
        shop.single.variants[0].sku.as_str()
    );
}

#[actix_web::test]
async fn an_unlinked_voice_turn_can_search_but_never_touch_a_basket() {
    let shop = Shop::start(|_| {}).await;
    let backend: Arc<dyn Backend> = shop.hub.handle.backend.clone();
    let assistant = Assistant::new(backend, AssistantSettings::default());
    let turn = |intent: Intent| Turn {
        channel: Channel::Voice,
        shopper: Shopper::default(),
        intent,
        state: Default::default(),
    };
    use channels::assistant::Conversation;
    let found = assistant
        .respond(turn(Intent::Search {
            query: "earl grey".into(),
        }))
        .await;
    assert!(!found.link_account, "{found:?}");
    assert!(found.text.contains("Earl Grey"), "{found:?}");
    let ssml = found.ssml.as_deref().expect("voice answers in SSML");
    assert!(
        ssml.starts_with("<speak>") && ssml.ends_with("</speak>") && ssml.contains("<break"),
        "{ssml}"
    );
    assert!(found.reprompt.is_some() && !found.end_session);
    let hours = assistant
        .respond(turn(Intent::StoreInfo {
            store: Some("hamburg".into()),
            product: None,
        }))
        .await;
    assert!(hours.text.contains("Hamburg Altona is open"), "{hours:?}");
    for intent in [
        Intent::AddToBasket {
            product: shop.single.name.clone(),
            quantity: Some("two".into()),
        },
        Intent::BasketContents,
        Intent::RemoveItem {
            product: "coffee".into(),
        },
        Intent::OrderStatus { order: None },
        Intent::Reorder,
        Intent::Checkout,
        Intent::Choose { choice: "1".into() },
    ] {
        let reply = assistant.respond(turn(intent.clone())).await;
        assert!(reply.link_account, "{intent:?}: {reply:?}");
        assert!(
            reply.text.contains("link your account"),
            "{intent:?}: {reply:?}"
        );
    }
    // A choice offered by a search still needs the account.
    let chose = assistant
        .respond(Turn {
            state: found.state.clone(),
            ..turn(Intent::Choose {
                choice: "the first one".into(),
            })
        })
        .await;
    assert!(chose.link_account);
    let stop = assistant.respond(turn(Intent::Stop)).await;
    assert!(stop.end_session && !stop.link_account);
    let unknown = assistant
        .respond(turn(Intent::Unknown { utterance: None }))
        .await;
    assert!(unknown.text.contains("I can find products"), "{unknown:?}");
}

#[actix_web::test]
async fn bad_chat_input_gets_json_errors_and_a_rate_limit() {
    let shop = Shop::start(|s| s.channels.assistant.chat_turns_per_minute = 4).await;
    let url = shop.hub.url("/api/v1/chat");
    let c = &shop.c;
    let error_code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_string();

    let long = "a".repeat(501);
    let res = c
        .post(&url)
        .json(&json!({"message": long}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_code(&res.json().await.expect("json")),
        "message_too_long"
    );

    let res = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&res.json().await.expect("json")),
        "malformed_json"
    );

    let res = c
        .post(&url)
        .json(&json!({"message": "hi", "price": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A browser riding on its basket cookie needs the page's CSRF token.
    let csrf = "0123456789abcdef0123456789abcdef";
    let cookies = format!("omnihub_basket=whatever; omnihub_csrf={csrf}");
    let res = c
        .post(&url)
        .header("cookie", &cookies)
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&res.json().await.expect("json")), "csrf_failed");
    let res = c
        .post(&url)
        .header("cookie", &cookies)
        .header("origin", "https://evil.example")
        .header("x-csrf-token", csrf)
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = c
        .post(&url)
        .header("cookie", &cookies)
        .header("x-csrf-token", csrf)
        .header("x-anonymous-id", ulid::Ulid::new().to_string())
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);

    // Four messages a minute per shopper, then 429 with Retry-After.
    let mut who = Shop::guest();
    let mut id = None;
    for _ in 0..4 {
        let (status, body) = shop.chat(&mut who, &mut id, "hello").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let rb = c.post(&url).json(&json!({"message": "hello"}));
    let res = shop.as_(rb, &who).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(error_code(&res.json().await.expect("json")), "rate_limited");
    // Another shopper is not limited by the first one's messages.
    let (status, _) = shop.chat(&mut Shop::guest(), &mut None, "hello").await;
    assert_eq!(status, StatusCode::OK);
}
