//! The Alexa Skills Kit request and response JSON, as far as the skill uses it. Unknown fields
//! are ignored (the platform adds fields over time); only what the skill reads is typed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The envelope the platform posts for every request.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestEnvelope {
    #[serde(default)]
    pub session: Option<Session>,
    #[serde(default)]
    pub context: Option<Context>,
    pub request: Request,
}

impl RequestEnvelope {
    /// The skill the request is for: `context.System.application`, else the session's.
    pub fn application_id(&self) -> Option<&str> {
        let from_context = self
            .context
            .as_ref()
            .and_then(|c| c.system.application.as_ref());
        let from_session = self.session.as_ref().and_then(|s| s.application.as_ref());
        from_context
            .or(from_session)
            .map(|a| a.application_id.as_str())
    }

    /// The platform's user: `context.System.user`, else the session's.
    pub fn user(&self) -> Option<&User> {
        let from_context = self.context.as_ref().and_then(|c| c.system.user.as_ref());
        from_context.or_else(|| self.session.as_ref().and_then(|s| s.user.as_ref()))
    }

    /// The access token from account linking, if the user linked their account.
    pub fn access_token(&self) -> Option<&str> {
        self.user()
            .and_then(|u| u.access_token.as_deref())
            .filter(|t| !t.is_empty())
    }

    /// The session attributes the skill returned on the previous turn.
    pub fn attributes(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.session.as_ref().and_then(|s| s.attributes.as_ref())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    #[serde(default)]
    pub new: bool,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub application: Option<Application>,
    #[serde(default)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Context {
    #[serde(rename = "System")]
    pub system: System,
}

#[derive(Debug, Clone, Deserialize)]
pub struct System {
    #[serde(default)]
    pub application: Option<Application>,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub application_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: String,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// When the platform sent the request: an ISO 8601 string (some request types have sent epoch
/// milliseconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Text(String),
    EpochMillis(i64),
}

/// The request proper. `type` says which: `LaunchRequest`, `IntentRequest` (with `intent`),
/// `SessionEndedRequest` (with `reason`), or another type the skill does not handle.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub request_id: Option<String>,
    /// Required by the platform; a request without one fails verification.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub intent: Option<IntentBody>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IntentBody {
    pub name: String,
    #[serde(default)]
    pub slots: BTreeMap<String, Slot>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Slot {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub resolutions: Option<Resolutions>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolutions {
    #[serde(default)]
    pub resolutions_per_authority: Vec<Authority>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Authority {
    pub status: ResolutionStatus,
    #[serde(default)]
    pub values: Vec<ResolvedValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResolutionStatus {
    /// `ER_SUCCESS_MATCH`, `ER_SUCCESS_NO_MATCH`, `ER_ERROR_TIMEOUT`, ...
    pub code: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResolvedValue {
    pub value: ResolvedName,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResolvedName {
    pub name: String,
}

impl Slot {
    /// What the slot holds: the first entity-resolution match (the catalogue's own name for
    /// what was said), else the value as heard; blank counts as absent.
    pub fn resolved(&self) -> Option<&str> {
        let matched = self.resolutions.as_ref().and_then(|r| {
            r.resolutions_per_authority
                .iter()
                .filter(|a| a.status.code == "ER_SUCCESS_MATCH")
                .find_map(|a| a.values.first())
                .map(|v| v.value.name.as_str())
        });
        matched
            .or(self.value.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// The skill's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseEnvelope {
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub response: Response,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_speech: Option<OutputSpeech>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<Reprompt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub should_end_session: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum OutputSpeech {
    PlainText {
        text: String,
    },
    #[serde(rename = "SSML")]
    Ssml {
        ssml: String,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reprompt {
    pub output_speech: OutputSpeech,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum Card {
    Simple {
        title: String,
        content: String,
    },
    /// Asks the user to link their account in the companion app.
    LinkAccount,
}

impl ResponseEnvelope {
    pub const VERSION: &'static str = "1.0";

    /// Plain speech, with or without ending the session.
    pub fn speak(text: &str, end_session: bool) -> ResponseEnvelope {
        ResponseEnvelope {
            version: Self::VERSION,
            session_attributes: None,
            response: Response {
                output_speech: Some(OutputSpeech::PlainText { text: text.into() }),
                should_end_session: Some(end_session),
                ..Response::default()
            },
        }
    }

    /// The answer to a `SessionEndedRequest`: the platform accepts no speech there.
    pub fn empty() -> ResponseEnvelope {
        ResponseEnvelope {
            version: Self::VERSION,
            session_attributes: None,
            response: Response::default(),
        }
    }
}
