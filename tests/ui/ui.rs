//! Compile-time behaviour of the macros: one misuse per file, with the expected `.stderr`.
//! The `.stderr` files depend on the rustc in use (1.95); refresh them with
//! `TRYBUILD=overwrite cargo test -p prost-db-ui --test ui` and review the diff.
//!
//! The cases that must compile are modules of the `pass` test target (`pass.rs`), built
//! with the workspace's dependencies instead of a second copy in trybuild's.

use std::path::Path;

#[test]
fn misuses_fail_to_compile_with_the_expected_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("handler/fail/*.rs");
    t.compile_fail("schema/fail/*.rs");
}

#[test]
fn every_pass_case_is_compiled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = std::fs::read_to_string(dir.join("pass.rs")).unwrap();
    let mut missing = Vec::new();
    for group in ["handler", "schema"] {
        for entry in std::fs::read_dir(dir.join(group).join("pass")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_stem().unwrap().to_string_lossy();
                let line = format!("#[path = \"{group}/pass/{name}.rs\"]");
                if !listed.contains(&line) {
                    let module = format!("{group}_{name}").replace('-', "_");
                    missing.push(format!("{line}\nmod {module};"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add to tests/ui/pass.rs:\n\n{}",
        missing.join("\n")
    );
}
