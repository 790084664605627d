//! `omnihub bench boards`: how fast a stock change reaches the boards of a store (issue 6,
//! benchmark: "50 boards connected to one edge node receive a stock change within 200 ms p99"),
//! in-process in one actix System.
//!
//! One edge node starts on port 0 with a temporary data dir and a `hub_url` nobody listens on
//! (offline: the boards play from the node), `--boards` boards configured with their own tokens,
//! a small catalog, stock, and a playlist of five products. `--boards` WebSocket clients (as the
//! board page's script does it: `hello` with the token, then feed messages) connect and wait
//! for the first feed. Then `--changes` times, one after the other: a stock receipt of one unit
//! of the first product is posted to the node's API (`POST /api/v1/stock/adjustments`, a durable
//! commit), and the time from just before the request to the moment each board has read a feed
//! whose stock for that product is the new count is one sample. It prints p50/p99/max over all
//! boards and changes, the commit's own latency, and the target (p99 under 200 ms) as
//! met/MISSED. A board that does not see a change within 5 s fails the run.

use anyhow::{bail, ensure, Context};
use edge_node::boards::{hash_board_token, BoardConfig};
use futures_util::{SinkExt, StreamExt};
use protocol::board::{BoardItem, BoardPlaylist};
use protocol::{Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const TARGET: Duration = Duration::from_millis(200);
const API_TOKEN: &str = "bench-boards-api-token-0123456789";
const WATCHED: &str = "BOARD-0";
const PER_CHANGE: Duration = Duration::from_secs(5);

/// The flags of `omnihub bench boards`.
#[derive(clap::Args, Debug)]
pub struct BoardsBenchArgs {
    /// Boards connected to the node.
    #[arg(long, default_value_t = 50)]
    boards: usize,
    /// Stock changes, one after the other.
    #[arg(long, default_value_t = 200)]
    changes: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: BoardsBenchArgs) -> anyhow::Result<()> {
    ensure!((1..=1000).contains(&args.boards), "--boards: 1 to 1000");
    ensure!(args.changes >= 1, "--changes must be at least 1");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    actix_web::rt::System::new().block_on(bench(args))
}

fn token(i: usize) -> String {
    format!("bench-board-token-{i:04}-0123456789")
}

fn settings(dir: &std::path::Path, boards: usize) -> anyhow::Result<edge_node::EdgeSettings> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the unreachable hub")?
        .port();
    let mut s = edge_node::EdgeSettings {
        data_dir: dir.to_path_buf(),
        hub_url: format!("ws://127.0.0.1:{port}/api/v1/edge/sync"),
        credential: Some("bench-boards-node-credential".to_string().into()),
        api_token: Some(API_TOKEN.to_string().into()),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..edge_node::EdgeSettings::default()
    };
    s.boards.list = (0..boards)
        .map(|i| BoardConfig {
            id: format!("board-{i}"),
            name: format!("Board {i}"),
            kiosk: false,
            token_sha256: hash_board_token(&token(i)).into(),
        })
        .collect();
    Ok(s)
}

fn product(i: usize) -> anyhow::Result<Product> {
    Ok(Product {
        id: ProductId::new(),
        slug: format!("board-product-{i}"),
        name: format!("Board product {i}"),
        brand: "Omni".into(),
        description: String::new(),
        category: CategoryId("bench".into()),
        tax_rate_bp: 1900,
        tax_class: "standard".into(),
        image: String::new(),
        variants: vec![Variant {
            sku: Sku::parse(&format!("BOARD-{i}"))?,
            title: "Default".into(),
            price: Money::new(499 + i as i64 * 100, Currency::EUR),
            compare_at: None,
            barcode: None,
            weight_grams: 250,
        }],
        attributes: Default::default(),
    })
}

async fn bench(args: BoardsBenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating the node's data dir")?;
    let node = edge_node::EdgeNode::start(settings(dir.path(), args.boards)?)
        .await
        .context("starting the edge node")?;
    let outcome = measure(&node, &args).await;
    node.stop().await.context("stopping the edge node")?;
    outcome?;
    println!("  bench: {:.1} s wall", started.elapsed().as_secs_f64());
    Ok(())
}

/// One board's client: reports `(board, on hand of the watched SKU, when read)` for every feed.
async fn board(
    addr: SocketAddr,
    i: usize,
    seen: mpsc::UnboundedSender<(usize, i64, Instant)>,
) -> anyhow::Result<()> {
    let url = format!("ws://{addr}/boards/board-{i}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("board {i} connecting"))?;
    let hello = json!({"t": "hello", "token": token(i)}).to_string();
    ws.send(Message::Text(hello.into())).await?;
    while let Some(m) = ws.next().await {
        let Message::Text(text) = m? else { continue };
        let at = Instant::now();
        let v: Value = serde_json::from_str(text.as_str())?;
        if v["t"] != "feed" {
            continue;
        }
        let on_hand = v["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["sku"] == WATCHED))
            .and_then(|item| item["stock"]["on_hand"].as_i64());
        if let Some(n) = on_hand {
            if seen.send((i, n, at)).is_err() {
                break;
            }
        }
    }
    Ok(())
}

async fn measure(node: &edge_node::EdgeHandle, args: &BoardsBenchArgs) -> anyhow::Result<()> {
    let store = node.store();
    let products = (0..5).map(product).collect::<anyhow::Result<Vec<_>>>()?;
    let category = Category {
        id: CategoryId("bench".into()),
        name: "Bench".into(),
        description: String::new(),
        position: 1,
    };
    store.apply_catalog_chunk(1, 0, 1, vec![category], Vec::new(), products)?;
    for i in 0..5 {
        let receipt: edge_node::AdjustmentRequest = serde_json::from_value(
            json!({"kind": "receipt", "sku": format!("BOARD-{i}"), "units": 100}),
        )?;
        store.adjust(&receipt, None)?;
    }
    let playlist = BoardPlaylist {
        items: (0..5)
            .map(|i| BoardItem {
                id: format!("p{i}"),
                title: String::new(),
                body: String::new(),
                sku: Some(Sku::parse(&format!("BOARD-{i}")).expect("a valid SKU")),
                offer_quantity: None,
                seconds: None,
            })
            .collect(),
        ..BoardPlaylist::default()
    };
    edge_node::boards::store_playlist(&store, 1, playlist)?;
    println!(
        "omnihub bench boards: {} boards on one edge node (offline), {} stock changes of {WATCHED} posted one after the other",
        args.boards, args.changes
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for i in 0..args.boards {
        clients.push(actix_web::rt::spawn(board(node.addr, i, tx.clone())));
    }
    drop(tx);
    let mut on_hand = 100i64;
    let mut ready = vec![false; args.boards];
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.iter().any(|r| !r) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((i, n, _))) if n == on_hand => ready[i] = true,
            Ok(Some(_)) => {}
            _ => bail!("the boards did not all get their first feed within 30 s"),
        }
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/api/v1/stock/adjustments", node.base_url);
    let mut samples = Vec::with_capacity(args.boards * args.changes);
    let mut commits = Vec::with_capacity(args.changes);
    for _ in 0..args.changes {
        on_hand += 1;
        let t0 = Instant::now();
        let res = client
            .post(&url)
            .bearer_auth(API_TOKEN)
            .json(&json!({"kind": "receipt", "sku": WATCHED, "units": 1}))
            .send()
            .await
            .context("posting a stock receipt")?;
        commits.push(t0.elapsed());
        ensure!(
            res.status().is_success(),
            "the node refused a receipt: {}",
            res.status()
        );
        let mut got = vec![false; args.boards];
        let mut missing = args.boards;
        let until = t0 + PER_CHANGE;
        while missing > 0 {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((i, n, at))) if n == on_hand && !got[i] => {
                    got[i] = true;
                    missing -= 1;
                    samples.push(at.saturating_duration_since(t0));
                }
                Ok(Some(_)) => {}
                _ => bail!(
                    "{missing} of {} boards did not see stock {on_hand} within {PER_CHANGE:?}",
                    args.boards
                ),
            }
        }
    }
    for c in clients {
        c.abort();
    }
    samples.sort();
    commits.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = percentile(&samples, 0.99);
    println!(
        "  stock change → every board ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  (target p99 < {} ms: {})",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(p99),
        ms(samples.last().copied().unwrap_or_default()),
        TARGET.as_millis(),
        if p99 < TARGET { "met" } else { "MISSED" }
    );
    println!(
        "  of which the receipt's durable commit (HTTP answer): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&commits, 0.50)),
        ms(percentile(&commits, 0.99)),
    );
    Ok(())
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
