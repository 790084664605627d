//! The hub's side of the in-store boards (`docs/boards.md`): the board playlists it publishes
//! (the single writer; one publication version for every scope, so a node that has version `v`
//! has the hub's state of `v`), and the shoppers' board audience (consent and segments) that the
//! nodes look up when a shopper identifies at a board.
//!
//! - Admin API (admin token): `GET /api/v1/admin/boards/playlists`,
//!   `PUT /api/v1/admin/boards/playlists/{scope}` (`all` or a store location; optional
//!   `base_version` for optimistic concurrency), `GET|PUT /api/v1/admin/boards/audience/{customer}`.
//! - Node API (the node's sync credential): `GET /api/v1/edge/boards/audience/{customer}`
//!   answers whether to personalise and for which segments — never who the shopper is.
//! - Sync: a node that sends `BoardsHave { version }` after `Welcome` is sent `Boards` with its
//!   store's playlist when its version differs, and again at every publication
//!   ([`HubBoards::subscribe`]).
//!
//! Storage: the module's own keyspace tree `boards`: `p` + scope → `BoardPublication`, `a` +
//! customer id → `BoardAudience`. The current version is the highest stored.

use crate::app::HubHandle;
use crate::backoffice::access::{policy, Staff};
use crate::storage::kv::{Keyspace, Tree};
use crate::storage::StorageError;
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;
use channels::error::ApiError;
use channels::Backend;
use protocol::board::{is_plain_id, BoardAudience, BoardPlaylist, BoardPublication};
use protocol::codec::{decode, encode};
use protocol::{CustomerId, LocationId};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The scope of a playlist for every store.
pub const ALL: &str = "all";

const PLAYLIST: u8 = b'p';
const AUDIENCE: u8 = b'a';

/// What is published, as readers see it.
#[derive(Debug, Default, Clone)]
struct Published {
    version: u64,
    scopes: BTreeMap<String, BoardPublication>,
}

/// The hub's board publications and audience.
pub struct HubBoards {
    tree: Tree,
    state: ArcSwap<Published>,
    /// Serialises publications (held across the flush, so versions are never issued twice).
    writer: tokio::sync::Mutex<()>,
    version: watch::Sender<u64>,
    /// Change notifications between hub nodes, once followed.
    changes: std::sync::OnceLock<crate::cluster::notify::Changes>,
}

/// Why a publication was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "the playlists are at version {current}, not {base}: read them again and publish on top"
    )]
    Stale { base: u64, current: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// What is stored as published.
fn load(tree: &Tree) -> Result<Published, StorageError> {
    let mut published = Published::default();
    for kv in tree.scan_prefix([PLAYLIST]) {
        let (k, v) = kv?;
        let scope = String::from_utf8_lossy(&k[1..]).into_owned();
        let p: BoardPublication = decode(&v)?;
        published.version = published.version.max(p.version);
        published.scopes.insert(scope, p);
    }
    Ok(published)
}

impl HubBoards {
    /// Opens the module's tree and loads what is published.
    pub fn open(keyspace: &Keyspace) -> Result<Arc<HubBoards>, StorageError> {
        let tree = keyspace.open_tree("boards")?;
        let published = load(&tree)?;
        let (version, _) = watch::channel(published.version);
        Ok(Arc::new(HubBoards {
            tree,
            state: ArcSwap::from_pointee(published),
            writer: tokio::sync::Mutex::new(()),
            version,
            changes: std::sync::OnceLock::new(),
        }))
    }

    /// Announces this node's publications to the other hub nodes and reloads them when
    /// another node published (`crate::cluster::notify`; a no-op embedded). Once.
    pub fn follow_changes(self: &Arc<Self>, changes: crate::cluster::notify::Changes) {
        let boards = Arc::downgrade(self);
        changes.on(crate::cluster::notify::Topic::Boards, move || {
            let Some(boards) = boards.upgrade() else {
                return;
            };
            match load(&boards.tree) {
                Ok(published) => {
                    let version = published.version;
                    boards.state.store(Arc::new(published));
                    boards.version.send_replace(version);
                }
                Err(e) => tracing::error!(error = %e, "reloading playlists another node published"),
            }
        });
        let _ = self.changes.set(changes);
    }

    /// The current publication version and the playlist for a store: its own, else the one
    /// for all stores, else an empty one.
    pub fn current_for(&self, location: &LocationId) -> (u64, BoardPlaylist) {
        let state = self.state.load();
        let playlist = state
            .scopes
            .get(&location.0)
            .or_else(|| state.scopes.get(ALL))
            .map(|p| p.playlist.clone())
            .unwrap_or_default();
        (state.version, playlist)
    }

    /// Every scope's publication and the current version.
    pub fn list(&self) -> (u64, BTreeMap<String, BoardPublication>) {
        let state = self.state.load();
        (state.version, state.scopes.clone())
    }

    /// Watches the publication version (the sessions push to their nodes when it moves).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Publishes a playlist for a scope (checked by the caller), durably; answers the new
    /// version. With `base`, refuses unless the current version is `base`.
    pub async fn publish(
        &self,
        scope: &str,
        base: Option<u64>,
        playlist: BoardPlaylist,
    ) -> Result<u64, PublishError> {
        let _writer = self.writer.lock().await;
        let current = self.state.load().version;
        if let Some(base) = base {
            if base != current {
                return Err(PublishError::Stale { base, current });
            }
        }
        let version = current.saturating_add(1);
        let publication = BoardPublication { version, playlist };
        self.tree.insert(
            key(PLAYLIST, scope.as_bytes()),
            encode(&publication).map_err(StorageError::from)?,
        )?;
        self.tree.flush_async().await?;
        let mut next = Published::clone(&self.state.load());
        next.version = version;
        next.scopes.insert(scope.to_string(), publication);
        self.state.store(Arc::new(next));
        self.version.send_replace(version);
        if let Some(changes) = self.changes.get() {
            changes.announce(crate::cluster::notify::Topic::Boards);
        }
        tracing::info!(scope, version, "board playlist published");
        Ok(version)
    }

    /// A customer's board audience record.
    pub fn audience(&self, customer: CustomerId) -> Result<Option<BoardAudience>, StorageError> {
        match self.tree.get(key(AUDIENCE, &customer.to_bytes()))? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Sets a customer's board audience record, durably.
    pub async fn set_audience(
        &self,
        customer: CustomerId,
        audience: &BoardAudience,
    ) -> Result<(), StorageError> {
        self.tree
            .insert(key(AUDIENCE, &customer.to_bytes()), encode(audience)?)?;
        self.tree.flush_async().await?;
        Ok(())
    }
}

/// What a node is told about a shopper at a board: whether to personalise and for which
/// segments. Personalised only with the shopper's consent to board personalization (their
/// customer record's consents; the audience record holds only the segments).
pub async fn presence_answer(
    handle: &HubHandle,
    customer: CustomerId,
) -> Result<serde_json::Value, StorageError> {
    let record = handle.storage.customer(customer).await?;
    let audience = handle.boards.audience(customer)?;
    let personalise = record.as_ref().is_some_and(board_consent);
    let segments = match (personalise, audience) {
        (true, Some(a)) => a.segments,
        _ => Vec::new(),
    };
    // The customer id goes back only for a consenting shopper (the subject of their board
    // events): a loyalty number alone never tells a node who someone is.
    // The `board_item` slot's item (`docs/personalization.md`), for a consenting shopper only.
    let item = if personalise {
        handle
            .personalization
            .board_item(customer)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the board item slot could not be resolved");
                None
            })
    } else {
        None
    };
    let customer = personalise.then_some(customer);
    let mut answer =
        json!({ "personalise": personalise, "segments": segments, "customer": customer });
    // Only with an item: an answer for a shopper who does not consent stays the same as for a
    // code no one has.
    if let Some(item) = item {
        answer["item"] = json!(item);
    }
    Ok(answer)
}

/// Whether the customer consents to content chosen for them on boards.
pub fn board_consent(customer: &protocol::CustomerRecord) -> bool {
    customer.consents.granted(
        protocol::ConsentChannel::Board,
        protocol::ConsentPurpose::Personalization,
    )
}

/// The answer for a code no customer has: the same as for one who does not consent.
fn nobody() -> serde_json::Value {
    json!({ "personalise": false, "segments": [], "customer": null })
}

fn storage_error(e: StorageError) -> ApiError {
    ApiError::from(channels::BackendError::Unavailable(e.to_string()))
}

fn parse_customer(text: &str) -> Result<CustomerId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_customer_id",
            format!("'{text}' is not a customer id (a ULID, 26 characters)"),
        )
    })
}

/// Registers the admin routes inside the admin scope.
pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/boards/playlists", web::get().to(list_playlists))
        .route("/boards/playlists/{scope}", web::put().to(publish))
        .route("/boards/audience/{customer}", web::get().to(get_audience))
        .route("/boards/audience/{customer}", web::put().to(put_audience))
}

/// Registers the route the nodes call with their sync credential.
pub fn node_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/edge/boards/audience/{customer}",
        web::get().to(node_presence),
    );
}

async fn list_playlists(
    _: Staff<policy::Boards>,
    handle: web::Data<HubHandle>,
) -> Result<HttpResponse, ApiError> {
    let (version, scopes) = handle.boards.list();
    Ok(HttpResponse::Ok().json(json!({ "version": version, "playlists": scopes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(default)]
    base_version: Option<u64>,
    playlist: BoardPlaylist,
}

async fn publish(
    staff: Staff<policy::Boards>,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = path.into_inner();
    if scope != ALL && !handle.edge.nodes().is_store(&LocationId(scope.clone())) {
        return Err(ApiError::unprocessable(
            "unknown_scope",
            format!("'{scope}' is neither 'all' nor a store location of an edge node"),
        ));
    }
    let body = body.into_inner();
    let problems = body.playlist.problems();
    if !problems.is_empty() {
        let fields: Vec<_> = problems
            .iter()
            .map(|(f, m)| json!({ "field": f, "message": m }))
            .collect();
        return Err(ApiError::unprocessable(
            "invalid_playlist",
            format!(
                "the playlist is not valid: {}",
                problems
                    .iter()
                    .map(|(f, m)| format!("{f}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_details(json!({ "fields": fields })));
    }
    let published = json!({ "base_version": body.base_version, "playlist": &body.playlist });
    match handle
        .boards
        .publish(&scope, body.base_version, body.playlist)
        .await
    {
        Ok(version) => {
            let after = json!({ "version": version, "published": published });
            staff
                .audit(
                    &handle.backoffice,
                    "board.playlist.publish",
                    format!("playlist/{scope}"),
                    None::<&()>,
                    Some(&after),
                )
                .await;
            Ok(HttpResponse::Ok().json(json!({ "scope": scope, "version": version })))
        }
        Err(e @ PublishError::Stale { .. }) => Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "stale_version",
            e.to_string(),
        )),
        Err(PublishError::Storage(e)) => Err(storage_error(e)),
    }
}

async fn get_audience(
    _: Staff<policy::Boards>,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let customer = parse_customer(&path)?;
    let audience = handle
        .boards
        .audience(customer)
        .map_err(storage_error)?
        .unwrap_or_default();
    let answer = presence_answer(&handle, customer)
        .await
        .map_err(storage_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "customer": customer,
        "consent": answer["personalise"],
        "segments": audience.segments,
        "personalise": answer["personalise"],
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceBody {
    /// The shopper's say about board personalization, as they told the shop (recorded in
    /// their consents with source `back_office`); left out: unchanged.
    #[serde(default)]
    consent: Option<bool>,
    #[serde(default)]
    segments: Vec<String>,
}

async fn put_audience(
    staff: Staff<policy::Boards>,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
    body: web::Json<AudienceBody>,
) -> Result<HttpResponse, ApiError> {
    let customer = parse_customer(&path)?;
    if handle
        .storage
        .customer(customer)
        .await
        .map_err(storage_error)?
        .is_none()
    {
        return Err(ApiError::not_found(&format!("customer {customer}")));
    }
    let body = body.into_inner();
    if let Some(bad) = body.segments.iter().find(|s| !is_plain_id(s)) {
        return Err(ApiError::unprocessable(
            "bad_segment",
            format!("segment '{bad}': a segment name is 1 to 64 letters, digits, '-' or '_'"),
        ));
    }
    if body.segments.len() > protocol::board::MAX_SEGMENTS {
        return Err(ApiError::unprocessable(
            "too_many_segments",
            format!("at most {} segments", protocol::board::MAX_SEGMENTS),
        ));
    }
    let before = handle.boards.audience(customer).map_err(storage_error)?;
    let consents = match body.consent {
        Some(granted) => handle
            .backend
            .record_consents(
                customer,
                vec![protocol::ConsentChoice {
                    channel: protocol::ConsentChannel::Board,
                    purpose: protocol::ConsentPurpose::Personalization,
                    granted,
                }],
                protocol::ConsentSource::BackOffice,
                protocol::Channel::Board,
            )
            .await
            .map_err(ApiError::from)?,
        None => handle
            .backend
            .consents(customer)
            .await
            .map_err(ApiError::from)?,
    };
    let consent = consents.granted(
        protocol::ConsentChannel::Board,
        protocol::ConsentPurpose::Personalization,
    );
    // The record keeps the segments; `consent` mirrors the customer's consent for nodes of
    // an older version, and the hub never reads it.
    let audience = BoardAudience {
        consent,
        segments: body.segments,
        customer: None,
        item: None,
        updated_ms: super::unix_ms(time::OffsetDateTime::now_utc()),
    };
    handle
        .boards
        .set_audience(customer, &audience)
        .await
        .map_err(storage_error)?;
    staff
        .audit(
            &handle.backoffice,
            "board.audience.set",
            format!("customer/{customer}"),
            before.as_ref(),
            Some(&audience),
        )
        .await;
    Ok(HttpResponse::Ok().json(json!({
        "customer": customer,
        "consent": consent,
        "segments": audience.segments,
    })))
}

/// `GET /api/v1/edge/boards/audience/{customer}` for a node (its sync credential as Bearer).
async fn node_presence(
    req: HttpRequest,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::session::authenticated_node(&req, &handle.edge).await?;
    let Some(code) = protocol::board::shopper_code(&path) else {
        return Err(ApiError::bad_request(
            "bad_shopper_code",
            format!(
                "'{}' is neither a customer id (26 characters) nor a loyalty number (8 to 16 digits)",
                path.as_str()
            ),
        ));
    };
    let customer = match code.parse::<CustomerId>() {
        Ok(id) => Some(id),
        Err(_) => handle
            .storage
            .customer_by_alias(&crate::storage::CustomerAlias::Loyalty(code))
            .await
            .map_err(storage_error)?
            .map(|c| c.id),
    };
    let answer = match customer {
        Some(customer) => presence_answer(&handle, customer)
            .await
            .map_err(storage_error)?,
        None => nobody(),
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// A new publication (for a session's stream).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct BoardsPublished;

/// The publications as a stream of [`BoardsPublished`], for a session actor.
pub fn changes(
    rx: watch::Receiver<u64>,
) -> impl futures_util::Stream<Item = BoardsPublished> + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some((BoardsPublished, rx))
    })
}
