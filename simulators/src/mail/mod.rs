//! The mail partner simulator, `omnihub sim mail`: a real SMTP server (an RFC 5321 subset over
//! TCP) that accepts every message sent to it and keeps it, plus an inbox over HTTP to look at
//! what arrived — the HTML pages for people, a JSON API for tests.
//!
//! It is a sink, not a mail server: it relays nothing, checks no credentials (no AUTH, no
//! STARTTLS), keeps the last messages in memory only, and decodes no MIME: it unfolds the header
//! fields and decodes RFC 2047 encoded words in Subject, From and To, nothing more. SMTP delivers at least once, so copies of a message (same Message-ID) are all
//! kept and every later copy is flagged `duplicate_of` the first.
//!
//! Everything is bounded: line length, message size, recipients per message, concurrent
//! connections, idle time per connection, and the inbox by message count and bytes.
//!
//! Entry points: [`run`] for the binary (blocks until Ctrl-C or SIGTERM); [`MailSink::start`]
//! for tests and the demo (binds, serves in the background, [`MailSink::stop`] ends it).

mod command;
mod headers;
mod http;
mod smtp;
mod store;

#[cfg(test)]
mod tests;

pub use headers::Headers;
pub use store::{Envelope, StoredMessage};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, instrument, warn};

/// The name the SMTP server gives itself.
const HOSTNAME: &str = "mail-sink.omnihub.test";
/// Largest message size that may be configured, in MiB.
const MAX_SIZE_MB: u64 = 1024;

/// Settings of `omnihub sim mail`; [`MailArgs::default`] gives the same values as the command
/// line without flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct MailArgs {
    /// Where the SMTP server listens (port 0 picks a free port).
    #[arg(long, env = "OMNIHUB_SIM_MAIL_SMTP", default_value_t = MailArgs::DEFAULT_SMTP)]
    pub smtp: SocketAddr,
    /// Where the inbox (HTML and JSON) is served.
    #[arg(long, env = "OMNIHUB_SIM_MAIL_HTTP", default_value_t = MailArgs::DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// How many messages the inbox keeps; the oldest are dropped first.
    #[arg(long, env = "OMNIHUB_SIM_MAIL_MAX_MESSAGES", default_value_t = 1000)]
    pub max_messages: usize,
    /// How many MiB of message text the inbox keeps at most, all messages together.
    #[arg(long, env = "OMNIHUB_SIM_MAIL_MAX_STORE_MB", default_value_t = 256)]
    pub max_store_mb: u64,
    /// Largest message accepted, in MiB (announced in EHLO as SIZE).
    #[arg(long, env = "OMNIHUB_SIM_MAIL_MAX_SIZE_MB", default_value_t = 10)]
    pub max_size_mb: u64,
    /// Concurrent SMTP connections; more are answered `421` and closed.
    #[arg(long, env = "OMNIHUB_SIM_MAIL_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,
    /// How long an SMTP connection may stay silent before it is closed with `421` (e.g. `5m`).
    #[arg(long, env = "OMNIHUB_SIM_MAIL_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

impl MailArgs {
    pub const DEFAULT_SMTP: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2525);
    pub const DEFAULT_HTTP: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8205);

    fn check(&self) -> Result<(), MailError> {
        let bad = |what: &str| Err(MailError::BadArguments(what.to_owned()));
        if self.max_messages == 0 {
            return bad("--max-messages must be at least 1");
        }
        if !(1..=MAX_SIZE_MB).contains(&self.max_size_mb) {
            return bad("--max-size-mb must be between 1 and 1024");
        }
        if self.max_store_mb < self.max_size_mb {
            return bad("--max-store-mb must be at least --max-size-mb");
        }
        if self.max_connections == 0 {
            return bad("--max-connections must be at least 1");
        }
        if self.idle_timeout.is_zero() {
            return bad("--idle-timeout must be longer than zero");
        }
        Ok(())
    }
}

impl Default for MailArgs {
    fn default() -> MailArgs {
        MailArgs {
            smtp: MailArgs::DEFAULT_SMTP,
            http: MailArgs::DEFAULT_HTTP,
            max_messages: 1000,
            max_store_mb: 256,
            max_size_mb: 10,
            max_connections: 64,
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Why the mail sink could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("cannot listen for SMTP on {addr}: {source}")]
    SmtpListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the inbox on {addr}: {source}")]
    HttpListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot wait for Ctrl-C or SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}

/// A running mail sink: the SMTP server and the inbox, serving in the background of the tokio
/// runtime that started them until [`MailSink::stop`].
#[derive(Debug)]
pub struct MailSink {
    smtp_addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<store::Store>,
    shutdown: watch::Sender<bool>,
    smtp: JoinHandle<()>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
}

impl MailSink {
    /// Binds both listeners (port 0 picks free ports; read them back with [`Self::smtp_addr`]
    /// and [`Self::http_addr`]) and starts serving. Call it inside a tokio runtime (an actix
    /// `System` is one); the SMTP sessions run on it.
    #[instrument(name = "mail_sink_start", skip_all, fields(smtp = %args.smtp, http = %args.http))]
    pub async fn start(args: &MailArgs) -> Result<MailSink, MailError> {
        args.check()?;
        let mib = |mb: u64| usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let store = Arc::new(store::Store::new(args.max_messages, mib(args.max_store_mb)));
        let config = Arc::new(smtp::SmtpConfig {
            hostname: HOSTNAME.to_owned(),
            max_message_bytes: mib(args.max_size_mb),
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        });

        let smtp_listener = tokio::net::TcpListener::bind(args.smtp)
            .await
            .map_err(|source| MailError::SmtpListen {
                addr: args.smtp,
                source,
            })?;
        let smtp_addr = smtp_listener
            .local_addr()
            .map_err(|source| MailError::SmtpListen {
                addr: args.smtp,
                source,
            })?;
        let http_error = |source| MailError::HttpListen {
            addr: args.http,
            source,
        };
        let http_listener = std::net::TcpListener::bind(args.http).map_err(http_error)?;
        let http_addr = http_listener.local_addr().map_err(http_error)?;
        let server =
            http::server(http_listener, Arc::clone(&store), smtp_addr).map_err(http_error)?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let smtp = tokio::spawn(smtp::serve(
            smtp_listener,
            config,
            Arc::clone(&store),
            shutdown_rx,
        ));
        let http = server.handle();
        let http_task = tokio::spawn(server);
        info!(%smtp_addr, %http_addr, "mail sink started");
        Ok(MailSink {
            smtp_addr,
            http_addr,
            store,
            shutdown,
            smtp,
            http,
            http_task,
        })
    }

    /// Where the SMTP server listens.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// Where the inbox is served (`http://{addr}/`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A copy of every stored message, oldest first.
    pub fn messages(&self) -> Vec<StoredMessage> {
        self.store
            .all()
            .iter()
            .map(|m| StoredMessage::clone(m))
            .collect()
    }

    /// Stops accepting, closes open SMTP sessions with `421` (a message in the middle of DATA is
    /// not stored), stops the inbox, and waits for both (a few seconds at most).
    #[instrument(name = "mail_sink_stop", skip_all)]
    pub async fn stop(self) {
        // An error means every receiver is gone: the SMTP server has already ended.
        let _ = self.shutdown.send(true);
        self.http.stop(true).await;
        if let Err(e) = self.smtp.await {
            warn!(error = %e, "the SMTP server task failed");
        }
        match self.http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the inbox server failed"),
            Err(e) => warn!(error = %e, "the inbox server task failed"),
        }
        info!("mail sink stopped");
    }
}

/// Runs the mail sink until Ctrl-C or SIGTERM: the blocking entry point for `omnihub sim mail`.
/// Prints one line with both addresses on standard output once it listens.
pub fn run(args: MailArgs) -> Result<(), MailError> {
    args.check()?;
    // A plain tokio runtime does: the inbox's actix-web workers run on threads of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("omnihub-sim-mail")
        .build()
        .map_err(MailError::Runtime)?;
    runtime.block_on(async move {
        let sink = MailSink::start(&args).await?;
        println!(
            "omnihub sim mail: SMTP on {}, inbox on http://{}/",
            sink.smtp_addr(),
            sink.http_addr()
        );
        let stopped = stop_signal().await;
        info!("shutting down");
        sink.stop().await;
        stopped
    })
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() -> Result<(), MailError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(MailError::Signal)?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.map_err(MailError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(MailError::Signal)
    }
}
