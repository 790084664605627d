//! The edge node's typed settings: defaults that run on a laptop, then a TOML file, then
//! environment variables prefixed `OMNIHUB_EDGE_` (nested keys with `__`, e.g.
//! `OMNIHUB_EDGE_SYNC__HEARTBEAT_EVERY=2s`). Secrets (`credential`, `api_token`) are wrapped so
//! they never reach a log; [`EdgeSettings::check`] refuses settings that cannot work.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use protocol::replication::ReplicaId;
use protocol::LocationId;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings of one edge node process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSettings {
    /// This node's replica id (`berlin`; after a rebuild a new one, e.g. `berlin-2`).
    pub replica: ReplicaId,
    /// The one location the node owns, e.g. `store-berlin`.
    pub location: LocationId,
    /// The store's name, shown to the operator.
    pub store_name: String,
    /// The hub's sync endpoint, e.g. `ws://127.0.0.1:8080/api/v1/edge/sync` (a hub cluster:
    /// one node's, or the load balancer's).
    pub hub_url: String,
    /// More hub nodes' sync endpoints (a hub cluster without a load balancer in front): when a
    /// session cannot be made or ends, the next session tries the next URL, `hub_url` first,
    /// round the list. Any hub node serves any store: the sync state lives in the cluster's
    /// engines, so what one node acknowledged is not sent again through another.
    pub more_hub_urls: Vec<String>,
    /// The node's credential, sent as `Authorization: Bearer …` to the hub. Never logged.
    pub credential: Option<SecretString>,
    /// Where sled and the journal live.
    pub data_dir: PathBuf,
    /// sled page cache in MiB (kept small: an edge node is a small machine).
    pub cache_mb: u64,
    /// Address of the node's own HTTP API; port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Bearer token the node's HTTP API requires (everything but `/healthz` and `/readyz`).
    /// Never logged.
    pub api_token: Option<SecretString>,
    /// Rights the node never gives away per SKU; below it the node asks the hub for more.
    pub safety_buffer: u64,
    /// Share (0–100) of the sellable units above the safety buffer that the node grants the
    /// hub for online promises while connected.
    pub online_share_percent: u8,
    /// A clock skew to the hub beyond this is shown to the operator, e.g. `5m`.
    #[serde(deserialize_with = "human")]
    pub max_clock_skew: Duration,
    pub sync: SyncSettings,
    /// The POS: staff who sign in with a PIN, the tills, sessions (`docs/pos.md`).
    pub pos: PosSettings,
    /// The store's advertising boards (`docs/boards.md`).
    pub boards: crate::boards::BoardSettings,
}

/// Staff, tills and staff sessions of the in-store POS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PosSettings {
    /// The shop's currency: till floats, cash counts and Z-reports are in it.
    pub currency: protocol::Currency,
    /// A staff session unused for this long is over (the staff member signs in again), e.g. `12h`.
    #[serde(deserialize_with = "human")]
    pub session_idle: Duration,
    /// A staff session ends this long after its sign-in whatever the activity, e.g. `12h`.
    #[serde(deserialize_with = "human")]
    pub session_max_age: Duration,
    /// The store's tills by id, e.g. `["1", "2"]` (letters, digits, `-`, `_`; at most 32).
    pub tills: Vec<String>,
    /// Who may sign in (none by default: the POS is closed until staff are listed).
    pub staff: Vec<StaffMember>,
    /// A return refunding more than this (a decimal amount in `currency`) needs a manager:
    /// their own session, or their PIN as an approval (`docs/pos.md`, "Returns and exchanges").
    pub return_approval_over: String,
    /// Card payments: the payment terminal, and the caps of offline (store-and-forward) card
    /// payments (`[pos.card]`, `crate::pos::card`).
    pub card: crate::pos::card::CardSettings,
}

impl Default for PosSettings {
    fn default() -> Self {
        PosSettings {
            currency: protocol::Currency::EUR,
            session_idle: Duration::from_secs(12 * 3600),
            session_max_age: Duration::from_secs(12 * 3600),
            tills: Vec::new(),
            staff: Vec::new(),
            return_approval_over: "100.00".into(),
            card: crate::pos::card::CardSettings::default(),
        }
    }
}

/// What a staff member may do: a manager can also unlock a locked colleague.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    Clerk,
    Manager,
}

/// One staff member of this store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffMember {
    /// Their id at the till and on sales (`clerk`), e.g. `anna` or `1042`.
    pub id: String,
    pub name: String,
    pub role: StaffRole,
    /// The argon2id PHC string of their PIN (`omnihub edge --hash-pin`). A PIN has few
    /// combinations: whoever reads this hash can find the PIN, so it is kept out of logs and
    /// the file must be readable by the node only.
    pub pin_hash: SecretString,
}

/// Timing of the sync connection to the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// A heartbeat goes out this often, e.g. `5s`.
    #[serde(deserialize_with = "human")]
    pub heartbeat_every: Duration,
    /// The connection is closed after hearing nothing for this long, e.g. `15s`.
    #[serde(deserialize_with = "human")]
    pub idle_timeout: Duration,
    /// First reconnect delay (before full jitter), doubled per failed attempt.
    #[serde(deserialize_with = "human")]
    pub backoff_initial: Duration,
    /// The largest reconnect delay.
    #[serde(deserialize_with = "human")]
    pub backoff_max: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            heartbeat_every: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            replica: ReplicaId("berlin".into()),
            location: LocationId("store-berlin".into()),
            store_name: "Berlin".into(),
            hub_url: "ws://127.0.0.1:8080/api/v1/edge/sync".into(),
            more_hub_urls: Vec::new(),
            credential: None,
            data_dir: PathBuf::from("data/edge-berlin"),
            cache_mb: 16,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            workers: 2,
            api_token: None,
            safety_buffer: 2,
            online_share_percent: 50,
            max_clock_skew: Duration::from_secs(300),
            sync: SyncSettings::default(),
            pos: PosSettings::default(),
            boards: crate::boards::BoardSettings::default(),
        }
    }
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the edge settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("edge settings: {0}")]
    Invalid(String),
}

/// Text keys read verbatim from the environment (figment would read `OMNIHUB_EDGE_API_TOKEN`
/// of digits as a number, and refuse it).
const VERBATIM_KEYS: [&str; 6] = [
    "replica",
    "location",
    "store_name",
    "hub_url",
    "credential",
    "api_token",
];

/// The shortest `api_token` accepted: it guards the till.
pub const MIN_API_TOKEN_CHARS: usize = 16;

impl EdgeSettings {
    /// Defaults, overridden by `file` (if given) and then by `OMNIHUB_EDGE_*` variables.
    /// Call [`EdgeSettings::check`] (as [`crate::EdgeNode::start`] does) before using them.
    pub fn load(file: Option<&Path>) -> Result<EdgeSettings, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed("OMNIHUB_EDGE_")
                .split("__")
                .ignore(&VERBATIM_KEYS),
        );
        for key in VERBATIM_KEYS {
            if let Ok(value) = std::env::var(format!("OMNIHUB_EDGE_{}", key.to_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Refuses settings that cannot work, saying which key to fix.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = ReplicaId::node(self.replica.as_str()) {
            return bad(format!("replica: {e}"));
        }
        let loc = self.location.0.as_str();
        if loc.is_empty() || loc.len() > 64 || loc == "online" || loc.chars().any(char::is_control)
        {
            return bad(format!(
                "location '{loc}': name the store's own location (1 to 64 characters, not 'online'), e.g. store-berlin"
            ));
        }
        if self.store_name.trim().is_empty() {
            return bad("store_name is empty: name the store, e.g. \"Berlin Mitte\"".into());
        }
        check_hub_url(&self.hub_url).or_else(|m| bad(format!("hub_url: {m}")))?;
        for (i, url) in self.more_hub_urls.iter().enumerate() {
            check_hub_url(url).or_else(|m| bad(format!("more_hub_urls[{i}]: {m}")))?;
        }
        match &self.credential {
            Some(c) if !c.expose_secret().trim().is_empty() => {}
            _ => {
                return bad("credential is not set: set OMNIHUB_EDGE_CREDENTIAL to the node's credential from the hub's [[edge.nodes]] entry".into())
            }
        }
        match &self.api_token {
            Some(t) if t.expose_secret().chars().count() >= MIN_API_TOKEN_CHARS => {}
            _ => {
                return bad(format!(
                    "api_token is not set or shorter than {MIN_API_TOKEN_CHARS} characters: set OMNIHUB_EDGE_API_TOKEN to a long random value"
                ))
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir is empty: name a directory for the node's data".into());
        }
        if self.online_share_percent > 100 {
            return bad(format!(
                "online_share_percent {} is above 100",
                self.online_share_percent
            ));
        }
        if self.cache_mb == 0 {
            return bad("cache_mb must be at least 1".into());
        }
        if self.max_clock_skew.is_zero() {
            return bad("max_clock_skew must be above zero, e.g. 5m".into());
        }
        let s = &self.sync;
        if s.heartbeat_every.is_zero() || s.heartbeat_every >= s.idle_timeout {
            return bad(format!(
                "sync.heartbeat_every ({:?}) must be above zero and below sync.idle_timeout ({:?})",
                s.heartbeat_every, s.idle_timeout
            ));
        }
        if s.backoff_initial.is_zero() || s.backoff_initial > s.backoff_max {
            return bad(format!(
                "sync.backoff_initial ({:?}) must be above zero and at most sync.backoff_max ({:?})",
                s.backoff_initial, s.backoff_max
            ));
        }
        self.boards
            .check()
            .or_else(|m| bad(format!("boards.{m}")))?;
        self.pos.check().or_else(|m| bad(format!("pos.{m}")))
    }

    /// The credential as sent to the hub (empty when unset; [`EdgeSettings::check`] refuses that).
    /// The hub's HTTP base (`http://host:port`) beside its sync URL (`ws://host:port/…`;
    /// `wss://` gives `https://`), for the node's calls to the hub: card authorisations,
    /// receipts of other stores, customers at the till, board audiences.
    pub fn hub_http_base(&self) -> String {
        let url = self.hub_url.as_str();
        let (scheme, rest) = match url.split_once("://") {
            Some(("wss", rest)) => ("https", rest),
            Some((_, rest)) => ("http", rest),
            None => ("http", url),
        };
        format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest))
    }

    /// The hub sync endpoints sessions go through in turn: `hub_url`, then `more_hub_urls`.
    pub fn hub_sync_urls(&self) -> Vec<String> {
        std::iter::once(&self.hub_url)
            .chain(&self.more_hub_urls)
            .cloned()
            .collect()
    }

    pub(crate) fn credential_text(&self) -> &str {
        self.credential.as_ref().map_or("", |c| c.expose_secret())
    }
}

/// An id of a till or a staff member: 1 to `max` letters, digits, `-` or `_`.
fn is_plain_id(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl PosSettings {
    /// Refuses POS settings that cannot work, naming the key (without the `pos.` prefix).
    fn check(&self) -> Result<(), String> {
        crate::pos::returns::approval_limit(self)?;
        if self.session_idle.is_zero() {
            return Err("session_idle must be above zero, e.g. 12h".into());
        }
        if self.session_max_age.is_zero() {
            return Err("session_max_age must be above zero, e.g. 12h".into());
        }
        self.card.check(self.currency)?;
        let mut tills = std::collections::BTreeSet::new();
        for till in &self.tills {
            if !is_plain_id(till, 32) {
                return Err(format!(
                    "tills: '{till}' is not a till id (1 to 32 letters, digits, '-' or '_')"
                ));
            }
            if !tills.insert(till) {
                return Err(format!("tills: '{till}' is listed twice"));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &self.staff {
            if !is_plain_id(&m.id, 40) {
                return Err(format!(
                    "staff: '{}' is not a staff id (1 to 40 letters, digits, '-' or '_')",
                    m.id
                ));
            }
            if !ids.insert(&m.id) {
                return Err(format!("staff: id '{}' is listed twice", m.id));
            }
            if m.name.trim().is_empty() {
                return Err(format!("staff: '{}' has no name", m.id));
            }
            match argon2::PasswordHash::new(m.pin_hash.expose_secret()) {
                Ok(h) if h.algorithm == argon2::Algorithm::Argon2id.ident() => {}
                _ => {
                    return Err(format!(
                        "staff: the pin_hash of '{}' is not an argon2id hash: make one with `omnihub edge --hash-pin`",
                        m.id
                    ))
                }
            }
        }
        Ok(())
    }
}

fn check_hub_url(url: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::http::Uri;
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err(format!(
                "'{url}': this build speaks ws:// only (no TLS); reach the hub over a TLS tunnel or VPN and use ws://"
            ))
        }
        _ => return Err(format!("'{url}' must start with ws://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("'{url}' names no host"));
    }
    Ok(())
}

pub(crate) fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration such as 500ms, 30s or 5m: {e}"
        ))
    })
}

#[cfg(test)]
// figment's `Jail` closure returns figment's own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_http_base_comes_from_the_sync_url() {
        let with = |url: &str| EdgeSettings {
            hub_url: url.into(),
            ..EdgeSettings::default()
        };
        assert_eq!(
            with("ws://127.0.0.1:8080/api/v1/edge/sync").hub_http_base(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(with("ws://hub:9/x").hub_http_base(), "http://hub:9");
        assert_eq!(
            with("wss://hub.example/api").hub_http_base(),
            "https://hub.example"
        );
    }

    fn valid() -> EdgeSettings {
        EdgeSettings {
            credential: Some("node-secret".to_string().into()),
            api_token: Some("a-long-enough-api-token".to_string().into()),
            ..EdgeSettings::default()
        }
    }

    #[test]
    fn file_and_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "edge.toml",
                "replica = \"hamburg\"\nlocation = \"store-hamburg\"\nsafety_buffer = 3\n[sync]\nheartbeat_every = \"2s\"\n",
            )?;
            jail.set_env("OMNIHUB_EDGE_ONLINE_SHARE_PERCENT", "30");
            jail.set_env("OMNIHUB_EDGE_SYNC__IDLE_TIMEOUT", "9s");
            jail.set_env("OMNIHUB_EDGE_CREDENTIAL", "secret-credential");
            jail.set_env("OMNIHUB_EDGE_API_TOKEN", "12345678901234567890");
            let s = EdgeSettings::load(Some(Path::new("edge.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.replica.as_str(), "hamburg");
            assert_eq!(s.location.0, "store-hamburg");
            assert_eq!(s.safety_buffer, 3);
            assert_eq!(s.online_share_percent, 30);
            assert_eq!(s.sync.heartbeat_every, Duration::from_secs(2));
            assert_eq!(s.sync.idle_timeout, Duration::from_secs(9));
            assert_eq!(s.sync.backoff_max, Duration::from_secs(30));
            assert_eq!(s.credential_text(), "secret-credential");
            assert_eq!(
                s.api_token.as_ref().map(|t| t.expose_secret().to_string()),
                Some("12345678901234567890".to_string()),
                "a token of digits stays a string"
            );
            assert!(
                !format!("{s:?}").contains("secret-credential"),
                "secrets never reach Debug output"
            );
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_contracts_numbers() {
        let d = EdgeSettings::default();
        assert_eq!(d.safety_buffer, 2);
        assert_eq!(d.online_share_percent, 50);
        assert_eq!(d.max_clock_skew, Duration::from_secs(300));
        assert_eq!(d.sync.heartbeat_every, Duration::from_secs(5));
        assert_eq!(d.sync.idle_timeout, Duration::from_secs(15));
        assert_eq!(d.sync.backoff_initial, Duration::from_millis(500));
        assert!(valid().check().is_ok());
    }

    #[test]
    fn bad_settings_are_refused_with_the_key_to_fix() {
        type Spoil = Box<dyn Fn(&mut EdgeSettings)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "replica",
                Box::new(|s| s.replica = ReplicaId("Berlin!".into())),
            ),
            ("replica", Box::new(|s| s.replica = ReplicaId::hub())),
            (
                "location",
                Box::new(|s| s.location = LocationId("online".into())),
            ),
            ("hub_url", Box::new(|s| s.hub_url = "http://hub".into())),
            ("hub_url", Box::new(|s| s.hub_url = "wss://hub/sync".into())),
            (
                "more_hub_urls[1]",
                Box::new(|s| s.more_hub_urls = vec!["ws://hub-2/sync".into(), "http://x".into()]),
            ),
            ("credential", Box::new(|s| s.credential = None)),
            (
                "api_token",
                Box::new(|s| s.api_token = Some("short".to_string().into())),
            ),
            (
                "online_share_percent",
                Box::new(|s| s.online_share_percent = 101),
            ),
            (
                "heartbeat_every",
                Box::new(|s| s.sync.heartbeat_every = Duration::from_secs(20)),
            ),
            (
                "backoff_initial",
                Box::new(|s| s.sync.backoff_initial = Duration::from_secs(60)),
            ),
        ];
        for (key, spoil) in cases {
            let mut s = valid();
            spoil(&mut s);
            let err = s.check().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_example_file_loads_and_matches_the_defaults() {
        // In a jail: other tests set OMNIHUB_EDGE_* variables (inside their own jails).
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.toml");
            let s = EdgeSettings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(format!("{s:?}"), format!("{:?}", EdgeSettings::default()));
            Ok(())
        });
    }

    #[test]
    fn staff_and_tills_load_from_the_pos_section() {
        figment::Jail::expect_with(|jail| {
            let hash = crate::pos::hash_pin("0042").map_err(|e| e.to_string())?;
            jail.create_file(
                "pos.toml",
                &format!(
                    "[pos]\ncurrency = \"GBP\"\nsession_idle = \"8h\"\ntills = [\"1\", \"front\"]\n\
                     [[pos.staff]]\nid = \"anna\"\nname = \"Anna\"\nrole = \"manager\"\npin_hash = \"{hash}\"\n"
                ),
            )?;
            let s = EdgeSettings::load(Some(Path::new("pos.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.pos.currency, protocol::Currency::GBP);
            assert_eq!(s.pos.session_idle, Duration::from_secs(8 * 3600));
            assert_eq!(s.pos.tills, ["1", "front"]);
            assert_eq!(s.pos.staff[0].role, StaffRole::Manager);
            assert!(
                !format!("{s:?}").contains(&hash),
                "PIN hashes never reach Debug output"
            );
            let s = EdgeSettings {
                credential: valid().credential,
                api_token: valid().api_token,
                ..s
            };
            assert!(s.check().is_ok(), "{:?}", s.check());
            jail.create_file(
                "bad.toml",
                "[[pos.staff]]\nid = \"x\"\nname = \"X\"\nrole = \"boss\"\npin_hash = \"h\"\n",
            )?;
            assert!(EdgeSettings::load(Some(Path::new("bad.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "replika = \"x\"\n")?;
            assert!(EdgeSettings::load(Some(Path::new("a.toml"))).is_err());
            jail.create_file("b.toml", "max_clock_skew = \"soon\"\n")?;
            assert!(EdgeSettings::load(Some(Path::new("b.toml"))).is_err());
            Ok(())
        });
    }
}
