//! The catalog side of the importer, shared by the products and prices feeds: the [`Book`] of
//! what was imported (products, variants with their base prices, the price entries of the list
//! and currency the storefront sells at), and the one way it reaches the catalog — a page's
//! [`Changes`] are assembled into products and published as ONE new snapshot
//! ([`ApplyBatch`]), then stored.
//!
//! A variant's shelf price is the price book's entry for the configured list in the catalog's
//! currency that is valid now (the latest start wins, then the higher version), else its base
//! price from the products feed. A timer ([`CatalogSide::run_timer`]) applies validity windows
//! that open or close later. A product sells its active, priced variants; a product with none
//! is removed from the catalog (and comes back, with the same id, when a variant returns).
//!
//! Order of writes, for crashes: a new product's state (its ERP code → id) is stored first, then
//! the catalog, then the rest of the importer's state. A crash before the last step leaves the
//! importer behind the catalog: the same rows are applied again on the next pull, to the same
//! ids, with the same result.

use super::store::{self, ImportStore, PriceEntry, ProductState, VariantState};
use super::ImportError;
use crate::actors::catalog::{ApplyBatch, CatalogActor};
use crate::clock::Clock;
use actix::Addr;
use arc_swap::ArcSwap;
use protocol::checkout::Market;
use protocol::{
    CatalogSnapshot, Category, CategoryId, Currency, Money, Product, ProductId, Sku, Variant,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What the catalog side needs.
pub struct SideDeps {
    pub catalog: Addr<CatalogActor>,
    pub snapshot: Arc<ArcSwap<CatalogSnapshot>>,
    pub store: Arc<ImportStore>,
    pub clock: Arc<dyn Clock>,
    pub currency: Currency,
    /// The price list the storefront sells at.
    pub price_list: String,
    pub home: Market,
}

/// What the importer knows of the catalog it feeds.
#[derive(Debug, Default)]
pub struct Book {
    pub products: HashMap<ProductId, ProductState>,
    pub codes: HashMap<String, ProductId>,
    pub slugs: HashMap<String, ProductId>,
    pub variants: HashMap<Sku, VariantState>,
    /// Price entries of the list and currency the storefront sells at, by SKU.
    pub prices: HashMap<Sku, Vec<PriceEntry>>,
}

/// The changes of one page, on top of the [`Book`]: read through them, then commit them.
#[derive(Debug, Default)]
pub struct Changes {
    pub products: HashMap<ProductId, ProductState>,
    /// Products first stored by this page.
    pub new_products: HashSet<ProductId>,
    pub codes: HashMap<String, ProductId>,
    pub slugs: HashMap<String, ProductId>,
    pub variants: HashMap<Sku, VariantState>,
    /// New or replaced entries of the list and currency sold at, by SKU.
    pub prices: HashMap<Sku, Vec<PriceEntry>>,
    /// Entries of other lists or currencies, by their store key: stored only.
    pub other_prices: HashMap<Vec<u8>, PriceEntry>,
    pub categories: Vec<Category>,
    /// Products to assemble and publish again.
    pub touched: BTreeSet<ProductId>,
}

impl Changes {
    pub fn product<'a>(&'a self, book: &'a Book, id: ProductId) -> Option<&'a ProductState> {
        self.products.get(&id).or_else(|| book.products.get(&id))
    }

    /// The product to change, copied from the book on first use.
    pub fn product_mut(&mut self, book: &Book, id: ProductId) -> Option<&mut ProductState> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.products.entry(id) {
            e.insert(book.products.get(&id)?.clone());
        }
        self.products.get_mut(&id)
    }

    pub fn variant<'a>(&'a self, book: &'a Book, sku: &Sku) -> Option<&'a VariantState> {
        self.variants.get(sku).or_else(|| book.variants.get(sku))
    }

    pub fn code(&self, book: &Book, code: &str) -> Option<ProductId> {
        self.codes
            .get(code)
            .or_else(|| book.codes.get(code))
            .copied()
    }

    /// The product holding `slug`, if any.
    pub fn slug_owner(&self, book: &Book, slug: &str) -> Option<ProductId> {
        self.slugs
            .get(slug)
            .or_else(|| book.slugs.get(slug))
            .copied()
    }

    /// The price entries of `sku` in the list and currency sold at, this page's replacing the
    /// book's with the same start.
    pub fn entries<'a>(&'a self, book: &'a Book, sku: &Sku) -> Vec<&'a PriceEntry> {
        let mine: Vec<&PriceEntry> = self
            .prices
            .get(sku)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let mut out: Vec<&PriceEntry> = book
            .prices
            .get(sku)
            .map(|v| {
                v.iter()
                    .filter(|e| !mine.iter().any(|m| m.from_ms == e.from_ms))
                    .collect()
            })
            .unwrap_or_default();
        out.extend(mine);
        out
    }

    /// Adds or replaces a sell-list price entry (by start).
    pub fn put_price(&mut self, entry: PriceEntry) {
        let list = self.prices.entry(entry.sku.clone()).or_default();
        list.retain(|e| e.from_ms != entry.from_ms);
        list.push(entry);
    }
}

/// The entry valid at `now_ms` among `entries`: the latest start, then the higher version.
pub fn effective<'a>(
    entries: impl IntoIterator<Item = &'a PriceEntry>,
    now_ms: i64,
) -> Option<&'a PriceEntry> {
    entries
        .into_iter()
        .filter(|e| e.valid_at(now_ms))
        .max_by_key(|e| (e.from_ms.unwrap_or(i64::MIN), e.version))
}

/// The catalog side: the book behind one lock, and the way to the catalog.
pub struct CatalogSide {
    deps: SideDeps,
    book: tokio::sync::Mutex<Book>,
    /// SKUs the book holds (active or not), readable without the book's lock.
    known: std::sync::RwLock<HashSet<Sku>>,
    /// Wakes the timer when price entries changed.
    wake: tokio::sync::Notify,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl CatalogSide {
    /// Loads the book from the store.
    pub async fn load(deps: SideDeps) -> Result<Arc<CatalogSide>, ImportError> {
        let loaded = deps
            .store
            .load_catalog(&deps.price_list, deps.currency)
            .await?;
        let mut book = Book::default();
        for p in loaded.products {
            if let Some(code) = &p.code {
                book.codes.insert(code.clone(), p.id);
            }
            book.slugs.insert(p.slug.clone(), p.id);
            book.products.insert(p.id, p);
        }
        for v in loaded.variants {
            book.variants.insert(v.sku.clone(), v);
        }
        for e in loaded.prices {
            book.prices.entry(e.sku.clone()).or_default().push(e);
        }
        let known = book.variants.keys().cloned().collect();
        Ok(Arc::new(CatalogSide {
            deps,
            book: tokio::sync::Mutex::new(book),
            known: std::sync::RwLock::new(known),
            wake: tokio::sync::Notify::new(),
        }))
    }

    pub fn currency(&self) -> Currency {
        self.deps.currency
    }

    pub fn price_list(&self) -> &str {
        &self.deps.price_list
    }

    pub fn home(&self) -> &Market {
        &self.deps.home
    }

    pub fn store(&self) -> &Arc<ImportStore> {
        &self.deps.store
    }

    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.deps.snapshot.load_full()
    }

    pub fn now_ms(&self) -> i64 {
        unix_ms(self.deps.clock.now())
    }

    /// Whether a SKU is in the catalog or known to the importer (a withdrawn variant too).
    pub fn knows(&self, sku: &Sku) -> bool {
        if self.deps.snapshot.load().product_by_sku(sku).is_some() {
            return true;
        }
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sku)
    }

    /// The book, for one page at a time.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Book> {
        self.book.lock().await
    }

    /// Takes a catalog product holding `sku` that the importer does not know yet into the book
    /// (code `None`, its current prices as base prices), so feeds can change it. Answers the
    /// product's id; `None` if the catalog has no such SKU.
    pub fn adopt(&self, book: &Book, changes: &mut Changes, sku: &Sku) -> Option<ProductId> {
        let snapshot = self.deps.snapshot.load();
        let product = snapshot.product_by_sku(sku)?;
        if changes.product(book, product.id).is_none() {
            changes.products.insert(
                product.id,
                ProductState {
                    id: product.id,
                    code: None,
                    slug: product.slug.clone(),
                    name: product.name.clone(),
                    brand: product.brand.clone(),
                    description: product.description.clone(),
                    category: product.category.clone(),
                    tax_class: product.tax_class.clone(),
                    tax_rate_bp: product.tax_rate_bp,
                    image: product.image.clone(),
                    attributes: product.attributes.clone(),
                    skus: product.variants.iter().map(|v| v.sku.clone()).collect(),
                },
            );
            changes.new_products.insert(product.id);
            changes.slugs.insert(product.slug.clone(), product.id);
        }
        for v in &product.variants {
            if changes.variant(book, &v.sku).is_none() {
                changes.variants.insert(
                    v.sku.clone(),
                    VariantState {
                        sku: v.sku.clone(),
                        product: product.id,
                        title: v.title.clone(),
                        barcode: v.barcode.clone(),
                        weight_grams: v.weight_grams,
                        base_price: Some(v.price),
                        base_compare_at: v.compare_at,
                        active: true,
                        version: None,
                        digest: String::new(),
                    },
                );
            }
            if let Some(state) = changes.product_mut(book, product.id) {
                if !state.skus.contains(&v.sku) {
                    state.skus.push(v.sku.clone());
                }
            }
        }
        Some(product.id)
    }

    /// A variant's shelf price and struck-through price at `now_ms`.
    fn price_of(
        &self,
        book: &Book,
        changes: &Changes,
        variant: &VariantState,
        now_ms: i64,
    ) -> Option<(Money, Option<Money>)> {
        let entries = changes.entries(book, &variant.sku);
        match effective(entries, now_ms) {
            Some(e) => Some((e.price, e.compare_at)),
            None => variant.base_price.map(|p| (p, variant.base_compare_at)),
        }
    }

    /// The product as the catalog should show it; `None` when it has no active, priced variant.
    fn assemble(
        &self,
        book: &Book,
        changes: &Changes,
        state: &ProductState,
        now_ms: i64,
    ) -> Option<Product> {
        let variants: Vec<Variant> = state
            .skus
            .iter()
            .filter_map(|sku| {
                let v = changes.variant(book, sku)?;
                if !v.active || v.product != state.id {
                    return None;
                }
                let (price, compare_at) = self.price_of(book, changes, v, now_ms)?;
                Some(Variant {
                    sku: v.sku.clone(),
                    title: v.title.clone(),
                    price,
                    compare_at,
                    barcode: v.barcode.clone(),
                    weight_grams: v.weight_grams,
                })
            })
            .collect();
        if variants.is_empty() {
            return None;
        }
        Some(Product {
            id: state.id,
            slug: state.slug.clone(),
            name: state.name.clone(),
            brand: state.brand.clone(),
            description: state.description.clone(),
            category: state.category.clone(),
            tax_rate_bp: state.tax_rate_bp,
            tax_class: state.tax_class.clone(),
            image: state.image.clone(),
            variants,
            attributes: state.attributes.clone(),
        })
    }

    /// The catalog changes that publish `ids` as they should be now: upserts and removals
    /// (only where the catalog differs).
    fn plan(
        &self,
        book: &Book,
        changes: &Changes,
        ids: impl IntoIterator<Item = ProductId>,
        now_ms: i64,
    ) -> (Vec<Product>, Vec<ProductId>) {
        let snapshot = self.deps.snapshot.load();
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for id in ids {
            let Some(state) = changes.product(book, id) else {
                continue;
            };
            let current = snapshot.product(id);
            match self.assemble(book, changes, state, now_ms) {
                Some(p) if current != Some(&p) => upserts.push(p),
                Some(_) => {}
                None if current.is_some() => removals.push(id),
                None => {}
            }
        }
        (upserts, removals)
    }

    async fn publish(
        &self,
        categories: Vec<Category>,
        products: Vec<Product>,
        remove: Vec<ProductId>,
    ) -> Result<(), ImportError> {
        if categories.is_empty() && products.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.deps
            .catalog
            .send(ApplyBatch {
                categories,
                products,
                remove,
            })
            .await
            .map_err(|_| ImportError::Closed)??;
        Ok(())
    }

    /// Publishes a page's changes as one catalog snapshot, stores them, and folds them into the
    /// book.
    pub async fn commit(&self, book: &mut Book, changes: Changes) -> Result<(), ImportError> {
        let started = std::time::Instant::now();
        let mut first = store::Batch::default();
        for id in &changes.new_products {
            if let Some(p) = changes.products.get(id) {
                first.put(store::product_key(*id), p)?;
            }
        }
        self.deps.store.write(first).await?;
        let now = self.now_ms();
        let (upserts, removals) = self.plan(book, &changes, changes.touched.clone(), now);
        let planned = started.elapsed();
        let published = (upserts.len(), removals.len());
        self.publish(changes.categories.clone(), upserts, removals)
            .await?;
        let in_catalog = started.elapsed();
        let mut batch = store::Batch::default();
        // New products were stored first, as they are now.
        for p in changes
            .products
            .values()
            .filter(|p| !changes.new_products.contains(&p.id))
        {
            batch.put(store::product_key(p.id), p)?;
        }
        for v in changes.variants.values() {
            batch.put(store::variant_key(&v.sku), v)?;
        }
        for e in changes.prices.values().flatten() {
            batch.put(store::price_key(&e.sku, &e.list, e.currency, e.from_ms), e)?;
        }
        for (key, e) in &changes.other_prices {
            batch.put(key.clone(), e)?;
        }
        self.deps.store.write(batch).await?;
        tracing::debug!(
            products = published.0,
            removed = published.1,
            plan_ms = planned.as_millis() as u64,
            catalog_ms = (in_catalog - planned).as_millis() as u64,
            store_ms = (started.elapsed() - in_catalog).as_millis() as u64,
            "import page committed"
        );
        let prices_changed = !changes.prices.is_empty();
        self.fold(book, changes);
        if prices_changed {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn fold(&self, book: &mut Book, changes: Changes) {
        {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            known.extend(changes.variants.keys().cloned());
        }
        for (id, p) in changes.products {
            if let Some(old) = book.products.get(&id) {
                if old.slug != p.slug && book.slugs.get(&old.slug) == Some(&id) {
                    book.slugs.remove(&old.slug);
                }
            }
            if let Some(code) = &p.code {
                book.codes.insert(code.clone(), id);
            }
            book.slugs.insert(p.slug.clone(), id);
            book.products.insert(id, p);
        }
        book.variants.extend(changes.variants);
        for e in changes.prices.into_values().flatten() {
            let list = book.prices.entry(e.sku.clone()).or_default();
            list.retain(|x| x.from_ms != e.from_ms);
            list.push(e);
        }
    }

    /// Publishes the products whose price changed because a validity window opened or closed
    /// after `since_ms` (every priced product when `None`); answers the next window edge.
    pub async fn reprice(
        &self,
        since_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<i64>, ImportError> {
        let book = self.book.lock().await;
        let changes = Changes::default();
        let mut ids = BTreeSet::new();
        let mut next: Option<i64> = None;
        for (sku, entries) in &book.prices {
            let mut due = since_ms.is_none();
            for edge in entries
                .iter()
                .flat_map(|e| [e.from_ms, e.until_ms])
                .flatten()
            {
                if edge > now_ms {
                    next = Some(next.map_or(edge, |n| n.min(edge)));
                } else if since_ms.is_some_and(|s| s < edge) {
                    due = true;
                }
            }
            if let (true, Some(v)) = (due, book.variants.get(sku)) {
                ids.insert(v.product);
            }
        }
        let (upserts, removals) = self.plan(&book, &changes, ids, now_ms);
        if !upserts.is_empty() || !removals.is_empty() {
            tracing::info!(
                products = upserts.len(),
                removed = removals.len(),
                "price validity windows changed shelf prices"
            );
        }
        self.publish(Vec::new(), upserts, removals).await?;
        Ok(next)
    }

    /// Applies price validity windows as they open and close: wakes at the next edge (or
    /// after `check_every` at the latest, or when entries change), until `stop` turns true.
    pub async fn run_timer(
        self: Arc<Self>,
        check_every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let check_every = check_every.max(Duration::from_millis(10));
        let mut since = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let now = self.now_ms();
            let wait = match self.reprice(since, now).await {
                Ok(next) => {
                    since = Some(now);
                    next.map_or(check_every, |n| {
                        Duration::from_millis(u64::try_from(n - now).unwrap_or(0)).min(check_every)
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "re-pricing for validity windows failed; retrying");
                    check_every
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// A new category's position: after every category known.
pub fn next_position(snapshot: &CatalogSnapshot, changes: &Changes) -> u32 {
    snapshot
        .categories()
        .iter()
        .chain(&changes.categories)
        .map(|c| c.position)
        .max()
        .map_or(1, |p| p.saturating_add(1))
}

/// Whether the category exists (in the catalog or created by this page).
pub fn has_category(snapshot: &CatalogSnapshot, changes: &Changes, id: &CategoryId) -> bool {
    snapshot.category(id).is_some() || changes.categories.iter().any(|c| &c.id == id)
}
