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
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
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
    // A killed worker's windows end at its death (the demo records when it reaped it): the
    // store frees a dead holder's lease at once, and a dead process cannot act on it.
    let deaths = std::fs::read_to_string(logs.join("deaths")).unwrap_or_default();
    for line in deaths.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{line:?}");
        let (worker, dead): (u32, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        for w in windows.iter_mut().filter(|w| w.worker == worker) {
            w.end = w.end.min(dead);
        }
    }
    assert!(!deaths.is_empty(), "no death recorded");
    let mut acquisitions: Vec<Window> = windows.iter().copied().filter(|w| w.acquire).collect();
    assert!(acquisitions.len() >= 2, "no takeover logged: {windows:?}");
    acquisitions.sort_by_key(|w| w.start);
    for pair in acquisitions.windows(2) {
        assert!(pair[1].generation > pair[0].generation, "{pair:?}");
        assert_ne!(pair[0].worker, pair[1].worker, "{pair:?}");
    }
    let mut leaders = BTreeMap::new();
    for w in &windows {
        assert!(w.start < w.end, "{w:?}");
        leaders.entry(w.worker).or_insert(0);
        for other in &windows {
            if other.worker != w.worker {
                assert!(
                    other.end <= w.start || w.end <= other.start,
                    "overlap: {w:?} and {other:?}"
                );
            }
        }
    }
    assert!(leaders.len() >= 2);
}
