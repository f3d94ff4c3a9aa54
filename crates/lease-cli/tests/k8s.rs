//! The commands on the Kubernetes store, against the API server `$KUBECONFIG` names (`cargo
//! xtask k8s up` starts a local one). Ignored by a plain `cargo test`; `cargo xtask ci` starts
//! the server and runs them. Run by hand without a server, they fail saying what to start.

mod common;

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

fn kubeconfig() -> Option<String> {
    match std::env::var("KUBECONFIG") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => panic!(
            "KUBECONFIG is not set: start a server with `cargo xtask k8s up` and \
             `eval \"$(cargo xtask k8s env)\"`"
        ),
    }
}

/// The fencing generation a `claim` printed ("… generation N …").
fn generation_in(out: &str) -> u64 {
    let (_, rest) = out
        .split_once("generation ")
        .unwrap_or_else(|| panic!("no generation in {out:?}"));
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("bad generation in {out:?}: {e}"))
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

const STORE: &str = "k8s:default";

#[test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
fn claim_show_revoke_and_run_on_kubernetes() {
    let Some(_) = kubeconfig() else { return };
    let dir = tempdir();
    let d = dir.path();
    let name = unique("cli");
    let (code, out, err) = lease_args(
        d,
        &[
            "--store", STORE, "claim", "-l", &name, "--holder", "h1", "--ttl", "30s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Kubernetes generations are seeded from the wall clock (so they survive the object's
    // deletion): not 1, but strictly increasing.
    let first = generation_in(&out);
    let (code, _, err) = lease_args(
        d,
        &["--store", STORE, "claim", "-l", &name, "--holder", "h2"],
    );
    assert_eq!(code, 1);
    assert_one_error_line(&err, "held by h1");
    let (code, out, _) = lease_args(d, &["--store", STORE, "show", "-l", &name, "--json"]);
    assert_eq!(code, 0);
    let row = json(&out);
    assert_eq!(row["holder"], "h1");
    assert_eq!(row["generation"], first);
    let (code, out, _) = lease_args(d, &["--store", STORE, "list", "--json"]);
    assert_eq!(code, 0);
    assert!(
        json(&out)
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["lease"] == name.as_str())
    );
    let (code, _, _) = lease_args(
        d,
        &["--store", STORE, "revoke", "-l", &name, "--holder", "h1"],
    );
    assert_eq!(code, 0);

    // `run` after the revoke: the next fencing generation, released at the end.
    let (code, out, err) = lease_args(
        d,
        &[
            "--store",
            STORE,
            "run",
            "-l",
            &name,
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            "echo $LEASE_FENCE",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let fence: u64 = out.trim().parse().unwrap();
    assert!(fence > first, "{fence} after {first}");
    let (_, out, _) = lease_args(d, &["--store", STORE, "show", "-l", &name, "--json"]);
    assert_eq!(json(&out)["held"], false);
}

#[test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
fn run_wait_takes_over_on_kubernetes() {
    let Some(_) = kubeconfig() else { return };
    let dir = tempdir();
    let d = dir.path();
    let name = unique("cli-wait");
    let ready = d.join("ready");
    let mut first = lease(d);
    first
        .args([
            "--store", STORE, "run", "-l", &name, "--holder", "first", "--ttl", "30s",
        ])
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo $LEASE_FENCE > {}; touch {}; sleep 1",
            path_str(&d.join("first-fence")),
            path_str(&ready)
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let first = first.spawn().unwrap();
    assert!(
        eventually(PATIENCE, || ready.exists()),
        "first run never started"
    );
    let (code, out, err) = lease_args(
        d,
        &[
            "--store",
            STORE,
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
            "echo $LEASE_FENCE",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let before: u64 = std::fs::read_to_string(d.join("first-fence"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let after: u64 = out.trim().parse().unwrap();
    assert!(after > before, "{after} after {before}");
    let (code, _, err) = decode(&wait_output(first, PATIENCE));
    assert_eq!(code, 0, "{err}");
}

#[test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
fn a_restricted_user_gets_exit_4() {
    let Some(_) = kubeconfig() else { return };
    let restricted = std::env::var("LEASE_TEST_RESTRICTED_KUBECONFIG").expect(
        "LEASE_TEST_RESTRICTED_KUBECONFIG is not set: `eval \"$(cargo xtask k8s env)\"` sets it",
    );
    let dir = tempdir();
    let mut cmd = lease(dir.path());
    cmd.env("KUBECONFIG", restricted)
        .args(["--store", "k8s:kube-system", "list"]);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 4, "{err}");
    assert_one_error_line(&err, "permission denied");
}

/// The holder recorded on the Lease object `name` in `default`, read straight from the API.
fn object_holder(name: &str) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = kube::Client::try_default().await.unwrap();
        let leases: kube::Api<Lease> = kube::Api::namespaced(client, "default");
        leases
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    })
}

#[test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
fn object_names_the_exact_lease_object() {
    let Some(_) = kubeconfig() else { return };
    let dir = tempdir();
    let d = dir.path();
    let name = unique("cli-object");
    let object = unique("shared-controller-lock");
    let (code, out, err) = lease_args(
        d,
        &[
            "--store", STORE, "claim", "-l", &name, "--object", &object, "--holder", "h1", "--ttl",
            "30s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(generation_in(&out) > 0, "{out}");
    // The claim went to the object of that exact name (as a client-go program would read it).
    assert_eq!(object_holder(&object).as_deref(), Some("h1"));
    // Through the binding the lease is held; without it, the lease names another object.
    let (code, out, _) = lease_args(
        d,
        &[
            "--store", STORE, "show", "-l", &name, "--object", &object, "--json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(json(&out)["holder"], "h1");
    let (code, _, err) = lease_args(
        d,
        &[
            "--store", STORE, "claim", "-l", &name, "--object", &object, "--holder", "h2",
        ],
    );
    assert_eq!(code, 1);
    assert_one_error_line(&err, "held by h1");
    let (code, _, err) = lease_args(
        d,
        &[
            "--store", STORE, "revoke", "-l", &name, "--object", &object, "--holder", "h1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Cleared the way client-go's own release clears it: to the empty string.
    let holder = object_holder(&object);
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "revoke clears holderIdentity, found {holder:?}"
    );
}
