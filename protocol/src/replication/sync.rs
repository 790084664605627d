//! The sync protocol's frames: one WebSocket per node, binary frames, each one [`Frame`] encoded
//! by [`encode_frame`] (MessagePack with field names inside the versioned codec envelope).
//!
//! 1. Node → hub `Hello` (protocol version, replica, what it has from each origin); hub → node
//!    `Welcome` (what the hub has, its time), or a close code 4000–4999 with a reason.
//! 2. Each side numbers its own changes per origin and keeps those not yet acknowledged in an
//!    outbox; `Deltas { origin, from_seq, to_seq, items }` carries a bounded batch and
//!    `Ack { origin, seq }` (sent only once the batch is durable) lets the sender drop it.
//!    Items are state deltas or immutable records, so a batch sent twice is harmless.
//! 3. Hub → node: the catalog as a chunked `Catalog` snapshot when the node's version is behind;
//!    part 0 also carries the hub's live promotions, so one catalog version is one set of
//!    products, prices and promotions. A node that says so in `Hello` (`catalog_deltas`) and
//!    whose version the hub still has the changes since gets a chunked `CatalogDelta` instead
//!    (what changed, not the whole catalog); a delta that does not fit the node's version is
//!    answered with `CatalogWanted`, and the hub sends the whole catalog.
//! 4. `Heartbeat` both ways: liveness, the sender's time and its unacknowledged backlog.
//!
//! A frame kind or item kind a peer does not know decodes as `Unknown` and is ignored.

use super::counter::Entry;
use super::{
    Command, ConflictRecord, CouponTerms, DeficitRecord, ReplicaId, ReturnRecord, Rights,
    SaleRecord, Settlement,
};
use crate::catalog::{Category, CategoryId, Product};
use crate::codec::{decode, encode, CodecError, Stored};
use crate::ids::{LocationId, ProductId, Sku};
use crate::promotion::Promotion;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// The sync protocol version this build speaks.
/// Version 2: frames of 512 bytes or more may travel deflated (see [`encode_frame`]).
pub const PROTOCOL_VERSION: u16 = 2;

/// Close codes (4000–4999, application-defined).
pub mod close {
    /// The peer speaks a protocol version this build does not.
    pub const UNSUPPORTED_VERSION: u16 = 4001;
    /// The `Hello` names another replica than the credential proved, or a retired one.
    pub const WRONG_REPLICA: u16 = 4003;
    /// A frame could not be decoded, or broke the protocol.
    pub const MALFORMED: u16 = 4002;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 4009;
    /// The same node connected again; this older session is replaced.
    pub const REPLACED: u16 = 4010;
    /// No frame within the heartbeat timeout.
    pub const IDLE: u16 = 4008;
}

/// Bounds of one `Deltas` batch. The byte bound keeps every frame well under what the hub
/// accepts (actix-ws: 1 MiB per message), so a node back from a long outage catches up in many
/// small frames.
pub const MAX_BATCH_ITEMS: usize = 1_000;
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Products per `Catalog` chunk.
pub const CATALOG_CHUNK: usize = 200;

/// Highest sequence number received (durably) per origin replica.
pub type Vector = BTreeMap<ReplicaId, u64>;

/// What a `Rights` item counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Scarce {
    /// Sell rights of a SKU at a location.
    Stock { sku: Sku, location: LocationId },
    /// Redemptions left of a limited coupon.
    Coupon { code: String },
}

/// One change inside a `Deltas` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Item {
    /// The origin's PN-counter entries for stock on hand of a SKU at a location.
    OnHand {
        sku: Sku,
        location: LocationId,
        #[serde(flatten)]
        entry: Entry,
    },
    /// Another replica's PN-counter entries, relayed by the hub: a retired replica's, sent to
    /// the node that takes over its location, so the heir's view of on-hand is whole.
    OnHandOf {
        replica: ReplicaId,
        sku: Sku,
        location: LocationId,
        #[serde(flatten)]
        entry: Entry,
    },
    /// The origin's row of a bounded counter (its `R[i]`, `U[i]`, and for the hub `W`).
    Rights {
        key: Scarce,
        state: Rights,
    },
    Sale(SaleRecord),
    Deficit(DeficitRecord),
    Settlement(Settlement),
    Conflict(ConflictRecord),
    Command(Command),
    /// The terms of a coupon code the node may redeem (hub → node).
    Coupon(CouponTerms),
    /// A store's report about a click-and-collect order (node → hub): picked, short, collected.
    Pickup(super::PickupReport),
    /// Goods taken back against a store sale's receipt (node → hub), with their refunds.
    Return(ReturnRecord),
    /// An interaction recorded at the store (node → hub), e.g. a board impression: the hub
    /// appends it to the event log with the batch.
    Event(crate::event::Event),
    /// An item kind this build does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// One sync frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Frame {
    Hello {
        version: u16,
        replica: ReplicaId,
        location: LocationId,
        /// Highest sequence received from each origin.
        have: Vector,
        catalog_version: u64,
        /// The node's wall clock, for the skew shown to the operator.
        time_ms: u64,
        /// Changes the node has not had acknowledged yet.
        pending: u64,
        /// The fingerprint the hub gave with the node's catalog version (empty when unknown: a
        /// catalog from a hub before deltas). The hub sends a delta only from a version whose
        /// content it knows the node has.
        #[serde(default)]
        catalog_fingerprint: String,
        /// The node applies `CatalogDelta` frames. An older node sends no such field and is
        /// given whole `Catalog` snapshots, as before.
        #[serde(default)]
        catalog_deltas: bool,
        /// The node takes coupons at the till: it applies `Item::Coupon` terms, redeems from
        /// the `Scarce::Coupon` rights it holds and hands them back on `EndCoupon`. The hub
        /// shares coupon terms and rights only with a node that says so; an older node sends
        /// no such field (false) and is given none, so no right is stranded where it is
        /// never used nor returned.
        #[serde(default)]
        coupons: bool,
    },
    Welcome {
        have: Vector,
        catalog_version: u64,
        hub_time_ms: u64,
    },
    Deltas {
        origin: ReplicaId,
        from_seq: u64,
        to_seq: u64,
        items: Vec<Item>,
    },
    Ack {
        origin: ReplicaId,
        seq: u64,
    },
    Catalog {
        version: u64,
        part: u32,
        parts: u32,
        #[serde(default)]
        categories: Vec<Category>,
        /// The promotions live on the hub (in part 0, beside the categories; a node takes them
        /// from whichever parts carry them). Absent in a frame from a hub without promotions.
        /// A promotion this build cannot read (a newer hub's condition or benefit kind) is left
        /// out rather than refusing the whole catalog: see [`readable_promotions`].
        #[serde(default, deserialize_with = "readable_promotions")]
        promotions: Vec<Promotion>,
        products: Vec<Product>,
        /// The hub's fingerprint of this version's content (every part; empty from a hub before
        /// deltas). The node keeps it and tells it in `Hello`.
        #[serde(default)]
        fingerprint: String,
    },
    /// The change from catalog version `from_version` to `to_version`, in `parts` parts cut like
    /// `Catalog` chunks (at most `CATALOG_CHUNK` products and `MAX_BATCH_BYTES` each). Part 0
    /// carries the categories upserted and removed and, when they changed, the whole set of live
    /// promotions; removals and upserts of products may fill any part. A node whose version is
    /// `from_version` stores the parts and, with the last, switches to `to_version` in one write
    /// — the same catalog the whole snapshot of `to_version` gives; any other node ignores it
    /// and answers `CatalogWanted`. Only sent to a node whose `Hello` set `catalog_deltas`.
    CatalogDelta {
        from_version: u64,
        to_version: u64,
        /// The fingerprint of `to_version`'s content.
        fingerprint: String,
        part: u32,
        parts: u32,
        /// Categories new or changed (by id).
        #[serde(default)]
        categories: Vec<Category>,
        #[serde(default)]
        removed_categories: Vec<CategoryId>,
        /// The whole set of live promotions at `to_version`, when it differs from
        /// `from_version`'s (`None`: unchanged). Unreadable ones are left out, as in `Catalog`.
        #[serde(default, deserialize_with = "readable_promotions_if_changed")]
        promotions: Option<Vec<Promotion>>,
        /// Products gone (by id).
        #[serde(default)]
        removed: Vec<ProductId>,
        /// Products new or changed (whole, by id).
        #[serde(default)]
        products: Vec<Product>,
    },
    /// Node → hub: a `CatalogDelta` did not fit this node's catalog, which is at `version`:
    /// send the whole catalog.
    CatalogWanted {
        version: u64,
    },
    Heartbeat {
        time_ms: u64,
        pending: u64,
    },
    /// Node → hub, once after `Welcome`: the node plays boards and holds their playlist at
    /// `version` (0: none yet). The hub answers with `Boards` when its publication differs, and
    /// sends `Boards` again whenever it publishes. A node that never says so gets none.
    BoardsHave {
        version: u64,
    },
    /// Node → hub, with each heartbeat of a node that plays boards: each configured board's
    /// connections and last heartbeat (the hub shows them to operators; nothing else).
    BoardsReport {
        boards: Vec<crate::board::BoardReport>,
    },
    /// Hub → node: the board playlist for the node's store at the hub's publication `version`
    /// (the hub is the single writer; the node keeps the last one it was sent).
    Boards {
        version: u64,
        playlist: crate::board::BoardPlaylist,
    },
    /// A frame kind this build does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// Reads a `Catalog` frame's promotions, leaving out each one this build cannot read: a newer
/// hub may send a condition or benefit kind an older node does not know (the spec refuses
/// unknown fields and kinds), and refusing the frame would refuse the whole catalog — and close
/// the session at every connection, stopping the node's sales from reaching the hub. The node
/// prices without such a promotion until it is upgraded.
pub fn readable_promotions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Promotion>, D::Error> {
    Ok(known(Vec::<Readable>::deserialize(d)?))
}

/// Reads a `CatalogDelta`'s promotions (absent or nil: unchanged) like [`readable_promotions`].
pub fn readable_promotions_if_changed<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Promotion>>, D::Error> {
    Ok(Option::<Vec<Readable>>::deserialize(d)?.map(known))
}

/// A promotion as a peer sent it: one this build reads, or one it does not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Readable {
    Known(Box<Promotion>),
    Unreadable(serde::de::IgnoredAny),
}

fn known(list: Vec<Readable>) -> Vec<Promotion> {
    list.into_iter()
        .filter_map(|p| match p {
            Readable::Known(p) => Some(*p),
            Readable::Unreadable(_) => None,
        })
        .collect()
}

impl Stored for Frame {
    const KIND: &'static str = "sync";
    const VERSION: u16 = 1;
}

/// First byte of a compressed frame: `0xc1` is never used by MessagePack, so a frame is either
/// the codec's envelope as it is, or this byte and the envelope deflated (raw DEFLATE).
const COMPRESSED: u8 = 0xc1;
/// Frames at least this long are compressed (a batch of sale records shrinks to about a tenth;
/// a heartbeat or an ack is not worth it).
const COMPRESS_FROM: usize = 512;
/// The most a compressed frame may inflate to: batches are bounded by [`MAX_BATCH_BYTES`] of
/// items before compression, a catalog chunk by [`MAX_FRAME_BYTES`]; anything beyond is refused
/// as malformed instead of being inflated (a deflate bomb).
pub const MAX_INFLATED_BYTES: usize = 4 * MAX_FRAME_BYTES;

/// Encodes a frame for the wire (compressed when that makes it smaller).
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    let plain = encode(frame)?;
    if plain.len() < COMPRESS_FROM {
        return Ok(plain);
    }
    let packed = miniz_oxide::deflate::compress_to_vec(&plain, 6);
    if packed.len() + 1 >= plain.len() {
        return Ok(plain);
    }
    let mut out = Vec::with_capacity(packed.len() + 1);
    out.push(COMPRESSED);
    out.extend_from_slice(&packed);
    Ok(out)
}

/// Decodes a frame; a frame kind this build does not know is [`Frame::Unknown`], not an error.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, CodecError> {
    match bytes.split_first() {
        Some((&COMPRESSED, packed)) => {
            let plain =
                miniz_oxide::inflate::decompress_to_vec_with_limit(packed, MAX_INFLATED_BYTES)
                    .map_err(|e| CodecError::Malformed {
                        kind: Frame::KIND,
                        reason: format!(
                            "a compressed frame does not inflate (at most {MAX_INFLATED_BYTES} bytes): {:?}",
                            e.status
                        ),
                    })?;
            decode(&plain)
        }
        _ => decode(bytes),
    }
}

/// The encoded size of one item, for batching by bytes.
pub fn item_size(item: &Item) -> usize {
    rmp_serde::to_vec_named(item).map_or(usize::MAX, |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Hlc;

    fn stamp() -> Hlc {
        Hlc {
            ms: 1,
            c: 0,
            r: ReplicaId::hub(),
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut rights = Rights::new();
        rights.create(&ReplicaId("berlin".into()), 5);
        let sku = Sku::parse("COF-1").expect("sku");
        let location = LocationId("store-berlin".into());
        let frame = Frame::Deltas {
            origin: ReplicaId("berlin".into()),
            from_seq: 1,
            to_seq: 3,
            items: vec![
                Item::OnHand {
                    sku: sku.clone(),
                    location: location.clone(),
                    entry: Entry { p: 5, n: 2 },
                },
                Item::Rights {
                    key: Scarce::Stock { sku, location },
                    state: rights,
                },
                Item::Command(Command {
                    id: ulid::Ulid::new(),
                    kind: super::super::CommandKind::WantRights {
                        sku: Sku::parse("TEA-1").expect("sku"),
                        location: LocationId("store-berlin".into()),
                        units: 2,
                    },
                    at: stamp(),
                }),
            ],
        };
        let bytes = encode_frame(&frame).expect("encoded");
        assert_eq!(decode_frame(&bytes).expect("decoded"), frame);
    }

    #[derive(Serialize)]
    struct Envelope<'a, T> {
        v: u16,
        k: &'a str,
        b: T,
    }

    #[test]
    fn unknown_frame_and_item_kinds_are_ignored_not_fatal() {
        #[derive(Serialize)]
        struct FromTheFuture {
            t: &'static str,
            colour: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: FromTheFuture {
                t: "telepathy",
                colour: "blue",
            },
        })
        .expect("encoded");
        assert_eq!(decode_frame(&bytes).expect("decoded"), Frame::Unknown);

        #[derive(Serialize)]
        struct Batch {
            t: &'static str,
            origin: &'static str,
            from_seq: u64,
            to_seq: u64,
            items: Vec<FromTheFuture>,
        }
        let bytes = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: Batch {
                t: "deltas",
                origin: "berlin",
                from_seq: 1,
                to_seq: 1,
                items: vec![FromTheFuture {
                    t: "hologram",
                    colour: "red",
                }],
            },
        })
        .expect("encoded");
        match decode_frame(&bytes).expect("decoded") {
            Frame::Deltas { items, .. } => assert_eq!(items, vec![Item::Unknown]),
            other => panic!("{other:?}"),
        }
    }

    fn promotion(id: &str, benefit: &str) -> Promotion {
        Promotion {
            id: crate::promotion::PromotionId::parse(id).expect("valid id"),
            name: format!("Promotion {id}"),
            spec: crate::promotion::PromotionSpec::from_json(&format!(
                r#"{{"conditions": [{{"type": "channel", "any_of": ["pos"]}}], "benefit": {benefit}}}"#
            ))
            .expect("valid spec"),
            created_seq: 7,
        }
    }

    #[test]
    fn catalog_frames_carry_promotions_and_older_and_newer_peers_still_read_them() {
        let frame = Frame::Catalog {
            version: 3,
            part: 0,
            parts: 1,
            categories: Vec::new(),
            promotions: vec![
                promotion(
                    "TEA10",
                    r#"{"type": "percent_off_basket", "percent_bp": 1000}"#,
                ),
                promotion(
                    "GIFT",
                    r#"{"type": "free_gift", "sku": "MUG-1", "quantity": 1}"#,
                ),
            ],
            products: Vec::new(),
            fingerprint: "f".repeat(64),
        };
        let bytes = encode_frame(&frame).expect("encoded");
        assert_eq!(decode_frame(&bytes).expect("decoded"), frame);

        // A hub without promotions sends no such field: the frame reads with none.
        #[derive(Serialize)]
        struct OldCatalog {
            t: &'static str,
            version: u64,
            part: u32,
            parts: u32,
            products: Vec<Product>,
        }
        let old = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: OldCatalog {
                t: "catalog",
                version: 2,
                part: 0,
                parts: 1,
                products: Vec::new(),
            },
        })
        .expect("encoded");
        match decode_frame(&old).expect("decoded") {
            Frame::Catalog {
                version,
                promotions,
                ..
            } => assert_eq!((version, promotions.len()), (2, 0)),
            other => panic!("{other:?}"),
        }

        // A newer hub's promotion with a benefit kind this build does not know is left out;
        // the rest of the frame, and the other promotions, still read.
        #[derive(Serialize)]
        struct Newer {
            t: &'static str,
            version: u64,
            part: u32,
            parts: u32,
            promotions: Vec<serde_json::Value>,
            products: Vec<Product>,
        }
        let known = serde_json::to_value(promotion(
            "TEA10",
            r#"{"type": "percent_off_basket", "percent_bp": 1000}"#,
        ))
        .expect("json");
        let mut unknown = known.clone();
        unknown["id"] = "HOLO".into();
        unknown["spec"]["benefit"] = serde_json::json!({"type": "hologram", "colour": "red"});
        let newer = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: Newer {
                t: "catalog",
                version: 4,
                part: 0,
                parts: 1,
                promotions: vec![unknown, known],
                products: Vec::new(),
            },
        })
        .expect("encoded");
        match decode_frame(&newer).expect("decoded") {
            Frame::Catalog { promotions, .. } => {
                let ids: Vec<&str> = promotions.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["TEA10"]);
                assert_eq!(
                    promotions[0],
                    promotion(
                        "TEA10",
                        r#"{"type": "percent_off_basket", "percent_bp": 1000}"#
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn delta(promotions: Option<Vec<Promotion>>) -> Frame {
        Frame::CatalogDelta {
            from_version: 4,
            to_version: 6,
            fingerprint: "a".repeat(64),
            part: 0,
            parts: 2,
            categories: vec![Category {
                id: CategoryId("tea".into()),
                name: "Tea".into(),
                description: String::new(),
                position: 2,
            }],
            removed_categories: vec![CategoryId("cocoa".into())],
            promotions,
            removed: vec![ProductId::new()],
            products: Vec::new(),
        }
    }

    #[test]
    fn catalog_deltas_round_trip_and_tell_unchanged_from_emptied_promotions() {
        let tea = promotion(
            "TEA10",
            r#"{"type": "percent_off_basket", "percent_bp": 1000}"#,
        );
        for promotions in [None, Some(Vec::new()), Some(vec![tea])] {
            let frame = delta(promotions);
            let bytes = encode_frame(&frame).expect("encoded");
            assert_eq!(decode_frame(&bytes).expect("decoded"), frame);
        }
        let wanted = Frame::CatalogWanted { version: 4 };
        let bytes = encode_frame(&wanted).expect("encoded");
        assert_eq!(decode_frame(&bytes).expect("decoded"), wanted);

        // A newer hub's promotion this build cannot read is left out of a delta as well.
        #[derive(Serialize)]
        struct Newer {
            t: &'static str,
            from_version: u64,
            to_version: u64,
            fingerprint: &'static str,
            part: u32,
            parts: u32,
            promotions: Vec<serde_json::Value>,
        }
        let mut unknown = serde_json::to_value(promotion(
            "HOLO",
            r#"{"type": "percent_off_basket", "percent_bp": 1000}"#,
        ))
        .expect("json");
        unknown["spec"]["benefit"] = serde_json::json!({"type": "hologram"});
        let newer = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: Newer {
                t: "catalog_delta",
                from_version: 1,
                to_version: 2,
                fingerprint: "f",
                part: 0,
                parts: 1,
                promotions: vec![unknown],
            },
        })
        .expect("encoded");
        match decode_frame(&newer).expect("decoded") {
            Frame::CatalogDelta {
                promotions,
                products,
                removed,
                ..
            } => {
                assert_eq!(promotions, Some(Vec::new()));
                assert!(products.is_empty() && removed.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    /// The frames as a build before catalog deltas knew them (the kinds it matches on).
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "t", rename_all = "snake_case")]
    enum BeforeDeltas {
        Hello {
            version: u16,
            catalog_version: u64,
        },
        Catalog {
            version: u64,
            products: Vec<Product>,
        },
        #[serde(other)]
        Unknown,
    }

    impl Stored for BeforeDeltas {
        const KIND: &'static str = "sync";
        const VERSION: u16 = 1;
    }

    #[test]
    fn peers_before_deltas_ignore_them_and_are_read_as_such() {
        // An older node reads a delta, or a hub's reply to a CatalogWanted, as a kind it
        // does not know: ignored.
        for frame in [delta(None), Frame::CatalogWanted { version: 3 }] {
            let bytes = encode(&frame).expect("encoded");
            assert!(matches!(
                decode::<BeforeDeltas>(&bytes).expect("decoded"),
                BeforeDeltas::Unknown
            ));
        }
        // ... and the new fields of the frames it knows are skipped.
        let snapshot = Frame::Catalog {
            version: 3,
            part: 0,
            parts: 1,
            categories: Vec::new(),
            promotions: Vec::new(),
            products: Vec::new(),
            fingerprint: "b".repeat(64),
        };
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            replica: ReplicaId("berlin".into()),
            location: LocationId("store-berlin".into()),
            have: Vector::new(),
            catalog_version: 3,
            time_ms: 1,
            pending: 0,
            catalog_fingerprint: "b".repeat(64),
            catalog_deltas: true,
            coupons: true,
        };
        for frame in [&snapshot, &hello] {
            let bytes = encode_frame(frame).expect("encoded");
            assert_eq!(&decode_frame(&bytes).expect("decoded"), frame);
        }
        assert!(matches!(
            decode::<BeforeDeltas>(&encode(&snapshot).expect("encoded")).expect("decoded"),
            BeforeDeltas::Catalog { version: 3, products } if products.is_empty()
        ));
        assert!(matches!(
            decode::<BeforeDeltas>(&encode(&hello).expect("encoded")).expect("decoded"),
            BeforeDeltas::Hello {
                version: PROTOCOL_VERSION,
                catalog_version: 3
            }
        ));

        // An older node's Hello has none of the later fields: it asks for no deltas, knows no
        // fingerprint, takes no coupons.
        #[derive(Serialize)]
        struct OldHello {
            t: &'static str,
            version: u16,
            replica: &'static str,
            location: &'static str,
            have: Vector,
            catalog_version: u64,
            time_ms: u64,
            pending: u64,
        }
        let old = rmp_serde::to_vec_named(&Envelope {
            v: 1,
            k: "sync",
            b: OldHello {
                t: "hello",
                version: PROTOCOL_VERSION,
                replica: "berlin",
                location: "store-berlin",
                have: Vector::new(),
                catalog_version: 3,
                time_ms: 1,
                pending: 0,
            },
        })
        .expect("encoded");
        match decode_frame(&old).expect("decoded") {
            Frame::Hello {
                catalog_fingerprint,
                catalog_deltas,
                coupons,
                ..
            } => assert_eq!(
                (catalog_fingerprint.as_str(), catalog_deltas, coupons),
                ("", false, false),
                "an older node takes no coupons"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_frame(&[0xc1, 0xff, 0x00]).is_err());
        assert!(decode_frame(&[0xc1]).is_err());
        assert!(decode_frame(&[]).is_err());
    }

    fn sales_batch(n: usize) -> Frame {
        let me = ReplicaId("berlin".into());
        let items = (0..n)
            .map(|i| {
                let sku = Sku::parse(&format!("COF-{:04}-250G", i % 40)).expect("sku");
                let price = crate::Money::new(899, crate::Currency::EUR);
                Item::Sale(SaleRecord {
                    id: ulid::Ulid::new(),
                    number: format!("berlin-{i:06}"),
                    replica: me.clone(),
                    location: LocationId("store-berlin".into()),
                    at: Hlc {
                        ms: 1_790_000_000_000 + i as u64,
                        c: 0,
                        r: me.clone(),
                    },
                    lines: vec![crate::replication::SaleLine {
                        sku,
                        name: "Brazil Cerrado Ground Coffee – 250 g".into(),
                        quantity: 1,
                        unit_price: price,
                        total: price,
                        tax_rate_bp: 700,
                    }],
                    total: price,
                    taxes: vec![],
                    payments: vec![crate::replication::SalePayment {
                        method: "cash".into(),
                        amount: price,
                        reference: None,
                        card: None,
                    }],
                    customer: None,
                    clerk: Some("anna".into()),
                    promotions: Default::default(),
                    coupons: Vec::new(),
                })
            })
            .collect();
        Frame::Deltas {
            origin: me,
            from_seq: 1,
            to_seq: n as u64,
            items,
        }
    }

    #[test]
    fn large_frames_travel_compressed_and_come_back_the_same() {
        let frame = sales_batch(500);
        let plain = encode(&frame).expect("encoded").len();
        let wire = encode_frame(&frame).expect("encoded");
        assert_eq!(wire[0], 0xc1, "compressed");
        assert!(wire.len() * 3 < plain, "{} of {plain} bytes", wire.len());
        assert_eq!(decode_frame(&wire).expect("decoded"), frame);
        // A heartbeat stays as it is.
        let small = Frame::Heartbeat {
            time_ms: 1,
            pending: 0,
        };
        assert_ne!(encode_frame(&small).expect("encoded")[0], 0xc1);
    }

    #[test]
    fn a_deflate_bomb_is_refused_not_inflated() {
        let zeros = vec![0u8; MAX_INFLATED_BYTES + 1];
        let mut bomb = vec![0xc1];
        bomb.extend(miniz_oxide::deflate::compress_to_vec(&zeros, 9));
        assert!(bomb.len() < MAX_FRAME_BYTES, "the bomb fits in a frame");
        assert!(matches!(
            decode_frame(&bomb),
            Err(CodecError::Malformed { .. })
        ));
    }
}
