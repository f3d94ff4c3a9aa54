//! ARCHITECTURE.md's dependency rules hold: the table under `## Dependency rules` says which
//! workspace crates each member's `Cargo.toml` may name, and which crates it must never name;
//! this reads every member's manifest and holds it against its row.
//!
//! The manifests are read line by line (xtask has no TOML parser, by design): a section header
//! says what kind of dependency the keys below it are (`[dependencies]`, `[build-dependencies]`
//! and their `[target.'cfg(..)'.…]` forms are normal ones; `[dev-dependencies]` and its target
//! form dev ones; `[dependencies.name]` names one), and a key at the start of a line, outside any
//! inline table or array that an earlier line opened, is a dependency's name (`name.workspace`
//! counts as `name`; `package = "…"` on the same line renames it).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::markdown::{code_spans, section};

/// The heading of the rules in ARCHITECTURE.md.
pub(crate) const HEADING: &str = "## Dependency rules";

/// A crate, a workspace crate its dev-dependencies name against the rules, and why that is
/// still so.
type Exception = (&'static str, &'static str, &'static str);

/// Dev-dependencies that break the rules because a store's own tests run the manager over it
/// The target is a store that dev-depends on lease-testkit alone; these end-to-end tests need a
/// home above both.
const DEV_DEPENDENCIES_OF_END_TO_END_TESTS: &[Exception] = &[
    (
        "lease-store-k8s",
        "lease-manager",
        "tests/failover.rs, tests/deletion.rs, tests/clientgo.rs and the doc examples of \
         src/events.rs and src/leader_election_record.rs run the manager over the store",
    ),
    (
        "lease-store-postgres",
        "lease-manager",
        "tests/processes.rs runs the manager over the store",
    ),
];

/// One row of the rules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Rule {
    krate: String,
    /// Workspace crates its normal dependencies may name.
    dependencies: BTreeSet<String>,
    /// Further workspace crates its dev-dependencies may name.
    dev_dependencies: BTreeSet<String>,
    /// Crates no section may name; `*` for every crate.
    never: BTreeSet<String>,
}

/// What a dependency is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `[dependencies]`, `[build-dependencies]` and their target-specific forms.
    Normal,
    /// `[dev-dependencies]` and its target-specific form.
    Dev,
}

/// What the check reads of one member's `Cargo.toml`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Manifest {
    /// `[package] name`.
    pub(super) name: Option<String>,
    /// `[package] default-run` is set.
    pub(super) default_run: bool,
    /// How many `[[bin]]` targets it declares.
    pub(super) declared_bins: usize,
    dependencies: Vec<(Kind, String)>,
}

/// Checks every workspace member's manifest below `root` against ARCHITECTURE.md's rules.
/// Exceptions that are no longer needed are printed as notes, not reported as problems, so the
/// tree can move ahead of this list.
pub(crate) fn check(root: &Path, problems: &mut Vec<String>) {
    let read = |path: &str| fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: {e}"));
    let (architecture, workspace) = match (read("ARCHITECTURE.md"), read("Cargo.toml")) {
        (Ok(a), Ok(w)) => (a, w),
        (a, w) => {
            problems.extend(a.err());
            problems.extend(w.err());
            return;
        }
    };
    let mut manifests = Vec::new();
    for member in members(&workspace) {
        match read(&format!("{member}/Cargo.toml")) {
            Ok(text) => manifests.push((member, parse_manifest(&text))),
            Err(e) => problems.push(e),
        }
    }
    let exceptions: Vec<Exception> = DEV_DEPENDENCIES_OF_END_TO_END_TESTS.to_vec();
    let (found, notes) = problems_of(&architecture, &manifests, &exceptions);
    for note in notes {
        println!("tidy: note: {note}");
    }
    problems.extend(found);
}

/// The `members` of the root manifest's `[workspace]`.
pub(super) fn members(workspace: &str) -> Vec<String> {
    let Some(start) = workspace.lines().position(|line| {
        line.trim_start()
            .strip_prefix("members")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in workspace.lines().skip(start) {
        let line = strip_comment(line);
        let items = line.split_once('[').map_or(line, |(_, rest)| rest);
        let (items, last) = match items.split_once(']') {
            Some((items, _)) => (items, true),
            None => (items, false),
        };
        out.extend(
            items
                .split(',')
                .map(|item| item.trim().trim_matches('"'))
                .filter(|item| !item.is_empty())
                .map(str::to_owned),
        );
        if last {
            break;
        }
    }
    out
}

/// Reads a member's manifest; see the module documentation for what is understood.
pub(super) fn parse_manifest(text: &str) -> Manifest {
    let mut manifest = Manifest::default();
    let mut table = String::new();
    // Brackets and braces opened by earlier lines and not closed yet.
    let mut depth = 0_usize;
    for raw in text.lines() {
        let line = strip_comment(raw).trim();
        if depth == 0 && line.starts_with('[') {
            if line.starts_with("[[bin]]") {
                manifest.declared_bins += 1;
            }
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            if let Some((kind, Some(name))) = dependency_section(&table) {
                manifest.dependencies.push((kind, name));
            }
            continue;
        }
        if depth == 0
            && let Some((key, value)) = line.split_once('=')
        {
            let key = key.trim().trim_matches('"');
            if table == "package" && key == "name" && manifest.name.is_none() {
                manifest.name = Some(value.trim().trim_matches('"').to_owned());
            } else if table == "package" && key == "default-run" {
                manifest.default_run = true;
            } else if let Some((kind, None)) = dependency_section(&table) {
                let name = renamed(value).unwrap_or_else(|| {
                    key.split('.')
                        .next()
                        .unwrap_or(key)
                        .trim_matches('"')
                        .to_owned()
                });
                manifest.dependencies.push((kind, name));
            }
        }
        depth = nesting(line, depth);
    }
    manifest
}

/// What kind of dependencies a section holds, and the dependency it names itself
/// (`dependencies.foo`); `None` for a section of no dependencies.
fn dependency_section(section: &str) -> Option<(Kind, Option<String>)> {
    let section = match section.strip_prefix("target.") {
        // `target.'cfg(unix)'.dependencies`: what follows the quoted or dotted target.
        Some(rest) => match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split_once('\'')?.1.strip_prefix('.')?,
            None => rest.split_once('.')?.1,
        },
        None => section,
    };
    let (table, name) = match section.split_once('.') {
        Some((table, name)) => (table, Some(name.trim_matches('"').to_owned())),
        None => (section, None),
    };
    let kind = match table {
        "dependencies" | "build-dependencies" => Kind::Normal,
        "dev-dependencies" => Kind::Dev,
        _ => return None,
    };
    Some((kind, name))
}

/// The `package = "…"` a dependency's inline table renames it to, if on the same line.
fn renamed(value: &str) -> Option<String> {
    let at = value.find("package")?;
    let rest = value[at + "package".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let quoted = rest.trim_start().strip_prefix('"')?;
    Some(quoted.split('"').next()?.to_owned())
}

/// `line` without a trailing `#` comment (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The nesting of inline tables and arrays after `line`, from `depth` before it.
fn nesting(line: &str, mut depth: usize) -> usize {
    let mut in_string = false;
    for c in line.chars() {
        match c {
            '"' => in_string = !in_string,
            '[' | '{' if !in_string => depth += 1,
            ']' | '}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// The rules table of `architecture`, by crate, or the problems reading it.
fn rules(architecture: &str) -> Result<Vec<Rule>, Vec<String>> {
    let Some(body) = section(architecture, HEADING) else {
        return Err(vec![format!("ARCHITECTURE.md: no `{HEADING}` section")]);
    };
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    // The first row of the table is its header, the second the line under it.
    for (number, row) in body
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .enumerate()
        .skip(2)
    {
        let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
        let names = |i: usize| -> BTreeSet<String> {
            cells
                .get(i)
                .map(|c| code_spans(c))
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let krate: Vec<String> = names(0).into_iter().collect();
        if cells.len() != 4 || krate.len() != 1 {
            problems.push(format!(
                "ARCHITECTURE.md: dependency rules row {}: want 4 cells, the first one crate in \
                 backticks: {row}",
                number + 1
            ));
            continue;
        }
        rules.push(Rule {
            krate: krate[0].clone(),
            dependencies: names(1),
            dev_dependencies: names(2),
            never: names(3),
        });
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

/// The problems of `manifests` (member directory, manifest) against the rules of
/// `architecture`, allowing `exceptions`; and notes on exceptions no longer needed.
fn problems_of(
    architecture: &str,
    manifests: &[(String, Manifest)],
    exceptions: &[Exception],
) -> (Vec<String>, Vec<String>) {
    let rules = match rules(architecture) {
        Ok(rules) => rules,
        Err(problems) => return (problems, Vec::new()),
    };
    let mut problems = Vec::new();
    let workspace: BTreeSet<&str> = manifests
        .iter()
        .filter_map(|(_, m)| m.name.as_deref())
        .collect();
    let mut used = BTreeSet::new();
    for (member, manifest) in manifests {
        let Some(name) = manifest.name.as_deref() else {
            problems.push(format!("{member}/Cargo.toml: no [package] name"));
            continue;
        };
        let Some(rule) = rules.iter().find(|r| r.krate == name) else {
            problems.push(format!(
                "{member}: crate `{name}` has no row in ARCHITECTURE.md's dependency rules"
            ));
            continue;
        };
        for (kind, dependency) in &manifest.dependencies {
            let dependency = dependency.as_str();
            if rule.never.contains("*") || rule.never.contains(dependency) {
                let among = match kind {
                    Kind::Normal => "dependencies",
                    Kind::Dev => "dev-dependencies",
                };
                problems.push(format!(
                    "{member}/Cargo.toml: `{name}` names `{dependency}` among its {among}, which \
                     its dependency rule never allows"
                ));
                continue;
            }
            if !workspace.contains(dependency) {
                continue;
            }
            let allowed = rule.dependencies.contains(dependency)
                || (*kind == Kind::Dev && rule.dev_dependencies.contains(dependency));
            let excepted = *kind == Kind::Dev
                && exceptions
                    .iter()
                    .any(|&(krate, dep, _)| krate == name && dep == dependency);
            if excepted && !allowed {
                used.insert((name, dependency));
            } else if !allowed {
                let what = match kind {
                    Kind::Normal => "depends on",
                    Kind::Dev => "dev-depends on",
                };
                problems.push(format!(
                    "{member}/Cargo.toml: `{name}` {what} `{dependency}`, which its row in \
                     ARCHITECTURE.md's dependency rules does not allow"
                ));
            }
        }
    }
    for rule in &rules {
        if !workspace.contains(rule.krate.as_str()) {
            problems.push(format!(
                "ARCHITECTURE.md: the dependency rules have a row for `{}`, which is no \
                 workspace member",
                rule.krate
            ));
        }
    }
    let notes = exceptions
        .iter()
        .filter(|&&(krate, dep, _)| !used.contains(&(krate, dep)))
        .map(|(krate, dep, why)| {
            format!(
                "the exception for `{krate}` dev-depending on `{dep}` ({why}) is no longer \
                 needed: remove it from xtask/src/tidy/dependency_rules.rs"
            )
        })
        .collect();
    (problems, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "\
## Dependency rules

| Crate | Dependencies | Dev-dependencies too | Never |
|---|---|---|---|
| `core` | | | `kube` |
| `store` | `core` | `testkit` | `kube` |
| `testkit` | `core` | | |
| `manager` | `core` | `testkit`, `store` | |
| `tool` | | | every crate (`*`) |

## Next
";

    fn manifest(name: &str, deps: &[(Kind, &str)]) -> (String, Manifest) {
        (
            format!("crates/{name}"),
            Manifest {
                name: Some(name.to_owned()),
                dependencies: deps.iter().map(|&(k, d)| (k, d.to_owned())).collect(),
                ..Manifest::default()
            },
        )
    }

    fn tree() -> Vec<(String, Manifest)> {
        vec![
            manifest("core", &[(Kind::Normal, "serde")]),
            manifest(
                "store",
                &[
                    (Kind::Normal, "core"),
                    (Kind::Dev, "testkit"),
                    (Kind::Dev, "core"),
                ],
            ),
            manifest("testkit", &[(Kind::Normal, "core")]),
            manifest(
                "manager",
                &[
                    (Kind::Normal, "core"),
                    (Kind::Dev, "store"),
                    (Kind::Dev, "testkit"),
                ],
            ),
            manifest("tool", &[]),
        ]
    }

    #[test]
    fn a_tree_that_keeps_the_rules_passes() {
        let (problems, notes) = problems_of(RULES, &tree(), &[]);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(notes.is_empty(), "{notes:#?}");
    }

    #[test]
    fn a_store_depending_on_the_manager_is_reported() {
        let mut tree = tree();
        tree[1]
            .1
            .dependencies
            .push((Kind::Normal, "manager".to_owned()));
        let (problems, _) = problems_of(RULES, &tree, &[]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("`store` depends on `manager`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_dev_dependency_is_not_a_dependency() {
        // The manager may dev-depend on the store, not depend on it.
        let mut tree = tree();
        tree[3]
            .1
            .dependencies
            .push((Kind::Normal, "store".to_owned()));
        let (problems, _) = problems_of(RULES, &tree, &[]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("`manager` depends on `store`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_forbidden_dev_dependency_is_reported_unless_excepted() {
        let mut tree = tree();
        tree[1]
            .1
            .dependencies
            .push((Kind::Dev, "manager".to_owned()));
        let (problems, _) = problems_of(RULES, &tree, &[]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("`store` dev-depends on `manager`"),
            "{problems:#?}"
        );
        let exception = [("store", "manager", "a bench")];
        let (problems, notes) = problems_of(RULES, &tree, &exception);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(notes.is_empty(), "{notes:#?}");
        // An exception covers dev-dependencies only.
        tree[1]
            .1
            .dependencies
            .push((Kind::Normal, "manager".to_owned()));
        let (problems, _) = problems_of(RULES, &tree, &exception);
        assert_eq!(problems.len(), 1, "{problems:#?}");
    }

    #[test]
    fn an_exception_no_longer_needed_is_a_note_not_a_problem() {
        let (problems, notes) = problems_of(RULES, &tree(), &[("store", "manager", "a bench")]);
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(notes.len(), 1, "{notes:#?}");
        assert!(notes[0].contains("no longer needed"), "{notes:#?}");
    }

    #[test]
    fn a_never_crate_is_reported_in_any_section() {
        let mut tree = tree();
        tree[0].1.dependencies.push((Kind::Dev, "kube".to_owned()));
        tree[4]
            .1
            .dependencies
            .push((Kind::Normal, "anything".to_owned()));
        let (problems, _) = problems_of(RULES, &tree, &[]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("`core` names `kube`"), "{problems:#?}");
        assert!(
            problems[1].contains("`tool` names `anything`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn members_and_rows_must_match() {
        let mut tree = tree();
        tree.push(manifest("bench", &[]));
        tree.retain(|(_, m)| m.name.as_deref() != Some("tool"));
        let (problems, _) = problems_of(RULES, &tree, &[]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("`bench` has no row"), "{problems:#?}");
        assert!(problems[1].contains("row for `tool`"), "{problems:#?}");
    }

    #[test]
    fn a_malformed_row_is_reported() {
        let rules = RULES.replace("| `tool` | | | every crate (`*`) |", "| tool | | |");
        let (problems, _) = problems_of(&rules, &tree(), &[]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("want 4 cells"), "{problems:#?}");
    }

    #[test]
    fn manifests_are_read_by_section() {
        let text = r#"
[package]
name = "lease-x" # the crate
version.workspace = true

[features]
fast = ["dep:lease-y"]

[dependencies]
lease-core.workspace = true
tokio = { workspace = true, features = [
    "rt",
    "sync",
] }
renamed = { package = "lease-z", path = "../z" }

[target.'cfg(target_os = "linux")'.dependencies]
rustix = { workspace = true, features = ["time"] }

[build-dependencies]
cc = "1"

[dev-dependencies]
lease-testkit = { path = "../lease-testkit" }

[target.'cfg(loom)'.dev-dependencies]
loom = "0.7"

[dependencies.serde]
version = "1"
features = ["derive"]

[lints]
workspace = true
"#;
        let manifest = parse_manifest(text);
        assert_eq!(manifest.name.as_deref(), Some("lease-x"));
        assert!(!manifest.default_run);
        assert_eq!(manifest.declared_bins, 0);
        let bins = parse_manifest(
            "[package]\nname = \"c\"\ndefault-run = \"c\"\n\n[[bin]]\nname = \"c\"\n\n[[bin]]\nname = \"d\"\n",
        );
        assert!(bins.default_run);
        assert_eq!(bins.declared_bins, 2);
        let normal: Vec<&str> = manifest
            .dependencies
            .iter()
            .filter(|(k, _)| *k == Kind::Normal)
            .map(|(_, d)| d.as_str())
            .collect();
        let dev: Vec<&str> = manifest
            .dependencies
            .iter()
            .filter(|(k, _)| *k == Kind::Dev)
            .map(|(_, d)| d.as_str())
            .collect();
        assert_eq!(
            normal,
            ["lease-core", "tokio", "lease-z", "rustix", "cc", "serde"]
        );
        assert_eq!(dev, ["lease-testkit", "loom"]);
    }

    #[test]
    fn members_are_read_from_the_workspace() {
        let workspace = "[workspace]\nresolver = \"2\"\nmembers = [\n    \"crates/a\", # one\n    \
                         \"xtask\",\n]\n[workspace.package]\n";
        assert_eq!(members(workspace), ["crates/a", "xtask"]);
    }
}
