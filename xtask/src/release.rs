//! Checks that the crates are ready for users: each library crate builds alone (with only its
//! own features), its dependency tree holds only what it needs, every publishable crate
//! packages, and the runnable examples run.

use std::collections::BTreeSet;
use std::env;
use std::path::Path;
use std::process::Command;

/// The publishable crates, in dependency order.
pub(crate) const LIBRARY_CRATES: [&str; 9] = [
    "lease-core",
    "lease-run-policy",
    "lease-testkit",
    "lease-store-sqlite",
    "lease-store-k8s",
    "lease-store-postgres",
    "lease-manager",
    "lease",
    "lease-cli",
];

/// Crates that must not be in a crate's normal dependency tree.
pub(crate) const FORBIDDEN: [(&str, &[&str]); 6] = [
    (
        "lease-core",
        &[
            "kube",
            "kube-client",
            "k8s-openapi",
            "hyper",
            "reqwest",
            "rusqlite",
            "libsqlite3-sys",
        ],
    ),
    (
        "lease-store-sqlite",
        &["kube", "kube-client", "k8s-openapi"],
    ),
    ("lease-store-k8s", &["rusqlite", "libsqlite3-sys"]),
    (
        "lease-store-postgres",
        &[
            "kube",
            "kube-client",
            "k8s-openapi",
            "rusqlite",
            "libsqlite3-sys",
        ],
    ),
    (
        "lease-manager",
        &[
            "kube",
            "kube-client",
            "k8s-openapi",
            "rusqlite",
            "libsqlite3-sys",
        ],
    ),
    // The facade with its default features (SQLite only): no Kubernetes stack.
    ("lease", &["kube", "kube-client", "k8s-openapi", "hyper"]),
];

/// The examples that need only the local file system.
pub(crate) const LOCAL_EXAMPLES: [&str; 5] = [
    "singular_worker",
    "app_leadership_pins",
    "leaser_metadata",
    "resource_locks",
    "fencing",
];

/// The examples that need the Kubernetes API server `KUBECONFIG` names.
pub(crate) const K8S_EXAMPLES: [&str; 2] = ["k8s_leader_election", "configmap_lock"];

fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The crate names in `cargo tree --prefix none` output (`name vX.Y.Z (…)` per line).
pub(crate) fn crate_names(tree: &str) -> BTreeSet<String> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The forbidden crates present in `tree`.
pub(crate) fn forbidden_in(tree: &str, forbidden: &[&str]) -> Vec<String> {
    let names = crate_names(tree);
    forbidden
        .iter()
        .filter(|f| names.contains(**f))
        .map(|f| (*f).to_owned())
        .collect()
}

/// `cargo tree -p <krate> -e normal` of the crate with its default features, on this host.
fn normal_tree(root: &Path, krate: &str) -> Result<String, String> {
    let output = Command::new(cargo_bin())
        .args([
            "tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo tree -p {krate}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The workspace's `rust-version` (from the root `Cargo.toml`'s `[workspace.package]`).
pub(crate) fn declared_rust_version(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let value = line.trim().strip_prefix("rust-version")?.trim_start();
        let value = value.strip_prefix('=')?.trim();
        Some(value.trim_matches('"').to_owned())
    })
}

/// `major.minor` of `rustc --version` output (`rustc 1.95.0 (…)`).
pub(crate) fn rustc_minor_version(version: &str) -> Option<String> {
    let number = version.split_whitespace().nth(1)?;
    let mut parts = number.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// The declared minimum Rust version is the toolchain CI builds with, so the claim is tested.
pub(crate) fn rust_version(root: &Path) -> Result<(), String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("cannot read Cargo.toml: {e}"))?;
    let declared = declared_rust_version(&manifest)
        .ok_or("Cargo.toml declares no rust-version in [workspace.package]")?;
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(&rustc)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let version = String::from_utf8_lossy(&output.stdout);
    let built_with = rustc_minor_version(&version)
        .ok_or_else(|| format!("cannot read the version in {version:?}"))?;
    if declared.split('.').take(2).collect::<Vec<_>>().join(".") == built_with {
        println!(
            "xtask: rust-version {declared} is the toolchain in use ({})",
            version.trim()
        );
        Ok(())
    } else {
        Err(format!(
            "rust-version {declared} in Cargo.toml, but CI builds with {}: keep them equal",
            version.trim()
        ))
    }
}

/// Every crate's normal dependency tree is free of the crates it must not pull in.
pub(crate) fn dependency_trees(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        let tree = normal_tree(root, krate)?;
        let found = forbidden_in(&tree, forbidden);
        if found.is_empty() {
            println!(
                "xtask: {krate}: {} crates, none of {forbidden:?}",
                crate_names(&tree).len()
            );
        } else {
            problems.push(format!("{krate} depends on {}", found.join(", ")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("dependency trees: {}", problems.join("; ")))
    }
}

/// Each library crate builds alone, with all its targets: features are unified per cargo
/// invocation, so this catches a crate that relies on a feature only a sibling switches on.
pub(crate) fn crates_alone(cargo: impl Fn(&[&str]) -> Result<(), String>) -> Result<(), String> {
    for krate in LIBRARY_CRATES {
        cargo(&["check", "--locked", "-p", krate, "--all-targets"])?;
    }
    cargo(&[
        "check",
        "--locked",
        "-p",
        "lease-manager",
        "--all-targets",
        "--features",
        "metrics",
    ])?;
    // The Postgres store's TLS (rustls with ring) is off by default; it must build too.
    cargo(&[
        "check",
        "--locked",
        "-p",
        "lease-store-postgres",
        "--all-targets",
        "--features",
        "tls",
    ])?;
    // The facade with every store, and with none but a custom one.
    cargo(&[
        "check",
        "--locked",
        "-p",
        "lease",
        "--all-targets",
        "--all-features",
    ])?;
    cargo(&[
        "check",
        "--locked",
        "-p",
        "lease",
        "--lib",
        "--no-default-features",
    ])
}

/// Every publishable crate packages: `cargo package --workspace` builds each crate from its
/// packaged sources against the packaged versions of the others (a local registry overlay), so
/// nothing depends on a file outside the package or on an unpublished path.
pub(crate) fn package(
    root: &Path,
    cargo: impl Fn(&[&str]) -> Result<(), String>,
) -> Result<(), String> {
    clear_unpacked_overlay_copies()?;
    clear_fingerprints(&root.join("target").join("debug").join(".fingerprint"))?;
    let mut args = vec!["package", "--locked", "--allow-dirty"];
    for krate in LIBRARY_CRATES {
        args.extend(["-p", krate]);
    }
    cargo(&args)
}

/// Removes the copies of our own crates that an earlier `cargo package` unpacked.
///
/// Verification builds each crate against the others as packaged, through a local registry
/// overlay, and cargo unpacks those into `$CARGO_HOME/registry/src/-<hash of the overlay's
/// path>/NAME-VERSION`. It never unpacks a NAME-VERSION again once that directory exists, so
/// after a change without a version bump, a later run from the same path verifies against the
/// stale copy and fails on code that is not there. Only the overlays' directories (named with a
/// leading `-`, having no host) are touched, and in them only our crates.
fn clear_unpacked_overlay_copies() -> Result<(), String> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(src) = cargo_home.map(|h| h.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for registry in registries.filter_map(Result::ok) {
        let overlay = registry.file_name().to_string_lossy().starts_with('-');
        if !overlay || !registry.path().is_dir() {
            continue;
        }
        let Ok(unpacked) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for dir in unpacked.filter_map(Result::ok) {
            let name = dir.file_name().to_string_lossy().into_owned();
            let ours = LIBRARY_CRATES
                .iter()
                .any(|krate| is_unpacked_copy_of(&name, krate));
            if ours {
                std::fs::remove_dir_all(dir.path()).map_err(|e| {
                    format!(
                        "cannot remove stale unpacked copy {}: {e}",
                        dir.path().display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Removes our crates' build fingerprints below `fingerprints`, so that verification rebuilds
/// them from the packaged sources. Cargo treats a registry crate's build as fresh as long as
/// its name and version match (registry sources are immutable), so a build of the previous
/// packaging's sources would otherwise be reused. Dependencies keep theirs.
fn clear_fingerprints(fingerprints: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(fingerprints) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = LIBRARY_CRATES.iter().any(|krate| {
            name.strip_prefix(krate)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
        });
        if ours {
            std::fs::remove_dir_all(entry.path()).map_err(|e| {
                format!(
                    "cannot remove stale fingerprint {}: {e}",
                    entry.path().display()
                )
            })?;
        }
    }
    Ok(())
}

/// Whether `dir` (`NAME-VERSION`) is an unpacked copy of `krate`, and not of a crate whose name
/// merely starts with it (`lease-core-extra-0.1.0` is not `lease-core`).
fn is_unpacked_copy_of(dir: &str, krate: &str) -> bool {
    dir.strip_prefix(krate)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
}

/// Runs each example in `names`.
pub(crate) fn examples(
    names: &[&str],
    cargo: impl Fn(&[&str]) -> Result<(), String>,
) -> Result<(), String> {
    for name in names {
        cargo(&[
            "run",
            "--locked",
            "--quiet",
            "-p",
            "lease-examples",
            "--bin",
            name,
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacked_copies_are_recognised_by_exact_name() {
        assert!(is_unpacked_copy_of("lease-core-0.1.0", "lease-core"));
        assert!(is_unpacked_copy_of("lease-cli-12.3.4-rc.1", "lease-cli"));
        assert!(!is_unpacked_copy_of("lease-core-extra-0.1.0", "lease-core"));
        assert!(!is_unpacked_copy_of("lease-core", "lease-core"));
        assert!(!is_unpacked_copy_of("lease-manager-0.1.0", "lease-core"));
    }

    const TREE: &str = "\
lease-core v0.1.0 (/work/crates/lease-core)
async-trait v0.1.89 (proc-macro)
proc-macro2 v1.0.95
tokio v1.54.1
lease-core v0.1.0 (/work/crates/lease-core) (*)
";

    #[test]
    fn names_are_read_from_cargo_tree_output() {
        let names = crate_names(TREE);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["async-trait", "lease-core", "proc-macro2", "tokio"]
        );
    }

    #[test]
    fn forbidden_crates_are_found_by_exact_name() {
        assert!(forbidden_in(TREE, &["kube", "hyper"]).is_empty());
        assert_eq!(forbidden_in(TREE, &["tokio", "kube"]), ["tokio"]);
        // A prefix is not a match.
        assert!(forbidden_in(TREE, &["proc-macro"]).is_empty());
    }

    #[test]
    fn versions_are_read() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\nrust-version = \"1.95\"\n";
        assert_eq!(declared_rust_version(manifest).as_deref(), Some("1.95"));
        assert_eq!(
            rustc_minor_version("rustc 1.95.0 (59807616e 2026-04-14)").as_deref(),
            Some("1.95")
        );
        assert_eq!(rustc_minor_version("nonsense"), None);
    }

    #[test]
    fn every_forbidden_list_names_a_library_crate() {
        for (krate, forbidden) in FORBIDDEN {
            assert!(LIBRARY_CRATES.contains(&krate), "{krate}");
            assert!(!forbidden.is_empty());
        }
    }

    #[test]
    fn every_example_is_run() {
        let root = crate::workspace_root();
        let dir = root.join("examples/src/bin");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".rs"))
                    .map(str::to_owned)
            })
            .collect();
        on_disk.sort();
        let mut run: Vec<String> = LOCAL_EXAMPLES
            .iter()
            .chain(K8S_EXAMPLES.iter())
            .map(|s| (*s).to_owned())
            .collect();
        run.sort();
        assert_eq!(
            run, on_disk,
            "add new examples to LOCAL_EXAMPLES or K8S_EXAMPLES"
        );
    }
}
