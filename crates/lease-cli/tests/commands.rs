//! The one-shot commands, driven as processes: claim, extend, revoke, pin, unpin, wait, show,
//! list (table, JSON, watch) and store selection.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn claim_extend_revoke_show_and_fencing() {
    let dir = tempdir();
    let d = dir.path();

    let (code, out, err) = lease_args(
        d,
        &[
            "claim", "--lease", "backup", "--holder", "h1", "--ttl", "30s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("claimed default/default#backup: holder h1, generation 1"),
        "{out}"
    );

    // Someone else is refused, with who holds it.
    let (code, out, err) = lease_args(d, &["claim", "-l", "backup", "--holder", "h2"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_one_error_line(&err, "held by h1");

    let (code, out, _) = lease_args(d, &["show", "-l", "backup", "--json"]);
    assert_eq!(code, 0);
    let row = json(&out);
    assert_eq!(row["holder"], "h1");
    assert_eq!(row["held"], true);
    assert_eq!(row["generation"], 1);
    let left = row["expires_in_ms"].as_u64().unwrap();
    assert!(left > 20_000 && left <= 30_000, "{row}");

    // Only the holder extends; extending only lengthens.
    let (code, _, err) = lease_args(d, &["extend", "-l", "backup", "--holder", "h2"]);
    assert_eq!(code, 1);
    assert_one_error_line(&err, "not held by h2");
    let (code, out, err) = lease_args(
        d,
        &[
            "extend", "-l", "backup", "--holder", "h1", "--ttl", "2m", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let row = json(&out);
    assert!(row["expires_in_ms"].as_u64().unwrap() > 100_000, "{row}");
    assert_eq!(row["generation"], 1, "an extend keeps the generation");
    assert!(row["expires_in"].as_str().unwrap().ends_with('m'), "{row}");

    // Only the holder revokes.
    let (code, _, err) = lease_args(d, &["revoke", "-l", "backup", "--holder", "h2"]);
    assert_eq!(code, 1);
    assert_one_error_line(&err, "not held by h2");
    let (code, out, _) = lease_args(d, &["revoke", "-l", "backup", "--holder", "h1"]);
    assert_eq!(code, 0);
    assert!(out.contains("revoked"));
    let (code, out, _) = lease_args(d, &["show", "-l", "backup", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["held"], false);
    let (_, out, _) = lease_args(d, &["show", "-l", "backup"]);
    assert!(out.contains("not held"), "{out}");

    // The next claim gets a greater fencing generation.
    let (code, out, _) = lease_args(d, &["claim", "-l", "backup", "--holder", "h2", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["generation"], 2);
    // Revoking a lease nobody holds is refused.
    let (code, _, err) = lease_args(d, &["revoke", "-l", "other", "--holder", "h2"]);
    assert_eq!(code, 1);
    assert_one_error_line(&err, "not held");
}

/// `lease claim` and `lease extend` exit at once by design: the lease is the script's until its
/// expiry (or a revoke). On SQLite the store frees a dead holder session's leases at once, so
/// had the short-lived `lease` process recorded its own session, its exit would free the lease
/// long before its ttl: a second claimer, death-aware or not, must be refused until the expiry
/// and get it only then.
#[test]
fn a_claim_outlives_the_command_that_made_it_until_its_expiry() {
    let dir = tempdir();
    let d = dir.path();
    // Generous ttls: the refusals below only need to come before the expiry on a loaded host.
    let (code, out, err) = lease_args(
        d,
        &[
            "claim", "-l", "job", "--holder", "h1", "--ttl", "8s", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let claimed = json(&out);
    assert_eq!(claimed["generation"], 1);
    // `lease claim` has exited (lease_args waited for it). Refused: another one-shot claimer,
    // and `lease run`, which writes with a holder session of its own and frees dead ones.
    let (code, _, err) = lease_args(d, &["claim", "-l", "job", "--holder", "h2"]);
    assert_eq!(code, 1, "{err}");
    assert_one_error_line(&err, "held by h1");
    let marker = d.join("ran");
    let touch = format!("touch {}", path_str(&marker));
    let (code, _, err) = lease_args(
        d,
        &[
            "run", "-l", "job", "--holder", "h2", "--", "sh", "-c", &touch,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert_one_error_line(&err, "held by h1");
    assert!(
        !marker.exists(),
        "lease run ran its command without the lease"
    );

    // An extend by a one-shot command lasts until its own expiry in the same way.
    let (code, out, err) = lease_args(
        d,
        &[
            "extend", "-l", "job", "--holder", "h1", "--ttl", "10s", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let extended = json(&out);
    let expiry = extended["expiry_ns"].as_u64().unwrap();
    assert!(
        expiry > claimed["expiry_ns"].as_u64().unwrap(),
        "{extended}"
    );
    let (code, _, err) = lease_args(d, &["claim", "-l", "job", "--holder", "h2"]);
    assert_eq!(code, 1, "{err}");
    assert_one_error_line(&err, "held by h1");

    // The second claimer gets it, but not before the expiry: its claim's start on the store's
    // clock (its expiry minus its ttl) is at or after the first holder's expiry.
    let mut taken = None;
    assert!(
        eventually(PATIENCE, || {
            let (code, out, _) = lease_args(
                d,
                &[
                    "claim", "-l", "job", "--holder", "h2", "--ttl", "60s", "--json",
                ],
            );
            if code == 0 {
                taken = Some(json(&out));
            }
            code == 0
        }),
        "the lease was never free again"
    );
    let taken = taken.unwrap();
    assert_eq!(taken["generation"], 2, "{taken}");
    let start = taken["expiry_ns"]
        .as_u64()
        .unwrap()
        .saturating_sub(60_000_000_000);
    assert!(
        start >= expiry,
        "claimed {} ms before the first holder's expiry",
        (expiry - start) / 1_000_000
    );
}

#[test]
fn claim_by_the_holder_extends_and_keeps_metadata() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, err) = lease_args(
        d,
        &[
            "claim",
            "-l",
            "job",
            "--holder",
            "me",
            "--ttl",
            "5s",
            "--metadata",
            r#"{"pid":42}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = lease_args(d, &["claim", "-l", "job", "--holder", "me", "--ttl", "1m"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("extended"), "{out}");
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    let row = json(&out);
    assert_eq!(row["generation"], 1);
    assert_eq!(row["metadata"]["pid"], 42);
    assert!(row["expires_in_ms"].as_u64().unwrap() > 30_000);
}

#[test]
fn pins_list_and_json_round_trip() {
    let dir = tempdir();
    let d = dir.path();
    for (ns, model, lease, holder) in [
        ("app", "prod", "db", "host-a:1"),
        ("app", "staging", "db", "host-b:2"),
        ("jobs", "prod", "nightly-backup", "cron"),
    ] {
        let (code, _, err) = lease_args(
            d,
            &[
                "claim", "-n", ns, "-m", model, "-l", lease, "--holder", holder, "--ttl", "90s",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = lease_args(
        d,
        &[
            "pin", "-n", "app", "-m", "prod", "-l", "db", "--entity", "upgrade",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("pinned app/prod#db for upgrade"));
    // A pin on a lease nobody holds applies to its next claimant, and is listed.
    let (code, _, _) = lease_args(d, &["pin", "-l", "future", "--entity", "ops"]);
    assert_eq!(code, 0);

    let (code, out, _) = lease_args(d, &["list", "--json"]);
    assert_eq!(code, 0);
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{out}");
    let db = rows
        .iter()
        .find(|r| r["namespace"] == "app" && r["model"] == "prod")
        .unwrap();
    assert_eq!(db["holder"], "host-a:1");
    assert_eq!(db["pins"], serde_json::json!(["upgrade"]));
    assert_eq!(db["pinned"], true);
    let future = rows.iter().find(|r| r["lease"] == "future").unwrap();
    assert_eq!(future["held"], false);
    assert_eq!(future["pins"], serde_json::json!(["ops"]));

    // The table: a header and one aligned row per lease.
    let (code, out, _) = lease_args(d, &["list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("NAMESPACE"));
    for header in [
        "MODEL",
        "LEASE",
        "HOLDER",
        "EXPIRES IN",
        "GENERATION",
        "PINS",
    ] {
        assert!(lines[0].contains(header), "{header}");
    }
    let holder_col = lines[0].find("HOLDER").unwrap();
    let row = lines.iter().find(|l| l.contains("nightly-backup")).unwrap();
    assert_eq!(&row[holder_col..holder_col + 4], "cron", "{out}");
    let expires_col = lines[0].find("EXPIRES IN").unwrap();
    let expires = row[expires_col..].split_whitespace().next().unwrap();
    assert!(
        expires.ends_with('s') || expires.ends_with('m'),
        "{expires}"
    );

    // Filters.
    let (_, out, _) = lease_args(d, &["list", "--json", "-n", "app", "-m", "staging"]);
    let rows = json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["holder"], "host-b:2");

    // Unpin.
    let (code, _, _) = lease_args(
        d,
        &[
            "unpin", "-n", "app", "-m", "prod", "-l", "db", "--entity", "upgrade",
        ],
    );
    assert_eq!(code, 0);
    let (_, out, _) = lease_args(
        d,
        &["show", "-n", "app", "-m", "prod", "-l", "db", "--json"],
    );
    let row = json(&out);
    assert_eq!(row["pins"], serde_json::json!([]));
    assert_eq!(row["pinned"], false);
}

#[test]
fn wait_returns_when_the_lease_is_released_or_times_out() {
    let dir = tempdir();
    let d = dir.path();
    // A free lease: at once.
    let (code, out, _) = lease_args(d, &["wait", "-l", "w"]);
    assert_eq!(code, 0);
    assert!(out.contains("is free"));

    let (code, _, _) = lease_args(d, &["claim", "-l", "w", "--holder", "h1", "--ttl", "60s"]);
    assert_eq!(code, 0);
    let (code, _, err) = lease_args(d, &["wait", "-l", "w", "--timeout", "300ms"]);
    assert_eq!(code, 1);
    assert_one_error_line(&err, "still held");

    let mut cmd = lease(d);
    cmd.args(["wait", "-l", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut waiter = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait returned while the lease was held"
    );
    let (code, _, _) = lease_args(d, &["revoke", "-l", "w", "--holder", "h1"]);
    assert_eq!(code, 0);
    let (code, out, err) = decode(&wait_output(waiter, PATIENCE));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default/default#w is free"));
}

#[test]
fn wait_returns_at_expiry() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, _) = lease_args(d, &["claim", "-l", "e", "--holder", "h1", "--ttl", "1s"]);
    assert_eq!(code, 0);
    let (code, _, err) = lease_args(d, &["wait", "-l", "e", "--timeout", "20s"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = lease_args(d, &["show", "-l", "e", "--json"]);
    assert_eq!(json(&out)["held"], false);
}

#[test]
fn store_flag_and_lease_db_select_the_database() {
    let dir = tempdir();
    let d = dir.path();
    let other = d.join("other.db");
    let store = format!("sqlite:{}", path_str(&other));
    let (code, _, err) = lease_args(d, &["--store", &store, "claim", "-l", "x", "--holder", "h"]);
    assert_eq!(code, 0, "{err}");
    assert!(other.exists());
    // $LEASE_DB points elsewhere: empty there.
    let (_, out, _) = lease_args(d, &["list", "--json"]);
    assert_eq!(json(&out), serde_json::json!([]));
    let (_, out, _) = lease_args(d, &["list", "--json", "--store", &store]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
}

/// A `lease` command with no `--store` and no `$LEASE_DB`, `$HOME` as given, no
/// `$XDG_STATE_HOME` unless set later, run in `cwd`.
fn lease_default(cwd: &Path, home: &Path) -> std::process::Command {
    let mut cmd = lease(cwd);
    cmd.env_remove("LEASE_DB")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", home);
    cmd
}

#[test]
fn the_default_database_is_one_per_user_whatever_the_working_directory() {
    let dir = tempdir();
    let home = dir.path().join("home");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&home, &a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    // Started from two directories, the same lease excludes: one database.
    let mut cmd = lease_default(&a, &home);
    cmd.args(["claim", "-l", "backup", "--holder", "h1", "--ttl", "1m"]);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    let mut cmd = lease_default(&b, &home);
    cmd.args(["claim", "-l", "backup", "--holder", "h2"]);
    let (code, _, err) = run(cmd);
    assert_eq!(
        code, 1,
        "the second directory's claim must be refused: {err}"
    );
    assert!(err.contains("held by h1"), "{err}");
    // Nothing in either working directory; the file is in the state path, private.
    for d in [&a, &b] {
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "{}", d.display());
    }
    let state = home.join(".local/state/lease");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&home.join(".local")), 0o700);
    assert_eq!(mode(&state.join("leases.db")), 0o600);

    // $XDG_STATE_HOME takes precedence over $HOME.
    let xdg = dir.path().join("xdg");
    let mut cmd = lease_default(&a, &home);
    cmd.env("XDG_STATE_HOME", &xdg)
        .args(["claim", "-l", "backup", "--holder", "h3"]);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(xdg.join("lease/leases.db").exists());

    // `lease list` on an empty default database says where it looked; --help says it too.
    let other_home = dir.path().join("other-home");
    std::fs::create_dir(&other_home).unwrap();
    let mut cmd = lease_default(&a, &other_home);
    cmd.arg("list");
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    let expected = other_home.join(".local/state/lease/leases.db");
    assert!(out.contains("no leases in"), "{out}");
    assert!(out.contains(&path_str(&expected)), "{out}");
    let mut cmd = lease_default(&a, &other_home);
    cmd.arg("--help");
    let (code, out, _) = run(cmd);
    assert_eq!(code, 0);
    assert!(out.contains(&path_str(&expected)), "{out}");
}

#[test]
fn an_unusable_default_database_is_an_error_naming_the_variable() {
    let dir = tempdir();
    let d = dir.path();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "$HOME"),
        (&[("HOME", "relative/home")], "$HOME"),
        (
            &[("HOME", "/h"), ("XDG_STATE_HOME", "state")],
            "$XDG_STATE_HOME",
        ),
        (&[("HOME", "/h"), ("LEASE_DB", "leases.db")], "$LEASE_DB"),
    ];
    for (vars, needle) in cases {
        let mut cmd = lease(d);
        cmd.env_remove("LEASE_DB")
            .env_remove("XDG_STATE_HOME")
            .env_remove("HOME");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(["claim", "-l", "x", "--holder", "h"]);
        let (code, _, err) = run(cmd);
        assert_eq!(code, 2, "{vars:?}: {err}");
        assert_one_error_line(&err, needle);
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "{vars:?}");
    }
}

#[test]
fn list_watch_redraws() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, _) = lease_args(
        d,
        &["claim", "-l", "watched", "--holder", "h", "--ttl", "1m"],
    );
    assert_eq!(code, 0);
    let mut cmd = lease(d);
    cmd.args(["list", "--watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut frames = 0;
    let end = std::time::Instant::now() + PATIENCE;
    while frames < 3 && std::time::Instant::now() < end {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && line.contains("watched")
        {
            frames += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(frames, 3, "list --watch did not redraw");
}

/// A closed database at `path` with `n` leases held by `h` for an hour on this host's clock
/// (so the `lease` binary sees them live), spread over many pages.
fn many_leases(path: &Path, n: usize) {
    use lease_core::{Key, Op, Request, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut store = lease_store_sqlite::SqliteStore::open(path).unwrap();
        let ops: Vec<Op> = (0..n)
            .map(|i| Op::Claim {
                key: Key::new("default", "default", format!("l{i}")),
                request: Request::new("h", Duration::from_secs(3600))
                    .with_metadata(serde_json::json!({"pad": "x".repeat(64)})),
            })
            .collect();
        for chunk in ops.chunks(1000) {
            for result in store.apply(chunk.to_vec()).await {
                result.unwrap();
            }
        }
    });
}

#[test]
fn check_reports_damage_and_every_command_meeting_it_exits_4() {
    let dir = tempdir();
    let d = dir.path();
    let db = d.join("leases.db");
    many_leases(&db, 4000);
    // A sound file: 0, and nothing written.
    let before = std::fs::read(&db).unwrap();
    let (code, out, err) = lease_args(d, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok") && out.contains("4000 lease rows"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "check wrote to a sound file"
    );

    // Damage the second half of the pages (lease, index and generation pages; the header,
    // schema and boot pages come first and stay intact, so opening sees nothing).
    let mut bytes = before;
    let pages = bytes.len() / 4096;
    assert!(pages > 40, "{pages} pages");
    for (i, b) in bytes[pages / 2 * 4096..].iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    std::fs::write(&db, &bytes).unwrap();

    let (code, _, err) = lease_args(d, &["check"]);
    assert_eq!(code, 4, "{err}");
    assert_one_error_line(&err, "damaged database");
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["show", "-l", "l3999"],
        &["claim", "-l", "l3999", "--holder", "other"],
    ] {
        let (code, out, err) = lease_args(d, args);
        assert_eq!(code, 4, "{args:?}: out {out:?} err {err:?}");
        assert_one_error_line(&err, "damaged database");
        assert!(!out.contains("claimed"), "{args:?}: {out}");
    }
    // Claims either meet the damage (4) or see h's lease (1): never granted, never a panic.
    for i in (0..4000).step_by(333) {
        let lease = format!("l{i}");
        let (code, out, err) = lease_args(d, &["claim", "-l", &lease, "--holder", "other"]);
        assert!(code == 4 || code == 1, "{lease}: {code} {out:?} {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "a command wrote to the damaged file"
    );
}

#[test]
fn check_never_creates_a_database_and_refuses_the_kubernetes_store() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, err) = lease_args(d, &["check"]);
    assert_eq!(code, 4, "{err}");
    assert_one_error_line(&err, "leases.db");
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
    let (code, _, err) = lease_args(d, &["--store", "k8s", "check"]);
    assert_eq!(code, 2, "{err}");
    assert_one_error_line(&err, "not an SQLite database");
}
