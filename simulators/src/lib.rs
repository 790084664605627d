//! Stand-ins for the world around the hub: the partner simulators (ERP, payment provider, OMS,
//! logistics, mail) and the load generators (shoppers now; POS terminals and boards later). Like a
//! real partner or a real shopper, everything here talks to the hub only over the network — HTTP on
//! loopback — and never links the hub's code, so what it measures or exercises is what a client
//! would see.
//!
//! Entry points: [`load::run`] runs a load scenario ([`load::LoadCommand`], dispatched by
//! `omnihub load <scenario>`) and prints its figures; [`load::report`] holds the latency
//! histograms and the table every scenario prints. [`run_sim`] runs a partner simulator
//! ([`SimCommand`], dispatched by `omnihub sim <partner>`) until Ctrl-C; [`mail::MailSink`] starts
//! the mail sink in-process for tests.

pub mod load;
pub mod mail;

/// The partner simulators.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimCommand {
    /// An SMTP sink (default 127.0.0.1:2525) with an inbox to inspect (http://127.0.0.1:8205/).
    Mail(mail::MailArgs),
}

/// Why a simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("mail simulator: {0}")]
    Mail(#[from] mail::MailError),
}

/// Runs a partner simulator until Ctrl-C or SIGTERM. Builds its own runtime, so call it from
/// synchronous code.
pub fn run_sim(command: SimCommand) -> Result<(), SimError> {
    match command {
        SimCommand::Mail(args) => Ok(mail::run(args)?),
    }
}
