//! The voice skill on a real hub (port 0, demo catalog), as the voice platform reaches it:
//! requests signed with a chain the hub trusts through its development settings, the shopper's
//! account linked through the hub's own OAuth flow (`simulators::voice::link`), the hub's
//! assistant behind the endpoint. The demo conversation plays without a surprise, a voice-added
//! item reaches the web basket's live WebSocket within a second, and an unlinked user is asked
//! to link before any basket change.

mod common;

use common::{client, spawn_with, LiveBasket, TestHub};
use hub::clock::SystemClock;
use hub::oauth::{OAuthClientSettings, OAuthSettings};
use serde_json::{json, Value};
use simulators::voice::script::Script;
use simulators::voice::signer::SimChain;
use simulators::voice::{play, Target, DEFAULT_CERT_URL, DEFAULT_SKILL_ID, DEFAULT_USER_ID};
use std::sync::Arc;
use std::time::Duration;

const CLIENT: &str = "voice-test";
const OTHER_CLIENT: &str = "other-app";
const SECRET: &str = "voice-test-secret";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const EMAIL: &str = "voice@example.com";
const PASSWORD: &str = "correct horse battery";

struct Voice {
    hub: TestHub,
    chain: SimChain,
    /// Keeps the chain's files.
    _chain_dir: tempfile::TempDir,
}

impl Voice {
    async fn start() -> Voice {
        let chain_dir = tempfile::tempdir().expect("temp dir");
        let (chain, made) = SimChain::load_or_create(chain_dir.path()).expect("a signing chain");
        assert!(made);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = common::settings(dir.path());
        s.demo_data = true;
        s.oauth = OAuthSettings {
            clients: vec![
                OAuthClientSettings {
                    client_id: CLIENT.into(),
                    name: "Omnihub Voice".into(),
                    client_secret: SECRET.to_string().into(),
                    redirect_uris: vec![REDIRECT.into()],
                    scopes: vec!["basket".into(), "orders".into()],
                },
                OAuthClientSettings {
                    // Another app the shopper may link: its tokens are nobody to the skill.
                    client_id: OTHER_CLIENT.into(),
                    name: "Other App".into(),
                    client_secret: SECRET.to_string().into(),
                    redirect_uris: vec![REDIRECT.into()],
                    scopes: vec!["basket".into(), "orders".into()],
                },
            ],
            ..OAuthSettings::default()
        };
        s.voice.skill_ids = vec![DEFAULT_SKILL_ID.into()];
        s.voice.link_client_id = CLIENT.into();
        s.voice.development.trust_roots_pem = Some(chain_dir.path().join("root.pem"));
        s.voice.development.cert_chain_source =
            Some(chain_dir.path().join("chain.pem").display().to_string());
        let hub = spawn_with(dir, s, Arc::new(SystemClock), false).await;
        Voice {
            hub,
            chain,
            _chain_dir: chain_dir,
        }
    }

    /// Registers the shopper; answers their session token (for the web side).
    async fn shopper(&self) -> String {
        let res = client()
            .post(self.hub.url("/api/v1/customers"))
            .json(&json!({"email": EMAIL, "name": "Vera", "password": PASSWORD}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), reqwest::StatusCode::CREATED);
        let body: Value = res.json().await.expect("json");
        body["session_token"]
            .as_str()
            .expect("a session token")
            .to_string()
    }

    /// Links the shopper's account as the platform does; answers the access token.
    async fn link(&self) -> String {
        self.link_as(CLIENT).await
    }

    /// Links the shopper's account to this client app; answers the access token.
    async fn link_as(&self, client_id: &str) -> String {
        simulators::voice::link::link_account(
            &self.hub.url(""),
            client_id,
            SECRET,
            REDIRECT,
            EMAIL,
            PASSWORD,
        )
        .await
        .expect("account linking works")
        .access_token
    }

    fn target(&self, access_token: Option<String>) -> Target {
        Target {
            endpoint: self.hub.url("/voice/alexa"),
            skill_id: DEFAULT_SKILL_ID.into(),
            user_id: DEFAULT_USER_ID.into(),
            access_token,
            cert_url: DEFAULT_CERT_URL.into(),
        }
    }

    async fn play(&self, access_token: Option<String>, script: Value) -> Vec<(String, bool)> {
        let script = Script::parse(&script.to_string()).expect("a valid script");
        let played = play(
            &self.target(access_token),
            &self.chain,
            &script,
            &mut std::io::sink(),
        )
        .await
        .expect("the conversation plays");
        played
            .into_iter()
            .map(|t| {
                assert_eq!(t.status, 200, "{}", t.body);
                assert!(t.problems.is_empty(), "{}: {:?}", t.you, t.problems);
                (
                    t.speech.unwrap_or_default(),
                    t.body["response"]["card"]["type"] == "LinkAccount",
                )
            })
            .collect()
    }

    async fn basket(&self, session: &str) -> Value {
        client()
            .get(self.hub.url("/api/v1/basket"))
            .bearer_auth(session)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }
}

/// A demo product with a name only it has (so adding it by name needs no question).
fn single_product() -> protocol::Product {
    let demo = hub::demo::demo_catalog();
    demo.products
        .iter()
        .find(|p| {
            p.variants.len() == 1
                && !p.name.contains('&')
                && demo
                    .products
                    .iter()
                    .filter(|q| q.name.to_lowercase().contains(&p.name.to_lowercase()))
                    .count()
                    == 1
        })
        .expect("a single-variant demo product")
        .clone()
}

#[actix_web::test]
async fn the_demo_conversation_plays_on_the_hub_with_a_linked_account() {
    let voice = Voice::start().await;
    let session = voice.shopper().await;
    let token = voice.link().await;
    let script: Value =
        serde_json::from_str(simulators::voice::script::DEMO_SCRIPT).expect("the demo script");
    let answers = voice.play(Some(token), script).await;
    assert!(
        answers.iter().all(|(_, link)| !link),
        "a linked user is never asked to link: {answers:?}"
    );
    // The coffee chosen by voice is in the basket the shopper sees on the web.
    let basket = voice.basket(&session).await;
    assert_eq!(basket["item_count"], 2, "{basket}");
    // "Add minus three apples" changed nothing and said why.
    assert!(
        answers
            .iter()
            .any(|(speech, _)| speech.to_lowercase().contains("at least 1")
                || speech.to_lowercase().contains("how many")),
        "{answers:?}"
    );
}

#[actix_web::test]
async fn a_voice_added_item_reaches_the_web_basket_live_within_a_second() {
    let voice = Voice::start().await;
    let session = voice.shopper().await;
    let token = voice.link().await;
    let created: Value = client()
        .post(voice.hub.url("/api/v1/baskets"))
        .bearer_auth(&session)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let basket = created["id"].as_str().expect("basket id");
    let (mut live, first) = LiveBasket::open(&voice.hub, basket, &session).await;
    assert_eq!(first["item_count"], 0);

    let product = single_product();
    let answers = voice
        .play(
            Some(token),
            json!({"turns": [{
                "you": "add three",
                "intent": "AddToBasketIntent",
                "slots": {"product": product.name.to_lowercase(), "quantity": "3"}
            }]}),
        )
        .await;
    assert!(!answers[0].1, "{answers:?}");
    let seen = live
        .wait_for_items(3, Duration::from_secs(1))
        .await
        .expect("the web basket's live socket shows the voice line within a second");
    assert_eq!(seen["lines"][0]["sku"], product.variants[0].sku.as_str());
}

#[actix_web::test]
async fn an_unlinked_user_can_search_but_is_asked_to_link_before_a_basket_change() {
    let voice = Voice::start().await;
    let product = single_product();
    let answers = voice
        .play(
            None,
            json!({"turns": [
                {"you": "search", "intent": "SearchIntent",
                 "slots": {"product": product.name.to_lowercase()}},
                {"you": "add one", "intent": "AddToBasketIntent",
                 "slots": {"product": product.name.to_lowercase(), "quantity": "1"}}
            ]}),
        )
        .await;
    assert!(!answers[0].1, "search needs no linked account: {answers:?}");
    assert!(
        answers[0]
            .0
            .to_lowercase()
            .contains(&product.name.to_lowercase()),
        "{answers:?}"
    );
    assert!(
        answers[1].1,
        "the add asks to link the account: {answers:?}"
    );
    // A made-up access token is an unlinked user, not an error and not anyone's account.
    let forged = voice
        .play(
            Some("not-a-token".into()),
            json!({"turns": [{"you": "basket", "intent": "BasketIntent"}]}),
        )
        .await;
    assert!(forged[0].1, "{forged:?}");
}

#[actix_web::test]
async fn a_token_issued_to_another_client_app_is_not_linked_for_the_skill() {
    let voice = Voice::start().await;
    voice.shopper().await;
    let basket_turn = json!({"turns": [{"you": "basket", "intent": "BasketIntent"}]});
    let other = voice.link_as(OTHER_CLIENT).await;
    let answers = voice.play(Some(other), basket_turn.clone()).await;
    assert!(answers[0].1, "asked to link the skill itself: {answers:?}");
    let own = voice.link().await;
    let answers = voice.play(Some(own), basket_turn).await;
    assert!(
        !answers[0].1,
        "the skill's own token is linked: {answers:?}"
    );
}

#[actix_web::test]
async fn erasing_the_customers_data_unlinks_the_voice_skill() {
    let voice = Voice::start().await;
    let session = voice.shopper().await;
    let token = voice.link().await;
    let basket_turn = json!({"turns": [{"you": "basket", "intent": "BasketIntent"}]});
    let before = voice.play(Some(token.clone()), basket_turn.clone()).await;
    assert!(!before[0].1, "linked before the erasure: {before:?}");
    let res = client()
        .post(voice.hub.url("/api/v1/customers/me/erasure"))
        .bearer_auth(&session)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "{}", res.status());
    let after = voice.play(Some(token), basket_turn).await;
    assert!(after[0].1, "the erased customer's link is gone: {after:?}");
}
