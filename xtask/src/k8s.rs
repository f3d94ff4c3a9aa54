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

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The Kubernetes version Debian bookworm's `kubernetes` source package builds.
const K8S_VERSION: &str = "1.20.2";
/// Debian's Go that builds it (GOPATH mode, from the source's vendor/ folder).
const GO_VERSION: &str = "1.19";
/// Bumped whenever the build changes, so that a binary cached by an older build is not used.
const BUILD_REVISION: u32 = 2;
/// The Debian package with github.com/modern-go/reflect2 1.0.2 (see [`replace_reflect2`]).
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev";
/// Default kube-apiserver port (`LEASE_K8S_PORT`); not the reference recipe's 16443, so both can
/// run side by side.
const DEFAULT_PORT: u16 = 17443;
/// Default etcd client port (`LEASE_K8S_ETCD_PORT`); the peer port is the next one.
const DEFAULT_ETCD_PORT: u16 = 17379;
/// Default seconds to wait for the server to become ready (`LEASE_K8S_READY_TIMEOUT`).
const DEFAULT_READY_TIMEOUT: u64 = 90;
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
            if !config.is_ready() {
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
    if config.is_ready() {
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
    fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.state_dir.display()))?;
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
        fs::remove_dir_all(&data).map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
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

/// Where things live and which ports they use.
struct Config {
    /// Cached binaries: `<cache>/v<version>-r<build revision>/{kube-apiserver,etcd}`.
    bin_dir: PathBuf,
    /// The cache root (build work folders live here while building).
    cache_dir: PathBuf,
    /// Certificates, tokens, kubeconfigs, pids, logs, etcd's data: `<cache>/run-<port>`.
    state_dir: PathBuf,
    port: u16,
    etcd_port: u16,
    ready_timeout: Duration,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let cache_dir = match env::var_os("LEASE_K8S_CACHE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let base =
                    match env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
                        Some(dir) if dir.is_absolute() => dir,
                        _ => PathBuf::from(env::var_os("HOME").ok_or(
                            "neither HOME nor XDG_CACHE_HOME nor LEASE_K8S_CACHE_DIR is set",
                        )?)
                        .join(".cache"),
                    };
                base.join("lease-xtask").join("k8s")
            }
        };
        let port = port_from_env("LEASE_K8S_PORT", DEFAULT_PORT)?;
        let etcd_port = port_from_env("LEASE_K8S_ETCD_PORT", DEFAULT_ETCD_PORT)?;
        if etcd_port == u16::MAX || port == etcd_port || port == etcd_port + 1 {
            return Err(format!(
                "LEASE_K8S_PORT ({port}) must differ from LEASE_K8S_ETCD_PORT ({etcd_port}) and \
                 the etcd peer port after it"
            ));
        }
        let ready_timeout = match env::var("LEASE_K8S_READY_TIMEOUT") {
            Ok(v) => v
                .parse()
                .map_err(|_| format!("LEASE_K8S_READY_TIMEOUT={v:?} is not a number of seconds"))?,
            Err(_) => DEFAULT_READY_TIMEOUT,
        };
        Ok(Config {
            bin_dir: cache_dir.join(format!("v{K8S_VERSION}-r{BUILD_REVISION}")),
            state_dir: cache_dir.join(format!("run-{port}")),
            cache_dir,
            port,
            etcd_port,
            ready_timeout: Duration::from_secs(ready_timeout),
        })
    }

    fn apiserver_bin(&self) -> PathBuf {
        self.bin_dir.join("kube-apiserver")
    }

    fn etcd_bin(&self) -> PathBuf {
        self.bin_dir.join("etcd")
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.state_dir.join("pki").join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.log"))
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.pid"))
    }

    fn etcd_data_dir(&self) -> PathBuf {
        self.state_dir.join("etcd-data")
    }

    fn kubeconfig(&self, user: &str) -> PathBuf {
        self.state_dir.join(format!("kubeconfig-{user}"))
    }

    fn token(&self, user: &str) -> Result<String, String> {
        let path = self.state_dir.join(format!("{user}.token"));
        fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The variables the tests read.
    fn test_env(&self) -> Vec<(String, String)> {
        let path = |user: &str| self.kubeconfig(user).display().to_string();
        vec![
            ("KUBECONFIG".to_owned(), path(ADMIN_USER)),
            (
                "LEASE_TEST_RESTRICTED_KUBECONFIG".to_owned(),
                path(RESTRICTED_USER),
            ),
            (
                "LEASE_TEST_RESTRICTED_USER".to_owned(),
                RESTRICTED_USER.to_owned(),
            ),
        ]
    }

    /// Whether our kube-apiserver runs and answers `/readyz` to the administrator.
    fn is_ready(&self) -> bool {
        running_pid(self, "kube-apiserver").is_some()
            && running_pid(self, "etcd").is_some()
            && self
                .token(ADMIN_USER)
                .is_ok_and(|token| matches!(get(self, "/readyz", &token), Ok((200, _))))
    }
}

fn port_from_env(name: &str, default: u16) -> Result<u16, String> {
    match env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{name}={v:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

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
    if config.is_ready() {
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
    let answered = Command::new("curl")
        .args(["-sk", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/version", server.trim_end_matches('/')))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .is_some_and(|code| !code.is_empty() && code != "000");
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

// ---------------------------------------------------------------------------------------------
// Install: host tools and the cached binaries.

/// Host tools `up` needs, and the Debian package that provides each.
const HOST_TOOLS: [(&str, &str); 6] = [
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("kill", "procps"),
    ("apt-get", "apt"),
    ("dpkg", "dpkg"),
    ("tar", "tar"),
];

/// Runs `apt-get update` at most once per xtask run.
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<(), String> {
        if !self.updated {
            println!("xtask k8s: apt-get update");
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        Ok(())
    }
}

/// Installs missing host tools with apt and builds the binaries unless they are cached.
fn install(config: &Config) -> Result<(), String> {
    let mut apt = Apt { updated: false };
    let missing: BTreeSet<&str> = HOST_TOOLS
        .iter()
        .filter(|(tool, _)| find_in_path(tool).is_none())
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        if find_in_path("apt-get").is_none() {
            return Err(format!(
                "missing packages {missing:?} and no apt-get to install them with"
            ));
        }
        apt.update()?;
        println!(
            "xtask k8s: apt-get install {}",
            missing.iter().copied().collect::<Vec<_>>().join(" ")
        );
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if config.apiserver_bin().is_file() && config.etcd_bin().is_file() {
        println!(
            "xtask k8s: kube-apiserver v{K8S_VERSION} and etcd are cached in {}",
            config.bin_dir.display()
        );
        return Ok(());
    }
    build(config, &mut apt)
}

/// Builds kube-apiserver from Debian's `kubernetes` source package with Debian's Go, unpacks
/// Debian's etcd, and caches both in `config.bin_dir`.
fn build(config: &Config, apt: &mut Apt) -> Result<(), String> {
    let started = Instant::now();
    println!(
        "xtask k8s: building kube-apiserver v{K8S_VERSION} from Debian's source package into {} \
         (about 4 minutes, once)",
        config.bin_dir.display()
    );
    remove_stale_work_dirs(&config.cache_dir);
    let work = config
        .cache_dir
        .join(format!("work-{}", std::process::id()));
    let root = work.join("root");
    mkdir(&root)?;
    mkdir(&config.bin_dir)?;

    ensure_deb_src()?;
    apt.update()?;
    let go_pkg = format!("golang-{GO_VERSION}-go");
    let go_src_pkg = format!("golang-{GO_VERSION}-src");
    // Downloaded and unpacked, not installed: no service is started, the system's Go is untouched.
    let debs = ["etcd-server", &go_pkg, &go_src_pkg, REFLECT2_PACKAGE];
    println!(
        "xtask k8s: apt-get download {}; apt-get source kubernetes",
        debs.join(" ")
    );
    run(Command::new("apt-get")
        .args(["download", "-qq"])
        .args(debs)
        .current_dir(&work))?;
    run(Command::new("apt-get")
        .args(["source", "--download-only", "-qq", "kubernetes"])
        .current_dir(&work))?;
    let listing = list_dir(&work)?;
    for deb in listing.iter().filter(|n| n.ends_with(".deb")) {
        run(Command::new("dpkg")
            .arg("-x")
            .arg(work.join(deb))
            .arg(&root))?;
    }
    let orig = listing
        .iter()
        .find(|n| n.starts_with("kubernetes_") && n.contains(".orig.tar."))
        .ok_or_else(|| {
            format!(
                "`apt-get source kubernetes` left no kubernetes_*.orig.tar.* in {}",
                work.display()
            )
        })?;
    println!("xtask k8s: unpacking {orig}");
    run(Command::new("tar").arg("xf").arg(orig).current_dir(&work))?;
    let src_name = list_dir(&work)?
        .into_iter()
        .find(|n| n.starts_with("kubernetes-1.") && work.join(n).is_dir())
        .ok_or_else(|| format!("{orig} did not unpack into kubernetes-1.*"))?;
    if !src_name.contains(K8S_VERSION) {
        println!(
            "xtask k8s: warning: Debian's source is {src_name}, expected {K8S_VERSION}; building it"
        );
    }

    replace_reflect2(&root, &work.join(&src_name))?;

    // Upstream 1.20 builds in GOPATH mode from its vendor/ folder: no module download is needed.
    let goroot = root.join(format!("usr/lib/go-{GO_VERSION}"));
    let gopath = work.join("gopath");
    mkdir(&gopath.join("src/k8s.io"))?;
    let src = gopath.join("src/k8s.io/kubernetes");
    symlink(work.join(&src_name), &src)
        .map_err(|e| format!("cannot link {}: {e}", src.display()))?;
    let path = format!(
        "{}:{}",
        goroot.join("bin").display(),
        env::var("PATH").unwrap_or_default()
    );
    let go = |args: &[&str]| {
        let mut command = Command::new(goroot.join("bin/go"));
        command
            .args(args)
            .current_dir(&src)
            .env("PWD", &src)
            .env("GOROOT", &goroot)
            .env("GOPATH", &gopath)
            .env("GOCACHE", work.join("gocache"))
            .env("CGO_ENABLED", "0")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("PATH", &path);
        command
    };

    // The one generated file the source tarball lacks: pkg/generated/openapi.
    println!("xtask k8s: generating pkg/generated/openapi");
    let openapi_gen = work.join("openapi-gen");
    run(go(&["build", "-o"])
        .arg(&openapi_gen)
        .arg("k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen"))?;
    let dirs = openapi_input_dirs(&src)?;
    run(Command::new(&openapi_gen)
        .arg("-i")
        .arg(dirs)
        .args([
            "-p",
            "k8s.io/kubernetes/pkg/generated/openapi",
            "-O",
            "zz_generated.openapi",
            "-h",
            "vendor/k8s.io/code-generator/hack/boilerplate.go.txt",
            "-r",
        ])
        .arg(work.join("openapi-violations.report"))
        .current_dir(&src)
        .env("PWD", &src)
        .env("GOROOT", &goroot)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("PATH", &path))?;

    println!("xtask k8s: go build k8s.io/kubernetes/cmd/kube-apiserver (the long part)");
    let mut ldflags = String::from("-s -w");
    for package in ["client-go/pkg/version", "component-base/version"] {
        let v = format!("k8s.io/kubernetes/vendor/k8s.io/{package}");
        ldflags.push_str(&format!(
            " -X {v}.gitVersion=v{K8S_VERSION} -X {v}.gitMajor=1 -X {v}.gitMinor=20 \
             -X {v}.gitTreeState=clean"
        ));
    }
    let built = work.join("kube-apiserver");
    run(go(&["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&built)
        .arg("k8s.io/kubernetes/cmd/kube-apiserver"))?;
    let version = run(Command::new(&built).arg("--version"))?;
    // Into the cache: etcd first, kube-apiserver last, each by rename, so a cache with
    // kube-apiserver in it is complete.
    install_file(&root.join("usr/bin/etcd"), &config.etcd_bin())?;
    install_file(&built, &config.apiserver_bin())?;
    fs::remove_dir_all(&work).map_err(|e| format!("cannot remove {}: {e}", work.display()))?;
    println!(
        "xtask k8s: built {} in {:.0} s",
        String::from_utf8_lossy(&version.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which breaks under Go 1.18 and
/// later: every JSON answer with a map in it (labels, annotations, a `LeaseList`) panics in
/// `reflect2.(*UnsafeMapType).Key`. Debian's packaged reflect2 is 1.0.2, which fixes that and
/// keeps the same API: it replaces the vendored copy.
fn replace_reflect2(root: &Path, src: &Path) -> Result<(), String> {
    let packaged = root.join("usr/share/gocode/src/github.com/modern-go/reflect2");
    let vendored = src.join("vendor/github.com/modern-go/reflect2");
    let is_code =
        |name: &str| (name.ends_with(".go") || name.ends_with(".s")) && !name.ends_with("_test.go");
    let new_files: Vec<String> = list_dir(&packaged)?
        .into_iter()
        .filter(|n| is_code(n))
        .collect();
    if new_files.is_empty() {
        return Err(format!(
            "{REFLECT2_PACKAGE} has no Go files in {}",
            packaged.display()
        ));
    }
    println!("xtask k8s: replacing the vendored reflect2 v1.0.1 with Debian's {REFLECT2_PACKAGE}");
    for name in list_dir(&vendored)?.into_iter().filter(|n| is_code(n)) {
        let path = vendored.join(name);
        fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    for name in new_files {
        let (from, to) = (packaged.join(&name), vendored.join(&name));
        fs::copy(&from, &to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// `apt-get source` needs a deb-src entry: derive one from the machine's own Debian sources.
fn ensure_deb_src() -> Result<(), String> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut sources: Vec<PathBuf> = list_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".sources") || n.ends_with(".list"))
        .map(|n| dir.join(n))
        .collect();
    sources.push(PathBuf::from("/etc/apt/sources.list"));
    let texts: Vec<(PathBuf, String)> = sources
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect();
    let has_src = texts.iter().any(|(_, text)| {
        text.lines().any(|l| {
            let l = l.trim();
            l.starts_with("deb-src ") || (l.starts_with("Types:") && l.contains("deb-src"))
        })
    });
    if has_src {
        return Ok(());
    }
    let debian = texts
        .iter()
        .find(|(_, text)| text.contains("debian.org/debian"))
        .ok_or("no deb-src entry and no Debian apt source to derive one from")?;
    let (name, text) = if debian.0.extension().is_some_and(|e| e == "sources") {
        let text = debian
            .1
            .lines()
            .map(|l| {
                if l.trim() == "Types: deb" {
                    "Types: deb-src"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        ("lease-xtask-debian-src.sources", text)
    } else {
        let text = debian
            .1
            .lines()
            .filter_map(|l| l.trim().strip_prefix("deb "))
            .map(|rest| format!("deb-src {rest}"))
            .collect::<Vec<_>>()
            .join("\n");
        ("lease-xtask-debian-src.list", text)
    };
    let path = dir.join(name);
    println!(
        "xtask k8s: adding source entries for `apt-get source`: {}",
        path.display()
    );
    fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The recipe's `find | grep | dirname | sort -u` for openapi-gen's input packages: the
/// directories of Go files with a `// +k8s:` tag line and `+k8s:openapi-gen=`, outside
/// `_*`, `.*` and `vendor/`, with `staging/src` seen as `vendor`.
fn openapi_input_dirs(src: &Path) -> Result<String, String> {
    let mut files = Vec::new();
    for name in list_dir(src)? {
        if name.starts_with('_') || name.starts_with('.') || name == "vendor" {
            continue;
        }
        collect_go_files(&src.join(&name), &name, &mut files);
    }
    let mut dirs = BTreeSet::new();
    for (relative, path) in files {
        let relative = match relative.strip_prefix("staging/src") {
            Some(rest) => format!("vendor{rest}"),
            None => relative,
        };
        if relative.starts_with("vendor/k8s.io/code-generator/")
            || relative.starts_with("vendor/k8s.io/sample-apiserver/")
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let tagged = text.lines().any(|line| {
            line.strip_prefix("//")
                .is_some_and(|rest| rest.trim_start_matches(' ').starts_with("+k8s:"))
        });
        if tagged && text.contains("+k8s:openapi-gen=") {
            let dir = relative.rsplit_once('/').map_or(".", |(dir, _)| dir);
            dirs.insert(format!("k8s.io/kubernetes/{dir}"));
        }
    }
    if dirs.is_empty() {
        return Err(format!(
            "no openapi-gen input packages found below {}",
            src.display()
        ));
    }
    Ok(dirs.into_iter().collect::<Vec<_>>().join(","))
}

/// Regular `.go` files below `path` (symbolic links are not followed), with their paths relative
/// to the source root.
fn collect_go_files(path: &Path, relative: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(names) = list_dir(path) else {
            return;
        };
        for name in names {
            collect_go_files(&path.join(&name), &format!("{relative}/{name}"), out);
        }
    } else if meta.is_file() && relative.ends_with(".go") {
        out.push((relative.to_owned(), path.to_path_buf()));
    }
}

/// Build folders of builds that are no longer running (a build interrupted by Ctrl-C).
fn remove_stale_work_dirs(cache: &Path) {
    for name in list_dir(cache).unwrap_or_default() {
        if let Some(pid) = name
            .strip_prefix("work-")
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(cache.join(name));
        }
    }
}

fn install_file(from: &Path, to: &Path) -> Result<(), String> {
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp)
        .and_then(|_| fs::rename(&tmp, to))
        .map_err(|e| format!("cannot install {} as {}: {e}", from.display(), to.display()))
}

// ---------------------------------------------------------------------------------------------
// Credentials and kubeconfigs.

/// Creates what is missing: a CA, the server's certificate for 127.0.0.1 and localhost, the
/// service-account key pair, and the two users' tokens. All are kept across `down`/`up`.
fn make_credentials(config: &Config) -> Result<(), String> {
    mkdir(&config.state_dir.join("pki"))?;
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(config.state_dir.join("pki"));
        command
    };
    if !config.pki("ca.crt").exists() {
        run(&mut openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=lease-xtask-local-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
        let _ = fs::remove_file(config.pki("apiserver.crt"));
    }
    if !config.pki("apiserver.crt").exists() {
        fs::write(
            config.pki("apiserver.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
        )
        .map_err(|e| {
            format!(
                "cannot write {}: {e}",
                config.pki("apiserver.ext").display()
            )
        })?;
        run(&mut openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]))?;
        run(&mut openssl(&[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            "apiserver.ext",
            "-out",
            "apiserver.crt",
        ]))?;
    }
    if !config.pki("sa.pub").exists() {
        run(&mut openssl(&["genrsa", "-out", "sa.key", "2048"]))?;
        run(&mut openssl(&[
            "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub",
        ]))?;
    }
    // An administrator, and one user with no rights until a Role grants them (for RBAC tests).
    let mut lines = String::new();
    for (user, groups) in [(ADMIN_USER, "system:masters"), (RESTRICTED_USER, "")] {
        let path = config.state_dir.join(format!("{user}.token"));
        if !path.exists() {
            fs::write(&path, random_hex(24)? + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let token = config.token(user)?;
        if groups.is_empty() {
            lines.push_str(&format!("{token},{user},uid-{user}\n"));
        } else {
            lines.push_str(&format!("{token},{user},uid-{user},\"{groups}\"\n"));
        }
    }
    let tokens = config.pki("tokens.csv");
    fs::write(&tokens, lines).map_err(|e| format!("cannot write {}: {e}", tokens.display()))
}

fn write_kubeconfigs(config: &Config) -> Result<(), String> {
    for user in [ADMIN_USER, RESTRICTED_USER] {
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: lease-local\n\
             \x20 cluster:\n\
             \x20   server: {server}\n\
             \x20   certificate-authority: {ca}\n\
             users:\n\
             - name: {user}\n\
             \x20 user:\n\
             \x20   token: {token}\n\
             contexts:\n\
             - name: lease-local\n\
             \x20 context:\n\
             \x20   cluster: lease-local\n\
             \x20   user: {user}\n\
             \x20   namespace: default\n\
             current-context: lease-local\n",
            server = config.url(""),
            ca = yaml_quote(&config.pki("ca.crt").display().to_string()),
            token = config.token(user)?,
        );
        let path = config.kubeconfig(user);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

// ---------------------------------------------------------------------------------------------
// Processes.

fn start_etcd(config: &Config, keep_data: bool) -> Result<(), String> {
    check_port_free(config.etcd_port, "LEASE_K8S_ETCD_PORT")?;
    check_port_free(
        config.etcd_port + 1,
        "LEASE_K8S_ETCD_PORT (its peer port, +1)",
    )?;
    let client = format!("http://127.0.0.1:{}", config.etcd_port);
    let peer = format!("http://127.0.0.1:{}", config.etcd_port + 1);
    let data = config.etcd_data_dir();
    if data.exists() && !keep_data {
        fs::remove_dir_all(&data).map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }
    let mut command = Command::new(config.etcd_bin());
    command
        .arg("--name=lease-local")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=lease-local={peer}"));
    spawn_detached(config, "etcd", &mut command)?;
    let health = format!("{client}/health");
    wait_until(config, "etcd", Duration::from_secs(30), || {
        curl_code(&["-s", "-m", "1", &health]) == Some(200)
    })
}

fn start_apiserver(config: &Config) -> Result<(), String> {
    check_port_free(config.port, "LEASE_K8S_PORT")?;
    let pki = |name: &str| config.pki(name).display().to_string();
    let mut command = Command::new(config.apiserver_bin());
    command
        .arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            config.etcd_port
        ))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", config.port))
        .arg(format!("--tls-cert-file={}", pki("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", pki("apiserver.key")))
        .arg(format!("--client-ca-file={}", pki("ca.crt")))
        .arg(format!("--cert-dir={}", pki("generated")))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg("--api-audiences=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", pki("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki("sa.key")
        ))
        .arg(format!("--token-auth-file={}", pki("tokens.csv")))
        .arg("--authorization-mode=RBAC")
        .arg("--service-cluster-ip-range=10.0.0.0/24");
    spawn_detached(config, "kube-apiserver", &mut command)?;
    let token = config.token(ADMIN_USER)?;
    wait_until(config, "kube-apiserver", config.ready_timeout, || {
        matches!(get(config, "/readyz", &token), Ok((200, _)))
    })
}

/// Starts `command` in its own process group, detached from the terminal (stdin from /dev/null,
/// output to `<state>/<name>.log`), so it outlives xtask; records its pid.
fn spawn_detached(config: &Config, name: &str, command: &mut Command) -> Result<(), String> {
    let log_path = config.log(name);
    let log = fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot reopen {}: {e}", log_path.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", display(command)))?;
    let pid_file = config.pid_file(name);
    fs::write(&pid_file, format!("{}\n", child.id()))
        .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    println!(
        "xtask k8s: started {name} (pid {}, log {})",
        child.id(),
        log_path.display()
    );
    Ok(())
}

/// Polls `ready` every 100 ms until it holds; fails with the log's tail if the process dies or
/// the timeout passes.
fn wait_until(
    config: &Config,
    name: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        let log = config.log(name);
        // Only liveness here, not `running_pid`'s command-line check: right after the spawn
        // the child may not have exec'd yet, and its command line is still xtask's (seen on a
        // loaded machine as a false "exited while starting"). We started this pid and have not
        // reaped it, so it cannot have been reused.
        if !started_pid(config, name).is_some_and(alive) {
            return Err(format!(
                "{name} exited while starting; the end of {}:\n{}",
                log.display(),
                tail_file(&log, 25)
            ));
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{name} not ready after {} s (LEASE_K8S_READY_TIMEOUT); it is still running, \
                 `cargo xtask k8s down` stops it; the end of {}:\n{}",
                timeout.as_secs(),
                log.display(),
                tail_file(&log, 25)
            ));
        }
        sleep(Duration::from_millis(100));
    }
}

/// Stops kube-apiserver, then etcd. Returns whether anything was running.
fn stop_all(config: &Config) -> Result<bool, String> {
    let mut stopped = false;
    for name in ["kube-apiserver", "etcd"] {
        if let Some(pid) = running_pid(config, name) {
            stop(name, pid)?;
            println!("xtask k8s: stopped {name} (pid {pid})");
            stopped = true;
        }
        let _ = fs::remove_file(config.pid_file(name));
    }
    Ok(stopped)
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop(name: &str, pid: u32) -> Result<(), String> {
    let pid_arg = pid.to_string();
    let _ = run(Command::new("kill").args(["-TERM", &pid_arg]));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if !alive(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    println!("xtask k8s: {name} (pid {pid}) ignored SIGTERM for 10 s; sending SIGKILL");
    let _ = run(Command::new("kill").args(["-KILL", &pid_arg]));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if !alive(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    Err(format!("{name} (pid {pid}) survived SIGKILL"))
}

/// The recorded pid of `name`, if that process still runs our binary.
/// The pid recorded for `name` when it was started, alive or not.
fn started_pid(config: &Config, name: &str) -> Option<u32> {
    fs::read_to_string(config.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn running_pid(config: &Config, name: &str) -> Option<u32> {
    let pid = started_pid(config, name)?;
    let binary = config.bin_dir.join(name);
    // The pid may have been reused by another program since: check the command line.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    (alive(pid) && argv0 == binary.as_os_str().as_encoded_bytes()).then_some(pid)
}

/// Whether `pid` runs and is not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn check_port_free(port: u16, variable: &str) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
        Err(format!(
            "port {port} on 127.0.0.1 is in use by another program (see `ss -ltnp`); choose \
             another with {variable}"
        ))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Checks over HTTPS (with curl: xtask has no dependencies).

/// GET `path` as the holder of `token`; see [`request`].
fn get(config: &Config, path: &str, token: &str) -> Result<(u16, String), String> {
    request(config, "GET", path, token, None)
}

/// Sends `method path` (with a JSON `body`) as the holder of `token`, verifying the server
/// against our CA. Returns the HTTP status and the body; an error only when curl got no answer.
fn request(
    config: &Config,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--cacert",
        ])
        .arg(config.pki("ca.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    if let Some(body) = body {
        command
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body);
    }
    let output = command
        .arg(config.url(path))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim().parse() {
        Ok(code) if code != 0 => Ok((code, body.to_owned())),
        _ => Err(format!(
            "`curl -X {method} {}` got no answer ({}): {}; see {}",
            config.url(path),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            config.log("kube-apiserver").display()
        )),
    }
}

fn curl_code(args: &[&str]) -> Option<u16> {
    let output = Command::new("curl")
        .args(args)
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&c| c != 0)
}

/// What the tests and the benchmark need: the default namespace, Lease objects for the
/// administrator and not for the restricted user, and the metrics endpoint.
fn verify(config: &Config) -> Result<(), String> {
    let admin = config.token(ADMIN_USER)?;
    let restricted = config.token(RESTRICTED_USER)?;
    // The default namespace is created by a bootstrap controller shortly after /readyz.
    let started = Instant::now();
    loop {
        match get(config, "/api/v1/namespaces/default", &admin)? {
            (200, _) => break,
            (code, body) if started.elapsed() > config.ready_timeout => {
                return Err(format!(
                    "GET /api/v1/namespaces/default: HTTP {code}: {}",
                    tail(&body, 5)
                ));
            }
            _ => sleep(Duration::from_millis(100)),
        }
    }
    let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let lease = format!("{leases}/xtask-k8s-check");
    let check =
        |what: &str, method: &str, path: &str, token: &str, body: Option<&str>, want: u16| {
            let (code, answer) = request(config, method, path, token, body)?;
            if code == want {
                Ok(answer)
            } else {
                Err(format!(
                    "{what}: {method} {path} answered HTTP {code}, expected {want}: {}; see {}",
                    tail(&answer, 5),
                    config.log("kube-apiserver").display()
                ))
            }
        };
    let listed = check("admin lists Leases", "GET", leases, &admin, None, 200)?;
    if !listed.contains("LeaseList") {
        return Err(format!(
            "GET {leases} did not answer a LeaseList: {}",
            tail(&listed, 5)
        ));
    }
    // A round trip with a map in it (labels): JSON both ways, as the stores use it.
    let _ = request(config, "DELETE", &lease, &admin, None);
    let body = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"xtask-k8s-check","labels":{"app":"xtask"}},"spec":{"holderIdentity":"xtask","leaseDurationSeconds":15}}"#;
    check(
        "admin creates a Lease",
        "POST",
        leases,
        &admin,
        Some(body),
        201,
    )?;
    let read = check("admin reads the Lease", "GET", &lease, &admin, None, 200)?;
    if !read.contains("\"holderIdentity\": \"xtask\"")
        && !read.contains("\"holderIdentity\":\"xtask\"")
    {
        return Err(format!(
            "GET {lease} answered another Lease: {}",
            tail(&read, 20)
        ));
    }
    check(
        "admin deletes the Lease",
        "DELETE",
        &lease,
        &admin,
        None,
        200,
    )?;
    check(
        "the restricted user is denied",
        "GET",
        leases,
        &restricted,
        None,
        403,
    )?;
    let metrics = check("admin reads metrics", "GET", "/metrics", &admin, None, 200)?;
    if !metrics.contains("apiserver_request_total") {
        return Err("GET /metrics has no apiserver_request_total".to_owned());
    }
    println!(
        "xtask k8s: checked: admin lists, creates, reads and deletes coordination.k8s.io/v1 \
         Leases; {RESTRICTED_USER} is forbidden; admin reads /metrics (apiserver_request_total)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Runs `command` to completion, capturing its output. On failure the error names the command,
/// its exit status and the tail of its output.
fn run(command: &mut Command) -> Result<Output, String> {
    let shown = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("cannot run `{shown}`: program not found"),
            _ => format!("cannot run `{shown}`: {e}"),
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        Err(format!(
            "`{shown}` failed ({}); the end of its output:\n{}{}",
            output.status,
            tail(&stdout, 10),
            tail(&stderr, 25)
        ))
    }
}

fn display(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.len() > 200 {
            format!("{}...", &a[..a.floor_char_boundary(200)])
        } else {
            a.into_owned()
        }
    }));
    let mut shown = parts.join(" ");
    if let Some(dir) = command.get_current_dir() {
        shown.push_str(&format!(" (in {})", dir.display()));
    }
    shown
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn tail_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read it: {e})\n"),
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn list_dir(dir: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

fn mkdir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Quotes `value` for a POSIX shell when it needs it.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// A YAML double-quoted string.
fn yaml_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/root/.cache/a-b_c"), "/root/.cache/a-b_c");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("", 2), "");
    }

    #[test]
    fn openapi_dirs_follow_the_recipe() {
        let root = env::temp_dir().join(format!("xtask-k8s-openapi-{}", std::process::id()));
        let tagged = "// +k8s:openapi-gen=true\npackage v1\n";
        for (path, text) in [
            ("pkg/apis/a/v1/types.go", tagged),
            ("pkg/apis/b/doc.go", "package b\n"),
            ("staging/src/k8s.io/api/x/v1/doc.go", tagged),
            ("staging/src/k8s.io/code-generator/y/doc.go", tagged),
            ("vendor/k8s.io/z/doc.go", tagged),
            ("_output/w/doc.go", tagged),
        ] {
            let file = root.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        let dirs = openapi_input_dirs(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            dirs.unwrap(),
            "k8s.io/kubernetes/pkg/apis/a/v1,k8s.io/kubernetes/vendor/k8s.io/api/x/v1"
        );
    }
}
