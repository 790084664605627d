//! Stand-ins for the world around the hub: the partner simulators (ERP, payment provider, OMS,
//! logistics, mail) and the load generators (shoppers now; POS terminals and boards later). Like a
//! real partner or a real shopper, everything here talks to the hub only over the network — HTTP on
//! loopback — and never links the hub's code, so what it measures or exercises is what a client
//! would see.
//!
//! The `load stores` scenario also runs stores' edge nodes (the `edge-node` crate, a store's own
//! server, not the hub) in its process; they too reach the hub only over the network.
//!
//! Entry points: [`load::run`] runs a load scenario ([`load::LoadCommand`], dispatched by
//! `omnihub load <scenario>`) and prints its figures; [`load::report`] holds the latency
//! histograms and the table every scenario prints. [`run_sim`] runs a partner simulator
//! ([`SimCommand`], dispatched by `omnihub sim <partner>`) until Ctrl-C; [`mail::MailSink`] starts
//! the mail sink in-process for tests, [`payments::PaymentSim`] the Stripe-shaped payment
//! provider, [`oms::OmsSim`] the order management system, [`logistics::LogisticsSim`] the
//! carrier and [`erp::ErpSim`] the ERP's feeds. The OMS and logistics simulators share their
//! faults, webhook delivery, clock and process plumbing through the private `common` module; the
//! ERP simulator uses its process plumbing and HMAC signing.

mod common;
pub mod erp;
pub mod load;
pub mod logistics;
pub mod mail;
pub mod oms;
pub mod payments;
pub mod terminal;
pub mod voice;

/// The partner simulators.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimCommand {
    /// The retailer's ERP (default http://127.0.0.1:8202): a generated catalog served as
    /// product, price, stock, promotion and coupon feeds (JSON or CSV, paged by cursor), pushed
    /// to the hub signed with HMAC (on request or periodically), changes and faults via /test/.
    Erp(erp::ErpArgs),
    /// An SMTP sink (default 127.0.0.1:2525) with an inbox to inspect (http://127.0.0.1:8205/).
    #[command(alias = "smtp")]
    Mail(mail::MailArgs),
    /// A payment provider speaking the shape of Stripe's API (default http://127.0.0.1:8201),
    /// with a hosted payment page, signed webhooks and a test API under /_sim/.
    Payments(payments::PaymentsArgs),
    /// An order management system (default http://127.0.0.1:8203): idempotent `POST /orders`,
    /// allocation, picking, shipping through the logistics simulator, cancellation, signed
    /// status webhooks and a test API under /_sim/.
    Oms(oms::OmsArgs),
    /// A carrier (default http://127.0.0.1:8204): shipments with tracking numbers, tracking
    /// events on an accelerated clock as signed webhooks, and a public tracking page.
    Logistics(logistics::LogisticsArgs),
    /// The store's payment terminal (default http://127.0.0.1:8206): reads a test card chosen
    /// on its page or named in the request and hands the POS only a token, brand and last4.
    Terminal(terminal::TerminalArgs),
    /// The voice platform: plays a scripted conversation against the hub's skill endpoint
    /// (default http://127.0.0.1:8080/voice/alexa) with signed Alexa Skills Kit requests,
    /// serving its signing chain on http://127.0.0.1:8207/echo.api/ meanwhile (docs/voice.md).
    Voice(voice::VoiceArgs),
}

/// Why a simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("erp simulator: {0}")]
    Erp(#[from] erp::ErpError),
    #[error("mail simulator: {0}")]
    Mail(#[from] mail::MailError),
    #[error("payments simulator: {0}")]
    Payments(#[from] payments::PaymentsError),
    #[error("oms simulator: {0}")]
    Oms(#[from] oms::OmsError),
    #[error("logistics simulator: {0}")]
    Logistics(#[from] logistics::LogisticsError),
    #[error("terminal simulator: {0}")]
    Terminal(#[from] terminal::TerminalError),
    #[error("voice simulator: {0}")]
    Voice(#[from] voice::VoiceSimError),
}

/// Runs a partner simulator until Ctrl-C or SIGTERM. Builds its own runtime, so call it from
/// synchronous code.
pub fn run_sim(command: SimCommand) -> Result<(), SimError> {
    match command {
        SimCommand::Erp(args) => Ok(erp::run(args)?),
        SimCommand::Mail(args) => Ok(mail::run(args)?),
        SimCommand::Payments(args) => Ok(payments::run(args)?),
        SimCommand::Oms(args) => Ok(oms::run(args)?),
        SimCommand::Logistics(args) => Ok(logistics::run(args)?),
        SimCommand::Terminal(args) => Ok(terminal::run(args)?),
        SimCommand::Voice(args) => Ok(voice::run(args)?),
    }
}
