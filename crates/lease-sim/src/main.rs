//! `lease-sim`: runs seeds of the deterministic simulation and prints their totals; a failing
//! seed is shrunk and printed with the command that replays it.
//!
//! ```text
//! lease-sim [--seeds N] [--first S] [--threads T] [--replay SEED] [--log] [--no-shrink]
//!           [--digests] [--swarm] [--sqlite] [--until-found] [--drop-events I,J-K] [--drop-faults I,J-K]
//!           [--processes N] [--leases N] [--duration SECS] [--drift-ppm P] [--margin-ppm P]
//!           [--election LD,RD,RP] [--crash F] [--revokes F] [--pauses F] [--partitions F]
//!           [--split F] [--late-notices F] [--lost-notices F] [--invalid F]
//!           [--timeout-before F] [--timeout-after F] [--latency F] [--kinds K,K,...]
//!           [--mutation concurrent-lock|generation-across-terms|
//!                       retried-extend-claims|revoke-racing-lock|stop-after-expiry]
//! ```
//!
//! Exit status: 0 when no seed failed, 1 when one did, 2 on a usage error.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use lease_manager::mutation::Mutation;
use lease_run_policy::mutation::Mutation as RunMutation;
use lease_sim::config::Kind;
use lease_sim::runner::{run_seeds, shrink, shrink_trace};
use lease_sim::{SimConfig, run_seed};

struct Args {
    seeds: u64,
    first: u64,
    threads: usize,
    replay: Option<u64>,
    log: bool,
    digests: bool,
    shrink: bool,
    until_found: bool,
    config: SimConfig,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        first: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        replay: None,
        log: false,
        digests: false,
        shrink: true,
        until_found: false,
        config: SimConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let c = &mut args.config;
        match flag.as_str() {
            "--seeds" => args.seeds = num(&value()?)?,
            "--first" => args.first = num(&value()?)?,
            "--threads" => args.threads = num(&value()?)?,
            "--replay" => args.replay = Some(num(&value()?)?),
            "--log" => args.log = true,
            "--digests" => args.digests = true,
            "--no-shrink" => args.shrink = false,
            "--swarm" => args.config.swarm = true,
            "--sqlite" => args.config.sqlite = true,
            "--until-found" => args.until_found = true,
            "--drop-events" => c.dropped_events = indices(&value()?)?,
            "--drop-faults" => c.dropped_faults = indices(&value()?)?,
            "--processes" => c.processes = num(&value()?)?,
            "--leases" => c.leases = num(&value()?)?,
            "--duration" => c.duration = Duration::from_secs(num(&value()?)?),
            "--drift-ppm" => c.drift_ppm = num(&value()?)?,
            "--margin-ppm" => c.client_margin_ppm = num(&value()?)?,
            "--crash" => c.crash = num(&value()?)?,
            "--revokes" => c.revokes_per_minute = num(&value()?)?,
            "--pauses" => c.pauses_per_minute = num(&value()?)?,
            "--partitions" => c.partitions_per_minute = num(&value()?)?,
            "--split" => c.split = num(&value()?)?,
            "--late-notices" => c.late_notices = num(&value()?)?,
            "--lost-notices" => c.lost_notices = num(&value()?)?,
            "--invalid" => c.invalid = num(&value()?)?,
            "--timeout-before" => c.timeout_before = num(&value()?)?,
            "--timeout-after" => c.timeout_after = num(&value()?)?,
            "--latency" => c.latency = num(&value()?)?,
            "--mutation" => {
                let name = value()?;
                c.mutation = Some(match name.as_str() {
                    "concurrent-lock" => Mutation::ConcurrentLock,
                    "generation-across-terms" => Mutation::GenerationAcrossTerms,
                    "retried-extend-claims" => Mutation::RetriedExtendClaims,
                    "revoke-racing-lock" => Mutation::RevokeRacingLock,
                    "stop-after-expiry" => {
                        c.run_mutation = Some(RunMutation::StopAfterExpiry);
                        continue;
                    }
                    other => return Err(format!("no mutation {other}")),
                });
            }
            "--kinds" => {
                let v = value()?;
                c.kinds = v
                    .split(',')
                    .map(|k| Kind::named(k).ok_or_else(|| format!("no client kind {k}")))
                    .collect::<Result<_, _>>()?;
            }
            "--election" => {
                let v = value()?;
                let parts: Vec<u64> = v.split(',').map(num).collect::<Result<_, _>>()?;
                let [ld, rd, rp] = parts[..] else {
                    return Err(format!("--election wants LD,RD,RP in seconds, not {v}"));
                };
                c.election = (
                    Duration::from_secs(ld),
                    Duration::from_secs(rd),
                    Duration::from_secs(rp),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `0-15,17,20-30` as a set of indices.
fn indices(s: &str) -> Result<std::collections::BTreeSet<u64>, String> {
    let mut set = std::collections::BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => set.extend(num::<u64>(a)?..=num::<u64>(b)?),
            None => {
                set.insert(num(part)?);
            }
        }
    }
    Ok(set)
}

/// The inverse of [`indices`]: runs of consecutive indices as ranges.
fn ranges(set: &std::collections::BTreeSet<u64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    parts.join(",")
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

/// The command that replays `seed` under `c`.
fn replay_command(seed: u64, c: &SimConfig) -> String {
    let d = SimConfig::default();
    let mut cmd = format!("cargo run --release -p lease-sim -- --replay {seed}");
    let mut flag = |name: &str, differs: bool, value: String| {
        if differs {
            cmd.push_str(&format!(" --{name} {value}"));
        }
    };
    flag(
        "processes",
        c.processes != d.processes,
        c.processes.to_string(),
    );
    flag("leases", c.leases != d.leases, c.leases.to_string());
    flag(
        "duration",
        c.duration != d.duration,
        c.duration.as_secs().to_string(),
    );
    flag(
        "drift-ppm",
        c.drift_ppm != d.drift_ppm,
        c.drift_ppm.to_string(),
    );
    flag(
        "margin-ppm",
        c.client_margin_ppm != d.client_margin_ppm,
        c.client_margin_ppm.to_string(),
    );
    flag(
        "election",
        c.election != d.election,
        format!(
            "{},{},{}",
            c.election.0.as_secs(),
            c.election.1.as_secs(),
            c.election.2.as_secs()
        ),
    );
    flag("crash", c.crash != d.crash, c.crash.to_string());
    flag(
        "revokes",
        c.revokes_per_minute != d.revokes_per_minute,
        c.revokes_per_minute.to_string(),
    );
    flag(
        "pauses",
        c.pauses_per_minute != d.pauses_per_minute,
        c.pauses_per_minute.to_string(),
    );
    flag(
        "partitions",
        c.partitions_per_minute != d.partitions_per_minute,
        c.partitions_per_minute.to_string(),
    );
    flag("split", c.split != d.split, c.split.to_string());
    flag(
        "late-notices",
        c.late_notices != d.late_notices,
        c.late_notices.to_string(),
    );
    flag(
        "lost-notices",
        c.lost_notices != d.lost_notices,
        c.lost_notices.to_string(),
    );
    flag("invalid", c.invalid != d.invalid, c.invalid.to_string());
    flag(
        "timeout-before",
        c.timeout_before != d.timeout_before,
        c.timeout_before.to_string(),
    );
    flag(
        "timeout-after",
        c.timeout_after != d.timeout_after,
        c.timeout_after.to_string(),
    );
    flag("latency", c.latency != d.latency, c.latency.to_string());
    if let Some(m) = c.mutation {
        let name = match m {
            Mutation::ConcurrentLock => "concurrent-lock",
            Mutation::GenerationAcrossTerms => "generation-across-terms",
            Mutation::RetriedExtendClaims => "retried-extend-claims",
            Mutation::RevokeRacingLock => "revoke-racing-lock",
        };
        flag("mutation", true, name.to_owned());
    }
    if let Some(RunMutation::StopAfterExpiry) = c.run_mutation {
        flag("mutation", true, "stop-after-expiry".to_owned());
    }
    let kinds: Vec<&str> = c.kinds.iter().map(|k| k.name()).collect();
    flag("kinds", c.kinds != d.kinds, kinds.join(","));
    flag(
        "drop-events",
        !c.dropped_events.is_empty(),
        ranges(&c.dropped_events),
    );
    flag(
        "drop-faults",
        !c.dropped_faults.is_empty(),
        ranges(&c.dropped_faults),
    );
    if c.swarm {
        cmd.push_str(" --swarm");
    }
    if c.sqlite {
        cmd.push_str(" --sqlite");
    }
    cmd
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lease-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.replay {
        let mut config = args.config.clone();
        config.keep_log = args.log;
        let run = run_seed(seed, &config);
        for line in &run.log {
            println!("{line}");
        }
        let v = &run.verdict;
        println!(
            "seed {seed}: {} windows, {} tenures, {} faults, {} violations",
            v.windows,
            v.tenures,
            v.fault_count(),
            v.violations.len()
        );
        for violation in &v.violations {
            println!("VIOLATION {violation}");
        }
        return if v.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    if args.digests {
        // One line per seed with a digest of its event log: compare two runs' outputs to find
        // a seed that does not replay.
        let mut config = args.config.clone();
        config.keep_log = true;
        for seed in args.first..args.first.saturating_add(args.seeds) {
            let run = run_seed(seed, &config);
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&run.log, &mut hasher);
            println!("seed {seed} {:016x}", std::hash::Hasher::finish(&hasher));
        }
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let totals = run_seeds(
        args.first,
        args.seeds,
        args.threads,
        &args.config,
        args.until_found,
    );
    let took = started.elapsed();
    println!("{}", totals.summary_line());
    println!(
        "lease-sim speed: {:.1} s wall, {:.0} seeds/s on {} threads",
        took.as_secs_f64(),
        totals.seeds as f64 / took.as_secs_f64().max(1e-9),
        args.threads
    );
    for (kind, n) in &totals.faults {
        println!("lease-sim fault: {kind}={n}");
    }
    for (seed, violation) in &totals.failures {
        println!("FAILED seed {seed}: {violation}");
    }
    if let Some(&(seed, _)) = totals.failures.first() {
        let small = if args.shrink {
            shrink_trace(seed, &shrink(seed, &args.config))
        } else {
            args.config.clone()
        };
        if args.shrink {
            print_trace(seed, &small);
        }
        println!(
            "replay the smallest failing run: {} --log",
            replay_command(seed, &small)
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The shrunk run's trace: what happened to processes, the faults that struck, the windows
/// and the violations (not every store call).
fn print_trace(seed: u64, config: &SimConfig) {
    let mut config = config.clone();
    config.keep_log = true;
    let run = run_seed(seed, &config);
    let wanted = [
        "start p",
        "client",
        "pause",
        "partition",
        "crash",
        "operator",
        "timeout",
        "invalid",
        "acts on",
        "stops acting",
    ];
    let lines: Vec<&String> = run
        .log
        .iter()
        .filter(|l| wanted.iter().any(|w| l.contains(w)))
        .collect();
    println!(
        "shrunk seed {seed}: {} processes, {} events and {} store faults left, {} trace lines:",
        config.processes,
        run.events
            .saturating_sub(config.dropped_events.len() as u64),
        run.verdict.fault_count(),
        lines.len()
    );
    for line in lines.iter().take(300) {
        println!("  {line}");
    }
    if lines.len() > 300 {
        println!("  ... ({} more)", lines.len() - 300);
    }
    for v in &run.verdict.violations {
        println!("  VIOLATION {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_read_back_as_written() {
        let set = indices("0-3,6,9-10,12").unwrap_or_default();
        assert_eq!(set.len(), 8);
        assert_eq!(ranges(&set), "0-3,6,9-10,12");
        assert!(indices("3-x").is_err());
        assert_eq!(ranges(&indices("").unwrap_or_default()), "");
    }
}
