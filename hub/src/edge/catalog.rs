//! The catalog as nodes see it: the catalog snapshot and the hub's live promotions under one
//! version that grows whenever either's content changes and survives restarts (the hub's
//! in-memory snapshot numbers its versions from 1 at each start), and the chunked `Catalog`
//! frames a node that is behind receives (the promotions travel in part 0, beside the
//! categories).

use protocol::codec;
use protocol::promotion::{Promotion, PromotionSet};
use protocol::replication::sync::{Frame, CATALOG_CHUNK, MAX_BATCH_BYTES, MAX_FRAME_BYTES};
use protocol::{CatalogSnapshot, Category, Product};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;

/// What one catalog version holds for the nodes: the catalog and the promotions live on the
/// hub when it was issued.
#[derive(Clone)]
pub struct NodeCatalog {
    pub snapshot: Arc<CatalogSnapshot>,
    pub promotions: Arc<PromotionSet>,
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

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.snapshot, self.promotions())
    }

    pub fn plan(&self) -> Plan {
        Plan::new(&self.snapshot, self.promotions())
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
/// version, part and parts at their widest, the categories and promotions (part 0), and the
/// products array's header at its widest for `CATALOG_CHUNK` entries.
fn frame_overhead(categories: &[Category], promotions: &[Promotion]) -> usize {
    let empty = Frame::Catalog {
        version: u64::MAX,
        part: u32::MAX,
        parts: u32::MAX,
        categories: categories.to_vec(),
        promotions: promotions.to_vec(),
        products: Vec::new(),
    };
    // Measured before compression: the bound is on what a node inflates and decodes. An empty
    // array is one byte; up to 65 535 entries take three.
    codec::encode(&empty)
        .map_or(usize::MAX, |b| b.len())
        .saturating_add(4)
}

/// A product's share of a frame, at most: its encoding (the codec's envelope around it makes
/// this a few bytes more than it takes inside the frame).
fn product_size(product: &Product) -> usize {
    codec::encode(product).map_or(usize::MAX, |b| b.len())
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
        let first_overhead = frame_overhead(snapshot.categories(), promotions);
        let overhead = frame_overhead(&[], &[]);
        if first_overhead > MAX_FRAME_BYTES {
            tracing::error!(
                bytes = first_overhead,
                limit = MAX_FRAME_BYTES,
                promotions = promotions.len(),
                "the catalog's categories and the live promotions are over the largest frame a \
                 node accepts: nodes will refuse part 0; end or shorten promotions"
            );
        } else if first_overhead > MAX_BATCH_BYTES {
            tracing::warn!(
                bytes = first_overhead,
                bound = MAX_BATCH_BYTES,
                promotions = promotions.len(),
                "the catalog's categories and the live promotions alone are over the frame \
                 bound: part 0 carries only them"
            );
        }
        let head_only = !snapshot.categories().is_empty() || !promotions.is_empty();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        let mut bytes = first_overhead;
        for (i, product) in products.iter().enumerate() {
            let size = product_size(product);
            let count = i - start;
            // Part 0 may go without products when the categories leave no room for the first.
            let may_cut = count > 0 || (ranges.is_empty() && head_only);
            if may_cut && (count >= CATALOG_CHUNK || bytes.saturating_add(size) > MAX_BATCH_BYTES) {
                ranges.push(start..i);
                start = i;
                bytes = overhead;
            }
            if bytes.saturating_add(size) > MAX_BATCH_BYTES {
                let frame = bytes.saturating_add(size);
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
            bytes = bytes.saturating_add(size);
        }
        ranges.push(start..products.len());
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
    Plan::new(snapshot, promotions).frame(snapshot, promotions, version, part)
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
                let frame = plan.frame(snapshot, promotions, u64::MAX, part);
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
            match plan.frame(&snapshot, &spring, 5, part) {
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
        let offer = NodeCatalog {
            snapshot: Arc::new(snapshot),
            promotions: Arc::new(both),
        };
        assert_eq!(
            offer.fingerprint(),
            fingerprint(&offer.snapshot, offer.promotions())
        );
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
}
