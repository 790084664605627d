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
    /// Where the hub keeps its records: `sled` (embedded, the default) or `cluster`
    /// (PostgreSQL, `[cluster]`, docs/scaling.md).
    pub storage: StorageKind,
    /// The cluster storage (used with `storage = "cluster"`).
    pub cluster: ClusterSettings,
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
    /// Bearer token that opens every admin route (`/api/v1/admin/*`): the operator's
    /// break-glass. Back-office users reach the routes their roles allow without it (their API
    /// token or their signed-in session, `docs/backoffice.md`).
    pub admin_token: Option<secrecy::SecretString>,
    /// The address shoppers reach the hub at, for links the payment provider sends them back to
    /// (e.g. `https://shop.example.com`). Unset: `http://` and the listen address.
    pub public_url: Option<String>,
    pub channels: ChannelSettings,
    pub payments: PaymentSettings,
    pub checkout: CheckoutSettings,
    pub oms: OmsSettings,
    pub outbox: OutboxSettings,
    pub email: crate::fulfilment::email::EmailSettings,
    pub edge: EdgeSettings,
    /// The ERP importer: signed pushes, the price list sold, the scheduled pull.
    pub import: ImportSettings,
    /// Back-office users, promotions and coupons.
    pub backoffice: crate::backoffice::BackofficeSettings,
    /// Account linking (OAuth 2.0): the client apps and token lifetimes (`docs/voice.md`).
    pub oauth: crate::oauth::OAuthSettings,
    /// Marketing automation: abandoned basket, back in stock, win-back, and their rules.
    pub automation: crate::automation::AutomationSettings,
    /// The voice-assistant skill endpoint (`POST /voice/alexa`, docs/voice.md).
    pub voice: channels::voice::VoiceSettings,
    /// Operations: a separate `/metrics` listener, the ops page's live feed and sign-ins
    /// (`docs/operations.md`).
    pub ops: OpsSettings,
}

/// Which storage the hub runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// sled in `data_dir`: one process, no server.
    #[default]
    Sled,
    /// PostgreSQL shared by several hub nodes (`[cluster]`).
    Cluster,
}

/// The cluster storage (`[cluster]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// PostgreSQL's URL, e.g. `postgres://omnihub@db.internal:5432/omnihub` (a password in it
    /// is a secret: set it from the environment, `OMNIHUB_HUB_CLUSTER__POSTGRES_URL`).
    pub postgres_url: secrecy::SecretString,
    /// Most connections this node opens to PostgreSQL.
    pub pool_size: u32,
    /// This node's name among the hub nodes (the owner of the shard leases it holds); unique
    /// per node.
    pub node_id: String,
    /// Where the other nodes reach this one to forward requests, e.g. `http://10.0.0.7:8080`.
    /// Unset: `http://` and the bound listen address (fine when that is not `0.0.0.0`).
    pub advertised_address: Option<String>,
    /// How long a shard lease and a node's heartbeat last without renewal, e.g. `6s`. A dead
    /// node's shards move within `lease_ttl + heartbeat_every`.
    #[serde(deserialize_with = "human")]
    pub lease_ttl: Duration,
    /// How often a node heartbeats, renews its leases and rebalances, e.g. `1s`; at most half
    /// of `lease_ttl`.
    #[serde(deserialize_with = "human")]
    pub heartbeat_every: Duration,
    /// NATS with JetStream for the event stream, e.g. `nats://nats.internal:4222` (credentials
    /// in it are a secret: set it from the environment, `OMNIHUB_HUB_CLUSTER__NATS_URL`). Unset:
    /// events are read from PostgreSQL only.
    pub nats_url: Option<secrecy::SecretString>,
    /// Put before every stream and subject name (`<prefix>EVENTS`, `<prefix>events.<kind>`), so
    /// deployments can share a NATS server: ASCII letters, digits, `_` and `-`.
    pub stream_prefix: String,
    /// The secret hub nodes authenticate their calls to each other with (the hub's own work on
    /// an actor another node owns: payment webhooks, sign-in's basket merge, the sweeper): the
    /// same on every node, long and random; set it from the environment,
    /// `OMNIHUB_HUB_CLUSTER__SECRET`. Unset: such calls are refused (`503`).
    pub secret: Option<secrecy::SecretString>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            postgres_url: secrecy::SecretString::from("postgres://omnihub@127.0.0.1:5432/omnihub"),
            pool_size: 16,
            node_id: "hub-1".into(),
            advertised_address: None,
            lease_ttl: Duration::from_secs(6),
            heartbeat_every: Duration::from_secs(1),
            nats_url: None,
            stream_prefix: "omnihub_".into(),
            secret: None,
        }
    }
}

impl ClusterSettings {
    /// Whether the settings can work (checked at start-up with `storage = "cluster"`).
    pub fn check(&self) -> Result<(), String> {
        if self.pool_size < 2 {
            return Err("pool_size must be at least 2".into());
        }
        if self.node_id.trim().is_empty() {
            return Err("node_id must name this node".into());
        }
        crate::storage::jetstream::Names::new(&self.stream_prefix)?;
        let listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        self.ownership(listen).check().map_err(|e| e.to_string())
    }

    /// How this node takes part in shard ownership, once it listens on `bound`.
    pub fn ownership(&self, bound: SocketAddr) -> crate::cluster::ownership::OwnershipSettings {
        crate::cluster::ownership::OwnershipSettings {
            node_id: self.node_id.clone(),
            address: self
                .advertised_address
                .clone()
                .unwrap_or_else(|| format!("http://{bound}")),
            lease_ttl: self.lease_ttl,
            heartbeat_every: self.heartbeat_every,
        }
    }
}

/// Operations monitoring (`[ops]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsSettings {
    /// Serve `/metrics` (with `/healthz` and `/readyz`) on this address instead of the main
    /// listener, e.g. `127.0.0.1:9187` (port 0 picks a free port). Unset: `/metrics` is on the
    /// main listener.
    pub metrics_address: Option<SocketAddr>,
    /// How often the ops page's live feed takes a snapshot (while anyone watches), e.g. `1s`.
    #[serde(deserialize_with = "human")]
    pub live_every: Duration,
    /// How long an ops page sign-in lasts, e.g. `12h`.
    #[serde(deserialize_with = "human")]
    pub session_for: Duration,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            metrics_address: None,
            live_every: Duration::from_secs(1),
            session_for: Duration::from_secs(12 * 3600),
        }
    }
}

/// The stores' edge nodes and how the hub syncs with them (`docs/edge-sync.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSettings {
    /// The nodes that may connect, one per store (a rebuilt node is a new entry with a new
    /// replica id; the old one stays listed until it is retired).
    pub nodes: Vec<EdgeNodeSettings>,
    /// How often the hub sends a heartbeat on each node's connection, e.g. `5s`.
    #[serde(deserialize_with = "human")]
    pub heartbeat_every: Duration,
    /// A connection silent this long is closed (`IDLE`), e.g. `15s`.
    #[serde(deserialize_with = "human")]
    pub idle_timeout: Duration,
    /// A node clock further than this from the hub's is shown to the operator, e.g. `5m`.
    #[serde(deserialize_with = "human")]
    pub max_clock_skew: Duration,
    /// Coupon escrow: the redemption rights of a limited coupon the hub keeps topped up at each
    /// connected node (`docs/edge-sync.md`, "Coupons at the till").
    pub coupon_grant_per_node: u64,
    /// … but never more, per grant, than this share of what the hub still holds (percent).
    pub coupon_grant_percent: u8,
    /// How many customer lookups a store's till may make (`docs/pos.md`, "Customers at the
    /// till"): `[edge.customer_lookups]`.
    pub customer_lookups: crate::edge::customers::LookupLimits,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            nodes: Vec::new(),
            heartbeat_every: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            max_clock_skew: Duration::from_secs(300),
            coupon_grant_per_node: 5,
            coupon_grant_percent: 20,
            customer_lookups: crate::edge::customers::LookupLimits::default(),
        }
    }
}

/// One edge node as the hub knows it. The node's plain credential is only in the node's own
/// configuration; the hub keeps its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeNodeSettings {
    /// The node's replica id, e.g. `berlin` (after a rebuild `berlin-2`); never reused.
    pub replica: String,
    /// The location the node owns, e.g. `store-berlin`.
    pub location: String,
    /// A name for people, e.g. `Berlin Mitte`.
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the node's credential (`printf %s "$CREDENTIAL" | sha256sum`).
    pub credential_sha256: String,
}

impl EdgeSettings {
    /// Refuses ids, locations and hashes that cannot work, a replica id listed twice, and a
    /// credential hash shared by two nodes (a credential must prove exactly one replica).
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut credentials: std::collections::BTreeMap<Vec<u8>, &str> =
            std::collections::BTreeMap::new();
        for node in &self.nodes {
            protocol::replication::ReplicaId::node(&node.replica).map_err(|e| e.to_string())?;
            if !seen.insert(node.replica.as_str()) {
                return Err(format!("node '{}' is listed twice", node.replica));
            }
            let location = node.location.trim();
            if location.is_empty() || location == "online" || location != node.location {
                return Err(format!(
                    "node '{}': location '{}' must name a store (not empty, not 'online')",
                    node.replica, node.location
                ));
            }
            let hash = hex::decode(&node.credential_sha256)
                .ok()
                .filter(|h| h.len() == 32)
                .ok_or_else(|| {
                    format!(
                        "node '{}': credential_sha256 must be 64 hex digits (the SHA-256 of the \
                         node's credential)",
                        node.replica
                    )
                })?;
            // Compared as bytes, so the same hash in upper and lower case is caught too.
            if let Some(first) = credentials.insert(hash, node.replica.as_str()) {
                return Err(format!(
                    "nodes '{first}' and '{}' have the same credential_sha256: give each node its \
                     own credential",
                    node.replica
                ));
            }
        }
        if self.heartbeat_every.is_zero() || self.idle_timeout <= self.heartbeat_every {
            return Err("heartbeat_every must be more than 0 and less than idle_timeout".into());
        }
        self.customer_lookups.check()?;
        Ok(())
    }
}

/// The ERP importer (`docs/erp-feeds.md`): pushes to `POST /api/v1/import/{feed}` and the
/// scheduled pull.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportSettings {
    /// The secret the ERP signs pushes with (`X-Omnihub-Signature`, HMAC-SHA256). Unset, signed
    /// pushes are refused; the admin token still works. Never logged.
    pub push_secret: Option<secrecy::SecretString>,
    /// A push signed further than this from now is refused (replays), e.g. `5m`.
    #[serde(deserialize_with = "human")]
    pub signature_tolerance: Duration,
    /// The price list the storefront sells at: its entries in the catalog's currency set the
    /// shelf prices; other lists and currencies are stored only.
    pub price_list: String,
    /// Import run reports kept (the newest).
    pub keep_runs: usize,
    /// Price validity windows are checked at least this often (each window's start and end is
    /// also applied at its time), e.g. `1m`.
    #[serde(deserialize_with = "human")]
    pub price_check_every: Duration,
    /// The scheduled pull; unset, the hub only takes pushes.
    pub pull: Option<PullSettings>,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            push_secret: None,
            signature_tolerance: Duration::from_secs(300),
            price_list: "retail".into(),
            keep_runs: 200,
            price_check_every: Duration::from_secs(60),
            pull: None,
        }
    }
}

/// Pulling the ERP's feeds by cursor.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullSettings {
    /// The ERP's feed API (the simulator, `omnihub sim erp`, by default).
    pub base_url: String,
    /// Time between pull cycles, e.g. `1m`.
    #[serde(deserialize_with = "human")]
    pub every: Duration,
    /// Rows per page asked for (1 to 10,000). Each page of products or prices publishes one
    /// catalog snapshot, whose cost grows with the catalog: big pages for big catalogs.
    pub page_size: u32,
    /// The feeds pulled; a cycle always pulls them as products, prices, stock, promotions,
    /// coupons.
    pub feeds: Vec<protocol::feed::FeedKind>,
    /// Whole-request timeout of one page, e.g. `30s`.
    #[serde(deserialize_with = "human")]
    pub timeout: Duration,
    /// Longest wait after failed cycles (the wait doubles from `every`), e.g. `5m`.
    #[serde(deserialize_with = "human")]
    pub max_backoff: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            base_url: "http://127.0.0.1:8202".into(),
            every: Duration::from_secs(60),
            page_size: 5000,
            feeds: protocol::feed::FeedKind::ALL.to_vec(),
            timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// The order management system the hub exports orders to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OmsSettings {
    /// Base URL of its API (the simulator, `omnihub sim oms`, by default).
    pub base_url: String,
    /// Bearer key for its API. Never logged.
    pub api_key: secrecy::SecretString,
    /// Signing secret of its status webhooks (`/webhooks/oms`). Never logged.
    pub webhook_secret: secrecy::SecretString,
    /// Signing secret of the carrier's tracking webhooks (`/webhooks/logistics`).
    pub logistics_webhook_secret: secrecy::SecretString,
    #[serde(deserialize_with = "human")]
    pub timeout: Duration,
    #[serde(deserialize_with = "human")]
    pub connect_timeout: Duration,
}

impl Default for OmsSettings {
    fn default() -> Self {
        OmsSettings {
            base_url: "http://127.0.0.1:8203".into(),
            api_key: secrecy::SecretString::from("oms_test_key"),
            webhook_secret: secrecy::SecretString::from("whsec_oms_demo"),
            logistics_webhook_secret: secrecy::SecretString::from("whsec_logistics_demo"),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// How the outbox delivers to each destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// Attempts before a message becomes a dead letter (an operator can retry it).
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt (with jitter) up to `max_backoff`.
    #[serde(deserialize_with = "human")]
    pub base_backoff: Duration,
    #[serde(deserialize_with = "human")]
    pub max_backoff: Duration,
    /// Consecutive failures that open a destination's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before one probe.
    #[serde(deserialize_with = "human")]
    pub breaker_cooldown: Duration,
    /// Deliveries in flight per destination.
    pub concurrency: usize,
    /// How often a worker looks for due messages when nothing woke it.
    #[serde(deserialize_with = "human")]
    pub poll_every: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        let p = crate::outbox::DeliveryPolicy::default();
        OutboxSettings {
            max_attempts: p.max_attempts,
            base_backoff: p.base_backoff,
            max_backoff: p.max_backoff,
            breaker_threshold: p.breaker_threshold,
            breaker_cooldown: p.breaker_cooldown,
            concurrency: p.concurrency,
            poll_every: p.poll_every,
        }
    }
}

impl OutboxSettings {
    pub fn policy(&self) -> crate::outbox::DeliveryPolicy {
        crate::outbox::DeliveryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_backoff: self.base_backoff,
            max_backoff: self.max_backoff,
            breaker_threshold: self.breaker_threshold.max(1),
            breaker_cooldown: self.breaker_cooldown,
            concurrency: self.concurrency.max(1),
            batch: 512,
            poll_every: self.poll_every.max(Duration::from_millis(10)),
        }
    }
}

/// The payment provider (Stripe's API; the simulator by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// Base URL of the API, e.g. `https://api.stripe.com` or the simulator.
    pub base_url: String,
    /// The secret API key (`sk_test_…`). Never logged.
    pub secret_key: secrecy::SecretString,
    /// The webhook endpoint's signing secret (`whsec_…`). Never logged.
    pub webhook_secret: secrecy::SecretString,
    /// Whole-request timeout of one call, e.g. `10s`.
    #[serde(deserialize_with = "human")]
    pub timeout: Duration,
    #[serde(deserialize_with = "human")]
    pub connect_timeout: Duration,
    /// Retries of a failed call (network, timeout, 5xx), with the same idempotency key.
    pub retries: u32,
    /// Webhooks signed further than this from now are refused, e.g. `300s`.
    #[serde(deserialize_with = "human")]
    pub webhook_tolerance: Duration,
}

/// The demo's well-known secrets: fine against the simulator on this machine, never elsewhere.
pub const DEMO_SECRET_KEY: &str = "sk_test_omnihub";
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_omnihub_demo";

impl PaymentSettings {
    /// Refuses the public demo secrets for a provider that is not on this machine: with them,
    /// anyone could sign a "paid" webhook.
    pub fn check(&self) -> Result<(), String> {
        use secrecy::ExposeSecret;
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| format!("base_url '{}' is not a URL: {e}", self.base_url))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        let demo = self.secret_key.expose_secret() == DEMO_SECRET_KEY
            || self.webhook_secret.expose_secret() == DEMO_WEBHOOK_SECRET;
        if demo && !loopback {
            return Err(format!(
                "the provider at {} is not on this machine, but secret_key or webhook_secret is \
                 still the public demo value: set OMNIHUB_HUB_PAYMENTS__SECRET_KEY and \
                 OMNIHUB_HUB_PAYMENTS__WEBHOOK_SECRET",
                self.base_url
            ));
        }
        Ok(())
    }
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            base_url: "http://127.0.0.1:8201".into(),
            secret_key: secrecy::SecretString::from(DEMO_SECRET_KEY),
            webhook_secret: secrecy::SecretString::from(DEMO_WEBHOOK_SECRET),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            webhook_tolerance: Duration::from_secs(300),
        }
    }
}

/// Checkout: holds, the sweeper, and the pricing configuration (markets, tax, shipping).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutSettings {
    /// How long stock stays held for a checkout waiting for payment, e.g. `15m`.
    #[serde(deserialize_with = "human")]
    pub hold_for: Duration,
    /// How often the hub looks for expired holds and unconfirmed payments, e.g. `1s`.
    #[serde(deserialize_with = "human")]
    pub sweep_every: Duration,
    /// A pending payment with no webhook after this long is looked up at the provider.
    #[serde(deserialize_with = "human")]
    pub reconcile_after: Duration,
    /// When an expired hold's session cannot be expired because the provider is down, the
    /// stock is given back anyway after this grace (a late payment then needs stock again).
    #[serde(deserialize_with = "human")]
    pub release_after_provider_down: Duration,
    /// Checkout attempts allowed per basket per 10 minutes.
    pub attempts_per_basket: u32,
    /// Countries sold to, with their tax rates per tax class and whether prices include tax.
    pub markets: Vec<protocol::checkout::Market>,
    /// Shipping zones with their methods and rates.
    pub zones: Vec<protocol::checkout::ShippingZone>,
}

impl CheckoutSettings {
    /// The pricing configuration (markets and zones) as `protocol` uses it.
    pub fn pricing(&self) -> protocol::checkout::CheckoutConfig {
        protocol::checkout::CheckoutConfig {
            markets: self.markets.clone(),
            zones: self.zones.clone(),
        }
    }
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        CheckoutSettings {
            hold_for: Duration::from_secs(15 * 60),
            sweep_every: Duration::from_secs(1),
            reconcile_after: Duration::from_secs(60),
            release_after_provider_down: Duration::from_secs(120),
            attempts_per_basket: 10,
            markets: protocol::checkout::CheckoutConfig::default().markets,
            zones: protocol::checkout::CheckoutConfig::default().zones,
        }
    }
}

pub(crate) fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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
            storage: StorageKind::Sled,
            cluster: ClusterSettings::default(),
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
            admin_token: None,
            public_url: None,
            channels: ChannelSettings::default(),
            payments: PaymentSettings::default(),
            checkout: CheckoutSettings::default(),
            oms: OmsSettings::default(),
            outbox: OutboxSettings::default(),
            email: crate::fulfilment::email::EmailSettings::default(),
            edge: EdgeSettings::default(),
            import: ImportSettings::default(),
            backoffice: crate::backoffice::BackofficeSettings::default(),
            oauth: crate::oauth::OAuthSettings::default(),
            automation: crate::automation::AutomationSettings::default(),
            voice: channels::voice::VoiceSettings::default(),
            ops: OpsSettings::default(),
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
    fn the_storage_is_chosen_and_the_cluster_section_is_typed() {
        use secrecy::ExposeSecret;
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hub.toml",
                "storage = \"cluster\"\n[cluster]\npostgres_url = \"postgres://h@db/x\"\npool_size = 8\nnode_id = \"hub-2\"\nadvertised_address = \"http://10.0.0.2:8080\"\nlease_ttl = \"4s\"\nheartbeat_every = \"500ms\"\n",
            )?;
            let s = HubSettings::load(Some(Path::new("hub.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.storage, StorageKind::Cluster);
            assert_eq!(s.cluster.postgres_url.expose_secret(), "postgres://h@db/x");
            assert_eq!(
                (s.cluster.pool_size, s.cluster.node_id.as_str()),
                (8, "hub-2")
            );
            assert_eq!(s.cluster.check(), Ok(()));
            let own = s.cluster.ownership(SocketAddr::from(([127, 0, 0, 1], 0)));
            assert_eq!(own.address, "http://10.0.0.2:8080");
            assert_eq!(
                (own.lease_ttl, own.heartbeat_every),
                (Duration::from_secs(4), Duration::from_millis(500))
            );
            jail.create_file(
                "slow.toml",
                "[cluster]\nlease_ttl = \"2s\"\nheartbeat_every = \"1500ms\"\n",
            )?;
            let slow =
                HubSettings::load(Some(Path::new("slow.toml"))).map_err(|e| e.to_string())?;
            assert!(slow
                .cluster
                .check()
                .is_err_and(|e| e.contains("half of lease_ttl")));
            assert!(s.cluster.nats_url.is_none());
            jail.create_file(
                "nats.toml",
                "[cluster]\nnats_url = \"nats://u:p@mq:4222\"\nstream_prefix = \"shop-2_\"\n",
            )?;
            let n = HubSettings::load(Some(Path::new("nats.toml"))).map_err(|e| e.to_string())?;
            let url = n.cluster.nats_url.as_ref().map(|u| u.expose_secret());
            assert_eq!(url, Some("nats://u:p@mq:4222"));
            assert!(
                !format!("{:?}", n.cluster).contains("u:p@"),
                "the URL is never shown"
            );
            assert_eq!(n.cluster.stream_prefix, "shop-2_");
            assert_eq!(n.cluster.check(), Ok(()));
            jail.create_file("prefix.toml", "[cluster]\nstream_prefix = \"a.b\"\n")?;
            let dotted = HubSettings::load(Some(Path::new("prefix.toml")));
            assert!(dotted.is_ok_and(|s| s.cluster.check().is_err()));
            jail.create_file("nats_typo.toml", "[cluster]\nnats = \"x\"\n")?;
            assert!(HubSettings::load(Some(Path::new("nats_typo.toml"))).is_err());
            jail.create_file("bad.toml", "storage = \"etcd\"\n")?;
            assert!(HubSettings::load(Some(Path::new("bad.toml"))).is_err());
            jail.create_file("typo.toml", "[cluster]\npostgres = \"x\"\n")?;
            let typo = HubSettings::load(Some(Path::new("typo.toml")));
            assert!(typo.is_err_and(|e| e.to_string().contains("postgres")));
            Ok(())
        });
        assert_eq!(HubSettings::default().storage, StorageKind::Sled);
        let one = ClusterSettings {
            pool_size: 1,
            ..ClusterSettings::default()
        };
        assert!(one.check().is_err());
    }

    #[test]
    fn the_example_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.toml");
        let s = HubSettings::load(Some(&path)).expect("deploy/hub.toml loads");
        let d = HubSettings::default();
        assert_eq!(s.checkout.hold_for, d.checkout.hold_for);
        assert_eq!(s.payments.base_url, d.payments.base_url);
        assert_eq!(s.checkout.pricing(), d.checkout.pricing());
        assert!(s.edge.nodes.is_empty());
        assert_eq!(s.edge.heartbeat_every, d.edge.heartbeat_every);
        assert_eq!(s.edge.idle_timeout, d.edge.idle_timeout);
        assert_eq!(s.edge.max_clock_skew, d.edge.max_clock_skew);
        assert_eq!(s.edge.customer_lookups, d.edge.customer_lookups);
        assert_eq!(s.edge.check(), Ok(()));
        assert_eq!(s.import.price_list, d.import.price_list);
        assert_eq!(s.import.signature_tolerance, d.import.signature_tolerance);
        assert_eq!(s.import.keep_runs, d.import.keep_runs);
        assert_eq!(s.import.price_check_every, d.import.price_check_every);
        assert!(s.import.pull.is_none() && s.import.push_secret.is_none());
        assert_eq!(s.voice.verify_signatures, d.voice.verify_signatures);
        assert_eq!(s.voice.requests_per_minute, d.voice.requests_per_minute);
        assert!(!s.voice.development.is_set());
    }

    #[test]
    fn edge_nodes_come_from_the_file_or_the_environment() {
        let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "e.toml",
                &format!(
                    "[edge]\nidle_timeout = \"20s\"\n[[edge.nodes]]\nreplica = \"berlin\"\n\
                     location = \"store-berlin\"\nname = \"Berlin Mitte\"\n\
                     credential_sha256 = \"{hash}\"\n"
                ),
            )?;
            let s = HubSettings::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.edge.idle_timeout, Duration::from_secs(20));
            assert_eq!(s.edge.heartbeat_every, Duration::from_secs(5));
            assert_eq!(s.edge.nodes.len(), 1);
            assert_eq!(s.edge.nodes[0].name, "Berlin Mitte");
            assert_eq!(s.edge.check(), Ok(()));

            let lyon = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";
            jail.set_env(
                "OMNIHUB_HUB_EDGE__NODES",
                format!(
                    "[{{replica=\"paris\",location=\"store-paris\",credential_sha256=\"{hash}\"}}, \
                     {{replica=\"lyon\",location=\"store-lyon\",credential_sha256=\"{lyon}\"}}]"
                ),
            );
            jail.set_env("OMNIHUB_HUB_EDGE__MAX_CLOCK_SKEW", "1m");
            let s = HubSettings::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
            let replicas: Vec<&str> = s.edge.nodes.iter().map(|n| n.replica.as_str()).collect();
            assert_eq!(replicas, vec!["paris", "lyon"]);
            assert_eq!(s.edge.max_clock_skew, Duration::from_secs(60));
            assert_eq!(s.edge.check(), Ok(()));

            jail.set_env(
                "OMNIHUB_HUB_EDGE__NODES",
                "[{replica=\"paris\",location=\"store-paris\",credential_sha256=\"nothex\"}]",
            );
            let s = HubSettings::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
            assert!(s.edge.check().is_err_and(|e| e.contains("64 hex digits")));
            Ok(())
        });
    }

    #[test]
    fn import_settings_come_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            let s = HubSettings::load(None).map_err(|e| e.to_string())?;
            assert!(s.import.pull.is_none() && s.import.push_secret.is_none());
            assert_eq!(s.import.price_list, "retail");
            jail.create_file(
                "i.toml",
                "[import]\nprice_list = \"outlet\"\n[import.pull]\nevery = \"15s\"\n\
                 feeds = [\"products\", \"stock\"]\n",
            )?;
            jail.set_env("OMNIHUB_HUB_IMPORT__PUSH_SECRET", "erp-secret");
            jail.set_env("OMNIHUB_HUB_IMPORT__PULL__PAGE_SIZE", "250");
            let s = HubSettings::load(Some(Path::new("i.toml"))).map_err(|e| e.to_string())?;
            let pull = s.import.pull.clone().expect("pull configured");
            assert_eq!(pull.every, Duration::from_secs(15));
            assert_eq!(pull.page_size, 250);
            assert_eq!(pull.base_url, "http://127.0.0.1:8202");
            assert_eq!(
                pull.feeds,
                vec![
                    protocol::feed::FeedKind::Products,
                    protocol::feed::FeedKind::Stock
                ]
            );
            assert_eq!(s.import.price_list, "outlet");
            use secrecy::ExposeSecret;
            assert_eq!(
                s.import.push_secret.as_ref().map(|p| p.expose_secret()),
                Some("erp-secret")
            );
            jail.create_file("bad.toml", "[import.pull]\nfeeds = [\"orders\"]\n")?;
            assert!(HubSettings::load(Some(Path::new("bad.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn two_nodes_with_one_credential_are_refused() {
        let node = |replica: &str, location: &str, hash: String| EdgeNodeSettings {
            replica: replica.into(),
            location: location.into(),
            name: String::new(),
            credential_sha256: hash,
        };
        let hash = hex::encode([0xabu8; 32]);
        let mut s = EdgeSettings {
            nodes: vec![
                node("berlin", "store-berlin", hash.clone()),
                node("paris", "store-paris", hex::encode([0xcdu8; 32])),
            ],
            ..EdgeSettings::default()
        };
        assert_eq!(s.check(), Ok(()));
        // The same hash, even spelt in upper case, proves two replicas: refused, naming both.
        s.nodes
            .push(node("hamburg", "store-hamburg", hash.to_uppercase()));
        let err = s.check().expect_err("a shared credential is refused");
        assert!(
            err.contains("'berlin'") && err.contains("'hamburg'") && err.contains("same"),
            "{err}"
        );
        // A rebuilt node at the same location still needs a credential of its own.
        s.nodes[2] = node("berlin-2", "store-berlin", hash);
        assert!(s.check().is_err());
    }

    #[test]
    fn markets_and_zones_come_from_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                r#"
[checkout]
hold_for = "5m"
[[checkout.markets]]
country = "DE"
prices_include_tax = true
tax_rates = { standard = 1900, reduced = 700 }
[[checkout.zones]]
name = "Home"
countries = ["DE"]
[[checkout.zones.methods]]
id = "bike"
name = "Bike courier"
rate = { flat = "3.50" }
delivery = "Today"
"#,
            )?;
            let s = HubSettings::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.checkout.hold_for, Duration::from_secs(300));
            let pricing = s.checkout.pricing();
            assert_eq!(pricing.countries(), vec!["DE"]);
            assert_eq!(pricing.validate(protocol::Currency::EUR), Ok(()));
            assert_eq!(pricing.zones[0].methods[0].id, "bike");
            Ok(())
        });
    }

    #[test]
    fn demo_secrets_are_refused_for_a_provider_elsewhere() {
        let mut p = PaymentSettings::default();
        assert_eq!(p.check(), Ok(()));
        p.base_url = "https://api.stripe.com".into();
        assert!(p.check().is_err_and(|e| e.contains("public demo value")));
        p.secret_key = "sk_test_real".to_string().into();
        assert!(
            p.check().is_err(),
            "the webhook secret is still the demo one"
        );
        p.webhook_secret = "whsec_real".to_string().into();
        assert_eq!(p.check(), Ok(()));
        p.base_url = "not a url".into();
        assert!(p.check().is_err());
    }

    #[test]
    fn ops_settings_come_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            let s = HubSettings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.ops.metrics_address, None);
            assert_eq!(s.ops.live_every, Duration::from_secs(1));
            jail.create_file(
                "o.toml",
                "[ops]\nmetrics_address = \"127.0.0.1:9187\"\nlive_every = \"2s\"\n",
            )?;
            let s = HubSettings::load(Some(Path::new("o.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.ops.metrics_address, "127.0.0.1:9187".parse().ok());
            assert_eq!(s.ops.live_every, Duration::from_secs(2));
            assert_eq!(s.ops.session_for, Duration::from_secs(12 * 3600));
            jail.create_file("bad.toml", "[ops]\nmetrics_address = \"not an address\"\n")?;
            assert!(HubSettings::load(Some(Path::new("bad.toml"))).is_err());
            jail.create_file("typo.toml", "[ops]\nmetrics_adress = \"127.0.0.1:9187\"\n")?;
            assert!(HubSettings::load(Some(Path::new("typo.toml"))).is_err());
            jail.set_env("OMNIHUB_HUB_OPS__METRICS_ADDRESS", "0.0.0.0:9300");
            let s = HubSettings::load(Some(Path::new("o.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.ops.metrics_address, "0.0.0.0:9300".parse().ok());
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
