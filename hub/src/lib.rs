//! `hub` is Omnihub's central process: the actor system (actix) with a virtual actor per customer
//! and per basket, the shared catalog, inventory and event-recorder actors, storage behind
//! domain-level traits (sled by default), and the HTTP server (actix-web) that serves the
//! channel adapters from the `channels` crate.
//!
//! It is not where prices are computed (that is `protocol::pricing`, called by the basket actor)
//! nor where routes are defined (that is `channels`). Entry points: [`app::Application::build`]
//! and [`config::HubSettings::load`].

pub mod actors;
pub mod admin;
pub mod app;
pub mod auth;
pub mod automation;
pub mod backend;
pub mod backoffice;
pub mod bench;
pub mod bench_pricing;
pub mod checkout;
pub mod clock;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod demo;
pub mod edge;
pub mod experience;
pub mod experiments;
pub mod fulfilment;
pub mod import;
pub mod monitor;
pub mod oauth;
pub mod ops;
pub mod outbox;
pub mod payments;
pub mod personalization;
pub mod pricing;
pub mod storage;
pub mod telemetry;
pub mod unsubscribe;

pub use app::{Application, HubError, HubHandle};
pub use config::HubSettings;
