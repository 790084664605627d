//! Catalog deltas on the node: the parts of a `CatalogDelta` are staged in the `catalog` tree
//! and, with the last, the catalog switches from `from_version` to `to_version` in one atomic
//! batch (a crash before it leaves the old version whole; the staged parts are dropped by the
//! next delta or switch). A delta whose `from_version` is not the node's version is refused:
//! the sync session then asks the hub for the whole catalog.
//!
//! Each switch by delta also keeps a small step record (which products, categories and whether
//! the promotions changed) for the last [`KEPT_STEPS`] versions, so the node can tell boards
//! what changed since a version ([`Store::catalog_changes_since`]); a whole-catalog switch
//! clears them (everything changed).

use super::{Catalog, Store};
use crate::storage::{CatalogMeta, StoreError, CATALOG_META, PROMOTION, T};
use protocol::codec::Stored;
use protocol::promotion::{Promotion, PromotionId};
use protocol::{CatalogSnapshot, Category, CategoryId, Product, ProductId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Key prefix of a staged delta part: `d` + from + to (be u64) + part (be u32).
const STAGED_DELTA: u8 = b'd';
/// Key prefix of a step record: `h` + version (be u64).
const STEP: u8 = b'h';
/// Key prefixes of the catalog's products and categories, and of staged `Catalog` chunks.
const PRODUCT: u8 = b'p';
const CATEGORY: u8 = b'c';
const STAGED_CHUNK: u8 = b's';
/// Versions whose step the node keeps for boards.
pub const KEPT_STEPS: usize = 64;

/// One part of a `CatalogDelta` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogDeltaPart {
    pub from_version: u64,
    pub to_version: u64,
    pub fingerprint: String,
    pub part: u32,
    pub parts: u32,
    pub categories: Vec<Category>,
    pub removed_categories: Vec<CategoryId>,
    pub promotions: Option<Vec<Promotion>>,
    pub removed: Vec<ProductId>,
    pub products: Vec<Product>,
}

/// What became of a delta part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Stored; more parts are to come.
    Staged,
    /// The last part: the catalog is at this version now.
    Switched(u64),
    /// The delta does not start at the node's version (`current`): nothing changed.
    Refused { current: u64 },
}

/// A delta part waiting for the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StagedDelta {
    parts: u32,
    fingerprint: String,
    #[serde(default)]
    categories: Vec<Category>,
    #[serde(default)]
    removed_categories: Vec<CategoryId>,
    #[serde(default)]
    promotions: Option<Vec<Promotion>>,
    #[serde(default)]
    removed: Vec<ProductId>,
    #[serde(default)]
    products: Vec<Product>,
}

impl Stored for StagedDelta {
    const KIND: &'static str = "edge.catalog_delta";
    const VERSION: u16 = 1;
}

/// What one switch by delta changed, from the version before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CatalogStep {
    from: u64,
    /// Products upserted or removed.
    #[serde(default)]
    products: Vec<ProductId>,
    /// Categories upserted or removed.
    #[serde(default)]
    categories: Vec<CategoryId>,
    #[serde(default)]
    promotions: bool,
}

impl Stored for CatalogStep {
    const KIND: &'static str = "edge.catalog_step";
    const VERSION: u16 = 1;
}

/// What changed in the node's catalog since a version: products and categories as they are
/// now (new or changed) or gone, and the promotions when they changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogChanges {
    pub since: u64,
    pub version: u64,
    pub products: Vec<Product>,
    pub removed: Vec<ProductId>,
    pub categories: Vec<Category>,
    pub removed_categories: Vec<CategoryId>,
    pub promotions: Option<Vec<Promotion>>,
}

fn staged_prefix(from: u64, to: u64) -> Vec<u8> {
    let mut key = vec![STAGED_DELTA];
    key.extend_from_slice(&from.to_be_bytes());
    key.extend_from_slice(&to.to_be_bytes());
    key
}

fn product_key(id: ProductId) -> Vec<u8> {
    let mut key = vec![PRODUCT];
    key.extend_from_slice(&id.to_bytes());
    key
}

fn category_key(id: &CategoryId) -> Vec<u8> {
    let mut key = vec![CATEGORY];
    key.extend_from_slice(id.0.as_bytes());
    key
}

fn promotion_key(id: &PromotionId) -> Vec<u8> {
    let mut key = vec![PROMOTION];
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn step_key(version: u64) -> Vec<u8> {
    let mut key = vec![STEP];
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The parts of one delta merged, in order: later parts win for the same id (the hub sends
/// each id once).
struct Merged {
    fingerprint: String,
    categories: BTreeMap<CategoryId, Category>,
    removed_categories: BTreeSet<CategoryId>,
    promotions: Option<Vec<Promotion>>,
    removed: BTreeSet<ProductId>,
    products: BTreeMap<ProductId, Product>,
}

impl Merged {
    fn of(parts: Vec<StagedDelta>) -> Merged {
        let mut m = Merged {
            fingerprint: String::new(),
            categories: BTreeMap::new(),
            removed_categories: BTreeSet::new(),
            promotions: None,
            removed: BTreeSet::new(),
            products: BTreeMap::new(),
        };
        for part in parts {
            if !part.fingerprint.is_empty() {
                m.fingerprint = part.fingerprint;
            }
            m.categories
                .extend(part.categories.into_iter().map(|c| (c.id.clone(), c)));
            m.removed_categories.extend(part.removed_categories);
            if part.promotions.is_some() {
                m.promotions = part.promotions;
            }
            m.removed.extend(part.removed);
            m.products
                .extend(part.products.into_iter().map(|p| (p.id, p)));
        }
        m
    }

    /// The catalog `current` becomes at `version`.
    fn apply_to(&self, current: &Catalog, version: u64) -> Catalog {
        let products: Vec<Product> = current
            .snapshot
            .products()
            .iter()
            .filter(|p| !self.removed.contains(&p.id) && !self.products.contains_key(&p.id))
            .chain(self.products.values())
            .cloned()
            .collect();
        // By id, as a whole switch and a restart order them.
        let categories: BTreeMap<&CategoryId, &Category> = current
            .snapshot
            .categories()
            .iter()
            .map(|c| (&c.id, c))
            .filter(|(id, _)| !self.removed_categories.contains(*id))
            .chain(self.categories.iter())
            .collect();
        let promotions: BTreeMap<&PromotionId, &Promotion> = self
            .promotions
            .as_deref()
            .unwrap_or(current.promotions.promotions())
            .iter()
            .map(|p| (&p.id, p))
            .collect();
        Catalog::new(
            CatalogSnapshot::new(
                version,
                categories.into_values().cloned().collect(),
                products,
            ),
            promotions.into_values().cloned().collect(),
            self.fingerprint.clone(),
        )
    }
}

impl Store {
    /// Takes one part of a `CatalogDelta`: refused unless the catalog is at its
    /// `from_version`; stored; and with the last part, the catalog switches to `to_version` —
    /// products, categories, promotions, version and fingerprint in one atomic batch, flushed.
    #[tracing::instrument(skip_all, fields(from = delta.from_version, to = delta.to_version, part = delta.part, parts = delta.parts))]
    pub fn apply_catalog_delta(&self, delta: CatalogDeltaPart) -> Result<DeltaOutcome, StoreError> {
        let _guard = self
            .catalog_writer
            .lock()
            .map_err(|_| StoreError::Corrupt("catalog lock poisoned".into()))?;
        self.refuse_if_failed()?;
        let current = self.catalog();
        if current.version() != delta.from_version {
            return Ok(DeltaOutcome::Refused {
                current: current.version(),
            });
        }
        let tree = self.db.tree(T::Catalog);
        let prefix = staged_prefix(delta.from_version, delta.to_version);
        let mut stage = sled::Batch::default();
        // Parts of any other delta are stale now.
        for key in tree.scan_prefix([STAGED_DELTA]).keys() {
            let key = key?;
            if !key.starts_with(&prefix) {
                stage.remove(key);
            }
        }
        let parts = delta.parts.max(1);
        let mut key = prefix.clone();
        key.extend_from_slice(&delta.part.to_be_bytes());
        let staged = StagedDelta {
            parts,
            fingerprint: delta.fingerprint,
            categories: delta.categories,
            removed_categories: delta.removed_categories,
            promotions: delta.promotions,
            removed: delta.removed,
            products: delta.products,
        };
        stage.insert(key, protocol::encode(&staged)?);
        tree.apply_batch(stage)?;
        let staged: Vec<StagedDelta> = tree
            .scan_prefix(&prefix)
            .values()
            .map(|v| Ok(protocol::decode(&v?)?))
            .collect::<Result<_, StoreError>>()?;
        if staged.len() < parts as usize {
            return Ok(DeltaOutcome::Staged);
        }
        let merged = Merged::of(staged);
        let to = delta.to_version;
        let switch = self.delta_switch(tree, &merged, delta.from_version, to)?;
        tree.apply_batch(switch)?;
        self.flush_or_fail(&format!("the switch to catalog version {to}"))?;
        let catalog = merged.apply_to(&current, to);
        match self.catalog.write() {
            Ok(mut c) => *c = Arc::new(catalog),
            Err(p) => *p.into_inner() = Arc::new(catalog),
        }
        tracing::info!(
            from = delta.from_version,
            to,
            products = merged.products.len(),
            removed = merged.removed.len(),
            promotions = merged.promotions.is_some(),
            "catalog switched by delta"
        );
        Ok(DeltaOutcome::Switched(to))
    }

    /// The one batch that takes the stored catalog from `from` to `to`.
    fn delta_switch(
        &self,
        tree: &sled::Tree,
        merged: &Merged,
        from: u64,
        to: u64,
    ) -> Result<sled::Batch, StoreError> {
        let mut switch = sled::Batch::default();
        for key in tree.scan_prefix([STAGED_DELTA]).keys() {
            switch.remove(key?);
        }
        for key in tree.scan_prefix([STAGED_CHUNK]).keys() {
            switch.remove(key?);
        }
        for id in &merged.removed {
            switch.remove(product_key(*id));
        }
        for p in merged.products.values() {
            switch.insert(product_key(p.id), protocol::encode(p)?);
        }
        for id in &merged.removed_categories {
            switch.remove(category_key(id));
        }
        for c in merged.categories.values() {
            switch.insert(category_key(&c.id), protocol::encode(c)?);
        }
        if let Some(promotions) = &merged.promotions {
            for key in tree.scan_prefix([PROMOTION]).keys() {
                switch.remove(key?);
            }
            for p in promotions {
                switch.insert(
                    promotion_key(&p.id),
                    protocol::encode(&crate::storage::StoredPromotion(p.clone()))?,
                );
            }
        }
        let meta = CatalogMeta {
            version: to,
            fingerprint: merged.fingerprint.clone(),
        };
        switch.insert(CATALOG_META, protocol::encode(&meta)?);
        let step = CatalogStep {
            from,
            products: merged
                .removed
                .iter()
                .chain(merged.products.keys())
                .copied()
                .collect(),
            categories: merged
                .removed_categories
                .iter()
                .chain(merged.categories.keys())
                .cloned()
                .collect(),
            promotions: merged.promotions.is_some(),
        };
        switch.insert(step_key(to), protocol::encode(&step)?);
        let kept: Vec<sled::IVec> = tree.scan_prefix([STEP]).keys().collect::<Result<_, _>>()?;
        let over = (kept.len() + 1).saturating_sub(KEPT_STEPS);
        for key in kept.into_iter().take(over) {
            switch.remove(key);
        }
        Ok(switch)
    }

    /// What changed in the catalog since version `since`, from the steps kept: `None` when they
    /// do not reach back to it (a whole-catalog switch since, more than [`KEPT_STEPS`] versions,
    /// or a version this node never had): the caller reloads the whole catalog.
    pub fn catalog_changes_since(&self, since: u64) -> Result<Option<CatalogChanges>, StoreError> {
        // The steps and the catalog in use, as of one switch.
        let _guard = self
            .catalog_writer
            .lock()
            .map_err(|_| StoreError::Corrupt("catalog lock poisoned".into()))?;
        let catalog = self.catalog();
        let tree = self.db.tree(T::Catalog);
        let steps: BTreeMap<u64, CatalogStep> = tree
            .scan_prefix([STEP])
            .map(|kv| {
                let (k, v) = kv?;
                let to = k
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| {
                        StoreError::Corrupt("a catalog step key is not a version".into())
                    })?;
                Ok((to, protocol::decode::<CatalogStep>(&v)?))
            })
            .collect::<Result<_, StoreError>>()?;
        // Walk back from the version in use to `since`.
        let mut products: BTreeSet<ProductId> = BTreeSet::new();
        let mut categories: BTreeSet<CategoryId> = BTreeSet::new();
        let mut promotions = false;
        let mut at = catalog.version();
        while at != since {
            let Some(step) = steps.get(&at).filter(|s| s.from < at) else {
                return Ok(None);
            };
            products.extend(step.products.iter().copied());
            categories.extend(step.categories.iter().cloned());
            promotions |= step.promotions;
            at = step.from;
        }
        let snapshot = &catalog.snapshot;
        let (present, removed): (Vec<ProductId>, Vec<ProductId>) = products
            .into_iter()
            .partition(|id| snapshot.product(*id).is_some());
        let (kept, removed_categories): (Vec<CategoryId>, Vec<CategoryId>) = categories
            .into_iter()
            .partition(|id| snapshot.category(id).is_some());
        Ok(Some(CatalogChanges {
            since,
            version: catalog.version(),
            products: present
                .into_iter()
                .filter_map(|id| snapshot.product(id).cloned())
                .collect(),
            removed,
            categories: kept
                .iter()
                .filter_map(|id| snapshot.category(id).cloned())
                .collect(),
            removed_categories,
            promotions: promotions.then(|| catalog.promotions.promotions().to_vec()),
        }))
    }
}
