//! `omnihub`: one binary, a thin dispatcher into the crates' libraries.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod demo;

#[derive(Parser)]
#[command(name = "omnihub", version, about = "Omnichannel commerce hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole system locally with demo data (data in ./data, Ctrl-C stops everything).
    Demo(demo::DemoArgs),
    /// Runs the hub.
    Hub {
        /// A TOML settings file (see deploy/hub.toml); OMNIHUB_HUB_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Runs a partner simulator (a real protocol server standing in for a partner).
    #[command(subcommand)]
    Sim(simulators::SimCommand),
    /// Runs a load generator against a running hub and prints its figures.
    #[command(subcommand)]
    Load(simulators::load::LoadCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Hub { config } => run_hub(config),
        Command::Sim(command) => Ok(simulators::run_sim(command)?),
        Command::Load(command) => Ok(simulators::load::run(command)?),
    }
}

fn run_hub(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = hub::HubSettings::load(config.as_deref()).context("reading the hub settings")?;
    hub::telemetry::init(settings.log_json);
    actix_web::rt::System::new().block_on(async move {
        let app =
            hub::Application::build(settings, std::sync::Arc::new(hub::clock::SystemClock)).await?;
        tracing::info!(address = %app.address(), "hub listening");
        // A plain line for supervisors and tests that started the hub on port 0.
        println!("omnihub hub listening on http://{}", app.address());
        let server = app.server_handle();
        actix_web::rt::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutting down");
                server.stop(true).await;
            }
        });
        #[cfg(unix)]
        {
            let server = app.server_handle();
            actix_web::rt::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    server.stop(true).await;
                }
            });
        }
        app.run().await?;
        Ok(())
    })
}
