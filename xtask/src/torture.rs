//! `cargo xtask torture`: builds and runs `lease-torture` (crates/lease-torture), which tries hard
//! to make two holders hold one lease at once and checks from the participants' logs that it
//! never happened; writes the figures to `RELIABILITY.md`.
//!
//! ```text
//! cargo xtask torture [--short] [--sqlite-only|--k8s-only|--pg-only] [--seconds N] [--workers N] [--leases M]
//! ```
//!
//! * SQLite: N worker processes × M leases on one file, kill -9 and restart of random workers.
//! * A mutation run: the same with workers that believe their windows last 3× what they claimed;
//!   it passes only if the checker reports violations (the checker provably can fail).
//! * Elector: `LeaderElector` candidates in one process on a multi-thread runtime over one SQLite
//!   file (two slots per elector calling `lock()` concurrently, and again at once from the
//!   lost-token handler; stores stalled at random). Runs with the SQLite scenario.
//! * `lease run`: several `lease run --wait` loops on one SQLite lease, with commands that ignore
//!   SIGTERM and fork (a child, a double-forked daemon), the database's write lock held by another
//!   process past the ttl at random, and supervisors SIGKILLed at random; no two commands' process
//!   trees may ever be alive at once, and none may be left at the end.
//! * Kubernetes: leader candidates on a *dedicated* local API server (ports 17543/17579, so that
//!   stopping its etcd and kube-apiserver never disturbs a server someone else uses), with both
//!   stopped and restarted mid-run, the leader SIGKILLed, and bursts of 5 candidates started at
//!   once on a fresh and on a stale lease. The server is stopped at the end.
//! * Postgres: the same leader candidates over `lease-store-postgres` on a *dedicated* local
//!   PostgreSQL server (`cargo xtask pg` with its own directory and port 17532, so restarting it
//!   never disturbs the tests' server), which is crashed (`pg_ctl stop -m immediate`) and
//!   stopped cleanly mid-run and started again; the leader SIGKILLed, then random candidates;
//!   bursts. The server is removed at the end.
//!
//! A full run (release build) replaces its sections of `RELIABILITY.md` at the workspace root
//! (between `<!-- torture:NAME:begin -->` markers; the rest of the file is kept). `--short` (the
//! CI run: debug build, a few seconds each) writes `target/torture/RELIABILITY-short.md`
//! instead, so CI never overwrites the full run's figures. Any violation fails the task.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cargo;

pub(crate) const USAGE: &str = "\
usage: cargo xtask torture [--short] [--sqlite-only|--k8s-only|--pg-only] [--seconds N] [--workers N] [--leases M]

  --short        CI size (debug build; SQLite 4 workers × 3 leases for 8 s; the elector for 15 s;
                 `lease run` 3 loops for 10 s; one etcd restart and one burst round; one
                 Postgres crash, 2 random kills and one burst round); writes
                 target/torture/RELIABILITY-short.md
  --sqlite-only  only the SQLite scenarios (workers, the mutation runs, the elector, `lease run`)
  --k8s-only     only the Kubernetes scenario
  --pg-only      only the Postgres scenario
  --seconds N    length of the SQLite and `lease run` runs (default 60; 8 and 10 with --short)
  --workers N    SQLite worker processes (default 8; 4 with --short)
  --leases M     SQLite leases (default 3)
";

/// The dedicated local API server's ports (not the tests' 17443/17379).
const K8S_PORT: &str = "17543";
const ETCD_PORT: &str = "17579";
/// The dedicated local Postgres server's port (not the tests' 17432).
const PG_PORT: &str = "17532";

struct Options {
    short: bool,
    sqlite: bool,
    k8s: bool,
    pg: bool,
    seconds: u64,
    workers: u32,
    leases: u32,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        short: args.iter().any(|a| a == "--short"),
        sqlite: true,
        k8s: true,
        pg: true,
        seconds: 0,
        workers: 0,
        leases: 3,
    };
    o.seconds = if o.short { 8 } else { 60 };
    o.workers = if o.short { 4 } else { 8 };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} needs a positive number\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--short" => {}
            "--sqlite-only" => (o.k8s, o.pg) = (false, false),
            "--k8s-only" => (o.sqlite, o.pg) = (false, false),
            "--pg-only" => (o.sqlite, o.k8s) = (false, false),
            "--seconds" => o.seconds = number("--seconds")?,
            "--workers" => o.workers = u32::try_from(number("--workers")?).unwrap_or(u32::MAX),
            "--leases" => o.leases = u32::try_from(number("--leases")?).unwrap_or(u32::MAX),
            "-h" | "--help" | "help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown torture option {other:?}\n\n{USAGE}")),
        }
    }
    if [o.sqlite, o.k8s, o.pg].iter().filter(|&&on| on).count() == 0 {
        return Err(format!(
            "--sqlite-only, --k8s-only and --pg-only exclude each other\n\n{USAGE}"
        ));
    }
    Ok(o)
}

/// Runs `cargo xtask torture <args>`.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let profile = if o.short { "debug" } else { "release" };
    let mut build = vec![
        "build",
        "-p",
        "lease-torture",
        "-p",
        "lease-cli",
        "--locked",
    ];
    if !o.short {
        build.push("--release");
    }
    cargo(&build, &[])?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join(profile).join("lease-torture");
    let work = target.join("torture");
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let mut sections: Vec<(&str, String)> = Vec::new();
    let mut failures = Vec::new();

    if o.sqlite {
        let report = work.join("sqlite.md");
        let (seconds, workers, leases) = (
            o.seconds.to_string(),
            o.workers.to_string(),
            o.leases.to_string(),
        );
        let ok = run_torture(
            &exe,
            &[
                "sqlite",
                "--dir",
                &path_str(&work.join("sqlite")),
                "--workers",
                &workers,
                "--leases",
                &leases,
                "--seconds",
                &seconds,
                "--report",
                &path_str(&report),
            ],
            &[],
        )?;
        if !ok {
            failures.push("the SQLite torture found violations or crashes");
        }
        sections.push(("sqlite", read(&report)));

        let report = work.join("mutation.md");
        let ok = run_torture(
            &exe,
            &[
                "sqlite",
                "--dir",
                &path_str(&work.join("mutation")),
                "--workers",
                "3",
                "--leases",
                "2",
                "--seconds",
                if o.short { "3" } else { "5" },
                "--stretch",
                "3",
                "--expect-violations",
                "--title",
                "Mutation check: the checker catches unsafe workers",
                "--report",
                &path_str(&report),
            ],
            &[],
        )?;
        if !ok {
            failures
                .push("the mutation run: the checker did NOT catch deliberately unsafe workers");
        }
        let mut text = read(&report);
        text.push_str(
            "\nThe same workers and checker, except that each worker believes its window lasts \
             3× the duration it claimed. The run passes only if the checker reports violations, \
             so the zero above is not the checker's blindness. \
             (`crates/lease-torture/tests/mutation.rs` runs both in `cargo test`.)\n",
        );
        sections.push(("mutation", text));

        let ok = lease_run_torture(&exe, &target.join(profile).join("lease"), &work, &o)?;
        if !ok {
            failures.push("the `lease run` torture found overlapping commands or leftovers");
        }
        sections.push(("lease-run", read(&work.join("lease-run.md"))));

        let ok = lease_run_mutation(&exe, &target.join(profile).join("lease"), &work)?;
        if !ok {
            failures.push(
                "the `lease run` mutation run: the checker did NOT catch commands that outlive \
                 their lease",
            );
        }
        let mut text = read(&work.join("lease-run-mutation.md"));
        text.push_str(
            "\nThe same scenario, except that every sign of life of every process also claims \
             that the process lives 3 s longer than it does. The run passes only if the checker \
             reports overlaps, so the zero above is not the checker's blindness.\n",
        );
        sections.push(("lease-run-mutation", text));
    }

    if o.sqlite {
        let (ok, text) = elector_torture(&exe, &work, o.short)?;
        if !ok {
            failures.push("the elector torture found violations or problems");
        }
        sections.push(("elector", text));
    }

    if o.k8s {
        let report = work.join("k8s.md");
        let ok = k8s_torture(&exe, &work, &report, o.short)?;
        if !ok {
            failures.push("the Kubernetes torture found violations or problems");
        }
        sections.push(("k8s", read(&report)));
    }

    if o.pg {
        let report = work.join("postgres.md");
        let ok = pg_torture(&exe, &work, &report, o.short)?;
        if !ok {
            failures.push("the Postgres torture found violations or problems");
        }
        sections.push(("postgres", read(&report)));
    }

    let destination = if o.short {
        work.join("RELIABILITY-short.md")
    } else {
        root.join("RELIABILITY.md")
    };
    let everything = o.sqlite && o.k8s && o.pg;
    write_sections(&destination, &sections, args, profile, everything)?;
    println!("xtask torture: wrote {}", destination.display());
    if failures.is_empty() {
        println!("xtask torture: passed (0 violations)");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(no report: cannot read {}: {e})\n", path.display()))
}

/// Runs `lease-torture args`; Ok(passed), Err when it could not run at all.
fn run_torture(exe: &Path, args: &[&str], envs: &[(&str, String)]) -> Result<bool, String> {
    println!("xtask: $ {} {}", exe.display(), args.join(" "));
    let status = Command::new(exe)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(format!(
            "`{} {}` could not run: {status}",
            exe.display(),
            args.join(" ")
        )),
    }
}

/// The elector scenario (one process; 15 s with `--short`, 60 s otherwise): Ok((passed, its
/// report section)).
fn elector_torture(exe: &Path, work: &Path, short: bool) -> Result<(bool, String), String> {
    let report = work.join("elector.md");
    let ok = run_torture(
        exe,
        &[
            "elector",
            "--dir",
            &path_str(&work.join("elector")),
            "--seconds",
            if short { "15" } else { "60" },
            "--report",
            &path_str(&report),
        ],
        &[],
    )?;
    Ok((ok, read(&report)))
}

/// The `lease run` scenario: commands of `lease run --wait` loops must never be alive at once.
fn lease_run_torture(exe: &Path, lease: &Path, work: &Path, o: &Options) -> Result<bool, String> {
    let seconds = if o.short {
        "10".to_owned()
    } else {
        o.seconds.to_string()
    };
    run_torture(
        exe,
        &[
            "lease-run",
            "--lease-exe",
            &path_str(lease),
            "--dir",
            &path_str(&work.join("lease-run")),
            "--holders",
            if o.short { "3" } else { "4" },
            "--seconds",
            &seconds,
            "--report",
            &path_str(&work.join("lease-run.md")),
        ],
        &[],
    )
}

/// The `lease run` scenario with commands whose signs of life claim 3 s more: it passes only if
/// the checker reports overlaps.
fn lease_run_mutation(exe: &Path, lease: &Path, work: &Path) -> Result<bool, String> {
    run_torture(
        exe,
        &[
            "lease-run",
            "--lease-exe",
            &path_str(lease),
            "--dir",
            &path_str(&work.join("lease-run-mutation")),
            "--holders",
            "2",
            "--seconds",
            "4",
            "--skew-ms",
            "3000",
            "--expect-violations",
            "--title",
            "Mutation check: the `lease run` checker catches commands that outlive their lease",
            "--report",
            &path_str(&work.join("lease-run-mutation.md")),
        ],
        &[],
    )
}

/// The environment that points `cargo xtask k8s` at the dedicated server.
fn server_env() -> Vec<(&'static str, String)> {
    vec![
        ("LEASE_K8S_PORT", K8S_PORT.to_owned()),
        ("LEASE_K8S_ETCD_PORT", ETCD_PORT.to_owned()),
        ("LEASE_K8S_IGNORE_KUBECONFIG", "1".to_owned()),
    ]
}

/// Runs this xtask binary's `k8s <args>` against the dedicated server; returns its stdout,
/// shown as it goes (starting and stopping an API server is worth seeing).
fn xtask_k8s(me: &Path, args: &[&str]) -> Result<String, String> {
    xtask_task(me, "k8s", args, server_env(), true)
}

/// Runs this xtask binary's `task args` with `envs` (which point it at a dedicated server);
/// returns its stdout, shown always (`show`) or only when the task fails.
fn xtask_task(
    me: &Path,
    task: &str,
    args: &[&str],
    envs: Vec<(&'static str, String)>,
    show: bool,
) -> Result<String, String> {
    let output = Command::new(me)
        .arg(task)
        .args(args)
        .envs(envs)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", me.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if show || !output.status.success() {
        print!("{stdout}");
    }
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("`cargo xtask {task} {}` failed", args.join(" ")))
    }
}

/// The value of `export NAME='…'` in what `cargo xtask TASK env` printed.
fn exported(env_text: &str, name: &str, task: &str) -> Result<String, String> {
    env_text
        .lines()
        .find_map(|l| {
            l.strip_prefix("export ")?
                .strip_prefix(name)?
                .strip_prefix('=')
        })
        .map(|v| v.trim_matches('\'').to_owned())
        .ok_or_else(|| format!("`cargo xtask {task} env` printed no {name}"))
}

fn k8s_torture(exe: &Path, work: &Path, report: &Path, short: bool) -> Result<bool, String> {
    let me = env::current_exe().map_err(|e| format!("cannot find xtask's binary: {e}"))?;
    xtask_k8s(&me, &["up"])?;
    let result = (|| {
        let env_text = xtask_k8s(&me, &["env"])?;
        let kubeconfig = exported(&env_text, "KUBECONFIG", "k8s")?;
        let mut envs = server_env();
        envs.push(("KUBECONFIG", kubeconfig));
        let dir = path_str(&work.join("k8s"));
        let me = path_str(&me);
        let report = path_str(report);
        let mut args = vec![
            "k8s",
            "--dir",
            &dir,
            "--server-ctl",
            &me,
            "--report",
            &report,
        ];
        if short {
            args.extend([
                "--outage",
                "etcd",
                "--outage-seconds",
                "5",
                "--no-kill-leader",
                "--quiet-seconds",
                "2",
                "--burst-rounds",
                "1",
            ]);
        } else {
            args.extend([
                "--outage",
                "kube-apiserver:kill",
                "--outage",
                "etcd",
                "--outage",
                "kube-apiserver",
                "--outage-seconds",
                "6",
                "--burst-rounds",
                "3",
            ]);
        }
        run_torture(exe, &args, &envs)
    })();
    if let Err(e) = xtask_k8s(&me, &["down"]) {
        eprintln!("xtask torture: stopping the dedicated API server: {e}");
    }
    result
}

/// The environment that points `cargo xtask pg` at the dedicated server (the server's user
/// must reach the directory, hence `/tmp`).
fn pg_server_env() -> Vec<(&'static str, String)> {
    vec![
        ("LEASE_PG_DIR", "/tmp/lease-torture-pg".to_owned()),
        ("LEASE_PG_PORT", PG_PORT.to_owned()),
    ]
}

/// Runs this xtask binary's `pg <args>` against the dedicated server; returns its stdout,
/// shown only when it fails.
fn xtask_pg(me: &Path, args: &[&str]) -> Result<String, String> {
    xtask_task(me, "pg", args, pg_server_env(), false)
}

/// The leader-candidates scenario over `lease-store-postgres` on a dedicated server.
fn pg_torture(exe: &Path, work: &Path, report: &Path, short: bool) -> Result<bool, String> {
    let me = env::current_exe().map_err(|e| format!("cannot find xtask's binary: {e}"))?;
    // A fresh server every run: nothing left of an earlier one.
    xtask_pg(&me, &["down"])?;
    xtask_pg(&me, &["up"])?;
    let result = (|| {
        let env_text = xtask_pg(&me, &["env"])?;
        let url = exported(&env_text, "LEASE_TEST_POSTGRES_URL", "pg")?;
        let mut envs = pg_server_env();
        envs.push(("LEASE_TORTURE_POSTGRES_URL", url));
        let dir = path_str(&work.join("postgres"));
        let me = path_str(&me);
        let report = path_str(report);
        let mut args = vec![
            "k8s",
            "--backend",
            "postgres",
            "--namespace",
            "lease_torture",
            "--dir",
            &dir,
            "--server-ctl",
            &me,
            "--title",
            "Postgres: leader candidates over lease-store-postgres, server crash and restart, kill -9",
            "--report",
            &report,
        ];
        if short {
            args.extend([
                "--outage",
                "postgres:kill",
                "--outage-seconds",
                "4",
                "--random-kills",
                "2",
                "--quiet-seconds",
                "2",
                "--burst-rounds",
                "1",
            ]);
        } else {
            args.extend([
                "--candidates",
                "4",
                "--outage",
                "postgres:kill",
                "--outage",
                "postgres",
                "--outage",
                "postgres:kill",
                "--outage-seconds",
                "5",
                "--random-kills",
                "12",
                "--burst-rounds",
                "3",
            ]);
        }
        run_torture(exe, &args, &envs)
    })();
    if let Err(e) = xtask_pg(&me, &["down"]) {
        eprintln!("xtask torture: removing the dedicated Postgres server: {e}");
    }
    result
}

/// Replaces (or appends) each section between its markers in `path`, keeping the rest. A run
/// of only some scenarios (`everything` false) leaves the introduction, which dates the full
/// run, alone and dates each of its own sections instead.
fn write_sections(
    path: &Path,
    sections: &[(&str, String)],
    args: &[String],
    profile: &str,
    everything: bool,
) -> Result<(), String> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| "# Reliability\n".to_owned());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let intro = format!(
        "## Torture: mutual exclusion under kill -9, server restarts and bursts\n\n\
         Written by `cargo xtask torture{}` on {date} ({profile} build, {cores} cores).\n\n\
         Every participant logs each interval in which it may act as holder, on the host's shared \
         monotonic clock (`CLOCK_BOOTTIME`): for a successful claim or extend through the manager, \
         `[when the call returned, when it started + duration)`, cut short by a release that is \
         logged *before* the revoke; for a leader, from when `lock()` returned until it saw its \
         lost token fire (or logged that it stops, before releasing, or was SIGKILLed). The \
         checker (`lease-torture check`) proves that no two intervals of one lease overlap and \
         that fencing generations strictly increase in the order the terms began.\n",
        if args.is_empty() {
            String::new()
        } else {
            format!(" {}", args.join(" "))
        }
    );
    let mut all: Vec<(&str, String)> = Vec::new();
    if everything {
        all.push(("intro", intro));
        all.extend(sections.iter().map(|(n, t)| (*n, t.clone())));
    } else {
        let written = format!(
            "\nWritten by `cargo xtask torture {}` on {date} ({profile} build, {cores} cores).\n",
            args.join(" ")
        );
        all.extend(
            sections
                .iter()
                .map(|(n, t)| (*n, format!("{}\n{written}", t.trim_end()))),
        );
    }
    for (name, body) in all {
        let begin = format!("<!-- torture:{name}:begin -->");
        let end = format!("<!-- torture:{name}:end -->");
        let block = format!("{begin}\n{}\n{end}", body.trim_end());
        match (text.find(&begin), text.find(&end)) {
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
    }
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::exported;

    #[test]
    fn exported_finds_the_named_variable_only() {
        let text = "export KUBECONFIG=/a/admin\nexport LEASE_TEST_RESTRICTED_KUBECONFIG=/a/user\n\
                    export LEASE_TEST_POSTGRES_URL='postgres://u:p@h/db'\n";
        assert_eq!(exported(text, "KUBECONFIG", "k8s").unwrap(), "/a/admin");
        assert_eq!(
            exported(text, "LEASE_TEST_POSTGRES_URL", "pg").unwrap(),
            "postgres://u:p@h/db"
        );
        let err = exported(text, "KUBE", "k8s").unwrap_err();
        assert_eq!(err, "`cargo xtask k8s env` printed no KUBE");
    }
}
