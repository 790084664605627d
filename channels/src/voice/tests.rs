//! The skill endpoint against a fake assistant and fake linked accounts, with a certificate
//! chain generated here (root CA → intermediate → RSA leaf named echo-api.amazon.com): intent
//! mapping, rendering, identity, rate limit, and every way verification must refuse a request.

use super::ask::{IntentBody, Slot};
use super::intents::{intent_for, MODEL_INTENTS};
use super::verify::{check_cert_url, trust_roots_from_pem, CertFetcher, Rejection};
use super::{configure, VoiceDevelopment, VoiceSettings, VoiceState, TOO_MANY, UNAVAILABLE};
use crate::assistant::{Card, Conversation, DialogState, Intent, LinkedAccounts, Reply, Turn};
use crate::backend::BackendError;
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use async_trait::async_trait;
use base64::Engine;
use protocol::{Channel, CustomerId};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use time::{Duration, OffsetDateTime};

const SKILL: &str = "amzn1.ask.skill.test-skill";
const CERT_URL: &str = "https://s3.amazonaws.com/echo.api/echo-api-cert-12.pem";
const TOKEN: &str = "linked-access-token";
const BROKEN_TOKEN: &str = "token-of-an-unreachable-store";
const USER: &str = "amzn1.ask.account.USER-ONE";

// ---------------------------------------------------------------------------------------------
// The test PKI

/// One RSA key for every leaf (2048-bit generation takes a while; the key is not what the
/// tests vary).
fn leaf_key_pkcs8() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen");
        key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec()
    })
}

/// How a generated leaf differs from a good one.
#[derive(Clone, Copy)]
struct LeafSpec {
    name: &'static str,
    /// Validity relative to now.
    not_before: Duration,
    not_after: Duration,
}

const GOOD_LEAF: LeafSpec = LeafSpec {
    name: "echo-api.amazon.com",
    not_before: Duration::days(-1),
    not_after: Duration::days(30),
};

/// A root CA and an intermediate (ECDSA), able to issue leaves.
struct Ca {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    fn new(name: &str) -> Ca {
        let root_key = KeyPair::generate().expect("root key");
        let root_params = ca_params(&format!("{name} Root"));
        let root = root_params.self_signed(&root_key).expect("root cert");
        let root_issuer = Issuer::new(root_params, root_key);
        let key = KeyPair::generate().expect("intermediate key");
        let params = ca_params(&format!("{name} Intermediate"));
        let intermediate = params.signed_by(&key, &root_issuer).expect("intermediate");
        Ca {
            root_pem: root.pem(),
            intermediate_pem: intermediate.pem(),
            intermediate: Issuer::new(params, key),
        }
    }

    /// The chain PEM (leaf, then intermediate) of a leaf issued now.
    fn chain(&self, spec: LeafSpec) -> String {
        let key = leaf_keypair();
        let mut params = CertificateParams::new(vec![spec.name.to_owned()]).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now + spec.not_before;
        params.not_after = now + spec.not_after;
        let leaf = params.signed_by(&key, &self.intermediate).expect("leaf");
        format!("{}{}", leaf.pem(), self.intermediate_pem)
    }
}

fn leaf_keypair() -> KeyPair {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_key_pkcs8().to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_RSA_SHA256).expect("RSA key pair")
}

/// The platform's signature of a body: RSA PKCS#1 v1.5 SHA-256, base64.
fn sign(body: &[u8]) -> String {
    let key = ring::signature::RsaKeyPair::from_pkcs8(leaf_key_pkcs8()).expect("ring RSA key");
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        body,
        &mut signature,
    )
    .expect("signing");
    base64::engine::general_purpose::STANDARD.encode(signature)
}

fn shared_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::new("Test"))
}

// ---------------------------------------------------------------------------------------------
// Fakes

/// Serves one chain PEM for every URL and counts the fetches.
struct MemFetcher {
    pem: Mutex<String>,
    urls: Mutex<Vec<String>>,
}

impl MemFetcher {
    fn new(pem: String) -> Arc<MemFetcher> {
        Arc::new(MemFetcher {
            pem: Mutex::new(pem),
            urls: Mutex::new(Vec::new()),
        })
    }

    fn fetches(&self) -> usize {
        self.urls.lock().expect("urls").len()
    }
}

#[async_trait]
impl CertFetcher for MemFetcher {
    async fn fetch(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        self.urls.lock().expect("urls").push(url.to_string());
        Ok(self.pem.lock().expect("pem").clone().into_bytes())
    }
}

/// Records every turn; answers with the intent's debug text and counts turns in the state.
#[derive(Default)]
struct FakeAssistant {
    turns: Mutex<Vec<Turn>>,
    /// The next reply, if set (else the default echo).
    next: Mutex<Option<Reply>>,
}

impl FakeAssistant {
    fn turns(&self) -> Vec<Turn> {
        self.turns.lock().expect("turns").clone()
    }
}

#[async_trait]
impl Conversation for FakeAssistant {
    async fn respond(&self, turn: Turn) -> Reply {
        let count = turn
            .state
            .pending
            .as_ref()
            .and_then(|p| p.get("turns"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let text = format!("heard {:?}", turn.intent);
        self.turns.lock().expect("turns").push(turn);
        if let Some(reply) = self.next.lock().expect("next").take() {
            return reply;
        }
        Reply {
            text,
            ssml: None,
            reprompt: Some("Anything else?".into()),
            end_session: false,
            card: None,
            link_account: false,
            state: DialogState {
                pending: Some(json!({ "turns": count + 1 })),
            },
        }
    }
}

struct FakeAccounts {
    customer: CustomerId,
}

#[async_trait]
impl LinkedAccounts for FakeAccounts {
    async fn customer_for_access_token(
        &self,
        token: &str,
    ) -> Result<Option<CustomerId>, BackendError> {
        match token {
            TOKEN => Ok(Some(self.customer)),
            BROKEN_TOKEN => Err(BackendError::Unavailable("token store down".into())),
            _ => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    state: web::Data<VoiceState>,
    assistant: Arc<FakeAssistant>,
    fetcher: Arc<MemFetcher>,
    clock: Arc<Mutex<OffsetDateTime>>,
    customer: CustomerId,
}

fn settings() -> VoiceSettings {
    VoiceSettings {
        skill_ids: vec!["amzn1.ask.skill.other".into(), SKILL.into()],
        ..VoiceSettings::default()
    }
}

fn harness_with(settings: VoiceSettings, chain: String, roots_pem: &str) -> Harness {
    let assistant = Arc::new(FakeAssistant::default());
    let customer = CustomerId::new();
    let fetcher = MemFetcher::new(chain);
    // Whole seconds, as the platform's timestamps are.
    let start = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole seconds");
    let clock = Arc::new(Mutex::new(start));
    let now = clock.clone();
    let state = VoiceState::builder(
        &settings,
        assistant.clone(),
        Arc::new(FakeAccounts { customer }),
    )
    .clock(Arc::new(move || *now.lock().expect("clock")))
    .fetcher(fetcher.clone())
    .trust_roots(trust_roots_from_pem(roots_pem.as_bytes()).expect("roots"))
    .build()
    .expect("voice state");
    Harness {
        state: web::Data::new(state),
        assistant,
        fetcher,
        clock,
        customer,
    }
}

fn harness() -> Harness {
    let ca = shared_ca();
    harness_with(settings(), ca.chain(GOOD_LEAF), &ca.root_pem)
}

impl Harness {
    fn now(&self) -> OffsetDateTime {
        *self.clock.lock().expect("clock")
    }

    /// Posts a body signed as the platform signs it.
    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        let raw = serde_json::to_vec(body).expect("body");
        let signature = sign(&raw);
        self.post_raw(raw, Some(CERT_URL), Some(&signature)).await
    }

    async fn post_raw(
        &self,
        raw: Vec<u8>,
        cert_url: Option<&str>,
        signature: Option<&str>,
    ) -> (StatusCode, Value) {
        let app =
            test::init_service(App::new().app_data(self.state.clone()).configure(configure)).await;
        let mut req = TestRequest::post()
            .uri("/voice/alexa")
            .insert_header(("content-type", "application/json"));
        if let Some(url) = cert_url {
            req = req.insert_header(("SignatureCertChainUrl", url));
        }
        if let Some(sig) = signature {
            req = req.insert_header(("Signature-256", sig));
        }
        let res = test::call_service(&app, req.set_payload(raw).to_request()).await;
        let status = res.status();
        let bytes = test::read_body(res).await;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }
}

/// An envelope as the platform sends it.
fn envelope(
    request: Value,
    token: Option<&str>,
    attributes: Option<Value>,
    at: OffsetDateTime,
) -> Value {
    let mut user = json!({ "userId": USER });
    if let Some(t) = token {
        user["accessToken"] = json!(t);
    }
    let mut request = request;
    request["requestId"] = json!("amzn1.echo-api.request.1");
    request["timestamp"] = json!(at
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("timestamp"));
    request["locale"] = json!("en-US");
    json!({
        "version": "1.0",
        "session": {
            "new": attributes.is_none(),
            "sessionId": "amzn1.echo-api.session.1",
            "application": { "applicationId": SKILL },
            "attributes": attributes.unwrap_or(json!({})),
            "user": user.clone(),
        },
        "context": {
            "System": {
                "application": { "applicationId": SKILL },
                "user": user,
                "device": { "deviceId": "amzn1.ask.device.1", "supportedInterfaces": {} },
                "apiEndpoint": "https://api.amazonalexa.com"
            }
        },
        "request": request,
    })
}

fn intent_request(name: &str, slots: Value) -> Value {
    json!({ "type": "IntentRequest", "dialogState": "COMPLETED",
            "intent": { "name": name, "confirmationStatus": "NONE", "slots": slots } })
}

fn launch() -> Value {
    json!({ "type": "LaunchRequest" })
}

// ---------------------------------------------------------------------------------------------
// Accepted requests

#[actix_web::test]
async fn a_signed_launch_request_is_answered_in_the_platforms_format() {
    let h = harness();
    let (status, body) = h.post(&envelope(launch(), None, None, h.now())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "1.0");
    let speech = &body["response"]["outputSpeech"];
    assert_eq!(speech["type"], "PlainText");
    assert_eq!(speech["text"], "heard Welcome");
    assert_eq!(body["response"]["shouldEndSession"], false);
    assert_eq!(
        body["response"]["reprompt"]["outputSpeech"]["text"],
        "Anything else?"
    );
    assert_eq!(
        body["sessionAttributes"]["dialogState"]["pending"]["turns"],
        1
    );
    let turns = h.assistant.turns();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].channel, Channel::Voice);
    assert_eq!(turns[0].intent, Intent::Welcome);
}

#[actix_web::test]
async fn the_session_attributes_carry_the_dialog_state_to_the_next_turn() {
    let h = harness();
    let (_, first) = h.post(&envelope(launch(), None, None, h.now())).await;
    let attributes = first["sessionAttributes"].clone();
    let next = envelope(
        intent_request("BasketIntent", json!({})),
        None,
        Some(attributes),
        h.now(),
    );
    let (status, second) = h.post(&next).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second["sessionAttributes"]["dialogState"]["pending"]["turns"],
        2
    );
    let turns = h.assistant.turns();
    assert_eq!(turns[1].state.pending, Some(json!({ "turns": 1 })));
}

fn slot(value: &str) -> Value {
    json!({ "name": "x", "value": value, "confirmationStatus": "NONE" })
}

fn resolved_slot(value: &str, resolved: &str) -> Value {
    json!({ "name": "x", "value": value, "resolutions": { "resolutionsPerAuthority": [
        { "authority": "amzn1.er-authority.echo-sdk.skill.PRODUCT_NAME",
          "status": { "code": "ER_SUCCESS_MATCH" },
          "values": [ { "value": { "name": resolved, "id": "1" } } ] } ] } })
}

#[actix_web::test]
async fn every_intent_of_the_model_reaches_the_assistant_as_its_intent() {
    let cases: Vec<(&str, Value, Intent)> = vec![
        (
            "SearchIntent",
            json!({ "product": slot("oat milk") }),
            Intent::Search {
                query: "oat milk".into(),
            },
        ),
        (
            "SearchIntent",
            json!({ "product": resolved_slot("bags of coffee", "coffee") }),
            Intent::Search {
                query: "coffee".into(),
            },
        ),
        (
            "AddToBasketIntent",
            json!({ "product": slot("coffee"), "quantity": slot("2") }),
            Intent::AddToBasket {
                product: "coffee".into(),
                quantity: Some("2".into()),
            },
        ),
        (
            "AddToBasketIntent",
            json!({ "product": slot("apples"), "quantity": slot("-3") }),
            Intent::AddToBasket {
                product: "apples".into(),
                quantity: Some("-3".into()),
            },
        ),
        (
            "AddToBasketIntent",
            json!({ "product": slot("apples"), "quantity": { "name": "quantity" } }),
            Intent::AddToBasket {
                product: "apples".into(),
                quantity: None,
            },
        ),
        (
            "AddToBasketIntent",
            json!({}),
            Intent::AddToBasket {
                product: String::new(),
                quantity: None,
            },
        ),
        (
            "ChooseIntent",
            json!({ "choice": resolved_slot("the second one", "second") }),
            Intent::Choose {
                choice: "second".into(),
            },
        ),
        (
            "AMAZON.YesIntent",
            json!({}),
            Intent::Choose {
                choice: "yes".into(),
            },
        ),
        (
            "AMAZON.NoIntent",
            json!({}),
            Intent::Choose {
                choice: "no".into(),
            },
        ),
        ("BasketIntent", json!({}), Intent::BasketContents),
        (
            "RemoveItemIntent",
            json!({ "product": slot("butter") }),
            Intent::RemoveItem {
                product: "butter".into(),
            },
        ),
        (
            "OrderStatusIntent",
            json!({}),
            Intent::OrderStatus { order: None },
        ),
        (
            "OrderStatusIntent",
            json!({ "order": slot("42") }),
            Intent::OrderStatus {
                order: Some("42".into()),
            },
        ),
        ("ReorderIntent", json!({}), Intent::Reorder),
        (
            "StoreInfoIntent",
            json!({ "store": slot("Hamburg") }),
            Intent::StoreInfo {
                store: Some("Hamburg".into()),
                product: None,
            },
        ),
        (
            "StoreInfoIntent",
            json!({ "store": slot("Berlin"), "product": slot("tea") }),
            Intent::StoreInfo {
                store: Some("Berlin".into()),
                product: Some("tea".into()),
            },
        ),
        ("CheckoutIntent", json!({}), Intent::Checkout),
        ("AMAZON.HelpIntent", json!({}), Intent::Help),
        ("AMAZON.StopIntent", json!({}), Intent::Stop),
        ("AMAZON.CancelIntent", json!({}), Intent::Stop),
        (
            "AMAZON.FallbackIntent",
            json!({}),
            Intent::Unknown { utterance: None },
        ),
        (
            "AMAZON.PauseIntent",
            json!({}),
            Intent::Unknown { utterance: None },
        ),
        (
            "DanceIntent",
            json!({ "style": slot("tango") }),
            Intent::Unknown { utterance: None },
        ),
    ];
    let h = harness();
    for (i, (name, slots, expected)) in cases.iter().enumerate() {
        let (status, body) = h
            .post(&envelope(
                intent_request(name, slots.clone()),
                Some(TOKEN),
                None,
                h.now(),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(&h.assistant.turns()[i].intent, expected, "{name} {slots}");
    }
}

#[test]
fn the_documented_interaction_model_has_exactly_the_mapped_intents() {
    let model: Value =
        serde_json::from_str(include_str!("../../../docs/voice/interaction-model.json"))
            .expect("interaction model JSON");
    let language = &model["interactionModel"]["languageModel"];
    assert!(language["invocationName"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    let mut documented: Vec<&str> = language["intents"]
        .as_array()
        .expect("intents")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    documented.sort_unstable();
    let mut mapped = MODEL_INTENTS.to_vec();
    mapped.sort_unstable();
    assert_eq!(documented, mapped);
    for intent in language["intents"].as_array().expect("intents") {
        let name = intent["name"].as_str().expect("name");
        let slots: BTreeMap<String, Slot> = intent["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .map(|s| {
                        let slot_name = s["name"].as_str().expect("slot name").to_owned();
                        (
                            slot_name,
                            Slot {
                                value: Some("2".into()),
                                resolutions: None,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mapped = intent_for(&IntentBody {
            name: name.into(),
            slots: slots.clone(),
        });
        if name == "AMAZON.FallbackIntent" {
            assert_eq!(mapped, Intent::Unknown { utterance: None });
            continue;
        }
        assert_ne!(mapped, Intent::Unknown { utterance: None }, "{name}");
        // Every slot the model declares is read: its value shows up in the intent.
        let text = format!("{mapped:?}");
        assert_eq!(text.matches("\"2\"").count(), slots.len(), "{name}: {text}");
        if !custom_intent(name) {
            continue;
        }
        let samples = intent["samples"].as_array().expect("samples");
        assert!(samples.len() >= 3, "{name} needs sample utterances");
        for slot_name in slots.keys() {
            let placeholder = format!("{{{slot_name}}}");
            assert!(
                samples
                    .iter()
                    .any(|s| s.as_str().is_some_and(|s| s.contains(&placeholder))),
                "{name}: no sample uses {placeholder}"
            );
        }
    }
}

fn custom_intent(name: &str) -> bool {
    !name.starts_with("AMAZON.")
}

#[actix_web::test]
async fn the_reply_is_rendered_as_ssml_cards_and_the_end_of_the_session() {
    let h = harness();
    let state = DialogState {
        pending: Some(json!({ "offer": ["a", "b"] })),
    };
    let cases = vec![
        (
            Reply {
                text: "Two coffees are in your basket.".into(),
                ssml: Some("<speak>Two <emphasis>coffees</emphasis>.</speak>".into()),
                reprompt: Some("What else?".into()),
                end_session: false,
                card: Some(Card {
                    title: "Basket".into(),
                    text: "2 x Coffee".into(),
                }),
                link_account: false,
                state: state.clone(),
            },
            json!({
                "outputSpeech": { "type": "SSML", "ssml": "<speak>Two <emphasis>coffees</emphasis>.</speak>" },
                "card": { "type": "Simple", "title": "Basket", "content": "2 x Coffee" },
                "reprompt": { "outputSpeech": { "type": "PlainText", "text": "What else?" } },
                "shouldEndSession": false
            }),
        ),
        (
            Reply {
                text: "Link your account first.".into(),
                ssml: Some("Link <break time=\"200ms\"/> your account.".into()),
                reprompt: Some("never said: the session ends".into()),
                end_session: true,
                card: Some(Card {
                    title: "ignored".into(),
                    text: "ignored".into(),
                }),
                link_account: true,
                state: DialogState::default(),
            },
            json!({
                "outputSpeech": { "type": "SSML", "ssml": "<speak>Link <break time=\"200ms\"/> your account.</speak>" },
                "card": { "type": "LinkAccount" },
                "shouldEndSession": true
            }),
        ),
    ];
    for (reply, expected) in cases {
        let pending = reply.state.pending.clone();
        *h.assistant.next.lock().expect("next") = Some(reply);
        let (status, body) = h
            .post(&envelope(
                intent_request("BasketIntent", json!({})),
                Some(TOKEN),
                None,
                h.now(),
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"], expected);
        assert_eq!(
            body["sessionAttributes"]["dialogState"]["pending"],
            pending.unwrap_or(Value::Null)
        );
    }
}

#[actix_web::test]
async fn a_session_ended_request_gets_an_empty_response_and_no_turn() {
    let h = harness();
    let request = json!({ "type": "SessionEndedRequest", "reason": "USER_INITIATED" });
    let (status, body) = h.post(&envelope(request, Some(TOKEN), None, h.now())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "version": "1.0", "response": {} }));
    assert!(h.assistant.turns().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Identity and rate limit

#[actix_web::test]
async fn identity_comes_only_from_the_linked_access_token() {
    let h = harness();
    let search = || intent_request("SearchIntent", json!({ "product": slot("tea") }));
    // Linked: the token's customer; the request cannot name another.
    let mut forged = envelope(search(), Some(TOKEN), None, h.now());
    forged["session"]["user"]["customerId"] = json!(CustomerId::new().to_string());
    forged["session"]["attributes"] = json!({ "customer": CustomerId::new().to_string() });
    h.post(&forged).await;
    // Unknown token, no token: unlinked, one anonymous id per platform user.
    h.post(&envelope(search(), Some("revoked-token"), None, h.now()))
        .await;
    h.post(&envelope(search(), None, None, h.now())).await;
    let mut other_user = envelope(search(), None, None, h.now());
    other_user["context"]["System"]["user"]["userId"] = json!("amzn1.ask.account.USER-TWO");
    h.post(&other_user).await;

    let turns = h.assistant.turns();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0].shopper.customer, Some(h.customer));
    assert_eq!(turns[0].shopper.anonymous, None);
    assert_eq!(turns[0].state, DialogState::default());
    for unlinked in &turns[1..] {
        assert_eq!(unlinked.shopper.customer, None);
        assert!(unlinked.shopper.anonymous.is_some());
        assert_eq!(unlinked.shopper.basket_token, None);
    }
    assert_eq!(turns[1].shopper.anonymous, turns[2].shopper.anonymous);
    assert_ne!(turns[2].shopper.anonymous, turns[3].shopper.anonymous);
    assert_eq!(turns[2].shopper.anonymous, Some(h.state.anonymous_id(USER)));
}

#[actix_web::test]
async fn the_anonymous_id_is_keyed() {
    let ca = shared_ca();
    let keyed = |key: &str| {
        let mut s = settings();
        s.anonymous_id_key = Some(key.to_owned().into());
        harness_with(s, ca.chain(GOOD_LEAF), &ca.root_pem)
            .state
            .anonymous_id(USER)
    };
    assert_eq!(keyed("key one"), keyed("key one"));
    assert_ne!(keyed("key one"), keyed("key two"));
}

#[actix_web::test]
async fn an_unreachable_account_store_is_an_apology_not_an_error() {
    let h = harness();
    let (status, body) = h
        .post(&envelope(
            intent_request("BasketIntent", json!({})),
            Some(BROKEN_TOKEN),
            None,
            h.now(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["outputSpeech"]["text"], UNAVAILABLE);
    assert!(h.assistant.turns().is_empty());
}

#[actix_web::test]
async fn over_the_rate_limit_the_skill_says_so_per_account() {
    let ca = shared_ca();
    let h = harness_with(
        VoiceSettings {
            requests_per_minute: 2,
            ..settings()
        },
        ca.chain(GOOD_LEAF),
        &ca.root_pem,
    );
    let basket = || intent_request("BasketIntent", json!({}));
    for _ in 0..2 {
        let (_, body) = h
            .post(&envelope(basket(), Some(TOKEN), None, h.now()))
            .await;
        assert_eq!(
            body["response"]["outputSpeech"]["text"],
            "heard BasketContents"
        );
    }
    let (status, body) = h
        .post(&envelope(basket(), Some(TOKEN), None, h.now()))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "still a valid answer for the platform"
    );
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["response"]["outputSpeech"]["text"], TOO_MANY);
    assert_eq!(body["response"]["shouldEndSession"], true);
    // Another (unlinked) user has a budget of their own.
    let (_, body) = h.post(&envelope(basket(), None, None, h.now())).await;
    assert_eq!(
        body["response"]["outputSpeech"]["text"],
        "heard BasketContents"
    );
    assert_eq!(h.assistant.turns().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Verification

#[test]
fn certificate_urls_follow_the_platforms_rules() {
    let accepted = [
        "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "HTTPS://s3.AmazonAWS.com/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/./sub/cert.pem",
    ];
    for url in accepted {
        assert!(check_cert_url(url).is_ok(), "{url}");
    }
    assert_eq!(
        check_cert_url("https://s3.amazonaws.com/echo.api/../echo.api/c.pem")
            .expect("valid")
            .as_str(),
        "https://s3.amazonaws.com/echo.api/c.pem"
    );
    let refused = [
        "http://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "https://notamazon.com/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com.evil.com/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com:444/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/../evil/cert.pem",
        "https://s3.amazonaws.com/echo.api/%2e%2e/evil/cert.pem",
        "https://s3.amazonaws.com/ECHO.API/echo-api-cert.pem",
        "https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem",
        "https://s3.amazonaws.com/invalid.path/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api",
        "https://user:pw@s3.amazonaws.com/echo.api/cert.pem",
        "s3.amazonaws.com/echo.api/cert.pem",
        "",
    ];
    for url in refused {
        assert!(
            matches!(check_cert_url(url), Err(Rejection::BadCertUrl(_))),
            "{url} must be refused"
        );
    }
}

/// One way to spoil a request, and the code it must be refused with.
struct Spoiled {
    what: &'static str,
    code: &'static str,
    body: Value,
    /// Bytes posted (default: the body).
    raw: Option<Vec<u8>>,
    cert_url: Option<&'static str>,
    /// `None`: the correct signature of what is posted.
    signature: Option<Option<String>>,
    /// The chain the fetcher serves (default: a good one).
    chain: Option<String>,
    roots: Option<String>,
}

impl Spoiled {
    fn new(what: &'static str, code: &'static str, body: Value) -> Spoiled {
        Spoiled {
            what,
            code,
            body,
            raw: None,
            cert_url: Some(CERT_URL),
            signature: None,
            chain: None,
            roots: None,
        }
    }
}

#[actix_web::test]
async fn requests_that_fail_verification_are_refused_with_a_reason() {
    let ca = shared_ca();
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole seconds");
    let good = || envelope(launch(), None, None, now);
    let body_bytes = serde_json::to_vec(&good()).expect("body");
    let mut tampered = body_bytes.clone();
    let at = tampered.len() / 2;
    tampered.insert(at, b' ');
    let mut other_app = good();
    other_app["context"]["System"]["application"]["applicationId"] = json!("amzn1.ask.skill.evil");
    other_app["session"]["application"]["applicationId"] = json!("amzn1.ask.skill.evil");
    let mut no_timestamp = good();
    no_timestamp["request"]
        .as_object_mut()
        .expect("request")
        .remove("timestamp");
    let stranger = Ca::new("Stranger");
    let cases = vec![
        Spoiled {
            raw: Some(tampered.clone()),
            signature: Some(Some(sign(&body_bytes))),
            ..Spoiled::new("tampered body", "bad_signature", good())
        },
        Spoiled {
            signature: Some(Some(sign(b"another body"))),
            ..Spoiled::new("signature of another body", "bad_signature", good())
        },
        Spoiled {
            signature: Some(Some("bm90IGEgc2lnbmF0dXJl".into())),
            ..Spoiled::new("garbage signature", "bad_signature", good())
        },
        Spoiled {
            signature: Some(Some("%%% not base64".into())),
            ..Spoiled::new("signature not base64", "bad_signature", good())
        },
        Spoiled {
            signature: Some(None),
            ..Spoiled::new("no signature", "missing_signature", good())
        },
        Spoiled {
            cert_url: None,
            ..Spoiled::new("no certificate URL", "missing_signature", good())
        },
        Spoiled {
            chain: Some(ca.chain(LeafSpec {
                not_before: Duration::days(-60),
                not_after: Duration::days(-1),
                ..GOOD_LEAF
            })),
            ..Spoiled::new("expired certificate", "bad_cert_chain", good())
        },
        Spoiled {
            chain: Some(ca.chain(LeafSpec {
                not_before: Duration::days(1),
                not_after: Duration::days(60),
                ..GOOD_LEAF
            })),
            ..Spoiled::new("certificate not yet valid", "bad_cert_chain", good())
        },
        Spoiled {
            chain: Some(ca.chain(LeafSpec {
                name: "evil.example.com",
                ..GOOD_LEAF
            })),
            ..Spoiled::new("certificate for another name", "wrong_cert_name", good())
        },
        Spoiled {
            chain: Some(ca.chain(LeafSpec {
                name: "echo-api.amazon.com.evil.com",
                ..GOOD_LEAF
            })),
            ..Spoiled::new(
                "certificate for a look-alike name",
                "wrong_cert_name",
                good(),
            )
        },
        Spoiled {
            chain: Some(stranger.chain(GOOD_LEAF)),
            ..Spoiled::new("untrusted root", "bad_cert_chain", good())
        },
        Spoiled {
            chain: Some(
                ca.chain(GOOD_LEAF)
                    .split_inclusive("-----END CERTIFICATE-----")
                    .next()
                    .expect("leaf")
                    .to_owned(),
            ),
            ..Spoiled::new("chain without its intermediate", "bad_cert_chain", good())
        },
        Spoiled {
            chain: Some("not a certificate".into()),
            ..Spoiled::new("chain that is not PEM", "bad_cert_chain", good())
        },
        Spoiled {
            roots: Some(stranger.root_pem.clone()),
            ..Spoiled::new("chain to a root not trusted here", "bad_cert_chain", good())
        },
        Spoiled {
            cert_url: Some("http://s3.amazonaws.com/echo.api/echo-api-cert.pem"),
            ..Spoiled::new("http certificate URL", "bad_cert_url", good())
        },
        Spoiled {
            cert_url: Some("https://notamazon.com/echo.api/echo-api-cert.pem"),
            ..Spoiled::new("other host", "bad_cert_url", good())
        },
        Spoiled {
            cert_url: Some("https://s3.amazonaws.com:444/echo.api/echo-api-cert.pem"),
            ..Spoiled::new("port 444", "bad_cert_url", good())
        },
        Spoiled {
            cert_url: Some("https://s3.amazonaws.com/echo.api/../evil"),
            ..Spoiled::new("path escaping /echo.api/", "bad_cert_url", good())
        },
        Spoiled {
            cert_url: Some("https://s3.amazonaws.com/ECHO.API/echo-api-cert.pem"),
            ..Spoiled::new("path in capitals", "bad_cert_url", good())
        },
        Spoiled::new(
            "timestamp 151 s ago",
            "stale_timestamp",
            envelope(launch(), None, None, now - Duration::seconds(151)),
        ),
        Spoiled::new(
            "timestamp 151 s ahead",
            "stale_timestamp",
            envelope(launch(), None, None, now + Duration::seconds(151)),
        ),
        Spoiled::new("no timestamp", "bad_timestamp", no_timestamp),
        Spoiled::new("another skill", "unknown_application", other_app),
        Spoiled {
            raw: Some(b"{\"request\": ".to_vec()),
            ..Spoiled::new("not JSON", "malformed_request", good())
        },
    ];
    for case in cases {
        let h = harness_with(
            settings(),
            case.chain.clone().unwrap_or_else(|| ca.chain(GOOD_LEAF)),
            case.roots.as_deref().unwrap_or(&ca.root_pem),
        );
        *h.clock.lock().expect("clock") = now;
        let raw = case
            .raw
            .clone()
            .unwrap_or_else(|| serde_json::to_vec(&case.body).expect("body"));
        let signature = case.signature.clone().unwrap_or_else(|| Some(sign(&raw)));
        let (status, body) = h.post_raw(raw, case.cert_url, signature.as_deref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", case.what);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.what);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            case.what
        );
        assert!(h.assistant.turns().is_empty(), "{}", case.what);
    }
}

#[actix_web::test]
async fn a_timestamp_150_seconds_off_is_still_accepted() {
    let h = harness();
    for offset in [-150, 150] {
        let at = h.now() + Duration::seconds(offset);
        let (status, body) = h.post(&envelope(launch(), None, None, at)).await;
        assert_eq!(status, StatusCode::OK, "{offset}: {body}");
    }
}

#[actix_web::test]
async fn the_chain_is_cached_until_the_leaf_expires() {
    let ca = shared_ca();
    let short = LeafSpec {
        not_after: Duration::hours(1),
        ..GOOD_LEAF
    };
    let h = harness_with(settings(), ca.chain(short), &ca.root_pem);
    for _ in 0..3 {
        let (status, _) = h.post(&envelope(launch(), None, None, h.now())).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(h.fetcher.fetches(), 1);
    assert_eq!(h.fetcher.urls.lock().expect("urls")[0], CERT_URL);
    // Two hours later the cached leaf has expired: the chain is fetched again (a renewed one).
    *h.fetcher.pem.lock().expect("pem") = ca.chain(LeafSpec {
        not_after: Duration::days(2),
        ..GOOD_LEAF
    });
    let later = h.now() + Duration::hours(2);
    *h.clock.lock().expect("clock") = later;
    let (status, body) = h.post(&envelope(launch(), None, None, later)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.fetcher.fetches(), 2);
}

#[actix_web::test]
async fn unsigned_requests_pass_only_when_signatures_are_switched_off() {
    let ca = shared_ca();
    let h = harness_with(
        VoiceSettings {
            verify_signatures: false,
            ..settings()
        },
        ca.chain(GOOD_LEAF),
        &ca.root_pem,
    );
    let raw = serde_json::to_vec(&envelope(launch(), None, None, h.now())).expect("body");
    let (status, _) = h.post_raw(raw.clone(), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.fetcher.fetches(), 0);
    // The application id and the timestamp are still checked.
    let stale = envelope(launch(), None, None, h.now() - Duration::seconds(400));
    let (status, body) = h
        .post_raw(serde_json::to_vec(&stale).expect("body"), None, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("stale_timestamp"))
    );
    let h = harness(); // signatures on (the default)
    let (status, body) = h.post_raw(raw, None, None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("missing_signature"))
    );
}

#[actix_web::test]
async fn the_development_settings_read_the_roots_and_the_chain_from_files() {
    let ca = shared_ca();
    let dir = tempfile::tempdir().expect("temp dir");
    let roots = dir.path().join("root.pem");
    let chain = dir.path().join("chain.pem");
    std::fs::write(&roots, &ca.root_pem).expect("write roots");
    std::fs::write(&chain, ca.chain(GOOD_LEAF)).expect("write chain");
    let settings = VoiceSettings {
        development: VoiceDevelopment {
            trust_roots_pem: Some(roots),
            cert_chain_source: Some(chain.display().to_string()),
        },
        ..settings()
    };
    let assistant = Arc::new(FakeAssistant::default());
    let accounts = Arc::new(FakeAccounts {
        customer: CustomerId::new(),
    });
    let state = VoiceState::new(&settings, assistant.clone(), accounts).expect("voice state");
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state))
            .configure(configure),
    )
    .await;
    let raw = serde_json::to_vec(&envelope(launch(), None, None, OffsetDateTime::now_utc()))
        .expect("body");
    let req = TestRequest::post()
        .uri("/voice/alexa")
        .insert_header(("SignatureCertChainUrl", CERT_URL))
        .insert_header(("Signature-256", sign(&raw)))
        .set_payload(raw)
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(assistant.turns().len(), 1);

    let missing = VoiceSettings {
        development: VoiceDevelopment {
            trust_roots_pem: Some(dir.path().join("absent.pem")),
            cert_chain_source: None,
        },
        ..settings.clone()
    };
    let accounts = Arc::new(FakeAccounts {
        customer: CustomerId::new(),
    });
    assert!(VoiceState::new(&missing, assistant, accounts).is_err());
}

#[test]
fn the_voice_settings_default_to_verifying_and_load_from_toml() {
    let defaults = VoiceSettings::default();
    assert!(defaults.verify_signatures);
    assert_eq!(defaults.requests_per_minute, 30);
    assert!(!defaults.development.is_set());
    let parsed: HashMap<String, VoiceSettings> = settings_from_json(
        r#"{"voice": {"skill_ids": ["amzn1.ask.skill.x"], "development": {"trust_roots_pem": "data/voice-sim/root.pem"}}}"#,
    );
    let voice = &parsed["voice"];
    assert_eq!(voice.skill_ids, vec!["amzn1.ask.skill.x".to_owned()]);
    assert!(voice.verify_signatures);
    assert!(voice.development.is_set());
    assert!(serde_json::from_str::<VoiceSettings>(r#"{"verify_signature": false}"#).is_err());
}

fn settings_from_json(json_text: &str) -> HashMap<String, VoiceSettings> {
    serde_json::from_str(json_text).expect("settings")
}
