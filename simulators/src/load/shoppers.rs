//! `omnihub load shoppers`: simulated web and mobile shoppers against a running hub.
//!
//! Phases, each with the same clients (one task per shopper, one request in flight each, one
//! pooled HTTP client built the same way), a warm-up that is not measured, then `--duration`
//! measured:
//!
//! 1. **the shopper mix**: browse a category page, search a word from product names, view a
//!    product, create a basket (once per shopper), add a line (durable: the hub acknowledges after
//!    its group commit), change a quantity, view the basket, sometimes remove a line;
//! 2. **durable adds alone**: every request is an add-to-basket, so its throughput can be held
//!    against the bare endpoint's (in the mix adds are one request in seven or eight);
//! 3. **the bare endpoint**: `GET /healthz`, the ceiling of the HTTP stack on this machine;
//! 4. **the paced mix** (unless `--think 0s`): the same shoppers with a think time before each
//!    step, as people shop, so latency is measured at a load the hub carries rather than at
//!    saturation (phases 1–3 run closed-loop: every client sends its next request at once).
//!
//! Then, unless `--memory-actors 0`, the memory phase: N new baskets with one line each (so N
//! basket actors are active), the RSS growth that costs, and how long passivation takes to bring
//! the active baskets back to zero.

use super::http::{exchange, HubClient};
use super::report::{self, percent, Stats, Summary, Target};
use super::rng::Rng;
use super::{loopback_base, parse_duration, LoadError};
use reqwest::RequestBuilder;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Arguments of `omnihub load shoppers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShopperArgs {
    /// The hub's base URL; only this machine (127.0.0.1, localhost or [::1]) may be targeted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Simulated shoppers at once, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured time of each phase, e.g. `20s`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before each phase, not measured, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Basket actors to activate in the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub memory_actors: usize,
    /// How long to wait for the memory phase's baskets to passivate, e.g. `60s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub passivation_timeout: Duration,
    /// A shopper's mean think time between two steps in the paced phase (each pause is drawn
    /// between half and one and a half times this); `0s` skips that phase.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub think: Duration,
}

/// Most shoppers at once.
const MAX_CONCURRENCY: usize = 10_000;
/// Most basket actors the memory phase may create.
const MAX_MEMORY_ACTORS: usize = 1_000_000;
/// SKUs put in baskets have at least this many units available, so adds are not refused.
const MIN_STOCK: i64 = 50;
/// Catalog discovery reads at most this many listing pages of 100 and product details.
const MAX_PAGES: usize = 100;
const MAX_PRODUCTS: usize = 5_000;
/// A shopper's basket keeps at most this many lines (it removes one when over).
const MAX_LINES: usize = 6;
/// In the adds-alone phase, a shopper adds this many units to a basket of
/// [`LINES_PER_BASKET`] lines (so at most 10 of a SKU), then starts a new basket.
const ADDS_PER_BASKET: usize = 50;
const LINES_PER_BASKET: usize = 5;
/// Requests in flight while the memory phase fills baskets, and the most time it may take.
const MEMORY_IN_FLIGHT: usize = 64;
const MEMORY_FILL_LIMIT: Duration = Duration::from_secs(600);
/// How often the memory phase reads `/ops/stats` while waiting for passivation.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// The refusal an add may meet when stock runs short: expected, counted apart from errors.
const STOCK_REFUSALS: &[&str] = &["insufficient_stock"];
const TOKEN_HEADER: &str = "x-basket-token";

/// The targets of the Foundation issue.
const ADD_P99_TARGET_MS: f64 = 10.0;
const ADD_SHARE_TARGET_PERCENT: f64 = 25.0;
const MEMORY_TARGET_MIB: f64 = 100.0;
const MEMORY_TARGET_ACTORS: usize = 10_000;

// The shopper mix's operations, by index into `MIX_OPS`.
const BROWSE: usize = 0;
const SEARCH: usize = 1;
const VIEW_PRODUCT: usize = 2;
const CREATE_BASKET: usize = 3;
const ADD: usize = 4;
const CHANGE_QUANTITY: usize = 5;
const VIEW_BASKET: usize = 6;
const REMOVE_LINE: usize = 7;
const MIX_OPS: [&str; 8] = [
    "browse category",
    "search",
    "view product",
    "create basket",
    "add to basket",
    "change quantity",
    "view basket",
    "remove line",
];
const ALONE_OPS: [&str; 2] = ["add to basket", "create basket"];
const ALONE_ADD: usize = 0;
const ALONE_CREATE: usize = 1;
const HEALTHZ_OPS: [&str; 1] = ["GET /healthz"];
const MEMORY_OPS: [&str; 2] = ["create basket", "add line"];

/// Runs every phase against the hub and prints the figures.
pub async fn run(args: ShopperArgs) -> Result<(), LoadError> {
    let base = loopback_base(&args.target)?;
    check_arguments(&args)?;
    let hub = HubClient::new(&base, args.concurrency)?;
    let healthy = exchange(hub.get("/healthz"), &[]).await;
    if let report::Outcome::Error(detail) = healthy.outcome {
        return Err(LoadError::Unreachable {
            target: base,
            detail,
        });
    }
    let catalog = Arc::new(discover(&hub).await?);

    println!("omnihub load shoppers");
    println!("  target       {base}");
    println!("  clients      {} at once, one request in flight each; one pooled HTTP/1.1 client per phase (keep-alive, {} s request timeout)", args.concurrency, super::http::REQUEST_TIMEOUT.as_secs());
    println!(
        "  each phase   {} warm-up (not measured), then {} measured",
        humantime::format_duration(args.warmup),
        humantime::format_duration(args.duration)
    );
    println!(
        "  catalog      {} products, {} categories, {} SKUs with at least {MIN_STOCK} in stock, {} search words",
        catalog.products.len(),
        catalog.categories.len(),
        catalog.skus.len(),
        catalog.words.len()
    );
    println!();

    println!("phase 1/3: the shopper mix (browse, search, view product, create basket once, add, change quantity, view basket, sometimes remove)");
    println!("(each shopper creates its basket once, usually in the warm-up, so few or no creations fall in the measured window)");
    let mix = run_phase(&hub, &args, Duration::ZERO, &MIX_OPS, |client| {
        shopper(client, catalog.clone())
    })
    .await?;
    let mix_all = Summary::of("all operations", &mix.combined()?, args.duration);
    let mut rows = mix.summaries(args.duration);
    rows.push(mix_all.clone());
    print_phase(&rows, &mix);

    println!("phase 2/3: durable adds alone (each shopper adds to a basket of {LINES_PER_BASKET} lines, {ADDS_PER_BASKET} adds per basket, then starts a new one)");
    let hub_alone = HubClient::new(&base, args.concurrency)?;
    let alone = run_phase(&hub_alone, &args, Duration::ZERO, &ALONE_OPS, |client| {
        adder(client, catalog.clone())
    })
    .await?;
    print_phase(&alone.summaries(args.duration), &alone);

    println!("phase 3/3: the bare endpoint, GET /healthz (same clients, same client setup)");
    let hub_bare = HubClient::new(&base, args.concurrency)?;
    let bare = run_phase(&hub_bare, &args, Duration::ZERO, &HEALTHZ_OPS, bare_client).await?;
    print_phase(&bare.summaries(args.duration), &bare);

    let paced_add = if args.think.is_zero() {
        None
    } else {
        println!(
            "paced phase: the same shopper mix at a shopper's pace ({} think time on average before each step)",
            humantime::format_duration(args.think)
        );
        let hub_paced = HubClient::new(&base, args.concurrency)?;
        let paced = run_phase(&hub_paced, &args, args.think, &MIX_OPS, |client| {
            shopper(client, catalog.clone())
        })
        .await?;
        let paced_all = Summary::of("all operations", &paced.combined()?, args.duration);
        let mut rows = paced.summaries(args.duration);
        rows.push(paced_all);
        print_phase(&rows, &paced);
        Some(paced.summary(MIX_OPS[ADD], args.duration))
    };

    let mix_add = mix.summary(MIX_OPS[ADD], args.duration);
    let alone_add = alone.summary(ALONE_OPS[ALONE_ADD], args.duration);
    let healthz = bare.summary(HEALTHZ_OPS[0], args.duration);
    println!(
        "ratios to the bare endpoint (same run, same client setup, same clients and duration)"
    );
    for (what, per_second) in [
        ("add to basket, in the mix", mix_add.per_second),
        ("add to basket, adds alone", alone_add.per_second),
        ("whole mix, all operations", mix_all.per_second),
    ] {
        println!(
            "  {what:<27} {per_second:>9.1} ops/s / {:>9.1} ops/s = {:>5.1}%",
            healthz.per_second,
            percent(per_second, healthz.per_second)
        );
    }
    println!();

    let memory = if args.memory_actors > 0 {
        Some(memory_phase(&hub, &args, &catalog).await?)
    } else {
        None
    };

    println!("targets");
    let figures = Figures {
        mix_add,
        alone_add,
        paced_add,
        healthz,
        memory,
    };
    print!("{}", report::render_targets(&targets(&figures)));
    Ok(())
}

fn check_arguments(args: &ShopperArgs) -> Result<(), LoadError> {
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
    if args.memory_actors > MAX_MEMORY_ACTORS {
        return Err(LoadError::BadArguments(format!(
            "--memory-actors must be at most {MAX_MEMORY_ACTORS}"
        )));
    }
    Ok(())
}

fn print_phase(rows: &[Summary], stats: &Stats) {
    print!("{}", report::render_table(rows));
    let errors = report::render_errors(stats);
    if !errors.is_empty() {
        println!("errors:");
        print!("{errors}");
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// The catalog the shoppers pick from
// ---------------------------------------------------------------------------------------------

/// What the shoppers choose from, read from the hub before the load starts.
#[derive(Debug, Default)]
struct Catalog {
    categories: Vec<String>,
    /// Product slugs.
    products: Vec<String>,
    /// SKUs with at least [`MIN_STOCK`] available.
    skus: Vec<String>,
    /// Lower-case words of product names, for searches.
    words: Vec<String>,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Deserialize)]
struct CategoryItem {
    id: String,
}

#[derive(Deserialize)]
struct ProductPage {
    items: Vec<ProductItem>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ProductItem {
    slug: String,
    name: String,
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

async fn discover(hub: &HubClient) -> Result<Catalog, LoadError> {
    let categories: Items<CategoryItem> = hub.fetch("/api/v1/categories", &[]).await?;
    let mut products = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "100")];
        if let Some(c) = cursor.as_deref() {
            query.push(("cursor", c));
        }
        let page: ProductPage = hub.fetch("/api/v1/products", &query).await?;
        products.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() || products.len() >= MAX_PRODUCTS {
            break;
        }
    }
    products.truncate(MAX_PRODUCTS);
    let mut skus = Vec::new();
    for product in &products {
        let detail: ProductDetail = hub
            .fetch(&format!("/api/v1/products/{}", segment(&product.slug)), &[])
            .await?;
        skus.extend(
            detail
                .variants
                .into_iter()
                .filter(|v| v.available >= MIN_STOCK)
                .map(|v| v.sku),
        );
    }
    if skus.is_empty() {
        return Err(LoadError::NoStock(hub.base().to_string(), MIN_STOCK));
    }
    Ok(Catalog {
        categories: categories.items.into_iter().map(|c| c.id).collect(),
        words: search_words(products.iter().map(|p| p.name.as_str())),
        products: products.into_iter().map(|p| p.slug).collect(),
        skus,
    })
}

/// The distinct lower-case words of at least four letters in `names`.
fn search_words<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let words: BTreeSet<String> = names
        .flat_map(|n| n.split(|c: char| !c.is_alphanumeric()))
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
        .collect();
    words.into_iter().collect()
}

/// `text` as one URL path segment (percent-encoding all but unreserved characters).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Phases and clients
// ---------------------------------------------------------------------------------------------

/// The measured part of a phase: operations that finish inside it count.
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

/// One simulated client: its share of the hub client, its window, its own figures and dice.
struct Client {
    hub: HubClient,
    window: Window,
    stats: Stats,
    rng: Rng,
    /// Mean pause before each step (zero: one request right after the other).
    think: Duration,
}

impl Client {
    /// Sends `request` as operation `op` unless the window is over; records the outcome if it
    /// finished inside the window; returns the body on success.
    async fn call(
        &mut self,
        op: usize,
        request: RequestBuilder,
        refusals: &[&str],
    ) -> Option<Vec<u8>> {
        if !self.think.is_zero() {
            let factor = f64::from(self.rng.between(50, 150)) / 100.0;
            tokio::time::sleep(self.think.mul_f64(factor)).await;
        }
        if self.window.is_over() {
            return None;
        }
        let done = exchange(request, refusals).await;
        if self.window.contains(done.finished) {
            self.stats.record(op, done.outcome);
        }
        done.body
    }
}

/// Runs one client per `--concurrency` for warm-up plus duration and merges their figures.
async fn run_phase<F, Fut>(
    hub: &HubClient,
    args: &ShopperArgs,
    think: Duration,
    names: &[&'static str],
    client: F,
) -> Result<Stats, LoadError>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Stats> + Send + 'static,
{
    let window = Window::after(args.warmup, args.duration);
    let mut tasks = JoinSet::new();
    for i in 0..args.concurrency {
        let c = Client {
            hub: hub.clone(),
            window,
            stats: Stats::new(names)?,
            rng: Rng::for_stream(i as u64),
            think,
        };
        tasks.spawn(client(c));
    }
    let mut total = Stats::new(names)?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined.map_err(LoadError::Task)?)?;
    }
    Ok(total)
}

/// A basket as its shopper knows it.
#[derive(Debug)]
struct Basket {
    id: String,
    token: String,
    /// SKUs of its lines.
    lines: Vec<String>,
}

#[derive(Deserialize)]
struct NewBasket {
    id: String,
    token: Option<String>,
}

impl Basket {
    fn from_body(body: &[u8]) -> Option<Basket> {
        let new: NewBasket = serde_json::from_slice(body).ok()?;
        Some(Basket {
            id: new.id,
            token: new.token?,
            lines: Vec::new(),
        })
    }

    fn path(&self) -> String {
        format!("/api/v1/baskets/{}", segment(&self.id))
    }

    fn line_path(&self, sku: &str) -> String {
        format!(
            "/api/v1/baskets/{}/lines/{}",
            segment(&self.id),
            segment(sku)
        )
    }
}

/// Creates an anonymous basket as operation `op`.
async fn create_basket(c: &mut Client, op: usize) -> Option<Basket> {
    let body = c.call(op, c.hub.post("/api/v1/baskets"), &[]).await?;
    Basket::from_body(&body)
}

/// A shopper of the mix, until the window is over.
async fn shopper(mut c: Client, catalog: Arc<Catalog>) -> Stats {
    let mut basket: Option<Basket> = None;
    while !c.window.is_over() {
        let mut browse = c.hub.get("/api/v1/products").query(&[("limit", "24")]);
        if let Some(category) = c.rng.pick(&catalog.categories) {
            browse = browse.query(&[("category", category)]);
        }
        c.call(BROWSE, browse, &[]).await;
        if let Some(word) = c.rng.pick(&catalog.words) {
            let search = c.hub.get("/api/v1/products").query(&[("q", word)]);
            c.call(SEARCH, search, &[]).await;
        }
        if let Some(slug) = c.rng.pick(&catalog.products) {
            let view = c.hub.get(&format!("/api/v1/products/{}", segment(slug)));
            c.call(VIEW_PRODUCT, view, &[]).await;
        }
        if basket.is_none() {
            basket = create_basket(&mut c, CREATE_BASKET).await;
        }
        let Some(b) = basket.as_mut() else {
            continue;
        };
        if let Some(sku) = c.rng.pick(&catalog.skus) {
            let body = serde_json::json!({"sku": sku, "quantity": c.rng.between(1, 3)});
            let add = c
                .hub
                .post(&format!("{}/lines", b.path()))
                .header(TOKEN_HEADER, &b.token)
                .json(&body);
            if c.call(ADD, add, STOCK_REFUSALS).await.is_some() && !b.lines.contains(sku) {
                b.lines.push(sku.clone());
            }
        }
        if let Some(sku) = c.rng.pick(&b.lines) {
            let body = serde_json::json!({"quantity": c.rng.between(1, 5)});
            let change = c
                .hub
                .patch(&b.line_path(sku))
                .header(TOKEN_HEADER, &b.token)
                .json(&body);
            c.call(CHANGE_QUANTITY, change, STOCK_REFUSALS).await;
        }
        let view = c.hub.get(&b.path()).header(TOKEN_HEADER, &b.token);
        c.call(VIEW_BASKET, view, &[]).await;
        if b.lines.len() > MAX_LINES || c.rng.one_in(4) {
            let index = c.rng.below(b.lines.len());
            if let Some(sku) = b.lines.get(index) {
                let remove = c
                    .hub
                    .delete(&b.line_path(sku))
                    .header(TOKEN_HEADER, &b.token);
                if c.call(REMOVE_LINE, remove, &[]).await.is_some() {
                    b.lines.swap_remove(index);
                }
            }
        }
    }
    c.stats
}

/// A shopper who only adds: [`ADDS_PER_BASKET`] single units over [`LINES_PER_BASKET`] SKUs per
/// basket, then a new basket.
async fn adder(mut c: Client, catalog: Arc<Catalog>) -> Stats {
    let mut current: Option<(Basket, Vec<String>)> = None;
    let mut adds = 0;
    while !c.window.is_over() {
        if current.is_none() || adds >= ADDS_PER_BASKET {
            adds = 0;
            current = create_basket(&mut c, ALONE_CREATE).await.map(|b| {
                let skus = (0..LINES_PER_BASKET)
                    .filter_map(|_| c.rng.pick(&catalog.skus).cloned())
                    .collect();
                (b, skus)
            });
            if current.is_none() {
                // The hub refused or failed: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some((b, skus)) = current.as_ref() else {
            continue;
        };
        if let Some(sku) = skus.get(adds % skus.len().max(1)) {
            let body = serde_json::json!({"sku": sku, "quantity": 1});
            let add = c
                .hub
                .post(&format!("{}/lines", b.path()))
                .header(TOKEN_HEADER, &b.token)
                .json(&body);
            c.call(ALONE_ADD, add, STOCK_REFUSALS).await;
        }
        adds += 1;
    }
    c.stats
}

/// A client of the bare endpoint.
async fn bare_client(mut c: Client) -> Stats {
    while !c.window.is_over() {
        let request = c.hub.get("/healthz");
        c.call(0, request, &[]).await;
    }
    c.stats
}

// ---------------------------------------------------------------------------------------------
// Memory and passivation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct OpsStats {
    actors: Option<ActorStats>,
    rss_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ActorStats {
    active_baskets: u64,
    activations: u64,
    passivations: u64,
}

impl OpsStats {
    fn active_baskets(&self) -> Option<u64> {
        self.actors.as_ref().map(|a| a.active_baskets)
    }

    fn describe(&self) -> String {
        let rss = self.rss_bytes.map_or("unknown".to_string(), |b| {
            format!("{:.1} MiB", mib(b as f64))
        });
        match &self.actors {
            Some(a) => format!(
                "active baskets {}, RSS {rss} (activations {}, passivations {})",
                a.active_baskets, a.activations, a.passivations
            ),
            None => format!("active baskets unknown, RSS {rss}"),
        }
    }
}

/// What the memory phase measured.
#[derive(Debug, Clone, PartialEq)]
struct MemoryFigures {
    /// Basket actors asked for.
    actors: usize,
    /// Growth of the hub's resident memory while they were activated, in MiB.
    rss_growth_mib: Option<f64>,
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

async fn memory_phase(
    hub: &HubClient,
    args: &ShopperArgs,
    catalog: &Arc<Catalog>,
) -> Result<MemoryFigures, LoadError> {
    let n = args.memory_actors;
    let in_flight = MEMORY_IN_FLIGHT.min(n);
    println!("memory: {n} new anonymous baskets with one line each ({in_flight} requests in flight), so {n} basket actors are active");
    let before: OpsStats = hub.fetch("/ops/stats", &[]).await?;
    println!("  before   {}", before.describe());
    let started = Instant::now();
    let window = Window {
        from: started,
        until: started + MEMORY_FILL_LIMIT,
    };
    let claimed = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..in_flight {
        let c = Client {
            hub: hub.clone(),
            window,
            stats: Stats::new(&MEMORY_OPS)?,
            rng: Rng::for_stream(i as u64),
            think: Duration::ZERO,
        };
        tasks.spawn(fill_baskets(c, catalog.clone(), claimed.clone(), n));
    }
    let mut fill = Stats::new(&MEMORY_OPS)?;
    while let Some(joined) = tasks.join_next().await {
        fill.merge(&joined.map_err(LoadError::Task)?)?;
    }
    let took = started.elapsed();
    let after: OpsStats = hub.fetch("/ops/stats", &[]).await?;
    println!(
        "  after    {}  (filled in {:.1} s)",
        after.describe(),
        took.as_secs_f64()
    );
    let rss_growth_mib = match (before.rss_bytes, after.rss_bytes) {
        (Some(b), Some(a)) => Some(mib(a as f64 - b as f64)),
        _ => None,
    };
    let active_growth = match (before.active_baskets(), after.active_baskets()) {
        (Some(b), Some(a)) => (a as i64 - b as i64).to_string(),
        _ => "unknown".to_string(),
    };
    match rss_growth_mib {
        Some(growth) => println!(
            "  growth   {active_growth} active baskets, {growth:+.1} MiB RSS ({:.1} KiB per basket actor); target < {MEMORY_TARGET_MIB} MiB for {MEMORY_TARGET_ACTORS}",
            growth * 1024.0 / n as f64
        ),
        None => println!("  growth   {active_growth} active baskets; the hub did not report its RSS"),
    }
    print_phase(&fill.summaries(took), &fill);

    println!(
        "passivation: waiting for the active baskets to return to 0 (at most {})",
        humantime::format_duration(args.passivation_timeout)
    );
    let started = Instant::now();
    let deadline = started + args.passivation_timeout;
    let mut last_said = started;
    loop {
        let now = Instant::now();
        let stats = hub.fetch::<OpsStats>("/ops/stats", &[]).await;
        let active = stats.as_ref().ok().and_then(OpsStats::active_baskets);
        if active == Some(0) {
            println!(
                "  all basket actors passivated {:.1} s after the last basket was filled",
                started.elapsed().as_secs_f64()
            );
            if let Ok(s) = &stats {
                println!("  now      {}", s.describe());
            }
            break;
        }
        if now >= deadline {
            let state = match &stats {
                Ok(s) => s.describe(),
                Err(e) => e.to_string(),
            };
            println!(
                "  timed out after {}: {state}",
                humantime::format_duration(args.passivation_timeout)
            );
            println!("  hint: start the hub with a short idle time for this phase, e.g. OMNIHUB_HUB_PASSIVATE_AFTER=10s OMNIHUB_HUB_IDLE_CHECK_EVERY=1s");
            break;
        }
        if now.duration_since(last_said) >= Duration::from_secs(5) {
            last_said = now;
            let state = match &stats {
                Ok(s) => s.describe(),
                Err(e) => e.to_string(),
            };
            println!("  +{:>4.1} s  {state}", started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    println!();
    Ok(MemoryFigures {
        actors: n,
        rss_growth_mib,
    })
}

/// Claims basket numbers until `n` are claimed or the window is over: creates each basket and
/// adds one line to it.
async fn fill_baskets(
    mut c: Client,
    catalog: Arc<Catalog>,
    claimed: Arc<AtomicUsize>,
    n: usize,
) -> Stats {
    while claimed.fetch_add(1, Ordering::Relaxed) < n && !c.window.is_over() {
        let Some(basket) = create_basket(&mut c, 0).await else {
            continue;
        };
        if let Some(sku) = c.rng.pick(&catalog.skus) {
            let body = serde_json::json!({"sku": sku, "quantity": 1});
            let add = c
                .hub
                .post(&format!("{}/lines", basket.path()))
                .header(TOKEN_HEADER, &basket.token)
                .json(&body);
            c.call(1, add, STOCK_REFUSALS).await;
        }
    }
    c.stats
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// The figures the targets are held against.
#[derive(Debug, Clone)]
struct Figures {
    mix_add: Summary,
    alone_add: Summary,
    /// Adds of the paced phase, if it ran.
    paced_add: Option<Summary>,
    healthz: Summary,
    memory: Option<MemoryFigures>,
}

/// The Foundation issue's targets, met or missed by `f`.
fn targets(f: &Figures) -> Vec<Target> {
    let mut out = Vec::new();
    let mut latencies = vec![
        ("in the mix, saturated", &f.mix_add),
        ("adds alone, saturated", &f.alone_add),
    ];
    if let Some(paced) = &f.paced_add {
        latencies.push(("in the mix, paced shoppers", paced));
    }
    for (label, add) in latencies {
        let errors = if add.errors > 0 {
            format!(", {} errors", add.errors)
        } else {
            String::new()
        };
        out.push(Target {
            goal: format!("durable add p99 ≤ {ADD_P99_TARGET_MS} ms ({label})"),
            measured: format!("{:.2} ms{errors}", add.p99_ms),
            met: (add.count > 0).then_some(add.p99_ms <= ADD_P99_TARGET_MS),
        });
    }
    for (label, add) in [("in the mix", &f.mix_add), ("adds alone", &f.alone_add)] {
        let share = percent(add.per_second, f.healthz.per_second);
        out.push(Target {
            goal: format!("add throughput ≥ {ADD_SHARE_TARGET_PERCENT}% of bare ({label})"),
            measured: format!(
                "{share:.1}% ({:.0} / {:.0} ops/s)",
                add.per_second, f.healthz.per_second
            ),
            met: (add.count > 0 && f.healthz.count > 0)
                .then_some(share >= ADD_SHARE_TARGET_PERCENT),
        });
    }
    let limit = MEMORY_TARGET_MIB
        * f.memory.as_ref().map_or(MEMORY_TARGET_ACTORS, |m| m.actors) as f64
        / MEMORY_TARGET_ACTORS as f64;
    let goal =
        format!("RSS growth < {MEMORY_TARGET_MIB} MiB for {MEMORY_TARGET_ACTORS} basket actors");
    out.push(match &f.memory {
        Some(MemoryFigures {
            actors,
            rss_growth_mib: Some(growth),
        }) => Target {
            goal,
            measured: if *actors == MEMORY_TARGET_ACTORS {
                format!("{growth:.1} MiB")
            } else {
                format!("{growth:.1} MiB for {actors} (limit scaled: {limit:.1} MiB)")
            },
            met: Some(*growth < limit),
        },
        Some(MemoryFigures {
            rss_growth_mib: None,
            ..
        }) => Target {
            goal,
            measured: "the hub did not report its RSS".into(),
            met: None,
        },
        None => Target {
            goal,
            measured: "skipped (--memory-actors 0)".into(),
            met: None,
        },
    });
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn summary(name: &str, count: u64, per_second: f64, p99_ms: f64) -> Summary {
        Summary {
            name: name.into(),
            count,
            per_second,
            p50_ms: p99_ms / 2.0,
            p95_ms: p99_ms,
            p99_ms,
            max_ms: p99_ms,
            rejected: 0,
            errors: 0,
        }
    }

    #[test]
    fn targets_are_judged_against_their_limits() {
        let f = Figures {
            mix_add: summary("add", 1000, 100.0, 7.5),
            alone_add: summary("add", 5000, 1200.0, 12.0),
            paced_add: None,
            healthz: summary("healthz", 80000, 4000.0, 1.0),
            memory: Some(MemoryFigures {
                actors: 10_000,
                rss_growth_mib: Some(42.0),
            }),
        };
        let t = targets(&f);
        let verdicts: Vec<Option<bool>> = t.iter().map(|t| t.met).collect();
        assert_eq!(
            verdicts,
            [Some(true), Some(false), Some(false), Some(true), Some(true)]
        );
        assert_eq!(t[2].measured, "2.5% (100 / 4000 ops/s)");
        assert_eq!(t[3].measured, "30.0% (1200 / 4000 ops/s)");
        assert_eq!(t[4].measured, "42.0 MiB");
    }

    #[test]
    fn the_paced_phase_is_judged_on_its_own_line() {
        let f = Figures {
            mix_add: summary("add", 1000, 100.0, 30.0),
            alone_add: summary("add", 5000, 1200.0, 25.0),
            paced_add: Some(summary("add", 900, 90.0, 6.5)),
            healthz: summary("healthz", 80000, 4000.0, 1.0),
            memory: None,
        };
        let t = targets(&f);
        assert_eq!(t.len(), 6);
        assert!(t[2].goal.contains("paced shoppers"), "{}", t[2].goal);
        assert_eq!(
            (t[0].met, t[1].met, t[2].met),
            (Some(false), Some(false), Some(true))
        );
    }

    #[test]
    fn nothing_measured_is_not_judged_and_memory_limits_scale() {
        let f = Figures {
            mix_add: summary("add", 0, 0.0, 0.0),
            alone_add: summary("add", 10, 1.0, 1.0),
            paced_add: None,
            healthz: summary("healthz", 0, 0.0, 0.0),
            memory: Some(MemoryFigures {
                actors: 1_000,
                rss_growth_mib: Some(12.0),
            }),
        };
        let t = targets(&f);
        assert_eq!(t[0].met, None);
        assert_eq!(t[3].met, None);
        assert_eq!(t[4].met, Some(false), "{}", t[4].measured);
        assert!(
            t[4].measured.contains("limit scaled: 10.0 MiB"),
            "{}",
            t[4].measured
        );
        let skipped = targets(&Figures { memory: None, ..f });
        assert_eq!(skipped[4].met, None);
    }

    #[test]
    fn search_words_are_distinct_lowercase_and_long_enough() {
        let words =
            search_words(["Dark Roast Coffee", "Dark roast espresso", "Tea & Co"].into_iter());
        assert_eq!(words, ["coffee", "dark", "espresso", "roast"]);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("COF-001_250G.x~"), "COF-001_250G.x~");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn a_window_counts_what_finishes_inside_it() {
        let now = Instant::now();
        let w = Window {
            from: now + Duration::from_secs(1),
            until: now + Duration::from_secs(3),
        };
        assert!(!w.contains(now));
        assert!(w.contains(now + Duration::from_secs(1)));
        assert!(w.contains(now + Duration::from_millis(2999)));
        assert!(!w.contains(now + Duration::from_secs(3)));
        assert!(!w.is_over());
    }

    #[test]
    fn a_new_basket_needs_its_token() {
        let b =
            Basket::from_body(br#"{"id":"01J0","version":0,"lines":[],"token":"secret"}"#).unwrap();
        assert_eq!((b.id.as_str(), b.token.as_str()), ("01J0", "secret"));
        assert_eq!(b.line_path("SKU-1"), "/api/v1/baskets/01J0/lines/SKU-1");
        assert!(Basket::from_body(br#"{"id":"01J0"}"#).is_none());
    }

    #[test]
    fn arguments_are_bounded() {
        let args = ShopperArgs {
            target: "http://127.0.0.1:8080".into(),
            concurrency: 64,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(3),
            memory_actors: 10_000,
            passivation_timeout: Duration::from_secs(60),
            think: Duration::from_millis(100),
        };
        assert!(check_arguments(&args).is_ok());
        assert!(check_arguments(&ShopperArgs {
            concurrency: 0,
            ..args.clone()
        })
        .is_err());
        assert!(check_arguments(&ShopperArgs {
            duration: Duration::ZERO,
            ..args.clone()
        })
        .is_err());
        assert!(check_arguments(&ShopperArgs {
            memory_actors: MAX_MEMORY_ACTORS + 1,
            ..args
        })
        .is_err());
    }
}
