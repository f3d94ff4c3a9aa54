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
//! - A transaction's rows are remembered as it writes them (within it they are what SQLite
//!   shows it), and one that ends any other way than committed (an error, a rollback, a failed
//!   commit, which may or may not have taken effect) forgets every row ([`OwnRowsTx`]'s
//!   `Drop`): no row of a transaction that did not commit outlives it.
//!
//! Bounded: at most [`OwnRows::LIMIT`] rows are remembered; the rest are renewed as before.

use std::collections::HashMap;

use foldhash::fast::RandomState;

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
    /// The row's `expiry_bound` ([`crate::schema`], version 5).
    pub(crate) expiry_bound: Timestamp,
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
    /// Keyed with foldhash, seeded per process: a renewal hashes its key once, and SipHash's
    /// share of a renewal was measurable.
    rows: HashMap<Key, OwnRow, RandomState>,
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
    committed: bool,
}

impl OwnRowsTx<'_> {
    /// The remembered row of `key`, to rewrite in place: its caller updates it as it writes
    /// the row, or [`OwnRowsTx::forget`]s it.
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut OwnRow> {
        self.memory.rows.get_mut(key)
    }

    /// Forgets `key`'s row: the transaction changes it in a way the memory does not follow.
    pub(crate) fn forget(&mut self, key: &Key) {
        self.memory.rows.remove(key);
    }

    /// Forgets every row.
    pub(crate) fn forget_all(&mut self) {
        self.memory.rows.clear();
    }

    /// Remembers `row` as `key`'s (while there is room), as this transaction wrote it; kept
    /// only if the transaction commits.
    pub(crate) fn record(&mut self, key: Key, row: OwnRow) {
        let rows = &mut self.memory.rows;
        if rows.len() < OwnRows::LIMIT || rows.contains_key(&key) {
            rows.insert(key, row);
        }
    }

    /// The transaction committed: its rows stay remembered.
    pub(crate) fn committed(mut self) {
        self.committed = true;
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
            expiry_bound: Timestamp::from_nanos(1_000),
            generation: 1,
            metadata: None,
            pinned: false,
        }
    }

    fn key(name: &str) -> Key {
        Key::new("ns", "m", name)
    }

    /// The row as remembered, read through a new transaction at `version`.
    fn remembered(memory: &mut OwnRows, version: i64, k: &Key) -> Option<OwnRow> {
        let mut tx = memory.begin(version);
        let row = tx.get_mut(k).cloned();
        tx.committed();
        row
    }

    #[test]
    fn rows_outlive_their_transaction_only_once_it_committed() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(7);
        tx.record(key("a"), row(10));
        // Within the transaction, the row is as SQLite shows it there.
        assert_eq!(tx.get_mut(&key("a")).cloned(), Some(row(10)));
        tx.committed();
        assert_eq!(remembered(&mut memory, 7, &key("a")), Some(row(10)));
        // Updated in place by a committed transaction.
        let mut tx = memory.begin(7);
        tx.get_mut(&key("a")).unwrap().expiry = Timestamp::from_nanos(20);
        tx.committed();
        assert_eq!(remembered(&mut memory, 7, &key("a")), Some(row(20)));
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
        assert_eq!(remembered(&mut memory, 1, &key("a")), None);
        assert_eq!(remembered(&mut memory, 1, &key("c")), None);
    }

    #[test]
    fn an_update_in_place_that_does_not_commit_is_forgotten() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.committed();
        let mut tx = memory.begin(1);
        tx.get_mut(&key("a")).unwrap().expiry = Timestamp::from_nanos(20);
        drop(tx);
        assert_eq!(remembered(&mut memory, 1, &key("a")), None);
    }

    #[test]
    fn another_connections_commit_forgets_everything() {
        let mut memory = OwnRows::default();
        let mut tx = memory.begin(1);
        tx.record(key("a"), row(10));
        tx.committed();
        assert_eq!(remembered(&mut memory, 2, &key("a")), None);
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
        assert_eq!(remembered(&mut memory, 1, &key("a")), Some(row(20)));
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
        assert_eq!(remembered(&mut memory, 1, &key("0")), Some(row(30)));
    }
}
