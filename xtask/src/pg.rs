//! `cargo xtask pg`: a real PostgreSQL server on 127.0.0.1 for the tests of
//! `lease-store-postgres`, from Debian's packages.
//!
//! * `up`: installs the `postgresql` apt package when its binaries are missing (`apt-get update`
//!   first), then `initdb`s a cluster into `$LEASE_PG_DIR` (default `/tmp/lease-xtask-pg`: a
//!   temporary directory that the server's unprivileged user can reach) and starts it with
//!   `pg_ctl` on 127.0.0.1, on `$LEASE_PG_PORT` or a free port. Run as root, both run as the
//!   `postgres` system user the package creates (`nobody` if there is none), which owns the
//!   directory. Password authentication over TCP (scram-sha-256), so tests can try bad
//!   credentials. Idempotent: a server that answers is left alone.
//! * `down`: stops it (`pg_ctl stop -m fast`) and removes the directory.
//! * `stop [--kill]`, `start`, `restart [--kill]`: stop the server (`-m fast`, or `-m
//!   immediate` with `--kill`: a crash, no shutdown checkpoint) keeping its data, start it again
//!   on its port, or both: the outages of the torture's Postgres scenario, which runs them on a
//!   dedicated server (its own `LEASE_PG_DIR` and `LEASE_PG_PORT`), never the tests' one.
//! * `env`: prints `export LEASE_TEST_POSTGRES_URL=postgres://…` (the superuser `postgres`, the
//!   `postgres` database) and `LEASE_TEST_POSTGRES_BIN` (the directory with `initdb` and
//!   `pg_ctl`, for tests that start a dedicated server of their own).

use std::env;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::host::{mkdir, port_answers, remove_dir_all, run, write_file};

pub(crate) const USAGE: &str = "\
usage: cargo xtask pg <up|down|env|stop [--kill]|start|restart [--kill]>

  up       install postgresql with apt if missing, initdb and start a server on 127.0.0.1
  down     stop it and remove its data (idempotent)
  env      print `export LEASE_TEST_POSTGRES_URL=...` and `export LEASE_TEST_POSTGRES_BIN=...`
  stop     stop it, keeping its data (`--kill`: `pg_ctl stop -m immediate`, as a crash)
  start    start a stopped server again on its port
  restart  stop, then start (`--kill` as for stop)

environment:
  LEASE_PG_DIR   the server's directory (default /tmp/lease-xtask-pg)
  LEASE_PG_PORT  its port (default: 17432 if free, else any free port)
";

/// The superuser's password on the test server (a local, throwaway cluster).
const PASSWORD: &str = "lease-xtask-pg";
const DEFAULT_PORT: u16 = 17432;

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("up") => {
            let server = up()?;
            println!("xtask pg: for the tests (or `eval \"$(cargo xtask pg env)\"`):");
            for (name, value) in &server.env {
                println!("  export {name}='{value}'");
            }
            Ok(())
        }
        Some("down") => down(),
        Some(verb @ ("stop" | "start" | "restart")) => {
            let kill = args[1..].iter().any(|a| a == "--kill");
            let config = Config::from_env();
            let bin = bin_dir()?;
            if verb != "start" {
                let mode = if kill { "immediate" } else { "fast" };
                run(as_server_user(&mut Command::new(bin.join("pg_ctl")))
                    .arg("-D")
                    .arg(config.data())
                    .args(["-m", mode, "-w", "-t", "30", "stop"]))?;
            }
            if verb != "stop" {
                let port: u16 = fs::read_to_string(config.port_file())
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or("no server was set up here: run `cargo xtask pg up` first")?;
                pg_ctl_start(&bin, &config.dir, port)?;
            }
            println!("xtask pg: {verb} done");
            Ok(())
        }
        Some("env") => {
            let config = Config::from_env();
            let port = config
                .running_port()
                .ok_or("the local Postgres server is not up: run `cargo xtask pg up`")?;
            for (name, value) in config.test_env(port)? {
                println!("export {name}='{value}'");
            }
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown pg task {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    }
}

/// The server the tests use, as [`up`] found or started it.
pub(crate) struct Server {
    /// `LEASE_TEST_POSTGRES_URL` and `LEASE_TEST_POSTGRES_BIN`.
    pub(crate) env: Vec<(String, String)>,
    /// Whether this call started it (so its caller should stop it with [`down`]).
    pub(crate) started_here: bool,
}

struct Config {
    dir: PathBuf,
    port: Option<u16>,
}

impl Config {
    fn from_env() -> Config {
        Config {
            dir: env::var_os("LEASE_PG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/lease-xtask-pg")),
            port: env::var("LEASE_PG_PORT").ok().and_then(|p| p.parse().ok()),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn port_file(&self) -> PathBuf {
        self.dir.join("port")
    }

    /// The recorded port, if a server answers on it.
    fn running_port(&self) -> Option<u16> {
        let port: u16 = fs::read_to_string(self.port_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        answers(port).then_some(port)
    }

    fn test_env(&self, port: u16) -> Result<Vec<(String, String)>, String> {
        Ok(vec![
            (
                "LEASE_TEST_POSTGRES_URL".to_owned(),
                format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
            ),
            (
                "LEASE_TEST_POSTGRES_BIN".to_owned(),
                bin_dir()?.display().to_string(),
            ),
        ])
    }
}

fn answers(port: u16) -> bool {
    port_answers(port, Duration::from_millis(500))
}

/// Debian's newest `/usr/lib/postgresql/<version>/bin` holding `pg_ctl`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL in /usr/lib/postgresql: {e}"))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no pg_ctl under /usr/lib/postgresql/*/bin".to_owned())
}

fn install() -> Result<PathBuf, String> {
    if let Ok(bin) = bin_dir() {
        return Ok(bin);
    }
    if !is_root() {
        return Err("PostgreSQL is not installed: run `apt-get install postgresql` as root".into());
    }
    println!("xtask pg: installing postgresql with apt");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    bin_dir()
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The unprivileged user (uid, gid) the server runs as when we are root.
fn server_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    Some(
        lookup("postgres")
            .or_else(|| lookup("nobody"))
            .unwrap_or((65534, 65534)),
    )
}

fn as_server_user(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command.current_dir("/")
}

fn free_port(wanted: Option<u16>) -> Result<u16, String> {
    if let Some(port) = wanted {
        return Ok(port);
    }
    if TcpListener::bind(("127.0.0.1", DEFAULT_PORT)).is_ok() {
        return Ok(DEFAULT_PORT);
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts the local server unless one answers already.
pub(crate) fn up() -> Result<Server, String> {
    let config = Config::from_env();
    if let Some(port) = config.running_port() {
        println!("xtask pg: already up on 127.0.0.1:{port}");
        return Ok(Server {
            env: config.test_env(port)?,
            started_here: false,
        });
    }
    let bin = install()?;
    let started = Instant::now();
    // Whatever is left of an earlier run.
    stop(&config, &bin);
    if config.dir.exists() {
        remove_dir_all(&config.dir)?;
    }
    let port = free_port(config.port)?;
    start(&bin, &config.dir, port)?;
    write_file(&config.port_file(), port.to_string())?;
    println!(
        "xtask pg: up on 127.0.0.1:{port} in {:.1} s (data and log in {})",
        started.elapsed().as_secs_f64(),
        config.dir.display()
    );
    Ok(Server {
        env: config.test_env(port)?,
        started_here: true,
    })
}

/// `initdb` into `dir/data` and start the server on `port`, waiting until it accepts
/// connections.
fn start(bin: &Path, dir: &Path, port: u16) -> Result<(), String> {
    mkdir(dir)?;
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to uid {uid}: {e}", dir.display()))?;
    }
    let pwfile = dir.join("pwfile");
    write_file(&pwfile, PASSWORD)?;
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to uid {uid}: {e}", pwfile.display()))?;
    }
    let data = dir.join("data");
    run(as_server_user(&mut Command::new(bin.join("initdb")))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["-E", "UTF8", "--no-locale"]))?;
    let _ = fs::remove_file(&pwfile);
    pg_ctl_start(bin, dir, port)
}

/// Starts the cluster in `dir/data` on `port`, waiting until it accepts connections.
fn pg_ctl_start(bin: &Path, dir: &Path, port: u16) -> Result<(), String> {
    let data = dir.join("data");
    let options = format!(
        "-h 127.0.0.1 -p {port} -k {} -c max_connections=400 -c fsync=on",
        dir.display()
    );
    run(as_server_user(&mut Command::new(bin.join("pg_ctl")))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-o", &options, "-w", "-t", "60", "start"]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(port) {
        if Instant::now() > deadline {
            return Err(format!("Postgres did not answer on 127.0.0.1:{port}"));
        }
        sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Stops a server running on the configured directory; whether one was running.
fn stop(config: &Config, bin: &Path) -> bool {
    let data = config.data();
    if !data.join("postmaster.pid").exists() {
        return false;
    }
    run(as_server_user(&mut Command::new(bin.join("pg_ctl")))
        .arg("-D")
        .arg(&data)
        .args(["-m", "fast", "-w", "-t", "30", "stop"]))
    .is_ok()
}

/// Stops the local server and removes its directory. Idempotent.
pub(crate) fn down() -> Result<(), String> {
    let config = Config::from_env();
    let stopped = bin_dir().is_ok_and(|bin| stop(&config, &bin));
    if config.dir.exists() {
        remove_dir_all(&config.dir)?;
    }
    if stopped {
        println!("xtask pg: down (data removed)");
    } else {
        println!("xtask pg: nothing was running");
    }
    Ok(())
}
