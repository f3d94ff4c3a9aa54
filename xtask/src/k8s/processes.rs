//! etcd's and kube-apiserver's processes: started detached with their pids recorded, waited for
//! until they answer, found again by pid, and stopped.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::ADMIN_USER;
use super::config::Config;
use super::verify::{curl_code, get};
use crate::host::{display, port_answers, remove_dir_all, run, tail_file, write_file};

/// Whether our kube-apiserver and etcd run and kube-apiserver answers `/readyz` to the
/// administrator.
pub(super) fn is_ready(config: &Config) -> bool {
    running_pid(config, "kube-apiserver").is_some()
        && running_pid(config, "etcd").is_some()
        && config
            .token(ADMIN_USER)
            .is_ok_and(|token| matches!(get(config, "/readyz", &token), Ok((200, _))))
}

/// Starts etcd on its ports (`keep_data`: on the data of the last run, else on none) and waits
/// for its `/health`.
pub(super) fn start_etcd(config: &Config, keep_data: bool) -> Result<(), String> {
    check_port_free(config.etcd_port, "LEASE_K8S_ETCD_PORT")?;
    check_port_free(
        config.etcd_port + 1,
        "LEASE_K8S_ETCD_PORT (its peer port, +1)",
    )?;
    let client = format!("http://127.0.0.1:{}", config.etcd_port);
    let peer = format!("http://127.0.0.1:{}", config.etcd_port + 1);
    let data = config.etcd_data_dir();
    if data.exists() && !keep_data {
        remove_dir_all(&data)?;
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

/// Starts kube-apiserver over our etcd with our credentials (RBAC, token users) and waits for
/// `/readyz`.
pub(super) fn start_apiserver(config: &Config) -> Result<(), String> {
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
    write_file(&pid_file, format!("{}\n", child.id()))?;
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
pub(super) fn stop_all(config: &Config) -> Result<bool, String> {
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
pub(super) fn stop(name: &str, pid: u32) -> Result<(), String> {
    let pid_arg = pid.to_string();
    let _ = run(Command::new("kill").args(["-TERM", &pid_arg]));
    if exits_within(pid, Duration::from_secs(10)) {
        return Ok(());
    }
    println!("xtask k8s: {name} (pid {pid}) ignored SIGTERM for 10 s; sending SIGKILL");
    let _ = run(Command::new("kill").args(["-KILL", &pid_arg]));
    if exits_within(pid, Duration::from_secs(5)) {
        return Ok(());
    }
    Err(format!("{name} (pid {pid}) survived SIGKILL"))
}

/// Polls every 100 ms whether `pid` is gone; false if it still runs after `timeout`.
fn exits_within(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

/// The pid recorded for `name` when it was started, alive or not.
fn started_pid(config: &Config, name: &str) -> Option<u32> {
    fs::read_to_string(config.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The recorded pid of `name`, if that process still runs our binary.
pub(super) fn running_pid(config: &Config, name: &str) -> Option<u32> {
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

/// Fails, naming the variable that moves it, when something already listens on `port`: our
/// process would not start, and the one there is not ours.
fn check_port_free(port: u16, variable: &str) -> Result<(), String> {
    if port_answers(port, Duration::from_millis(300)) {
        Err(format!(
            "port {port} on 127.0.0.1 is in use by another program (see `ss -ltnp`); choose \
             another with {variable}"
        ))
    } else {
        Ok(())
    }
}
