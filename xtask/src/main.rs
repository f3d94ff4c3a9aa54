//! `cargo xtask`: the workspace's own tasks, run the same way by developers and CI.
//!
//! Deliberately dependency-free so it builds in seconds on a fresh machine.

mod bench;
mod fuzz;
mod host;
mod k8s;
mod pg;
mod release;
mod sim;
mod tidy;
mod torture;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci      formatting, clippy (warnings denied), dependency trees, each crate alone, every
          test, the loom model check, the examples, short torture and fuzz runs, 10,000
          simulation seeds, rustdoc (warnings denied), cargo package, tidy
  tidy    the tidy checks alone (they also run as a test under `cargo test`)
  bench   every benchmark in release mode; writes BENCHMARKS.md (`cargo xtask bench [FILTER]`)
  ready   ci's readiness checks alone: dependency trees, each crate alone, the examples that
          need no server, cargo package
  k8s     a real local Kubernetes API server for the tests: `cargo xtask k8s help`
  pg      a real local PostgreSQL server for the tests: `cargo xtask pg help`
  fuzz    the cargo-fuzz targets, 300 s each (`cargo xtask fuzz [--seconds N] [TARGET]`)
  torture kill -9, server restarts and bursts vs. mutual exclusion; writes RELIABILITY.md
          (`cargo xtask torture --help`)
  sim     the deterministic simulation over many seeds; writes RELIABILITY.md
          (`cargo xtask sim --seeds N`)
  loom    lease-manager's window table, model-checked with loom (every interleaving of the
          worker's publishes and clears with tokens' reads): lease-loom's tests, in release
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::check(&workspace_root()).map_err(|problems| problems.join("\n")),
        Some("k8s") => k8s::main(&args[1..]),
        Some("pg") => pg::main(&args[1..]),
        Some("fuzz") => fuzz::main(&workspace_root(), &args[1..]),
        Some("ready") => ready(),
        Some("bench") => bench::run(&workspace_root(), args.get(1).map(String::as_str)),
        Some("torture") => torture::run(&workspace_root(), &args[1..]),
        Some("sim") => sim::run(&workspace_root(), &args[1..]),
        Some("loom") => loom(),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask's manifest directory's parent.
fn workspace_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// Runs `cargo` with `args` in the workspace root, with extra environment variables.
fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("xtask: $ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
}

/// The loom model check of lease-manager's window table: `lease-loom` compiles the table's
/// file with loom's locks (its build script sets `cfg(loom)` for it alone), so it builds in the
/// usual target dir with loom as its only dependency: about a minute cold on two busy cores.
fn loom() -> Result<(), String> {
    cargo(&["test", "-p", "lease-loom", "--release", "--locked"], &[])
}

fn have_nextest() -> bool {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The readiness checks of `ci`, without the rest.
fn ready() -> Result<(), String> {
    release::rust_version(&workspace_root())?;
    release::dependency_trees(&workspace_root())?;
    release::crates_alone(|args| cargo(args, &[]))?;
    release::examples(&release::LOCAL_EXAMPLES, |args| cargo(args, &[]))?;
    release::package(&workspace_root(), |args| cargo(args, &[]))?;
    println!("xtask: ready");
    Ok(())
}

fn ci() -> Result<(), String> {
    tidy::check(&workspace_root()).map_err(|problems| problems.join("\n"))?;
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // Ready for users: the dependency trees hold only what each crate needs, and each library
    // crate builds alone (with its own features only); rust-version is the toolchain in use.
    release::rust_version(&workspace_root())?;
    release::dependency_trees(&workspace_root())?;
    release::crates_alone(|args| cargo(args, &[]))?;
    // nextest does not run doctests; they are tests too. They run first so that the last
    // test-runner summary printed is the whole suite's.
    cargo(&["test", "--workspace", "--locked", "--doc"], &[])?;
    // Tests that need a real Kubernetes API server are `#[ignore]`d so a plain `cargo test`
    // works anywhere; CI starts a local server and runs them too.
    release::examples(&release::LOCAL_EXAMPLES, |args| cargo(args, &[]))?;
    let cluster = k8s::up()?;
    let postgres = pg::up().inspect_err(|_| {
        if cluster.started_here {
            let _ = k8s::down();
        }
    })?;
    let envs: Vec<(&str, &str)> = cluster
        .env
        .iter()
        .chain(&postgres.env)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The loom model check runs in release, in its own step below.
    let tests = if have_nextest() {
        cargo(
            &[
                "nextest",
                "run",
                "--workspace",
                "--exclude",
                "lease-loom",
                "--locked",
                "--no-fail-fast",
                "--run-ignored",
                "all",
            ],
            &envs,
        )
    } else {
        cargo(
            &[
                "test",
                "--workspace",
                "--exclude",
                "lease-loom",
                "--locked",
                "--no-fail-fast",
                "--",
                "--include-ignored",
            ],
            &envs,
        )
    };
    // The Kubernetes examples run against the same server, while it is up.
    let k8s_examples = release::examples(&release::K8S_EXAMPLES, |args| cargo(args, &envs));
    if cluster.started_here
        && let Err(e) = k8s::down()
    {
        eprintln!("xtask: stopping the local Kubernetes API server: {e}");
    }
    if postgres.started_here
        && let Err(e) = pg::down()
    {
        eprintln!("xtask: stopping the local Postgres server: {e}");
    }
    tests?;
    k8s_examples?;
    // The window table under every interleaving of the worker's publishes and clears with
    // tokens' reads (loom).
    loom()?;
    // A short torture run, after the suite: SQLite workers under kill -9, and leader candidates
    // on a dedicated local API server (its own ports) whose etcd is restarted mid-run, and on a
    // dedicated local Postgres server (its own directory and port) that is crashed mid-run.
    torture::run(&workspace_root(), &["--short".to_owned()])?;
    // The deterministic simulation: 10,000 seeds, 5,000 swarm seeds and 100 over SQLite (a few
    // minutes on two cores), the drift bound check, and each mutation found within its bound.
    sim::run(
        &workspace_root(),
        &[
            "--seeds".to_owned(),
            sim::CI_SEEDS.to_owned(),
            "--ci".to_owned(),
        ],
    )?;
    // A short fuzz pass (the same properties also ran above as proptests): about a minute on
    // a warm machine; see fuzz/README.md.
    fuzz::run(&workspace_root(), &fuzz::TARGETS, fuzz::SHORT_SECONDS)?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    release::package(&workspace_root(), |args| cargo(args, &[]))?;
    println!("xtask: ci passed");
    Ok(())
}
