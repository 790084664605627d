//! The cluster storage on PostgreSQL: the same traits as [`super::sled::SledStorage`], for hub
//! nodes that share their records (`storage = "cluster"`, `docs/scaling.md`).
//!
//! - Every value is encoded by `protocol::codec` (versioned MessagePack envelope) into a `bytea`
//!   column, next to the key and index columns the queries need (`hub/migrations`, run at
//!   [`PgStorage::connect`]).
//! - A [`UnitOfWork`] is one transaction: its fencing check, entity changes, outbox rows and
//!   events commit all or nothing, durable on return (`synchronous_commit` as configured on the
//!   server; its default is on).
//! - Preconditions (`ClaimEmail`, `ClaimAlias`, `CreateOrder`, an OAuth `Spend`) are inserts
//!   that do nothing on conflict: a concurrent unit claiming the same key waits for the first to
//!   commit, then finds the claim and fails with `Conflict`, rolling back all it wrote.
//! - The event log's sequences are assigned under one row lock, see [`event_log`].
//! - Fencing: see [`lease`]; relays to NATS JetStream keep fenced cursors here (`cursors`).

mod commit;
mod cursors;
pub mod event_log;
pub mod lease;
mod oauth;
#[cfg(feature = "cluster-tests")]
pub mod testing;
#[cfg(all(test, feature = "cluster-tests"))]
pub(crate) mod tests;

use super::{
    BasketStore, CatalogStore, Committer, CustomerStore, InventoryStore, OrderStore, Outbox,
    Result, Storage, StorageError, UnitOfWork,
};
use async_trait::async_trait;
use protocol::order::{CheckoutRecord, HoldRecord, OrderRecord};
use protocol::{
    codec, Basket, BasketId, Category, CheckoutId, CustomerId, CustomerRecord, LocationId, OrderId,
    OutboxMessage, Product, SessionRecord, Sku, StockLevel, Stored,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// The migrations in `hub/migrations`, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The hub's records in one PostgreSQL schema (the first of the connections' `search_path`).
pub struct PgStorage {
    pool: PgPool,
    /// The schema the tables are in (events are announced per schema).
    schema: String,
    /// The last durable event sequence, see [`event_log`].
    appended: Arc<watch::Sender<u64>>,
    /// Stops the task that listens for other nodes' appends: sent by [`PgStorage::close`],
    /// or dropped with the storage.
    stop_listener: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    /// That task: it holds one of the pool's connections until it ends.
    listener: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A database error as a storage error.
pub(crate) fn db(e: sqlx::Error) -> StorageError {
    match e {
        sqlx::Error::PoolClosed => StorageError::Closed,
        other => StorageError::Io(format!("postgres: {other}")),
    }
}

/// A limit as SQL wants it.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn ulid_from(bytes: &[u8]) -> Result<ulid::Ulid> {
    <[u8; 16]>::try_from(bytes)
        .map(|b| ulid::Ulid(u128::from_be_bytes(b)))
        .map_err(|_| StorageError::Io(format!("a stored id has {} bytes, not 16", bytes.len())))
}

/// A value a query can be keyed by.
trait Key: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send {}

impl<T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send> Key for T {}

fn decode_all<T: Stored>(rows: Vec<Vec<u8>>) -> Result<Vec<T>> {
    rows.iter()
        .map(|v| codec::decode::<T>(v).map_err(StorageError::from))
        .collect()
}

fn decode_opt<T: Stored>(row: Option<Vec<u8>>) -> Result<Option<T>> {
    row.map(|v| codec::decode::<T>(&v))
        .transpose()
        .map_err(StorageError::from)
}

impl PgStorage {
    /// Connects with at most `pool_size` connections, runs the migrations that have not run
    /// yet, makes the link secret if there is none, and starts listening for other nodes'
    /// event appends.
    pub async fn connect(options: PgConnectOptions, pool_size: u32) -> Result<Arc<PgStorage>> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .connect_with(options)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StorageError::Io(format!("postgres migrations failed: {e}")))?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(db)?;
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| StorageError::Io(format!("no randomness for the link secret: {e}")))?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('link_secret', $1) ON CONFLICT DO NOTHING",
        )
        .bind(secret.as_slice())
        .execute(&pool)
        .await
        .map_err(db)?;
        let last = event_log::head(&pool).await?;
        let appended = Arc::new(watch::channel(last).0);
        let (stop, stopped) = oneshot::channel();
        let listener =
            event_log::listen(pool.clone(), schema.clone(), appended.clone(), stopped).await?;
        Ok(Arc::new(PgStorage {
            pool,
            schema,
            appended,
            stop_listener: std::sync::Mutex::new(Some(stop)),
            listener: tokio::sync::Mutex::new(Some(listener)),
        }))
    }

    /// Connects to `url` (e.g. `postgres://hub@db.internal/omnihub`).
    pub async fn open(url: &str, pool_size: u32) -> Result<Arc<PgStorage>> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StorageError::Io(format!("the postgres url is not valid: {e}")))?;
        PgStorage::connect(options, pool_size).await
    }

    /// The connection pool (for a module storing its own tables next to these).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the tables are in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The token hashes of a customer's sessions.
    pub async fn sessions_of(&self, customer: CustomerId) -> Result<Vec<[u8; 32]>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT token_hash FROM sessions WHERE customer = $1 ORDER BY token_hash",
        )
        .bind(customer.to_bytes().as_slice())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .collect())
    }

    /// Closes the pool (on shutdown); later calls fail with `Closed`.
    pub async fn close(&self) {
        // The listener first: the pool's close waits for every connection to come back, and
        // the listener's would not while it listens.
        let stop = self
            .stop_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(stop);
        if let Some(task) = self.listener.lock().await.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the event listener ended badly");
            }
        }
        self.pool.close().await;
    }

    /// The one value a query answers, decoded.
    async fn value<T: Stored, K: Key>(&self, sql: &'static str, key: K) -> Result<Option<T>> {
        let row: Option<Vec<u8>> = sqlx::query_scalar(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        decode_opt(row)
    }

    /// Every value a query (without parameters) answers, decoded.
    async fn values<T: Stored>(&self, sql: &'static str) -> Result<Vec<T>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        decode_all(rows)
    }

    /// The values a query with a key and a limit answers, decoded.
    async fn values_of<T: Stored, K: Key>(
        &self,
        sql: &'static str,
        key: K,
        n: usize,
    ) -> Result<Vec<T>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(sql)
            .bind(key)
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        decode_all(rows)
    }
}

#[async_trait]
impl Committer for PgStorage {
    async fn commit(&self, unit: UnitOfWork) -> Result<()> {
        let last = commit::commit(&self.pool, &unit).await?;
        if let Some(last) = last {
            event_log::publish(&self.appended, last);
        }
        Ok(())
    }
}

#[async_trait]
impl BasketStore for PgStorage {
    async fn basket(&self, id: BasketId) -> Result<Option<Basket>> {
        self.value(
            "SELECT value FROM baskets WHERE id = $1",
            id.to_bytes().as_slice(),
        )
        .await
    }

    async fn basket_for_token(&self, token_hash: [u8; 32]) -> Result<Option<BasketId>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT basket FROM basket_tokens WHERE token_hash = $1")
                .bind(token_hash.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|b| ulid_from(&b).map(BasketId)).transpose()
    }

    async fn pending_reminders(&self) -> Result<Vec<protocol::automation::PendingReminder>> {
        self.values("SELECT value FROM pending_reminders ORDER BY customer")
            .await
    }

    async fn clear_pending_reminder(
        &self,
        reminder: &protocol::automation::PendingReminder,
    ) -> Result<()> {
        // Only the reminder that was armed: a newer basket change wrote another, which stays.
        sqlx::query("DELETE FROM pending_reminders WHERE customer = $1 AND value = $2")
            .bind(reminder.customer.to_bytes().as_slice())
            .bind(codec::encode(reminder)?)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl CustomerStore for PgStorage {
    async fn sessions_of(&self, customer: CustomerId) -> Result<Vec<[u8; 32]>> {
        PgStorage::sessions_of(self, customer).await
    }

    async fn customer(&self, id: CustomerId) -> Result<Option<CustomerRecord>> {
        self.value(
            "SELECT value FROM customers WHERE id = $1",
            id.to_bytes().as_slice(),
        )
        .await
    }

    async fn customer_by_email(&self, email: &str) -> Result<Option<CustomerRecord>> {
        self.value(
            "SELECT c.value FROM customer_emails e JOIN customers c ON c.id = e.customer \
             WHERE e.email = $1",
            email,
        )
        .await
    }

    async fn customer_by_alias(
        &self,
        alias: &super::CustomerAlias,
    ) -> Result<Option<CustomerRecord>> {
        self.value(
            "SELECT c.value FROM customer_aliases a JOIN customers c ON c.id = a.customer \
             WHERE a.alias = $1",
            alias.key_bytes(),
        )
        .await
    }

    async fn session(&self, token_hash: [u8; 32]) -> Result<Option<SessionRecord>> {
        self.value(
            "SELECT value FROM sessions WHERE token_hash = $1",
            token_hash.as_slice(),
        )
        .await
    }

    async fn link_secret(&self) -> Result<[u8; 32]> {
        let raw: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'link_secret'")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StorageError::Io("the link secret is missing".into()))?;
        <[u8; 32]>::try_from(raw.as_slice())
            .map_err(|_| StorageError::Io("the link secret is damaged".into()))
    }
}

#[async_trait]
impl CatalogStore for PgStorage {
    async fn catalog(&self) -> Result<(Vec<Category>, Vec<Product>)> {
        Ok((
            self.values("SELECT value FROM categories ORDER BY id")
                .await?,
            self.values("SELECT value FROM products ORDER BY id")
                .await?,
        ))
    }
}

#[async_trait]
impl InventoryStore for PgStorage {
    async fn stock_levels(&self) -> Result<Vec<StockLevel>> {
        self.values("SELECT value FROM stock ORDER BY location, sku")
            .await
    }

    async fn stock_level(&self, location: &LocationId, sku: &Sku) -> Result<Option<StockLevel>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM stock WHERE location = $1 AND sku = $2")
                .bind(location.0.as_str())
                .bind(sku.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        decode_opt(row)
    }

    async fn import_marks(&self) -> Result<Vec<super::ImportMarks>> {
        self.values("SELECT value FROM import_marks ORDER BY id")
            .await
    }
}

#[async_trait]
impl OrderStore for PgStorage {
    async fn checkout(&self, id: CheckoutId) -> Result<Option<CheckoutRecord>> {
        self.value(
            "SELECT value FROM checkouts WHERE id = $1",
            id.to_bytes().as_slice(),
        )
        .await
    }

    async fn open_checkouts(&self, n: usize) -> Result<Vec<CheckoutRecord>> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM checkouts WHERE open ORDER BY id LIMIT $1")
                .bind(limit(n))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        decode_all(rows)
    }

    async fn holds(&self) -> Result<Vec<HoldRecord>> {
        self.values("SELECT value FROM holds ORDER BY checkout, location, sku")
            .await
    }

    async fn holds_of(&self, checkout: CheckoutId) -> Result<Vec<HoldRecord>> {
        self.values_of(
            "SELECT value FROM holds WHERE checkout = $1 ORDER BY location, sku LIMIT $2",
            checkout.to_bytes().as_slice(),
            usize::MAX,
        )
        .await
    }

    async fn order(&self, id: OrderId) -> Result<Option<OrderRecord>> {
        self.value(
            "SELECT value FROM orders WHERE id = $1",
            id.to_bytes().as_slice(),
        )
        .await
    }

    async fn order_by_number(&self, number: &str) -> Result<Option<OrderRecord>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM orders WHERE number = $1 ORDER BY id LIMIT 1")
                .bind(number)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        decode_opt(row)
    }

    async fn order_for_checkout(&self, checkout: CheckoutId) -> Result<Option<OrderId>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT order_id FROM checkout_orders WHERE checkout = $1")
                .bind(checkout.to_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|b| ulid_from(&b).map(OrderId)).transpose()
    }

    async fn orders_of(&self, customer: CustomerId, n: usize) -> Result<Vec<OrderRecord>> {
        self.values_of(
            "SELECT value FROM orders WHERE customer = $1 ORDER BY id DESC LIMIT $2",
            customer.to_bytes().as_slice(),
            n,
        )
        .await
    }

    async fn orders(&self, before: Option<OrderId>, n: usize) -> Result<Vec<OrderRecord>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT value FROM orders WHERE ($1::bytea IS NULL OR id < $1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before.map(|id| id.to_bytes().to_vec()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        decode_all(rows)
    }

    async fn last_order_sequence(&self, prefix: &str) -> Result<u64> {
        let numbers: Vec<String> =
            sqlx::query_scalar("SELECT number FROM orders WHERE starts_with(number, $1)")
                .bind(format!("{prefix}-"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(numbers
            .iter()
            .filter_map(|n| protocol::order::order_sequence(n, prefix))
            .max()
            .unwrap_or(0))
    }

    async fn next_order_sequence(&self, prefix: &str) -> Result<Option<u64>> {
        // One row per prefix, bumped under its row lock: concurrent mints on any node wait for
        // each other and each gets its own number (the migration starts `W` at the highest
        // number stored before it).
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO order_sequences AS s (prefix, last) VALUES ($1, 1) \
             ON CONFLICT (prefix) DO UPDATE SET last = s.last + 1 RETURNING s.last",
        )
        .bind(prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        u64::try_from(last)
            .map(Some)
            .map_err(|_| StorageError::Io(format!("order sequence {prefix} is negative")))
    }

    async fn webhook_seen(&self, event_id: &str) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_events WHERE id = $1)")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn orders_owing_work(&self, n: usize) -> Result<Vec<OrderRecord>> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM orders WHERE owes ORDER BY id LIMIT $1")
                .bind(limit(n))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        decode_all(rows)
    }
}

#[async_trait]
impl Outbox for PgStorage {
    async fn pending(&self, destination: &str, n: usize) -> Result<Vec<OutboxMessage>> {
        self.values_of(
            "SELECT value FROM outbox WHERE destination = $1 ORDER BY id LIMIT $2",
            destination,
            n,
        )
        .await
    }

    async fn dead_letters(&self, destination: &str, n: usize) -> Result<Vec<OutboxMessage>> {
        self.values_of(
            "SELECT value FROM outbox_dead WHERE destination = $1 ORDER BY id LIMIT $2",
            destination,
            n,
        )
        .await
    }

    async fn dead_letter(
        &self,
        destination: &str,
        id: ulid::Ulid,
    ) -> Result<Option<OutboxMessage>> {
        let row: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM outbox_dead WHERE destination = $1 AND id = $2")
                .bind(destination)
                .bind(id.0.to_be_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        decode_opt(row)
    }

    /// Counted by the database (the backlog is small while delivery keeps up).
    async fn backlog(&self) -> Result<BTreeMap<String, super::OutboxBacklog>> {
        let counts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT destination, sum(pending)::bigint, sum(dead)::bigint FROM ( \
               SELECT destination, 1 AS pending, 0 AS dead FROM outbox \
               UNION ALL SELECT destination, 0, 1 FROM outbox_dead) AS m \
             GROUP BY destination",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let oldest: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT DISTINCT ON (destination) destination, value FROM outbox \
             ORDER BY destination, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = BTreeMap::new();
        for (destination, pending, dead) in counts {
            out.insert(
                destination,
                super::OutboxBacklog {
                    pending: u64::try_from(pending).unwrap_or(0),
                    dead: u64::try_from(dead).unwrap_or(0),
                    oldest: None,
                },
            );
        }
        for (destination, value) in oldest {
            let message: OutboxMessage = codec::decode(&value)?;
            if let Some(b) = out.get_mut(&destination) {
                b.oldest = Some(message.created_at);
            }
        }
        Ok(out)
    }
}

impl Storage for PgStorage {
    fn healthy(&self) -> bool {
        !self.pool.is_closed()
    }

    fn shared(&self) -> bool {
        true
    }
}
