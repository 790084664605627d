//! The payment provider: the client of its API ([`client`]) and the verification of its
//! webhooks ([`webhook`]). The provider's API is Stripe's; the hub uses only documented fields,
//! so the same code runs against the simulator and against Stripe's test mode.

pub mod client;
pub mod routes;
pub mod webhook;
