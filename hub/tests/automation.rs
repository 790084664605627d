//! Marketing automation end to end: a real hub on port 0 with a manual clock and the mail
//! simulator as its SMTP server. Time moves only when a test says so; the scheduler is poked
//! (`RunDue`) instead of waited for.

mod common;

use common::{client, eventually, SendForJson, TestHub};
use hub::automation::{RunDue, RunReport};
use hub::clock::{Clock, ManualClock};
use hub::storage::{Change, Committer, UnitOfWork};
use hub::HubSettings;
use protocol::{CustomerId, Sku};
use reqwest::StatusCode;
use serde_json::{json, Value};
use simulators::mail::{MailArgs, MailSink, StoredMessage};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;
use time::OffsetDateTime;

const ADMIN: &str = "automation-admin";
const WAIT: Duration = Duration::from_secs(15);
/// 11:00 in the default offset (+01:00): outside quiet hours.
const MORNING: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

struct Fixture {
    hub: TestHub,
    clock: ManualClock,
    sink: MailSink,
    c: reqwest::Client,
}

struct Shopper {
    id: CustomerId,
    email: String,
    token: String,
    basket: String,
}

async fn sink() -> MailSink {
    MailSink::start(&MailArgs {
        smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..MailArgs::default()
    })
    .await
    .expect("mail sink starts")
}

fn settings(dir: &std::path::Path, smtp: SocketAddr) -> HubSettings {
    let mut s = common::settings(dir);
    s.admin_token = Some(ADMIN.to_string().into());
    s.email.host = smtp.ip().to_string();
    s.email.port = smtp.port();
    s
}

async fn fixture_at(start: OffsetDateTime) -> Fixture {
    let sink = sink().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings(dir.path(), sink.smtp_addr());
    let clock = ManualClock::new(start);
    let hub = common::spawn_with(dir, s, Arc::new(clock.clone()), true).await;
    Fixture {
        hub,
        clock,
        sink,
        c: client(),
    }
}

impl Fixture {
    async fn register(&self, email: &str) -> Shopper {
        // Marketing mail needs the customer's consent: every shopper here gives it.
        let body = self.hub.register_consenting(&self.c, email).await;
        Shopper {
            id: body["customer"]["id"]
                .as_str()
                .expect("customer id")
                .parse()
                .expect("a customer id"),
            email: email.to_lowercase(),
            token: body["session_token"].as_str().expect("token").to_string(),
            basket: body["basket"]["id"].as_str().expect("basket").to_string(),
        }
    }

    async fn add(&self, who: &Shopper, sku: &str, quantity: u32) {
        let res = self
            .c
            .post(
                self.hub
                    .url(&format!("/api/v1/baskets/{}/lines", who.basket)),
            )
            .bearer_auth(&who.token)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await
            .expect("sent");
        assert!(res.status().is_success(), "{}", res.status());
    }

    async fn run(&self) -> RunReport {
        self.hub
            .handle
            .automation
            .send(RunDue)
            .await
            .expect("scheduler running")
            .expect("run succeeds")
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The message log as the admin API lists it (`query` without the `?`).
    async fn log(&self, query: &str) -> Vec<Value> {
        let body = self
            .c
            .get(
                self.hub
                    .url(&format!("/api/v1/admin/automation/messages?{query}")),
            )
            .bearer_auth(ADMIN)
            .json_body()
            .await;
        body["messages"].as_array().expect("messages").clone()
    }

    async fn reasons(&self, who: &Shopper, kind: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .log(&format!("customer={}&kind={kind}", who.id))
            .await
            .iter()
            .map(|r| {
                (
                    r["outcome"].as_str().unwrap_or_default().to_string(),
                    r["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.reverse();
        out
    }

    fn mails_to(&self, email: &str) -> Vec<StoredMessage> {
        self.sink
            .messages()
            .into_iter()
            .filter(|m| m.envelope.to.iter().any(|t| t == email))
            .collect()
    }

    async fn wait_mails(&self, email: &str, n: usize) -> Vec<StoredMessage> {
        eventually(WAIT, || async {
            let got = self.mails_to(email);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn header(message: &StoredMessage, name: &str) -> Option<String> {
    message
        .header_fields()
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = joined
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded plain-text part of a multipart mail.
fn text_of(message: &StoredMessage) -> String {
    use base64::Engine;
    let content_type = header(message, "Content-Type").expect("content type");
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("multipart")
        .trim_matches('"')
        .to_string();
    for section in message.body().split(&format!("--{boundary}")) {
        let Some((head, text)) = section.trim_start_matches("\r\n").split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        if !head.contains("text/plain") {
            continue;
        }
        if head.contains("quoted-printable") {
            return quoted_printable(text);
        }
        if head.contains("base64") {
            let compact: String = text.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("base64");
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        return text.to_string();
    }
    panic!("no text part in {}", message.raw);
}

/// The restore link in a reminder's text, as a path and query.
fn restore_path(text: &str) -> String {
    let start = text.find("/basket/restore?").expect("a restore link");
    let end = text[start..]
        .find(char::is_whitespace)
        .map_or(text.len(), |e| start + e);
    text[start..end].to_string()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An order for `customer` placed at `at`, stored as checkout stores one.
async fn place_order(hub: &TestHub, customer: CustomerId, email: &str, at: OffsetDateTime) {
    let id = protocol::OrderId::new();
    let order = common::order_record(
        id,
        &format!("W-{}", &id.to_string()[20..]),
        customer,
        email,
        at,
    );
    hub.handle
        .storage
        .commit(UnitOfWork::new().with(Change::CreateOrder(order)))
        .await
        .expect("order stored");
}

#[actix_web::test]
async fn an_abandoned_basket_is_mailed_once_after_the_delay_and_its_link_restores_it() {
    let fx = fixture_at(MORNING).await;
    let ada = fx.register("ada@example.com").await;
    let bob = fx.register("bob@example.com").await;
    fx.add(&ada, "BEANS", 2).await;
    fx.add(&ada, "TEA", 1).await;

    assert_eq!(fx.run().await.sent, 0);
    fx.advance(minutes(59));
    assert_eq!(fx.run().await.sent, 0, "not before the delay");
    fx.advance(minutes(2));
    assert_eq!(fx.run().await.sent, 1);
    let mails = fx.wait_mails(&ada.email, 1).await;
    let mail = &mails[0];
    assert_eq!(
        mail.headers.subject.as_deref(),
        Some("You left something in your basket")
    );
    let unsubscribe = header(mail, "List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        unsubscribe.contains("/unsubscribe?customer="),
        "{unsubscribe}"
    );
    let text = text_of(mail);
    for shown in ["2 × House Beans", "1 × Green Tea", "25.98", "4.50"] {
        assert!(text.contains(shown), "{shown} in {text}");
    }

    // Once: later runs send nothing more.
    fx.advance(minutes(120));
    assert_eq!(fx.run().await.sent, 0);
    assert_eq!(
        fx.reasons(&ada, "abandoned_basket").await,
        vec![("sent".into(), "allowed".into())]
    );
    assert_eq!(fx.mails_to(&ada.email).len(), 1);

    // The link restores the same basket for Ada …
    let link = restore_path(&text);
    assert!(!link.contains("token"), "never the basket's token: {link}");
    let raw = no_redirects();
    let res = raw
        .get(fx.hub.url(&link))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/basket");
    let basket =
        fx.c.get(fx.hub.url("/api/v1/basket"))
            .bearer_auth(&ada.token)
            .json_body()
            .await;
    assert_eq!(basket["id"], ada.basket.as_str());
    assert_eq!(basket["item_count"].as_u64(), Some(3), "{basket}");
    // … asks a shopper who is not signed in to sign in first, and comes back …
    let res = raw.get(fx.hub.url(&link)).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let next: String = url::form_urlencoded::byte_serialize(link.as_bytes()).collect();
    assert_eq!(location, format!("/signin?next={next}"));
    // … and is refused to another customer, when changed, and once expired.
    let res = raw
        .get(fx.hub.url(&link))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let last = link.chars().last().expect("a signature");
    let tampered = format!(
        "{}{}",
        &link[..link.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let res = raw
        .get(fx.hub.url(&tampered))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let other_basket = link.replace(&ada.basket, &bob.basket);
    let res = raw
        .get(fx.hub.url(&other_basket))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    fx.advance(Duration::from_secs(7 * 24 * 3600));
    let res = raw
        .get(fx.hub.url(&link))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::GONE);
}

#[actix_web::test]
async fn reminders_are_suppressed_with_their_reason() {
    let fx = fixture_at(MORNING).await;
    let carl = fx.register("carl@example.com").await; // orders
    let dora = fx.register("dora@example.com").await; // empties the basket
    let emil = fx.register("emil@example.com").await; // unsubscribes
    let fred = fx.register("fred@example.com").await; // hits the frequency cap
    let anon = fx.c.post(fx.hub.url("/api/v1/baskets")).json_body().await;
    for who in [&carl, &dora, &emil, &fred] {
        fx.add(who, "BEANS", 1).await;
    }
    // An anonymous basket has nobody to remind.
    let res =
        fx.c.post(fx.hub.url(&format!(
            "/api/v1/baskets/{}/lines",
            anon["id"].as_str().unwrap_or_default()
        )))
        .header("X-Basket-Token", anon["token"].as_str().unwrap_or_default())
        .json(&json!({"sku": "TEA", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "{}", res.status());

    fx.advance(minutes(10));
    place_order(&fx.hub, carl.id, &carl.email, fx.clock.now()).await;
    let res =
        fx.c.delete(
            fx.hub
                .url(&format!("/api/v1/baskets/{}/lines", dora.basket)),
        )
        .bearer_auth(&dora.token)
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success());
    let secret = fx.hub.handle.storage.link_secret().await.expect("secret");
    let token = hub::unsubscribe::token(&secret, emil.id);
    let res =
        fx.c.post(
            fx.hub
                .url(&format!("/unsubscribe?customer={}&token={token}", emil.id)),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);

    fx.advance(minutes(55));
    let report = fx.run().await;
    assert_eq!((report.sent, report.suppressed), (1, 3), "{report:?}");
    assert_eq!(
        fx.reasons(&carl, "abandoned_basket").await,
        vec![("suppressed".into(), "basket_converted".into())]
    );
    assert_eq!(
        fx.reasons(&dora, "abandoned_basket").await,
        vec![("suppressed".into(), "basket_emptied".into())]
    );
    assert_eq!(
        fx.reasons(&emil, "abandoned_basket").await,
        vec![("suppressed".into(), "no_consent".into())]
    );
    assert_eq!(
        fx.reasons(&fred, "abandoned_basket").await,
        vec![("sent".into(), "allowed".into())]
    );

    // Fred changes his basket again: the next reminder would be his second mail within 24 h.
    fx.add(&fred, "TEA", 1).await;
    fx.advance(minutes(61));
    let report = fx.run().await;
    assert_eq!((report.sent, report.suppressed), (0, 1), "{report:?}");
    assert_eq!(
        fx.reasons(&fred, "abandoned_basket").await,
        vec![
            ("sent".into(), "allowed".into()),
            ("suppressed".into(), "frequency_cap".into())
        ]
    );
    fx.wait_mails(&fred.email, 1).await;
    for who in [&carl, &dora, &emil] {
        assert!(fx.mails_to(&who.email).is_empty(), "{} got mail", who.email);
    }
    assert_eq!(fx.mails_to(&fred.email).len(), 1);
    // The whole log, newest first, and its filters.
    let all = fx.log("limit=100").await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0]["reason"], "frequency_cap");
    assert_eq!(fx.log("kind=abandoned_basket&limit=2").await.len(), 2);
    assert!(fx.log("kind=win_back").await.is_empty());
}

#[actix_web::test]
async fn a_reminder_due_in_quiet_hours_waits_for_their_end() {
    // 20:30 local (+01:00): the reminder falls due at 21:31, in quiet hours (21:00–08:00).
    let fx = fixture_at(datetime!(2026-03-02 19:30 UTC)).await;
    let ada = fx.register("ada@example.com").await;
    fx.add(&ada, "BEANS", 1).await;
    fx.advance(minutes(61));
    let report = fx.run().await;
    assert_eq!((report.sent, report.deferred), (0, 1), "{report:?}");
    let log = fx.log(&format!("customer={}", ada.id)).await;
    assert_eq!(log[0]["outcome"], "deferred");
    assert_eq!(log[0]["reason"], "quiet_hours");
    assert_eq!(log[0]["deferred_to"], "2026-03-03T07:00:00Z");
    assert_eq!(report.next_due, Some(datetime!(2026-03-03 07:00 UTC)));
    // 07:59 local: still quiet.
    fx.clock.advance(
        Duration::try_from(datetime!(2026-03-03 06:59 UTC) - fx.clock.now()).expect("forward"),
    );
    assert_eq!(fx.run().await.sent, 0);
    fx.advance(minutes(1));
    assert_eq!(fx.run().await.sent, 1);
    fx.wait_mails(&ada.email, 1).await;
    assert_eq!(
        fx.reasons(&ada, "abandoned_basket").await,
        vec![
            ("deferred".into(), "quiet_hours".into()),
            ("sent".into(), "allowed".into())
        ]
    );
}

#[actix_web::test]
async fn back_in_stock_notes_go_once_to_each_subscriber() {
    let fx = fixture_at(MORNING).await;
    let ada = fx.register("ada@example.com").await;
    let bob = fx.register("bob@example.com").await;
    let subscribe = |who: Option<&Shopper>, sku: &str| {
        let mut req =
            fx.c.post(fx.hub.url(&format!("/api/v1/products/{sku}/subscriptions")));
        if let Some(w) = who {
            req = req.bearer_auth(&w.token);
        }
        async move { req.send().await.expect("sent").status() }
    };
    assert_eq!(subscribe(Some(&ada), "CUPS").await, StatusCode::CREATED);
    assert_eq!(
        subscribe(Some(&ada), "CUPS").await,
        StatusCode::OK,
        "idempotent"
    );
    assert_eq!(subscribe(Some(&bob), "CUPS").await, StatusCode::CREATED);
    assert_eq!(subscribe(None, "CUPS").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        subscribe(Some(&ada), "BEANS").await,
        StatusCode::CONFLICT,
        "in stock"
    );
    assert_eq!(subscribe(Some(&ada), "NOPE").await, StatusCode::NOT_FOUND);
    assert_eq!(
        subscribe(Some(&ada), "not%20a%20sku").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // The product page offers the note to a signed-in shopper.
    let page =
        fx.c.get(fx.hub.url("/p/espresso-cups"))
            .bearer_auth(&ada.token)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("html");
    assert!(page.contains("Email me when it is back"), "{page}");

    let cups = Sku::parse("CUPS").expect("sku");
    fx.hub
        .handle
        .set_online_stock(vec![(cups.clone(), 3)])
        .await
        .expect("stock");
    eventually(WAIT, || async {
        fx.run().await;
        (fx.log("kind=back_in_stock").await.len() == 2).then_some(())
    })
    .await;
    for who in [&ada, &bob] {
        assert_eq!(
            fx.reasons(who, "back_in_stock").await,
            vec![("sent".into(), "allowed".into())]
        );
        let mails = fx.wait_mails(&who.email, 1).await;
        assert_eq!(
            mails[0].headers.subject.as_deref(),
            Some("Espresso Cups is back in stock")
        );
        assert!(header(&mails[0], "List-Unsubscribe").is_some());
    }
    // The subscriptions ended: another sell-out and restock mails nobody.
    fx.hub
        .handle
        .set_online_stock(vec![(cups.clone(), 0)])
        .await
        .expect("stock");
    fx.hub
        .handle
        .set_online_stock(vec![(cups, 5)])
        .await
        .expect("stock");
    fx.advance(Duration::from_secs(2 * 24 * 3600));
    let report = fx.run().await;
    assert_eq!(report.sent, 0, "{report:?}");
    assert_eq!(fx.log("kind=back_in_stock").await.len(), 2);
    assert_eq!(
        fx.mails_to(&ada.email).len() + fx.mails_to(&bob.email).len(),
        2
    );
}

#[actix_web::test]
async fn win_back_mails_customers_whose_last_order_is_old() {
    let fx = fixture_at(MORNING).await;
    let gina = fx.register("gina@example.com").await;
    let hans = fx.register("hans@example.com").await;
    let ivan = fx.register("ivan@example.com").await; // never ordered: not a win-back
    place_order(
        &fx.hub,
        gina.id,
        &gina.email,
        MORNING - time::Duration::days(90),
    )
    .await;
    place_order(
        &fx.hub,
        gina.id,
        &gina.email,
        MORNING - time::Duration::days(70),
    )
    .await;
    place_order(
        &fx.hub,
        hans.id,
        &hans.email,
        MORNING - time::Duration::days(90),
    )
    .await;
    place_order(
        &fx.hub,
        hans.id,
        &hans.email,
        MORNING - time::Duration::days(10),
    )
    .await;
    // The daily scan ran at start (nothing to do then); the next one is a day later.
    fx.advance(minutes(24 * 60 + 1));
    let report = fx.run().await;
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(
        fx.reasons(&gina, "win_back").await,
        vec![("sent".into(), "allowed".into())]
    );
    assert!(fx.reasons(&hans, "win_back").await.is_empty());
    assert!(fx.reasons(&ivan, "win_back").await.is_empty());
    let mails = fx.wait_mails(&gina.email, 1).await;
    assert_eq!(
        mails[0].headers.subject.as_deref(),
        Some("We miss you at Omnihub Market")
    );
    // Not again the next day: one win-back per 90 days.
    fx.advance(minutes(24 * 60 + 1));
    assert_eq!(fx.run().await.sent, 0);
    assert_eq!(fx.mails_to(&gina.email).len(), 1);
}

#[actix_web::test]
async fn the_message_log_refuses_bad_queries_and_wants_the_admin_token() {
    let fx = fixture_at(MORNING).await;
    let url = |q: &str| {
        fx.hub
            .url(&format!("/api/v1/admin/automation/messages?{q}"))
    };
    let res = fx.c.get(url("")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    for (q, code) in [
        ("kind=birthday", "invalid_kind"),
        ("customer=nobody", "invalid_customer"),
        ("limit=0", "invalid_limit"),
        ("limit=many", "invalid_limit"),
    ] {
        let res =
            fx.c.get(url(q))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("sent");
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{q}: {body}");
    }
    let res =
        fx.c.post(fx.hub.url("/api/v1/admin/automation/run"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}

// --- A restart: the hub in its own thread, so it can be stopped and started again -------------

struct ThreadHub {
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

fn start_in_thread(settings: HubSettings, clock: ManualClock) -> ThreadHub {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            // The previous hub's arbiters may hold the database a moment after its thread
            // ended: wait for its lock, within a deadline.
            let deadline = std::time::Instant::now() + WAIT;
            let app = loop {
                match hub::Application::build(settings.clone(), Arc::new(clock.clone())).await {
                    Ok(app) => break app,
                    Err(e)
                        if e.to_string().contains("could not acquire lock")
                            && std::time::Instant::now() < deadline =>
                    {
                        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("hub builds: {e}"),
                }
            };
            common::seed(&app.handle()).await;
            tx.send((app.address(), app.server_handle())).expect("told");
            // Served until stopped; then the System stops with every arbiter, so the entity
            // actors (which hold the database) are gone before the next start.
            actix_web::rt::spawn(async move {
                app.run().await.expect("hub ran");
                actix_web::rt::System::current().stop();
            });
        });
        system.run().expect("the system ran");
    });
    let (addr, server) = rx.recv_timeout(WAIT * 2).expect("the hub started");
    ThreadHub {
        addr,
        server,
        thread,
    }
}

async fn admin_run(c: &reqwest::Client, addr: SocketAddr) -> Value {
    c.post(format!("http://{addr}/api/v1/admin/automation/run"))
        .bearer_auth(ADMIN)
        .json_body()
        .await
}

async fn sent_reminders(c: &reqwest::Client, addr: SocketAddr) -> usize {
    let body = c
        .get(format!(
            "http://{addr}/api/v1/admin/automation/messages?kind=abandoned_basket"
        ))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["outcome"] == "sent")
        .count()
}

#[actix_web::test]
async fn timers_survive_a_restart_and_run_once() {
    let sink = sink().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings(dir.path(), sink.smtp_addr());
    let clock = ManualClock::new(MORNING);
    let c = client();

    let first = start_in_thread(s.clone(), clock.clone());
    let ada = c
        .post(format!("http://{}/api/v1/customers", first.addr))
        .json(&json!({"email": "ada@example.com", "name": "Ada", "password": "correct horse battery", "consents": [common::marketing_email()]}))
        .json_body()
        .await;
    let basket = ada["basket"]["id"].as_str().expect("basket");
    let token = ada["session_token"].as_str().expect("token");
    let res = c
        .post(format!(
            "http://{}/api/v1/baskets/{basket}/lines",
            first.addr
        ))
        .bearer_auth(token)
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success());
    assert_eq!(admin_run(&c, first.addr).await["sent"], 0);
    first.server.stop(true).await;
    first.thread.join().expect("the first hub stopped");

    // Due while the hub was down: the restarted hub runs it (at start, or when poked).
    clock.advance(minutes(61));
    let second = start_in_thread(s.clone(), clock.clone());
    admin_run(&c, second.addr).await;
    assert_eq!(sent_reminders(&c, second.addr).await, 1);
    eventually(WAIT, || async {
        (sink.messages().len() == 1).then_some(())
    })
    .await;
    second.server.stop(true).await;
    second.thread.join().expect("the second hub stopped");

    // And once only: a third start finds nothing left to do.
    clock.advance(minutes(120));
    let third = start_in_thread(s, clock.clone());
    assert_eq!(admin_run(&c, third.addr).await["sent"], 0);
    assert_eq!(sent_reminders(&c, third.addr).await, 1);
    third.server.stop(true).await;
    third.thread.join().expect("the third hub stopped");
    assert_eq!(sink.messages().len(), 1);
}

#[actix_web::test]
async fn a_reminder_committed_but_never_armed_is_armed_at_the_next_start() {
    use hub::automation::store::Finish;
    use hub::automation::AutomationStore;
    let sink = sink().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings(dir.path(), sink.smtp_addr());
    let clock = ManualClock::new(MORNING);
    let c = client();

    let first = start_in_thread(s.clone(), clock.clone());
    let ada = c
        .post(format!("http://{}/api/v1/customers", first.addr))
        .json(&json!({"email": "ada@example.com", "name": "Ada", "password": "correct horse battery", "consents": [common::marketing_email()]}))
        .json_body()
        .await;
    let id: CustomerId = ada["customer"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a customer id");
    let basket = ada["basket"]["id"].as_str().expect("basket").to_string();
    let res = c
        .post(format!(
            "http://{}/api/v1/baskets/{basket}/lines",
            first.addr
        ))
        .bearer_auth(ada["session_token"].as_str().expect("token"))
        .json(&json!({"sku": "BEANS", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success());
    first.server.stop(true).await;
    first.thread.join().expect("the first hub stopped");

    // Rewind to what a crash between the basket's commit and the arming leaves on disk: the
    // basket with its line and its pending reminder, and no timer.
    {
        let storage = loop {
            match hub::storage::sled::SledStorage::open(dir.path(), 8) {
                Ok(s) => break s,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("storage opens: {e}"),
            }
        };
        let timers = hub::automation::KvAutomationStore::open(&storage.keyspace()).expect("tree");
        let armed = timers
            .timer(&format!("abandoned:{id}"))
            .await
            .expect("read")
            .expect("armed by the first hub");
        timers
            .finish(Finish {
                timer: Some(armed.clone()),
                ..Finish::default()
            })
            .await
            .expect("timer removed");
        let pending = protocol::automation::PendingReminder {
            customer: id,
            basket: basket.parse().expect("a basket id"),
            at: armed.armed_at,
        };
        storage
            .commit(UnitOfWork::new().with(Change::PutPendingReminder(pending)))
            .await
            .expect("pending reminder stored");
        assert!(timers
            .timer(&format!("abandoned:{id}"))
            .await
            .expect("read")
            .is_none());
    }

    // The restarted hub arms it from storage: due an hour after the change, sent once.
    let second = start_in_thread(s.clone(), clock.clone());
    assert_eq!(admin_run(&c, second.addr).await["sent"], 0, "not due yet");
    clock.advance(minutes(61));
    admin_run(&c, second.addr).await;
    assert_eq!(sent_reminders(&c, second.addr).await, 1);
    eventually(WAIT, || async {
        (sink.messages().len() == 1).then_some(())
    })
    .await;
    second.server.stop(true).await;
    second.thread.join().expect("the second hub stopped");

    // Armed once: the pending reminder was cleared, so a third start arms nothing again.
    clock.advance(minutes(120));
    let third = start_in_thread(s, clock.clone());
    assert_eq!(admin_run(&c, third.addr).await["timers"], 0);
    third.server.stop(true).await;
    third.thread.join().expect("the third hub stopped");
    assert_eq!(sink.messages().len(), 1);
}

#[actix_web::test]
async fn a_customer_who_never_consented_gets_no_reminder() {
    let fx = fixture_at(MORNING).await;
    let body = fx.hub.register(&fx.c, "nina@example.com").await;
    let nina = Shopper {
        id: body["customer"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("a customer id"),
        email: "nina@example.com".into(),
        token: body["session_token"].as_str().expect("token").to_string(),
        basket: body["basket"]["id"].as_str().expect("basket").to_string(),
    };
    fx.add(&nina, "BEANS", 1).await;
    fx.advance(minutes(61));
    let report = fx.run().await;
    assert_eq!((report.sent, report.suppressed), (0, 1), "{report:?}");
    assert_eq!(
        fx.reasons(&nina, "abandoned_basket").await,
        vec![("suppressed".into(), "no_consent".into())]
    );
    assert!(fx.mails_to(&nina.email).is_empty());
}
