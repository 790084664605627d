//! Returns and exchanges at the till over HTTP (issue 6, POS point 6), against a real node on
//! port 0 whose hub cannot be reached: a partial return refunds its share of the line in cash
//! and puts the units back on the shelf; repeated returns never take back more than was sold;
//! the refunds are on the Z-report; a card sale is refunded to its card payment; an exchange
//! pays for new goods with the returned ones; a refund above the limit needs a manager; a retry
//! returns once; another store's receipt needs the hub and is refused offline with a clear
//! message.

mod common;

use common::pos::*;
use common::*;
use edge_node::{EdgeHandle, EdgeNode, EdgeSettings, PosClock, StaffRole};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;

const MARA_PIN: &str = "80953172"; // manager
const BEN_PIN: &str = "123456"; // clerk

fn pos_settings(dir: &Path) -> EdgeSettings {
    let staff = vec![
        member("mara", "MARA", StaffRole::Manager, MARA_PIN),
        member("ben", "BEN", StaffRole::Clerk, BEN_PIN),
    ];
    let mut s = offline_settings(dir, &["1"], staff);
    s.pos.return_approval_over = "20.00".into();
    s
}

/// A node with the catalog, stock received, till 1 opened by ben (a clerk): its API and ben's
/// session token.
async fn start(dir: &Path) -> (EdgeHandle, Api, String) {
    let node = EdgeNode::start_with_clock(pos_settings(dir), PosClock::system())
        .await
        .expect("starts");
    let (categories, products) = catalog();
    install_catalog(&node, categories, products, false).await;
    let api = Api::new(&node);
    api.receive(&[("COF-1", 20), ("MUG-1", 10), ("TEA-1", 20)])
        .await;
    let ben = api.token("ben", BEN_PIN).await;
    api.open_till(&ben).await;
    (node, api, ben)
}

async fn take_back(api: &Api, token: &str, body: Value) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        "/api/v1/returns",
        Some(token),
        Some("1"),
        Some(body),
    )
    .await
}

async fn stock(api: &Api, sku: &str) -> (i64, i64) {
    let (status, body) = api
        .call(
            Method::GET,
            &format!("/api/v1/stock/{sku}"),
            Some(API_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["on_hand"].as_i64().expect("on hand"),
        body["node_rights"].as_i64().expect("rights"),
    )
}

/// Two mugs and a coffee for EUR 28.99, paid with EUR 40.00 cash.
async fn mug_sale(api: &Api, token: &str) -> String {
    let (status, sold) = api
        .sell(
            token,
            Some("1"),
            json!({"lines": [{"sku": "MUG-1", "quantity": 2}, {"sku": "COF-1", "quantity": 1}],
                   "payments": [{"method": "cash", "amount": "40.00"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sold}");
    assert_eq!(sold["total"], "28.99");
    sold["number"].as_str().expect("a number").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_repeated_returns_refund_cash_restock_and_never_exceed_what_was_sold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    let number = mug_sale(&api, &ben).await;
    assert!(number.starts_with("BERLIN-"), "{number}");
    assert_eq!(stock(&api, "MUG-1").await, (8, 8));

    let (status, found) = api
        .call(
            Method::GET,
            &format!("/api/v1/returns/receipts/{}", number.to_lowercase()),
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["source"], "local");
    assert_eq!(found["lines"][0]["returnable"], 2);
    assert_eq!(found["lines"][0]["unit_refund"], "12.00");

    let (status, first) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}], "reason": "a gift twice"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["total"], "12.00");
    assert_eq!(
        first["refunds"],
        json!([{"method": "cash", "amount": "12.00", "reference": null}])
    );
    assert_eq!(first["cash_refund"], "12.00");
    assert_eq!(first["clerk"], "ben");
    assert!(
        first["number"]
            .as_str()
            .is_some_and(|n| n.starts_with("BERLIN-R")),
        "{first}"
    );
    assert_eq!(
        stock(&api, "MUG-1").await,
        (9, 9),
        "back on the shelf, sellable"
    );

    // The second mug (with the first, 24.00 refunded: above the store's 20.00 without a
    // manager, so mara approves), then nothing more of that line; the coffee still may come back.
    let (status, second) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}],
               "approval": {"manager": "mara", "pin": MARA_PIN, "reason": "both mugs chipped"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["number"], first["number"]);
    let (status, refused) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(code(&refused), "over_return");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 returned already") && m.contains("at most 0 more")),
        "{refused}"
    );
    let (status, refused) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 1, "quantity": 2}]}),
    )
    .await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::CONFLICT, "over_return")
    );
    let (status, refused) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 7, "quantity": 1}, {"line": 1, "quantity": 0}]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(code(&refused), "invalid_return");
    assert_eq!(
        stock(&api, "MUG-1").await,
        (10, 10),
        "refusals changed nothing"
    );

    let (_, found) = api
        .call(
            Method::GET,
            &format!("/api/v1/returns/receipts/{number}"),
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!(
        (
            &found["lines"][0]["returned"],
            &found["lines"][0]["returnable"]
        ),
        (&json!(2), &json!(0))
    );
    assert_eq!(found["returns"].as_array().map(Vec::len), Some(2));

    // The Z-report: 40.00 in, 11.01 change, 24.00 refunded in cash.
    let (status, z) = api
        .call(
            Method::POST,
            "/api/v1/tills/1/close",
            Some(&ben),
            None,
            Some(json!({"counted": "104.99"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{z}");
    assert_eq!(
        z["refunds"],
        json!({"count": 2, "total": "24.00", "cash": "24.00"})
    );
    assert_eq!(z["expected_cash"], "104.99");
    assert_eq!(z["variance"], "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_sale_is_refunded_to_its_card_payment_and_a_retry_returns_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    let (status, sold) = api
        .sell(
            &ben,
            Some("1"),
            json!({"lines": [{"sku": "TEA-1", "quantity": 2}, {"sku": "COF-1", "quantity": 1}],
                   "payments": [{"method": "card", "amount": "3.00", "reference": "pi_test_1"},
                                {"method": "cash", "amount": "7.00"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sold}");
    assert_eq!(sold["total"], "9.99");
    let number = sold["number"].as_str().expect("number").to_string();
    let body = json!({"receipt": number, "lines": [{"line": 0, "quantity": 2}]});
    let send = || async {
        let res = api
            .client
            .post(format!("{}/api/v1/returns", api.base))
            .bearer_auth(&ben)
            .header("X-Till", "1")
            .header("Idempotency-Key", "return-tea-1")
            .json(&body)
            .send()
            .await
            .expect("answers");
        let replayed = res.headers().contains_key("idempotent-replayed");
        (
            res.status(),
            replayed,
            res.json::<Value>().await.expect("json"),
        )
    };
    let (status, replayed, first) = send().await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");
    // Tea 5.00 back: 3.00 to the card first, the rest in cash.
    assert_eq!(
        first["refunds"],
        json!([{"method": "card", "amount": "3.00", "reference": "pi_test_1"},
               {"method": "cash", "amount": "2.00", "reference": null}])
    );
    let (status, replayed, again) = send().await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(stock(&api, "TEA-1").await.0, 20, "restocked once");

    // The coffee: the card paid all it could, so cash.
    let (status, coffee) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 1, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{coffee}");
    assert_eq!(
        coffee["refunds"],
        json!([{"method": "cash", "amount": "4.99", "reference": null}])
    );
    let (_, till) = api
        .call(Method::GET, "/api/v1/tills/1", Some(&ben), None, None)
        .await;
    assert_eq!(
        till["refunds"],
        json!({"count": 2, "total": "9.99", "cash": "6.99"})
    );
    let (status, shown) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/returns/{}",
                first["number"].as_str().expect("number")
            ),
            Some(&ben),
            None,
            None,
        )
        .await;
    assert_eq!((status, &shown["id"]), (StatusCode::OK, &first["id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_pays_for_new_goods_with_the_returned_ones_in_one_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    let number = mug_sale(&api, &ben).await;
    // A mug (12.00) for a coffee (4.99): 7.01 back in cash.
    let (status, x) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}],
               "exchange": {"lines": [{"sku": "COF-1", "quantity": 1}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{x}");
    assert_eq!(
        x["refunds"],
        json!([{"method": "exchange", "amount": "4.99", "reference": null},
               {"method": "cash", "amount": "7.01", "reference": null}])
    );
    assert_eq!(x["refunded"], "7.01");
    assert_eq!(x["exchange"]["total"], "4.99");
    assert_eq!(x["exchange"]["payments"][0]["method"], "voucher");
    assert_eq!(stock(&api, "MUG-1").await.0, 9);
    assert_eq!(stock(&api, "COF-1").await.0, 18);

    // The other mug for two mugs and a coffee (28.99): 12.00 credit, 16.99 to pay, 20.00 cash.
    let (status, refused) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}],
               "exchange": {"lines": [{"sku": "MUG-1", "quantity": 2}, {"sku": "COF-1", "quantity": 1}],
                            "payments": [{"method": "cash", "amount": "10.00"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(code(&refused), "payment_short");
    let (status, x) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}],
               "exchange": {"lines": [{"sku": "MUG-1", "quantity": 2}, {"sku": "COF-1", "quantity": 1}],
                            "payments": [{"method": "cash", "amount": "20.00"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{x}");
    assert_eq!(x["refunded"], "0.00");
    assert_eq!(x["exchange"]["change_due"], "3.01");
    assert_eq!(stock(&api, "MUG-1").await.0, 8);
    let (_, till) = api
        .call(Method::GET, "/api/v1/tills/1", Some(&ben), None, None)
        .await;
    // Sales: 28.99 + 4.99 + 28.99; cash in 40 + 20, change 11.01 + 3.01, 7.01 refunded.
    assert_eq!(till["sales"]["count"], 3);
    assert_eq!(till["tenders"]["cash"], "60.00");
    assert_eq!(till["tenders"]["voucher"], "16.99");
    assert_eq!(till["change_given"], "14.02");
    assert_eq!(
        till["refunds"],
        json!({"count": 2, "total": "7.01", "cash": "7.01"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_above_the_limit_needs_a_manager_and_returns_need_a_staff_session_at_a_till() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    let number = mug_sale(&api, &ben).await;
    let both = json!({"receipt": number, "lines": [{"line": 0, "quantity": 2}]});

    let (status, refused) = api
        .call(
            Method::POST,
            "/api/v1/returns",
            Some(API_TOKEN),
            None,
            Some(both.clone()),
        )
        .await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, refused) = api
        .call(
            Method::POST,
            "/api/v1/returns",
            Some(&ben),
            None,
            Some(both.clone()),
        )
        .await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::UNPROCESSABLE_ENTITY, "till_required")
    );

    // 24.00 is above the store's 20.00: ben needs mara.
    let (status, refused) = take_back(&api, &ben, both.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(code(&refused), "manager_approval_required");
    let mut wrong = both.clone();
    wrong["approval"] = json!({"manager": "mara", "pin": "00000000", "reason": "regular customer"});
    let (status, refused) = take_back(&api, &ben, wrong).await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::FORBIDDEN, "wrong_pin")
    );
    assert_eq!(stock(&api, "MUG-1").await.0, 8, "nothing taken back");
    let mut approved = both.clone();
    approved["approval"] =
        json!({"manager": "mara", "pin": MARA_PIN, "reason": "regular customer"});
    let (status, done) = take_back(&api, &ben, approved).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["approved_by"], "mara");
    assert_eq!(done["refunded"], "24.00");

    // A manager approves their own returns.
    let number = mug_sale(&api, &ben).await;
    let mara = api.token("mara", MARA_PIN).await;
    let (status, done) = take_back(
        &api,
        &mara,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 2}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(
        (&done["approved_by"], &done["clerk"]),
        (&json!("mara"), &json!("mara"))
    );

    // Split into small returns, the receipt's refunds without a manager still count: 12.00,
    // then 12.00 more would make 24.00 without one.
    let number = mug_sale(&api, &ben).await;
    let one = json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]});
    let (status, done) = take_back(&api, &ben, one.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    let (status, refused) = take_back(&api, &ben, one.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(code(&refused), "manager_approval_required");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("before without a manager")),
        "{refused}"
    );
    let mut approved = one;
    approved["approval"] = json!({"manager": "mara", "pin": MARA_PIN, "reason": "second mug"});
    let (status, done) = take_back(&api, &ben, approved).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_receipt_needs_the_hub_and_is_refused_offline_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    for path in [
        "/api/v1/returns/receipts/HAMBURG-000007",
        "/api/v1/returns/receipts/01J00000000000000000000000",
    ] {
        let (status, refused) = api.call(Method::GET, path, Some(&ben), None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
        assert_eq!(code(&refused), "hub_unreachable");
        assert!(
            refused["error"]["message"].as_str().is_some_and(|m| m
                .contains("not sold at this store")
                && m.contains("needs the hub")),
            "{refused}"
        );
    }
    let (status, refused) = take_back(
        &api,
        &ben,
        json!({"receipt": "HAMBURG-000007", "lines": [{"line": 0, "quantity": 1}]}),
    )
    .await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::SERVICE_UNAVAILABLE, "hub_unreachable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_returns_page_finds_the_receipt_and_shows_the_cash_to_hand_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, api, ben) = start(dir.path()).await;
    let number = mug_sale(&api, &ben).await;
    let b = Browser::new(&node);
    let signed = b
        .post("/pos/sign-in", &[("staff", "ben"), ("pin", BEN_PIN)])
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    let till = b.get("/pos/till").await;
    assert!(
        till.body.contains("/pos/returns"),
        "a link to the returns screen"
    );
    let found = b.get(&format!("/pos/returns?receipt={number}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(found.body.contains("name=\"q0\""), "{}", found.body);
    let (csrf, key) = (found.field("csrf"), found.field("key"));
    let form = [
        ("csrf", csrf.as_str()),
        ("receipt", number.as_str()),
        ("key", key.as_str()),
        ("q0", "1"),
    ];
    let done = b.post("/pos/returns", &form).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("Give the customer <strong id=\"cash-refund\">€12.00</strong>"),
        "{}",
        done.body
    );
    // Sent again (a double tap): the same return, the mug counted back once.
    let again = b.post("/pos/returns", &form).await;
    assert!(again.body.contains("€12.00"), "{}", again.body);
    assert_eq!(stock(&api, "MUG-1").await.0, 9);
    let unknown = b.get("/pos/returns?receipt=HAMBURG-000001").await;
    assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(unknown.body.contains("needs the hub"), "{}", unknown.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_is_journaled_like_a_sale_and_a_rebuilt_node_replays_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, api, ben) = start(dir.path()).await;
    let number = mug_sale(&api, &ben).await;
    let (status, back) = take_back(
        &api,
        &ben,
        json!({"receipt": number, "lines": [{"line": 0, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{back}");

    let journal = dir.path().join(edge_node::JOURNAL_FILE);
    let records = edge_node::read_journal(&journal).expect("reads").records;
    let journaled: Vec<_> = records.iter().filter_map(|r| r.returned.as_ref()).collect();
    assert_eq!(journaled.len(), 1, "{records:?}");
    assert_eq!(
        journaled[0].id.to_string(),
        back["id"].as_str().expect("id")
    );
    assert_eq!(
        journaled[0].number,
        back["number"].as_str().expect("number")
    );
    assert_eq!(journaled[0].sale_number, number);

    // A rebuilt node replays it (the sale and the return, with their ids), and only once.
    let new_dir = tempfile::tempdir().expect("temp dir");
    let rebuilt = open_store(new_dir.path(), "berlin-2");
    let report = rebuilt.replay(records.clone()).expect("replays");
    assert_eq!(
        (report.replayed, report.returns_replayed),
        (1, 1),
        "{report:?}"
    );
    let kept = rebuilt
        .find_return(back["number"].as_str().expect("number"))
        .expect("reads")
        .expect("kept its number");
    assert_eq!(&kept.record, journaled[0], "the record is unchanged");
    let mug = rebuilt
        .stock_of(&sku("MUG-1"))
        .expect("reads")
        .expect("known");
    assert_eq!(mug.on_hand, -2 + 1, "sold two, one back on the shelf");
    let again = rebuilt.replay(records).expect("replays");
    assert_eq!(
        (again.replayed, again.returns_replayed),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(again.already_present, 2);
    assert_eq!(
        rebuilt.journal_records(),
        2,
        "the rebuilt node journals both"
    );
}
