//! Storage behind async, domain-level traits. The actors see baskets, customers, sessions, stock,
//! the catalog, the event log and the outbox, never keys and bytes; every write is a
//! [`UnitOfWork`] that commits entity changes together with their outbox rows, atomically and
//! durably. The embedded default is [`sled::SledStorage`]; a cluster backend (PostgreSQL, NATS)
//! can implement the same traits.

pub mod sled;

use async_trait::async_trait;
use protocol::{
    Basket, BasketId, Category, CustomerId, CustomerRecord, Event, OutboxMessage, Product,
    SessionRecord, StockLevel,
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

/// A token proving ownership of an entity's shard (cluster backends enforce it; sled ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FencingToken(pub u64);

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
    PutSession {
        token_hash: [u8; 32],
        session: SessionRecord,
    },
    DeleteSession {
        token_hash: [u8; 32],
    },
    PutStock(StockLevel),
    PutCategory(Category),
    PutProduct(Product),
}

/// Entity changes and the integration messages they cause, committed all or nothing.
#[derive(Debug, Clone, Default)]
pub struct UnitOfWork {
    pub changes: Vec<Change>,
    pub outbox: Vec<OutboxMessage>,
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
}

#[async_trait]
pub trait CustomerStore: Send + Sync {
    async fn customer(&self, id: CustomerId) -> Result<Option<CustomerRecord>>;
    async fn customer_by_email(&self, email: &str) -> Result<Option<CustomerRecord>>;
    async fn session(&self, token_hash: [u8; 32]) -> Result<Option<SessionRecord>>;
}

#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn catalog(&self) -> Result<(Vec<Category>, Vec<Product>)>;
}

#[async_trait]
pub trait InventoryStore: Send + Sync {
    async fn stock_levels(&self) -> Result<Vec<StockLevel>>;
}

/// The append-only log of interaction events, with a per-customer index.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends a batch durably.
    async fn append(&self, events: std::sync::Arc<[Event]>) -> Result<()>;
    /// The customer's events, newest first.
    async fn timeline(&self, customer: CustomerId, limit: usize) -> Result<Vec<Event>>;
    /// Events in log order after `after` (exclusive), for export.
    async fn read_after(
        &self,
        after: Option<protocol::EventId>,
        limit: usize,
    ) -> Result<Vec<Event>>;
}

/// The transactional outbox, read by delivery workers.
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn pending(&self, destination: &str, limit: usize) -> Result<Vec<OutboxMessage>>;
    /// Removes a delivered message.
    async fn acknowledge(&self, destination: &str, id: ulid::Ulid) -> Result<()>;
}

/// Everything the hub stores.
pub trait Storage:
    Committer
    + BasketStore
    + CustomerStore
    + CatalogStore
    + InventoryStore
    + EventLog
    + Outbox
    + 'static
{
    /// Whether storage is open and its writer is running.
    fn healthy(&self) -> bool;
}
