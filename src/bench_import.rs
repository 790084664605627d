//! `omnihub bench import`: the ERP importer's throughput (issue 7, benchmark a), in-process in
//! one actix System. The ERP simulator generates the catalog and serves its products feed; a
//! hub on port 0 (a temporary data dir, no demo data, no scheduled pull) takes the rows through
//! its import API, as the ERP's pushes and `omnihub import` send them.
//!
//! - Products: the whole products feed is fetched from the simulator as CSV pages first (the
//!   ERP's side, not timed); then every page is POSTed to `/api/v1/import/products`, one after
//!   the other, and the clock runs from the first request until the last report is back. Each
//!   request publishes one catalog snapshot, so when the last report is back the catalog holds
//!   every product; the run checks that (`GET /api/v1/products` `total`).
//! - Stock deltas: movements at `online` for the imported SKUs (unique movement ids, positive
//!   quantities, version 1), POSTed in chunks to `/api/v1/import/stock`, timed the same way.
//!
//! Both rates are printed against the targets (10,000 and 50,000 rows/s). A missed
//! target is reported, not an error; a row the hub refused, a failed request or a catalog that
//! does not hold the products is, and the command then exits non-zero. `RUST_LOG` (e.g.
//! `hub::import=debug`) shows the importer's own timings on stderr.

use anyhow::{bail, ensure, Context};
use serde::Deserialize;
use simulators::erp::{ErpConfig, ErpSim};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The targets, in rows per second.
const PRODUCTS_TARGET: f64 = 10_000.0;
const DELTAS_TARGET: f64 = 50_000.0;
/// The bench hub's admin token: the hub listens on loopback only and lives as long as the run.
const ADMIN_TOKEN: &str = "bench-import-admin-token";
/// The simulator's largest page.
const MAX_PAGE: usize = 10_000;
/// One request's limit (a page of a big catalog publishes a big snapshot).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The flags of `omnihub bench import`.
#[derive(clap::Args, Debug)]
pub struct ImportBenchArgs {
    /// Products the ERP simulator generates (each with 1 to 3 variants, one feed row each).
    #[arg(long, default_value_t = 100_000)]
    products: u32,
    /// Stock delta rows imported after the products.
    #[arg(long, default_value_t = 200_000)]
    deltas: usize,
    /// Product rows per request, 1 to 10,000 (each request publishes one catalog snapshot).
    #[arg(long, default_value_t = 10_000)]
    page: usize,
    /// Stock rows per request.
    #[arg(long, default_value_t = 20_000)]
    chunk: usize,
    /// Seed of the simulator's catalog.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// One request body: CSV with its header, and its data rows.
struct Body {
    csv: String,
    rows: usize,
}

/// The products feed as fetched from the ERP.
struct ProductsFeed {
    pages: Vec<Body>,
    /// Every SKU, in feed order.
    skus: Vec<String>,
    /// Distinct product codes (all rows are active).
    products: usize,
    fetch: Duration,
}

/// The counts of an import report the bench reads.
#[derive(Debug, Deserialize)]
struct Report {
    applied: u64,
    unchanged: u64,
    stale: u64,
    rejected: u64,
    #[serde(default)]
    errors: Vec<RowError>,
    #[serde(default)]
    failed: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RowError {
    row: u64,
    field: String,
    reason: String,
}

/// What importing one feed's bodies took.
#[derive(Debug, Default)]
struct Timed {
    rows: usize,
    requests: usize,
    applied: u64,
    unchanged: u64,
    stale: u64,
    rejected: u64,
    /// The first row errors the hub reported.
    errors: Vec<String>,
    elapsed: Duration,
    /// Each request's time, in order.
    each: Vec<Duration>,
}

impl Timed {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the benchmark and prints its figures.
pub fn run(args: ImportBenchArgs) -> anyhow::Result<()> {
    ensure!(args.products >= 1, "--products must be at least 1");
    ensure!(
        (1..=MAX_PAGE).contains(&args.page),
        "--page must be between 1 and {MAX_PAGE}"
    );
    ensure!(args.chunk >= 1, "--chunk must be at least 1");
    init_tracing();
    actix_web::rt::System::new().block_on(bench(args))
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings only, so the figures stand alone).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn bench(args: ImportBenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let erp = ErpSim::start(ErpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: args.seed,
        products: args.products,
        locations: vec!["online".into()],
        ..ErpConfig::default()
    })
    .await
    .context("starting the ERP simulator")?;
    let dir = tempfile::tempdir().context("creating the hub's data dir")?;
    let settings = hub::HubSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(ADMIN_TOKEN.to_string().into()),
        ..hub::HubSettings::default()
    };
    let app = hub::Application::build(settings, Arc::new(hub::clock::SystemClock))
        .await
        .context("starting the hub")?;
    let hub_url = format!("http://{}", app.address());
    let server = app.server_handle();
    let serving = actix_web::rt::spawn(app.run());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    let outcome = measure(&client, &erp.base_url(), &hub_url, &args).await;

    server.stop(true).await;
    serving
        .await
        .context("the hub's task")?
        .context("stopping the hub")?;
    erp.stop().await;
    let problems = outcome?;
    println!("  bench: {:.1} s wall", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        bail!("the hub did not take every row: {}", problems.join("; "));
    }
    Ok(())
}

/// Fetches, imports and prints; answers the problems found (rows refused, catalog short).
async fn measure(
    client: &reqwest::Client,
    erp: &str,
    hub: &str,
    args: &ImportBenchArgs,
) -> anyhow::Result<Vec<String>> {
    let feed = fetch_products(client, erp, args.page).await?;
    let rows: usize = feed.pages.iter().map(|p| p.rows).sum();
    println!(
        "omnihub bench import: {} products ({rows} variant rows) from the ERP simulator, {} stock deltas",
        feed.products, args.deltas
    );
    if cfg!(debug_assertions) {
        println!("  (a debug build: build with --release for meaningful figures)");
    }
    println!(
        "  feed fetched as CSV in {} pages of up to {} rows in {:.2} s (the ERP's side, not timed)",
        feed.pages.len(),
        args.page,
        feed.fetch.as_secs_f64()
    );
    let mut problems = Vec::new();

    let products = import(client, hub, "products", &feed.pages).await?;
    let total = catalog_total(client, hub).await?;
    print_products(&products, total);
    problems.extend(refusals("products", &products));
    if total != feed.products as u64 {
        problems.push(format!(
            "the catalog holds {total} products, not the {} imported",
            feed.products
        ));
    }

    let deltas = delta_bodies(&feed.skus, args.deltas, args.chunk);
    let stock = import(client, hub, "stock", &deltas).await?;
    print_stock(&stock, args.chunk, feed.skus.len().min(args.deltas));
    problems.extend(refusals("stock", &stock));
    Ok(problems)
}

/// Reads the whole products feed as CSV pages, following the cursor until it has no more.
async fn fetch_products(
    client: &reqwest::Client,
    erp: &str,
    page: usize,
) -> anyhow::Result<ProductsFeed> {
    let started = Instant::now();
    let mut feed = ProductsFeed {
        pages: Vec::new(),
        skus: Vec::new(),
        products: 0,
        fetch: Duration::ZERO,
    };
    let mut codes = HashSet::new();
    let mut since = String::new();
    loop {
        let res = client
            .get(format!("{erp}/feeds/products"))
            .query(&[
                ("since", since.as_str()),
                ("limit", &page.to_string()),
                ("format", "csv"),
            ])
            .send()
            .await
            .context("fetching a products page from the ERP simulator")?;
        let status = res.status();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (next, more) = (header("x-next-cursor"), header("x-has-more"));
        let csv = res.text().await.context("reading a products page")?;
        ensure!(status.is_success(), "the ERP answered {status}: {csv}");
        let next = next.context("the ERP's page has no X-Next-Cursor")?;
        let rows = read_skus(&csv, &mut feed.skus, &mut codes)?;
        if rows > 0 {
            feed.pages.push(Body { csv, rows });
        }
        if more.as_deref() != Some("true") {
            break;
        }
        ensure!(next != since, "the ERP's cursor did not move past {since}");
        since = next;
    }
    feed.products = codes.len();
    feed.fetch = started.elapsed();
    ensure!(!feed.skus.is_empty(), "the ERP's products feed is empty");
    Ok(feed)
}

/// Collects the SKUs and product codes of a CSV page; answers its data rows.
fn read_skus(
    csv: &str,
    skus: &mut Vec<String>,
    codes: &mut HashSet<String>,
) -> anyhow::Result<usize> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().context("reading a page's CSV header")?;
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the products page has no {name} column"))
    };
    let (sku, product) = (column("sku")?, column("product")?);
    let mut rows = 0;
    for record in reader.records() {
        let record = record.context("reading a products page's CSV")?;
        skus.push(record.get(sku).unwrap_or_default().to_owned());
        codes.insert(record.get(product).unwrap_or_default().to_owned());
        rows += 1;
    }
    Ok(rows)
}

/// `deltas` movements at `online`, cycling over `skus`, as CSV bodies of `chunk` rows.
fn delta_bodies(skus: &[String], deltas: usize, chunk: usize) -> Vec<Body> {
    let mut bodies = Vec::new();
    let mut start = 0;
    while start < deltas {
        let end = (start + chunk).min(deltas);
        let mut csv = String::with_capacity((end - start) * 48 + 64);
        csv.push_str(&protocol::feed::STOCK_COLUMNS.join(","));
        csv.push('\n');
        for i in start..end {
            let sku = &skus[i % skus.len()];
            let units = 1 + i % 5;
            csv.push_str(&format!("{sku},online,delta,{units},bench-move-{i:08},1\n"));
        }
        bodies.push(Body {
            csv,
            rows: end - start,
        });
        start = end;
    }
    bodies
}

/// POSTs the bodies one after the other and adds up the reports. The clock runs from the first
/// request until the last report is back; a request the hub refuses stops the run.
async fn import(
    client: &reqwest::Client,
    hub: &str,
    feed: &str,
    bodies: &[Body],
) -> anyhow::Result<Timed> {
    let url = format!("{hub}/api/v1/import/{feed}");
    let mut timed = Timed::default();
    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let sent = Instant::now();
        let res = client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(body.csv.clone())
            .send()
            .await
            .with_context(|| format!("POST {url} (request {})", i + 1))?;
        let status = res.status();
        let text = res.text().await.context("reading an import report")?;
        timed.each.push(sent.elapsed());
        ensure!(
            status.is_success(),
            "POST {url} (request {}) answered {status}: {}",
            i + 1,
            text.chars().take(500).collect::<String>()
        );
        let report: Report = serde_json::from_str(&text).context("parsing an import report")?;
        if let Some(why) = &report.failed {
            bail!("the {feed} import of request {} failed: {why}", i + 1);
        }
        timed.rows += body.rows;
        timed.requests += 1;
        timed.applied += report.applied;
        timed.unchanged += report.unchanged;
        timed.stale += report.stale;
        timed.rejected += report.rejected;
        for e in report.errors.iter().take(5 - timed.errors.len().min(5)) {
            timed.errors.push(format!(
                "request {} row {} {}: {}",
                i + 1,
                e.row,
                e.field,
                e.reason
            ));
        }
    }
    timed.elapsed = started.elapsed();
    Ok(timed)
}

/// The number of products the catalog lists.
async fn catalog_total(client: &reqwest::Client, hub: &str) -> anyhow::Result<u64> {
    #[derive(Deserialize)]
    struct List {
        total: u64,
    }
    let res = client
        .get(format!("{hub}/api/v1/products?limit=1"))
        .send()
        .await
        .context("listing the catalog")?;
    let status = res.status();
    ensure!(
        status.is_success(),
        "GET /api/v1/products answered {status}"
    );
    Ok(res
        .json::<List>()
        .await
        .context("reading the listing")?
        .total)
}

/// Rows that were not applied, as problems (the hub is fresh: every row is new).
fn refusals(feed: &str, t: &Timed) -> Vec<String> {
    let mut problems = Vec::new();
    if t.applied != t.rows as u64 {
        problems.push(format!(
            "{feed}: {} of {} rows applied ({} unchanged, {} stale, {} rejected)",
            t.applied, t.rows, t.unchanged, t.stale, t.rejected
        ));
    }
    for e in &t.errors {
        problems.push(format!("{feed}: {e}"));
    }
    problems
}

fn verdict(rate: f64, target: f64) -> String {
    if rate >= target {
        format!("met ({:.1}x)", rate / target)
    } else {
        format!("MISSED ({:.0}% of it)", 100.0 * rate / target)
    }
}

fn print_requests(t: &Timed) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted = t.each.clone();
    sorted.sort_unstable();
    if let (Some(first), Some(last), Some(max)) = (t.each.first(), t.each.last(), sorted.last()) {
        println!(
            "    per request: first {:.0} ms, median {:.0} ms, last {:.0} ms, slowest {:.0} ms",
            ms(*first),
            ms(sorted[sorted.len() / 2]),
            ms(*last),
            ms(*max)
        );
    }
}

fn print_products(t: &Timed, total: u64) {
    println!(
        "  (a) products: {} rows in {} requests (one snapshot each) in {:.2} s = {:.0} rows/s",
        t.rows,
        t.requests,
        t.elapsed.as_secs_f64(),
        t.rate()
    );
    print_requests(t);
    println!(
        "    reports: {} applied, {} unchanged, {} stale, {} rejected; catalog lists {total} products",
        t.applied, t.unchanged, t.stale, t.rejected
    );
    println!(
        "    target >= {PRODUCTS_TARGET:.0} rows/s into a published snapshot: {}",
        verdict(t.rate(), PRODUCTS_TARGET)
    );
}

fn print_stock(t: &Timed, chunk: usize, skus: usize) {
    println!(
        "  (b) stock deltas: {} rows (online, {skus} SKUs) in {} requests of up to {chunk} in {:.2} s = {:.0} rows/s",
        t.rows,
        t.requests,
        t.elapsed.as_secs_f64(),
        t.rate()
    );
    print_requests(t);
    println!(
        "    reports: {} applied, {} unchanged, {} stale, {} rejected",
        t.applied, t.unchanged, t.stale, t.rejected
    );
    println!(
        "    target >= {DELTAS_TARGET:.0} rows/s: {}",
        verdict(t.rate(), DELTAS_TARGET)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_bodies_cut_unique_movements_into_chunks() {
        let skus = vec!["A-1".to_string(), "B-1".to_string()];
        let bodies = delta_bodies(&skus, 5, 2);
        assert_eq!(
            bodies.iter().map(|b| b.rows).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let lines: Vec<&str> = bodies.iter().flat_map(|b| b.csv.lines().skip(1)).collect();
        assert_eq!(lines[0], "A-1,online,delta,1,bench-move-00000000,1");
        assert_eq!(lines[3], "B-1,online,delta,4,bench-move-00000003,1");
        let movements: HashSet<&str> = lines.iter().filter_map(|l| l.split(',').nth(4)).collect();
        assert_eq!(movements.len(), 5);
        assert!(bodies.iter().all(|b| b
            .csv
            .starts_with("sku,location,kind,quantity,movement,version\n")));
    }

    #[test]
    fn read_skus_counts_rows_and_distinct_products() {
        let csv = "product,sku,name\nP1,P1-1,\"A, b\"\nP1,P1-2,A\nP2,P2-1,B\n";
        let (mut skus, mut codes) = (Vec::new(), HashSet::new());
        let rows = read_skus(csv, &mut skus, &mut codes).expect("a readable page");
        assert_eq!(rows, 3);
        assert_eq!(skus, ["P1-1", "P1-2", "P2-1"]);
        assert_eq!(codes.len(), 2);
        assert!(read_skus("product,name\nP1,A\n", &mut skus, &mut codes).is_err());
    }

    #[test]
    fn rows_not_applied_are_problems() {
        let all = Timed {
            rows: 3,
            applied: 3,
            ..Timed::default()
        };
        assert!(refusals("stock", &all).is_empty());
        let short = Timed {
            rows: 3,
            applied: 2,
            rejected: 1,
            errors: vec!["request 1 row 2 sku: unknown SKU X".into()],
            ..Timed::default()
        };
        assert_eq!(
            refusals("stock", &short),
            [
                "stock: 2 of 3 rows applied (0 unchanged, 0 stale, 1 rejected)",
                "stock: request 1 row 2 sku: unknown SKU X"
            ]
        );
    }

    #[test]
    fn verdict_says_met_or_missed() {
        assert_eq!(verdict(20_000.0, 10_000.0), "met (2.0x)");
        assert_eq!(verdict(5_000.0, 10_000.0), "MISSED (50% of it)");
    }
}
