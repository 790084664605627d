//! `GET /api/v1/edge/sync`: one WebSocket per node, one [`NodeSession`] actor per connection.
//!
//! The node is authenticated before the upgrade (its credential's SHA-256, compared in constant
//! time; unknown, retired or missing → 401 JSON). After the upgrade three parts cooperate:
//! - the reader task (`actix_web::rt::spawn`: the stream is `!Send`) decodes binary frames and
//!   hands them to the actor one at a time, waiting for each (so frames are handled in order),
//!   and answers pings;
//! - the actor runs the protocol: `Hello` → `Welcome`, batches applied through the
//!   [`EdgeReplica`] then acknowledged, the hub → node stream with at most
//!   [`MAX_IN_FLIGHT`] unacknowledged batches, catalog chunks, heartbeats and the idle timeout;
//! - the writer task sends what the actor queues, in order, and closes the socket last.

use super::catalog::{CatalogChange, DeltaPlan, NodeCatalog};
use super::replica::{
    ApplyDeltas, Connect, Disconnect, EdgeReplica, Heard, NodeAcked, RecordConflict, Welcomed,
};
use super::store::EdgeStore;
use super::{unix_ms, EdgeError, EdgeHandle, Node, Timing};
use crate::app::HubHandle;
use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use channels::error::ApiError;
use protocol::replication::sync::{
    close, decode_frame, encode_frame, Frame, Item, Scarce, MAX_BATCH_BYTES, MAX_BATCH_ITEMS,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use protocol::replication::ReplicaId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Hub → node batches sent and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 4;

/// How long the reader keeps draining after the hub closed, so its close frame is read.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(5);

/// Close code for a hub that cannot store what the node sent (the node retries later).
const INTERNAL_ERROR: u16 = 1011;

/// The largest `have[hub]` a node may report. Real sequences stay far below it; a larger one is
/// a broken peer, refused so that the hub's outbox numbering (continued after what the node
/// reports) can never reach `u64::MAX`.
const MAX_PLAUSIBLE_SEQ: u64 = u64::MAX / 2;

/// Boards kept of one node's report (the rest are left out).
const MAX_BOARDS_REPORTED: usize = 500;

static SESSIONS: AtomicU64 = AtomicU64::new(1);

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(actix_web::http::StatusCode::UNAUTHORIZED, code, message)
}

/// The edge node whose credential the request carries as `Authorization: Bearer`, else `401`:
/// none (`edge_credential_required`), unknown (`unknown_node`) or retired (`node_retired`, a
/// rebuilt node has a new replica id and credential). Every node-facing route asks this.
pub async fn authenticated_node(
    req: &HttpRequest,
    edge: &super::EdgeHandle,
) -> Result<super::Node, ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|c| !c.is_empty());
    let Some(credential) = presented else {
        return Err(unauthorized(
            "edge_credential_required",
            "send the node's credential as Authorization: Bearer <credential>",
        ));
    };
    let Some(node) = edge.nodes.authenticate(credential).cloned() else {
        return Err(unauthorized(
            "unknown_node",
            "no edge node has this credential: check the node's credential and the hub's [edge] nodes",
        ));
    };
    let retired = edge
        .live()
        .await
        .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
        .into_iter()
        .any(|n| n.replica == node.replica && n.retired.is_some());
    if retired {
        return Err(unauthorized(
            "node_retired",
            "this replica id is retired: a rebuilt node connects with a new replica id and credential",
        ));
    }
    Ok(node)
}

/// `GET /api/v1/edge/sync`: authenticates the node, upgrades, and starts its session.
#[tracing::instrument(name = "edge_sync", skip_all)]
pub async fn sync(
    req: HttpRequest,
    body: web::Payload,
    handle: web::Data<HubHandle>,
) -> Result<HttpResponse, ApiError> {
    let edge = handle.edge.clone();
    let node = authenticated_node(&req, &edge).await?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "not_a_websocket",
            format!("open this URL as a WebSocket: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    tracing::info!(node = %node.replica, session = id, "edge node connected");
    let (out, outgoing) = mpsc::unbounded_channel();
    actix_web::rt::spawn(write_loop(session.clone(), outgoing));
    let (alive, gone) = tokio::sync::oneshot::channel();
    let mut session_actor = NodeSession::new(id, node, &edge, out, alive);
    session_actor.boards = Some(handle.boards.clone());
    let addr = session_actor.start();
    actix_web::rt::spawn(read_loop(stream, session, addr, gone));
    Ok(response)
}

/// What the writer task sends.
enum Outgoing {
    Frame(Box<Frame>),
    /// The whole catalog (with the promotions) at a version, encoded one chunk at a time as
    /// the socket takes them.
    Catalog {
        version: u64,
        catalog: NodeCatalog,
    },
    /// What changed since the node's catalog version, cut into `CatalogDelta` frames as the
    /// socket takes them.
    Delta(Box<CatalogChange>),
    Close(u16, String),
}

async fn write_loop(mut session: actix_ws::Session, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    let mut close = None;
    while let Some(next) = queue.recv().await {
        match next {
            Outgoing::Frame(frame) => {
                if !send(&mut session, &frame).await {
                    return;
                }
            }
            Outgoing::Catalog { version, catalog } => {
                let plan = catalog.plan();
                for part in 0..plan.parts() {
                    let frame = plan.frame(
                        &catalog.snapshot,
                        catalog.promotions(),
                        &catalog.fingerprint,
                        version,
                        part,
                    );
                    if !send(&mut session, &frame).await {
                        return;
                    }
                }
            }
            Outgoing::Delta(change) => {
                let plan = DeltaPlan::new(&change);
                for part in 0..plan.parts() {
                    if !send(&mut session, &plan.frame(&change, part)).await {
                        return;
                    }
                }
            }
            Outgoing::Close(code, reason) => {
                close = Some(CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason),
                });
                break;
            }
        }
    }
    let _ = session.close(close).await;
}

/// Encodes and sends a frame; `false` once the socket is gone.
async fn send(session: &mut actix_ws::Session, frame: &Frame) -> bool {
    match encode_frame(frame) {
        Ok(bytes) => session.binary(bytes).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a sync frame could not be encoded");
            true
        }
    }
}

/// Reads the node's frames and hands them to the actor in order. Once the session is closing (a
/// fault here, or the actor stopped: `gone` fires when it is dropped) it only drains, for at
/// most [`DRAIN_AFTER_CLOSE`], so the close frame reaches a peer still sending.
async fn read_loop(
    mut stream: AggregatedMessageStream,
    mut session: actix_ws::Session,
    addr: Addr<NodeSession>,
    mut gone: tokio::sync::oneshot::Receiver<()>,
) {
    let mut closing_since: Option<Instant> = None;
    loop {
        let next = match closing_since {
            None => {
                tokio::select! {
                    next = stream.recv() => next,
                    _ = &mut gone => {
                        closing_since = Some(Instant::now());
                        continue;
                    }
                }
            }
            Some(since) => {
                let left = DRAIN_AFTER_CLOSE.saturating_sub(since.elapsed());
                match actix_web::rt::time::timeout(left, stream.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
        };
        let Some(next) = next else {
            break;
        };
        if closing_since.is_some() {
            // The hub has closed: read on until the peer's close, handling nothing.
            if matches!(next, Ok(AggregatedMessage::Close(_))) {
                break;
            }
            continue;
        }
        let delivered = match next {
            Ok(AggregatedMessage::Binary(bytes)) => match decode_frame(&bytes) {
                Ok(frame) => addr.send(Inbound(Box::new(frame))).await.map(|_| true),
                Err(e) => addr
                    .send(Fault::new(
                        close::MALFORMED,
                        format!("undecodable frame: {e}"),
                    ))
                    .await
                    .map(|_| false),
            },
            Ok(AggregatedMessage::Text(_)) => addr
                .send(Fault::new(
                    close::MALFORMED,
                    "text frames are not part of the sync protocol: send binary frames".into(),
                ))
                .await
                .map(|_| false),
            Ok(AggregatedMessage::Ping(bytes)) => {
                let _ = session.pong(&bytes).await;
                addr.send(Alive).await.map(|_| true)
            }
            Ok(AggregatedMessage::Pong(_)) => addr.send(Alive).await.map(|_| true),
            Ok(AggregatedMessage::Close(reason)) => {
                tracing::info!(?reason, "the node closed the connection");
                let _ = addr.send(PeerClosed).await;
                break;
            }
            Err(e) => {
                let (code, reason) = if too_big(&e) {
                    (
                        close::TOO_BIG,
                        format!("a frame is over the limit of {MAX_FRAME_BYTES} bytes"),
                    )
                } else {
                    (close::MALFORMED, format!("broken WebSocket frame: {e}"))
                };
                addr.send(Fault::new(code, reason)).await.map(|_| false)
            }
        };
        match delivered {
            Ok(true) => {}
            Ok(false) => closing_since = Some(Instant::now()),
            Err(_) => break,
        }
    }
    addr.do_send(ReaderEnded);
}

fn too_big(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => io.to_string().contains("maximum continuation size"),
        _ => false,
    }
}

/// One decoded frame from the node.
#[derive(Message)]
#[rtype(result = "()")]
struct Inbound(Box<Frame>);

/// The node broke the protocol (or the transport): close with `code` and `reason`.
#[derive(Message)]
#[rtype(result = "()")]
struct Fault {
    code: u16,
    reason: String,
}

impl Fault {
    fn new(code: u16, reason: String) -> Fault {
        Fault { code, reason }
    }
}

/// A ping or pong: the node is alive.
#[derive(Message)]
#[rtype(result = "()")]
struct Alive;

/// The node sent a close frame.
#[derive(Message)]
#[rtype(result = "()")]
struct PeerClosed;

/// The socket's read side ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ReaderEnded;

/// A newer session of the same node took over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replaced;

/// The node's replica id was retired.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetiredNow;

/// The node's outbox has entries up to `last`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OutboxGrew {
    pub last: u64,
}

/// The catalog nodes see (its products or the live promotions) changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatalogChanged {
    pub version: u64,
    pub catalog: NodeCatalog,
}

/// The hub → node stream: what the node has durably, what was sent, what exists.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stream {
    acked: u64,
    sent: u64,
    last: u64,
    /// Batches sent and not yet answered.
    in_flight: usize,
    /// A batch is being read from the store.
    loading: bool,
}

impl Stream {
    /// Where a stream resumes: after what the node has.
    fn resume(acked: u64, last: u64) -> Stream {
        Stream {
            acked,
            sent: acked,
            last: last.max(acked),
            in_flight: 0,
            loading: false,
        }
    }

    /// The first sequence of the next batch, if one may be sent now.
    fn next_from(&self) -> Option<u64> {
        // `sent < last` leaves room for `sent + 1`.
        (!self.loading && self.in_flight < MAX_IN_FLIGHT && self.sent < self.last)
            .then(|| self.sent.saturating_add(1))
    }

    fn sent_batch(&mut self, to_seq: u64) {
        self.sent = to_seq;
        self.in_flight += 1;
    }

    /// The node's answer to the oldest batch in flight: its `have[hub]`. Answers the new
    /// acknowledged sequence if it grew. Once every batch is answered and the node has less than
    /// was sent (a duplicate or a gap on its side), the stream rewinds to what it has.
    fn ack(&mut self, seq: u64) -> Option<u64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let grew = (seq > self.acked).then(|| {
            self.acked = seq;
            seq
        });
        self.sent = self.sent.max(self.acked);
        self.last = self.last.max(self.acked);
        if self.in_flight == 0 && self.acked < self.sent {
            self.sent = self.acked;
        }
        grew
    }
}

/// One connected node.
pub struct NodeSession {
    id: u64,
    node: Node,
    replica: Addr<EdgeReplica>,
    store: Arc<dyn EdgeStore>,
    timing: Timing,
    out: mpsc::UnboundedSender<Outgoing>,
    last_heard: Instant,
    /// Set by `Hello`.
    open: bool,
    /// Set once a close is queued: nothing else is handled.
    closing: bool,
    stream: Stream,
    /// A node batch is being applied: the hub's own batches wait until its ack is sent, so a
    /// node always sees the ack of its batch before what the hub did about it.
    applying: bool,
    /// The node's catalog version and its fingerprint once what was queued is applied.
    node_catalog: u64,
    node_fingerprint: String,
    /// The node applies catalog deltas (it said so in `Hello`).
    catalog_deltas: bool,
    /// The hub's catalog version last offered, for a node that asks for the whole of it.
    latest: Option<(u64, NodeCatalog)>,
    /// The hub's outbox was found to miss entries the node needs (recorded once per session).
    gap_recorded: bool,
    /// The hub's board publications, and the version the node has (once it said `BoardsHave`).
    boards: Option<Arc<super::boards::HubBoards>>,
    node_boards: Option<u64>,
    /// Dropped with the actor: tells the reader to stop waiting for frames.
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl NodeSession {
    fn new(
        id: u64,
        node: Node,
        edge: &EdgeHandle,
        out: mpsc::UnboundedSender<Outgoing>,
        alive: tokio::sync::oneshot::Sender<()>,
    ) -> NodeSession {
        NodeSession {
            id,
            node,
            replica: edge.replica.clone(),
            store: edge.store.clone(),
            timing: edge.timing,
            out,
            last_heard: Instant::now(),
            open: false,
            closing: false,
            stream: Stream::default(),
            applying: false,
            node_catalog: 0,
            node_fingerprint: String::new(),
            catalog_deltas: false,
            latest: None,
            gap_recorded: false,
            boards: None,
            node_boards: None,
            _alive: alive,
        }
    }

    fn send(&self, frame: Frame) {
        let _ = self.out.send(Outgoing::Frame(Box::new(frame)));
    }

    /// Queues a close frame and stops the actor (the writer closes the socket).
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: impl Into<String>) {
        if self.closing {
            return;
        }
        let reason = reason.into();
        tracing::info!(node = %self.node.replica, session = self.id, code, %reason, "closing the node's session");
        self.closing = true;
        let _ = self.out.send(Outgoing::Close(code, reason));
        ctx.stop();
    }

    fn malformed(&mut self, ctx: &mut Context<Self>, reason: impl Into<String>) {
        self.close(ctx, close::MALFORMED, reason);
    }

    /// Brings the node to the hub's catalog version (with the live promotions) if its version
    /// differs: with what changed since its version when the node reads deltas and the hub's
    /// history covers its version (and the content it has under that number), otherwise with
    /// the whole catalog. An empty catalog (a hub still loading its data) is not offered: the
    /// till would have nothing to sell; the next version comes as soon as the catalog is there.
    fn offer_catalog(&mut self, version: u64, catalog: NodeCatalog) {
        self.latest = Some((version, catalog.clone()));
        if self.node_catalog == version || !catalog.has_products() {
            return;
        }
        let delta = self
            .catalog_deltas
            .then(|| catalog.delta_from(self.node_catalog, &self.node_fingerprint, version))
            .flatten();
        match delta {
            Some(change) => {
                tracing::info!(node = %self.node.replica, from = self.node_catalog, to = version,
                    products = change.products.len(), removed = change.removed.len(),
                    promotions = change.promotions.is_some(), "sending the catalog's changes");
                let _ = self.out.send(Outgoing::Delta(Box::new(change)));
                self.node_catalog = version;
                self.node_fingerprint = catalog.fingerprint;
            }
            None => self.send_catalog(version, catalog),
        }
    }

    /// Sends the whole catalog at `version`.
    fn send_catalog(&mut self, version: u64, catalog: NodeCatalog) {
        tracing::info!(node = %self.node.replica, from = self.node_catalog, to = version,
            promotions = catalog.promotions.len(), "sending the catalog");
        self.node_catalog = version;
        self.node_fingerprint = catalog.fingerprint.clone();
        let _ = self.out.send(Outgoing::Catalog { version, catalog });
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.timing.idle_timeout {
            let secs = self.timing.idle_timeout.as_secs_f64();
            self.close(ctx, close::IDLE, format!("nothing heard for {secs} s"));
            return;
        }
        if self.open && !self.closing {
            self.send(Frame::Heartbeat {
                time_ms: unix_ms(time::OffsetDateTime::now_utc()),
                pending: self.stream.last.saturating_sub(self.stream.acked),
            });
        }
    }

    /// Sends the next batches of the hub's outbox, up to [`MAX_IN_FLIGHT`] unacknowledged.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.open || self.closing || self.applying {
            return;
        }
        let Some(from) = self.stream.next_from() else {
            return;
        };
        self.stream.loading = true;
        let store = self.store.clone();
        let node = self.node.replica.clone();
        ctx.spawn(
            async move {
                store
                    .outbox(&node, from, MAX_BATCH_ITEMS, MAX_BATCH_BYTES)
                    .await
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.stream.loading = false;
                if act.closing || act.applying || act.stream.sent.saturating_add(1) != from {
                    // Rewound or acknowledged meanwhile, or a node batch is being applied (its
                    // ack goes first): read again from the position then.
                    act.pump(ctx);
                    return;
                }
                match res {
                    Ok(entries) => act.send_batch(ctx, from, entries),
                    Err(e) => {
                        tracing::error!(node = %act.node.replica, error = %e, "the node's outbox cannot be read");
                    }
                }
            }),
        );
    }

    fn send_batch(
        &mut self,
        ctx: &mut Context<Self>,
        from: u64,
        entries: Vec<super::store::OutboxEntry>,
    ) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        if first.seq != from {
            // Every later `OutboxGrew` finds the same gap: it is logged and recorded once per
            // session; the stream stays stopped until a person acts.
            if self.gap_recorded {
                tracing::debug!(node = %self.node.replica, from, resumes = first.seq, "gap in the hub's outbox (recorded)");
                return;
            }
            self.gap_recorded = true;
            let detail = format!(
                "the node has the hub's changes up to {}, but the hub's outbox resumes at {}: \
                 entries in between were dropped; retire this replica and rebuild the node",
                from.saturating_sub(1),
                first.seq
            );
            tracing::error!(node = %self.node.replica, %detail, "gap in the hub's outbox");
            self.replica.do_send(RecordConflict {
                node: self.node.replica.clone(),
                kind: "outbox_gap".into(),
                detail,
            });
            return;
        }
        let to_seq = last.seq;
        let items = coalesce(entries.into_iter().flat_map(|e| e.items));
        self.send(Frame::Deltas {
            origin: ReplicaId::hub(),
            from_seq: from,
            to_seq,
            items,
        });
        self.stream.sent_batch(to_seq);
        self.pump(ctx);
    }

    /// The node acknowledged the hub's stream up to `seq` (an answer to the oldest batch).
    fn acked(&mut self, ctx: &mut Context<Self>, seq: u64) {
        if let Some(seq) = self.stream.ack(seq) {
            self.replica.do_send(NodeAcked {
                node: self.node.replica.clone(),
                seq,
            });
        }
        self.pump(ctx);
    }

    fn hello(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let Frame::Hello {
            version,
            replica,
            location,
            have,
            catalog_version,
            time_ms,
            pending,
            catalog_fingerprint,
            catalog_deltas,
            coupons,
        } = frame
        else {
            self.malformed(ctx, "the first frame must be hello");
            return;
        };
        if version != PROTOCOL_VERSION {
            self.close(
                ctx,
                close::UNSUPPORTED_VERSION,
                format!("protocol version {version} is not supported; this hub speaks {PROTOCOL_VERSION}"),
            );
            return;
        }
        if replica != self.node.replica {
            self.close(
                ctx,
                close::WRONG_REPLICA,
                format!(
                    "the credential is replica {}'s, not {replica}'s",
                    self.node.replica
                ),
            );
            return;
        }
        if location != self.node.location {
            self.close(
                ctx,
                close::WRONG_REPLICA,
                format!(
                    "replica {} owns {}, not {location}",
                    self.node.replica, self.node.location
                ),
            );
            return;
        }
        let node_acked = have.get(&ReplicaId::hub()).copied().unwrap_or(0);
        if node_acked > MAX_PLAUSIBLE_SEQ {
            self.malformed(
                ctx,
                format!("have[hub] = {node_acked} is past any sequence this hub could have sent"),
            );
            return;
        }
        self.node_catalog = catalog_version;
        self.node_fingerprint = catalog_fingerprint;
        self.catalog_deltas = catalog_deltas;
        let connect = Connect {
            node: replica,
            session: self.id,
            addr: ctx.address(),
            have,
            catalog_version,
            time_ms,
            pending,
            coupons,
        };
        ctx.wait(
            self.replica
                .send(connect)
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(Ok(w)) => act.welcome(ctx, w),
                    Ok(Err(EdgeError::Retired(r))) => {
                        act.close(ctx, close::WRONG_REPLICA, format!("replica {r} is retired"));
                    }
                    Ok(Err(e)) => act.close(ctx, INTERNAL_ERROR, format!("hub error: {e}")),
                    Err(_) => act.close(ctx, INTERNAL_ERROR, "the hub is shutting down"),
                }),
        );
    }

    fn welcome(&mut self, ctx: &mut Context<Self>, w: Welcomed) {
        self.open = true;
        self.send(Frame::Welcome {
            have: BTreeMap::from([(self.node.replica.clone(), w.have)]),
            catalog_version: w.catalog_version,
            hub_time_ms: w.hub_time_ms,
        });
        self.offer_catalog(w.catalog_version, w.catalog);
        self.stream = Stream::resume(w.acked, w.outbox_last);
        self.pump(ctx);
    }

    fn deltas(
        &mut self,
        from_seq: u64,
        to_seq: u64,
        items: Vec<Item>,
    ) -> ResponseActFuture<Self, ()> {
        let node = self.node.replica.clone();
        self.applying = true;
        Box::pin(
            self.replica
                .send(ApplyDeltas {
                    node: node.clone(),
                    from_seq,
                    to_seq,
                    items,
                })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(seq)) => {
                        act.applying = false;
                        act.send(Frame::Ack { origin: node, seq });
                        act.pump(ctx);
                    }
                    Ok(Err(EdgeError::Retired(r))) => {
                        act.close(ctx, close::WRONG_REPLICA, format!("replica {r} is retired"));
                    }
                    Ok(Err(e)) => {
                        tracing::error!(node = %node, error = %e, "a batch could not be applied");
                        act.close(
                            ctx,
                            INTERNAL_ERROR,
                            "the hub could not store the batch; try again later",
                        );
                    }
                    Err(_) => act.close(ctx, INTERNAL_ERROR, "the hub is shutting down"),
                }),
        )
    }
}

/// Keeps one `OnHand` / `Rights` state per key in a batch, where its first came: the latest
/// `OnHand` (an absolute state), and the merge (pointwise max) of every `Rights` state of the
/// key, so the hub's own row queued after a whole relayed state never hides the other rows.
/// Records are kept as they are, in order.
fn coalesce(items: impl Iterator<Item = Item>) -> Vec<Item> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum StateKey {
        OnHand(String, String),
        Rights(Scarce),
    }
    let mut out: Vec<Item> = Vec::new();
    let mut at: BTreeMap<StateKey, usize> = BTreeMap::new();
    for item in items {
        let key = match &item {
            Item::OnHand { sku, location, .. } => {
                Some(StateKey::OnHand(location.0.clone(), sku.as_str().into()))
            }
            Item::Rights { key, .. } => Some(StateKey::Rights(key.clone())),
            _ => None,
        };
        match key.and_then(|k| match at.get(&k) {
            Some(i) => Some(*i),
            None => {
                at.insert(k, out.len());
                None
            }
        }) {
            Some(i) => match (&mut out[i], item) {
                (Item::Rights { state: kept, .. }, Item::Rights { state, .. }) => {
                    kept.merge(&state);
                }
                (slot, item) => *slot = item,
            },
            None => out.push(item),
        }
    }
    out
}

impl Actor for NodeSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.timing.heartbeat_every, |act, ctx| act.heartbeat(ctx));
        let check =
            (self.timing.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(check, |act, ctx| {
            if act.last_heard.elapsed() > act.timing.idle_timeout {
                act.heartbeat(ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        tracing::info!(node = %self.node.replica, session = self.id, "edge session ended");
        self.replica.do_send(Disconnect {
            node: self.node.replica.clone(),
            session: self.id,
        });
    }
}

impl Handler<Inbound> for NodeSession {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) -> Self::Result {
        let done = || -> ResponseActFuture<Self, ()> { Box::pin(actix::fut::ready(())) };
        if self.closing {
            return done();
        }
        self.last_heard = Instant::now();
        let frame = *msg.0;
        if !self.open {
            self.hello(ctx, frame);
            return done();
        }
        match frame {
            Frame::Deltas {
                origin,
                from_seq,
                to_seq,
                items,
            } => {
                if origin != self.node.replica {
                    self.malformed(
                        ctx,
                        format!("deltas from {origin} on {}'s session", self.node.replica),
                    );
                } else if from_seq == 0 || from_seq > to_seq {
                    self.malformed(
                        ctx,
                        format!("deltas {from_seq}..={to_seq} is not a range of sequences"),
                    );
                } else {
                    return self.deltas(from_seq, to_seq, items);
                }
            }
            Frame::Ack { origin, seq } => {
                if origin.is_hub() {
                    self.acked(ctx, seq);
                } else {
                    self.malformed(
                        ctx,
                        format!(
                            "ack for origin {origin}: the node acknowledges only the hub's stream"
                        ),
                    );
                }
            }
            Frame::Heartbeat { time_ms, pending } => self.replica.do_send(Heard {
                node: self.node.replica.clone(),
                time_ms,
                pending,
            }),
            Frame::Hello { .. } => self.malformed(ctx, "hello was already received"),
            Frame::CatalogWanted { version } => {
                // A delta did not fit the node's catalog: the whole catalog it is then.
                tracing::warn!(node = %self.node.replica, version, "the node asks for the whole catalog");
                self.node_catalog = version;
                self.node_fingerprint.clear();
                if let Some((latest, catalog)) = self.latest.clone() {
                    if catalog.has_products() {
                        self.send_catalog(latest, catalog);
                    }
                }
            }
            Frame::BoardsHave { version } => self.boards_have(ctx, version),
            Frame::BoardsReport { mut boards } => {
                // A report is for operators: a few hundred boards a store is plenty.
                boards.truncate(MAX_BOARDS_REPORTED);
                self.replica.do_send(super::replica::BoardsHeard {
                    node: self.node.replica.clone(),
                    boards,
                });
            }
            Frame::Welcome { .. }
            | Frame::Catalog { .. }
            | Frame::CatalogDelta { .. }
            | Frame::Boards { .. } => self.malformed(
                ctx,
                "welcome and catalog frames go from the hub to the node",
            ),
            Frame::Unknown => {
                tracing::debug!(node = %self.node.replica, "unknown frame kind ignored");
            }
        }
        done()
    }
}

impl Handler<Fault> for NodeSession {
    type Result = ();

    fn handle(&mut self, msg: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(node = %self.node.replica, code = msg.code, reason = %msg.reason, "sync fault");
        self.close(ctx, msg.code, msg.reason);
    }
}

impl Handler<Alive> for NodeSession {
    type Result = ();

    fn handle(&mut self, _: Alive, _ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
    }
}

impl Handler<PeerClosed> for NodeSession {
    type Result = ();

    fn handle(&mut self, _: PeerClosed, ctx: &mut Context<Self>) {
        self.close(ctx, 1000, "bye");
    }
}

impl Handler<ReaderEnded> for NodeSession {
    type Result = ();

    fn handle(&mut self, _: ReaderEnded, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Replaced> for NodeSession {
    type Result = ();

    fn handle(&mut self, _: Replaced, ctx: &mut Context<Self>) {
        self.close(
            ctx,
            close::REPLACED,
            "a newer session of this node replaced this one",
        );
    }
}

impl Handler<RetiredNow> for NodeSession {
    type Result = ();

    fn handle(&mut self, _: RetiredNow, ctx: &mut Context<Self>) {
        let reason = format!("replica {} was retired", self.node.replica);
        self.close(ctx, close::WRONG_REPLICA, reason);
    }
}

impl Handler<OutboxGrew> for NodeSession {
    type Result = ();

    fn handle(&mut self, msg: OutboxGrew, ctx: &mut Context<Self>) {
        self.stream.last = self.stream.last.max(msg.last);
        self.pump(ctx);
    }
}

impl NodeSession {
    /// The node plays boards and has their playlist at `version`: bring it to the hub's, and
    /// follow every later publication.
    fn boards_have(&mut self, ctx: &mut Context<Self>, version: u64) {
        let Some(boards) = self.boards.clone() else {
            return;
        };
        if self.node_boards.is_none() {
            ctx.add_stream(super::boards::changes(boards.subscribe()));
        }
        self.node_boards = Some(version);
        self.offer_boards();
    }

    fn offer_boards(&mut self) {
        let (Some(boards), Some(have)) = (&self.boards, self.node_boards) else {
            return;
        };
        let (version, playlist) = boards.current_for(&self.node.location);
        if version == 0 || version == have {
            return;
        }
        tracing::info!(node = %self.node.replica, from = have, to = version, "sending the board playlist");
        self.node_boards = Some(version);
        self.send(Frame::Boards { version, playlist });
    }
}

impl StreamHandler<super::boards::BoardsPublished> for NodeSession {
    fn handle(&mut self, _: super::boards::BoardsPublished, _ctx: &mut Context<Self>) {
        if self.open && !self.closing {
            self.offer_boards();
        }
    }

    /// The publications never end while the hub runs; if they do, the session goes on.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<CatalogChanged> for NodeSession {
    type Result = ();

    fn handle(&mut self, msg: CatalogChanged, _ctx: &mut Context<Self>) {
        if self.open && !self.closing {
            self.offer_catalog(msg.version, msg.catalog);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::replication::{Rights, Settlement};
    use protocol::{LocationId, Sku};

    /// Sends every batch the stream allows, each of `size` entries; answers their ranges.
    fn send_all(s: &mut Stream, size: u64) -> Vec<(u64, u64)> {
        let mut sent = Vec::new();
        while let Some(from) = s.next_from() {
            let to = (from + size - 1).min(s.last);
            s.sent_batch(to);
            sent.push((from, to));
        }
        sent
    }

    #[test]
    fn at_most_four_batches_are_in_flight_and_acks_open_the_window() {
        let mut s = Stream::resume(0, 100);
        assert_eq!(
            send_all(&mut s, 10),
            vec![(1, 10), (11, 20), (21, 30), (31, 40)]
        );
        assert_eq!(s.ack(10), Some(10));
        assert_eq!(send_all(&mut s, 10), vec![(41, 50)]);
        for seq in [20, 30, 40, 50] {
            s.ack(seq);
        }
        assert_eq!(s.acked, 50);
        assert_eq!(send_all(&mut s, 10).len(), 4);
    }

    #[test]
    fn a_node_that_has_less_makes_the_stream_rewind_once_all_is_answered() {
        let mut s = Stream::resume(0, 30);
        assert_eq!(send_all(&mut s, 10).len(), 3);
        // The node rejected the first batch (say it lost a reconnect race): it answers 0 for
        // each; only when every batch is answered does the stream go back.
        assert_eq!(s.ack(0), None);
        assert_eq!(
            s.next_from(),
            None,
            "two batches still unanswered, all sent"
        );
        s.ack(0);
        s.ack(0);
        assert_eq!(s.next_from(), Some(1));
        // A node that has more than was sent moves the stream on.
        let mut s = Stream::resume(0, 5);
        send_all(&mut s, 10);
        assert_eq!(s.ack(7), Some(7));
        assert_eq!((s.sent, s.last), (7, 7));
        // A resumed stream starts after what the node has.
        assert_eq!(Stream::resume(3, 9).next_from(), Some(4));
        assert_eq!(Stream::resume(9, 9).next_from(), None);
    }

    #[test]
    fn sequences_at_the_top_of_u64_do_not_overflow() {
        let top = u64::MAX;
        assert_eq!(Stream::resume(top - 1, top).next_from(), Some(top));
        assert_eq!(Stream::resume(top, top).next_from(), None);
        assert_eq!(Stream::resume(top, 0).next_from(), None);
        let mut s = Stream::resume(top - 1, top);
        s.sent_batch(top);
        assert_eq!(s.ack(top), Some(top));
        assert_eq!(s.next_from(), None);
    }

    #[test]
    fn a_whole_rights_state_and_a_later_hub_row_of_one_key_are_merged() {
        let key = Scarce::Stock {
            sku: Sku::parse("TEA").expect("sku"),
            location: LocationId("store-berlin".into()),
        };
        let (old, hub) = (ReplicaId("berlin".into()), ReplicaId::hub());
        // Relayed to the heir: the retired node's row with the hub's write-off.
        let mut whole = Rights::new();
        whole.create(&old, 10);
        whole.transfer(&old, &hub, 4).expect("held");
        whole.retire(&old);
        // Later in the stream: the hub's row alone, after it settled a deficit.
        let mut later = whole.clone();
        later.consume(&hub, 1).expect("held");
        let later = later.row(&hub);
        let merged = coalesce(
            vec![
                Item::Rights {
                    key: key.clone(),
                    state: whole.clone(),
                },
                Item::Rights {
                    key: key.clone(),
                    state: later.clone(),
                },
            ]
            .into_iter(),
        );
        let mut expected = whole;
        expected.merge(&later);
        assert_eq!(
            merged,
            vec![Item::Rights {
                key,
                state: expected
            }]
        );
        match &merged[0] {
            Item::Rights { state, .. } => {
                assert_eq!(state.r.get(&old).and_then(|r| r.get(&old)), Some(&10));
                assert_eq!(state.u.get(&hub), Some(&1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_keep_the_latest_state_per_key_and_every_record() {
        let key = Scarce::Stock {
            sku: Sku::parse("TEA").expect("sku"),
            location: LocationId("store-berlin".into()),
        };
        let mut older = Rights::new();
        older.create(&ReplicaId::hub(), 1);
        let mut newer = older.clone();
        newer.create(&ReplicaId::hub(), 1);
        let settlement = |n| {
            Item::Settlement(Settlement {
                deficit: ulid::Ulid::new(),
                settled: n,
                short: 0,
                flagged: Vec::new(),
                at: protocol::replication::Hlc {
                    ms: 1,
                    c: 0,
                    r: ReplicaId::hub(),
                },
            })
        };
        let (s1, s2) = (settlement(1), settlement(2));
        let items = vec![
            Item::Rights {
                key: key.clone(),
                state: older,
            },
            s1.clone(),
            Item::Rights {
                key: key.clone(),
                state: newer.clone(),
            },
            s2.clone(),
        ];
        assert_eq!(
            coalesce(items.into_iter()),
            vec![Item::Rights { key, state: newer }, s1, s2]
        );
    }
}
