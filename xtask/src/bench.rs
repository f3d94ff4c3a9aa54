//! `cargo xtask bench`: runs every benchmark binary in release mode and writes their tables to
//! `BENCHMARKS.md`.
//!
//! Each benchmark measures its figures beside a baseline taken in the same run (a raw rusqlite
//! loop, a check through the worker, raw conditional PUTs), so the ratios in the file are
//! comparable across machines even when the absolute numbers are not.
//!
//! Benchmarks that need a Kubernetes API server get one from [`crate::k8s::up`] (the local
//! server, started if it is not up, or the cluster `KUBECONFIG` reaches) with its environment;
//! a server this run started is stopped at the end. When no server can be had, those
//! benchmarks are skipped and their section says so. The Postgres benchmark gets its server
//! from [`crate::pg::up`] the same way.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{k8s, pg};

/// One benchmark: a package's example, and the arguments it runs with.
struct Bench {
    package: &'static str,
    example: &'static str,
    args: &'static [&'static str],
    /// Runs against a Kubernetes API server (with `KUBECONFIG` and the other variables of
    /// `cargo xtask k8s env` set).
    needs_k8s: bool,
}

/// Every benchmark `cargo xtask bench` runs, in the order their sections appear.
const BENCHES: &[Bench] = &[
    Bench {
        package: "lease-store-sqlite",
        example: "bench_sqlite",
        args: &[],
        needs_k8s: false,
    },
    Bench {
        package: "lease-manager",
        example: "bench_manager",
        args: &[],
        needs_k8s: false,
    },
    Bench {
        package: "lease-store-k8s",
        example: "bench_k8s",
        args: &[],
        needs_k8s: true,
    },
    // Issue 7: LeaderElector handover, takeover after SIGKILL, requests per minute and
    // candidates started together, on the API server and on SQLite (about 4 minutes).
    Bench {
        package: "lease-store-k8s",
        example: "bench_election",
        args: &[],
        needs_k8s: true,
    },
    // Issue 18: the Postgres store against the server `cargo xtask pg up` starts.
    Bench {
        package: "lease-store-postgres",
        example: "bench_postgres",
        args: &[],
        needs_k8s: false,
    },
];

/// The benchmarks that run against a local Postgres server ([`pg::up`], with its environment).
const POSTGRES_BENCHES: [&str; 1] = ["bench_postgres"];

/// Runs the benchmarks (all, or those whose example name contains `filter`) and writes
/// `BENCHMARKS.md` in `root`.
pub(crate) fn run(root: &Path, filter: Option<&str>) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let selected: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| filter.is_none_or(|f| b.example.contains(f)))
        .collect();
    if selected.is_empty() {
        return Err(format!("no benchmark matches {filter:?}"));
    }
    // The API server, brought up (or found) before the first benchmark that needs it: `Ok` with
    // the cluster, or `Err` with why there is none.
    let mut cluster: Option<Result<k8s::Cluster, String>> = None;
    // The Postgres server likewise (its benchmark says "not measured" without one).
    let postgres = selected
        .iter()
        .any(|b| POSTGRES_BENCHES.contains(&b.example))
        .then(pg::up);
    if let Some(Err(e)) = &postgres {
        eprintln!("xtask: no Postgres server for bench_postgres: {e}");
    }
    let postgres_env = match &postgres {
        Some(Ok(server)) => server.env.clone(),
        _ => Vec::new(),
    };
    let result = run_benches(root, &cargo, &selected, &mut cluster, &postgres_env);
    if let Some(Ok(server)) = &postgres
        && server.started_here
        && let Err(e) = pg::down()
    {
        eprintln!("xtask: stopping the local Postgres server: {e}");
    }
    if let Some(Ok(cluster)) = &cluster
        && cluster.started_here
        && let Err(e) = k8s::down()
    {
        eprintln!("xtask: stopping the local Kubernetes API server: {e}");
    }
    let sections = result?;
    write_file(root, &cargo, sections)
}

/// Runs `benches` in order and returns their markdown sections. `cluster` is filled in by the
/// first benchmark that needs a Kubernetes API server, and used by the later ones.
fn run_benches(
    root: &Path,
    cargo: &str,
    benches: &[&Bench],
    cluster: &mut Option<Result<k8s::Cluster, String>>,
    postgres_env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let mut sections = Vec::new();
    for bench in benches {
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
        let mut command = Command::new(cargo);
        if POSTGRES_BENCHES.contains(&bench.example) {
            command.envs(postgres_env.iter().map(|(k, v)| (k, v)));
        }
        if bench.needs_k8s {
            let up = cluster.get_or_insert_with(|| {
                println!("xtask: {} needs a Kubernetes API server", bench.example);
                k8s::up()
            });
            match up {
                Ok(cluster) => {
                    command.envs(cluster.env.iter().map(|(k, v)| (k, v)));
                }
                Err(e) => {
                    eprintln!(
                        "xtask: skipping {}: no Kubernetes API server ({e})",
                        bench.example
                    );
                    sections.push(format!(
                        "## {}\n\nNot measured in this run: `{}` needs a Kubernetes API server \
                         and none could be started or reached.\n",
                        bench.package, bench.example
                    ));
                    continue;
                }
            }
        }
        println!("xtask: $ cargo {}", args.join(" "));
        let output = command
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
    Ok(sections)
}

/// Writes `BENCHMARKS.md` in `root` from the benchmarks' sections.
fn write_file(root: &Path, cargo: &str, sections: Vec<String>) -> Result<(), String> {
    let path = root.join("BENCHMARKS.md");
    let mut doc = String::new();
    doc.push_str("# Benchmarks\n\n");
    doc.push_str(
        "Written by `cargo xtask bench`; do not edit by hand. Every figure is measured beside a \
         baseline in the same run, and targets are stated as ratios to it, so compare the ratios \
         across machines rather than the absolute numbers.\n\n",
    );
    doc.push_str(&machine_description(cargo));
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
