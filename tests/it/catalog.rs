//! The compile-time catalog against PostgreSQL on a corpus of 325 migration files: applied
//! file by file, with the catalog compared to `pg_catalog` after every file.

use std::collections::{BTreeMap, BTreeSet};

use prost_db::testing::TestDb;
use prost_db_core::catalog::{Catalog, TypeKind};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[path = "../fidelity/corpus.rs"]
#[allow(dead_code)]
mod corpus;

/// A column as compared: `typname`, `format_type` without its schema, nullable, and the
/// schema of a user-defined type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    typname: String,
    display: String,
    nullable: bool,
    type_schema: Option<String>,
}

type Tables = BTreeMap<String, BTreeMap<String, Shape>>;

/// `format_type` qualifies types outside the search path; compare without the schema.
fn unqualified(display: &str) -> String {
    match display.split_once('.') {
        Some((schema, rest)) if !schema.contains([' ', '(', '[']) => rest.to_owned(),
        _ => display.to_owned(),
    }
}

async fn live_tables(conn: &mut PgConnection) -> Tables {
    let rows: Vec<(String, String, String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, a.attname::text, t.typname::text,
                format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                CASE WHEN coalesce(e.typtype, t.typtype) IN ('e', 'd', 'c')
                     THEN coalesce(en.nspname, tn.nspname)::text END
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
         LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
         LEFT JOIN pg_catalog.pg_namespace en ON en.oid = e.typnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
         ORDER BY 1, a.attnum",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut tables = Tables::new();
    for (table, column, typname, display, nullable, type_schema) in rows {
        tables.entry(table).or_default().insert(
            column,
            Shape {
                typname,
                display: unqualified(&display),
                nullable,
                type_schema,
            },
        );
    }
    tables
}

fn catalog_tables(catalog: &Catalog) -> (Tables, BTreeSet<String>) {
    let mut tables = Tables::new();
    let mut flagged = BTreeSet::new();
    for table in catalog.tables() {
        let name = format!("{}.{}", table.schema, table.name);
        if !table.uncertain.is_empty() {
            flagged.insert(name.clone());
        }
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let user = matches!(
                    c.ty.kind,
                    TypeKind::Enum { .. } | TypeKind::Domain { .. } | TypeKind::Composite { .. }
                ) || matches!(&c.ty.kind, TypeKind::Array { element } if element.schema().is_some());
                (
                    c.name.clone(),
                    Shape {
                        typname: c.ty.name.clone(),
                        display: c.ty.display.clone(),
                        nullable: c.nullable,
                        type_schema: user.then(|| c.ty.schema().unwrap_or_default().to_owned()),
                    },
                )
            })
            .collect();
        tables.insert(name, columns);
    }
    (tables, flagged)
}

#[derive(Default)]
struct Counts {
    snapshots: usize,
    table_snapshots: usize,
    silently_wrong_columns: usize,
    flagged_table_snapshots: usize,
    flagged_right_table_snapshots: usize,
    announced_unknown_tables: usize,
}

/// Compares one snapshot; returns the silently wrong columns, described.
fn compare(
    live: &Tables,
    catalog: &Tables,
    flagged: &BTreeSet<String>,
    announced: &BTreeSet<String>,
    counts: &mut Counts,
) -> Vec<String> {
    let mut wrong = Vec::new();
    counts.snapshots += 1;
    let names: BTreeSet<&String> = live.keys().chain(catalog.keys()).collect();
    for name in names {
        counts.table_snapshots += 1;
        let empty = BTreeMap::new();
        let (l, c) = (live.get(name), catalog.get(name));
        let differences: Vec<String> = {
            let l = l.unwrap_or(&empty);
            let c = c.unwrap_or(&empty);
            let columns: BTreeSet<&String> = l.keys().chain(c.keys()).collect();
            columns
                .into_iter()
                .filter(|column| l.get(*column) != c.get(*column))
                .map(|column| {
                    format!(
                        "{name}.{column}: PostgreSQL {:?}, catalog {:?}",
                        l.get(column),
                        c.get(column)
                    )
                })
                .collect()
        };
        if flagged.contains(name) {
            counts.flagged_table_snapshots += 1;
            if differences.is_empty() {
                counts.flagged_right_table_snapshots += 1;
            }
        } else if c.is_none() && announced.contains(name.split('.').next().unwrap_or_default()) {
            // Created by dynamic SQL: a warning says the catalog does not know such tables.
            counts.announced_unknown_tables += 1;
        } else {
            wrong.extend(differences);
        }
    }
    wrong
}

#[tokio::test]
async fn catalog_follows_postgresql_through_the_fidelity_corpus() {
    let files = corpus::corpus();
    let test_db = TestDb::new().await.unwrap();
    let mut conn = PgConnection::connect_with(&test_db.connect_options())
        .await
        .unwrap();
    let mut catalog = Catalog::new();
    let mut counts = Counts::default();
    let mut wrong: Vec<String> = Vec::new();
    let mut statements = 0;
    let mut bytes = 0;
    let mut schema_made = BTreeSet::new();
    for file in &files {
        if schema_made.insert(file.schema) {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                file.schema
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let path = format!("{}/{}", file.schema, file.name);
        bytes += file.sql.len();
        sqlx::raw_sql(AssertSqlSafe(format!("SET search_path TO {}", file.schema)))
            .execute(&mut conn)
            .await
            .unwrap();
        for statement in prost_db_core::split::split(&file.sql) {
            statements += 1;
            if let Err(error) = sqlx::raw_sql(AssertSqlSafe(statement.text.to_owned()))
                .execute(&mut conn)
                .await
            {
                panic!(
                    "{path}:{}: the corpus does not apply: {error}",
                    statement.line
                );
            }
        }
        catalog.apply_script(file.schema, &path, &file.sql);
        sqlx::raw_sql("SET search_path TO pg_catalog")
            .execute(&mut conn)
            .await
            .unwrap();
        let live = live_tables(&mut conn).await;
        let (known, flagged) = catalog_tables(&catalog);
        let announced: BTreeSet<String> = catalog
            .warnings()
            .iter()
            .filter(|w| w.message.contains("creates tables with dynamic SQL"))
            .map(|w| w.at.file.split('/').next().unwrap_or_default().to_owned())
            .collect();
        for difference in compare(&live, &known, &flagged, &announced, &mut counts) {
            wrong.push(format!("after {path}: {difference}"));
        }
    }
    // The final state, table by table.
    let live = live_tables(&mut conn).await;
    let (known, flagged) = catalog_tables(&catalog);
    let columns: usize = live.values().map(BTreeMap::len).sum();
    let flagged_right = flagged
        .iter()
        .filter(|name| live.get(*name) == known.get(*name))
        .count();
    counts.silently_wrong_columns = wrong.len();
    println!(
        "fidelity corpus: {} files, {} KB, {statements} statements; final state: {} tables, {columns} columns",
        files.len(),
        bytes / 1024,
        live.len()
    );
    println!(
        "  compared after every file: {} snapshots, {} table snapshots",
        counts.snapshots, counts.table_snapshots
    );
    println!(
        "  silently wrong columns: {} | flagged table snapshots: {}, of which right: {} | tables the catalog cannot name, announced by a warning: {}",
        counts.silently_wrong_columns,
        counts.flagged_table_snapshots,
        counts.flagged_right_table_snapshots,
        counts.announced_unknown_tables
    );
    println!(
        "  final state: flagged tables {}, of which right {}; warnings {}",
        flagged.len(),
        flagged_right,
        catalog.warnings().len()
    );
    assert!(
        wrong.is_empty(),
        "{} silently wrong columns, first ones:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        flagged_right * 10 <= flagged.len(),
        "{flagged_right} of {} flagged tables are right: {:?}",
        flagged.len(),
        flagged
            .iter()
            .filter(|name| live.get(*name) == known.get(*name))
            .collect::<Vec<_>>()
    );
    assert!(
        counts.flagged_right_table_snapshots * 10 <= counts.flagged_table_snapshots,
        "{} of {} flagged table snapshots are right",
        counts.flagged_right_table_snapshots,
        counts.flagged_table_snapshots
    );
    conn.close().await.unwrap();
    test_db.close().await.unwrap();
}

fn scratch_root(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let root =
        std::env::temp_dir().join(format!("prost-db-it-catalog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (path, sql) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, sql).unwrap();
    }
    root
}

/// The migrator (running a no-transaction script step by step) and the catalog split a
/// script into the same statements: here, an SQL-standard body whose `;`s are inside it.
#[tokio::test]
async fn migrator_and_catalog_split_begin_atomic_bodies_alike() {
    let script = "-- prost-db:no-transaction\n\
                  CREATE FUNCTION grade(n int) RETURNS text\n    LANGUAGE sql\n\
                  BEGIN ATOMIC\n    SELECT CASE WHEN n > 10 THEN 'big' ELSE 'small' END;\nEND;\n\
                  CREATE TABLE after_function (id INT PRIMARY KEY, grade TEXT);\n";
    let root = scratch_root("atomic", &[("app/0001_grade.up.sql", script)]);
    let catalog = Catalog::from_root(&root).unwrap();
    assert!(catalog.warnings().is_empty(), "{:?}", catalog.warnings());
    assert!(catalog.table("app", "after_function").is_some());
    let statements: Vec<u32> = prost_db_core::split::split(script)
        .iter()
        .map(|s| s.line)
        .collect();
    assert_eq!(statements, [2, 7], "one function, one table");

    let test_db = TestDb::new().await.unwrap();
    let db = test_db.db("app").await.unwrap();
    let migrator =
        prost_db::migrate::Migrator::new(prost_db::migrate::Migrations::from_dir(&root).unwrap())
            .applied_by("it");
    migrator.up(&db).await.unwrap();
    let (grade, table): (String, bool) =
        sqlx::query_as("SELECT app.grade(11), to_regclass('app.after_function') IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!((grade.as_str(), table), ("big", true));
    db.close().await;
    test_db.close().await.unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

/// A psql meta-command is not SQL: the migrator and the catalog both refuse the file, with
/// the same error naming its line.
#[test]
fn migrator_and_catalog_both_refuse_psql_meta_commands() {
    let root = scratch_root(
        "meta",
        &[(
            "app/0001_init.up.sql",
            "CREATE TABLE t (a TEXT DEFAULT E'\\\\');\n\\set ON_ERROR_STOP on\nCREATE TABLE u (a INT);\n",
        )],
    );
    let runtime = prost_db::migrate::Migrations::from_dir(&root)
        .unwrap_err()
        .to_string();
    let catalog = Catalog::from_root(&root).unwrap_err().to_string();
    assert!(
        catalog.ends_with("0001_init.up.sql:2: `\\set ON_ERROR_STOP on` is a psql meta-command, not SQL; migrations are sent to the server, which cannot run it: remove the line (a migration's statements already stop at the first error)"),
        "{catalog}"
    );
    assert!(runtime.contains(&catalog), "{runtime}");
    std::fs::remove_dir_all(&root).unwrap();
}
