//! `cargo xtask bench`: runs every benchmark (a binary of `crates/lease-bench`) in release mode
//! and writes their tables to `BENCHMARKS.md`.
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

/// The package whose binaries the benchmarks are.
const PACKAGE: &str = "lease-bench";

/// One benchmark: a binary of [`PACKAGE`], and the arguments it runs with.
struct Bench {
    bin: &'static str,
    /// The heading of the section it writes, for the section that says it was not measured.
    heading: &'static str,
    args: &'static [&'static str],
    /// Binaries of other packages (package, binary) built (release) before the benchmark
    /// runs, which finds them beside itself.
    builds: &'static [(&'static str, &'static str)],
    /// Runs against a Kubernetes API server (with `KUBECONFIG` and the other variables of
    /// `cargo xtask k8s env` set).
    needs_k8s: bool,
}

/// Every benchmark `cargo xtask bench` runs, in the order their sections appear.
const BENCHES: &[Bench] = &[
    Bench {
        bin: "bench_sqlite",
        heading: "## lease-store-sqlite",
        args: &[],
        builds: &[],
        needs_k8s: false,
    },
    Bench {
        bin: "bench_manager",
        heading: "## lease-manager",
        args: &[],
        builds: &[],
        needs_k8s: false,
    },
    // Issue 13: `lease run -- true` on an empty database and on one with 1M leases, beside
    // flock(1) (about a minute, most of it building the big database). `lease run` starts its
    // command under `lease-run-shim` when it is beside it, as it is when installed.
    Bench {
        bin: "bench_cli",
        heading: "## lease-cli: `lease run -- true`",
        args: &[],
        builds: &[("lease-cli", "lease"), ("lease-cli", "lease-run-shim")],
        needs_k8s: false,
    },
    Bench {
        bin: "bench_k8s",
        heading: "## lease-store-k8s",
        args: &[],
        builds: &[],
        needs_k8s: true,
    },
    // Issue 7: LeaderElector handover, takeover after SIGKILL, requests per minute and
    // candidates started together, on the API server and on SQLite (about 4 minutes).
    Bench {
        bin: "bench_election",
        heading: "## leader election",
        args: &[],
        builds: &[],
        needs_k8s: true,
    },
    // Issue 18: the Postgres store against the server `cargo xtask pg up` starts.
    Bench {
        bin: "bench_postgres",
        heading: "## lease-store-postgres",
        args: &[],
        builds: &[],
        needs_k8s: false,
    },
];

/// The benchmarks that run against a local Postgres server ([`pg::up`], with its environment).
const POSTGRES_BENCHES: [&str; 1] = ["bench_postgres"];

/// Runs the benchmarks (all, or those whose binary name contains `filter`) and writes
/// `BENCHMARKS.md` in `root`: the whole file after a full run; after a filtered run, only the
/// sections of the benchmarks that ran, the others kept as they were.
pub(crate) fn run(root: &Path, filter: Option<&str>) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let selected: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| filter.is_none_or(|f| b.bin.contains(f)))
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
        .any(|b| POSTGRES_BENCHES.contains(&b.bin))
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
    if filter.is_some() {
        update_file(root, sections)
    } else {
        write_file(root, &cargo, sections)
    }
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
        for (package, bin) in bench.builds {
            let build = [
                "build",
                "--release",
                "--locked",
                "--quiet",
                "-p",
                package,
                "--bin",
                bin,
            ];
            println!("xtask: $ cargo {}", build.join(" "));
            let status = Command::new(cargo)
                .args(build)
                .current_dir(root)
                .status()
                .map_err(|e| format!("cannot run {cargo}: {e}"))?;
            if !status.success() {
                return Err(format!("building {bin} for {} failed", bench.bin));
            }
        }
        let mut args = vec![
            "run",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            PACKAGE,
            "--bin",
            bench.bin,
        ];
        if !bench.args.is_empty() {
            args.push("--");
            args.extend_from_slice(bench.args);
        }
        let mut command = Command::new(cargo);
        if POSTGRES_BENCHES.contains(&bench.bin) {
            command.envs(postgres_env.iter().map(|(k, v)| (k, v)));
        }
        if bench.needs_k8s {
            let up = cluster.get_or_insert_with(|| {
                println!("xtask: {} needs a Kubernetes API server", bench.bin);
                k8s::up()
            });
            match up {
                Ok(cluster) => {
                    command.envs(cluster.env.iter().map(|(k, v)| (k, v)));
                }
                Err(e) => {
                    eprintln!(
                        "xtask: skipping {}: no Kubernetes API server ({e})",
                        bench.bin
                    );
                    sections.push(format!(
                        "{}\n\nNot measured in this run: `{}` needs a Kubernetes API server \
                         and none could be started or reached.\n",
                        bench.heading, bench.bin
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
                bench.bin, output.status
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

/// Replaces, in the existing `BENCHMARKS.md` of `root`, each section (from its `## ` heading to
/// the next) whose heading one of `sections` starts with, and appends the sections it did not
/// have; everything else is kept byte for byte.
fn update_file(root: &Path, sections: Vec<String>) -> Result<(), String> {
    let path = root.join("BENCHMARKS.md");
    let old =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut parts = split_sections(&old);
    for section in sections {
        let section = format!("{}\n\n", section.trim_end());
        let heading = section.lines().next().unwrap_or_default().to_owned();
        match parts
            .iter_mut()
            .find(|p| p.lines().next() == Some(heading.as_str()))
        {
            Some(part) => *part = section,
            None => {
                if let Some(last) = parts.last_mut()
                    && !last.is_empty()
                    && !last.ends_with("\n\n")
                {
                    last.push('\n');
                }
                parts.push(section);
            }
        }
    }
    let mut doc = parts.concat();
    let trimmed = doc.trim_end().len();
    doc.truncate(trimmed);
    doc.push('\n');
    fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("xtask: updated {}", path.display());
    Ok(())
}

/// `text` cut before every line starting with `## ` (the first part is the preamble).
fn split_sections(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.starts_with("## ") {
            parts.push(String::new());
        }
        if let Some(last) = parts.last_mut() {
            last.push_str(line);
        }
    }
    parts
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The binaries of `crates/lease-bench` (`src/bin/NAME.rs` or `src/bin/NAME/main.rs`).
    fn bench_binaries() -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/lease-bench/src/bin");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?.to_owned();
                if path.is_dir() {
                    path.join("main.rs").is_file().then_some(name)
                } else {
                    name.strip_suffix(".rs").map(str::to_owned)
                }
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_benchmark_binary_is_run_and_every_run_is_a_binary() {
        let mut run: Vec<String> = BENCHES.iter().map(|b| b.bin.to_owned()).collect();
        run.sort();
        assert_eq!(
            run,
            bench_binaries(),
            "BENCHES and lease-bench's binaries differ"
        );
    }

    #[test]
    fn each_benchmark_prints_the_heading_xtask_knows_it_by() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/lease-bench/src/bin");
        for bench in BENCHES {
            let file = dir.join(format!("{}.rs", bench.bin));
            let files = if file.is_file() {
                vec![file]
            } else {
                fs::read_dir(dir.join(bench.bin))
                    .unwrap()
                    .map(|entry| entry.unwrap().path())
                    .collect()
            };
            let printed = format!("\"{}\\n", bench.heading);
            assert!(
                files
                    .iter()
                    .any(|f| fs::read_to_string(f).unwrap().contains(&printed)),
                "{} does not print {:?}",
                bench.bin,
                bench.heading
            );
        }
    }

    #[test]
    fn a_filtered_run_replaces_only_its_own_sections() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let old = "# Benchmarks\n\nintro\n\n## a\n\nold a\n\n### sub\n\nx\n\n## b\n\nold b\n";
        fs::write(dir.join("BENCHMARKS.md"), old).unwrap();
        update_file(
            &dir,
            vec!["## a\n\nnew a\n".into(), "## c\n\nnew c\n".into()],
        )
        .unwrap();
        let new = fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
        assert_eq!(
            new,
            "# Benchmarks\n\nintro\n\n## a\n\nnew a\n\n## b\n\nold b\n\n## c\n\nnew c\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
