//! The conversational assistant: one intent model shared by every conversational channel (the
//! voice-assistant skill and the chat box). A channel adapter turns what it received (a voice
//! platform's `IntentRequest`, a chat message) into a [`Turn`], asks a [`Conversation`] for the
//! [`Reply`] and renders it in its own format. The assistant works over the same
//! [`crate::Backend`] as the storefront, so "add two bags of coffee" by voice lands in the basket
//! the shopper sees on the web, in the app and at the till.

pub mod chat;
mod engine;
pub mod nlu;

pub use engine::{escape_ssml, money_words, Assistant, AssistantSettings, Outcome, StoreHours};

use crate::backend::{BackendError, Shopper};
use async_trait::async_trait;
use protocol::{Channel, CustomerId};
use serde::{Deserialize, Serialize};

/// What the shopper wants, whatever the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// The conversation opens ("open the shop", a voice `LaunchRequest`, a chat box opened).
    Welcome,
    Help,
    /// "Do you have oat milk?"
    Search {
        query: String,
    },
    /// "Add two bags of coffee": the product as said, the quantity as said (a number or a word,
    /// possibly absent or absurd; the assistant validates it).
    AddToBasket {
        product: String,
        quantity: Option<String>,
    },
    /// The answer to a question the assistant asked (which of several products: "the second
    /// one", "2", a name; or yes/no).
    Choose {
        choice: String,
    },
    /// "What is in my basket?"
    BasketContents,
    /// "Remove the coffee."
    RemoveItem {
        product: String,
    },
    /// "Where is my order?" (the latest, or a named order number).
    OrderStatus {
        order: Option<String>,
    },
    /// "Reorder my last order."
    Reorder,
    /// Opening hours of a store, and stock of a product there.
    StoreInfo {
        store: Option<String>,
        product: Option<String>,
    },
    /// "Check out": never completed by voice or chat; the assistant sends a checkout link.
    Checkout,
    /// "Stop", "cancel", "goodbye".
    Stop,
    /// Anything else (the utterance, when the channel has it).
    Unknown {
        utterance: Option<String>,
    },
}

/// What the assistant remembers between turns of one conversation (e.g. the products it offered
/// to choose from). The channel keeps it opaque: the voice skill carries it in the session
/// attributes, the chat channel in its conversation record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DialogState {
    /// The question awaiting an answer, if any (owned by the assistant).
    pub pending: Option<serde_json::Value>,
}

/// One turn of a conversation.
#[derive(Debug, Clone)]
pub struct Turn {
    /// `Channel::Voice` or `Channel::Chat`.
    pub channel: Channel,
    /// Who is speaking: for voice, the customer of the linked account (or nobody, with an
    /// anonymous id derived from the platform's user id); for chat, the storefront session.
    pub shopper: Shopper,
    pub intent: Intent,
    pub state: DialogState,
}

/// A card shown beside the answer (a voice platform's companion app, the chat window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    pub title: String,
    pub text: String,
}

/// The assistant's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// The answer as plain text (chat shows it; voice speaks it when there is no SSML).
    pub text: String,
    /// The answer as SSML (`<speak>…</speak>`), when it is better spoken that way.
    pub ssml: Option<String>,
    /// What to say if the shopper says nothing (the conversation stays open).
    pub reprompt: Option<String>,
    /// Whether the conversation ends with this answer.
    pub end_session: bool,
    pub card: Option<Card>,
    /// Ask the shopper to link their account (the voice platform shows its account-linking card).
    pub link_account: bool,
    /// The state to carry to the next turn.
    pub state: DialogState,
}

/// Answers turns; the assistant's implementation lives beside this model.
#[async_trait]
pub trait Conversation: Send + Sync {
    async fn respond(&self, turn: Turn) -> Reply;
}

/// Resolves an access token from account linking (OAuth 2.0, the hub as authorization server)
/// to the customer it was issued for: `None` for an unknown, expired or revoked token.
#[async_trait]
pub trait LinkedAccounts: Send + Sync {
    async fn customer_for_access_token(
        &self,
        token: &str,
    ) -> Result<Option<CustomerId>, BackendError>;
}
