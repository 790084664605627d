//! The node's Prometheus metrics (`GET /metrics`, behind the node's API token): HTTP requests
//! per route pattern, sales recorded and refused, and — read at scrape time from what the node
//! keeps anyway — its outbox backlog toward the hub, the journal, the sync link and its boards.

use crate::api::ApiState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Instant;

/// The process-wide series counted as things happen.
struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    sales: IntCounterVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // The definitions are constants: `new` and `register` fail only on an invalid or repeated
    // name, which the tests would show at once.
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "omnihub_node_http_requests_total",
                "HTTP requests answered, by method, route pattern and status class.",
            ),
            &["method", "route", "status"],
        )
        .expect("a valid metric definition");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "omnihub_node_http_request_duration_seconds",
                "Time to answer an HTTP request, by method, route pattern and status class.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("a valid metric definition");
        let sales = IntCounterVec::new(
            Opts::new(
                "omnihub_node_sales_total",
                "Sales answered at this node: recorded (a retry's replay included) or refused.",
            ),
            &["outcome"],
        )
        .expect("a valid metric definition");
        for c in [&http_requests, &sales] {
            registry
                .register(Box::new(c.clone()))
                .expect("a metric registered once");
        }
        registry
            .register(Box::new(http_duration.clone()))
            .expect("a metric registered once");
        Metrics {
            registry,
            http_requests,
            http_duration,
            sales,
        }
    })
}

/// Counts one sale's outcome.
pub(crate) fn sale<T, E>(outcome: &Result<T, E>) {
    let label = if outcome.is_ok() {
        "recorded"
    } else {
        "refused"
    };
    metrics().sales.with_label_values(&[label]).inc();
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts every request by its route pattern (never the raw path) and status class.
pub(crate) async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let class = status_class(res.status().as_u16());
    let m = metrics();
    m.http_requests
        .with_label_values(&[&method, &route, class])
        .inc();
    m.http_duration
        .with_label_values(&[&method, &route, class])
        .observe(started.elapsed().as_secs_f64());
    Ok(res)
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) {
    if let Ok(g) = IntGauge::new(name, help) {
        g.set(value);
        let _ = registry.register(Box::new(g));
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The exposition: the counted series and the node's state now.
fn scrape(state: &ApiState, boards: &crate::boards::Boards) -> String {
    let now_ms = crate::store::now_ms();
    let scraped = Registry::new();
    let store = &state.store;
    if let Ok(c) = store.cursors() {
        gauge(
            &scraped,
            "omnihub_node_outbox_pending_entries",
            "Changes of this node the hub has not acknowledged.",
            signed(c.pending_entries()),
        );
        gauge(
            &scraped,
            "omnihub_node_outbox_pending_items",
            "Items in those changes.",
            signed(c.pending_items),
        );
    }
    gauge(
        &scraped,
        "omnihub_node_journal_records",
        "Sales in the journal not yet acknowledged by the hub.",
        signed(store.journal_records() as u64),
    );
    gauge(
        &scraped,
        "omnihub_node_store_failed",
        "1 once a write failed (the node refuses changes until restarted).",
        i64::from(store.failure().is_some()),
    );
    let sync = store.sync_state();
    gauge(
        &scraped,
        "omnihub_node_sync_connected",
        "1 while the node is connected to the hub.",
        i64::from(sync.connected),
    );
    if let Some(ms) = sync.last_ack_ms {
        gauge(
            &scraped,
            "omnihub_node_sync_last_ack_age_seconds",
            "Seconds since the hub last acknowledged this node's changes.",
            signed(now_ms.saturating_sub(ms) / 1000),
        );
    }
    if let Some(skew) = sync.skew_ms {
        gauge(
            &scraped,
            "omnihub_node_clock_skew_ms",
            "The hub's clock minus this node's, at the last handshake.",
            skew,
        );
    }
    let reports = boards.reports();
    gauge(
        &scraped,
        "omnihub_node_boards_configured",
        "Boards configured at this node.",
        signed(reports.len() as u64),
    );
    if let Ok(online) = IntGaugeVec::new(
        Opts::new(
            "omnihub_node_board_online",
            "1 while a board is connected and heard from within dark_after.",
        ),
        &["board"],
    ) {
        for b in &reports {
            online
                .with_label_values(&[b.id.as_str()])
                .set(i64::from(!b.dark && b.connections > 0));
        }
        let _ = scraped.register(Box::new(online));
    }
    let mut families = metrics().registry.gather();
    families.extend(scraped.gather());
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    out
}

/// `GET /metrics` (the node's API token as `Authorization: Bearer`).
pub(crate) async fn endpoint(
    req: HttpRequest,
    state: web::Data<ApiState>,
    boards: web::Data<crate::boards::Boards>,
) -> HttpResponse {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = state.token.expose_secret();
    let ok = !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if !ok {
        return HttpResponse::Unauthorized().json(serde_json::json!({"error": {
            "code": "unauthenticated",
            "message": "send the node's API token as Authorization: Bearer <token>",
        }}));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(scrape(&state, &boards))
}
