//! The process plumbing of a simulator: an actix-web server on a bound listener, stopped on
//! demand with its background tasks, and [`run`], the blocking entry point of
//! `omnihub sim <partner>` that prints the one stdout line and waits for Ctrl-C or SIGTERM.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A server serving in the background, plus the tasks that live as long as it does.
pub(crate) struct Running {
    address: SocketAddr,
    handle: ServerHandle,
    task: Option<JoinHandle<std::io::Result<()>>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Serves `configure`'s routes on `listener` (two workers, no signal handling of its own).
    pub(crate) fn start<F>(
        listener: std::net::TcpListener,
        configure: F,
    ) -> std::io::Result<Running>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let address = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .configure(configure.clone())
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        let handle = server.handle();
        Ok(Running {
            address,
            handle,
            task: Some(tokio::spawn(server)),
            background: Vec::new(),
        })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// A task aborted when the server stops.
    pub(crate) fn keep(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// Aborts the background tasks, stops serving gracefully and waits for the server.
    pub(crate) async fn stop(&mut self, name: &str) {
        for task in &self.background {
            task.abort();
        }
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "the {name} simulator's server failed"),
                Err(e) => warn!(error = %e, "the {name} simulator's server task failed"),
            }
        }
        info!("{name} simulator stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        if let Some(task) = self.task.take() {
            // Without an await here, stopping is asked for and left to the runtime.
            task.abort();
            drop(self.handle.stop(false));
        }
    }
}

/// A simulator [`run`] can drive.
pub(crate) trait Simulator {
    fn base_url(&self) -> String;
    fn stop(self) -> impl Future<Output = ()>;
}

/// How a simulator's error names the failures of [`run`] itself.
pub(crate) trait ProcessError {
    fn runtime(error: std::io::Error) -> Self;
    fn signal(error: std::io::Error) -> Self;
}

/// Starts a simulator on a runtime of its own, prints `{name} simulator listening on {base}`
/// once it listens, and runs it until Ctrl-C or SIGTERM.
pub(crate) fn run<S, E, F>(name: &str, start: F) -> Result<(), E>
where
    S: Simulator,
    E: ProcessError,
    F: Future<Output = Result<S, E>>,
{
    // A plain tokio runtime does: the server's actix-web workers run on threads of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(format!("omnihub-sim-{name}"))
        .build()
        .map_err(E::runtime)?;
    runtime.block_on(async move {
        let sim = start.await?;
        println!("{name} simulator listening on {}", sim.base_url());
        // Whoever reads the line may wait for it before anything else; a failed flush only
        // means nobody reads standard output.
        let _ = std::io::stdout().flush();
        let stopped = stop_signal().await.map_err(E::signal);
        info!("shutting down");
        sim.stop().await;
        stopped
    })
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
