//! The store's advertising boards (`docs/boards.md`): full-screen pages at `/boards/{id}` fed
//! over a WebSocket by this node.
//!
//! - The playlist comes from the hub (the single writer) over the sync session
//!   (`Frame::BoardsHave` / `Frame::Boards`) and is kept in the node's own sled tree `boards`,
//!   so boards play it with the hub unreachable and after a restart.
//! - The feed ([`feed`]) is the playlist with the store's live prices, stock and the offers the
//!   promotion engine really applies (the till's pricing), recomputed whenever a local change
//!   lands (a sale, an adjustment, a hub command) and every second; boards get it when it
//!   differs.
//! - Presence: a shopper who identifies at a board (a loyalty QR scanned at a kiosk, or a beacon
//!   event posted to the node) is looked up on the hub (consent and segments; cached for
//!   offline use); with consent and content for one of their segments the board shows that
//!   content for `presence_for`, with nothing about the shopper on screen; otherwise the default.
//!   The item the hub chose for a consenting shopper (its `board_item` slot, `item` in the
//!   answer) is cached with the answer and shown first, before the segment's (or the default)
//!   items, for the same time.
//! - Boards authenticate with their own token (SHA-256 in the settings), send heartbeats (the
//!   node keeps last-seen per board: `GET /api/v1/boards`), and every impression and
//!   interaction is a DXP event (channel `board`) queued in the sync outbox.

pub mod config;
pub(crate) mod feed;
pub(crate) mod http;

pub use config::{hash_board_token, BoardConfig, BoardSettings};

use crate::store::{now_ms, Store};
use protocol::board::{BoardAudience, BoardItem, BoardPlaylist, BoardPublication};
use protocol::codec::{decode, encode};
use protocol::replication::sync::Item;
use protocol::{AnonymousId, Channel, CustomerId, Event, EventKind, Subject};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const PLAYLIST_KEY: &[u8] = b"playlist";
const AUDIENCE: u8 = b'a';
/// How often the feed is recomputed even when nothing local changed (catalog versions,
/// promotions starting, the playlist from the hub).
const REFRESH: Duration = Duration::from_secs(1);
/// How long the hub may take to answer an audience lookup before the cache is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The boards' tree of the node's database.
fn tree(store: &Store) -> Result<sled::Tree, crate::StoreError> {
    store.db().open_tree("boards")
}

/// The board playlist the node holds (version 0: none yet).
pub fn stored_playlist(store: &Store) -> Result<BoardPublication, crate::StoreError> {
    match tree(store)?.get(PLAYLIST_KEY)? {
        Some(bytes) => Ok(decode(&bytes)?),
        None => Ok(BoardPublication::default()),
    }
}

/// Keeps the hub's playlist, durably. The sync session is its only writer in a running node;
/// tests and tools seed a node's playlist with it.
pub fn store_playlist(
    store: &Store,
    version: u64,
    playlist: BoardPlaylist,
) -> Result<(), crate::StoreError> {
    let t = tree(store)?;
    t.insert(
        PLAYLIST_KEY,
        encode(&BoardPublication { version, playlist })?,
    )?;
    t.flush()?;
    tracing::info!(version, "board playlist from the hub stored");
    Ok(())
}

/// What a board is doing, as ops see it.
#[derive(Debug, Clone, Default)]
struct Status {
    connections: u32,
    last_seen_ms: Option<u64>,
}

/// A consenting shopper's segment and item shown on a board until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presence {
    /// The playlist's segment shown (`None`: the default items).
    pub segment: Option<String>,
    /// The item chosen for the shopper by the hub, as boards show it (JSON of a feed item),
    /// shown first.
    pub item: Option<(String, String)>,
    pub until_ms: u64,
    customer: Option<CustomerId>,
}

/// What the hub (or the cache) says about a shopper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    Known {
        personalise: bool,
        segments: Vec<String>,
        /// The shopper, told by the hub only when they consent.
        customer: Option<CustomerId>,
        /// The item the hub chose for them.
        item: Option<BoardItem>,
        cached: bool,
    },
    /// The hub could not be asked and nothing fresh is cached.
    Unknown,
}

/// The outcome of a shopper identifying at a board (nothing about who they are).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Identified {
    pub personalised: bool,
    pub segment: Option<String>,
    /// The id of the item chosen for the shopper, when shown.
    pub item: Option<String>,
    pub until_ms: Option<u64>,
    /// `hub`, `cache` or `unknown`.
    pub source: &'static str,
}

/// How the node asks the hub about shoppers.
struct HubLink {
    base: String,
    credential: SecretString,
    client: reqwest::Client,
}

/// The boards of this node.
pub struct Boards {
    pub(crate) settings: BoardSettings,
    hashes: Vec<(String, [u8; 32])>,
    /// Declared before `store`, so it is dropped first: the node's `stop` returns once nothing
    /// holds the store, and by then no tree of its database may be left open either.
    tree: sled::Tree,
    pub(crate) store: Arc<Store>,
    pub(crate) feed: watch::Sender<Arc<feed::Feed>>,
    presence: Mutex<BTreeMap<String, Presence>>,
    pub(crate) presence_changed: watch::Sender<u64>,
    status: Mutex<BTreeMap<String, Status>>,
    hub: Option<HubLink>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Boards {
    /// Loads the playlist the node holds and starts the feed task (until `shutdown`).
    pub(crate) fn start(
        store: Arc<Store>,
        settings: &crate::EdgeSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Boards>, crate::EdgeError> {
        let b = &settings.boards;
        let hashes = b
            .list
            .iter()
            .filter_map(|c| Some((c.id.clone(), config::token_hash_of(&c.token_sha256)?)))
            .collect();
        let hub = match &settings.credential {
            Some(credential) => Some(HubLink {
                base: settings.hub_http_base(),
                credential: credential.clone(),
                client: reqwest::Client::builder()
                    .timeout(LOOKUP_TIMEOUT)
                    .build()
                    .map_err(|e| crate::EdgeError::Task(format!("HTTP client: {e}")))?,
            }),
            None => None,
        };
        let tree = tree(&store)?;
        let (feed, _) = watch::channel(Arc::new(feed::Feed::default()));
        let (presence_changed, _) = watch::channel(0);
        let boards = Arc::new(Boards {
            settings: b.clone(),
            hashes,
            tree,
            store,
            feed,
            presence: Mutex::new(BTreeMap::new()),
            presence_changed,
            status: Mutex::new(BTreeMap::new()),
            hub,
            shutdown,
        });
        tokio::spawn(feed::run(boards.clone()));
        Ok(boards)
    }

    /// The board's settings, if configured.
    pub(crate) fn board(&self, id: &str) -> Option<&BoardConfig> {
        self.settings.list.iter().find(|b| b.id == id)
    }

    /// Whether `token` is board `id`'s (constant time, every configured hash compared).
    pub(crate) fn authenticate(&self, id: &str, token: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let presented: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = false;
        for (board, hash) in &self.hashes {
            let same = bool::from(presented.ct_eq(hash));
            found |= same && board == id;
        }
        found
    }

    /// A board connected or sent anything: it is alive now.
    pub(crate) fn seen(&self, id: &str, connection: i32) {
        if let Ok(mut status) = self.status.lock() {
            let s = status.entry(id.to_string()).or_default();
            s.last_seen_ms = Some(now_ms());
            s.connections = s.connections.saturating_add_signed(connection);
        }
    }

    /// The presence shown on a board now, if any.
    pub(crate) fn presence_of(&self, id: &str) -> Option<Presence> {
        let now = now_ms();
        self.presence
            .lock()
            .ok()?
            .get(id)
            .filter(|p| p.until_ms > now)
            .cloned()
    }

    /// The anonymous subject of a board's events without a consenting shopper: stable per
    /// store and board, so analytics can count a board's audience.
    fn anonymous(&self, board: &str) -> Subject {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(
            format!("board:{}:{board}", self.store.identity().location.0).as_bytes(),
        );
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Subject::Anonymous(AnonymousId(ulid::Ulid(u128::from_be_bytes(bytes))))
    }

    /// Records board events, durably, in the outbox to the hub.
    pub(crate) async fn record(
        &self,
        board: &str,
        events: Vec<(EventKind, Option<CustomerId>, BTreeMap<String, String>)>,
    ) -> Result<usize, crate::StoreError> {
        let store = self.store.clone();
        let at = store.corrected_now()?;
        let location = store.identity().location.0.clone();
        let items: Vec<Item> = events
            .into_iter()
            .map(|(kind, customer, payload)| {
                let subject = customer.map_or_else(|| self.anonymous(board), Subject::Customer);
                let mut e = Event::new(at, subject, Channel::Board, kind)
                    .with("board", board)
                    .with("store", &location);
                e.payload.extend(payload);
                Item::Event(e)
            })
            .collect();
        let n = items.len();
        tokio::task::spawn_blocking(move || store.queue_records(items))
            .await
            .map_err(|e| crate::StoreError::Corrupt(format!("event task: {e}")))??;
        Ok(n)
    }

    /// Asks the hub about a shopper (caching the answer), or uses a fresh cached answer.
    /// `code` is a normalised shopper code ([`protocol::board::shopper_code`]).
    pub(crate) async fn audience(&self, code: &str) -> Audience {
        if let Some(link) = &self.hub {
            match self.ask_hub(link, code).await {
                Ok(answer) => {
                    let cached = BoardAudience {
                        consent: answer.personalise,
                        segments: answer.segments.clone(),
                        updated_ms: now_ms(),
                        customer: answer.customer,
                        item: answer.item.clone(),
                    };
                    if let Err(e) = self.cache(code, &cached) {
                        tracing::warn!(error = %e, "a shopper's audience could not be cached");
                    }
                    return Audience::Known {
                        personalise: answer.personalise,
                        segments: answer.segments,
                        customer: answer.customer,
                        item: answer.item,
                        cached: false,
                    };
                }
                Err(e) => {
                    tracing::info!(error = %e, "the hub could not be asked about a shopper: using the cache")
                }
            }
        }
        let key = audience_key(code);
        let cached: Option<BoardAudience> = self
            .tree
            .get(&key)
            .ok()
            .flatten()
            .and_then(|v| decode(&v).ok());
        let max_age = self.settings.audience_cache_for.as_millis() as u64;
        match cached {
            Some(a) if now_ms().saturating_sub(a.updated_ms) <= max_age => Audience::Known {
                personalise: a.consent,
                segments: a.segments,
                customer: a.customer,
                item: a.item,
                cached: true,
            },
            _ => Audience::Unknown,
        }
    }

    async fn ask_hub(&self, link: &HubLink, code: &str) -> Result<HubAnswer, String> {
        let url = format!("{}/api/v1/edge/boards/audience/{code}", link.base);
        let response = link
            .client
            .get(url)
            .bearer_auth(link.credential.expose_secret())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the hub answered {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    fn cache(&self, code: &str, a: &BoardAudience) -> Result<(), crate::StoreError> {
        self.tree.insert(audience_key(code), encode(a)?)?;
        Ok(())
    }

    /// A shopper identified at a board: for `presence_for`, if they consent, the item the hub
    /// chose for them first and the playlist's content for one of their segments (else the
    /// default items); without consent, the default. Recorded as an interaction (under the
    /// shopper only when they consent).
    pub(crate) async fn identify(
        &self,
        board: &str,
        code: &str,
        action: &str,
    ) -> Result<Identified, crate::StoreError> {
        let audience = self.audience(code).await;
        let (personalise, segments, customer, item, source) = match audience {
            Audience::Known {
                personalise,
                segments,
                customer,
                item,
                cached,
            } => (
                personalise,
                segments,
                customer,
                item,
                if cached { "cache" } else { "hub" },
            ),
            Audience::Unknown => (false, Vec::new(), None, None, "unknown"),
        };
        let playlist = stored_playlist(&self.store)?;
        let segment = personalise
            .then(|| playlist.playlist.items_for(&segments).0.map(str::to_string))
            .flatten();
        let item = match item.filter(|_| personalise) {
            Some(item) => {
                self.personal_item(item, playlist.playlist.dwell_secs)
                    .await?
            }
            None => None,
        };
        let until_ms = (segment.is_some() || item.is_some())
            .then(|| now_ms() + self.settings.presence_for.as_millis() as u64);
        let item_id = item.as_ref().map(|(id, _)| id.clone());
        if let Ok(mut presence) = self.presence.lock() {
            match until_ms {
                Some(until_ms) => {
                    presence.insert(
                        board.to_string(),
                        Presence {
                            segment: segment.clone(),
                            item,
                            until_ms,
                            customer,
                        },
                    );
                }
                None => {
                    presence.remove(board);
                }
            }
        }
        self.presence_changed.send_modify(|n| *n += 1);
        let personalised = until_ms.is_some();
        let mut payload = BTreeMap::new();
        payload.insert("action".to_string(), action.to_string());
        payload.insert("personalised".to_string(), personalised.to_string());
        if let Some(s) = &segment {
            payload.insert("segment".to_string(), s.clone());
        }
        if let Some(i) = &item_id {
            payload.insert("item".to_string(), i.clone());
        }
        let who = customer.filter(|_| personalise);
        self.record(board, vec![(EventKind::BoardInteraction, who, payload)])
            .await?;
        Ok(Identified {
            personalised,
            segment,
            item: item_id,
            until_ms,
            source,
        })
    }

    /// The hub's item for a shopper as boards show it (its id and feed-item JSON, with the
    /// store's live price and stock); `None` when it breaks the boards' rules (the hub checks
    /// them too) or names a product the store cannot price now.
    async fn personal_item(
        &self,
        item: BoardItem,
        dwell_secs: u32,
    ) -> Result<Option<(String, String)>, crate::StoreError> {
        let check = BoardPlaylist {
            items: vec![item.clone()],
            ..BoardPlaylist::default()
        };
        if !check.problems().is_empty() {
            tracing::warn!(item = %item.id, "the hub's item for a shopper breaks the boards' rules; not shown");
            return Ok(None);
        }
        let dwell = if dwell_secs > 0 {
            dwell_secs
        } else {
            self.settings.dwell_secs
        };
        let store = self.store.clone();
        let settings = self.settings.clone();
        let shown =
            tokio::task::spawn_blocking(move || feed::single(&store, &settings, &item, dwell))
                .await
                .map_err(|e| crate::StoreError::Corrupt(format!("board item task: {e}")))??;
        Ok(shown)
    }

    /// The shopper behind a board's current presence, for its events (only a consenting one
    /// is ever kept).
    pub(crate) fn present_customer(&self, board: &str) -> Option<CustomerId> {
        self.presence_of(board).and_then(|p| p.customer)
    }

    /// Whether any board is configured.
    pub(crate) fn configured(&self) -> bool {
        !self.settings.list.is_empty()
    }

    /// Every configured board as the hub's operators see it (`Frame::BoardsReport`).
    pub(crate) fn reports(&self) -> Vec<protocol::board::BoardReport> {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let now = now_ms();
        self.settings
            .list
            .iter()
            .map(|b| {
                let s = status.get(&b.id).cloned().unwrap_or_default();
                protocol::board::BoardReport {
                    id: b.id.clone(),
                    name: if b.name.is_empty() {
                        b.id.clone()
                    } else {
                        b.name.clone()
                    },
                    connections: s.connections,
                    last_seen_ms: s.last_seen_ms,
                    dark: self.dark(&s, now),
                }
            })
            .collect()
    }

    fn dark(&self, s: &Status, now: u64) -> bool {
        let dark_after = self.settings.dark_after.as_millis() as u64;
        s.connections == 0
            || s.last_seen_ms
                .is_none_or(|t| now.saturating_sub(t) > dark_after)
    }

    /// Every configured board as ops see it.
    pub(crate) fn list(&self) -> Vec<serde_json::Value> {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let now = now_ms();
        let feed = self.feed.borrow().clone();
        self.settings
            .list
            .iter()
            .map(|b| {
                let s = status.get(&b.id).cloned().unwrap_or_default();
                let dark = self.dark(&s, now);
                serde_json::json!({
                    "id": b.id,
                    "name": if b.name.is_empty() { &b.id } else { &b.name },
                    "kiosk": b.kiosk,
                    "url": format!("/boards/{}", b.id),
                    "connections": s.connections,
                    "last_seen": s.last_seen_ms.map(rfc3339),
                    "dark": dark,
                    "playlist_version": feed.version,
                    "segment_showing": self.presence_of(&b.id).and_then(|p| p.segment),
                })
            })
            .collect()
    }
}

/// A cached answer's key: the shopper code as scanned (normalised), so a loyalty number is
/// never turned into a customer id on the node.
fn audience_key(code: &str) -> Vec<u8> {
    let mut k = vec![AUDIENCE];
    k.extend_from_slice(code.as_bytes());
    k
}

/// The hub's answer about a shopper code.
#[derive(serde::Deserialize)]
struct HubAnswer {
    personalise: bool,
    #[serde(default)]
    segments: Vec<String>,
    #[serde(default)]
    customer: Option<CustomerId>,
    /// The item the hub's `board_item` slot chose for a consenting shopper.
    #[serde(default)]
    item: Option<BoardItem>,
}

/// RFC 3339 text of Unix milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
