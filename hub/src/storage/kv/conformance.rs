//! The keyspace's semantics, stated once and run on every backend (`suite!(run)` in each
//! backend's tests, `run` giving each case a fresh keyspace).

use super::{Abort, Batch, CasMismatch, Keyspace, TxError};

/// One `#[test]` per case, each calling `$run(case)`.
macro_rules! suite {
    ($run:path) => {
        #[test]
        fn kv_orders_keys_by_their_bytes() {
            $run($crate::storage::kv::conformance::orders_keys_by_their_bytes)
        }
        #[test]
        fn kv_scans_prefixes_and_ranges_across_pages() {
            $run($crate::storage::kv::conformance::scans_prefixes_and_ranges_across_pages)
        }
        #[test]
        fn kv_writes_and_batches() {
            $run($crate::storage::kv::conformance::writes_and_batches)
        }
        #[test]
        fn kv_compare_and_swap() {
            $run($crate::storage::kv::conformance::compare_and_swap)
        }
        #[test]
        fn kv_transactions_span_trees() {
            $run($crate::storage::kv::conformance::transactions_span_trees)
        }
        #[test]
        fn kv_an_aborted_transaction_writes_nothing() {
            $run($crate::storage::kv::conformance::an_aborted_transaction_writes_nothing)
        }
        #[test]
        fn kv_concurrent_transactions_lose_no_update() {
            $run($crate::storage::kv::conformance::concurrent_transactions_lose_no_update)
        }
        #[test]
        fn kv_a_missing_key_is_claimed_once() {
            $run($crate::storage::kv::conformance::a_missing_key_is_claimed_once)
        }
        #[test]
        fn kv_works_from_actix_threads() {
            $run($crate::storage::kv::conformance::works_from_actix_threads)
        }
    };
}
pub(crate) use suite;

fn keys(iter: super::Iter) -> Vec<Vec<u8>> {
    iter.map(|e| e.expect("scan reads").0).collect()
}

pub(crate) fn orders_keys_by_their_bytes(ks: &Keyspace) {
    let t = ks.open_tree("order").expect("tree");
    let stored: [&[u8]; 7] = [b"b", b"ab", &[0xff], b"a", &[0x00], b"a\x00", &[0xff, 0x00]];
    for k in stored {
        t.insert(k, k).expect("insert");
    }
    let expected: Vec<Vec<u8>> = [
        &[0x00][..],
        b"a",
        b"a\x00",
        b"ab",
        b"b",
        &[0xff],
        &[0xff, 0x00],
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    assert_eq!(keys(t.iter()), expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(keys(t.iter().rev()), reversed);
    let values: Vec<Vec<u8>> = t.iter().map(|e| e.expect("reads").1).collect();
    assert_eq!(values, expected, "values stay with their keys");
    // Trees are separate namespaces.
    let other = ks.open_tree("order-other").expect("tree");
    assert_eq!(other.get(b"a").expect("get"), None);
    assert_eq!(keys(other.iter()), Vec::<Vec<u8>>::new());
}

pub(crate) fn scans_prefixes_and_ranges_across_pages(ks: &Keyspace) {
    let t = ks.open_tree("scan").expect("tree");
    let mut b = Batch::default();
    // More entries than one PostgreSQL page, under two prefixes, and one past `p\xff`.
    for i in 0u16..600 {
        b.insert(
            [b"p/".as_slice(), &i.to_be_bytes()].concat(),
            i.to_be_bytes(),
        );
    }
    for i in 0u16..3 {
        b.insert([b"q/".as_slice(), &i.to_be_bytes()].concat(), Vec::new());
    }
    b.insert([b'p', 0xff], b"x".to_vec());
    b.insert(b"p".to_vec(), b"x".to_vec());
    t.apply_batch(b).expect("batch");
    let p = keys(t.scan_prefix(b"p/"));
    assert_eq!(p.len(), 600);
    assert!(p.windows(2).all(|w| w[0] < w[1]), "ascending");
    assert_eq!(p[0], [b"p/".as_slice(), &0u16.to_be_bytes()].concat());
    let back = keys(t.scan_prefix(b"p/").rev());
    assert_eq!(back.len(), 600);
    assert_eq!(back[0], [b"p/".as_slice(), &599u16.to_be_bytes()].concat());
    assert_eq!(keys(t.scan_prefix(b"p")).len(), 602, "p, p/…, p\\xff");
    assert_eq!(keys(t.scan_prefix([b'p', 0xff])), vec![vec![b'p', 0xff]]);
    assert_eq!(keys(t.scan_prefix(b"q/")).len(), 3);
    assert_eq!(keys(t.scan_prefix(b"r")).len(), 0);
    // Ranges: inclusive, exclusive and open ends; a scan stopped early.
    let from = [b"p/".as_slice(), &10u16.to_be_bytes()].concat();
    let to = [b"p/".as_slice(), &20u16.to_be_bytes()].concat();
    assert_eq!(keys(t.range(from.clone()..to.clone())).len(), 10);
    assert_eq!(keys(t.range(from.clone()..=to.clone())).len(), 11);
    assert_eq!(keys(t.range(from.clone()..=to.clone()).rev())[0], to);
    assert_eq!(keys(t.range(..from.clone())).len(), 11, "p and p/0..p/9");
    let tail = keys(t.range(b"q".to_vec()..));
    assert_eq!(tail.len(), 3);
    let first_two: Vec<_> = t
        .range(from.clone()..)
        .take(2)
        .map(|e| e.expect("reads").0)
        .collect();
    assert_eq!(first_two[0], from);
}

pub(crate) fn writes_and_batches(ks: &Keyspace) {
    let t = ks.open_tree("writes").expect("tree");
    assert_eq!(t.get(b"k").expect("get"), None);
    t.insert(b"k", b"one").expect("insert");
    t.insert(b"k", b"two").expect("overwrite");
    assert_eq!(t.get(b"k").expect("get").as_deref(), Some(&b"two"[..]));
    assert!(t.contains_key(b"k").expect("contains"));
    t.remove(b"k").expect("remove");
    t.remove(b"never").expect("removing a missing key is fine");
    assert!(!t.contains_key(b"k").expect("contains"));
    t.insert(b"empty", b"").expect("an empty value");
    assert_eq!(t.get(b"empty").expect("get"), Some(Vec::new()));

    t.insert(b"gone", b"x").expect("insert");
    let mut b = Batch::default();
    b.insert(b"a".to_vec(), b"1".to_vec());
    b.insert(b"a".to_vec(), b"2".to_vec());
    b.insert(b"c".to_vec(), b"3".to_vec());
    b.remove(b"c".to_vec());
    b.remove(b"gone".to_vec());
    t.apply_batch(b).expect("batch");
    assert_eq!(
        t.get(b"a").expect("get").as_deref(),
        Some(&b"2"[..]),
        "the last write wins"
    );
    assert_eq!(t.get(b"c").expect("get"), None);
    assert_eq!(t.get(b"gone").expect("get"), None);
    t.apply_batch(Batch::default()).expect("an empty batch");
    ks.flush().expect("flush");
    t.flush().expect("flush");
}

pub(crate) fn compare_and_swap(ks: &Keyspace) {
    let t = ks.open_tree("cas").expect("tree");
    assert_eq!(
        t.compare_and_swap(b"k", None, Some(b"1")).expect("cas"),
        Ok(())
    );
    assert_eq!(
        t.compare_and_swap(b"k", None, Some(b"2")).expect("cas"),
        Err(CasMismatch {
            current: Some(b"1".to_vec())
        })
    );
    assert_eq!(
        t.get(b"k").expect("get").as_deref(),
        Some(&b"1"[..]),
        "nothing written"
    );
    assert_eq!(
        t.compare_and_swap(b"k", Some(b"1"), Some(b"2"))
            .expect("cas"),
        Ok(())
    );
    assert_eq!(
        t.compare_and_swap(b"k", Some(b"1"), None).expect("cas"),
        Err(CasMismatch {
            current: Some(b"2".to_vec())
        })
    );
    assert_eq!(
        t.compare_and_swap(b"k", Some(b"2"), None).expect("cas"),
        Ok(())
    );
    assert_eq!(t.get(b"k").expect("get"), None);
    assert_eq!(
        t.compare_and_swap(b"k", Some(b"2"), Some(b"3"))
            .expect("cas"),
        Err(CasMismatch { current: None })
    );
}

pub(crate) fn transactions_span_trees(ks: &Keyspace) {
    let stock = ks.open_tree("tx-stock").expect("tree");
    let orders = ks.open_tree("tx-orders").expect("tree");
    stock.insert(b"sku", 5u64.to_be_bytes()).expect("insert");
    let left: std::result::Result<u64, TxError<&str>> = ks.transaction(&[&stock, &orders], |tx| {
        let raw = tx.get(&stock, b"sku")?.ok_or(Abort::Abort("no stock"))?;
        let n = u64::from_be_bytes(raw.as_slice().try_into().map_err(|_| Abort::Abort("bad"))?);
        tx.insert(&stock, b"sku", (n - 2).to_be_bytes())?;
        tx.insert(&orders, b"o1", b"2")?;
        // A transaction reads its own writes.
        assert_eq!(tx.get(&orders, b"o1")?.as_deref(), Some(&b"2"[..]));
        let mut b = Batch::default();
        b.insert(b"o2".to_vec(), b"0".to_vec());
        b.remove(b"o2".to_vec());
        tx.apply_batch(&orders, &b)?;
        Ok(n - 2)
    });
    assert_eq!(left.expect("committed"), 3);
    assert_eq!(
        stock.get(b"sku").expect("get"),
        Some(3u64.to_be_bytes().to_vec())
    );
    assert_eq!(orders.get(b"o1").expect("get").as_deref(), Some(&b"2"[..]));
    assert_eq!(orders.get(b"o2").expect("get"), None);
    ks.flush().expect("flush");
}

pub(crate) fn an_aborted_transaction_writes_nothing(ks: &Keyspace) {
    let a = ks.open_tree("abort-a").expect("tree");
    let b = ks.open_tree("abort-b").expect("tree");
    a.insert(b"kept", b"before").expect("insert");
    let outcome: std::result::Result<(), TxError<String>> = ks.transaction(&[&a, &b], |tx| {
        tx.insert(&a, b"kept", b"after")?;
        tx.insert(&b, b"new", b"x")?;
        tx.remove(&a, b"kept")?;
        Err(Abort::Abort("out of stock".to_string()))
    });
    match outcome {
        Err(TxError::Abort(reason)) => assert_eq!(reason, "out of stock"),
        other => panic!("aborted, got {other:?}"),
    }
    assert_eq!(
        a.get(b"kept").expect("get").as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(b.get(b"new").expect("get"), None);
    assert_eq!(keys(b.iter()), Vec::<Vec<u8>>::new());
}

fn read_u64(raw: Option<Vec<u8>>) -> u64 {
    raw.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

pub(crate) fn concurrent_transactions_lose_no_update(ks: &Keyspace) {
    const THREADS: u64 = 4;
    const EACH: u64 = 25;
    let counter = ks.open_tree("race-counter").expect("tree");
    let log = ks.open_tree("race-log").expect("tree");
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (ks, counter, log) = (ks.clone(), counter.clone(), log.clone());
            s.spawn(move || {
                for i in 0..EACH {
                    let r: std::result::Result<(), TxError<()>> =
                        ks.transaction(&[&counter, &log], |tx| {
                            let n = read_u64(tx.get(&counter, b"n")?);
                            tx.insert(&counter, b"n", (n + 1).to_be_bytes())?;
                            tx.insert(&log, (n + 1).to_be_bytes(), [thread as u8, i as u8])?;
                            Ok(())
                        });
                    r.expect("committed");
                }
                // Compare-and-swap loops on another key race the same way.
                for _ in 0..EACH {
                    loop {
                        let current = counter.get(b"cas").expect("get");
                        let next = (read_u64(current.clone()) + 1).to_be_bytes();
                        let swapped = counter
                            .compare_and_swap(b"cas", current.as_deref(), Some(&next))
                            .expect("cas");
                        if swapped.is_ok() {
                            break;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(read_u64(counter.get(b"n").expect("get")), THREADS * EACH);
    assert_eq!(read_u64(counter.get(b"cas").expect("get")), THREADS * EACH);
    // Every increment saw a distinct value: one log entry per increment.
    assert_eq!(keys(log.iter()).len() as u64, THREADS * EACH);
}

pub(crate) fn a_missing_key_is_claimed_once(ks: &Keyspace) {
    const THREADS: u8 = 6;
    let claims = ks.open_tree("claims").expect("tree");
    let winners: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|who| {
                let (ks, claims) = (ks.clone(), claims.clone());
                s.spawn(move || {
                    let r: std::result::Result<(), TxError<()>> =
                        ks.transaction(&[&claims], |tx| {
                            if tx.get(&claims, b"email")?.is_some() {
                                return Err(Abort::Abort(()));
                            }
                            tx.insert(&claims, b"email", [who])?;
                            Ok(())
                        });
                    match r {
                        Ok(()) => true,
                        Err(TxError::Abort(())) => false,
                        Err(e) => panic!("storage failed: {e}"),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let holder = claims.get(b"email").expect("get").expect("claimed");
    assert!(
        winners[usize::from(holder[0])],
        "the winner's claim is stored"
    );
}

/// The modules call the keyspace from actix arbiters (current-thread tokio runtimes) and from
/// async functions: it must answer there, not panic or hang.
pub(crate) fn works_from_actix_threads(ks: &Keyspace) {
    use crate::automation::{AutomationStore, KvAutomationStore};
    use protocol::automation::StockSubscription;
    let ks = ks.clone();
    actix_web::rt::System::new().block_on(async move {
        let t = ks.open_tree("actix").expect("tree");
        t.insert(b"k", b"v").expect("insert on the system's thread");
        let r: std::result::Result<(), TxError<()>> = ks.transaction(&[&t], |tx| {
            let v = tx.get(&t, b"k")?.unwrap_or_default();
            tx.insert(&t, b"k2", v)?;
            Ok(())
        });
        r.expect("a transaction on the system's thread");
        let arbiter = actix::Arbiter::new();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let on_arbiter = t.clone();
        arbiter.spawn(async move {
            let _ = answer.send(on_arbiter.get(b"k2"));
        });
        let read = answered.await.expect("the arbiter answers");
        assert_eq!(read.expect("get on an arbiter").as_deref(), Some(&b"v"[..]));
        arbiter.stop();
        // A module's store, whose async functions call the keyspace.
        let store = KvAutomationStore::open(&ks).expect("store");
        let sub = StockSubscription {
            customer: protocol::CustomerId(ulid::Ulid::new()),
            sku: protocol::Sku::parse("TEE-1").expect("a sku"),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        assert!(store.subscribe(sub.clone()).await.expect("subscribes"));
        assert!(!store.subscribe(sub.clone()).await.expect("once"));
        assert_eq!(store.subscribers(&sub.sku).await.expect("reads"), vec![sub]);
    });
}
