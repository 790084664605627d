//! The boards' feed: the playlist the node holds, with the store's live prices, stock and the
//! offers the promotion engine applies (priced by the till's code, `Store::quote`). Computed
//! once for every board, off the async threads; boards get it when it differs.

use super::Boards;
use crate::store::{now_ms, Store};
use protocol::board::{BoardItem, BoardPublication};
use protocol::Sku;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A SKU's stock as a board says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockBadge {
    pub on_hand: i64,
    /// `in`, `low`, `out` or `back`.
    pub state: &'static str,
    pub label: String,
}

/// An offer the promotion engine applies to `quantity` units now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferView {
    pub quantity: u32,
    pub total: String,
    pub was: String,
    pub saving: String,
    pub promotions: Vec<String>,
}

/// One item as boards show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedItem {
    pub id: String,
    pub title: String,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regular_price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<StockBadge>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<OfferView>,
    pub seconds: u32,
}

/// The feed: the default items and each segment's, as JSON arrays ready to send.
#[derive(Debug, Default, PartialEq)]
pub struct Feed {
    /// The playlist's publication version.
    pub version: u64,
    pub default: String,
    pub segments: BTreeMap<String, String>,
    /// When it was computed (Unix ms): the benchmark's start of a stock change's way to boards.
    pub computed_ms: u64,
}

impl Feed {
    /// The items JSON for a segment (the default when the segment has none; an empty list
    /// before the first computation).
    pub fn items(&self, segment: Option<&str>) -> &str {
        let items = segment
            .and_then(|s| self.segments.get(s))
            .unwrap_or(&self.default);
        if items.is_empty() {
            "[]"
        } else {
            items
        }
    }

    fn same_content(&self, other: &Feed) -> bool {
        (self.version, &self.default, &self.segments)
            == (other.version, &other.default, &other.segments)
    }
}

/// What the feed remembers between computations: each SKU's last on-hand and until when it is
/// "back in stock".
#[derive(Default)]
struct Memory {
    last: BTreeMap<Sku, i64>,
    back_until_ms: BTreeMap<Sku, u64>,
}

/// Recomputes the feed whenever a local change lands, and every second, until shutdown.
pub(crate) async fn run(boards: Arc<Boards>) {
    let mut durable = boards.store.durable_seq();
    let mut shutdown = boards.shutdown.clone();
    let memory = Arc::new(std::sync::Mutex::new(Memory::default()));
    loop {
        let (b, m) = (boards.clone(), memory.clone());
        match tokio::task::spawn_blocking(move || compute(&b, &m)).await {
            Ok(Ok(feed)) => {
                boards.feed.send_if_modified(|current| {
                    if current.same_content(&feed) {
                        false
                    } else {
                        *current = Arc::new(feed);
                        true
                    }
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the boards' feed could not be computed"),
            Err(e) => tracing::error!(error = %e, "the boards' feed task failed"),
        }
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(super::REFRESH) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

fn compute(boards: &Boards, memory: &std::sync::Mutex<Memory>) -> Result<Feed, crate::StoreError> {
    let store = &boards.store;
    let BoardPublication { version, playlist } = super::stored_playlist(store)?;
    let dwell = if playlist.dwell_secs > 0 {
        playlist.dwell_secs
    } else {
        boards.settings.dwell_secs
    };
    let mut stock = BTreeMap::new();
    for sku in playlist.skus() {
        if let Some(line) = store.stock_of(&sku)? {
            stock.insert(sku, line.on_hand);
        }
    }
    let badges = {
        let mut m = memory
            .lock()
            .map_err(|_| crate::StoreError::Corrupt("the feed's memory is poisoned".into()))?;
        badges(&mut m, &stock, boards, now_ms())
    };
    let view = |items: &[BoardItem]| -> String {
        let list: Vec<FeedItem> = items
            .iter()
            .filter_map(|i| item(store, i, &badges, dwell))
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    };
    Ok(Feed {
        version,
        default: view(&playlist.items),
        segments: playlist
            .segments
            .iter()
            .map(|(name, items)| (name.clone(), view(items)))
            .collect(),
        computed_ms: now_ms(),
    })
}

/// One item as boards show it now (its id and JSON), stock badge without the "back in stock"
/// memory; `None` when it cannot be shown (see [`item`]).
pub(crate) fn single(
    store: &Store,
    settings: &super::BoardSettings,
    i: &BoardItem,
    dwell: u32,
) -> Result<Option<(String, String)>, crate::StoreError> {
    let mut stock = BTreeMap::new();
    if let Some(sku) = &i.sku {
        if let Some(line) = store.stock_of(sku)? {
            stock.insert(sku.clone(), line.on_hand);
        }
    }
    let badges = badges_with(&mut Memory::default(), &stock, settings, now_ms());
    Ok(item(store, i, &badges, dwell)
        .and_then(|f| Some((f.id.clone(), serde_json::to_string(&f).ok()?))))
}

fn badges(
    m: &mut Memory,
    stock: &BTreeMap<Sku, i64>,
    boards: &Boards,
    now: u64,
) -> BTreeMap<Sku, StockBadge> {
    badges_with(m, stock, &boards.settings, now)
}

fn badges_with(
    m: &mut Memory,
    stock: &BTreeMap<Sku, i64>,
    settings: &super::BoardSettings,
    now: u64,
) -> BTreeMap<Sku, StockBadge> {
    let low = settings.low_stock;
    let back_for = settings.back_in_stock_for.as_millis() as u64;
    let mut out = BTreeMap::new();
    for (sku, &on_hand) in stock {
        if on_hand > 0 && m.last.get(sku).is_some_and(|&was| was <= 0) {
            m.back_until_ms.insert(sku.clone(), now + back_for);
        }
        if on_hand <= 0 {
            m.back_until_ms.remove(sku);
        }
        m.last.insert(sku.clone(), on_hand);
        let back = m.back_until_ms.get(sku).is_some_and(|&t| t > now);
        let (state, label) = if on_hand <= 0 {
            ("out", "Sold out".to_string())
        } else if back && on_hand <= low {
            ("back", format!("Back in stock – only {on_hand} left"))
        } else if back {
            ("back", "Back in stock".to_string())
        } else if on_hand <= low {
            ("low", format!("Only {on_hand} left"))
        } else {
            ("in", "In stock".to_string())
        };
        out.insert(
            sku.clone(),
            StockBadge {
                on_hand,
                state,
                label: label.to_string(),
            },
        );
    }
    out
}

/// The till's quote of `quantity` units of a SKU (catalog, promotions, now).
fn quote(store: &Store, sku: &Sku, quantity: u32) -> Option<crate::ops::SaleQuote> {
    let request: crate::ops::SaleRequest = serde_json::from_value(serde_json::json!({
        "lines": [{ "sku": sku.as_str(), "quantity": quantity }],
    }))
    .ok()?;
    store.quote(&request).ok()
}

/// An item as boards show it; `None` for a product the catalog does not have, or an offer no
/// promotion applies to now.
fn item(
    store: &Store,
    i: &BoardItem,
    badges: &BTreeMap<Sku, StockBadge>,
    dwell: u32,
) -> Option<FeedItem> {
    let mut out = FeedItem {
        id: i.id.clone(),
        title: i.title.clone(),
        body: i.body.clone(),
        sku: None,
        price: None,
        regular_price: None,
        currency: None,
        stock: None,
        offer: None,
        seconds: i.seconds.unwrap_or(dwell),
    };
    let Some(sku) = &i.sku else {
        return Some(out);
    };
    let one = quote(store, sku, 1)?;
    let line = one.lines.first()?;
    if out.title.is_empty() {
        out.title = line.name.clone();
    }
    out.sku = Some(sku.as_str().to_string());
    out.price = Some(one.total.to_decimal_string());
    if one.total.minor < line.unit_price.minor {
        out.regular_price = Some(line.unit_price.to_decimal_string());
    }
    out.currency = Some(one.total.currency.code().to_string());
    out.stock = badges.get(sku).cloned();
    if let Some(q) = i.offer_quantity {
        let offer = quote(store, sku, q)?;
        let was = line.unit_price.checked_mul(i64::from(q)).ok()?;
        let saving = was.checked_sub(offer.total).ok()?;
        if offer.promotions.applied.is_empty() || saving.minor <= 0 {
            return None;
        }
        out.offer = Some(OfferView {
            quantity: q,
            total: offer.total.to_decimal_string(),
            was: was.to_decimal_string(),
            saving: saving.to_decimal_string(),
            promotions: offer
                .promotions
                .applied
                .iter()
                .map(|a| a.name.clone())
                .collect(),
        });
    }
    Some(out)
}
