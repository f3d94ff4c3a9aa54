//! The file-system watch under the change notifier ([`crate::changes`]): inotify on the
//! database's directory, read directly (rustix), by the notifier's one thread.
//!
//! # Why not a watcher crate
//!
//! A commit appends each of its WAL frames with its own `write`, and each write queues an
//! inotify event. A watcher that blocks on the queue is woken by every one of them: with the
//! `notify` crate that was a thread woken, an event object with its path built and handed on,
//! and the notifier's thread woken again, per frame; at a busy manager's commit rate that cost
//! as much CPU as the commits. Here the notifier reads the queue when it is ready to look, and
//! while it is not (the least pause between two looks), it is not waiting on the queue: the
//! kernel merges each event into the identical one before it and wakes no one.
//!
//! # Stopping
//!
//! The thread also waits on the read end of a pipe whose write end the owner keeps: dropping
//! it ([`Stopper`]) hangs the pipe up, and the thread's next wait returns [`Wake::Stop`].

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// The watch's buffer: room for at least one event with the longest file name (`NAME_MAX`).
const BUFFER: usize = 4096;

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Something was written to the database or its `-wal` (or the `-wal` was created), or
    /// the kernel's queue overflowed (events were lost, one of them may have been a commit).
    Written,
    /// The time passed with nothing relevant.
    Quiet,
    /// The owner dropped its [`Stopper`], or the watch itself ended (the directory was removed
    /// or unmounted) or failed: nothing more will be reported.
    Stop,
}

/// Kept by the watch's owner: dropping it tells the thread to stop.
pub(crate) struct Stopper {
    _write_end: OwnedFd,
}

/// An inotify watch on a database's directory, for writes to the database and its `-wal`.
pub(crate) struct DirWatch {
    inotify: OwnedFd,
    wd: i32,
    stop: OwnedFd,
    names: [Vec<u8>; 2],
    buf: Vec<MaybeUninit<u8>>,
}

impl DirWatch {
    /// Watches the directory of the database at `path`.
    ///
    /// # Errors
    ///
    /// When the path names no file, or the watch cannot be set up (no inotify instances or
    /// watches left, a file system without inotify) or the pipe cannot be made.
    pub(crate) fn new(path: &Path) -> io::Result<(DirWatch, Stopper)> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?;
        let name = name.as_encoded_bytes().to_vec();
        let mut wal = name.clone();
        wal.extend_from_slice(b"-wal");
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let wd = inotify::add_watch(
            &inotify,
            crate::paths::parent_dir(path),
            WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::ONLYDIR,
        )?;
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((
            DirWatch {
                inotify,
                wd,
                stop: read_end,
                names: [name, wal],
                buf: vec![MaybeUninit::uninit(); BUFFER],
            },
            Stopper {
                _write_end: write_end,
            },
        ))
    }

    /// Waits until something relevant was written, `timeout` passes (`None`: no limit;
    /// zero: only what is already queued) or the watch stops. Everything queued is read.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> Wake {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // A pause too long for a `timespec` (or an `Instant`) is no limit.
            let left = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .and_then(|t| Timespec::try_from(t).ok());
            let mut fds = [
                PollFd::new(&self.inotify, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, left.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return Wake::Stop,
            }
            // The pipe is never written to: any readiness is its hang-up.
            if !fds[1].revents().is_empty() {
                return Wake::Stop;
            }
            let ready = !fds[0].revents().is_empty();
            match self.drain() {
                Drained::Gone => return Wake::Stop,
                Drained::Written => return Wake::Written,
                // Woken by events that do not matter (another file): wait on, for what is
                // left of the time.
                Drained::Nothing if ready && deadline.is_none_or(|d| Instant::now() < d) => {}
                Drained::Nothing => return Wake::Quiet,
            }
        }
    }

    /// Reads every queued event and sums them up.
    fn drain(&mut self) -> Drained {
        let mut out = Drained::Nothing;
        let mut reader = inotify::Reader::new(&self.inotify, &mut self.buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => return out,
                Err(Errno::INTR) => continue,
                Err(_) => return Drained::Gone,
            };
            match classify(
                self.wd,
                &self.names,
                event.wd(),
                event.events(),
                event.file_name().map(|n| n.to_bytes()),
            ) {
                Drained::Gone => return Drained::Gone,
                Drained::Written => out = Drained::Written,
                Drained::Nothing => {}
            }
        }
    }
}

/// The sum of the events read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    Nothing,
    Written,
    Gone,
}

/// What one event means for a watch `wd` on the directory of the files `names`.
fn classify(
    wd: i32,
    names: &[Vec<u8>; 2],
    event_wd: i32,
    flags: ReadFlags,
    name: Option<&[u8]>,
) -> Drained {
    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
        return Drained::Written;
    }
    if event_wd != wd {
        return Drained::Nothing;
    }
    if flags.contains(ReadFlags::IGNORED) || flags.contains(ReadFlags::UNMOUNT) {
        return Drained::Gone;
    }
    let ours = name.is_some_and(|n| names.iter().any(|m| m.as_slice() == n));
    if ours && flags.intersects(ReadFlags::MODIFY | ReadFlags::CREATE) {
        Drained::Written
    } else {
        Drained::Nothing
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    fn names() -> [Vec<u8>; 2] {
        [b"l.db".to_vec(), b"l.db-wal".to_vec()]
    }

    #[test]
    fn only_writes_to_the_database_and_its_wal_are_relevant() {
        // (event's watch, flags, file name, meaning) for a watch 1 on "l.db"'s directory.
        let cases: [(i32, ReadFlags, Option<&str>, Drained); 10] = [
            (1, ReadFlags::MODIFY, Some("l.db"), Drained::Written),
            (1, ReadFlags::MODIFY, Some("l.db-wal"), Drained::Written),
            (1, ReadFlags::CREATE, Some("l.db-wal"), Drained::Written),
            // The shared-memory index, other files and other kinds of event are not.
            (1, ReadFlags::MODIFY, Some("l.db-shm"), Drained::Nothing),
            (1, ReadFlags::MODIFY, Some("other.db"), Drained::Nothing),
            (1, ReadFlags::ATTRIB, Some("l.db"), Drained::Nothing),
            (
                1,
                ReadFlags::CLOSE_WRITE,
                Some("l.db-wal"),
                Drained::Nothing,
            ),
            // Another watch's events are not ours.
            (2, ReadFlags::MODIFY, Some("l.db"), Drained::Nothing),
            // A lost queue may hide a commit; a removed watch ends the notifier.
            (-1, ReadFlags::QUEUE_OVERFLOW, None, Drained::Written),
            (1, ReadFlags::IGNORED, None, Drained::Gone),
        ];
        for (wd, flags, name, meaning) in cases {
            assert_eq!(
                classify(1, &names(), wd, flags, name.map(str::as_bytes)),
                meaning,
                "{wd} {flags:?} {name:?}"
            );
        }
    }

    #[test]
    fn a_write_wakes_the_wait_other_files_do_not_and_dropping_the_stopper_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.db");
        let (mut watch, stopper) = DirWatch::new(&db).unwrap();
        assert_eq!(watch.wait(Some(Duration::ZERO)), Wake::Quiet);
        std::fs::write(dir.path().join("l.db-shm"), b"x").unwrap();
        assert_eq!(watch.wait(Some(Duration::ZERO)), Wake::Quiet);
        let mut wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("l.db-wal"))
            .unwrap();
        // Many writes before the wait: read at once, one wake-up.
        for _ in 0..100 {
            wal.write_all(b"frame").unwrap();
        }
        assert_eq!(watch.wait(None), Wake::Written);
        assert_eq!(watch.wait(Some(Duration::ZERO)), Wake::Quiet);
        drop(stopper);
        assert_eq!(watch.wait(None), Wake::Stop);
    }

    #[test]
    fn removing_the_directory_ends_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let (mut watch, _stopper) = DirWatch::new(&sub.join("l.db")).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        assert_eq!(watch.wait(None), Wake::Stop);
    }
}
