//! The catalog as nodes see it: the catalog snapshot and the hub's live promotions under one
//! version that grows whenever either's content changes and survives restarts (the hub's
//! in-memory snapshot numbers its versions from 1 at each start), the chunked `Catalog` frames a
//! node that is behind receives (the promotions travel in part 0, beside the categories), and
//! the bounded [`History`] of what changed between versions, from which a node whose version is
//! in it is sent a chunked `CatalogDelta` instead of the whole catalog.

use protocol::codec;
use protocol::promotion::{Promotion, PromotionSet};
use protocol::replication::sync::{Frame, CATALOG_CHUNK, MAX_BATCH_BYTES, MAX_FRAME_BYTES};
use protocol::{CatalogSnapshot, Category, CategoryId, Product, ProductId, Stored};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

/// Catalog versions whose changes the hub keeps, at most.
pub const HISTORY_VERSIONS: usize = 64;
/// Products (upserted or removed) the kept changes hold together, at most: the oldest go first.
pub const HISTORY_PRODUCTS: usize = 20_000;

/// What one catalog version holds for the nodes: the catalog and the promotions live on the
/// hub when it was issued, the version's fingerprint, and the changes that led to it.
#[derive(Clone)]
pub struct NodeCatalog {
    pub snapshot: Arc<CatalogSnapshot>,
    pub promotions: Arc<PromotionSet>,
    /// [`fingerprint`] of the snapshot and the promotions.
    pub fingerprint: String,
    pub history: Arc<History>,
}

impl NodeCatalog {
    /// The promotions in the order they travel (application order).
    pub fn promotions(&self) -> &[Promotion] {
        self.promotions.promotions()
    }

    /// Whether there is anything to sell: an empty catalog is not offered.
    pub fn has_products(&self) -> bool {
        !self.snapshot.products().is_empty()
    }

    pub fn plan(&self) -> Plan {
        Plan::new(&self.snapshot, self.promotions())
    }

    /// The change that takes a node from `version` (whose content has `fingerprint`) to this
    /// catalog at `to`, if the history covers it and it is smaller than the catalog (half of
    /// its products at most): otherwise the node is sent the whole catalog.
    pub fn delta_from(&self, version: u64, fingerprint: &str, to: u64) -> Option<CatalogChange> {
        let change = self.history.since(version, fingerprint, to)?;
        (change.size().saturating_mul(2) <= self.snapshot.products().len()).then_some(change)
    }
}

/// What changed from one catalog version to a later one (one step, or several composed).
/// Products and categories go by id: a product new or changed travels whole, one gone travels
/// as its id; the promotions travel whole when the live set changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogChange {
    pub from: u64,
    /// The fingerprint of `from`'s content: a node reporting `from` with another fingerprint
    /// had another catalog under that number (a hub restored from a backup).
    pub from_fingerprint: String,
    pub to: u64,
    pub to_fingerprint: String,
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub removed: Vec<ProductId>,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub removed_categories: Vec<CategoryId>,
    /// The whole live set at `to`, if it differs from `from`'s.
    #[serde(default)]
    pub promotions: Option<Vec<Promotion>>,
}

impl Stored for CatalogChange {
    const KIND: &'static str = "edge_catalog_change";
    const VERSION: u16 = 1;
}

impl CatalogChange {
    /// What changed from `old` (at version `from`) to `new` (at version `to`).
    pub fn between(from: u64, old: &NodeCatalog, to: u64, new: &NodeCatalog) -> CatalogChange {
        let products = if Arc::ptr_eq(&old.snapshot, &new.snapshot) {
            Vec::new()
        } else {
            new.snapshot
                .products()
                .iter()
                .filter(|p| old.snapshot.product(p.id) != Some(*p))
                .cloned()
                .collect()
        };
        let removed = old
            .snapshot
            .products()
            .iter()
            .filter(|p| new.snapshot.product(p.id).is_none())
            .map(|p| p.id)
            .collect();
        let categories = new
            .snapshot
            .categories()
            .iter()
            .filter(|c| old.snapshot.category(&c.id) != Some(*c))
            .cloned()
            .collect();
        let removed_categories = old
            .snapshot
            .categories()
            .iter()
            .filter(|c| new.snapshot.category(&c.id).is_none())
            .map(|c| c.id.clone())
            .collect();
        let promotions = (old.promotions() != new.promotions()).then(|| new.promotions().to_vec());
        CatalogChange {
            from,
            from_fingerprint: old.fingerprint.clone(),
            to,
            to_fingerprint: new.fingerprint.clone(),
            products,
            removed,
            categories,
            removed_categories,
            promotions,
        }
    }

    /// This change if it is worth keeping for deltas: at most [`HISTORY_PRODUCTS`] products,
    /// and at most half of the catalog's `catalog_products` (a node would rather get the whole
    /// catalog than more).
    pub fn kept(self, catalog_products: usize) -> Option<CatalogChange> {
        (self.size() <= HISTORY_PRODUCTS && self.size().saturating_mul(2) <= catalog_products)
            .then_some(self)
    }

    /// Products upserted or removed: what the change weighs against the whole catalog.
    pub fn size(&self) -> usize {
        self.products.len() + self.removed.len()
    }

    /// Consecutive changes (each starting where the one before ended) as one: applying it gives
    /// what applying them in turn gives. `None` for none, or for a broken chain.
    pub fn compose<'a>(steps: &[&'a CatalogChange]) -> Option<CatalogChange> {
        let (first, last) = (steps.first()?, steps.last()?);
        // Upserted: the last upsert of each id not removed after it; removed: each id whose
        // last word is a removal.
        let mut products: BTreeMap<ProductId, &'a Product> = BTreeMap::new();
        let mut removed: BTreeSet<ProductId> = BTreeSet::new();
        let mut categories: BTreeMap<&'a CategoryId, &'a Category> = BTreeMap::new();
        let mut removed_categories: BTreeSet<&'a CategoryId> = BTreeSet::new();
        let mut promotions = None;
        let mut end = first.from;
        for step in steps {
            if step.from != end {
                return None;
            }
            end = step.to;
            for id in &step.removed {
                products.remove(id);
                removed.insert(*id);
            }
            for p in &step.products {
                removed.remove(&p.id);
                products.insert(p.id, p);
            }
            for id in &step.removed_categories {
                categories.remove(id);
                removed_categories.insert(id);
            }
            for c in &step.categories {
                removed_categories.remove(&c.id);
                categories.insert(&c.id, c);
            }
            if step.promotions.is_some() {
                promotions = step.promotions.as_ref();
            }
        }
        Some(CatalogChange {
            from: first.from,
            from_fingerprint: first.from_fingerprint.clone(),
            to: last.to,
            to_fingerprint: last.to_fingerprint.clone(),
            products: products.into_values().cloned().collect(),
            removed: removed.into_iter().collect(),
            categories: categories.into_values().cloned().collect(),
            removed_categories: removed_categories.into_iter().cloned().collect(),
            promotions: promotions.cloned(),
        })
    }
}

/// The changes of the last catalog versions, oldest first, each starting where the one before
/// ended: at most [`HISTORY_VERSIONS`] of them holding at most [`HISTORY_PRODUCTS`] products.
#[derive(Debug, Clone, Default)]
pub struct History {
    changes: VecDeque<Arc<CatalogChange>>,
}

impl History {
    /// The stored changes that lead, unbroken, to `version` (the rest cannot be used).
    pub fn rebuild(mut stored: Vec<CatalogChange>, version: u64) -> History {
        stored.sort_by_key(|c| c.to);
        let mut changes: VecDeque<Arc<CatalogChange>> = VecDeque::new();
        let mut end = version;
        for change in stored.into_iter().rev() {
            if change.to != end || change.from >= change.to {
                break;
            }
            end = change.from;
            changes.push_front(Arc::new(change));
        }
        History { changes }
    }

    /// The versions the kept changes end at.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.changes.iter().map(|c| c.to)
    }

    /// The history after the change to a new version: with `change` kept, when it continues
    /// this history and is small enough (a large one, or `None`, leaves nothing older usable:
    /// nodes behind it get the whole catalog), and the oldest dropped beyond the bounds.
    /// Answers the new history and the versions (by their `to`) it no longer holds.
    pub fn with(
        &self,
        change: Option<CatalogChange>,
        catalog_products: usize,
    ) -> (History, Vec<u64>) {
        let Some(change) = change.and_then(|c| c.kept(catalog_products)) else {
            return (History::default(), self.versions().collect());
        };
        let mut changes = self.changes.clone();
        let mut dropped = Vec::new();
        if changes.back().is_some_and(|last| last.to != change.from) {
            dropped.extend(changes.drain(..).map(|c| c.to));
        }
        changes.push_back(Arc::new(change));
        let mut products: usize = changes.iter().map(|c| c.size()).sum();
        while changes.len() > HISTORY_VERSIONS || products > HISTORY_PRODUCTS {
            let Some(oldest) = changes.pop_front() else {
                break;
            };
            products -= oldest.size();
            dropped.push(oldest.to);
        }
        (History { changes }, dropped)
    }

    /// The kept changes from `version` (with content `fingerprint`) to `to`, composed; `None`
    /// when they do not reach back to it unbroken, or the node's content under that number is
    /// not what the hub issued.
    pub fn since(&self, version: u64, fingerprint: &str, to: u64) -> Option<CatalogChange> {
        let start = self.changes.iter().position(|c| c.from == version)?;
        let steps: Vec<&CatalogChange> = self.changes.iter().skip(start).map(|c| &**c).collect();
        let composed = CatalogChange::compose(&steps)?;
        (!fingerprint.is_empty() && composed.from_fingerprint == fingerprint && composed.to == to)
            .then_some(composed)
    }
}

/// SHA-256 of the catalog's content alone (categories and products, in the snapshot's own
/// deterministic order): the costly part of [`fingerprint`], kept while the snapshot is the
/// same one.
pub fn catalog_digest(snapshot: &CatalogSnapshot) -> [u8; 32] {
    let mut hash = Sha256::new();
    for c in snapshot.categories() {
        hash.update(codec::encode(c).unwrap_or_default());
    }
    hash.update([0xff]);
    for p in snapshot.products() {
        hash.update(codec::encode(p).unwrap_or_default());
    }
    hash.finalize().into()
}

/// The version's fingerprint from the catalog's digest and the promotions (in application
/// order). Without promotions it is the catalog's digest alone, as before promotions travelled
/// with the catalog, so a hub upgraded with none live issues no new version.
pub fn fingerprint_with(catalog: &[u8; 32], promotions: &[Promotion]) -> String {
    if promotions.is_empty() {
        return hex::encode(catalog);
    }
    let mut hash = Sha256::new();
    hash.update(catalog);
    hash.update([0xfe]);
    for p in promotions {
        // JSON of a struct is deterministic (field order, no maps with random order).
        hash.update(serde_json::to_vec(p).unwrap_or_default());
        hash.update([0x00]);
    }
    hex::encode(hash.finalize())
}

/// Hex SHA-256 of what nodes are given: the catalog's content and the live promotions.
pub fn fingerprint(snapshot: &CatalogSnapshot, promotions: &[Promotion]) -> String {
    fingerprint_with(&catalog_digest(snapshot), promotions)
}

/// Bytes a `Catalog` frame takes besides its products' own encodings: the envelope, the
/// version, part and parts at their widest, the categories and promotions (part 0), the
/// fingerprint, and the products array's header at its widest for `CATALOG_CHUNK` entries.
fn frame_overhead(categories: &[Category], promotions: &[Promotion]) -> usize {
    let empty = Frame::Catalog {
        version: u64::MAX,
        part: u32::MAX,
        parts: u32::MAX,
        categories: categories.to_vec(),
        promotions: promotions.to_vec(),
        products: Vec::new(),
        fingerprint: WIDEST_FINGERPRINT.into(),
    };
    // Measured before compression: the bound is on what a node inflates and decodes. An empty
    // array is one byte; up to 65 535 entries take three.
    encoded_size(&empty).saturating_add(4)
}

/// A hex SHA-256, as wide as a fingerprint gets.
const WIDEST_FINGERPRINT: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

fn encoded_size(frame: &Frame) -> usize {
    codec::encode(frame).map_or(usize::MAX, |b| b.len())
}

/// A product's share of a frame, at most: its encoding (the codec's envelope around it makes
/// this a few bytes more than it takes inside the frame).
fn product_size(product: &Product) -> usize {
    codec::encode(product).map_or(usize::MAX, |b| b.len())
}

/// Cuts a run of entries, each `(bytes, is a product)`, into parts of at most `CATALOG_CHUNK`
/// products encoding to at most `MAX_BATCH_BYTES` with their frame's overhead (`first` for
/// part 0, `rest` for the others), except an entry that alone is bigger (it goes alone and
/// `oversize` is told its index and frame size), and a part 0 whose overhead alone is bigger
/// (with `head_only` it goes without entries). At least one part, so an empty run arrives.
fn cut(
    entries: &[(usize, bool)],
    first: usize,
    rest: usize,
    head_only: bool,
    mut oversize: impl FnMut(usize, usize),
) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    let mut bytes = first;
    let mut products = 0;
    for (i, &(size, is_product)) in entries.iter().enumerate() {
        // Part 0 may go without entries when its overhead leaves no room for the first.
        let may_cut = i > start || (ranges.is_empty() && head_only);
        let full = is_product && products >= CATALOG_CHUNK;
        if may_cut && (full || bytes.saturating_add(size) > MAX_BATCH_BYTES) {
            ranges.push(start..i);
            start = i;
            bytes = rest;
            products = 0;
        }
        if bytes.saturating_add(size) > MAX_BATCH_BYTES {
            oversize(i, bytes.saturating_add(size));
        }
        bytes = bytes.saturating_add(size);
        products += usize::from(is_product);
    }
    ranges.push(start..entries.len());
    ranges
}

/// Logs a product that does not fit a frame's bound.
fn oversize_product(product: &Product, frame: usize) {
    if frame > MAX_FRAME_BYTES {
        tracing::error!(
            product = %product.id, slug = %product.slug, bytes = frame,
            limit = MAX_FRAME_BYTES,
            "a product is over the largest frame a node accepts: it goes alone and \
             the node will refuse it; shorten it"
        );
    } else {
        tracing::warn!(
            product = %product.id, slug = %product.slug, bytes = frame,
            bound = MAX_BATCH_BYTES,
            "a product is over the catalog frame bound: it goes alone"
        );
    }
}

/// Logs a part 0 whose categories and promotions alone are over the bound (or the limit).
fn heavy_head(bytes: usize, promotions: usize) {
    if bytes > MAX_FRAME_BYTES {
        tracing::error!(
            bytes,
            limit = MAX_FRAME_BYTES,
            promotions,
            "the catalog's categories and the live promotions are over the largest frame a \
             node accepts: nodes will refuse part 0; end or shorten promotions"
        );
    } else if bytes > MAX_BATCH_BYTES {
        tracing::warn!(
            bytes,
            bound = MAX_BATCH_BYTES,
            promotions,
            "the catalog's categories and the live promotions alone are over the frame \
             bound: part 0 carries only them"
        );
    }
}

/// How a snapshot is cut into `Catalog` frames: the products of each part, in order. Each frame
/// holds at most `CATALOG_CHUNK` products and encodes to at most `MAX_BATCH_BYTES`, except a part
/// holding a single product that alone is bigger (it goes alone, and is logged), and a part 0
/// whose categories and promotions alone are bigger (they go without products, and are
/// logged). The cut depends only on the snapshot and the promotions, so every part of one offer
/// agrees on `parts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    ranges: Vec<Range<usize>>,
}

impl Plan {
    pub fn new(snapshot: &CatalogSnapshot, promotions: &[Promotion]) -> Plan {
        let products = snapshot.products();
        let first = frame_overhead(snapshot.categories(), promotions);
        heavy_head(first, promotions.len());
        let head_only = !snapshot.categories().is_empty() || !promotions.is_empty();
        let sizes: Vec<(usize, bool)> = products.iter().map(|p| (product_size(p), true)).collect();
        let ranges = cut(
            &sizes,
            first,
            frame_overhead(&[], &[]),
            head_only,
            |i, frame| oversize_product(&products[i], frame),
        );
        Plan { ranges }
    }

    /// How many `Catalog` frames carry the snapshot (at least one, so an empty catalog arrives).
    pub fn parts(&self) -> u32 {
        u32::try_from(self.ranges.len()).unwrap_or(u32::MAX)
    }

    /// Part `part` (0-based, `part < parts`) of the catalog at `version`: the categories and
    /// the promotions travel in part 0. The node switches to `version` once it has stored every
    /// part.
    pub fn frame(
        &self,
        snapshot: &CatalogSnapshot,
        promotions: &[Promotion],
        fingerprint: &str,
        version: u64,
        part: u32,
    ) -> Frame {
        let products = self
            .ranges
            .get(part as usize)
            .and_then(|r| snapshot.products().get(r.clone()))
            .map(<[Product]>::to_vec)
            .unwrap_or_default();
        Frame::Catalog {
            version,
            part,
            parts: self.parts(),
            categories: if part == 0 {
                snapshot.categories().to_vec()
            } else {
                Vec::new()
            },
            promotions: if part == 0 {
                promotions.to_vec()
            } else {
                Vec::new()
            },
            products,
            fingerprint: fingerprint.to_string(),
        }
    }
}

/// How a [`CatalogChange`] is cut into `CatalogDelta` frames, like a snapshot into `Catalog`
/// frames: part 0 carries the categories and the promotions, then the removed products' ids and
/// the upserted products fill the parts in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPlan {
    /// Ranges over the removals followed by the upserts.
    ranges: Vec<Range<usize>>,
}

impl DeltaPlan {
    pub fn new(change: &CatalogChange) -> DeltaPlan {
        let head = |part: u32, removed: Vec<ProductId>| Frame::CatalogDelta {
            from_version: u64::MAX,
            to_version: u64::MAX,
            fingerprint: WIDEST_FINGERPRINT.into(),
            part: u32::MAX,
            parts: u32::MAX,
            categories: if part == 0 {
                change.categories.clone()
            } else {
                Vec::new()
            },
            removed_categories: if part == 0 {
                change.removed_categories.clone()
            } else {
                Vec::new()
            },
            promotions: if part == 0 {
                change.promotions.clone()
            } else {
                None
            },
            removed,
            products: Vec::new(),
        };
        // Both arrays' headers at their widest (three bytes each instead of one).
        let first = encoded_size(&head(0, Vec::new())).saturating_add(4);
        let rest = encoded_size(&head(1, Vec::new())).saturating_add(4);
        heavy_head(first, change.promotions.as_ref().map_or(0, Vec::len));
        // Every id encodes alike (a ULID's 26 characters).
        let id_size = encoded_size(&head(1, vec![ProductId::new()])).saturating_sub(rest - 4);
        let entries: Vec<(usize, bool)> =
            std::iter::repeat_n((id_size, false), change.removed.len())
                .chain(change.products.iter().map(|p| (product_size(p), true)))
                .collect();
        let head_only = !change.categories.is_empty()
            || !change.removed_categories.is_empty()
            || change.promotions.is_some();
        let removed = change.removed.len();
        let ranges = cut(&entries, first, rest, head_only, |i, frame| {
            if let Some(product) = i.checked_sub(removed).and_then(|i| change.products.get(i)) {
                oversize_product(product, frame);
            }
        });
        DeltaPlan { ranges }
    }

    /// How many `CatalogDelta` frames carry the change (at least one).
    pub fn parts(&self) -> u32 {
        u32::try_from(self.ranges.len()).unwrap_or(u32::MAX)
    }

    /// Part `part` (0-based, `part < parts`) of the change.
    pub fn frame(&self, change: &CatalogChange, part: u32) -> Frame {
        let range = self.ranges.get(part as usize).cloned().unwrap_or(0..0);
        let split = change.removed.len();
        let removed = change
            .removed
            .get(range.start.min(split)..range.end.min(split))
            .map(<[ProductId]>::to_vec)
            .unwrap_or_default();
        let products = change
            .products
            .get(range.start.max(split) - split..range.end.max(split) - split)
            .map(<[Product]>::to_vec)
            .unwrap_or_default();
        let first = part == 0;
        Frame::CatalogDelta {
            from_version: change.from,
            to_version: change.to,
            fingerprint: change.to_fingerprint.clone(),
            part,
            parts: self.parts(),
            categories: if first {
                change.categories.clone()
            } else {
                Vec::new()
            },
            removed_categories: if first {
                change.removed_categories.clone()
            } else {
                Vec::new()
            },
            promotions: if first {
                change.promotions.clone()
            } else {
                None
            },
            removed,
            products,
        }
    }
}

/// How many `Catalog` frames carry this snapshot and these promotions (see [`Plan`]).
pub fn parts(snapshot: &CatalogSnapshot, promotions: &[Promotion]) -> u32 {
    Plan::new(snapshot, promotions).parts()
}

/// Part `part` of the catalog at `version` (see [`Plan::frame`]; a sender of every part makes
/// the [`Plan`] once instead).
pub fn chunk(
    snapshot: &CatalogSnapshot,
    promotions: &[Promotion],
    version: u64,
    part: u32,
) -> Frame {
    Plan::new(snapshot, promotions).frame(
        snapshot,
        promotions,
        &fingerprint(snapshot, promotions),
        version,
        part,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CategoryId, Currency, Money, Product, ProductId, Sku, Variant};

    fn product(i: usize) -> Product {
        described(i, 0)
    }

    /// A product whose description is `bytes` long.
    fn described(i: usize, bytes: usize) -> Product {
        Product {
            id: ProductId::new(),
            slug: format!("p-{i}"),
            name: format!("Product {i:04}"),
            brand: "B".into(),
            description: "x".repeat(bytes),
            category: CategoryId("c".into()),
            tax_rate_bp: 1900,
            tax_class: "standard".into(),
            image: String::new(),
            variants: vec![Variant {
                sku: Sku::parse(&format!("SKU-{i}")).expect("sku"),
                title: "one".into(),
                price: Money::new(100, Currency::EUR),
                compare_at: None,
                barcode: None,
                weight_grams: 0,
            }],
            attributes: Default::default(),
        }
    }

    #[test]
    fn chunks_cover_every_product_once() {
        let products: Vec<Product> = (0..CATALOG_CHUNK * 2 + 3).map(product).collect();
        let snapshot = CatalogSnapshot::new(4, Vec::new(), products.clone());
        assert_eq!(parts(&snapshot, &[]), 3);
        let mut seen = 0;
        for part in 0..parts(&snapshot, &[]) {
            match chunk(&snapshot, &[], 9, part) {
                Frame::Catalog {
                    version,
                    parts,
                    products,
                    ..
                } => {
                    assert_eq!((version, parts), (9, 3));
                    seen += products.len();
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, products.len());
        assert_eq!(parts(&CatalogSnapshot::empty(), &[]), 1);
        let same = CatalogSnapshot::new(1, Vec::new(), products.clone());
        assert_eq!(fingerprint(&snapshot, &[]), fingerprint(&same, &[]));
        let fewer = CatalogSnapshot::new(1, Vec::new(), products[1..].to_vec());
        assert_ne!(fingerprint(&snapshot, &[]), fingerprint(&fewer, &[]));
    }

    /// Every part of a snapshot: checks each frame's bounds and answers the products in order.
    fn send_all(snapshot: &CatalogSnapshot, promotions: &[Promotion]) -> Vec<Vec<Product>> {
        let plan = Plan::new(snapshot, promotions);
        assert_eq!(plan.parts(), parts(snapshot, promotions));
        (0..plan.parts())
            .map(|part| {
                let fp = fingerprint(snapshot, promotions);
                let frame = plan.frame(snapshot, promotions, &fp, u64::MAX, part);
                assert_eq!(frame, chunk(snapshot, promotions, u64::MAX, part));
                let bytes = codec::encode(&frame).expect("encodes").len();
                match frame {
                    Frame::Catalog {
                        part: p,
                        parts: n,
                        products,
                        ..
                    } => {
                        assert_eq!((p, n), (part, plan.parts()));
                        assert!(products.len() <= CATALOG_CHUNK);
                        assert!(
                            bytes <= MAX_BATCH_BYTES
                                || products.len() == 1
                                || (part == 0 && products.is_empty()),
                            "part {part}: {bytes} bytes in {} products",
                            products.len()
                        );
                        products
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn large_products_are_cut_by_bytes_and_a_huge_one_goes_alone() {
        // 20 KB descriptions: a frame takes about a dozen, far fewer than CATALOG_CHUNK.
        let mut products: Vec<Product> = (0..300).map(|i| described(i, 20_000)).collect();
        // One product alone over the bound (but under the frame limit), in the middle.
        products.insert(150, described(9999, MAX_BATCH_BYTES + 10_000));
        let snapshot = CatalogSnapshot::new(1, Vec::new(), products.clone());
        let sent = send_all(&snapshot, &[]);
        let all: Vec<Product> = sent.iter().flatten().cloned().collect();
        assert_eq!(
            all.iter().map(|p| p.id).collect::<Vec<_>>(),
            snapshot.products().iter().map(|p| p.id).collect::<Vec<_>>(),
            "every product once, in order"
        );
        let huge = sent
            .iter()
            .find(|part| part.iter().any(|p| p.slug == "p-9999"))
            .expect("the huge product is sent");
        assert_eq!(huge.len(), 1, "the huge product goes alone");
        assert!(sent.len() > 300 * 20_000 / MAX_BATCH_BYTES);
        assert!(sent.iter().all(|part| part.len() < CATALOG_CHUNK));
        // Parts are full: the next product would not have fitted.
        let overhead = frame_overhead(&[], &[]);
        for pair in sent.windows(2) {
            let used: usize = pair[0].iter().map(product_size).sum::<usize>() + overhead;
            if pair[0].len() > 1 {
                assert!(used + product_size(&pair[1][0]) > MAX_BATCH_BYTES);
            }
        }

        // Small products are still cut at CATALOG_CHUNK.
        let small: Vec<Product> = (0..CATALOG_CHUNK + 1).map(|i| described(i, 100)).collect();
        let sent = send_all(&CatalogSnapshot::new(1, Vec::new(), small), &[]);
        assert_eq!(
            sent.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![CATALOG_CHUNK, 1]
        );
    }

    #[test]
    fn heavy_categories_leave_room_in_part_zero() {
        let categories: Vec<protocol::Category> = (0..40)
            .map(|i| protocol::Category {
                id: CategoryId(format!("c{i}")),
                name: format!("Category {i}"),
                description: "y".repeat(6_000),
                position: i,
            })
            .collect();
        let products: Vec<Product> = (0..40).map(|i| described(i, 20_000)).collect();
        let snapshot = CatalogSnapshot::new(1, categories, products);
        let sent = send_all(&snapshot, &[]);
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>(), 40);
        // Part 0 carries the ~240 KB of categories, so at most a product beside them.
        assert!(sent[0].len() <= 1, "{}", sent[0].len());
        match chunk(&snapshot, &[], 1, 0) {
            Frame::Catalog { categories, .. } => assert_eq!(categories.len(), 40),
            other => panic!("{other:?}"),
        }
    }

    /// A promotion whose name is `bytes` long.
    fn promotion(id: &str, percent_bp: u32, bytes: usize) -> Promotion {
        Promotion {
            id: protocol::promotion::PromotionId::parse(id).expect("id"),
            name: format!("{id} {}", "n".repeat(bytes)),
            spec: protocol::promotion::PromotionSpec::from_json(&format!(
                r#"{{"benefit": {{"type": "percent_off_basket", "percent_bp": {percent_bp}}}}}"#
            ))
            .expect("spec"),
            created_seq: 1,
        }
    }

    #[test]
    fn promotions_travel_in_part_zero_and_change_the_fingerprint() {
        let products: Vec<Product> = (0..CATALOG_CHUNK + 5).map(product).collect();
        let snapshot = CatalogSnapshot::new(1, Vec::new(), products);
        let spring = vec![promotion("SPRING", 1000, 10)];
        let plan = Plan::new(&snapshot, &spring);
        for part in 0..plan.parts() {
            match plan.frame(&snapshot, &spring, "", 5, part) {
                Frame::Catalog { promotions, .. } if part == 0 => assert_eq!(promotions, spring),
                Frame::Catalog { promotions, .. } => assert!(promotions.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        // No promotions: the fingerprint is the catalog's alone, as before they travelled.
        let bare = fingerprint(&snapshot, &[]);
        assert_eq!(bare, hex::encode(catalog_digest(&snapshot)));
        // A promotion created, changed or ended makes another version's fingerprint.
        let with = fingerprint(&snapshot, &spring);
        assert_ne!(with, bare);
        assert_eq!(
            with,
            fingerprint(&snapshot, &[promotion("SPRING", 1000, 10)])
        );
        assert_ne!(
            with,
            fingerprint(&snapshot, &[promotion("SPRING", 1500, 10)])
        );
        let both = PromotionSet::new(vec![
            promotion("SPRING", 1000, 10),
            promotion("EASTER", 500, 10),
        ]);
        assert_ne!(fingerprint(&snapshot, both.promotions()), with);
    }

    #[test]
    fn promotions_count_in_part_zero_bytes() {
        // About 200 KB of promotions: part 0 has room for only a few 20 KB products beside them.
        let promotions: Vec<Promotion> = (0..20)
            .map(|i| promotion(&format!("P{i}"), 100, 10_000))
            .collect();
        let products: Vec<Product> = (0..40).map(|i| described(i, 20_000)).collect();
        let snapshot = CatalogSnapshot::new(1, Vec::new(), products);
        let sent = send_all(&snapshot, &promotions);
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>(), 40);
        assert!(sent[0].len() <= 2, "{}", sent[0].len());
        let without = send_all(&snapshot, &[]);
        assert!(without[0].len() > sent[0].len());
        // Promotions alone over the bound: part 0 carries only them.
        let many: Vec<Promotion> = (0..30)
            .map(|i| promotion(&format!("P{i}"), 100, 10_000))
            .collect();
        let sent = send_all(&snapshot, &many);
        assert!(sent[0].is_empty());
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>(), 40);
    }

    fn category(id: &str, position: u32) -> Category {
        Category {
            id: CategoryId(id.into()),
            name: format!("Category {id}"),
            description: String::new(),
            position,
        }
    }

    fn offer(
        categories: Vec<Category>,
        products: Vec<Product>,
        promotions: Vec<Promotion>,
    ) -> NodeCatalog {
        let snapshot = CatalogSnapshot::new(1, categories, products);
        let promotions = PromotionSet::new(promotions);
        NodeCatalog {
            fingerprint: fingerprint(&snapshot, promotions.promotions()),
            snapshot: Arc::new(snapshot),
            promotions: Arc::new(promotions),
            history: Arc::default(),
        }
    }

    /// What a node does with a change: its catalog at `from` with the change applied.
    fn apply(base: &NodeCatalog, change: &CatalogChange) -> NodeCatalog {
        let gone: BTreeSet<ProductId> = change
            .removed
            .iter()
            .chain(change.products.iter().map(|p| &p.id))
            .copied()
            .collect();
        let mut products: Vec<Product> = base
            .snapshot
            .products()
            .iter()
            .filter(|p| !gone.contains(&p.id))
            .cloned()
            .collect();
        products.extend(change.products.iter().cloned());
        let mut categories: Vec<Category> = base
            .snapshot
            .categories()
            .iter()
            .filter(|c| {
                !change.removed_categories.contains(&c.id)
                    && !change.categories.iter().any(|n| n.id == c.id)
            })
            .cloned()
            .collect();
        categories.extend(change.categories.iter().cloned());
        let promotions = change
            .promotions
            .clone()
            .unwrap_or_else(|| base.promotions().to_vec());
        offer(categories, products, promotions)
    }

    /// One edit of a catalog, as a proptest draws it.
    #[derive(Debug, Clone)]
    enum Edit {
        Reprice(usize, i64),
        Add(usize),
        Remove(usize),
        Recategorise(usize),
        DropCategory(usize),
        Promote(u32),
        EndPromotions,
    }

    fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        prop_oneof![
            (0..64usize, 1..5_000i64).prop_map(|(i, p)| Edit::Reprice(i, p)),
            (0..4usize).prop_map(Edit::Add),
            (0..64usize).prop_map(Edit::Remove),
            (0..5usize).prop_map(Edit::Recategorise),
            (0..5usize).prop_map(Edit::DropCategory),
            (1..9_000u32).prop_map(Edit::Promote),
            Just(Edit::EndPromotions),
        ]
    }

    /// Edits of a catalog drawn from 8 products and a pool of 4 more (with fixed ids, so one may
    /// be removed and added again).
    fn edited(base: &NodeCatalog, pool: &[Product], edits: &[Edit]) -> NodeCatalog {
        let mut products = base.snapshot.products().to_vec();
        let mut categories = base.snapshot.categories().to_vec();
        let mut promotions = base.promotions().to_vec();
        for e in edits {
            match e {
                Edit::Reprice(i, price) if !products.is_empty() => {
                    let at = i % products.len();
                    products[at].variants[0].price = protocol::Money::new(*price, Currency::EUR);
                }
                Edit::Add(i) => {
                    let p = &pool[i % pool.len()];
                    if !products.iter().any(|x| x.id == p.id) {
                        products.push(p.clone());
                    }
                }
                Edit::Remove(i) if !products.is_empty() => {
                    let at = i % products.len();
                    products.remove(at);
                }
                Edit::Recategorise(i) => {
                    let mut c = category(&format!("c{i}"), 1);
                    c.position = (*i as u32) * 7 + categories.len() as u32;
                    categories.retain(|x| x.id != c.id);
                    categories.push(c);
                }
                Edit::DropCategory(i) => categories.retain(|c| c.id.0 != format!("c{i}")),
                Edit::Promote(bp) => promotions = vec![promotion("SPRING", *bp, 5)],
                Edit::EndPromotions => promotions.clear(),
                _ => {}
            }
        }
        offer(categories, products, promotions)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// From every version the history holds, the composed delta applied to that version's
        /// catalog gives exactly the newest catalog: the same fingerprint as its snapshot.
        #[test]
        fn deltas_from_any_kept_version_give_the_snapshot(
            steps in proptest::collection::vec(proptest::collection::vec(edit(), 0..4), 1..8)
        ) {
            let pool: Vec<Product> = (100..104).map(product).collect();
            let mut versions =
                vec![offer(vec![category("c0", 0)], (0..8).map(product).collect(), Vec::new())];
            let mut history = History::default();
            for (i, edits) in steps.iter().enumerate() {
                let old = &versions[i];
                let new = edited(old, &pool, edits);
                let change = CatalogChange::between(i as u64 + 1, old, i as u64 + 2, &new);
                history = history.with(Some(change), usize::MAX).0;
                versions.push(new);
            }
            let newest = versions.last().expect("a version");
            let to = versions.len() as u64;
            for (i, at) in versions.iter().enumerate() {
                let from = i as u64 + 1;
                if from == to {
                    proptest::prop_assert!(history.since(from, &at.fingerprint, to).is_none());
                    continue;
                }
                let change = history.since(from, &at.fingerprint, to).expect("covered");
                proptest::prop_assert_eq!((change.from, change.to), (from, to));
                proptest::prop_assert_eq!(&apply(at, &change).fingerprint, &newest.fingerprint);
                // Another catalog under the same number gets no delta.
                proptest::prop_assert!(history.since(from, "0000", to).is_none());
                proptest::prop_assert!(history.since(from, "", to).is_none());
            }
        }
    }

    #[test]
    fn a_small_change_is_a_small_delta_cut_in_bounded_frames() {
        let before = offer(
            vec![category("c0", 0)],
            (0..1_000).map(|i| described(i, 2_000)).collect(),
            Vec::new(),
        );
        let mut products = before.snapshot.products().to_vec();
        products[3].variants[0].price = protocol::Money::new(777, Currency::EUR);
        products.retain(|p| p.slug != "p-5");
        products.push(described(5_000, 2_000));
        let after = offer(
            before.snapshot.categories().to_vec(),
            products,
            vec![promotion("SPRING", 1000, 10)],
        );
        let change = CatalogChange::between(7, &before, 8, &after);
        assert_eq!((change.products.len(), change.removed.len()), (2, 1));
        assert_eq!(change.promotions.as_deref(), Some(after.promotions()));
        assert!(change.categories.is_empty() && change.removed_categories.is_empty());
        let plan = DeltaPlan::new(&change);
        assert_eq!(plan.parts(), 1);
        match plan.frame(&change, 0) {
            Frame::CatalogDelta {
                from_version,
                to_version,
                fingerprint,
                products,
                removed,
                promotions,
                ..
            } => {
                assert_eq!((from_version, to_version), (7, 8));
                assert_eq!(fingerprint, after.fingerprint);
                assert_eq!((products.len(), removed.len()), (2, 1));
                assert_eq!(promotions.map(|p| p.len()), Some(1));
            }
            other => panic!("{other:?}"),
        }

        // Everything changed: far too big for a delta; the node gets the whole catalog.
        let repriced: Vec<Product> = before
            .snapshot
            .products()
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.variants[0].price = protocol::Money::new(1, Currency::EUR);
                p
            })
            .collect();
        let mut whole = offer(before.snapshot.categories().to_vec(), repriced, Vec::new());
        let big = CatalogChange::between(8, &after, 9, &whole);
        assert_eq!(
            big.size(),
            1_001,
            "every product repriced, the new one gone"
        );
        let (kept, dropped) = History::default()
            .with(Some(change.clone()), 1_000)
            .0
            .with(Some(big), 1_000);
        assert_eq!(dropped, vec![8], "the older change is of no use past a gap");
        whole.history = Arc::new(kept);
        assert!(whole.delta_from(8, &after.fingerprint, 9).is_none());
    }

    #[test]
    fn delta_frames_carry_every_removal_and_upsert_once_within_bounds() {
        let products: Vec<Product> = (0..500).map(|i| described(i, 3_000)).collect();
        let change = CatalogChange {
            from: 1,
            from_fingerprint: "a".into(),
            to: 2,
            to_fingerprint: "b".into(),
            removed: (0..20_000).map(|_| ProductId::new()).collect(),
            products: products.clone(),
            categories: vec![category("tea", 1)],
            removed_categories: vec![CategoryId("cocoa".into())],
            promotions: Some(vec![promotion("SPRING", 1000, 10)]),
        };
        let plan = DeltaPlan::new(&change);
        let (mut removed, mut upserted) = (Vec::new(), Vec::new());
        for part in 0..plan.parts() {
            let frame = plan.frame(&change, part);
            let bytes = codec::encode(&frame).expect("encodes").len();
            assert!(bytes <= MAX_BATCH_BYTES, "part {part}: {bytes} bytes");
            match frame {
                Frame::CatalogDelta {
                    part: p,
                    parts,
                    categories,
                    promotions,
                    removed: r,
                    products: u,
                    ..
                } => {
                    assert_eq!((p, parts), (part, plan.parts()));
                    assert_eq!(categories.is_empty(), part != 0);
                    assert_eq!(promotions.is_some(), part == 0);
                    assert!(u.len() <= CATALOG_CHUNK);
                    removed.extend(r);
                    upserted.extend(u);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(removed, change.removed);
        assert_eq!(upserted, products);
        assert!(plan.parts() as usize > 20_000 * 28 / MAX_BATCH_BYTES);
    }

    #[test]
    fn the_history_keeps_the_last_versions_and_rebuilds_from_storage() {
        let step = |from: u64| CatalogChange {
            from,
            from_fingerprint: format!("f{from}"),
            to: from + 1,
            to_fingerprint: format!("f{}", from + 1),
            products: Vec::new(),
            removed: vec![ProductId::new()],
            categories: Vec::new(),
            removed_categories: Vec::new(),
            promotions: None,
        };
        let mut history = History::default();
        let mut dropped = Vec::new();
        for v in 1..=(HISTORY_VERSIONS as u64 + 3) {
            let (next, gone) = history.with(Some(step(v)), 1_000);
            history = next;
            dropped.extend(gone);
        }
        assert_eq!(dropped, vec![2, 3, 4]);
        let kept: Vec<u64> = history.versions().collect();
        assert_eq!(kept.len(), HISTORY_VERSIONS);
        let last = HISTORY_VERSIONS as u64 + 4;
        assert!(history.since(3, "f3", last).is_none(), "dropped");
        let from_4 = history.since(4, "f4", last).expect("kept");
        assert_eq!(from_4.removed.len(), HISTORY_VERSIONS);
        assert!(history.since(4, "f4", last + 1).is_none(), "not that far");

        // From storage: only the unbroken chain that ends at the current version is usable.
        let mut stored: Vec<CatalogChange> = (10..15).map(step).collect();
        stored.push(step(2));
        let rebuilt = History::rebuild(stored.clone(), 15);
        assert_eq!(
            rebuilt.versions().collect::<Vec<_>>(),
            vec![11, 12, 13, 14, 15]
        );
        assert!(rebuilt.since(10, "f10", 15).is_some());
        assert_eq!(History::rebuild(stored, 16).versions().count(), 0);
        // A change that does not continue the history starts it again.
        let (restarted, gone) = rebuilt.with(Some(step(40)), 1_000);
        assert_eq!(gone, vec![11, 12, 13, 14, 15]);
        assert_eq!(restarted.versions().collect::<Vec<_>>(), vec![41]);
    }
}
