//! `omnihub load checkout`: full checkouts against a running hub and the payment simulator.
//!
//! Each simulated shopper loops: create an anonymous basket, add 1–3 SKUs of deep stock, start
//! the checkout (the hub holds the stock and opens a session at the provider), pay at the
//! simulator through its test API (the simulator then sends the signed webhook to the hub), and
//! poll the checkout until it is paid and names its order. The hub's calls are timed per kind;
//! the simulator's time is kept apart (informational), so the figures are the hub's own.
//!
//! A checkout once started is always seen through, even past the measured window, so the audit
//! after the run can be exact: checkouts the shopper could not finish are cancelled (or found
//! paid) before the stock is read again. The audit then checks that no checkout became two
//! orders and no order number was handed out twice, that the simulator charged no payment twice,
//! and that the units sold equal the drop in stock.
//!
//! With `--admin-token` the benchmark brings its own stock: it takes [`ADMIN_SKUS`] SKUs of the
//! catalog that hold nothing for open checkouts, records a count of [`DEEP_STOCK`] units on hand
//! for each through the hub's admin stock API, and audits on hand and held apart (after settling,
//! nothing is held, and on hand dropped by exactly the units sold). Without it, it needs
//! [`MIN_SKUS`] SKUs of at least [`MIN_STOCK`] units available and audits availability.

use super::http::{exchange, fetch_json, path_segment, HubClient};
use super::report::{self, Outcome, Stats, Summary, Target};
use super::rng::Rng;
use super::{loopback_base, parse_duration, LoadError};
use reqwest::RequestBuilder;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Arguments of `omnihub load checkout`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckoutArgs {
    /// The hub's base URL; only this machine (127.0.0.1, localhost or [::1]) may be targeted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// The payment simulator's base URL (`omnihub sim payments`); loopback only as well.
    #[arg(long, default_value = "http://127.0.0.1:8201")]
    pub payments: String,
    /// Simulated shoppers at once, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured time, e.g. `60s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before the measured time, not measured, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The hub's admin token: the benchmark then sets deep stock on the SKUs it uses, audits on
    /// hand and held through the admin stock API, and pages through the hub's own order list.
    #[arg(long)]
    pub admin_token: Option<AdminToken>,
    /// A shopper's mean think time before each step (each pause is drawn between half and one
    /// and a half times this); `0s` sends each request right after the last.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub think: Duration,
}

/// The hub's admin token, kept out of `Debug` output.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(text: &str) -> Result<AdminToken, String> {
        if text.trim().is_empty() {
            Err("the admin token must not be empty".into())
        } else {
            Ok(AdminToken(text.to_string()))
        }
    }
}

/// Most shoppers at once.
const MAX_CONCURRENCY: usize = 10_000;
/// SKUs put in baskets have at least this many units available, and the run needs at least
/// [`MIN_SKUS`] of them, so stock does not run out during the run.
const MIN_STOCK: i64 = 1_000;
const MIN_SKUS: usize = 20;
/// At most this many SKUs are used (their stock is read before and after the run).
const MAX_SKUS: usize = 200;
/// With an admin token: how many SKUs are used, and the count each is set to before the run.
const ADMIN_SKUS: usize = 40;
const DEEP_STOCK: i64 = 1_000_000;
/// Catalog discovery reads at most this many listing pages of 100 and product details.
const MAX_PAGES: usize = 100;
const MAX_PRODUCTS: usize = 5_000;
/// Pauses between two reads of a paid checkout, then the last one repeated, and when to stop.
/// The last pause bounds how late an order is seen; shorter ones cost the hub more reads than
/// they gain. Measured with concurrent webhooks (the simulator's default 16), 16 shoppers, 60 s
/// on 2 cores: paid → order seen is ~10 ms at the median and ~25 ms at p99, so most polls end
/// within the first three pauses; capping at 20 ms instead of 50 ms gave 444 orders/s against
/// 499, as the extra reads take CPU from the hub's webhooks and checkouts.
const POLL_BACKOFF_MS: [u64; 5] = [2, 5, 10, 20, 50];
const POLL_GIVE_UP: Duration = Duration::from_secs(10);
/// Pages of 200 the admin order list is read through at most.
const MAX_ADMIN_PAGES: usize = 10_000;
const ADMIN_PAGE: &str = "200";
/// The simulator's test card that always succeeds.
const TEST_CARD: &str = "4242424242424242";
const TOKEN_HEADER: &str = "x-basket-token";
/// Each simulated visit is one app install (a fresh anonymous id), so A/B tests assign it a
/// variant and count its exposure and its order once.
const ANON_HEADER: &str = "x-anonymous-id";

/// The targets of the checkout issue.
const ORDERS_PER_SECOND_TARGET: f64 = 300.0;
const HUB_P99_TARGET_MS: f64 = 50.0;

/// The hub's calls, by index into `HUB_OPS`.
const CREATE_BASKET: usize = 0;
const ADD_LINE: usize = 1;
const START_CHECKOUT: usize = 2;
const POLL: usize = 3;
const HUB_OPS: [&str; 4] = ["create basket", "add line", "checkout", "poll checkout"];
/// Time outside the hub's calls, by index into `OTHER_OPS`.
const PAY: usize = 0;
const TO_ORDER: usize = 1;
const WEBHOOK: usize = 2;
const OTHER_OPS: [&str; 3] = [
    "pay at the simulator",
    "checkout → order seen",
    "paid → order seen",
];

/// Runs the checkouts, settles what is unfinished, prints the figures and the audit.
pub async fn run(args: CheckoutArgs) -> Result<(), LoadError> {
    let (base, payments) = check_arguments(&args)?;
    let hub = HubClient::new(&base, args.concurrency)?;
    let sim = HubClient::new(&payments, args.concurrency)?;
    if let Outcome::Error(detail) = exchange(hub.get("/healthz"), &[]).await.outcome {
        return Err(LoadError::Unreachable {
            target: base,
            detail,
        });
    }
    if let Outcome::Error(detail) = exchange(sim.get("/healthz"), &[]).await.outcome {
        return Err(LoadError::SimulatorUnreachable {
            target: payments,
            detail,
        });
    }
    let stock = match &args.admin_token {
        Some(token) => deepen(&hub, token, discover(&hub, 0).await?).await?,
        None => discover(&hub, MIN_STOCK).await?,
    };
    let charges_before = sim_audit(&sim).await?;

    println!("omnihub load checkout");
    println!("  target       {base}");
    println!("  payments     {payments} (the simulator's time is not counted as the hub's)");
    println!(
        "  shoppers     {} at once, one request in flight each: basket, 1–3 lines, checkout, pay, poll until the order",
        args.concurrency
    );
    println!(
        "  run          {} warm-up (not measured), then {} measured; think time {}",
        humantime::format_duration(args.warmup),
        humantime::format_duration(args.duration),
        humantime::format_duration(args.think)
    );
    if stock.levels.is_some() {
        println!(
            "  stock        {} SKUs set to {DEEP_STOCK} units on hand each through the admin API ({} units available in all)",
            stock.slugs.len(),
            stock.before.values().sum::<i64>()
        );
    } else {
        println!(
            "  stock        {} SKUs with at least {MIN_STOCK} units available ({} units in all)",
            stock.slugs.len(),
            stock.before.values().sum::<i64>()
        );
    }
    println!();

    let mut run = run_shoppers(&hub, &sim, &args, &stock).await?;
    print_figures(&run, args.duration)?;

    let settled = settle(&hub, &mut run).await;
    let stock_line = match (&args.admin_token, &stock.levels) {
        (Some(token), Some(levels)) => {
            let after = admin_levels(&hub, token, stock.slugs.keys()).await?;
            oversold_admin(levels, &after, &run.completed)
        }
        _ => {
            let after = availability(&hub, &stock.slugs).await?;
            oversold(&stock.before, &after, &run.completed)
        }
    };
    let charges_after = sim_audit(&sim).await?;
    let admin = match &args.admin_token {
        Some(token) => Some(admin_orders(&hub, token).await?),
        None => None,
    };

    println!("audit");
    let lines = [
        client_duplicates(&run.completed),
        admin_duplicates(admin.as_deref(), &run.completed),
        double_charges(
            &charges_before,
            &charges_after,
            run.completed.len(),
            settled,
        ),
        stock_line,
    ];
    for line in &lines {
        println!("  {line}");
    }
    println!();

    println!("targets");
    let orders = run.orders_in_window;
    let hub_all = Summary::of("all hub calls", &run.hub.combined()?, args.duration);
    print!(
        "{}",
        report::render_targets(&targets(orders, args.duration, &hub_all))
    );

    let failed = lines.iter().filter(|l| l.pass == Some(false)).count();
    if failed > 0 {
        return Err(LoadError::AuditFailed(failed));
    }
    Ok(())
}

/// The hub's and the simulator's base URLs, once both are on loopback and the numbers are sane.
fn check_arguments(args: &CheckoutArgs) -> Result<(String, String), LoadError> {
    let base = loopback_base(&args.target)?;
    let payments = loopback_base(&args.payments)?;
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return Err(LoadError::BadArguments(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    if args.duration.is_zero() {
        return Err(LoadError::BadArguments(
            "--duration must be longer than 0s".into(),
        ));
    }
    Ok((base, payments))
}

// ---------------------------------------------------------------------------------------------
// Stock
// ---------------------------------------------------------------------------------------------

/// The SKUs the shoppers buy: each with its product's slug, and its availability before the run
/// (and with an admin token, its level as the admin API tells it).
#[derive(Debug)]
struct Stock {
    slugs: BTreeMap<String, String>,
    before: BTreeMap<String, i64>,
    levels: Option<BTreeMap<String, Level>>,
}

/// A SKU's stock as `GET`/`PUT /api/v1/admin/stock/{sku}` answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Level {
    on_hand: i64,
    held: i64,
    available: i64,
}

#[derive(Deserialize)]
struct ProductPage {
    items: Vec<ProductItem>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ProductItem {
    slug: String,
}

#[derive(Deserialize)]
struct ProductDetail {
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    sku: String,
    available: i64,
}

/// Reads the catalog and keeps up to [`MAX_SKUS`] SKUs with at least `min_stock` available;
/// refuses to run with fewer than [`MIN_SKUS`].
async fn discover(hub: &HubClient, min_stock: i64) -> Result<Stock, LoadError> {
    let mut products = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "100")];
        if let Some(c) = cursor.as_deref() {
            query.push(("cursor", c));
        }
        let page: ProductPage = hub.fetch("/api/v1/products", &query).await?;
        products.extend(page.items.into_iter().map(|p| p.slug));
        cursor = page.next_cursor;
        if cursor.is_none() || products.len() >= MAX_PRODUCTS {
            break;
        }
    }
    products.truncate(MAX_PRODUCTS);
    let mut stock = Stock {
        slugs: BTreeMap::new(),
        before: BTreeMap::new(),
        levels: None,
    };
    for slug in products {
        let detail: ProductDetail = hub
            .fetch(&format!("/api/v1/products/{}", path_segment(&slug)), &[])
            .await?;
        for v in detail.variants {
            if v.available >= min_stock && stock.slugs.len() < MAX_SKUS {
                stock.slugs.insert(v.sku.clone(), slug.clone());
                stock.before.insert(v.sku, v.available);
            }
        }
        if stock.slugs.len() >= MAX_SKUS {
            break;
        }
    }
    if stock.slugs.len() < MIN_SKUS {
        return Err(LoadError::TooLittleStock {
            target: hub.base().to_string(),
            found: stock.slugs.len(),
            needed: MIN_SKUS,
            min_units: MIN_STOCK,
        });
    }
    Ok(stock)
}

/// Sets [`DEEP_STOCK`] units on hand on up to [`ADMIN_SKUS`] of the catalog's SKUs that hold
/// nothing for open checkouts (so that every unit held after the run is the run's), one from
/// each product first; refuses to run with fewer than [`MIN_SKUS`].
async fn deepen(hub: &HubClient, token: &AdminToken, catalog: Stock) -> Result<Stock, LoadError> {
    // Round-robin over the products, so that the load spreads over many of them.
    let mut by_product: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (sku, slug) in &catalog.slugs {
        by_product.entry(slug).or_default().push(sku);
    }
    let mut order = Vec::new();
    for round in 0.. {
        let before = order.len();
        order.extend(
            by_product
                .values()
                .filter_map(|skus| skus.get(round).copied()),
        );
        if order.len() == before {
            break;
        }
    }
    let mut stock = Stock {
        slugs: BTreeMap::new(),
        before: BTreeMap::new(),
        levels: Some(BTreeMap::new()),
    };
    let mut levels = BTreeMap::new();
    for sku in order {
        if levels.len() >= ADMIN_SKUS {
            break;
        }
        let path = format!("/api/v1/admin/stock/{}", path_segment(sku));
        let now: Level = admin_fetch(hub, "GET", hub.get(&path).bearer_auth(&token.0)).await?;
        if now.held != 0 {
            continue;
        }
        let set = hub
            .put(&path)
            .bearer_auth(&token.0)
            .json(&serde_json::json!({ "on_hand": DEEP_STOCK }));
        let level: Level = admin_fetch(hub, "PUT", set).await?;
        stock.slugs.insert(sku.clone(), catalog.slugs[sku].clone());
        stock.before.insert(sku.clone(), level.available);
        levels.insert(sku.clone(), level);
    }
    if levels.len() < MIN_SKUS {
        return Err(LoadError::TooLittleStock {
            target: hub.base().to_string(),
            found: levels.len(),
            needed: MIN_SKUS,
            min_units: DEEP_STOCK,
        });
    }
    stock.levels = Some(levels);
    Ok(stock)
}

/// The admin stock levels of `skus` now.
async fn admin_levels(
    hub: &HubClient,
    token: &AdminToken,
    skus: impl Iterator<Item = &String>,
) -> Result<BTreeMap<String, Level>, LoadError> {
    let mut levels = BTreeMap::new();
    for sku in skus {
        let path = format!("/api/v1/admin/stock/{}", path_segment(sku));
        let level = admin_fetch(hub, "GET", hub.get(&path).bearer_auth(&token.0)).await?;
        levels.insert(sku.clone(), level);
    }
    Ok(levels)
}

async fn admin_fetch<T: serde::de::DeserializeOwned>(
    hub: &HubClient,
    method: &str,
    request: RequestBuilder,
) -> Result<T, LoadError> {
    fetch_json(request)
        .await
        .map_err(|detail| LoadError::Unexpected {
            target: hub.base().to_string(),
            what: format!("{method} /api/v1/admin/stock/{{sku}}"),
            detail,
        })
}

/// Units available now of the SKUs in `slugs` (SKU → product slug).
async fn availability(
    hub: &HubClient,
    slugs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, i64>, LoadError> {
    let products: BTreeSet<&String> = slugs.values().collect();
    let mut available = BTreeMap::new();
    for slug in products {
        let detail: ProductDetail = hub
            .fetch(&format!("/api/v1/products/{}", path_segment(slug)), &[])
            .await?;
        for v in detail.variants {
            if slugs.contains_key(&v.sku) {
                available.insert(v.sku, v.available);
            }
        }
    }
    Ok(available)
}

// ---------------------------------------------------------------------------------------------
// The shoppers
// ---------------------------------------------------------------------------------------------

/// The measured part of the run: calls and orders that finish inside it count.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn after(warmup: Duration, duration: Duration) -> Window {
        let from = Instant::now() + warmup;
        Window {
            from,
            until: from + duration,
        }
    }

    fn contains(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }

    fn is_over(&self) -> bool {
        Instant::now() >= self.until
    }
}

/// A checkout that became an order, as its shopper saw it.
#[derive(Debug, Clone, PartialEq)]
struct Completed {
    checkout: String,
    order: String,
    /// Units per SKU, from the checkout's frozen lines.
    units: Vec<(String, u32)>,
}

/// A basket whose checkout may exist but was not seen through to its order.
#[derive(Debug, Clone)]
struct Unfinished {
    basket: String,
    token: String,
    /// Known unless starting the checkout failed without an answer.
    checkout: Option<String>,
    email: String,
}

/// What a run of shoppers measured and left behind.
#[derive(Debug)]
struct Run {
    hub: Stats,
    other: Stats,
    completed: Vec<Completed>,
    unfinished: Vec<Unfinished>,
    /// Checkouts that ended without an order, by why (e.g. `stuck`, `HTTP 409 out_of_stock`).
    failures: BTreeMap<String, u64>,
    orders_in_window: u64,
    started: u64,
}

impl Run {
    fn new() -> Result<Run, LoadError> {
        Ok(Run {
            hub: Stats::new(&HUB_OPS)?,
            other: Stats::new(&OTHER_OPS)?,
            completed: Vec::new(),
            unfinished: Vec::new(),
            failures: BTreeMap::new(),
            orders_in_window: 0,
            started: 0,
        })
    }

    fn merge(&mut self, other: Run) -> Result<(), LoadError> {
        self.hub.merge(&other.hub)?;
        self.other.merge(&other.other)?;
        self.completed.extend(other.completed);
        self.unfinished.extend(other.unfinished);
        for (why, n) in other.failures {
            *self.failures.entry(why).or_default() += n;
        }
        self.orders_in_window += other.orders_in_window;
        self.started += other.started;
        Ok(())
    }

    fn fail(&mut self, why: impl Into<String>) {
        *self.failures.entry(why.into()).or_default() += 1;
    }
}

/// One simulated shopper.
struct Shopper {
    hub: HubClient,
    sim: HubClient,
    window: Window,
    rng: Rng,
    think: Duration,
    skus: Arc<Vec<String>>,
    /// Numbers the shoppers' emails, across shoppers.
    sequence: Arc<AtomicU64>,
    run: Run,
}

#[derive(Deserialize)]
struct NewBasket {
    id: String,
    token: Option<String>,
}

/// A checkout as the hub answers it (the fields the shopper needs).
#[derive(Debug, Deserialize)]
struct CheckoutBody {
    id: String,
    state: String,
    payment_url: Option<String>,
    breakdown: Option<BreakdownBody>,
    order: Option<OrderRefBody>,
}

#[derive(Debug, Deserialize)]
struct BreakdownBody {
    lines: Vec<LineBody>,
}

#[derive(Debug, Deserialize)]
struct LineBody {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Deserialize)]
struct OrderRefBody {
    number: String,
}

/// Sends `request`, records it as `op` of `stats` if it finished inside `window`, and returns the
/// body of a 2xx answer or the kind of failure.
async fn timed(
    stats: &mut Stats,
    window: Window,
    op: usize,
    request: RequestBuilder,
) -> Result<(Vec<u8>, Instant), String> {
    let done = exchange(request, &[]).await;
    let failure = match &done.outcome {
        Outcome::Error(kind) => Some(kind.clone()),
        _ => None,
    };
    if window.contains(done.finished) {
        stats.record(op, done.outcome);
    }
    match (failure, done.body) {
        (None, Some(body)) => Ok((body, done.finished)),
        (Some(kind), _) => Err(kind),
        (None, None) => Err("no body".into()),
    }
}

/// The body a checkout starts with.
fn checkout_body(email: &str) -> serde_json::Value {
    serde_json::json!({
        "email": email,
        "address": {
            "name": "Load Shopper",
            "line1": "Unter den Linden 1",
            "city": "Berlin",
            "postcode": "10117",
            "country": "DE",
        },
        "shipping_method": "standard",
    })
}

/// The provider's session id: the last path segment of the hosted payment page's URL.
fn session_id(payment_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(payment_url).ok()?;
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(last.to_string())
}

/// The pause before poll number `attempt` (0-based).
fn poll_pause(attempt: usize) -> Duration {
    let ms = POLL_BACKOFF_MS
        .get(attempt)
        .or(POLL_BACKOFF_MS.last())
        .copied()
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// Whether an answer to starting a checkout means none was made: a refusal (4xx) says so; no
/// answer, or a 5xx, leaves it open.
fn refused(kind: &str) -> bool {
    kind.strip_prefix("HTTP 4").is_some()
}

impl Shopper {
    async fn pause(&mut self) {
        if !self.think.is_zero() {
            let factor = f64::from(self.rng.between(50, 150)) / 100.0;
            tokio::time::sleep(self.think.mul_f64(factor)).await;
        }
    }

    async fn hub_call(&mut self, op: usize, request: RequestBuilder) -> Result<Vec<u8>, String> {
        timed(&mut self.run.hub, self.window, op, request)
            .await
            .map(|(body, _)| body)
    }

    /// Checkouts until the window is over; the last one is seen through past it.
    async fn shop(mut self) -> Run {
        while !self.window.is_over() {
            if self.checkout_once().await.is_none() {
                // The hub refused or failed before a checkout existed: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.run
    }

    /// One basket to its order. `None` when it stopped before the checkout started.
    async fn checkout_once(&mut self) -> Option<()> {
        self.pause().await;
        let visitor = ulid::Ulid::new().to_string();
        let create = self
            .hub
            .post("/api/v1/baskets")
            .header(ANON_HEADER, &visitor);
        let body = self.hub_call(CREATE_BASKET, create).await.ok()?;
        let basket: NewBasket = serde_json::from_slice(&body).ok()?;
        let token = basket.token?;
        let path = format!("/api/v1/baskets/{}", path_segment(&basket.id));
        let mut skus = Vec::new();
        for _ in 0..self.rng.between(1, 3) {
            let Some(sku) = self.rng.pick(&self.skus).cloned() else {
                break;
            };
            if skus.contains(&sku) {
                continue;
            }
            self.pause().await;
            let line = serde_json::json!({"sku": sku, "quantity": self.rng.between(1, 3)});
            let add = self
                .hub
                .post(&format!("{path}/lines"))
                .header(TOKEN_HEADER, &token)
                .header(ANON_HEADER, &visitor)
                .json(&line);
            self.hub_call(ADD_LINE, add).await.ok()?;
            skus.push(sku);
        }
        let email = format!(
            "load-{}@example.com",
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        self.pause().await;
        let start = self
            .hub
            .post(&format!("{path}/checkout"))
            .header(TOKEN_HEADER, &token)
            .header(ANON_HEADER, &visitor)
            .json(&checkout_body(&email));
        let started_at = Instant::now();
        self.run.started += 1;
        let mut unfinished = Unfinished {
            basket: basket.id,
            token,
            checkout: None,
            email,
        };
        let checkout = match self.hub_call(START_CHECKOUT, start).await {
            Ok(body) => serde_json::from_slice::<CheckoutBody>(&body).ok(),
            Err(kind) => {
                if !refused(&kind) {
                    self.run.unfinished.push(unfinished);
                }
                self.run.fail(format!("checkout: {kind}"));
                return Some(());
            }
        };
        let Some(checkout) = checkout else {
            self.run.unfinished.push(unfinished);
            self.run.fail("checkout: an answer that is not a checkout");
            return Some(());
        };
        unfinished.checkout = Some(checkout.id.clone());
        let units: Vec<(String, u32)> = checkout
            .breakdown
            .as_ref()
            .map(|b| {
                b.lines
                    .iter()
                    .map(|l| (l.sku.clone(), l.quantity))
                    .collect()
            })
            .unwrap_or_default();
        let session = checkout.payment_url.as_deref().and_then(session_id);
        let Some(session) = session.filter(|_| checkout.state == "payment_pending") else {
            self.run.unfinished.push(unfinished);
            self.run.fail(format!(
                "checkout: state {} without a payment page",
                checkout.state
            ));
            return Some(());
        };
        self.pause().await;
        let pay = self
            .sim
            .post(&format!(
                "/_sim/checkout/sessions/{}/pay",
                path_segment(&session)
            ))
            .json(&serde_json::json!({ "card": TEST_CARD }));
        let paid_at = match timed(&mut self.run.other, self.window, PAY, pay).await {
            Ok((_, at)) => at,
            Err(kind) => {
                self.run.unfinished.push(unfinished);
                self.run.fail(format!("pay at the simulator: {kind}"));
                return Some(());
            }
        };
        let token = unfinished.token.clone();
        match self.poll(&checkout.id, &token).await {
            Ok(order) => {
                let seen = Instant::now();
                if self.window.contains(seen) {
                    self.run.orders_in_window += 1;
                    self.run
                        .other
                        .record(TO_ORDER, Outcome::Ok(seen - started_at));
                    self.run.other.record(WEBHOOK, Outcome::Ok(seen - paid_at));
                }
                self.run.completed.push(Completed {
                    checkout: checkout.id,
                    order,
                    units,
                });
            }
            Err(why) => {
                self.run.unfinished.push(unfinished);
                self.run.fail(why);
            }
        }
        Some(())
    }

    /// Reads the checkout until it is paid with its order (its number), it ended without one, or
    /// [`POLL_GIVE_UP`] passed (`stuck`).
    async fn poll(&mut self, checkout: &str, token: &str) -> Result<String, String> {
        let deadline = Instant::now() + POLL_GIVE_UP;
        let path = format!("/api/v1/checkouts/{}", path_segment(checkout));
        for attempt in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(poll_pause(attempt)).await;
            // Only the holder of the anonymous basket's token may read its checkout.
            let read = self.hub.get(&path).header(TOKEN_HEADER, token);
            let Ok(body) = self.hub_call(POLL, read).await else {
                continue;
            };
            let Ok(view) = serde_json::from_slice::<CheckoutBody>(&body) else {
                continue;
            };
            match (view.state.as_str(), view.order) {
                ("paid", Some(order)) => return Ok(order.number),
                ("cancelled" | "expired", _) => return Err(format!("checkout {}", view.state)),
                _ => {}
            }
        }
        Err("stuck: no order 10 s after payment".into())
    }
}

/// Runs one shopper per `--concurrency` for warm-up plus duration and merges what they did.
async fn run_shoppers(
    hub: &HubClient,
    sim: &HubClient,
    args: &CheckoutArgs,
    stock: &Stock,
) -> Result<Run, LoadError> {
    let window = Window::after(args.warmup, args.duration);
    let skus: Arc<Vec<String>> = Arc::new(stock.slugs.keys().cloned().collect());
    let sequence = Arc::new(AtomicU64::new(1));
    let mut tasks = JoinSet::new();
    for i in 0..args.concurrency {
        let shopper = Shopper {
            hub: hub.clone(),
            sim: sim.clone(),
            window,
            rng: Rng::for_stream(i as u64),
            think: args.think,
            skus: skus.clone(),
            sequence: sequence.clone(),
            run: Run::new()?,
        };
        tasks.spawn(shopper.shop());
    }
    let mut total = Run::new()?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.map_err(LoadError::Task)?)?;
    }
    Ok(total)
}

fn print_figures(run: &Run, window: Duration) -> Result<(), LoadError> {
    println!("the hub's calls (measured window)");
    let mut rows = run.hub.summaries(window);
    rows.push(Summary::of("all hub calls", &run.hub.combined()?, window));
    print!("{}", report::render_table(&rows));
    let errors = report::render_errors(&run.hub);
    if !errors.is_empty() {
        println!("errors:");
        print!("{errors}");
    }
    println!();
    println!("outside the hub's calls (informational: the simulator's time, and whole checkouts)");
    print!("{}", report::render_table(&run.other.summaries(window)));
    let errors = report::render_errors(&run.other);
    if !errors.is_empty() {
        println!("errors:");
        print!("{errors}");
    }
    println!();
    println!("orders");
    println!(
        "  in the measured window  {} orders, {:.1} orders/s",
        run.orders_in_window,
        report::per_second(run.orders_in_window, window)
    );
    println!(
        "  in all                  {} checkouts started, {} orders (warm-up and the last checkouts after the window included)",
        run.started,
        run.completed.len()
    );
    if run.failures.is_empty() {
        println!("  without an order        none");
    } else {
        println!("  without an order        by why:");
        for (why, n) in &run.failures {
            println!("    {n} x {why}");
        }
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Settling what the shoppers left unfinished
// ---------------------------------------------------------------------------------------------

/// How the unfinished checkouts were settled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Settled {
    cancelled: usize,
    /// Found paid after all: their orders joined the completed ones.
    paid: usize,
    /// Could not be settled: the stock and charge figures may be off by them.
    unsettled: usize,
}

/// Cancels each unfinished checkout (learning its id first if starting it got no answer); one
/// the payment went through for after all comes back paid with its order, which then counts.
async fn settle(hub: &HubClient, run: &mut Run) -> Settled {
    let mut settled = Settled::default();
    let unfinished = std::mem::take(&mut run.unfinished);
    if unfinished.is_empty() {
        return settled;
    }
    println!(
        "settling {} unfinished checkouts (cancelled, or found paid)",
        unfinished.len()
    );
    for u in unfinished {
        match settle_one(hub, &u).await {
            Ok(Some(done)) => {
                settled.paid += 1;
                run.completed.push(done);
            }
            Ok(None) => settled.cancelled += 1,
            Err(why) => {
                settled.unsettled += 1;
                println!("  basket {}: {why}", u.basket);
            }
        }
    }
    println!(
        "  {} cancelled, {} paid after all, {} unsettled",
        settled.cancelled, settled.paid, settled.unsettled
    );
    println!();
    settled
}

async fn settle_one(hub: &HubClient, u: &Unfinished) -> Result<Option<Completed>, String> {
    let basket = format!("/api/v1/baskets/{}", path_segment(&u.basket));
    let id = match &u.checkout {
        Some(id) => id.clone(),
        // While a payment is pending, starting again answers that same checkout.
        None => {
            let again = hub
                .post(&format!("{basket}/checkout"))
                .header(TOKEN_HEADER, &u.token)
                .json(&checkout_body(&u.email));
            match fetch_json::<CheckoutBody>(again).await {
                Ok(c) => c.id,
                Err(kind) if refused(&kind) => return Ok(None),
                Err(kind) => return Err(format!("checkout: {kind}")),
            }
        }
    };
    let cancel = hub
        .post(&format!("/api/v1/checkouts/{}/cancel", path_segment(&id)))
        .header(TOKEN_HEADER, &u.token);
    let view: CheckoutBody = fetch_json(cancel)
        .await
        .map_err(|kind| format!("cancel: {kind}"))?;
    match (view.state.as_str(), view.order) {
        ("paid", Some(order)) => Ok(Some(Completed {
            checkout: view.id,
            order: order.number,
            units: view
                .breakdown
                .map(|b| b.lines.into_iter().map(|l| (l.sku, l.quantity)).collect())
                .unwrap_or_default(),
        })),
        ("cancelled" | "expired", _) => Ok(None),
        (state, _) => Err(format!("the checkout is still {state} after cancelling")),
    }
}

// ---------------------------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------------------------

/// One audit line: what was checked, what was found, and whether it passed (`None`: skipped).
#[derive(Debug, Clone, PartialEq)]
struct AuditLine {
    check: &'static str,
    found: String,
    pass: Option<bool>,
}

impl std::fmt::Display for AuditLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        write!(f, "{verdict}  {}: {}", self.check, self.found)
    }
}

/// `items` that occur more than once, each with how often.
fn repeated<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

/// A few of `items`, for a message.
fn some_of<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let shown: Vec<&str> = items.take(5).collect();
    shown.join(", ")
}

/// Every completed checkout has one order number, and no order number is on two checkouts.
fn client_duplicates(completed: &[Completed]) -> AuditLine {
    let checkouts = repeated(completed.iter().map(|c| c.checkout.as_str()));
    let numbers = repeated(completed.iter().map(|c| c.order.as_str()));
    let found = if checkouts.is_empty() && numbers.is_empty() {
        format!(
            "{} checkouts, {} distinct order numbers",
            completed.len(),
            completed.len()
        )
    } else {
        format!(
            "{} checkouts seen completed twice ({}), {} order numbers on several checkouts ({})",
            checkouts.len(),
            some_of(checkouts.keys().copied()),
            numbers.len(),
            some_of(numbers.keys().copied())
        )
    };
    AuditLine {
        check: "duplicate orders, as the shoppers saw them",
        found,
        pass: Some(checkouts.is_empty() && numbers.is_empty()),
    }
}

/// One order of the hub's admin list.
#[derive(Debug, Clone, Deserialize)]
struct AdminOrder {
    number: String,
    checkout: Option<String>,
}

#[derive(Deserialize)]
struct AdminPage {
    orders: Vec<AdminOrder>,
    next: Option<String>,
}

/// Every order the admin API lists, newest first.
async fn admin_orders(hub: &HubClient, token: &AdminToken) -> Result<Vec<AdminOrder>, LoadError> {
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..MAX_ADMIN_PAGES {
        let mut query = vec![("limit", ADMIN_PAGE)];
        if let Some(b) = before.as_deref() {
            query.push(("before", b));
        }
        let request = hub
            .get("/api/v1/admin/orders")
            .query(&query)
            .bearer_auth(&token.0);
        let page: AdminPage =
            fetch_json(request)
                .await
                .map_err(|detail| LoadError::Unexpected {
                    target: hub.base().to_string(),
                    what: "GET /api/v1/admin/orders".into(),
                    detail,
                })?;
        all.extend(page.orders);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    Ok(all)
}

/// In the hub's own list, no checkout has two orders and no number is listed twice, and every
/// completed checkout is there with the number its shopper saw.
fn admin_duplicates(admin: Option<&[AdminOrder]>, completed: &[Completed]) -> AuditLine {
    let check = "duplicate orders, in the hub's admin order list";
    let Some(admin) = admin else {
        return AuditLine {
            check,
            found: "skipped (give --admin-token to read the hub's order list)".into(),
            pass: None,
        };
    };
    let checkouts = repeated(admin.iter().filter_map(|o| o.checkout.as_deref()));
    let numbers = repeated(admin.iter().map(|o| o.number.as_str()));
    let listed: BTreeMap<&str, &str> = admin
        .iter()
        .filter_map(|o| o.checkout.as_deref().map(|c| (c, o.number.as_str())))
        .collect();
    let missing: Vec<&str> = completed
        .iter()
        .filter(|c| listed.get(c.checkout.as_str()) != Some(&c.order.as_str()))
        .map(|c| c.checkout.as_str())
        .collect();
    let mut problems = Vec::new();
    if !checkouts.is_empty() {
        problems.push(format!(
            "{} checkouts with several orders ({})",
            checkouts.len(),
            some_of(checkouts.keys().copied())
        ));
    }
    if !numbers.is_empty() {
        problems.push(format!(
            "{} order numbers listed twice ({})",
            numbers.len(),
            some_of(numbers.keys().copied())
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} completed checkouts not listed with the number their shopper saw ({})",
            missing.len(),
            some_of(missing.iter().copied())
        ));
    }
    let pass = problems.is_empty();
    let found = if pass {
        format!(
            "{} orders listed, none twice for a checkout; all {} of this run's orders listed with their numbers",
            admin.len(),
            completed.len()
        )
    } else {
        problems.join("; ")
    };
    AuditLine {
        check,
        found,
        pass: Some(pass),
    }
}

/// The simulator's audit figures.
#[derive(Debug, Clone, Default, Deserialize)]
struct SimAudit {
    double_charges: u64,
    charges_succeeded: u64,
}

async fn sim_audit(sim: &HubClient) -> Result<SimAudit, LoadError> {
    fetch_json(sim.get("/_sim/audit"))
        .await
        .map_err(|detail| LoadError::SimulatorUnexpected {
            target: sim.base().to_string(),
            what: "GET /_sim/audit".into(),
            detail,
        })
}

/// No payment was charged twice, and the run's successful charges are its orders.
fn double_charges(
    before: &SimAudit,
    after: &SimAudit,
    orders: usize,
    settled: Settled,
) -> AuditLine {
    let charges = after
        .charges_succeeded
        .saturating_sub(before.charges_succeeded);
    let no_doubles = after.double_charges == 0;
    let mut found = format!(
        "{} double charges at the simulator; {charges} charges succeeded during the run for {orders} orders",
        after.double_charges
    );
    // Unsettled checkouts may have been charged without an order the run knows of.
    let charges_match = charges == orders as u64 || settled.unsettled > 0;
    if charges != orders as u64 && settled.unsettled > 0 {
        found.push_str(&format!(
            " ({} checkouts unsettled, so the counts may differ)",
            settled.unsettled
        ));
    }
    AuditLine {
        check: "double charges",
        found,
        pass: Some(no_doubles && charges_match),
    }
}

/// For every SKU: the units sold by the run's orders equal the drop in its available stock, and
/// nothing is available below zero.
fn oversold(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    completed: &[Completed],
) -> AuditLine {
    let sold = units_sold(completed);
    let mut mismatched = Vec::new();
    let mut negative = Vec::new();
    let mut missing = Vec::new();
    let (mut total_sold, mut total_drop) = (0i64, 0i64);
    for (sku, was) in before {
        let sold = sold.get(sku.as_str()).copied().unwrap_or(0);
        total_sold += sold;
        let Some(now) = after.get(sku) else {
            missing.push(sku.as_str());
            continue;
        };
        total_drop += was - now;
        if *now < 0 {
            negative.push(format!("{sku} at {now}"));
        }
        if was - now != sold {
            mismatched.push(format!("{sku}: sold {sold}, dropped {}", was - now));
        }
    }
    let strangers: Vec<&str> = sold
        .keys()
        .copied()
        .filter(|sku| !before.contains_key(*sku))
        .collect();
    let mut problems = Vec::new();
    if !negative.is_empty() {
        problems.push(format!(
            "{} SKUs below zero ({})",
            negative.len(),
            some_of(negative.iter().map(String::as_str))
        ));
    }
    if !mismatched.is_empty() {
        problems.push(format!(
            "{} SKUs whose drop is not what was sold ({})",
            mismatched.len(),
            some_of(mismatched.iter().map(String::as_str))
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} SKUs no longer listed ({})",
            missing.len(),
            some_of(missing.iter().copied())
        ));
    }
    if !strangers.is_empty() {
        problems.push(format!(
            "{} SKUs sold that were not put in baskets ({})",
            strangers.len(),
            some_of(strangers.iter().copied())
        ));
    }
    let pass = problems.is_empty();
    AuditLine {
        check: "oversold units",
        found: if pass {
            format!(
                "{} SKUs: {total_sold} units sold = {total_drop} units less available, none below zero",
                before.len()
            )
        } else {
            problems.join("; ")
        },
        pass: Some(pass),
    }
}

/// For every SKU, by the admin API: nothing is held once the run's checkouts are settled, on
/// hand dropped by exactly the units sold, and neither on hand nor available is below zero.
fn oversold_admin(
    before: &BTreeMap<String, Level>,
    after: &BTreeMap<String, Level>,
    completed: &[Completed],
) -> AuditLine {
    let sold = units_sold(completed);
    let (mut mismatched, mut held, mut negative, mut missing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut total_sold, mut total_drop) = (0i64, 0i64);
    for (sku, was) in before {
        let sold = sold.get(sku.as_str()).copied().unwrap_or(0);
        total_sold += sold;
        let Some(now) = after.get(sku) else {
            missing.push(sku.as_str());
            continue;
        };
        let dropped = was.on_hand - now.on_hand;
        total_drop += dropped;
        if now.held != 0 {
            held.push(format!("{sku}: {} held", now.held));
        }
        if now.on_hand < 0 || now.available < 0 {
            negative.push(format!(
                "{sku} at {} on hand, {} available",
                now.on_hand, now.available
            ));
        }
        if dropped != sold {
            mismatched.push(format!("{sku}: sold {sold}, on hand dropped {dropped}"));
        }
    }
    let strangers: Vec<&str> = sold
        .keys()
        .copied()
        .filter(|sku| !before.contains_key(*sku))
        .collect();
    let mut problems = Vec::new();
    let mut report = |what: &str, items: &[String]| {
        if !items.is_empty() {
            problems.push(format!(
                "{} SKUs {what} ({})",
                items.len(),
                some_of(items.iter().map(String::as_str))
            ));
        }
    };
    report("still holding units after settling", &held);
    report("below zero", &negative);
    report("whose on-hand drop is not what was sold", &mismatched);
    let missing: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
    report("without a stock level", &missing);
    let strangers: Vec<String> = strangers.iter().map(|s| s.to_string()).collect();
    report("sold that were not put in baskets", &strangers);
    let pass = problems.is_empty();
    AuditLine {
        check: "oversold units (admin stock: on hand and held)",
        found: if pass {
            format!(
                "{} SKUs: {total_sold} units sold = {total_drop} units less on hand, 0 held, none below zero",
                before.len()
            )
        } else {
            problems.join("; ")
        },
        pass: Some(pass),
    }
}

/// Units sold per SKU by `completed`.
fn units_sold(completed: &[Completed]) -> BTreeMap<&str, i64> {
    let mut sold: BTreeMap<&str, i64> = BTreeMap::new();
    for c in completed {
        for (sku, quantity) in &c.units {
            *sold.entry(sku.as_str()).or_default() += i64::from(*quantity);
        }
    }
    sold
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// The targets, met or missed: orders per second in the window, and the p99 of all the
/// hub's calls.
fn targets(orders: u64, window: Duration, hub_all: &Summary) -> Vec<Target> {
    let per_second = report::per_second(orders, window);
    let errors = if hub_all.errors > 0 {
        format!(", {} errors", hub_all.errors)
    } else {
        String::new()
    };
    vec![
        Target {
            goal: format!("orders/s ≥ {ORDERS_PER_SECOND_TARGET} (steady state)"),
            measured: format!("{per_second:.1} orders/s ({orders} orders)"),
            met: (!window.is_zero()).then_some(per_second >= ORDERS_PER_SECOND_TARGET),
        },
        Target {
            goal: format!("p99 of the hub's calls < {HUB_P99_TARGET_MS} ms"),
            measured: format!("{:.2} ms{errors}", hub_all.p99_ms),
            met: (hub_all.count > 0).then_some(hub_all.p99_ms < HUB_P99_TARGET_MS),
        },
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> CheckoutArgs {
        CheckoutArgs {
            target: "http://127.0.0.1:8080".into(),
            payments: "http://127.0.0.1:8201".into(),
            concurrency: 32,
            duration: Duration::from_secs(60),
            warmup: Duration::from_secs(5),
            admin_token: None,
            think: Duration::ZERO,
        }
    }

    fn completed(checkout: &str, order: &str, units: &[(&str, u32)]) -> Completed {
        Completed {
            checkout: checkout.into(),
            order: order.into(),
            units: units.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
        }
    }

    #[test]
    fn arguments_are_bounded_and_both_targets_on_loopback() {
        assert_eq!(
            check_arguments(&args()).unwrap(),
            (
                "http://127.0.0.1:8080".to_string(),
                "http://127.0.0.1:8201".to_string()
            )
        );
        let bad = [
            CheckoutArgs {
                concurrency: 0,
                ..args()
            },
            CheckoutArgs {
                concurrency: MAX_CONCURRENCY + 1,
                ..args()
            },
            CheckoutArgs {
                duration: Duration::ZERO,
                ..args()
            },
        ];
        for a in bad {
            assert!(
                matches!(check_arguments(&a), Err(LoadError::BadArguments(_))),
                "{a:?}"
            );
        }
        let remote = CheckoutArgs {
            payments: "http://10.0.0.7:8201".into(),
            ..args()
        };
        assert!(matches!(
            check_arguments(&remote),
            Err(LoadError::NotLoopback(t)) if t == "http://10.0.0.7:8201"
        ));
        let remote_hub = CheckoutArgs {
            target: "http://example.com".into(),
            ..args()
        };
        assert!(matches!(
            check_arguments(&remote_hub),
            Err(LoadError::NotLoopback(_))
        ));
    }

    #[test]
    fn the_admin_token_is_never_shown() {
        let a = CheckoutArgs {
            admin_token: Some("s3cret".parse().unwrap()),
            ..args()
        };
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(" ".parse::<AdminToken>().is_err());
    }

    #[test]
    fn the_session_id_is_the_last_segment_of_the_payment_page() {
        let cases = [
            (
                "http://127.0.0.1:8201/pay/cs_test_a1B2",
                Some("cs_test_a1B2"),
            ),
            (
                "http://127.0.0.1:8201/pay/cs_test_a1B2/",
                Some("cs_test_a1B2"),
            ),
            ("http://127.0.0.1:8201/pay/cs_1?lang=de#top", Some("cs_1")),
            ("https://pay.example/c/pay/cs_live_9", Some("cs_live_9")),
            ("http://127.0.0.1:8201/", None),
            ("not a url", None),
            ("", None),
        ];
        for (url, want) in cases {
            assert_eq!(session_id(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn polls_back_off_then_keep_the_last_pause() {
        let pauses: Vec<u64> = (0..9).map(|i| poll_pause(i).as_millis() as u64).collect();
        assert_eq!(pauses, [2, 5, 10, 20, 50, 50, 50, 50, 50]);
        let total: u64 = pauses.iter().sum();
        assert!(Duration::from_millis(total) < POLL_GIVE_UP);
    }

    #[test]
    fn only_a_refusal_means_no_checkout_was_made() {
        assert!(refused("HTTP 409 out_of_stock"));
        assert!(refused("HTTP 422 invalid_address"));
        assert!(refused("HTTP 429 rate_limited"));
        assert!(!refused("HTTP 503 payment_provider_unavailable"));
        assert!(!refused("timeout (over 10 s)"));
    }

    #[test]
    fn duplicates_seen_by_the_shoppers_fail_the_audit() {
        let fine = [
            completed("c1", "W-000001", &[]),
            completed("c2", "W-000002", &[]),
        ];
        let line = client_duplicates(&fine);
        assert_eq!(line.pass, Some(true), "{line}");
        assert!(line.found.starts_with("2 checkouts, 2 distinct"), "{line}");
        let twice = [
            completed("c1", "W-000001", &[]),
            completed("c2", "W-000001", &[]),
            completed("c3", "W-000003", &[]),
            completed("c3", "W-000004", &[]),
        ];
        let line = client_duplicates(&twice);
        assert_eq!(line.pass, Some(false));
        assert!(
            line.found.contains("1 checkouts seen completed twice (c3)"),
            "{line}"
        );
        assert!(
            line.found
                .contains("1 order numbers on several checkouts (W-000001)"),
            "{line}"
        );
        assert!(line.to_string().starts_with("FAIL  "), "{line}");
    }

    #[test]
    fn the_admin_list_is_checked_for_doubles_and_for_every_order() {
        let admin = |rows: &[(&str, Option<&str>)]| -> Vec<AdminOrder> {
            rows.iter()
                .map(|(n, c)| AdminOrder {
                    number: n.to_string(),
                    checkout: c.map(str::to_string),
                })
                .collect()
        };
        let ours = [
            completed("c1", "W-000001", &[]),
            completed("c2", "W-000002", &[]),
        ];
        assert_eq!(admin_duplicates(None, &ours).pass, None);
        let good = admin(&[
            ("W-000003", Some("c9")),
            ("W-000002", Some("c2")),
            ("W-000001", Some("c1")),
            ("P-000001", None),
        ]);
        let line = admin_duplicates(Some(&good), &ours);
        assert_eq!(line.pass, Some(true), "{line}");
        let doubled = admin(&[
            ("W-000003", Some("c1")),
            ("W-000002", Some("c2")),
            ("W-000001", Some("c1")),
        ]);
        let line = admin_duplicates(Some(&doubled), &ours);
        assert_eq!(line.pass, Some(false));
        assert!(
            line.found.contains("1 checkouts with several orders (c1)"),
            "{line}"
        );
        let missing = admin(&[("W-000001", Some("c1"))]);
        let line = admin_duplicates(Some(&missing), &ours);
        assert_eq!(line.pass, Some(false));
        assert!(
            line.found.contains("1 completed checkouts not listed"),
            "{line}"
        );
        let renumbered = admin(&[("W-000001", Some("c1")), ("W-000009", Some("c2"))]);
        assert_eq!(admin_duplicates(Some(&renumbered), &ours).pass, Some(false));
    }

    #[test]
    fn double_charges_and_charges_without_orders_fail() {
        let before = SimAudit {
            double_charges: 0,
            charges_succeeded: 100,
        };
        let after = |double_charges, charges_succeeded| SimAudit {
            double_charges,
            charges_succeeded,
        };
        let none = Settled::default();
        assert_eq!(
            double_charges(&before, &after(0, 150), 50, none).pass,
            Some(true)
        );
        assert_eq!(
            double_charges(&before, &after(1, 150), 50, none).pass,
            Some(false)
        );
        // A charge the run has no order for.
        assert_eq!(
            double_charges(&before, &after(0, 151), 50, none).pass,
            Some(false)
        );
        let unsettled = Settled {
            unsettled: 1,
            ..none
        };
        let line = double_charges(&before, &after(0, 151), 50, unsettled);
        assert_eq!(line.pass, Some(true));
        assert!(line.found.contains("1 checkouts unsettled"), "{line}");
    }

    #[test]
    fn units_sold_must_equal_the_drop_in_stock() {
        let stock = |rows: &[(&str, i64)]| -> BTreeMap<String, i64> {
            rows.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        let before = stock(&[("A", 1000), ("B", 2000), ("C", 1500)]);
        let orders = [
            completed("c1", "W-1", &[("A", 2), ("B", 1)]),
            completed("c2", "W-2", &[("A", 3)]),
        ];
        let after = stock(&[("A", 995), ("B", 1999), ("C", 1500)]);
        let line = oversold(&before, &after, &orders);
        assert_eq!(line.pass, Some(true), "{line}");
        assert!(
            line.found.contains("6 units sold = 6 units less available"),
            "{line}"
        );

        let leaked = stock(&[("A", 994), ("B", 1999), ("C", 1500)]);
        let line = oversold(&before, &leaked, &orders);
        assert_eq!(line.pass, Some(false));
        assert!(line.found.contains("A: sold 5, dropped 6"), "{line}");

        let below = stock(&[("A", -5), ("B", 1999), ("C", 1500)]);
        let line = oversold(&before, &below, &orders);
        assert!(line.found.contains("SKUs below zero (A at -5)"), "{line}");

        let gone = stock(&[("A", 995), ("B", 1999)]);
        assert_eq!(oversold(&before, &gone, &orders).pass, Some(false));

        let stranger = [completed("c3", "W-3", &[("Z", 1)])];
        let line = oversold(&before, &before, &stranger);
        assert!(line.found.contains("not put in baskets (Z)"), "{line}");
    }

    #[test]
    fn admin_stock_must_drop_on_hand_by_the_units_sold_and_hold_nothing() {
        let level = |on_hand, held| Level {
            on_hand,
            held,
            available: on_hand - held,
        };
        let levels = |rows: &[(&str, Level)]| -> BTreeMap<String, Level> {
            rows.iter().map(|(s, l)| (s.to_string(), *l)).collect()
        };
        let before = levels(&[("A", level(1_000_000, 0)), ("B", level(1_000_000, 0))]);
        let orders = [
            completed("c1", "W-1", &[("A", 2), ("B", 1)]),
            completed("c2", "W-2", &[("A", 3)]),
        ];
        let after = levels(&[("A", level(999_995, 0)), ("B", level(999_999, 0))]);
        let line = oversold_admin(&before, &after, &orders);
        assert_eq!(line.pass, Some(true), "{line}");
        assert!(
            line.found
                .contains("6 units sold = 6 units less on hand, 0 held"),
            "{line}"
        );

        let still_held = levels(&[("A", level(999_995, 2)), ("B", level(999_999, 0))]);
        let line = oversold_admin(&before, &still_held, &orders);
        assert_eq!(line.pass, Some(false));
        assert!(line.found.contains("A: 2 held"), "{line}");

        let leaked = levels(&[("A", level(999_994, 0)), ("B", level(999_999, 0))]);
        let line = oversold_admin(&before, &leaked, &orders);
        assert_eq!(line.pass, Some(false));
        assert!(
            line.found.contains("A: sold 5, on hand dropped 6"),
            "{line}"
        );

        let gone = levels(&[("A", level(999_995, 0))]);
        assert_eq!(oversold_admin(&before, &gone, &orders).pass, Some(false));
        let stranger = [completed("c3", "W-3", &[("Z", 1)])];
        let line = oversold_admin(&before, &before, &stranger);
        assert!(line.found.contains("not put in baskets (Z)"), "{line}");
    }

    #[test]
    fn targets_are_judged_against_their_limits() {
        let hub = |p99_ms: f64, count: u64| Summary {
            name: "all hub calls".into(),
            count,
            per_second: 0.0,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms,
            max_ms: p99_ms,
            rejected: 0,
            errors: 0,
        };
        let t = targets(18_600, Duration::from_secs(60), &hub(12.5, 100));
        assert_eq!((t[0].met, t[1].met), (Some(true), Some(true)));
        assert_eq!(t[0].measured, "310.0 orders/s (18600 orders)");
        let t = targets(6_000, Duration::from_secs(60), &hub(50.0, 100));
        assert_eq!((t[0].met, t[1].met), (Some(false), Some(false)));
        let t = targets(0, Duration::from_secs(60), &hub(0.0, 0));
        assert_eq!(t[1].met, None);
    }
}
