//! Identifiers. Entity ids are ULIDs made anywhere (an edge node offline too) without
//! coordination; a SKU is the merchant's own stock-keeping code.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Ulid);

        impl $name {
            /// A fresh id: the current time and 80 random bits.
            pub fn new() -> Self {
                Self(Ulid::new())
            }

            /// The 16 bytes of the id, big-endian, so byte order is time order.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0 .0.to_be_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ulid::DecodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ulid::from_string(s).map(Self)
            }
        }
    };
}

ulid_id!(
    /// A registered customer.
    CustomerId
);
ulid_id!(
    /// A basket: a customer's, or an anonymous shopper's.
    BasketId
);
ulid_id!(
    /// A product (which has one or more variants, each with its own SKU).
    ProductId
);
ulid_id!(
    /// One interaction event.
    EventId
);
ulid_id!(
    /// A shopper who has not signed in (a browser or app install).
    AnonymousId
);
ulid_id!(
    /// One checkout of a basket: a frozen, priced version waiting for (or done with) payment.
    CheckoutId
);
ulid_id!(
    /// An order: born paid, exactly one per successful payment.
    OrderId
);

/// What is wrong with a proposed SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SKU '{0}': use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'")]
pub struct SkuError(pub String);

/// A stock-keeping unit: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    pub fn parse(text: &str) -> Result<Sku, SkuError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Sku(text.to_string()))
        } else {
            Err(SkuError(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Sku {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Sku::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A place that holds stock: the online warehouse `online`, or a store such as `store-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocationId(pub String);

impl LocationId {
    /// The online warehouse, which ships web and mobile orders.
    pub fn online() -> LocationId {
        LocationId("online".to_string())
    }
}

impl fmt::Display for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        for good in ["A", "COF-001-500G", "a.b_c-d", &"x".repeat(64)] {
            assert!(Sku::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ümlaut", &"x".repeat(65), "semi;colon"] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
    }

    #[test]
    fn ids_round_trip_as_text() {
        let id = BasketId::new();
        assert_eq!(id.to_string().parse::<BasketId>(), Ok(id));
        assert!("not-a-ulid".parse::<BasketId>().is_err());
    }
}
