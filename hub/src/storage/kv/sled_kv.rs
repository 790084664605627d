//! The keyspace on sled: a thin wrapper, trees are sled trees of the same name.

use super::{Abort, Tree, TreeBackend, Tx, TxError, TxFault, TxInner};
use crate::storage::StorageError;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use std::sync::Arc;

pub(super) fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

pub(super) fn tx_fault(e: UnabortableTransactionError) -> TxFault {
    match e {
        UnabortableTransactionError::Conflict => TxFault::Conflict,
        UnabortableTransactionError::Storage(e) => TxFault::Storage(io(e)),
    }
}

/// The transactional view of `tree`, which must be one the transaction was started with.
pub(super) fn tx_tree<'a>(
    names: &[Arc<str>],
    trees: &'a [TransactionalTree],
    tree: &Tree,
) -> Result<&'a TransactionalTree, TxFault> {
    names
        .iter()
        .position(|n| *n == tree.name)
        .and_then(|i| trees.get(i))
        .ok_or_else(|| {
            TxFault::Storage(StorageError::Io(format!(
                "the tree {} is not part of this transaction",
                tree.name
            )))
        })
}

pub(super) fn transaction<T, E, F>(trees: &[&Tree], f: F) -> Result<T, TxError<E>>
where
    F: Fn(&Tx<'_>) -> Result<T, Abort<E>>,
{
    let mut sled_trees = Vec::with_capacity(trees.len());
    for t in trees {
        match &t.backend {
            TreeBackend::Sled(s) => sled_trees.push(s.clone()),
            TreeBackend::Pg(_) => {
                return Err(TxError::Storage(StorageError::Io(format!(
                    "the tree {} is not in this keyspace",
                    t.name
                ))))
            }
        }
    }
    let names: Vec<Arc<str>> = trees.iter().map(|t| t.name.clone()).collect();
    let outcome = sled_trees.as_slice().transaction(|view| {
        let tx = Tx {
            inner: TxInner::Sled {
                names: &names,
                trees: view,
            },
        };
        match f(&tx) {
            Ok(v) => Ok(v),
            Err(Abort::Abort(e)) => Err(ConflictableTransactionError::Abort(TxError::Abort(e))),
            Err(Abort::Fault(TxFault::Conflict)) => Err(ConflictableTransactionError::Conflict),
            Err(Abort::Fault(TxFault::Storage(e))) => {
                Err(ConflictableTransactionError::Abort(TxError::Storage(e)))
            }
        }
    });
    outcome.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => TxError::Storage(io(e)),
    })
}

#[cfg(test)]
mod tests {
    use crate::storage::kv::{conformance, Keyspace};

    fn keyspace() -> (tempfile::TempDir, Keyspace) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(1 << 20)
            .open()
            .expect("sled opens");
        (dir, Keyspace::sled(db))
    }

    fn run(case: fn(&Keyspace)) {
        let (_dir, ks) = keyspace();
        case(&ks);
    }

    conformance::suite!(run);

    #[test]
    fn the_bytes_are_sleds_own() {
        let (_dir, ks) = keyspace();
        let tree = ks.open_tree("module").expect("tree");
        tree.insert(b"k", b"v").expect("insert");
        let crate::storage::kv::Backend::Sled(db) = &ks.backend else {
            panic!("a sled keyspace");
        };
        let raw = db
            .open_tree("module")
            .expect("tree")
            .get(b"k")
            .expect("get");
        assert_eq!(raw.as_deref(), Some(&b"v"[..]));
    }
}
