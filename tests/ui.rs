//! Compile-time behaviour of the macros: one misuse per file, with the expected `.stderr`.
//! The `.stderr` files depend on the rustc in use (1.95); refresh them with
//! `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/handler/fail/*.rs");
    t.pass("tests/ui/handler/pass/*.rs");
    t.compile_fail("tests/ui/schema/fail/*.rs");
    t.pass("tests/ui/schema/pass/*.rs");
}
