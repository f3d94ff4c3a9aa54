//! `lease demo --short`, driven as a process: a leader is elected, killed, replaced, and the
//! workers' logs show no two leaders at once; the test re-checks the logs itself.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

#[derive(Debug, Clone, Copy)]
struct Window {
    worker: u32,
    acquire: bool,
    generation: u64,
    start: u64,
    end: u64,
}

#[test]
fn the_short_demo_fails_over_without_overlap() {
    let dir = tempdir();
    let d = dir.path();
    let logs = d.join("demo");
    let mut cmd = lease(d);
    cmd.args(["demo", "--short", "--dir"]).arg(&logs);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = wait_output(cmd.spawn().unwrap(), Duration::from_secs(90));
    let (code, out, err) = decode(&output);
    // Every failure shows the logs it was judged on.
    let kept = kept_logs(&logs);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}\n{kept}");
    assert!(out.contains("kill -9 worker-"), "{out}");
    assert!(out.contains("takeover: worker-"), "{out}");
    assert!(out.contains("no two workers ever led at once: OK"), "{out}");
    assert!(out.contains("strictly increasing: OK"), "{out}");

    // Check the logs independently of the demo's own check.
    let mut windows = Vec::new();
    for worker in 1..=3u32 {
        let text =
            std::fs::read_to_string(logs.join(format!("worker-{worker}.log"))).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 4, "{line:?}");
            windows.push(Window {
                worker,
                acquire: parts[0] == "acquire",
                generation: parts[1].parse().unwrap(),
                start: parts[2].parse().unwrap(),
                end: parts[3].parse().unwrap(),
            });
        }
    }
    // A killed worker's windows end at its recorded death: the demo stops each worker it ends
    // (SIGSTOP) and records the instant the kernel reports it stopped, before the SIGKILL that
    // frees its lease; the store frees a dead holder's lease at once, and a stopped or dead
    // process cannot act on it. Every worker is ended so, the ones left at the end included.
    let deaths = std::fs::read_to_string(logs.join("deaths")).unwrap_or_default();
    for line in deaths.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{line:?}");
        let (worker, dead): (u32, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        for w in windows.iter_mut().filter(|w| w.worker == worker) {
            w.end = w.end.min(dead);
        }
    }
    assert_eq!(deaths.lines().count(), 3, "{kept}");
    let mut acquisitions: Vec<Window> = windows.iter().copied().filter(|w| w.acquire).collect();
    assert!(acquisitions.len() >= 2, "no takeover logged: {kept}");
    acquisitions.sort_by_key(|w| w.start);
    for pair in acquisitions.windows(2) {
        assert!(pair[1].generation > pair[0].generation, "{pair:?}\n{kept}");
        assert_ne!(pair[0].worker, pair[1].worker, "{pair:?}\n{kept}");
    }
    let mut leaders = BTreeMap::new();
    for w in &windows {
        assert!(w.start < w.end, "{w:?}\n{kept}");
        leaders.entry(w.worker).or_insert(0);
        for other in &windows {
            if other.worker != w.worker {
                assert!(
                    other.end <= w.start || w.end <= other.start,
                    "overlap: {w:?} and {other:?}\n{kept}"
                );
            }
        }
    }
    assert!(leaders.len() >= 2);
}

/// The demo's logs in `logs` (its deaths and each worker's windows and errors), for a failure
/// message.
fn kept_logs(logs: &std::path::Path) -> String {
    let mut text = String::new();
    for name in [
        "deaths",
        "worker-1.log",
        "worker-2.log",
        "worker-3.log",
        "worker-1.err",
        "worker-2.err",
        "worker-3.err",
    ] {
        let content = std::fs::read_to_string(logs.join(name))
            .unwrap_or_else(|e| format!("(unreadable: {e})\n"));
        text.push_str(&format!("--- {name}\n{content}"));
    }
    text
}
