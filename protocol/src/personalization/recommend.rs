//! "Bought together" and "viewed together", folded from the event log one observation at a
//! time.
//!
//! - **Bought together**: every two distinct SKUs of one order (the `skus` of `order_placed`)
//!   count one.
//! - **Viewed together**: a shopper's product views form a session while each comes within
//!   [`SESSION_GAP`] of the session's last one; every two distinct SKUs viewed in one session
//!   count one (a product seen again in the session counts nothing new). Views are taken in the
//!   log's order; a late view from before its subject's current session (more than
//!   [`SESSION_GAP`] before it started) pairs with nothing.
//!
//! The fold keeps the exact count of every pair and, per SKU and relation, its
//! [`TOP`] neighbours by count (ties by SKU). Counts only grow, so the top list can be kept
//! exactly from the changed pair alone: a neighbour outside it can only enter by beating its
//! last entry. State is read and written through a [`CoStore`], so the caller keeps only the
//! top lists it reads in memory and the pair counts on disk.

use crate::codec::Stored;
use crate::event::{Event, EventKind, Subject};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use time::{Duration, OffsetDateTime};

/// Neighbours kept per SKU and relation.
pub const TOP: usize = 20;
/// The longest pause between two views of one session.
pub const SESSION_GAP: Duration = Duration::minutes(30);
/// Distinct products remembered per session (later ones pair with nothing).
pub const SESSION_ITEMS: usize = 50;
/// Distinct SKUs of one order that are paired (the first by SKU; a bulk order pairs no more).
pub const ORDER_ITEMS: usize = 50;

/// How two products relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    BoughtTogether,
    ViewedTogether,
}

impl Relation {
    pub const ALL: [Relation; 2] = [Relation::BoughtTogether, Relation::ViewedTogether];

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::BoughtTogether => "bought_together",
            Relation::ViewedTogether => "viewed_together",
        }
    }
}

/// A related SKU and how often it went with the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    pub sku: String,
    pub count: u64,
}

/// The top neighbours of one SKU in one relation, best first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Neighbours {
    pub list: Vec<Neighbour>,
}

impl Stored for Neighbours {
    const KIND: &'static str = "co_neighbours";
    const VERSION: u16 = 1;
}

/// A shopper's current viewing session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
    /// Distinct SKUs viewed, in order.
    pub items: Vec<String>,
}

impl Stored for Session {
    const KIND: &'static str = "co_session";
    const VERSION: u16 = 1;
}

/// What an event tells the fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The SKUs of one order.
    Order(Vec<String>),
    /// A product view.
    View {
        subject: Subject,
        at: OffsetDateTime,
        sku: String,
    },
}

impl Observation {
    /// The observation in an event, if any: an `order_placed`'s `skus` (`SKU:qty,…`), or a
    /// `product_view`'s `sku` (or, without one, the SKU `sku_of_slug` gives for its `slug`).
    pub fn of(event: &Event, sku_of_slug: impl Fn(&str) -> Option<String>) -> Option<Observation> {
        match event.kind {
            EventKind::OrderPlaced => {
                let skus: Vec<String> = event
                    .payload
                    .get("skus")?
                    .split(',')
                    .filter_map(|item| {
                        let name = item.rsplit_once(':').map_or(item, |(n, _)| n).trim();
                        (!name.is_empty()).then(|| name.to_string())
                    })
                    .collect();
                (!skus.is_empty()).then_some(Observation::Order(skus))
            }
            EventKind::ProductView => {
                let sku = match event.payload.get("sku").filter(|s| !s.is_empty()) {
                    Some(sku) => sku.clone(),
                    None => sku_of_slug(event.payload.get("slug").map(String::as_str)?)?,
                };
                Some(Observation::View {
                    subject: event.subject,
                    at: event.at,
                    sku,
                })
            }
            _ => None,
        }
    }
}

/// Where the fold keeps its state. Pairs are passed with `a < b`.
pub trait CoStore {
    type Error;
    fn count(&mut self, relation: Relation, a: &str, b: &str) -> Result<u64, Self::Error>;
    fn set_count(&mut self, relation: Relation, a: &str, b: &str, count: u64);
    /// One more for a pair; answers its new count. By default a read and a write; a store may
    /// do both with one lookup.
    fn add_one(&mut self, relation: Relation, a: &str, b: &str) -> Result<u64, Self::Error> {
        let count = self.count(relation, a, b)? + 1;
        self.set_count(relation, a, b, count);
        Ok(count)
    }
    fn neighbours(&mut self, relation: Relation, of: &str) -> Result<Vec<Neighbour>, Self::Error>;
    fn set_neighbours(&mut self, relation: Relation, of: &str, list: Vec<Neighbour>);
    /// Changes a top list in place; `change` answers whether it changed anything. By default
    /// the list is read, changed and written back whole; a store that keeps lists in memory
    /// changes its own copy.
    fn update_neighbours(
        &mut self,
        relation: Relation,
        of: &str,
        change: &mut dyn FnMut(&mut Vec<Neighbour>) -> bool,
    ) -> Result<(), Self::Error> {
        let mut list = self.neighbours(relation, of)?;
        if change(&mut list) {
            self.set_neighbours(relation, of, list);
        }
        Ok(())
    }
    fn session(&mut self, subject: &Subject) -> Result<Option<Session>, Self::Error>;
    fn set_session(&mut self, subject: &Subject, session: Session);
    /// The session, to be given back with [`CoStore::set_session`] (a store may hand over
    /// its own copy instead of cloning it).
    fn take_session(&mut self, subject: &Subject) -> Result<Option<Session>, Self::Error> {
        self.session(subject)
    }
}

/// The order of a top list: more first, then by SKU.
pub fn rank(x: &Neighbour, y: &Neighbour) -> Ordering {
    y.count.cmp(&x.count).then_with(|| x.sku.cmp(&y.sku))
}

/// Folds one observation in.
pub fn fold<S: CoStore>(store: &mut S, observation: &Observation) -> Result<(), S::Error> {
    match observation {
        Observation::Order(skus) => {
            let mut items: Vec<&str> = skus.iter().map(String::as_str).collect();
            items.sort_unstable();
            items.dedup();
            items.truncate(ORDER_ITEMS);
            for (i, a) in items.iter().enumerate() {
                for b in &items[i + 1..] {
                    bump(store, Relation::BoughtTogether, a, b)?;
                }
            }
            Ok(())
        }
        Observation::View { subject, at, sku } => view(store, subject, *at, sku),
    }
}

fn view<S: CoStore>(
    store: &mut S,
    subject: &Subject,
    at: OffsetDateTime,
    sku: &str,
) -> Result<(), S::Error> {
    let fresh = || Session {
        started_at: at,
        last_at: at,
        items: vec![sku.to_string()],
    };
    let mut session = match store.take_session(subject)? {
        Some(s) if at > s.last_at + SESSION_GAP => None,
        // Too late for the current session, which is not replaced by an older one.
        Some(s) if at < s.started_at - SESSION_GAP => {
            store.set_session(subject, s);
            return Ok(());
        }
        current => current,
    }
    .unwrap_or_else(fresh);
    session.last_at = session.last_at.max(at);
    session.started_at = session.started_at.min(at);
    if !session.items.iter().any(|i| i == sku) && session.items.len() < SESSION_ITEMS {
        for other in &session.items {
            bump(store, Relation::ViewedTogether, sku, other)?;
        }
        session.items.push(sku.to_string());
    }
    store.set_session(subject, session);
    Ok(())
}

/// One more for a pair: its count, and each side's top list.
fn bump<S: CoStore>(store: &mut S, relation: Relation, x: &str, y: &str) -> Result<(), S::Error> {
    if x == y {
        return Ok(());
    }
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    let count = store.add_one(relation, a, b)?;
    for (of, other) in [(a, b), (b, a)] {
        store.update_neighbours(relation, of, &mut |list| offer(list, other, count))?;
    }
    Ok(())
}

/// Puts `sku` with its new `count` in a top list; answers whether the list changed. The list
/// stays in [`rank`] order: counts only grow, so the changed entry only moves up.
fn offer(list: &mut Vec<Neighbour>, sku: &str, count: u64) -> bool {
    let at = if let Some(i) = list.iter().position(|n| n.sku == sku) {
        list[i].count = count;
        i
    } else if list.len() < TOP {
        list.push(Neighbour {
            sku: sku.to_string(),
            count,
        });
        list.len() - 1
    } else {
        let Some(last) = list.last_mut() else {
            return false;
        };
        // Ahead of the last entry: more, or as many and an earlier SKU.
        if count > last.count || (count == last.count && sku < last.sku.as_str()) {
            last.sku.clear();
            last.sku.push_str(sku);
            last.count = count;
            list.len() - 1
        } else {
            return false;
        }
    };
    let mut i = at;
    while i > 0 && rank(&list[i], &list[i - 1]) == Ordering::Less {
        list.swap(i, i - 1);
        i -= 1;
    }
    true
}

/// A [`CoStore`] in memory (tests, and small tools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCoStore {
    pub counts: BTreeMap<(Relation, String, String), u64>,
    pub neighbours: BTreeMap<(Relation, String), Vec<Neighbour>>,
    pub sessions: HashMap<Subject, Session>,
}

impl CoStore for MemoryCoStore {
    type Error = std::convert::Infallible;

    fn count(&mut self, relation: Relation, a: &str, b: &str) -> Result<u64, Self::Error> {
        Ok(self
            .counts
            .get(&(relation, a.to_string(), b.to_string()))
            .copied()
            .unwrap_or(0))
    }

    fn set_count(&mut self, relation: Relation, a: &str, b: &str, count: u64) {
        self.counts
            .insert((relation, a.to_string(), b.to_string()), count);
    }

    fn neighbours(&mut self, relation: Relation, of: &str) -> Result<Vec<Neighbour>, Self::Error> {
        Ok(self
            .neighbours
            .get(&(relation, of.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    fn set_neighbours(&mut self, relation: Relation, of: &str, list: Vec<Neighbour>) {
        self.neighbours.insert((relation, of.to_string()), list);
    }

    fn session(&mut self, subject: &Subject) -> Result<Option<Session>, Self::Error> {
        Ok(self.sessions.get(subject).cloned())
    }

    fn set_session(&mut self, subject: &Subject, session: Session) {
        self.sessions.insert(*subject, session);
    }
}
