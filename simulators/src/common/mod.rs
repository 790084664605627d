//! What the OMS and logistics simulators share, taken from the payment simulator's patterns:
//! injected faults and the gate every partner API call passes ([`faults`]), signed, retried,
//! bounded webhook delivery to one endpoint ([`webhooks`]), the accelerated clock ([`clock`]),
//! and the plumbing of a simulator process — serving, the stdout line, Ctrl-C/SIGTERM
//! ([`server`]).

pub(crate) mod clock;
pub(crate) mod faults;
pub(crate) mod server;
pub(crate) mod webhooks;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Locks a mutex, going on past a panic elsewhere: every lock in the simulators guards one
/// synchronous step that leaves the state consistent.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The wall clock, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `{prefix}_{ULID}`, e.g. `evt_01J…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// The error shape of the OMS and logistics APIs: `{"error": {"code", "message"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

/// Whether `url` is an absolute http(s) URL.
pub(crate) fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// `2024-02-29 12:00:00 UTC` for a Unix time, as the dashboards show it.
pub(crate) fn timestamp(unix: i64) -> String {
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
    fn timestamps_read_as_utc() {
        assert_eq!(timestamp(1_709_208_000), "2024-02-29 12:00:00 UTC");
    }

    #[test]
    fn only_http_urls_pass() {
        assert!(is_http_url("http://127.0.0.1:8080/webhooks/oms"));
        assert!(!is_http_url("ftp://example.test/"));
        assert!(!is_http_url("not a url"));
    }
}
