//! The back office's pages and its roles against a real hub on port 0: sign-in with password and
//! TOTP (an injected clock moves the code window), the sign-in rate limit, CSRF refusals, the
//! role matrix over every admin JSON route and every page, the promotion four-eyes flow through
//! the pages' forms, audit entries with before and after, and pages that show no secrets.

mod common;

use common::pages::{csrf_in, location, page, text_of};
use common::{spawn_with, TestHub};
use hub::clock::{Clock, ManualClock};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ADMIN_TOKEN: &str = "pages-admin-token";
const PASSWORD: &str = "correct horse battery staple";
const ROLES: [&str; 6] = [
    "admin",
    "merchandiser",
    "marketer",
    "analyst",
    "approver",
    "support",
];

async fn spawn(clock: &ManualClock, tune: impl FnOnce(&mut hub::HubSettings)) -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN_TOKEN.to_string().into());
    tune(&mut s);
    spawn_with(dir, s, Arc::new(clock.clone()), true).await
}

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

/// A browser: keeps cookies, does not follow redirects (the tests look at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Creates a user with a password (admin token); answers its id.
async fn user(hub: &TestHub, email: &str, roles: &[&str]) -> String {
    let res = common::client()
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": email, "name": format!("Test {}", roles.join("+")), "roles": roles, "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

/// Issues an API token for a user.
async fn token(hub: &TestHub, id: &str) -> String {
    let body: Value = common::client()
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "tests"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["token"].as_str().expect("token").to_string()
}

/// Posts the sign-in form; answers the response.
async fn post_login(
    c: &reqwest::Client,
    hub: &TestHub,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let (_, html) = page(c, hub, "/backoffice/login").await;
    c.post(hub.url("/backoffice/login"))
        .form(&[
            ("csrf", csrf_in(&html).as_str()),
            ("email", email),
            ("password", password),
            ("next", "/backoffice"),
        ])
        .send()
        .await
        .expect("sent")
}

/// A browser signed in as `email` (no TOTP).
async fn signed_in(hub: &TestHub, email: &str) -> reqwest::Client {
    let c = browser();
    let res = post_login(&c, hub, email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{email} signs in");
    assert_eq!(location(&res), "/backoffice");
    c
}

/// Posts a form of a signed-in page with its session's CSRF token (read from `from`).
async fn post_form(
    c: &reqwest::Client,
    hub: &TestHub,
    from: &str,
    to: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (_, html) = page(c, hub, from).await;
    let csrf = csrf_in(&html);
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    c.post(hub.url(to)).form(&form).send().await.expect("sent")
}

fn totp_code(secret: &str, at: time::OffsetDateTime) -> String {
    let key = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .expect("base32 secret");
    let code = hub::backoffice::totp::code(&key, hub::backoffice::totp::step_at(at)).expect("code");
    format!("{code:06}")
}

#[actix_web::test]
async fn sign_in_with_a_password_then_with_a_totp_code() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    user(&hub, "ana@example.com", &["marketer"]).await;

    // Not signed in: a page sends the browser to the sign-in page and back afterwards.
    let c = browser();
    let res = c
        .get(hub.url("/backoffice/analytics?days=7"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&res),
        "/backoffice/login?next=%2Fbackoffice%2Fanalytics%3Fdays%3D7"
    );

    // A wrong password is refused; the right one signs in with an HttpOnly, Strict cookie.
    let res = post_login(&c, &hub, "ana@example.com", "not the password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = post_login(&c, &hub, "ANA@example.com ", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("omnihub_bo_session="))
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (status, html) = page(&c, &hub, "/backoffice").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Test marketer"));

    // Enrol TOTP: a secret to scan, confirmed by a code from the app.
    let res = post_form(&c, &hub, "/backoffice/me", "/backoffice/me/totp", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, me) = page(&c, &hub, "/backoffice/me").await;
    assert!(me.contains(r#"id="totp-qr"><svg"#), "a QR code");
    let secret = text_of(&me, "totp-secret");
    let wrong = post_form(
        &c,
        &hub,
        "/backoffice/me",
        "/backoffice/me/totp/confirm",
        &[("code", "000000")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    let (_, me) = page(&c, &hub, "/backoffice/me").await;
    assert!(me.contains("did not match"), "a wrong code is refused");
    let now = clock.now();
    let res = post_form(
        &c,
        &hub,
        "/backoffice/me",
        "/backoffice/me/totp/confirm",
        &[("code", &totp_code(&secret, now))],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, me) = page(&c, &hub, "/backoffice/me").await;
    assert!(me.contains("Two-step sign-in is on"), "{me}");

    // Sign out: the session stops working.
    let res = post_form(&c, &hub, "/backoffice", "/backoffice/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (status, _) = page(&c, &hub, "/backoffice").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Now the password alone is not enough: the code step follows.
    let res = post_login(&c, &hub, "ana@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/backoffice/login/code"));
    let (status, _) = page(&c, &hub, "/backoffice").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "not signed in before the code"
    );
    let code_page = |c: reqwest::Client, code: String| {
        let hub = &hub;
        async move {
            let (_, html) = page(&c, hub, "/backoffice/login/code").await;
            c.post(hub.url("/backoffice/login/code"))
                .form(&[
                    ("csrf", csrf_in(&html)),
                    ("code", code),
                    ("next", "/backoffice".into()),
                ])
                .send()
                .await
                .expect("sent")
        }
    };
    // The code just used to enrol is never accepted again; one from two steps ago is too old.
    let replay = code_page(c.clone(), totp_code(&secret, now)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    clock.advance(Duration::from_secs(90));
    let old = code_page(c.clone(), totp_code(&secret, now)).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    // The current code (or one a step either side) signs in.
    let ok = code_page(
        c.clone(),
        totp_code(&secret, clock.now() - Duration::from_secs(30)),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&ok), "/backoffice");
    let (status, _) = page(&c, &hub, "/backoffice").await;
    assert_eq!(status, StatusCode::OK);

    // Sessions end when idle too long.
    clock.advance(Duration::from_secs(31 * 60));
    let (status, _) = page(&c, &hub, "/backoffice").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "idle session expired");

    // An admin can reset a lost phone: the password alone signs in again.
    let admin_id = user(&hub, "root@example.com", &["admin"]).await;
    let admin = signed_in(&hub, "root@example.com").await;
    let users: Value = common::client()
        .get(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let ana = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "ana@example.com")
        .expect("ana");
    assert_eq!(ana["totp"], true);
    let ana_id = ana["id"].as_str().expect("id");
    assert_ne!(ana_id, admin_id);
    let res = post_form(
        &admin,
        &hub,
        &format!("/backoffice/users/{ana_id}"),
        &format!("/backoffice/users/{ana_id}/totp-reset"),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    signed_in(&hub, "ana@example.com").await;
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn sign_in_is_limited_per_account_and_per_address_without_revealing_emails() {
    let clock = clock();
    let hub = spawn(&clock, |s| {
        s.backoffice.sign_in_failures_per_account = 3;
        s.backoffice.sign_in_failures_per_address = 6;
    })
    .await;
    user(&hub, "known@example.com", &["analyst"]).await;
    user(&hub, "other@example.com", &["analyst"]).await;
    let c = browser();
    for email in ["known@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            let res = post_login(&c, &hub, email, "wrong password!").await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{email}");
        }
        // Locked, even with the right password; a known and an unknown email look the same.
        let res = post_login(&c, &hub, email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        let wait: u64 = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=15 * 60).contains(&wait), "{wait}");
        assert!(res
            .text()
            .await
            .expect("html")
            .contains("Too many failed sign-ins"));
    }
    // Six failures from this address: a third account is refused from here too.
    let res = post_login(&c, &hub, "other@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Once the window has passed, the right password works again.
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let res = post_login(&c, &hub, "known@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn forms_and_cookie_calls_without_the_csrf_token_are_refused() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    user(&hub, "mia@example.com", &["merchandiser"]).await;
    // The sign-in form without its token, or with another one.
    let c = browser();
    page(&c, &hub, "/backoffice/login").await;
    for csrf in ["", "forged-token-forged-token-forged-token"] {
        let res = c
            .post(hub.url("/backoffice/login"))
            .form(&[
                ("csrf", csrf),
                ("email", "mia@example.com"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{csrf:?}");
    }
    // A signed-in form without the session's token, or from a foreign origin.
    let c = signed_in(&hub, "mia@example.com").await;
    let res = c
        .post(hub.url("/backoffice/promotions"))
        .form(&[("csrf", "nope"), ("id", "X"), ("name", "X"), ("spec", "{}")])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (_, html) = page(&c, &hub, "/backoffice/promotions/new").await;
    let csrf = csrf_in(&html);
    let res = c
        .post(hub.url("/backoffice/logout"))
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A cookie-borne API call that changes something needs X-CSRF-Token; reads do not.
    let draft = json!({"id": "API-DRAFT", "name": "By cookie", "spec": {
        "benefit": {"type": "percent_off", "target": {"type": "categories", "categories": ["coffee"]}, "percent_bp": 500},
        "combination": {"type": "stackable", "group": "coffee"}, "priority": 1,
    }});
    let res = c
        .post(hub.url("/api/v1/backoffice/promotions"))
        .json(&draft)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "csrf_token_required");
    let res = c
        .post(hub.url("/api/v1/backoffice/promotions"))
        .header("x-csrf-token", &csrf)
        .json(&draft)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = c
        .get(hub.url("/api/v1/backoffice/me"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    hub.server.stop(true).await;
}

/// A route, its method and body, and the roles it serves (the admin token serves every
/// `/api/v1/admin` route).
struct Case {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    roles: &'static [&'static str],
}

fn api_cases() -> Vec<Case> {
    let c = |method, path, body, roles| Case {
        method,
        path,
        body,
        roles,
    };
    const ORDERS: &[&str] = &["support", "admin"];
    const STOCK: &[&str] = &["merchandiser", "admin"];
    const ANALYTICS: &[&str] = &["analyst", "marketer", "admin"];
    const EDGE: &[&str] = &["admin"];
    const BOARDS: &[&str] = &["merchandiser", "marketer", "admin"];
    vec![
        c("GET", "/api/v1/admin/orders", None, ORDERS),
        c("GET", "/api/v1/admin/orders/W-999999", None, ORDERS),
        c(
            "POST",
            "/api/v1/admin/orders/W-999999/refunds",
            Some(json!({})),
            ORDERS,
        ),
        c(
            "POST",
            "/api/v1/admin/orders/W-999999/cancel",
            Some(json!({})),
            ORDERS,
        ),
        c("GET", "/api/v1/admin/stock/BEANS", None, STOCK),
        c(
            "PUT",
            "/api/v1/admin/stock/NO-SUCH-SKU",
            Some(json!({"on_hand": 1})),
            STOCK,
        ),
        c("GET", "/api/v1/admin/import/runs", None, STOCK),
        c("GET", "/api/v1/admin/import/cursors", None, STOCK),
        c("GET", "/api/v1/admin/analytics/funnel", None, ANALYTICS),
        c(
            "GET",
            "/api/v1/admin/analytics/revenue.csv",
            None,
            ANALYTICS,
        ),
        c(
            "GET",
            "/api/v1/admin/events/export",
            None,
            &["analyst", "admin"],
        ),
        c(
            "GET",
            "/api/v1/admin/customers/01ARZ3NDEKTSV4RRFFQ69G5FAV/profile",
            None,
            &["support", "marketer", "admin"],
        ),
        c(
            "GET",
            "/api/v1/admin/automation/messages",
            None,
            &["marketer", "admin"],
        ),
        c(
            "POST",
            "/api/v1/admin/automation/run",
            None,
            &["marketer", "admin"],
        ),
        c("GET", "/api/v1/admin/boards/playlists", None, BOARDS),
        c("GET", "/api/v1/admin/experiments", None, ANALYTICS),
        c(
            "POST",
            "/api/v1/admin/experiments/no-such/start",
            None,
            &["marketer", "admin"],
        ),
        c("GET", "/api/v1/admin/slots", None, MARKETING_READERS),
        c(
            "GET",
            "/api/v1/admin/boards/audience/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            None,
            BOARDS,
        ),
        c("GET", "/api/v1/admin/edge/nodes", None, EDGE),
        c("GET", "/api/v1/admin/edge/nodes/no-such-node", None, EDGE),
        c(
            "POST",
            "/api/v1/admin/edge/nodes/no-such-node/retire",
            None,
            EDGE,
        ),
        c("GET", "/api/v1/admin/edge/sales", None, EDGE),
        c("GET", "/api/v1/admin/edge/coupons", None, EDGE),
        c("GET", "/api/v1/admin/edge/refunds", None, EDGE),
        c("GET", "/api/v1/admin/users", None, EDGE),
        c("GET", "/api/v1/backoffice/audit", None, EDGE),
    ]
}

/// Business routes a user token reaches (not the admin token: they name a person).
fn user_cases() -> Vec<Case> {
    vec![
        Case {
            method: "GET",
            path: "/api/v1/backoffice/promotions",
            body: None,
            roles: &ROLES,
        },
        Case {
            method: "POST",
            path: "/api/v1/backoffice/promotions",
            body: Some(json!({"id": "", "name": "", "spec": {}})),
            roles: &["merchandiser", "marketer"],
        },
        Case {
            method: "POST",
            path: "/api/v1/backoffice/promotions/NO-SUCH/approve",
            body: None,
            roles: &["approver"],
        },
    ]
}

fn page_cases() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("/backoffice", &ROLES),
        ("/backoffice/me", &ROLES),
        ("/backoffice/orders", &["support", "admin"]),
        ("/backoffice/customers", &["support", "marketer", "admin"]),
        ("/backoffice/catalog", &["merchandiser", "admin"]),
        (
            "/backoffice/promotions",
            &["merchandiser", "marketer", "approver", "admin"],
        ),
        ("/backoffice/promotions/new", &["merchandiser", "marketer"]),
        ("/backoffice/imports", &["merchandiser", "admin"]),
        ("/backoffice/analytics", &["analyst", "marketer", "admin"]),
        ("/backoffice/users", &["admin"]),
        ("/backoffice/audit", &["admin"]),
        ("/backoffice/segments", MARKETING_READERS),
        ("/backoffice/segments/new", &["marketer", "admin"]),
        ("/backoffice/slots", MARKETING_READERS),
        ("/backoffice/slots/home_hero", MARKETING_READERS),
        ("/backoffice/experiments", MARKETING_READERS),
        ("/backoffice/experiments/new", &["marketer", "admin"]),
        (
            "/backoffice/playlists",
            &["merchandiser", "marketer", "admin"],
        ),
        (
            "/backoffice/playlists/all",
            &["merchandiser", "marketer", "admin"],
        ),
        ("/backoffice/preview", MARKETING_READERS),
    ]
}

/// Who reads segments, slots, experiments and their reports in the back office.
const MARKETING_READERS: &[&str] = &["marketer", "analyst", "admin"];

async fn call(c: &reqwest::Client, hub: &TestHub, case: &Case, bearer: Option<&str>) -> StatusCode {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
    let mut req = c.request(method, hub.url(case.path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = &case.body {
        req = req.json(body);
    }
    req.send().await.expect("sent").status()
}

fn allowed(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && status != StatusCode::UNAUTHORIZED
            && status != StatusCode::FORBIDDEN)
}

#[actix_web::test]
async fn every_route_serves_its_roles_and_only_them() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    let c = common::client();
    let mut tokens = Vec::new();
    let mut browsers = Vec::new();
    for role in ROLES {
        let email = format!("{role}@example.com");
        let id = user(&hub, &email, &[role]).await;
        tokens.push((role, token(&hub, &id).await));
        browsers.push((role, signed_in(&hub, &email).await));
    }
    for case in api_cases() {
        assert_eq!(
            call(&c, &hub, &case, None).await,
            StatusCode::UNAUTHORIZED,
            "{} {} without credentials",
            case.method,
            case.path
        );
        let status = call(&c, &hub, &case, Some(ADMIN_TOKEN)).await;
        assert!(
            allowed(status),
            "{} {} with the admin token: {status}",
            case.method,
            case.path
        );
    }
    for case in api_cases().iter().chain(user_cases().iter()) {
        for (role, token) in &tokens {
            let status = call(&c, &hub, case, Some(token)).await;
            if case.roles.contains(role) {
                assert!(
                    allowed(status),
                    "{} {} as {role}: {status}",
                    case.method,
                    case.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {} as {role}",
                    case.method,
                    case.path
                );
            }
        }
    }
    // The same policies reach a signed-in session (reads need no CSRF header).
    for case in api_cases().iter().filter(|c| c.method == "GET") {
        for (role, browser) in &browsers {
            let status = call(browser, &hub, case, None).await;
            if case.roles.contains(role) {
                assert!(
                    allowed(status),
                    "{} as {role} by session: {status}",
                    case.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} as {role} by session",
                    case.path
                );
            }
        }
    }
    let anonymous = browser();
    for (path, roles) in page_cases() {
        let res = anonymous.get(hub.url(path)).send().await.expect("sent");
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{path} without a session"
        );
        assert!(location(&res).starts_with("/backoffice/login"), "{path}");
        for (role, browser) in &browsers {
            let (status, html) = page(browser, &hub, path).await;
            if roles.contains(role) {
                assert_eq!(status, StatusCode::OK, "{path} as {role}: {html}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{path} as {role}");
            }
        }
    }
    // The navigation shows what a role may open.
    let (_, html) = page(&browsers[3].1, &hub, "/backoffice").await;
    assert!(
        html.contains(r#"href="/backoffice/analytics""#)
            && !html.contains(r#"href="/backoffice/users""#)
    );
    hub.server.stop(true).await;
}

const OPS_TOKEN: &str = "pages-ops-token";

/// The ops page's CSRF token (its `ops-csrf` meta).
fn ops_csrf_in(html: &str) -> String {
    let marker = r#"name="ops-csrf" content=""#;
    let start = html.find(marker).expect("the ops-csrf meta") + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("a value")
        .to_string()
}

#[actix_web::test]
async fn the_ops_routes_take_an_admin_session_and_refuse_every_other_role() {
    let clock = clock();
    let hub = spawn(&clock, |s| s.ops_token = Some(OPS_TOKEN.to_string().into())).await;
    let mut browsers = Vec::new();
    for role in ROLES {
        let email = format!("{role}@example.com");
        user(&hub, &email, &[role]).await;
        browsers.push((role, signed_in(&hub, &email).await));
    }
    let reads = ["/ops/snapshot", "/ops/stats", "/ops/outbox", "/metrics"];
    // No credentials: 401 for the API, the sign-in form for the page.
    let anonymous = browser();
    for path in reads {
        let res = anonymous.get(hub.url(path)).send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path} anonymous");
    }
    let res = anonymous.get(hub.url("/ops")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/ops/login");
    // The ops token keeps working.
    for path in reads {
        let res = common::client()
            .get(hub.url(path))
            .bearer_auth(OPS_TOKEN)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK, "{path} with the ops token");
    }
    let retry = hub.url("/ops/outbox/archive/dead/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry");
    let admin_page = page(&browsers[0].1, &hub, "/ops").await.1;
    let admin_csrf = ops_csrf_in(&admin_page);
    for (role, b) in &browsers {
        let (status, html) = page(b, &hub, "/ops").await;
        for path in reads {
            let res = b.get(hub.url(path)).send().await.expect("sent");
            if *role == "admin" {
                assert_eq!(res.status(), StatusCode::OK, "{path} as admin by session");
            } else {
                assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} as {role}");
                let body: Value = res.json().await.expect("json");
                assert_eq!(body["error"]["code"], "role_required", "{path} as {role}");
            }
        }
        // A change with the session's CSRF token: an admin reaches the handler (no such dead
        // letter: 404), every other role is refused.
        let res = b
            .post(&retry)
            .header("X-Ops-Csrf", &admin_csrf)
            .send()
            .await
            .expect("sent");
        if *role == "admin" {
            assert_eq!(status, StatusCode::OK, "/ops as admin");
            assert!(
                html.contains("admin@example.com"),
                "the page names its user"
            );
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "retry as admin");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "/ops as {role}");
            assert!(!html.contains("sec-integrations"), "/ops as {role}");
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "retry as {role}");
        }
    }
    // The admin's session, like the back office: a change needs the session's CSRF token (in
    // X-Ops-Csrf or X-CSRF-Token), and never from another site.
    let admin = &browsers[0].1;
    let res = admin.post(&retry).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "csrf_token_required");
    let res = admin
        .post(&retry)
        .header("X-Ops-Csrf", "0".repeat(admin_csrf.len()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = admin
        .post(&retry)
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = admin
        .post(&retry)
        .header("X-Ops-Csrf", &admin_csrf)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // The navigation offers Operations to admins only.
    for (role, b) in &browsers {
        let (_, html) = page(b, &hub, "/backoffice").await;
        assert_eq!(
            html.contains(r#"href="/ops""#),
            *role == "admin",
            "the Operations entry as {role}"
        );
    }
    // Signed out of the back office, the admin's browser is out of the ops routes too.
    let res = post_form(admin, &hub, "/backoffice", "/backoffice/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = admin
        .get(hub.url("/ops/snapshot"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn a_merchandiser_drafts_and_an_approver_approves_through_the_pages() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    user(&hub, "mia@example.com", &["merchandiser"]).await;
    user(&hub, "ada@example.com", &["approver"]).await;
    user(&hub, "both@example.com", &["approver", "merchandiser"]).await;
    user(&hub, "root@example.com", &["admin"]).await;
    let mia = signed_in(&hub, "mia@example.com").await;
    let spec = r#"{"benefit": {"type": "percent_off", "target": {"type": "categories", "categories": ["coffee"]}, "percent_bp": 1000}, "combination": {"type": "stackable", "group": "coffee"}, "priority": 10}"#;
    // A spec that is not JSON comes back with the form and what to fix.
    let res = post_form(
        &mia,
        &hub,
        "/backoffice/promotions/new",
        "/backoffice/promotions",
        &[
            ("id", "COFFEE10"),
            ("name", "Coffee ten"),
            ("spec", "{not json"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res
        .text()
        .await
        .expect("html")
        .contains("spec: not valid JSON"));
    let res = post_form(
        &mia,
        &hub,
        "/backoffice/promotions/new",
        "/backoffice/promotions",
        &[("id", "COFFEE10"), ("name", "Coffee ten"), ("spec", spec)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/backoffice/promotions/COFFEE10");
    // The merchandiser may not approve; an approver who edited it may not either.
    let res = post_form(
        &mia,
        &hub,
        "/backoffice/promotions/COFFEE10",
        "/backoffice/promotions/COFFEE10/approve",
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let both = signed_in(&hub, "both@example.com").await;
    let res = post_form(
        &both,
        &hub,
        "/backoffice/promotions/COFFEE10",
        "/backoffice/promotions/COFFEE10",
        &[
            ("id", "COFFEE10"),
            ("name", "Coffee: ten percent"),
            ("spec", spec),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&both, &hub, "/backoffice/promotions/COFFEE10").await;
    assert!(
        html.contains(r#"id="own-draft""#),
        "no approve button for an editor"
    );
    let res = post_form(
        &both,
        &hub,
        "/backoffice/promotions/COFFEE10",
        "/backoffice/promotions/COFFEE10/approve",
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&both, &hub, "/backoffice/promotions/COFFEE10").await;
    assert_eq!(text_of(&html, "promotion-status"), "draft");
    // The approver who did not touch it approves: it is live at once.
    let ada = signed_in(&hub, "ada@example.com").await;
    let (_, html) = page(&ada, &hub, "/backoffice/promotions/COFFEE10").await;
    assert!(html.contains(r#"id="approve""#));
    let res = post_form(
        &ada,
        &hub,
        "/backoffice/promotions/COFFEE10",
        "/backoffice/promotions/COFFEE10/approve",
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&ada, &hub, "/backoffice/promotions/COFFEE10").await;
    assert_eq!(text_of(&html, "promotion-status"), "active");
    // The audit list has each step with who, before and after, and the page filters it.
    let audit: Value = common::client()
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let entries: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["subject"] == "promotion/COFFEE10")
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["promotion.create", "promotion.edit", "promotion.approve"]
    );
    let approve = entries[2];
    assert_eq!(approve["who_email"], "ada@example.com");
    let before: Value =
        serde_json::from_str(approve["before"].as_str().expect("before")).expect("json");
    let after: Value =
        serde_json::from_str(approve["after"].as_str().expect("after")).expect("json");
    assert!(before["approved"].is_null());
    assert!(after["approved"]["by"].is_string() && after["approved"]["at"].is_string());
    let root = signed_in(&hub, "root@example.com").await;
    let (status, html) = page(
        &root,
        &hub,
        "/backoffice/audit?entity=promotion%2FCOFFEE10&who=ada%40",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("promotion.approve") && !html.contains("promotion.create"),
        "filtered by user"
    );
    assert!(
        html.contains(r#"<span class="field-name">approved</span>: <del>null</del>"#),
        "the diff names the approval"
    );
    let (_, html) = page(&root, &hub, "/backoffice/audit?who=mia%40example.com").await;
    assert!(html.contains("promotion.create") && html.contains("session.sign_in"));
    // The end button ends it.
    let res = post_form(
        &ada,
        &hub,
        "/backoffice/promotions/COFFEE10",
        "/backoffice/promotions/COFFEE10/end",
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&ada, &hub, "/backoffice/promotions/COFFEE10").await;
    assert_eq!(text_of(&html, "promotion-status"), "ended");
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn stock_counts_and_playlists_are_audited_and_analytics_draw_charts() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    user(&hub, "mia@example.com", &["merchandiser", "analyst"]).await;
    let mia = signed_in(&hub, "mia@example.com").await;
    let (_, html) = page(&mia, &hub, "/backoffice/catalog?q=BEANS").await;
    assert!(
        html.contains("come from the ERP"),
        "what the ERP owns is said"
    );
    let res = post_form(
        &mia,
        &hub,
        "/backoffice/catalog?q=BEANS",
        "/backoffice/catalog/stock",
        &[("sku", "BEANS"), ("on_hand", "42")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let level: Value = common::client()
        .get(hub.url("/api/v1/admin/stock/BEANS"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(level["on_hand"], 42);
    let audit: Value = common::client()
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let count = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "stock.count")
        .expect("the count is audited");
    assert_eq!(count["who_email"], "mia@example.com");
    assert!(count["before"]
        .as_str()
        .expect("before")
        .contains("\"on_hand\":100"));
    assert!(count["after"]
        .as_str()
        .expect("after")
        .contains("\"on_hand\":42"));
    // A marketer's playlist, published through the API with a user token, is audited too.
    let marketer = user(&hub, "mara@example.com", &["marketer"]).await;
    let res = common::client()
        .put(hub.url("/api/v1/admin/boards/playlists/all"))
        .bearer_auth(token(&hub, &marketer).await)
        .json(&json!({"playlist": {"items": [{"id": "hello", "title": "Hello"}], "dwell_secs": 6}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let audit: Value = common::client()
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let published = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "board.playlist.publish")
        .expect("the publication is audited");
    assert_eq!(published["who_email"], "mara@example.com");
    assert_eq!(published["subject"], "playlist/all");
    assert!(published["after"]
        .as_str()
        .expect("after")
        .contains("Hello"));
    let (status, html) = page(&mia, &hub, "/backoffice/analytics?days=7").await;
    assert_eq!(status, StatusCode::OK);
    for chart in ["funnel-chart", "revenue-chart", "products-chart"] {
        assert!(
            html.contains(&format!(r#"id="{chart}"><svg class="chart""#)),
            "{chart}"
        );
    }
    hub.server.stop(true).await;
}

#[actix_web::test]
async fn pages_show_no_secrets() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    let root_id = user(
        &hub,
        "root@example.com",
        &[
            "admin",
            "support",
            "merchandiser",
            "analyst",
            "marketer",
            "approver",
        ],
    )
    .await;
    let api_token = token(&hub, &root_id).await;
    let root = signed_in(&hub, "root@example.com").await;
    let session = root.get(hub.url("/backoffice")).send().await.expect("sent");
    assert_eq!(session.status(), StatusCode::OK);
    let mut paths = page_cases()
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect::<Vec<_>>();
    paths.push(format!("/backoffice/users/{root_id}"));
    for path in paths {
        let (status, html) = page(&root, &hub, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        for secret in [
            "$argon2",
            &api_token,
            ADMIN_TOKEN,
            PASSWORD,
            "password_hash",
            "lookup_key",
            "4242 4242",
        ] {
            assert!(!html.contains(secret), "{path} shows {secret}");
        }
    }
    hub.server.stop(true).await;
}

/// An order for `customer`, stored as checkout stores one (no payment provider in this suite).
async fn stored_order(hub: &TestHub, customer: &str, email: &str) -> String {
    let eur = |minor: i64| json!({"minor": minor, "currency": "EUR"});
    let id = protocol::OrderId::new();
    let number = format!("W-{}", &id.to_string()[20..]);
    let order: protocol::order::OrderRecord = serde_json::from_value(json!({
        "id": id,
        "number": number,
        "checkout": protocol::CheckoutId::new(),
        "basket": protocol::BasketId::new(),
        "customer": customer,
        "subject": protocol::Subject::Customer(customer.parse().expect("a customer id")),
        "email": email,
        "channel": "web",
        "address": {"name": "Ada Lovelace", "line1": "Street 1", "line2": "", "city": "Berlin", "region": "",
                    "postcode": "10115", "country": "DE", "phone": ""},
        "breakdown": {
            "currency": "EUR", "country": "DE", "prices_include_tax": true, "item_count": 1,
            "lines": [], "subtotal": eur(1299), "discount": eur(0),
            "shipping": {"id": "standard", "name": "Standard", "price": eur(0), "delivery": "2 days"},
            "taxes": [], "tax_total": eur(0), "total": eur(1299), "weight_grams": 0,
        },
        "payment": {"provider": "sim", "session_id": "cs_secretish", "payment_intent": null, "amount": eur(1299), "refunds": []},
        "progress": "paid",
        "lookup_key": "the-lookup-key-of-this-order",
        "created_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("time"),
        "stock_committed": true,
    }))
    .expect("an order record");
    use hub::storage::UnitOfWork;
    hub.handle
        .storage
        .commit(UnitOfWork::new().with(hub::storage::Change::CreateOrder(order)))
        .await
        .expect("order stored");
    number
}

#[actix_web::test]
async fn support_finds_an_order_and_its_customer_and_a_merchandiser_reads_an_import_report() {
    let clock = clock();
    let hub = spawn(&clock, |_| {}).await;
    let customer = hub.register(&common::client(), "shopper@example.com").await;
    let customer_id = customer["customer"]["id"]
        .as_str()
        .expect("customer id")
        .to_string();
    let number = stored_order(&hub, &customer_id, "shopper@example.com").await;
    user(&hub, "sam@example.com", &["support"]).await;
    let sam = signed_in(&hub, "sam@example.com").await;
    for search in [number.as_str(), "shopper@example.com"] {
        let (status, html) = page(
            &sam,
            &hub,
            &format!("/backoffice/orders?q={}", search.replace('@', "%40")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(&format!(r#"href="/backoffice/orders/{number}""#)),
            "found by {search}"
        );
    }
    let (status, html) = page(&sam, &hub, &format!("/backoffice/orders/{number}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="refund-form""#) && html.contains(r#"id="cancel-form""#));
    assert!(html.contains("EUR 12.99") && html.contains("Ada Lovelace"));
    assert!(
        !html.contains("the-lookup-key-of-this-order"),
        "the guest lookup key stays hidden"
    );
    // A refund amount that is not money is refused before the provider is asked.
    let res = post_form(
        &sam,
        &hub,
        &format!("/backoffice/orders/{number}"),
        &format!("/backoffice/orders/{number}/refund"),
        &[("amount", "lots"), ("reason", "x")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&sam, &hub, &format!("/backoffice/orders/{number}")).await;
    assert!(html.contains("The amount must be more than zero"));
    // The customer: found by email, profile with orders and timeline; no export offered.
    let res = sam
        .get(hub.url("/backoffice/customers?q=Shopper%40example.com"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&res),
        format!("/backoffice/customers/{customer_id}")
    );
    let (status, html) = page(&sam, &hub, &format!("/backoffice/customers/{customer_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("shopper@example.com") && html.contains(&number));
    assert!(
        !html.contains(".csv") && !html.contains("/data"),
        "no export from the profile page"
    );
    let (_, html) = page(&sam, &hub, "/backoffice/customers?q=nobody%40example.com").await;
    assert!(html.contains(r#"id="no-customer""#));

    // An ERP push with a bad row: its run report lists the row.
    let report: Value = common::client()
        .post(hub.url("/api/v1/import/stock"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"rows": [
            {"sku": "TEA", "location": "online", "kind": "level", "quantity": "7", "version": "1"},
            {"sku": "TEA", "location": "store-atlantis", "kind": "level", "quantity": "7", "version": "1"},
        ]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let run = report["id"].as_str().expect("run id").to_string();
    user(&hub, "mia@example.com", &["merchandiser"]).await;
    let mia = signed_in(&hub, "mia@example.com").await;
    let (_, html) = page(&mia, &hub, "/backoffice/imports").await;
    assert!(html.contains(&format!("/backoffice/imports/{run}")));
    let (status, html) = page(&mia, &hub, &format!("/backoffice/imports/{run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "rejected-count"), "1");
    assert!(html.contains("store-atlantis"));
    hub.server.stop(true).await;
}
