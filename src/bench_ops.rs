//! `omnihub bench ops`: operations monitoring stays cheap (issue 10), in-process in one actix
//! System with a hub on port 0 and a temporary data dir.
//!
//! 1. `--actors` basket actors are activated through the directory's real activation path
//!    (`ActivateBasket`, as a request that finds a stored basket does), many at once.
//! 2. `--scrapes` scrapes of `/metrics` over HTTP, one after another: p50/p99/max.
//!    Target: under 50 ms with 100,000 active actors.
//! 3. The hub's CPU over `--seconds` with nobody on the ops page (the baseline), then over the
//!    same time with `--viewers` SSE viewers on `/ops/live`. The viewers run on a thread of
//!    their own, whose CPU time is subtracted, so the figure is the hub's: (with − baseline) as a
//!    share of one core. Target: under 2 %.

use anyhow::{ensure, Context};
use protocol::{Basket, BasketId, BasketOwner, Currency};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRAPE_TARGET: Duration = Duration::from_millis(50);
const CPU_TARGET_PERCENT: f64 = 2.0;
/// Activations in flight at once.
const IN_FLIGHT: usize = 1000;

/// The flags of `omnihub bench ops`.
#[derive(clap::Args, Debug)]
pub struct OpsBenchArgs {
    /// Basket actors activated before the scrapes.
    #[arg(long, default_value_t = 100_000)]
    actors: usize,
    /// `/metrics` scrapes timed.
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// SSE viewers on the ops page's live feed.
    #[arg(long, default_value_t = 20)]
    viewers: usize,
    /// Seconds of each CPU measurement (baseline, then with the viewers).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: OpsBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.scrapes >= 1 && args.seconds >= 1,
        "--scrapes and --seconds must be at least 1"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    actix_web::rt::System::new().block_on(bench(args))
}

async fn bench(args: OpsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating the hub's data dir")?;
    let mut settings = hub::HubSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        // Nothing passivates during the run, and the idle checks stay rare.
        passivate_after: Duration::from_secs(3600),
        idle_check_every: Duration::from_secs(600),
        ..hub::HubSettings::default()
    };
    settings.ops.live_every = Duration::from_secs(1);
    let app = hub::Application::build(settings, Arc::new(hub::clock::SystemClock))
        .await
        .context("starting the hub")?;
    let addr = app.address();
    let handle = app.handle();
    let server = app.server_handle();
    let serving = actix_web::rt::spawn(app.run());
    println!("omnihub bench ops");
    if cfg!(debug_assertions) {
        println!("  (a debug build: build with --release for meaningful figures)");
    }
    let outcome = measure(&handle, addr, &args).await;
    server.stop(true).await;
    serving
        .await
        .context("the hub's task")?
        .context("stopping the hub")?;
    outcome
}

async fn measure(
    handle: &hub::HubHandle,
    addr: SocketAddr,
    args: &OpsBenchArgs,
) -> anyhow::Result<()> {
    activate(handle, args.actors).await?;
    scrapes(addr, args).await?;
    cpu(addr, args).await
}

async fn activate(handle: &hub::HubHandle, actors: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let mut left = actors;
    while left > 0 {
        let batch = left.min(IN_FLIGHT);
        let sends = (0..batch).map(|_| {
            let basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
            handle
                .directory
                .send(hub::actors::directory::ActivateBasket(basket))
        });
        for sent in futures_util::future::join_all(sends).await {
            sent.context("the directory stopped")?;
        }
        left -= batch;
    }
    let took = started.elapsed();
    let stats = handle.stats().await.context("the directory's stats")?;
    println!(
        "  activated {actors} basket actors in {:.2} s ({:.0}/s); active now: {} baskets, {} customers",
        took.as_secs_f64(),
        actors as f64 / took.as_secs_f64().max(1e-9),
        stats.active_baskets,
        stats.active_customers,
    );
    ensure!(
        stats.active_baskets >= actors,
        "only {} of {actors} actors are active",
        stats.active_baskets
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

async fn scrapes(addr: SocketAddr, args: &OpsBenchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")?;
    let url = format!("http://{addr}/metrics");
    let mut times = Vec::with_capacity(args.scrapes);
    let mut bytes = 0;
    for _ in 0..args.scrapes {
        let started = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .context("scraping")?
            .error_for_status()
            .context("scraping")?
            .text()
            .await
            .context("reading the scrape")?;
        times.push(started.elapsed());
        bytes = body.len();
        ensure!(
            body.contains("omnihub_active_actors{kind=\"basket\"}"),
            "the scrape lacks the actor counts"
        );
    }
    times.sort();
    let p99 = percentile(&times, 0.99);
    println!(
        "  /metrics with {} actors: {} scrapes of {} bytes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < {} ms: {})",
        args.actors,
        args.scrapes,
        bytes,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        SCRAPE_TARGET.as_millis(),
        if p99 < SCRAPE_TARGET { "met" } else { "missed" },
    );
    Ok(())
}

/// The process's CPU ticks and the viewers' thread's, read together.
fn process_ticks() -> anyhow::Result<u64> {
    hub::monitor::metrics::cpu_ticks().context("reading /proc/self/stat")
}

fn thread_ticks() -> Option<u64> {
    hub::monitor::metrics::stat_ticks(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
}

fn percent_of_core(ticks: u64, over: Duration) -> f64 {
    let seconds = ticks as f64 / hub::monitor::metrics::CLOCK_TICKS as f64;
    seconds / over.as_secs_f64() * 100.0
}

/// One viewer: reads the feed until `until`, counting the snapshot events.
async fn viewer(addr: SocketAddr, until: Instant) -> anyhow::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting a viewer")?;
    stream
        .write_all(
            format!("GET /ops/live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .context("asking for the feed")?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut events = 0;
    // The tail of the previous read, so a marker cut in two is still counted once.
    let mut tail: Vec<u8> = Vec::new();
    const MARKER: &[u8] = b"event: snapshot";
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let n = match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(read) => read.context("reading the feed")?,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let mut seen = std::mem::take(&mut tail);
        seen.extend_from_slice(&buffer[..n]);
        events += seen.windows(MARKER.len()).filter(|w| *w == MARKER).count();
        let keep = seen.len().min(MARKER.len() - 1);
        tail = seen[seen.len() - keep..].to_vec();
    }
    Ok(events)
}

/// Runs `viewers` viewers on a thread of their own for `over`; answers the events each got and
/// the thread's CPU ticks.
fn viewers_thread(
    addr: SocketAddr,
    viewers: usize,
    over: Duration,
) -> std::thread::JoinHandle<anyhow::Result<(Vec<usize>, u64)>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the viewers' runtime")?;
        let start = thread_ticks().context("reading /proc/thread-self/stat")?;
        let until = Instant::now() + over;
        let counts = runtime.block_on(async {
            let all = (0..viewers).map(|_| viewer(addr, until));
            futures_util::future::join_all(all).await
        });
        let end = thread_ticks().context("reading /proc/thread-self/stat")?;
        let counts = counts.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok((counts, end.saturating_sub(start)))
    })
}

async fn cpu(addr: SocketAddr, args: &OpsBenchArgs) -> anyhow::Result<()> {
    let over = Duration::from_secs(args.seconds);
    let before = process_ticks()?;
    actix_web::rt::time::sleep(over).await;
    let baseline = process_ticks()?.saturating_sub(before);

    let before = process_ticks()?;
    let started = Instant::now();
    let thread = viewers_thread(addr, args.viewers, over);
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("waiting for the viewers' thread")?;
    let took = started.elapsed();
    let total = process_ticks()?.saturating_sub(before);
    let (counts, viewer_ticks) =
        joined.map_err(|_| anyhow::anyhow!("the viewers' thread panicked"))??;
    let hub_ticks = total.saturating_sub(viewer_ticks);
    let base = percent_of_core(baseline, over);
    let with = percent_of_core(hub_ticks, took);
    let cost = (with - base).max(0.0);
    let events: usize = counts.iter().sum();
    println!(
        "  hub CPU over {} s: {:.2} % of one core with nobody watching, {:.2} % with {} viewers on /ops/live ({} snapshot events, {:.1} per viewer; the viewers' own thread, {:.2} %, left out)",
        args.seconds,
        base,
        with,
        args.viewers,
        events,
        events as f64 / args.viewers.max(1) as f64,
        percent_of_core(viewer_ticks, took),
    );
    println!(
        "  the live feed's cost: {cost:.2} % of one core (target < {CPU_TARGET_PERCENT} %: {})",
        if cost < CPU_TARGET_PERCENT {
            "met"
        } else {
            "missed"
        },
    );
    ensure!(
        args.viewers == 0 || events > 0,
        "the viewers got no snapshot"
    );
    Ok(())
}
