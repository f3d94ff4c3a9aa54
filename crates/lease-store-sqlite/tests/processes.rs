//! Several OS processes on one database file: mutual exclusion and fencing under contention on
//! the real clock, and a read-only file as an unprivileged user sees it.
//!
//! The children are this test binary itself, re-executed with `LEASE_SQLITE_CHILD` naming what
//! to do; [`child_entry_point`] is the test the children run, and does nothing otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lease_core::{Clock, Key, Op, Request, Store, SystemClock, Timestamp};
use lease_store_sqlite::{SqliteStore, SqliteStoreError};

const CHILD: &str = "LEASE_SQLITE_CHILD";
const DB: &str = "LEASE_SQLITE_DB";
const LOG: &str = "LEASE_SQLITE_LOG";
const ID: &str = "LEASE_SQLITE_ID";
const UNTIL: &str = "LEASE_SQLITE_UNTIL";
const LOCKED: &str = "LEASE_SQLITE_LOCKED";

const PROCESSES: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(3);
const KEYS: [&str; 3] = ["alpha", "beta", "gamma"];

/// Runs this test binary's [`child_entry_point`] with `envs`, optionally as another user.
fn spawn_child(envs: &[(&str, String)], uid: Option<u32>) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_entry_point",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn check_output(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entry point of child processes; a no-op when run as an ordinary test.
#[tokio::test]
async fn child_entry_point() {
    match std::env::var(CHILD).as_deref() {
        Ok("hammer") => hammer().await,
        Ok("read-only") => read_only_child(),
        Ok("queue-and-hang") => queue_and_hang().await,
        Ok(other) => panic!("unknown child mode {other:?}"),
        Err(_) => {}
    }
}

/// One holder's uninterrupted hold of one lease, as that holder believed it.
#[derive(Debug, Clone)]
struct Tenure {
    key: String,
    holder: String,
    generation: u64,
    /// When the successful claim call started.
    call_start: Timestamp,
    /// When it returned: the holder holds from here on.
    acquired: Timestamp,
    /// Until when the holder believed it held the lease: the start of its last successful
    /// claim or extend plus its duration, cut short by the start of a revoke.
    end: Timestamp,
}

impl Tenure {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            self.key,
            self.holder,
            self.generation,
            self.call_start.as_nanos(),
            self.acquired.as_nanos(),
            self.end.as_nanos()
        )
    }

    fn parse(line: &str) -> Tenure {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "bad log line {line:?}");
        let t = |s: &str| Timestamp::from_nanos(s.parse().unwrap());
        Tenure {
            key: f[0].to_owned(),
            holder: f[1].to_owned(),
            generation: f[2].parse().unwrap(),
            call_start: t(f[3]),
            acquired: t(f[4]),
            end: t(f[5]),
        }
    }
}

/// A small deterministic generator, seeded per process.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A child: claims, extends and revokes the few keys on the real clock until the deadline,
/// logging every tenure it had.
async fn hammer() {
    let path = PathBuf::from(std::env::var(DB).unwrap());
    let log_path = PathBuf::from(std::env::var(LOG).unwrap());
    let id: u64 = std::env::var(ID).unwrap().parse().unwrap();
    let until = Timestamp::from_nanos(std::env::var(UNTIL).unwrap().parse().unwrap());
    let holder = format!("proc-{id}");
    let clock = SystemClock::new();
    let mut store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_secs(2))
        .open()
        .unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut held: BTreeMap<&str, Tenure> = BTreeMap::new();
    let mut log = Vec::new();
    let (mut claims, mut denied, mut timeouts) = (0u64, 0u64, 0u64);

    while clock.now() < until {
        let name = KEYS[usize::try_from(rng.below(KEYS.len() as u64)).unwrap()];
        let key = Key::new("hammer", "model", name);
        let duration = Duration::from_millis(15 + rng.below(40));
        let request = Request::new(holder.clone(), duration);
        match held.remove(name) {
            None => {
                let call_start = clock.now();
                match store.claim_lease(&key, &request).await {
                    Ok(info) => {
                        claims += 1;
                        assert_eq!(info.holder, holder);
                        let acquired = clock.now();
                        held.insert(
                            name,
                            Tenure {
                                key: name.to_owned(),
                                holder: holder.clone(),
                                generation: info.generation.get(),
                                call_start,
                                acquired,
                                end: call_start.saturating_add(duration),
                            },
                        );
                    }
                    Err(e) if e.is_held() || e.is_invalid() => denied += 1,
                    Err(e) if e.is_timeout() => timeouts += 1,
                    Err(e) => panic!("claim failed: {e}"),
                }
            }
            Some(mut tenure) => {
                let start = clock.now();
                if start >= tenure.end {
                    // Our belief has lapsed: the tenure is over, whatever the store says.
                    log.push(tenure);
                } else if rng.below(3) == 0 {
                    tenure.end = tenure.end.min(start);
                    match store.revoke_lease(&key, &holder).await {
                        // NotHeld would mean someone took it while we held it: the checker
                        // reports that as an overlap, so log the tenure and carry on.
                        Ok(()) => {}
                        Err(e) if e.is_invalid() || e.is_timeout() || e.is_not_held() => {}
                        Err(e) => panic!("revoke failed: {e}"),
                    }
                    log.push(tenure);
                } else {
                    match store.extend_lease(&key, &request).await {
                        Ok(info) => {
                            assert_eq!(info.generation.get(), tenure.generation);
                            tenure.end = tenure.end.max(start.saturating_add(duration));
                            held.insert(name, tenure);
                        }
                        Err(e) if e.is_invalid() || e.is_timeout() => log.push(tenure),
                        Err(e) => panic!("extend failed: {e}"),
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
    }
    // This process exits now, holding what it holds: its holds end here (a dead process
    // cannot act on a lease, and the store frees a dead holder's leases at once).
    let exiting = clock.now();
    log.extend(held.into_values().map(|mut t| {
        t.end = t.end.min(exiting);
        t
    }));
    let mut file = fs::File::create(&log_path).unwrap();
    for tenure in &log {
        file.write_all(tenure.line().as_bytes()).unwrap();
    }
    println!("CHILD-DONE {holder}: {claims} claims, {denied} denied, {timeouts} timeouts");
}

#[test]
fn processes_hammering_one_file_never_overlap_and_fence_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    // Create and migrate the file before the race starts.
    drop(SqliteStore::open(&path).unwrap());
    let until = SystemClock::new().now().saturating_add(RUN_FOR);
    let children: Vec<_> = (0..PROCESSES)
        .map(|id| {
            let log = dir.path().join(format!("child-{id}.log"));
            spawn_child(
                &[
                    (CHILD, "hammer".to_owned()),
                    (DB, path.display().to_string()),
                    (LOG, log.display().to_string()),
                    (ID, id.to_string()),
                    (UNTIL, until.as_nanos().to_string()),
                ],
                None,
            )
        })
        .collect();
    for (id, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        check_output(&format!("child {id}"), &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("CHILD-DONE").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("child {id} did not run the hammer:\n{stdout}"));
        eprintln!("{line}");
    }

    let mut by_key: BTreeMap<String, Vec<Tenure>> = BTreeMap::new();
    for id in 0..PROCESSES {
        let text = fs::read_to_string(dir.path().join(format!("child-{id}.log"))).unwrap();
        for tenure in text.lines().map(Tenure::parse) {
            assert!(tenure.call_start <= tenure.acquired, "{tenure:?}");
            by_key.entry(tenure.key.clone()).or_default().push(tenure);
        }
    }
    let mut total = 0;
    for (key, mut tenures) in by_key {
        tenures.sort_by_key(|t| t.generation);
        for pair in tenures.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.generation < b.generation,
                "{key}: generation {} handed out twice: {a:?} {b:?}",
                a.generation
            );
            assert!(
                a.end <= b.acquired,
                "{key}: overlapping holds\n  {a:?}\n  {b:?}\n  overlap {:?}",
                a.end.saturating_duration_since(b.acquired)
            );
        }
        let holders: std::collections::BTreeSet<_> = tenures.iter().map(|t| &t.holder).collect();
        assert!(
            holders.len() >= 2,
            "{key}: only {holders:?} ever held it; no contention was tested"
        );
        eprintln!(
            "{key}: {} tenures by {} holders",
            tenures.len(),
            holders.len()
        );
        total += tenures.len();
    }
    assert!(total >= 50, "only {total} tenures in {RUN_FOR:?}");
}

/// Whether this process runs as root, who bypasses file permissions.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

const NOBODY: u32 = 65534;

/// A child: opens the database it is given, which it may not write, and reports the error.
fn read_only_child() {
    let path = PathBuf::from(std::env::var(DB).unwrap());
    let err = SqliteStore::builder(&path)
        .boot_id("boot-a")
        .open()
        .expect_err("opening a file this user cannot write must fail");
    match &err {
        SqliteStoreError::ReadOnly { .. } => println!("CHILD-READ-ONLY {err}"),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
}

/// Files, with their bytes, in `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), fs::read(&p).unwrap_or_default())
        })
        .collect()
}

/// As root, file permissions do not stop writes, so the kernel's refusal is tested in a child
/// running as `nobody`: a file it may not write (0644, owned by root), and a directory it may
/// not write holding a file it may.
#[test]
fn an_unprivileged_user_gets_read_only_errors_and_changes_nothing() {
    if !is_root() {
        // Unprivileged already: the kernel refuses us directly.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        drop(SqliteStore::open(&path).unwrap());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, SqliteStoreError::ReadOnly { .. }), "{err:?}");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (case, dir_mode, file_mode, expect) in [
        ("file", 0o777, 0o644, "the file cannot be written"),
        ("dir", 0o755, 0o666, "the directory cannot be written"),
    ] {
        let dir = base.path().join(case);
        fs::create_dir(&dir).unwrap();
        let path = dir.join("leases.db");
        drop(
            SqliteStore::builder(&path)
                .boot_id("boot-a")
                .open()
                .unwrap(),
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(dir_mode)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(file_mode)).unwrap();
        let before = snapshot(&dir);
        let child = spawn_child(
            &[
                (CHILD, "read-only".to_owned()),
                (DB, path.display().to_string()),
            ],
            Some(NOBODY),
        );
        let out = match child.wait_with_output() {
            Ok(out) => out,
            Err(e) => panic!("cannot run a child as nobody: {e}"),
        };
        check_output(&format!("read-only child ({case})"), &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("CHILD-READ-ONLY").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("the child did not run the check:\n{stdout}"));
        assert!(line.contains(expect), "{case}: {line}");
        assert!(line.contains("Permission denied"), "{case}: {line}");
        eprintln!("{case}: {line}");
        assert_eq!(snapshot(&dir), before, "{case}: files changed");
    }
}

/// The sizes of the batches [`queue_and_hang`] starts: the first large, so that a kill soon
/// after it started is likely to find it inside its transaction.
const QUEUED_BATCHES: [usize; 3] = [3000, 50, 50];

/// A child: starts [`QUEUED_BATCHES`] on its store's apply thread (behind a write lock its
/// second connection takes first, with `LOCKED` = 1), writes `queued` to the log, and hangs
/// until its parent kills it.
async fn queue_and_hang() {
    let path = PathBuf::from(std::env::var(DB).unwrap());
    let log = PathBuf::from(std::env::var(LOG).unwrap());
    let locked = std::env::var(LOCKED).unwrap() == "1";
    let mut store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_secs(120))
        .open()
        .unwrap();
    let mut lock = rusqlite::Connection::open(&path).unwrap();
    let held = locked.then(|| {
        lock.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap()
    });
    let mut started = Vec::new();
    for (b, &size) in QUEUED_BATCHES.iter().enumerate() {
        let ops = (0..size)
            .map(|i| Op::Claim {
                key: Key::new("ns", "m", format!("queued-{b}-{i}")),
                request: Request::new("doomed", Duration::from_secs(600)),
            })
            .collect();
        started.push(store.start_apply(ops).expect("starting a batch"));
    }
    fs::write(&log, "queued\n").unwrap();
    // Until the parent's SIGKILL.
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop((held, started));
}

/// kill -9 of a process with batches started ahead on its store's apply thread: queued behind
/// another connection's write lock (none is applied), and one of them large and under way
/// (each is applied whole or not at all). Either way the file is sound, no lock is left, and
/// a new store claims what was not applied (the dead process's session frees the rest).
#[test]
fn batches_queued_on_the_apply_thread_die_whole_with_their_process() {
    // Queued behind a lock; then killed 3, 40 and 400 ms after starting: inside the large
    // batch most likely, around its commit, after the small ones.
    let cases = [(true, 0), (false, 3), (false, 40), (false, 400)];
    for (locked, delay_ms) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        let log = dir.path().join("queued.log");
        let mut child = spawn_child(
            &[
                (CHILD, "queue-and-hang".to_owned()),
                (DB, path.display().to_string()),
                (LOG, log.display().to_string()),
                (LOCKED, if locked { "1" } else { "0" }.to_owned()),
            ],
            None,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&log).is_ok_and(|l| l.contains("queued")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never queued its batches"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "locked: {locked}");
        let mut applied = Vec::new();
        for (b, &size) in QUEUED_BATCHES.iter().enumerate() {
            let rows: i64 = conn
                .query_row(
                    "SELECT count(*) FROM lease WHERE holder = 'doomed' AND name LIKE ?1",
                    [format!("queued-{b}-%")],
                    |r| r.get(0),
                )
                .unwrap();
            let size = i64::try_from(size).unwrap();
            assert!(
                rows == 0 || rows == size,
                "locked: {locked}: batch {b} half applied: {rows} of {size} rows"
            );
            applied.push(rows == size);
        }
        if locked {
            assert_eq!(applied, [false, false, false], "a queued batch was applied");
        }
        // Batches apply in the order started: none after one that was not.
        assert!(
            applied.windows(2).all(|w| w[0] || !w[1]),
            "locked: {locked}: applied out of order: {applied:?}"
        );
        drop(conn);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut store = SqliteStore::builder(&path)
                .integrity_check(true)
                .busy_timeout(Duration::from_millis(100))
                .open()
                .unwrap();
            for (b, &was_applied) in applied.iter().enumerate() {
                let key = Key::new("ns", "m", format!("queued-{b}-0"));
                let info = store
                    .claim_lease(&key, &Request::new("next", Duration::from_secs(10)))
                    .await
                    .unwrap_or_else(|e| panic!("locked: {locked}: claiming {key}: {e}"));
                let expected = if was_applied { 2 } else { 1 };
                assert_eq!(info.generation.0, expected, "locked: {locked}: {key}");
            }
        });
        eprintln!("locked: {locked}, killed after {delay_ms} ms: batches applied {applied:?}");
    }
}
