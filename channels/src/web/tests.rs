//! Page tests against a small in-memory backend: status codes, key content, cookies, CSRF,
//! Post/Redirect/Get and the events recorded.

use super::format::tokens_match;
use super::{configure, Templates, TEMPLATES};
use crate::backend::{
    Availability, Backend, BackendError, BasketCommand, BasketView, CheckoutInput, CheckoutSummary,
    CheckoutView, CustomerView, NewBasket, OrderRef, OrderView, QuoteView, RefundView,
    Registration, Shopper, SignedIn,
};
use crate::context::{
    random_token, ChannelSettings, ChannelState, ANON_COOKIE, BASKET_COOKIE, CSRF_COOKIE,
    SESSION_COOKIE,
};
use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use async_trait::async_trait;
use protocol::checkout::{price_checkout, CheckoutConfig, CheckoutError};
use protocol::order::{online_order_number, CheckoutState, Progress};
use protocol::pricing::price_basket;
use protocol::{
    AnonymousId, Basket, BasketError, BasketId, BasketOwner, CatalogSnapshot, Category, CategoryId,
    Channel, CheckoutId, Currency, CustomerId, Event, EventKind, Money, OrderId, Product,
    ProductId, Sku, Variant,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::broadcast;

const CATEGORIES: [&str; 12] = [
    "Coffee",
    "Tea",
    "Chocolate",
    "Kitchen",
    "Brewing",
    "Mugs",
    "Snacks",
    "Gifts",
    "Syrups",
    "Water",
    "Milk",
    "Accessories",
];

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn product(slug: &str, name: &str, category: &str, variants: Vec<Variant>) -> Product {
    Product {
        id: ProductId::new(),
        slug: slug.into(),
        name: name.into(),
        brand: "Acme Roasters".into(),
        description: format!("A fine {name}."),
        category: CategoryId(category.into()),
        tax_rate_bp: 1900,
        tax_class: "standard".into(),
        image: format!("/images/{slug}.svg"),
        variants,
        attributes: BTreeMap::from([("origin".to_string(), "Ethiopia".to_string())]),
    }
}

fn variant(sku: &str, title: &str, price: i64, compare_at: Option<i64>) -> Variant {
    Variant {
        sku: Sku::parse(sku).expect("valid sku"),
        title: title.into(),
        price: eur(price),
        compare_at: compare_at.map(eur),
        barcode: None,
        weight_grams: 300,
    }
}

fn catalog() -> CatalogSnapshot {
    let categories = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, name)| Category {
            id: CategoryId(name.to_lowercase()),
            name: (*name).into(),
            description: format!("All things {name}"),
            position: i as u32,
        })
        .collect();
    let mut products = vec![
        product(
            "ethiopia",
            "Ethiopia Yirgacheffe",
            "coffee",
            vec![
                variant("ETH-250", "250 g", 1250, Some(1500)),
                variant("ETH-1K", "1 kg", 3990, None),
            ],
        ),
        product(
            "sencha",
            "Green Sencha",
            "tea",
            vec![variant("TEA-1", "100 g", 650, None)],
        ),
        product(
            "evil-mug",
            "<script>alert(1)</script> Mug",
            "mugs",
            vec![variant("MUG-1", "Standard", 900, None)],
        ),
    ];
    for i in 0..30 {
        products.push(product(
            &format!("blend-{i:02}"),
            &format!("House Blend {i:02}"),
            "coffee",
            vec![variant(&format!("BLD-{i:02}"), "500 g", 800 + i, None)],
        ));
    }
    CatalogSnapshot::new(1, categories, products)
}

struct Account {
    view: CustomerView,
    password: String,
}

/// A checkout and what the (pretend) payment provider knows of it.
struct Checkout {
    view: CheckoutView,
    customer: Option<CustomerId>,
    /// The shopper paid on the provider's page; the hub learns it when it asks.
    paid_at_provider: bool,
}

/// An order and who may see it.
struct Order {
    view: OrderView,
    key: String,
    customer: Option<CustomerId>,
    basket: BasketId,
}

/// How long the stock is held while the shopper pays.
const HOLD_MINUTES: i64 = 30;
const CANCELLED: &str =
    "The payment was cancelled; nothing was charged. Your basket is as you left it.";
const DECLINED: &str = "Your card was declined. Try another card on the payment page.";

/// Just enough of the hub for the pages: baskets and checkouts priced by `protocol`, accounts,
/// sessions, and a pretend payment provider. Locks are taken baskets before checkouts, never
/// the other way round.
struct Memory {
    catalog: Arc<CatalogSnapshot>,
    stock: HashMap<Sku, i64>,
    config: CheckoutConfig,
    baskets: Mutex<HashMap<BasketId, (Basket, Option<String>)>>,
    accounts: Mutex<Vec<Account>>,
    sessions: Mutex<HashMap<String, CustomerId>>,
    checkouts: Mutex<HashMap<CheckoutId, Checkout>>,
    orders: Mutex<Vec<Order>>,
    events: Mutex<Vec<Event>>,
    /// Phone and loyalty numbers, as the hub keeps them (normalised, unique).
    in_store: Mutex<HashMap<CustomerId, crate::backend::InStoreDetails>>,
}

/// How the hub words a pricing problem.
fn pricing_error(e: CheckoutError) -> BackendError {
    let field = |code, field: &str| BackendError::Invalid {
        code,
        message: e.to_string(),
        fields: vec![protocol::checkout::FieldError::new(field, e.to_string())],
    };
    match &e {
        CheckoutError::CountryNotServed(_) => field("country_not_served", "country"),
        CheckoutError::UnknownShippingMethod(_) => {
            field("unknown_shipping_method", "shipping_method")
        }
        CheckoutError::Unavailable(_) => BackendError::Conflict {
            code: "items_unavailable",
            message: e.to_string(),
            details: None,
        },
        _ => BackendError::Unprocessable {
            code: "pricing_failed",
            message: e.to_string(),
        },
    }
}

impl Memory {
    fn new() -> Memory {
        let catalog = Arc::new(catalog());
        let stock = catalog
            .products()
            .iter()
            .flat_map(|p| p.variants.iter())
            .map(|v| (v.sku.clone(), 50))
            .chain([
                (Sku::parse("ETH-250").expect("sku"), 3),
                (Sku::parse("ETH-1K").expect("sku"), 0),
            ])
            .collect();
        Memory {
            catalog,
            stock,
            config: CheckoutConfig::default(),
            baskets: Mutex::default(),
            accounts: Mutex::default(),
            sessions: Mutex::default(),
            checkouts: Mutex::default(),
            orders: Mutex::default(),
            events: Mutex::default(),
            in_store: Mutex::default(),
        }
    }

    /// The shopper pays on the provider's page.
    fn pay(&self, id: CheckoutId) {
        if let Some(c) = self.checkouts.lock().expect("lock").get_mut(&id) {
            c.paid_at_provider = true;
        }
    }

    /// The provider declines the shopper's card; its page stays open for another try.
    fn decline(&self, id: CheckoutId) {
        if let Some(c) = self.checkouts.lock().expect("lock").get_mut(&id) {
            c.view.message = Some(DECLINED.to_string());
        }
    }

    /// A person at the shop refunds an order that needs attention.
    fn refund_for_attention(&self, number: &str, note: &str) {
        let mut orders = self.orders.lock().expect("lock");
        if let Some(o) = orders.iter_mut().find(|o| o.view.number == number) {
            o.view.needs_attention = Some(note.to_string());
            o.view.refunded = o.view.paid;
            o.view.status = "Refunded";
            o.view.refunds.push(RefundView {
                amount: o.view.paid,
                reason: "Sold out".into(),
                at: OffsetDateTime::now_utc(),
            });
        }
    }

    /// The basket the shopper reaches, if it is `id`.
    fn basket_of(&self, shopper: &Shopper, id: BasketId) -> Result<Basket, BackendError> {
        if self.reachable(shopper) != Some(id) {
            return Err(BackendError::NotFound("basket"));
        }
        Ok(self.baskets.lock().expect("lock")[&id].0.clone())
    }

    /// A checkout the shopper may see: their basket's, or their own as a customer.
    fn checkout_for(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        let reachable = self.reachable(shopper);
        let checkouts = self.checkouts.lock().expect("lock");
        match checkouts.get(&id) {
            Some(c)
                if Some(c.view.basket_id) == reachable
                    || (c.customer.is_some() && c.customer == shopper.customer) =>
            {
                Ok(c.view.clone())
            }
            _ => Err(BackendError::NotFound("checkout")),
        }
    }

    /// Asks the provider: a paid checkout becomes an order (once) and empties the basket.
    fn settle(&self, id: CheckoutId) {
        let (view, customer) = {
            let checkouts = self.checkouts.lock().expect("lock");
            match checkouts.get(&id) {
                Some(c) if c.paid_at_provider && c.view.order.is_none() => {
                    (c.view.clone(), c.customer)
                }
                _ => return,
            }
        };
        let key = random_token().expect("random key");
        let order_ref = {
            let mut orders = self.orders.lock().expect("lock");
            let number = online_order_number(orders.len() as u64 + 1);
            let url = format!("/orders/{number}?key={key}");
            let order = OrderView {
                id: OrderId::new(),
                number: number.clone(),
                status: "Paid",
                progress: Progress::Paid,
                created_at: OffsetDateTime::now_utc(),
                channel: Channel::Web,
                email: view.email.clone(),
                address: view.address.clone(),
                paid: view.breakdown.total,
                refunded: eur(0),
                breakdown: view.breakdown.clone(),
                refunds: Vec::new(),
                cancelled: None,
                needs_attention: None,
                url: url.clone(),
                shipments: Vec::new(),
                timeline: Vec::new(),
            };
            let order_ref = OrderRef {
                id: order.id,
                number,
                url,
            };
            orders.push(Order {
                view: order,
                key,
                customer,
                basket: view.basket_id,
            });
            order_ref
        };
        if let Some(c) = self.checkouts.lock().expect("lock").get_mut(&id) {
            c.view.state = CheckoutState::Paid;
            c.view.payment_url = None;
            c.view.message = None;
            c.view.order = Some(order_ref);
        }
        if let Some((basket, _)) = self.baskets.lock().expect("lock").get_mut(&view.basket_id) {
            basket.complete(id, OffsetDateTime::now_utc());
        }
    }

    /// The checkout's email: the one entered, else a customer's account email.
    fn checkout_email(
        &self,
        entered: Option<String>,
        customer: Option<CustomerId>,
    ) -> Result<String, BackendError> {
        let account = customer.and_then(|id| {
            self.accounts
                .lock()
                .expect("lock")
                .iter()
                .find(|a| a.view.id == id)
                .map(|a| a.view.email.clone())
        });
        let email = entered
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .or(account);
        match email {
            Some(e) if e.contains('@') && !e.starts_with('@') && !e.ends_with('@') => Ok(e),
            _ => Err(BackendError::Invalid {
                code: "invalid_email",
                message: "enter an email address for the order confirmation".into(),
                fields: vec![protocol::checkout::FieldError::new(
                    "email",
                    "Enter an email address, like name@example.com.",
                )],
            }),
        }
    }

    fn view(&self, basket: &Basket) -> BasketView {
        let priced =
            price_basket(basket, |sku| self.catalog.product_by_sku(sku), eur(0)).expect("prices");
        let owner = if matches!(basket.owner, BasketOwner::Customer(_)) {
            "customer"
        } else {
            "anonymous"
        };
        let checkout = basket.checkout.and_then(|id| {
            let checkouts = self.checkouts.lock().expect("lock");
            checkouts.get(&id).map(|c| CheckoutSummary {
                id,
                state: c.view.state,
                payment_url: c.view.payment_url.clone(),
                hold_expires_at: c.view.hold_expires_at,
                total: c.view.breakdown.total,
                message: c.view.message.clone(),
            })
        });
        BasketView {
            id: basket.id,
            version: basket.version,
            owner,
            priced,
            coupons: basket
                .coupons
                .iter()
                .map(|code| crate::backend::CouponStatus {
                    code: code.clone(),
                    applied: false,
                    message: Some("no promotions in this test backend".into()),
                })
                .collect(),
            checkout,
        }
    }

    fn reachable(&self, shopper: &Shopper) -> Option<BasketId> {
        let baskets = self.baskets.lock().expect("lock");
        baskets
            .iter()
            .find(|(_, (b, token))| match shopper.customer {
                Some(id) => b.owner == BasketOwner::Customer(id),
                None => token.is_some() && token == &shopper.basket_token,
            })
            .map(|(id, _)| *id)
    }

    fn new_basket(&self, owner: BasketOwner, token: Option<String>) -> BasketView {
        let basket = Basket::new(
            BasketId::new(),
            owner,
            Currency::EUR,
            OffsetDateTime::now_utc(),
        );
        let view = self.view(&basket);
        self.baskets
            .lock()
            .expect("lock")
            .insert(basket.id, (basket, token));
        view
    }

    fn signed_in(&self, customer: CustomerView, shopper: &Shopper) -> SignedIn {
        // Merge: the anonymous basket becomes the customer's.
        if let Some(id) = self.reachable(&Shopper {
            customer: None,
            ..shopper.clone()
        }) {
            if let Some((basket, token)) = self.baskets.lock().expect("lock").get_mut(&id) {
                basket.owner = BasketOwner::Customer(customer.id);
                *token = None;
            }
        }
        let mine = Shopper {
            customer: Some(customer.id),
            ..Shopper::default()
        };
        let basket = match self.reachable(&mine) {
            Some(id) => self.view(&self.baskets.lock().expect("lock")[&id].0),
            None => self.new_basket(BasketOwner::Customer(customer.id), None),
        };
        let token = format!("session-{}", customer.id);
        self.sessions
            .lock()
            .expect("lock")
            .insert(token.clone(), customer.id);
        SignedIn {
            session_token: token,
            customer,
            basket,
        }
    }

    fn events(&self, kind: EventKind) -> Vec<Event> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Backend for Memory {
    fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.catalog.clone()
    }

    async fn availability(&self, skus: &[Sku]) -> Result<Vec<Availability>, BackendError> {
        Ok(skus
            .iter()
            .map(|s| Availability {
                available: self.stock.get(s).copied().unwrap_or(0),
            })
            .collect())
    }

    async fn register(
        &self,
        registration: Registration,
        shopper: &Shopper,
        _channel: Channel,
    ) -> Result<SignedIn, BackendError> {
        let view = CustomerView {
            id: CustomerId::new(),
            email: registration.email.clone(),
            name: registration.name,
            basket_id: None,
        };
        {
            let mut accounts = self.accounts.lock().expect("lock");
            if accounts.iter().any(|a| a.view.email == registration.email) {
                return Err(BackendError::EmailTaken);
            }
            accounts.push(Account {
                view: view.clone(),
                password: registration.password,
            });
        }
        Ok(self.signed_in(view, shopper))
    }

    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        shopper: &Shopper,
        _channel: Channel,
    ) -> Result<SignedIn, BackendError> {
        let found = self
            .accounts
            .lock()
            .expect("lock")
            .iter()
            .find(|a| a.view.email == email && a.password == password)
            .map(|a| a.view.clone());
        let view = found.ok_or(BackendError::BadCredentials)?;
        Ok(self.signed_in(view, shopper))
    }

    async fn sign_out(&self, session_token: &str, _shopper: &Shopper, _channel: Channel) {
        self.sessions.lock().expect("lock").remove(session_token);
    }

    async fn session(&self, session_token: &str) -> Option<CustomerId> {
        self.sessions
            .lock()
            .expect("lock")
            .get(session_token)
            .copied()
    }

    async fn customer(&self, id: CustomerId) -> Result<CustomerView, BackendError> {
        self.accounts
            .lock()
            .expect("lock")
            .iter()
            .find(|a| a.view.id == id)
            .map(|a| a.view.clone())
            .ok_or(BackendError::NotFound("customer"))
    }

    async fn current_basket(&self, shopper: &Shopper) -> Result<Option<BasketView>, BackendError> {
        Ok(self
            .reachable(shopper)
            .map(|id| self.view(&self.baskets.lock().expect("lock")[&id].0)))
    }

    async fn create_basket(&self, shopper: &Shopper) -> Result<NewBasket, BackendError> {
        if let Some(basket) = self.current_basket(shopper).await? {
            return Ok(NewBasket {
                basket,
                token: None,
            });
        }
        Ok(match shopper.customer {
            Some(id) => NewBasket {
                basket: self.new_basket(BasketOwner::Customer(id), None),
                token: None,
            },
            None => {
                let token = format!("basket-{}", AnonymousId::new());
                NewBasket {
                    basket: self.new_basket(BasketOwner::Anonymous, Some(token.clone())),
                    token: Some(token),
                }
            }
        })
    }

    async fn basket(&self, shopper: &Shopper, id: BasketId) -> Result<BasketView, BackendError> {
        match self.current_basket(shopper).await? {
            Some(view) if view.id == id => Ok(view),
            _ => Err(BackendError::NotFound("basket")),
        }
    }

    async fn change_basket(
        &self,
        shopper: &Shopper,
        id: BasketId,
        command: BasketCommand,
        _channel: Channel,
    ) -> Result<BasketView, BackendError> {
        if self.reachable(shopper) != Some(id) {
            return Err(BackendError::NotFound("basket"));
        }
        let mut baskets = self.baskets.lock().expect("lock");
        let basket = &mut baskets.get_mut(&id).expect("reachable").0;
        let now = OffsetDateTime::now_utc();
        let available = |sku: &Sku| self.stock.get(sku).copied().unwrap_or(0);
        let result = match command {
            BasketCommand::Add { sku, quantity } => basket
                .add(sku.clone(), quantity, available(&sku), now)
                .map(|_| ()),
            BasketCommand::SetQuantity { sku, quantity } => {
                basket.set_quantity(&sku, quantity, available(&sku), now)
            }
            BasketCommand::Remove { sku } => basket.remove(&sku, now),
            BasketCommand::Clear => basket.clear(now),
            BasketCommand::ApplyCoupon { code, .. } => {
                match protocol::basket::normalize_coupon(&code) {
                    Some(code) => basket.add_coupon(code, now).map(|_| ()),
                    None => Err(BasketError::CouponNotFound(code)),
                }
            }
            BasketCommand::RemoveCoupon { code } => basket.remove_coupon(&code, now),
        };
        result.map_err(|e| match e {
            BasketError::Locked(_) => BackendError::Conflict {
                code: "basket_locked",
                message: e.to_string(),
                details: None,
            },
            other => BackendError::Unprocessable {
                code: "basket",
                message: other.to_string(),
            },
        })?;
        Ok(self.view(basket))
    }

    async fn watch_basket(
        &self,
        _shopper: &Shopper,
        _id: BasketId,
    ) -> Result<(BasketView, broadcast::Receiver<BasketView>), BackendError> {
        Err(BackendError::Unavailable(
            "no live baskets in this test backend".into(),
        ))
    }

    fn ship_to_countries(&self) -> Vec<String> {
        self.config
            .countries()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    async fn quote(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        country: &str,
        shipping_method: Option<&str>,
        _channel: Channel,
    ) -> Result<QuoteView, BackendError> {
        let basket = self.basket_of(shopper, basket)?;
        let lookup = |sku: &Sku| self.catalog.product_by_sku(sku);
        let shipping_options = self
            .config
            .shipping_options(&basket, lookup, country)
            .map_err(pricing_error)?;
        let breakdown = shipping_method
            .map(|m| price_checkout(&basket, lookup, eur(0), country, m, &self.config))
            .transpose()
            .map_err(pricing_error)?;
        Ok(QuoteView {
            country: country.trim().to_ascii_uppercase(),
            shipping_options,
            breakdown,
        })
    }

    async fn start_checkout(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        input: CheckoutInput,
        _channel: Channel,
    ) -> Result<CheckoutView, BackendError> {
        let basket = self.basket_of(shopper, basket)?;
        if let Some(pending) = basket.checkout {
            return self.checkout_for(shopper, pending);
        }
        let email = self.checkout_email(input.email, shopper.customer)?;
        let address =
            input
                .address
                .validated(&self.config)
                .map_err(|fields| BackendError::Invalid {
                    code: "invalid_address",
                    message: "the shipping address needs attention".into(),
                    fields,
                })?;
        let lookup = |sku: &Sku| self.catalog.product_by_sku(sku);
        let breakdown = price_checkout(
            &basket,
            lookup,
            eur(0),
            &address.country,
            &input.shipping_method,
            &self.config,
        )
        .map_err(pricing_error)?;
        let short: Vec<String> = breakdown
            .lines
            .iter()
            .filter(|l| i64::from(l.quantity) > self.stock.get(&l.sku).copied().unwrap_or(0))
            .map(|l| l.sku.to_string())
            .collect();
        if !short.is_empty() {
            return Err(BackendError::Conflict {
                code: "out_of_stock",
                message: format!("sorry, there is not enough stock for {}", short.join(", ")),
                details: None,
            });
        }
        let id = CheckoutId::new();
        let view = CheckoutView {
            id,
            basket_id: basket.id,
            state: CheckoutState::PaymentPending,
            payment_url: Some(format!("https://pay.example/session/{id}")),
            hold_expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(HOLD_MINUTES),
            email,
            address,
            breakdown,
            message: None,
            order: None,
        };
        self.checkouts.lock().expect("lock").insert(
            id,
            Checkout {
                view: view.clone(),
                customer: shopper.customer,
                paid_at_provider: false,
            },
        );
        if let Some((b, _)) = self.baskets.lock().expect("lock").get_mut(&basket.id) {
            b.lock(id, OffsetDateTime::now_utc())
                .map_err(|e| BackendError::Conflict {
                    code: "basket_locked",
                    message: e.to_string(),
                    details: None,
                })?;
        }
        Ok(view)
    }

    async fn checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_for(shopper, id)
    }

    async fn cancel_checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
        _channel: Channel,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_for(shopper, id)?;
        self.settle(id);
        let view = {
            let mut checkouts = self.checkouts.lock().expect("lock");
            let c = checkouts
                .get_mut(&id)
                .ok_or(BackendError::NotFound("checkout"))?;
            if c.view.state == CheckoutState::PaymentPending {
                c.view.state = CheckoutState::Cancelled;
                c.view.payment_url = None;
                c.view.message = Some(match c.view.message.take() {
                    Some(decline) => format!("{decline} {CANCELLED}"),
                    None => CANCELLED.to_string(),
                });
            }
            c.view.clone()
        };
        if view.state == CheckoutState::Cancelled {
            if let Some((b, _)) = self.baskets.lock().expect("lock").get_mut(&view.basket_id) {
                b.unlock(id, OffsetDateTime::now_utc());
            }
        }
        Ok(view)
    }

    async fn return_from_payment(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_for(shopper, id)?;
        self.settle(id);
        self.checkout_for(shopper, id)
    }

    async fn orders(&self, customer: CustomerId) -> Result<Vec<OrderView>, BackendError> {
        let orders = self.orders.lock().expect("lock");
        Ok(orders
            .iter()
            .rev()
            .filter(|o| o.customer == Some(customer))
            .map(|o| o.view.clone())
            .collect())
    }

    async fn order(&self, shopper: &Shopper, id: OrderId) -> Result<OrderView, BackendError> {
        let reachable = self.reachable(shopper);
        let orders = self.orders.lock().expect("lock");
        orders
            .iter()
            .find(|o| {
                o.view.id == id
                    && ((o.customer.is_some() && o.customer == shopper.customer)
                        || Some(o.basket) == reachable)
            })
            .map(|o| o.view.clone())
            .ok_or(BackendError::NotFound("order"))
    }

    async fn order_by_key(&self, number: &str, key: &str) -> Result<OrderView, BackendError> {
        let orders = self.orders.lock().expect("lock");
        orders
            .iter()
            .find(|o| o.view.number == number && tokens_match(&o.key, key))
            .map(|o| o.view.clone())
            .ok_or(BackendError::NotFound("order"))
    }

    fn record(&self, event: Event) {
        self.events.lock().expect("lock").push(event);
    }

    async fn timeline(
        &self,
        _customer: CustomerId,
        _limit: usize,
    ) -> Result<Vec<Event>, BackendError> {
        Ok(Vec::new())
    }

    async fn ready(&self) -> bool {
        true
    }

    async fn in_store(
        &self,
        customer: CustomerId,
    ) -> Result<crate::backend::InStoreDetails, BackendError> {
        let all = self.in_store.lock().expect("lock");
        Ok(all.get(&customer).cloned().unwrap_or_default())
    }

    async fn set_in_store(
        &self,
        customer: CustomerId,
        change: crate::backend::InStoreChange,
    ) -> Result<crate::backend::InStoreDetails, BackendError> {
        let phone = match change.phone {
            Some(Some(p)) => Some(Some(protocol::customer::normalize_phone(&p).map_err(
                |message| BackendError::Unprocessable {
                    code: "invalid_phone",
                    message,
                },
            )?)),
            other => other,
        };
        let mut all = self.in_store.lock().expect("lock");
        if let Some(Some(p)) = &phone {
            if all
                .iter()
                .any(|(c, d)| *c != customer && d.phone.as_ref() == Some(p))
            {
                return Err(BackendError::Conflict {
                    code: "already_taken",
                    message: "this phone number belongs to another customer".into(),
                    details: None,
                });
            }
        }
        let mine = all.entry(customer).or_default();
        if let Some(p) = phone {
            mine.phone = p;
        }
        Ok(mine.clone())
    }

    async fn issue_loyalty_number(
        &self,
        customer: CustomerId,
    ) -> Result<crate::backend::InStoreDetails, BackendError> {
        let mut all = self.in_store.lock().expect("lock");
        let issued = all.len();
        let mine = all.entry(customer).or_default();
        if mine.loyalty_number.is_none() {
            mine.loyalty_number = Some(format!("7{:011}", 4711 + issued));
        }
        Ok(mine.clone())
    }
}

/// A browser: keeps cookies across requests.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn keep(&mut self, res: &ServiceResponse) {
        for c in res.response().cookies() {
            if c.value().is_empty() || c.max_age().is_some_and(|a| a.is_zero()) {
                self.cookies.remove(c.name());
            } else {
                self.cookies
                    .insert(c.name().to_string(), c.value().to_string());
            }
        }
    }

    fn with_cookies(&self, req: TestRequest) -> TestRequest {
        if self.cookies.is_empty() {
            return req;
        }
        let jar = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        req.insert_header((header::COOKIE, jar))
    }

    fn page_of(&mut self, res: ServiceResponse) -> Page {
        self.keep(&res);
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .try_into_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    fn csrf(&self) -> String {
        self.cookies
            .get(CSRF_COOKIE)
            .cloned()
            .expect("a page set the CSRF cookie")
    }
}

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

macro_rules! send {
    ($app:expr, $browser:expr, $req:expr) => {{
        let req = $browser.with_cookies($req).to_request();
        let res = test::call_service(&$app, req).await;
        $browser.page_of(res)
    }};
}

macro_rules! get {
    ($app:expr, $browser:expr, $uri:expr) => {
        send!($app, $browser, TestRequest::get().uri($uri))
    };
}

macro_rules! post {
    ($app:expr, $browser:expr, $uri:expr, $form:expr) => {{
        let form: &[(&str, &str)] = $form;
        send!($app, $browser, TestRequest::post().uri($uri).set_form(form))
    }};
}

fn settings() -> ChannelSettings {
    ChannelSettings {
        sign_in_per_account_per_minute: 3,
        ..ChannelSettings::default()
    }
}

macro_rules! app {
    ($backend:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new(ChannelState::new(
                    $backend.clone(),
                    settings(),
                )))
                .configure(configure),
        )
        .await
    };
}

#[test]
fn every_template_compiles() {
    let templates = Templates::new();
    for (name, _) in TEMPLATES {
        assert!(templates.env.get_template(name).is_ok(), "{name}");
    }
}

#[actix_web::test]
async fn browsing_pages_render_with_header_and_cookies() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();

    let home = get!(app, browser, "/");
    assert_eq!(home.status, StatusCode::OK);
    assert!(home
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html")));
    for text in [
        "Omnihub Market",
        "Shop by category",
        "<main",
        "<footer",
        "<nav",
        "Sign in",
        "data-basket-count",
    ] {
        assert!(home.body.contains(text), "home lacks {text}");
    }
    for name in CATEGORIES {
        assert!(
            home.body.contains(&format!(">{name}</a>")),
            "category nav lacks {name}"
        );
    }
    assert!(
        home.body.contains("/p/ethiopia"),
        "the sale product is featured"
    );
    assert!(browser.cookies.contains_key(CSRF_COOKIE) && browser.cookies.contains_key(ANON_COOKIE));
    let anon = browser.cookies[ANON_COOKIE].clone();

    let coffee = get!(app, browser, "/c/coffee");
    assert_eq!(coffee.status, StatusCode::OK);
    assert!(
        coffee.body.contains("31 products") && coffee.body.contains("Next page"),
        "{}",
        coffee.body
    );
    assert!(coffee.body.contains("aria-current=\"page\">Coffee"));
    let next = coffee
        .body
        .split("href=\"/c/coffee?cursor=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next-page link");
    let second = get!(app, browser, &format!("/c/coffee?cursor={next}"));
    assert_eq!(second.status, StatusCode::OK);
    assert!(second.body.contains("First page") && !second.body.contains("Next page"));
    let sorted = get!(app, browser, "/c/coffee?sort=price_desc&cursor=garbage");
    assert_eq!(
        sorted.status,
        StatusCode::OK,
        "a bad cursor shows the first page"
    );
    assert!(sorted
        .body
        .contains("<option value=\"price_desc\" selected>"));

    let product = get!(app, browser, "/p/ethiopia");
    assert_eq!(product.status, StatusCode::OK);
    for text in [
        "Ethiopia Yirgacheffe",
        "Acme Roasters",
        "alt=\"Ethiopia Yirgacheffe by Acme Roasters\"",
        "€12.50",
        "<s class=\"was\">",
        "€15.00",
        "Only 3 left",
        "Out of stock",
        "action=\"/basket/add\"",
        "max=\"999\"",
    ] {
        assert!(product.body.contains(text), "product page lacks {text}");
    }
    assert_eq!(
        browser.cookies[ANON_COOKIE], anon,
        "the anonymous id is kept"
    );

    let found = get!(app, browser, "/search?q=sencha");
    assert!(
        found.status == StatusCode::OK
            && found.body.contains("Green Sencha")
            && found.body.contains("1 product")
    );
    let none = get!(app, browser, "/search?q=zeppelin");
    assert!(none.status == StatusCode::OK && none.body.contains("No results for “zeppelin”"));
    let prompt = get!(app, browser, "/search");
    assert!(prompt.body.contains("What are you looking for?"));

    let searches = backend.events(EventKind::Search);
    assert_eq!(searches.len(), 2, "an empty search is not a search");
    assert_eq!(
        (
            searches[0].payload["query"].as_str(),
            searches[0].payload["results"].as_str()
        ),
        ("sencha", "1")
    );
    let views = backend.events(EventKind::ProductView);
    assert_eq!(
        (
            views[0].payload["slug"].as_str(),
            views[0].payload["sku"].as_str()
        ),
        ("ethiopia", "ETH-250")
    );
    assert!(backend
        .events(EventKind::PageView)
        .iter()
        .any(|e| e.payload["path"] == "/c/coffee"));
    assert!(views
        .iter()
        .all(|e| e.subject == protocol::Subject::Anonymous(anon.parse().expect("ulid"))));
}

#[actix_web::test]
async fn output_is_escaped() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let page = get!(app, browser, "/p/evil-mug");
    assert!(page
        .body
        .contains("&lt;script&gt;alert(1)&lt;/script&gt; Mug"));
    assert!(!page.body.contains("<script>alert"));
    let search = get!(app, browser, "/search?q=%22%3E%3Cimg+src%3Dx%3E");
    assert!(
        !search.body.contains("<img src=x>") && search.body.contains("&quot;&gt;&lt;img src=x&gt;")
    );
}

#[actix_web::test]
async fn unknown_pages_are_friendly_404s_but_api_404s_stay_json() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    for uri in ["/nowhere", "/p/no-such-thing", "/c/no-such-category"] {
        let page = get!(app, browser, uri);
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            page.body.contains("<h1>") && page.body.contains("Back to the shop"),
            "{uri}"
        );
    }
    let api = get!(app, browser, "/api/v1/nowhere");
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.body.starts_with("{\"error\""), "{}", api.body);
}

#[actix_web::test]
async fn the_coupon_form_keeps_the_code_and_says_whether_it_applies() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    get!(app, browser, "/basket");
    let csrf = browser.csrf();
    post!(
        app,
        browser,
        "/basket/add",
        &[("csrf", &csrf), ("sku", "TEA-1"), ("quantity", "1")]
    );
    let typed = post!(
        app,
        browser,
        "/basket/coupon",
        &[("csrf", &csrf), ("code", " welcome10 ")]
    );
    assert_eq!(typed.status, StatusCode::SEE_OTHER);
    assert_eq!(typed.location(), "/basket");
    let basket = get!(app, browser, "/basket");
    for text in [
        "Coupon WELCOME10 is saved but does not apply yet: no promotions in this test backend.",
        "<span class=\"coupon-code\">WELCOME10</span>",
        "name=\"code\" value=\"WELCOME10\"",
    ] {
        assert!(
            basket.body.contains(text),
            "basket lacks {text}: {}",
            basket.body
        );
    }
    post!(
        app,
        browser,
        "/basket/coupon",
        &[("csrf", &csrf), ("code", "  ")]
    );
    assert!(get!(app, browser, "/basket")
        .body
        .contains("Please type a coupon code."));
    post!(
        app,
        browser,
        "/basket/coupon/remove",
        &[("csrf", &csrf), ("code", "WELCOME10")]
    );
    let basket = get!(app, browser, "/basket");
    assert!(basket.body.contains("Coupon WELCOME10 removed."));
    assert!(
        !basket.body.contains("<span class=\"coupon-code\">"),
        "{}",
        basket.body
    );
}

#[actix_web::test]
async fn basket_forms_need_the_csrf_token_and_redirect() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let empty = get!(app, browser, "/basket");
    assert!(empty.status == StatusCode::OK && empty.body.contains("Your basket is empty"));
    let csrf = browser.csrf();

    let forged = post!(
        app,
        browser,
        "/basket/add",
        &[
            ("csrf", "0123456789abcdef0123456789abcdef"),
            ("sku", "TEA-1"),
            ("quantity", "1")
        ]
    );
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("This form has expired"));
    let foreign = send!(
        app,
        browser,
        TestRequest::post()
            .uri("/basket/add")
            .insert_header((header::ORIGIN, "http://evil.example"))
            .set_form([("csrf", csrf.as_str()), ("sku", "TEA-1"), ("quantity", "1")])
    );
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);

    let added = post!(
        app,
        browser,
        "/basket/add",
        &[
            ("csrf", &csrf),
            ("sku", "ETH-250"),
            ("quantity", "2"),
            ("next", "/p/ethiopia")
        ]
    );
    assert_eq!(
        (added.status, added.location()),
        (StatusCode::SEE_OTHER, "/p/ethiopia")
    );
    assert!(
        browser.cookies.contains_key(BASKET_COOKIE),
        "the anonymous basket's token is kept"
    );
    let after = get!(app, browser, "/p/ethiopia");
    assert!(
        after
            .body
            .contains("Added 2 × Ethiopia Yirgacheffe to your basket."),
        "{}",
        after.body
    );
    assert!(after.body.contains("data-basket-count>2<") && after.body.contains("data-basket-id="));
    let again = get!(app, browser, "/p/ethiopia");
    assert!(!again.body.contains("Added 2"), "a flash shows once");

    let too_many = post!(
        app,
        browser,
        "/basket/add",
        &[
            ("csrf", &csrf),
            ("sku", "ETH-250"),
            ("quantity", "5"),
            ("next", "//evil.example")
        ]
    );
    assert_eq!(too_many.location(), "/basket", "a foreign next is ignored");
    let basket = get!(app, browser, "/basket");
    assert!(
        basket
            .body
            .contains("Only 3 of ETH-250 available, 7 requested."),
        "{}",
        basket.body
    );
    for text in [
        "Ethiopia Yirgacheffe",
        "250 g",
        "€12.50 each",
        "€25.00",
        "Includes 19% VAT: €3.99",
        "value=\"2\"",
        "Clear basket",
    ] {
        assert!(basket.body.contains(text), "basket lacks {text}");
    }
    let bad = post!(
        app,
        browser,
        "/basket/update",
        &[("csrf", &csrf), ("sku", "ETH-250"), ("quantity", "lots")]
    );
    assert_eq!(bad.status, StatusCode::SEE_OTHER);
    assert!(get!(app, browser, "/basket")
        .body
        .contains("Please choose a quantity from 0 to 999."));

    post!(
        app,
        browser,
        "/basket/add",
        &[("csrf", &csrf), ("sku", "TEA-1"), ("quantity", "1")]
    );
    post!(
        app,
        browser,
        "/basket/update",
        &[("csrf", &csrf), ("sku", "ETH-250"), ("quantity", "0")]
    );
    let basket = get!(app, browser, "/basket");
    assert!(
        basket.body.contains("Removed Ethiopia Yirgacheffe")
            && basket.body.contains("Green Sencha")
            && !basket.body.contains("250 g")
    );
    post!(
        app,
        browser,
        "/basket/remove",
        &[("csrf", &csrf), ("sku", "TEA-1")]
    );
    post!(
        app,
        browser,
        "/basket/add",
        &[("csrf", &csrf), ("sku", "TEA-1"), ("quantity", "3")]
    );
    let cleared = post!(app, browser, "/basket/clear", &[("csrf", &csrf)]);
    assert_eq!(cleared.location(), "/basket");
    let basket = get!(app, browser, "/basket");
    assert!(
        basket.body.contains("Your basket is now empty.")
            && basket.body.contains("Your basket is empty")
    );
}

#[actix_web::test]
async fn register_sign_in_and_out() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let form = get!(app, browser, "/register?next=/p/sencha");
    assert!(
        form.status == StatusCode::OK
            && form.body.contains("for=\"confirm\"")
            && form.body.contains("value=\"/p/sencha\"")
    );
    let csrf = browser.csrf();
    post!(
        app,
        browser,
        "/basket/add",
        &[("csrf", &csrf), ("sku", "TEA-1"), ("quantity", "1")]
    );

    let short = post!(
        app,
        browser,
        "/register",
        &[
            ("csrf", &csrf),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("password", "short"),
            ("confirm", "short")
        ]
    );
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        short.body.contains("at least 10 characters")
            && short.body.contains("value=\"ada@example.com\"")
    );

    let password = "correct horse battery";
    let done = post!(
        app,
        browser,
        "/register",
        &[
            ("csrf", &csrf),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("password", password),
            ("confirm", password),
            ("next", "/p/sencha")
        ]
    );
    assert_eq!(
        (done.status, done.location()),
        (StatusCode::SEE_OTHER, "/p/sencha")
    );
    assert!(
        browser.cookies.contains_key(SESSION_COOKIE)
            && !browser.cookies.contains_key(BASKET_COOKIE)
    );
    assert_ne!(browser.csrf(), csrf, "signing in rotates the CSRF token");
    let page = get!(app, browser, "/basket");
    assert!(
        page.body.contains("Hi, Ada") && page.body.contains("Green Sencha"),
        "the anonymous basket was merged"
    );
    assert!(
        post!(app, browser, "/signout", &[("csrf", &csrf)]).status == StatusCode::FORBIDDEN,
        "the old token is dead"
    );

    let out = post!(app, browser, "/signout", &[("csrf", &browser.csrf())]);
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(!browser.cookies.contains_key(SESSION_COOKIE));
    assert!(get!(app, browser, "/")
        .body
        .contains("You have signed out."));

    let csrf = browser.csrf();
    let wrong = post!(
        app,
        browser,
        "/signin",
        &[
            ("csrf", &csrf),
            ("email", "ada@example.com"),
            ("password", "wrong password")
        ]
    );
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("do not match") && wrong.body.contains("role=\"alert\""));
    let right = post!(
        app,
        browser,
        "/signin",
        &[
            ("csrf", &csrf),
            ("email", "ada@example.com"),
            ("password", password),
            ("next", "https://evil.example/")
        ]
    );
    assert_eq!(
        (right.status, right.location()),
        (StatusCode::SEE_OTHER, "/basket")
    );
    assert!(get!(app, browser, "/basket")
        .body
        .contains("Welcome back, Ada!"));
    assert_eq!(
        get!(app, browser, "/signin").status,
        StatusCode::SEE_OTHER,
        "signed in: no form"
    );
}

#[actix_web::test]
async fn sign_in_is_rate_limited() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    assert!(get!(app, browser, "/signin")
        .body
        .contains("autocomplete=\"current-password\""));
    let csrf = browser.csrf();
    let mut last = None;
    for _ in 0..4 {
        last = Some(post!(
            app,
            browser,
            "/signin",
            &[
                ("csrf", &csrf),
                ("email", "bob@example.com"),
                ("password", "nope nope nope")
            ]
        ));
    }
    let last = last.expect("four attempts");
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = last
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry >= 1 && last.body.contains(&format!("try again in {retry} s")));
}

#[actix_web::test]
async fn assets_are_served_with_cache_headers() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let home = get!(app, browser, "/");
    let version = super::asset_version();
    assert!(home.body.contains(&format!("/static/site.css?v={version}")));
    let css = get!(app, browser, &format!("/static/site.css?v={version}"));
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(
        css.headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("public, max-age=31536000, immutable")
    );
    assert!(css.body.contains("--brand"));
    let js = get!(app, browser, "/static/site.js");
    assert!(js.status == StatusCode::OK && js.body.contains("/live"));
}

/// A German address that passes the checks, as the checkout form sends it.
const ADDRESS: [(&str, &str); 9] = [
    ("email", "erika@example.com"),
    ("name", "Erika Mustermann"),
    ("line1", "Unter den Linden 1"),
    ("line2", ""),
    ("postcode", "10117"),
    ("city", "Berlin"),
    ("country", "DE"),
    ("phone", ""),
    ("shipping_method", "standard"),
];

/// The checkout form with its CSRF token and some fields changed or added.
fn checkout_form<'a>(csrf: &'a str, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = ADDRESS.to_vec();
    for (key, value) in changes {
        match form.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => form.push((key, value)),
        }
    }
    form.push(("csrf", csrf));
    form
}

/// The checkout of a payment page's URL (`https://pay.example/session/{id}`).
fn checkout_id(payment_url: &str) -> CheckoutId {
    payment_url
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("a payment URL ending in the checkout id")
}

/// Fills the browser's basket: 2 × €12.50 and 1 × €6.50.
macro_rules! fill_basket {
    ($app:expr, $browser:expr) => {{
        get!($app, $browser, "/basket");
        let csrf = $browser.csrf();
        for (sku, quantity) in [("ETH-250", "2"), ("TEA-1", "1")] {
            let added = post!(
                $app,
                $browser,
                "/basket/add",
                &[("csrf", &csrf), ("sku", sku), ("quantity", quantity)]
            );
            assert_eq!(added.status, StatusCode::SEE_OTHER);
        }
        csrf
    }};
}

/// Pays: posts the form and answers the provider's page it was sent to.
macro_rules! start_payment {
    ($app:expr, $browser:expr, $csrf:expr) => {{
        let paid = post!(
            $app,
            $browser,
            "/checkout",
            &checkout_form(&$csrf, &[("action", "pay")])
        );
        assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
        paid.location().to_string()
    }};
}

#[actix_web::test]
async fn checkout_form_shows_the_hubs_breakdown() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    get!(app, browser, "/basket");
    let empty = get!(app, browser, "/checkout");
    assert_eq!(
        (empty.status, empty.location()),
        (StatusCode::SEE_OTHER, "/basket")
    );
    assert!(get!(app, browser, "/basket")
        .body
        .contains("Your basket is empty. Add something to it before checking out."));

    fill_basket!(app, browser);
    let basket = get!(app, browser, "/basket");
    assert!(basket.body.contains("href=\"/checkout\">Checkout</a>"));
    let page = get!(app, browser, "/checkout");
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for text in [
        "<option value=\"DE\" selected>Germany</option>",
        "<option value=\"US\">United States</option>",
        "Standard delivery",
        "2–3 working days",
        "Express delivery",
        "€9.90",
        "value=\"standard\" checked",
        "Ethiopia Yirgacheffe",
        "250 g · Qty 2",
        "€25.00",
        "€31.50",
        "€4.90",
        "€36.40",
        "incl. 19% VAT €5.81",
        "id=\"email\" name=\"email\" type=\"email\"",
        "Sign in</a>",
        "Update shipping options",
        "Pay now",
        "name=\"csrf\"",
    ] {
        assert!(page.body.contains(text), "checkout lacks {text}");
    }
    assert!(
        page.headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|csp| csp.contains("form-action 'self' https:")),
        "the form may be answered with the provider's page"
    );
    // The figures are the hub's, not the page's.
    let shopper = Shopper {
        basket_token: browser.cookies.get(BASKET_COOKIE).cloned(),
        ..Shopper::default()
    };
    let id = backend
        .current_basket(&shopper)
        .await
        .expect("basket")
        .expect("one")
        .id;
    let quote = backend
        .quote(&shopper, id, "DE", Some("standard"), Channel::Web)
        .await
        .expect("quote");
    let breakdown = quote.breakdown.expect("a breakdown");
    assert_eq!(breakdown.total, eur(3640));
    assert_eq!(breakdown.taxes[0].tax, eur(581));

    let us = get!(app, browser, "/checkout?country=us");
    for text in [
        "<option value=\"US\" selected>United States</option>",
        "Tax 7.25%",
        "Delivery to United States",
    ] {
        assert!(us.body.contains(text), "US checkout lacks {text}");
    }
    assert!(!us.body.contains("incl. 19% VAT"));

    // Without the script: the update button re-renders for the chosen country, keeping input.
    let csrf = browser.csrf();
    let updated = post!(
        app,
        browser,
        "/checkout",
        &checkout_form(
            &csrf,
            &[
                ("country", "AT"),
                ("shipping_method", "express"),
                ("action", "update")
            ]
        )
    );
    assert_eq!(updated.status, StatusCode::OK);
    for text in [
        "<option value=\"AT\" selected>Austria</option>",
        "€6.90",
        "3–5 working days",
        "value=\"Erika Mustermann\"",
        "incl. 20% VAT",
    ] {
        assert!(updated.body.contains(text), "updated checkout lacks {text}");
    }
    assert!(!updated.body.contains("Express delivery"));
}

#[actix_web::test]
async fn checkout_problems_are_shown_next_to_their_fields() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let csrf = fill_basket!(app, browser);

    let forged = post!(
        app,
        browser,
        "/checkout",
        &checkout_form("0123456789abcdef0123456789abcdef", &[])
    );
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let no_token: Vec<_> = ADDRESS.to_vec();
    assert_eq!(
        post!(app, browser, "/checkout", &no_token).status,
        StatusCode::FORBIDDEN
    );

    let bad = post!(
        app,
        browser,
        "/checkout",
        &checkout_form(
            &csrf,
            &[
                ("postcode", "1011"),
                ("line2", "Hinterhaus <b>2</b>"),
                ("email", "")
            ]
        )
    );
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    for text in [
        "Enter an email address, like name@example.com.",
        "Please check the highlighted fields.",
        "value=\"Erika Mustermann\"",
        "value=\"Hinterhaus &lt;b&gt;2&lt;/b&gt;\"",
        "value=\"Unter den Linden 1\"",
    ] {
        assert!(bad.body.contains(text), "re-rendered form lacks {text}");
    }
    let fixed_email = post!(
        app,
        browser,
        "/checkout",
        &checkout_form(&csrf, &[("postcode", "1011")])
    );
    assert_eq!(fixed_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(fixed_email
        .body
        .contains("<p class=\"field-error\" id=\"postcode-error\">A German postcode has 5 digits, e.g. 10115.</p>"));
    assert!(fixed_email.body.contains("aria-invalid=\"true\""));
    assert!(fixed_email.body.contains("value=\"1011\""));

    let us = post!(
        app,
        browser,
        "/checkout",
        &checkout_form(&csrf, &[("country", "US"), ("postcode", "94103")])
    );
    assert!(us
        .body
        .contains("id=\"region-error\">Enter the 2-letter state code"));
    assert!(
        backend.checkouts.lock().expect("lock").is_empty(),
        "nothing was started"
    );
}

#[actix_web::test]
async fn paying_locks_the_basket_until_the_payment_is_cancelled() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let csrf = fill_basket!(app, browser);
    let payment_url = start_payment!(app, browser, csrf);
    assert!(payment_url.starts_with("https://pay.example/session/"));
    let id = checkout_id(&payment_url);

    let basket = get!(app, browser, "/basket");
    for text in [
        "Payment in progress",
        "€36.40",
        "29 minutes",
        &format!("href=\"{payment_url}\">Continue to payment</a>"),
        &format!("action=\"/checkout/{id}/cancel\""),
        "Cancel payment and edit basket",
        "data-basket-locked=\"true\"",
        "inputmode=\"numeric\" required disabled",
    ] {
        assert!(basket.body.contains(text), "locked basket lacks {text}");
    }
    assert!(!basket.body.contains("Clear basket") && !basket.body.contains("href=\"/checkout\""));
    let again = get!(app, browser, "/checkout");
    assert_eq!(again.location(), "/basket", "no second checkout form");
    post!(
        app,
        browser,
        "/basket/add",
        &[("csrf", &csrf), ("sku", "TEA-1"), ("quantity", "1")]
    );
    assert!(get!(app, browser, "/basket").body.contains(
        "A payment for this basket is in progress: cancel the payment to change the basket."
    ));

    // The provider's back link asks first; a GET changes nothing.
    let ask = get!(app, browser, &format!("/checkout/{id}/cancel"));
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask
        .body
        .contains("Cancel this payment and return to your basket?"));
    assert!(ask.body.contains("method=\"post\""));
    assert!(get!(app, browser, "/basket")
        .body
        .contains("Payment in progress"));
    let forged = post!(
        app,
        browser,
        &format!("/checkout/{id}/cancel"),
        &[("csrf", "0123456789abcdef0123456789abcdef")]
    );
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    backend.decline(id);
    assert!(get!(app, browser, "/basket").body.contains(DECLINED));
    let cancelled = post!(
        app,
        browser,
        &format!("/checkout/{id}/cancel"),
        &[("csrf", &csrf)]
    );
    assert_eq!(
        (cancelled.status, cancelled.location()),
        (StatusCode::SEE_OTHER, "/basket")
    );
    let basket = get!(app, browser, "/basket");
    assert!(basket.body.contains(&format!("{DECLINED} {CANCELLED}")));
    assert!(!basket.body.contains("Payment in progress"));
    assert!(basket.body.contains("data-basket-locked=\"false\""));
    assert!(
        basket.body.contains("Ethiopia Yirgacheffe") && basket.body.contains("href=\"/checkout\"")
    );
    assert_eq!(get!(app, browser, "/checkout").status, StatusCode::OK);

    let stranger = get!(app, Browser::default(), &format!("/checkout/{id}/cancel"));
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get!(app, browser, "/checkout/not-an-id/cancel").status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn returning_from_payment_leads_to_the_order_page() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let csrf = fill_basket!(app, browser);
    let id = checkout_id(&start_payment!(app, browser, csrf));

    let return_url = format!("/checkout/{id}/return?session_id=cs_forged_paid");
    let waiting = get!(app, browser, &return_url);
    assert_eq!(
        waiting.status,
        StatusCode::OK,
        "the redirect alone proves nothing"
    );
    assert!(waiting.body.contains("Confirming your payment…"));
    assert!(waiting.body.contains(&format!(
        "<meta http-equiv=\"refresh\" content=\"2;url=/checkout/{id}/return?attempt=1\">"
    )));
    let late = get!(app, browser, &format!("/checkout/{id}/return?attempt=30"));
    assert!(!late.body.contains("http-equiv") && late.body.contains("not confirmed yet"));

    backend.pay(id);
    let done = get!(app, browser, &return_url);
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let order_url = done.location().to_string();
    assert!(
        order_url.starts_with("/orders/W-000001?key="),
        "{order_url}"
    );
    let order = get!(app, browser, &order_url);
    assert_eq!(order.status, StatusCode::OK);
    for text in [
        "Thank you, your order W-000001 is confirmed",
        "erika@example.com",
        "Unter den Linden 1",
        "10117 Berlin",
        "Germany",
        "Standard delivery",
        "€36.40",
        "incl. 19% VAT €5.81",
        "Bookmark this page",
        "Thank you! Your payment went through.",
    ] {
        assert!(order.body.contains(text), "order page lacks {text}");
    }
    let basket = get!(app, browser, "/basket");
    assert!(
        basket.body.contains("Your basket is empty")
            && !basket.body.contains("Payment in progress")
    );

    // Cancelling after the payment went through shows the order instead.
    let cancel = post!(
        app,
        browser,
        &format!("/checkout/{id}/cancel"),
        &[("csrf", &csrf)]
    );
    assert_eq!(cancel.location(), order_url);

    let mut guest = Browser::default();
    assert_eq!(
        get!(app, guest, &order_url).status,
        StatusCode::OK,
        "the link alone is enough"
    );
    for wrong in [
        "/orders/W-000001?key=0123456789abcdef0123456789abcdef".to_string(),
        "/orders/W-000001".to_string(),
        order_url.replace("W-000001", "W-000002"),
    ] {
        let page = get!(app, guest, &wrong);
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{wrong}");
        assert!(page.body.contains("Page not found"));
    }
}

#[actix_web::test]
async fn order_history_is_for_signed_in_customers() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut browser = Browser::default();
    let history = get!(app, browser, "/account/orders");
    assert_eq!(
        (history.status, history.location()),
        (StatusCode::SEE_OTHER, "/signin?next=%2Faccount%2Forders")
    );

    let csrf = browser.csrf();
    let password = "correct horse battery";
    post!(
        app,
        browser,
        "/register",
        &[
            ("csrf", &csrf),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("password", password),
            ("confirm", password)
        ]
    );
    let empty = get!(app, browser, "/account/orders");
    assert!(empty.status == StatusCode::OK && empty.body.contains("No orders yet"));
    assert!(empty.body.contains("href=\"/account/orders\">Orders</a>"));

    let csrf = fill_basket!(app, browser);
    let form = get!(app, browser, "/checkout");
    assert!(
        form.body.contains("value=\"ada@example.com\"") && form.body.contains("value=\"Ada\""),
        "a customer's details are filled in"
    );
    assert!(form
        .body
        .contains("Email <span class=\"optional\">(optional)</span>"));
    let paid = post!(
        app,
        browser,
        "/checkout",
        &checkout_form(&csrf, &[("email", ""), ("shipping_method", "express")])
    );
    let id = checkout_id(paid.location());
    backend.pay(id);
    let order_url = get!(app, browser, &format!("/checkout/{id}/return"))
        .location()
        .to_string();
    backend.refund_for_attention(
        "W-000001",
        "It was paid after the items sold out, so we refunded it in full automatically.",
    );

    let history = get!(app, browser, "/account/orders");
    for text in [
        &format!("<a href=\"{order_url}\">W-000001</a>"),
        "Refunded",
        "€41.40",
    ] {
        assert!(history.body.contains(text), "history lacks {text}");
    }
    let order = get!(app, browser, &order_url);
    assert!(
        !order.body.contains("is confirmed"),
        "a refunded order is not confirmed"
    );
    for text in [
        "Order W-000001",
        "ada@example.com",
        "Express delivery",
        "we refunded it in full automatically",
        "Refunded: Sold out",
        "-€41.40",
    ] {
        assert!(order.body.contains(text), "order page lacks {text}");
    }
    assert!(
        !order.body.contains("Bookmark this page"),
        "customers have their history"
    );
}

#[actix_web::test]
async fn the_account_page_sets_the_phone_number_and_gives_a_loyalty_number() {
    let backend = Arc::new(Memory::new());
    let app = app!(backend);
    let mut ada = Browser::default();
    let page = get!(app, ada, "/account");
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/signin?next=%2Faccount")
    );
    let register = |name: &'static str, email: &'static str| {
        let password = "correct horse battery";
        [
            ("name", name),
            ("email", email),
            ("password", password),
            ("confirm", password),
        ]
    };
    let csrf = ada.csrf();
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend(register("Ada", "ada@example.com"));
    post!(app, ada, "/register", &form);
    let page = get!(app, ada, "/account");
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        "Your account",
        "ada@example.com",
        "action=\"/account/phone\"",
        "data-get-loyalty-number",
        "href=\"/account\">Account</a>",
    ] {
        assert!(page.body.contains(text), "the page lacks {text}");
    }
    let csrf = ada.csrf();

    // A form without the CSRF token changes nothing.
    let forged = post!(app, ada, "/account/phone", &[("phone", "+49 30 1234567")]);
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!get!(app, ada, "/account").body.contains("data-saved-phone"));

    // A malformed number: what to fix, next to the field, with what was typed.
    for (typed, says) in [
        ("555", "7 to 15 digits"),
        ("call me", "digits"),
        (&"1".repeat(41), "too long"),
    ] {
        let refused = post!(
            app,
            ada,
            "/account/phone",
            &[("csrf", &csrf), ("phone", typed)]
        );
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{typed}");
        assert!(refused.body.contains(says), "{typed}: lacks {says}");
        assert!(refused.body.contains("id=\"phone-error\" role=\"alert\""));
        if typed.len() <= 40 {
            assert!(
                refused.body.contains(&format!("value=\"{typed}\"")),
                "{typed} kept"
            );
        }
        assert!(!refused.body.contains("data-saved-phone"), "nothing saved");
    }

    // A good number is kept as the hub normalises it.
    let saved = post!(
        app,
        ada,
        "/account/phone",
        &[("csrf", &csrf), ("phone", " +49 (30) 123-4567 ")]
    );
    assert_eq!(
        (saved.status, saved.location()),
        (StatusCode::SEE_OTHER, "/account")
    );
    let page = get!(app, ada, "/account");
    assert!(page
        .body
        .contains("Saved. Our clerks can find you by +49301234567."));
    assert!(page
        .body
        .contains("<span data-saved-phone>+49301234567</span>"));

    // Another shopper cannot take it; Ada keeps it.
    let mut grace = Browser::default();
    get!(app, grace, "/register");
    let csrf_g = grace.csrf();
    let mut form = vec![("csrf", csrf_g.as_str())];
    form.extend(register("Grace", "grace@example.com"));
    post!(app, grace, "/register", &form);
    let csrf_g = grace.csrf();
    let taken = post!(
        app,
        grace,
        "/account/phone",
        &[("csrf", &csrf_g), ("phone", "0049 30 1234567")]
    );
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert!(taken.body.contains("belongs to another account"));
    assert!(!taken.body.contains("+49301234567"), "not Ada's details");
    assert!(get!(app, ada, "/account")
        .body
        .contains("data-saved-phone>+49301234567"));

    // The loyalty number: issued once, then shown.
    let got = post!(app, ada, "/account/loyalty-number", &[("csrf", &csrf)]);
    assert_eq!(
        (got.status, got.location()),
        (StatusCode::SEE_OTHER, "/account")
    );
    let page = get!(app, ada, "/account");
    let number = backend.in_store.lock().expect("lock")[&customer_of(&backend, "ada@example.com")]
        .loyalty_number
        .clone()
        .expect("issued");
    let shown = super::in_store::grouped(&number);
    assert!(page
        .body
        .contains(&format!("Your loyalty number is {shown}.")));
    assert!(page
        .body
        .contains(&format!("<strong data-loyalty-number>{shown}</strong>")));
    assert!(!page.body.contains("data-get-loyalty-number"));
    post!(app, ada, "/account/loyalty-number", &[("csrf", &csrf)]);
    assert!(
        get!(app, ada, "/account").body.contains(&shown),
        "the same number again"
    );

    // An empty field removes the phone number.
    let removed = post!(
        app,
        ada,
        "/account/phone",
        &[("csrf", &csrf), ("phone", "")]
    );
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    let page = get!(app, ada, "/account");
    assert!(page.body.contains("Your phone number is removed."));
    assert!(!page.body.contains("data-saved-phone"));

    // Signed out, the forms lead to the sign-in page.
    post!(app, ada, "/signout", &[("csrf", &csrf)]);
    let csrf = ada.csrf();
    let out = post!(
        app,
        ada,
        "/account/phone",
        &[("csrf", &csrf), ("phone", "+4930999999")]
    );
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/signin?next=%2Faccount")
    );
}

fn customer_of(backend: &Memory, email: &str) -> CustomerId {
    backend
        .accounts
        .lock()
        .expect("lock")
        .iter()
        .find(|a| a.view.email == email)
        .map(|a| a.view.id)
        .expect("registered")
}
