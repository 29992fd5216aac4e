use super::*;

fn texts(sql: &str) -> Vec<&str> {
    split(sql).iter().map(|s| s.text).collect()
}

fn lines(sql: &str) -> Vec<u32> {
    split(sql).iter().map(|s| s.line).collect()
}

#[test]
fn semicolons_end_statements_and_blank_statements_are_dropped() {
    assert_eq!(texts("SELECT 1; ;\n;SELECT 2"), ["SELECT 1", "SELECT 2"]);
    assert!(split("  \n-- only a comment\n/* and another */\n").is_empty());
}

#[test]
fn tagged_and_nested_dollar_quotes_are_opaque() {
    let sql = "CREATE FUNCTION f() RETURNS text AS $outer$\n\
               BEGIN RETURN $inner$ a; b $$ c; $inner$; END;\n\
               $outer$ LANGUAGE plpgsql;\n\
               DO $$ BEGIN PERFORM 1; END $$;\n\
               SELECT $_x1$;$_x1$;";
    let statements = texts(sql);
    assert_eq!(statements.len(), 3, "{statements:#?}");
    assert!(statements[0].ends_with("LANGUAGE plpgsql"));
    assert_eq!(statements[1], "DO $$ BEGIN PERFORM 1; END $$");
    assert_eq!(statements[2], "SELECT $_x1$;$_x1$");
}

#[test]
fn parameters_and_dollars_inside_identifiers_are_not_quotes() {
    let sql = "PREPARE p AS SELECT $1, $2;\nCREATE TABLE a$b$ (c$ INT);\nSELECT 3;";
    assert_eq!(
        texts(sql),
        [
            "PREPARE p AS SELECT $1, $2",
            "CREATE TABLE a$b$ (c$ INT)",
            "SELECT 3"
        ]
    );
    // A digit cannot start a tag: `$1$` is a parameter followed by a `$`.
    assert_eq!(texts("SELECT $1$;SELECT 2").len(), 2);
}

#[test]
fn escape_strings_allow_backslashes_and_standard_strings_double_quotes() {
    let sql = r"SELECT E'it\'s; \\', e'\';';
SELECT 'it''s; fine', 'C:\';
SELECT 'a' 'b;';";
    assert_eq!(
        texts(sql),
        [
            r"SELECT E'it\'s; \\', e'\';'",
            r"SELECT 'it''s; fine', 'C:\'",
            "SELECT 'a' 'b;'"
        ]
    );
    // In a standard string a backslash is a character: the quote after it closes it.
    assert_eq!(
        texts(r"SELECT 'x\'; SELECT 2"),
        [r"SELECT 'x\'", "SELECT 2"]
    );
}

#[test]
fn quoted_identifiers_keep_semicolons_and_doubled_quotes() {
    assert_eq!(
        texts(r#"CREATE TABLE "a;b" ("say ""hi"";" INT); SELECT 1"#),
        [r#"CREATE TABLE "a;b" ("say ""hi"";" INT)"#, "SELECT 1"]
    );
}

#[test]
fn line_and_nested_block_comments_are_skipped_and_not_part_of_the_text() {
    let sql = "-- a; comment\n/* outer /* inner; */ still; */ SELECT 1 -- tail;\n; /* x */ SELECT 2 /* y; */;";
    let statements = split(sql);
    assert_eq!(
        statements.iter().map(|s| s.text).collect::<Vec<_>>(),
        ["SELECT 1", "SELECT 2"]
    );
    assert_eq!(statements[0].line, 2);
    assert_eq!(&sql[statements[1].offset..][..8], "SELECT 2");
}

#[test]
fn begin_atomic_bodies_with_case_stay_one_statement() {
    let sql = "CREATE OR REPLACE FUNCTION grade(n int) RETURNS text LANGUAGE sql\n\
               BEGIN ATOMIC\n\
                 SELECT CASE WHEN n > 90 THEN 'a' ELSE 'b' END;\n\
                 SELECT CASE n WHEN 1 THEN 'x' END;\n\
               END;\n\
               CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;\n\
               CREATE TABLE after (id INT);\n\
               BEGIN;\n\
               SELECT CASE WHEN true THEN 1 END;\n\
               END;";
    let statements = texts(sql);
    assert_eq!(statements.len(), 6, "{statements:#?}");
    assert!(statements[0].starts_with("CREATE OR REPLACE FUNCTION"));
    assert!(statements[0].ends_with("END;\nEND"), "{}", statements[0]);
    assert!(statements[1].ends_with("VALUES (1); END"));
    assert_eq!(
        &statements[2..],
        [
            "CREATE TABLE after (id INT)",
            "BEGIN",
            "SELECT CASE WHEN true THEN 1 END",
            "END"
        ]
    );
}

#[test]
fn function_bodies_in_dollar_quotes_do_not_count_begin_and_end() {
    let sql = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n\
               CREATE TABLE t (a INT);";
    assert_eq!(texts(sql).len(), 2);
    // A routine created with a single RETURN has no block at all.
    assert_eq!(
        texts("CREATE FUNCTION g() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END; SELECT 1").len(),
        2
    );
}

#[test]
fn semicolons_inside_parentheses_do_not_split() {
    assert_eq!(
        texts("CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b); SELECT 1"),
        [
            "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)",
            "SELECT 1"
        ]
    );
}

#[test]
fn psql_meta_commands_are_their_own_items_with_their_line() {
    let sql = "\\set ON_ERROR_STOP on\nCREATE TABLE t (a TEXT DEFAULT '\\x');\n  \\connect other\nSELECT E'\\n';";
    let statements = split(sql);
    let shown: Vec<(&str, u32, StatementKind)> = statements
        .iter()
        .map(|s| (s.text, s.line, s.kind))
        .collect();
    assert_eq!(
        shown,
        [
            ("\\set ON_ERROR_STOP on", 1, StatementKind::MetaCommand),
            (
                "CREATE TABLE t (a TEXT DEFAULT '\\x')",
                2,
                StatementKind::Sql
            ),
            ("\\connect other", 3, StatementKind::MetaCommand),
            ("SELECT E'\\n'", 4, StatementKind::Sql),
        ]
    );
    // Inside a body, a backslash is just a character.
    assert!(
        split("DO $$ BEGIN RAISE NOTICE '\\'; END $$")
            .iter()
            .all(|s| s.kind == StatementKind::Sql)
    );
}

#[test]
fn line_numbers_count_newlines_inside_quotes_and_comments() {
    let sql = "SELECT 'a\nb';\n/* c\nd */\nSELECT $$\n\n$$;\n\"x\ny\";\n\n  SELECT 4;";
    assert_eq!(lines(sql), [1, 5, 8, 11]);
    for statement in split(sql) {
        assert_eq!(
            &sql[statement.offset..][..statement.text.len()],
            statement.text
        );
    }
}

#[test]
fn unterminated_quotes_run_to_the_end() {
    for (sql, what) in [
        ("SELECT 1; SELECT 'open", Unterminated::String),
        ("SELECT 1; SELECT E'open\\'", Unterminated::String),
        ("SELECT 1; SELECT \"open", Unterminated::QuotedIdentifier),
        ("SELECT 1; DO $body$ BEGIN", Unterminated::DollarQuote),
        ("SELECT 1; SELECT 2 /* open", Unterminated::BlockComment),
    ] {
        let statements = split(sql);
        assert_eq!(statements.len(), 2, "{sql}");
        assert_eq!(statements[0].kind, StatementKind::Sql);
        assert_eq!(
            statements[1].kind,
            StatementKind::Unterminated(what),
            "{sql}"
        );
    }
    assert!(split("SELECT 1; /* open").len() == 1);
}

#[test]
fn non_ascii_identifiers_and_text_split_on_char_boundaries() {
    assert_eq!(
        texts("CREATE TABLE größe (maß TEXT DEFAULT 'ü;');SELECT 'é'"),
        ["CREATE TABLE größe (maß TEXT DEFAULT 'ü;')", "SELECT 'é'"]
    );
}
