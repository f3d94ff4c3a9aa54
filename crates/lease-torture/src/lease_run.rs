//! The `lease run` scenario: several `lease run --wait` loops on one SQLite lease, whose
//! commands ignore SIGTERM and spread (a child, and a double-forked daemon in its own session)
//! and leave both behind when they exit; meanwhile the orchestrator stalls the store at random
//! (another process holds the database's write lock for longer than the ttl, so renewals
//! cannot land) and SIGKILLs supervisors (`lease run` itself) at random.
//!
//! Every process of every command logs signs of life, `FENCE PID ROLE NANOS`, on the host's
//! shared monotonic clock, to its own file. A command's lifetime is the span from the first to
//! the last sign of life of any of its processes (its fence, `LEASE_FENCE`, tells which
//! command a process belongs to). The checker proves that no two commands' lifetimes overlap,
//! that they follow fencing order, and that no process of any tree is left at the end.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{now, proc, secs};

/// How the scenario runs.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Folder for the database, the marks and the supervisors' logs (emptied first).
    pub dir: PathBuf,
    /// The `lease` binary.
    pub lease_exe: PathBuf,
    /// This binary (the commands and the stalls are its subcommands).
    pub exe: PathBuf,
    /// `lease run --wait` loops at once.
    pub holders: u32,
    /// Length of the run.
    pub duration: Duration,
    /// The lease's ttl.
    pub ttl: Duration,
    /// A stall (the write lock held by another process) starts every `stall_every`, random in
    /// this range, and lasts random in `stall_length`.
    pub stall_every: (Duration, Duration),
    /// See `stall_every`.
    pub stall_length: (Duration, Duration),
    /// A random supervisor is SIGKILLed every so often (random in the range); `None`: never.
    pub kill_every: Option<(Duration, Duration)>,
    /// How long each command's main process works before exiting (random in the range).
    pub hold: (Duration, Duration),
    /// Seed of the random choices.
    pub seed: u64,
    /// MUTATION: every sign of life also claims the process lives this much longer than it
    /// does, so that the checker must report overlaps (zero for a real run).
    pub skew: Duration,
}

/// What the run did and what the checker found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The run's parameters.
    pub args: RunArgs,
    /// Wall time, s.
    pub elapsed: f64,
    /// `lease run` invocations started.
    pub runs: u64,
    /// Supervisors SIGKILLed.
    pub kills: u64,
    /// Stalls injected.
    pub stalls: u64,
    /// Runs that reported a lost lease (exit 3).
    pub lost: u64,
    /// Commands (fencing generations) that logged.
    pub commands: usize,
    /// Processes that logged.
    pub processes: usize,
    /// Signs of life logged.
    pub marks: u64,
    /// The shortest gap between one command's last sign of life and the next one's first, s.
    pub min_gap: Option<f64>,
    /// Overlapping lifetimes and out-of-order fences.
    pub violations: Vec<String>,
    /// Processes of a command tree still alive at the end.
    pub leftovers: Vec<String>,
}

impl Summary {
    /// No violation, no leftover, and the scenario actually exercised something.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.leftovers.is_empty() && self.commands >= 2
    }
}

/// One command's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Its fencing generation.
    pub fence: u64,
    /// First sign of life, ns.
    pub first: u64,
    /// Last sign of life, ns.
    pub last: u64,
}

/// Reads every `*.marks` file in `dir`: the lifetimes by fence, the pids seen, and how many
/// marks there were.
///
/// # Errors
///
/// When the folder cannot be read.
pub fn read_marks(dir: &Path) -> std::io::Result<(Vec<Lifetime>, Vec<u32>, u64)> {
    let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut pids = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "marks") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [fence, pid, _role, nanos] = parts[..] else {
                continue; // a line torn by SIGKILL
            };
            let (Ok(fence), Ok(pid), Ok(nanos)) = (
                fence.parse::<u64>(),
                pid.parse::<u32>(),
                nanos.parse::<u64>(),
            ) else {
                continue;
            };
            count += 1;
            if !pids.contains(&pid) {
                pids.push(pid);
            }
            let span = spans.entry(fence).or_insert((nanos, nanos));
            span.0 = span.0.min(nanos);
            span.1 = span.1.max(nanos);
        }
    }
    let lifetimes = spans
        .into_iter()
        .map(|(fence, (first, last))| Lifetime { fence, first, last })
        .collect();
    Ok((lifetimes, pids, count))
}

/// Checks that no two lifetimes overlap and that they follow fencing order; returns the
/// violations and the shortest gap between consecutive lifetimes (ns).
pub fn check(lifetimes: &[Lifetime]) -> (Vec<String>, Option<u64>) {
    let mut by_start = lifetimes.to_vec();
    by_start.sort_by_key(|l| (l.first, l.fence));
    let mut violations = Vec::new();
    let mut min_gap = None::<u64>;
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.first <= a.last {
            violations.push(format!(
                "fence {} ran until {:.3} s, but fence {} started at {:.3} s ({} ms of overlap)",
                a.fence,
                secs(a.last),
                b.fence,
                secs(b.first),
                (a.last - b.first) / 1_000_000
            ));
        } else {
            let gap = b.first - a.last;
            min_gap = Some(min_gap.map_or(gap, |g| g.min(gap)));
        }
        if b.fence <= a.fence {
            violations.push(format!(
                "fence {} started after fence {}: fencing generations out of order",
                b.fence, a.fence
            ));
        }
    }
    (violations, min_gap)
}

/// Runs the scenario.
///
/// # Errors
///
/// When the folder cannot be prepared or a process cannot be started.
pub fn run(args: RunArgs) -> Result<Summary, String> {
    crate::fresh_dir(&args.dir)?;
    let marks = args.dir.join("marks");
    let logs = args.dir.join("logs");
    for d in [&marks, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let db = args.dir.join("leases.db");
    let started = Instant::now();
    let until = started + args.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let slots: Arc<Vec<Mutex<Option<Child>>>> =
        Arc::new((0..args.holders).map(|_| Mutex::new(None)).collect());
    let runs = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for h in 0..args.holders {
        let (args, slots, runs, lost, stop) = (
            args.clone(),
            slots.clone(),
            runs.clone(),
            lost.clone(),
            stop.clone(),
        );
        let (db, marks, logs) = (db.clone(), marks.clone(), logs.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(args.seed ^ ((u64::from(h) + 1) * 0x9e37));
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let hold = pick(&mut rng, args.hold);
                let log = logs.join(format!("holder{h}-run{n}.log"));
                let Ok(child) = start_run(&args, &db, &marks, &log, hold) else {
                    break;
                };
                runs.fetch_add(1, Ordering::SeqCst);
                let slot = &slots[h as usize];
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                let status = loop {
                    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(child) = guard.as_mut() else {
                        break None;
                    };
                    if let Ok(Some(status)) = child.try_wait() {
                        *guard = None;
                        break Some(status);
                    }
                    drop(guard);
                    std::thread::sleep(Duration::from_millis(20));
                };
                if status.and_then(|s| s.code()) == Some(3) {
                    lost.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut stalls = 0;
    let mut kills = 0;
    let mut next_stall = started + pick(&mut rng, args.stall_every);
    let mut next_kill = args.kill_every.map(|r| started + pick(&mut rng, r));
    let mut stall: Option<Child> = None;
    while Instant::now() < until {
        if let Some(s) = stall.as_mut()
            && matches!(s.try_wait(), Ok(Some(_)))
        {
            stall = None;
        }
        if stall.is_none() && Instant::now() >= next_stall {
            let length = pick(&mut rng, args.stall_length);
            stall = Some(
                Command::new(&args.exe)
                    .arg("stall-sqlite")
                    .arg("--db")
                    .arg(&db)
                    .arg("--ms")
                    .arg(length.as_millis().to_string())
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start a stall: {e}"))?,
            );
            stalls += 1;
            next_stall = Instant::now() + length + pick(&mut rng, args.stall_every);
        }
        if let (Some(at), Some(range)) = (next_kill, args.kill_every)
            && Instant::now() >= at
        {
            let victim = rng.usize(..slots.len());
            let mut guard = slots[victim].lock().unwrap_or_else(|e| e.into_inner());
            if let Some(child) = guard.as_mut() {
                // The supervisor: the shim must take the command's tree down with it.
                let _ = proc::kill9(child);
                *guard = None;
                kills += 1;
            }
            next_kill = Some(Instant::now() + pick(&mut rng, range));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(mut s) = stall {
        let _ = proc::wait_timeout(&mut s, Duration::from_secs(30));
    }
    // Give the runs under way a moment to finish (each command's main process exits on its
    // own), then SIGKILL every supervisor still running: one more test of the shim.
    let grace = Instant::now() + args.ttl * 2;
    for slot in slots.iter() {
        loop {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(child) = guard.as_mut() else { break };
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            if Instant::now() >= grace {
                let _ = proc::kill9(child);
                break;
            }
            drop(guard);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    // The shims kill what is left of each tree at once; give a loaded host a moment.
    std::thread::sleep(Duration::from_millis(500));

    let (lifetimes, pids, count) =
        read_marks(&marks).map_err(|e| format!("cannot read the marks: {e}"))?;
    let (violations, min_gap) = check(&lifetimes);
    let leftovers = leftovers(&pids);
    Ok(Summary {
        elapsed: started.elapsed().as_secs_f64(),
        runs: runs.load(Ordering::SeqCst),
        kills,
        stalls,
        lost: lost.load(Ordering::SeqCst),
        commands: lifetimes.len(),
        processes: pids.len(),
        marks: count,
        min_gap: min_gap.map(secs),
        violations,
        leftovers,
        args,
    })
}

fn pick(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (
        lo.as_millis() as u64,
        hi.as_millis().max(lo.as_millis()) as u64,
    );
    Duration::from_millis(rng.u64(lo..=hi))
}

/// `lease run --wait` of a command that ignores SIGTERM (the disposition survives `exec` and
/// is inherited by its children).
fn start_run(
    args: &RunArgs,
    db: &Path,
    marks: &Path,
    log: &Path,
    hold: Duration,
) -> std::io::Result<Child> {
    let script = format!(
        "trap '' TERM; exec '{}' run-command --dir '{}' --hold-ms {} --skew-ms {}",
        args.exe.display(),
        marks.display(),
        hold.as_millis(),
        args.skew.as_millis()
    );
    let ttl = format!("{}ms", args.ttl.as_millis());
    Command::new(&args.lease_exe)
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .args(["run", "-l", "torture", "--wait", "--ttl", &ttl])
        .args(["--", "sh", "-c", &script])
        .env_remove("LEASE_HOLDER")
        .env_remove("LEASE_FENCE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(OpenOptions::new().create(true).append(true).open(log)?)
        .spawn()
}

/// The pids (of the marks) that are still live processes, with what they run.
fn leftovers(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .filter_map(|&pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            // A recycled pid runs something else.
            (!zombie && cmdline.contains("run-command"))
                .then(|| format!("pid {pid}: {}", cmdline.replace('\0', " ").trim()))
        })
        .collect()
}

/// The command `lease run` runs: logs signs of life every 10 ms; the main process starts a
/// child and a double-forked daemon, works for `hold`, then exits, leaving them behind.
///
/// # Errors
///
/// When a process cannot be started or the marks cannot be written.
pub fn command(dir: &Path, role: &str, hold: Duration, skew: Duration) -> Result<(), String> {
    let fence: u64 = std::env::var("LEASE_FENCE")
        .ok()
        .and_then(|f| f.parse().ok())
        .ok_or("LEASE_FENCE is not set: run me under `lease run`")?;
    let pid = std::process::id();
    let path = dir.join(format!("{fence}-{pid}.marks"));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let skew_ns = u64::try_from(skew.as_nanos()).unwrap_or(u64::MAX);
    let mut mark = || {
        let at = now();
        let mut line = format!("{fence} {pid} {role} {at}\n");
        if skew_ns > 0 {
            line.push_str(&format!(
                "{fence} {pid} {role} {}\n",
                at.saturating_add(skew_ns)
            ));
        }
        file.write_all(line.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    mark()?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find my binary: {e}"))?;
    let spawn = |role: &str| {
        Command::new(&me)
            .args(["run-command", "--role", role, "--dir"])
            .arg(dir)
            .arg("--skew-ms")
            .arg(skew.as_millis().to_string())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the {role}: {e}"))
    };
    match role {
        "main" => {
            let _child = spawn("child")?;
            let mut forker = spawn("forker")?;
            let _ = forker.wait();
            let end = now() + u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX);
            while now() < end {
                mark()?;
                std::thread::sleep(Duration::from_millis(10));
            }
            // Exit, leaving the child and the daemon behind: `lease run` must kill them
            // before it releases the lease.
            Ok(())
        }
        "forker" => {
            // The first fork of a double fork: start the daemon and exit at once.
            spawn("daemon")?;
            Ok(())
        }
        _ => {
            if role == "daemon" {
                let _ = rustix::process::setsid();
            }
            // Bounded, so that a bug cannot leave processes running for ever.
            let end = now() + 120_000_000_000;
            while now() < end {
                mark()?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }
    }
}

/// Holds the write lock of the SQLite database at `db` (`BEGIN IMMEDIATE`) for `hold`, as a
/// stalled writer would.
///
/// # Errors
///
/// When the database cannot be opened or locked.
pub fn stall(db: &Path, hold: Duration) -> Result<(), String> {
    let conn = rusqlite::Connection::open(db).map_err(|e| format!("cannot open the db: {e}"))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| format!("busy timeout: {e}"))?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("cannot take the write lock: {e}"))?;
    std::thread::sleep(hold);
    conn.execute_batch("COMMIT")
        .map_err(|e| format!("cannot commit: {e}"))
}

/// The scenario's section of `RELIABILITY.md`.
pub fn report_section(title: &str, s: &Summary) -> String {
    use std::fmt::Write as _;
    let a = &s.args;
    let ms = crate::report::ms;
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "| parameter | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| `lease run --wait` loops on one lease | {} |",
        a.holders
    );
    let _ = writeln!(
        out,
        "| run length | {:.0} s (wall time {:.1} s) |",
        a.duration.as_secs_f64(),
        s.elapsed
    );
    let _ = writeln!(
        out,
        "| `--ttl` | {} (renew deadline, kill-after: the defaults) |",
        ms(a.ttl)
    );
    let _ = writeln!(
        out,
        "| commands | ignore SIGTERM; a child and a double-forked `setsid` daemon, left \
         behind when the main process exits after {}–{} |",
        ms(a.hold.0),
        ms(a.hold.1)
    );
    let _ = writeln!(
        out,
        "| store stalls | another process holds the write lock for {}–{}, every {}–{} |",
        ms(a.stall_length.0),
        ms(a.stall_length.1),
        ms(a.stall_every.0),
        ms(a.stall_every.1)
    );
    let _ = writeln!(
        out,
        "| kill -9 of a supervisor (`lease run`) | {} |",
        a.kill_every.map_or("none".to_owned(), |(lo, hi)| format!(
            "every {}–{}",
            ms(lo),
            ms(hi)
        ))
    );
    if !a.skew.is_zero() {
        let _ = writeln!(
            out,
            "| **mutation** | every sign of life claims the process lives {} longer |",
            ms(a.skew)
        );
    }
    let _ = writeln!(out, "| seed | {} |\n", a.seed);
    let _ = writeln!(out, "| result | value |\n| --- | --- |");
    let _ = writeln!(out, "| `lease run` invocations | {} |", s.runs);
    let _ = writeln!(
        out,
        "| commands that ran (fencing generations) | {} |",
        s.commands
    );
    let _ = writeln!(
        out,
        "| processes / signs of life logged | {} / {} |",
        s.processes, s.marks
    );
    let _ = writeln!(out, "| stalls injected | {} |", s.stalls);
    let _ = writeln!(out, "| runs that lost the lease (exit 3) | {} |", s.lost);
    let _ = writeln!(out, "| supervisors SIGKILLed | {} |", s.kills);
    let _ = writeln!(
        out,
        "| shortest gap between two commands | {} |",
        s.min_gap
            .map_or("–".to_owned(), |g| format!("{:.1} ms", g * 1000.0))
    );
    let _ = writeln!(
        out,
        "| **overlapping command lifetimes** | **{}** |",
        s.violations.len()
    );
    let _ = writeln!(
        out,
        "| **processes left alive at the end** | **{}** |",
        s.leftovers.len()
    );
    for (name, items) in [
        ("Violations", &s.violations),
        ("Leftover processes", &s.leftovers),
    ] {
        crate::report::list(&mut out, name, items);
    }
    let _ = writeln!(
        out,
        "\nA command's lifetime runs from the first to the last sign of life of any of its \
         processes (every 10 ms each, on `CLOCK_BOOTTIME`); two commands overlap when one's \
         first sign of life is not after the other's last."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(fence: u64, first: u64, last: u64) -> Lifetime {
        Lifetime { fence, first, last }
    }

    #[test]
    fn the_checker_accepts_disjoint_lifetimes_in_fence_order() {
        let (v, gap) = check(&[l(1, 0, 10), l(2, 15, 30), l(4, 31, 40)]);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(gap, Some(1));
    }

    #[test]
    fn the_checker_catches_overlaps_and_fence_disorder() {
        let (v, _) = check(&[l(1, 0, 20), l(2, 15, 30)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("overlap"));
        let (v, _) = check(&[l(2, 0, 10), l(1, 15, 30)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("out of order"));
    }

    #[test]
    fn marks_are_read_and_torn_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("1-10.marks"),
            "1 10 main 5\n1 10 main 9\n1 1",
        )
        .unwrap();
        std::fs::write(dir.path().join("1-11.marks"), "1 11 child 12\n").unwrap();
        std::fs::write(dir.path().join("2-12.marks"), "2 12 main 20\n").unwrap();
        std::fs::write(dir.path().join("other.txt"), "3 13 main 1\n").unwrap();
        let (lifetimes, mut pids, count) = read_marks(dir.path()).unwrap();
        pids.sort_unstable();
        assert_eq!(lifetimes, vec![l(1, 5, 12), l(2, 20, 20)]);
        assert_eq!(pids, vec![10, 11, 12]);
        assert_eq!(count, 4);
    }
}
