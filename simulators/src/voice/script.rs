//! A scripted conversation: each turn is what the user says (a label), the request the
//! platform makes of it (launch, an intent with its slots, or the end of the session) and,
//! optionally, what the skill's answer must contain.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The script played when none is given (`scripts/demo.json`).
pub const DEMO_SCRIPT: &str = include_str!("scripts/demo.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub description: String,
    pub turns: Vec<ScriptTurn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    /// What the user says (printed as `you:`).
    pub you: String,
    /// The request type; default `IntentRequest` (`LaunchRequest` and `SessionEndedRequest`
    /// take no intent).
    #[serde(default)]
    pub request: Option<RequestKind>,
    /// The intent of an `IntentRequest`, e.g. `AddToBasketIntent` or `AMAZON.YesIntent`.
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotValue>,
    /// A fragment the answer's speech must contain (case-insensitive).
    #[serde(default)]
    pub expect: Option<String>,
    /// Whether the answer must end (or keep) the session.
    #[serde(default)]
    pub expect_end: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestKind {
    LaunchRequest,
    IntentRequest,
    SessionEndedRequest,
}

/// A slot as heard, optionally with the value entity resolution matched.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SlotValue {
    Heard(String),
    Resolved {
        value: String,
        #[serde(default)]
        resolved: Option<String>,
    },
}

impl Script {
    pub fn parse(text: &str) -> Result<Script, String> {
        let script: Script = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (i, turn) in script.turns.iter().enumerate() {
            if turn.kind() == RequestKind::IntentRequest && turn.intent.is_none() {
                return Err(format!(
                    "turn {} ({}): an IntentRequest needs an intent",
                    i + 1,
                    turn.you
                ));
            }
        }
        if script.turns.is_empty() {
            return Err("the script has no turns".into());
        }
        Ok(script)
    }
}

impl ScriptTurn {
    pub fn kind(&self) -> RequestKind {
        self.request.unwrap_or(RequestKind::IntentRequest)
    }
}
