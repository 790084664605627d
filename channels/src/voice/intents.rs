//! The skill's interaction model (`docs/voice/interaction-model.json`) mapped to the assistant's
//! [`Intent`], and the assistant's [`Reply`] rendered as the platform's response.

use super::ask::{Card, IntentBody, OutputSpeech, Reprompt, Response, ResponseEnvelope};
use crate::assistant::{DialogState, Intent, Reply};

/// The longest slot value passed on (the platform's own limit is about this; anything longer
/// is not something a person said).
const MAX_SLOT_CHARS: usize = 200;
/// The session attribute that carries the assistant's [`DialogState`].
pub const DIALOG_STATE_ATTRIBUTE: &str = "dialogState";

/// Every intent of the interaction model, built-ins included.
pub const MODEL_INTENTS: [&str; 15] = [
    "SearchIntent",
    "AddToBasketIntent",
    "ChooseIntent",
    "BasketIntent",
    "RemoveItemIntent",
    "OrderStatusIntent",
    "ReorderIntent",
    "StoreInfoIntent",
    "CheckoutIntent",
    "AMAZON.HelpIntent",
    "AMAZON.StopIntent",
    "AMAZON.CancelIntent",
    "AMAZON.FallbackIntent",
    "AMAZON.YesIntent",
    "AMAZON.NoIntent",
];

/// The assistant's intent for an `IntentRequest`; an intent the model does not have is
/// [`Intent::Unknown`].
pub fn intent_for(body: &IntentBody) -> Intent {
    let slot = |name: &str| {
        body.slots
            .get(name)
            .and_then(|s| s.resolved())
            .map(|v| v.chars().take(MAX_SLOT_CHARS).collect::<String>())
    };
    let heard = |name: &str| slot(name).unwrap_or_default();
    match body.name.as_str() {
        "SearchIntent" => Intent::Search {
            query: heard("product"),
        },
        "AddToBasketIntent" => Intent::AddToBasket {
            product: heard("product"),
            quantity: slot("quantity"),
        },
        "ChooseIntent" => Intent::Choose {
            choice: heard("choice"),
        },
        "AMAZON.YesIntent" => Intent::Choose {
            choice: "yes".into(),
        },
        "AMAZON.NoIntent" => Intent::Choose {
            choice: "no".into(),
        },
        "BasketIntent" => Intent::BasketContents,
        "RemoveItemIntent" => Intent::RemoveItem {
            product: heard("product"),
        },
        "OrderStatusIntent" => Intent::OrderStatus {
            order: slot("order"),
        },
        "ReorderIntent" => Intent::Reorder,
        "StoreInfoIntent" => Intent::StoreInfo {
            store: slot("store"),
            product: slot("product"),
        },
        "CheckoutIntent" => Intent::Checkout,
        "AMAZON.HelpIntent" => Intent::Help,
        "AMAZON.StopIntent" | "AMAZON.CancelIntent" => Intent::Stop,
        _ => Intent::Unknown { utterance: None },
    }
}

/// The dialog state the previous turn left in the session attributes (none, or one this
/// version cannot read: a fresh state).
pub fn dialog_state(
    attributes: Option<&serde_json::Map<String, serde_json::Value>>,
) -> DialogState {
    attributes
        .and_then(|a| a.get(DIALOG_STATE_ATTRIBUTE))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The platform's response for the assistant's reply.
pub fn render(reply: Reply) -> ResponseEnvelope {
    let speech = match reply.ssml {
        Some(ssml) => OutputSpeech::Ssml {
            ssml: as_speak(ssml),
        },
        None => OutputSpeech::PlainText { text: reply.text },
    };
    let card = if reply.link_account {
        Some(Card::LinkAccount)
    } else {
        reply.card.map(|c| Card::Simple {
            title: c.title,
            content: c.text,
        })
    };
    let reprompt = reply
        .reprompt
        .filter(|_| !reply.end_session)
        .map(|text| Reprompt {
            output_speech: OutputSpeech::PlainText { text },
        });
    let mut attributes = serde_json::Map::new();
    if let Ok(state) = serde_json::to_value(&reply.state) {
        attributes.insert(DIALOG_STATE_ATTRIBUTE.into(), state);
    }
    ResponseEnvelope {
        version: ResponseEnvelope::VERSION,
        session_attributes: Some(attributes),
        response: Response {
            output_speech: Some(speech),
            card,
            reprompt,
            should_end_session: Some(reply.end_session),
        },
    }
}

/// SSML must be one `<speak>` element.
fn as_speak(ssml: String) -> String {
    if ssml.trim_start().starts_with("<speak>") {
        ssml
    } else {
        format!("<speak>{ssml}</speak>")
    }
}
