//! The check of `lease demo`'s logs: the guaranteed windows the workers logged, each killed
//! worker's windows ended at its death, and no two workers' windows overlapping, with
//! generations strictly increasing from one acquisition to the next.

use lease_core::Timestamp;

/// One logged guaranteed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) worker: u32,
    pub(crate) acquire: bool,
    pub(crate) generation: u64,
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
}

pub(crate) fn parse_log(worker: u32, text: &str) -> Vec<Window> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let acquire = match parts.next()? {
                "acquire" => true,
                "renew" => false,
                _ => return None,
            };
            let generation = parts.next()?.parse().ok()?;
            let start = Timestamp::from_nanos(parts.next()?.parse().ok()?);
            let end = Timestamp::from_nanos(parts.next()?.parse().ok()?);
            Some(Window {
                worker,
                acquire,
                generation,
                start,
                end,
            })
        })
        .collect()
}

/// What the logs show.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) acquisitions: Vec<Window>,
    pub(crate) renewals: usize,
    pub(crate) overlaps: Vec<(Window, Window)>,
    pub(crate) generation_faults: Vec<(Window, Window)>,
}

impl Verdict {
    pub(crate) fn ok(&self) -> bool {
        self.overlaps.is_empty() && self.generation_faults.is_empty()
    }
}

/// Ends each window of a killed worker at its death: an instant by which it had stopped acting
/// for good, and before which no other worker could take its lease (the demo reads it once the
/// worker is stopped, before it kills it). A dead process cannot act on its lease, which is why
/// the store may free it then.
pub(crate) fn cut_at_deaths(windows: Vec<Window>, deaths: &[(u32, Timestamp)]) -> Vec<Window> {
    windows
        .into_iter()
        .map(|mut w| {
            if let Some((_, dead)) = deaths.iter().find(|(id, _)| *id == w.worker) {
                w.end = w.end.min(*dead);
            }
            w
        })
        .collect()
}

pub(crate) fn verify(windows: &[Window]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut acquisitions: Vec<Window> = windows.iter().copied().filter(|w| w.acquire).collect();
    acquisitions.sort_by_key(|w| (w.start, w.generation));
    verdict.renewals = windows.len() - acquisitions.len();
    for pair in acquisitions.windows(2) {
        if pair[1].generation <= pair[0].generation {
            verdict.generation_faults.push((pair[0], pair[1]));
        }
    }
    // Renewals carry the generation of the worker's acquisition.
    for w in windows.iter().filter(|w| !w.acquire) {
        let owner = acquisitions
            .iter()
            .rev()
            .find(|a| a.worker == w.worker && a.start <= w.start);
        if owner.is_none_or(|a| a.generation != w.generation) {
            verdict.generation_faults.push((*w, *w));
        }
    }
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if a.worker != b.worker && a.start < b.end && b.start < a.end {
                verdict.overlaps.push((*a, *b));
            }
        }
    }
    verdict.acquisitions = acquisitions;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(worker: u32, acquire: bool, generation: u64, start: u64, end: u64) -> Window {
        Window {
            worker,
            acquire,
            generation,
            start: Timestamp::from_nanos(start),
            end: Timestamp::from_nanos(end),
        }
    }

    #[test]
    fn logs_parse_and_a_clean_history_passes() {
        let one = parse_log(1, "acquire 1 10 20\nrenew 1 15 25\ngarbage\nrenew 1 1");
        assert_eq!(one, vec![w(1, true, 1, 10, 20), w(1, false, 1, 15, 25)]);
        let mut all = one;
        all.extend(parse_log(2, "acquire 2 25 35\n"));
        let verdict = verify(&all);
        assert!(verdict.ok(), "{verdict:?}");
        assert_eq!(verdict.acquisitions.len(), 2);
        assert_eq!(verdict.renewals, 1);
    }

    #[test]
    fn a_killed_workers_windows_end_at_its_death() {
        let windows = vec![w(1, true, 1, 10, 20), w(2, true, 2, 14, 30)];
        assert_eq!(verify(&windows).overlaps.len(), 1);
        let cut = cut_at_deaths(windows, &[(1, Timestamp::from_nanos(13))]);
        assert_eq!(cut[0].end, Timestamp::from_nanos(13));
        assert!(verify(&cut).overlaps.is_empty());
        // Dying after the other's start is still an overlap.
        let late = cut_at_deaths(
            vec![w(1, true, 1, 10, 20), w(2, true, 2, 14, 30)],
            &[(1, Timestamp::from_nanos(15))],
        );
        assert_eq!(verify(&late).overlaps.len(), 1);
    }

    /// The windows of a failed run from before the demo recorded deaths as it does now (times in
    /// ns on the boot clock): worker-1, the leader, was SIGKILLed; worker-2 acquired 0.2ms before
    /// the demo had reaped worker-1 and read its clock, and that reap time, used as the death,
    /// made a takeover after the kill look like an overlap. Cut where worker-1 was known stopped
    /// (before the SIGKILL, so before its lease could be freed), it is none; an acquisition
    /// before that instant still is.
    #[test]
    fn a_takeover_after_the_stop_is_no_overlap_and_one_before_it_is() {
        let killed = [
            w(1, true, 1, 16_605_406_579, 17_573_012_689),
            w(1, false, 1, 16_938_954_562, 17_916_153_986),
            w(1, false, 1, 17_255_255_838, 18_250_547_028),
            w(1, false, 1, 17_611_995_464, 18_595_289_129),
        ];
        let takeover = w(2, true, 2, 17_857_364_403, 18_828_605_901);
        let reaped = Timestamp::from_nanos(17_857_574_388);
        let stopped = Timestamp::from_nanos(17_825_000_000);
        let mut windows = killed.to_vec();
        windows.push(takeover);
        let at_reap = verify(&cut_at_deaths(windows.clone(), &[(1, reaped)]));
        assert_eq!(at_reap.overlaps.len(), 3, "{at_reap:?}");
        let at_stop = verify(&cut_at_deaths(windows, &[(1, stopped)]));
        assert!(at_stop.ok(), "{at_stop:?}");
        let early = w(2, true, 2, 17_824_999_999, 18_828_605_901);
        let mut windows = killed.to_vec();
        windows.push(early);
        let verdict = verify(&cut_at_deaths(windows, &[(1, stopped)]));
        assert_eq!(verdict.overlaps.len(), 3, "{verdict:?}");
    }

    #[test]
    fn overlaps_and_stale_generations_are_caught() {
        let verdict = verify(&[w(1, true, 1, 10, 20), w(2, true, 2, 19, 30)]);
        assert_eq!(verdict.overlaps.len(), 1);
        let verdict = verify(&[w(1, true, 2, 10, 20), w(2, true, 2, 20, 30)]);
        assert_eq!(verdict.generation_faults.len(), 1);
        assert!(verdict.overlaps.is_empty());
    }
}
