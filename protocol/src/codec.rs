//! The codec for stored values (and, later, sync frames): MessagePack with field names
//! (`rmp_serde::to_vec_named`) inside a versioned envelope `{v, k, b}`.
//!
//! `v` is the schema version of the value's kind and changes only for a breaking change (adding
//! a field with a default is not one). A value whose version this build does not know is refused
//! with [`CodecError::UnknownVersion`], never misread.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that may be stored: it names its kind and its current schema version.
pub trait Stored: Serialize + DeserializeOwned {
    /// A short, stable name of the kind, e.g. `"basket"`.
    const KIND: &'static str;
    /// The schema version written by this build.
    const VERSION: u16;
    /// The oldest version this build still reads: the type's own deserialisation turns the
    /// older shape into the current one (e.g. with `#[serde(from = ...)]`). Older values are
    /// refused with [`CodecError::UnknownVersion`].
    const READS_FROM: u16 = Self::VERSION;
}

/// Why a stored value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("stored {kind} has schema version {found}, this build reads version {supported}; upgrade the hub or migrate the data")]
    UnknownVersion {
        kind: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("expected a stored {expected}, found a stored {found}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
    #[error("stored {kind} is malformed: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("cannot encode {kind}: {reason}")]
    Encode { kind: &'static str, reason: String },
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T: ?Sized> {
    v: u16,
    k: &'a str,
    b: &'a T,
}

#[derive(Deserialize)]
struct Header {
    v: u16,
    k: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: u16,
    k: String,
    b: T,
}

/// Encodes a value in its versioned envelope.
pub fn encode<T: Stored>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as::<T, T>(value)
}

/// Encodes `body` in the envelope of `T`: for a borrowed view of a `T` whose fields serialise
/// exactly as `T`'s do (e.g. [`crate::event::EventChunkRef`]), so a writer need not own a copy.
pub fn encode_as<T: Stored, B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>, CodecError> {
    let envelope = EnvelopeOut {
        v: T::VERSION,
        k: T::KIND,
        b: body,
    };
    rmp_serde::to_vec_named(&envelope).map_err(|e| CodecError::Encode {
        kind: T::KIND,
        reason: e.to_string(),
    })
}

/// Decodes a value, checking its kind and version first.
pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, CodecError> {
    // One pass in the usual case; the header alone is read again only to explain a failure.
    match rmp_serde::from_slice::<Envelope<T>>(bytes) {
        Ok(envelope) => {
            check_header(&envelope.k, envelope.v, T::KIND, T::READS_FROM, T::VERSION)?;
            Ok(envelope.b)
        }
        Err(body_error) => {
            let header: Header =
                rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed {
                    kind: T::KIND,
                    reason: e.to_string(),
                })?;
            check_header(&header.k, header.v, T::KIND, T::READS_FROM, T::VERSION)?;
            Err(CodecError::Malformed {
                kind: T::KIND,
                reason: body_error.to_string(),
            })
        }
    }
}

fn check_header(
    found_kind: &str,
    found: u16,
    kind: &'static str,
    oldest: u16,
    supported: u16,
) -> Result<(), CodecError> {
    if found_kind != kind {
        return Err(CodecError::WrongKind {
            expected: kind,
            found: found_kind.to_string(),
        });
    }
    if !(oldest..=supported).contains(&found) {
        return Err(CodecError::UnknownVersion {
            kind,
            found,
            supported,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Basket, BasketId, BasketOwner, Currency, Sku};
    use proptest::prelude::*;
    use time::OffsetDateTime;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
        count: u32,
    }
    impl Stored for V1 {
        const KIND: &'static str = "sample";
        const VERSION: u16 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1WithMore {
        name: String,
        count: u32,
        #[serde(default)]
        colour: Option<String>,
    }
    impl Stored for V1WithMore {
        const KIND: &'static str = "sample";
        const VERSION: u16 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        title: String,
    }
    impl Stored for V2 {
        const KIND: &'static str = "sample";
        const VERSION: u16 = 2;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Other {
        name: String,
    }
    impl Stored for Other {
        const KIND: &'static str = "other";
        const VERSION: u16 = 1;
    }

    #[test]
    fn added_fields_read_both_ways() {
        let old = encode(&V1 {
            name: "a".into(),
            count: 2,
        })
        .expect("encodes");
        let new: V1WithMore = decode(&old).expect("old bytes read by the new struct");
        assert_eq!(new.colour, None);
        let newer = encode(&V1WithMore {
            name: "b".into(),
            count: 3,
            colour: Some("red".into()),
        })
        .expect("encodes");
        assert_eq!(
            decode::<V1>(&newer),
            Ok(V1 {
                name: "b".into(),
                count: 3
            })
        );
    }

    #[test]
    fn unknown_version_is_refused_not_misread() {
        let v2 = encode(&V2 { title: "x".into() }).expect("encodes");
        let err = decode::<V1>(&v2).expect_err("must refuse");
        assert_eq!(
            err,
            CodecError::UnknownVersion {
                kind: "sample",
                found: 2,
                supported: 1
            }
        );
        assert!(err.to_string().contains("version 2"));
    }

    /// Version 3 of "sample" reads version 2 too, migrating its shape.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(from = "V3Wire")]
    struct V3 {
        titles: Vec<String>,
    }
    #[derive(Deserialize)]
    struct V3Wire {
        #[serde(default)]
        titles: Option<Vec<String>>,
        #[serde(default)]
        title: Option<String>,
    }
    impl From<V3Wire> for V3 {
        fn from(w: V3Wire) -> V3 {
            V3 {
                titles: w.titles.unwrap_or_else(|| w.title.into_iter().collect()),
            }
        }
    }
    impl Stored for V3 {
        const KIND: &'static str = "sample";
        const VERSION: u16 = 3;
        const READS_FROM: u16 = 2;
    }

    #[test]
    fn older_versions_in_range_are_migrated_older_ones_refused() {
        let v2 = encode(&V2 { title: "x".into() }).expect("encodes");
        assert_eq!(
            decode::<V3>(&v2),
            Ok(V3 {
                titles: vec!["x".into()]
            })
        );
        let v3 = encode(&V3 {
            titles: vec!["a".into(), "b".into()],
        })
        .expect("encodes");
        assert_eq!(decode::<V3>(&v3).map(|v| v.titles.len()), Ok(2));
        let v1 = encode(&V1 {
            name: "a".into(),
            count: 1,
        })
        .expect("encodes");
        assert!(matches!(
            decode::<V3>(&v1),
            Err(CodecError::UnknownVersion { found: 1, .. })
        ));
    }

    #[test]
    fn wrong_kind_and_garbage_are_refused() {
        let other = encode(&Other { name: "x".into() }).expect("encodes");
        assert!(matches!(
            decode::<V1>(&other),
            Err(CodecError::WrongKind { .. })
        ));
        assert!(matches!(
            decode::<V1>(&[0xc1, 0x00]),
            Err(CodecError::Malformed { .. })
        ));
        assert!(matches!(
            decode::<V1>(&[]),
            Err(CodecError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn values_round_trip(name in ".{0,40}", count in any::<u32>()) {
            let v = V1 { name, count };
            prop_assert_eq!(decode::<V1>(&encode(&v).expect("encodes")).expect("decodes"), v);
        }

        #[test]
        fn baskets_round_trip(lines in proptest::collection::btree_map("[A-Z]{1,8}", 1u32..=999, 0..20)) {
            let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
            let mut b = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
            for (sku, qty) in lines {
                b.add(Sku::parse(&sku).expect("valid sku"), qty.into(), i64::MAX, now).expect("adds");
            }
            prop_assert_eq!(decode::<Basket>(&encode(&b).expect("encodes")).expect("decodes"), b);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<V1>(&bytes);
        }
    }
}
