//! `cargo xtask bench`: runs every benchmark binary in release mode and writes their tables to
//! `BENCHMARKS.md`.
//!
//! Each benchmark measures its figures beside a baseline taken in the same run (a raw rusqlite
//! loop, a check through the worker, raw conditional PUTs), so the ratios in the file are
//! comparable across machines even when the absolute numbers are not.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

/// One benchmark: a package's example, and the arguments it runs with.
struct Bench {
    package: &'static str,
    example: &'static str,
    args: &'static [&'static str],
}

/// Every benchmark `cargo xtask bench` runs, in the order their sections appear.
const BENCHES: &[Bench] = &[
    Bench {
        package: "lease-store-sqlite",
        example: "bench_sqlite",
        args: &[],
    },
    Bench {
        package: "lease-manager",
        example: "bench_manager",
        args: &[],
    },
];

/// Runs the benchmarks (all, or those whose example name contains `filter`) and writes
/// `BENCHMARKS.md` in `root`.
pub(crate) fn run(root: &Path, filter: Option<&str>) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut sections = Vec::new();
    for bench in BENCHES {
        if filter.is_some_and(|f| !bench.example.contains(f)) {
            continue;
        }
        let mut args = vec![
            "run",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            bench.package,
            "--example",
            bench.example,
        ];
        if !bench.args.is_empty() {
            args.push("--");
            args.extend_from_slice(bench.args);
        }
        println!("xtask: $ cargo {}", args.join(" "));
        let output = Command::new(&cargo)
            .args(&args)
            .current_dir(root)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "benchmark {} failed ({}); its stderr is above",
                bench.example, output.status
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        print!("{text}");
        sections.push(text);
    }
    if sections.is_empty() {
        return Err(format!("no benchmark matches {filter:?}"));
    }
    let path = root.join("BENCHMARKS.md");
    let mut doc = String::new();
    doc.push_str("# Benchmarks\n\n");
    doc.push_str(
        "Written by `cargo xtask bench`; do not edit by hand. Every figure is measured beside a \
         baseline in the same run, and targets are stated as ratios to it, so compare the ratios \
         across machines rather than the absolute numbers.\n\n",
    );
    doc.push_str(&machine_description(&cargo));
    doc.push('\n');
    for section in sections {
        doc.push_str(section.trim_end());
        doc.push_str("\n\n");
    }
    fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("xtask: wrote {}", path.display());
    Ok(())
}

/// A short description of the machine the figures come from.
fn machine_description(cargo: &str) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown memory".to_owned(),
            |kb| format!("{} GiB", kb / (1024 * 1024)),
        );
    let rustc = Command::new(cargo)
        .args(["--version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("Machine: {cpu}, {cores} cores, {memory}; {rustc}; release profile.\n")
}
