//! The sync client: one WebSocket to the hub, as `docs/edge-sync.md` says.
//!
//! A session: connect with `Authorization: Bearer <credential>` (frames limited to
//! `MAX_FRAME_BYTES`), send `Hello`, wait for `Welcome` (learn the hub's time, drop what the hub
//! already has, run the rights policy), then, in one loop: send outbox batches from the hub's
//! `have + 1` (at most [`MAX_IN_FLIGHT`] unacknowledged, woken at once when a local change
//! becomes durable), apply incoming `Deltas` and acknowledge them once durable, store `Catalog`
//! chunks (with the promotions that travel in them) and `CatalogDelta` parts (answering one that
//! does not start at the node's version with `CatalogWanted`), send a heartbeat every
//! `heartbeat_every`, and close after `idle_timeout` of silence.
//! Between sessions: exponential backoff with full jitter, reset after a `Welcome`; at the
//! maximum after a version or replica refusal, and after a `401` (an unknown or retired node, or
//! a bad credential), which is also shown as the sync problem until a `Welcome` clears it.

use crate::config::EdgeSettings;
use crate::storage::StagedChunk;
use crate::store::{now_ms, Batch, CatalogDeltaPart, DeltaOutcome, Store};
use futures_util::{SinkExt, StreamExt};
use protocol::replication::sync::{
    close, decode_frame, encode_frame, Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use protocol::replication::ReplicaId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Unacknowledged batches in flight at most.
pub const MAX_IN_FLIGHT: usize = 4;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Sink = futures_util::stream::SplitSink<Ws, Message>;
type Stream = futures_util::stream::SplitStream<Ws>;

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backoff {
    /// Exponential with full jitter.
    Grow,
    /// The maximum: retrying sooner will not help (version or replica refused).
    Max,
    /// Shutting down: no further attempt.
    Stop,
}

/// How a session ended.
#[derive(Debug)]
struct End {
    welcomed: bool,
    reason: String,
    backoff: Backoff,
}

impl End {
    fn grow(reason: impl Into<String>) -> End {
        End {
            welcomed: false,
            reason: reason.into(),
            backoff: Backoff::Grow,
        }
    }
}

/// Runs sessions until `shutdown` turns true.
pub(crate) async fn run(
    store: Arc<Store>,
    settings: Arc<EdgeSettings>,
    mut shutdown: watch::Receiver<bool>,
    boards: Option<Arc<crate::boards::Boards>>,
) {
    store.update_sync(|s| {
        s.running = true;
        s.since_ms = Some(now_ms());
    });
    let mut attempt: u32 = 0;
    let urls = settings.hub_sync_urls();
    let mut turn = 0usize;
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            break;
        }
        let url = &urls[turn % urls.len()];
        let span = tracing::info_span!("sync_session", hub = %url, attempt);
        let end = tracing::Instrument::instrument(
            session(&store, &settings, url, &mut shutdown, boards.clone()),
            span,
        )
        .await;
        // The hub node may be gone: the next session tries the next one (with one URL, the
        // same again).
        turn = turn.wrapping_add(1);
        store.disconnected();
        let was_connected = store.sync_state().connected;
        store.update_sync(|s| {
            s.connected = false;
            if was_connected || s.since_ms.is_none() {
                s.since_ms = Some(now_ms());
            }
            s.last_close = Some(end.reason.clone());
        });
        if end.welcomed {
            attempt = 0;
        }
        let delay = match end.backoff {
            Backoff::Stop => break,
            Backoff::Max => settings.sync.backoff_max,
            Backoff::Grow => {
                let d = backoff_delay(
                    attempt,
                    settings.sync.backoff_initial,
                    settings.sync.backoff_max,
                );
                attempt = attempt.saturating_add(1);
                d
            }
        };
        tracing::info!(reason = %end.reason, retry_in_ms = delay.as_millis() as u64, "sync session ended");
        store.update_sync(|s| {
            s.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
            s.backoff_ms = Some(delay.as_millis() as u64);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        store.update_sync(|s| s.next_attempt_ms = None);
    }
    store.update_sync(|s| {
        s.running = false;
        s.connected = false;
    });
}

/// A random delay in `[0, min(max, initial × 2^attempt)]` (full jitter).
pub(crate) fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let cap = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max);
    let mut bytes = [0u8; 8];
    let fraction = match getrandom::getrandom(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 1.0,
    };
    cap.mul_f64(fraction)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::storage::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("storage: {e}")),
        Err(e) => Err(format!("storage task failed: {e}")),
    }
}

async fn session(
    store: &Arc<Store>,
    settings: &EdgeSettings,
    url: &str,
    shutdown: &mut watch::Receiver<bool>,
    boards: Option<Arc<crate::boards::Boards>>,
) -> End {
    let ws = match connect(store, settings, url).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let (mut sink, mut stream) = ws.split();
    let me = settings.replica.clone();
    let s = store.clone();
    let (have, catalog_version, pending) = match blocking(move || s.hello_state()).await {
        Ok(h) => h,
        Err(e) => return End::grow(e),
    };
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        replica: me.clone(),
        location: settings.location.clone(),
        have,
        catalog_version,
        time_ms: now_ms(),
        pending,
        // The session is the catalog's only writer: it has not changed since `hello_state`.
        catalog_fingerprint: store.catalog().fingerprint.clone(),
        catalog_deltas: true,
        // This node applies coupon terms, redeems coupon rights and hands them back.
        coupons: true,
    };
    if let Err(e) = send(&mut sink, &hello).await {
        return End::grow(e);
    }
    let welcome =
        wait_for_welcome(&mut sink, &mut stream, settings.sync.idle_timeout, shutdown).await;
    let (hub_have, hub_time_ms) = match welcome {
        Ok(w) => w,
        Err(end) => return end,
    };
    let local_ms = now_ms();
    let s = store.clone();
    let hub_have_me = hub_have.get(&me).copied().unwrap_or(0);
    let last = store.cursors().map_or(0, |c| c.last_seq());
    if hub_have_me > last {
        // Sending now would have the hub drop this node's new changes as duplicates.
        let problem = format!(
            "the hub has seq {hub_have_me} from replica {me} but this node made only {last}: was this replica id reused after a rebuild? A rebuilt node needs a new replica id (and the old one retired on the hub)"
        );
        tracing::error!("{problem}");
        store.update_sync(|st| st.problem = Some(problem.clone()));
        close_with(&mut sink, &mut stream, 1000, "replica id reused").await;
        return End {
            welcomed: false,
            reason: problem,
            backoff: Backoff::Max,
        };
    }
    let (skew, next) = match blocking(move || s.welcome(hub_have_me, hub_time_ms, local_ms)).await {
        Ok(w) => w,
        Err(e) => return End::grow(e),
    };
    let max_skew = settings.max_clock_skew.as_millis() as u64;
    if skew.unsigned_abs() > max_skew {
        tracing::warn!(
            skew_ms = skew,
            limit_ms = max_skew,
            "this node's clock differs from the hub's beyond the limit: fix the node's time (stamps use the hub's time meanwhile)"
        );
    }
    store.update_sync(|s| {
        s.connected = true;
        s.since_ms = Some(now_ms());
        s.skew_ms = Some(skew);
        s.next_attempt_ms = None;
    });
    tracing::info!(skew_ms = skew, resume_from = next, "connected to the hub");
    // The boards' playlist this node holds: the hub sends its own if it differs.
    let s = store.clone();
    let boards_have = match blocking(move || crate::boards::stored_playlist(&s)).await {
        Ok(p) => p.version,
        Err(e) => return End::grow(e),
    };
    if let Err(e) = send(
        &mut sink,
        &Frame::BoardsHave {
            version: boards_have,
        },
    )
    .await
    {
        return End::grow(e);
    }
    let mut live = Live {
        store: store.clone(),
        me,
        next,
        in_flight: VecDeque::new(),
        boards,
    };
    let mut end = live.run(settings, &mut sink, &mut stream, shutdown).await;
    end.welcomed = true;
    end
}

async fn connect(store: &Store, settings: &EdgeSettings, url: &str) -> Result<Ws, End> {
    let mut request = url
        .into_client_request()
        .map_err(|e| End::grow(format!("hub url '{url}' is unusable: {e}")))?;
    let mut auth = format!("Bearer {}", settings.credential_text())
        .parse::<tokio_tungstenite::tungstenite::http::HeaderValue>()
        .map_err(|_| {
            End::grow("the credential cannot be sent in a header (use printable ASCII)")
        })?;
    auth.set_sensitive(true);
    request.headers_mut().insert("authorization", auth);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(settings.sync.idle_timeout, connecting).await {
        Err(_) => Err(End::grow("connecting to the hub timed out")),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default();
            if status == tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED {
                tracing::error!(
                    %status,
                    %body,
                    replica = %settings.replica,
                    "the hub refused this node's credential: check `credential` and that the hub lists replica '{}' (not retired) in [[edge.nodes]]",
                    settings.replica
                );
                // Retrying sooner will not help: a person must fix the credential, or this
                // replica was retired (a rebuilt node runs under a new replica id).
                let problem = format!(
                    "the hub refused this node (401): replica '{}' is unknown to the hub, retired, or its credential is wrong. Check `credential` and the hub's [[edge.nodes]]; a retired replica must not run again (a rebuilt node takes a new replica id). Hub said: {body}",
                    settings.replica
                );
                store.update_sync(|s| s.problem = Some(problem));
                Err(End {
                    welcomed: false,
                    reason: format!("401 Unauthorized: the hub refused the credential {body}"),
                    backoff: Backoff::Max,
                })
            } else {
                tracing::warn!(%status, %body, "the hub refused the sync connection");
                Err(End::grow(format!("the hub answered {status} {body}")))
            }
        }
        Ok(Err(e)) => Err(End::grow(format!("cannot connect to the hub: {e}"))),
    }
}

/// Waits for `Welcome` (at most `idle`); returns the hub's have vector and time.
async fn wait_for_welcome(
    sink: &mut Sink,
    stream: &mut Stream,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(std::collections::BTreeMap<ReplicaId, u64>, u64), End> {
    let deadline = Instant::now() + idle;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = tokio::time::sleep_until(deadline) => {
                close_with(sink, stream, close::IDLE, "no Welcome in time").await;
                return Err(End::grow(format!("no Welcome within {idle:?}")));
            }
            _ = shutdown.changed() => {
                close_with(sink, stream, 1000, "the node is shutting down").await;
                return Err(End { welcomed: false, reason: "shut down".into(), backoff: Backoff::Stop });
            }
        };
        match interpret(sink, stream, msg).await? {
            Some(Frame::Welcome {
                have, hub_time_ms, ..
            }) => return Ok((have, hub_time_ms)),
            Some(other) => {
                tracing::debug!(frame = kind(&other), "a frame before Welcome: ignored");
            }
            None => {}
        }
    }
}

/// Makes sense of what the stream gave (`None` for pings, pongs and raw frames); ends the
/// session on a close, an error, an oversized or undecodable frame (closing with a reason).
async fn interpret(
    sink: &mut Sink,
    stream: &mut Stream,
    msg: Option<Result<Message, WsError>>,
) -> Result<Option<Frame>, End> {
    match msg {
        None => Err(End::grow("the hub closed the connection")),
        Some(Err(WsError::Capacity(e))) => {
            let reason = format!("frame over {MAX_FRAME_BYTES} bytes");
            tracing::warn!(error = %e, "{reason}: closing");
            close_with(sink, stream, close::TOO_BIG, &reason).await;
            Err(End::grow(format!("closed: {reason} ({e})")))
        }
        Some(Err(e)) => Err(End::grow(format!("connection lost: {e}"))),
        Some(Ok(Message::Binary(bytes))) => {
            if bytes.len() > MAX_FRAME_BYTES {
                let reason = format!("frame over {MAX_FRAME_BYTES} bytes");
                close_with(sink, stream, close::TOO_BIG, &reason).await;
                return Err(End::grow(format!("closed: {reason}")));
            }
            match decode_frame(&bytes) {
                Ok(frame) => Ok(Some(frame)),
                Err(e) => {
                    let reason = format!("undecodable frame: {e}");
                    tracing::warn!("{reason}: closing");
                    close_with(sink, stream, close::MALFORMED, &reason).await;
                    Err(End::grow(format!("closed: {reason}")))
                }
            }
        }
        Some(Ok(Message::Text(_))) => {
            let reason = "a text frame: sync frames are binary";
            close_with(sink, stream, close::MALFORMED, reason).await;
            Err(End::grow(format!("closed: {reason}")))
        }
        Some(Ok(Message::Close(frame))) => Err(closed_by_hub(frame)),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
    }
}

fn closed_by_hub(frame: Option<CloseFrame>) -> End {
    let Some(frame) = frame else {
        return End::grow("the hub closed the connection (no reason)");
    };
    let code = u16::from(frame.code);
    let reason = format!("the hub closed with {code}: {}", frame.reason.as_str());
    match code {
        close::UNSUPPORTED_VERSION => {
            tracing::error!(code, reason = %frame.reason.as_str(), "the hub does not speak this node's sync protocol version {PROTOCOL_VERSION}: upgrade the node or the hub");
            End {
                welcomed: false,
                reason,
                backoff: Backoff::Max,
            }
        }
        close::WRONG_REPLICA => {
            tracing::error!(code, reason = %frame.reason.as_str(), "the hub refused this replica id (retired, or not the one the credential belongs to)");
            End {
                welcomed: false,
                reason,
                backoff: Backoff::Max,
            }
        }
        _ => {
            tracing::warn!(code, reason = %frame.reason.as_str(), "the hub closed the connection");
            End::grow(reason)
        }
    }
}

/// Sends a close frame with a code and reason, then reads until the peer closes too (briefly).
async fn close_with(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &str) {
    let mut cut = reason.len().min(120);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..cut].to_string().into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

async fn send(sink: &mut Sink, frame: &Frame) -> Result<(), String> {
    let bytes = encode_frame(frame).map_err(|e| format!("cannot encode a frame: {e}"))?;
    if bytes.len() > MAX_FRAME_BYTES {
        tracing::error!(
            bytes = bytes.len(),
            "a frame over the limit: the hub will refuse it"
        );
    }
    sink.send(Message::Binary(bytes.into()))
        .await
        .map_err(|e| format!("connection lost while sending: {e}"))
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Welcome { .. } => "welcome",
        Frame::Deltas { .. } => "deltas",
        Frame::Ack { .. } => "ack",
        Frame::Catalog { .. } => "catalog",
        Frame::CatalogDelta { .. } => "catalog_delta",
        Frame::CatalogWanted { .. } => "catalog_wanted",
        Frame::Heartbeat { .. } => "heartbeat",
        Frame::BoardsHave { .. } => "boards_have",
        Frame::Boards { .. } => "boards",
        Frame::BoardsReport { .. } => "boards_report",
        Frame::Unknown => "unknown",
    }
}

/// The connected part of a session.
struct Live {
    store: Arc<Store>,
    me: ReplicaId,
    /// The next own seq to send.
    next: u64,
    /// (from, to) of the batches sent and not yet acknowledged.
    in_flight: VecDeque<(u64, u64)>,
    /// The node's boards, reported to the hub with each heartbeat (when any is configured).
    boards: Option<Arc<crate::boards::Boards>>,
}

impl Live {
    async fn run(
        &mut self,
        settings: &EdgeSettings,
        sink: &mut Sink,
        stream: &mut Stream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut durable = self.store.durable_seq();
        let idle = settings.sync.idle_timeout;
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + settings.sync.heartbeat_every,
            settings.sync.heartbeat_every,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            if let Err(e) = self.pump(sink, &mut durable).await {
                return End::grow(e);
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    close_with(sink, stream, 1000, "the node is shutting down").await;
                    return End { welcomed: true, reason: "shut down".into(), backoff: Backoff::Stop };
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    match interpret(sink, stream, msg).await {
                        Ok(Some(frame)) => {
                            if let Err(end) = self.handle(sink, stream, frame).await {
                                return end;
                            }
                        }
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                }
                _ = durable.changed() => {}
                _ = heartbeat.tick() => {
                    let pending = self.store.cursors().map_or(0, |c| c.pending_entries());
                    let beat = Frame::Heartbeat { time_ms: now_ms(), pending };
                    if let Err(e) = send(sink, &beat).await {
                        return End::grow(e);
                    }
                    if let Some(boards) = self.boards.as_ref().filter(|b| b.configured()) {
                        let report = Frame::BoardsReport { boards: boards.reports() };
                        if let Err(e) = send(sink, &report).await {
                            return End::grow(e);
                        }
                    }
                }
                _ = tokio::time::sleep_until(last_heard + idle) => {
                    close_with(sink, stream, close::IDLE, "nothing heard within the idle timeout").await;
                    return End::grow(format!("nothing heard from the hub for {idle:?}"));
                }
            }
        }
    }

    /// Sends batches while fewer than [`MAX_IN_FLIGHT`] are unacknowledged and durable entries
    /// wait.
    async fn pump(
        &mut self,
        sink: &mut Sink,
        durable: &mut watch::Receiver<u64>,
    ) -> Result<(), String> {
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let upto = *durable.borrow_and_update();
            if self.next > upto {
                return Ok(());
            }
            let (store, from) = (self.store.clone(), self.next);
            let Some(Batch { from, to, items }) =
                blocking(move || store.outbox_batch(from, upto)).await?
            else {
                return Ok(());
            };
            fail::fail_point!("edge.sync.before_send_batch", |_| std::process::abort());
            tracing::debug!(from, to, items = items.len(), "sending a batch");
            let frame = Frame::Deltas {
                origin: self.me.clone(),
                from_seq: from,
                to_seq: to,
                items,
            };
            send(sink, &frame).await?;
            self.in_flight.push_back((from, to));
            self.next = to + 1;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        sink: &mut Sink,
        stream: &mut Stream,
        frame: Frame,
    ) -> Result<(), End> {
        match frame {
            Frame::Deltas {
                origin,
                from_seq,
                to_seq,
                items,
            } => {
                if from_seq == 0 || from_seq > to_seq || origin == self.me {
                    let reason = format!("a Deltas frame with origin {origin} and seqs {from_seq}..={to_seq} breaks the protocol");
                    close_with(sink, stream, close::MALFORMED, &reason).await;
                    return Err(End::grow(format!("closed: {reason}")));
                }
                let store = self.store.clone();
                let o = origin.clone();
                let seq = blocking(move || store.apply_deltas(&o, from_seq, to_seq, items))
                    .await
                    .map_err(End::grow)?;
                fail::fail_point!("edge.sync.after_apply_before_ack", |_| std::process::abort(
                ));
                send(sink, &Frame::Ack { origin, seq })
                    .await
                    .map_err(End::grow)?;
            }
            Frame::Ack { origin, seq } if origin == self.me => {
                let store = self.store.clone();
                blocking(move || store.ack(seq)).await.map_err(End::grow)?;
                self.acknowledged(seq);
                self.store.update_sync(|s| s.last_ack_ms = Some(now_ms()));
            }
            Frame::Catalog {
                version,
                part,
                parts,
                categories,
                promotions,
                products,
                fingerprint,
            } => {
                let store = self.store.clone();
                let chunk = StagedChunk {
                    parts,
                    categories,
                    promotions,
                    products,
                    fingerprint,
                };
                blocking(move || store.apply_catalog_part(version, part, chunk))
                    .await
                    .map_err(End::grow)?;
            }
            Frame::CatalogDelta {
                from_version,
                to_version,
                fingerprint,
                part,
                parts,
                categories,
                removed_categories,
                promotions,
                removed,
                products,
            } => {
                if part >= parts || from_version == to_version {
                    let reason = format!("a CatalogDelta {from_version} → {to_version}, part {part} of {parts}, breaks the protocol");
                    close_with(sink, stream, close::MALFORMED, &reason).await;
                    return Err(End::grow(format!("closed: {reason}")));
                }
                let delta = CatalogDeltaPart {
                    from_version,
                    to_version,
                    fingerprint,
                    part,
                    parts,
                    categories,
                    removed_categories,
                    promotions,
                    removed,
                    products,
                };
                let store = self.store.clone();
                let outcome = blocking(move || store.apply_catalog_delta(delta))
                    .await
                    .map_err(End::grow)?;
                if let (DeltaOutcome::Refused { current }, 0) = (outcome, part) {
                    tracing::warn!(
                        current,
                        from_version,
                        to_version,
                        "a catalog delta does not start at this node's version: asking for the whole catalog"
                    );
                    send(sink, &Frame::CatalogWanted { version: current })
                        .await
                        .map_err(End::grow)?;
                }
            }
            Frame::Boards { version, playlist } => {
                let store = self.store.clone();
                blocking(move || crate::boards::store_playlist(&store, version, playlist))
                    .await
                    .map_err(End::grow)?;
            }
            Frame::Heartbeat { time_ms, pending } => {
                tracing::trace!(hub_time_ms = time_ms, hub_pending = pending, "heartbeat");
            }
            other => tracing::debug!(
                frame = kind(&other),
                "a frame with nothing to do here: ignored"
            ),
        }
        Ok(())
    }

    /// The hub has everything up to `seq`: forget the batches it covers; a hub that has less
    /// than the next batch in flight expects (a gap) makes the node resend from `seq + 1`.
    fn acknowledged(&mut self, seq: u64) {
        while self.in_flight.front().is_some_and(|(_, to)| *to <= seq) {
            self.in_flight.pop_front();
        }
        if self
            .in_flight
            .front()
            .is_some_and(|(from, _)| *from > seq + 1)
        {
            tracing::info!(
                have = seq,
                "the hub is missing earlier entries: resending from there"
            );
            self.in_flight.clear();
            self.next = seq + 1;
        } else {
            self.next = self.next.max(seq + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_the_doubling_cap() {
        let (initial, max) = (Duration::from_millis(500), Duration::from_secs(30));
        for attempt in 0..40 {
            let cap = initial
                .saturating_mul(2u32.saturating_pow(attempt.min(31)))
                .min(max);
            for _ in 0..20 {
                assert!(backoff_delay(attempt, initial, max) <= cap);
            }
        }
        assert!(backoff_delay(100, initial, max) <= max);
    }

    #[test]
    fn an_ack_drops_covered_batches_and_a_gap_rewinds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            Store::open(
                dir.path(),
                4,
                crate::store::Identity {
                    replica: ReplicaId("berlin".into()),
                    location: protocol::LocationId("store-berlin".into()),
                    store_name: "Berlin".into(),
                    safety_buffer: 2,
                    online_share_percent: 50,
                },
            )
            .expect("opens"),
        );
        let mut live = Live {
            store,
            me: ReplicaId("berlin".into()),
            next: 10,
            in_flight: VecDeque::from([(1, 3), (4, 6), (7, 9)]),
            boards: None,
        };
        live.acknowledged(3);
        assert_eq!(live.in_flight, VecDeque::from([(4, 6), (7, 9)]));
        assert_eq!(live.next, 10);
        // A duplicate answer changes nothing.
        live.acknowledged(3);
        assert_eq!(live.in_flight.len(), 2);
        // The hub says it has only 1: it lost nothing we can tell, but it wants 2.. again.
        live.acknowledged(1);
        assert!(live.in_flight.is_empty());
        assert_eq!(live.next, 2);
    }
}
