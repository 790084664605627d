//! The hub's implementation of the channels' [`Backend`]: it resolves who may reach what, finds
//! or activates the right actor, and turns actor and storage failures into channel errors.

mod assistant;
mod cluster;
mod in_store;
mod privacy;
pub use in_store::TillKey;

use crate::actors::basket::{Access, ApplyCommand, BasketActor, BasketFailure, GetView, Watch};
use crate::actors::customer::{CustomerActor, GetCustomer};
use crate::actors::directory::{
    ActivateBasket, ActivateCustomer, Deregister, Directory, DirectoryView,
};
use crate::actors::recorder::Record;
use crate::actors::Deps;
use crate::auth;
use crate::monitor::metrics::Queued;
use crate::storage::{Change, StorageError, UnitOfWork};
use actix::dev::ToEnvelope;
use actix::prelude::*;
use async_trait::async_trait;
use channels::backend::{
    Availability, CheckoutInput, CheckoutView, CustomerView, NewBasket, OrderView, QuoteView,
    Registration, SignedIn,
};
use channels::{Backend, BackendError, BasketCommand, BasketView, Shopper};
use protocol::customer::{is_plausible_email, normalize_email};
use protocol::{
    Basket, BasketError, BasketId, BasketOwner, CatalogSnapshot, Channel, CheckoutId, Currency,
    CustomerId, CustomerRecord, Event, EventKind, LocationId, OrderId, SessionRecord, Sku, Subject,
};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The hub's backend.
pub struct HubBackend {
    pub(crate) deps: Deps,
    directory: Addr<Directory>,
    view: Arc<DirectoryView>,
    session_days: i64,
    /// In a cluster: calls to actors other nodes own (`crate::cluster::remote`).
    peers: Option<Arc<crate::cluster::remote::Peers>>,
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

/// In a cluster: the entity's shard is another node's (or moving), so its actor cannot run
/// here (requests that name it are forwarded before they get here, `crate::cluster::forward`).
fn not_here() -> BackendError {
    unavailable("another hub node owns this entity right now: retry in a moment")
}

impl From<BasketFailure> for BackendError {
    fn from(f: BasketFailure) -> BackendError {
        match f {
            BasketFailure::Rejected(e @ BasketError::Locked(_)) => BackendError::Conflict {
                code: "basket_locked",
                message: e.to_string(),
                details: None,
            },
            BasketFailure::NotFound => BackendError::NotFound("basket"),
            BasketFailure::Coupon(reason) => BackendError::Unprocessable {
                code: "invalid_coupon",
                message: reason,
            },
            f @ BasketFailure::CouponGuessing { retry_after } => BackendError::RateLimited {
                retry_after,
                message: f.to_string(),
            },
            BasketFailure::UnknownSku => BackendError::NotFound("product with this SKU"),
            BasketFailure::Rejected(e) => {
                let code = match &e {
                    BasketError::QuantityOutOfRange { .. } => "quantity_out_of_range",
                    BasketError::InsufficientStock { .. } => "insufficient_stock",
                    BasketError::LineNotFound(_) => return BackendError::NotFound("basket line"),
                    BasketError::Merged => "basket_closed",
                    BasketError::Locked(_) => "basket_locked",
                    BasketError::TooManyCoupons => "too_many_coupons",
                    BasketError::CouponNotFound(_) => {
                        return BackendError::NotFound("coupon on this basket")
                    }
                };
                BackendError::Unprocessable {
                    code,
                    message: e.to_string(),
                }
            }
            BasketFailure::Storage(e) => unavailable(e),
            BasketFailure::Elsewhere(e) => e,
        }
    }
}

impl HubBackend {
    pub fn new(
        deps: Deps,
        directory: Addr<Directory>,
        view: Arc<DirectoryView>,
        session_days: i64,
    ) -> HubBackend {
        HubBackend {
            deps,
            directory,
            view,
            session_days,
            peers: None,
        }
    }

    async fn basket_actor(&self, id: BasketId) -> Result<Option<Addr<BasketActor>>, BackendError> {
        if let Some(addr) = self.view.basket(id) {
            return Ok(Some(addr));
        }
        if !self.deps.fence.owns(&id) {
            return Err(not_here());
        }
        match self.deps.storage.basket(id).await.map_err(unavailable)? {
            Some(basket) => {
                let _queued = Queued::at("directory");
                Ok(Some(
                    self.directory
                        .send(ActivateBasket(basket))
                        .await
                        .map_err(unavailable)?,
                ))
            }
            None => Ok(None),
        }
    }

    async fn customer_actor(&self, id: CustomerId) -> Result<Addr<CustomerActor>, BackendError> {
        if let Some(addr) = self.view.customer(id) {
            return Ok(addr);
        }
        if !self.deps.fence.owns(&id) {
            return Err(not_here());
        }
        let record = self
            .deps
            .storage
            .customer(id)
            .await
            .map_err(unavailable)?
            .ok_or(BackendError::NotFound("customer"))?;
        let _queued = Queued::at("directory");
        self.directory
            .send(ActivateCustomer(record))
            .await
            .map_err(unavailable)
    }

    /// Sends to a basket's actor; if the actor stopped (passivated or panicked) between lookup
    /// and send, re-activates it from storage and tries once more.
    pub(crate) async fn ask_basket<M, T, E>(&self, id: BasketId, msg: M) -> Result<T, BackendError>
    where
        M: Message<Result = Result<T, E>> + Clone + Send + 'static,
        T: Send + 'static,
        E: Into<BackendError> + Send + 'static,
        BasketActor: Handler<M>,
        <BasketActor as Actor>::Context: ToEnvelope<BasketActor, M>,
    {
        for attempt in 0..2 {
            let addr = self
                .basket_actor(id)
                .await?
                .ok_or(BackendError::NotFound("basket"))?;
            match addr.send(msg.clone()).await {
                Ok(answer) => return answer.map_err(Into::into),
                Err(MailboxError::Closed) if attempt == 0 => {
                    self.directory.do_send(Deregister::Basket(id, addr))
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable("basket actor unavailable"))
    }

    async fn ask_customer<M, T>(&self, id: CustomerId, msg: M) -> Result<T, BackendError>
    where
        M: Message<Result = T> + Clone + Send + 'static,
        T: Send + 'static,
        CustomerActor: Handler<M>,
        <CustomerActor as Actor>::Context: ToEnvelope<CustomerActor, M>,
    {
        for attempt in 0..2 {
            let addr = self.customer_actor(id).await?;
            match addr.send(msg.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(MailboxError::Closed) if attempt == 0 => {
                    self.directory.do_send(Deregister::Customer(id, addr))
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable("customer actor unavailable"))
    }

    /// The anonymous basket the shopper's token reaches, if any.
    async fn token_basket(&self, shopper: &Shopper) -> Result<Option<BasketId>, BackendError> {
        match &shopper.basket_token {
            Some(token) => self
                .deps
                .storage
                .basket_for_token(auth::token_hash(token))
                .await
                .map_err(unavailable),
            None => Ok(None),
        }
    }

    pub(crate) async fn basket_access(
        &self,
        shopper: &Shopper,
        id: BasketId,
    ) -> Result<Access, BackendError> {
        self.access(shopper, id).await
    }

    async fn access(&self, shopper: &Shopper, id: BasketId) -> Result<Access, BackendError> {
        let holds_token = self.token_basket(shopper).await? == Some(id);
        Ok(Access {
            customer: shopper.customer,
            holds_token,
            system: false,
        })
    }

    /// Records consent choices through the customer's actor (the record and its events in one
    /// unit); answers the consents.
    pub(crate) async fn record_consents(
        &self,
        customer: CustomerId,
        choices: Vec<protocol::ConsentChoice>,
        source: protocol::ConsentSource,
        channel: Channel,
    ) -> Result<protocol::Consents, BackendError> {
        self.ask_customer(
            customer,
            crate::actors::customer::RecordConsents {
                choices,
                source,
                channel,
            },
        )
        .await?
        .map_err(unavailable)
    }

    fn event(&self, customer: CustomerId, channel: Channel, kind: EventKind) -> Event {
        Event::new(
            self.deps.clock.now(),
            Subject::Customer(customer),
            channel,
            kind,
        )
    }

    /// Records the sign-in (or registration), starts a session for the customer, merges the
    /// shopper's anonymous basket into theirs, and answers what a signed-in client needs.
    async fn open_session(
        &self,
        customer: CustomerRecord,
        shopper: &Shopper,
        channel: Channel,
        kind: EventKind,
    ) -> Result<SignedIn, BackendError> {
        // The event links the anonymous id to the customer, so earlier activity can be joined.
        let mut event = self.event(customer.id, channel, kind);
        if let Some(anonymous) = shopper.anonymous {
            event = event.with("anonymous_id", anonymous);
        }
        self.deps.recorder.do_send(Record(event));
        let token = auth::random_token(32).map_err(unavailable)?;
        let now = self.deps.clock.now();
        let session = SessionRecord {
            customer: customer.id,
            created_at: now,
            expires_at: now + time::Duration::days(self.session_days),
        };
        self.deps
            .storage
            .commit(UnitOfWork::new().with(Change::PutSession {
                token_hash: auth::token_hash(&token),
                session,
            }))
            .await
            .map_err(unavailable)?;
        let basket_id = self.customer_basket(customer.id).await?;
        if let Some(anonymous) = self
            .token_basket(shopper)
            .await?
            .filter(|id| *id != basket_id)
        {
            // The anonymous basket, the customer's and this node may be three nodes.
            match self
                .merge(
                    anonymous,
                    basket_id,
                    channel,
                    Subject::Customer(customer.id),
                )
                .await
            {
                Ok(()) => {}
                // Already merged or closed: nothing to bring over. A basket with a payment in
                // progress (either one) stays as it is; the shopper merges nothing mid-payment.
                Err(BackendError::NotFound(_)) | Err(BackendError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let basket = self
            .view_anywhere(
                basket_id,
                Access {
                    customer: Some(customer.id),
                    holds_token: false,
                    system: false,
                },
            )
            .await?;
        let view = CustomerView {
            id: customer.id,
            email: customer.email,
            name: customer.name,
            basket_id: Some(basket_id),
        };
        Ok(SignedIn {
            session_token: token,
            customer: view,
            basket,
        })
    }
}

fn unprocessable(code: &'static str, message: &str) -> BackendError {
    BackendError::Unprocessable {
        code,
        message: message.to_string(),
    }
}

fn validate_registration(r: &Registration) -> Result<(), BackendError> {
    if !is_plausible_email(r.email.trim()) {
        return Err(unprocessable(
            "invalid_email",
            "enter a valid email address, like name@example.com",
        ));
    }
    let name = r.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(unprocessable(
            "invalid_name",
            "enter your name (1 to 100 characters)",
        ));
    }
    let len = r.password.chars().count();
    if !(10..=128).contains(&len) {
        return Err(unprocessable(
            "weak_password",
            "choose a password of 10 to 128 characters",
        ));
    }
    Ok(())
}

#[async_trait]
impl Backend for HubBackend {
    fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.deps.catalog.load_full()
    }

    async fn availability(&self, skus: &[Sku]) -> Result<Vec<Availability>, BackendError> {
        let units = self.deps.inventory.available(&LocationId::online(), skus);
        Ok(units
            .into_iter()
            .map(|available| Availability { available })
            .collect())
    }

    async fn register(
        &self,
        registration: Registration,
        shopper: &Shopper,
        channel: Channel,
    ) -> Result<SignedIn, BackendError> {
        validate_registration(&registration)?;
        let email = normalize_email(&registration.email);
        let password = registration.password;
        let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let now = self.deps.clock.now();
        let id = self.deps.fence.new_local_customer();
        let basket = Basket::new(
            self.deps.fence.new_basket_of(&id),
            BasketOwner::Customer(id),
            Currency::EUR,
            now,
        );
        let mut customer = CustomerRecord {
            id,
            email: email.clone(),
            name: registration.name.trim().to_string(),
            password_hash,
            created_at: now,
            basket: Some(basket.id),
            consents: protocol::Consents::default(),
            phone: None,
            loyalty_number: None,
        };
        let changed = customer.consents.apply(
            &registration.consents,
            now,
            protocol::ConsentSource::Registration,
        );
        let mut unit = UnitOfWork::new()
            .with(Change::ClaimEmail {
                email,
                customer: id,
            })
            .with(Change::PutCustomer(customer.clone()))
            .with(Change::PutBasket(basket));
        for event in crate::actors::customer::consent_events(id, channel, &changed) {
            unit = unit.with_event(event);
        }
        match self.deps.storage.commit(unit).await {
            Ok(()) => {}
            Err(StorageError::Conflict(_)) => return Err(BackendError::EmailTaken),
            Err(e) => return Err(unavailable(e)),
        }
        self.open_session(customer, shopper, channel, EventKind::Registered)
            .await
    }

    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        shopper: &Shopper,
        channel: Channel,
    ) -> Result<SignedIn, BackendError> {
        let record = self
            .deps
            .storage
            .customer_by_email(&normalize_email(email))
            .await
            .map_err(unavailable)?;
        let phc = record.as_ref().map_or_else(
            || auth::decoy_hash().to_string(),
            |c| c.password_hash.clone(),
        );
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
            .await
            .map_err(unavailable)?;
        let customer = match record {
            Some(c) if matches => c,
            _ => return Err(BackendError::BadCredentials),
        };
        self.open_session(customer, shopper, channel, EventKind::SignedIn)
            .await
    }

    async fn sign_out(&self, session_token: &str, shopper: &Shopper, channel: Channel) {
        let unit = UnitOfWork::new().with(Change::DeleteSession {
            token_hash: auth::token_hash(session_token),
        });
        if let Err(e) = self.deps.storage.commit(unit).await {
            tracing::error!(error = %e, "could not delete a session");
        }
        if let Some(customer) = shopper.customer {
            self.deps
                .recorder
                .do_send(Record(self.event(customer, channel, EventKind::SignedOut)));
        }
    }

    async fn session(&self, session_token: &str) -> Option<CustomerId> {
        let session = self
            .deps
            .storage
            .session(auth::token_hash(session_token))
            .await
            .ok()
            .flatten()?;
        (session.expires_at > self.deps.clock.now()).then_some(session.customer)
    }

    async fn customer(&self, id: CustomerId) -> Result<CustomerView, BackendError> {
        let c = self.ask_customer(id, GetCustomer).await?;
        Ok(CustomerView {
            id: c.id,
            email: c.email,
            name: c.name,
            basket_id: c.basket,
        })
    }

    async fn current_basket(&self, shopper: &Shopper) -> Result<Option<BasketView>, BackendError> {
        if let Some(customer) = shopper.customer {
            let id = self.customer_basket(customer).await?;
            return self
                .ask_basket(
                    id,
                    GetView(Access {
                        customer: Some(customer),
                        holds_token: false,
                        system: false,
                    }),
                )
                .await
                .map(Some);
        }
        match self.token_basket(shopper).await? {
            Some(id) => match self
                .ask_basket(
                    id,
                    GetView(Access {
                        customer: None,
                        holds_token: true,
                        system: false,
                    }),
                )
                .await
            {
                Ok(view) => Ok(Some(view)),
                Err(BackendError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    async fn create_basket(&self, shopper: &Shopper) -> Result<NewBasket, BackendError> {
        if let Some(customer) = shopper.customer {
            let id = self.customer_basket(customer).await?;
            let basket = self
                .ask_basket(
                    id,
                    GetView(Access {
                        customer: Some(customer),
                        holds_token: false,
                        system: false,
                    }),
                )
                .await?;
            return Ok(NewBasket {
                basket,
                token: None,
            });
        }
        let token = auth::random_token(16).map_err(unavailable)?;
        let basket = Basket::new(
            self.deps.fence.new_local_basket(),
            BasketOwner::Anonymous,
            Currency::EUR,
            self.deps.clock.now(),
        );
        let unit = UnitOfWork::new()
            .with(Change::PutBasket(basket.clone()))
            .with(Change::PutBasketToken {
                token_hash: auth::token_hash(&token),
                basket: basket.id,
            });
        self.deps.storage.commit(unit).await.map_err(unavailable)?;
        let view = crate::actors::basket::view_of(&basket, &self.deps, Default::default());
        let _queued = Queued::at("directory");
        self.directory
            .send(ActivateBasket(basket))
            .await
            .map_err(unavailable)?;
        Ok(NewBasket {
            basket: view,
            token: Some(token),
        })
    }

    async fn basket(&self, shopper: &Shopper, id: BasketId) -> Result<BasketView, BackendError> {
        let access = self.access(shopper, id).await?;
        self.ask_basket(id, GetView(access)).await
    }

    async fn change_basket(
        &self,
        shopper: &Shopper,
        id: BasketId,
        command: BasketCommand,
        channel: Channel,
    ) -> Result<BasketView, BackendError> {
        let access = self.access(shopper, id).await?;
        self.ask_basket(
            id,
            ApplyCommand {
                access,
                command,
                channel,
                subject: shopper.subject(),
                assignee: crate::pricing::assignee_of(shopper),
            },
        )
        .await
    }

    async fn watch_basket(
        &self,
        shopper: &Shopper,
        id: BasketId,
    ) -> Result<(BasketView, broadcast::Receiver<BasketView>), BackendError> {
        let access = self.access(shopper, id).await?;
        self.ask_basket(id, Watch(access)).await
    }

    fn ship_to_countries(&self) -> Vec<String> {
        self.deps
            .checkout
            .pricing
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
        channel: Channel,
    ) -> Result<QuoteView, BackendError> {
        self.checkout_quote(shopper, basket, country, shipping_method, channel)
            .await
    }

    async fn start_checkout(
        &self,
        shopper: &Shopper,
        basket: BasketId,
        input: CheckoutInput,
        channel: Channel,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_start(shopper, basket, input, channel).await
    }

    async fn checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_get(shopper, id).await
    }

    async fn cancel_checkout(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
        _channel: Channel,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_cancel(shopper, id).await
    }

    async fn return_from_payment(
        &self,
        shopper: &Shopper,
        id: CheckoutId,
    ) -> Result<CheckoutView, BackendError> {
        self.checkout_return(shopper, id).await
    }

    async fn orders(&self, customer: CustomerId) -> Result<Vec<OrderView>, BackendError> {
        self.customer_orders(customer).await
    }

    async fn order(&self, shopper: &Shopper, id: OrderId) -> Result<OrderView, BackendError> {
        self.own_order(shopper, id).await
    }

    async fn order_by_key(&self, number: &str, key: &str) -> Result<OrderView, BackendError> {
        self.order_with_key(number, key).await
    }

    fn record(&self, event: Event) {
        self.deps.recorder.do_send(Record(event));
    }

    async fn timeline(
        &self,
        customer: CustomerId,
        limit: usize,
    ) -> Result<Vec<Event>, BackendError> {
        self.deps
            .storage
            .timeline(customer, limit)
            .await
            .map_err(unavailable)
    }

    async fn ready(&self) -> bool {
        self.deps.storage.healthy() && self.directory.connected()
    }

    async fn in_store(
        &self,
        customer: CustomerId,
    ) -> Result<channels::backend::InStoreDetails, BackendError> {
        self.in_store_details(customer).await
    }

    async fn set_in_store(
        &self,
        customer: CustomerId,
        change: channels::backend::InStoreChange,
    ) -> Result<channels::backend::InStoreDetails, BackendError> {
        self.set_in_store_details(customer, change).await
    }

    async fn issue_loyalty_number(
        &self,
        customer: CustomerId,
    ) -> Result<channels::backend::InStoreDetails, BackendError> {
        self.issue_loyalty(customer).await
    }

    async fn consents(&self, customer: CustomerId) -> Result<protocol::Consents, BackendError> {
        let record = self
            .ask_customer(customer, crate::actors::customer::GetCustomer)
            .await?;
        Ok(record.consents)
    }

    async fn set_consents(
        &self,
        customer: CustomerId,
        choices: Vec<protocol::ConsentChoice>,
        source: protocol::ConsentSource,
        channel: Channel,
    ) -> Result<protocol::Consents, BackendError> {
        self.record_consents(customer, choices, source, channel)
            .await
    }

    fn stores(&self) -> Vec<channels::backend::StoreView> {
        self.assistant_stores()
    }

    async fn store_stock(
        &self,
        location: &str,
        skus: &[Sku],
    ) -> Result<Vec<Option<i64>>, BackendError> {
        Ok(self.assistant_store_stock(location, skus))
    }

    fn checkout_url(&self) -> String {
        self.assistant_checkout_url()
    }

    async fn send_checkout_link(
        &self,
        customer: CustomerId,
        channel: Channel,
    ) -> Result<channels::backend::CheckoutLinkSent, BackendError> {
        self.assistant_send_checkout_link(customer, channel).await
    }

    async fn subscribe_back_in_stock(
        &self,
        customer: CustomerId,
        sku: &Sku,
    ) -> Result<bool, BackendError> {
        crate::automation::subscribe_back_in_stock(&self.deps, customer, sku).await
    }

    async fn slot(
        &self,
        shopper: &Shopper,
        query: channels::backend::SlotQuery,
    ) -> Result<channels::backend::SlotView, BackendError> {
        let Some(p) = self.deps.personalization.get() else {
            return Err(BackendError::NotFound("slot"));
        };
        // The shopper's own identity only: the signed-in customer, else the browser's id.
        let subject = match (shopper.customer, shopper.anonymous) {
            (Some(c), _) => Some(protocol::Subject::Customer(c)),
            (None, Some(a)) => Some(protocol::Subject::Anonymous(a)),
            (None, None) => None,
        };
        p.resolve(
            subject,
            shopper.anonymous,
            query.slot,
            query.channel,
            query.product.as_ref(),
        )
        .await
        .map_err(|e| match e {
            crate::personalization::SlotError::NotConfigured(_) => BackendError::NotFound("slot"),
            other => unavailable(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::basket::Fail;
    use crate::app::Application;
    use crate::clock::SystemClock;
    use crate::HubSettings;
    use std::time::Duration;

    async fn hub(dir: &std::path::Path) -> Application {
        let settings = HubSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.to_path_buf(),
            cache_mb: 8,
            workers: 1,
            actor_threads: 1,
            ..HubSettings::default()
        };
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .expect("hub builds");
        let product = crate::demo::demo_catalog().products.swap_remove(0);
        let sku = product.variants[0].sku.clone();
        let handle = app.handle();
        handle
            .upsert_catalog(Vec::new(), vec![product])
            .await
            .expect("catalog");
        handle
            .set_online_stock(vec![(sku, 50)])
            .await
            .expect("stock");
        app
    }

    /// An actor that stopped or panicked is found dead on the next request and re-activated
    /// from storage, with every acknowledged change.
    #[actix_web::test]
    async fn a_failed_basket_actor_comes_back_from_storage() {
        let dir = tempfile::tempdir().expect("dir");
        let app = hub(dir.path()).await;
        let backend = app.handle().backend;
        let sku = backend.catalog().products()[0].variants[0].sku.clone();
        for failure in [Fail::Stop, Fail::Panic] {
            let created = backend
                .create_basket(&Shopper::default())
                .await
                .expect("created");
            let shopper = Shopper {
                basket_token: created.token,
                ..Shopper::default()
            };
            let id = created.basket.id;
            let add = BasketCommand::Add {
                sku: sku.clone(),
                quantity: 2,
            };
            backend
                .change_basket(&shopper, id, add, Channel::Web)
                .await
                .expect("added");

            let actor = backend.view.basket(id).expect("active");
            actor.do_send(failure);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while actor.connected() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the actor did not stop"
                );
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }

            let view = backend.basket(&shopper, id).await.expect("re-activated");
            assert_eq!(
                view.priced.lines[0].quantity, 2,
                "the acknowledged line is back"
            );
            let again = backend.view.basket(id).expect("active again");
            assert!(again != actor, "a new activation");
        }
    }
}
