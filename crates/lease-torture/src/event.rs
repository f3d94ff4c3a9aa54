//! What participants log: one JSON object per line, appended to a per-process file with one
//! `write` per line, so a SIGKILL loses at most the line being written (the reader skips a torn
//! last line). Every instant is nanoseconds on `CLOCK_BOOTTIME`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Whether a logged window came from a claim (a new term) or an extend of the holder's term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// A claim that made the holder the holder (a new fencing generation).
    Claim,
    /// An extend (a claim by the current holder) that kept the generation.
    Extend,
}

/// One logged fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    /// SQLite: a successful claim or extend, and the window in which the holder may act.
    Window {
        /// The lease.
        lease: String,
        /// The holder (unique per worker incarnation).
        holder: String,
        /// The fencing generation the call returned.
        generation: u64,
        /// Claim or extend.
        kind: WindowKind,
        /// When the call started.
        start: u64,
        /// When the call returned: the window's start.
        returned: u64,
        /// `start + duration` (as the worker believes it): the window's end, exclusive.
        end: u64,
    },
    /// SQLite: the holder stops acting under this generation (logged before it revokes).
    Release {
        /// The lease.
        lease: String,
        /// The holder.
        holder: String,
        /// The generation of the term it ends.
        generation: u64,
        /// The instant it stopped acting.
        at: u64,
    },
    /// SQLite: a worker stops acting at the end of its run, and exits holding what it holds
    /// (its leases are free at its death: it acts no later than `at`).
    Exit {
        /// The worker incarnation's holder name.
        holder: String,
        /// The instant it stopped acting.
        at: u64,
    },
    /// SQLite: a worker's running totals (the last line of a file counts).
    Stats {
        /// The worker incarnation's holder name.
        holder: String,
        /// Claims of a lease someone else held that the manager denied.
        denied: u64,
        /// Revokes that succeeded.
        revoked: u64,
        /// Calls that failed otherwise (no inference may be made).
        errors: u64,
    },
    /// Kubernetes: this candidate became leader (`lock()` returned).
    Lead {
        /// The lease.
        lease: String,
        /// The candidate's identity.
        holder: String,
        /// The term's fencing generation.
        generation: u64,
        /// When the winning claim started.
        claim_start: u64,
        /// When `lock()` returned: the term's start.
        at: u64,
    },
    /// Kubernetes: the leader saw its lost token fire and stopped acting.
    Lost {
        /// The lease.
        lease: String,
        /// The candidate's identity.
        holder: String,
        /// The term's fencing generation.
        generation: u64,
        /// When the candidate saw the token fire.
        at: u64,
        /// The start of the last successful renewal the candidate saw (the claim's start if
        /// none): the lease is guaranteed until this plus the lease duration.
        last_renew: u64,
        /// Renewals the candidate saw succeed in the term.
        renewals: u64,
    },
    /// Kubernetes: the leader stops acting at the end of its run (logged before it releases).
    Stop {
        /// The lease.
        lease: String,
        /// The candidate's identity.
        holder: String,
        /// The term's fencing generation.
        generation: u64,
        /// The instant it stopped acting.
        at: u64,
        /// As in [`Event::Lost`].
        last_renew: u64,
        /// As in [`Event::Lost`].
        renewals: u64,
    },
    /// Orchestrator: a participant was SIGKILLed and reaped at `at` (it acted no later).
    Killed {
        /// The participant's holder name or identity.
        holder: String,
        /// After the kill was confirmed by `wait`.
        at: u64,
    },
    /// Orchestrator: a server process was stopped and started again.
    Outage {
        /// `kube-apiserver` or `etcd`.
        what: String,
        /// When it had stopped.
        down_at: u64,
        /// When it was up and ready again.
        up_at: u64,
    },
}

/// An append-only event log.
#[derive(Debug)]
pub struct EventLog {
    file: File,
}

impl EventLog {
    /// Opens (creating or appending to) `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog { file })
    }

    /// Appends `event` as one line with one write.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_string(event).map_err(io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }
}

/// The events of `text`, skipping lines that do not parse (a line torn by SIGKILL); returns
/// them and the number of skipped lines.
pub fn parse(text: &str) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(e) => events.push(e),
            Err(_) => skipped += 1,
        }
    }
    (events, skipped)
}

/// The events of every `*.jsonl` file in `dir`, and the number of skipped lines.
///
/// # Errors
///
/// When the folder or a file cannot be read.
pub fn read_dir(dir: &Path) -> io::Result<(Vec<Event>, usize)> {
    let mut events = Vec::new();
    let mut skipped = 0;
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let (mut e, s) = parse(&text);
        events.append(&mut e);
        skipped += s;
    }
    Ok((events, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_lines() {
        let e = Event::Release {
            lease: "l".into(),
            holder: "h".into(),
            generation: 3,
            at: 9,
        };
        let mut text = serde_json::to_string(&e).unwrap();
        text.push_str("\n{\"e\":\"rele");
        let (events, skipped) = parse(&text);
        assert_eq!(events, [e]);
        assert_eq!(skipped, 1);
    }
}
