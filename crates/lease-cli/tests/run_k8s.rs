//! `lease run` on the Kubernetes store stops its command tree inside the lease's window when
//! the API server stops answering while the lease is held.
//!
//! Stopping the shared test server (SIGSTOP) would break every other test using it, so the
//! first `lease run` talks to it through a pausable TCP proxy on 127.0.0.1 (a kubeconfig copy
//! pointing at the proxy): pausing stops forwarding bytes in both directions while keeping
//! every connection open, which is what a SIGSTOPped server looks like from the client (a
//! stall, not a refusal). The second holder talks to the server directly.
//!
//! Ignored by a plain `cargo test`, like `k8s.rs`: `cargo xtask ci` starts the server and
//! runs them; `eval "$(cargo xtask k8s env)"` sets the environment to run them by hand.

mod common;
mod run_support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use run_support::*;

fn kubeconfig() -> String {
    match std::env::var("KUBECONFIG") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "KUBECONFIG is not set: start a server with `cargo xtask k8s up` and \
             `eval \"$(cargo xtask k8s env)\"`"
        ),
    }
}

/// A TCP proxy to `upstream` that can stop forwarding (without closing anything).
struct Proxy {
    port: u16,
    paused: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let p = paused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let paused = p.clone();
                    std::thread::spawn(move || pump(from, to, &paused));
                }
            }
        });
        Proxy { port, paused }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes from `from` to `to`; while paused, holds them (and reads no more).
fn pump(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A copy of the kubeconfig at `path` whose first `server:` goes through `proxy_port`, and the
/// address the original pointed at.
fn proxied_kubeconfig(path: &str, dir: &std::path::Path, proxy_port: u16) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut upstream = None;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if upstream.is_none()
            && let Some(url) = trimmed.strip_prefix("server:")
        {
            let url = url.trim().trim_matches('"').trim_matches('\'');
            let (scheme, rest) = url.split_once("://").expect("server URL with a scheme");
            let host_port = rest.split('/').next().unwrap();
            assert!(
                host_port.starts_with("127.0.0.1:"),
                "the test server must listen on 127.0.0.1 (its certificate must name the \
                 proxy's address): {url}"
            );
            upstream = Some(host_port.to_owned());
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!(
                "{indent}server: {scheme}://127.0.0.1:{proxy_port}\n"
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let copy = dir.join("kubeconfig-proxied");
    std::fs::write(&copy, out).unwrap();
    (
        path_str(&copy),
        upstream.expect("no server: in the kubeconfig"),
    )
}

#[test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
fn a_stalled_api_server_stops_the_whole_tree_before_the_next_holder_starts() {
    let config = kubeconfig();
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("cli-stall-{}-{nanos}", std::process::id());

    // The proxy's own port is known only once it listens: rewrite the copy after that.
    let (_, upstream) = proxied_kubeconfig(&config, d, 0);
    let proxy = Proxy::start(upstream);
    let (proxied, _) = proxied_kubeconfig(&config, d, proxy.port);

    let mut first = lease(d);
    first
        .env("KUBECONFIG", &proxied)
        .args(["--store", "k8s:default", "run", "-l", &name])
        .args(["--holder", "first", "--ttl", "3s"])
        .args(["--", "sh", "-c", &stubborn_tree(d)])
        .stdout(Stdio::null())
        // A file, not a pipe: a surviving process of the tree would hold a pipe open.
        .stderr(std::fs::File::create(d.join("first.err")).unwrap());
    let first = spawn_until_ready(first, d, "the first command never started");
    // The API server stops answering the first holder mid-lease.
    proxy.pause();
    let (code, out, err) = lease_args(
        d,
        &[
            "--store",
            "k8s:default",
            "run",
            "-l",
            &name,
            "--holder",
            "second",
            "--wait",
            "--timeout",
            "25s",
            "--",
            "sh",
            "-c",
            &second_holder(d),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "second-ran");
    assert_first_tree_gone_before_second(d);
    let code = wait_code(first, PATIENCE);
    let err = std::fs::read_to_string(d.join("first.err")).unwrap();
    assert_eq!(code, 3, "the first run must report the lost lease: {err}");
}
