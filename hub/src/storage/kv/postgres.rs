//! The keyspace on PostgreSQL: every tree in the table `kv(tree, key, value)`.
//!
//! **Threads.** The keyspace owns a small tokio runtime; every call spawns its query there and
//! waits for the answer on a channel. So the synchronous API works from any thread — an actix
//! arbiter, a blocking-pool thread, a task inside another runtime — where `Handle::block_on`
//! would panic.
//!
//! **Isolation.** Every write, and every read inside a transaction, first takes a
//! transaction-scoped advisory lock on its (tree, key) — also for a key that does not exist
//! yet, which a row lock could not cover. A transaction holds its locks until it commits, so two
//! transactions touching one key run one after the other, and a read under the lock (a new
//! statement, so a new READ COMMITTED snapshot) sees the last committed value: no lost update.
//! Locks are taken in the order the closure touches keys, so PostgreSQL may report a deadlock;
//! that transaction is rolled back and run again, like one failing to serialize.

use super::{Abort, Batch, CasMismatch, Entry, Tx, TxError, TxFault, TxInner};
use crate::storage::postgres::{db, MIGRATOR};
use crate::storage::{Result, StorageError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The advisory lock class of keyspace keys (the two-`int4` form: its own space, apart from
/// single-`bigint` locks such as sqlx's migration lock).
const LOCK_CLASS: i32 = 0x6b76; // "kv"

/// Rows read per round trip by a scan.
const PAGE: i64 = 256;

/// How often a transaction is run again after a deadlock or serialization failure.
const MAX_ATTEMPTS: usize = 64;

/// The PostgreSQL keyspace: a pool, and the runtime its queries run on.
pub struct PgKv {
    pool: PgPool,
    handle: tokio::runtime::Handle,
    /// Shut down in the background when dropped (dropping a runtime inside another would panic).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for PgKv {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

/// Shuts a runtime down without waiting, wherever it is dropped.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The lock of a key: FNV-1a of the tree's name, a zero byte and the key (stable across nodes
/// and builds, unlike `std`'s hasher). A collision only makes two keys wait for each other.
fn lock_id(tree: &str, key: &[u8]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in tree.as_bytes().iter().chain([0u8].iter()).chain(key) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Whether PostgreSQL gave up on a transaction that may succeed when run again.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

fn fault(e: sqlx::Error) -> TxFault {
    if retryable(&e) {
        TxFault::Conflict
    } else {
        TxFault::Storage(db(e))
    }
}

/// Takes the locks of `ids`, smallest first (so batches never deadlock one another).
async fn lock_all(
    tx: &mut Transaction<'static, Postgres>,
    ids: &BTreeSet<i32>,
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<i32> = ids.iter().copied().collect();
    // The sorted subquery feeds the aggregate in order, so the locks are taken in that order.
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock($1, h)) \
         FROM (SELECT h FROM unnest($2::int4[]) AS u(h) ORDER BY h) AS s",
    )
    .bind(LOCK_CLASS)
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn lock(tx: &mut Transaction<'static, Postgres>, tree: &str, key: &[u8]) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(lock_id(tree, key))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn read(
    tx: &mut Transaction<'static, Postgres>,
    tree: &str,
    key: &[u8],
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT value FROM kv WHERE tree = $1 AND key = $2")
        .bind(tree)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
}

async fn write(
    tx: &mut Transaction<'static, Postgres>,
    tree: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> sqlx::Result<()> {
    match value {
        Some(v) => {
            sqlx::query(
                "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tree, key) DO UPDATE SET value = excluded.value",
            )
            .bind(tree)
            .bind(key)
            .bind(v)
            .execute(&mut **tx)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM kv WHERE tree = $1 AND key = $2")
                .bind(tree)
                .bind(key)
                .execute(&mut **tx)
                .await?
        }
    };
    Ok(())
}

/// Runs `attempt` (one database transaction) again while PostgreSQL reports a deadlock or a
/// serialization failure.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && tries + 1 < MAX_ATTEMPTS => tries += 1,
            other => return other.map_err(db),
        }
    }
}

impl PgKv {
    /// Connects on a runtime of its own and runs the migrations that have not run yet.
    pub async fn connect(options: PgConnectOptions, pool_size: u32) -> Result<Arc<PgKv>> {
        let mut runtime = OwnedRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kv-postgres")
                .enable_all()
                .build()
                .map_err(|e| StorageError::Io(format!("cannot start the keyspace runtime: {e}")))?,
        ));
        let Some(handle) = runtime.0.as_ref().map(|rt| rt.handle().clone()) else {
            return Err(StorageError::Closed);
        };
        let pool = handle
            .spawn(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(pool_size.max(2))
                    .connect_with(options)
                    .await
                    .map_err(db)?;
                MIGRATOR
                    .run(&pool)
                    .await
                    .map_err(|e| StorageError::Io(format!("postgres migrations failed: {e}")))?;
                Ok::<_, StorageError>(pool)
            })
            .await
            .map_err(|e| StorageError::Io(format!("the keyspace's connect task failed: {e}")))??;
        Ok(Arc::new(PgKv {
            pool,
            handle,
            runtime: Mutex::new(runtime.0.take()),
        }))
    }

    /// Runs `fut` on the keyspace's runtime and waits for it on this thread.
    fn run<T, Fut>(&self, fut: Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StorageError::Closed)?
    }

    pub(super) async fn close(&self) {
        let pool = self.pool.clone();
        let _ = self.handle.spawn(async move { pool.close().await }).await;
    }

    pub(super) fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (pool, tree, key) = (self.pool.clone(), tree.to_owned(), key.to_vec());
        self.run(async move {
            sqlx::query_scalar("SELECT value FROM kv WHERE tree = $1 AND key = $2")
                .bind(tree)
                .bind(key)
                .fetch_optional(&pool)
                .await
                .map_err(db)
        })
    }

    pub(super) fn apply_batch(&self, tree: &str, batch: &Batch) -> Result<()> {
        let pool = self.pool.clone();
        let tree = tree.to_owned();
        let locks: BTreeSet<i32> = batch.writes.keys().map(|k| lock_id(&tree, k)).collect();
        let (mut put_keys, mut put_values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in &batch.writes {
            match v {
                Some(v) => {
                    put_keys.push(k.clone());
                    put_values.push(v.clone());
                }
                None => removed.push(k.clone()),
            }
        }
        self.run(async move {
            let (pool, tree, locks) = (&pool, &tree, &locks);
            let (put_keys, put_values, removed) = (&put_keys, &put_values, &removed);
            retrying(move || async move {
                let mut tx = pool.begin().await?;
                lock_all(&mut tx, locks).await?;
                if !put_keys.is_empty() {
                    sqlx::query(
                        "INSERT INTO kv (tree, key, value) \
                         SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS u(k, v) \
                         ON CONFLICT (tree, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(tree)
                    .bind(put_keys)
                    .bind(put_values)
                    .execute(&mut *tx)
                    .await?;
                }
                if !removed.is_empty() {
                    sqlx::query("DELETE FROM kv WHERE tree = $1 AND key = ANY($2::bytea[])")
                        .bind(tree)
                        .bind(removed)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            })
            .await
        })
    }

    pub(super) fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), CasMismatch>> {
        let pool = self.pool.clone();
        let (tree, key) = (tree.to_owned(), key.to_vec());
        let (expected, new) = (expected.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.run(async move {
            let (pool, tree, key, expected, new) = (&pool, &tree, &key, &expected, &new);
            retrying(move || async move {
                let mut tx = pool.begin().await?;
                lock(&mut tx, tree, key).await?;
                let current = read(&mut tx, tree, key).await?;
                if current != *expected {
                    tx.rollback().await?;
                    return Ok(Err(CasMismatch { current }));
                }
                write(&mut tx, tree, key, new.as_deref()).await?;
                tx.commit().await?;
                Ok(Ok(()))
            })
            .await
        })
    }

    pub(super) fn transaction<T, E, F>(&self, f: F) -> std::result::Result<T, TxError<E>>
    where
        F: Fn(&Tx<'_>) -> std::result::Result<T, Abort<E>>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let tx = self.begin()?;
            let outcome = f(&Tx {
                inner: TxInner::Pg(&tx),
            });
            match outcome {
                Ok(v) => match tx.commit() {
                    Ok(()) => return Ok(v),
                    Err(TxFault::Conflict) => continue,
                    Err(TxFault::Storage(e)) => return Err(TxError::Storage(e)),
                },
                // Dropping `tx` rolls it back.
                Err(Abort::Abort(e)) => return Err(TxError::Abort(e)),
                Err(Abort::Fault(TxFault::Conflict)) => continue,
                Err(Abort::Fault(TxFault::Storage(e))) => return Err(TxError::Storage(e)),
            }
        }
        Err(TxError::Storage(StorageError::Io(format!(
            "a keyspace transaction still conflicted after {MAX_ATTEMPTS} attempts"
        ))))
    }

    /// Starts a database transaction served by a task of its own.
    fn begin(&self) -> Result<PgTx> {
        let pool = self.pool.clone();
        let (cmds, rx) = unbounded_channel();
        let (started, begun) = sync_channel(1);
        self.handle.spawn(async move {
            match pool.begin().await {
                Ok(tx) => {
                    let _ = started.send(Ok(()));
                    serve(tx, rx).await;
                }
                Err(e) => {
                    let _ = started.send(Err(db(e)));
                }
            }
        });
        begun.recv().map_err(|_| StorageError::Closed)??;
        Ok(PgTx { cmds })
    }
}

/// A command to a transaction's task.
enum Cmd {
    Get {
        tree: Arc<str>,
        key: Vec<u8>,
        reply: SyncSender<std::result::Result<Option<Vec<u8>>, TxFault>>,
    },
    Write {
        tree: Arc<str>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        reply: SyncSender<std::result::Result<(), TxFault>>,
    },
    Commit {
        reply: SyncSender<std::result::Result<(), TxFault>>,
    },
}

/// A transaction in progress: its task holds the connection; dropped, it rolls back.
pub struct PgTx {
    cmds: UnboundedSender<Cmd>,
}

fn closed() -> TxFault {
    TxFault::Storage(StorageError::Closed)
}

impl PgTx {
    pub(super) fn get(
        &self,
        tree: &Arc<str>,
        key: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, TxFault> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Get {
                tree: tree.clone(),
                key: key.to_vec(),
                reply,
            })
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }

    pub(super) fn write(
        &self,
        tree: &Arc<str>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> std::result::Result<(), TxFault> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Write {
                tree: tree.clone(),
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                reply,
            })
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }

    fn commit(self) -> std::result::Result<(), TxFault> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Commit { reply })
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }
}

/// Serves a transaction's commands in order. After a failure every later command answers the
/// same fault (PostgreSQL refuses more statements in a failed transaction anyway); when the
/// commands end without a commit, the transaction is rolled back.
async fn serve(mut tx: Transaction<'static, Postgres>, mut rx: UnboundedReceiver<Cmd>) {
    let mut locked: HashSet<i32> = HashSet::new();
    let mut failed: Option<TxFault> = None;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Get { tree, key, reply } => {
                let answer = match &failed {
                    Some(f) => Err(f.clone()),
                    None => locked_read(&mut tx, &mut locked, &tree, &key)
                        .await
                        .map_err(fault),
                };
                if let Err(f) = &answer {
                    failed = Some(f.clone());
                }
                let _ = reply.send(answer);
            }
            Cmd::Write {
                tree,
                key,
                value,
                reply,
            } => {
                let answer = match &failed {
                    Some(f) => Err(f.clone()),
                    None => locked_write(&mut tx, &mut locked, &tree, &key, value.as_deref())
                        .await
                        .map_err(fault),
                };
                if let Err(f) = &answer {
                    failed = Some(f.clone());
                }
                let _ = reply.send(answer);
            }
            Cmd::Commit { reply } => {
                let answer = match failed {
                    Some(f) => Err(f),
                    None => tx.commit().await.map_err(fault),
                };
                let _ = reply.send(answer);
                return;
            }
        }
    }
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "a keyspace transaction's rollback failed");
    }
}

async fn take_lock(
    tx: &mut Transaction<'static, Postgres>,
    locked: &mut HashSet<i32>,
    tree: &str,
    key: &[u8],
) -> sqlx::Result<()> {
    if locked.insert(lock_id(tree, key)) {
        lock(tx, tree, key).await?;
    }
    Ok(())
}

async fn locked_read(
    tx: &mut Transaction<'static, Postgres>,
    locked: &mut HashSet<i32>,
    tree: &str,
    key: &[u8],
) -> sqlx::Result<Option<Vec<u8>>> {
    take_lock(tx, locked, tree, key).await?;
    read(tx, tree, key).await
}

async fn locked_write(
    tx: &mut Transaction<'static, Postgres>,
    locked: &mut HashSet<i32>,
    tree: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> sqlx::Result<()> {
    take_lock(tx, locked, tree, key).await?;
    write(tx, tree, key, value).await
}

/// A scan read page by page (see [`super::Iter`]).
pub struct PgIter {
    kv: Arc<PgKv>,
    tree: Arc<str>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    rev: bool,
    page: VecDeque<Entry>,
    done: bool,
}

impl PgIter {
    pub(super) fn new(
        kv: Arc<PgKv>,
        tree: Arc<str>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> PgIter {
        PgIter {
            kv,
            tree,
            lower,
            upper,
            rev: false,
            page: VecDeque::new(),
            done: false,
        }
    }

    /// Largest key first (call before reading: what was read stays read).
    pub(super) fn reversed(mut self) -> PgIter {
        self.rev = !self.rev;
        self.page.clear();
        self.done = false;
        self
    }

    fn fetch(&mut self) -> Result<()> {
        let (lower, upper) = (self.lower.clone(), self.upper.clone());
        let (pool, tree, rev) = (self.kv.pool.clone(), self.tree.clone(), self.rev);
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.kv.run(async move {
            let sql = scan_sql(&lower, &upper, rev);
            let mut q = sqlx::query_as::<_, (Vec<u8>, Vec<u8>)>(&sql).bind(tree.as_ref());
            for b in [&lower, &upper] {
                if let Bound::Included(k) | Bound::Excluded(k) = b {
                    q = q.bind(k.as_slice());
                }
            }
            q.bind(PAGE).fetch_all(&pool).await.map_err(db)
        })?;
        if rows.len() < PAGE as usize {
            self.done = true;
        }
        if let Some((last, _)) = rows.last() {
            if self.rev {
                self.upper = Bound::Excluded(last.clone());
            } else {
                self.lower = Bound::Excluded(last.clone());
            }
        }
        self.page.extend(rows);
        Ok(())
    }
}

/// The query of one page: parameters are the tree, the bounds that are not unbounded (lower
/// first), then the limit.
fn scan_sql(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>, rev: bool) -> String {
    let mut sql = String::from("SELECT key, value FROM kv WHERE tree = $1");
    let mut n = 1;
    for (bound, inclusive, exclusive) in [(lower, ">=", ">"), (upper, "<=", "<")] {
        let op = match bound {
            Bound::Included(_) => inclusive,
            Bound::Excluded(_) => exclusive,
            Bound::Unbounded => continue,
        };
        n += 1;
        sql.push_str(&format!(" AND key {op} ${n}"));
    }
    sql.push_str(if rev {
        " ORDER BY key DESC"
    } else {
        " ORDER BY key"
    });
    sql.push_str(&format!(" LIMIT ${}", n + 1));
    sql
}

impl Iterator for PgIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod unit {
    use super::{lock_id, scan_sql};
    use std::ops::Bound;

    #[test]
    fn a_page_query_binds_only_the_bounds_it_has() {
        assert_eq!(
            scan_sql(&Bound::Unbounded, &Bound::Unbounded, false),
            "SELECT key, value FROM kv WHERE tree = $1 ORDER BY key LIMIT $2"
        );
        assert_eq!(
            scan_sql(&Bound::Included(vec![1]), &Bound::Excluded(vec![2]), true),
            "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 AND key < $3 \
             ORDER BY key DESC LIMIT $4"
        );
        assert_eq!(
            scan_sql(&Bound::Unbounded, &Bound::Included(vec![2]), false),
            "SELECT key, value FROM kv WHERE tree = $1 AND key <= $2 ORDER BY key LIMIT $3"
        );
    }

    #[test]
    fn lock_ids_depend_on_the_tree_and_the_key() {
        assert_eq!(lock_id("a", b"k"), lock_id("a", b"k"));
        assert_ne!(lock_id("a", b"k"), lock_id("b", b"k"));
        assert_ne!(lock_id("ab", b"k"), lock_id("a", b"bk"));
    }
}

#[cfg(all(test, feature = "cluster-tests"))]
mod tests {
    //! The keyspace conformance suite on PostgreSQL, each case in a schema of its own.
    use crate::storage::kv::{conformance, Keyspace};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    fn url() -> String {
        std::env::var("OMNIHUB_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    async fn admin(sql: String) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url())
            .await
            .expect("PostgreSQL answers (cluster-tests need it; .ci/run starts it)");
        sqlx::query(&sql)
            .execute(&pool)
            .await
            .expect("schema statement");
        pool.close().await;
    }

    /// Runs `case` on a keyspace in a fresh schema, drops the schema, then fails if it failed.
    fn run(case: fn(&Keyspace)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let schema = format!("kv_{}", ulid::Ulid::new().to_string().to_lowercase());
        rt.block_on(admin(format!("CREATE SCHEMA {schema}")));
        let options: PgConnectOptions = url().parse().expect("a valid url");
        let options = options.options([("search_path", schema.as_str())]);
        let ks = rt
            .block_on(Keyspace::postgres(options, 8))
            .expect("keyspace opens and migrates");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&ks)));
        rt.block_on(ks.close());
        drop(ks);
        rt.block_on(admin(format!("DROP SCHEMA {schema} CASCADE")));
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    conformance::suite!(run);
}
