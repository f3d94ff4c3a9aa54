//! `cargo xtask sim`: the deterministic simulation (crates/lease-sim) over many seeds, in a
//! release build, in its default configuration, in swarm mode and over SQLite, plus its proof that it
//! searches (the drift bound: leader candidates whose clocks may run 40% slow must be caught
//! overlapping, at 30% never; each of lease-manager's and lease-run-policy's mutations must be
//! found within its bound of seeds); writes the totals into `RELIABILITY.md` (or, for CI, which stops each mutation run
//! at its first failing seed, `target/sim/RELIABILITY-sim.md`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const HELP: &str = "\
usage: cargo xtask sim [--seeds N] [--first S] [--threads T] [--ci]

  --seeds N    seeds to run (default 10000)
  --first S    the first seed (default 0)
  --threads T  threads (default: all cores)
  --ci         write target/sim/RELIABILITY-sim.md instead of RELIABILITY.md, run 5000 swarm
               and 100 SQLite seeds, and stop each mutation run at its first failing seed
";

/// Seeds `cargo xtask ci` runs.
pub(crate) const CI_SEEDS: &str = "10000";

/// Swarm-mode seeds of a CI run (a full run takes as many as `--seeds`).
const CI_SWARM_SEEDS: &str = "5000";

/// Seeds over lease-store-sqlite (swarm mode): a real file and tokio's blocking pool make a seed
/// about twenty times slower than over the in-memory store.
const SQLITE_SEEDS: &str = "200";

/// SQLite seeds of a CI run.
const CI_SQLITE_SEEDS: &str = "100";

/// A mutation of lease-manager's or lease-run-policy's `mutations` feature, as `lease-sim
/// --mutation` names it, the
/// client kinds its runs draw from, and the seeds (swarm mode, from seed 0) within which the
/// simulator must find it. Each bound is a few times the seeds a failure takes on average, as
/// measured (RELIABILITY.md); the seeds are the same on every run, so a bound that stops being
/// met means the search got weaker (or the defect harder to reach).
struct Mutation {
    name: &'static str,
    kinds: &'static str,
    bound: u64,
}

const ELECTORS: &str = "elector,elector-relock,elector-concurrent";

/// The kinds whose extends the worker retries in a call the client sees (a claimer's claim, a
/// resource lock's renew), and the leaser.
const KINDS_RETRIED_EXTEND: &str = "claimer,leaser,resource-lock";

const MUTATIONS: [Mutation; 5] = [
    Mutation {
        name: "concurrent-lock",
        kinds: ELECTORS,
        bound: 20,
    },
    Mutation {
        name: "generation-across-terms",
        kinds: ELECTORS,
        bound: 600,
    },
    Mutation {
        name: "retried-extend-claims",
        kinds: KINDS_RETRIED_EXTEND,
        bound: 50,
    },
    Mutation {
        name: "revoke-racing-lock",
        kinds: ELECTORS,
        bound: 200,
    },
    // lease-run-policy's: `lease run`'s supervisor stopping the command only after expiry.
    Mutation {
        name: "stop-after-expiry",
        kinds: "lease-run",
        bound: 20,
    },
];

/// Elector-only seeds of each drift-bound run.
const BOUND_SEEDS: &str = "400";

struct Options {
    seeds: String,
    first: String,
    threads: Option<String>,
    ci: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seeds: CI_SEEDS.to_owned(),
        first: "0".to_owned(),
        threads: None,
        ci: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .filter(|v| v.parse::<u64>().is_ok())
                .cloned()
                .ok_or_else(|| format!("{a} needs a number\n\n{HELP}"))
        };
        match a.as_str() {
            "--seeds" => o.seeds = value()?,
            "--first" => o.first = value()?,
            "--threads" => o.threads = Some(value()?),
            "--ci" => o.ci = true,
            "-h" | "--help" => return Err(HELP.to_owned()),
            other => return Err(format!("unknown argument {other}\n\n{HELP}")),
        }
    }
    Ok(o)
}

fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds the simulator as a plain `cargo build --release -p lease-sim` would: without the
/// package variables `cargo run` set for xtask itself, which some build scripts (ring's) watch,
/// so the release build already in the target directory is reused instead of rebuilt.
fn build(root: &Path) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = ["build", "--release", "--locked", "-p", "lease-sim"];
    println!("xtask: $ cargo {}", args.join(" "));
    let mut command = Command::new(&cargo);
    command.args(args).current_dir(root);
    for (key, _) in env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_CRATE_")
            || name.starts_with("CARGO_BIN_")
            || name == "CARGO_PRIMARY_PACKAGE"
        {
            command.env_remove(&key);
        }
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
}

/// Runs the simulator binary; returns (passed, stdout).
fn simulate(exe: &Path, args: &[&str]) -> Result<(bool, String), String> {
    println!("xtask: $ {} {}", exe.display(), args.join(" "));
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => Ok((true, text)),
        Some(1) => Ok((false, text)),
        _ => Err(format!("{} failed: {}", exe.display(), out.status)),
    }
}

/// The first failing seed `lease-sim` reported.
fn first_failing(out: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("FAILED seed "))
        .filter_map(|l| l.split(':').next()?.parse::<u64>().ok())
        .min()
}

/// `key=value` from the totals line.
fn total(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("lease-sim totals:"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        })
        .unwrap_or("?")
        .to_owned()
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    build(root)?;
    let exe = target_dir(root).join("release").join("lease-sim");
    let threads = o.threads.clone().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    let common = ["--threads", threads.as_str()];
    let mut main_args = vec!["--seeds", o.seeds.as_str(), "--first", o.first.as_str()];
    main_args.extend(common);
    let (passed, text) = simulate(&exe, &main_args)?;
    // The same seeds in swarm mode: each draws its own fault rates, processes, leases and kinds.
    let swarm_seeds = if o.ci {
        CI_SWARM_SEEDS
    } else {
        o.seeds.as_str()
    };
    let mut swarm_args = vec![
        "--seeds",
        swarm_seeds,
        "--first",
        o.first.as_str(),
        "--swarm",
    ];
    swarm_args.extend(common);
    let (swarm_passed, swarm_text) = simulate(&exe, &swarm_args)?;
    // Fewer seeds in swarm mode over lease-store-sqlite on a temporary file.
    let sqlite_seeds = if o.ci { CI_SQLITE_SEEDS } else { SQLITE_SEEDS };
    let mut sqlite_args = vec![
        "--seeds",
        sqlite_seeds,
        "--first",
        o.first.as_str(),
        "--swarm",
        "--sqlite",
    ];
    sqlite_args.extend(common);
    let (sqlite_passed, sqlite_text) = simulate(&exe, &sqlite_args)?;
    let electors = ELECTORS;
    let mut unsafe_args = vec![
        "--seeds",
        BOUND_SEEDS,
        "--no-shrink",
        "--kinds",
        electors,
        "--margin-ppm",
        "0",
        "--drift-ppm",
        "400000",
    ];
    unsafe_args.extend(common);
    let (unsafe_passed, unsafe_text) = simulate(&exe, &unsafe_args)?;
    let mut safe_args = unsafe_args.clone();
    if let Some(last) = safe_args.iter().position(|a| *a == "400000") {
        safe_args[last] = "300000";
    }
    let (safe_passed, safe_text) = simulate(&exe, &safe_args)?;
    // Mutation mode: each defect switched on must be found within its bound. CI stops at the
    // first failing seed; a full run measures how many of the bound's seeds fail.
    let mut mutations = Vec::new();
    for m in &MUTATIONS {
        let bound = m.bound.to_string();
        let mut args = vec![
            "--seeds",
            bound.as_str(),
            "--no-shrink",
            "--swarm",
            "--kinds",
            m.kinds,
            "--mutation",
            m.name,
        ];
        if o.ci {
            args.push("--until-found");
        }
        args.extend(common);
        let (_, out) = simulate(&exe, &args)?;
        mutations.push((m, first_failing(&out), total(&out, "failing_seeds")));
    }
    let mutation_rows: String = mutations
        .iter()
        .map(|(m, first, failing)| {
            let found = first.map_or_else(
                || format!("not found in {} seeds", m.bound),
                |s| format!("seed {s} ({} seeds)", s + 1),
            );
            let failing = if o.ci {
                "(stopped at the first)".to_owned()
            } else {
                format!("{failing} of {}", m.bound)
            };
            format!(
                "| `{}` | {} | {found} | {} | {failing} |\n",
                m.name, m.kinds, m.bound
            )
        })
        .collect();
    let speed = text
        .lines()
        .find(|l| l.starts_with("lease-sim speed:"))
        .unwrap_or("")
        .trim_start_matches("lease-sim speed: ")
        .to_owned();
    let faults: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("lease-sim fault: "))
        .map(|kv| format!("`{kv}`"))
        .collect();
    let failed: Vec<&str> = text
        .lines()
        .chain(swarm_text.lines())
        .chain(sqlite_text.lines())
        .filter(|l| l.starts_with("FAILED") || l.starts_with("replay"))
        .collect();
    let body = format!(
        "## Deterministic simulation: every interleaving, pause and clock drift, by seed\n\n\
         Written by `cargo xtask sim{}` (release build, {threads} threads: {speed}).\n\n\
         Each seed runs simulated processes (each with its own manager and a clock running at \
         1 ± 1% of true time) with leader-election candidates (also ones that lock() again from \
         their lost-token handler, and two concurrent lock() on one elector), leaser holders, \
         resource-lock transactions, raw claimers and `lease run` invocations (the \
         supervisor's state machine on the process's clock, a shim enforcing the kill deadline \
         while `lease run` is paused, commands that may ignore SIGTERM), over the in-memory \
         store behind the simulator's faults: timeouts before and after taking effect, long-tailed latency, \
         Invalid answers, split batches, change notices late or lost, partitions, process \
         pauses, crashes and restarts, and an operator revoking held leases behind their \
         holders' backs. lease-torture's checker proves from the clients' windows (on true time) \
         that no two holders of a lease overlapped and that generations increased; the store's \
         own record must back every window (its lease held under its generation); a term whose \
         lease an operator revoked must end within its renew deadline; within one claim or \
         renewal the manager never sends a claim after an extend; every call must be answered. \
         Swarm mode runs the same seeds with each seed drawing its own fault rates (×0 to ×3), \
         2-4 processes, 1-3 leases and a subset of the client kinds. Replay any seed with \
         `cargo run --release -p lease-sim -- --replay SEED --log` (add `--swarm` for a swarm \
         seed). The SQLite mode runs swarm seeds over lease-store-sqlite on a temporary file \
         (judging expiry on the simulation's true clock, one holder session per simulated \
         process) instead of the in-memory store.\n\n\
         | mode | seeds | simulated hours | windows checked | terms checked | faults injected | violations |\n\
         |---|---|---|---|---|---|---|\n\
         | default | {} | {} | {} | {} | {} | {} |\n\
         | swarm | {} | {} | {} | {} | {} | {} |\n\
         | swarm over SQLite | {} | {} | {} | {} | {} | {} |\n\n\
         Faults by kind (default mode): {}.\n{}\n\
         ### Drift bound: the simulator finds overlaps past it\n\n\
         Leader candidates only, client-go timing (lease 15 s, renew deadline 10 s, retry 2 s), \
         {BOUND_SEEDS} seeds each. The bound is ε < 1 − renew_deadline / lease_duration = 1/3 \
         (ARCHITECTURE.md, Time).\n\n\
         | clock-rate error ε | violations | expected |\n|---|---|---|\n\
         | 40% | {} | some |\n| 30% | {} | none |\n\n\
         ### Mutation mode: defects switched on in lease-manager and `lease run` must be found\n\n\
         lease-manager's and lease-run-policy's `mutations` features (test-only, all off unless \
         the simulator switches one on for its thread) re-introduce a defect; swarm mode (each seed draws its fault \
         rates, processes, leases and a subset of the kinds listed), seeds from 0. CI fails \
         when a mutation is not found within its bound.\n\n\
         | mutation | kinds | found at | bound | failing seeds |\n|---|---|---|---|---|\n{mutation_rows}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" {}", args.join(" "))
        },
        total(&text, "seeds"),
        total(&text, "simulated_hours"),
        total(&text, "windows"),
        total(&text, "tenures"),
        total(&text, "faults"),
        total(&text, "violations"),
        total(&swarm_text, "seeds"),
        total(&swarm_text, "simulated_hours"),
        total(&swarm_text, "windows"),
        total(&swarm_text, "tenures"),
        total(&swarm_text, "faults"),
        total(&swarm_text, "violations"),
        total(&sqlite_text, "seeds"),
        total(&sqlite_text, "simulated_hours"),
        total(&sqlite_text, "windows"),
        total(&sqlite_text, "tenures"),
        total(&sqlite_text, "faults"),
        total(&sqlite_text, "violations"),
        faults.join(", "),
        if failed.is_empty() {
            String::new()
        } else {
            format!("\n```\n{}\n```\n", failed.join("\n"))
        },
        total(&unsafe_text, "violations"),
        total(&safe_text, "violations"),
    );
    let destination = if o.ci {
        let dir = target_dir(root).join("sim");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        dir.join("RELIABILITY-sim.md")
    } else {
        root.join("RELIABILITY.md")
    };
    write_section(&destination, &body)?;
    println!("xtask sim: wrote {}", destination.display());
    let mut failures = Vec::new();
    if !passed {
        failures.push("the simulation found violations (see the replay command above)");
    }
    if !swarm_passed {
        failures.push("the swarm simulation found violations (see the replay command above)");
    }
    if !sqlite_passed {
        failures.push("the SQLite simulation found violations (see the replay command above)");
    }
    if unsafe_passed {
        failures.push("with 40% clock drift the simulator found no overlap: it does not search");
    }
    if !safe_passed {
        failures.push("within the drift bound (30%) the simulator found an overlap");
    }
    let missed: Vec<String> = mutations
        .iter()
        .filter(|(_, first, _)| first.is_none())
        .map(|(m, _, _)| format!("the {} mutation was not found in {} seeds", m.name, m.bound))
        .collect();
    let mut failures: Vec<String> = failures.into_iter().map(str::to_owned).collect();
    failures.extend(missed);
    if failures.is_empty() {
        println!("xtask sim: passed");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Replaces (or appends) the simulation's section of `path`.
fn write_section(path: &Path, body: &str) -> Result<(), String> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| "# Reliability\n".to_owned());
    let (begin, end) = ("<!-- sim:begin -->", "<!-- sim:end -->");
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => text.replace_range(b..e + end.len(), &block),
        _ => {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
            text.push_str(&block);
            text.push('\n');
        }
    }
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failing_seed_is_the_smallest_reported() {
        let out = "lease-sim totals: seeds=9\nFAILED seed 12: x\nFAILED seed 3: y: z\nreplay ...\n";
        assert_eq!(first_failing(out), Some(3));
        assert_eq!(first_failing("lease-sim totals: seeds=9\n"), None);
    }

    #[test]
    fn every_mutation_has_a_bound_and_a_distinct_name() {
        let mut names: Vec<&str> = MUTATIONS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MUTATIONS.len());
        assert!(MUTATIONS.iter().all(|m| m.bound > 0 && !m.kinds.is_empty()));
    }
}
