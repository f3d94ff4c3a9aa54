//! What the benchmarks read about the host from `/proc`: its load (printed beside the figures,
//! since the host is shared), and this process's CPU time and resident memory.

use std::time::Duration;

/// The host's 1-minute load average (`/proc/loadavg`), or `unknown`.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// User+system CPU time of this process (`/proc/self/stat`, in USER_HZ = 100 ticks/s); zero
/// when unreadable.
#[must_use]
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the command.
    Duration::from_millis(ticks(11).saturating_add(ticks(12)).saturating_mul(10))
}

/// This process's resident set in bytes (`/proc/self/statm`, 4 KiB pages); zero when
/// unreadable.
#[must_use]
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages.saturating_mul(4096)
}
