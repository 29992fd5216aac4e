//! Guards on the crate's layout: no source file above 600 lines, and `framework` a leaf.

use std::path::{Path, PathBuf};

/// The most lines a source file of the crate may have (test modules aside).
const MAX_LINES: usize = 600;

/// What `framework.rs` may name with `crate::`: identifiers and the error types. The
/// migrator, the outbox, the idempotency store and sagas build on it, so it names none of
/// them.
const FRAMEWORK_MAY_USE: &[&str] = &[
    "ident",
    "error",
    "Error",
    "Result",
    "Identifier",
    "IdentifierKind",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Test modules and test-only helpers are not held to the limit.
fn is_test_file(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("tests.rs" | "test_logs.rs" | "layout_tests.rs")
    )
}

/// The first path segment of every `crate::` path in `code`, `crate::{a, b::c}` included.
fn crate_paths(code: &str) -> Vec<&str> {
    let segment = |s: &str| -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                named.push(&item[..segment(item)]);
            }
        } else {
            named.push(&rest[..segment(rest)]);
        }
    }
    named
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("pool/mod.rs")),
        "the walk of {} missed the crate's modules",
        src.display()
    );
    let mut long: Vec<String> = files
        .iter()
        .filter(|path| !is_test_file(path))
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path)
                .expect("read a source file")
                .lines()
                .count();
            let name = path.strip_prefix(&src).unwrap_or(path).display();
            (lines > MAX_LINES).then(|| format!("{name} ({lines} lines)"))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these files into modules of at most {MAX_LINES} lines, each opening with a `//!` \
         line saying what it owns: {long:?}"
    );
}

#[test]
fn framework_names_only_identifiers_and_errors() {
    let source = include_str!("framework.rs");
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut named = crate_paths(&code);
    assert!(
        named.contains(&"ident"),
        "the check found no `crate::` path in framework.rs: has the file moved?"
    );
    named.retain(|n| !FRAMEWORK_MAY_USE.contains(n));
    assert!(
        named.is_empty(),
        "framework.rs must stay a leaf (it may name only crate::{FRAMEWORK_MAY_USE:?}), but it \
         names crate::{named:?}; move what it needs from there into framework or ident"
    );
    assert!(
        !code.contains("super::"),
        "framework.rs reaches other modules through `super::`; it may name only crate::{FRAMEWORK_MAY_USE:?}"
    );
}

#[test]
fn crate_paths_reads_single_and_grouped_imports() {
    let code = "use crate::ident::{Identifier, render};\nuse crate::{error::Error, outbox};\nlet x = crate::saga::Tx;";
    assert_eq!(crate_paths(code), ["ident", "error", "outbox", "saga"]);
}

/// Where a `sqlx::query*` builder may be made without [`Statements`](crate::Statements):
/// the helper itself, and code that runs on a direct connection of its own.
const RAW_BUILDERS_ALLOWED: &[(&str, &str)] = &[
    ("pool/statement.rs", "the helper"),
    (
        "migrate/",
        "the migrator runs on a direct connection (a migrate URL behind a pooler)",
    ),
    (
        "testing.rs",
        "test databases: direct connections to the server",
    ),
];

/// Every place in `code` (comments and the test module cut) that builds a sqlx statement
/// without the crate's helper, or sets `persistent` by hand; `(line, text)`.
fn raw_builders(code: &str) -> Vec<(usize, String)> {
    const RAW: &[&str] = &[
        "sqlx::query(",
        "sqlx::query::<",
        "sqlx::query_as(",
        "sqlx::query_as::<",
        "sqlx::query_scalar(",
        "sqlx::query_scalar::<",
        "sqlx::query_with(",
        "sqlx::query_as_with(",
        "sqlx::query_scalar_with(",
        ".persistent(",
    ];
    let code = code.split("#[cfg(test)]\nmod tests").next().unwrap_or(code);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.trim();
        if line.starts_with("//") {
            continue;
        }
        let imports_builder = line.starts_with("use sqlx::")
            && ["query,", "query}", "query;", "query_as", "query_scalar"]
                .iter()
                .any(|b| line.contains(b));
        if imports_builder || RAW.iter().any(|r| line.contains(r)) {
            found.push((n + 1, line.to_owned()));
        }
    }
    found
}

#[test]
fn every_statement_is_built_through_the_pooler_safe_helper() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut bypasses = Vec::new();
    let mut scanned = 0;
    for path in &files {
        let name = path
            .strip_prefix(&src)
            .unwrap_or(path)
            .display()
            .to_string();
        let name = name.replace('\\', "/");
        if is_test_file(path)
            || RAW_BUILDERS_ALLOWED
                .iter()
                .any(|(allowed, _)| name.starts_with(allowed))
        {
            continue;
        }
        scanned += 1;
        let code = std::fs::read_to_string(path).expect("read a source file");
        for (line, text) in raw_builders(&code) {
            bypasses.push(format!("{name}:{line}: {text}"));
        }
    }
    assert!(
        scanned > 20,
        "the walk of {} found too few files",
        src.display()
    );
    assert!(
        bypasses.is_empty(),
        "build statements with `Db::query` / `query_as` / `query_scalar` (or `Statements` where \
         there is no Db), and run those outside a transaction through `Db::autocommit`, so they \
         hold behind a transaction pooler; statements without parameters may use \
         `sqlx::raw_sql`. Bypasses:\n{}",
        bypasses.join("\n")
    );
}

#[test]
fn raw_builders_finds_builders_and_hand_set_persistence() {
    let code = "use sqlx::{query, Row};\n\
                // sqlx::query(\"in a comment\")\n\
                let a = db.query(\"SELECT 1\");\n\
                let b = sqlx::query_scalar::<_, i64>(\"SELECT 1\");\n\
                let c = sqlx::raw_sql(\"SELECT 1\");\n\
                let d = q.persistent(false);\n\
                #[cfg(test)]\nmod tests {\n sqlx::query(\"x\");\n}";
    let lines: Vec<usize> = raw_builders(code).into_iter().map(|(n, _)| n).collect();
    assert_eq!(lines, [1, 4, 6]);
}
