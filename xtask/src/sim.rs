//! `cargo xtask sim`: the deterministic simulation (crates/lease-sim) over many seeds, in a
//! release build, plus its proof that it searches (the drift bound: leader candidates whose
//! clocks may run 40% slow must be caught overlapping, at 30% never); writes the totals into
//! `RELIABILITY.md` (or, for CI, `target/sim/RELIABILITY-sim.md`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const HELP: &str = "\
usage: cargo xtask sim [--seeds N] [--first S] [--threads T] [--ci]

  --seeds N    seeds to run (default 10000)
  --first S    the first seed (default 0)
  --threads T  threads (default: all cores)
  --ci         write target/sim/RELIABILITY-sim.md instead of RELIABILITY.md
";

/// Seeds `cargo xtask ci` runs.
pub(crate) const CI_SEEDS: &str = "10000";

/// The mutations of lease-manager's `mutations` feature, as `lease-sim --mutation` names them,
/// with the client kinds each run draws from (`None`: the leader candidates).
const MUTATIONS: [(&str, Option<&str>); 4] = [
    ("concurrent-lock", None),
    ("generation-across-terms", None),
    ("retried-extend-claims", Some(KINDS_RETRIED_EXTEND)),
    ("revoke-racing-lock", None),
];

/// The kinds whose extends the worker retries (a leader's renewal that turns into a claim is
/// caught by the elector itself, which ends the term).
const KINDS_RETRIED_EXTEND: &str = "claimer,leaser,resource-lock";

/// Seeds each mutation run may take to find its defect.
const MUTATION_SEEDS: &str = "200";

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
    let electors = "elector,elector-relock,elector-concurrent";
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
    // Mutation mode: each defect switched on must be found, within MUTATION_SEEDS seeds.
    let mut mutations = Vec::new();
    for (mutation, kinds) in MUTATIONS {
        let mut args = vec![
            "--seeds",
            MUTATION_SEEDS,
            "--no-shrink",
            "--kinds",
            kinds.unwrap_or(electors),
            "--mutation",
            mutation,
        ];
        args.extend(common);
        let (clean, out) = simulate(&exe, &args)?;
        // Seeds run from 0, so the first failing seed S means S + 1 seeds were needed.
        let first = out
            .lines()
            .find_map(|l| l.strip_prefix("FAILED seed "))
            .and_then(|l| l.split(':').next())
            .and_then(|s| s.parse::<u64>().ok());
        mutations.push((mutation, clean, first, total(&out, "failing_seeds")));
    }
    let mutation_rows: String = mutations
        .iter()
        .map(|(m, _, first, failing)| {
            let found = first.map_or_else(
                || format!("not found in {MUTATION_SEEDS} seeds"),
                |s| format!("seed {s} (within {} seeds)", s + 1),
            );
            format!("| `{m}` | {found} | {failing} of {MUTATION_SEEDS} |\n")
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
        .filter(|l| l.starts_with("FAILED") || l.starts_with("replay"))
        .collect();
    let body = format!(
        "## Deterministic simulation: every interleaving, pause and clock drift, by seed\n\n\
         Written by `cargo xtask sim{}` (release build, {threads} threads: {speed}).\n\n\
         Each seed runs simulated processes (each with its own manager and a clock running at \
         1 ± 1% of true time) with leader-election candidates (also ones that lock() again from \
         their lost-token handler, and two concurrent lock() on one elector), leaser holders, \
         resource-lock transactions and raw claimers, over the in-memory store behind the \
         simulator's faults: timeouts before and after taking effect, long-tailed latency, \
         Invalid answers, split batches, partitions, process pauses, crashes and restarts. \
         lease-torture's checker proves from the clients' windows (on true time) that no two \
         holders of a lease overlapped and that generations increased; every call must be \
         answered. Replay any seed with `cargo run --release -p lease-sim -- --replay SEED --log`.\n\n\
         | seeds | simulated hours | windows checked | terms checked | faults injected | violations |\n\
         |---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} |\n\n\
         Faults by kind: {}.\n{}\n\
         ### Drift bound: the simulator finds overlaps past it\n\n\
         Leader candidates only, client-go timing (lease 15 s, renew deadline 10 s, retry 2 s), \
         {BOUND_SEEDS} seeds each. The bound is ε < 1 − renew_deadline / lease_duration = 1/3 \
         (ARCHITECTURE.md, Time).\n\n\
         | clock-rate error ε | violations | expected |\n|---|---|---|\n\
         | 40% | {} | some |\n| 30% | {} | none |\n\n\
         ### Mutation mode: defects switched on in lease-manager must be found\n\n\
         lease-manager's `mutations` feature (test-only, all off unless the simulator switches \
         one on for its thread) re-introduces a defect; leader candidates only \
         (`retried-extend-claims`: claimers, leasers and resource locks), default faults.\n\n\
         | mutation | first failing seed | failing seeds |\n|---|---|---|\n{mutation_rows}",
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
    if unsafe_passed {
        failures.push("with 40% clock drift the simulator found no overlap: it does not search");
    }
    if !safe_passed {
        failures.push("within the drift bound (30%) the simulator found an overlap");
    }
    for (m, clean, _, _) in &mutations {
        if *clean && *m == "concurrent-lock" {
            failures.push("the concurrent-lock mutation was not found");
        }
    }
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
