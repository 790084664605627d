//! The carrier's shipments, in memory and bounded, and their tracking as a function of
//! simulated time: label_created (when the label is bought) → picked_up → in_transit →
//! out_for_delivery → delivered, one step apart, with an `exception` (a failed delivery
//! attempt) one step before delivery for the share `--exception-rate`. Nothing here does I/O:
//! changes return the webhook events to publish.

use crate::common::new_id;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ShipLine {
    pub sku: String,
    pub quantity: i64,
}

/// The body of `POST /shipments`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct NewShipment {
    #[serde(default)]
    pub order_id: String,
    pub reference: String,
    pub address: Map<String, Value>,
    #[serde(default)]
    pub lines: Vec<ShipLine>,
}

impl NewShipment {
    /// `Err((code, message))` for a 422.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.reference.is_empty() || self.reference.len() > 128 {
            return Err((
                "bad_reference",
                "reference must be 1 to 128 characters".into(),
            ));
        }
        if self.lines.is_empty() {
            return Err(("missing_lines", "a shipment needs at least one line".into()));
        }
        if self
            .lines
            .iter()
            .any(|l| l.sku.is_empty() || l.quantity < 1)
        {
            return Err((
                "bad_line",
                "every line needs a sku and a quantity of at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TrackStatus {
    LabelCreated,
    PickedUp,
    InTransit,
    OutForDelivery,
    Exception,
    Delivered,
}

impl TrackStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TrackStatus::LabelCreated => "label_created",
            TrackStatus::PickedUp => "picked_up",
            TrackStatus::InTransit => "in_transit",
            TrackStatus::OutForDelivery => "out_for_delivery",
            TrackStatus::Exception => "exception",
            TrackStatus::Delivered => "delivered",
        }
    }

    /// What follows, for a parcel that gets an exception before delivery or not.
    fn next(self, with_exception: bool) -> Option<TrackStatus> {
        match self {
            TrackStatus::LabelCreated => Some(TrackStatus::PickedUp),
            TrackStatus::PickedUp => Some(TrackStatus::InTransit),
            TrackStatus::InTransit => Some(TrackStatus::OutForDelivery),
            TrackStatus::OutForDelivery if with_exception => Some(TrackStatus::Exception),
            TrackStatus::OutForDelivery | TrackStatus::Exception => Some(TrackStatus::Delivered),
            TrackStatus::Delivered => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct TrackEvent {
    pub status: &'static str,
    pub at: i64,
    pub location: String,
}

#[derive(Debug)]
pub(super) struct Parcel {
    pub id: String,
    pub request: NewShipment,
    pub carrier: &'static str,
    pub tracking_number: String,
    pub tracking_url: String,
    pub status: TrackStatus,
    pub with_exception: bool,
    pub created: i64,
    pub events: Vec<TrackEvent>,
    /// The exact body of the first `201`, replayed to every repeat.
    pub first_response: Arc<str>,
}

impl Parcel {
    pub(super) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "order_id": self.request.order_id,
            "reference": self.request.reference,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "tracking_url": self.tracking_url,
            "status": self.status.as_str(),
            "created": self.created,
            "address": self.request.address,
            "lines": self.request.lines,
            "events": self.events,
        })
    }

    /// What the public lookup shows: no address, no order.
    pub(super) fn public_json(&self) -> Value {
        json!({
            "tracking_number": self.tracking_number,
            "carrier": self.carrier,
            "status": self.status.as_str(),
            "events": self.events,
        })
    }

    fn city(&self) -> &str {
        self.request
            .address
            .get("city")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .unwrap_or("Destination")
    }

    fn location(&self, status: TrackStatus) -> String {
        match status {
            TrackStatus::LabelCreated => "Sender".into(),
            TrackStatus::PickedUp => "Berlin depot".into(),
            TrackStatus::InTransit => "Leipzig hub".into(),
            TrackStatus::OutForDelivery => format!("{} delivery base", self.city()),
            TrackStatus::Exception | TrackStatus::Delivered => self.city().to_owned(),
        }
    }

    /// Moves to `status` and returns its `tracking.updated` event.
    fn record(&mut self, status: TrackStatus, now: i64) -> Value {
        self.status = status;
        let location = self.location(status);
        self.events.push(TrackEvent {
            status: status.as_str(),
            at: now,
            location: location.clone(),
        });
        json!({
            "id": new_id("evt"),
            "type": "tracking.updated",
            "created": now,
            "data": {
                "shipment_id": self.id,
                "reference": self.request.reference,
                "order_id": self.request.order_id,
                "tracking_number": self.tracking_number,
                "carrier": self.carrier,
                "status": status.as_str(),
                "at": now,
                "location": location,
            },
        })
    }
}

/// `GET /_sim/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Stats {
    pub shipments: u64,
    pub deliveries: u64,
    pub duplicates: u64,
    pub effects_applied_twice: u64,
    pub delivered: u64,
    pub exceptions: u64,
}

/// The answer to `POST /shipments`, with the event of a new label.
pub(super) enum Created {
    New(Arc<str>, Value),
    Replayed(Arc<str>),
}

pub(super) struct Parcels {
    by_reference: HashMap<String, Parcel>,
    /// Tracking number and shipment id → reference.
    by_tracking: HashMap<String, String>,
    by_id: HashMap<String, String>,
    /// References oldest first, for eviction and the dashboard.
    order: VecDeque<String>,
    schedule: BTreeMap<(u64, u64), String>,
    sequence: u64,
    stats: Stats,
    step_ms: u64,
    exception_rate: f64,
    public_url: String,
    max_shipments: usize,
}

impl Parcels {
    pub(super) fn new(
        step_ms: u64,
        exception_rate: f64,
        public_url: String,
        max_shipments: usize,
    ) -> Parcels {
        Parcels {
            by_reference: HashMap::new(),
            by_tracking: HashMap::new(),
            by_id: HashMap::new(),
            order: VecDeque::new(),
            schedule: BTreeMap::new(),
            sequence: 0,
            stats: Stats::default(),
            step_ms,
            exception_rate,
            public_url,
            max_shipments,
        }
    }

    pub(super) fn stats(&self) -> Stats {
        self.stats.clone()
    }

    pub(super) fn by_tracking(&self, tracking_number: &str) -> Option<&Parcel> {
        let reference = self.by_tracking.get(tracking_number)?;
        self.by_reference.get(reference)
    }

    pub(super) fn by_id(&self, id: &str) -> Option<&Parcel> {
        let reference = self.by_id.get(id)?;
        self.by_reference.get(reference)
    }

    /// The newest `count` shipments, newest first.
    pub(super) fn newest(&self, count: usize) -> impl Iterator<Item = &Parcel> {
        self.order
            .iter()
            .rev()
            .filter_map(|r| self.by_reference.get(r))
            .take(count)
    }

    fn schedule(&mut self, at_ms: u64, reference: String) {
        self.sequence += 1;
        self.schedule.insert((at_ms, self.sequence), reference);
    }

    /// Buys a label the first time a reference is seen; replays the first answer after.
    pub(super) fn create(&mut self, request: NewShipment, now_ms: u64, now: i64) -> Created {
        self.stats.deliveries += 1;
        if let Some(parcel) = self.by_reference.get(&request.reference) {
            self.stats.duplicates += 1;
            return Created::Replayed(Arc::clone(&parcel.first_response));
        }
        let randomness = ulid::Ulid::new().random();
        let carrier = carrier_for(&request.reference);
        let mut tracking_number = tracking_number(carrier, randomness);
        while self.by_tracking.contains_key(&tracking_number) {
            tracking_number = tracking_number_for(carrier);
        }
        let id = new_id("shp");
        let tracking_url = format!("{}/track/{tracking_number}", self.public_url);
        let body = json!({
            "id": id,
            "carrier": carrier,
            "tracking_number": tracking_number,
            "tracking_url": tracking_url,
            "status": TrackStatus::LabelCreated.as_str(),
        });
        let first_response: Arc<str> = body.to_string().into();
        // The low 32 bits of the ULID's randomness, as a fraction of one.
        let draw = (randomness & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
        let reference = request.reference.clone();
        let mut parcel = Parcel {
            id: id.clone(),
            request,
            carrier,
            tracking_number: tracking_number.clone(),
            tracking_url,
            status: TrackStatus::LabelCreated,
            with_exception: draw < self.exception_rate,
            created: now,
            events: Vec::new(),
            first_response: Arc::clone(&first_response),
        };
        let event = parcel.record(TrackStatus::LabelCreated, now);
        if self
            .by_reference
            .insert(reference.clone(), parcel)
            .is_some()
        {
            self.stats.effects_applied_twice += 1;
        }
        self.by_tracking.insert(tracking_number, reference.clone());
        self.by_id.insert(id, reference.clone());
        self.stats.shipments += 1;
        self.order.push_back(reference.clone());
        self.schedule(now_ms.saturating_add(self.step_ms), reference);
        self.evict();
        Created::New(first_response, event)
    }

    fn evict(&mut self) {
        while self.order.len() > self.max_shipments {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(parcel) = self.by_reference.remove(&old) {
                self.by_tracking.remove(&parcel.tracking_number);
                self.by_id.remove(&parcel.id);
            }
        }
    }

    /// Moves on every parcel due at `now_ms`; returns the events.
    pub(super) fn advance_due(&mut self, now_ms: u64, now: i64) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            let (at_ms, _) = *entry.key();
            if at_ms > now_ms {
                break;
            }
            let reference = entry.remove();
            let Some(parcel) = self.by_reference.get_mut(&reference) else {
                continue;
            };
            let Some(next) = parcel.status.next(parcel.with_exception) else {
                continue;
            };
            events.push(parcel.record(next, now));
            match next {
                TrackStatus::Delivered => self.stats.delivered += 1,
                TrackStatus::Exception => self.stats.exceptions += 1,
                _ => {}
            }
            if next != TrackStatus::Delivered {
                self.schedule(at_ms.saturating_add(self.step_ms), reference);
            }
        }
        events
    }
}

const CARRIERS: [&str; 3] = ["DHL", "UPS", "DPD"];

/// The same reference always goes with the same carrier.
fn carrier_for(reference: &str) -> &'static str {
    let mut hasher = DefaultHasher::new();
    reference.hash(&mut hasher);
    let index = usize::try_from(hasher.finish() % 3).unwrap_or(0);
    CARRIERS[index]
}

fn tracking_number_for(carrier: &'static str) -> String {
    tracking_number(carrier, ulid::Ulid::new().random())
}

/// A number shaped like the carrier's: DHL `JJD` + 18 digits, UPS `1Z` + 16 hex, DPD 14 digits.
fn tracking_number(carrier: &str, randomness: u128) -> String {
    match carrier {
        "DHL" => format!("JJD{:018}", randomness % 1_000_000_000_000_000_000),
        "UPS" => format!("1Z{:016X}", randomness & u128::from(u64::MAX)),
        _ => format!("{:014}", randomness % 100_000_000_000_000),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shipment(reference: &str) -> NewShipment {
        serde_json::from_value(json!({
            "order_id": "O1",
            "reference": reference,
            "address": {"city": "Hamburg"},
            "lines": [{"sku": "MUG", "quantity": 2}],
        }))
        .unwrap()
    }

    fn statuses(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["data"]["status"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_parcel_is_tracked_to_delivery_one_step_at_a_time() {
        let mut parcels = Parcels::new(1_000, 0.0, "http://t".into(), 10);
        let Created::New(body, event) = parcels.create(shipment("S1"), 0, 100) else {
            panic!("not created");
        };
        assert_eq!(event["data"]["status"], "label_created");
        assert!(body.contains("http://t/track/"));
        assert!(matches!(
            parcels.create(shipment("S1"), 1, 100),
            Created::Replayed(again) if again == body
        ));
        assert_eq!(
            statuses(&parcels.advance_due(2_000, 102)),
            ["picked_up", "in_transit"]
        );
        assert_eq!(
            statuses(&parcels.advance_due(10_000, 110)),
            ["out_for_delivery", "delivered"]
        );
        let stats = parcels.stats();
        assert_eq!(
            (stats.shipments, stats.duplicates, stats.delivered),
            (1, 1, 1)
        );
    }

    #[test]
    fn an_exception_comes_one_step_before_delivery() {
        let mut parcels = Parcels::new(1_000, 1.0, "http://t".into(), 10);
        parcels.create(shipment("S1"), 0, 100);
        assert_eq!(
            statuses(&parcels.advance_due(10_000, 110)),
            [
                "picked_up",
                "in_transit",
                "out_for_delivery",
                "exception",
                "delivered"
            ]
        );
        let parcel = parcels.newest(1).next().unwrap();
        assert_eq!(parcel.events.last().unwrap().location, "Hamburg");
    }

    #[test]
    fn tracking_numbers_look_like_the_carriers() {
        assert_eq!(tracking_number("DHL", 42), "JJD000000000000000042");
        assert_eq!(tracking_number("UPS", 255), "1Z00000000000000FF");
        assert_eq!(tracking_number("DPD", 7).len(), 14);
        assert_eq!(carrier_for("shp_1"), carrier_for("shp_1"));
    }
}
