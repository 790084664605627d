//! Helpers for the end-to-end suites: start the real `omnihub` binary as a process.

#![allow(dead_code)]

#[cfg(feature = "browser-tests")]
pub mod backoffice;
#[cfg(feature = "browser-tests")]
pub mod webdriver;

pub mod collect;
pub mod shop;
pub mod stores;
pub mod till;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP client for the suites, with a timeout so a dead hub fails a request, not the run.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Reads a child's piped stdout until the line that starts with `prefix` (a process started on
/// port 0 tells its address so), within `within`, and answers the rest of that line, trimmed.
/// The rest of the output is read and dropped, so the child never blocks on a full pipe.
pub fn listening_line(child: &mut Child, prefix: &'static str, within: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("no line '{prefix}…' within {within:?}"))
}

/// A running `omnihub hub` process; killed when dropped.
pub struct HubProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `omnihub hub` on port 0 with its data in `data`, and waits (with a deadline) for the
/// line that tells its address.
pub fn start_hub(data: &Path, extra_env: &[(&str, &str)]) -> HubProcess {
    start_hub_with(data, &[], extra_env)
}

/// [`start_hub`] with extra arguments after `omnihub hub` (e.g. `--config file.toml`).
pub fn start_hub_with(data: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> HubProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnihub"));
    cmd.arg("hub")
        .args(args)
        .env("OMNIHUB_HUB_LISTEN", "127.0.0.1:0")
        .env("OMNIHUB_HUB_DATA_DIR", data)
        .env("OMNIHUB_HUB_DEMO_DATA", "true")
        .env("OMNIHUB_HUB_CACHE_MB", "16")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("omnihub starts");
    let base = listening_line(
        &mut child,
        "omnihub hub listening on ",
        Duration::from_secs(120),
    );
    let hub = HubProcess { child, base };
    wait_ready(&hub.base);
    hub
}

/// A running `omnihub edge` process; killed when dropped.
pub struct EdgeProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProcess {
    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `omnihub edge` with its settings in `env` (`OMNIHUB_EDGE_*`) and waits for its address
/// and readiness.
pub fn start_edge(env: &[(&str, String)]) -> EdgeProcess {
    start_edge_with(&[], env)
}

/// [`start_edge`] with extra arguments after `omnihub edge` (e.g. `--replay-journal file`).
pub fn start_edge_with(args: &[&str], env: &[(&str, String)]) -> EdgeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnihub"));
    cmd.arg("edge")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("omnihub edge starts");
    let base = listening_line(
        &mut child,
        "omnihub edge listening on ",
        Duration::from_secs(60),
    );
    let node = EdgeProcess { child, base };
    wait_ready(&node.base);
    node
}

fn wait_ready(base: &str) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{base} not ready within 60 s");
}
