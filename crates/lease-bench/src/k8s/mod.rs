//! Counting a Kubernetes API server's lease requests, for the benchmarks that run against one
//! (`bench_k8s`, `bench_election`): on the client ([`tally`]), on the server from its own
//! `/metrics` ([`apiserver_metrics`]), and the per-verb counts both give ([`Verbs`]); and the
//! setup both do (an administrator's client, a namespace of their own).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client, Config};

use crate::Res;

pub mod apiserver_metrics;
pub mod tally;

/// Lease requests by verb, as the server's metrics name them (`GET`, `LIST`, `WATCH`, `POST`,
/// `PUT`, ...).
pub type Verbs = BTreeMap<String, u64>;

/// All the requests of `verbs`.
#[must_use]
pub fn total(verbs: &Verbs) -> u64 {
    verbs.values().sum()
}

/// Adds `more` into `into`, verb by verb.
pub fn add(into: &mut Verbs, more: &Verbs) {
    for (verb, n) in more {
        let count = into.entry(verb.clone()).or_default();
        *count = count.saturating_add(*n);
    }
}

/// `after - before`, verb by verb, without the verbs that did not grow (counters only grow; a
/// restart would make them shrink).
#[must_use]
pub fn delta(before: &Verbs, after: &Verbs) -> Verbs {
    after
        .iter()
        .map(|(verb, &n)| {
            (
                verb.clone(),
                n.saturating_sub(*before.get(verb).unwrap_or(&0)),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// `PUT 12 · GET 0 · LIST 1`: each verb of `first` (zero if absent), then every other verb of
/// `values`, each with its value as `show` prints it.
#[must_use]
pub fn by_verb<V: Copy + Default>(
    values: &BTreeMap<String, V>,
    first: &[&str],
    show: impl Fn(V) -> String,
) -> String {
    let mut parts = Vec::new();
    for verb in first {
        let value = values.get(*verb).copied().unwrap_or_default();
        parts.push(format!("{verb} {}", show(value)));
    }
    for (verb, &value) in values {
        if !first.contains(&verb.as_str()) {
            parts.push(format!("{verb} {}", show(value)));
        }
    }
    parts.join(" · ")
}

/// The kubeconfig `KUBECONFIG` names, and an administrator's client from it; `hint` ends the
/// message when `KUBECONFIG` is not set (another way to run the benchmark, say).
///
/// # Errors
///
/// `KUBECONFIG` unset or empty, or a kubeconfig that cannot be read.
pub async fn admin_client(hint: &str) -> Res<(Config, Client)> {
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        return Err(format!(
            "KUBECONFIG is not set: run `cargo xtask k8s up`, then \
             `eval \"$(cargo xtask k8s env)\"` (or `cargo xtask bench {}`){hint}",
            crate::program()
        ));
    }
    let config = Config::infer()
        .await
        .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
    let admin =
        Client::try_from(config.clone()).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((config, admin))
}

/// Creates a new namespace `PREFIX-<time>-<pid>` for one run and returns its name. It is left
/// behind (a bare API server never finishes deleting one); `cargo xtask k8s down` removes it
/// with etcd's data.
///
/// # Errors
///
/// The server refused to create it.
pub async fn create_namespace(admin: &Client, prefix: &str) -> Res<String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let namespace = format!("{prefix}-{:x}-{}", secs % 0x100_0000, std::process::id());
    let mut object = Namespace::default();
    object.metadata.name = Some(namespace.clone());
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| format!("cannot create namespace {namespace}: {e}"))?;
    Ok(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs(pairs: &[(&str, u64)]) -> Verbs {
        pairs.iter().map(|&(v, n)| (v.to_owned(), n)).collect()
    }

    #[test]
    fn named_verbs_come_first_and_always() {
        let seen = verbs(&[("LIST", 1), ("PUT", 12)]);
        assert_eq!(
            by_verb(&seen, &["PUT", "GET"], |n| n.to_string()),
            "PUT 12 · GET 0 · LIST 1"
        );
    }

    #[test]
    fn a_delta_keeps_only_what_grew() {
        let before = verbs(&[("GET", 2), ("PUT", 5)]);
        let after = verbs(&[("GET", 2), ("PUT", 7), ("LIST", 1)]);
        assert_eq!(delta(&before, &after), verbs(&[("LIST", 1), ("PUT", 2)]));
    }
}
