//! The READMEs' `cargo run -p NAME` commands without `--bin` must each find one binary to run:
//! the package has a single binary target, or says which one with `default-run`. Otherwise
//! cargo refuses ("could not determine which binary to run"), and a newcomer's first command
//! fails.

use std::fs;
use std::path::Path;

use super::dependency_rules::{Manifest, members, parse_manifest};

/// The READMEs whose commands a newcomer copies.
const READMES: [&str; 3] = [
    "README.md",
    "crates/lease-cli/README.md",
    "examples/README.md",
];

/// Checks every `cargo run -p NAME` (without `--bin`) in [`READMES`] below `root`.
pub(super) fn check(root: &Path, problems: &mut Vec<String>) {
    let Ok(workspace) = fs::read_to_string(root.join("Cargo.toml")) else {
        problems.push("Cargo.toml: cannot read".to_owned());
        return;
    };
    let packages: Vec<(String, Manifest)> = members(&workspace)
        .into_iter()
        .filter_map(|member| {
            let text = fs::read_to_string(root.join(&member).join("Cargo.toml")).ok()?;
            Some((member, parse_manifest(&text)))
        })
        .collect();
    for readme in READMES {
        let Ok(text) = fs::read_to_string(root.join(readme)) else {
            problems.push(format!("{readme}: cannot read"));
            continue;
        };
        for (number, package) in run_packages(&text) {
            let found = packages
                .iter()
                .find(|(_, m)| m.name.as_deref() == Some(package.as_str()));
            let problem = match found {
                None => Some(format!("no workspace member is named {package}")),
                Some((member, manifest)) => {
                    let bins = manifest
                        .declared_bins
                        .max(discovered_bins(&root.join(member)));
                    (!manifest.default_run && bins > 1).then(|| {
                        format!(
                            "{package} has {bins} binaries and no `default-run`: cargo cannot tell which to run"
                        )
                    })
                }
            };
            if let Some(problem) = problem {
                problems.push(format!(
                    "{readme}:{number}: `cargo run -p {package}`: {problem}"
                ));
            }
        }
    }
}

/// The packages that `cargo run` commands without `--bin` name, with their line numbers.
fn run_packages(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for command in line.split("cargo run").skip(1) {
            // The command ends at a comment, a code span's end or a table cell's end.
            let command = command.split(['#', '`', '|']).next().unwrap_or_default();
            let words: Vec<&str> = command.split_whitespace().collect();
            if words.contains(&"--bin") {
                continue;
            }
            let package = words
                .windows(2)
                .find(|w| w[0] == "-p" || w[0] == "--package")
                .map(|w| w[1]);
            if let Some(package) = package {
                out.push((index + 1, package.to_owned()));
            }
        }
    }
    out
}

/// The binaries cargo finds by itself below `member`: `src/main.rs` and each `src/bin` entry.
fn discovered_bins(member: &Path) -> usize {
    let main = usize::from(member.join("src/main.rs").is_file());
    let bin_dir = fs::read_dir(member.join("src/bin")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let path = e.path();
                path.extension().is_some_and(|x| x == "rs") || path.join("main.rs").is_file()
            })
            .count()
    });
    main + bin_dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_a_package_and_no_binary_are_found() {
        let text = "\
cargo run --release -p lease-cli -- demo   # the demo
Run one with `cargo run -p lease-examples --bin <name>`; or `cargo run --package x`.
| a | `cargo run -p lease-examples --bin fencing` |
cargo run -- no package here
";
        assert_eq!(
            run_packages(text),
            [(1, "lease-cli".to_owned()), (2, "x".to_owned())]
        );
    }

    #[test]
    fn a_package_with_two_binaries_and_no_default_is_reported() {
        let dir = std::env::temp_dir().join(format!("tidy-run-{}", std::process::id()));
        let member = dir.join("crates/two");
        fs::create_dir_all(member.join("src/bin")).unwrap();
        fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/two\"]\n",
        )
        .unwrap();
        fs::write(member.join("src/main.rs"), "").unwrap();
        fs::write(member.join("src/bin/shim.rs"), "").unwrap();
        fs::write(member.join("Cargo.toml"), "[package]\nname = \"two\"\n").unwrap();
        for readme in READMES {
            let path = dir.join(readme);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "cargo run -p two -- demo\n").unwrap();
        }
        let mut problems = Vec::new();
        check(&dir, &mut problems);
        assert_eq!(problems.len(), READMES.len(), "{problems:#?}");
        assert!(
            problems[0].contains("has 2 binaries and no `default-run`"),
            "{problems:#?}"
        );
        fs::write(
            member.join("Cargo.toml"),
            "[package]\nname = \"two\"\ndefault-run = \"two\"\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        check(&dir, &mut problems);
        assert_eq!(problems, Vec::<String>::new());
        fs::remove_dir_all(&dir).unwrap();
    }
}
