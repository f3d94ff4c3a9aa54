//! [`OwnCommits`]: which commits to the file are a store's own, so its change notifier
//! ([`crate::changes`]) does not wake the manager for them.
//!
//! # How a commit is recognised
//!
//! Every write transaction of this crate sets its boot's `last_tx` to the highest in the `boot`
//! table plus one ([`crate::kernel::record_write`]), under SQLite's write lock: each committed
//! write takes the next number, one number per commit, whichever process made it. The store
//! announces the number its transaction took *before* committing (as pending), and settles it
//! after (kept when the commit succeeded, dropped when it failed). The notifier, seeing the file
//! change, reads the highest `last_tx` in the same snapshot and asks [`OwnCommits::judge`]
//! about the numbers since its last look:
//!
//! - every one of them the store's own, settled: nothing to report;
//! - one of them still pending: the store's commit is being settled (microseconds); look again;
//! - any other case: report. That includes a change that took no number at all (a hand edit
//!   with the `sqlite3` shell, a program that does not record its writes), and numbers that
//!   went down (a hand edit of the `boot` table).
//!
//! So a commit by anyone else that took a number is never taken for ours: a number is ours
//! only if our transaction took it and committed (SQLite gives it to no one else then). One
//! that rolled back may be taken again by the next writer, which is why a pending number is not
//! yet counted as ours. Forgetting (the list is bounded) only ever makes an own commit look
//! foreign: a needless wake-up, as before this existed.
//!
//! A change that took no number, made between two looks of the notifier that also saw a commit
//! of ours, is judged with ours. The store's connection tells it: its `PRAGMA data_version`
//! changes with other connections' commits only. So after each of its calls the store compares
//! it with the one of its last [`poll_changes`](lease_core::Store::poll_changes) and
//! [wakes](OwnCommits::wake) the manager when they differ; and the notifier, each time it
//! judged a change ours alone, [has the store check](OwnCommits::check_others) at once if no
//! call of the store is under way (one that is checks when it ends, after the change).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::watch;

/// The most numbers remembered; beyond, the oldest are forgotten (see the module docs).
const REMEMBERED: usize = 4096;

/// Asks the store, if it is idle, whether another connection committed since it last looked.
pub(crate) type OthersCheck = Box<dyn Fn() + Send + Sync>;

/// A store's own write-counter numbers, shared by its connection and its change notifier.
#[derive(Default)]
pub(crate) struct OwnCommits {
    /// Set while a notifier runs.
    watched: AtomicBool,
    /// `(number, committed)`, in increasing numbers.
    numbers: Mutex<VecDeque<(i64, bool)>>,
    /// The notifier's counter, for [`OwnCommits::wake`].
    counter: OnceLock<Weak<watch::Sender<u64>>>,
    /// The store's check for others' commits, for [`OwnCommits::check_others`].
    others: OnceLock<OthersCheck>,
    /// The highest write counter the store knows the file to have had (at open, at each of
    /// its commits, at each poll): a notifier starting later judges the commits its baseline
    /// holds beyond it ([`OwnCommits::known_counter`]).
    known: AtomicI64,
}

/// What the numbers since the notifier's last look say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every commit since was ours: nothing to report.
    Own,
    /// Someone else changed the file (or a change is not accounted for): report it.
    Foreign,
    /// All ours so far, but a commit of ours is not settled yet: look again shortly.
    Unsettled,
}

impl OwnCommits {
    fn numbers(&self) -> std::sync::MutexGuard<'_, VecDeque<(i64, bool)>> {
        self.numbers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notifier's counter, bumped by [`OwnCommits::wake`] (set once).
    pub(crate) fn set_counter(&self, counter: Weak<watch::Sender<u64>>) {
        let _ = self.counter.set(counter);
    }

    /// Whether a notifier reads the numbers.
    pub(crate) fn watched(&self) -> bool {
        self.watched.load(Ordering::Acquire)
    }

    /// Bumps the notifier's counter: the store found, after a commit of its own, that another
    /// connection had committed, which the notifier may have judged together with ours (a
    /// change that took no number, seen in the same look as our commit).
    pub(crate) fn wake(&self) {
        if let Some(counter) = self.counter.get().and_then(Weak::upgrade) {
            counter.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The store's check for others' commits (set once).
    pub(crate) fn set_others_check(&self, check: OthersCheck) {
        let _ = self.others.set(check);
    }

    /// Runs the store's check for others' commits: called by the notifier after it judged a
    /// change to be ours alone, as a change that took no number may hide in it.
    pub(crate) fn check_others(&self) {
        if let Some(check) = self.others.get() {
            check();
        }
    }

    /// A notifier starts (`true`) or ends (`false`) reading the numbers.
    pub(crate) fn set_watched(&self, watched: bool) {
        self.watched.store(watched, Ordering::Release);
    }

    /// Our transaction took `number` and is about to commit; [`OwnCommits::settled`] must
    /// follow. Recorded even while no notifier runs: one that is starting may read its baseline
    /// before this commit is visible, and must then know the commit as ours (the memory is
    /// bounded).
    pub(crate) fn committing(&self, number: i64) {
        let mut numbers = self.numbers();
        if numbers.len() >= REMEMBERED {
            numbers.pop_front();
        }
        numbers.push_back((number, false));
    }

    /// The store saw the file's write counter at `counter` (at open, or at a poll).
    pub(crate) fn saw_counter(&self, counter: i64) {
        self.known.fetch_max(counter, Ordering::AcqRel);
    }

    /// The highest write counter the store knows the file to have had. A notifier that starts
    /// reads its baseline a moment after its watch is in place: a commit of another connection
    /// made in between is in the baseline, with no event left to report it. So the notifier
    /// judges the numbers from this one, read when it was started, to its baseline's at its
    /// first event, as if it had looked last when it was asked for.
    pub(crate) fn known_counter(&self) -> i64 {
        self.known.load(Ordering::Acquire)
    }

    /// The commit that took `number` ended: committed, or not (the number is dropped, as the
    /// next writer may take it).
    pub(crate) fn settled(&self, number: i64, committed: bool) {
        if committed {
            self.saw_counter(number);
        }
        let mut numbers = self.numbers();
        if let Some(i) = numbers.iter().rposition(|&(n, _)| n == number) {
            if committed {
                numbers[i].1 = true;
            } else {
                numbers.remove(i);
            }
        }
    }

    /// Whether the commits that took the numbers after `seen` up to `latest` (the highest now
    /// in the file) are all ours; see the module documentation. A decided verdict forgets the
    /// numbers up to `latest`.
    pub(crate) fn judge(&self, seen: i64, latest: i64) -> Verdict {
        let Some(span) = latest.checked_sub(seen).filter(|&span| span > 0) else {
            // The file changed and no number was taken, or the numbers went down.
            return Verdict::Foreign;
        };
        let mut numbers = self.numbers();
        let (mut settled, mut pending) = (0_i64, 0_i64);
        for &(n, committed) in numbers.iter() {
            if n > seen && n <= latest {
                if committed {
                    settled += 1;
                } else {
                    pending += 1;
                }
            }
        }
        let verdict = if settled == span {
            Verdict::Own
        } else if settled + pending == span {
            // Perhaps ours once settled; perhaps not (rolled back, and taken by another).
            Verdict::Unsettled
        } else {
            Verdict::Foreign
        };
        if verdict != Verdict::Unsettled {
            numbers.retain(|&(n, _)| n > latest);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> OwnCommits {
        let own = OwnCommits::default();
        own.set_watched(true);
        assert!(own.watched());
        own
    }

    #[test]
    fn only_numbers_all_ours_and_committed_are_ours() {
        let own = watched();
        own.committing(5);
        own.settled(5, true);
        own.committing(6);
        own.settled(6, true);
        assert_eq!(own.judge(4, 6), Verdict::Own);
        // Forgotten once judged: the same numbers again are someone else's (a hand edit).
        assert_eq!(own.judge(4, 6), Verdict::Foreign);

        // Another writer's number between two of ours.
        own.committing(7);
        own.settled(7, true);
        own.committing(9);
        own.settled(9, true);
        assert_eq!(own.judge(6, 9), Verdict::Foreign);

        // A change that took no number, or numbers that went down.
        assert_eq!(own.judge(9, 9), Verdict::Foreign);
        assert_eq!(own.judge(9, 3), Verdict::Foreign);
        assert_eq!(own.judge(i64::MIN, i64::MAX), Verdict::Foreign);
    }

    #[test]
    fn a_pending_number_waits_and_a_rolled_back_one_is_not_ours() {
        let own = watched();
        own.committing(10);
        assert_eq!(own.judge(9, 10), Verdict::Unsettled);
        own.settled(10, true);
        assert_eq!(own.judge(9, 10), Verdict::Own);

        // Ours rolled back; the next writer took the same number.
        own.committing(11);
        assert_eq!(own.judge(10, 11), Verdict::Unsettled);
        own.settled(11, false);
        assert_eq!(own.judge(10, 11), Verdict::Foreign);

        // Pending, but another writer's number is in the span too: report at once.
        own.committing(13);
        assert_eq!(own.judge(11, 13), Verdict::Foreign);
    }

    #[test]
    fn the_memory_is_bounded() {
        let own = OwnCommits::default();
        let last = i64::try_from(REMEMBERED).unwrap() + 10;
        for n in 1..=last {
            own.committing(n);
            own.settled(n, true);
        }
        assert_eq!(own.numbers().len(), REMEMBERED);
        // The forgotten ones make the span look foreign: a needless report, never a lost one.
        assert_eq!(own.judge(0, last), Verdict::Foreign);
        assert!(own.numbers().is_empty(), "forgotten once judged");
    }
}
