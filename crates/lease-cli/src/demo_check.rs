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

/// Ends each window of a killed worker at its death (when it was reaped, no earlier): a dead
/// process cannot act on its lease, which is why the store may free it then.
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
