//! Compile-time behaviour of the macros: one misuse per file, with the expected `.stderr`.
//! Refresh the expectations with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/handler/fail/*.rs");
    t.pass("tests/ui/handler/pass/*.rs");
}
