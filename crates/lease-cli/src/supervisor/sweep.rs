//! Killing a process tree: which processes belong to it (as `/proc` shows them), and a SIGKILL
//! for each that cannot hit a recycled pid.

use rustix::process::{Pid, Signal};

/// What `/proc/PID/stat` says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) pid: i32,
    pub(crate) zombie: bool,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        zombie: state == "Z" || state == "X",
        ppid,
        pgrp,
    })
}

pub(crate) fn all_processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Which processes a sweep kills.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    /// The sweeper (never a target).
    pub(crate) me: i32,
    /// Members of this process group are targets.
    pub(crate) group: i32,
    /// Children of the sweeper are targets, except those in this group (`lease run`'s own
    /// process group: processes it started itself, such as a kubeconfig credential plugin).
    pub(crate) spare_children_in: Option<i32>,
    /// Never a target either (the exited shim, left unreaped on purpose).
    pub(crate) spare: Option<i32>,
}

impl Targets {
    pub(crate) fn matches(&self, s: &Stat) -> bool {
        s.pid != self.me
            && Some(s.pid) != self.spare
            && (s.pgrp == self.group
                || (s.ppid == self.me && Some(s.pgrp) != self.spare_children_in))
    }
}

/// SIGKILLs every live process `targets` names; returns how many matched (zombies included,
/// which are only waiting to be reaped).
pub(crate) fn kill_targets(targets: Targets) -> usize {
    let found: Vec<Stat> = all_processes()
        .into_iter()
        .filter(|s| targets.matches(s))
        .collect();
    for s in &found {
        if !s.zombie {
            kill_checked(s.pid, |now| targets.matches(now));
        }
    }
    found.len()
}

/// SIGKILLs `pid` through a pidfd, if it still is what `still` accepts once the pidfd is open
/// (so a pid recycled in between is not signalled).
pub(crate) fn kill_checked(pid: i32, still: impl Fn(&Stat) -> bool) {
    let Some(p) = Pid::from_raw(pid) else { return };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            if stat(pid).is_some_and(|s| still(&s)) {
                let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
            }
        }
        // Kernels before 5.3 have no pidfds: signal by pid after the same check.
        Err(rustix::io::Errno::NOSYS) => {
            if stat(pid).is_some_and(|s| still(&s)) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_odd_command_names() {
        let me = stat(rustix::process::getpid().as_raw_nonzero().get()).unwrap();
        assert!(!me.zombie);
        assert_eq!(
            me.ppid,
            rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
        );
        assert_eq!(me.pgrp, rustix::process::getpgrp().as_raw_nonzero().get());
    }

    #[test]
    fn targets_spare_the_sweeper_and_its_own_group() {
        let t = Targets {
            me: 10,
            group: 20,
            spare_children_in: Some(5),
            spare: Some(40),
        };
        let s = |pid, ppid, pgrp| Stat {
            pid,
            zombie: false,
            ppid,
            pgrp,
        };
        assert!(!t.matches(&s(10, 1, 20)));
        assert!(t.matches(&s(21, 99, 20)), "a group member");
        assert!(t.matches(&s(30, 10, 30)), "a child in its own session");
        assert!(
            !t.matches(&s(31, 10, 5)),
            "a child in the sweeper's own group"
        );
        assert!(!t.matches(&s(32, 99, 32)), "unrelated");
        assert!(!t.matches(&s(40, 10, 20)), "spared");
    }
}
