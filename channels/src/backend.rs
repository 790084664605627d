//! The backend trait: everything the channel adapters need from the hub (or, later, from an edge
//! node). Handlers hold an `Arc<dyn Backend>`; they never compute a price or touch storage.

use async_trait::async_trait;
use protocol::checkout::{Address, Breakdown, FieldError, ShippingOption};
use protocol::order::{CheckoutState, Progress};
use protocol::pricing::PricedBasket;
use protocol::{
    AnonymousId, BasketId, CatalogSnapshot, Channel, CheckoutId, CustomerId, Event, Money, OrderId,
    Sku,
};
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;
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
    /// Coupon codes entered on this basket, each with whether it applies and why not.
    pub coupons: Vec<CouponStatus>,
    /// The payment in progress, if any: the basket is locked until it is paid, cancelled or
    /// expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutSummary>,
}

/// A coupon code on a basket, as the shopper sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CouponStatus {
    pub code: String,
    /// Whether its promotion applies to the basket now.
    pub applied: bool,
    /// Why not (a threshold not reached, expired, used up), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A payment in progress, as a basket shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutSummary {
    pub id: CheckoutId,
    pub state: CheckoutState,
    pub payment_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub hold_expires_at: OffsetDateTime,
    pub total: Money,
    pub message: Option<String>,
}

/// What the shopper asks for at checkout. The client never sends prices: the hub computes them.
#[derive(Debug, Clone)]
pub struct CheckoutInput {
    /// Required for guests; a signed-in customer's account email is used when absent.
    pub email: Option<String>,
    pub address: Address,
    pub shipping_method: String,
}

/// The shipping options and, once a method is chosen, the whole price of a checkout.
#[derive(Debug, Clone, Serialize)]
pub struct QuoteView {
    pub country: String,
    pub shipping_options: Vec<ShippingOption>,
    pub breakdown: Option<Breakdown>,
}

/// A link to an order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRef {
    pub id: OrderId,
    pub number: String,
    /// Where the shopper (or a guest, with the key in it) sees the order.
    pub url: String,
}

/// A checkout as the shopper sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutView {
    pub id: CheckoutId,
    pub basket_id: BasketId,
    pub state: CheckoutState,
    /// The provider's hosted payment page (while the payment is pending).
    pub payment_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub hold_expires_at: OffsetDateTime,
    pub email: String,
    pub address: Address,
    pub breakdown: Breakdown,
    /// What the shopper should know (a decline, an expiry) in plain words.
    pub message: Option<String>,
    pub order: Option<OrderRef>,
}

/// One refund of an order.
#[derive(Debug, Clone, Serialize)]
pub struct RefundView {
    pub amount: Money,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An order as its customer (or a guest with the link) sees it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub id: OrderId,
    pub number: String,
    /// In words: `Paid`, `Shipped`, `Cancelled`, `Refunded`, …
    pub status: &'static str,
    pub progress: Progress,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub channel: Channel,
    pub email: String,
    pub address: Address,
    pub breakdown: Breakdown,
    pub paid: Money,
    pub refunded: Money,
    pub refunds: Vec<RefundView>,
    pub cancelled: Option<String>,
    /// Set when a person at the shop must look at the order (the shopper is told what happens).
    pub needs_attention: Option<String>,
    /// The order-lookup link (with its key) for guests.
    pub url: String,
    /// Parcels with their carrier, tracking number and progress.
    pub shipments: Vec<protocol::order::ShipmentRecord>,
    /// What happened, oldest first.
    pub timeline: Vec<protocol::order::TimelineEntry>,
}

/// A change to a basket. Quantities are checked by the hub (1..=999, within stock).
#[derive(Debug, Clone)]
pub enum BasketCommand {
    Add {
        sku: Sku,
        quantity: i64,
    },
    SetQuantity {
        sku: Sku,
        quantity: i64,
    },
    Remove {
        sku: Sku,
    },
    Clear,
    /// Enters a coupon code. `client` identifies who is typing codes (the client address), so
    /// the hub can refuse a run of invalid codes (guessing) with 429.
    ApplyCoupon {
        code: String,
        client: String,
    },
    RemoveCoupon {
        code: String,
    },
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

/// What finds a customer at a store's till.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InStoreDetails {
    pub phone: Option<String>,
    pub loyalty_number: Option<String>,
}

/// A change of [`InStoreDetails`], as typed (`None`: leave it; `Some(None)`: remove it).
#[derive(Debug, Clone, Default)]
pub struct InStoreChange {
    pub phone: Option<Option<String>>,
    pub loyalty_number: Option<Option<String>>,
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

/// A store shoppers can visit, as the hub knows it (from its edge nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreView {
    /// The store's location id, e.g. `store-berlin`.
    pub location: String,
    /// Its name for people, e.g. `Berlin Mitte`.
    pub name: String,
}

/// A checkout link emailed to a customer.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutLinkSent {
    /// Where the shopper checks out.
    pub url: String,
    /// The address it went to.
    pub email: String,
}

/// A content slot asked for by a channel (`docs/personalization.md`).
#[derive(Debug, Clone)]
pub struct SlotQuery {
    pub slot: protocol::personalization::SlotName,
    pub channel: protocol::personalization::SlotChannel,
    /// The product page's SKU, for recommendations.
    pub product: Option<Sku>,
}

/// A content slot resolved for a shopper: the variant, its content and why.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    pub slot: protocol::personalization::SlotName,
    /// The variant's id, or `default`.
    pub variant: String,
    /// The variant's position in the slot, from 1 (`null` for the default).
    pub position: Option<usize>,
    pub content: protocol::personalization::Content,
    /// Why this variant, e.g. "segment coffee-lovers matched (variant 2, coffee)".
    pub reason: String,
    /// `segment_matched`, `everyone`, `experiment`, `schedule_ended`, `schedule_not_started`,
    /// `no_variant_matched` or `not_configured` (a built-in default).
    pub reason_code: &'static str,
    /// The A/B test the shopper was assigned through while resolving (a slot variant bound to
    /// it), and their variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<SlotExperiment>,
    /// For recommendations: one SKU per product, best first (sellable, never the product
    /// itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Sku>,
}

/// A shopper's variant of the experiment a slot consulted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotExperiment {
    pub experiment: String,
    pub variant: String,
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
    /// Input with field-level problems (an address).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        fields: Vec<FieldError>,
    },
    /// The request conflicts with the current state (a locked basket, stock gone).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{message}")]
    RateLimited { retry_after: u64, message: String },
    /// The payment provider could not be reached; nothing was charged.
    #[error("{0}")]
    PaymentUnavailable(String),
}

/// Registration input.
#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub name: String,
    pub password: String,
    /// The consent boxes as the shopper left them (a form's unticked box is a `false` here, so
    /// the history says it was not given); nothing is granted unless ticked.
    pub consents: Vec<protocol::ConsentChoice>,
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

    /// Countries the shop ships to (ISO codes), for the address form.
    fn ship_to_countries(&self) -> Vec<String>;
    /// Shipping options and, with a method, the full price of checking out this basket to
    /// `country` on `channel` (promotions may depend on it, as the checkout's does). Changes
    /// nothing.
    async fn quote(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        country: &str,
        shipping_method: Option<&str>,
        channel: Channel,
    ) -> Result<QuoteView, BackendError>;
    /// Freezes the priced basket, holds its stock, locks it and opens a payment at the provider.
    /// While a payment is pending, asking again returns that same checkout.
    async fn start_checkout(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        input: CheckoutInput,
        channel: Channel,
    ) -> Result<CheckoutView, BackendError>;
    async fn checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError>;
    /// Cancels the pending payment (expiring it at the provider first), gives the stock back and
    /// unlocks the basket. If the payment had already gone through, the order is returned.
    async fn cancel_checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
        channel: Channel,
    ) -> Result<CheckoutView, BackendError>;
    /// The shopper came back from the provider's page: the hub asks the provider (it never
    /// trusts the redirect) and makes the order if the payment went through.
    async fn return_from_payment(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError>;
    /// The signed-in customer's orders, newest first.
    async fn orders(&self, customer: CustomerId) -> Result<Vec<OrderView>, BackendError>;
    /// One of the shopper's orders (theirs as a customer, or placed from the basket they hold).
    async fn order(&self, shopper: &Shopper, id: OrderId) -> Result<OrderView, BackendError>;
    /// An order by number and the key of its lookup link (guests).
    async fn order_by_key(&self, number: &str, key: &str) -> Result<OrderView, BackendError>;

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

    /// What finds the customer at a store's till: their phone number and loyalty number
    /// (`docs/pos.md`, "Customers at the till"). A backend without customers in stores has none.
    async fn in_store(&self, _customer: CustomerId) -> Result<InStoreDetails, BackendError> {
        Err(BackendError::NotFound("in-store details"))
    }

    /// Sets or clears the customer's phone number and loyalty number (`None`: leave it as it
    /// is; `Some(None)`: remove it), as typed: the backend checks and normalises them.
    async fn set_in_store(
        &self,
        _customer: CustomerId,
        _change: InStoreChange,
    ) -> Result<InStoreDetails, BackendError> {
        Err(BackendError::NotFound("in-store details"))
    }

    /// The customer's loyalty number, issued now if they have none (the backend makes it
    /// unique); answers the details with it.
    async fn issue_loyalty_number(
        &self,
        _customer: CustomerId,
    ) -> Result<InStoreDetails, BackendError> {
        Err(BackendError::NotFound("in-store details"))
    }

    /// The customer's consents per channel and purpose, with their history
    /// (`docs/experience.md`, "Consents"). A backend without customers' consents has none.
    async fn consents(&self, _customer: CustomerId) -> Result<protocol::Consents, BackendError> {
        Err(BackendError::NotFound("consents"))
    }

    /// Records consent choices made at `source` on `channel`; each one that changes the state
    /// is kept in the history and recorded as a `consent_changed` event. Answers the consents.
    async fn set_consents(
        &self,
        _customer: CustomerId,
        _choices: Vec<protocol::ConsentChoice>,
        _source: protocol::ConsentSource,
        _channel: Channel,
    ) -> Result<protocol::Consents, BackendError> {
        Err(BackendError::NotFound("consents"))
    }

    /// The stores shoppers can visit (the assistant's opening hours and store stock). A backend
    /// without stores has none.
    fn stores(&self) -> Vec<StoreView> {
        Vec::new()
    }

    /// Units of each SKU available at a store's location, as the hub last heard from the
    /// store's edge node, in order; `None` where the hub knows no stock level.
    async fn store_stock(
        &self,
        _location: &str,
        skus: &[Sku],
    ) -> Result<Vec<Option<i64>>, BackendError> {
        Ok(vec![None; skus.len()])
    }

    /// Where a shopper checks out their basket on the web (an absolute URL where the backend
    /// knows its public address).
    fn checkout_url(&self) -> String {
        "/checkout".to_string()
    }

    /// Emails the customer a link to check out their basket (a transactional mail through the
    /// backend's outbox); never starts a checkout.
    async fn send_checkout_link(
        &self,
        _customer: CustomerId,
        _channel: Channel,
    ) -> Result<CheckoutLinkSent, BackendError> {
        Err(BackendError::Unavailable(
            "this backend sends no email".to_string(),
        ))
    }

    /// Asks for one email when a SKU sold out online is back in stock (`docs/automation.md`).
    /// Answers whether the subscription is new (asking again changes nothing); a SKU in stock
    /// is a `Conflict`. A backend without marketing automation offers none.
    async fn subscribe_back_in_stock(
        &self,
        _customer: CustomerId,
        _sku: &Sku,
    ) -> Result<bool, BackendError> {
        Err(BackendError::NotFound("back-in-stock notes"))
    }

    /// A content slot for the shopper (their segments, never anyone else's) on a channel. A
    /// slot nobody configured and without a built-in default is `NotFound`; so is every slot of
    /// a backend without personalization.
    async fn slot(&self, _shopper: &Shopper, _query: SlotQuery) -> Result<SlotView, BackendError> {
        Err(BackendError::NotFound("slot"))
    }
}
