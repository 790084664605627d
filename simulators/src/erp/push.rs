//! Pushing feeds to the hub: the rows after a cursor go, a page (`page_size` rows) per
//! request, as `POST {hub}/api/v1/import/{feed}` with a JSON body `{"rows": [...]}` or a CSV
//! body (`Content-Type: text/csv`), signed in `X-Omnihub-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256 of "{t}.{body}" keyed with the push secret>` — the scheme of the payment
//! provider's webhooks. Pages go one after the other; the first answer that is not 2xx stops
//! the push. Row faults apply to pushed rows as to pulled ones.
//!
//! `POST /test/push` pushes once and returns what the hub answered; `--push-to` pushes every
//! `--push-every` what changed since the last push that the hub accepted.

use super::page::{self, Page};
use super::{lock, Shared};
use crate::common::webhooks::signature;
use crate::common::{timestamp, unix_now};
use protocol::feed::{FeedKind, SIGNATURE_HEADER};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a non-JSON answer kept in a report.
const ANSWER_TEXT: usize = 2_000;

/// The body of a push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    /// `{"rows": [...]}`, `Content-Type: application/json`.
    #[default]
    Json,
    /// The feed's CSV, `Content-Type: text/csv; charset=utf-8`.
    Csv,
}

/// The HTTP client and the key of the signatures.
pub(crate) struct Pusher {
    client: reqwest::Client,
    secret: String,
}

/// One push request, as the status page lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushRecord {
    pub feed: FeedKind,
    pub url: String,
    pub rows: usize,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: String,
}

/// What the hub answered to one request.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushAnswer {
    pub status: u16,
    /// The answer's JSON (its text when it is not JSON).
    pub body: Value,
    pub rows: usize,
    /// The cursor after the rows of this request.
    pub next_cursor: String,
}

/// The outcome of a push.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushReport {
    pub feed: FeedKind,
    pub url: String,
    pub format: PushFormat,
    pub rows_pushed: usize,
    pub requests: Vec<PushAnswer>,
    /// The cursor after the last rows the hub accepted.
    pub next_cursor: String,
    /// Whether every row after the cursor was accepted.
    pub complete: bool,
    #[serde(skip)]
    pub next: u64,
}

/// Why a push stopped before the hub answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    #[error("cannot reach the hub at {url} (after {pushed} rows were accepted): {source}")]
    Unreachable {
        url: String,
        pushed: usize,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot render the rows: {0}")]
    Render(String),
}

impl Pusher {
    pub(crate) fn new(secret: String) -> Result<Pusher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent("omnihub-sim-erp")
            .build()?;
        Ok(Pusher { client, secret })
    }

    /// Sends one signed body; the status and the answer.
    async fn send(
        &self,
        url: &str,
        body: String,
        content_type: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let header = signature(&self.secret, unix_now(), &body);
        let response = self
            .client
            .post(url)
            .header("content-type", content_type)
            .header(SIGNATURE_HEADER, header)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| Value::String(text.chars().take(ANSWER_TEXT).collect()));
        Ok((status, body))
    }
}

/// The import endpoint of a feed on the hub at `base`.
pub(crate) fn endpoint(base: &str, feed: FeedKind) -> String {
    format!("{}/api/v1/import/{feed}", base.trim_end_matches('/'))
}

fn render(page: Page, format: PushFormat) -> Result<(String, &'static str), PushError> {
    let bytes = match format {
        PushFormat::Json => page::push_json(&page.rows).map_err(|e| e.to_string()),
        PushFormat::Csv => page::csv(page.feed, &page.rows).map_err(|e| e.to_string()),
    }
    .map_err(PushError::Render)?;
    let body = String::from_utf8(bytes).map_err(|e| PushError::Render(e.to_string()))?;
    let content_type = match format {
        PushFormat::Json => "application/json",
        PushFormat::Csv => "text/csv; charset=utf-8",
    };
    Ok((body, content_type))
}

/// Pushes the rows of `feed` after sequence `after` to the hub at `base`, page by page, until
/// none are left or the hub refuses one.
pub(crate) async fn push(
    shared: &Shared,
    feed: FeedKind,
    base: &str,
    after: u64,
    format: PushFormat,
    page_size: usize,
) -> Result<PushReport, PushError> {
    let url = endpoint(base, feed);
    let mut report = PushReport {
        feed,
        url: url.clone(),
        format,
        rows_pushed: 0,
        requests: Vec::new(),
        next_cursor: super::api::cursor(after),
        complete: false,
        next: after,
    };
    loop {
        let page = {
            let mut sim = lock(&shared.sim);
            let sim = &mut *sim;
            let csv = format == PushFormat::Csv;
            let page = page::build(
                &sim.store,
                &mut sim.faults,
                feed,
                report.next,
                page_size,
                csv,
            );
            sim.stats.rows_served += page.rows.len() as u64;
            page
        };
        if page.rows.is_empty() {
            report.complete = true;
            return Ok(report);
        }
        let (rows, next, has_more) = (page.rows.len(), page.next, page.has_more);
        let (body, content_type) = render(page, format)?;
        let answer = shared.pusher.send(&url, body, content_type).await;
        let record = |status: Option<u16>, error: Option<String>| PushRecord {
            feed,
            url: url.clone(),
            rows,
            status,
            error,
            at: timestamp(unix_now()),
        };
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(source) => {
                lock(&shared.sim).pushed(record(None, Some(source.to_string())));
                return Err(PushError::Unreachable {
                    url,
                    pushed: report.rows_pushed,
                    source,
                });
            }
        };
        lock(&shared.sim).pushed(record(Some(status), None));
        report.requests.push(PushAnswer {
            status,
            body,
            rows,
            next_cursor: super::api::cursor(next),
        });
        if !(200..300).contains(&status) {
            return Ok(report);
        }
        report.rows_pushed += rows;
        report.next = next;
        report.next_cursor = super::api::cursor(next);
        if !has_more {
            report.complete = true;
            return Ok(report);
        }
    }
}

/// Pushes every feed to `base` every `every`, each from where the hub last accepted (the
/// first time from the start).
pub(crate) async fn every(
    shared: Arc<Shared>,
    base: String,
    every: Duration,
    format: PushFormat,
    page_size: usize,
) {
    let mut cursors = [0u64; 5];
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (feed, cursor) in FeedKind::ALL.into_iter().zip(cursors.iter_mut()) {
            match push(&shared, feed, &base, *cursor, format, page_size).await {
                Ok(report) => {
                    *cursor = report.next;
                    if report.rows_pushed > 0 {
                        info!(%feed, rows = report.rows_pushed, "pushed to the hub");
                    }
                    if !report.complete {
                        let status = report.requests.last().map(|r| r.status);
                        warn!(%feed, ?status, "the hub refused a push; retrying next time");
                    }
                }
                Err(e) => warn!(%feed, error = %e, "push failed; retrying next time"),
            }
        }
    }
}
