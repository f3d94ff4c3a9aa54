//! Two managers in two OS processes on one database: a revoke in one wakes the other's waiter
//! through `NOTIFY` (not its refresh poll, which is set to a minute), and after a `kill -9` of
//! the holder the other takes over once the lease has expired, with a higher generation.
//!
//! The child is this test binary itself, re-executed with `LEASE_PG_CHILD` naming what to do;
//! [`child_entry_point`] is the test the child runs, and does nothing otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_core::{CancellationToken, DefaultSecretary, Facades as _, Request, SystemClock};
use lease_manager::{Manager, ManagerConfig};
use lease_store_postgres::PostgresStore;

use common::{SchemaGuard, fresh_schema, url};

const CHILD: &str = "LEASE_PG_CHILD";
const SCHEMA: &str = "LEASE_PG_SCHEMA";
const NAMESPACE: &str = "jobs";
const LEASE: &str = "nightly";

async fn manager(schema: &str, refresh: Duration) -> Manager {
    let store = PostgresStore::builder(url())
        .schema(schema)
        .connect()
        .await
        .unwrap();
    Manager::start(
        ManagerConfig::new(store, Arc::new(SystemClock::new()))
            .with_secretary(NAMESPACE, Arc::new(DefaultSecretary))
            .with_refresh_interval(refresh),
    )
    .unwrap()
}

/// The entry point of the child process; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_entry_point() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let schema = std::env::var(SCHEMA).unwrap();
    let manager = manager(&schema, Duration::from_millis(100)).await;
    let claimer = manager.claimer(NAMESPACE, "model").unwrap();
    let ttl = if mode == "hold-then-revoke" {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(3)
    };
    let info = claimer
        .claim(LEASE, Request::new("child", ttl))
        .await
        .unwrap();
    println!("CLAIMED {}", info.generation);
    match mode.as_str() {
        "hold-then-revoke" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let revoker = manager.revoker(NAMESPACE, "model").unwrap();
            revoker.revoke(LEASE, "child").await.unwrap();
            println!("REVOKED");
        }
        "hold-until-killed" => loop {
            // Renew well within the ttl until killed.
            tokio::time::sleep(Duration::from_millis(500)).await;
            claimer
                .claim(LEASE, Request::new("child", ttl))
                .await
                .unwrap();
        },
        other => panic!("unknown child mode {other:?}"),
    }
    manager.stop().await;
}

fn spawn_child(mode: &str, schema: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env(SCHEMA, schema)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for the child's line holding `prefix`; returns what follows it.
fn expect_line(rx: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the child never printed {prefix:?}"));
        // libtest may print its "test … " prefix on the same line.
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.trim().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn a_revoke_in_another_process_wakes_the_waiter_through_notify() {
    let schema = fresh_schema("procs");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    // Create the schema before the child races to.
    let parent = manager(&schema, Duration::from_secs(60)).await;
    let claimer = parent.claimer(NAMESPACE, "model").unwrap();
    let (mut child, lines) = spawn_child("hold-then-revoke", &schema);
    let child_generation: u64 = expect_line(&lines, "CLAIMED").parse().unwrap();

    let denied = claimer
        .claim(LEASE, Request::new("parent", Duration::from_secs(30)))
        .await;
    assert!(denied.unwrap_err().is_claim_denied());
    let started = Instant::now();
    claimer
        .wait_until_expired(LEASE, &CancellationToken::new())
        .await
        .unwrap();
    let waited = started.elapsed();
    // The child holds for 30 s unless it revokes; the parent polls once a minute: only the
    // NOTIFY of the revoke can have woken it this early.
    assert!(waited < Duration::from_secs(20), "woke after {waited:?}");
    let info = claimer
        .claim(LEASE, Request::new("parent", Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(info.generation.get() > child_generation);
    expect_line(&lines, "REVOKED");
    assert!(child.wait().unwrap().success());
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn a_killed_holder_is_taken_over_after_its_lease_expires() {
    let schema = fresh_schema("kill9");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let parent = manager(&schema, Duration::from_millis(100)).await;
    let claimer = parent.claimer(NAMESPACE, "model").unwrap();
    let (mut child, lines) = spawn_child("hold-until-killed", &schema);
    let child_generation: u64 = expect_line(&lines, "CLAIMED").parse().unwrap();
    let denied = claimer
        .claim(LEASE, Request::new("parent", Duration::from_secs(3)))
        .await;
    assert!(denied.unwrap_err().is_claim_denied());

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    claimer
        .wait_until_expired(LEASE, &CancellationToken::new())
        .await
        .unwrap();
    let info = claimer
        .claim(LEASE, Request::new("parent", Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(info.generation.get() > child_generation);
    // Taken over within the ttl (3 s) plus generous slack for a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "{:?}",
        killed.elapsed()
    );
    parent.stop().await;
}
