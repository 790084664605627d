//! The backend trait: everything the channel adapters need from the hub (or, later, from an edge
//! node). Handlers hold an `Arc<dyn Backend>`; they never compute a price or touch storage.

use async_trait::async_trait;
use protocol::pricing::PricedBasket;
use protocol::{AnonymousId, BasketId, CatalogSnapshot, Channel, CustomerId, Event, Sku};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Who is asking: the signed-in customer (if any), the anonymous basket token they hold (if
/// any) and the anonymous id of the browser or app (for events).
#[derive(Debug, Clone, Default)]
pub struct Shopper {
    pub customer: Option<CustomerId>,
    pub basket_token: Option<String>,
    pub anonymous: Option<AnonymousId>,
}

impl Shopper {
    /// Who an event is about: the customer, else the anonymous id (a fresh one if the client
    /// sent none).
    pub fn subject(&self) -> protocol::Subject {
        match (self.customer, self.anonymous) {
            (Some(c), _) => protocol::Subject::Customer(c),
            (None, Some(a)) => protocol::Subject::Anonymous(a),
            (None, None) => protocol::Subject::Anonymous(AnonymousId::new()),
        }
    }
}

/// A basket as every channel shows it: priced by the hub.
#[derive(Debug, Clone, Serialize)]
pub struct BasketView {
    pub id: BasketId,
    pub version: u64,
    /// `customer` or `anonymous`.
    pub owner: &'static str,
    #[serde(flatten)]
    pub priced: PricedBasket,
}

/// A change to a basket. Quantities are checked by the hub (1..=999, within stock).
#[derive(Debug, Clone)]
pub enum BasketCommand {
    Add { sku: Sku, quantity: i64 },
    SetQuantity { sku: Sku, quantity: i64 },
    Remove { sku: Sku },
    Clear,
}

/// A new anonymous basket and the secret token that alone reaches it.
#[derive(Debug, Clone)]
pub struct NewBasket {
    pub basket: BasketView,
    /// `Some` for an anonymous basket: hand it to the client once (cookie or header).
    pub token: Option<String>,
}

/// A customer as they see themselves.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub id: CustomerId,
    pub email: String,
    pub name: String,
    pub basket_id: Option<BasketId>,
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session_token: String,
    pub customer: CustomerView,
    /// The customer's basket, with any anonymous basket merged in.
    pub basket: BasketView,
}

/// Availability of one SKU at the online warehouse.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Availability {
    pub available: i64,
}

/// What went wrong, in terms a channel can show.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Unknown, or not yours: the two are never told apart.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Input the hub refused; the message says what to fix.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("email or password is wrong")]
    BadCredentials,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("sign in first")]
    Unauthenticated,
    /// The hub could not do it right now (storage, a stopped actor): retry.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
}

/// Registration input.
#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// The hub as the channels see it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The current catalog snapshot (cheap: an `Arc` clone).
    fn catalog(&self) -> Arc<CatalogSnapshot>;
    /// Online availability of these SKUs, in the same order.
    async fn availability(&self, skus: &[Sku]) -> Result<Vec<Availability>, BackendError>;

    async fn register(
        &self,
        registration: Registration,
        shopper: &Shopper,
        channel: Channel,
    ) -> Result<SignedIn, BackendError>;
    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        shopper: &Shopper,
        channel: Channel,
    ) -> Result<SignedIn, BackendError>;
    async fn sign_out(&self, session_token: &str, shopper: &Shopper, channel: Channel);
    /// The customer a session token belongs to, if it is live.
    async fn session(&self, session_token: &str) -> Option<CustomerId>;
    async fn customer(&self, id: CustomerId) -> Result<CustomerView, BackendError>;

    /// The shopper's current basket: the customer's one basket, or the anonymous one their token
    /// reaches; `None` if they have none yet.
    async fn current_basket(&self, shopper: &Shopper) -> Result<Option<BasketView>, BackendError>;
    /// Creates a basket (or returns the customer's existing one).
    async fn create_basket(&self, shopper: &Shopper) -> Result<NewBasket, BackendError>;
    /// A basket the shopper may see; `NotFound` otherwise.
    async fn basket(&self, shopper: &Shopper, id: BasketId) -> Result<BasketView, BackendError>;
    /// Applies a change; acknowledged only once durable.
    async fn change_basket(
        &self,
        shopper: &Shopper,
        id: BasketId,
        command: BasketCommand,
        channel: Channel,
    ) -> Result<BasketView, BackendError>;
    /// Every later change of the basket, as it happens.
    async fn watch_basket(
        &self,
        shopper: &Shopper,
        id: BasketId,
    ) -> Result<(BasketView, broadcast::Receiver<BasketView>), BackendError>;

    /// Records an interaction (off the request's hot path).
    fn record(&self, event: Event);
    /// The customer's own events, newest first.
    async fn timeline(
        &self,
        customer: CustomerId,
        limit: usize,
    ) -> Result<Vec<Event>, BackendError>;

    /// Whether storage is open and workers run.
    async fn ready(&self) -> bool;
}
