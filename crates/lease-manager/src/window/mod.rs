//! The shared table of the worker's own guaranteed windows, which tokens read without asking
//! it: [`table`] is the table itself, written over plain parameters so that its loom model
//! check (`cargo xtask loom`, `crates/lease-loom`) compiles that very file cheaply; here it is
//! instantiated with the manager's keys, generations and instants.

use lease_core::{Generation, Key, Timestamp};

mod table;

/// A guaranteed window of an own claim, as tokens see it.
pub(crate) type Window = table::Window<Generation, Timestamp>;
/// The window of one key, shared by the worker (which writes it) and tokens (which read it).
pub(crate) type Slot = table::Slot<Generation, Timestamp>;
/// Slots by key: the worker publishes into the slots tokens made.
pub(crate) type SlotTable = table::SlotTable<Key, Generation, Timestamp>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn slots_publish_and_sweep() {
        let table = SlotTable::default();
        let key = Key::new("ns", "m", "a");
        // No slot: publishing does nothing.
        table.publish(&key, None);
        assert_eq!(table.len(), 0);
        let slot = table.slot_for(&key);
        assert_eq!(slot.held("h", || Timestamp::from_nanos(1)), None);
        table.publish(
            &key,
            Some(Window {
                holder: Arc::from("h"),
                generation: Generation(7),
                until: Timestamp::from_nanos(10),
            }),
        );
        assert_eq!(
            slot.held("h", || Timestamp::from_nanos(9)),
            Some(Generation(7))
        );
        assert_eq!(slot.held("h", || Timestamp::from_nanos(10)), None);
        assert_eq!(slot.held("x", || Timestamp::from_nanos(9)), None);
        table.sweep();
        assert_eq!(table.len(), 1);
        drop(slot);
        table.sweep();
        assert_eq!(table.len(), 0);
    }
}
