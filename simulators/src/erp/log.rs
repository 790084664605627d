//! The change log of each feed, compacted like a Kafka compacted topic.
//!
//! Every entity of a feed — a variant's product row, a price key `(sku, price_list, currency,
//! valid_from)`, a stock level `(sku, location)`, a promotion, a coupon — has one live entry in
//! its feed's log, at the sequence number of its latest change: a change appends the entity
//! again with its version one higher and leaves a tombstone where it was, so a reader at any
//! cursor sees each entity once, with its latest version. A stock delta is an entity of its own
//! that never changes, so deltas are never compacted away.
//!
//! Sequences count from 1 within each feed; the generated catalog fills the first entries in
//! entity order. An entity that never changed is rendered from the generator at version 1; a
//! changed one keeps its last few versions (for the out-of-order fault).

use super::catalog::{movement_id, Catalog, Delta, PriceKind};
use protocol::feed::{CouponRow, FeedKind, PriceRow, ProductRow, PromotionRow, StockRow};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// A superseded entry.
const TOMBSTONE: u32 = u32::MAX;
/// Versions kept per changed entity.
const HISTORY: usize = 8;

/// A row of any feed; serialised as the row itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum Row {
    Product(ProductRow),
    Price(PriceRow),
    Stock(StockRow),
    Promotion(PromotionRow),
    Coupon(CouponRow),
}

impl Row {
    fn with_version(mut self, version: u32) -> Row {
        let field = match &mut self {
            Row::Product(r) => &mut r.version,
            Row::Price(r) => &mut r.version,
            Row::Stock(r) => &mut r.version,
            Row::Promotion(r) => &mut r.version,
            Row::Coupon(r) => &mut r.version,
        };
        *field = version.to_string();
        self
    }

    /// The row as a JSON object of strings, the feed's columns as keys.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        let value = match self {
            Row::Product(r) => serde_json::to_value(r),
            Row::Price(r) => serde_json::to_value(r),
            Row::Stock(r) => serde_json::to_value(r),
            Row::Promotion(r) => serde_json::to_value(r),
            Row::Coupon(r) => serde_json::to_value(r),
        };
        match value {
            Ok(Value::Object(map)) => map,
            // Rows are structs of strings: they always serialise to an object.
            _ => Map::new(),
        }
    }
}

/// One feed's log.
#[derive(Debug, Default)]
struct FeedLog {
    /// The entity of each sequence number (`slots[seq - 1]`), or [`TOMBSTONE`].
    slots: Vec<u32>,
    /// The sequence number of each entity's live entry.
    seq_of: Vec<u64>,
    /// Changed entities and entities that exist only as stored rows: their versions, oldest
    /// first.
    stored: HashMap<u32, Vec<(u32, Row)>>,
}

impl FeedLog {
    /// A log of `entities` entities, appended in order.
    fn dense(entities: u32) -> FeedLog {
        FeedLog {
            slots: (0..entities).collect(),
            seq_of: (1..=u64::from(entities)).collect(),
            stored: HashMap::new(),
        }
    }

    /// Appends `entity` (an existing one, or the next new one) and returns its sequence.
    fn append(&mut self, entity: u32) -> u64 {
        self.slots.push(entity);
        let seq = self.slots.len() as u64;
        match self.seq_of.get_mut(entity as usize) {
            Some(old) => {
                self.slots[(*old - 1) as usize] = TOMBSTONE;
                *old = seq;
            }
            None => self.seq_of.push(seq),
        }
        seq
    }
}

/// A live entry found by [`Store::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: u64,
    pub entity: u32,
}

/// Live entries after a cursor.
#[derive(Debug)]
pub(crate) struct Scan {
    pub entries: Vec<Entry>,
    /// The sequence to continue after.
    pub next: u64,
    pub has_more: bool,
}

/// Figures of one feed for `/test/state` and the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FeedFigures {
    pub feed: FeedKind,
    /// The highest sequence number.
    pub sequence: u64,
    /// The cursor after the newest entry.
    pub cursor: String,
    /// Live entries: one per entity.
    pub rows: usize,
    /// Entries superseded by a later change of their entity.
    pub compacted: usize,
}

/// The key of a price entity.
type PriceKey = (u32, String, String, String);

/// Every feed's log and the state behind its rows.
#[derive(Debug)]
pub(crate) struct Store {
    pub catalog: Catalog,
    logs: [FeedLog; 5],
    /// Per price entity: the generated `(variant, kind)`, or `None` for one a change added.
    prices: Vec<Option<(u32, PriceKind)>>,
    /// The first price entity of each variant, plus the generated count at the end.
    first_price: Vec<u32>,
    /// Price entities added by changes.
    added_prices: HashMap<PriceKey, u32>,
    /// Stock entities `0..levels` are levels (`variant * locations + location`), the rest
    /// deltas.
    levels: u32,
    deltas: Vec<Delta>,
    /// Movement ids given through the test API.
    given_movements: HashSet<String>,
    /// The number of the next `MV-` id; those below are taken.
    next_movement: u64,
    /// The sum of the deltas since each level was last set.
    moved: HashMap<u32, i64>,
}

fn index(feed: FeedKind) -> usize {
    match feed {
        FeedKind::Products => 0,
        FeedKind::Prices => 1,
        FeedKind::Stock => 2,
        FeedKind::Promotions => 3,
        FeedKind::Coupons => 4,
    }
}

impl Store {
    /// Generates the catalog's feeds with `deltas` stock movements.
    pub(crate) fn new(catalog: Catalog, deltas: u32) -> Store {
        let variants = catalog.variants();
        let products = FeedLog::dense(variants);

        let mut prices = Vec::with_capacity(variants as usize * 3 / 2);
        let mut first_price = Vec::with_capacity(variants as usize + 1);
        for variant in 0..variants {
            first_price.push(prices.len() as u32);
            prices.extend(
                catalog
                    .price_kinds(variant)
                    .into_iter()
                    .map(|k| Some((variant, k))),
            );
        }
        first_price.push(prices.len() as u32);
        let price_log = FeedLog::dense(prices.len() as u32);

        let levels = variants * catalog.locations.len() as u32;
        let deltas = catalog.deltas(deltas);
        let stock = FeedLog::dense(levels + deltas.len() as u32);
        let mut moved = HashMap::new();
        let locations = catalog.locations.len() as u32;
        for d in &deltas {
            *moved
                .entry(d.variant * locations + u32::from(d.location))
                .or_insert(0) += d.quantity;
        }

        let stored = |rows: Vec<Row>| {
            let mut log = FeedLog::dense(rows.len() as u32);
            log.stored = (0..).zip(rows.into_iter().map(|r| vec![(1, r)])).collect();
            log
        };
        let promotions = stored(
            catalog
                .promotions()
                .into_iter()
                .map(Row::Promotion)
                .collect(),
        );
        let coupons = stored(catalog.coupons().into_iter().map(Row::Coupon).collect());

        Store {
            next_movement: deltas.len() as u64 + 1,
            catalog,
            logs: [products, price_log, stock, promotions, coupons],
            prices,
            first_price,
            added_prices: HashMap::new(),
            levels,
            deltas,
            given_movements: HashSet::new(),
            moved,
        }
    }

    fn log(&self, feed: FeedKind) -> &FeedLog {
        &self.logs[index(feed)]
    }

    fn log_mut(&mut self, feed: FeedKind) -> &mut FeedLog {
        &mut self.logs[index(feed)]
    }

    /// The highest sequence number of a feed (0 when empty).
    pub(crate) fn head(&self, feed: FeedKind) -> u64 {
        self.log(feed).slots.len() as u64
    }

    /// Up to `limit` live entries after sequence `after`, in sequence order.
    pub(crate) fn scan(&self, feed: FeedKind, after: u64, limit: usize) -> Scan {
        let slots = &self.log(feed).slots;
        let mut entries = Vec::with_capacity(limit.min(slots.len()));
        let mut i = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(slots.len());
        while i < slots.len() && entries.len() < limit {
            if slots[i] != TOMBSTONE {
                entries.push(Entry {
                    seq: i as u64 + 1,
                    entity: slots[i],
                });
            }
            i += 1;
        }
        // The newest entry is always live (only a newer entry supersedes one), so there is more
        // exactly when the scan stopped before the end.
        Scan {
            entries,
            next: i as u64,
            has_more: i < slots.len(),
        }
    }

    pub(crate) fn figures(&self) -> Vec<FeedFigures> {
        FeedKind::ALL
            .into_iter()
            .map(|feed| {
                let log = self.log(feed);
                let rows = log.seq_of.len();
                FeedFigures {
                    feed,
                    sequence: self.head(feed),
                    cursor: super::api::cursor(self.head(feed)),
                    rows,
                    compacted: log.slots.len() - rows,
                }
            })
            .collect()
    }

    /// The entity's row as generated, before any change.
    fn generated(&self, feed: FeedKind, entity: u32) -> Option<Row> {
        let c = &self.catalog;
        match feed {
            FeedKind::Products => {
                (entity < c.variants()).then(|| Row::Product(c.product_row(entity)))
            }
            FeedKind::Prices => {
                let (variant, kind) = (*self.prices.get(entity as usize)?)?;
                Some(Row::Price(c.price_row(variant, kind)))
            }
            FeedKind::Stock if entity < self.levels => {
                let (variant, location) = self.level_parts(entity);
                Some(Row::Stock(c.level_row(
                    variant,
                    location,
                    c.level(variant, location),
                )))
            }
            FeedKind::Stock => {
                let delta = self.deltas.get((entity - self.levels) as usize)?;
                Some(Row::Stock(c.delta_row(delta)))
            }
            FeedKind::Promotions | FeedKind::Coupons => None,
        }
    }

    /// The entity's latest row, with its version.
    pub(crate) fn current(&self, feed: FeedKind, entity: u32) -> Option<Row> {
        match self.log(feed).stored.get(&entity).and_then(|h| h.last()) {
            Some((version, row)) => Some(row.clone().with_version(*version)),
            None => self.generated(feed, entity).map(|r| r.with_version(1)),
        }
    }

    /// The entity's version before its latest, if it changed.
    pub(crate) fn previous(&self, feed: FeedKind, entity: u32) -> Option<Row> {
        let history = self.log(feed).stored.get(&entity)?;
        let (version, row) = history.len().checked_sub(2).map(|i| &history[i])?;
        Some(row.clone().with_version(*version))
    }

    /// Records a new version of an existing entity; returns its version and sequence.
    pub(crate) fn put(&mut self, feed: FeedKind, entity: u32, row: Row) -> (u32, u64) {
        let generated = match self.log(feed).stored.contains_key(&entity) {
            true => None,
            false => self.generated(feed, entity),
        };
        let log = self.log_mut(feed);
        let history = log
            .stored
            .entry(entity)
            .or_insert_with(|| generated.map(|r| vec![(1, r)]).unwrap_or_default());
        let version = history.last().map_or(1, |(v, _)| v + 1);
        history.push((version, row));
        if history.len() > HISTORY {
            history.remove(0);
        }
        (version, log.append(entity))
    }

    /// Adds a new entity of a feed whose rows are stored; returns its id and sequence.
    fn add(&mut self, feed: FeedKind, row: Row) -> (u32, u64) {
        let log = self.log_mut(feed);
        let entity = log.seq_of.len() as u32;
        log.stored.insert(entity, vec![(1, row)]);
        (entity, log.append(entity))
    }

    // Products.

    /// The variants of a product code, or of a SKU.
    pub(crate) fn product_entities(&self, product: &str) -> Option<std::ops::Range<u32>> {
        let p = self.catalog.product_by_code(product)?;
        Some(self.catalog.variants_of(p))
    }

    // Prices.

    /// The price entity of a key, if it exists.
    pub(crate) fn price_entity(
        &self,
        variant: u32,
        list: &str,
        currency: &str,
        from: &str,
    ) -> Option<u32> {
        let generated = self.first_price[variant as usize]..self.first_price[variant as usize + 1];
        let key = (
            variant,
            list.to_owned(),
            currency.to_owned(),
            from.to_owned(),
        );
        generated
            .into_iter()
            .find(|&e| match self.current(FeedKind::Prices, e) {
                Some(Row::Price(r)) => {
                    r.price_list == list && r.currency == currency && r.valid_from == from
                }
                _ => false,
            })
            .or_else(|| self.added_prices.get(&key).copied())
    }

    /// Adds a price key that did not exist.
    pub(crate) fn add_price(&mut self, variant: u32, row: PriceRow) -> (u32, u64) {
        let key = (
            variant,
            row.price_list.clone(),
            row.currency.clone(),
            row.valid_from.clone(),
        );
        let (entity, seq) = self.add(FeedKind::Prices, Row::Price(row));
        self.prices.push(None);
        self.added_prices.insert(key, entity);
        (entity, seq)
    }

    // Stock.

    pub(crate) fn level_entity(&self, variant: u32, location: u16) -> u32 {
        variant * self.catalog.locations.len() as u32 + u32::from(location)
    }

    fn level_parts(&self, entity: u32) -> (u32, u16) {
        let locations = self.catalog.locations.len() as u32;
        (entity / locations, (entity % locations) as u16)
    }

    /// The level entity a stock entity (a level or a delta) counts against.
    pub(crate) fn level_of(&self, entity: u32) -> Option<u32> {
        if entity < self.levels {
            return Some(entity);
        }
        let delta = self.deltas.get((entity - self.levels) as usize)?;
        Some(self.level_entity(delta.variant, delta.location))
    }

    /// What the ERP holds of a SKU at a location: its level plus the deltas since.
    pub(crate) fn on_hand(&self, level: u32) -> i64 {
        let quantity = match self.current(FeedKind::Stock, level) {
            Some(Row::Stock(row)) => row.quantity.parse().unwrap_or(0),
            _ => 0,
        };
        quantity + self.moved.get(&level).copied().unwrap_or(0)
    }

    /// Sets a level; returns its version and sequence.
    pub(crate) fn set_level(&mut self, variant: u32, location: u16, quantity: i64) -> (u32, u64) {
        let level = self.level_entity(variant, location);
        self.moved.remove(&level);
        let row = self.catalog.level_row(variant, location, quantity);
        self.put(FeedKind::Stock, level, Row::Stock(row))
    }

    /// Whether a movement id is in use.
    pub(crate) fn movement_taken(&self, movement: &str) -> bool {
        let auto = movement
            .strip_prefix("MV-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < self.next_movement && movement_id(n) == movement);
        auto || self.given_movements.contains(movement)
    }

    /// The next free `MV-` id.
    pub(crate) fn next_movement_id(&mut self) -> String {
        loop {
            let id = movement_id(self.next_movement);
            self.next_movement += 1;
            if !self.given_movements.contains(&id) {
                return id;
            }
        }
    }

    /// Adds a movement (a new entity: deltas are never compacted); returns its sequence.
    pub(crate) fn add_delta(&mut self, delta: Delta) -> u64 {
        if !self.movement_taken(&delta.movement) {
            self.given_movements.insert(delta.movement.clone());
        }
        let level = self.level_entity(delta.variant, delta.location);
        *self.moved.entry(level).or_insert(0) += delta.quantity;
        self.deltas.push(delta);
        let entity = self.levels + self.deltas.len() as u32 - 1;
        self.log_mut(FeedKind::Stock).append(entity)
    }

    pub(crate) fn delta_count(&self) -> usize {
        self.deltas.len()
    }

    // Promotions and coupons.

    /// The entity of a stored row whose first column is `id` (a promotion id, a coupon code).
    pub(crate) fn stored_entity(&self, feed: FeedKind, id: &str) -> Option<u32> {
        let log = self.log(feed);
        (0..log.seq_of.len() as u32).find(|e| match self.current(feed, *e) {
            Some(Row::Promotion(r)) => r.id == id,
            Some(Row::Coupon(r)) => r.code == id,
            _ => false,
        })
    }

    /// A readable key of an entity, as change answers show it.
    pub(crate) fn key(&self, feed: FeedKind, entity: u32) -> String {
        match self.current(feed, entity) {
            Some(Row::Product(r)) => r.sku,
            Some(Row::Price(r)) => {
                format!("{}/{}/{}/{}", r.sku, r.price_list, r.currency, r.valid_from)
            }
            Some(Row::Stock(r)) if r.kind == "delta" => r.movement,
            Some(Row::Stock(r)) => format!("{}@{}", r.sku, r.location),
            Some(Row::Promotion(r)) => r.id,
            Some(Row::Coupon(r)) => r.code,
            None => entity.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let locations = ["online", "store-berlin"].map(str::to_owned).to_vec();
        Store::new(Catalog::new(3, 10, locations, 1_800_000_000), 5)
    }

    fn all(store: &Store, feed: FeedKind, after: u64) -> Vec<Entry> {
        store.scan(feed, after, usize::MAX).entries
    }

    #[test]
    fn a_change_supersedes_the_entity_and_keeps_its_history() {
        let mut s = store();
        let before = all(&s, FeedKind::Products, 0).len();
        let Some(Row::Product(mut row)) = s.current(FeedKind::Products, 2) else {
            panic!("variant 2 exists");
        };
        row.name = "Renamed".into();
        let (version, seq) = s.put(FeedKind::Products, 2, Row::Product(row.clone()));
        assert_eq!((version, seq), (2, s.head(FeedKind::Products)));
        let entries = all(&s, FeedKind::Products, 0);
        assert_eq!(
            entries.len(),
            before,
            "compacted: still one entry per entity"
        );
        assert_eq!(entries.last().map(|e| e.entity), Some(2));
        assert_eq!(entries.iter().filter(|e| e.entity == 2).count(), 1);
        let Some(Row::Product(old)) = s.previous(FeedKind::Products, 2) else {
            panic!("the first version is kept");
        };
        assert_eq!((old.version.as_str(), old.name == row.name), ("1", false));
        // Only the change is after the cursor taken before it.
        assert_eq!(all(&s, FeedKind::Products, seq - 1).len(), 1);
        let scan = s.scan(FeedKind::Products, seq, 10);
        assert!(scan.entries.is_empty() && !scan.has_more && scan.next == seq);
    }

    #[test]
    fn deltas_are_never_compacted_and_count_towards_on_hand() {
        let mut s = store();
        let level = s.level_entity(1, 1);
        let start = s.on_hand(level);
        let id = s.next_movement_id();
        assert!(s.movement_taken(&id), "a handed-out id is taken");
        assert!(s.movement_taken("MV-00000001") && !s.movement_taken("MV-99999999"));
        for quantity in [5, -2] {
            let movement = s.next_movement_id();
            s.add_delta(Delta {
                variant: 1,
                location: 1,
                quantity,
                movement,
            });
        }
        assert_eq!(s.on_hand(level), start + 3);
        let deltas = all(&s, FeedKind::Stock, 0).len();
        s.set_level(1, 1, 40);
        assert_eq!(s.on_hand(level), 40);
        assert_eq!(
            all(&s, FeedKind::Stock, 0).len(),
            deltas,
            "a level is replaced, deltas stay"
        );
    }
}
