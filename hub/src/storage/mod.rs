//! Storage behind async, domain-level traits. The actors see baskets, customers, sessions, stock,
//! the catalog, the event log and the outbox, never keys and bytes; every write is a
//! [`UnitOfWork`] that commits entity changes together with their outbox rows, atomically and
//! durably. The embedded default is [`sled::SledStorage`]; the cluster backend on PostgreSQL is
//! [`postgres::PgStorage`], whose event log [`jetstream`] relays to NATS JetStream for readers
//! that should not load the database. `conformance` (tests) is one suite of the traits' semantics that both pass.

#[cfg(test)]
pub(crate) mod conformance;
pub mod jetstream;
pub mod kv;
pub mod oauth;
pub mod postgres;
pub mod sled;

use async_trait::async_trait;
use protocol::order::{CheckoutRecord, HoldRecord, OrderRecord};
use protocol::{
    Basket, BasketId, Category, CheckoutId, CustomerId, CustomerRecord, Event, LocationId, OrderId,
    OutboxMessage, Product, SessionRecord, Sku, StockLevel,
};

/// What went wrong in storage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error(transparent)]
    Codec(#[from] protocol::CodecError),
    /// A unit of work's precondition did not hold (e.g. the email is already registered); nothing
    /// of it was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The writer has stopped (shutting down).
    #[error("storage is closed")]
    Closed,
    /// A write carried a fencing token older than the current one (cluster backends).
    #[error("fenced: this node no longer owns the entity")]
    Fenced,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A token proving ownership of an entity's shard (cluster backends enforce it; sled ignores it):
/// the shard, and the number its lease got when this owner acquired it (greater on every
/// acquisition, see `postgres::lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FencingToken {
    pub shard: u64,
    pub token: u64,
}

/// One change of one entity.
#[derive(Debug, Clone)]
pub enum Change {
    PutBasket(Basket),
    /// Makes `token_hash` (SHA-256 of an anonymous basket's token) reach `basket`.
    PutBasketToken {
        token_hash: [u8; 32],
        basket: BasketId,
    },
    PutCustomer(CustomerRecord),
    /// Claims an email for a customer; the unit fails with `Conflict` if it is already claimed.
    ClaimEmail {
        email: String,
        customer: CustomerId,
    },
    /// Claims a phone number or loyalty number for a customer (idempotent for the same
    /// customer); the unit fails with `Conflict` if another customer holds it.
    ClaimAlias {
        alias: CustomerAlias,
        customer: CustomerId,
    },
    /// Gives up a phone number or loyalty number (the customer changed or removed it).
    ReleaseAlias(CustomerAlias),
    /// Gives up a claimed email (the customer's data was erased).
    ReleaseEmail(String),
    PutSession {
        token_hash: [u8; 32],
        session: SessionRecord,
    },
    DeleteSession {
        token_hash: [u8; 32],
    },
    PutStock(StockLevel),
    /// Stores `level` if the stored level of its SKU and location is still `expected` (`None`:
    /// none stored yet); the unit fails with `Conflict` otherwise. Where several hub processes
    /// share the store, each keeps a view of the levels: this makes the store the arbiter, so
    /// no two nodes promise the same unit. A store with one process (sled) stores `level`: its
    /// inventory shard is the only writer, so the view is the stored level.
    SwapStock {
        expected: Option<StockLevel>,
        level: StockLevel,
    },
    PutCategory(Category),
    PutProduct(Product),
    /// Removes a product from the catalog (the ERP withdrew its last variant).
    DeleteProduct(protocol::ProductId),
    /// Stores a checkout; open (payment pending) checkouts are indexed for the sweeper.
    PutCheckout(CheckoutRecord),
    PutHold(HoldRecord),
    DeleteHold {
        checkout: CheckoutId,
        sku: Sku,
        location: LocationId,
    },
    /// Creates an order: the unit fails with `Conflict` if its checkout already has one, so a
    /// payment can never make two orders.
    CreateOrder(OrderRecord),
    /// Updates an existing order (progress, refunds, flags).
    PutOrder(OrderRecord),
    /// Remembers that a provider's webhook event was handled.
    MarkWebhookEvent(String),
    /// Remembers, in one record, the ERP rows a unit applied (16-byte digests of their ids), so
    /// each is applied once; read back with [`InventoryStore::import_marks`].
    PutImportMarks(ImportMarks),
    /// Removes a delivered outbox message.
    AckOutbox {
        destination: String,
        id: ulid::Ulid,
    },
    /// Stores a pending outbox message again (its attempts and next attempt after a failure).
    PutOutbox(OutboxMessage),
    /// Moves a pending message to the dead letters (given up on).
    DeadLetter(OutboxMessage),
    /// Moves a dead letter back to pending (attempts reset), for an operator's retry.
    RetryDeadLetter(OutboxMessage),
    /// Drops a dead letter for good.
    DiscardDeadLetter {
        destination: String,
        id: ulid::Ulid,
    },
    /// A change of account-linking state (grants, codes, tokens).
    OAuth(oauth::OAuthChange),
    /// The customer's data is being (or was) erased: events of the customer id appended from
    /// now on are stored pseudonymised under `pseudonym`.
    MarkErased {
        customer: CustomerId,
        pseudonym: protocol::AnonymousId,
    },
    /// A customer basket's reminder to (re)arm, written with the basket change that causes it
    /// (replaces the customer's previous one).
    PutPendingReminder(protocol::automation::PendingReminder),
}

/// A key other than the email that finds exactly one customer (normalised: see
/// `protocol::customer::normalize_phone` and `normalize_loyalty`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CustomerAlias {
    Phone(String),
    Loyalty(String),
}

impl CustomerAlias {
    /// The index key's tail: a kind byte, then the normalised value.
    pub fn key_bytes(&self) -> Vec<u8> {
        let (kind, value) = match self {
            CustomerAlias::Phone(v) => (b'p', v),
            CustomerAlias::Loyalty(v) => (b'l', v),
        };
        let mut k = vec![kind];
        k.extend_from_slice(value.as_bytes());
        k
    }
}

/// Digests of applied ERP rows (16 bytes each, concatenated), one record per unit of work.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportMarks {
    pub id: ulid::Ulid,
    pub digests: Vec<u8>,
}

impl protocol::Stored for ImportMarks {
    const KIND: &'static str = "import_marks";
    const VERSION: u16 = 1;
}

/// Entity changes, the integration messages they cause and the interaction events that record
/// them, committed all or nothing.
#[derive(Debug, Clone, Default)]
pub struct UnitOfWork {
    pub changes: Vec<Change>,
    pub outbox: Vec<OutboxMessage>,
    /// Events that must not be lost if the change is kept (an order, a payment).
    pub events: Vec<Event>,
    pub fence: Option<FencingToken>,
}

impl UnitOfWork {
    pub fn new() -> UnitOfWork {
        UnitOfWork::default()
    }

    pub fn with(mut self, change: Change) -> UnitOfWork {
        self.changes.push(change);
        self
    }

    pub fn with_event(mut self, event: Event) -> UnitOfWork {
        self.events.push(event);
        self
    }

    pub fn with_message(mut self, message: OutboxMessage) -> UnitOfWork {
        self.outbox.push(message);
        self
    }
}

/// Commits units of work. `commit` returns once the unit is durable (it survives `kill -9`).
#[async_trait]
pub trait Committer: Send + Sync {
    async fn commit(&self, unit: UnitOfWork) -> Result<()>;
}

#[async_trait]
pub trait BasketStore: Send + Sync {
    async fn basket(&self, id: BasketId) -> Result<Option<Basket>>;
    async fn basket_for_token(&self, token_hash: [u8; 32]) -> Result<Option<BasketId>>;
    /// The reminders still to arm ([`Change::PutPendingReminder`]): after a crash, those whose
    /// arming was lost.
    async fn pending_reminders(&self) -> Result<Vec<protocol::automation::PendingReminder>>;
    /// Clears a pending reminder once its timer is armed, unless a newer one replaced it.
    async fn clear_pending_reminder(
        &self,
        reminder: &protocol::automation::PendingReminder,
    ) -> Result<()>;
}

#[async_trait]
pub trait CustomerStore: Send + Sync {
    async fn customer(&self, id: CustomerId) -> Result<Option<CustomerRecord>>;
    async fn customer_by_email(&self, email: &str) -> Result<Option<CustomerRecord>>;
    /// The customer holding a phone number or loyalty number (exact match).
    async fn customer_by_alias(&self, alias: &CustomerAlias) -> Result<Option<CustomerRecord>>;
    async fn session(&self, token_hash: [u8; 32]) -> Result<Option<SessionRecord>>;
    /// The token hashes of a customer's sessions (erasure ends them all).
    async fn sessions_of(&self, customer: CustomerId) -> Result<Vec<[u8; 32]>>;
    /// This deployment's secret for signing links sent to customers (unsubscribe), made once.
    async fn link_secret(&self) -> Result<[u8; 32]>;
}

#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn catalog(&self) -> Result<(Vec<Category>, Vec<Product>)>;
}

#[async_trait]
pub trait InventoryStore: Send + Sync {
    async fn stock_levels(&self) -> Result<Vec<StockLevel>>;
    /// The stored level of one SKU at one location.
    async fn stock_level(&self, location: &LocationId, sku: &Sku) -> Result<Option<StockLevel>> {
        Ok(self
            .stock_levels()
            .await?
            .into_iter()
            .find(|l| &l.location == location && &l.sku == sku))
    }
    /// Every record of applied ERP rows ([`Change::PutImportMarks`]), for the importer to
    /// load at start.
    async fn import_marks(&self) -> Result<Vec<ImportMarks>>;
}

/// Checkouts, stock holds, orders and handled webhook events.
#[async_trait]
pub trait OrderStore: Send + Sync {
    async fn checkout(&self, id: CheckoutId) -> Result<Option<CheckoutRecord>>;
    /// Checkouts waiting for payment, oldest first.
    async fn open_checkouts(&self, limit: usize) -> Result<Vec<CheckoutRecord>>;
    /// Every stock hold.
    async fn holds(&self) -> Result<Vec<HoldRecord>>;
    /// A checkout's stock holds.
    async fn holds_of(&self, checkout: CheckoutId) -> Result<Vec<HoldRecord>> {
        let mut all = self.holds().await?;
        all.retain(|h| h.checkout == checkout);
        Ok(all)
    }
    async fn order(&self, id: OrderId) -> Result<Option<OrderRecord>>;
    async fn order_by_number(&self, number: &str) -> Result<Option<OrderRecord>>;
    /// The order a checkout became, if any.
    async fn order_for_checkout(&self, checkout: CheckoutId) -> Result<Option<OrderId>>;
    /// A customer's orders, newest first.
    async fn orders_of(&self, customer: CustomerId, limit: usize) -> Result<Vec<OrderRecord>>;
    /// Orders newest first, before `before` (exclusive) when given.
    async fn orders(&self, before: Option<OrderId>, limit: usize) -> Result<Vec<OrderRecord>>;
    /// The highest sequence used by order numbers with this prefix (0 if none).
    async fn last_order_sequence(&self, prefix: &str) -> Result<u64>;
    /// Mints the next sequence for order numbers with this prefix, where several hub processes
    /// share the store (each number once, across every node; a number minted for an order that
    /// is then not placed is skipped). `None`: this store has one process, which counts from
    /// [`OrderStore::last_order_sequence`] itself.
    async fn next_order_sequence(&self, _prefix: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    async fn webhook_seen(&self, event_id: &str) -> Result<bool>;
    /// Orders the hub still owes work on (an automatic refund, a restock).
    async fn orders_owing_work(&self, limit: usize) -> Result<Vec<OrderRecord>>;
}

/// The append-only log of interaction events, with a per-customer index.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends a batch durably.
    async fn append(&self, events: std::sync::Arc<[Event]>) -> Result<()>;
    /// Appends a batch durably, of events this hub made ([`Event::new`]: fresh ids) and has not
    /// appended before, except by retrying this call after it failed (the recorder's). A store
    /// may skip its id check and index for them; a retry still keeps each event's first
    /// sequence.
    async fn append_fresh(&self, events: std::sync::Arc<[Event]>) -> Result<()> {
        self.append(events).await
    }
    /// The customer's events, newest first.
    async fn timeline(&self, customer: CustomerId, limit: usize) -> Result<Vec<Event>>;
    /// Events in append order with their sequence numbers, after sequence `after` (exclusive),
    /// up to the last durable append. Sequences are assigned when an event is appended, so an
    /// event recorded late (an edge node's offline board events) still comes after a reader's
    /// cursor; an event appended twice (same id) keeps its first sequence.
    async fn read_sequenced(&self, after: u64, limit: usize) -> Result<Vec<Sequenced>>;
    /// [`EventLog::read_sequenced`], as runs shared with the log's other readers: a store that
    /// keeps its recent appends in memory answers them from there, so the consumers tailing
    /// the log (analyst, recommender, experiment counter) neither decode nor copy them.
    async fn read_shared(&self, after: u64, limit: usize) -> Result<SharedEvents> {
        Ok(self.read_sequenced(after, limit).await?.into())
    }
    /// The sequence of the last durable append; it changes after every append, so a consumer
    /// tails the log by waiting on it instead of polling.
    fn appended(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Rewrites stored events in place (same id, at the sequence given), e.g. pseudonymised on
    /// erasure, and drops the timeline index of `forget`. An event not at its sequence is left
    /// alone.
    async fn rewrite(&self, events: Vec<Sequenced>, forget: Option<CustomerId>) -> Result<()>;
}

/// An event with its append-order sequence number (1, 2, 3, … with no gaps below the last
/// durable append).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub event: Event,
}

/// Events read from the log in append order, as runs shared (`Arc`) with its other readers.
#[derive(Debug, Clone, Default)]
pub struct SharedEvents {
    runs: Vec<(std::sync::Arc<[Sequenced]>, std::ops::Range<usize>)>,
    len: usize,
}

impl SharedEvents {
    /// Adds `run[range]` after the events already here (the caller keeps append order).
    pub fn push(&mut self, run: std::sync::Arc<[Sequenced]>, range: std::ops::Range<usize>) {
        debug_assert!(range.end <= run.len());
        if range.is_empty() {
            return;
        }
        self.len += range.len();
        self.runs.push((run, range));
    }

    /// The events, in append order.
    pub fn iter(&self) -> impl Iterator<Item = &Sequenced> + '_ {
        self.runs
            .iter()
            .flat_map(|(run, range)| run[range.clone()].iter())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last event.
    pub fn last(&self) -> Option<&Sequenced> {
        self.runs.last().map(|(run, range)| &run[range.end - 1])
    }
}

impl From<Vec<Sequenced>> for SharedEvents {
    fn from(events: Vec<Sequenced>) -> SharedEvents {
        let mut shared = SharedEvents::default();
        let n = events.len();
        shared.push(events.into(), 0..n);
        shared
    }
}

/// How much waits in the outbox for one destination.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxBacklog {
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending message was queued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest: Option<time::OffsetDateTime>,
}

/// The transactional outbox, read by delivery workers. Writes go through units of work
/// ([`Change::AckOutbox`], [`Change::PutOutbox`], [`Change::DeadLetter`], …).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Pending messages of a destination in the order they were queued.
    async fn pending(&self, destination: &str, limit: usize) -> Result<Vec<OutboxMessage>>;
    /// Dead letters of a destination, oldest first.
    async fn dead_letters(&self, destination: &str, limit: usize) -> Result<Vec<OutboxMessage>>;
    async fn dead_letter(&self, destination: &str, id: ulid::Ulid)
        -> Result<Option<OutboxMessage>>;
    /// Counts per destination.
    async fn backlog(&self) -> Result<std::collections::BTreeMap<String, OutboxBacklog>>;
}

/// Everything the hub stores.
pub trait Storage:
    Committer
    + BasketStore
    + CustomerStore
    + CatalogStore
    + InventoryStore
    + OrderStore
    + EventLog
    + Outbox
    + 'static
{
    /// Whether storage is open and its writer is running.
    fn healthy(&self) -> bool;
    /// Whether several hub processes share this store (the cluster), so what one process keeps
    /// in memory can be stale: writers check against the store ([`Change::SwapStock`]).
    fn shared(&self) -> bool {
        false
    }
}
