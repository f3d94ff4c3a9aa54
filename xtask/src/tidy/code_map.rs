//! ARCHITECTURE.md's code map stays true: every crate directory has a section, every section
//! names a directory that exists, and every file or directory a section names exists.
//!
//! The rule, as the code map's introduction states it: a section's heading names its
//! directories in backticks (`` ### `crates/lease-core` ``); in its body, a name in backticks
//! made only of path characters and ending in `.rs` or `/` is a path that exists relative to
//! the section's `src/`, to its directory, or to the workspace root.

use std::fs;
use std::path::Path;

use super::markdown::{code_spans, section, subsections};

/// The heading of the code map in ARCHITECTURE.md.
pub(crate) const HEADING: &str = "## Code map";

/// Checks ARCHITECTURE.md's code map against the tree below `root`.
pub(crate) fn check(root: &Path, problems: &mut Vec<String>) {
    let architecture = match fs::read_to_string(root.join("ARCHITECTURE.md")) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("ARCHITECTURE.md: cannot read: {e}"));
            return;
        }
    };
    let crate_dirs = crate_dirs(root);
    let exists = |path: &str| root.join(path).exists();
    problems.extend(problems_of(&architecture, &crate_dirs, exists));
}

/// The directories the code map must have a section for: each directory under `crates/` with
/// a `Cargo.toml`, and `xtask`, as paths from the workspace root.
fn crate_dirs(root: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(|n| format!("crates/{n}")))
        .collect();
    dirs.sort();
    dirs.push("xtask".to_owned());
    dirs
}

/// Whether `span` is written as a path: path characters only, ending in `.rs` or `/`.
fn is_path(span: &str) -> bool {
    (span.ends_with(".rs") || span.ends_with('/'))
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// The problems of the code map in `architecture`, given the crate directories that must have
/// a section and `exists` (whether a path from the workspace root exists).
fn problems_of(
    architecture: &str,
    crate_dirs: &[String],
    exists: impl Fn(&str) -> bool,
) -> Vec<String> {
    let Some(map) = section(architecture, HEADING) else {
        return vec![format!("ARCHITECTURE.md: no `{HEADING}` section")];
    };
    let mut problems = Vec::new();
    let mut named = Vec::new();
    for (heading, body) in subsections(map) {
        let dirs: Vec<String> = code_spans(heading)
            .iter()
            .map(|dir| dir.trim_end_matches('/').to_owned())
            .collect();
        if dirs.is_empty() {
            problems.push(format!(
                "ARCHITECTURE.md: code map section \"### {heading}\" names no directory in \
                 backticks"
            ));
        }
        for dir in &dirs {
            if !exists(dir) {
                problems.push(format!(
                    "ARCHITECTURE.md: code map section \"### {heading}\" names {dir}, which does \
                     not exist"
                ));
            }
        }
        for path in code_spans(body).iter().filter(|span| is_path(span)) {
            let found = dirs.iter().any(|dir| {
                exists(&format!("{dir}/src/{path}")) || exists(&format!("{dir}/{path}"))
            }) || exists(path);
            if !found {
                problems.push(format!(
                    "ARCHITECTURE.md: code map section \"### {heading}\" names `{path}`, which is \
                     neither in {} nor in the workspace root",
                    dirs.iter()
                        .map(|d| format!("{d}/src/ or {d}/"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        named.extend(dirs);
    }
    for dir in crate_dirs {
        if !named.contains(dir) {
            problems.push(format!(
                "ARCHITECTURE.md: the code map has no section for {dir} (add a heading \
                 \"### `{dir}`\")"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const MAP: &str = "\
# Architecture

## Code map

### `crates/a`

`lib.rs` and `parts/one.rs`, with `parts/`; its tests in `tests/t.rs`; see
`crates/b/src/x.rs`. Not paths: `Store`, `<db>-sessions/`, `cargo
test`.

### `xtask`

`main.rs`.

## Invariants
";

    fn tree(paths: &[&str]) -> impl Fn(&str) -> bool {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        move |path: &str| {
            let path = path.trim_end_matches('/');
            paths
                .iter()
                .any(|p| p == path || p.starts_with(&format!("{path}/")))
        }
    }

    const TREE: [&str; 6] = [
        "crates/a/src/lib.rs",
        "crates/a/src/parts/one.rs",
        "crates/a/tests/t.rs",
        "crates/b/src/x.rs",
        "xtask/src/main.rs",
        "crates/b/Cargo.toml",
    ];

    fn dirs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_true_code_map_passes() {
        let problems = problems_of(MAP, &dirs(&["crates/a", "xtask"]), tree(&TREE));
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_crate_without_a_section_is_reported() {
        let problems = problems_of(MAP, &dirs(&["crates/a", "crates/b", "xtask"]), tree(&TREE));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("no section for crates/b"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_named_file_that_is_gone_is_reported() {
        let gone: Vec<&str> = TREE
            .iter()
            .copied()
            .filter(|p| !p.ends_with("one.rs"))
            .collect();
        let problems = problems_of(MAP, &dirs(&["crates/a", "xtask"]), tree(&gone));
        // `parts/` is gone with its only file.
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("`parts/one.rs`"), "{problems:#?}");
        assert!(problems[1].contains("`parts/`"), "{problems:#?}");
    }

    #[test]
    fn a_section_for_a_missing_directory_is_reported() {
        let map = MAP.replace("### `xtask`", "### `crates/gone`");
        let problems = problems_of(&map, &dirs(&["crates/a"]), tree(&TREE));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("names crates/gone, which does not exist")),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_page_without_a_code_map_is_reported() {
        let problems = problems_of("# Architecture\n", &[], tree(&TREE));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("no `## Code map` section"));
    }

    /// A fake workspace on disk: the same rule through the file system.
    #[test]
    fn a_fake_tree_on_disk_is_checked() {
        let root = std::env::temp_dir().join(format!("xtask-code-map-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path: PathBuf = root.join(path);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            }
            fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        };
        write("ARCHITECTURE.md", MAP);
        for path in TREE {
            write(path, "");
        }
        write("crates/a/Cargo.toml", "");
        let mut problems = Vec::new();
        check(&root, &mut problems);
        // crates/b has a Cargo.toml and no section.
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("no section for crates/b"),
            "{problems:#?}"
        );
        fs::remove_file(root.join("crates/a/src/parts/one.rs")).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        check(&root, &mut problems);
        assert!(
            problems.iter().any(|p| p.contains("`parts/one.rs`")),
            "{problems:#?}"
        );
        let _ = fs::remove_dir_all(&root);
    }
}
