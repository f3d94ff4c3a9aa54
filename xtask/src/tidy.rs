//! Tidy checks on the source tree: every crate and module documents itself with `//!`, no
//! debugging leftovers (`dbg!`, `todo!`, `unimplemented!`) remain outside tests, ARCHITECTURE.md's
//! code map names every crate and only paths that exist ([`code_map`]), and every crate's
//! dependencies keep ARCHITECTURE.md's dependency rules ([`dependency_rules`]), and the
//! READMEs' `cargo run` commands each find a binary to run ([`run_commands`]).

mod code_map;
mod dependency_rules;
mod markdown;
mod run_commands;

use std::fs;
use std::path::{Path, PathBuf};

/// The macros that must not appear outside tests, spelled so this file does not match itself.
const FORBIDDEN_MACROS: [&str; 3] = [
    concat!("dbg", "!("),
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
];

/// Checks the tree below `root`; returns every problem found.
pub(crate) fn check(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "examples", "downstream-app", "fuzz"] {
        collect_rust_files(&root.join(dir), &mut files);
    }
    if files.is_empty() {
        problems.push(format!("no Rust files found below {}", root.display()));
    }
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", file.display()));
                continue;
            }
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(check_file(&shown, &text));
    }
    code_map::check(root, &mut problems);
    dependency_rules::check(root, &mut problems);
    run_commands::check(root, &mut problems);
    if problems.is_empty() {
        println!("tidy: {} files checked, no problems", files.len());
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks one file's text; `name` is how problems refer to it.
fn check_file(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let first_code = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("#!["));
    if !first_code.is_some_and(|line| line.starts_with("//!")) {
        problems.push(format!("{name}: does not begin with a `//!` doc comment"));
    }
    // Test code (integration tests, and what follows `#[cfg(test)]`) may use anything.
    let is_test_file = name.contains("/tests/") || name.contains("/benches/");
    if !is_test_file {
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for forbidden in FORBIDDEN_MACROS {
                if line.contains(forbidden) {
                    problems.push(format!(
                        "{name}:{}: `{}` outside tests",
                        number + 1,
                        forbidden.trim_end_matches('(')
                    ));
                }
            }
        }
    }
    problems
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if file_name != "target" && !file_name.starts_with('.') {
                collect_rust_files(&path, out);
            }
        } else if file_name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        let root = crate::workspace_root();
        if let Err(problems) = check(&root) {
            panic!("tidy problems:\n{}", problems.join("\n"));
        }
    }

    #[test]
    fn a_file_without_module_doc_is_reported() {
        let problems = check_file("crates/x/src/lib.rs", "pub fn f() {}\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("`//!`"));
    }

    #[test]
    fn inner_attributes_may_precede_the_doc() {
        assert!(check_file("a/src/lib.rs", "#![forbid(unsafe_code)]\n//! Doc.\n").is_empty());
    }

    #[test]
    fn debugging_macros_are_reported_outside_tests_only() {
        let dbg = concat!("dbg", "!(x)");
        let text = format!(
            "//! Doc.\nfn f() {{ {dbg}; }}\n#[cfg(test)]\nmod t {{ fn g() {{ {dbg}; }} }}\n"
        );
        let problems = check_file("a/src/lib.rs", &text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("a/src/lib.rs:2:"));
        assert!(check_file("a/tests/t.rs", &text).is_empty());
    }
}
