//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets in `fuzz/` for a
//! bounded time each, installing cargo-fuzz first if it is missing.
//!
//! cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage instrumentation); on a
//! stable toolchain they are unlocked with `RUSTC_BOOTSTRAP=1`, set only for these commands.
//! CI runs [`SHORT_SECONDS`] per target; see `fuzz/README.md` for timings and the reasons.

use std::env;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Every target in `fuzz/fuzz_targets`, in the order they run.
pub(crate) const TARGETS: [&str; 4] = [
    "pathkey_parse_format",
    "validate_string",
    "k8s_object_name",
    "lock_record_lease_spec",
];

/// Seconds per target of CI's short pass.
pub(crate) const SHORT_SECONDS: u64 = 10;

/// Seconds per target of `cargo xtask fuzz` without `--seconds`.
const DEFAULT_SECONDS: u64 = 300;

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [TARGET]

Runs each fuzz target (or only TARGET) for N seconds (default 300), with cargo-fuzz
(installed with `cargo install --locked cargo-fuzz` if missing). Crashes are saved in
fuzz/artifacts/TARGET/; reproduce one with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE`.

targets: pathkey_parse_format, validate_string, k8s_object_name, lock_record_lease_spec
";

/// `cargo xtask fuzz` with its arguments.
pub(crate) fn main(root: &Path, args: &[String]) -> Result<(), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut only: Option<&str> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--seconds" => {
                let value = rest
                    .next()
                    .ok_or_else(|| format!("--seconds needs a value\n\n{USAGE}"))?;
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--seconds {value:?}: not a positive number"))?;
            }
            target if TARGETS.contains(&target) && only.is_none() => only = Some(target),
            other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
        }
    }
    let targets: Vec<&str> = match only {
        Some(t) => vec![t],
        None => TARGETS.to_vec(),
    };
    run(root, &targets, seconds)
}

/// Runs `targets` for `seconds` each (after one build of all of them).
pub(crate) fn run(root: &Path, targets: &[&str], seconds: u64) -> Result<(), String> {
    ensure_cargo_fuzz()?;
    let started = Instant::now();
    cargo_fuzz(root, &["build", "-O"])?;
    println!("xtask: fuzz targets built in {:.0?}", started.elapsed());
    for target in targets {
        let time = format!("-max_total_time={seconds}");
        let started = Instant::now();
        cargo_fuzz(root, &["run", "-O", target, "--", &time])?;
        println!(
            "xtask: fuzz {target}: no failure in {:.0?}",
            started.elapsed()
        );
    }
    Ok(())
}

fn cargo_program() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn have_cargo_fuzz() -> bool {
    Command::new(cargo_program())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    if have_cargo_fuzz() {
        return Ok(());
    }
    println!("xtask: $ cargo install --locked cargo-fuzz");
    let status = Command::new(cargo_program())
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if status.success() && have_cargo_fuzz() {
        Ok(())
    } else {
        Err(format!("installing cargo-fuzz failed: {status}"))
    }
}

/// `cargo fuzz <args>` in the workspace root, with nightly flags unlocked on stable.
fn cargo_fuzz(root: &Path, args: &[&str]) -> Result<(), String> {
    println!("xtask: $ RUSTC_BOOTSTRAP=1 cargo fuzz {}", args.join(" "));
    let status = Command::new(cargo_program())
        .arg("fuzz")
        .args(args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo fuzz {}` failed: {status}", args.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_file_and_a_bin_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("fuzz");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                root.join("fuzz_targets")
                    .join(format!("{target}.rs"))
                    .is_file(),
                "{target}"
            );
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
        }
        let files = std::fs::read_dir(root.join("fuzz_targets"))
            .unwrap()
            .count();
        assert_eq!(files, TARGETS.len(), "a fuzz target missing from TARGETS");
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_runs() {
        let root = Path::new(".");
        for args in [
            vec!["--seconds"],
            vec!["--seconds", "0"],
            vec!["--seconds", "x"],
            vec!["no_such_target"],
            vec!["validate_string", "k8s_object_name"],
        ] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            assert!(main(root, &args).is_err(), "{args:?}");
        }
    }
}
