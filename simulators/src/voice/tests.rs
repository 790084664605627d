//! The simulator against the real skill endpoint (`channels::voice`, a fake assistant behind
//! it), trusting the simulator's chain through the hub's development settings and fetching it
//! from the simulator over HTTP.

use super::script::Script;
use super::signer::SimChain;
use super::{play, serve_chain, Target, DEFAULT_CERT_URL, DEFAULT_SKILL_ID, DEFAULT_USER_ID};
use crate::common::server::Running;
use async_trait::async_trait;
use channels::assistant::{Conversation, DialogState, Intent, LinkedAccounts, Reply, Turn};
use channels::voice::{VoiceDevelopment, VoiceSettings, VoiceState};
use channels::BackendError;
use protocol::CustomerId;
use serde_json::json;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "sim-linked-token";

/// Answers with the intent, whether the user is linked and the turn number of the session.
#[derive(Default)]
struct Echo {
    turns: Mutex<Vec<Turn>>,
}

#[async_trait]
impl Conversation for Echo {
    async fn respond(&self, turn: Turn) -> Reply {
        let n = turn
            .state
            .pending
            .as_ref()
            .and_then(|p| p["n"].as_u64())
            .unwrap_or(0)
            + 1;
        let linked = if turn.shopper.customer.is_some() {
            "linked"
        } else {
            "unlinked"
        };
        let text = format!("turn {n}, {linked}: {:?}", turn.intent);
        let end = turn.intent == Intent::Stop;
        self.turns.lock().expect("turns").push(turn);
        Reply {
            text: text.clone(),
            ssml: Some(format!("<speak>{text}</speak>")),
            reprompt: None,
            end_session: end,
            card: None,
            link_account: linked == "unlinked",
            state: DialogState {
                pending: Some(json!({ "n": n })),
            },
        }
    }
}

struct Accounts(CustomerId);

#[async_trait]
impl LinkedAccounts for Accounts {
    async fn customer_for_access_token(
        &self,
        token: &str,
    ) -> Result<Option<CustomerId>, BackendError> {
        Ok((token == TOKEN).then_some(self.0))
    }
}

const SCRIPT: &str = r#"{ "turns": [
  { "you": "open omni market", "request": "LaunchRequest", "expect": "turn 1, linked: Welcome" },
  { "you": "add two bags of coffee", "intent": "AddToBasketIntent",
    "slots": { "product": { "value": "bags of coffee", "resolved": "coffee" }, "quantity": "2" },
    "expect": "turn 2, linked: AddToBasket { product: \"coffee\", quantity: Some(\"2\") }" },
  { "you": "yes", "intent": "AMAZON.YesIntent", "expect": "Choose { choice: \"yes\" }", "expect_end": false },
  { "you": "stop", "intent": "AMAZON.StopIntent", "expect": "turn 4", "expect_end": true },
  { "you": "open omni market again", "request": "LaunchRequest", "expect": "turn 1" },
  { "you": "(silence)", "request": "SessionEndedRequest" }
] }"#;

#[actix_web::test]
async fn a_script_plays_signed_against_the_skill_endpoint() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    let (chain, made) = SimChain::load_or_create(&dir).expect("chain");
    assert!(made);
    let (again, made_again) = SimChain::load_or_create(&dir).expect("chain again");
    assert!(!made_again, "a kept chain is reused");
    assert_eq!(again.root_pem, chain.root_pem);
    assert_eq!(
        again.sign(b"x").expect("sign"),
        chain.sign(b"x").expect("sign")
    );

    let chain = Arc::new(chain);
    let mut certs =
        serve_chain("127.0.0.1:0".parse().expect("addr"), chain.clone()).expect("serve");
    let settings = VoiceSettings {
        skill_ids: vec![DEFAULT_SKILL_ID.into()],
        development: VoiceDevelopment {
            trust_roots_pem: Some(dir.join("root.pem")),
            cert_chain_source: Some(format!(
                "http://{}/echo.api/omnihub-sim.pem",
                certs.address()
            )),
        },
        ..VoiceSettings::default()
    };
    let echo = Arc::new(Echo::default());
    let customer = CustomerId::new();
    let state = actix_web::web::Data::new(
        VoiceState::new(&settings, echo.clone(), Arc::new(Accounts(customer))).expect("state"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut hub = Running::start(listener, move |cfg| {
        cfg.app_data(state.clone());
        channels::voice::configure(cfg);
    })
    .expect("hub");
    let mut target = Target {
        endpoint: format!("http://{}/voice/alexa", hub.address()),
        skill_id: DEFAULT_SKILL_ID.into(),
        user_id: DEFAULT_USER_ID.into(),
        access_token: Some(TOKEN.into()),
        cert_url: DEFAULT_CERT_URL.into(),
    };
    let script = Script::parse(SCRIPT).expect("script");
    let mut out = Vec::new();
    let played = play(&target, &chain, &script, &mut out)
        .await
        .expect("play");
    let printed = String::from_utf8(out).expect("utf-8");
    for turn in &played {
        assert_eq!(turn.status, 200, "{}: {}", turn.you, turn.body);
        assert!(
            turn.problems.is_empty(),
            "{}: {:?}\n{printed}",
            turn.you,
            turn.problems
        );
    }
    assert!(
        printed.contains("you:   add two bags of coffee\nskill: turn 2, linked"),
        "{printed}"
    );
    assert!(printed.contains("[session ends]"), "{printed}");
    let turns = echo.turns.lock().expect("turns").clone();
    assert_eq!(turns.len(), 5, "the SessionEndedRequest is no turn");
    assert!(turns.iter().all(|t| t.shopper.customer == Some(customer)));

    // Unlinked, and then for a skill the hub does not serve: the script's checks catch both.
    target.access_token = None;
    let played = play(&target, &chain, &script, &mut Vec::new())
        .await
        .expect("play");
    assert!(played[0]
        .problems
        .iter()
        .any(|p| p.contains("turn 1, linked")));
    assert_eq!(played[0].body["response"]["card"]["type"], "LinkAccount");
    target.skill_id = "amzn1.ask.skill.someone-else".into();
    let played = play(&target, &chain, &script, &mut Vec::new())
        .await
        .expect("play");
    assert_eq!(played[0].status, 400);
    assert_eq!(played[0].body["error"]["code"], "unknown_application");

    hub.stop("hub").await;
    certs.stop("voice").await;
}

#[test]
fn the_demo_script_parses_and_bad_scripts_say_why() {
    let demo = Script::parse(super::script::DEMO_SCRIPT).expect("demo script");
    assert!(demo.turns.len() >= 5);
    let no_intent = Script::parse(r#"{ "turns": [ { "you": "hello" } ] }"#);
    assert!(no_intent.expect_err("refused").contains("needs an intent"));
    assert!(Script::parse(r#"{ "turns": [] }"#).is_err());
    assert!(
        Script::parse(r#"{ "turns": [ { "you": "x", "intent": "A", "slot": {} } ] }"#).is_err()
    );
}

#[test]
fn ssml_prints_as_words_with_pauses_as_spaces() {
    let ssml = "<speak>Your basket has 2 items:<break time=\"300ms\"/>2 × Beans;<break time=\"300ms\"/>The total is <say-as interpret-as=\"cardinal\">5</say-as> euros.</speak>";
    assert_eq!(
        super::strip_tags(ssml),
        "Your basket has 2 items: 2 × Beans; The total is 5 euros."
    );
}
