//! The hub's typed settings: defaults that run on a laptop, then a TOML file, then environment
//! variables prefixed `OMNIHUB_HUB_` (nested keys with `__`, e.g.
//! `OMNIHUB_HUB_CHANNELS__SECURE_COOKIES=true`).

use channels::ChannelSettings;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings of one hub process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where sled keeps the hub's data.
    pub data_dir: PathBuf,
    /// sled page cache in MiB.
    pub cache_mb: u64,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Arbiters (threads) that run entity actors (0: one per core).
    pub actor_threads: usize,
    /// Inventory shards.
    pub inventory_shards: usize,
    /// Idle time after which a customer or basket actor passivates, e.g. `10m`.
    #[serde(deserialize_with = "human")]
    pub passivate_after: Duration,
    /// How often entity actors check whether they are idle, e.g. `30s`.
    #[serde(deserialize_with = "human")]
    pub idle_check_every: Duration,
    /// Load the demo catalog, stock and shopper if the catalog is empty.
    pub demo_data: bool,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Bearer token that `/ops/*` and `/metrics` require. Unset, they are open: fine on
    /// loopback (the demo), not on a network — set it there.
    pub ops_token: Option<secrecy::SecretString>,
    pub channels: ChannelSettings,
}

fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration such as 10m or 30s: {e}"
        ))
    })
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data/hub"),
            cache_mb: 64,
            workers: 0,
            actor_threads: 0,
            inventory_shards: 4,
            passivate_after: Duration::from_secs(600),
            idle_check_every: Duration::from_secs(30),
            demo_data: false,
            log_json: false,
            ops_token: None,
            channels: ChannelSettings::default(),
        }
    }
}

impl HubSettings {
    /// Defaults, overridden by `file` (if given) and then by `OMNIHUB_HUB_*` variables.
    pub fn load(file: Option<&Path>) -> Result<HubSettings, Box<figment::Error>> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed("OMNIHUB_HUB_").split("__"))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
// figment's `Jail` closure returns figment's own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_and_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hub.toml", "listen = \"127.0.0.1:9000\"\npassivate_after = \"2m\"\n[channels]\nsign_in_per_account_per_minute = 3\n")?;
            jail.set_env("OMNIHUB_HUB_CACHE_MB", "16");
            let s = HubSettings::load(Some(Path::new("hub.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9000);
            assert_eq!(s.passivate_after, Duration::from_secs(120));
            assert_eq!(s.cache_mb, 16);
            assert_eq!(s.channels.sign_in_per_account_per_minute, 3);
            assert_eq!(s.idle_check_every, Duration::from_secs(30));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            assert!(HubSettings::load(Some(Path::new("a.toml"))).is_err());
            jail.create_file("b.toml", "passivate_after = \"soon\"\n")?;
            assert!(HubSettings::load(Some(Path::new("b.toml"))).is_err());
            Ok(())
        });
    }
}
