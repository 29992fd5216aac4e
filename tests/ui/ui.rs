//! Compile-time behaviour of the macros: one misuse per file, with the expected `.stderr`.
//! The `.stderr` files depend on the rustc in use (1.95); refresh them with
//! `TRYBUILD=overwrite cargo test -p prost-db-ui --test ui` and review the diff.
//!
//! The cases that must compile are test targets of this package (see its `Cargo.toml`),
//! built with the workspace's dependencies instead of a second copy in trybuild's.

use std::path::Path;

#[test]
fn misuses_fail_to_compile_with_the_expected_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("handler/fail/*.rs");
    t.compile_fail("schema/fail/*.rs");
}

#[test]
fn every_pass_case_is_a_test_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let mut missing = Vec::new();
    for group in ["handler", "schema"] {
        for entry in std::fs::read_dir(dir.join(group).join("pass")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_stem().unwrap().to_string_lossy();
                let line = format!("path = \"{group}/pass/{name}.rs\"");
                if !manifest.contains(&line) {
                    missing.push(format!(
                        "[[test]]\nname = \"{group}-pass-{name}\"\n{line}\nharness = false\n"
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add to tests/ui/Cargo.toml:\n\n{}",
        missing.join("\n")
    );
}
