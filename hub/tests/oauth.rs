//! Account linking (OAuth 2.0, the hub as authorization server) against a real hub on port 0:
//! the authorize page as a browser drives it, the token and revocation endpoints as a voice
//! platform calls them, and the access token as the voice endpoint resolves it.

mod common;

use channels::oauth::AccountLinking;
use common::{spawn_with, TestHub};
use hub::clock::ManualClock;
use hub::oauth::{OAuthClientSettings, OAuthSettings};
use protocol::CustomerId;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const CLIENT: &str = "test-voice";
const SECRET: &str = "test-voice-secret-0123";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const OTHER_CLIENT: &str = "other-app";
const OTHER_SECRET: &str = "other-app-secret-0123";
const OTHER_REDIRECT: &str = "https://other.example/cb";
const PASSWORD: &str = "correct horse battery";

/// RFC 7636 appendix B's verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn client_settings(id: &str, secret: &str, redirect: &str, name: &str) -> OAuthClientSettings {
    OAuthClientSettings {
        client_id: id.into(),
        name: name.into(),
        client_secret: secret.to_string().into(),
        redirect_uris: vec![redirect.into()],
        scopes: vec!["basket".into(), "orders".into()],
    }
}

/// A hub with two registered clients and a clock the test moves.
async fn spawn_hub() -> (TestHub, ManualClock) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = common::settings(dir.path());
    settings.oauth = OAuthSettings {
        clients: vec![
            client_settings(CLIENT, SECRET, REDIRECT, "Test Voice"),
            client_settings(OTHER_CLIENT, OTHER_SECRET, OTHER_REDIRECT, "Other App"),
        ],
        ..OAuthSettings::default()
    };
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let hub = spawn_with(dir, settings, Arc::new(clock.clone()), false).await;
    (hub, clock)
}

/// A browser: cookies kept, redirects not followed (the test reads them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote");
    html[start..start + end].to_string()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(reqwest::header::LOCATION)
        .expect("a Location")
        .to_str()
        .expect("ascii")
        .to_string()
}

fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An authorization request.
fn request<'a>(client: &'a str, redirect: &'a str, pkce: bool) -> Vec<(&'static str, &'a str)> {
    let mut r = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect),
        ("scope", "basket orders"),
        ("state", "st-123"),
    ];
    if pkce {
        r.extend([
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]);
    }
    r
}

/// Registers a shopper, signs in on the authorize page and answers the consent page's HTML
/// (the browser keeps the session).
async fn sign_in_and_consent_page(
    hub: &TestHub,
    b: &reqwest::Client,
    email: &str,
    req: &[(&str, &str)],
) -> String {
    hub.register(&common::client(), email).await;
    let res = b
        .get(hub.url("/oauth/authorize"))
        .query(req)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("html");
    assert!(page.contains("Sign in to link"), "a sign-in form first");
    let mut form = req.to_vec();
    let csrf = csrf_of(&page);
    form.extend([
        ("csrf", csrf.as_str()),
        ("email", email),
        ("password", PASSWORD),
    ]);
    let res = b
        .post(hub.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = location(&res);
    assert!(back.starts_with("/oauth/authorize?"), "{back}");
    let res = b.get(hub.url(&back)).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.expect("html")
}

/// Signs in and allows: answers the code from the redirect to the client.
async fn authorize(
    hub: &TestHub,
    b: &reqwest::Client,
    email: &str,
    req: &[(&str, &str)],
) -> String {
    let page = sign_in_and_consent_page(hub, b, email, req).await;
    let location = decide(hub, b, &page, req, "allow").await;
    assert_eq!(param(&location, "state").as_deref(), Some("st-123"));
    param(&location, "code").expect("a code")
}

/// Posts the consent form's decision; answers the redirect to the client.
async fn decide(
    hub: &TestHub,
    b: &reqwest::Client,
    page: &str,
    req: &[(&str, &str)],
    decision: &str,
) -> String {
    let csrf = csrf_of(page);
    let mut form = req.to_vec();
    form.extend([("csrf", csrf.as_str()), ("decision", decision)]);
    let res = b
        .post(hub.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FOUND);
    location(&res)
}

/// Calls the token endpoint with HTTP Basic; answers the status, headers and JSON body.
async fn token_call(
    hub: &TestHub,
    id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = common::client()
        .post(hub.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .expect("sent");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.expect("JSON body");
    (status, headers, body)
}

async fn exchange(hub: &TestHub, code: &str, verifier: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    let (status, _, body) = token_call(hub, CLIENT, SECRET, &form).await;
    (status, body)
}

async fn refresh(hub: &TestHub, refresh_token: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    let (status, _, body) = token_call(hub, CLIENT, SECRET, &form).await;
    (status, body)
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {body}"))
}

async fn customer_for(hub: &TestHub, token: &str) -> Option<CustomerId> {
    hub.handle
        .oauth
        .customer_with_scopes(token, &hub::oauth::VOICE_SCOPES)
        .await
        .expect("storage works")
}

async fn customer_id(hub: &TestHub, email: &str) -> CustomerId {
    hub.handle
        .storage
        .customer_by_email(email)
        .await
        .expect("storage works")
        .expect("registered")
        .id
}

/// Full tokens for a fresh shopper, with PKCE.
async fn linked(hub: &TestHub, email: &str) -> (reqwest::Client, Value) {
    let b = browser();
    let code = authorize(hub, &b, email, &request(CLIENT, REDIRECT, true)).await;
    let (status, body) = exchange(hub, &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (b, body)
}

#[actix_web::test]
async fn the_full_flow_links_and_the_account_page_unlinks() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let req = request(CLIENT, REDIRECT, true);
    let page = sign_in_and_consent_page(&hub, &b, "ada@example.com", &req).await;
    assert!(
        page.contains("Test Voice"),
        "the consent page names the client"
    );
    assert!(page.contains("see your basket and add to your basket"));
    assert!(page.contains("see your orders"));
    let to = decide(&hub, &b, &page, &req, "allow").await;
    assert!(to.starts_with(REDIRECT), "{to}");
    let code = param(&to, "code").expect("code");
    let (status, headers, body) = token_call(
        &hub,
        CLIENT,
        SECRET,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "basket orders");
    let access = field(&body, "access_token");
    assert_eq!(access.len(), 43, "32 random bytes, URL-safe base64");
    assert_ne!(access, field(&body, "refresh_token"));
    let ada = customer_id(&hub, "ada@example.com").await;
    assert_eq!(customer_for(&hub, access).await, Some(ada));
    assert_eq!(customer_for(&hub, "not-a-token").await, None);
    assert_eq!(
        customer_for(&hub, field(&body, "refresh_token")).await,
        None,
        "a refresh token is no access token"
    );

    // The account page lists the app; Unlink without the CSRF token is refused.
    let account = b.get(hub.url("/account")).send().await.expect("sent");
    let account = account.text().await.expect("html");
    assert!(
        account.contains("Linked apps") && account.contains("data-linked-app=\"test-voice\""),
        "{account}"
    );
    let res = b
        .post(hub.url("/account/linked-apps/unlink"))
        .form(&[("client_id", CLIENT)])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(customer_for(&hub, access).await, Some(ada));
    let csrf = csrf_of(&account);
    let res = b
        .post(hub.url("/account/linked-apps/unlink"))
        .form(&[("csrf", csrf.as_str()), ("client_id", CLIENT)])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    assert_eq!(customer_for(&hub, access).await, None, "unlinked");
    let (status, body) = refresh(&hub, field(&body, "refresh_token")).await;
    assert_eq!(
        (status, field(&body, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let account = b.get(hub.url("/account")).send().await.expect("sent");
    let account = account.text().await.expect("html");
    assert!(
        !account.contains("data-linked-app=\"test-voice\""),
        "gone from the list"
    );
}

#[actix_web::test]
async fn the_simulators_link_account_drives_the_flow() {
    let (hub, _) = spawn_hub().await;
    hub.register(&common::client(), "sim@example.com").await;
    let base = hub.url("");
    let tokens = simulators::voice::link::link_account(
        &base,
        CLIENT,
        SECRET,
        REDIRECT,
        "sim@example.com",
        PASSWORD,
    )
    .await
    .expect("linked");
    assert_eq!(tokens.token_type, "Bearer");
    let sim = customer_id(&hub, "sim@example.com").await;
    assert_eq!(customer_for(&hub, &tokens.access_token).await, Some(sim));
    let wrong = simulators::voice::link::link_account(
        &base,
        CLIENT,
        SECRET,
        REDIRECT,
        "sim@example.com",
        "wrong password",
    )
    .await;
    assert!(
        matches!(
            wrong,
            Err(simulators::voice::link::LinkError::BadCredentials)
        ),
        "{wrong:?}"
    );
    let bad_secret = simulators::voice::link::link_account(
        &base,
        CLIENT,
        "not-the-secret",
        REDIRECT,
        "sim@example.com",
        PASSWORD,
    )
    .await;
    assert!(
        matches!(&bad_secret, Err(simulators::voice::link::LinkError::Refused { error, .. }) if error == "invalid_client"),
        "{bad_secret:?}"
    );
}

#[actix_web::test]
async fn a_wrong_secret_or_unknown_client_is_401_invalid_client() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let code = authorize(
        &hub,
        &b,
        "bea@example.com",
        &request(CLIENT, REDIRECT, false),
    )
    .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    for (id, secret) in [
        (CLIENT, "wrong-secret"),
        ("nobody", SECRET),
        (OTHER_CLIENT, SECRET),
    ] {
        let (status, headers, body) = token_call(&hub, id, secret, &form).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{id}");
        assert_eq!(field(&body, "error"), "invalid_client");
        assert!(!field(&body, "error_description").is_empty());
        assert!(headers.contains_key("www-authenticate"));
        assert_eq!(headers["cache-control"], "no-store");
    }
    // No credentials at all.
    let res = common::client()
        .post(hub.url("/oauth/token"))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // client_secret_post works, and the code still does (the failures did not spend it).
    let mut post = form.to_vec();
    post.extend([("client_id", CLIENT), ("client_secret", SECRET)]);
    let res = common::client()
        .post(hub.url("/oauth/token"))
        .form(&post)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    // Another client's valid credentials do not make this client's refresh token theirs.
    let body: Value = res.json().await.expect("json");
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", field(&body, "refresh_token")),
    ];
    let (status, _, err) = token_call(&hub, OTHER_CLIENT, OTHER_SECRET, &form).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    // Bad requests say what to fix.
    let (status, _, err) = token_call(&hub, CLIENT, SECRET, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "unsupported_grant_type")
    );
    let (status, _, err) = token_call(
        &hub,
        CLIENT,
        SECRET,
        &[("grant_type", "authorization_code")],
    )
    .await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(field(&err, "error_description").contains("code"));
}

#[actix_web::test]
async fn an_unregistered_redirect_uri_or_client_never_redirects() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let cases: [&[(&str, &str)]; 4] = [
        &request(CLIENT, "http://127.0.0.1:9/oauth/callback/evil", false),
        &request(CLIENT, OTHER_REDIRECT, false),
        &request("nobody", REDIRECT, false),
        &[("response_type", "code"), ("client_id", CLIENT)],
    ];
    for req in cases {
        let res = b
            .get(hub.url("/oauth/authorize"))
            .query(req)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{req:?}");
        assert!(res.headers().get("location").is_none());
        let page = res.text().await.expect("html");
        assert!(page.contains("This app cannot be linked"), "{page}");
    }
    // A known client and redirect URI with a bad request goes back to the client with an error.
    let mut bad_type = request(CLIENT, REDIRECT, false);
    bad_type[0] = ("response_type", "token");
    let res = b
        .get(hub.url("/oauth/authorize"))
        .query(&bad_type)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FOUND);
    let to = location(&res);
    assert_eq!(
        param(&to, "error").as_deref(),
        Some("unsupported_response_type")
    );
    assert_eq!(param(&to, "state").as_deref(), Some("st-123"));
    let mut bad_scope = request(CLIENT, REDIRECT, false);
    bad_scope[3] = ("scope", "basket payments");
    let res = b
        .get(hub.url("/oauth/authorize"))
        .query(&bad_scope)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("invalid_scope")
    );
    // The token endpoint checks the redirect URI against the code's.
    let code = authorize(
        &hub,
        &b,
        "cy@example.com",
        &request(CLIENT, REDIRECT, false),
    )
    .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
    ];
    let (status, _, err) = token_call(&hub, CLIENT, SECRET, &form).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
}

#[actix_web::test]
async fn deny_sends_access_denied_and_csrf_is_required() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let req = request(CLIENT, REDIRECT, false);
    let page = sign_in_and_consent_page(&hub, &b, "dee@example.com", &req).await;
    // Without the CSRF field, or with a wrong one: refused, no redirect, no code.
    for csrf in [None, Some("0123456789abcdef0123456789abcdef")] {
        let mut form = req.clone();
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        form.push(("decision", "allow"));
        let res = b
            .post(hub.url("/oauth/authorize"))
            .form(&form)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(res.headers().get("location").is_none());
    }
    let to = decide(&hub, &b, &page, &req, "deny").await;
    assert!(to.starts_with(REDIRECT));
    assert_eq!(param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&to, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&to, "code"), None);
    // The sign-in form needs the CSRF token too.
    let fresh = browser();
    let mut form = req.clone();
    form.extend([("email", "dee@example.com"), ("password", PASSWORD)]);
    let res = fresh
        .post(hub.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn a_replayed_code_is_refused_and_revokes_its_tokens() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let code = authorize(
        &hub,
        &b,
        "eve@example.com",
        &request(CLIENT, REDIRECT, false),
    )
    .await;
    let (status, first) = exchange(&hub, &code, None).await;
    assert_eq!(status, StatusCode::OK);
    let access = field(&first, "access_token");
    assert!(customer_for(&hub, access).await.is_some());
    let (status, again) = exchange(&hub, &code, None).await;
    assert_eq!(
        (status, field(&again, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(
        customer_for(&hub, access).await,
        None,
        "the replay revoked the tokens"
    );
    let (status, _) = refresh(&hub, field(&first, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn codes_and_access_tokens_expire_on_the_injected_clock() {
    let (hub, clock) = spawn_hub().await;
    let b = browser();
    let code = authorize(
        &hub,
        &b,
        "fay@example.com",
        &request(CLIENT, REDIRECT, false),
    )
    .await;
    clock.advance(Duration::from_secs(301));
    let (status, err) = exchange(&hub, &code, None).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert!(field(&err, "error_description").contains("expired"));

    let (_, tokens) = linked(&hub, "gus@example.com").await;
    let access = field(&tokens, "access_token");
    clock.advance(Duration::from_secs(3599));
    assert!(
        customer_for(&hub, access).await.is_some(),
        "valid for an hour"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        customer_for(&hub, access).await,
        None,
        "expired after an hour"
    );
    // The refresh token outlives it.
    let (status, renewed) = refresh(&hub, field(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert!(customer_for(&hub, field(&renewed, "access_token"))
        .await
        .is_some());
    clock.advance(Duration::from_secs(91 * 24 * 3600));
    let (status, _) = refresh(&hub, field(&renewed, "refresh_token")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "refresh tokens expire after 90 days unused"
    );
}

#[actix_web::test]
async fn refresh_rotates_the_refresh_token() {
    let (hub, _) = spawn_hub().await;
    let (_, tokens) = linked(&hub, "hal@example.com").await;
    let hal = customer_id(&hub, "hal@example.com").await;
    let old = field(&tokens, "refresh_token");
    let (status, renewed) = refresh(&hub, old).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_ne!(field(&renewed, "refresh_token"), old);
    assert_eq!(renewed["scope"], "basket orders");
    assert_eq!(
        customer_for(&hub, field(&renewed, "access_token")).await,
        Some(hal)
    );
    let (status, _, narrowed) = token_call(
        &hub,
        CLIENT,
        SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", field(&renewed, "refresh_token")),
            ("scope", "basket"),
        ],
    )
    .await;
    assert_eq!(
        (status, narrowed["scope"].as_str()),
        (StatusCode::OK, Some("basket"))
    );
    let (status, _, err) = token_call(
        &hub,
        CLIENT,
        SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", field(&narrowed, "refresh_token")),
            ("scope", "orders"),
        ],
    )
    .await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_scope"),
        "a narrowed grant does not widen: {err}"
    );
}

#[actix_web::test]
async fn a_reused_refresh_token_revokes_the_whole_grant() {
    let (hub, _) = spawn_hub().await;
    let (_, tokens) = linked(&hub, "ivy@example.com").await;
    let ivy = customer_id(&hub, "ivy@example.com").await;
    let old = field(&tokens, "refresh_token").to_string();
    let (status, renewed) = refresh(&hub, &old).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let access = field(&renewed, "access_token").to_string();
    assert_eq!(customer_for(&hub, &access).await, Some(ivy));
    // The rotated token comes back (a thief's copy, or the client's): the link is revoked.
    let (status, err) = refresh(&hub, &old).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert!(
        field(&err, "error_description").contains("already used"),
        "{err}"
    );
    assert_eq!(
        customer_for(&hub, &access).await,
        None,
        "the access token issued after the rotation stopped working"
    );
    let (status, err) = refresh(&hub, field(&renewed, "refresh_token")).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "and so did the newest refresh token"
    );
    assert!(hub
        .handle
        .oauth
        .linked_apps(ivy)
        .await
        .expect("storage works")
        .is_empty());
}

#[actix_web::test]
async fn the_token_endpoint_is_rate_limited_per_client_and_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = common::settings(dir.path());
    settings.oauth = OAuthSettings {
        clients: vec![client_settings(CLIENT, SECRET, REDIRECT, "Test Voice")],
        token_requests_per_client_per_minute: 3,
        token_requests_per_address_per_minute: 5,
        ..OAuthSettings::default()
    };
    let hub = spawn_with(
        dir,
        settings,
        Arc::new(ManualClock::new(time::OffsetDateTime::now_utc())),
        false,
    )
    .await;
    let bogus = [("grant_type", "refresh_token"), ("refresh_token", "nope")];
    for _ in 0..3 {
        let (status, _, _) = token_call(&hub, CLIENT, SECRET, &bogus).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    // The client's budget is spent, whatever the secret.
    let (status, headers, body) = token_call(&hub, CLIENT, "wrong-secret-guess", &bogus).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(body["error"], "too_many_requests");
    // Another client id from the same address still has the address's budget (5): one more.
    let (status, _, _) = token_call(&hub, "someone-else", "x", &bogus).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = token_call(&hub, "someone-else", "x", &bogus).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address's budget"
    );
}

#[actix_web::test]
async fn the_purge_deletes_expired_and_revoked_tokens_only() {
    let (hub, clock) = spawn_hub().await;
    let (_, kept) = linked(&hub, "jo@example.com").await;
    let (_, revoked) = linked(&hub, "kim@example.com").await;
    let kim = customer_id(&hub, "kim@example.com").await;
    hub.handle
        .oauth
        .unlink(kim, CLIENT)
        .await
        .expect("unlinked");
    // Kim's two tokens belong to a revoked grant: purged now; Jo's are live.
    assert_eq!(hub.handle.oauth.purge(1).await.expect("purged"), 2);
    assert_eq!(hub.handle.oauth.purge(100).await.expect("purged"), 0);
    assert!(customer_for(&hub, field(&kept, "access_token"))
        .await
        .is_some());
    assert!(customer_for(&hub, field(&revoked, "access_token"))
        .await
        .is_none());
    // An hour on, Jo's access token expired (its refresh token lives on).
    clock.advance(Duration::from_secs(3601));
    assert_eq!(hub.handle.oauth.purge(100).await.expect("purged"), 1);
    let (status, renewed) = refresh(&hub, field(&kept, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
}

#[actix_web::test]
async fn the_client_revokes_at_the_revocation_endpoint() {
    let (hub, _) = spawn_hub().await;
    let (_, tokens) = linked(&hub, "ida@example.com").await;
    let access = field(&tokens, "access_token");
    let revoke = |token: &str, id: &str, secret: &str| {
        let (token, id, secret) = (token.to_string(), id.to_string(), secret.to_string());
        let url = hub.url("/oauth/revoke");
        async move {
            common::client()
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[
                    ("token", token.as_str()),
                    ("token_type_hint", "refresh_token"),
                ])
                .send()
                .await
                .expect("sent")
                .status()
        }
    };
    assert_eq!(
        revoke(access, CLIENT, "wrong-secret").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        revoke(access, OTHER_CLIENT, OTHER_SECRET).await,
        StatusCode::BAD_REQUEST,
        "not the other client's to revoke"
    );
    assert!(customer_for(&hub, access).await.is_some());
    assert_eq!(
        revoke(field(&tokens, "refresh_token"), CLIENT, SECRET).await,
        StatusCode::OK
    );
    assert_eq!(
        customer_for(&hub, access).await,
        None,
        "revoking the refresh token ends the link"
    );
    let (status, _) = refresh(&hub, field(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        revoke("never-issued", CLIENT, SECRET).await,
        StatusCode::OK,
        "unknown tokens are fine (RFC 7009)"
    );
}

#[actix_web::test]
async fn each_token_resolves_only_to_its_own_customer() {
    let (hub, _) = spawn_hub().await;
    let (_, ann) = linked(&hub, "ann@example.com").await;
    let (_, ben) = linked(&hub, "ben@example.com").await;
    let ann_id = customer_id(&hub, "ann@example.com").await;
    let ben_id = customer_id(&hub, "ben@example.com").await;
    assert_ne!(ann_id, ben_id);
    assert_eq!(
        customer_for(&hub, field(&ann, "access_token")).await,
        Some(ann_id)
    );
    assert_eq!(
        customer_for(&hub, field(&ben, "access_token")).await,
        Some(ben_id)
    );
    // Ann unlinking leaves Ben linked.
    let unlinked = hub
        .handle
        .oauth
        .as_ref()
        .unlink(ann_id, CLIENT)
        .await
        .expect("storage works");
    assert_eq!(unlinked, 1);
    assert_eq!(customer_for(&hub, field(&ann, "access_token")).await, None);
    assert_eq!(
        customer_for(&hub, field(&ben, "access_token")).await,
        Some(ben_id)
    );
}

#[actix_web::test]
async fn pkce_mismatch_is_refused() {
    let (hub, _) = spawn_hub().await;
    let b = browser();
    let code = authorize(
        &hub,
        &b,
        "kim@example.com",
        &request(CLIENT, REDIRECT, true),
    )
    .await;
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
    let (status, err) = exchange(&hub, &code, Some(wrong)).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let (status, err) = exchange(&hub, &code, None).await;
    assert_eq!(
        (status, field(&err, "error")),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "the verifier is required"
    );
    let (status, _) = exchange(&hub, &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "refusals did not spend the code");
    // Only S256.
    let mut plain = request(CLIENT, REDIRECT, true);
    plain[6] = ("code_challenge_method", "plain");
    let res = b
        .get(hub.url("/oauth/authorize"))
        .query(&plain)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("invalid_request")
    );
}
