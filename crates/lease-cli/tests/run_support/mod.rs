//! Helpers of the `lease run` process-tree tests: a command tree that ignores SIGTERM and
//! spreads (a grandchild, a double-forked `setsid` daemon), whose every process logs signs of
//! life with timestamps, and a second holder that records when it started and which of the
//! first tree's processes were still alive at that instant.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use crate::common::{path_str, process_gone};

/// Writes `worker.sh` into `dir`: a process that ignores SIGTERM, SIGINT and SIGHUP, records
/// its pid in `pids` and then, every 50 ms, appends `TAG PID NANOS` to `life` (NANOS: the
/// wall clock, read just before the append).
pub fn write_worker(dir: &Path) {
    let d = path_str(dir);
    let script = format!(
        "trap '' TERM INT HUP\n\
         echo $$ >> {d}/pids\n\
         while :; do echo \"$1 $$ $(date +%s%N)\" >> {d}/life; sleep 0.05; done\n"
    );
    std::fs::write(dir.join("worker.sh"), script).unwrap();
}

/// A `sh -c` script for `lease run`: the main process ignores SIGTERM, starts a grandchild
/// worker in the background and a double-forked daemon in its own session (its parent exits
/// at once, so it is re-parented), touches `ready`, and logs signs of life itself.
pub fn stubborn_tree(dir: &Path) -> String {
    write_worker(dir);
    let d = path_str(dir);
    format!(
        "trap '' TERM INT HUP\n\
         echo $$ >> {d}/pids\n\
         sh {d}/worker.sh grandchild &\n\
         (setsid sh {d}/worker.sh daemon &)\n\
         while [ $(wc -l < {d}/pids) -lt 3 ]; do sleep 0.01; done\n\
         touch {d}/ready\n\
         while :; do echo \"main $$ $(date +%s%N)\" >> {d}/life; sleep 0.05; done\n"
    )
}

/// A `sh -c` script for the second holder: records its start (wall clock, ns) in
/// `second-start`, then lists in `alive-at-second-start` every pid of the first tree that is
/// still a live process (not gone, not a zombie).
pub fn second_holder(dir: &Path) -> String {
    let d = path_str(dir);
    format!(
        "date +%s%N > {d}/second-start\n\
         for p in $(cat {d}/pids); do\n\
           if [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; then\n\
             echo $p >> {d}/alive-at-second-start\n\
           fi\n\
         done\n\
         echo second-ran\n"
    )
}

/// The pids the first tree recorded.
pub fn tree_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs whatever the first tree left behind, so that a failing test does not leave
/// processes writing into its removed folder.
pub fn kill_leftovers(dir: &Path) {
    for pid in tree_pids(dir) {
        if !process_gone(pid) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// Kills the leftovers when dropped (also when the test panics).
pub struct Cleanup<'a>(pub &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        kill_leftovers(self.0);
    }
}

/// Asserts that the first tree's last sign of life (every process) came before the second
/// holder started, and that none of its processes was alive when it started.
pub fn assert_first_tree_gone_before_second(dir: &Path) {
    let start: u128 = std::fs::read_to_string(dir.join("second-start"))
        .expect("the second holder never ran")
        .trim()
        .parse()
        .unwrap();
    let life = std::fs::read_to_string(dir.join("life")).unwrap_or_default();
    let mut tags = std::collections::BTreeSet::new();
    let mut late = Vec::new();
    for line in life.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [tag, pid, nanos] = parts[..] else {
            continue;
        };
        tags.insert(tag.to_owned());
        let Ok(nanos) = nanos.parse::<u128>() else {
            continue;
        };
        if nanos >= start {
            late.push(format!(
                "{tag} (pid {pid}) alive {} ms after the second holder started",
                (nanos - start) / 1_000_000
            ));
        }
    }
    for tag in ["main", "grandchild", "daemon"] {
        assert!(tags.contains(tag), "the {tag} never logged: {life}");
    }
    assert!(late.is_empty(), "the two commands overlapped: {late:?}");
    let alive = std::fs::read_to_string(dir.join("alive-at-second-start")).unwrap_or_default();
    assert!(
        alive.trim().is_empty(),
        "processes of the first tree were alive when the second started: {alive}"
    );
}

/// Waits at most `limit` for `child` (whose output goes to files) and returns its exit code;
/// SIGKILLs it and fails past that.
pub fn wait_code(mut child: std::process::Child, limit: std::time::Duration) -> i32 {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("lease (pid {}) did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
