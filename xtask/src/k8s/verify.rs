//! Requests to the server over HTTPS (with curl: xtask has no dependencies), and the check that
//! it serves what the tests need.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::config::Config;
use super::{ADMIN_USER, RESTRICTED_USER};
use crate::host::tail;

/// GET `path` as the holder of `token`; see [`request`].
pub(super) fn get(config: &Config, path: &str, token: &str) -> Result<(u16, String), String> {
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

/// The HTTP status `curl args` got, with the caller's options only and not our CA (for etcd's
/// plain HTTP and for another cluster); `None` when nothing answered.
pub(super) fn curl_code(args: &[&str]) -> Option<u16> {
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
pub(super) fn verify(config: &Config) -> Result<(), String> {
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
