//! Random kills of the main phase: candidates SIGKILLed at random moments, the leader or not.

use std::path::Path;
use std::time::Duration;

use super::{Run, say};
use crate::check::TermEnd;
use crate::secs;

/// SIGKILLs [`RunArgs::random_kills`](super::RunArgs::random_kills) candidates of `lease`, one
/// at a time, each a random one (half of the time the leader, so takeovers are measured too) at
/// a random moment within a few renewal periods, and replaces each by a new candidate. When
/// the leader was killed, waits for the next one and records the takeover time.
pub(super) fn random_kills(run: &mut Run, lease: &str, stop: &Path) -> Result<(), String> {
    let retry = u64::try_from(run.args.timing.retry_period.as_millis()).unwrap_or(500);
    let lease_ms = u64::try_from(run.args.timing.lease_duration.as_millis()).unwrap_or(4000);
    for n in 0..run.args.random_kills {
        std::thread::sleep(Duration::from_millis(fastrand::u64(retry..=lease_ms)));
        run.reap_crashed();
        let leader = run
            .terms()?
            .into_iter()
            .rev()
            .find(|t| t.lease == lease && t.how == TermEnd::Unknown)
            .map(|t| t.holder)
            .filter(|holder| run.running.iter().any(|c| &c.identity == holder));
        let victim = match leader {
            Some(holder) if fastrand::bool() => holder,
            _ => match run.running.get(fastrand::usize(..run.running.len().max(1))) {
                Some(c) => c.identity.clone(),
                None => {
                    run.problems
                        .push("random kills: no candidate left to kill".to_owned());
                    return Ok(());
                }
            },
        };
        let was_leader = run
            .terms()?
            .iter()
            .any(|t| t.lease == lease && t.holder == victim && t.how == TermEnd::Unknown);
        let killed_at = run.kill(&victim)?;
        run.spawn(&format!("main-k{n}"), lease, None, stop)?;
        if !was_leader {
            say(&format!("kill -9 candidate {victim} (not the leader)"));
            continue;
        }
        let next = run.wait_for_lead(lease, killed_at, Duration::from_secs(30), |_| true)?;
        match next {
            Some(t) => {
                let took = secs(t.start.saturating_sub(killed_at));
                say(&format!(
                    "kill -9 the leader {victim}: takeover {took:.2} s after"
                ));
                run.takeovers.push(took);
            }
            None => run.problems.push(format!(
                "random kill {n}: nobody took over within 30 s of killing the leader {victim}"
            )),
        }
    }
    Ok(())
}
