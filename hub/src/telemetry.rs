//! Tracing set-up for the hub process: text or JSON lines, filtered by `RUST_LOG` (default
//! `info`, with sled's chatter at `warn`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber once; later calls do nothing. Besides the log lines, every
/// WARN and ERROR goes to the ops page's ring of recent errors (`crate::monitor::errors`),
/// whatever `RUST_LOG` says.
pub fn init(json: bool) {
    let _ = subscriber(json, crate::monitor::errors::ErrorRing::process()).try_init();
}

/// The hub's subscriber: log lines filtered by `RUST_LOG`, and `ring` fed with every WARN and
/// ERROR. The ring sees INFO spans too, for the request id of the request an event is in.
fn subscriber(
    json: bool,
    ring: crate::monitor::errors::ErrorRing,
) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::filter::{filter_fn, LevelFilter};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sled=warn"));
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_filter(filter.clone())
    });
    let lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_filter(filter)
    });
    let ring = ring.with_filter(
        filter_fn(|meta| {
            if meta.is_span() {
                *meta.level() <= tracing::Level::INFO
            } else {
                *meta.level() <= tracing::Level::WARN
            }
        })
        .with_max_level_hint(LevelFilter::INFO),
    );
    tracing_subscriber::registry()
        .with(text)
        .with(lines)
        .with(ring)
}

/// The root span of every HTTP request: its request id (`crate::monitor::http`, echoed in the
/// `X-Request-Id` header), method, route and path, never the query string, which can carry
/// secrets (a guest's order-lookup key).
pub struct RequestSpans;

impl tracing_actix_web::RootSpanBuilder for RequestSpans {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        let route = request.match_pattern().unwrap_or_default();
        let request_id = request
            .extensions()
            .get::<crate::monitor::http::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            request_id = %request_id,
            http.method = %request.method(),
            http.route = %route,
            http.path = %request.path(),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::errors::{ErrorRing, RecentErrors};
    use std::sync::OnceLock;

    #[test]
    fn warnings_reach_the_ring_with_their_request_id_and_info_does_not() {
        static RING: OnceLock<RecentErrors> = OnceLock::new();
        let ring = RING.get_or_init(RecentErrors::default);
        tracing::subscriber::with_default(subscriber(true, ErrorRing::filling(ring)), || {
            let span = tracing::info_span!("HTTP request", request_id = %"req-9");
            span.in_scope(|| {
                tracing::info!("served");
                tracing::warn!("slow partner");
            });
        });
        let kept = ring.newest(10);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].message, "slow partner");
        assert_eq!(kept[0].request_id.as_deref(), Some("req-9"));
    }
}
