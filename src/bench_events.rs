//! `omnihub bench events`: the experience layer's benchmark (issue 9), in-process in one actix
//! System with a hub on port 0 and a temporary data dir.
//!
//! 1. In-process ingestion: `--events` live events (today) go to the recorder as batched actor
//!    messages (`RecordMany` of 512); timed until the analyst has durably folded every one into
//!    the profiles and aggregates. Target: 50,000 events/s.
//! 2. HTTP ingestion: `--http-events` events posted to `POST /api/v1/events` in batches of 100
//!    by 8 concurrent clients; timed the same way (until folded), for comparison.
//! 3. Bulk: `--bulk` events over the last `--days` days from the simulators' generator, appended
//!    to the log in batches of 10,000, then folded by the analyst (both timed). Then
//!    `--queries` 30-day funnel reports over HTTP (the admin API) and in-process: p50/p99/max.
//!    Target: p99 under 50 ms.

use anyhow::{ensure, Context};
use hub::actors::recorder::RecordMany;
use protocol::Event;
use simulators::load::events::{EventMix, EventStream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "bench-events-admin-token-0123456789";
const INGEST_TARGET: f64 = 50_000.0;
const QUERY_TARGET: Duration = Duration::from_millis(50);
const RECORD_BATCH: usize = 512;
const HTTP_BATCH: usize = 100;
const HTTP_CLIENTS: usize = 8;
const BULK_BATCH: usize = 10_000;

/// The flags of `omnihub bench events`.
#[derive(clap::Args, Debug)]
pub struct EventsBenchArgs {
    /// Events ingested through the recorder in-process.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events posted over HTTP.
    #[arg(long, default_value_t = 20_000)]
    http_events: usize,
    /// Events bulk-loaded before the funnel queries.
    #[arg(long, default_value_t = 1_000_000)]
    bulk: usize,
    /// Days the bulk events spread over (ending now).
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Funnel queries timed (each over HTTP and in-process).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The hub's sled page cache in MiB (`cache_mb`; the hub's default when not given).
    #[arg(long)]
    cache_mb: Option<u64>,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: EventsBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.events >= 1 && args.queries >= 1,
        "--events and --queries must be at least 1"
    );
    ensure!((1..=366).contains(&args.days), "--days: 1 to 366");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    actix_web::rt::System::new().block_on(bench(args))
}

async fn bench(args: EventsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating the hub's data dir")?;
    let settings = hub::HubSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(ADMIN_TOKEN.to_string().into()),
        cache_mb: args
            .cache_mb
            .unwrap_or_else(|| hub::HubSettings::default().cache_mb),
        ..hub::HubSettings::default()
    };
    let settings_cache_mb = settings.cache_mb;
    let app = hub::Application::build(settings, Arc::new(hub::clock::SystemClock))
        .await
        .context("starting the hub")?;
    let base = format!("http://{}", app.address());
    let handle = app.handle();
    let server = app.server_handle();
    let serving = actix_web::rt::spawn(app.run());
    println!(
        "omnihub bench events (sled page cache {} MiB)",
        settings_cache_mb
    );
    if cfg!(debug_assertions) {
        println!("  (a debug build: build with --release for meaningful figures)");
    }
    let outcome = measure(&handle, &base, &args).await;
    server.stop(true).await;
    serving
        .await
        .context("the hub's task")?
        .context("stopping the hub")?;
    outcome
}

async fn folded(handle: &hub::HubHandle) -> anyhow::Result<()> {
    handle
        .recorder
        .send(hub::actors::recorder::Drain)
        .await
        .context("draining the recorder")?;
    handle
        .experience
        .caught_up()
        .await
        .context("waiting for the analyst")
}

async fn measure(
    handle: &hub::HubHandle,
    base: &str,
    args: &EventsBenchArgs,
) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    // 1. In-process, through the recorder.
    let live: Vec<Event> = EventStream::new(EventMix::new(args.seed, now, 1))
        .take(args.events)
        .collect();
    let started = Instant::now();
    // Each event is moved once into its batch (splitting the remainder off the whole vector
    // per batch copied it every time: quadratic, and most of what stop 19 measured).
    let mut events = live.into_iter();
    loop {
        let batch: Vec<Event> = events.by_ref().take(RECORD_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        handle.recorder.do_send(RecordMany(batch));
    }
    handle
        .recorder
        .send(hub::actors::recorder::Drain)
        .await
        .context("draining the recorder")?;
    let appended = started.elapsed();
    folded(handle).await?;
    let total = started.elapsed();
    let rate = args.events as f64 / total.as_secs_f64();
    println!(
        "  recorder (in-process, {} events, batches of {RECORD_BATCH}): {rate:.0} events/s folded into profiles and aggregates (target {INGEST_TARGET:.0}: {})",
        args.events,
        if rate >= INGEST_TARGET { "met" } else { "MISSED" }
    );
    println!(
        "    appended to the log by {:.2} s ({:.0}/s), folded by {:.2} s",
        appended.as_secs_f64(),
        args.events as f64 / appended.as_secs_f64(),
        total.as_secs_f64()
    );
    // 2. Over HTTP.
    if args.http_events > 0 {
        let rate = http_ingest(handle, base, args).await?;
        println!(
            "  HTTP (POST /api/v1/events, {} events, batches of {HTTP_BATCH}, {HTTP_CLIENTS} clients): {rate:.0} events/s folded",
            args.http_events
        );
    }
    // 3. Bulk, then funnel queries.
    let started = Instant::now();
    let mut stream = EventStream::new(EventMix::new(args.seed + 1, now, args.days));
    let mut left = args.bulk;
    while left > 0 {
        let batch: Vec<Event> = stream.by_ref().take(left.min(BULK_BATCH)).collect();
        left -= batch.len();
        hub::storage::EventLog::append(handle.storage.as_ref(), batch.into())
            .await
            .context("appending the bulk events")?;
    }
    let appended = started.elapsed();
    handle
        .experience
        .caught_up()
        .await
        .context("waiting for the analyst")?;
    let total = started.elapsed();
    println!(
        "  bulk: {} events over {} days appended in {:.1} s ({:.0}/s), folded by {:.1} s ({:.0}/s)",
        args.bulk,
        args.days,
        appended.as_secs_f64(),
        args.bulk as f64 / appended.as_secs_f64(),
        total.as_secs_f64(),
        args.bulk as f64 / total.as_secs_f64()
    );
    queries(handle, base, args, now).await
}

async fn http_ingest(
    handle: &hub::HubHandle,
    base: &str,
    args: &EventsBenchArgs,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/events");
    let batches = args.http_events.div_ceil(HTTP_BATCH);
    let body: Vec<serde_json::Value> = (0..HTTP_BATCH)
        .map(|i| {
            serde_json::json!({
                "kind": "product_view",
                "payload": {"slug": format!("product-{:05}", i % 50), "sku": format!("SKU-{:05}", i % 50)}
            })
        })
        .collect();
    let body = Arc::new(serde_json::json!({ "events": body }));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..HTTP_CLIENTS {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let mine = (c..batches).step_by(HTTP_CLIENTS).count();
        tasks.push(actix_web::rt::spawn(async move {
            for _ in 0..mine {
                let r = client
                    .post(&url)
                    .header("X-Channel", "mobile")
                    .json(body.as_ref())
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 202, "intake answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("an HTTP client task")??;
    }
    let accepted = started.elapsed();
    folded(handle).await?;
    let total = started.elapsed();
    println!(
        "    accepted in {:.2} s ({:.0}/s), folded by {:.2} s",
        accepted.as_secs_f64(),
        (batches * HTTP_BATCH) as f64 / accepted.as_secs_f64(),
        total.as_secs_f64()
    );
    Ok((batches * HTTP_BATCH) as f64 / total.as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn print_latencies(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let p99 = percentile(&samples, 0.99);
    println!(
        "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} queries (target p99 < {} ms: {})",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        samples.len(),
        QUERY_TARGET.as_millis(),
        if p99 < QUERY_TARGET { "met" } else { "MISSED" }
    );
}

async fn queries(
    handle: &hub::HubHandle,
    base: &str,
    args: &EventsBenchArgs,
    now: time::OffsetDateTime,
) -> anyhow::Result<()> {
    let to = now.date();
    let from = to - time::Duration::days(29);
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/admin/analytics/funnel?from={from}&to={to}");
    let mut http = Vec::with_capacity(args.queries);
    let mut last = serde_json::Value::Null;
    for _ in 0..args.queries {
        let started = Instant::now();
        let r = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await?;
        ensure!(
            r.status() == 200,
            "the funnel report answered {}",
            r.status()
        );
        last = r.json().await?;
        http.push(started.elapsed());
    }
    let mut local = Vec::with_capacity(args.queries);
    let range = hub::experience::reports::Range {
        from,
        to,
        channel: None,
    };
    for _ in 0..args.queries {
        let range = range.clone();
        let started = Instant::now();
        handle
            .experience
            .read(move |a| hub::experience::reports::funnel(a, &range))
            .await?;
        local.push(started.elapsed());
    }
    println!("  30-day funnel total: {}", last["total"]);
    print_latencies("30-day funnel over HTTP", http);
    print_latencies("30-day funnel in-process", local);
    Ok(())
}
