//! Compile-fail and compile-pass tests of the macros; `.stderr` files depend on the pinned
//! rustc. Refresh them with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/schema/fail/*.rs");
    t.pass("tests/ui/schema/pass/*.rs");
}
