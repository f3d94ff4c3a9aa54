//! The commands on the Postgres store, against the server `$LEASE_TEST_POSTGRES_URL` names
//! (`cargo xtask pg up`, then `eval "$(cargo xtask pg env)"`). Ignored by a plain `cargo test`;
//! `cargo xtask ci` starts the server and runs them.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

fn url() -> String {
    std::env::var("LEASE_TEST_POSTGRES_URL").expect(
        "LEASE_TEST_POSTGRES_URL is not set: run `cargo xtask pg up` and \
         `eval \"$(cargo xtask pg env)\"`",
    )
}

/// Runs `lease ARGS` in `dir` with `envs` set.
fn lease_env(dir: &std::path::Path, envs: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = lease(dir);
    cmd.envs(envs.iter().copied());
    cmd.args(args);
    run(cmd)
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[test]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
fn claim_show_revoke_and_run_on_postgres() {
    let store = url();
    let dir = tempdir();
    let d = dir.path();
    let name = unique("cli");
    let (code, out, err) = lease_args(
        d,
        &[
            "--store", &store, "claim", "-l", &name, "--holder", "h1", "--ttl", "30s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 1"), "{out}");
    let (code, _, err) = lease_args(
        d,
        &["--store", &store, "claim", "-l", &name, "--holder", "h2"],
    );
    assert_eq!(code, 1);
    assert_one_error_line(&err, "held by h1");
    let (code, out, _) = lease_args(d, &["--store", &store, "show", "-l", &name, "--json"]);
    assert_eq!(code, 0);
    let row = json(&out);
    assert_eq!(row["holder"], "h1");
    assert_eq!(row["generation"], 1);
    let (code, _, err) = lease_args(
        d,
        &["--store", &store, "revoke", "-l", &name, "--holder", "h1"],
    );
    assert_eq!(code, 0, "{err}");

    // `run` after the revoke: the next fencing generation, released at the end.
    let (code, out, err) = lease_args(
        d,
        &[
            "--store", &store, "run", "-l", &name, "--ttl", "10s", "--", "sh", "-c", "echo ran",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ran"), "{out}");
    let (code, out, _) = lease_args(d, &["--store", &store, "show", "-l", &name, "--json"]);
    assert_eq!(code, 0);
    let holder = json(&out)["holder"].as_str().unwrap_or("").to_owned();
    assert!(holder.is_empty(), "released after run: {out}");
}

#[test]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
fn lease_store_env_and_bad_credentials_without_the_password() {
    let good = url();
    let dir = tempdir();
    let d = dir.path();
    let name = unique("env");
    // LEASE_STORE selects the store like --store.
    let (code, out, err) = lease_env(
        d,
        &[("LEASE_STORE", good.as_str())],
        &["claim", "-l", &name, "--holder", "h1", "--ttl", "30s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 1"), "{out}");

    let secret = "N0t-the-pa55word";
    let (scheme, rest) = good.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let wrong = format!("{scheme}://{user}:{secret}@{host}");
    let (code, out, err) = lease_args(d, &["--store", &wrong, "show", "-l", &name]);
    assert_ne!(code, 0);
    assert!(!err.contains(secret) && !out.contains(secret), "{err}{out}");
    assert_one_error_line(&err, "refused the credentials");

    // --help with LEASE_STORE set does not print its value either.
    let (_, out, err) = lease_env(d, &[("LEASE_STORE", wrong.as_str())], &["--help"]);
    assert!(!err.contains(secret) && !out.contains(secret), "{err}{out}");
}
