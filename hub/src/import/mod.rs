//! The ERP importer: feeds pulled by cursor or pushed (signed), parsed from JSON or CSV into
//! [`Row`]s, validated field by field and applied by one [`FeedApplier`] per feed. Good rows are
//! applied, a bad row is rejected whole with its row number, field and reason, and every run
//! leaves an [`ImportReport`]. `docs/erp-feeds.md` is the contract.
//!
//! - [`Importer`] is the registry of appliers and the bookkeeping of runs; [`start`] builds it
//!   with the products, prices and stock appliers of this module (the back office registers the
//!   promotions and coupons appliers with [`Importer::register`]) and starts the scheduled
//!   [`pull`] and the price-validity timer ([`catalog::CatalogSide::run_timer`]).
//! - [`parse`] reads bodies; [`routes`] serves `POST /api/v1/import/{feed}` and the admin views;
//!   [`store`] keeps the importer's own state (ids, versions, the price book, cursors, runs) in
//!   the `import` tree of the hub's keyspace.
//! - [`products`] and [`prices`] change the catalog through [`catalog::CatalogSide`], one
//!   published snapshot per applied body (a push, an upload, a batch of pulled pages: see
//!   [`pull`]); [`stock`] changes the online warehouse through the inventory and forwards store
//!   stock to the stores' edge nodes as commands.

pub mod catalog;
pub mod fields;
pub mod parse;
pub mod prices;
pub mod products;
pub mod pull;
pub mod routes;
pub mod stock;
pub mod store;
#[cfg(test)]
mod tests;

use crate::clock::Clock;
use async_trait::async_trait;
use protocol::feed::FeedKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use store::ImportStore;

/// One row of a feed, with its fields as text (an absent field is an empty string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based number of the row among the data rows of the file or page (the CSV header is
    /// not counted).
    pub number: u64,
    pub fields: BTreeMap<String, String>,
}

impl Row {
    /// The trimmed value of a field; empty when absent.
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", |v| v.trim())
    }

    /// A row error about `field` of this row.
    pub fn error(&self, field: &str, reason: impl Into<String>) -> RowError {
        RowError {
            row: self.number,
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why a row was rejected: which row, which field, what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub row: u64,
    pub field: String,
    pub reason: String,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Changed something.
    Applied,
    /// Equal to what is already applied (the same feed twice).
    Unchanged,
    /// Older than what is applied (by source version): ignored.
    Stale,
    /// Rejected whole, with every reason found.
    Rejected(Vec<RowError>),
}

/// Applies the rows of one feed. An applier validates every row before it changes anything for
/// it, and never applies part of a row. Rows of one call are applied in order; the outcomes are
/// returned in the same order as the rows.
#[async_trait]
pub trait FeedApplier: Send + Sync {
    fn feed(&self) -> FeedKind;
    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError>;
}

/// A failure of the import itself (not of a row): the run stops and is reported as failed; what
/// was applied before stays applied (each row is whole), and a pull resumes from its cursor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the feed could not be read: {0}")]
    Source(String),
    #[error("the hub is shutting down")]
    Closed,
    /// No applier is registered for the feed.
    #[error("the {0} feed is not enabled on this hub")]
    NotEnabled(FeedKind),
    /// An applier broke its contract (e.g. answered fewer outcomes than rows).
    #[error("importer fault: {0}")]
    Internal(String),
}

impl From<crate::storage::StorageError> for ImportError {
    fn from(e: crate::storage::StorageError) -> ImportError {
        match e {
            crate::storage::StorageError::Closed => ImportError::Closed,
            other => ImportError::Storage(other.to_string()),
        }
    }
}

/// The report of one import run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    pub id: String,
    pub feed: FeedKind,
    /// `pull`, `push` or `upload`.
    pub source: String,
    pub applied: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub rejected: u64,
    /// Row errors (capped; `rejected` counts them all).
    pub errors: Vec<RowError>,
    /// Who sent it: `erp` (a signed push), `admin` (the admin token), `puller` (the schedule).
    #[serde(default)]
    pub by: String,
    /// Data rows read (applied + unchanged + stale + rejected).
    #[serde(default)]
    pub rows: u64,
    /// Remarks that rejected nothing, as row 0 (the header): unknown columns, ignored.
    #[serde(default)]
    pub warnings: Vec<RowError>,
    /// RFC 3339.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    /// Why the run stopped early (rows before it stay applied); `None` when it completed.
    #[serde(default)]
    pub failed: Option<String>,
    /// A pull's cursor after its last applied page.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl protocol::Stored for ImportReport {
    const KIND: &'static str = "import_run";
    const VERSION: u16 = 1;
}

/// Row errors kept in one report (every rejected row is still counted).
pub const MAX_REPORTED_ERRORS: usize = 1000;

/// The RFC 3339 text of a time (empty if it cannot be formatted).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An import run in progress: pages are applied into it, then it is finished and stored.
pub struct Run {
    report: ImportReport,
    /// Rows of earlier pages, so the rows of a multi-page run are numbered through.
    offset: u64,
}

impl Run {
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Records the cursor reached (pulls).
    pub fn set_cursor(&mut self, cursor: &str) {
        self.report.cursor = Some(cursor.to_string());
    }
}

/// How the scheduled pull of one feed is doing (for the cursors view).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullStatus {
    pub last_attempt: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    /// Failed cycles in a row.
    pub failures: u32,
}

struct Inner {
    appliers: std::sync::RwLock<HashMap<FeedKind, Arc<dyn FeedApplier>>>,
    /// One page at a time per feed: a push and a pulled page of the same feed never interleave.
    locks: HashMap<FeedKind, tokio::sync::Mutex<()>>,
    store: Arc<ImportStore>,
    clock: Arc<dyn Clock>,
    keep_runs: usize,
    pulls: std::sync::Mutex<BTreeMap<FeedKind, PullStatus>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Run ids that grow within a millisecond too, so runs list newest first.
    ids: std::sync::Mutex<ulid::Generator>,
}

/// The registry of feed appliers and the record of import runs. Cheap to clone.
#[derive(Clone)]
pub struct Importer {
    inner: Arc<Inner>,
}

impl Importer {
    /// An importer with no appliers yet, keeping the last `keep_runs` reports.
    pub fn new(store: Arc<ImportStore>, clock: Arc<dyn Clock>, keep_runs: usize) -> Importer {
        Importer {
            inner: Arc::new(Inner {
                appliers: std::sync::RwLock::new(HashMap::new()),
                locks: FeedKind::ALL
                    .into_iter()
                    .map(|k| (k, tokio::sync::Mutex::new(())))
                    .collect(),
                store,
                clock,
                keep_runs: keep_runs.max(1),
                pulls: std::sync::Mutex::new(BTreeMap::new()),
                stop: tokio::sync::watch::channel(false).0,
                ids: std::sync::Mutex::new(ulid::Generator::new()),
            }),
        }
    }

    /// Adds (or replaces) the applier of its feed, which is then enabled for pushes and pulls.
    pub fn register(&self, applier: Arc<dyn FeedApplier>) {
        let mut map = self
            .inner
            .appliers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.insert(applier.feed(), applier);
    }

    /// Whether an applier is registered for `feed`.
    pub fn enabled(&self, feed: FeedKind) -> bool {
        self.applier(feed).is_some()
    }

    fn applier(&self, feed: FeedKind) -> Option<Arc<dyn FeedApplier>> {
        let map = self
            .inner
            .appliers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&feed).cloned()
    }

    /// The importer's store (cursors, runs).
    pub fn store(&self) -> &Arc<ImportStore> {
        &self.inner.store
    }

    /// Applies `rows` of `feed` as one run and stores its report. `source` is `pull`, `push` or
    /// `upload`; it also names who sent it.
    pub async fn run(
        &self,
        feed: FeedKind,
        source: &str,
        rows: Vec<Row>,
    ) -> Result<ImportReport, ImportError> {
        let records = rows.iter().map(|r| r.number).max().unwrap_or(0);
        let parsed = parse::Parsed {
            rows,
            records,
            ..parse::Parsed::default()
        };
        self.run_parsed(feed, source, source, parsed).await
    }

    /// Like [`Importer::run`], for a parsed body: its unreadable rows are reported as rejected,
    /// its warnings kept. `by` says who sent it.
    pub async fn run_parsed(
        &self,
        feed: FeedKind,
        source: &str,
        by: &str,
        parsed: parse::Parsed,
    ) -> Result<ImportReport, ImportError> {
        if !self.enabled(feed) {
            return Err(ImportError::NotEnabled(feed));
        }
        let mut run = self.begin(feed, source, by);
        let applied = self.apply(&mut run, parsed).await;
        let report = self.finish(run, applied.as_ref().err()).await?;
        applied.map(|()| report)
    }

    fn next_id(&self) -> ulid::Ulid {
        let mut ids = self.inner.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.generate().unwrap_or_else(|_| ulid::Ulid::new())
    }

    /// Starts a run (nothing is stored until [`Importer::finish`]).
    pub fn begin(&self, feed: FeedKind, source: &str, by: &str) -> Run {
        Run {
            report: ImportReport {
                id: self.next_id().to_string(),
                feed,
                source: source.to_string(),
                applied: 0,
                unchanged: 0,
                stale: 0,
                rejected: 0,
                errors: Vec::new(),
                by: by.to_string(),
                rows: 0,
                warnings: Vec::new(),
                started_at: rfc3339(self.inner.clock.now()),
                finished_at: String::new(),
                failed: None,
                cursor: None,
            },
            offset: 0,
        }
    }

    /// Applies one page (or a whole body) into `run`: its rows are numbered on from the pages
    /// before, applied by the feed's applier, and counted.
    pub async fn apply(&self, run: &mut Run, parsed: parse::Parsed) -> Result<(), ImportError> {
        let feed = run.report.feed;
        let applier = self.applier(feed).ok_or(ImportError::NotEnabled(feed))?;
        let offset = run.offset;
        run.offset += parsed.records;
        let report = &mut run.report;
        report.rows += parsed.rows.len() as u64 + parsed.errors.len() as u64;
        for w in parsed.warnings {
            if !report.warnings.contains(&w) {
                report.warnings.push(w);
            }
        }
        reject(report, offset, parsed.errors);
        let mut rows = parsed.rows;
        for r in &mut rows {
            r.number += offset;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let numbers: Vec<u64> = rows.iter().map(|r| r.number).collect();
        let outcomes = {
            let _one_at_a_time = match self.inner.locks.get(&feed) {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            applier.apply(rows).await?
        };
        if outcomes.len() != numbers.len() {
            return Err(ImportError::Internal(format!(
                "the {feed} applier answered {} outcomes for {} rows",
                outcomes.len(),
                numbers.len()
            )));
        }
        for (number, outcome) in numbers.into_iter().zip(outcomes) {
            match outcome {
                RowOutcome::Applied => report.applied += 1,
                RowOutcome::Unchanged => report.unchanged += 1,
                RowOutcome::Stale => report.stale += 1,
                RowOutcome::Rejected(errors) if errors.is_empty() => {
                    let reason = "rejected without a reason (an importer fault)";
                    reject(
                        report,
                        0,
                        vec![RowError {
                            row: number,
                            field: String::new(),
                            reason: reason.into(),
                        }],
                    );
                }
                RowOutcome::Rejected(errors) => reject(report, 0, errors),
            }
        }
        Ok(())
    }

    /// Stores the report of a run (marked failed with `failure`), keeping the newest runs.
    pub async fn finish(
        &self,
        run: Run,
        failure: Option<&ImportError>,
    ) -> Result<ImportReport, ImportError> {
        let mut report = run.report;
        report.finished_at = rfc3339(self.inner.clock.now());
        report.failed = failure.map(ToString::to_string);
        tracing::info!(run = %report.id, feed = %report.feed, source = %report.source,
            applied = report.applied, unchanged = report.unchanged, stale = report.stale,
            rejected = report.rejected, failed = ?report.failed, "import run finished");
        self.inner
            .store
            .put_run(&report, self.inner.keep_runs)
            .await?;
        Ok(report)
    }

    /// Stored runs, newest first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<ImportReport>, ImportError> {
        Ok(self.inner.store.runs(limit).await?)
    }

    /// One stored run.
    pub async fn report(&self, id: ulid::Ulid) -> Result<Option<ImportReport>, ImportError> {
        Ok(self.inner.store.run(id)?)
    }

    /// The scheduled pull's status per feed.
    pub fn pull_status(&self) -> BTreeMap<FeedKind, PullStatus> {
        self.inner
            .pulls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn record_pull(&self, feed: FeedKind, outcome: Result<(), &ImportError>) {
        let now = rfc3339(self.inner.clock.now());
        let mut pulls = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        let status = pulls.entry(feed).or_default();
        status.last_attempt = Some(now.clone());
        match outcome {
            Ok(()) => {
                status.last_success = Some(now);
                status.last_error = None;
                status.failures = 0;
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                status.failures = status.failures.saturating_add(1);
            }
        }
    }

    /// Runs the scheduled pull (if `[import.pull]` is set) while this node holds the
    /// `ImportSchedulers` singleton; it ends with the term or when the importer stops.
    pub fn run_pull(
        &self,
        singletons: &crate::cluster::singleton::Singletons,
        settings: Option<crate::config::PullSettings>,
    ) -> Option<crate::cluster::singleton::SingletonHandle> {
        let settings = settings?;
        let importer = self.clone();
        Some(singletons.run(
            crate::cluster::singleton::Singleton::ImportSchedulers,
            move |mut term| {
                let importer = importer.clone();
                let settings = settings.clone();
                async move {
                    let (stop, stopping) = tokio::sync::watch::channel(false);
                    let mut stopped = importer.stopping();
                    let pull = pull::run_until(importer.clone(), settings, stopping);
                    tokio::pin!(pull);
                    tokio::select! {
                        _ = &mut pull => return,
                        _ = term.stopped() => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                    // A page being applied finishes first.
                    let _ = stop.send(true);
                    pull.await;
                }
            },
        ))
    }

    /// A receiver that turns `true` when the importer's background tasks must stop.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Stops the scheduled pull and the price timer (on shutdown). A page being applied
    /// finishes first.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }
}

fn reject(report: &mut ImportReport, offset: u64, errors: Vec<RowError>) {
    let mut rows: Vec<u64> = errors.iter().map(|e| e.row + offset).collect();
    rows.dedup();
    report.rejected += rows.len() as u64;
    for mut e in errors {
        if report.errors.len() < MAX_REPORTED_ERRORS {
            e.row += offset;
            report.errors.push(e);
        }
    }
}

/// What the importer needs from the rest of the hub.
pub struct Start {
    pub settings: crate::config::ImportSettings,
    pub storage: Arc<dyn crate::storage::Storage>,
    /// Where the importer keeps its own state (the `import` tree).
    pub keyspace: crate::storage::kv::Keyspace,
    pub catalog: actix::Addr<crate::actors::catalog::CatalogActor>,
    pub snapshot: Arc<arc_swap::ArcSwap<protocol::CatalogSnapshot>>,
    pub inventory: crate::actors::inventory::Inventory,
    pub edge: crate::edge::EdgeHandle,
    pub clock: Arc<dyn Clock>,
    /// The catalog's currency (the base price of every variant is in it).
    pub currency: protocol::Currency,
    /// The home market, whose tax rates give products their `tax_rate_bp`.
    pub home: protocol::checkout::Market,
    /// Start the scheduled pull at once (one process). In a cluster it runs on one node, the
    /// `ImportSchedulers` singleton's holder ([`Importer::run_pull`]).
    pub pull_now: bool,
}

/// Builds the importer with the products, prices and stock appliers, loads their state, and
/// starts the price-validity timer and (when `[import.pull]` is set) the scheduled pull. Must run
/// inside the actix System; [`Importer::stop`] ends the background tasks.
pub async fn start(start: Start) -> Result<Importer, ImportError> {
    let store = ImportStore::open(&start.keyspace)?;
    let importer = Importer::new(store.clone(), start.clock.clone(), start.settings.keep_runs);
    let side = catalog::CatalogSide::load(catalog::SideDeps {
        catalog: start.catalog,
        snapshot: start.snapshot,
        store: store.clone(),
        clock: start.clock.clone(),
        currency: start.currency,
        price_list: start.settings.price_list.clone(),
        home: start.home,
    })
    .await?;
    let stock = stock::StockApplier::load(stock::StockDeps {
        inventory: start.inventory,
        edge: start.edge,
        storage: start.storage.clone(),
        store: store.clone(),
        side: side.clone(),
    })
    .await?;
    importer.register(Arc::new(products::ProductsApplier::new(side.clone())));
    importer.register(Arc::new(prices::PricesApplier::new(side.clone())));
    importer.register(Arc::new(stock));
    actix::spawn(side.run_timer(start.settings.price_check_every, importer.stopping()));
    if let (true, Some(pull)) = (start.pull_now, start.settings.pull.clone()) {
        actix::spawn(pull::run(importer.clone(), pull));
    }
    Ok(importer)
}
