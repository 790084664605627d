//! The importer's own state, in the `import` tree of the hub's keyspace (like the edge
//! replica's `edge` tree): the products and variants it imported with their ERP versions, the
//! price book, the versions of stock rows, store commands being forwarded, the pull cursors and
//! the run reports. Values are encoded by `protocol`'s codec; every write is a batch made durable
//! (flushed) before it returns.

use crate::storage::kv::{Keyspace, Tree};
use crate::storage::StorageError;
use protocol::feed::FeedKind;
use protocol::{codec, CategoryId, Currency, LocationId, Money, ProductId, Sku, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

type Result<T> = std::result::Result<T, StorageError>;

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

/// A product of the catalog as the importer keeps it: its own fields; its variants are
/// [`VariantState`]s, listed in `skus` in the order they were first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub id: ProductId,
    /// The ERP's product code; `None` for a product the importer adopted from the catalog (one
    /// that was there before, e.g. the demo's) until a product row names it.
    pub code: Option<String>,
    pub slug: String,
    pub name: String,
    pub brand: String,
    pub description: String,
    pub category: CategoryId,
    pub tax_class: String,
    pub tax_rate_bp: u32,
    pub image: String,
    pub attributes: BTreeMap<String, String>,
    pub skus: Vec<Sku>,
}

impl Stored for ProductState {
    const KIND: &'static str = "import_product";
    const VERSION: u16 = 1;
}

/// A variant as the importer keeps it: its base price (from the products feed, or the catalog's
/// price when adopted), whether the ERP sells it, and the version and content of the last row
/// applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantState {
    pub sku: Sku,
    pub product: ProductId,
    pub title: String,
    pub barcode: Option<String>,
    pub weight_grams: u32,
    pub base_price: Option<Money>,
    pub base_compare_at: Option<Money>,
    pub active: bool,
    /// The ERP version of the last product row applied; `None` when adopted from the catalog.
    pub version: Option<u64>,
    /// Digest of that row's content (see [`super::products`]).
    pub digest: String,
}

impl Stored for VariantState {
    const KIND: &'static str = "import_variant";
    const VERSION: u16 = 1;
}

/// One entry of the price book: a price of a SKU on a price list in a currency from a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEntry {
    pub sku: Sku,
    pub list: String,
    pub currency: Currency,
    /// Unix milliseconds; `None`: valid since always.
    pub from_ms: Option<i64>,
    /// Unix milliseconds, exclusive; `None`: open-ended.
    pub until_ms: Option<i64>,
    pub price: Money,
    pub compare_at: Option<Money>,
    pub version: u64,
    pub digest: String,
}

impl Stored for PriceEntry {
    const KIND: &'static str = "import_price";
    const VERSION: u16 = 1;
}

impl PriceEntry {
    /// Whether the entry is valid at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| f <= now_ms) && self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// The last stock row applied for a SKU at a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockState {
    pub location: LocationId,
    pub sku: Sku,
    pub version: u64,
    pub level: Option<i64>,
}

impl Stored for StockState {
    const KIND: &'static str = "import_stock";
    const VERSION: u16 = 1;
}

/// A store stock row being (or having been) forwarded to the store's edge node as a command.
/// Written before the command is queued and marked done after, so a crash in between is seen
/// (and reported) instead of queueing the command twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    pub id: String,
    pub done: bool,
    /// The command's id once queued.
    pub command: Option<String>,
}

impl Stored for Forwarding {
    const KIND: &'static str = "import_forwarding";
    const VERSION: u16 = 1;
}

/// Where the scheduled pull of a feed stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub feed: FeedKind,
    pub cursor: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl Stored for CursorRecord {
    const KIND: &'static str = "import_cursor";
    const VERSION: u16 = 1;
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix, b'/'];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub fn product_key(id: ProductId) -> Vec<u8> {
    key(b'p', &[&id.to_bytes()])
}

pub fn variant_key(sku: &Sku) -> Vec<u8> {
    key(b'v', &[sku.as_str().as_bytes()])
}

/// Entries of one SKU sort together, then by list, currency and start (open start first).
pub fn price_key(sku: &Sku, list: &str, currency: Currency, from_ms: Option<i64>) -> Vec<u8> {
    let from = match from_ms {
        None => vec![0u8],
        Some(ms) => {
            let mut b = vec![1u8];
            // Sign bit flipped so negative times sort before positive ones.
            b.extend_from_slice(&((ms as u64) ^ (1 << 63)).to_be_bytes());
            b
        }
    };
    key(
        b'q',
        &[
            sku.as_str().as_bytes(),
            list.as_bytes(),
            currency.code().as_bytes(),
            &from,
        ],
    )
}

pub fn stock_key(location: &LocationId, sku: &Sku) -> Vec<u8> {
    key(b's', &[location.0.as_bytes(), sku.as_str().as_bytes()])
}

pub fn forwarding_key(id: &str) -> Vec<u8> {
    key(b'f', &[id.as_bytes()])
}

fn cursor_key(feed: FeedKind) -> Vec<u8> {
    key(b'k', &[feed.as_str().as_bytes()])
}

fn run_key(id: ulid::Ulid) -> Vec<u8> {
    key(b'r', &[&id.0.to_be_bytes()])
}

/// Writes to make durable together.
#[derive(Default)]
pub struct Batch {
    batch: crate::storage::kv::Batch,
    len: usize,
}

impl Batch {
    pub fn put<T: Stored>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        self.batch.insert(key, codec::encode(value)?);
        self.len += 1;
        Ok(())
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key);
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Everything the importer loads at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub products: Vec<ProductState>,
    pub variants: Vec<VariantState>,
    /// Price entries of one list and currency (the one the storefront sells at).
    pub prices: Vec<PriceEntry>,
}

/// The `import` tree.
pub struct ImportStore {
    tree: Tree,
}

impl ImportStore {
    /// Opens the `import` tree of the hub's keyspace.
    pub fn open(keyspace: &Keyspace) -> Result<Arc<ImportStore>> {
        let tree = keyspace.open_tree("import")?;
        Ok(Arc::new(ImportStore { tree }))
    }

    pub fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>> {
        self.tree
            .get(k)?
            .map(|v| codec::decode::<T>(&v))
            .transpose()
            .map_err(StorageError::from)
    }

    /// Applies a batch atomically and flushes it.
    pub async fn write(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || tree.apply_batch(batch.batch))
            .await
            .map_err(io)??;
        self.tree.flush_async().await
    }

    fn scan_blocking<T: Stored>(tree: &Tree, prefix: u8) -> Result<Vec<T>> {
        tree.scan_prefix([prefix, b'/'])
            .map(|kv| kv.and_then(|(_, v)| codec::decode::<T>(&v).map_err(StorageError::from)))
            .collect()
    }

    /// Products, variants and the price entries of `list` in `currency`.
    pub async fn load_catalog(&self, list: &str, currency: Currency) -> Result<Loaded> {
        let tree = self.tree.clone();
        let list = list.to_string();
        tokio::task::spawn_blocking(move || {
            let prices: Vec<PriceEntry> = Self::scan_blocking(&tree, b'q')?;
            Ok(Loaded {
                products: Self::scan_blocking(&tree, b'p')?,
                variants: Self::scan_blocking(&tree, b'v')?,
                prices: prices
                    .into_iter()
                    .filter(|p| p.list == list && p.currency == currency)
                    .collect(),
            })
        })
        .await
        .map_err(io)?
    }

    /// Every stock state.
    pub async fn load_stock(&self) -> Result<Vec<StockState>> {
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || Self::scan_blocking(&tree, b's'))
            .await
            .map_err(io)?
    }

    pub fn cursor(&self, feed: FeedKind) -> Result<Option<CursorRecord>> {
        self.get(&cursor_key(feed))
    }

    pub fn cursors(&self) -> Result<Vec<CursorRecord>> {
        Self::scan_blocking(&self.tree, b'k')
    }

    /// Stores a feed's cursor durably.
    pub async fn put_cursor(&self, record: &CursorRecord) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(cursor_key(record.feed), record)?;
        self.write(batch).await
    }

    /// Stores a run report and drops the oldest beyond `keep`.
    pub async fn put_run(&self, report: &super::ImportReport, keep: usize) -> Result<()> {
        let id: ulid::Ulid = report
            .id
            .parse()
            .map_err(|_| StorageError::Io(format!("run id '{}' is not a ULID", report.id)))?;
        let mut batch = Batch::default();
        batch.put(run_key(id), report)?;
        let tree = self.tree.clone();
        let old: Vec<Vec<u8>> = tokio::task::spawn_blocking(move || {
            tree.scan_prefix([b'r', b'/'])
                .rev()
                // The new run is not stored yet: keep `keep - 1` of the others.
                .skip(keep.saturating_sub(1))
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(io)??;
        for k in old {
            batch.remove(k);
        }
        self.write(batch).await
    }

    /// Run reports, newest first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<super::ImportReport>> {
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || {
            tree.scan_prefix([b'r', b'/'])
                .rev()
                .take(limit)
                .map(|kv| {
                    kv.and_then(|(_, v)| {
                        codec::decode::<super::ImportReport>(&v).map_err(StorageError::from)
                    })
                })
                .collect()
        })
        .await
        .map_err(io)?
    }

    pub fn run(&self, id: ulid::Ulid) -> Result<Option<super::ImportReport>> {
        self.get(&run_key(id))
    }
}
