//! The lease rows this store's connection wrote and still holds, remembered between
//! transactions, so that a renewal need not read its row back: [`crate::ops`]'s common
//! extension is then one `UPDATE` instead of a `SELECT` and an `UPDATE`.
//!
//! Why it is sound:
//!
//! - The memory is trusted only while no other connection has committed. Each write
//!   transaction, holding the write lock, reads its connection's `PRAGMA data_version`, which
//!   every commit of another connection changes and this connection's own do not, and
//!   forgets every row when it moved since the rows were recorded ([`OwnRows::begin`]).
//! - The `UPDATE` that renews from a remembered row also matches the row's holder, boot,
//!   expiry, generation and session as remembered; a row that is not exactly so (a memory
//!   gone stale for a reason this module did not foresee) is not written, and the renewal
//!   reads the row as it always did.
//! - What the memory alone vouches for (the `UPDATE` cannot match it cheaply) is the
//!   metadata and whether the lease is pinned. Only a commit changes them: another
//!   connection's (all rows forgotten) or this store's claim, extension with metadata, revoke,
//!   pin or unpin of the key, each of which forgets the key first.
//! - A transaction's new rows are kept aside until it has committed; one that ends any other
//!   way (an error, a rollback, a failed commit, which may or may not have taken effect)
//!   forgets every row ([`OwnRowsTx`]'s `Drop`).
//!
//! Bounded: at most [`OwnRows::LIMIT`] rows are remembered; the rest are renewed as before.

use std::collections::HashMap;

use lease_core::{Generation, Info, Key, Timestamp};

/// A lease row as this store wrote it, held by `holder` under `session` on this boot.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OwnRow {
    /// Its rowid, which finds it without its key's index.
    pub(crate) rowid: i64,
    pub(crate) holder: String,
    /// The holder session recorded in the row (`None`: death-awareness is off).
    pub(crate) session: Option<i64>,
    pub(crate) expiry: Timestamp,
    pub(crate) generation: u64,
    pub(crate) metadata: Option<serde_json::Value>,
    pub(crate) pinned: bool,
}

impl OwnRow {
    /// What the lease's holder is told about it.
    pub(crate) fn info(&self) -> Info {
        Info {
            holder: self.holder.clone(),
            expiry: self.expiry,
            generation: Generation(self.generation),
            metadata: self.metadata.clone(),
            pinned: self.pinned,
        }
    }
}

/// The remembered rows of one connection, and the data version they were recorded under.
#[derive(Debug, Default)]
pub(crate) struct OwnRows {
    rows: HashMap<Key, OwnRow>,
    /// `PRAGMA data_version` when `rows` were last known to match the file (`None`: never).
    version: Option<i64>,
}

impl OwnRows {
    /// At most this many rows are remembered (a few megabytes at most).
    pub(crate) const LIMIT: usize = 16_384;

    /// Starts a write transaction's use of the memory: `version` is the connection's
    /// `PRAGMA data_version` read inside the transaction, after the write lock was taken.
    /// Every row is forgotten when another connection has committed since they were recorded.
    pub(crate) fn begin(&mut self, version: i64) -> OwnRowsTx<'_> {
        if self.version != Some(version) {
            self.rows.clear();
            self.version = Some(version);
        }
        OwnRowsTx {
            memory: self,
            staged: Vec::new(),
            committed: false,
        }
    }

    /// Forgets every row.
    pub(crate) fn forget_all(&mut self) {
        self.rows.clear();
        self.version = None;
    }

    /// How many rows are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// The memory during one write transaction; call [`OwnRowsTx::committed`] once it has
/// committed. Dropped otherwise, every row is forgotten.
#[derive(Debug)]
pub(crate) struct OwnRowsTx<'a> {
    memory: &'a mut OwnRows,
    /// Rows this transaction wrote, remembered once it has committed, in the order written.
    staged: Vec<(Key, OwnRow)>,
    committed: bool,
}

impl OwnRowsTx<'_> {
    /// The remembered row of `key`, taken out of the memory: the transaction rewrites it
    /// (and [`OwnRowsTx::record`]s it again) or leaves it forgotten.
    pub(crate) fn take(&mut self, key: &Key) -> Option<(Key, OwnRow)> {
        self.memory.rows.remove_entry(key)
    }

    /// Forgets `key`'s row, remembered or written earlier in this transaction: the
    /// transaction changes it in a way the memory does not follow.
    pub(crate) fn forget(&mut self, key: &Key) {
        self.memory.rows.remove(key);
        self.staged.retain(|(k, _)| k != key);
    }

    /// Forgets every row, remembered or written in this transaction.
    pub(crate) fn forget_all(&mut self) {
        self.memory.rows.clear();
        self.staged.clear();
    }

    /// Remembers `row` as `key`'s once the transaction has committed.
    pub(crate) fn record(&mut self, key: Key, row: OwnRow) {
        self.staged.push((key, row));
    }

    /// The transaction committed: its rows are remembered (while there is room).
    pub(crate) fn committed(mut self) {
        self.committed = true;
        for (key, row) in std::mem::take(&mut self.staged) {
            if self.memory.rows.len() < OwnRows::LIMIT || self.memory.rows.contains_key(&key) {
                self.memory.rows.insert(key, row);
            }
        }
    }
}

impl Drop for OwnRowsTx<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.memory.forget_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(expiry: u64) -> OwnRow {
        OwnRow {
            rowid: 1,
            holder: "h".into(),
            session: Some(1),
            expiry: Timestamp::from_nanos(expiry),
            generation: 1,
            metadata: None,
            pinned: false,
        }
    }

    fn key(name: &str) -> Key {
        Key::new("ns", "m", name)
    }

    #[test]
    fn rows_are_remembered_only_once_their_transaction_committed() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(7);
        tx.record(key("a"), row(10));
        assert_eq!(tx.take(&key("a")), None, "not before the commit");
        tx.committed();
        let mut tx = memory.begin(7);
        assert_eq!(tx.take(&key("a")), Some((key("a"), row(10))));
        assert_eq!(tx.take(&key("a")), None, "taken out");
    }

    #[test]
    fn a_transaction_that_does_not_commit_forgets_everything() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.record(key("b"), row(10));
        tx.committed();
        let mut tx = memory.begin(1);
        tx.record(key("c"), row(10));
        drop(tx);
        assert_eq!(memory.len(), 0);
        // Nor does a later transaction at the same version find anything.
        let mut tx = memory.begin(1);
        assert_eq!(tx.take(&key("a")), None);
        assert_eq!(tx.take(&key("c")), None);
    }

    #[test]
    fn another_connections_commit_forgets_everything() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.committed();
        let mut tx = memory.begin(2);
        assert_eq!(tx.take(&key("a")), None);
    }

    #[test]
    fn forgetting_a_key_drops_what_this_transaction_wrote_for_it_too() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.record(key("b"), row(10));
        tx.committed();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(20));
        tx.forget(&key("a"));
        tx.forget(&key("b"));
        tx.committed();
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn the_last_row_written_for_a_key_is_remembered() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.record(key("a"), row(20));
        tx.committed();
        let mut tx = memory.begin(1);
        assert_eq!(
            tx.take(&key("a")).map(|(_, r)| r.expiry),
            Some(row(20).expiry)
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        for i in 0..OwnRows::LIMIT + 10 {
            tx.record(key(&i.to_string()), row(10));
        }
        tx.committed();
        assert_eq!(memory.len(), OwnRows::LIMIT);
        // A remembered key is still updated when full.
        let mut tx = memory.begin(1);
        tx.record(key("0"), row(30));
        tx.committed();
        let mut tx = memory.begin(1);
        assert_eq!(
            tx.take(&key("0")).map(|(_, r)| r.expiry),
            Some(row(30).expiry)
        );
    }
}
