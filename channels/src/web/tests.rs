//! Page tests against a small in-memory backend: status codes, key content, cookies, CSRF,
//! Post/Redirect/Get and the events recorded.

use super::{configure, Templates, TEMPLATES};
use crate::backend::{
    Availability, Backend, BackendError, BasketCommand, BasketView, CustomerView, NewBasket,
    Registration, Shopper, SignedIn,
};
use crate::context::{
    ChannelSettings, ChannelState, ANON_COOKIE, BASKET_COOKIE, CSRF_COOKIE, SESSION_COOKIE,
};
use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use async_trait::async_trait;
use protocol::pricing::price_basket;
use protocol::{
    AnonymousId, Basket, BasketId, BasketOwner, CatalogSnapshot, Category, CategoryId, Channel,
    Currency, CustomerId, Event, EventKind, Money, Product, ProductId, Sku, Variant,
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

/// Just enough of the hub for the pages: baskets priced by `protocol`, accounts, sessions.
struct Memory {
    catalog: Arc<CatalogSnapshot>,
    stock: HashMap<Sku, i64>,
    baskets: Mutex<HashMap<BasketId, (Basket, Option<String>)>>,
    accounts: Mutex<Vec<Account>>,
    sessions: Mutex<HashMap<String, CustomerId>>,
    events: Mutex<Vec<Event>>,
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
            baskets: Mutex::default(),
            accounts: Mutex::default(),
            sessions: Mutex::default(),
            events: Mutex::default(),
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
        BasketView {
            id: basket.id,
            version: basket.version,
            owner,
            priced,
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
        };
        result.map_err(|e| BackendError::Unprocessable {
            code: "basket",
            message: e.to_string(),
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
