//! Cross-node cache invalidation: PostgreSQL `LISTEN`/`NOTIFY` on the channel
//! [`CHANNEL`] (`omnihub_changes`).
//!
//! Several hub modules keep a cache loaded at start (boards and playlists, experiment
//! definitions, the back office's promotions and coupons, the catalog snapshot, segment
//! definitions). Where a node changes one, it calls [`Changes::announce`] with the [`Topic`];
//! every other node listening runs the reloads registered for that topic ([`Changes::on`]).
//! The payload is `<schema> <node id> <topic>`: the schema keeps tests (one schema each, one
//! database) apart, the node id lets a node skip its own announcements (it changed its own
//! cache already).
//!
//! A notification is sent by a statement of its own after the change is stored (so a node
//! that reloads on it reads the change). Notifications are not stored: if the listening
//! connection drops, the next receive reconnects and **every** registered reload runs, which
//! covers what was missed meanwhile. Embedded (sled): [`Changes::embedded`] announces nothing
//! and never reloads — one process, one cache.

use crate::storage::postgres::{db, PgStorage};
use crate::storage::Result;
use sqlx::postgres::{PgListener, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The notification channel.
pub const CHANNEL: &str = "omnihub_changes";

/// Pause before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// What changed: a cache other nodes reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// In-store boards' playlists and audience.
    Boards,
    /// Experiment definitions.
    Experiments,
    /// The back office's promotions and coupons.
    Promotions,
    /// The catalog snapshot.
    Catalog,
    /// Segment definitions.
    Segments,
    /// Stock levels (the inventory shards' views).
    Stock,
    /// Content slot definitions (personalization).
    Slots,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::Boards,
        Topic::Experiments,
        Topic::Promotions,
        Topic::Catalog,
        Topic::Segments,
        Topic::Stock,
        Topic::Slots,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::Boards => "boards",
            Topic::Experiments => "experiments",
            Topic::Promotions => "promotions",
            Topic::Catalog => "catalog",
            Topic::Segments => "segments",
            Topic::Stock => "stock",
            Topic::Slots => "slots",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A reload: reads the stored state again (blocking calls allowed; it runs on the blocking
/// pool).
pub type Reload = Arc<dyn Fn() + Send + Sync>;

type Reloads = Arc<Mutex<HashMap<Topic, Vec<Reload>>>>;

/// Announces this node's changes and reloads on the others'.
#[derive(Clone)]
pub struct Changes {
    reloads: Reloads,
    /// To the listening task (which sends the notifications); `None` when embedded.
    announce: Option<mpsc::UnboundedSender<Topic>>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

/// A notification's payload.
fn payload(schema: &str, node: &str, topic: Topic) -> String {
    format!("{schema} {node} {}", topic.as_str())
}

/// The topic of a payload for `schema` from a node other than `node`.
fn parse_payload(payload: &str, schema: &str, node: &str) -> Option<Topic> {
    let mut parts = payload.splitn(3, ' ');
    let (s, from, topic) = (parts.next()?, parts.next()?, parts.next()?);
    (s == schema && from != node).then_some(())?;
    Topic::parse(topic)
}

impl Changes {
    /// One process: nothing to tell anyone.
    pub fn embedded() -> Changes {
        Changes {
            reloads: Reloads::default(),
            announce: None,
            stop: Arc::default(),
        }
    }

    /// Listens on `pg`'s database as `node_id` (its own announcements are skipped). The node
    /// id must have no spaces. Must be called within a tokio runtime.
    pub async fn listen(pg: &PgStorage, node_id: &str) -> Result<Changes> {
        if node_id.is_empty() || node_id.contains(char::is_whitespace) {
            return Err(crate::storage::StorageError::Io(format!(
                "a node id for change notifications must be non-empty without spaces: {node_id:?}"
            )));
        }
        let mut listener = PgListener::connect_with(pg.pool()).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        let reloads = Reloads::default();
        let (announce, announcements) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let task = Listening {
            pool: pg.pool().clone(),
            schema: pg.schema().to_string(),
            node: node_id.to_string(),
            reloads: reloads.clone(),
        };
        tokio::spawn(task.run(listener, announcements, stopped));
        Ok(Changes {
            reloads,
            announce: Some(announce),
            stop: Arc::new(Mutex::new(Some(stop))),
        })
    }

    /// Runs `reload` when another node announces `topic` (and after a reconnection). Embedded,
    /// nothing ever reloads: `reload` is dropped at once (it may hold what holds these
    /// changes, which must not keep each other alive).
    pub fn on(&self, topic: Topic, reload: impl Fn() + Send + Sync + 'static) {
        if self.announce.is_none() {
            return;
        }
        self.reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(topic)
            .or_default()
            .push(Arc::new(reload));
    }

    /// Tells the other nodes `topic` changed (call it after the change is stored). Does not
    /// wait; callable from any thread.
    pub fn announce(&self, topic: Topic) {
        if let Some(tx) = &self.announce {
            if tx.send(topic).is_err() {
                tracing::warn!(
                    topic = topic.as_str(),
                    "change notifications are stopped; not announced"
                );
            }
        }
    }

    /// Stops listening (shutdown), and drops the reloads (they hold the caches, which hold
    /// these changes: the cycle ends here).
    pub fn stop(&self) {
        self.reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }
}

struct Listening {
    pool: PgPool,
    schema: String,
    node: String,
    reloads: Reloads,
}

impl Listening {
    async fn run(
        self,
        mut listener: PgListener,
        mut announcements: mpsc::UnboundedReceiver<Topic>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                _ = &mut stop => return,
                topic = announcements.recv() => match topic {
                    Some(topic) => self.notify(topic).await,
                    None => return,
                },
                next = listener.try_recv() => match next {
                    Ok(Some(n)) => {
                        if let Some(topic) = parse_payload(n.payload(), &self.schema, &self.node) {
                            self.reload(Some(topic));
                        }
                    }
                    // The connection dropped; the next receive reconnects. What was announced
                    // meanwhile is lost, so everything reloads.
                    Ok(None) => {
                        tracing::info!("change notifications reconnected; reloading every cache");
                        self.reload(None);
                    }
                    // The listening connection may be dead for good (a reset, a terminated
                    // backend): listen again on a fresh one; once it listens everything
                    // reloads, since what was announced meanwhile is lost.
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for changes failed; listening again");
                        match self.listen_again(&mut stop).await {
                            Some(fresh) => listener = fresh,
                            None => return,
                        }
                        tracing::info!("listening for changes again; reloading every cache");
                        self.reload(None);
                    }
                },
            }
        }
    }

    /// A new listener on `CHANNEL`, tried every [`RETRY`] until it listens (`None`: stopped
    /// meanwhile).
    async fn listen_again(&self, stop: &mut oneshot::Receiver<()>) -> Option<PgListener> {
        loop {
            tokio::select! {
                _ = &mut *stop => return None,
                _ = tokio::time::sleep(RETRY) => {}
            }
            let listening = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match listening.await {
                Ok(listener) => return Some(listener),
                Err(e) => tracing::warn!(error = %e, "listening for changes; retrying"),
            }
        }
    }

    async fn notify(&self, topic: Topic) {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(&self.schema, &self.node, topic))
            .execute(&self.pool)
            .await;
        if let Err(e) = sent {
            // The other nodes miss this change until their next reload.
            tracing::warn!(error = %e, topic = topic.as_str(), "announcing a change failed");
        }
    }

    /// Runs the reloads of `topic` (every topic's: `None`) on the blocking pool.
    fn reload(&self, topic: Option<Topic>) {
        let reloads: Vec<Reload> = {
            let all = self
                .reloads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match topic {
                Some(t) => all.get(&t).cloned().unwrap_or_default(),
                None => all.values().flatten().cloned().collect(),
            }
        };
        if reloads.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for reload in reloads {
                reload();
            }
        });
    }
}

/// Makes every cache of shared data on this node follow the other nodes' changes, and
/// announce this node's: the catalog snapshot, the stock views, the promotions, the boards'
/// playlists, segment definitions, content slots and experiment definitions. (Coupons, orders,
/// baskets and customers are read from the store, not cached.)
pub fn follow_all(changes: &Changes, handle: &crate::app::HubHandle) {
    handle
        .catalog
        .do_send(crate::actors::catalog::FollowChanges(changes.clone()));
    handle.inventory.follow_changes(changes.clone());
    handle.backoffice.follow_changes(changes.clone());
    handle.boards.follow_changes(changes.clone());
    handle.experiments.follow_changes(changes.clone());
    let personalization = Arc::downgrade(&handle.personalization);
    changes.on(Topic::Slots, move || {
        if let Some(p) = personalization.upgrade() {
            if let Err(e) = p.reload_slots() {
                tracing::error!(error = %e, "reloading slots another node changed");
            }
        }
    });
    let _ = handle.personalization.changes.set(changes.clone());
    let (backoffice, experience) = (handle.backoffice.clone(), handle.experience.clone());
    changes.on(Topic::Segments, move || {
        let synced = crate::experience::segments::definitions(&backoffice).and_then(|defs| {
            tokio::runtime::Handle::current().block_on(experience.sync_segments(defs))
        });
        if let Err(e) = synced {
            tracing::error!(error = %e, "reloading segments another node changed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn payloads_name_the_schema_node_and_topic() {
        for topic in Topic::ALL {
            let p = payload("t_1", "hub-a", topic);
            assert_eq!(parse_payload(&p, "t_1", "hub-b"), Some(topic));
            assert_eq!(parse_payload(&p, "t_1", "hub-a"), None, "own: skipped");
            assert_eq!(parse_payload(&p, "t_2", "hub-b"), None, "another schema");
        }
        assert_eq!(parse_payload("t_1 hub-a nothing", "t_1", "hub-b"), None);
        assert_eq!(parse_payload("garbage", "t_1", "hub-b"), None);
    }

    #[tokio::test]
    async fn embedded_announces_nothing_and_never_reloads() {
        let changes = Changes::embedded();
        let reloaded = Arc::new(AtomicUsize::new(0));
        changes.on(Topic::Experiments, {
            let reloaded = reloaded.clone();
            move || {
                reloaded.fetch_add(1, Ordering::SeqCst);
            }
        });
        changes.announce(Topic::Experiments);
        changes.stop();
        tokio::task::yield_now().await;
        assert_eq!(reloaded.load(Ordering::SeqCst), 0);
    }
}
