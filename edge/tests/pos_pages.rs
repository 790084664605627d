//! The POS pages at `/pos` over HTTP, against a real node on port 0 (the hub is unreachable, as
//! in a store whose internet is down): sign-in with the staff list and tries left, the session
//! cookie, opening a till, a sale rung up through the forms (scan, +/−, a bad EAN-13 refused),
//! paid in cash, its receipt against the node's own figures, and the Z-report at closing.

mod common;

use common::pos::*;
use common::*;
use edge_node::{EdgeHandle, EdgeNode, EdgeSettings, StaffRole};
use protocol::Product;
use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};

const LENA_PIN: &str = "1234"; // clerk
const MAX_PIN: &str = "9876"; // manager

/// Barcodes with valid EAN-13 check digits.
const COFFEE: &str = "4000000000013";
const TEA: &str = "4000000000020";
const EVIL: &str = "4000000000037";
/// A product name that would run as script if a page did not escape it.
const EVIL_NAME: &str = "<script>alert(1)</script> Tea";

/// A product as `common::product` makes it, without a description.
fn item(sku_text: &str, name: &str, price: i64, rate: u32, barcode: &str) -> Product {
    let mut p = product(sku_text, name, price, rate, barcode);
    p.description = String::new();
    p
}

fn pos_settings(dir: &std::path::Path) -> EdgeSettings {
    let staff = vec![
        member("lena", "Lena Clerk", StaffRole::Clerk, LENA_PIN),
        member("max", "Max Manager", StaffRole::Manager, MAX_PIN),
    ];
    offline_settings(dir, &["1"], staff)
}

/// A node with coffee (EUR 4.99), tea (EUR 2.50, three for two) and stock of both.
async fn start(dir: &std::path::Path) -> EdgeHandle {
    let node = EdgeNode::start(pos_settings(dir)).await.expect("starts");
    // The one category of the shared catalog ("coffee"), with products of this test's own.
    let (categories, _) = catalog();
    let products = vec![
        item("COF-1", "House Coffee", 499, 1900, COFFEE),
        item("TEA-1", "Green Tea", 250, 700, TEA),
        item("EVIL-1", EVIL_NAME, 100, 700, EVIL),
    ];
    install_catalog(&node, categories, products, false).await;
    for s in ["COF-1", "TEA-1", "EVIL-1"] {
        node.adjust(receipt(s, 20), None)
            .await
            .expect("stock arrives");
    }
    node
}

impl Browser {
    /// Posts a form, expects a redirect, and gets where it leads.
    async fn post_then_follow(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let res = self.post(path, form).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{path}: {}", res.body);
        let next = self.get(res.location()).await;
        assert_eq!(
            next.status,
            StatusCode::OK,
            "{}: {}",
            res.location(),
            next.body
        );
        next
    }

    async fn sign_in(&self, staff: &str, pin: &str) -> Page {
        self.post("/pos/sign-in", &[("staff", staff), ("pin", pin)])
            .await
    }
}

/// One change to the sale on `page` (its cart, coupons, key and CSRF token, as its forms
/// carry them).
async fn sale_action(b: &Browser, page: &Page, action: &[(&str, &str)]) -> Page {
    let (csrf, cart, coupons) = (
        page.field("csrf"),
        page.field("cart"),
        page.field("coupons"),
    );
    let key = page.field_if_any("key");
    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("cart", cart.as_str()),
        ("coupons", coupons.as_str()),
    ];
    if let Some(key) = &key {
        form.push(("key", key.as_str()));
    }
    form.extend_from_slice(action);
    b.post("/pos/sale", &form).await
}

async fn api(node: &EdgeHandle, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", node.base_url))
        .bearer_auth(API_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("answers");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.expect("JSON")
}

#[tokio::test]
async fn sign_in_lists_the_staff_and_counts_wrong_pins_down_to_the_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let b = Browser::new(&node);

    let page = b.get("/pos").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Lena Clerk") && page.body.contains("Max Manager"));
    assert!(page.body.contains("value=\"lena\""));
    assert!(page.body.contains("data-keypad"), "an on-screen keypad");

    // Not signed in: the till sends you to sign in.
    let till = b.get("/pos/till").await;
    assert_eq!(till.status, StatusCode::SEE_OTHER);
    assert_eq!(till.location(), "/pos");

    let wrong = b.sign_in("lena", "0000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("4 tries left"), "{}", wrong.body);
    assert!(
        wrong.body.contains("value=\"lena\" required checked"),
        "keeps the name picked"
    );
    for left in ["3 tries left", "2 tries left", "1 try left"] {
        let wrong = b.sign_in("lena", "0000").await;
        assert!(wrong.body.contains(left), "{left}: {}", wrong.body);
    }
    let locked = b.sign_in("lena", "0000").await;
    assert_eq!(locked.status, StatusCode::LOCKED);
    assert!(locked.body.contains("ask a manager"), "{}", locked.body);
    // Locked for the right PIN too, and no cookie is set.
    let locked = b.sign_in("lena", LENA_PIN).await;
    assert_eq!(locked.status, StatusCode::LOCKED);
    assert!(locked.headers.get(SET_COOKIE).is_none());

    let bad = b.sign_in("max", "12").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("4 to 8 digits"));

    // A sign-in posted from another site is refused before the PIN is tried.
    let foreign = b
        .page(
            b.client
                .post(format!("{}/pos/sign-in", b.base))
                .header("Origin", "http://evil.example")
                .form(&[("staff", "max"), ("pin", MAX_PIN)]),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(foreign.headers.get(SET_COOKIE).is_none());
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn a_sale_from_scan_to_receipt_and_the_z_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let b = Browser::new(&node);

    let signed = b.sign_in("lena", LENA_PIN).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(signed.location(), "/pos/till");
    let cookie = signed
        .headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    assert!(cookie.starts_with("pos_session=st_"), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/pos"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    // The cookie is for the pages only: the JSON API still wants a bearer token.
    let session = cookie.split(';').next().expect("name=value");
    let api_with_cookie = reqwest::Client::new()
        .get(format!("{}/api/v1/sync", node.base_url))
        .header("Cookie", session)
        .send()
        .await
        .expect("answers");
    assert_eq!(api_with_cookie.status(), StatusCode::UNAUTHORIZED);

    // The store's only till is closed: open it with a float.
    let closed = b.get("/pos/till").await;
    assert_eq!(closed.status, StatusCode::OK);
    assert!(closed.body.contains("Till 1 is closed"), "{}", closed.body);
    assert!(closed.body.contains("Lena Clerk") && closed.body.contains("Berlin"));
    assert!(closed.body.contains("Offline"), "the hub is unreachable");
    let refused = b
        .post(
            "/pos/till/open",
            &[("csrf", &closed.field("csrf")), ("amount", "-5")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let open = b
        .post_then_follow(
            "/pos/till/open",
            &[("csrf", &closed.field("csrf")), ("amount", "100.00")],
        )
        .await;
    assert!(open.body.contains("data-scan"), "{}", open.body);
    assert!(open.body.contains("Scan an item to start a sale."));

    // Without the CSRF token a form changes nothing.
    let forged = b
        .post("/pos/sale", &[("action", "scan"), ("code", COFFEE)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Scan a coffee and three teas (the third is free), with + and − on the way.
    let mut page = open;
    for code in [COFFEE, TEA, TEA] {
        let res = sale_action(&b, &page, &[("action", "scan"), ("code", code)]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        page = b.get(res.location()).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    assert_eq!(page.field("cart"), "COF-1:1,TEA-1:2");
    let res = sale_action(&b, &page, &[("action", "inc"), ("index", "0")]).await;
    page = b.get(res.location()).await;
    assert_eq!(page.field("cart"), "COF-1:2,TEA-1:2");
    let res = sale_action(&b, &page, &[("action", "dec"), ("index", "0")]).await;
    page = b.get(res.location()).await;
    let res = sale_action(&b, &page, &[("action", "add"), ("code", "TEA-1")]).await;
    page = b.get(res.location()).await;
    assert_eq!(page.field("cart"), "COF-1:1,TEA-1:3");

    // A misread barcode: a clear message, and the sale is unchanged.
    let bad = sale_action(&b, &page, &[("action", "scan"), ("code", "4000000000014")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("not a valid EAN-13 barcode") && bad.body.contains("should be 3"),
        "{}",
        bad.body
    );
    assert_eq!(bad.field("cart"), "COF-1:1,TEA-1:3");
    let short = sale_action(&b, &page, &[("action", "scan"), ("code", "400000")]).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("13 digits"), "{}", short.body);

    // The page shows the node's price: the same as its quote endpoint.
    let quote = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/sales/quote",
        Some(json!({"lines": [{"sku": "COF-1", "quantity": 1}, {"sku": "TEA-1", "quantity": 3}]})),
    )
    .await;
    assert_eq!(quote["total"], "9.99", "{quote}");
    assert_eq!(quote["discount"], "2.50");
    assert!(page.body.contains("€9.99") && page.body.contains("Tea 3 for 2"));
    assert!(
        api(&node, reqwest::Method::GET, "/api/v1/sales", None).await["sales"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // Pay EUR 20.00 cash; a second tap of the same page's button rings nothing up again.
    let form = [("action", "cash"), ("amount", "20.00")];
    let paid = sale_action(&b, &page, &form).await;
    assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
    let again = sale_action(&b, &page, &form).await;
    assert_eq!(again.location(), paid.location());
    let receipt = b.get(paid.location()).await;
    assert_eq!(receipt.status, StatusCode::OK);
    let number = paid.location().trim_start_matches("/pos/receipts/");
    let sale = api(
        &node,
        reqwest::Method::GET,
        &format!("/api/v1/sales/{number}"),
        None,
    )
    .await;
    assert_eq!(sale["total"], "9.99");
    assert_eq!(sale["change_due"], "10.01");
    assert_eq!(sale["clerk"], "lena");
    assert!(receipt.body.contains(number));
    assert!(
        receipt.body.contains("data-receipt-total>€9.99<"),
        "{}",
        receipt.body
    );
    assert!(receipt.body.contains("data-change-due>€10.01<"));
    assert!(receipt.body.contains("Green Tea") && receipt.body.contains("Next sale"));

    // Close the till with EUR 110.00 counted: expected 100.00 + 20.00 − 10.01 = 109.99.
    let till = b.get("/pos/till").await;
    let report = b
        .post_then_follow(
            "/pos/till/close",
            &[("csrf", &till.field("csrf")), ("amount", "110.00")],
        )
        .await;
    assert!(report.body.contains("Z-report No. 1"), "{}", report.body);
    assert!(report.body.contains("data-z-sales>1<"));
    assert!(report.body.contains("data-z-net>€9.99<"));
    assert!(report.body.contains("data-z-expected>€109.99<"));
    assert!(report.body.contains("data-z-variance>€0.01<"));
    assert!(report.body.contains("Print Z-report"));
    let reopened = b.get("/pos/till").await;
    assert!(reopened.body.contains("Till 1 is closed"));

    // Sign out: the cookie no longer opens the till.
    let out = b
        .post("/pos/sign-out", &[("csrf", &reopened.field("csrf"))])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/pos/till").await.location(), "/pos");
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn the_assets_are_embedded_and_the_quote_refuses_what_the_sale_would() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let b = Browser::new(&node);
    let css = b.get("/pos/static/pos.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains("@media print"));
    let js = b.get("/pos/static/pos.js").await;
    assert!(js.body.contains("ean13Problem"));

    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/sales/quote", node.base_url))
        .bearer_auth(API_TOKEN)
        .json(&json!({"lines": [{"sku": "NOPE-1", "quantity": 1}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "unknown_item");

    // The status badge's source needs the session cookie.
    assert_eq!(b.get("/pos/status").await.status, StatusCode::UNAUTHORIZED);
    b.sign_in("max", MAX_PIN).await;
    let status: Value = serde_json::from_str(&b.get("/pos/status").await.body).expect("JSON");
    assert_eq!(status["online"], false);
    node.stop().await.expect("stops");
}

/// Opens the store's till with a float and returns the empty sale screen.
async fn open_till(b: &Browser) -> Page {
    let closed = b.get("/pos/till").await;
    b.post_then_follow(
        "/pos/till/open",
        &[("csrf", &closed.field("csrf")), ("amount", "50.00")],
    )
    .await
}

/// Applies one change to the sale and follows the redirect to the new sale screen.
async fn change_sale(b: &Browser, page: &Page, action: &[(&str, &str)]) -> Page {
    let res = sale_action(b, page, action).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let next = b.get(res.location()).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    next
}

async fn sales_count(node: &EdgeHandle) -> usize {
    api(node, reqwest::Method::GET, "/api/v1/sales", None).await["sales"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn back_and_pay_again_replays_the_first_receipt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let b = Browser::new(&node);
    b.sign_in("lena", LENA_PIN).await;
    let empty = open_till(&b).await;
    assert_eq!(empty.field_if_any("key"), None, "no sale, no key yet");

    // The sale's key is made with its first item and kept in the address and the forms.
    let res = sale_action(&b, &empty, &[("action", "scan"), ("code", COFFEE)]).await;
    let address = res.location().to_string();
    let page = b.get(&address).await;
    let key = page.field("key");
    assert!(address.contains(&format!("key={key}")), "{address}");
    let page = change_sale(&b, &page, &[("action", "scan"), ("code", TEA)]).await;
    assert_eq!(page.field("key"), key, "the key stays with the sale");

    let paid = sale_action(&b, &page, &[("action", "cash"), ("amount", "10.00")]).await;
    assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
    assert!(paid.location().starts_with("/pos/receipts/"));
    // Back to the sale screen (the browser loads its address again), then Cash again.
    let back = b.get(&address).await;
    assert_eq!(back.status, StatusCode::OK);
    let again = sale_action(&b, &back, &[("action", "cash"), ("amount", "10.00")]).await;
    assert_eq!(again.location(), paid.location(), "the first receipt");
    assert_eq!(sales_count(&node).await, 1, "rung up once");

    // Next sale starts a new key; so does voiding a sale.
    let next = b.get("/pos/till").await;
    let next = change_sale(&b, &next, &[("action", "scan"), ("code", COFFEE)]).await;
    let second = next.field("key");
    assert_ne!(second, key);
    let voided = change_sale(&b, &next, &[("action", "clear")]).await;
    let restarted = change_sale(&b, &voided, &[("action", "scan"), ("code", COFFEE)]).await;
    assert_ne!(restarted.field("key"), second);
    let paid2 = sale_action(&b, &restarted, &[("action", "card"), ("amount", "4.99")]).await;
    assert_ne!(paid2.location(), paid.location());
    assert_eq!(sales_count(&node).await, 2);
    // A sale in the address without a key (a recalled held sale) gets one before it shows.
    let recalled = b.get("/pos/till?cart=COF-1%3A1&coupons=").await;
    assert_eq!(recalled.status, StatusCode::SEE_OTHER);
    assert!(
        recalled.location().contains("&key="),
        "{}",
        recalled.location()
    );
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn a_manager_unlocks_a_locked_clerk_from_the_till_screen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    // Lena signs in, then someone locks her name with wrong PINs.
    let lena = Browser::new(&node);
    lena.sign_in("lena", LENA_PIN).await;
    let guesser = Browser::new(&node);
    for _ in 0..5 {
        guesser.sign_in("lena", "0000").await;
    }
    assert_eq!(
        guesser.sign_in("lena", LENA_PIN).await.status,
        StatusCode::LOCKED
    );

    // A clerk sees no unlock list and cannot unlock (not even herself).
    let till = lena.get("/pos/till").await;
    assert!(!till.body.contains("data-unlock"), "{}", till.body);
    let refused = lena
        .post("/pos/staff/lena/unlock", &[("csrf", &till.field("csrf"))])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("needs a manager"), "{}", refused.body);

    let max = Browser::new(&node);
    max.sign_in("max", MAX_PIN).await;
    let till = max.get("/pos/till").await;
    assert!(till.body.contains("data-unlock=\"lena\""), "{}", till.body);
    // Without the CSRF token nothing happens.
    let forged = max.post("/pos/staff/lena/unlock", &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        guesser.sign_in("lena", LENA_PIN).await.status,
        StatusCode::LOCKED
    );
    let done = max
        .post("/pos/staff/lena/unlock", &[("csrf", &till.field("csrf"))])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let till = max.get(done.location()).await;
    assert!(!till.body.contains("data-unlock"), "{}", till.body);
    assert_eq!(
        guesser.sign_in("lena", LENA_PIN).await.status,
        StatusCode::SEE_OTHER,
        "Lena signs in again"
    );
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn forms_refuse_another_sessions_csrf_token_and_a_foreign_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let lena = Browser::new(&node);
    lena.sign_in("lena", LENA_PIN).await;
    let page = open_till(&lena).await;
    let max = Browser::new(&node);
    max.sign_in("max", MAX_PIN).await;
    let max_page = max.get("/pos/till").await;
    assert_ne!(max_page.field("csrf"), page.field("csrf"));

    // Max's token in Lena's form: refused, the sale unchanged.
    let foreign_token = lena
        .post(
            "/pos/sale",
            &[
                ("csrf", &max_page.field("csrf")),
                ("cart", ""),
                ("coupons", ""),
                ("action", "scan"),
                ("code", COFFEE),
            ],
        )
        .await;
    assert_eq!(foreign_token.status, StatusCode::FORBIDDEN);
    // Lena's own token, posted from another site: refused.
    let csrf = page.field("csrf");
    let form = [
        ("csrf", csrf.as_str()),
        ("cart", ""),
        ("coupons", ""),
        ("action", "scan"),
        ("code", COFFEE),
    ];
    let cross_site = lena
        .page(
            lena.client
                .post(format!("{}/pos/sale", lena.base))
                .header("Origin", "http://evil.example")
                .form(&form),
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    // The same form from the till's own origin goes through.
    let origin = lena.base.trim_end_matches('/').to_string();
    let same_site = lena
        .page(
            lena.client
                .post(format!("{}/pos/sale", lena.base))
                .header("Origin", origin)
                .form(&form),
        )
        .await;
    assert_eq!(
        same_site.status,
        StatusCode::SEE_OTHER,
        "{}",
        same_site.body
    );
    assert_eq!(sales_count(&node).await, 0);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn a_product_name_with_markup_is_shown_as_text_on_the_till_and_the_receipt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path()).await;
    let b = Browser::new(&node);
    b.sign_in("lena", LENA_PIN).await;
    let page = open_till(&b).await;
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; Tea";
    let page = change_sale(&b, &page, &[("action", "scan"), ("code", EVIL)]).await;
    assert!(!page.body.contains(EVIL_NAME), "{}", page.body);
    assert!(page.body.contains(escaped), "{}", page.body);
    let found = b.get("/pos/till?q=script").await;
    assert!(!found.body.contains(EVIL_NAME) && found.body.contains(escaped));
    let paid = sale_action(&b, &page, &[("action", "cash"), ("amount", "1.00")]).await;
    assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
    let receipt = b.get(paid.location()).await;
    assert_eq!(receipt.status, StatusCode::OK);
    assert!(!receipt.body.contains(EVIL_NAME), "{}", receipt.body);
    assert!(receipt.body.contains(escaped), "{}", receipt.body);
    node.stop().await.expect("stops");
}
