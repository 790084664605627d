//! The scheduled pull: every `import.pull.every`, for each configured feed in the order products
//! → prices → stock → promotions → coupons, `GET {base_url}/feeds/{feed}?since=<cursor>&limit=
//! <page_size>` (JSON pages, [`protocol::feed::FeedPage`]) until the ERP has no more, applying
//! the pages and then storing the cursor. The catalog feeds (products, prices) apply their pages
//! in batches of up to [`MAX_BATCH_ROWS`] rows, one catalog snapshot each (one per round for
//! most rounds); the other feeds page by page. The cursor is stored only after the rows before
//! it are durably applied, so a crash re-pulls at most one batch, which idempotency makes
//! harmless; it survives restarts.
//!
//! All pages of one feed in one cycle make one import run (rows numbered through the pages). A
//! cycle that fails (the ERP unreachable, slow past `timeout`, answering an error or a page
//! that is not JSON; or a storage failure) stops there — later feeds wait, so prices never
//! arrive before their products — and the next cycle comes after a backoff doubling from
//! `every` up to `max_backoff`. So does an ERP that answers `has_more` with a cursor the round
//! already asked with (it would be asked for the same pages forever): the round stops, its run
//! is stored as failed and the feed's pull status shows the error. The pull runs on its own
//! task: a slow or failing ERP never blocks a request.

use super::{parse, store::CursorRecord, ImportError, Importer};
use crate::config::PullSettings;
use protocol::feed::{FeedKind, FeedPage};
use std::time::Duration;

/// The feeds of one cycle, in the order they are pulled.
pub const ORDER: [FeedKind; 5] = [
    FeedKind::Products,
    FeedKind::Prices,
    FeedKind::Stock,
    FeedKind::Promotions,
    FeedKind::Coupons,
];

/// The wait before the next cycle after `failures` failed cycles in a row.
pub fn backoff(every: Duration, max: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return every;
    }
    let factor = 1u32 << failures.min(16);
    every.saturating_mul(factor).min(max.max(every))
}

/// Runs the schedule until the importer stops.
pub async fn run(importer: Importer, settings: PullSettings) {
    let stop = importer.stopping();
    run_until(importer, settings, stop).await
}

/// Runs the schedule until the importer stops or `stop` turns `true` (in a cluster: the end
/// of this node's term as the `ImportSchedulers` singleton; the cursors are stored, so the
/// next holder's first cycle goes on from them).
pub async fn run_until(
    importer: Importer,
    settings: PullSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the ERP pull cannot start: no HTTP client");
            return;
        }
    };
    let mut failures = 0u32;
    tracing::info!(base_url = %settings.base_url, every = ?settings.every, "ERP pull scheduled");
    loop {
        if *stop.borrow() {
            return;
        }
        match cycle(&importer, &client, &settings, &stop).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "ERP pull failed; backing off");
            }
        }
        let wait = backoff(settings.every, settings.max_backoff, failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One cycle: every configured, enabled feed in [`ORDER`]; stops at the first failure.
pub async fn cycle(
    importer: &Importer,
    client: &reqwest::Client,
    settings: &PullSettings,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), ImportError> {
    for feed in ORDER {
        if !settings.feeds.contains(&feed) || !importer.enabled(feed) {
            continue;
        }
        let pulled = pull_feed(importer, client, settings, feed, stop).await;
        importer.record_pull(feed, pulled.as_ref().map(|_| ()));
        pulled?;
    }
    Ok(())
}

async fn fetch(
    client: &reqwest::Client,
    settings: &PullSettings,
    feed: FeedKind,
    since: &str,
) -> Result<FeedPage, ImportError> {
    let url = format!("{}/feeds/{feed}", settings.base_url.trim_end_matches('/'));
    let source = |e: reqwest::Error| ImportError::Source(format!("GET {url}: {e}"));
    let page: FeedPage = client
        .get(&url)
        .query(&[("since", since), ("limit", &settings.page_size.to_string())])
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(source)?
        .error_for_status()
        .map_err(source)?
        .json()
        .await
        .map_err(source)?;
    if page.feed != feed {
        return Err(ImportError::Source(format!(
            "GET {url} answered a page of the {} feed",
            page.feed
        )));
    }
    Ok(page)
}

/// The failure of a round whose ERP answered "more" without moving the cursor on.
fn stuck(cursor: &str) -> ImportError {
    let shown = if cursor.is_empty() {
        "the start"
    } else {
        cursor
    };
    ImportError::Source(format!(
        "the ERP answered has_more=true with a cursor this round had already asked with \
         ({shown}): the cursor does not advance, so this round stopped; the next one retries \
         after the backoff"
    ))
}

/// The most rows of a catalog feed (products, prices) pulled before they are applied: its
/// pages are applied together, as one catalog snapshot, up to this many rows (about 1.5 KiB
/// each in memory). Publishing a snapshot copies the catalog, so one per page would make a
/// large import slow down as the catalog grows.
pub const MAX_BATCH_ROWS: usize = 20_000;

/// Whether the pages of `feed` are applied in batches (the feeds that publish the catalog);
/// the others are applied page by page.
fn batched(feed: FeedKind) -> bool {
    matches!(feed, FeedKind::Products | FeedKind::Prices)
}

/// A feed's pull in one round: the run of its pages, the rows pulled and not yet applied, and
/// the cursors.
struct Round<'a> {
    importer: &'a Importer,
    feed: FeedKind,
    run: Option<super::Run>,
    pending: Vec<serde_json::Value>,
    /// The cursor stored.
    stored: String,
    /// The cursor after the pending rows.
    cursor: String,
}

impl Round<'_> {
    /// Applies the pending rows as one batch into the round's run, then stores the cursor after
    /// them: only once they are durably applied, so a crash re-pulls at most one batch, which
    /// idempotency makes harmless.
    async fn settle(&mut self) -> Result<(), ImportError> {
        let rows = std::mem::take(&mut self.pending);
        if !rows.is_empty() {
            let (importer, feed) = (self.importer, self.feed);
            let run = self
                .run
                .get_or_insert_with(|| importer.begin(feed, "pull", "puller"));
            importer.apply(run, parse::objects(feed, rows)).await?;
            run.set_cursor(&self.cursor);
        }
        if self.cursor != self.stored {
            let record = CursorRecord {
                feed: self.feed,
                cursor: self.cursor.clone(),
                updated_at: super::rfc3339(time::OffsetDateTime::now_utc()),
            };
            self.importer.store().put_cursor(&record).await?;
            self.stored = self.cursor.clone();
        }
        Ok(())
    }
}

/// Pulls one feed from its cursor until the ERP has no more; one run for its pages, applied
/// page by page or in batches ([`batched`]). A page that has more but does not move the cursor
/// on stops the round as failed ([`stuck`]); what was pulled before a failure is applied.
async fn pull_feed(
    importer: &Importer,
    client: &reqwest::Client,
    settings: &PullSettings,
    feed: FeedKind,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), ImportError> {
    let stored = importer
        .store()
        .cursor(feed)?
        .map(|c| c.cursor)
        .unwrap_or_default();
    let mut round = Round {
        importer,
        feed,
        run: None,
        pending: Vec::new(),
        cursor: stored.clone(),
        stored,
    };
    let limit = if batched(feed) { MAX_BATCH_ROWS } else { 1 };
    // The cursors this round asked with: "more" after one of them again is a loop.
    let mut asked = std::collections::HashSet::new();
    let result = loop {
        if *stop.borrow() {
            break Err(ImportError::Closed);
        }
        let page = match fetch(client, settings, feed, &round.cursor).await {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        asked.insert(round.cursor.clone());
        if page.has_more && asked.contains(&page.next_cursor) {
            // Asking again would get the same pages forever: a failed round, reported in a run
            // of its own when nothing was applied before it, and backed off like any other.
            round
                .run
                .get_or_insert_with(|| importer.begin(feed, "pull", "puller"));
            break Err(stuck(&page.next_cursor));
        }
        round
            .pending
            .extend(page.rows.into_iter().map(serde_json::Value::Object));
        round.cursor = page.next_cursor;
        if !page.has_more || round.pending.len() >= limit {
            if let Err(e) = round.settle().await {
                break Err(e);
            }
        }
        if !page.has_more {
            break Ok(());
        }
    };
    // Rows pulled before the ERP failed are applied (a batch that failed is not tried again:
    // `settle` took its rows).
    let result = match result {
        Err(e) if !round.pending.is_empty() && !matches!(e, ImportError::Closed) => {
            round.settle().await.and(Err(e))
        }
        other => other,
    };
    if let Some(run) = round.run {
        importer.finish(run, result.as_ref().err()).await?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let every = Duration::from_secs(10);
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (0..7).map(|f| backoff(every, max, f).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(every, max, u32::MAX), max);
        assert_eq!(
            backoff(every, Duration::from_secs(1), 3),
            every,
            "a cap below every is every"
        );
    }
}
