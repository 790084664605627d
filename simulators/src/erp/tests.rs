//! The ERP simulator end to end over HTTP, as the hub's importer uses it: started in-process on
//! port 0, pulled page by page as JSON and CSV, changed and faulted through `/test/`, and
//! pushing to a receiver on port 0 that checks every `X-Omnihub-Signature`.

use super::{ErpConfig, ErpSim, PushFormat};
use crate::common::server::Running;
use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use protocol::feed::{FeedKind, FeedPage, SIGNATURE_HEADER};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a test waits for anything before failing.
const DEADLINE: Duration = Duration::from_secs(10);
const SECRET: &str = "erp-unit-secret";

type Row = Map<String, Value>;

fn config(products: u32) -> ErpConfig {
    ErpConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        seed: 11,
        products,
        stock_deltas: Some(6),
        anchor: Some(1_800_000_000),
        push_secret: SECRET.into(),
        ..ErpConfig::default()
    }
}

struct Harness {
    sim: ErpSim,
    client: reqwest::Client,
}

/// One pulled page.
struct Pulled {
    rows: Vec<Row>,
    next: String,
    has_more: bool,
}

impl Harness {
    async fn start(config: ErpConfig) -> Harness {
        let sim = ErpSim::start(config).await.expect("the simulator starts");
        let client = reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .expect("a client");
        Harness { sim, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("an answer")
    }

    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .json(&body)
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn change(&self, change: Value) -> Value {
        let (status, body) = self.post("/test/changes", change).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["applied"].clone()
    }

    async fn faults(&self, faults: Value) {
        let (status, body) = self.post("/test/faults", faults).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn state(&self) -> Value {
        self.json("/test/state").await.1
    }

    /// The cursor after the newest entry of a feed.
    async fn head(&self, feed: &str) -> String {
        let state = self.state().await;
        state["feeds"][feed]["cursor"]
            .as_str()
            .expect("a cursor")
            .to_owned()
    }

    /// One JSON page; checks the headers match the body.
    async fn page(&self, feed: &str, since: &str, limit: usize) -> Pulled {
        let response = self
            .get(&format!("/feeds/{feed}?since={since}&limit={limit}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let (next, more) = cursor_headers(&response);
        let page: FeedPage = response.json().await.expect("a feed page");
        assert_eq!(
            (page.next_cursor.as_str(), page.has_more),
            (next.as_str(), more)
        );
        assert_eq!(page.feed.as_str(), feed);
        Pulled {
            rows: page.rows,
            next,
            has_more: more,
        }
    }

    /// One CSV page, parsed into rows keyed by the header.
    async fn csv_page(&self, feed: &str, since: &str, limit: usize) -> Pulled {
        let response = self
            .client
            .get(self.url(&format!("/feeds/{feed}?since={since}&limit={limit}")))
            .header("accept", "text/csv")
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap_or("");
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let (next, has_more) = cursor_headers(&response);
        let body = response.bytes().await.expect("a body");
        Pulled {
            rows: parse_csv(FeedKind::parse(feed).expect("a feed"), &body),
            next,
            has_more,
        }
    }

    /// Every row after `since`, page by page; the cursor at the end.
    async fn pull_all(&self, feed: &str, since: &str, limit: usize) -> (Vec<Row>, String) {
        let (mut rows, mut cursor) = (Vec::new(), since.to_owned());
        for _ in 0..100_000 {
            let page = self.page(feed, &cursor, limit).await;
            assert!(page.rows.len() <= limit);
            assert!(page.has_more || page.rows.len() < limit || page.next == self.head(feed).await);
            rows.extend(page.rows);
            cursor = page.next;
            if !page.has_more {
                return (rows, cursor);
            }
        }
        panic!("paging never ended");
    }
}

fn cursor_headers(response: &reqwest::Response) -> (String, bool) {
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .expect("a text header")
            .to_owned()
    };
    let more = match header("x-has-more").as_str() {
        "true" => true,
        "false" => false,
        other => panic!("X-Has-More: {other}"),
    };
    (header("x-next-cursor"), more)
}

/// A CSV page as rows keyed by its header, which must be the feed's columns.
fn parse_csv(feed: FeedKind, body: &[u8]) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, feed.columns());
    reader
        .records()
        .map(|record| {
            let record = record.expect("a well-formed record");
            header
                .iter()
                .zip(record.iter())
                .map(|(k, v)| (k.clone(), Value::String(v.to_owned())))
                .collect()
        })
        .collect()
}

fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or("")
}

/// `(sku, price_list, currency, valid_from)`.
fn price_key(row: &Row) -> String {
    ["sku", "price_list", "currency", "valid_from"]
        .map(|c| text(row, c))
        .join("/")
}

#[tokio::test]
async fn paging_by_cursor_returns_every_row_once_and_in_order() {
    let h = Harness::start(config(40)).await;
    let state = h.state().await;
    for feed in FeedKind::ALL.map(FeedKind::as_str) {
        let (paged, cursor) = h.pull_all(feed, "", 7).await;
        let (whole, whole_cursor) = h.pull_all(feed, "", 10_000).await;
        assert_eq!(paged, whole, "{feed}: pages of 7 and one page agree");
        assert_eq!(cursor, whole_cursor);
        assert_eq!(cursor, state["feeds"][feed]["cursor"], "{feed}");
        assert_eq!(
            paged.len() as u64,
            state["feeds"][feed]["rows"].as_u64().expect("rows")
        );
        let at_end = h.page(feed, &cursor, 7).await;
        assert!(at_end.rows.is_empty() && !at_end.has_more && at_end.next == cursor);
    }
    let (products, _) = h.pull_all("products", "", 9).await;
    let skus: Vec<&str> = products.iter().map(|r| text(r, "sku")).collect();
    let mut sorted = skus.clone();
    sorted.sort();
    assert_eq!(skus, sorted, "generated variants come in SKU order");
    assert_eq!(
        skus.iter().collect::<HashSet<_>>().len(),
        skus.len(),
        "each once"
    );
    let products_seen: HashSet<&str> = products.iter().map(|r| text(r, "product")).collect();
    assert_eq!(products_seen.len(), 40);
    assert!(products.iter().all(|r| text(r, "version") == "1"));
}

#[tokio::test]
async fn csv_and_json_carry_the_same_rows() {
    let h = Harness::start(config(25)).await;
    for feed in FeedKind::ALL {
        let json = h.page(feed.as_str(), "", 10_000).await;
        let csv = h.csv_page(feed.as_str(), "", 10_000).await;
        assert_eq!(
            (json.next.as_str(), json.has_more),
            (csv.next.as_str(), csv.has_more)
        );
        assert!(!json.rows.is_empty());
        assert_eq!(json.rows, csv.rows, "{feed}");
        let response = h
            .get(&format!("/feeds/{feed}?format=csv&limit=2&since=c1"))
            .await;
        let (next, more) = cursor_headers(&response);
        assert_eq!((next.as_str(), more), ("c3", json.rows.len() > 3));
        let body = response.bytes().await.expect("a body");
        assert_eq!(
            parse_csv(feed, &body),
            json.rows[1..3],
            "{feed}: format=csv"
        );
    }
    let prices = h.page("prices", "", 10_000).await.rows;
    let lists: HashSet<&str> = prices.iter().map(|r| text(r, "price_list")).collect();
    let currencies: HashSet<&str> = prices.iter().map(|r| text(r, "currency")).collect();
    assert_eq!(lists, HashSet::from(["retail", "member"]));
    assert_eq!(currencies, HashSet::from(["EUR", "USD"]));
    assert!(prices
        .iter()
        .any(|r| !text(r, "valid_from").is_empty() && !text(r, "valid_until").is_empty()));
    let stock = h.page("stock", "", 10_000).await.rows;
    let locations: HashSet<&str> = stock.iter().map(|r| text(r, "location")).collect();
    assert_eq!(
        locations,
        HashSet::from(["online", "store-berlin", "store-hamburg"])
    );
    let deltas: Vec<&Row> = stock
        .iter()
        .filter(|r| text(r, "kind") == "delta")
        .collect();
    assert_eq!(deltas.len(), 6);
    assert!(deltas
        .iter()
        .all(|r| text(r, "movement").starts_with("MV-")));
}

#[tokio::test]
async fn bad_requests_are_refused_and_consume_no_fault() {
    let h = Harness::start(config(5)).await;
    h.faults(json!({"fail": {"status": 503, "count": 1}})).await;
    let head = h.head("products").await;
    let beyond = format!("c{}", head[1..].parse::<u64>().expect("a number") + 1);
    for (path, status, code) in [
        ("/feeds/orders", StatusCode::NOT_FOUND, "unknown_feed"),
        (
            "/feeds/products?since=bogus",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            "/feeds/products?since=c007",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            &format!("/feeds/products?since={beyond}"),
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            "/feeds/products?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/feeds/products?limit=10001",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/feeds/products?limit=ten",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/feeds/products?format=xml",
            StatusCode::BAD_REQUEST,
            "bad_format",
        ),
    ] {
        let (got, body) = h.json(path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (status, body) = h.json(&format!("/feeds/products?since={head}")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the fault was still armed: {body}"
    );
    assert_eq!(body["error"]["code"], "injected_failure");
    assert_eq!(
        h.json(&format!("/feeds/products?since={head}")).await.0,
        StatusCode::OK
    );
    // Bad changes and faults change nothing either.
    let (status, body) = h
        .post(
            "/test/changes",
            json!({"type": "set_price", "sku": "NOPE-1", "price": "1.00"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_sku"))
    );
    let (status, _) = h
        .post(
            "/test/faults",
            json!({"bad_rows": [{"kind": "invalid_barcode", "count": 1, "feed": "stock"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.head("products").await, head);
    assert_eq!(h.state().await["faults"]["bad_rows"], json!([]));
}

#[tokio::test]
async fn a_change_gets_a_higher_version_and_appears_after_the_cursor() {
    let h = Harness::start(config(20)).await;
    let before = h.state().await;
    let prices_cursor = h.head("prices").await;
    let applied = h
        .change(json!({"type": "set_price", "sku": "ERP-000001-1", "price": "99.90"}))
        .await;
    assert_eq!(applied[0]["version"], 2);
    let page = h.page("prices", &prices_cursor, 100).await;
    assert_eq!(page.rows.len(), 1);
    let row = &page.rows[0];
    assert_eq!(
        (text(row, "sku"), text(row, "price"), text(row, "version")),
        ("ERP-000001-1", "99.90", "2")
    );
    assert_eq!(page.next, h.head("prices").await);

    let products_cursor = h.head("products").await;
    let renamed = h
        .change(json!({"type": "update_product", "product": "ERP-000002", "name": "Renamed"}))
        .await;
    let changed = h.page("products", &products_cursor, 100).await.rows;
    assert_eq!(changed.len(), renamed.as_array().map_or(0, Vec::len));
    assert!(changed
        .iter()
        .all(|r| text(r, "name") == "Renamed" && text(r, "version") == "2"));

    let stock_cursor = h.head("stock").await;
    h.change(json!({"changes": [
        {"type": "set_stock", "sku": "ERP-000003-1", "location": "store-berlin", "quantity": 4},
        {"type": "stock_delta", "sku": "ERP-000003-1", "location": "store-berlin", "quantity": -3, "movement": "RCPT-1"},
    ]}))
    .await;
    let stock = h.page("stock", &stock_cursor, 100).await.rows;
    let shown: Vec<(&str, &str, &str)> = stock
        .iter()
        .map(|r| (text(r, "kind"), text(r, "quantity"), text(r, "movement")))
        .collect();
    assert_eq!(shown, [("level", "4", ""), ("delta", "-3", "RCPT-1")]);

    let promotions_cursor = h.head("promotions").await;
    h.change(json!({"type": "end_promotion", "id": "PROMO-WELCOME10"}))
        .await;
    let ended = h.page("promotions", &promotions_cursor, 10).await.rows;
    assert_eq!(
        (text(&ended[0], "active"), text(&ended[0], "version")),
        ("false", "2")
    );
    let (status, body) = h
        .post(
            "/test/changes",
            json!({"type": "end_promotion", "id": "PROMO-WELCOME10"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_ended"))
    );

    let new_key = h
        .change(json!({"type": "set_price", "sku": "ERP-000001-1", "price": "80.00", "price_list": "staff"}))
        .await;
    assert_eq!(new_key[0]["version"], 1);
    let after = h.state().await;
    let rows = |state: &Value, feed: &str| state["feeds"][feed]["rows"].as_u64().unwrap_or(0);
    assert_eq!(rows(&after, "prices"), rows(&before, "prices") + 1);
    assert_eq!(rows(&after, "products"), rows(&before, "products"));
    assert_eq!(
        rows(&after, "stock"),
        rows(&before, "stock") + 1,
        "the delta is a new row"
    );
}

#[tokio::test]
async fn the_log_is_compacted_but_deltas_are_not() {
    let h = Harness::start(config(10)).await;
    for price in ["10.00", "11.00", "12.00"] {
        h.change(json!({"type": "set_price", "sku": "ERP-000004-1", "price": price}))
            .await;
    }
    let (prices, _) = h.pull_all("prices", "", 1000).await;
    let keys: Vec<String> = prices.iter().map(price_key).collect();
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        keys.len(),
        "one row per key"
    );
    let last = prices.last().expect("rows");
    assert_eq!(
        (
            price_key(last).as_str(),
            text(last, "price"),
            text(last, "version")
        ),
        ("ERP-000004-1/retail/EUR/", "12.00", "4")
    );
    let state = h.state().await;
    assert_eq!(state["feeds"]["prices"]["compacted"], 3);
    for _ in 0..2 {
        h.change(json!({"type": "stock_delta", "sku": "ERP-000004-1", "location": "online", "quantity": 2}))
            .await;
    }
    let (stock, _) = h.pull_all("stock", "", 1000).await;
    let deltas = stock
        .iter()
        .filter(|r| text(r, "kind") == "delta" && text(r, "sku") == "ERP-000004-1")
        .count();
    assert!(deltas >= 2, "both movements stay");
    let movements: Vec<&str> = stock
        .iter()
        .map(|r| text(r, "movement"))
        .filter(|m| !m.is_empty())
        .collect();
    assert_eq!(
        movements.iter().collect::<HashSet<_>>().len(),
        movements.len()
    );
}

/// Arms `faults`, pulls a page of `feed` after `since` (as CSV when `csv`) and checks the
/// faults ran out.
async fn faulted_page(h: &Harness, faults: Value, feed: &str, since: &str, csv: bool) -> Vec<Row> {
    h.faults(faults).await;
    let rows = if csv {
        h.csv_page(feed, since, 5).await.rows
    } else {
        h.page(feed, since, 5).await.rows
    };
    assert_eq!(
        h.state().await["faults"]["bad_rows"],
        json!([]),
        "the fault ran out"
    );
    rows
}

#[tokio::test]
async fn every_kind_of_bad_row_is_served() {
    let h = Harness::start(config(10)).await;
    let clean: HashMap<&str, Vec<Row>> = pull_everything(&h).await;
    let bad =
        |kind: &str, feed: &str| json!({"bad_rows": [{"kind": kind, "count": 2, "feed": feed}]});

    let rows = faulted_page(&h, bad("missing_field", "products"), "products", "", false).await;
    assert!(!rows[0].contains_key("sku") && !rows[1].contains_key("sku"));
    assert_eq!(rows[2], clean["products"][2], "only two rows are bad");
    let rows = faulted_page(&h, bad("missing_field", "coupons"), "coupons", "", true).await;
    assert_eq!((text(&rows[0], "code"), text(&rows[1], "code")), ("", ""));

    for (kind, column, value) in [
        ("bad_currency", "currency", "EURO"),
        ("non_numeric_price", "price", "twelve"),
    ] {
        for feed in ["products", "prices"] {
            let rows = faulted_page(&h, bad(kind, feed), feed, "", false).await;
            assert_eq!(
                (text(&rows[0], column), text(&rows[1], column)),
                (value, value)
            );
            assert_eq!(rows[2], clean[feed][2]);
        }
    }

    let rows = faulted_page(
        &h,
        bad("invalid_barcode", "products"),
        "products",
        "",
        false,
    )
    .await;
    for (row, original) in rows.iter().zip(&clean["products"]).take(2) {
        let (got, was) = (text(row, "barcode"), text(original, "barcode"));
        assert!(crate::erp::catalog::ean13_valid(was) && !crate::erp::catalog::ean13_valid(got));
        assert_eq!(got[..12], was[..12]);
    }

    let rows = faulted_page(&h, bad("unknown_location", "stock"), "stock", "", true).await;
    assert_eq!(
        (text(&rows[0], "location"), text(&rows[1], "location")),
        ("store-atlantis", "store-atlantis")
    );
    assert_eq!(text(&rows[0], "sku"), text(&clean["stock"][0], "sku"));

    let cursor = h.head("stock").await;
    h.change(json!({"changes": [
        {"type": "set_stock", "sku": "ERP-000002-1", "location": "online", "quantity": 5},
        {"type": "set_stock", "sku": "ERP-000003-1", "location": "store-berlin", "quantity": 0},
    ]}))
    .await;
    let rows = faulted_page(&h, bad("negative_delta", "stock"), "stock", &cursor, false).await;
    let shown: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| ["sku", "location", "kind", "quantity"].map(|c| text(r, c)))
        .collect();
    assert_eq!(
        shown,
        [
            ["ERP-000002-1", "online", "delta", "-1005"],
            ["ERP-000003-1", "store-berlin", "delta", "-1000"]
        ]
    );
    let movements: HashSet<&str> = rows.iter().map(|r| text(r, "movement")).collect();
    assert!(movements.len() == 2 && movements.iter().all(|m| m.starts_with("BAD-")));

    let rows = faulted_page(
        &h,
        bad("unknown_sku", "promotions"),
        "promotions",
        "",
        false,
    )
    .await;
    let definition: Value = serde_json::from_str(text(&rows[0], "definition")).expect("JSON");
    assert!(definition["conditions"]
        .to_string()
        .contains("ERP-UNKNOWN-1"));
    assert_eq!(
        definition["benefit"],
        serde_json::from_str::<Value>(text(&clean["promotions"][0], "definition")).expect("JSON")
            ["benefit"]
    );

    // Malformed CSV waits for a CSV page; its lines have one cell too many.
    h.faults(bad("malformed_csv", "coupons")).await;
    assert_eq!(h.page("coupons", "", 5).await.rows, clean["coupons"][..4]);
    let response = h.get("/feeds/coupons?format=csv&limit=3").await;
    let body = response.bytes().await.expect("a body");
    let records: Vec<_> = csv::Reader::from_reader(&body[..]).records().collect();
    assert_eq!(records.len(), 3);
    for record in &records[..2] {
        let error = record.as_ref().expect_err("a malformed record");
        assert!(
            matches!(error.kind(), csv::ErrorKind::UnequalLengths { .. }),
            "{error}"
        );
    }
    let third = records[2].as_ref().expect("the third record is fine");
    assert_eq!(third.get(0), Some(text(&clean["coupons"][2], "code")));
}

/// Every feed, pulled whole before any fault.
async fn pull_everything(h: &Harness) -> HashMap<&'static str, Vec<Row>> {
    let mut all = HashMap::new();
    for feed in FeedKind::ALL {
        all.insert(feed.as_str(), h.pull_all(feed.as_str(), "", 10_000).await.0);
    }
    all
}

#[tokio::test]
async fn duplicates_and_out_of_order_versions() {
    let h = Harness::start(config(10)).await;
    let cursor = h.head("prices").await;
    for price in ["20.00", "21.00"] {
        h.change(json!({"type": "set_price", "sku": "ERP-000005-1", "price": price}))
            .await;
    }
    h.faults(json!({"duplicates": {"count": 1, "feed": "prices"}, "out_of_order": {"count": 1, "feed": "prices"}}))
        .await;
    let rows = h.page("prices", &cursor, 10).await.rows;
    let shown: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (text(r, "price"), text(r, "version")))
        .collect();
    assert_eq!(shown, [("21.00", "3"), ("21.00", "3"), ("20.00", "2")]);
    // Both ran out: the same page again is clean.
    let again: Vec<String> = h
        .page("prices", &cursor, 10)
        .await
        .rows
        .iter()
        .map(|r| text(r, "version").to_owned())
        .collect();
    assert_eq!(again, ["3"]);
    // Out of order waits for a changed entity; a duplicate limited to prices leaves products alone.
    h.faults(json!({"out_of_order": {"count": 1}, "duplicates": {"count": 1, "feed": "prices"}}))
        .await;
    let products = h.page("products", "", 4).await.rows;
    assert_eq!(products.len(), 4);
    let state = h.state().await;
    assert_eq!(
        (
            state["faults"]["out_of_order"]["remaining"].as_u64(),
            state["faults"]["duplicates"]["remaining"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let (status, _) = h
        .call(reqwest::Method::DELETE, "/test/faults", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.state().await["faults"]["out_of_order"]["remaining"], 0);
}

#[tokio::test]
async fn slow_failing_and_broken_responses() {
    let h = Harness::start(config(5)).await;
    h.faults(json!({"delay": {"ms": 300, "count": 1}})).await;
    let started = Instant::now();
    assert_eq!(h.get("/feeds/coupons").await.status(), StatusCode::OK);
    let slow = started.elapsed();
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    assert!(
        h.state().await["faults"]["delay"].is_null(),
        "one delayed request only"
    );

    h.faults(json!({"fail": {"status": 500, "count": 2}})).await;
    for _ in 0..2 {
        let (status, body) = h.json("/feeds/coupons").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("injected_failure"))
        );
    }
    assert_eq!(h.get("/feeds/coupons").await.status(), StatusCode::OK);

    h.faults(json!({"reset": {"count": 1}})).await;
    let broken = match h
        .client
        .get(h.url("/feeds/products?limit=500"))
        .send()
        .await
    {
        Ok(response) => response.bytes().await.err(),
        Err(e) => Some(e),
    };
    assert!(broken.is_some(), "the connection broke off");
    let page = h.page("products", "", 500).await;
    assert!(!page.rows.is_empty(), "the next request is whole");

    h.faults(json!({"delay": {"ms": 50}})).await;
    h.get("/feeds/coupons").await;
    h.get("/feeds/coupons").await;
    assert_eq!(
        h.state().await["faults"]["delay"]["ms"],
        50,
        "lasts until cleared"
    );
    let (status, faults) = h
        .call(reqwest::Method::DELETE, "/test/faults", Value::Null)
        .await;
    assert_eq!((status, faults["delay"].is_null()), (StatusCode::OK, true));
}

/// What the push receiver saw.
#[derive(Debug, Clone)]
struct Received {
    feed: String,
    content_type: String,
    rows: usize,
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    /// Answered 401 when the signature does not verify with this secret.
    secret: String,
    /// A feed answered 500.
    refuse: Option<String>,
}

fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let (mut t, mut signatures) = (None, Vec::new());
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    (now - t).abs() < 300 && signatures.contains(&expected)
}

async fn import(
    inbox: web::Data<Inbox>,
    request: HttpRequest,
    feed: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify(&inbox.secret, &body, signature) {
        return HttpResponse::Unauthorized().json(json!({"error": {"code": "bad_signature"}}));
    }
    if inbox.refuse.as_deref() == Some(feed.as_str()) {
        return HttpResponse::InternalServerError().json(json!({"error": {"code": "down"}}));
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let rows = if content_type.starts_with("text/csv") {
        parse_csv(FeedKind::parse(&feed).unwrap_or(FeedKind::Products), &body).len()
    } else {
        let value: Value = serde_json::from_slice(&body).unwrap_or_default();
        value["rows"].as_array().map_or(0, Vec::len)
    };
    inbox
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            feed: feed.into_inner(),
            content_type,
            rows,
        });
    HttpResponse::Ok().json(json!({"applied": rows}))
}

async fn receiver(secret: &str, refuse: Option<&str>) -> (Running, Arc<Inbox>) {
    let inbox = Arc::new(Inbox {
        secret: secret.to_owned(),
        refuse: refuse.map(str::to_owned),
        ..Inbox::default()
    });
    let data = web::Data::from(Arc::clone(&inbox));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let running = Running::start(listener, move |app: &mut web::ServiceConfig| {
        app.app_data(data.clone())
            .route("/api/v1/import/{feed}", web::post().to(import));
    })
    .expect("the receiver starts");
    (running, inbox)
}

fn received(inbox: &Inbox) -> Vec<Received> {
    inbox
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[tokio::test]
async fn pushes_are_signed_paged_and_report_the_hub_answer() {
    let h = Harness::start(config(30)).await;
    let (hub, inbox) = receiver(SECRET, Some("coupons")).await;
    let url = format!("http://{}", hub.address());
    let rows = h.state().await["feeds"]["products"]["rows"]
        .as_u64()
        .expect("rows") as usize;

    let (status, report) = h
        .post(
            "/test/push",
            json!({"feed": "products", "url": url, "page_size": 25}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["rows_pushed"].as_u64(), report["complete"].as_bool()),
        (Some(rows as u64), Some(true))
    );
    let requests = report["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), rows.div_ceil(25));
    assert!(requests
        .iter()
        .all(|r| r["status"] == 200 && r["body"]["applied"] == r["rows"]));
    let got = received(&inbox);
    assert_eq!(got.iter().map(|r| r.rows).sum::<usize>(), rows);
    assert!(got
        .iter()
        .all(|r| r.feed == "products" && r.content_type == "application/json"));
    assert_eq!(report["next_cursor"], h.head("products").await);

    // From a cursor, as CSV: only what changed.
    let cursor = h.head("stock").await;
    h.change(
        json!({"type": "stock_delta", "sku": "ERP-000001-1", "location": "online", "quantity": 3}),
    )
    .await;
    let (_, report) = h
        .post(
            "/test/push",
            json!({"feed": "stock", "url": url, "since": cursor, "format": "csv"}),
        )
        .await;
    assert_eq!(report["rows_pushed"], 1, "{report}");
    let last = received(&inbox).pop().expect("a CSV push");
    assert_eq!((last.feed.as_str(), last.rows), ("stock", 1));
    assert!(last.content_type.starts_with("text/csv"));

    // The hub's refusal is reported, and the cursor stays before the refused rows.
    let (status, report) = h
        .post("/test/push", json!({"feed": "coupons", "url": url}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (report["complete"].as_bool(), report["next_cursor"].as_str()),
        (Some(false), Some("c0"))
    );
    assert_eq!(report["requests"][0]["status"], 500);
    assert_eq!(report["requests"][0]["body"]["error"]["code"], "down");

    // A hub with another secret refuses the signature.
    let (other, _) = receiver("another-secret", None).await;
    let (_, report) = h
        .post(
            "/test/push",
            json!({"feed": "promotions", "url": format!("http://{}", other.address())}),
        )
        .await;
    assert_eq!(report["requests"][0]["status"], 401, "{report}");

    let (status, body) = h
        .post(
            "/test/push",
            json!({"feed": "prices", "url": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("hub_unreachable"))
    );
    let (status, body) = h
        .post(
            "/test/push",
            json!({"feed": "prices", "url": url, "since": "c999999"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_cursor"))
    );
}

#[tokio::test]
async fn push_to_pushes_every_feed_and_then_what_changed() {
    let (hub, inbox) = receiver(SECRET, None).await;
    let mut config = config(8);
    config.push_to = Some(format!("http://{}/", hub.address()));
    config.push_every = Duration::from_millis(100);
    config.push_format = PushFormat::Csv;
    let h = Harness::start(config).await;
    let state = h.state().await;
    let expected: usize = FeedKind::ALL
        .iter()
        .map(|f| state["feeds"][f.as_str()]["rows"].as_u64().unwrap_or(0) as usize)
        .sum();
    let total = |inbox: &Inbox| received(inbox).iter().map(|r| r.rows).sum::<usize>();
    let deadline = Instant::now() + DEADLINE;
    while total(&inbox) < expected {
        assert!(
            Instant::now() < deadline,
            "pushed {} of {expected} rows",
            total(&inbox)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.change(json!({"type": "set_price", "sku": "ERP-000001-1", "price": "1.50"}))
        .await;
    while total(&inbox) < expected + 1 {
        assert!(Instant::now() < deadline, "the change was not pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = received(&inbox).pop().expect("a push");
    assert_eq!((last.feed.as_str(), last.rows), ("prices", 1));
    assert_eq!(total(&inbox), expected + 1, "nothing is pushed twice");
}

#[tokio::test]
async fn change_every_moves_the_feeds_and_the_status_page_shows_them() {
    let mut config = config(8);
    config.change_every = Some(Duration::from_millis(20));
    let h = Harness::start(config).await;
    let deadline = Instant::now() + DEADLINE;
    while h.state().await["stats"]["changes_applied"]
        .as_u64()
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "no changes were made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = h.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("a page");
    assert!(
        page.contains("ERP simulator")
            && page.contains("promotions")
            && page.contains("Recent changes")
    );
    let (status, state) = h.json("/_sim/state").await;
    assert_eq!((status, state["seed"].as_u64()), (StatusCode::OK, Some(11)));
    let (status, feeds) = h.json("/feeds").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feeds["feeds"][0]["columns"][1], "sku");
}

#[test]
fn a_hundred_thousand_products_generate_quickly() {
    use super::{faults::ErpFaults, generate, page};
    let mut config = config(100_000);
    config.stock_deltas = None;
    let started = Instant::now();
    let store = generate(&config);
    let generated = started.elapsed();
    let started = Instant::now();
    let mut faults = ErpFaults::default();
    let (mut rows, mut bytes, mut after) = (0, 0, 0);
    loop {
        let page = page::build(
            &store,
            &mut faults,
            FeedKind::Products,
            after,
            10_000,
            false,
        );
        rows += page.rows.len();
        after = page.next;
        let more = page.has_more;
        bytes += page::feed_page_json(&page).expect("JSON").len();
        if !more {
            break;
        }
    }
    let served = started.elapsed();
    let figures = store.figures();
    let entries: usize = figures.iter().map(|f| f.rows).sum();
    println!(
        "100,000 products: {} variants, {entries} feed rows generated in {generated:?}; \
         the products feed ({rows} rows, {} MB of JSON) rendered in {served:?}",
        store.catalog.variants(),
        bytes / 1_000_000
    );
    assert_eq!(rows as u32, store.catalog.variants());
}
