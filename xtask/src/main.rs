//! `cargo xtask`: the workspace's own tasks, run the same way by developers and CI.
//!
//! Deliberately dependency-free so it builds in seconds on a fresh machine.

mod bench;
mod k8s;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci      formatting, clippy (warnings denied), every test, rustdoc (warnings denied), tidy
  tidy    the tidy checks alone (they also run as a test under `cargo test`)
  bench   every benchmark in release mode; writes BENCHMARKS.md (`cargo xtask bench [FILTER]`)
  k8s     a real local Kubernetes API server for the tests: `cargo xtask k8s help`
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::check(&workspace_root()).map_err(|problems| problems.join("\n")),
        Some("k8s") => k8s::main(&args[1..]),
        Some("bench") => bench::run(&workspace_root(), args.get(1).map(String::as_str)),
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

fn have_nextest() -> bool {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
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
    // nextest does not run doctests; they are tests too. They run first so that the last
    // test-runner summary printed is the whole suite's.
    cargo(&["test", "--workspace", "--locked", "--doc"], &[])?;
    // Tests that need a real Kubernetes API server are `#[ignore]`d so a plain `cargo test`
    // works anywhere; CI starts a local server and runs them too.
    let cluster = k8s::up()?;
    let envs: Vec<(&str, &str)> = cluster
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tests = if have_nextest() {
        cargo(
            &[
                "nextest",
                "run",
                "--workspace",
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
                "--locked",
                "--no-fail-fast",
                "--",
                "--include-ignored",
            ],
            &envs,
        )
    };
    if cluster.started_here
        && let Err(e) = k8s::down()
    {
        eprintln!("xtask: stopping the local Kubernetes API server: {e}");
    }
    tests?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    println!("xtask: ci passed");
    Ok(())
}
