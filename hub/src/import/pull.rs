//! The scheduled pull: every `import.pull.every`, for each configured feed in the order products
//! → prices → stock → promotions → coupons, `GET {base_url}/feeds/{feed}?since=<cursor>&limit=
//! <page_size>` (JSON pages, [`protocol::feed::FeedPage`]) until the ERP has no more, applying
//! each page and then storing the cursor. The cursor is stored only after the page's rows are
//! durably applied, so a crash re-pulls at most one page, which idempotency makes harmless; it
//! survives restarts.
//!
//! All pages of one feed in one cycle make one import run (rows numbered through the pages). A
//! cycle that fails (the ERP unreachable, slow past `timeout`, answering an error or a page
//! that is not JSON; or a storage failure) stops there — later feeds wait, so prices never
//! arrive before their products — and the next cycle comes after a backoff doubling from
//! `every` up to `max_backoff`. The pull runs on its own task: a slow or failing ERP never
//! blocks a request.

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
    let mut stop = importer.stopping();
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

/// Pulls one feed from its cursor until the ERP has no more; one run for its pages.
async fn pull_feed(
    importer: &Importer,
    client: &reqwest::Client,
    settings: &PullSettings,
    feed: FeedKind,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), ImportError> {
    let store = importer.store().clone();
    let mut cursor = store.cursor(feed)?.map(|c| c.cursor).unwrap_or_default();
    let mut run = None;
    let result = loop {
        if *stop.borrow() {
            break Err(ImportError::Closed);
        }
        let page = match fetch(client, settings, feed, &cursor).await {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if !page.rows.is_empty() {
            let rows = page
                .rows
                .into_iter()
                .map(serde_json::Value::Object)
                .collect();
            let run = run.get_or_insert_with(|| importer.begin(feed, "pull", "puller"));
            if let Err(e) = importer.apply(run, parse::objects(feed, rows)).await {
                break Err(e);
            }
            run.set_cursor(&page.next_cursor);
        }
        if page.next_cursor != cursor {
            let record = CursorRecord {
                feed,
                cursor: page.next_cursor.clone(),
                updated_at: super::rfc3339(time::OffsetDateTime::now_utc()),
            };
            if let Err(e) = store.put_cursor(&record).await {
                break Err(e.into());
            }
            cursor = page.next_cursor;
        }
        if !page.has_more {
            break Ok(());
        }
    };
    if let Some(run) = run {
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
