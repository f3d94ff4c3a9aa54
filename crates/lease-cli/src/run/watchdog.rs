//! The watchdog of `lease run`: a thread of its own that watches the clock and nothing else,
//! so that no store call, however long it hangs, can delay stopping the command.
//!
//! It hears of each successful renewal (the start of the call) and of a renewal that was
//! refused, and does what lease-run-policy's [`Supervisor`] decides: SIGTERM to the command's
//! process group when the lease is lost, SIGKILL to the group and every descendant by the kill
//! deadline, always before the window ends. The decisions are the machine's (which the
//! simulator drives too); this thread only brings it the clock and the events, and sends the
//! signals, the messages and the deadline it asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use lease_core::Timestamp;
use lease_run_policy::{Effect, Loss, Supervisor};
use rustix::process::{Pid, Signal};

use super::timing::Timing;
use crate::backend;
use crate::human::format_duration;

/// What the watchdog hears.
#[derive(Debug)]
pub(crate) enum Event {
    /// A renewal that started at this instant succeeded.
    Renewed(Timestamp),
    /// The store refused a renewal: the lease is gone.
    Lost(String),
    /// The command's tree is gone: stop watching.
    TreeGone,
}

/// A running watchdog.
pub(crate) struct Watchdog {
    events: Sender<Event>,
    thread: JoinHandle<Option<String>>,
}

/// Who the watchdog watches, for its messages and its signals.
pub(crate) struct Watched {
    /// The command's process group (the shim's pid).
    pub(crate) group: Pid,
    /// `lease run`'s pid (descendants re-parented to it are part of the tree).
    pub(crate) me: i32,
    /// "lease KEY (generation N)".
    pub(crate) lease: String,
    /// The command, for messages.
    pub(crate) program: String,
    /// The kill deadline shared with the shim.
    pub(crate) deadline: super::deadline::DeadlineFile,
}

impl Watchdog {
    /// Starts watching a lease whose window started at `window_start`. `lost` is set once the
    /// lease is given up, so that renewals stop.
    pub(crate) fn start(
        timing: Timing,
        window_start: Timestamp,
        watched: Watched,
        lost: Arc<AtomicBool>,
    ) -> Watchdog {
        let (events, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || watch(timing, window_start, &watched, &lost, &rx));
        Watchdog { events, thread }
    }

    /// Where to send events (cloneable for other threads).
    pub(crate) fn sender(&self) -> Sender<Event> {
        self.events.clone()
    }

    /// Stops watching (the tree is gone); returns why the lease was lost, if it was.
    pub(crate) fn finish(self) -> Option<String> {
        let _ = self.events.send(Event::TreeGone);
        self.thread.join().unwrap_or_else(|_| {
            Some("the watchdog failed; the command was stopped to be safe".to_owned())
        })
    }
}

fn watch(
    timing: Timing,
    window_start: Timestamp,
    w: &Watched,
    lost_flag: &AtomicBool,
    rx: &Receiver<Event>,
) -> Option<String> {
    let clock = backend::clock();
    let mut machine = Supervisor::new(timing, window_start);
    let reason = |loss: Loss| match loss {
        Loss::NoRenewalInTime => format!(
            "no renewal succeeded within --renew-deadline {}",
            format_duration(timing.renew_deadline())
        ),
        Loss::Refused(reason) => reason,
        Loss::WindowEnding => "its window ended".to_owned(),
    };
    let mut event = lease_run_policy::Event::Tick;
    loop {
        let mut wake = Timestamp::MAX;
        for effect in machine.handle(clock.now(), event) {
            match effect {
                Effect::Terminate(loss) => {
                    lost_flag.store(true, Ordering::SeqCst);
                    eprintln!(
                        "lease: error: lost {}: {}; stopping {:?} with SIGTERM",
                        w.lease,
                        reason(loss),
                        w.program
                    );
                    let _ = rustix::process::kill_process_group(w.group, Signal::TERM);
                }
                Effect::Kill { window_left } => {
                    lost_flag.store(true, Ordering::SeqCst);
                    eprintln!(
                        "lease: error: {:?} still running {} before the lease's window ends; \
                         sending SIGKILL to its process tree",
                        w.program,
                        format_duration(window_left)
                    );
                    super::tree::kill_descendants_and_group(w.group, w.me);
                }
                Effect::MoveDeadline(at) => {
                    if let Err(e) = w.deadline.set(at) {
                        eprintln!(
                            "lease: warning: cannot move the deadline in {}: {e} (the command \
                             will be stopped at the old one)",
                            w.deadline.path().display()
                        );
                    }
                }
                Effect::WakeAt(at) => wake = at,
                Effect::Finished(verdict) => return verdict.map(reason),
            }
        }
        // Re-read the clock after every wake: the channel's timer runs on another clock.
        let pause = wake
            .saturating_duration_since(clock.now())
            .min(Duration::from_secs(3600));
        event = match rx.recv_timeout(pause) {
            Ok(Event::Renewed(start)) => lease_run_policy::Event::Renewed(start),
            Ok(Event::Lost(reason)) => lease_run_policy::Event::Refused(reason),
            Ok(Event::TreeGone) | Err(RecvTimeoutError::Disconnected) => {
                lease_run_policy::Event::TreeGone
            }
            Err(RecvTimeoutError::Timeout) => lease_run_policy::Event::Tick,
        };
    }
}
