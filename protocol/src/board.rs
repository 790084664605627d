//! In-store advertising boards: the playlist the hub publishes (single writer, versioned) and
//! each store's edge node plays on its boards (`docs/boards.md`).
//!
//! A playlist is a default sequence of items plus, per audience segment, the items a board
//! shows for a while when a consenting shopper of that segment identifies near it. An item is
//! content (a title and a text), a product (live price and stock from the node) or an offer (a
//! product and a quantity: the node shows it only while the promotion engine really discounts
//! that basket, with the price it would charge).

use crate::ids::Sku;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Items in one list at most.
pub const MAX_ITEMS: usize = 100;
/// Segments with their own items at most.
pub const MAX_SEGMENTS: usize = 50;
/// The longest title, text or headline.
pub const MAX_TEXT: usize = 500;

/// One thing a board shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardItem {
    /// Stable id within the playlist (letters, digits, `-`, `_`; at most 64): impressions and
    /// interactions name it.
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
    /// A product: the board shows its live price and stock at the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// An offer on `sku`: the price of this many units with the store's promotions. Shown only
    /// when a promotion applies to that basket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_quantity: Option<u32>,
    /// Seconds on screen (default: the playlist's `dwell_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
}

/// What the hub publishes for a store, or for every store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BoardPlaylist {
    /// What every board shows by default, in order.
    #[serde(default)]
    pub items: Vec<BoardItem>,
    /// Items for shoppers of a segment (by segment name), shown instead of the default while a
    /// consenting shopper of that segment is near.
    #[serde(default)]
    pub segments: BTreeMap<String, Vec<BoardItem>>,
    /// Default seconds per item (0: the node's default).
    #[serde(default)]
    pub dwell_secs: u32,
}

/// A playlist a node holds: the hub's publication version and the content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BoardPublication {
    pub version: u64,
    pub playlist: BoardPlaylist,
}

impl crate::codec::Stored for BoardPublication {
    const KIND: &'static str = "board_publication";
    const VERSION: u16 = 1;
}

/// A shopper's say about in-store boards, kept by the hub per customer: whether they agreed
/// to content chosen for them when they identify at a board, and the audience segments they
/// belong to (set by a marketer; the full segment engine is another piece of work).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BoardAudience {
    #[serde(default)]
    pub consent: bool,
    #[serde(default)]
    pub segments: Vec<String>,
    /// When it was last set (Unix milliseconds).
    #[serde(default)]
    pub updated_ms: u64,
    /// The shopper the code belongs to, kept by a node only for a shopper who consents (the
    /// subject of their board events); absent on the hub's own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<crate::CustomerId>,
    /// The item chosen for the shopper (the hub's `board_item` slot), kept by a node with the
    /// rest of the answer so it still shows when the hub cannot be asked; absent on the hub's
    /// own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<BoardItem>,
}

impl crate::codec::Stored for BoardAudience {
    const KIND: &'static str = "board_audience";
    const VERSION: u16 = 1;
}

/// A plain id: 1 to 64 of letters, digits, `-` and `_`.
/// What a shopper shows at a board, normalised: their customer id (26 characters, upper case)
/// or their loyalty number (8 to 16 digits; spaces and dashes as printed on a card dropped).
/// `None` for anything else.
pub fn shopper_code(text: &str) -> Option<String> {
    let text = text.trim();
    if let Ok(id) = text.parse::<crate::CustomerId>() {
        return Some(id.to_string());
    }
    let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (8..=16)
        .contains(&digits.len())
        .then_some(digits)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BoardPlaylist {
    /// Every problem with the playlist, as `(field, message)`; empty when it is fine.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check_items("items", &self.items, &mut out);
        if self.segments.len() > MAX_SEGMENTS {
            out.push((
                "segments".into(),
                format!("at most {MAX_SEGMENTS} segments"),
            ));
        }
        for (name, items) in &self.segments {
            let field = format!("segments.{name}");
            if !is_plain_id(name) {
                out.push((
                    field.clone(),
                    "a segment name is 1 to 64 letters, digits, '-' or '_'".into(),
                ));
            }
            if items.is_empty() {
                out.push((field.clone(), "a segment needs at least one item".into()));
            }
            check_items(&field, items, &mut out);
        }
        if self.dwell_secs > 3600 {
            out.push(("dwell_secs".into(), "at most 3600 seconds".into()));
        }
        out
    }

    /// The items a board shows for a shopper of `segments` (the first segment, by name, that
    /// has items), or the default items.
    pub fn items_for<'a>(&'a self, segments: &[String]) -> (Option<&'a str>, &'a [BoardItem]) {
        let mut names: Vec<&String> = segments.iter().collect();
        names.sort();
        for name in names {
            if let Some((key, items)) = self.segments.get_key_value(name.as_str()) {
                return (Some(key.as_str()), items);
            }
        }
        (None, &self.items)
    }

    /// Every SKU the playlist shows.
    pub fn skus(&self) -> BTreeSet<Sku> {
        self.items
            .iter()
            .chain(self.segments.values().flatten())
            .filter_map(|i| i.sku.clone())
            .collect()
    }
}

fn check_items(field: &str, items: &[BoardItem], out: &mut Vec<(String, String)>) {
    if items.len() > MAX_ITEMS {
        out.push((field.into(), format!("at most {MAX_ITEMS} items")));
    }
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !is_plain_id(&item.id) {
            out.push((
                format!("{f}.id"),
                "an item id is 1 to 64 letters, digits, '-' or '_'".into(),
            ));
        } else if !seen.insert(item.id.as_str()) {
            out.push((format!("{f}.id"), format!("'{}' is used twice", item.id)));
        }
        if item.title.trim().is_empty() && item.sku.is_none() {
            out.push((
                format!("{f}.title"),
                "content without a product needs a title".into(),
            ));
        }
        for (name, text) in [("title", &item.title), ("body", &item.body)] {
            if text.chars().count() > MAX_TEXT {
                out.push((
                    format!("{f}.{name}"),
                    format!("at most {MAX_TEXT} characters"),
                ));
            }
        }
        match (item.offer_quantity, &item.sku) {
            (Some(_), None) => out.push((
                format!("{f}.offer_quantity"),
                "an offer needs the sku it is on".into(),
            )),
            (Some(q), Some(_)) if !(1..=99).contains(&q) => out.push((
                format!("{f}.offer_quantity"),
                "an offer is on 1 to 99 units".into(),
            )),
            _ => {}
        }
        if let Some(s) = item.seconds {
            if !(1..=3600).contains(&s) {
                out.push((format!("{f}.seconds"), "1 to 3600 seconds".into()));
            }
        }
    }
}

/// One board as its store's node last saw it: reported to the hub with the node's heartbeats
/// (`Frame::BoardsReport`) for the operators' view. Says nothing about who stands in front of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BoardReport {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Open connections of the board's page.
    #[serde(default)]
    pub connections: u32,
    /// The board's last heartbeat (Unix ms, the node's clock).
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
    /// Not connected, or silent beyond the node's `dark_after`.
    #[serde(default)]
    pub dark: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> BoardItem {
        BoardItem {
            id: id.into(),
            title: "Hello".into(),
            body: String::new(),
            sku: None,
            offer_quantity: None,
            seconds: None,
        }
    }

    #[test]
    fn problems_name_the_field_to_fix() {
        let mut p = BoardPlaylist {
            items: vec![item("a"), item("a"), item("bad id")],
            ..BoardPlaylist::default()
        };
        p.items.push(BoardItem {
            offer_quantity: Some(3),
            ..item("offer")
        });
        p.segments.insert("vip".into(), Vec::new());
        let fields: Vec<String> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "items[1].id",
                "items[2].id",
                "items[3].offer_quantity",
                "segments.vip"
            ]
        );
        let fine = BoardPlaylist {
            items: vec![item("a")],
            ..BoardPlaylist::default()
        };
        assert!(fine.problems().is_empty());
    }

    #[test]
    fn a_shopper_gets_the_first_segment_with_items_or_the_default() {
        let mut p = BoardPlaylist {
            items: vec![item("default")],
            ..BoardPlaylist::default()
        };
        p.segments.insert("tea".into(), vec![item("t")]);
        p.segments.insert("coffee".into(), vec![item("c")]);
        let (seg, items) = p.items_for(&["tea".into(), "coffee".into()]);
        assert_eq!((seg, items[0].id.as_str()), (Some("coffee"), "c"));
        let (seg, items) = p.items_for(&["wine".into()]);
        assert_eq!((seg, items[0].id.as_str()), (None, "default"));
    }

    #[test]
    fn publications_round_trip() {
        let p = BoardPublication {
            version: 3,
            playlist: BoardPlaylist {
                items: vec![BoardItem {
                    sku: Some(Sku::parse("TEA-1").expect("sku")),
                    offer_quantity: Some(2),
                    ..item("x")
                }],
                ..BoardPlaylist::default()
            },
        };
        let bytes = crate::codec::encode(&p).expect("encodes");
        assert_eq!(crate::codec::decode::<BoardPublication>(&bytes), Ok(p));
    }
}
