//! `omnihub bench voice`: the server-side latency of a voice `IntentRequest` that adds to the
//! basket (issue 12, benchmark: p99 under 20 ms), in-process in one actix System.
//!
//! The skill endpoint (`channels::voice`, `POST /voice/alexa`) is served on 127.0.0.1 port 0
//! with request verification on: a signing chain is generated for the run (as the voice
//! simulator's: root → intermediate → RSA leaf `echo-api.amazon.com`) and trusted through the
//! development settings (`trust_roots_pem`, `cert_chain_source`, temporary files). Every request
//! is an `AddToBasketIntent` ("add 2 coffee") of a linked user, a fresh timestamp and its own
//! RSA signature (made before the clock starts); the session attributes of each answer go into
//! the next request. Each request is timed on the client, loopback included, from sending to
//! the whole answer read: envelope parsing, application id and timestamp checks, the chain
//! (fetched once, then cached) verified to the root, the signature over the raw body, the
//! linked-account lookup, the rate limit, the assistant's turn and the rendering.
//!
//! It prints two lines: the endpoint alone ([`VoiceBench`] with an in-memory fake assistant,
//! the cost of verification, identity, rate limit and rendering) and the whole path on a real
//! hub with demo data (the account linked through the hub's OAuth flow, the hub's assistant, the
//! customer's basket actor), which is the figure held against the target.

use anyhow::{ensure, Context};
use async_trait::async_trait;
use channels::assistant::{Conversation, DialogState, Intent, LinkedAccounts, Reply, Turn};
use channels::voice::{VoiceDevelopment, VoiceSettings, VoiceState};
use channels::BackendError;
use protocol::CustomerId;
use serde_json::{Map, Value};
use simulators::voice::script::{ScriptTurn, SlotValue};
use simulators::voice::signer::SimChain;
use simulators::voice::{envelope, Target, DEFAULT_CERT_URL, DEFAULT_SKILL_ID, DEFAULT_USER_ID};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The target at the 99th percentile.
const TARGET: Duration = Duration::from_millis(20);
const WARM_UP: usize = 50;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BENCH_TOKEN: &str = "bench-voice-access-token";

/// The flags of `omnihub bench voice`.
#[derive(clap::Args, Debug)]
pub struct VoiceBenchArgs {
    /// Requests timed (after 50 untimed).
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
}

/// The benchmark over one assistant and one account store.
pub struct VoiceBench {
    conversation: Arc<dyn Conversation>,
    accounts: Arc<dyn LinkedAccounts>,
    /// The linked user's access token.
    access_token: String,
    /// What the assistant is, for the output.
    label: String,
}

impl VoiceBench {
    /// The benchmark against any assistant and account store; `access_token` must resolve to a
    /// customer in `accounts`.
    pub fn new(
        conversation: Arc<dyn Conversation>,
        accounts: Arc<dyn LinkedAccounts>,
        access_token: impl Into<String>,
        label: impl Into<String>,
    ) -> VoiceBench {
        VoiceBench {
            conversation,
            accounts,
            access_token: access_token.into(),
            label: label.into(),
        }
    }

    /// Serves the endpoint, plays `requests` signed add-to-basket requests, returns their
    /// latencies (sorted).
    pub async fn measure(&self, requests: usize) -> anyhow::Result<Vec<Duration>> {
        let chain = tokio::task::spawn_blocking(SimChain::generate)
            .await
            .context("generating the signing chain")??;
        let dir = tempfile::tempdir().context("a temporary directory for the chain")?;
        let roots = dir.path().join("root.pem");
        let chain_file = dir.path().join("chain.pem");
        std::fs::write(&roots, &chain.root_pem).context("writing root.pem")?;
        std::fs::write(&chain_file, &chain.chain_pem).context("writing chain.pem")?;
        let settings = VoiceSettings {
            skill_ids: vec![DEFAULT_SKILL_ID.to_owned()],
            verify_signatures: true,
            // The benchmark is one user talking far faster than anyone speaks.
            requests_per_minute: u32::MAX,
            development: VoiceDevelopment {
                trust_roots_pem: Some(roots),
                cert_chain_source: Some(chain_file.display().to_string()),
            },
            ..VoiceSettings::default()
        };
        let state = actix_web::web::Data::new(VoiceState::new(
            &settings,
            self.conversation.clone(),
            self.accounts.clone(),
        )?);
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .configure(channels::voice::configure)
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .context("binding the endpoint")?;
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let outcome = play(
            &format!("http://{address}/voice/alexa"),
            &self.access_token,
            &chain,
            requests,
            &add_turn("coffee"),
            None,
        )
        .await;
        handle.stop(true).await;
        outcome
    }
}

/// Plays `requests` timed `add` turns (after untimed warm-up ones), each followed by the
/// untimed `reset` turn when there is one, as one linked user in one session.
async fn play(
    endpoint: &str,
    access_token: &str,
    chain: &SimChain,
    requests: usize,
    add: &ScriptTurn,
    reset: Option<&ScriptTurn>,
) -> anyhow::Result<Vec<Duration>> {
    {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("an HTTP client")?;
        let target = Target {
            endpoint: endpoint.to_owned(),
            skill_id: DEFAULT_SKILL_ID.to_owned(),
            user_id: DEFAULT_USER_ID.to_owned(),
            access_token: Some(access_token.to_owned()),
            cert_url: DEFAULT_CERT_URL.to_owned(),
        };
        let mut attributes = Map::new();
        let mut times = Vec::with_capacity(requests);
        let turns = (0..WARM_UP + requests)
            .flat_map(|n| std::iter::once((n, add, true)).chain(reset.map(|r| (n, r, false))));
        for (i, (n, turn, timed)) in turns.enumerate() {
            let body = envelope(
                &target,
                turn,
                "amzn1.echo-api.session.bench",
                &attributes,
                i == 0,
            );
            let body = serde_json::to_vec(&body).context("encoding a request")?;
            let signature = chain.sign(&body)?;
            let started = Instant::now();
            let res = client
                .post(endpoint)
                .header("content-type", "application/json")
                .header("SignatureCertChainUrl", DEFAULT_CERT_URL)
                .header("Signature-256", signature)
                .body(body)
                .send()
                .await
                .context("a request to the endpoint")?;
            let status = res.status().as_u16();
            let answer: Value = res.json().await.context("reading an answer")?;
            let elapsed = started.elapsed();
            ensure!(
                status == 200 && answer["response"]["outputSpeech"].is_object(),
                "request {}: the endpoint answered {status}: {answer}",
                n + 1
            );
            ensure!(
                answer["response"]["outputSpeech"]["text"] != channels::voice::TOO_MANY,
                "request {}: rate limited",
                n + 1
            );
            attributes = answer["sessionAttributes"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if timed && n >= WARM_UP {
                times.push(elapsed);
            }
        }
        times.sort_unstable();
        Ok(times)
    }
}

/// "Add two <product>".
fn add_turn(product: &str) -> ScriptTurn {
    let slots = BTreeMap::from([
        ("product".to_owned(), SlotValue::Heard(product.into())),
        ("quantity".to_owned(), SlotValue::Heard("2".into())),
    ]);
    ScriptTurn {
        you: format!("add two {product}"),
        request: None,
        intent: Some("AddToBasketIntent".into()),
        slots,
        expect: None,
        expect_end: None,
    }
}

/// "Remove <product>" (keeps the line under the assistant's per-line maximum between adds).
fn remove_turn(product: &str) -> ScriptTurn {
    ScriptTurn {
        you: format!("remove {product}"),
        request: None,
        intent: Some("RemoveItemIntent".into()),
        slots: BTreeMap::from([("product".to_owned(), SlotValue::Heard(product.into()))]),
        expect: None,
        expect_end: None,
    }
}

/// The whole path on a real hub (demo catalog, temporary data): the skill endpoint with
/// verification on, the account linked through the hub's OAuth flow, the hub's assistant and
/// the customer's basket actor. Times the adds; a removal between them (untimed) keeps the line
/// under the per-line maximum.
async fn measure_hub(requests: usize) -> anyhow::Result<Vec<Duration>> {
    let chain = tokio::task::spawn_blocking(SimChain::generate)
        .await
        .context("generating the signing chain")??;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let roots = dir.path().join("root.pem");
    let chain_file = dir.path().join("chain.pem");
    std::fs::write(&roots, &chain.root_pem).context("writing root.pem")?;
    std::fs::write(&chain_file, &chain.chain_pem).context("writing chain.pem")?;
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ndemo_data = true\n{}\n[voice]\nskill_ids = [\"{DEFAULT_SKILL_ID}\"]\nrequests_per_minute = 4294967295\n[voice.development]\ntrust_roots_pem = {:?}\ncert_chain_source = {:?}\n",
            dir.path().join("hub").display().to_string(),
            hub::oauth::OAuthSettings::demo_toml(),
            roots.display().to_string(),
            chain_file.display().to_string(),
        ),
    )
    .context("writing the hub's settings")?;
    let settings = hub::HubSettings::load(Some(&config)).context("reading the hub's settings")?;
    let app = hub::Application::build(settings, Arc::new(hub::clock::SystemClock))
        .await
        .context("starting the hub")?;
    let base = format!("http://{}", app.address());
    let server = app.server_handle();
    let serving = actix_web::rt::spawn(app.run());
    let outcome = async {
        let tokens = simulators::voice::link::link_account(
            &base,
            hub::oauth::DEMO_VOICE_CLIENT_ID,
            hub::oauth::DEMO_VOICE_CLIENT_SECRET,
            hub::oauth::DEMO_VOICE_REDIRECT_URI,
            hub::app::DEMO_EMAIL,
            hub::app::DEMO_PASSWORD,
        )
        .await
        .context("linking the demo shopper's account")?;
        // A product whose name is its own (adding it by name asks no question).
        let demo = hub::demo::demo_catalog();
        let name = demo
            .products
            .iter()
            .filter(|p| p.variants.len() == 1)
            .map(|p| p.name.to_lowercase())
            .find(|name| {
                !name.contains('&')
                    && demo
                        .products
                        .iter()
                        .filter(|q| q.name.to_lowercase().contains(name.as_str()))
                        .count()
                        == 1
            })
            .context("the demo catalog has no product with a name of its own")?;
        println!("  product: {name:?} (added two at a time, removed between adds, untimed)");
        play(
            &format!("{base}/voice/alexa"),
            &tokens.access_token,
            &chain,
            requests,
            &add_turn(&name),
            Some(&remove_turn(&name)),
        )
        .await
    }
    .await;
    server.stop(true).await;
    serving
        .await
        .context("the hub's task")?
        .context("stopping the hub")?;
    outcome
}

/// Runs the benchmark with the fake assistant and prints its figures.
pub fn run(args: VoiceBenchArgs) -> anyhow::Result<()> {
    ensure!(args.requests >= 1, "--requests must be at least 1");
    init_tracing();
    println!(
        "omnihub bench voice: {} signed AddToBasketIntent requests, verification on{}",
        args.requests,
        if cfg!(debug_assertions) {
            " (a debug build: build with --release for meaningful figures)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let customer = CustomerId::new();
    let endpoint_only = VoiceBench::new(
        Arc::new(CountingAssistant::default()),
        Arc::new(OneLinkedAccount { customer }),
        BENCH_TOKEN,
        "endpoint only: a fake in-memory assistant and account store (verification, identity, rate limit, rendering)",
    );
    let system = actix_web::rt::System::new();
    let fake = system.block_on(endpoint_only.measure(args.requests))?;
    report(&endpoint_only.label, &fake, false);
    let real = system.block_on(measure_hub(args.requests))?;
    report(
        "the hub: linked account (OAuth), the hub's assistant, the customer's basket actor",
        &real,
        true,
    );
    println!("  bench: {:.1} s wall", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints one line of figures; the target applies to the whole path on the hub.
fn report(label: &str, times: &[Duration], against_target: bool) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99) = (percentile(times, 0.50), percentile(times, 0.99));
    let max = times.last().copied().unwrap_or_default();
    println!("  {label}");
    let verdict = if !against_target {
        String::new()
    } else if p99 < TARGET {
        format!("  target p99 < {} ms: met", TARGET.as_millis())
    } else {
        format!("  target p99 < {} ms: MISSED", TARGET.as_millis())
    };
    println!(
        "    add to basket  n={:<6} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms{verdict}",
        times.len(),
        ms(p50),
        ms(p99),
        ms(max),
    );
}

/// Logs to stderr, filtered by `RUST_LOG` (default: errors only; the development trust roots
/// warn at start-up, which is the point here).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The fake assistant: counts the units added per customer.
#[derive(Default)]
struct CountingAssistant {
    units: Mutex<HashMap<CustomerId, u64>>,
}

#[async_trait]
impl Conversation for CountingAssistant {
    async fn respond(&self, turn: Turn) -> Reply {
        let text = match (&turn.intent, turn.shopper.customer) {
            (Intent::AddToBasket { product, quantity }, Some(customer)) => {
                let n: u64 = quantity
                    .as_deref()
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(1);
                let mut units = self.units.lock().unwrap_or_else(|p| p.into_inner());
                let total = units.entry(customer).or_default();
                *total += n;
                format!("Added {n} {product}. Your basket has {total} items.")
            }
            _ => "Please link your account.".to_owned(),
        };
        Reply {
            text,
            ssml: None,
            reprompt: Some("Anything else?".into()),
            end_session: false,
            card: None,
            link_account: turn.shopper.customer.is_none(),
            state: DialogState::default(),
        }
    }
}

struct OneLinkedAccount {
    customer: CustomerId,
}

#[async_trait]
impl LinkedAccounts for OneLinkedAccount {
    async fn customer_for_access_token(
        &self,
        token: &str,
    ) -> Result<Option<CustomerId>, BackendError> {
        Ok((token == BENCH_TOKEN).then_some(self.customer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms = Duration::from_millis;
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), ms(50));
        assert_eq!(percentile(&sorted, 0.99), ms(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
