//! Where automation keeps its state: durable timers, back-in-stock subscriptions and the message
//! log, behind [`AutomationStore`]; [`KvAutomationStore`] keeps them in the keyspace tree
//! `automation`, values encoded by `protocol`'s codec:
//!
//! - `t` + due (ms, sortable) + timer id → [`Timer`]; `d` + dedupe key → the timer's `t` key;
//! - `s` + SKU + `0` + customer → [`StockSubscription`];
//! - `m` + time (ms) + record id → [`MessageRecord`]; `c` + customer + time + id → the `m` key.
//!
//! Every change that must hold together (a timer run: its removal or re-arming, its log entries
//! and the subscriptions it ended) is one keyspace transaction, flushed before it is acknowledged.

use super::AutomationError;
use crate::storage::kv::{Abort, Keyspace, Tree, TxError};
use async_trait::async_trait;
use protocol::automation::{MessageKind, MessageRecord, StockSubscription, Timer};
use protocol::codec::{decode, encode};
use protocol::{CustomerId, Sku};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, AutomationError>;

/// What a finished timer run changes, all or nothing.
#[derive(Debug, Default)]
pub struct Finish {
    /// The timer that ran (removed, unless `next` re-arms the same dedupe key).
    pub timer: Option<Timer>,
    /// The timer's successor: the same timer deferred, or the next daily run.
    pub next: Option<Timer>,
    pub records: Vec<MessageRecord>,
    /// Subscriptions that end (their note was sent or suppressed for good).
    pub ended: Vec<(Sku, CustomerId)>,
}

/// Which log entries to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct MessageFilter {
    pub customer: Option<CustomerId>,
    pub kind: Option<MessageKind>,
    pub limit: usize,
}

/// Automation's durable state.
#[async_trait]
pub trait AutomationStore: Send + Sync {
    /// Arms a timer. With a waiting timer of the same dedupe key: `replace` puts this one in
    /// its place, otherwise the waiting one stays. Answers whether this one was stored.
    async fn arm(&self, timer: Timer, replace: bool) -> Result<bool>;
    /// The waiting timer of a dedupe key.
    async fn timer(&self, dedupe: &str) -> Result<Option<Timer>>;
    /// Timers due at `now`, earliest first.
    async fn due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Timer>>;
    /// When the earliest timer is due.
    async fn next_due(&self) -> Result<Option<OffsetDateTime>>;
    /// Records a timer run (see [`Finish`]).
    async fn finish(&self, finish: Finish) -> Result<()>;
    /// Stores a subscription; answers `false` if the customer already waits for the SKU.
    async fn subscribe(&self, subscription: StockSubscription) -> Result<bool>;
    /// The subscribers of a SKU.
    async fn subscribers(&self, sku: &Sku) -> Result<Vec<StockSubscription>>;
    /// Every SKU somebody waits for.
    async fn subscribed_skus(&self) -> Result<Vec<Sku>>;
    /// Log entries, newest first.
    async fn messages(&self, filter: MessageFilter) -> Result<Vec<MessageRecord>>;
}

/// [`AutomationStore`] in the hub's keyspace.
pub struct KvAutomationStore {
    keyspace: Keyspace,
    tree: Tree,
}

fn ms(at: OffsetDateTime) -> [u8; 8] {
    // Shifted so that times before 1970 still sort first.
    let ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn timer_key(timer: &Timer) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b't');
    k.extend_from_slice(&ms(timer.due));
    k.extend_from_slice(&timer.id.0.to_be_bytes());
    k
}

fn dedupe_key(dedupe: &str) -> Vec<u8> {
    let mut k = vec![b'd'];
    k.extend_from_slice(dedupe.as_bytes());
    k
}

fn subscription_prefix(sku: &Sku) -> Vec<u8> {
    let mut k = vec![b's'];
    k.extend_from_slice(sku.as_str().as_bytes());
    k.push(0);
    k
}

fn subscription_key(sku: &Sku, customer: CustomerId) -> Vec<u8> {
    let mut k = subscription_prefix(sku);
    k.extend_from_slice(&customer.to_bytes());
    k
}

fn message_key(record: &MessageRecord) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(&ms(record.at));
    k.extend_from_slice(&record.id.0.to_be_bytes());
    k
}

fn customer_prefix(customer: CustomerId) -> Vec<u8> {
    let mut k = vec![b'c'];
    k.extend_from_slice(&customer.to_bytes());
    k
}

fn failed(e: TxError<String>) -> AutomationError {
    match e {
        TxError::Abort(m) => AutomationError::Storage(crate::storage::StorageError::Io(m)),
        TxError::Storage(e) => AutomationError::Storage(e),
    }
}

fn codec(e: protocol::CodecError) -> AutomationError {
    AutomationError::Storage(e.into())
}

impl KvAutomationStore {
    /// Opens the tree `automation` of the hub's keyspace.
    pub fn open(
        keyspace: &Keyspace,
    ) -> std::result::Result<KvAutomationStore, crate::storage::StorageError> {
        let tree = keyspace.open_tree("automation")?;
        Ok(KvAutomationStore {
            keyspace: keyspace.clone(),
            tree,
        })
    }

    async fn flush(&self) -> Result<()> {
        self.tree.flush_async().await?;
        Ok(())
    }
}

#[async_trait]
impl AutomationStore for KvAutomationStore {
    async fn arm(&self, timer: Timer, replace: bool) -> Result<bool> {
        let value = encode(&timer).map_err(codec)?;
        let key = timer_key(&timer);
        let index = dedupe_key(&timer.dedupe);
        let tree = &self.tree;
        let stored = self
            .keyspace
            .transaction(&[tree], |tx| {
                if let Some(old) = tx.get(tree, &index)? {
                    if !replace {
                        return Ok::<bool, Abort<String>>(false);
                    }
                    tx.remove(tree, old)?;
                }
                tx.insert(tree, key.as_slice(), value.as_slice())?;
                tx.insert(tree, index.as_slice(), key.as_slice())?;
                Ok(true)
            })
            .map_err(failed)?;
        if stored {
            self.flush().await?;
        }
        Ok(stored)
    }

    async fn timer(&self, dedupe: &str) -> Result<Option<Timer>> {
        let Some(key) = self.tree.get(dedupe_key(dedupe))? else {
            return Ok(None);
        };
        match self.tree.get(key)? {
            Some(v) => Ok(Some(decode(&v).map_err(codec)?)),
            None => Ok(None),
        }
    }

    async fn due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Timer>> {
        let mut end = vec![b't'];
        end.extend_from_slice(&ms(now));
        end.extend_from_slice(&[0xff; 16]);
        let mut out = Vec::new();
        for kv in self.tree.range(vec![b't']..=end).take(limit) {
            let (_, v) = kv?;
            out.push(decode::<Timer>(&v).map_err(codec)?);
        }
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>> {
        match self.tree.scan_prefix([b't']).next() {
            Some(kv) => {
                let (_, v) = kv?;
                Ok(Some(decode::<Timer>(&v).map_err(codec)?.due))
            }
            None => Ok(None),
        }
    }

    async fn finish(&self, finish: Finish) -> Result<()> {
        let mut records = Vec::with_capacity(finish.records.len());
        for r in &finish.records {
            let key = message_key(r);
            let mut index = customer_prefix(r.customer);
            index.extend_from_slice(&key[1..]);
            records.push((key, index, encode(r).map_err(codec)?));
        }
        let next = match &finish.next {
            Some(t) => Some((
                timer_key(t),
                dedupe_key(&t.dedupe),
                encode(t).map_err(codec)?,
            )),
            None => None,
        };
        let done = finish
            .timer
            .as_ref()
            .map(|t| (timer_key(t), dedupe_key(&t.dedupe)));
        let ended: Vec<Vec<u8>> = finish
            .ended
            .iter()
            .map(|(sku, c)| subscription_key(sku, *c))
            .collect();
        let tree = &self.tree;
        self.keyspace
            .transaction(&[tree], |tx| {
                if let Some((key, index)) = &done {
                    tx.remove(tree, key.as_slice())?;
                    // The index may already name a newer timer of the same key.
                    if tx.get(tree, index)?.as_deref() == Some(key.as_slice()) {
                        tx.remove(tree, index.as_slice())?;
                    }
                }
                if let Some((key, index, value)) = &next {
                    if let Some(old) = tx.get(tree, index)? {
                        tx.remove(tree, old)?;
                    }
                    tx.insert(tree, key.as_slice(), value.as_slice())?;
                    tx.insert(tree, index.as_slice(), key.as_slice())?;
                }
                for (key, index, value) in &records {
                    tx.insert(tree, key.as_slice(), value.as_slice())?;
                    tx.insert(tree, index.as_slice(), key.as_slice())?;
                }
                for key in &ended {
                    tx.remove(tree, key.as_slice())?;
                }
                Ok::<(), Abort<String>>(())
            })
            .map_err(failed)?;
        self.flush().await
    }

    async fn subscribe(&self, subscription: StockSubscription) -> Result<bool> {
        let key = subscription_key(&subscription.sku, subscription.customer);
        let value = encode(&subscription).map_err(codec)?;
        let fresh = self
            .tree
            .compare_and_swap(key, None, Some(value.as_slice()))?
            .is_ok();
        if fresh {
            self.flush().await?;
        }
        Ok(fresh)
    }

    async fn subscribers(&self, sku: &Sku) -> Result<Vec<StockSubscription>> {
        self.tree
            .scan_prefix(subscription_prefix(sku))
            .map(|kv| {
                let (_, v) = kv?;
                decode(&v).map_err(codec)
            })
            .collect()
    }

    async fn subscribed_skus(&self) -> Result<Vec<Sku>> {
        let mut skus: Vec<Sku> = Vec::new();
        for kv in self.tree.scan_prefix([b's']) {
            let (_, v) = kv?;
            let s: StockSubscription = decode(&v).map_err(codec)?;
            if skus.last() != Some(&s.sku) {
                skus.push(s.sku);
            }
        }
        Ok(skus)
    }

    async fn messages(&self, filter: MessageFilter) -> Result<Vec<MessageRecord>> {
        let wanted = |r: &MessageRecord| filter.kind.is_none_or(|k| r.kind == k);
        let mut out = Vec::new();
        match filter.customer {
            Some(customer) => {
                for kv in self.tree.scan_prefix(customer_prefix(customer)).rev() {
                    let (_, key) = kv?;
                    if let Some(v) = self.tree.get(key)? {
                        let r: MessageRecord = decode(&v).map_err(codec)?;
                        if wanted(&r) {
                            out.push(r);
                        }
                    }
                    if out.len() >= filter.limit {
                        break;
                    }
                }
            }
            None => {
                for kv in self.tree.scan_prefix([b'm']).rev() {
                    let (_, v) = kv?;
                    let r: MessageRecord = decode(&v).map_err(codec)?;
                    if wanted(&r) {
                        out.push(r);
                    }
                    if out.len() >= filter.limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}
