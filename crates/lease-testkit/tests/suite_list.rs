//! The list of conformance cases against the sources of the cases. The compiler already
//! rejects a listed case that does not exist and (`deny(dead_code)`) a case function that is
//! not listed; this checks what it cannot see: a clause file that is not compiled at all, a
//! name listed twice, and that every public case function of `clauses/<clause>.rs` is listed
//! under `<clause>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use lease_testkit::suite::{CASES, CLAUSES};

/// The files of `src/suite/clauses/` that hold no cases.
const NOT_CLAUSES: &[&str] = &["mod", "support"];

/// Each clause file's stem with the names of its `pub async fn`s, in file order.
fn case_functions() -> BTreeMap<String, Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/suite/clauses");
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name")
            .to_owned();
        if path.extension().is_none_or(|e| e != "rs") || NOT_CLAUSES.contains(&stem.as_str()) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a readable source file");
        let functions = text
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("pub async fn "))
            .map(|rest| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        files.insert(stem, functions);
    }
    files
}

#[test]
fn every_clause_file_is_a_listed_clause_and_its_cases_are_listed_under_it() {
    let files = case_functions();
    let listed: BTreeMap<String, Vec<String>> = CLAUSES
        .iter()
        .map(|(clause, cases)| {
            (
                (*clause).to_owned(),
                cases.iter().map(|c| (*c).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        listed.keys().collect::<Vec<_>>(),
        "the clause files of src/suite/clauses differ from the clauses of the case list"
    );
    for (clause, functions) in &files {
        assert_eq!(
            functions, &listed[clause],
            "the public case functions of clauses/{clause}.rs differ from the list's {clause} \
             (or are in another order)"
        );
    }
}

#[test]
fn cases_are_the_clauses_cases_in_order_each_once() {
    let flattened: Vec<&str> = CLAUSES
        .iter()
        .flat_map(|(_, cases)| cases.iter().copied())
        .collect();
    assert_eq!(CASES, flattened.as_slice());
    let unique: BTreeSet<&str> = CASES.iter().copied().collect();
    assert_eq!(unique.len(), CASES.len(), "a case name is listed twice");
    let clauses: BTreeSet<&str> = CLAUSES.iter().map(|(clause, _)| *clause).collect();
    assert_eq!(clauses.len(), CLAUSES.len(), "a clause is listed twice");
}
