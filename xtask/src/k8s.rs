//! `cargo xtask k8s`: a real Kubernetes API server on 127.0.0.1 for the tests, built from Debian's
//! packages only (the network reaches package registries and nothing else).
//!
//! * `install`: installs the host tools that are missing (`curl`, `openssl`, `kill`, ...) with
//!   apt, then builds kube-apiserver v1.20.2 from Debian's `kubernetes` source package with
//!   Debian's Go 1.19 and unpacks Debian's etcd 3.4. Both binaries are cached in
//!   `~/.cache/lease-xtask/k8s/v1.20.2-r<n>/` (about 4 minutes cold on 2 idle cores; instant warm).
//! * `up`: `install`, then certificates and tokens (kept across restarts), etcd and kube-apiserver
//!   started detached in the background, a wait for `/readyz`, two kubeconfigs (an administrator
//!   and `lease-user`, a user with no rights until a Role grants them), and a check that Lease
//!   objects and `/metrics` answer. A few seconds warm. Idempotent: a server that is already up is
//!   left alone.
//! * `down`: stops both processes (SIGTERM, SIGKILL after 10 s) and removes etcd's data.
//! * `env`: prints the `export` lines the tests read: `KUBECONFIG` (the administrator),
//!   `LEASE_TEST_RESTRICTED_KUBECONFIG` and `LEASE_TEST_RESTRICTED_USER`.
//! * `status`: says whether the server is up.
//!
//! Everything of a running server (certificates, tokens, kubeconfigs, pids, logs, etcd's data)
//! lives in `~/.cache/lease-xtask/k8s/run-<port>/`; `install`, `up` and `down` take a lock file
//! so that concurrent calls wait for each other.
//!
//! The rule for an existing cluster: when `KUBECONFIG` is already set to a file that is not ours
//! and the first `server:` in it answers, `up` starts nothing and says that the tests will use that
//! cluster (`LEASE_K8S_IGNORE_KUBECONFIG=1` starts the local server anyway). Tests read
//! `KUBECONFIG`; RBAC tests also need `LEASE_TEST_RESTRICTED_KUBECONFIG` and skip without it.
//!
//! The server has no controller manager and no scheduler: Leases, ConfigMaps, RBAC and the rest
//! of the API work; namespaces that are deleted stay `Terminating`, and nothing garbage-collects.
//!
//! This file is the command line and the tasks (`up`, `down`, `status`, ...); the steps they take
//! live beside it: `config` (paths and ports), `install` (host tools and the build),
//! `credentials` (certificates, tokens, kubeconfigs), `processes` (start, find, stop) and
//! `verify` (requests over HTTPS and the check that the server serves what the tests need).

mod config;
mod credentials;
mod install;
mod processes;
mod verify;

use std::env;
use std::fs;
use std::process::Command;
use std::time::Instant;

use crate::host::{mkdir, remove_dir_all, run, shell_quote};
use config::Config;
use credentials::{make_credentials, write_kubeconfigs};
use install::install;
use processes::{is_ready, running_pid, start_apiserver, start_etcd, stop, stop_all};
use verify::{curl_code, verify};

/// The Kubernetes version Debian bookworm's `kubernetes` source package builds.
const K8S_VERSION: &str = "1.20.2";
/// Bumped whenever the build changes, so that a binary cached by an older build is not used.
const BUILD_REVISION: u32 = 2;
/// The restricted user's name: it has no rights until a Role grants them (for RBAC tests).
pub(crate) const RESTRICTED_USER: &str = "lease-user";
/// The administrator's name (group `system:masters`).
const ADMIN_USER: &str = "admin";

pub(crate) const USAGE: &str = "\
usage: cargo xtask k8s <install|up|down|env|status>

  install  apt-install missing host tools, build and cache kube-apiserver and etcd
  up       install, then start etcd + kube-apiserver on 127.0.0.1 (idempotent)
  down     stop both, remove etcd's data (idempotent)
  env      print `export KUBECONFIG=...` and the restricted user's variables
  status   say whether the server is up
  stop-one  <etcd|kube-apiserver> [--kill]  stop one process of the running server (torture
            tests); --kill: SIGKILL at once, as a crash
  start-one <etcd|kube-apiserver>  start it again; etcd keeps its data

environment:
  LEASE_K8S_PORT              kube-apiserver port (default 17443)
  LEASE_K8S_ETCD_PORT         etcd client port (default 17379; the next port is etcd's peer port)
  LEASE_K8S_CACHE_DIR         cache (default $XDG_CACHE_HOME/lease-xtask/k8s or ~/.cache/lease-xtask/k8s)
  LEASE_K8S_READY_TIMEOUT     seconds to wait for /readyz (default 90)
  LEASE_K8S_IGNORE_KUBECONFIG =1: start the local server even if $KUBECONFIG reaches a cluster
";

/// Runs `cargo xtask k8s <args>`.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("install") => {
            let config = Config::from_env()?;
            let _lock = lock(&config)?;
            install(&config)
        }
        Some("up") => {
            let cluster = up()?;
            println!("xtask k8s: for the tests (or `eval \"$(cargo xtask k8s env)\"`):");
            for (name, value) in &cluster.env {
                println!("  export {name}={}", shell_quote(value));
            }
            if cluster.started_here {
                println!("xtask k8s: `cargo xtask k8s down` stops it");
            }
            Ok(())
        }
        Some("down") => down(),
        Some("env") => {
            let config = Config::from_env()?;
            if !is_ready(&config) {
                return Err(format!(
                    "the local API server is not up on port {}: run `cargo xtask k8s up`",
                    config.port
                ));
            }
            for (name, value) in config.test_env() {
                println!("export {name}={}", shell_quote(&value));
            }
            Ok(())
        }
        Some("status") => {
            let config = Config::from_env()?;
            status(&config)
        }
        // For `cargo xtask torture`: stop or start one of the two processes of a running
        // server, keeping etcd's data.
        Some("stop-one") => stop_one(
            args.get(1).map(String::as_str),
            args.get(2).is_some_and(|a| a == "--kill"),
        ),
        Some("start-one") => start_one(args.get(1).map(String::as_str)),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown k8s task {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    }
}

/// The cluster the tests use, as [`up`] found or started it.
pub(crate) struct Cluster {
    /// The environment variables the tests read (`KUBECONFIG`, and for the local server
    /// `LEASE_TEST_RESTRICTED_KUBECONFIG` and `LEASE_TEST_RESTRICTED_USER`).
    pub(crate) env: Vec<(String, String)>,
    /// Whether this call started the local server (so that its caller should stop it with
    /// [`down`]), rather than finding it, or another cluster, already up.
    pub(crate) started_here: bool,
}

/// Starts the local API server unless it is up already (or `KUBECONFIG` reaches another
/// cluster). `cargo xtask ci` can pass [`Cluster::env`] to the test run, then call [`down`] if
/// [`Cluster::started_here`] (so that it does not stop a server someone else is using).
pub(crate) fn up() -> Result<Cluster, String> {
    let config = Config::from_env()?;
    if let Some(env) = existing_cluster(&config)? {
        return Ok(Cluster {
            env,
            started_here: false,
        });
    }
    let _lock = lock(&config)?;
    if is_ready(&config) {
        println!(
            "xtask k8s: already up on https://127.0.0.1:{} (pids in {})",
            config.port,
            config.state_dir.display()
        );
        // An earlier `up` may have stopped between starting the server and writing these.
        write_kubeconfigs(&config)?;
        verify(&config)?;
        return Ok(Cluster {
            env: config.test_env(),
            started_here: false,
        });
    }
    install(&config)?;
    let started = Instant::now();
    // Whatever is left of an earlier run (one process died, or the server never got ready).
    stop_all(&config)?;
    mkdir(&config.state_dir)?;
    make_credentials(&config)?;
    start_etcd(&config, false)?;
    start_apiserver(&config)?;
    write_kubeconfigs(&config)?;
    verify(&config)?;
    println!(
        "xtask k8s: up on https://127.0.0.1:{} in {:.1} s (logs: {}, {})",
        config.port,
        started.elapsed().as_secs_f64(),
        config.log("etcd").display(),
        config.log("kube-apiserver").display()
    );
    Ok(Cluster {
        env: config.test_env(),
        started_here: true,
    })
}

/// Stops the local API server and etcd, and removes etcd's data. Idempotent.
pub(crate) fn down() -> Result<(), String> {
    let config = Config::from_env()?;
    let _lock = lock(&config)?;
    let stopped = stop_all(&config)?;
    let data = config.etcd_data_dir();
    if data.exists() {
        remove_dir_all(&data)?;
    }
    if stopped {
        println!("xtask k8s: down (etcd data removed)");
    } else {
        println!("xtask k8s: nothing was running");
    }
    Ok(())
}

/// `k8s stop-one NAME [--kill]`: stops `etcd` or `kube-apiserver` of the running local server
/// (SIGTERM, SIGKILL after 10 s; with `kill`, SIGKILL at once), leaving the other running and
/// etcd's data in place.
pub(crate) fn stop_one(name: Option<&str>, kill: bool) -> Result<(), String> {
    let name = one_process(name)?;
    let config = Config::from_env()?;
    let _lock = lock(&config)?;
    match running_pid(&config, name) {
        Some(pid) => {
            if kill {
                let _ = run(Command::new("kill").args(["-KILL", &pid.to_string()]));
            }
            stop(name, pid)?;
            let _ = fs::remove_file(config.pid_file(name));
            println!("xtask k8s: stopped {name} (pid {pid})");
        }
        None => println!("xtask k8s: {name} was not running"),
    }
    Ok(())
}

/// `k8s start-one NAME`: starts `etcd` (on its existing data) or `kube-apiserver` of the local
/// server again and waits until it answers; a no-op when it runs.
pub(crate) fn start_one(name: Option<&str>) -> Result<(), String> {
    let name = one_process(name)?;
    let config = Config::from_env()?;
    let _lock = lock(&config)?;
    if running_pid(&config, name).is_some() {
        println!("xtask k8s: {name} is already running");
        return Ok(());
    }
    if name == "etcd" {
        start_etcd(&config, true)
    } else {
        start_apiserver(&config)
    }
}

/// The process `stop-one`/`start-one` name, as the file names of its pid and log use it.
fn one_process(name: Option<&str>) -> Result<&'static str, String> {
    match name {
        Some("etcd") => Ok("etcd"),
        Some("kube-apiserver") => Ok("kube-apiserver"),
        other => Err(format!(
            "expected etcd or kube-apiserver, not {other:?}\n\n{USAGE}"
        )),
    }
}

/// Serialises `install`, `up` and `down` (of every port) on this machine: two `up`s at once
/// would otherwise stop each other's fresh processes, or build twice. Held until dropped.
fn lock(config: &Config) -> Result<fs::File, String> {
    mkdir(&config.cache_dir)?;
    let path = config.cache_dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            println!(
                "xtask k8s: waiting for another `cargo xtask k8s` (it holds {})",
                path.display()
            );
            file.lock()
                .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            Ok(file)
        }
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// `k8s status`: which processes run, whether the binaries are cached, whether it is ready.
fn status(config: &Config) -> Result<(), String> {
    let apiserver = running_pid(config, "kube-apiserver");
    let etcd = running_pid(config, "etcd");
    println!(
        "kube-apiserver: {}; etcd: {}; binaries {} in {}",
        apiserver.map_or("not running".to_owned(), |p| format!("pid {p}")),
        etcd.map_or("not running".to_owned(), |p| format!("pid {p}")),
        if config.apiserver_bin().exists() && config.etcd_bin().exists() {
            "cached"
        } else {
            "not built"
        },
        config.bin_dir.display()
    );
    if is_ready(config) {
        println!("ready on {}", config.url(""));
        Ok(())
    } else {
        Err("the local API server is not up".to_owned())
    }
}

/// The `KUBECONFIG` rule: a reachable cluster that is not ours is used instead of starting one.
fn existing_cluster(config: &Config) -> Result<Option<Vec<(String, String)>>, String> {
    let Some(kubeconfig) = env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if env::var("LEASE_K8S_IGNORE_KUBECONFIG").is_ok_and(|v| v == "1") {
        return Ok(None);
    }
    let first = env::split_paths(&kubeconfig).next().unwrap_or_default();
    if first == config.kubeconfig(ADMIN_USER) || first == config.kubeconfig(RESTRICTED_USER) {
        return Ok(None);
    }
    let server = fs::read_to_string(&first).ok().and_then(|text| {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("server:"))
            .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
            .next()
    });
    let Some(server) = server else {
        println!(
            "xtask k8s: KUBECONFIG={} has no `server:`; starting the local server",
            first.display()
        );
        return Ok(None);
    };
    // Any HTTP answer (even 401 or 403) means something serves the API there.
    let version = format!("{}/version", server.trim_end_matches('/'));
    let answered = curl_code(&["-sk", "-m", "3", &version]).is_some();
    if answered {
        println!(
            "xtask k8s: KUBECONFIG={} reaches {server}: the tests will use that cluster, so no \
             local server is started (LEASE_K8S_IGNORE_KUBECONFIG=1 starts one anyway; RBAC \
             tests need LEASE_TEST_RESTRICTED_KUBECONFIG for that cluster, or skip)",
            first.display()
        );
        Ok(Some(vec![(
            "KUBECONFIG".to_owned(),
            first.display().to_string(),
        )]))
    } else {
        println!(
            "xtask k8s: KUBECONFIG={} points at {server}, which does not answer; starting the \
             local server (use `eval \"$(cargo xtask k8s env)\"` so the tests use it)",
            first.display()
        );
        Ok(None)
    }
}
