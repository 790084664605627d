//! The HTTP side of the load generators: one pooled client per phase, built the same way for every
//! phase so their figures compare, and a timed exchange that turns each response into an
//! [`Outcome`].

use super::report::Outcome;
use super::LoadError;
use reqwest::{Client, RequestBuilder, StatusCode};
use std::time::{Duration, Instant};

/// Longest wait for one whole request and response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for one hub: its base URL and a connection pool sized for the concurrency.
#[derive(Debug, Clone)]
pub struct HubClient {
    base: String,
    http: Client,
}

impl HubClient {
    /// A client with keep-alive connections for `concurrency` clients at once, timeouts, no
    /// proxy (loopback only) and no cookie store (baskets are reached with `X-Basket-Token`).
    pub fn new(base: &str, concurrency: usize) -> Result<HubClient, LoadError> {
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(concurrency)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy()
            .user_agent(concat!("omnihub-load/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(LoadError::Client)?;
        Ok(HubClient {
            base: base.to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.http.put(format!("{}{path}", self.base))
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.http.patch(format!("{}{path}", self.base))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.http.delete(format!("{}{path}", self.base))
    }

    /// GETs `path` with `query` and decodes the JSON body, for steps outside the measured window.
    pub async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, LoadError> {
        let unexpected = |detail: String| LoadError::Unexpected {
            target: self.base.clone(),
            what: format!("GET {path}"),
            detail,
        };
        fetch_json(self.get(path).query(query))
            .await
            .map_err(unexpected)
    }
}

/// Sends `request` and decodes the JSON body of a 2xx answer, for steps outside the measured
/// window; on failure, what went wrong in a few words.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    request: RequestBuilder,
) -> Result<T, String> {
    let response = request.send().await.map_err(|e| transport_kind(&e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport_kind(&e))?;
    if !status.is_success() {
        return Err(status_kind(status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the body is not the JSON expected: {e}"))
}

/// `text` as one URL path segment (percent-encoding all but unreserved characters).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A finished exchange: when it finished, its outcome and, on success, the body.
#[derive(Debug)]
pub struct Exchange {
    pub finished: Instant,
    pub outcome: Outcome,
    pub body: Option<Vec<u8>>,
}

/// Sends `request`, reads the whole body (so the connection goes back to the pool) and times it.
/// 2xx is a success; a 422 whose error code is in `expected_refusals` is a business rejection;
/// anything else, or no response, is an error.
pub async fn exchange(request: RequestBuilder, expected_refusals: &[&str]) -> Exchange {
    let started = Instant::now();
    let result = match request.send().await {
        Ok(response) => {
            let status = response.status();
            response.bytes().await.map(|body| (status, body))
        }
        Err(e) => Err(e),
    };
    let finished = Instant::now();
    let (outcome, body) = match result {
        Ok((status, body)) if status.is_success() => {
            (Outcome::Ok(finished - started), Some(body.to_vec()))
        }
        Ok((status, body)) => {
            let code = error_code(&body);
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && code
                    .as_deref()
                    .is_some_and(|c| expected_refusals.contains(&c))
            {
                (Outcome::Rejected, None)
            } else {
                (Outcome::Error(status_kind(status, &body)), None)
            }
        }
        Err(e) => (Outcome::Error(transport_kind(&e)), None),
    };
    Exchange {
        finished,
        outcome,
        body,
    }
}

/// The `code` of the hub's `{"error": {"code", "message"}}` body, if it is one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get("code")?
        .as_str()
        .map(str::to_string)
}

/// A short, low-cardinality name for an unexpected response, e.g. `HTTP 500 internal`.
pub fn status_kind(status: StatusCode, body: &[u8]) -> String {
    match error_code(body) {
        Some(code) => format!("HTTP {} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// A short, low-cardinality name for a transport failure (no URL in it, so kinds group).
pub fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timeout (over {} s)", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection refused or failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "broken response body".to_string()
    } else {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        format!("request failed: {text}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_named_by_status_and_code() {
        let body = br#"{"error":{"code":"insufficient_stock","message":"only 2 of X available"}}"#;
        assert_eq!(error_code(body).as_deref(), Some("insufficient_stock"));
        assert_eq!(
            status_kind(StatusCode::UNPROCESSABLE_ENTITY, body),
            "HTTP 422 insufficient_stock"
        );
        assert_eq!(status_kind(StatusCode::BAD_GATEWAY, b"<html>"), "HTTP 502");
        assert_eq!(error_code(br#"{"error":"flat"}"#), None);
    }
}
