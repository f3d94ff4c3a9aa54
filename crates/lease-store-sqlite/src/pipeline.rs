//! Batches started ahead ([`Store::start_apply`](lease_core::Store::start_apply)): one thread
//! per store applies them in the order they were started, going from one batch straight to the
//! next. Through [`tokio::task::spawn_blocking`] each batch costs two thread hand-offs on its
//! critical path (a pool thread woken to begin it, the caller's task woken to plan the next),
//! during which the file is idle; here the next batch is already queued when this one commits.
//!
//! The thread takes the connection's lock for each batch as any other call does (other calls
//! still run on blocking threads, one at a time with the batches), and ends when the store is
//! dropped and its queue is empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use lease_core::{Error, Op, Outcome, StartedApply};
use tokio::sync::oneshot;

/// A batch's results, and its ops back, to be freed on the caller's thread (while the apply
/// thread works, the file waits for nothing else; its CPU per op fell from 3.3 to 2.8 µs with
/// the validation and the frees moved off it, BENCHMARKS.md).
type Reply = (Vec<lease_core::Result<Outcome>>, Vec<Op>);

/// One started batch, with what its validation found (`C`, the store's to read), and where its
/// results go.
struct Job<C> {
    ops: Vec<Op>,
    checked: C,
    reply: oneshot::Sender<Reply>,
}

/// The thread that applies started batches, and its queue; `C` is what the validation of a
/// batch found, done on the caller's thread before the batch is queued.
pub(crate) struct ApplyThread<C> {
    jobs: Option<mpsc::Sender<Job<C>>>,
    /// Batches started and not yet answered.
    unanswered: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl<C: Send + 'static> ApplyThread<C> {
    /// Starts the thread; `apply` applies one batch as [`Store::apply`] does (taking the
    /// connection's lock for it), given its validation's results.
    ///
    /// [`Store::apply`]: lease_core::Store::apply
    ///
    /// # Errors
    ///
    /// When the thread cannot be created.
    pub(crate) fn spawn(
        mut apply: impl FnMut(&[Op], C) -> Vec<lease_core::Result<Outcome>> + Send + 'static,
    ) -> std::io::Result<ApplyThread<C>> {
        let (jobs, queue) = mpsc::channel::<Job<C>>();
        let unanswered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&unanswered);
        let thread = std::thread::Builder::new()
            .name("lease-sqlite-apply".into())
            .spawn(move || {
                while let Ok(Job {
                    ops,
                    checked,
                    reply,
                }) = queue.recv()
                {
                    // Its caller gave up before its turn: it never touches the file, as a
                    // dropped call waiting for the lock would not.
                    let results = (!reply.is_closed()).then(|| apply(&ops, checked));
                    // Counted before the answer goes out, so that a store dropped once its
                    // caller has the answer finds the thread idle and waits for it to end
                    // (it has nothing left to do but find the queue closed).
                    count.fetch_sub(1, Ordering::AcqRel);
                    if let Some(results) = results {
                        let _ = reply.send((results, ops));
                    }
                }
            })?;
        Ok(ApplyThread {
            jobs: Some(jobs),
            unanswered,
            thread: Some(thread),
        })
    }

    /// Queues `ops` (whose validation `checked` holds) behind the batches started before;
    /// `Err(ops)` when the thread has ended (it panicked).
    pub(crate) fn start(&self, ops: Vec<Op>, checked: C) -> Result<StartedApply, Vec<Op>> {
        let Some(jobs) = &self.jobs else {
            return Err(ops);
        };
        let count = ops.len();
        let (reply, results) = oneshot::channel();
        self.unanswered.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(job)) = jobs.send(Job {
            ops,
            checked,
            reply,
        }) {
            self.unanswered.fetch_sub(1, Ordering::AcqRel);
            return Err(job.ops);
        }
        Ok(Box::pin(async move {
            results
                .await
                .map(|(results, _ops)| results)
                .unwrap_or_else(|_| {
                    // The thread panicked in the batch: SQLite rolled its transaction back.
                    (0..count)
                        .map(|_| {
                            Err(Error::store_msg(
                                "batch not applied: the SQLite store's apply thread failed",
                            ))
                        })
                        .collect()
                })
        }))
    }
}

impl<C> Drop for ApplyThread<C> {
    /// Closes the queue; waits for the thread only when it has nothing left to do (then it
    /// ends at once), so that the connection and the holder session are released before the
    /// store's drop returns. A batch still running (abandoned by its caller) finishes on its
    /// own: waiting for it could block the dropping task for as long as the file is stalled.
    fn drop(&mut self) {
        self.jobs = None;
        if self.unanswered.load(Ordering::Acquire) == 0
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}
