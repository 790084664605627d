//! The store's payment terminal (`omnihub sim terminal`, default http://127.0.0.1:8206): the
//! card reader beside a till. It "reads" the card itself — the card presented is chosen on its
//! own page (`GET /`, "present" a test card) or named in the reading request (`card`, standing
//! for the card held to the reader) — and tokenises it: the POS caller gets only a token, the
//! brand and the last four digits. No card number ever leaves the terminal.
//!
//! **Tokens.** A real terminal gets its token from the payment provider (or encrypts the card
//! for it, to forward offline). This one hands out the provider's published test
//! PaymentMethod of the card read (`pm_card_visa`, `pm_card_chargeDeclined`, …, Stripe's test
//! mode tokens), which the payment provider simulator (`omnihub sim payments`) accepts as
//! `payment_method` of a PaymentIntent. So the terminal needs no link to the provider (it
//! tokenises offline too) and the provider decides: the declined test card reads fine at the
//! terminal and is declined when the hub asks for the authorisation.
//!
//! API (JSON; errors `{"error": {"code", "message"}}`):
//! - `POST /v1/readings {"amount": 1250, "currency": "EUR", "card"?: "visa"}` →
//!   `201 {"reading": "rd_…", "token": "pm_card_visa", "brand": "visa", "last4": "4242",
//!   "amount", "currency"}`; `409 no_card_presented` when no card is on the reader and none is
//!   named; `422` for a bad amount or a card that is not a test card.
//! - `POST /present` (form or JSON `{"card": "declined"}`): puts a test card on the reader for
//!   the next reading (taken by it); `card` = `none` takes it away.
//! - `GET /api/readings`: the last readings (token, brand, last4, amount; never a number).
//!
//! Test cards (a name or the number): `visa` 4242 4242 4242 4242 (approved), `mastercard`
//! 5555 5555 5555 4444 (approved), `declined` 4000 0000 0000 0002 (declined),
//! `insufficient_funds` 4000 0000 0000 9995 (declined: insufficient funds).

use crate::common::server::{self, ProcessError, Running, Simulator};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// How many readings the terminal remembers for its page.
const KEEP_READINGS: usize = 50;

/// `omnihub sim terminal`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct TerminalArgs {
    /// Where the terminal listens (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_TERMINAL_LISTEN", default_value_t = TerminalSim::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

/// Why the terminal could not run.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

impl ProcessError for TerminalError {
    fn runtime(error: std::io::Error) -> Self {
        TerminalError::Runtime(error)
    }
    fn signal(error: std::io::Error) -> Self {
        TerminalError::Signal(error)
    }
}

/// One test card: what the terminal reads, and the token it hands out for it.
struct TestCard {
    name: &'static str,
    number: &'static str,
    brand: &'static str,
    token: &'static str,
    what: &'static str,
}

const CARDS: [TestCard; 4] = [
    TestCard {
        name: "visa",
        number: "4242424242424242",
        brand: "visa",
        token: "pm_card_visa",
        what: "approved",
    },
    TestCard {
        name: "mastercard",
        number: "5555555555554444",
        brand: "mastercard",
        token: "pm_card_mastercard",
        what: "approved",
    },
    TestCard {
        name: "declined",
        number: "4000000000000002",
        brand: "visa",
        token: "pm_card_chargeDeclined",
        what: "declined by the issuer",
    },
    TestCard {
        name: "insufficient_funds",
        number: "4000000000009995",
        brand: "visa",
        token: "pm_card_chargeDeclinedInsufficientFunds",
        what: "declined: insufficient funds",
    },
];

/// The card named by a test card's name or its number (spaces allowed).
fn card_named(text: &str) -> Option<&'static TestCard> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    CARDS
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(text.trim()) || c.number == digits)
}

#[derive(Clone, serde::Serialize)]
struct Reading {
    reading: String,
    token: String,
    brand: String,
    last4: String,
    amount: i64,
    currency: String,
}

#[derive(Default)]
struct State {
    presented: Option<&'static TestCard>,
    readings: VecDeque<Reading>,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({"error": {"code": code, "message": message}}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingRequest {
    amount: i64,
    currency: String,
    #[serde(default)]
    card: Option<String>,
}

/// `POST /v1/readings`: reads the card (named, or the one on the reader) and tokenises it.
async fn read(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let req: ReadingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                422,
                "invalid_request",
                &format!("send {{\"amount\": <minor units>, \"currency\": \"EUR\", \"card\"?: <test card>}}: {e}"),
            )
        }
    };
    if req.amount < 1
        || req.currency.len() != 3
        || !req.currency.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return error(
            422,
            "invalid_amount",
            "amount must be positive minor units and currency an ISO 4217 code",
        );
    }
    let mut state = lock(&shared);
    let card = match &req.card {
        Some(name) => match card_named(name) {
            Some(c) => c,
            None => {
                return error(
                    422,
                    "unknown_card",
                    "not a test card: use visa, mastercard, declined or insufficient_funds (or its number)",
                )
            }
        },
        None => match state.presented.take() {
            Some(c) => c,
            None => {
                return error(
                    409,
                    "no_card_presented",
                    "no card on the reader: present a card on the terminal, then try again",
                )
            }
        },
    };
    let reading = Reading {
        reading: format!("rd_{}", ulid::Ulid::new().to_string().to_lowercase()),
        token: card.token.to_string(),
        brand: card.brand.to_string(),
        last4: card.number[card.number.len() - 4..].to_string(),
        amount: req.amount,
        currency: req.currency.to_ascii_uppercase(),
    };
    tracing::info!(reading = %reading.reading, brand = %reading.brand, last4 = %reading.last4, amount = reading.amount, "card read and tokenised");
    state.readings.push_front(reading.clone());
    state.readings.truncate(KEEP_READINGS);
    HttpResponse::Created().json(reading)
}

#[derive(Deserialize)]
struct PresentForm {
    card: String,
}

/// `POST /present`: puts a test card on the reader (form from the page, or JSON).
async fn present(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let parsed: Option<PresentForm> = if form {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "card")
            .map(|(_, v)| PresentForm {
                card: v.into_owned(),
            })
    } else {
        serde_json::from_slice(&body).ok()
    };
    let Some(p) = parsed else {
        return error(
            422,
            "invalid_request",
            "send card=<test card name> (or \"none\")",
        );
    };
    let mut state = lock(&shared);
    if p.card == "none" {
        state.presented = None;
    } else {
        match card_named(&p.card) {
            Some(c) => state.presented = Some(c),
            None => {
                return error(
                    422,
                    "unknown_card",
                    "not a test card: use visa, mastercard, declined or insufficient_funds",
                )
            }
        }
    }
    if form {
        return HttpResponse::SeeOther()
            .insert_header((actix_web::http::header::LOCATION, "/"))
            .finish();
    }
    HttpResponse::Ok().json(json!({"presented": state.presented.map(|c| c.name)}))
}

async fn readings(shared: web::Data<Shared>) -> HttpResponse {
    let state = lock(&shared);
    HttpResponse::Ok().json(json!({
        "presented": state.presented.map(|c| c.name),
        "readings": state.readings.iter().collect::<Vec<_>>(),
    }))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /`: the terminal's screen: the card on the reader, buttons to present a test card, and
/// the last readings.
async fn page(shared: web::Data<Shared>) -> HttpResponse {
    let state = lock(&shared);
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment terminal</title>\
         <style>body{font-family:sans-serif;max-width:40em;margin:2em auto}button{margin:.2em;padding:.6em 1em}\
         table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ccc}</style></head><body>\
         <h1>Payment terminal</h1>",
    );
    html.push_str(&format!(
        "<p id=\"presented\">On the reader: <strong>{}</strong></p><form method=\"post\" action=\"/present\">",
        state.presented.map_or("no card", |c| c.name)
    ));
    for c in &CARDS {
        html.push_str(&format!(
            "<button name=\"card\" value=\"{}\">{} •••• {} ({})</button>",
            c.name,
            escape(c.brand),
            &c.number[c.number.len() - 4..],
            c.what
        ));
    }
    html.push_str("<button name=\"card\" value=\"none\">remove card</button></form><h2>Last readings</h2><table><tr><th>reading</th><th>card</th><th>amount</th><th>token</th></tr>");
    for r in &state.readings {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{} •••• {}</td><td>{} {}</td><td>{}</td></tr>",
            escape(&r.reading),
            escape(&r.brand),
            escape(&r.last4),
            r.amount,
            escape(&r.currency),
            escape(&r.token)
        ));
    }
    html.push_str("</table></body></html>");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// A running terminal simulator.
pub struct TerminalSim {
    running: Running,
}

impl TerminalSim {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8206);

    /// Binds `listen` and serves (port 0 in tests).
    pub async fn start(listen: SocketAddr) -> Result<TerminalSim, TerminalError> {
        let listener =
            std::net::TcpListener::bind(listen).map_err(|source| TerminalError::Bind {
                addr: listen,
                source,
            })?;
        let shared: web::Data<Shared> = web::Data::new(Arc::new(Mutex::new(State::default())));
        let running = Running::start(listener, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(shared.clone())
                .route("/", web::get().to(page))
                .route("/present", web::post().to(present))
                .route("/v1/readings", web::post().to(read))
                .route("/api/readings", web::get().to(readings))
                .route("/healthz", web::get().to(healthz));
        })
        .map_err(|source| TerminalError::Bind {
            addr: listen,
            source,
        })?;
        Ok(TerminalSim { running })
    }

    pub fn address(&self) -> SocketAddr {
        self.running.address()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address())
    }

    pub async fn stop(mut self) {
        self.running.stop("terminal").await;
    }
}

impl Simulator for TerminalSim {
    fn base_url(&self) -> String {
        TerminalSim::base_url(self)
    }
    async fn stop(self) {
        TerminalSim::stop(self).await
    }
}

/// Runs the terminal until Ctrl-C or SIGTERM.
pub fn run(args: TerminalArgs) -> Result<(), TerminalError> {
    server::run("terminal", TerminalSim::start(args.listen))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let res = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("answers");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON"))
    }

    #[tokio::test]
    async fn a_card_is_read_once_and_only_its_token_leaves_the_terminal() {
        let sim = TerminalSim::start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("starts");
        let base = sim.base_url();
        let (status, body) = post(
            &base,
            "/v1/readings",
            json!({"amount": 500, "currency": "EUR"}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("no_card_presented"))
        );
        let (status, _) = post(&base, "/present", json!({"card": "declined"})).await;
        assert_eq!(status, 200);
        let (status, read) = post(
            &base,
            "/v1/readings",
            json!({"amount": 500, "currency": "EUR"}),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(read["token"], "pm_card_chargeDeclined");
        assert_eq!(read["last4"], "0002");
        assert!(!read.to_string().contains("4000000000000002"), "{read}");
        let (status, _) = post(
            &base,
            "/v1/readings",
            json!({"amount": 500, "currency": "EUR"}),
        )
        .await;
        assert_eq!(status, 409, "the reading took the card off the reader");
        let (status, read) = post(
            &base,
            "/v1/readings",
            json!({"amount": 500, "currency": "EUR", "card": "4242 4242 4242 4242"}),
        )
        .await;
        assert_eq!((status, read["brand"].as_str()), (201, Some("visa")));
        let (status, _) = post(
            &base,
            "/v1/readings",
            json!({"amount": 0, "currency": "EUR", "card": "visa"}),
        )
        .await;
        assert_eq!(status, 422);
        let (status, _) = post(
            &base,
            "/v1/readings",
            json!({"amount": 5, "currency": "EUR", "card": "4111111111111111"}),
        )
        .await;
        assert_eq!(status, 422);
        sim.stop().await;
    }
}
