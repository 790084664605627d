//! Fulfilment: what an order sends out through the outbox (the OMS export now; email and the
//! OMS's and carrier's updates back come next) and the deliverers that send it.

pub mod email;
pub mod oms;
pub mod webhooks;

use protocol::order::OrderRecord;
use protocol::OutboxMessage;
use serde_json::json;
use time::OffsetDateTime;

/// The OMS export of a new order: queued once per order, in the unit that stores the order.
pub fn order_placed(order: &OrderRecord, now: OffsetDateTime) -> OutboxMessage {
    let b = &order.breakdown;
    let payload = json!({
        "order_id": order.id,
        "number": order.number,
        "channel": order.channel,
        "email": order.email,
        "lines": b.lines.iter().map(|l| json!({
            "sku": l.sku,
            "name": if l.variant.is_empty() { l.name.clone() } else { format!("{} – {}", l.name, l.variant) },
            "quantity": l.quantity,
            "unit_price": l.unit_price,
        })).collect::<Vec<_>>(),
        "address": order.address,
        "shipping_method": b.shipping.id,
        "total": b.total,
    });
    OutboxMessage::new(
        oms::DESTINATION,
        "order.placed",
        format!("oms:order.placed:{}", order.id),
        payload.to_string(),
        now,
    )
}

/// Tells the OMS to cancel an order (refused by the OMS once shipped: a dead letter to look at).
pub fn order_cancelled(order: &OrderRecord, now: OffsetDateTime) -> OutboxMessage {
    OutboxMessage::new(
        oms::DESTINATION,
        "order.cancelled",
        format!("oms:order.cancelled:{}", order.id),
        json!({"order_id": order.id, "number": order.number, "reason": order.cancelled})
            .to_string(),
        now,
    )
}

/// The "shipped" email for one of an order's shipments.
pub fn shipped_email(
    order: &OrderRecord,
    shipment: &str,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let s = order.shipments.iter().find(|s| s.id == shipment);
    email::shipped(
        order,
        shipment,
        s.map_or("", |s| s.carrier.as_str()),
        s.map_or("", |s| s.tracking_number.as_str()),
        s.map_or("", |s| s.tracking_url.as_str()),
        public_url,
        now,
    )
}

/// The "delivered" email for one of an order's shipments.
pub fn delivered_email(
    order: &OrderRecord,
    shipment: &str,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    email::delivered(order, shipment, public_url, now)
}
