//! `omnihub demo`: the whole system on this machine with demo data, as child processes of one
//! supervisor. Data lives in `./data/` and survives a restart; `--fresh` starts over.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Delete ./data first and start from a clean demo.
    #[arg(long)]
    fresh: bool,
    /// Where the demo keeps its data.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The hub's port.
    #[arg(long, default_value_t = 8080)]
    hub_port: u16,
}

/// A child process that is stopped when the supervisor ends.
struct Supervised {
    name: &'static str,
    child: Child,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Ctrl-C reaches the whole process group, so children usually stop by themselves;
        // give them a moment to flush, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(url: &str, child: &mut Supervised, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); see its log above",
                child.name
            );
        }
        if client
            .get(url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become ready at {url} within {timeout:?}",
                child.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.fresh && args.data.exists() {
        std::fs::remove_dir_all(&args.data)
            .with_context(|| format!("removing {}", args.data.display()))?;
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let exe = std::env::current_exe().context("finding the omnihub binary")?;
    let hub_url = format!("http://127.0.0.1:{}", args.hub_port);
    let child = Command::new(&exe)
        .arg("hub")
        .env("OMNIHUB_HUB_DATA_DIR", args.data.join("hub"))
        .env("OMNIHUB_HUB_LISTEN", format!("127.0.0.1:{}", args.hub_port))
        .env("OMNIHUB_HUB_DEMO_DATA", "true")
        .stdin(Stdio::null())
        .spawn()
        .context("starting the hub")?;
    let mut hub = Supervised { name: "hub", child };
    catch_ctrl_c();
    let child = Command::new(&exe)
        .args(["sim", "mail"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the mail simulator")?;
    let mut mail = Supervised {
        name: "mail simulator",
        child,
    };
    let inbox = format!("http://{}/", simulators::mail::MailArgs::DEFAULT_HTTP);
    println!("Starting Omnihub (first start loads the demo catalog)…");
    wait_ready(
        &format!("{hub_url}/readyz"),
        &mut hub,
        Duration::from_secs(120),
    )?;
    wait_ready(
        &format!("{inbox}healthz"),
        &mut mail,
        Duration::from_secs(30),
    )?;
    println!(
        "\n  Omnihub is running.\n\n  Storefront      {hub_url}/\n  JSON API        {hub_url}/api/v1/products\n  OpenAPI         {hub_url}/api/v1/openapi.json\n  Health          {hub_url}/healthz  {hub_url}/readyz  {hub_url}/metrics\n  Mail inbox      {inbox}  (SMTP sink on {})\n\n  Demo shopper    {}  /  {}\n\n  Data in {} (kept across restarts; --fresh starts over). Ctrl-C stops everything.\n",
        simulators::mail::MailArgs::DEFAULT_SMTP,
        hub::app::DEMO_EMAIL,
        hub::app::DEMO_PASSWORD,
        args.data.display()
    );
    // Runs until a child stops: on Ctrl-C all of them do (they share the terminal's process
    // group); if one fails on its own, the others are stopped too.
    let mut children = [hub, mail];
    loop {
        for i in 0..children.len() {
            let Some(status) = children[i].child.try_wait()? else {
                continue;
            };
            if !status.success() && status.code().is_some() {
                for other in children.iter_mut() {
                    let _ = other.child.kill();
                }
                bail!("the {} stopped: {status}", children[i].name);
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ctrl-C reaches every process of the terminal's group: the children stop gracefully by
/// themselves, and the supervisor waits for them instead of dying first.
fn catch_ctrl_c() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping…");
            }
        });
    });
}
