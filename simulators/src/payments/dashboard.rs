//! `GET /`: a read-only dashboard for people — what the simulator is, how to point a Stripe
//! client library at it, the test cards, the newest Checkout Sessions, PaymentIntents and
//! Refunds, the webhook endpoints (their URLs, never their secrets) and deliveries, the audit
//! of `/_sim/audit` and the faults in force. It refreshes itself every few seconds and changes
//! nothing (reading it may expire sessions whose time has passed, as any read does).

use super::faults::Faults;
use super::ledger::{money, Audit};
use super::objects::SessionStatus;
use super::webhooks::{Delivery, RequestInfo};
use super::{lock, Shared};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

/// Rows per table.
const RECENT: usize = 20;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config.route("/", web::get().to(show));
}

#[derive(Serialize)]
struct SessionRow {
    id: String,
    created: String,
    amount: String,
    status: &'static str,
    payment_status: &'static str,
    client_reference_id: Option<String>,
    open: bool,
}

#[derive(Serialize)]
struct IntentRow {
    id: String,
    created: String,
    amount: String,
    received: String,
    status: &'static str,
    latest_charge: Option<String>,
}

#[derive(Serialize)]
struct RefundRow {
    id: String,
    created: String,
    amount: String,
    charge: String,
    payment_intent: String,
    reason: Option<String>,
}

#[derive(Serialize)]
struct EndpointRow {
    url: String,
    enabled_events: String,
    description: Option<String>,
}

#[derive(Serialize)]
struct FaultRow {
    name: &'static str,
    value: String,
    meaning: &'static str,
}

/// The ledger's part of the page, read under one lock.
struct Books {
    sessions: Vec<SessionRow>,
    more_sessions: bool,
    intents: Vec<IntentRow>,
    more_intents: bool,
    refunds: Vec<RefundRow>,
    more_refunds: bool,
    audit: Audit,
    now: i64,
}

async fn show(shared: web::Data<Shared>, request: HttpRequest) -> HttpResponse {
    let books = shared.with_ledger(&RequestInfo::default(), |ledger, now| {
        let (sessions, more_sessions) = ledger.sessions.newest(RECENT, |_| true);
        let sessions = sessions
            .into_iter()
            .map(|s| SessionRow {
                id: s.id.clone(),
                created: timestamp(s.created),
                amount: money(s.amount_total(), &s.currency),
                status: s.status.as_str(),
                payment_status: if s.paid() { "paid" } else { "unpaid" },
                client_reference_id: s.client_reference_id.clone(),
                open: s.status == SessionStatus::Open,
            })
            .collect();
        let (intents, more_intents) = ledger.intents.newest(RECENT, |_| true);
        let intents = intents
            .into_iter()
            .map(|i| IntentRow {
                id: i.id.clone(),
                created: timestamp(i.created),
                amount: money(i.amount, &i.currency),
                received: money(i.amount_received, &i.currency),
                status: i.status.as_str(),
                latest_charge: i.latest_charge.clone(),
            })
            .collect();
        let (refunds, more_refunds) = ledger.refunds.newest(RECENT, |_| true);
        let refunds = refunds
            .into_iter()
            .map(|r| RefundRow {
                id: r.id.clone(),
                created: timestamp(r.created),
                amount: money(r.amount, &r.currency),
                charge: r.charge.clone(),
                payment_intent: r.payment_intent.clone(),
                reason: r.reason.clone(),
            })
            .collect();
        Books {
            sessions,
            more_sessions,
            intents,
            more_intents,
            refunds,
            more_refunds,
            audit: ledger.audit(),
            now,
        }
    });
    // The endpoints' JSON without their signing secrets, reduced further to what the page shows.
    let endpoints = endpoint_rows(&shared.webhooks.endpoints());
    let deliveries: Vec<Delivery> = shared
        .webhooks
        .deliveries()
        .into_iter()
        .rev()
        .take(RECENT)
        .collect();
    let faults = active_faults(&lock(&shared.faults));

    let api_base = api_base(&request);
    let (host, port, protocol) = match url::Url::parse(&api_base) {
        Ok(u) => (
            u.host_str().unwrap_or("127.0.0.1").to_owned(),
            u.port_or_known_default().unwrap_or(80),
            u.scheme().to_owned(),
        ),
        Err(_) => ("127.0.0.1".to_owned(), 80, "http".to_owned()),
    };
    let page = context! {
        merchant => shared.merchant_name,
        api_base => api_base,
        api_host => host,
        api_port => port,
        api_protocol => protocol,
        now => timestamp(books.now),
        refresh_seconds => 5,
        recent => RECENT,
        sessions => books.sessions,
        more_sessions => books.more_sessions,
        intents => books.intents,
        more_intents => books.more_intents,
        refunds => books.refunds,
        more_refunds => books.more_refunds,
        endpoints => endpoints,
        deliveries => deliveries,
        audit => books.audit,
        faults => faults,
    };
    match shared
        .pages
        .get_template("dashboard.html")
        .and_then(|t| t.render(page))
    {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the dashboard");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The dashboard could not be shown.")
        }
    }
}

/// Where the viewer reached the simulator, which is where a client library on the same machine
/// reaches its API too.
fn api_base(request: &HttpRequest) -> String {
    let info = request.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

fn endpoint_rows(list: &Value) -> Vec<EndpointRow> {
    let Some(data) = list["data"].as_array() else {
        return Vec::new();
    };
    data.iter()
        .map(|e| EndpointRow {
            url: e["url"].as_str().unwrap_or_default().to_owned(),
            enabled_events: e["enabled_events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            description: e["description"].as_str().map(str::to_owned),
        })
        .collect()
}

/// The faults that differ from none, with what they do.
fn active_faults(faults: &Faults) -> Vec<FaultRow> {
    let mut rows = Vec::new();
    let mut add = |on: bool, name, value: String, meaning| {
        if on {
            rows.push(FaultRow {
                name,
                value,
                meaning,
            });
        }
    };
    let w = &faults.webhooks;
    add(
        faults.latency_ms > 0,
        "latency_ms",
        faults.latency_ms.to_string(),
        "added to every /v1 call, in milliseconds",
    );
    add(
        faults.fail_next > 0,
        "fail_next",
        faults.fail_next.to_string(),
        "the next /v1 calls answered 500 api_error",
    );
    add(
        faults.timeout_next > 0,
        "timeout_next",
        faults.timeout_next.to_string(),
        "the next /v1 calls held past a client's timeout",
    );
    add(
        w.duplicate > 1,
        "webhooks.duplicate",
        w.duplicate.to_string(),
        "times each event is sent",
    );
    add(
        w.delay_ms > 0,
        "webhooks.delay_ms",
        w.delay_ms.to_string(),
        "waited before each delivery, in milliseconds",
    );
    add(
        w.reorder,
        "webhooks.reorder",
        "true".into(),
        "queued events delivered newest first",
    );
    add(
        w.drop_next > 0,
        "webhooks.drop_next",
        w.drop_next.to_string(),
        "the next deliveries dropped",
    );
    add(
        w.pause,
        "webhooks.pause",
        "true".into(),
        "events queued, none sent",
    );
    rows
}

/// `2024-02-29 12:00:00 UTC` for a Unix time.
fn timestamp(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_compiles() {
        assert!(super::super::hosted::pages()
            .get_template("dashboard.html")
            .is_ok());
    }

    #[test]
    fn timestamps_read_as_utc() {
        assert_eq!(timestamp(1_709_208_000), "2024-02-29 12:00:00 UTC");
    }

    #[test]
    fn only_faults_in_force_are_listed() {
        assert!(active_faults(&Faults::default()).is_empty());
        let mut faults = Faults {
            fail_next: 2,
            ..Faults::default()
        };
        faults.webhooks.pause = true;
        let names: Vec<&str> = active_faults(&faults).iter().map(|f| f.name).collect();
        assert_eq!(names, ["fail_next", "webhooks.pause"]);
    }
}
