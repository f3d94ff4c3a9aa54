//! [`Fence`]: the check a protected resource makes with a lease's fencing generation, so that a
//! holder that lost its lease without noticing (paused, partitioned) cannot do damage.

use std::sync::atomic::{AtomicU64, Ordering};

use lease_core::Generation;

/// A write carried a generation older than one the [`Fence`] has already admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("stale fencing generation {presented}: generation {highest} has already been admitted")]
pub struct StaleGeneration {
    /// The generation the rejected writer presented.
    pub presented: Generation,
    /// The highest generation admitted so far.
    pub highest: Generation,
}

/// Remembers the highest fencing generation it has admitted, atomically, and rejects anything
/// older (Kleppmann's fencing token; Chubby's sequencer).
///
/// Every lease guard of this crate exposes its generation; a protected resource keeps one
/// `Fence` per lease and calls [`Fence::admit`] before each write. Equal generations are
/// admitted (one holder writes many times); a newer generation raises the bar for everyone.
/// That is sound because a generation belongs to one term: every term's generation is strictly
/// greater than every earlier term's, also when the same candidate leads again (a
/// [`LeaderElector`](crate::LeaderElector) term begins with a fresh claim, never an extend of
/// an earlier term's lease).
///
/// A store that refuses writes from an older generation:
///
/// ```
/// use std::sync::Mutex;
/// use lease_core::Generation;
/// use lease_manager::{Fence, StaleGeneration};
///
/// #[derive(Default)]
/// struct Storage {
///     fence: Fence,
///     data: Mutex<Vec<String>>,
/// }
///
/// impl Storage {
///     fn write(&self, generation: Generation, value: &str) -> Result<(), StaleGeneration> {
///         // Admit and write under one lock, so a newer holder cannot slip in between.
///         let mut data = self.data.lock().unwrap();
///         self.fence.admit(generation)?;
///         data.push(value.to_owned());
///         Ok(())
///     }
/// }
///
/// let storage = Storage::default();
/// storage.write(Generation(3), "old leader")?;
/// storage.write(Generation(4), "new leader")?;
/// // The old leader wakes from a long pause and tries again: refused.
/// let err = storage.write(Generation(3), "stale").unwrap_err();
/// assert_eq!(err.highest, Generation(4));
/// assert_eq!(*storage.data.lock().unwrap(), ["old leader", "new leader"]);
/// # Ok::<(), StaleGeneration>(())
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
}

impl Fence {
    /// A fence that has admitted nothing (every generation passes at first).
    pub const fn new() -> Fence {
        Fence {
            highest: AtomicU64::new(0),
        }
    }

    /// Admits `generation` if it is at least the highest admitted so far, and remembers it.
    ///
    /// # Errors
    ///
    /// [`StaleGeneration`] when a higher generation has already been admitted.
    pub fn admit(&self, generation: Generation) -> Result<(), StaleGeneration> {
        let previous = self.highest.fetch_max(generation.get(), Ordering::SeqCst);
        if generation.get() < previous {
            Err(StaleGeneration {
                presented: generation,
                highest: Generation(previous),
            })
        } else {
            Ok(())
        }
    }

    /// The highest generation admitted so far ([`Generation::default`] when none).
    pub fn highest(&self) -> Generation {
        Generation(self.highest.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_equal_and_newer_and_rejects_older() {
        let fence = Fence::new();
        assert_eq!(fence.highest(), Generation(0));
        fence.admit(Generation(2)).unwrap();
        fence.admit(Generation(2)).unwrap();
        fence.admit(Generation(5)).unwrap();
        let err = fence.admit(Generation(4)).unwrap_err();
        assert_eq!(
            err,
            StaleGeneration {
                presented: Generation(4),
                highest: Generation(5)
            }
        );
        assert_eq!(
            err.to_string(),
            "stale fencing generation 4: generation 5 has already been admitted"
        );
        assert_eq!(fence.highest(), Generation(5));
    }

    #[test]
    fn concurrent_admits_keep_the_maximum() {
        let fence = std::sync::Arc::new(Fence::new());
        let threads: Vec<_> = (1..=8u64)
            .map(|t| {
                let fence = std::sync::Arc::clone(&fence);
                std::thread::spawn(move || {
                    for g in 0..1000u64 {
                        let _ = fence.admit(Generation(g * 8 + t));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(fence.highest(), Generation(999 * 8 + 8));
    }
}
