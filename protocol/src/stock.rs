//! Stock per (SKU, location).

use crate::codec::Stored;
use crate::ids::{LocationId, Sku};
use serde::{Deserialize, Serialize};

/// Stock of one SKU at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: Sku,
    pub location: LocationId,
    /// Units physically there.
    pub on_hand: i64,
    /// Units held for checkouts waiting for payment.
    pub held: i64,
}

impl StockLevel {
    /// Units that may still be promised to a new basket or order; never negative.
    pub fn available_to_promise(&self) -> i64 {
        (self.on_hand - self.held).max(0)
    }
}

impl Stored for StockLevel {
    const KIND: &'static str = "stock";
    const VERSION: u16 = 1;
}
