//! The feeds, as the hub's importer pulls them (no key needed; the simulator listens on
//! loopback by default):
//!
//! - `GET /feeds` → `{"feeds": [{"feed", "columns", "sequence", "cursor", "rows",
//!   "compacted"}]}`.
//! - `GET /feeds/{feed}?since=<cursor>&limit=<n>&format=json|csv` → the live rows after the
//!   cursor in sequence order, at most `limit` (default 1000, 1 to 10,000) log entries: a
//!   [`protocol::feed::FeedPage`] as JSON (the default, or `Accept: application/json`), or
//!   CSV with the feed's columns as header (`format=csv`, or `Accept: text/csv`; `format`
//!   wins, and in `Accept` whichever of the two comes first). Both carry `X-Next-Cursor` and
//!   `X-Has-More`. No `since` (or an empty one): from the start.
//!
//! Errors (`{"error": {"code", "message"}}`, no fault consumed): 404 `unknown_feed`; 400
//! `bad_cursor` (not a cursor this simulator made for this feed), `bad_limit`, `bad_format`,
//! `bad_query`. Injected: 5xx `injected_failure`, a delay, a connection broken off mid-body.

use super::page;
use super::{lock, Shared};
use crate::common::error;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::feed::FeedKind;
use serde::Deserialize;
use serde_json::json;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::instrument;

pub(crate) const DEFAULT_LIMIT: usize = 1000;
pub(crate) const MAX_LIMIT: usize = 10_000;

/// The cursor after sequence `seq`: `c{seq}` (`c0` is the start).
pub(crate) fn cursor(seq: u64) -> String {
    format!("c{seq}")
}

/// The sequence of a cursor in its canonical form, `c` and a number without leading zeros.
pub(crate) fn parse_cursor(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('c')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/feeds", web::get().to(list))
        .route("/feeds/{feed}", web::get().to(feed));
}

/// The formats a page is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    since: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

async fn list(shared: web::Data<Shared>) -> HttpResponse {
    let figures = lock(&shared.sim).store.figures();
    let feeds: Vec<_> = figures
        .into_iter()
        .map(|f| {
            json!({
                "feed": f.feed,
                "columns": f.feed.columns(),
                "sequence": f.sequence,
                "cursor": f.cursor,
                "rows": f.rows,
                "compacted": f.compacted,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "feeds": feeds }))
}

fn bad_request(code: &str, message: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn unknown_feed(name: &str) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "unknown_feed",
        &format!(
            "No feed '{name}': the feeds are products, prices, stock, promotions and coupons."
        ),
    )
}

fn bad_cursor(text: &str) -> HttpResponse {
    let shown: String = text.chars().take(80).collect();
    bad_request(
        "bad_cursor",
        &format!("'{shown}' is not a cursor of this feed: pass the next_cursor of an earlier page, or no since to start from the beginning."),
    )
}

/// The limit, the format and the cursor text of a request, or the code and message of the 400
/// to answer.
fn parse_request(request: &HttpRequest) -> Result<(usize, Format, String), (&'static str, String)> {
    let query = web::Query::<FeedQuery>::from_query(request.query_string())
        .map_err(|e| ("bad_query", format!("The query string is malformed: {e}")))?
        .into_inner();
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                (
                    "bad_limit",
                    format!("limit is a number from 1 to {MAX_LIMIT}."),
                )
            })?,
    };
    let format = match query.format.as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(_) => return Err(("bad_format", "format is json or csv.".into())),
        None => {
            let accept = request
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if wants_csv(accept) {
                Format::Csv
            } else {
                Format::Json
            }
        }
    };
    Ok((limit, format, query.since.unwrap_or_default()))
}

/// Whether `text/csv` comes before `application/json` in an `Accept` header (absent: JSON).
fn wants_csv(accept: &str) -> bool {
    let accept = accept.to_ascii_lowercase();
    match (accept.find("text/csv"), accept.find("application/json")) {
        (Some(csv), Some(json)) => csv < json,
        (csv, _) => csv.is_some(),
    }
}

#[instrument(skip_all, fields(feed = %name))]
async fn feed(
    shared: web::Data<Shared>,
    request: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    let Some(feed) = FeedKind::parse(&name) else {
        return unknown_feed(&name);
    };
    let (limit, format, since) = match parse_request(&request) {
        Ok(parsed) => parsed,
        Err((code, message)) => return bad_request(code, &message),
    };
    let (after, fault) = {
        let mut sim = lock(&shared.sim);
        let after = match since.as_str() {
            "" => 0,
            text => match parse_cursor(text).filter(|s| *s <= sim.store.head(feed)) {
                Some(after) => after,
                None => return bad_cursor(text),
            },
        };
        (after, sim.faults.next_response())
    };
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if let Some(status) = fault.fail {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(
            status,
            "injected_failure",
            "The ERP failed to answer (injected).",
        );
    }
    let page = {
        let mut sim = lock(&shared.sim);
        let sim = &mut *sim;
        let page = page::build(
            &sim.store,
            &mut sim.faults,
            feed,
            after,
            limit,
            format == Format::Csv,
        );
        sim.stats.pages_served += 1;
        sim.stats.rows_served += page.rows.len() as u64;
        page
    };
    let (next_cursor, has_more) = (page.next_cursor(), page.has_more);
    let rendered = match format {
        Format::Json => page::feed_page_json(&page).map_err(|e| e.to_string()),
        Format::Csv => page::csv(feed, &page.rows).map_err(|e| e.to_string()),
    };
    let body = match rendered {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The page could not be rendered.",
            );
        }
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(match format {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        })
        .insert_header(("x-next-cursor", next_cursor))
        .insert_header(("x-has-more", has_more.to_string()));
    if fault.reset {
        tracing::info!("breaking the connection off (injected)");
        let half = body.len() / 2;
        return response.body(BrokenOff {
            head: Some(Bytes::from(body).slice(..half.max(1))),
        });
    }
    response.body(body)
}

/// A body that sends its first bytes and then fails, so the server drops the connection
/// mid-response (the `reset` fault).
struct BrokenOff {
    head: Option<Bytes>,
}

impl MessageBody for BrokenOff {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(match self.head.take() {
            Some(head) => Ok(head),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (injected)",
            )),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_cursors_parse() {
        assert_eq!(parse_cursor("c0"), Some(0));
        assert_eq!(parse_cursor("c120"), Some(120));
        for bad in [
            "",
            "c",
            "c01",
            "120",
            "c-1",
            "c1x",
            "C1",
            "c 1",
            "c99999999999999999999999",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn accept_picks_the_first_of_csv_and_json() {
        assert!(wants_csv("text/csv"));
        assert!(wants_csv("text/csv, application/json;q=0.5"));
        assert!(!wants_csv("application/json, text/csv"));
        assert!(!wants_csv("*/*"));
        assert!(!wants_csv(""));
    }
}
