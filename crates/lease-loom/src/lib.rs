//! The loom model check of lease-manager's token window table: every interleaving of the
//! worker's publishes, its clear before a revoke and its stop, with tokens' reads, so that no
//! interleaving lets a read say "held" outside a published window or after the clear.
//!
//! The tests compile lease-manager's own `src/window/table.rs` (the file, not a copy) with
//! loom's locks (`cfg(loom)`, set by this crate's build script), over plain keys, generations
//! and instants. Run them with `cargo xtask loom` (`cargo test -p lease-loom --release`).

#[cfg(test)]
#[path = "../../lease-manager/src/window/table.rs"]
mod table;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;

    use super::table::{SlotTable, Window};

    /// The table as lease-manager uses it, with a lease name for a key, the fencing
    /// generation as a number and instants in nanoseconds.
    type Table = SlotTable<&'static str, u64, u64>;

    const KEY: &str = "ns/m/a";

    fn window(generation: u64, until: u64) -> Option<Window<u64, u64>> {
        Some(Window {
            holder: Arc::from("h"),
            generation,
            until,
        })
    }

    /// The worker publishes a window, then gives the lease up: it clears the window, then
    /// sends the revoke (here: sets `revoked`). A token that has seen the revoke go out never
    /// reads "held", and no read says "held" at or past the window's end or with a generation
    /// never published.
    #[test]
    fn loom_no_read_says_held_after_the_clear_before_revoke_or_past_the_window() {
        loom::model(|| {
            let table = Arc::new(Table::default());
            let slot = table.slot_for(&KEY);
            let revoked = Arc::new(AtomicBool::new(false));
            let worker = {
                let (table, revoked) = (Arc::clone(&table), Arc::clone(&revoked));
                thread::spawn(move || {
                    table.publish(&KEY, window(1, 10));
                    table.publish(&KEY, window(1, 20));
                    // disown: clear first, then revoke.
                    table.publish(&KEY, None);
                    revoked.store(true, Ordering::Release);
                })
            };
            let reader = {
                let (slot, revoked) = (Arc::clone(&slot), Arc::clone(&revoked));
                thread::spawn(move || {
                    let seen_revoke = revoked.load(Ordering::Acquire);
                    let at_15 = slot.held("h", || 15);
                    let at_20 = slot.held("h", || 20);
                    let other = slot.held("x", || 1);
                    assert!(!(seen_revoke && at_15.is_some()), "held after the revoke");
                    assert_eq!(at_20, None, "held at the window's end");
                    assert_eq!(other, None, "held by another holder");
                    assert!(matches!(at_15, None | Some(1)));
                })
            };
            // The main thread reads too: a second token, at an instant only the first window
            // does not cover.
            let at_12 = slot.held("h", || 12);
            worker.join().unwrap();
            reader.join().unwrap();
            assert!(matches!(at_12, None | Some(1)));
            assert_eq!(slot.held("h", || 1), None);
        });
    }

    /// A token making its slot while the worker publishes and then stops (`clear_all`): the
    /// read sees the window or nothing (and then asks the worker), and once the stop is done
    /// nothing reads "held".
    #[test]
    fn loom_a_slot_made_while_the_worker_publishes_and_stops() {
        loom::model(|| {
            let table = Arc::new(Table::default());
            let worker = {
                let table = Arc::clone(&table);
                thread::spawn(move || {
                    table.publish(&KEY, window(3, 10));
                    table.clear_all();
                })
            };
            let slot = table.slot_for(&KEY);
            let before = slot.held("h", || 5);
            assert!(matches!(before, None | Some(3)));
            worker.join().unwrap();
            assert_eq!(slot.held("h", || 5), None);
            table.sweep();
            drop(slot);
            table.sweep();
            assert_eq!(table.len(), 0);
        });
    }
}
