//! Where the local server's files live and which ports it uses, from the environment.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::{ADMIN_USER, BUILD_REVISION, K8S_VERSION, RESTRICTED_USER};

/// Default kube-apiserver port (`LEASE_K8S_PORT`); not the reference recipe's 16443, so both can
/// run side by side.
const DEFAULT_PORT: u16 = 17443;
/// Default etcd client port (`LEASE_K8S_ETCD_PORT`); the peer port is the next one.
const DEFAULT_ETCD_PORT: u16 = 17379;
/// Default seconds to wait for the server to become ready (`LEASE_K8S_READY_TIMEOUT`).
const DEFAULT_READY_TIMEOUT: u64 = 90;

/// Where things live and which ports they use.
pub(super) struct Config {
    /// Cached binaries: `<cache>/v<version>-r<build revision>/{kube-apiserver,etcd}`.
    pub(super) bin_dir: PathBuf,
    /// The cache root (build work folders live here while building).
    pub(super) cache_dir: PathBuf,
    /// Certificates, tokens, kubeconfigs, pids, logs, etcd's data: `<cache>/run-<port>`.
    pub(super) state_dir: PathBuf,
    /// kube-apiserver's port on 127.0.0.1.
    pub(super) port: u16,
    /// etcd's client port; its peer port is the next one.
    pub(super) etcd_port: u16,
    /// How long `up` waits for `/readyz` and for the default namespace.
    pub(super) ready_timeout: Duration,
}

impl Config {
    pub(super) fn from_env() -> Result<Config, String> {
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

    pub(super) fn apiserver_bin(&self) -> PathBuf {
        self.bin_dir.join("kube-apiserver")
    }

    pub(super) fn etcd_bin(&self) -> PathBuf {
        self.bin_dir.join("etcd")
    }

    pub(super) fn pki(&self, name: &str) -> PathBuf {
        self.state_dir.join("pki").join(name)
    }

    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.log"))
    }

    pub(super) fn pid_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.pid"))
    }

    pub(super) fn etcd_data_dir(&self) -> PathBuf {
        self.state_dir.join("etcd-data")
    }

    pub(super) fn kubeconfig(&self, user: &str) -> PathBuf {
        self.state_dir.join(format!("kubeconfig-{user}"))
    }

    pub(super) fn token(&self, user: &str) -> Result<String, String> {
        let path = self.state_dir.join(format!("{user}.token"));
        fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The variables the tests read.
    pub(super) fn test_env(&self) -> Vec<(String, String)> {
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
}

/// The port in the variable `name`, else `default`.
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
