//! `omnihub`: one binary, a thin dispatcher into the crates' libraries.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod bench_boards;
mod bench_cluster;
mod bench_events;
mod bench_import;
mod bench_ops;
mod bench_pos;
mod bench_voice;
mod demo;
mod demo_boards;
mod import;

/// mimalloc instead of glibc's malloc: the hub allocates and frees many short-lived buffers on
/// several threads (encoding, sled pages), where glibc's per-thread arenas grew and shrank the
/// heap through the kernel on every batch (docs/benchmarks.md, `omnihub bench events`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "omnihub", version, about = "Omnichannel commerce hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole system locally with demo data (data in ./data, Ctrl-C stops everything).
    Demo(demo::DemoArgs),
    /// Runs the hub.
    Hub {
        /// A TOML settings file (see deploy/hub.toml); OMNIHUB_HUB_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Runs a store's edge node: its sales and stock API, syncing with the hub.
    Edge {
        /// A TOML settings file (see deploy/edge.toml); OMNIHUB_EDGE_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A rebuilt node: replay the unsynced sales of the old node's journal as this node's
        /// own (ids kept, so the hub counts each once). Retire the old replica id on the hub.
        #[arg(long)]
        replay_journal: Option<PathBuf>,
        /// Reads a staff PIN (4 to 8 digits) from stdin, prints its argon2id hash for a
        /// `[[pos.staff]]` entry's `pin_hash`, and exits.
        #[arg(long)]
        hash_pin: bool,
    },
    /// Runs a partner simulator (a real protocol server standing in for a partner).
    #[command(subcommand)]
    Sim(simulators::SimCommand),
    /// Runs a load generator against a running hub and prints its figures.
    #[command(subcommand)]
    Load(simulators::load::LoadCommand),
    /// Runs a benchmark of the hub's own machinery against a simulator and prints its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Imports an ERP feed file (CSV or JSON) into a running hub through its import API.
    Import(import::ImportArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Outbox delivery to the OMS simulator: a steady rate, then a backlog drained after an
    /// outage, then the simulator's audit (exits non-zero if it fails).
    Outbox(OutboxBenchArgs),
    /// The promotion engine: prices 20-line baskets with 1,000 active promotions many times and
    /// prints the latency percentiles against the target (p99 under 1 ms). Build with --release.
    Pricing(PricingBenchArgs),
    /// The ERP importer in-process: 100,000 products from the ERP simulator into published
    /// catalog snapshots, then stock deltas, in rows/s against the targets (10,000 and 50,000).
    /// Build with --release.
    Import(bench_import::ImportBenchArgs),
    /// A POS sale on an edge node in-process (offline, 5,000 products): 5 scans and a cash
    /// payment per sale, over the JSON API and the till page, in latency percentiles against
    /// the target (scan and payment p99 under 20 ms). Build with --release.
    Pos(bench_pos::PosBenchArgs),
    /// Boards on an edge node in-process (offline): 50 boards connected over WebSocket, stock
    /// changes posted one after the other, the time until every board has the new stock in
    /// latency percentiles against the target (p99 under 200 ms). Build with --release.
    Boards(bench_boards::BoardsBenchArgs),
    /// The voice skill endpoint in-process: signed AddToBasketIntent requests with
    /// verification on, in latency percentiles against the target (p99 under 20 ms). Runs with
    /// a fake assistant until the hub's is wired in. Build with --release.
    Voice(bench_voice::VoiceBenchArgs),
    /// The experience layer in-process: event ingestion through the recorder (batched actor
    /// messages) and over HTTP, folded into profiles and aggregates, in events/s against the
    /// target (50,000); then 1,000,000 generated events over 30 days and the 30-day funnel
    /// report's latency percentiles (target p99 under 50 ms). Build with --release.
    Events(bench_events::EventsBenchArgs),
    /// Operations monitoring in-process: 100,000 basket actors activated, `/metrics` scrape
    /// latency percentiles against the target (p99 under 50 ms), then the hub's CPU with 20
    /// viewers on the ops page's live feed against a baseline without (target: under 2 % of
    /// one core). Build with --release.
    Ops(bench_ops::OpsBenchArgs),
    /// The cluster storage against sled (needs PostgreSQL, loopback): add-to-basket and
    /// checkout on one hub on sled, one on PostgreSQL and three nodes, in latency percentiles,
    /// throughput and their ratios; the cost of forwarding to a basket's owner; failover time
    /// after SIGKILL of an owner among three hub processes. Build with --release.
    Cluster(bench_cluster::ClusterBenchArgs),
}

/// The flags of `omnihub bench pricing`.
#[derive(clap::Args)]
struct PricingBenchArgs {
    /// Active promotions.
    #[arg(long, default_value_t = 1_000)]
    promotions: usize,
    /// Products in the catalog.
    #[arg(long, default_value_t = 5_000)]
    products: usize,
    /// Lines per basket.
    #[arg(long, default_value_t = 20)]
    lines: usize,
    /// Baskets priced (and timed one by one).
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Seed of the generated catalog, promotions and baskets.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl From<PricingBenchArgs> for hub::bench_pricing::PricingBench {
    fn from(a: PricingBenchArgs) -> Self {
        hub::bench_pricing::PricingBench {
            promotions: a.promotions,
            products: a.products,
            lines: a.lines,
            iterations: a.iterations,
            seed: a.seed,
        }
    }
}

/// The flags of `omnihub bench outbox` (the hub crate has no CLI parser, so they live here).
#[derive(clap::Args)]
struct OutboxBenchArgs {
    /// The OMS simulator's base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8203")]
    oms: String,
    /// The OMS simulator's API key.
    #[arg(long, default_value = "oms_test_key")]
    api_key: String,
    /// Messages per second queued in the steady phase.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// How long the steady phase queues, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = hub::bench::parse_duration)]
    duration: std::time::Duration,
    /// Messages queued during the outage.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Deliveries in flight [default: the hub's delivery policy].
    #[arg(long)]
    concurrency: Option<usize>,
    /// The circuit breaker's cool-down, e.g. `2s` [default: the hub's delivery policy].
    #[arg(long, value_parser = hub::bench::parse_duration)]
    breaker_cooldown: Option<std::time::Duration>,
    /// Where sled stores the outbox (new or empty) [default: a temporary directory, deleted
    /// afterwards].
    #[arg(long)]
    data: Option<PathBuf>,
}

impl From<OutboxBenchArgs> for hub::bench::OutboxBench {
    fn from(a: OutboxBenchArgs) -> Self {
        hub::bench::OutboxBench {
            oms: a.oms,
            api_key: a.api_key,
            rate: a.rate,
            duration: a.duration,
            backlog: a.backlog,
            concurrency: a.concurrency,
            breaker_cooldown: a.breaker_cooldown,
            data: a.data,
        }
    }
}

fn main() -> anyhow::Result<()> {
    // No transparent huge pages for this process: the allocator's fresh memory then faulted in
    // 2 MiB pages that the kernel zeroed whole, and `omnihub bench events` swung between 35,000
    // and 57,000 events/s from run to run on that alone (docs/benchmarks.md). Best effort.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("omnihub: could not turn transparent huge pages off ({e}); carrying on");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Import(args) => import::run(args),
        Command::Hub { config } => run_hub(config),
        Command::Edge { hash_pin: true, .. } => {
            let mut pin = String::new();
            std::io::stdin().read_line(&mut pin)?;
            println!("{}", edge_node::hash_pin(pin.trim())?);
            Ok(())
        }
        Command::Edge {
            config,
            replay_journal,
            ..
        } => run_edge(config, replay_journal),
        Command::Sim(command) => Ok(simulators::run_sim(command)?),
        Command::Load(command) => Ok(simulators::load::run(command)?),
        Command::Bench(BenchCommand::Outbox(args)) => Ok(hub::bench::outbox(args.into())?),
        Command::Bench(BenchCommand::Pricing(args)) => {
            hub::bench_pricing::pricing(args.into())?;
            Ok(())
        }
        Command::Bench(BenchCommand::Import(args)) => bench_import::run(args),
        Command::Bench(BenchCommand::Pos(args)) => bench_pos::run(args),
        Command::Bench(BenchCommand::Boards(args)) => bench_boards::run(args),
        Command::Bench(BenchCommand::Voice(args)) => bench_voice::run(args),
        Command::Bench(BenchCommand::Events(args)) => bench_events::run(args),
        Command::Bench(BenchCommand::Ops(args)) => bench_ops::run(args),
        Command::Bench(BenchCommand::Cluster(args)) => bench_cluster::run(args),
    }
}

fn run_edge(config: Option<PathBuf>, replay: Option<PathBuf>) -> anyhow::Result<()> {
    let settings =
        edge_node::EdgeSettings::load(config.as_deref()).context("reading the edge settings")?;
    hub::telemetry::init(false);
    edge_node::arm_failpoints_from_env();
    actix_web::rt::System::new().block_on(async move {
        let node = edge_node::EdgeNode::start(settings).await?;
        if let Some(journal) = replay {
            let report = node
                .replay_journal(&journal)
                .await
                .with_context(|| format!("replaying {}", journal.display()))?;
            println!(
                "replayed {} sales from {} ({} already on the hub, {} already here, {} units as deficits, {} skipped)",
                report.replayed,
                journal.display(),
                report.already_synced,
                report.already_present,
                report.deficit_units,
                report.skipped.len()
            );
            for reason in &report.skipped {
                println!("  skipped: {reason}");
            }
        }
        // A plain line for supervisors and tests that started the node on port 0.
        println!("omnihub edge listening on {}", node.base_url);
        shutdown_signal().await;
        tracing::info!("shutting down");
        node.stop().await?;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn run_hub(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = hub::HubSettings::load(config.as_deref()).context("reading the hub settings")?;
    hub::telemetry::init(settings.log_json);
    actix_web::rt::System::new().block_on(async move {
        let app =
            hub::Application::build(settings, std::sync::Arc::new(hub::clock::SystemClock)).await?;
        tracing::info!(address = %app.address(), "hub listening");
        // A plain line for supervisors and tests that started the hub on port 0.
        println!("omnihub hub listening on http://{}", app.address());
        let server = app.server_handle();
        actix_web::rt::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutting down");
                server.stop(true).await;
            }
        });
        #[cfg(unix)]
        {
            let server = app.server_handle();
            actix_web::rt::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    server.stop(true).await;
                }
            });
        }
        app.run().await?;
        Ok(())
    })
}
