//! `omnihub demo`: the whole system on this machine with demo data, as child processes of one
//! supervisor. Data lives in `./data/` and survives a restart; `--fresh` starts over.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's click-and-collect order.
#[path = "demo_collect.rs"]
mod collect;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Delete ./data first and start from a clean demo.
    #[arg(long)]
    fresh: bool,
    /// Where the demo keeps its data.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The hub's port.
    #[arg(long, default_value_t = 8080)]
    hub_port: u16,
    /// The payment simulator's port.
    #[arg(long, default_value_t = 8201)]
    payments_port: u16,
}

/// Where the demo's OMS and carrier simulators listen.
const DEMO_OMS: &str = "127.0.0.1:8203";
const DEMO_LOGISTICS: &str = "127.0.0.1:8204";
/// The webhook signing secret the demo's simulator and hub share.
const DEMO_WEBHOOK_SECRET: &str = "whsec_omnihub_demo";
/// The demo's admin API token (printed at start; set your own in a real deployment).
const DEMO_ADMIN_TOKEN: &str = "omnihub-demo-admin";
/// The demo's two stores: (replica, location, name, port of the node's API).
const DEMO_STORES: [(&str, &str, &str, u16); 2] = [
    ("berlin", "store-berlin", "Berlin Mitte", 8301),
    ("hamburg", "store-hamburg", "Hamburg Altona", 8302),
];
/// The bearer token of the demo nodes' own API (set your own per store in a deployment).
const DEMO_STORE_TOKEN: &str = "omnihub-demo-store-token";
/// Where the demo's ERP simulator serves its feeds; the hub pulls them every 30 s.
const DEMO_ERP: &str = "127.0.0.1:8202";
/// The secret the demo's ERP signs its pushes with (set your own in a deployment).
const DEMO_ERP_SECRET: &str = "omnihub-demo-erp-secret";
/// The demo's business users, one per role: (email, name, roles, password). They sign in at
/// `/backoffice` with the printed password (set again at each start) and call the API with the
/// token printed beside it.
const DEMO_USERS: [(&str, &str, &[&str], &str); 7] = [
    (
        "mia@omnihub.example",
        "Mia Merchandiser",
        &["merchandiser", "marketer"],
        "omnihub-demo-mia",
    ),
    (
        "ada@omnihub.example",
        "Ada Approver",
        &["approver", "analyst"],
        "omnihub-demo-ada",
    ),
    (
        "admin@omnihub.demo",
        "Alex Admin",
        &["admin"],
        "omnihub-demo-admin",
    ),
    (
        "merch@omnihub.demo",
        "Max Merchandiser",
        &["merchandiser"],
        "omnihub-demo-merch",
    ),
    (
        "marketer@omnihub.demo",
        "Mara Marketer",
        &["marketer"],
        "omnihub-demo-marketer",
    ),
    (
        "analyst@omnihub.demo",
        "Ana Analyst",
        &["analyst"],
        "omnihub-demo-analyst",
    ),
    (
        "support@omnihub.demo",
        "Sam Support",
        &["support"],
        "omnihub-demo-support",
    ),
];

/// The demo stores' staff at the till: (id, name, role, PIN). Printed in the banner; a real
/// store lists its own with `omnihub edge --hash-pin`.
const DEMO_STAFF: [(&str, &str, &str, &str); 2] = [
    ("lena", "Lena Vogel", "clerk", "1234"),
    ("max", "Max Brandt", "manager", "9876"),
];

/// A demo node's settings file: its POS staff (PIN hashes made afresh at each start) and till.
/// Readable by the owner only: whoever reads a PIN hash can find the PIN.
fn write_store_settings(data: &std::path::Path, replica: &str) -> anyhow::Result<PathBuf> {
    let mut toml = String::from(
        "# Written by `omnihub demo` at each start: the demo store's POS.\n[pos]\ncurrency = \"EUR\"\ntills = [\"1\", \"2\"]\n",
    );
    for (id, name, role, pin) in DEMO_STAFF {
        let hash = edge_node::hash_pin(pin).context("hashing a demo PIN")?;
        toml.push_str(&format!(
            "\n[[pos.staff]]\nid = \"{id}\"\nname = \"{name}\"\nrole = \"{role}\"\npin_hash = \"{hash}\"\n"
        ));
    }
    toml.push_str(&crate::demo_boards::store_settings(replica));
    let path = data.join(format!("edge-{replica}.toml"));
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(
        &mut file
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?,
        toml.as_bytes(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A demo node's credential towards the hub (the hub's settings hold only its SHA-256).
fn demo_credential(replica: &str) -> String {
    format!("omnihub-demo-node-{replica}")
}

/// The hub's settings for the demo: its two stores' nodes.
fn write_hub_settings(data: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut toml = String::from(
        "# Written by `omnihub demo` at each start: the demo's store nodes.\n[edge]\n",
    );
    for (replica, location, name, _) in DEMO_STORES {
        let hash: String = hub::auth::token_hash(&demo_credential(replica))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        toml.push_str(&format!(
            "[[edge.nodes]]\nreplica = \"{replica}\"\nlocation = \"{location}\"\nname = \"{name}\"\ncredential_sha256 = \"{hash}\"\n"
        ));
    }
    toml.push_str(&format!(
        "\n# The demo's ERP (omnihub sim erp): pulled by cursor, and allowed to push signed feeds.\n[import]\npush_secret = \"{DEMO_ERP_SECRET}\"\n[import.pull]\nbase_url = \"http://{DEMO_ERP}\"\nevery = \"30s\"\n"
    ));
    toml.push_str(&hub::oauth::OAuthSettings::demo_toml());
    // The voice skill trusts the voice simulator's own signing chain (development settings: the
    // hub warns about them at start-up). `omnihub sim voice --chain-dir <data>/voice-sim` signs
    // with it.
    let chain_dir = data.join("voice-sim");
    simulators::voice::signer::SimChain::load_or_create(&chain_dir).with_context(|| {
        format!(
            "making the voice simulator's chain in {}",
            chain_dir.display()
        )
    })?;
    toml.push_str(&format!(
        "\n# The voice skill (docs/voice.md): the simulated platform's skill id and signing chain.\n[voice]\nskill_ids = [\"{}\"]\n[voice.development]\ntrust_roots_pem = {:?}\ncert_chain_source = {:?}\n",
        simulators::voice::DEFAULT_SKILL_ID,
        chain_dir.join("root.pem").display().to_string(),
        chain_dir.join("chain.pem").display().to_string(),
    ));
    let path = data.join("hub-demo.toml");
    std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// On a node's first start, a delivery of every product to its shelves (as the ERP would send),
/// once the node has the catalog from the hub.
fn seed_store(base: &str, replica: &str) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let get = |path: &str| -> anyhow::Result<serde_json::Value> {
        Ok(client
            .get(format!("{base}{path}"))
            .bearer_auth(DEMO_STORE_TOKEN)
            .send()?
            .error_for_status()?
            .json()?)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let products = loop {
        let found = get("/api/v1/products?limit=100")?;
        if found["products"].as_array().is_some_and(|p| !p.is_empty()) {
            break found;
        }
        if Instant::now() > deadline {
            bail!("the {replica} node did not receive the catalog from the hub within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if get("/api/v1/stock")?["items"]
        .as_array()
        .is_some_and(|items| !items.is_empty())
    {
        return Ok(());
    }
    let skus = products["products"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["variants"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["sku"].as_str().map(str::to_string));
    for (i, sku) in skus.enumerate() {
        // 3 to 24 units, a few SKUs scarce: a store sells its last units in the demo too.
        let units = 3 + (i * 7 + replica.len()) % 22;
        client
            .post(format!("{base}/api/v1/stock/adjustments"))
            .bearer_auth(DEMO_STORE_TOKEN)
            .header("idempotency-key", format!("demo-delivery-{sku}"))
            .json(&serde_json::json!({
                "kind": "receipt", "sku": sku, "units": units, "reason": "demo: opening delivery"
            }))
            .send()?
            .error_for_status()?;
    }
    Ok(())
}

/// The demo's business users (made once) with a fresh API token each (printed), and the
/// demo's own promotion on the demo catalog, three teas for two, made by one user and approved
/// by the other. The ERP brings its own promotions and coupons through the import.
fn seed_backoffice(hub: &str) -> anyhow::Result<Vec<(String, String)>> {
    use serde_json::{json, Value};
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let users: Value = client
        .get(format!("{hub}/api/v1/admin/users"))
        .bearer_auth(DEMO_ADMIN_TOKEN)
        .send()?
        .error_for_status()?
        .json()?;
    let mut tokens = Vec::new();
    for (email, name, roles, password) in DEMO_USERS {
        let known = users["users"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["email"] == email)
            .and_then(|u| u["id"].as_str().map(str::to_string));
        let id = match known {
            Some(id) => {
                // Users from an older demo may have no password, or another one.
                client
                    .patch(format!("{hub}/api/v1/admin/users/{id}"))
                    .bearer_auth(DEMO_ADMIN_TOKEN)
                    .json(&json!({"password": password}))
                    .send()?
                    .error_for_status()?;
                id
            }
            None => {
                let made: Value = client
                    .post(format!("{hub}/api/v1/admin/users"))
                    .bearer_auth(DEMO_ADMIN_TOKEN)
                    .json(&json!({"email": email, "name": name, "roles": roles, "password": password}))
                    .send()?
                    .error_for_status()?
                    .json()?;
                made["id"].as_str().context("a user id")?.to_string()
            }
        };
        let token: Value = client
            .post(format!("{hub}/api/v1/admin/users/{id}/tokens"))
            .bearer_auth(DEMO_ADMIN_TOKEN)
            .json(&json!({"name": "omnihub demo"}))
            .send()?
            .error_for_status()?
            .json()?;
        tokens.push((
            email.to_string(),
            token["token"].as_str().context("a token")?.to_string(),
        ));
    }
    let (mia, ada) = (&tokens[0].1, &tokens[1].1);
    let promotions = [json!({
        "id": "DEMO-TEA-3FOR2",
        "name": "Tea time: 3 for 2 on tea",
        "description": "The cheapest of every three teas is free.",
        "spec": {
            "benefit": {
                "type": "buy_x_get_y",
                "buy": {"type": "categories", "categories": ["tea"]}, "buy_quantity": 2,
                "get": {"type": "categories", "categories": ["tea"]}, "get_quantity": 1,
                "percent_bp": 10000,
            },
            "combination": {"type": "stackable", "group": "tea"},
            "priority": 10,
        },
    })];
    for promotion in promotions {
        let id = promotion["id"].as_str().unwrap_or_default();
        let found = client
            .get(format!("{hub}/api/v1/backoffice/promotions/{id}"))
            .bearer_auth(mia)
            .send()?;
        if found.status().is_success() {
            continue;
        }
        client
            .post(format!("{hub}/api/v1/backoffice/promotions"))
            .bearer_auth(mia)
            .json(&promotion)
            .send()?
            .error_for_status()
            .with_context(|| format!("creating the demo promotion {id}"))?;
        client
            .post(format!("{hub}/api/v1/backoffice/promotions/{id}/approve"))
            .bearer_auth(ada)
            .send()?
            .error_for_status()
            .with_context(|| format!("approving the demo promotion {id}"))?;
    }
    seed_experiment(&client, hub, mia, ada)?;
    seed_hero_experiment(&client, hub, mia)?;
    Ok(tokens)
}

/// The demo's A/B test, `free-shipping-test`: half the shoppers get free shipping (a promotion
/// restricted to its `free-shipping` variant), the goal is a placed order. Running from the
/// start, so `omnihub load checkout` (one anonymous visit per checkout) fills its report.
fn seed_experiment(
    client: &reqwest::blocking::Client,
    hub: &str,
    marketer: &str,
    approver: &str,
) -> anyhow::Result<()> {
    const KEY: &str = "free-shipping-test";
    let found = client
        .get(format!("{hub}/api/v1/admin/experiments/{KEY}"))
        .bearer_auth(marketer)
        .send()?;
    let status = if found.status().is_success() {
        found.json::<serde_json::Value>()?["status"]
            .as_str()
            .map(str::to_string)
    } else {
        None
    };
    match status.as_deref() {
        // A draft left by an interrupted first start is finished below.
        Some("draft") => {}
        Some(_) => return Ok(()),
        None => create_experiment(client, hub, marketer, KEY)?,
    }
    let promotion = "DEMO-FREE-SHIPPING-TEST";
    let made = client
        .get(format!("{hub}/api/v1/backoffice/promotions/{promotion}"))
        .bearer_auth(marketer)
        .send()?
        .status()
        .is_success();
    if !made {
        make_experiment_promotion(client, hub, marketer, approver, KEY, promotion)?;
    }
    client
        .post(format!("{hub}/api/v1/admin/experiments/{KEY}/start"))
        .bearer_auth(marketer)
        .send()?
        .error_for_status()
        .context("starting the demo experiment")?;
    Ok(())
}

/// The demo's content A/B test, `home-hero-test`: the storefront's home hero for shoppers
/// outside `coffee-lovers` is either the tea hero (control) or a "new this week" hero (a
/// `home_hero` slot variant bound to the experiment's `new-arrivals` variant); the goal is a
/// basket line. Each browser sees its variant, and the report counts them.
fn seed_hero_experiment(
    client: &reqwest::blocking::Client,
    hub: &str,
    marketer: &str,
) -> anyhow::Result<()> {
    use serde_json::json;
    const KEY: &str = "home-hero-test";
    let found = client
        .get(format!("{hub}/api/v1/admin/experiments/{KEY}"))
        .bearer_auth(marketer)
        .send()?;
    let status = if found.status().is_success() {
        found.json::<serde_json::Value>()?["status"]
            .as_str()
            .map(str::to_string)
    } else {
        None
    };
    if status.is_none() {
        client
            .post(format!("{hub}/api/v1/admin/experiments"))
            .bearer_auth(marketer)
            .json(&json!({
                "key": KEY,
                "name": "Which home hero?",
                "hypothesis": "Showing what is new on the home page makes more visitors add something to their basket than the tea hero.",
                "surface": "storefront",
                "variants": [
                    {"key": "control", "percent": 50, "description": "the tea hero"},
                    {"key": "new-arrivals", "percent": 50, "description": "a \"new this week\" hero"}
                ],
                "goal": "basket_line_added"
            }))
            .send()?
            .error_for_status()
            .context("creating the demo hero experiment")?;
    }
    if status.as_deref().is_none_or(|s| s == "draft") {
        client
            .post(format!("{hub}/api/v1/admin/experiments/{KEY}/start"))
            .bearer_auth(marketer)
            .send()?
            .error_for_status()
            .context("starting the demo hero experiment")?;
    }
    // The hero slot (seeded by the hub) gets a variant for `new-arrivals`, after the
    // coffee-lovers' own, unless one is bound already.
    let slot = client
        .get(format!("{hub}/api/v1/admin/slots/home_hero"))
        .bearer_auth(marketer)
        .send()?;
    if !slot.status().is_success() {
        return Ok(());
    }
    let mut spec = slot.json::<serde_json::Value>()?["spec"].clone();
    let Some(variants) = spec["variants"].as_array_mut() else {
        return Ok(());
    };
    if variants
        .iter()
        .any(|v| v["targeting"]["experiment"]["id"] == KEY)
    {
        return Ok(());
    }
    // The stored form carries each content's kind; the API takes the content alone.
    for v in variants.iter_mut() {
        if let Some(c) = v["content"].as_object_mut() {
            c.remove("kind");
        }
    }
    variants.push(json!({
        "id": "new-arrivals",
        "targeting": {"experiment": {"id": KEY, "variant": "new-arrivals"}},
        "content": {"title": "New this week",
            "text": "Fresh arrivals in every aisle: new beans from the roastery, new teas and the things around them.",
            "image": "/images/category/coffee.svg", "link": "/"}
    }));
    if let Some(d) = spec["default"].as_object_mut() {
        d.remove("kind");
    }
    client
        .put(format!("{hub}/api/v1/admin/slots/home_hero"))
        .bearer_auth(marketer)
        .json(&spec)
        .send()?
        .error_for_status()
        .context("binding the home hero to the demo hero experiment")?;
    Ok(())
}

/// The demo experiment's definition, as a draft.
fn create_experiment(
    client: &reqwest::blocking::Client,
    hub: &str,
    marketer: &str,
    key: &str,
) -> anyhow::Result<()> {
    use serde_json::json;
    client
        .post(format!("{hub}/api/v1/admin/experiments"))
        .bearer_auth(marketer)
        .json(&json!({
            "key": key,
            "name": "Free shipping for everyone?",
            "hypothesis": "Free shipping on every basket lifts the share of visits that order by more than it costs.",
            "surface": "promotion",
            "variants": [
                {"key": "control", "percent": 50, "description": "shipping as usual"},
                {"key": "free-shipping", "percent": 50, "description": "free shipping on every basket"}
            ],
            "goal": "order_placed"
        }))
        .send()?
        .error_for_status()
        .context("creating the demo experiment")?;
    Ok(())
}

/// The demo experiment's promotion: free shipping for its `free-shipping` variant, approved.
fn make_experiment_promotion(
    client: &reqwest::blocking::Client,
    hub: &str,
    marketer: &str,
    approver: &str,
    experiment: &str,
    promotion: &str,
) -> anyhow::Result<()> {
    use serde_json::json;
    client
        .post(format!("{hub}/api/v1/backoffice/promotions"))
        .bearer_auth(marketer)
        .json(&json!({
            "id": promotion,
            "name": "Free shipping",
            "description": "Free shipping on every basket (A/B test free-shipping-test).",
            "spec": {
                "conditions": [{"type": "experiment", "experiment": experiment, "variants": ["free-shipping"]}],
                "benefit": {"type": "free_shipping"},
                "combination": {"type": "stackable", "group": "shipping"},
                "priority": 5,
            },
        }))
        .send()?
        .error_for_status()
        .context("creating the demo experiment's promotion")?;
    client
        .post(format!(
            "{hub}/api/v1/backoffice/promotions/{promotion}/approve"
        ))
        .bearer_auth(approver)
        .send()?
        .error_for_status()
        .context("approving the demo experiment's promotion")?;
    Ok(())
}

/// A child process that is stopped when the supervisor ends.
struct Supervised {
    name: &'static str,
    child: Child,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Ctrl-C reaches the whole process group, so children usually stop by themselves;
        // give them a moment to flush, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(url: &str, child: &mut Supervised, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); see its log above",
                child.name
            );
        }
        if client
            .get(url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become ready at {url} within {timeout:?}",
                child.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.fresh && args.data.exists() {
        std::fs::remove_dir_all(&args.data)
            .with_context(|| format!("removing {}", args.data.display()))?;
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let exe = std::env::current_exe().context("finding the omnihub binary")?;
    let hub_url = format!("http://127.0.0.1:{}", args.hub_port);
    catch_ctrl_c();
    // The payment provider first, so the first checkout finds it. The webhook secret is the
    // demo's shared default on both sides; a real deployment sets its own.
    let payments_listen = format!("127.0.0.1:{}", args.payments_port);
    let payments_url = format!("http://{payments_listen}");
    let child = Command::new(&exe)
        .args(["sim", "payments", "--listen", &payments_listen])
        .args(["--webhook-url", &format!("{hub_url}/webhooks/payments")])
        .args(["--webhook-secret", DEMO_WEBHOOK_SECRET])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the payment simulator")?;
    let mut payments = Supervised {
        name: "payment simulator",
        child,
    };
    // The carrier and the OMS: they report back to the hub's webhooks; a demo order goes from
    // placed to delivered in about a minute.
    let child = Command::new(&exe)
        .args(["sim", "logistics", "--listen", DEMO_LOGISTICS])
        .args(["--webhook-url", &format!("{hub_url}/webhooks/logistics")])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the logistics simulator")?;
    let mut logistics = Supervised {
        name: "logistics simulator",
        child,
    };
    let child = Command::new(&exe)
        .args(["sim", "oms", "--listen", DEMO_OMS])
        .args(["--webhook-url", &format!("{hub_url}/webhooks/oms")])
        .args(["--logistics-url", &format!("http://{DEMO_LOGISTICS}")])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the OMS simulator")?;
    let mut oms = Supervised {
        name: "OMS simulator",
        child,
    };
    // The ERP: the hub pulls its products, prices, stock, promotions and coupons.
    let child = Command::new(&exe)
        .args(["sim", "erp", "--listen", DEMO_ERP])
        .args(["--push-secret", DEMO_ERP_SECRET])
        .args(["--change-every", "2m"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the ERP simulator")?;
    let mut erp = Supervised {
        name: "ERP simulator",
        child,
    };
    // The stores' payment terminal: the tills ask it to read cards (both demo stores share it).
    let terminal_url = format!(
        "http://{}",
        simulators::terminal::TerminalSim::DEFAULT_LISTEN
    );
    let child = Command::new(&exe)
        .args(["sim", "terminal"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the payment terminal simulator")?;
    let mut terminal = Supervised {
        name: "payment terminal simulator",
        child,
    };
    let hub_settings = write_hub_settings(&args.data)?;
    let child = Command::new(&exe)
        .arg("hub")
        .arg("--config")
        .arg(&hub_settings)
        .env("OMNIHUB_HUB_DATA_DIR", args.data.join("hub"))
        .env("OMNIHUB_HUB_LISTEN", format!("127.0.0.1:{}", args.hub_port))
        .env("OMNIHUB_HUB_DEMO_DATA", "true")
        .env("OMNIHUB_HUB_ADMIN_TOKEN", DEMO_ADMIN_TOKEN)
        .env("OMNIHUB_HUB_PAYMENTS__BASE_URL", &payments_url)
        .env("OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)
        .env("OMNIHUB_HUB_OMS__BASE_URL", format!("http://{DEMO_OMS}"))
        .env(
            "OMNIHUB_HUB_EMAIL__PORT",
            simulators::mail::MailArgs::DEFAULT_SMTP.port().to_string(),
        )
        // Short enough to watch a basket reminder arrive in the mail simulator, at any hour
        // (docs/automation.md, "Seeing it in the demo").
        .env("OMNIHUB_HUB_AUTOMATION__ABANDONED_AFTER", "2m")
        .env("OMNIHUB_HUB_AUTOMATION__QUIET_START", "00:00")
        .env("OMNIHUB_HUB_AUTOMATION__QUIET_END", "00:00")
        .stdin(Stdio::null())
        .spawn()
        .context("starting the hub")?;
    let mut hub = Supervised { name: "hub", child };
    let child = Command::new(&exe)
        .args(["sim", "mail"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the mail simulator")?;
    let mut mail = Supervised {
        name: "mail simulator",
        child,
    };
    // One edge node per store: each keeps selling if its link to the hub goes down.
    let mut stores = Vec::new();
    for (replica, location, name, port) in DEMO_STORES {
        let store_settings = write_store_settings(&args.data, replica)?;
        let child = Command::new(&exe)
            .arg("edge")
            .arg("--config")
            .arg(&store_settings)
            .env("OMNIHUB_EDGE_REPLICA", replica)
            .env("OMNIHUB_EDGE_LOCATION", location)
            .env("OMNIHUB_EDGE_STORE_NAME", name)
            .env(
                "OMNIHUB_EDGE_HUB_URL",
                format!("ws://127.0.0.1:{}/api/v1/edge/sync", args.hub_port),
            )
            .env("OMNIHUB_EDGE_CREDENTIAL", demo_credential(replica))
            .env(
                "OMNIHUB_EDGE_DATA_DIR",
                args.data.join(format!("edge-{replica}")),
            )
            .env("OMNIHUB_EDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("OMNIHUB_EDGE_API_TOKEN", DEMO_STORE_TOKEN)
            .env("OMNIHUB_EDGE_POS__CARD__TERMINAL_URL", &terminal_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the {name} edge node"))?;
        stores.push((
            Supervised {
                name: if replica == "berlin" {
                    "Berlin edge node"
                } else {
                    "Hamburg edge node"
                },
                child,
            },
            format!("http://127.0.0.1:{port}"),
            replica,
        ));
    }
    let inbox = format!("http://{}/", simulators::mail::MailArgs::DEFAULT_HTTP);
    println!("Starting Omnihub (first start loads the demo catalog)…");
    wait_ready(
        &format!("{hub_url}/readyz"),
        &mut hub,
        Duration::from_secs(120),
    )?;
    wait_ready(
        &format!("{inbox}healthz"),
        &mut mail,
        Duration::from_secs(30),
    )?;
    wait_ready(
        &format!("{payments_url}/healthz"),
        &mut payments,
        Duration::from_secs(30),
    )?;
    wait_ready(
        &format!("http://{DEMO_OMS}/healthz"),
        &mut oms,
        Duration::from_secs(30),
    )?;
    wait_ready(
        &format!("http://{DEMO_LOGISTICS}/healthz"),
        &mut logistics,
        Duration::from_secs(30),
    )?;
    wait_ready(
        &format!("http://{DEMO_ERP}/healthz"),
        &mut erp,
        Duration::from_secs(30),
    )?;
    wait_ready(
        &format!("{terminal_url}/healthz"),
        &mut terminal,
        Duration::from_secs(30),
    )?;
    for (node, base, replica) in stores.iter_mut() {
        wait_ready(&format!("{base}/readyz"), node, Duration::from_secs(30))?;
        seed_store(base, replica)?;
    }
    let staff: String = DEMO_STAFF
        .iter()
        .map(|(id, name, role, pin)| format!("{name} ({id}, {role}) PIN {pin}   "))
        .collect();
    let users = seed_backoffice(&hub_url)?;
    if let Some((_, base, _)) = stores.first() {
        crate::demo_boards::publish(&hub_url, DEMO_ADMIN_TOKEN, base, DEMO_STORE_TOKEN)?;
    }
    let boards = crate::demo_boards::banner(
        &DEMO_STORES
            .iter()
            .map(|(replica, _, _, port)| (*replica, *port))
            .collect::<Vec<_>>(),
    );
    let users: String = users
        .iter()
        .zip(DEMO_USERS.iter())
        .map(|((email, token), (_, _, roles, password))| {
            format!(
                "\n                  {email} / {password}  ({})  Bearer {token}",
                roles.join(", ")
            )
        })
        .collect();
    let (_, berlin, berlin_name, berlin_port) = DEMO_STORES[0];
    let pickup = collect::banner_line(
        &collect::PickupDemo {
            hub: &hub_url,
            admin_token: DEMO_ADMIN_TOKEN,
            store: &format!("http://127.0.0.1:{berlin_port}"),
            store_token: DEMO_STORE_TOKEN,
            location: berlin,
        },
        berlin_name,
    );
    println!(
        "\n  Omnihub is running.\n\n  Storefront      {hub_url}/\n  JSON API        {hub_url}/api/v1/products\n  OpenAPI         {hub_url}/api/v1/openapi.json\n  Health          {hub_url}/healthz  {hub_url}/readyz  {hub_url}/metrics\n  Mail inbox      {inbox}  (SMTP sink on {})\n  Payments        {payments_url}/  (test card 4242 4242 4242 4242, any future date, any CVC)\n  Admin API       {hub_url}/api/v1/admin/orders  (Authorization: Bearer {DEMO_ADMIN_TOKEN})\n  Operations      {hub_url}/ops  (live: actors, stores, boards, integrations, errors)\n  Outbox          {hub_url}/ops/outbox\n  Stores          http://127.0.0.1:8301/api/v1/stock (Berlin)  http://127.0.0.1:8302/api/v1/stock (Hamburg)  (Authorization: Bearer {DEMO_STORE_TOKEN})\n  Store tills     http://127.0.0.1:8301/pos (Berlin)  http://127.0.0.1:8302/pos (Hamburg)  (works offline too)\n                  {staff}\n  Click & collect {pickup}\n  Card terminal   {terminal_url}/  (present a test card, then press Card on the till)\n  Voice skill     {hub_url}/voice/alexa  (try: omnihub sim voice --chain-dir {}/voice-sim --link-as {})\n  Chat            the Ask us box on every storefront page, or POST {hub_url}/api/v1/chat\n  Store boards    playlists: {hub_url}/api/v1/admin/boards/playlists (admin token){boards}\n  Store sync      {hub_url}/api/v1/admin/edge/nodes  (admin token)\n  OMS, carrier    http://{DEMO_OMS}/  http://{DEMO_LOGISTICS}/  (orders ship and are delivered within about a minute)\n  ERP             http://{DEMO_ERP}/  (pulled every 30 s; runs: {hub_url}/api/v1/admin/import/runs, admin token)\n  Promotions      {hub_url}/api/v1/backoffice/promotions  (ERP coupons WELCOME10 from EUR 50 and COFFEE20 for signed-in shoppers; tea 3 for 2)\n  Back office     {hub_url}/backoffice  sign in as (password; API token, new at each start):{users}\n\n  Demo shopper    {}  /  {}\n\n  Data in {} (kept across restarts; --fresh starts over). Ctrl-C stops everything.\n",
        simulators::mail::MailArgs::DEFAULT_SMTP,
        args.data.display(),
        hub::app::DEMO_EMAIL,
        hub::app::DEMO_EMAIL,
        hub::app::DEMO_PASSWORD,
        args.data.display()
    );
    // Runs until a child stops: on Ctrl-C all of them do (they share the terminal's process
    // group); if one fails on its own, the others are stopped too.
    let mut children = vec![hub, mail, payments, oms, logistics, erp, terminal];
    children.extend(stores.into_iter().map(|(node, _, _)| node));
    let mut forwarded = false;
    loop {
        if !forwarded && STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst) {
            forward_stop(&children);
            forwarded = true;
        }
        for i in 0..children.len() {
            let Some(status) = children[i].child.try_wait()? else {
                continue;
            };
            if !status.success() && status.code().is_some() {
                for other in children.iter_mut() {
                    let _ = other.child.kill();
                }
                bail!("the {} stopped: {status}", children[i].name);
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Set once a stop signal (Ctrl-C or SIGTERM) reached the supervisor.
static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C in a terminal reaches every process of its group, so the children stop gracefully by
/// themselves; a signal sent to the supervisor alone (`kill <pid>`, a service manager's
/// SIGTERM) is passed on to each child by the supervisor's loop. Either way the supervisor waits
/// for its children instead of dying first.
fn catch_ctrl_c() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                    _ = term.recv() => {}
                }
                eprintln!("stopping…");
                STOP_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    });
}

/// Asks each child still running to stop as Ctrl-C would (SIGINT: every omnihub command stops
/// gracefully on it); a child that already got the terminal's Ctrl-C ignores the repeat.
fn forward_stop(children: &[Supervised]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for c in children {
        let Ok(pid) = i32::try_from(c.child.id()) else {
            continue;
        };
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGINT) {
            // Already gone: its exit is picked up by the loop.
            tracing::debug!(child = c.name, error = %e, "could not signal a child");
        }
    }
}
