//! What a statement is, from its first keywords alone: most statements of a migration
//! (indexes, views, functions, grants, data) cannot change a table, and are not parsed.

use super::lex::first_words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Cannot change a table, a type or the search path.
    Ignore,
    /// Parsed by `parse::Parser::statement`.
    Model,
    /// `SELECT`/`WITH`/`VALUES`/`TABLE`: changes nothing unless it is `SELECT ... INTO`, sets
    /// the search path through `set_config`, or calls a routine that runs DDL.
    Query,
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE`/`CALL`: changes nothing unless it calls a routine that
    /// runs DDL.
    Call,
    /// `DO`: the body is analysed.
    Do,
    /// `CREATE FUNCTION`/`PROCEDURE`: the body is analysed, for later calls.
    Routine,
    /// `DROP EXTENSION ... CASCADE`, `DROP OWNED`, `IMPORT FOREIGN SCHEMA`, `DISCARD ALL`...:
    /// handled one by one.
    Special,
    /// Not a statement the catalog recognises.
    Unknown,
}

fn is(word: Option<&&str>, keyword: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

fn any(word: Option<&&str>, keywords: &[&str]) -> bool {
    keywords.iter().any(|k| is(word, k))
}

const HARMLESS_OBJECTS: &[&str] = &[
    "index",
    "unique",
    "view",
    "recursive",
    "materialized",
    "sequence",
    "extension",
    "policy",
    "rule",
    "role",
    "user",
    "group",
    "statistics",
    "cast",
    "operator",
    "aggregate",
    "collation",
    "conversion",
    "text",
    "publication",
    "subscription",
    "server",
    "event",
    "language",
    "transform",
    "access",
    "tablespace",
    "database",
    "trigger",
    "constraint",
    "function",
    "procedure",
    "routine",
    "default",
    "system",
    "large",
    "trusted",
    "procedural",
];

/// The class of the statement `text`.
pub(crate) fn classify(text: &str) -> Class {
    let words = first_words(text, 6);
    let mut w = words.iter();
    let first = w.next();
    let Some(first) = first else {
        // `(SELECT ...)`, `;`: nothing to model.
        return if text.trim_start().starts_with('(') {
            Class::Query
        } else {
            Class::Ignore
        };
    };
    let rest: Vec<&&str> = w.collect();
    let at = |i: usize| rest.get(i).copied();
    match first.to_ascii_lowercase().as_str() {
        "create" => {
            let mut i = 0;
            if is(at(0), "or") && is(at(1), "replace") {
                i = 2;
            }
            if any(at(i), &["global", "local"]) {
                i += 1;
            }
            if any(at(i), &["temp", "temporary", "unlogged"]) {
                i += 1;
            }
            let object = at(i);
            if any(object, &["table", "schema", "type", "domain"])
                || (is(object, "foreign") && is(at(i + 1), "table"))
            {
                Class::Model
            } else if any(object, &["function", "procedure"]) {
                Class::Routine
            } else if any(object, HARMLESS_OBJECTS) || is(object, "foreign") {
                Class::Ignore
            } else {
                Class::Unknown
            }
        }
        "alter" => {
            let object = at(0);
            if any(object, &["table", "type", "domain", "schema"])
                || (is(object, "foreign") && is(at(1), "table"))
            {
                Class::Model
            } else if any(object, HARMLESS_OBJECTS) || is(object, "foreign") {
                Class::Ignore
            } else {
                Class::Unknown
            }
        }
        "drop" => {
            let object = at(0);
            if any(object, &["table", "type", "domain", "schema"])
                || (is(object, "foreign") && is(at(1), "table"))
            {
                Class::Model
            } else if any(object, &["extension", "owned"]) {
                Class::Special
            } else if any(object, HARMLESS_OBJECTS) || is(object, "foreign") {
                Class::Ignore
            } else {
                Class::Unknown
            }
        }
        "set" => {
            if rest
                .iter()
                .take(2)
                .any(|w| w.eq_ignore_ascii_case("search_path"))
            {
                Class::Model
            } else {
                Class::Ignore
            }
        }
        "reset" => {
            if any(at(0), &["search_path", "all"]) {
                Class::Model
            } else {
                Class::Ignore
            }
        }
        "discard" => {
            if is(at(0), "all") {
                Class::Special
            } else {
                Class::Ignore
            }
        }
        "select" | "with" | "values" | "table" => Class::Query,
        "insert" | "update" | "delete" | "merge" | "call" => Class::Call,
        "do" => Class::Do,
        "import" => Class::Special,
        "comment" | "security" | "grant" | "revoke" | "reassign" | "copy" | "truncate"
        | "explain" | "prepare" | "execute" | "deallocate" | "begin" | "start" | "commit"
        | "end" | "rollback" | "abort" | "savepoint" | "release" | "lock" | "show" | "listen"
        | "notify" | "unlisten" | "load" | "checkpoint" | "vacuum" | "analyze" | "analyse"
        | "cluster" | "reindex" | "refresh" | "fetch" | "move" | "close" | "declare" => {
            Class::Ignore
        }
        _ => Class::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keywords_decide() {
        for (sql, class) in [
            ("CREATE TABLE t (a int)", Class::Model),
            ("create temp table t (a int)", Class::Model),
            ("CREATE GLOBAL TEMPORARY TABLE t (a int)", Class::Model),
            ("CREATE UNLOGGED TABLE t (a int)", Class::Model),
            ("CREATE FOREIGN TABLE t (a int) SERVER s", Class::Model),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", Class::Ignore),
            ("CREATE TEMP VIEW v AS SELECT 1", Class::Ignore),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT 1 WITH NO DATA",
                Class::Ignore,
            ),
            ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", Class::Ignore),
            (
                "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
                Class::Routine,
            ),
            ("CREATE PROCEDURE p() LANGUAGE sql AS $$ $$", Class::Routine),
            (
                "CREATE OR REPLACE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()",
                Class::Ignore,
            ),
            ("ALTER TABLE t ADD COLUMN b int", Class::Model),
            ("ALTER TRIGGER tr ON t RENAME TO tr2", Class::Ignore),
            ("ALTER FUNCTION f() COST 5", Class::Ignore),
            ("ALTER SEQUENCE s RENAME TO s2", Class::Ignore),
            ("ALTER TYPE mood RENAME TO feeling", Class::Model),
            ("DROP INDEX CONCURRENTLY IF EXISTS i", Class::Ignore),
            ("DROP TABLE t", Class::Model),
            ("DROP EXTENSION citext CASCADE", Class::Special),
            ("SET search_path TO a, b", Class::Model),
            ("SET LOCAL search_path = a", Class::Model),
            ("SET statement_timeout = 0", Class::Ignore),
            ("SELECT 1", Class::Query),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Class::Query),
            ("INSERT INTO t VALUES (1)", Class::Call),
            ("DO $$ BEGIN END $$", Class::Do),
            ("GRANT SELECT ON t TO PUBLIC", Class::Ignore),
            ("COMMENT ON TABLE t IS 'x'", Class::Ignore),
            ("FROBNICATE t", Class::Unknown),
        ] {
            assert_eq!(classify(sql), class, "{sql}");
        }
    }
}
