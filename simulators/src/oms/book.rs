//! The OMS's orders, in memory and bounded, and their lifecycle as a function of simulated
//! time: received → allocated (one step) → picked (two) → shipped (three, once the logistics
//! simulator has given every shipment a tracking number); cancelled before that, returned
//! after. Nothing here does I/O: changes return the webhook events to publish and the shipping
//! calls to make.
//!
//! The invariant the hub's exactly-once delivery is measured against: one order id gets one
//! `oms_id`, ever — a repeated `POST /orders` replays the first answer and is counted as a
//! duplicate delivery, and `effects_applied_twice` counts any order created over an existing one.

use crate::common::new_id;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// Message ids remembered per order.
const MESSAGE_IDS_PER_ORDER: usize = 8;
/// How long a failed shipping call waits before it is tried again, in simulated milliseconds.
pub(super) const SHIP_RETRY_MS: u64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Money {
    pub minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OrderLine {
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub quantity: i64,
    pub unit_price: Option<Money>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Address {
    #[serde(default)]
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: String,
    pub city: String,
    #[serde(default)]
    pub region: String,
    pub postcode: String,
    pub country: String,
    #[serde(default)]
    pub phone: String,
}

/// The body of `POST /orders`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct NewOrder {
    pub order_id: String,
    pub number: String,
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub lines: Vec<OrderLine>,
    pub address: Address,
    #[serde(default = "standard")]
    pub shipping_method: String,
    pub total: Option<Money>,
}

fn standard() -> String {
    "standard".into()
}

/// Why an order is refused: `(code, message)` for a 422.
pub(super) type Invalid = (&'static str, String);

impl NewOrder {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let id_ok = !self.order_id.is_empty()
            && self.order_id.len() <= 64
            && self
                .order_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err((
                "bad_order_id",
                "order_id must be 1 to 64 letters, digits, '-' or '_'".into(),
            ));
        }
        if self.number.is_empty() {
            return Err(("missing_number", "number must not be empty".into()));
        }
        if self.lines.is_empty() {
            return Err(("missing_lines", "an order needs at least one line".into()));
        }
        if self.lines.len() > 500 {
            return Err(("too_many_lines", "an order has at most 500 lines".into()));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.sku.is_empty() {
                return Err(("bad_sku", format!("lines[{i}].sku must not be empty")));
            }
            if !(1..=100_000).contains(&line.quantity) {
                return Err((
                    "bad_quantity",
                    format!("lines[{i}].quantity must be between 1 and 100000"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Received,
    Allocated,
    Picked,
    Shipped,
    Cancelled,
    Returned,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Allocated => "allocated",
            Status::Picked => "picked",
            Status::Shipped => "shipped",
            Status::Cancelled => "cancelled",
            Status::Returned => "returned",
        }
    }

    /// The next step of the clock-driven lifecycle, if the clock moves this status on.
    fn next(self) -> Option<Status> {
        match self {
            Status::Received => Some(Status::Allocated),
            Status::Allocated => Some(Status::Picked),
            _ => None,
        }
    }
}

/// What the logistics simulator gave a shipment.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Tracking {
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ShipLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone)]
pub(super) struct Shipment {
    pub id: String,
    pub lines: Vec<ShipLine>,
    pub tracking: Option<Tracking>,
}

impl Shipment {
    fn json(&self) -> Value {
        let t = self.tracking.as_ref();
        json!({
            "id": self.id,
            "carrier": t.map(|t| &t.carrier),
            "tracking_number": t.map(|t| &t.tracking_number),
            "tracking_url": t.map(|t| &t.tracking_url),
            "lines": self.lines,
        })
    }
}

#[derive(Debug)]
pub(super) struct Order {
    pub oms_id: String,
    pub request: NewOrder,
    pub status: Status,
    pub created: i64,
    pub updated: i64,
    /// The exact body of the first `201`, replayed to every repeat.
    pub first_response: Arc<str>,
    pub deliveries: u64,
    pub message_ids: Vec<String>,
    pub shipments: Vec<Shipment>,
    pub history: Vec<(Status, i64)>,
}

impl Order {
    pub(super) fn json(&self) -> Value {
        let r = &self.request;
        json!({
            "oms_id": self.oms_id,
            "order_id": r.order_id,
            "number": r.number,
            "channel": r.channel,
            "email": r.email,
            "status": self.status.as_str(),
            "created": self.created,
            "updated": self.updated,
            "lines": r.lines,
            "address": r.address,
            "shipping_method": r.shipping_method,
            "total": r.total,
            "deliveries": self.deliveries,
            "message_ids": self.message_ids,
            "shipments": self.shipments.iter().map(Shipment::json).collect::<Vec<_>>(),
            "history": self.history.iter()
                .map(|(s, at)| json!({"status": s.as_str(), "at": at}))
                .collect::<Vec<_>>(),
        })
    }

    fn set_status(&mut self, status: Status, now: i64) {
        self.status = status;
        self.updated = now;
        self.history.push((status, now));
    }

    /// A webhook event about this order.
    fn event(&self, kind: &str, shipment: Option<&Shipment>, now: i64) -> Value {
        json!({
            "id": new_id("evt"),
            "type": kind,
            "created": now,
            "data": {
                "order_id": self.request.order_id,
                "number": self.request.number,
                "oms_id": self.oms_id,
                "shipment": shipment.map(Shipment::json),
            },
        })
    }

    /// Cancellable until a shipment has a tracking number.
    fn shipped_any(&self) -> bool {
        self.shipments.iter().any(|s| s.tracking.is_some())
    }
}

/// A shipping call to make: ask the logistics simulator for one shipment.
#[derive(Debug, Clone)]
pub(super) struct ShipJob {
    pub order_id: String,
    pub shipment_id: String,
    pub body: Value,
}

/// What is due at a simulated time.
#[derive(Debug, Clone)]
enum Due {
    /// The order's next lifecycle step.
    Step(String),
    /// Ship (or retry shipping) one shipment of the order.
    Ship {
        order_id: String,
        shipment_id: String,
    },
}

/// `GET /_sim/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Stats {
    pub orders: u64,
    pub deliveries: u64,
    pub duplicates: u64,
    pub effects_applied_twice: u64,
    pub distinct_message_ids: u64,
}

/// The answer to `POST /orders`.
pub(super) enum Received {
    Created(Arc<str>),
    Replayed(Arc<str>),
}

/// Why a change of an order was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    Unknown,
    /// `(code, message)` for a 409.
    Conflict(&'static str, String),
}

pub(super) struct Book {
    orders: HashMap<String, Order>,
    /// Order ids oldest first, for eviction and the dashboard.
    order_ids: VecDeque<String>,
    schedule: BTreeMap<(u64, u64), Due>,
    sequence: u64,
    /// Message ids seen (hashed), bounded like the orders.
    message_ids: HashSet<u64>,
    stats: Stats,
    step_ms: u64,
    split_over: usize,
    max_orders: usize,
}

impl Book {
    pub(super) fn new(step_ms: u64, split_over: usize, max_orders: usize) -> Book {
        Book {
            orders: HashMap::new(),
            order_ids: VecDeque::new(),
            schedule: BTreeMap::new(),
            sequence: 0,
            message_ids: HashSet::new(),
            stats: Stats::default(),
            step_ms,
            split_over,
            max_orders,
        }
    }

    pub(super) fn stats(&self) -> Stats {
        self.stats.clone()
    }

    pub(super) fn get(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id)
    }

    /// The newest `count` orders, newest first.
    pub(super) fn newest(&self, count: usize) -> impl Iterator<Item = &Order> {
        self.order_ids
            .iter()
            .rev()
            .filter_map(|id| self.orders.get(id))
            .take(count)
    }

    fn schedule(&mut self, at_ms: u64, due: Due) {
        self.sequence += 1;
        self.schedule.insert((at_ms, self.sequence), due);
    }

    /// Takes an order delivered by the hub (validated already): creates it the first time,
    /// replays the first answer on every repeat.
    pub(super) fn receive(
        &mut self,
        request: NewOrder,
        message_id: Option<&str>,
        now_ms: u64,
        now: i64,
    ) -> Received {
        self.stats.deliveries += 1;
        if let Some(message_id) = message_id {
            self.remember_message(message_id);
        }
        if let Some(order) = self.orders.get_mut(&request.order_id) {
            self.stats.duplicates += 1;
            order.deliveries += 1;
            if let Some(id) = message_id {
                if order.message_ids.len() < MESSAGE_IDS_PER_ORDER {
                    order.message_ids.push(id.to_owned());
                }
            }
            return Received::Replayed(Arc::clone(&order.first_response));
        }
        let oms_id = new_id("oms");
        let body = json!({
            "oms_id": oms_id,
            "order_id": request.order_id,
            "number": request.number,
            "status": Status::Received.as_str(),
            "created": now,
        });
        let first_response: Arc<str> = body.to_string().into();
        let order_id = request.order_id.clone();
        let order = Order {
            oms_id,
            request,
            status: Status::Received,
            created: now,
            updated: now,
            first_response: Arc::clone(&first_response),
            deliveries: 1,
            message_ids: message_id.map(str::to_owned).into_iter().collect(),
            shipments: Vec::new(),
            history: vec![(Status::Received, now)],
        };
        if self.orders.insert(order_id.clone(), order).is_some() {
            self.stats.effects_applied_twice += 1;
        }
        self.stats.orders += 1;
        self.order_ids.push_back(order_id.clone());
        self.schedule(now_ms.saturating_add(self.step_ms), Due::Step(order_id));
        self.evict();
        Received::Created(first_response)
    }

    fn remember_message(&mut self, message_id: &str) {
        let mut hasher = DefaultHasher::new();
        message_id.hash(&mut hasher);
        let cap = self.max_orders.saturating_mul(2);
        if self.message_ids.len() < cap && self.message_ids.insert(hasher.finish()) {
            self.stats.distinct_message_ids += 1;
        }
    }

    /// Forgets the oldest orders beyond the bound (their schedule entries find nothing).
    fn evict(&mut self) {
        while self.order_ids.len() > self.max_orders {
            if let Some(old) = self.order_ids.pop_front() {
                self.orders.remove(&old);
            }
        }
    }

    /// Moves on everything due at `now_ms`: returns the events to publish and the shipping
    /// calls to make.
    pub(super) fn advance_due(&mut self, now_ms: u64, now: i64) -> (Vec<Value>, Vec<ShipJob>) {
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            let (at_ms, _) = *entry.key();
            if at_ms > now_ms {
                break;
            }
            match entry.remove() {
                Due::Step(order_id) => events.extend(self.step(&order_id, at_ms, now)),
                Due::Ship {
                    order_id,
                    shipment_id,
                } => jobs.extend(self.ship_job(&order_id, &shipment_id)),
            }
        }
        (events, jobs)
    }

    /// Takes an order one lifecycle step on (scheduled `at_ms`); returns its event.
    fn step(&mut self, order_id: &str, at_ms: u64, now: i64) -> Option<Value> {
        let order = self.orders.get_mut(order_id)?;
        let next = order.status.next()?;
        order.set_status(next, now);
        let event = order.event(&format!("order.{}", next.as_str()), None, now);
        let next_at = at_ms.saturating_add(self.step_ms);
        if next == Status::Picked {
            order.shipments = split(&order.request.lines, self.split_over);
            let ids: Vec<String> = order.shipments.iter().map(|s| s.id.clone()).collect();
            for shipment_id in ids {
                let due = Due::Ship {
                    order_id: order_id.to_owned(),
                    shipment_id,
                };
                self.schedule(next_at, due);
            }
        } else {
            self.schedule(next_at, Due::Step(order_id.to_owned()));
        }
        Some(event)
    }

    fn ship_job(&self, order_id: &str, shipment_id: &str) -> Option<ShipJob> {
        let order = self.orders.get(order_id)?;
        if order.status != Status::Picked {
            return None;
        }
        let shipment = order.shipments.iter().find(|s| s.id == shipment_id)?;
        if shipment.tracking.is_some() {
            return None;
        }
        Some(ShipJob {
            order_id: order_id.to_owned(),
            shipment_id: shipment_id.to_owned(),
            body: json!({
                "order_id": order_id,
                "reference": shipment_id,
                "address": order.request.address,
                "lines": shipment.lines,
            }),
        })
    }

    /// The logistics simulator gave a shipment its tracking: returns `order.shipped` for it
    /// (none when it was shipped already or the order was cancelled meanwhile).
    pub(super) fn shipped(
        &mut self,
        order_id: &str,
        shipment_id: &str,
        tracking: Tracking,
        now: i64,
    ) -> Option<Value> {
        let order = self.orders.get_mut(order_id)?;
        if order.status != Status::Picked {
            return None;
        }
        let index = order.shipments.iter().position(|s| s.id == shipment_id)?;
        if order.shipments[index].tracking.is_some() {
            return None;
        }
        order.shipments[index].tracking = Some(tracking);
        if order.shipments.iter().all(|s| s.tracking.is_some()) {
            order.set_status(Status::Shipped, now);
        }
        Some(order.event("order.shipped", Some(&order.shipments[index]), now))
    }

    /// A shipping call failed: try again a little later.
    pub(super) fn retry_shipping(&mut self, job: &ShipJob, now_ms: u64) {
        let due = Due::Ship {
            order_id: job.order_id.clone(),
            shipment_id: job.shipment_id.clone(),
        };
        self.schedule(now_ms.saturating_add(SHIP_RETRY_MS), due);
    }

    /// Cancels an order no shipment of which has left; cancelling twice changes nothing.
    /// Returns the order's JSON and `order.cancelled` the first time.
    pub(super) fn cancel(
        &mut self,
        order_id: &str,
        now: i64,
    ) -> Result<(Value, Option<Value>), Refusal> {
        let order = self.orders.get_mut(order_id).ok_or(Refusal::Unknown)?;
        match order.status {
            Status::Cancelled => return Ok((order.json(), None)),
            Status::Shipped | Status::Returned => {}
            _ if !order.shipped_any() => {
                order.set_status(Status::Cancelled, now);
                let event = order.event("order.cancelled", None, now);
                return Ok((order.json(), Some(event)));
            }
            _ => {}
        }
        Err(Refusal::Conflict(
            "already_shipped",
            format!(
                "order {order_id} is {} and can no longer be cancelled",
                order.status.as_str()
            ),
        ))
    }

    /// Takes a shipped order back (test API). Returns the order's JSON and `order.returned`.
    pub(super) fn return_order(
        &mut self,
        order_id: &str,
        now: i64,
    ) -> Result<(Value, Value), Refusal> {
        let order = self.orders.get_mut(order_id).ok_or(Refusal::Unknown)?;
        if order.status != Status::Shipped {
            return Err(Refusal::Conflict(
                "not_shipped",
                format!(
                    "order {order_id} is {}; only a shipped order can be returned",
                    order.status.as_str()
                ),
            ));
        }
        order.set_status(Status::Returned, now);
        let event = order.event("order.returned", None, now);
        Ok((order.json(), event))
    }
}

/// One shipment, or two when the order has more than `split_over` lines (the first gets the
/// larger half).
fn split(lines: &[OrderLine], split_over: usize) -> Vec<Shipment> {
    let ship_lines: Vec<ShipLine> = lines
        .iter()
        .map(|l| ShipLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect();
    let parts = if ship_lines.len() > split_over {
        let (first, second) = ship_lines.split_at(ship_lines.len().div_ceil(2));
        vec![first.to_vec(), second.to_vec()]
    } else {
        vec![ship_lines]
    };
    parts
        .into_iter()
        .map(|lines| Shipment {
            id: new_id("shp"),
            lines,
            tracking: None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn order(id: &str, lines: usize) -> NewOrder {
        serde_json::from_value(json!({
            "order_id": id,
            "number": "W-000001",
            "lines": (0..lines).map(|i| json!({
                "sku": format!("SKU-{i}"), "name": "Mug", "quantity": 1,
                "unit_price": {"minor": 1299, "currency": "EUR"}
            })).collect::<Vec<_>>(),
            "address": {"name": "A", "line1": "Street 1", "city": "Leipzig",
                        "postcode": "04109", "country": "DE"},
            "total": {"minor": 1299, "currency": "EUR"},
        }))
        .unwrap()
    }

    fn tracking() -> Tracking {
        Tracking {
            carrier: "DHL".into(),
            tracking_number: "JJD1".into(),
            tracking_url: "http://x/track/JJD1".into(),
        }
    }

    #[test]
    fn a_repeat_replays_the_first_answer_and_counts_a_duplicate() {
        let mut book = Book::new(1_000, 3, 10);
        let Received::Created(first) = book.receive(order("A", 1), Some("m1"), 0, 100) else {
            panic!("not created");
        };
        let Received::Replayed(again) = book.receive(order("A", 1), Some("m2"), 5, 101) else {
            panic!("not replayed");
        };
        assert_eq!(first, again);
        let stats = book.stats();
        assert_eq!(
            (stats.orders, stats.deliveries, stats.duplicates),
            (1, 2, 1)
        );
        assert_eq!(stats.distinct_message_ids, 2);
        assert_eq!(stats.effects_applied_twice, 0);
    }

    #[test]
    fn the_clock_moves_an_order_to_picked_then_asks_for_shipments() {
        let mut book = Book::new(1_000, 3, 10);
        book.receive(order("A", 4), None, 0, 100);
        let (events, jobs) = book.advance_due(999, 100);
        assert!(events.is_empty() && jobs.is_empty());
        let (events, _) = book.advance_due(2_000, 102);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["order.allocated", "order.picked"]);
        let (_, jobs) = book.advance_due(3_000, 103);
        assert_eq!(
            jobs.len(),
            2,
            "four lines over a split of three: two shipments"
        );
        assert_eq!(jobs[0].body["lines"].as_array().unwrap().len(), 2);
        let shipped: Vec<Value> = jobs
            .iter()
            .filter_map(|j| book.shipped("A", &j.shipment_id, tracking(), 104))
            .collect();
        assert_eq!(shipped.len(), 2);
        assert_eq!(book.get("A").unwrap().status, Status::Shipped);
        assert!(book
            .shipped("A", &jobs[0].shipment_id, tracking(), 105)
            .is_none());
    }

    #[test]
    fn cancelling_works_until_something_ships() {
        let mut book = Book::new(1_000, 3, 10);
        book.receive(order("A", 1), None, 0, 100);
        book.receive(order("B", 1), None, 0, 100);
        let (_, event) = book.cancel("A", 101).unwrap();
        assert_eq!(event.unwrap()["type"], "order.cancelled");
        assert!(book.cancel("A", 102).unwrap().1.is_none());
        let (_, jobs) = book.advance_due(3_000, 103);
        assert_eq!(jobs.len(), 1, "only B ships");
        book.shipped("B", &jobs[0].shipment_id, tracking(), 104);
        assert!(matches!(book.cancel("B", 105), Err(Refusal::Conflict(..))));
        assert_eq!(book.cancel("C", 105).unwrap_err(), Refusal::Unknown);
    }

    #[test]
    fn the_oldest_orders_are_forgotten_beyond_the_bound() {
        let mut book = Book::new(1_000, 3, 2);
        for id in ["A", "B", "C"] {
            book.receive(order(id, 1), None, 0, 100);
        }
        assert!(book.get("A").is_none() && book.get("C").is_some());
        assert_eq!(book.advance_due(1_000, 101).0.len(), 2);
    }

    #[test]
    fn validation_names_what_to_fix() {
        assert!(order("A", 1).validate().is_ok());
        assert_eq!(order("A", 0).validate().unwrap_err().0, "missing_lines");
        let mut bad = order("A", 1);
        bad.lines[0].quantity = 0;
        assert_eq!(bad.validate().unwrap_err().0, "bad_quantity");
        assert_eq!(order("a b", 1).validate().unwrap_err().0, "bad_order_id");
    }
}
