//! `channels` holds the channel adapters: the JSON API for web and mobile apps (`/api/v1`), the
//! server-rendered storefront pages, and the live-basket WebSocket. Every adapter works over the
//! [`backend::Backend`] trait, so the same routes can be served by the hub (and later by an edge
//! node).
//!
//! It is not where prices are computed or state is kept: handlers parse, authorize, call the
//! backend and render. Entry point: [`configure`], given a [`context::ChannelState`].

pub mod api;
pub mod assistant;
pub mod backend;
pub mod context;
pub mod error;
pub mod live;
pub mod oauth;
pub mod voice;
pub mod web;

pub use backend::{Backend, BackendError, BasketCommand, BasketView, Shopper};
pub use context::{ChannelSettings, ChannelState, RequestContext};

/// Registers every channel route: `/api/v1/...` and the storefront pages, with the JSON error
/// handlers for the extractors and the 404s for unknown routes.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.app_data(error::json_config())
        .app_data(error::form_config())
        .app_data(error::query_config())
        .app_data(error::path_config())
        .app_data(error::payload_config());
    api::configure(cfg);
    web::configure(cfg);
}
