//! The ERP importer end to end: the real hub pulls from the real ERP simulator (`omnihub sim
//! erp`), both as processes. Bad rows, duplicates, out-of-order updates, failing and broken
//! responses are injected through the simulator's test API; a CSV push goes through the signed
//! endpoint; and the hub is killed with SIGKILL mid-import and must resume from its cursor
//! without applying a movement twice, ending with the ERP's catalog.

mod common;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "import-e2e-admin";
const SECRET: &str = "import-e2e-secret";
const PAGE: u64 = 500;

/// A running `omnihub sim erp`; killed when dropped.
struct Sim {
    child: Child,
    base: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(args: &[&str]) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnihub"))
        .args([
            "sim",
            "erp",
            "--listen",
            "127.0.0.1:0",
            "--push-secret",
            SECRET,
        ])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the simulator starts");
    let base = common::listening_line(
        &mut child,
        "erp simulator listening on ",
        Duration::from_secs(60),
    );
    Sim { child, base }
}

fn start_hub(data: &Path, sim: &Sim) -> common::HubProcess {
    let credential = hex_sha256("berlin-node-credential");
    let nodes = format!(
        "[{{replica=\"berlin\",location=\"store-berlin\",credential_sha256=\"{credential}\"}}]"
    );
    let env = [
        ("OMNIHUB_HUB_DEMO_DATA", "false"),
        ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
        ("OMNIHUB_HUB_IMPORT__PUSH_SECRET", SECRET),
        ("OMNIHUB_HUB_IMPORT__PULL__BASE_URL", sim.base.as_str()),
        ("OMNIHUB_HUB_IMPORT__PULL__EVERY", "200ms"),
        ("OMNIHUB_HUB_IMPORT__PULL__MAX_BACKOFF", "1s"),
        ("OMNIHUB_HUB_IMPORT__PULL__PAGE_SIZE", "500"),
        (
            "OMNIHUB_HUB_IMPORT__PULL__FEEDS",
            "[\"products\",\"prices\",\"stock\"]",
        ),
        ("OMNIHUB_HUB_EDGE__NODES", nodes.as_str()),
    ];
    tokio::task::block_in_place(|| common::start_hub_with(data, &[], &env))
}

fn hex_sha256(text: &str) -> String {
    // The hub keeps the SHA-256 of a node's credential; `sha256sum` computes the same.
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// A GET of the admin API (with the admin token) or the simulator.
async fn get(c: &reqwest::Client, url: &str) -> Value {
    read(c.get(url).bearer_auth(ADMIN), url).await
}

/// A GET of the storefront's public API (a token there would be a shopper's session).
async fn public(c: &reqwest::Client, url: &str) -> Value {
    read(c.get(url), url).await
}

async fn read(req: reqwest::RequestBuilder, url: &str) -> Value {
    let res = req.send().await.expect("sent");
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json().await.expect("JSON")
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> Value {
    let res = c.post(url).json(&body).send().await.expect("sent");
    assert!(res.status().is_success(), "POST {url}: {}", res.status());
    res.json().await.expect("JSON")
}

async fn delete(c: &reqwest::Client, url: &str) {
    let res = c.delete(url).send().await.expect("sent");
    assert!(res.status().is_success(), "DELETE {url}");
}

const FEEDS: [&str; 3] = ["products", "prices", "stock"];

/// The simulator's newest cursor per feed.
async fn sim_cursors(c: &reqwest::Client, sim: &Sim) -> BTreeMap<String, String> {
    let state = get(c, &format!("{}/test/state", sim.base)).await;
    FEEDS
        .iter()
        .map(|f| {
            let cursor = state["feeds"][f]["cursor"].as_str().expect("cursor");
            (f.to_string(), cursor.to_string())
        })
        .collect()
}

async fn hub_cursors(c: &reqwest::Client, hub: &str) -> BTreeMap<String, String> {
    let v = get(c, &format!("{hub}/api/v1/admin/import/cursors")).await;
    v["feeds"]
        .as_array()
        .expect("feeds")
        .iter()
        .filter_map(|f| {
            Some((
                f["feed"].as_str()?.to_string(),
                f["cursor"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Waits until the hub has pulled every feed up to the simulator's newest cursor.
async fn caught_up(c: &reqwest::Client, hub: &str, sim: &Sim, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let want = sim_cursors(c, sim).await;
        let have = hub_cursors(c, hub).await;
        if FEEDS.iter().all(|f| have.get(*f) == want.get(*f)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the hub did not catch up within {within:?}: has {have:?}, the ERP is at {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A whole feed, read from the start (call with no row faults armed).
async fn feed(c: &reqwest::Client, sim: &Sim, name: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut since = String::new();
    loop {
        let page = get(
            c,
            &format!("{}/feeds/{name}?since={since}&limit=10000", sim.base),
        )
        .await;
        rows.extend(page["rows"].as_array().expect("rows").iter().cloned());
        since = page["next_cursor"].as_str().expect("cursor").to_string();
        if page["has_more"] != true {
            return rows;
        }
    }
}

fn text<'a>(row: &'a Value, field: &str) -> &'a str {
    row[field].as_str().unwrap_or_default()
}

fn cents(decimal: &str) -> i64 {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    let frac = format!("{frac:0<2}");
    whole.parse::<i64>().expect("whole") * 100 + frac[..2].parse::<i64>().expect("cents")
}

fn unix(rfc3339: &str) -> Option<i64> {
    if rfc3339.is_empty() {
        return None;
    }
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// What the storefront must sell, from the ERP's feeds: per active SKU, its name, variant title
/// and shelf price (the `retail` EUR entry valid now, else the product row's price).
async fn erp_catalog(c: &reqwest::Client, sim: &Sim) -> BTreeMap<String, (String, String, i64)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut best: BTreeMap<String, (i64, u64, i64)> = BTreeMap::new();
    for p in feed(c, sim, "prices").await {
        let (from, until) = (unix(text(&p, "valid_from")), unix(text(&p, "valid_until")));
        let valid = from.is_none_or(|f| f <= now) && until.is_none_or(|u| now < u);
        if text(&p, "price_list") != "retail" || text(&p, "currency") != "EUR" || !valid {
            continue;
        }
        let key = (
            from.unwrap_or(i64::MIN),
            text(&p, "version").parse().unwrap_or(0),
        );
        let entry = best
            .entry(text(&p, "sku").to_string())
            .or_insert((i64::MIN, 0, 0));
        if (key.0, key.1) >= (entry.0, entry.1) {
            *entry = (key.0, key.1, cents(text(&p, "price")));
        }
    }
    feed(c, sim, "products")
        .await
        .iter()
        .filter(|p| text(p, "active") != "false")
        .map(|p| {
            let sku = text(p, "sku").to_string();
            let price = best
                .get(&sku)
                .map_or_else(|| cents(text(p, "price")), |b| b.2);
            let title = text(p, "variant_title").to_string();
            (sku, (text(p, "name").to_string(), title, price))
        })
        .collect()
}

/// What the hub's storefront sells: the same view, from its public API.
async fn hub_catalog(c: &reqwest::Client, hub: &str) -> BTreeMap<String, (String, String, i64)> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(k) => format!("{hub}/api/v1/products?limit=100&cursor={k}"),
            None => format!("{hub}/api/v1/products?limit=100"),
        };
        let page = public(c, &url).await;
        for item in page["items"].as_array().expect("items") {
            let slug = item["slug"].as_str().expect("slug");
            let detail = public(c, &format!("{hub}/api/v1/products/{slug}")).await;
            for v in detail["variants"].as_array().expect("variants") {
                out.insert(
                    v["sku"].as_str().expect("sku").to_string(),
                    (
                        detail["name"].as_str().expect("name").to_string(),
                        v["title"].as_str().expect("title").to_string(),
                        v["price"]["minor"].as_i64().expect("price"),
                    ),
                );
            }
        }
        match page["next_cursor"].as_str() {
            Some(k) => cursor = Some(k.to_string()),
            None => return out,
        }
    }
}

/// The differences between two catalogs (at most a few, for the message).
fn differences(
    erp: &BTreeMap<String, (String, String, i64)>,
    hub: &BTreeMap<String, (String, String, i64)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (sku, want) in erp {
        match hub.get(sku) {
            Some(have) if have == want => {}
            have => out.push(format!("{sku}: ERP {want:?}, hub {have:?}")),
        }
    }
    out.extend(
        hub.keys()
            .filter(|sku| !erp.contains_key(*sku))
            .map(|sku| format!("{sku}: sold by the hub, not in the ERP")),
    );
    out
}

/// Runs of the hub, newest first.
async fn runs(c: &reqwest::Client, hub: &str) -> Vec<Value> {
    let v = get(c, &format!("{hub}/api/v1/admin/import/runs?limit=200")).await;
    v["runs"].as_array().expect("runs").clone()
}

async fn run_errors(c: &reqwest::Client, hub: &str, feed: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in runs(c, hub).await.iter().filter(|r| r["feed"] == feed) {
        let full = get(
            c,
            &format!("{hub}/api/v1/admin/import/runs/{}", text(r, "id")),
        )
        .await;
        out.extend(full["errors"].as_array().expect("errors").iter().cloned());
    }
    out
}

fn total(runs: &[Value], feed: &str, what: &str) -> u64 {
    runs.iter()
        .filter(|r| r["feed"] == feed)
        .map(|r| r[what].as_u64().expect("a count"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_duplicates_and_out_of_order_updates_from_the_simulator() {
    let c = common::http_client();
    let sim = start_sim(&[
        "--products",
        "40",
        "--locations",
        "online,store-berlin",
        "--stock-deltas",
        "20",
    ]);
    // Entities that changed (so an older version exists to be served out of order).
    post(
        &c,
        &format!("{}/test/changes", sim.base),
        json!({"changes": [
            {"type": "set_price", "sku": "ERP-000005-1", "price": "9.90"},
            {"type": "update_product", "product": "ERP-000002", "name": "Renamed Blend"},
            {"type": "set_stock", "sku": "ERP-000003-1", "location": "online", "quantity": 40},
        ]}),
    )
    .await;
    post(
        &c,
        &format!("{}/test/faults", sim.base),
        json!({
            "bad_rows": [
                {"kind": "invalid_barcode", "count": 1, "feed": "products"},
                {"kind": "bad_currency", "count": 1, "feed": "prices"},
                {"kind": "non_numeric_price", "count": 1, "feed": "prices"},
                {"kind": "missing_field", "count": 1, "feed": "prices"},
                {"kind": "unknown_location", "count": 1, "feed": "stock"},
                {"kind": "negative_delta", "count": 1, "feed": "stock"},
            ],
            "duplicates": {"count": 5},
            "out_of_order": {"count": 3},
        }),
    )
    .await;
    let data = tempfile::tempdir().expect("temp dir");
    let hub = start_hub(data.path(), &sim);
    caught_up(&c, &hub.base, &sim, Duration::from_secs(120)).await;

    let all = runs(&c, &hub.base).await;
    assert!(total(&all, "products", "rejected") >= 1, "{all:?}");
    assert!(total(&all, "prices", "rejected") >= 3, "{all:?}");
    assert!(total(&all, "stock", "rejected") >= 2, "{all:?}");
    // Each duplicate is read twice: the second is unchanged (or, for a rejected row, rejected
    // again).
    let unchanged: u64 = FEEDS.iter().map(|f| total(&all, f, "unchanged")).sum();
    assert!(unchanged >= 4, "the duplicates: {all:?}");
    let stale: u64 = FEEDS.iter().map(|f| total(&all, f, "stale")).sum();
    assert!(stale >= 1, "the out-of-order rows: {all:?}");
    let fields = |errors: &[Value]| -> Vec<String> {
        errors
            .iter()
            .map(|e| text(e, "field").to_string())
            .collect()
    };
    let product_errors = fields(&run_errors(&c, &hub.base, "products").await);
    assert!(
        product_errors.contains(&"barcode".into()),
        "{product_errors:?}"
    );
    let price_errors = fields(&run_errors(&c, &hub.base, "prices").await);
    for field in ["currency", "price", "sku"] {
        assert!(price_errors.contains(&field.into()), "{price_errors:?}");
    }
    let stock_errors = fields(&run_errors(&c, &hub.base, "stock").await);
    for field in ["location", "quantity"] {
        assert!(stock_errors.contains(&field.into()), "{stock_errors:?}");
    }

    // The catalog equals the ERP's except the variant whose row was rejected; a new version of
    // it (a change in the ERP) brings it in.
    delete(&c, &format!("{}/test/faults", sim.base)).await;
    let erp = erp_catalog(&c, &sim).await;
    let sold = hub_catalog(&c, &hub.base).await;
    let missing: Vec<&String> = erp.keys().filter(|s| !sold.contains_key(*s)).collect();
    assert_eq!(
        missing.len(),
        1,
        "the invalid barcode's variant: {missing:?}"
    );
    assert_eq!(
        sold.get("ERP-000002-1").map(|v| v.0.as_str()),
        Some("Renamed Blend")
    );
    assert_eq!(sold.get("ERP-000005-1").map(|v| v.2), Some(990));
    // Its prices were rejected too (an unknown SKU): the ERP sends the product again, then a
    // price.
    post(
        &c,
        &format!("{}/test/changes", sim.base),
        json!({"changes": [
            {"type": "update_product", "sku": missing[0], "description": "Now with a good barcode."},
            {"type": "set_price", "sku": missing[0], "price": "43.21"},
        ]}),
    )
    .await;
    caught_up(&c, &hub.base, &sim, Duration::from_secs(60)).await;
    let erp = erp_catalog(&c, &sim).await;
    let diff = differences(&erp, &hub_catalog(&c, &hub.base).await);
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(erp.get(missing[0].as_str()).map(|v| v.2), Some(4321));
    let level = get(
        &c,
        &format!(
            "{}/api/v1/admin/stock/ERP-000003-1?location=online",
            hub.base
        ),
    )
    .await;
    let expected = erp_online_on_hand(&feed(&c, &sim, "stock").await);
    assert_eq!(
        level["on_hand"].as_i64(),
        expected.get("ERP-000003-1").copied(),
        "{level}"
    );

    // A failing and a broken ERP: the pull backs off and then applies the change.
    post(
        &c,
        &format!("{}/test/faults", sim.base),
        json!({"fail": {"status": 503, "count": 2}, "reset": {"count": 1}}),
    )
    .await;
    post(
        &c,
        &format!("{}/test/changes", sim.base),
        json!({"type": "set_price", "sku": "ERP-000005-1", "price": "8.90"}),
    )
    .await;
    caught_up(&c, &hub.base, &sim, Duration::from_secs(60)).await;
    let faults = get(&c, &format!("{}/test/faults", sim.base)).await;
    assert_eq!(
        faults["reset"], 0,
        "the broken response was served: {faults}"
    );
    assert!(
        faults["fail"].is_null(),
        "the failures were served: {faults}"
    );
    assert_eq!(
        hub_catalog(&c, &hub.base)
            .await
            .get("ERP-000005-1")
            .map(|v| v.2),
        Some(890)
    );

    // A signed CSV push of the whole products feed with one malformed line: that line is
    // rejected, everything else is unchanged.
    post(
        &c,
        &format!("{}/test/faults", sim.base),
        json!({"bad_rows": [{"kind": "malformed_csv", "count": 1, "feed": "products"}]}),
    )
    .await;
    let pushed = post(
        &c,
        &format!("{}/test/push", sim.base),
        json!({"feed": "products", "url": hub.base, "format": "csv", "page_size": 1000}),
    )
    .await;
    let answers = pushed["requests"].as_array().expect("requests");
    assert!(
        !answers.is_empty() && answers.iter().all(|r| r["status"] == 200),
        "{pushed}"
    );
    let report = &answers[0]["body"];
    assert_eq!(report["source"], "push");
    assert_eq!(report["rejected"], 1, "{report}");
    assert_eq!(report["applied"], 0, "{report}");
    assert_eq!(report["errors"][0]["field"], "", "{report}");
    assert!(
        text(&report["errors"][0], "reason").contains("malformed CSV"),
        "{report}"
    );
}

/// The online on hand per SKU as the ERP's stock log has it: in log order, a level sets it and
/// a movement moves it.
fn erp_online_on_hand(stock: &[Value]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in stock.iter().filter(|r| text(r, "location") == "online") {
        let q: i64 = text(r, "quantity").parse().expect("quantity");
        let on_hand = out.entry(text(r, "sku").to_string()).or_insert(0);
        match text(r, "kind") {
            "level" => *on_hand = q,
            _ => *on_hand += q,
        }
    }
    out
}

fn cursor_number(cursor: Option<&String>) -> u64 {
    cursor
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_import_resumes_without_applying_anything_twice() {
    let c = common::http_client();
    let sim = start_sim(&[
        "--products",
        "400",
        "--locations",
        "online,store-berlin",
        "--stock-deltas",
        "1500",
    ]);
    let state = get(&c, &format!("{}/test/state", sim.base)).await;
    let variants = state["variants"].as_u64().expect("variants");
    let stock_rows = state["feeds"]["stock"]["rows"].as_u64().expect("rows");
    // Slow pages, so the kill lands among the movements (after the levels: 2 per variant).
    post(
        &c,
        &format!("{}/test/faults", sim.base),
        json!({"delay": {"ms": 150}}),
    )
    .await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut hub = start_hub(data.path(), &sim);
    let levels = 2 * variants;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let at = cursor_number(hub_cursors(&c, &hub.base).await.get("stock"));
        if at >= levels + PAGE {
            assert!(
                at < stock_rows,
                "the kill came too late: stock at c{at} of {stock_rows}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import never reached the movements"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL: no chance to flush or finish the page.
    hub.child.kill().expect("killed");
    hub.child.wait().expect("reaped");
    let served_before = get(&c, &format!("{}/test/state", sim.base)).await["stats"]["rows_served"]
        .as_u64()
        .expect("rows served");
    delete(&c, &format!("{}/test/faults", sim.base)).await;

    let hub = start_hub(data.path(), &sim);
    caught_up(&c, &hub.base, &sim, Duration::from_secs(180)).await;
    let state = get(&c, &format!("{}/test/state", sim.base)).await;
    let served_after = state["stats"]["rows_served"].as_u64().expect("rows served");
    let all_rows: u64 = FEEDS
        .iter()
        .map(|f| state["feeds"][f]["rows"].as_u64().expect("rows"))
        .sum();
    // The stored cursors were at least the end of products and prices and `levels + PAGE` of
    // stock: a hub that resumes reads no more than the rest of the stock feed (and the page the
    // killed hub was waiting for, served after the kill).
    let resumed = served_after - served_before;
    assert!(
        resumed <= stock_rows - levels,
        "the restarted hub read {resumed} rows of {all_rows}: it did not resume from its cursors"
    );

    // Every movement once: online on hand equals the ERP's level plus its movements.
    let stock = feed(&c, &sim, "stock").await;
    let expected = erp_online_on_hand(&stock);
    let moved: std::collections::BTreeSet<&str> = stock
        .iter()
        .filter(|r| text(r, "kind") == "delta" && text(r, "location") == "online")
        .map(|r| text(r, "sku"))
        .collect();
    assert!(
        moved.len() > 50,
        "enough movements to check: {}",
        moved.len()
    );
    for sku in moved {
        let level = get(
            &c,
            &format!("{}/api/v1/admin/stock/{sku}?location=online", hub.base),
        )
        .await;
        assert_eq!(
            level["on_hand"].as_i64(),
            expected.get(sku).copied(),
            "{sku}: {level}"
        );
    }
    // Every store row forwarded at most once: the node's queue holds no more commands than
    // rows forwarded (a row caught by the kill between recording and queueing is reported).
    let forwarded = stock
        .iter()
        .filter(|r| text(r, "location") == "store-berlin")
        .filter(|r| text(r, "kind") == "level" || !text(r, "quantity").starts_with('-'))
        .count() as u64;
    let node = get(&c, &format!("{}/api/v1/admin/edge/nodes/berlin", hub.base)).await;
    let queued = node["unacknowledged"]["hub_to_node"]
        .as_u64()
        .expect("queued");
    let uncertain = run_errors(&c, &hub.base, "stock")
        .await
        .iter()
        .filter(|e| text(e, "reason").contains("may or may not have been queued"))
        .count() as u64;
    assert!(
        queued <= forwarded && queued + uncertain >= forwarded,
        "{queued} commands queued for {forwarded} store rows ({uncertain} uncertain)"
    );
    let all = runs(&c, &hub.base).await;
    assert_eq!(total(&all, "products", "rejected"), 0, "{all:?}");
    assert_eq!(total(&all, "prices", "rejected"), 0, "{all:?}");
    let erp = erp_catalog(&c, &sim).await;
    let diff = differences(&erp, &hub_catalog(&c, &hub.base).await);
    assert!(
        diff.is_empty(),
        "{} differences: {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_which_credential_may_import_promotions() {
    let c = common::http_client();
    let data = tempfile::tempdir().expect("temp dir");
    let hub = tokio::task::block_in_place(|| {
        common::start_hub_with(
            data.path(),
            &[],
            &[
                ("OMNIHUB_HUB_DEMO_DATA", "false"),
                ("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN),
            ],
        )
    });
    let user = c
        .post(format!("{}/api/v1/admin/users", hub.base))
        .bearer_auth(ADMIN)
        .json(&json!({"email": "merch@example.com", "name": "Merch", "roles": ["merchandiser"]}))
        .send()
        .await
        .expect("sent");
    let user: Value = user.json().await.expect("a user");
    let id = user["id"].as_str().expect("an id");
    let token = post_as_admin(&c, &format!("{}/api/v1/admin/users/{id}/tokens", hub.base)).await;
    let token = token["token"].as_str().expect("a token");
    let file = data.path().join("promotions.csv");
    std::fs::write(
        &file,
        "id,name,definition,version\nERP-5,Five off,\"{\"\"benefit\"\":{\"\"type\"\":\"\"percent_off_basket\"\",\"\"percent_bp\"\":500}}\",1\n",
    )
    .expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_omnihub"))
        .arg("import")
        .arg(&file)
        .args(["--hub", &hub.base, "--token", token])
        .output()
        .expect("omnihub import runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("403 Forbidden")
            && stderr.contains("admin token")
            && stderr.contains("feed_needs_erp_or_admin")
            && stderr.contains("nothing was imported"),
        "{stderr}"
    );
}

async fn post_as_admin(c: &reqwest::Client, url: &str) -> Value {
    let res = c
        .post(url)
        .bearer_auth(ADMIN)
        .json(&json!({"name": "cli"}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "POST {url}: {}", res.status());
    res.json().await.expect("JSON")
}
