//! The migration runner against a real PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost_db::migrate::{
    DryRunOutcome, FailureOutcome, MigrateError, MigrationState, Migrations, Migrator, RunMode,
};
use prost_db::testing::TestDb;
use prost_db::{Db, Error};
use sqlx::PgPool;

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh migrations root in the temp directory.
fn root() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "prost-db-it-migrate-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(root: &Path, schema: &str, file: &str, sql: &str) {
    let dir = root.join(schema);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), sql).unwrap();
}

/// Writes `files` (name, SQL) into `root/schema`, in order.
fn files(root: &Path, schema: &str, files: &[(&str, &str)]) {
    for (file, sql) in files {
        write(root, schema, file, sql);
    }
}

/// The shop's migrations, shared with the schema tests.
pub(crate) fn shop_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/shop")
}

fn migrator(root: &Path) -> Migrator {
    Migrator::new(Migrations::from_dir(root).unwrap()).applied_by("it")
}

/// A small pool, so parallel tests stay within the server's connection limit.
pub(crate) async fn small_db(test_db: &TestDb, schema: &str) -> Db {
    Db::connect(test_db.config(schema).min_connections(0).max_connections(2))
        .await
        .unwrap()
}

fn migrate_error(error: Error) -> MigrateError {
    match error {
        Error::Migrate(e) => *e,
        other => panic!("expected a migration error, got {other}"),
    }
}

/// Tables, columns, types, defaults, nullability, indexes and constraints of `schema`.
async fn snapshot(pool: &PgPool, schema: &str) -> Vec<String> {
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT format('column %s.%s %s %s default %s', c.relname, a.attname,
                       format_type(a.atttypid, a.atttypmod),
                       CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                       coalesce(pg_get_expr(d.adbin, d.adrelid), '-'))
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
          WHERE n.nspname = $1
         UNION ALL
         SELECT format('relation %s %s', c.relname, c.relkind)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
         UNION ALL
         SELECT format('index %s', pg_get_indexdef(i.indexrelid))
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
         UNION ALL
         SELECT format('constraint %s %s %s', cl.relname, co.conname, pg_get_constraintdef(co.oid))
           FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = co.connamespace WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    lines.sort();
    lines
}

async fn log(
    pool: &PgPool,
    schema: &str,
) -> Vec<(String, i64, Option<String>, Option<i32>, Option<String>)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT event, version, file, line, sqlstate FROM {schema}._prost_db_migration_log ORDER BY id"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn advisory_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn fresh_database_up_applies_everything_in_order_then_nothing() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "orders").await;
    let migrator = migrator(&shop_root());

    let first = migrator.up(&db).await.unwrap();
    assert_eq!(first.mode, RunMode::Transactional);
    let versions: Vec<i64> = first.applied.iter().map(|s| s.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);

    let second = migrator.up(&db).await.unwrap();
    assert_eq!(second.mode, RunMode::NothingToDo);
    assert!(second.applied.is_empty());
    assert_eq!(second.queries, 1, "a no-op up is one query");

    let pool = test_db.pool().await.unwrap();
    let tracked: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT version, name, applied_by FROM orders._prost_db_migrations ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tracked.len(), 6);
    assert_eq!(tracked[0].1, "create_orders");
    assert_eq!(tracked[0].2, "it");
    let events = log(&pool, "orders").await;
    assert!(events.iter().all(|e| e.0 == "applied"));
    assert_eq!(events.len(), 6);
    let framework: Vec<String> =
        sqlx::query_scalar("SELECT name FROM orders._prost_db_framework ORDER BY step")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        framework,
        ["migrations and log", "idempotency_records", "outbox_events"]
    );
    let tamper = sqlx::query("DELETE FROM orders._prost_db_migration_log")
        .execute(&pool)
        .await;
    assert!(tamper.unwrap_err().to_string().contains("append-only"));
    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

fn five_step_batch(root: &Path, failing_sql: &str) {
    files(
        root,
        "svc",
        &[
            (
                "0003_a.up.sql",
                "CREATE TABLE a (id int PRIMARY KEY, base_id int REFERENCES base (id));",
            ),
            ("0003_a.down.sql", "DROP TABLE a;"),
            (
                "0004_b.up.sql",
                "ALTER TABLE base ADD COLUMN note text;\nCREATE INDEX base_note ON base (note);",
            ),
            ("0004_b.down.sql", "ALTER TABLE base DROP COLUMN note;"),
            ("0005_c.up.sql", failing_sql),
            ("0005_c.down.sql", "DROP TABLE IF EXISTS c;"),
            ("0006_d.up.sql", "CREATE TABLE d (id int);"),
            ("0007_e.up.sql", "CREATE TABLE e (id int);"),
        ],
    );
}

fn baseline(root: &Path) {
    files(
        root,
        "svc",
        &[
            (
                "0001_base.up.sql",
                "CREATE TABLE base (id int PRIMARY KEY, name text NOT NULL);",
            ),
            ("0001_base.down.sql", "DROP TABLE base;"),
            ("0002_seed.up.sql", "INSERT INTO base VALUES (1, 'one');"),
            ("0002_seed.down.sql", "DELETE FROM base;"),
        ],
    );
}

#[tokio::test]
async fn failure_at_step_3_of_5_leaves_the_schema_exactly_as_before() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let pool = test_db.pool().await.unwrap();
    let root = root();
    baseline(&root);
    migrator(&root).up(&db).await.unwrap();
    let before = snapshot(&pool, "svc").await;

    five_step_batch(
        &root,
        "CREATE TABLE c (id int);\n\nINSERT INTO c\n  SELECT * FROM no_such_table;\n",
    );
    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    let MigrateError::Failed { failure, outcome } = &err else {
        panic!("{err}")
    };
    assert_eq!(*outcome, FailureOutcome::RolledBack);
    assert_eq!(failure.version, 5);
    assert!(
        failure.file.ends_with("svc/0005_c.up.sql"),
        "{}",
        failure.file
    );
    assert_eq!(failure.line, Some(4), "{err}");
    assert_eq!(failure.sqlstate.as_deref(), Some("42P01"));
    assert!(err.to_string().contains("0005_c.up.sql:4"), "{err}");

    assert_eq!(snapshot(&pool, "svc").await, before);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM svc._prost_db_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 2);
    let events = log(&pool, "svc").await;
    let failed = events.last().unwrap();
    assert_eq!(failed.0, "failed");
    assert_eq!(failed.1, 5);
    assert!(failed.2.as_deref().unwrap().ends_with("0005_c.up.sql"));
    assert_eq!(failed.3, Some(4));
    assert_eq!(failed.4.as_deref(), Some("42P01"));
    assert_eq!(advisory_locks(&pool).await, 0);

    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_non_transactional_run_reverts_this_deployments_steps_newest_first() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let pool = test_db.pool().await.unwrap();
    let root = root();
    baseline(&root);
    migrator(&root).up(&db).await.unwrap();
    let before = snapshot(&pool, "svc").await;

    files(
        &root,
        "svc",
        &[
            (
                "0003_items.up.sql",
                "CREATE TABLE items (id int PRIMARY KEY, base_id int REFERENCES base (id));",
            ),
            ("0003_items.down.sql", "DROP TABLE items;"),
            (
                "0004_items_index.up.sql",
                "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY items_base ON items (base_id);\n",
            ),
            (
                "0004_items_index.down.sql",
                "-- prost-db:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS items_base;\n",
            ),
            (
                "0005_broken.up.sql",
                "ALTER TABLE items ADD COLUMN x int;\nALTER TABLE nope ADD COLUMN y int;\n",
            ),
            ("0005_broken.down.sql", "ALTER TABLE items DROP COLUMN x;"),
        ],
    );

    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    let MigrateError::Failed { failure, outcome } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        *outcome,
        FailureOutcome::Reverted {
            versions: vec![4, 3]
        },
        "{err}"
    );
    assert_eq!(failure.line, Some(2));
    assert_eq!(failure.sqlstate.as_deref(), Some("42P01"));

    assert_eq!(snapshot(&pool, "svc").await, before);
    let events: Vec<(String, i64)> = log(&pool, "svc")
        .await
        .into_iter()
        .skip(2)
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        events,
        [
            ("applied".into(), 3),
            ("applied".into(), 4),
            ("failed".into(), 5),
            ("rolled_back".into(), 4),
            ("rolled_back".into(), 3),
        ]
    );
    assert_eq!(
        advisory_locks(&pool).await,
        0,
        "the session lock is released"
    );

    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn eight_concurrent_runners_apply_each_migration_once() {
    let test_db = TestDb::new().await.unwrap();
    let root = root();
    for v in 1..=6 {
        write(
            &root,
            "svc",
            &format!("{v:04}_t{v}.up.sql"),
            &format!("CREATE TABLE t{v} (id int);\nSELECT pg_sleep(0.02);"),
        );
    }
    let mut dbs = vec![];
    for _ in 0..8 {
        dbs.push(
            Db::connect(test_db.config("svc").min_connections(0).max_connections(1))
                .await
                .unwrap(),
        );
    }
    let m = migrator(&root);
    let runs = futures_util::future::join_all(dbs.iter().map(|db| m.up(db))).await;
    let applied: usize = runs.into_iter().map(|r| r.unwrap().applied.len()).sum();
    assert_eq!(applied, 6);

    let pool = test_db.pool().await.unwrap();
    let events = log(&pool, "svc").await;
    assert_eq!(events.len(), 6);

    // A failing run under contention leaves no advisory lock behind.
    write(
        &root,
        "svc",
        "0007_bad.up.sql",
        "SELECT pg_sleep(0.02);\nCREATE TABLE t1 (id int);",
    );
    let m = migrator(&root);
    let runs = futures_util::future::join_all(dbs.iter().map(|db| m.up(db))).await;
    assert!(runs.iter().all(|r| r.is_err()));
    assert_eq!(advisory_locks(&pool).await, 0);
    let failures = log(&pool, "svc")
        .await
        .iter()
        .filter(|e| e.0 == "failed")
        .count();
    assert_eq!(failures, 8, "each runner tried and logged its failure");

    for db in dbs {
        db.close().await;
    }
    pool.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn edited_and_missing_applied_migrations_are_detected() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let root = root();
    baseline(&root);
    migrator(&root).up(&db).await.unwrap();

    write(
        &root,
        "svc",
        "0002_seed.up.sql",
        "INSERT INTO base VALUES (2, 'two');",
    );
    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    assert!(
        matches!(err, MigrateError::Changed { version: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0002_seed.up.sql"), "{err}");

    let status = migrator(&root).status(&db).await.unwrap();
    assert_eq!(status.entries[1].state, MigrationState::Changed);

    // The deliberate override records the new checksum and logs it.
    let report = migrator(&root).accept_changed(true).up(&db).await.unwrap();
    assert!(report.applied.is_empty());
    migrator(&root).up(&db).await.unwrap();

    std::fs::remove_file(root.join("svc/0002_seed.up.sql")).unwrap();
    std::fs::remove_file(root.join("svc/0002_seed.down.sql")).unwrap();
    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    assert!(
        matches!(err, MigrateError::Missing { version: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("svc/0002_seed.up.sql"), "{err}");
    let status = migrator(&root).status(&db).await.unwrap();
    assert_eq!(status.entries[1].state, MigrationState::Missing);

    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn bad_files_and_syntax_errors_name_the_file() {
    for (files, expect) in [
        (
            vec![
                ("0001_a.up.sql", "SELECT 1;"),
                ("0001_b.up.sql", "SELECT 2;"),
            ],
            "0001_b.up.sql",
        ),
        (
            vec![("create_things.sql", "SELECT 1;")],
            "create_things.sql",
        ),
        (vec![("0001_a.up.sql", "-- nothing yet\n")], "0001_a.up.sql"),
    ] {
        let root = root();
        for (file, sql) in &files {
            write(&root, "svc", file, sql);
        }
        let err = Migrations::from_dir(&root).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }

    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let root = root();
    files(
        &root,
        "svc",
        &[
            ("0001_ok.up.sql", "CREATE TABLE ok (id int);"),
            (
                "0002_typo.up.sql",
                "CREATE TABLE t (id int);\nCRATE TABLE u (id int);\n",
            ),
        ],
    );
    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    let MigrateError::Failed { failure, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(failure.sqlstate.as_deref(), Some("42601"));
    assert_eq!(failure.line, Some(2));
    assert!(err.to_string().contains("0002_typo.up.sql:2"), "{err}");

    // PostgreSQL gives no position for this one: the runner replays to find the line.
    write(
        &root,
        "svc",
        "0002_typo.up.sql",
        "CREATE TABLE t (id int);\n\nALTER TABLE nope ADD COLUMN x int;\n",
    );
    let err = migrate_error(migrator(&root).up(&db).await.unwrap_err());
    let MigrateError::Failed { failure, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (failure.line, failure.sqlstate.as_deref()),
        (Some(3), Some("42P01")),
        "{err}"
    );
    assert!(
        !db.table_exists("ok").await.unwrap(),
        "the whole batch was rolled back"
    );
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn shop_migrations_round_trip_to_an_identical_catalog() {
    let test_db = TestDb::new().await.unwrap();
    let pool = test_db.pool().await.unwrap();
    let migrator = migrator(&shop_root());
    for schema in ["catalog", "users", "cart", "orders"] {
        let db = small_db(&test_db, schema).await;
        migrator.up(&db).await.unwrap();
        let first = snapshot(&pool, schema).await;
        let down = migrator.down(&db, 0).await.unwrap();
        assert_eq!(
            down.reverted.len(),
            migrator.migrations().get(schema).unwrap().migrations.len()
        );
        let empty: Vec<String> = snapshot(&pool, schema)
            .await
            .into_iter()
            .filter(|l| {
                !l.contains("_prost_db_")
                    && !l.contains("idempotency_records")
                    && !l.contains("outbox_events")
            })
            .collect();
        assert!(empty.is_empty(), "{schema}: {empty:#?}");
        migrator.up(&db).await.unwrap();
        assert_eq!(snapshot(&pool, schema).await, first, "{schema}");
        db.close().await;
    }
    pool.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn analytics_is_its_own_database_with_public_reports() {
    let test_db = TestDb::new().await.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/analytics");
    let db = small_db(&test_db, "public").await;
    let m = migrator(&root);
    m.up(&db).await.unwrap();
    assert!(db.table_exists("reports").await.unwrap());
    m.down(&db, 0).await.unwrap();
    assert!(!db.table_exists("reports").await.unwrap());
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn two_services_migrate_without_waiting_on_each_other() {
    let test_db = TestDb::new().await.unwrap();
    let pool = test_db.pool().await.unwrap();
    // Someone holds the catalog lock; orders must not care.
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(prost_db::migrate::lock_key("catalog"))
        .execute(&mut *holder)
        .await
        .unwrap();
    let migrator = migrator(&shop_root());
    let orders = small_db(&test_db, "orders").await;
    let catalog = small_db(&test_db, "catalog").await;
    let report = tokio::time::timeout(Duration::from_secs(20), migrator.up(&orders))
        .await
        .expect("orders did not wait for catalog's lock")
        .unwrap();
    assert_eq!(report.applied.len(), 6);
    // The migrator's own bound, not a cancelled future: a query cancelled mid-flight leaves
    // its connection for the pool to clean up, which once kept `close` waiting.
    let blocked = self::migrator(&shop_root())
        .lock_wait(Duration::from_millis(300))
        .unwrap()
        .up(&catalog)
        .await
        .expect_err("catalog waits for its own lock");
    assert!(
        matches!(
            migrate_error(blocked),
            MigrateError::LockWaitTimedOut { .. }
        ),
        "catalog's wait ends as a lock-wait timeout"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(prost_db::migrate::lock_key("catalog"))
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    // Both schemas at once.
    let (a, b) = tokio::join!(migrator.up(&catalog), migrator.up(&orders));
    assert_eq!(a.unwrap().applied.len(), 4);
    assert_eq!(b.unwrap().mode, RunMode::NothingToDo);
    orders.close().await;
    catalog.close().await;
    pool.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn status_dry_run_redo_and_reset() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let pool = test_db.pool().await.unwrap();
    let root = root();
    baseline(&root);
    write(
        &root,
        "svc",
        "0003_irreversible.up.sql",
        "CREATE TABLE kept (id int);",
    );

    let status = migrator(&root).status(&db).await.unwrap();
    assert!(
        status
            .entries
            .iter()
            .all(|e| e.state == MigrationState::Pending)
    );
    assert!(!status.entries[2].reversible);

    let dry = migrator(&root).dry_run(&db).await.unwrap();
    assert!(dry.succeeded(), "{dry:#?}");
    assert!(matches!(dry.steps[0].up, DryRunOutcome::Ok { .. }));
    assert!(matches!(dry.steps[0].down, Some(DryRunOutcome::Ok { .. })));
    assert!(dry.steps[2].down.is_none());
    assert!(
        !db.table_exists("base").await.unwrap(),
        "the dry run changed nothing"
    );

    migrator(&root).up(&db).await.unwrap();
    let err = migrate_error(migrator(&root).down(&db, 0).await.unwrap_err());
    assert!(
        matches!(err, MigrateError::Irreversible { version: 3, .. }),
        "{err}"
    );
    assert!(
        db.table_exists("base").await.unwrap(),
        "nothing was reverted"
    );

    std::fs::write(
        root.join("svc/0003_irreversible.down.sql"),
        "DROP TABLE kept;",
    )
    .unwrap();
    let redo = migrator(&root).redo(&db).await.unwrap();
    assert_eq!(redo.reverted[0].version, 3);
    assert_eq!(redo.applied[0].version, 3);
    let down = migrator(&root).down(&db, 1).await.unwrap();
    let reverted: Vec<i64> = down.reverted.iter().map(|s| s.version).collect();
    assert_eq!(reverted, [3, 2]);
    let status = migrator(&root).status(&db).await.unwrap();
    let states: Vec<_> = status.entries.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [
            MigrationState::Applied,
            MigrationState::Pending,
            MigrationState::Pending
        ]
    );

    let dry = migrator(&root).dry_run(&db).await.unwrap();
    assert_eq!(dry.steps.len(), 2);

    let reset = migrator(&root).reset(&db).await.unwrap();
    assert_eq!(reset.applied.len(), 3);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM svc.base")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn eight_cli_processes_apply_each_migration_once() {
    let test_db = TestDb::new().await.unwrap();
    let root = root();
    for v in 1..=5 {
        write(
            &root,
            "catalog",
            &format!("{v:04}_t{v}.up.sql"),
            &format!("CREATE TABLE t{v} (id int);\nSELECT pg_sleep(0.02);"),
        );
        write(
            &root,
            "orders",
            &format!("{v:04}_o{v}.up.sql"),
            &format!("CREATE TABLE o{v} (id int);"),
        );
    }
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_prost-shop-db"));
        command
            .args(["migrate"])
            .args(args)
            .arg("--root")
            .arg(&root)
            .env("DATABASE_URL", test_db.url())
            .env("PROST_DB_APPLIED_BY", "cli-test")
            .kill_on_drop(true);
        command.output()
    };
    let outputs = futures_util::future::join_all((0..8).map(|_| cli(&["up"]))).await;
    for output in &outputs {
        let output = output.as_ref().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pool = test_db.pool().await.unwrap();
    for schema in ["catalog", "orders"] {
        let events = log(&pool, schema).await;
        assert_eq!(events.len(), 5, "{schema}: {events:?}");
        assert!(events.iter().all(|e| e.0 == "applied"));
    }

    let status = cli(&["status"]).await.unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("schema catalog") && text.contains("applied"),
        "{text}"
    );

    write(
        &root,
        "catalog",
        "0006_bad.up.sql",
        "CREATE TABLE t1 (id int);",
    );
    let outputs =
        futures_util::future::join_all((0..8).map(|_| cli(&["up", "-s", "catalog"]))).await;
    for output in &outputs {
        let output = output.as_ref().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("0006_bad.up.sql:1") && stderr.contains("42P07"),
            "{stderr}"
        );
    }
    assert_eq!(advisory_locks(&pool).await, 0);

    let down = cli(&["down", "--to", "0", "-s", "orders"]).await.unwrap();
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("0005_o5.up.sql has no matching .down.sql")
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM orders._prost_db_migrations")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    assert_eq!(
        left, 5,
        "irreversible migrations stay: down refused as a whole"
    );

    pool.close().await;
    test_db.close().await.unwrap();
}

#[test]
fn cli_new_numbers_after_the_newest_migration() {
    let root = root();
    write(&root, "catalog", "0007_x.up.sql", "SELECT 1;");
    let code = prost_db::migrate::cli::run([
        "prost-db".as_ref(),
        "migrate".as_ref(),
        "new".as_ref(),
        "catalog".as_ref(),
        "add_tags".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
    ]);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(root.join("catalog/0008_add_tags.up.sql").exists());
    assert!(root.join("catalog/0008_add_tags.down.sql").exists());
    Migrations::from_dir(&root).unwrap();
}

#[tokio::test]
async fn embedded_migrations_match_the_directory_and_run() {
    let embedded = prost_db::embed_migrations!("migrations/shop");
    let loaded = Migrations::from_dir(shop_root()).unwrap();
    for schema in loaded.schemas() {
        let (a, b) = (embedded.get(schema).unwrap(), loaded.get(schema).unwrap());
        let sums = |s: &prost_db::migrate::SchemaMigrations| {
            s.migrations
                .iter()
                .map(|m| (m.version, m.checksum(), m.down.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sums(a), sums(b), "{schema}");
    }
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "cart").await;
    let report = Migrator::new(embedded).up(&db).await.unwrap();
    assert_eq!(report.applied.len(), 3);
    // The directory and the embedded copy agree, so the directory sees nothing to do.
    assert_eq!(
        migrator(&shop_root()).up(&db).await.unwrap().mode,
        RunMode::NothingToDo
    );
    db.close().await;
    test_db.close().await.unwrap();
}

/// Takes `schema`'s migration lock on a connection of `pool`, as another runner would:
/// the connection and its backend pid.
async fn hold_migration_lock(
    pool: &PgPool,
    schema: &str,
) -> (sqlx::pool::PoolConnection<sqlx::Postgres>, i32) {
    let mut holder = pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(prost_db::migrate::lock_key(schema))
        .execute(&mut *holder)
        .await
        .unwrap();
    (holder, pid)
}

async fn release(mut holder: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lock_wait_that_runs_out_names_the_session_holding_the_lock() {
    let test_db = TestDb::new().await.unwrap();
    let pool = test_db.pool().await.unwrap();
    let db = small_db(&test_db, "users").await;
    let (holder, pid) = hold_migration_lock(&pool, "users").await;
    let m = migrator(&shop_root())
        .lock_wait(Duration::from_millis(200))
        .unwrap();
    let err = migrate_error(m.up(&db).await.unwrap_err());
    assert!(
        matches!(err, MigrateError::LockWaitTimedOut { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("backend pid {pid}")),
        "{err}"
    );
    release(holder).await;
    assert_eq!(m.up(&db).await.unwrap().applied.len(), 1);
    db.close().await;
    pool.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn reset_waits_for_the_lock_like_up_and_honours_the_lock_wait() {
    let test_db = TestDb::new().await.unwrap();
    let pool = test_db.pool().await.unwrap();
    let db = small_db(&test_db, "users").await;
    let m = migrator(&shop_root())
        .lock_wait(Duration::from_millis(200))
        .unwrap();
    m.up(&db).await.unwrap();
    let (holder, _) = hold_migration_lock(&pool, "users").await;
    let err = migrate_error(m.reset(&db).await.unwrap_err());
    assert!(
        matches!(err, MigrateError::LockWaitTimedOut { .. }),
        "{err}"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM users._prost_db_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied, 1,
        "the schema must survive a reset that did not get the lock"
    );
    release(holder).await;
    assert_eq!(m.reset(&db).await.unwrap().applied.len(), 1);
    db.close().await;
    pool.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_runners_with_create_index_concurrently_do_not_deadlock() {
    let test_db = TestDb::new().await.unwrap();
    let root = root();
    files(
        &root,
        "svc",
        &[
            (
                "0001_t.up.sql",
                "CREATE TABLE t (id int, v int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 20000) g;",
            ),
            (
                "0002_t_v.up.sql",
                "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY t_v ON t (v);",
            ),
            (
                "0002_t_v.down.sql",
                "-- prost-db:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_v;",
            ),
            ("0003_t_w.up.sql", "ALTER TABLE t ADD COLUMN w int;"),
        ],
    );
    let mut dbs = vec![];
    for _ in 0..4 {
        dbs.push(
            Db::connect(test_db.config("svc").min_connections(0).max_connections(1))
                .await
                .unwrap(),
        );
    }
    let m = migrator(&root);
    let runs = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(dbs.iter().map(|db| m.up(db))),
    )
    .await
    .expect("runners deadlocked");
    let mut applied = 0;
    for run in runs {
        applied += run.unwrap().applied.len();
    }
    assert_eq!(applied, 3);
    for db in dbs {
        db.close().await;
    }
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_dry_run_stops_rehearsing_at_a_no_transaction_step() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let root = root();
    files(
        &root,
        "svc",
        &[
            ("0001_base.up.sql", "CREATE TABLE base (id int);"),
            ("0001_base.down.sql", "DROP TABLE base;"),
            (
                "0002_index.up.sql",
                "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY base_id ON base (id);",
            ),
            (
                "0002_index.down.sql",
                "DROP INDEX CONCURRENTLY IF EXISTS base_id;",
            ),
        ],
    );
    // Depends on step 2: rehearsing it without step 2 would report a false failure.
    write(
        &root,
        "svc",
        "0003_cluster.up.sql",
        "ALTER TABLE base CLUSTER ON base_id;",
    );

    let dry = migrator(&root).dry_run(&db).await.unwrap();
    assert!(dry.succeeded(), "{dry:#?}");
    assert!(matches!(dry.steps[0].up, DryRunOutcome::Ok { .. }));
    assert!(matches!(dry.steps[1].up, DryRunOutcome::NotRehearsed(_)));
    assert!(matches!(dry.steps[2].up, DryRunOutcome::NotRehearsed(_)));
    assert!(
        !db.table_exists("base").await.unwrap(),
        "the dry run changed nothing"
    );

    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn the_framework_creates_exactly_the_tables_it_documents() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let root = root();
    write(
        &root,
        "svc",
        "0001_mine.up.sql",
        "CREATE TABLE mine (id int);",
    );
    migrator(&root).up(&db).await.unwrap();
    let mut tables = db.list_tables().await.unwrap();
    tables.retain(|t| t != "mine");
    tables.sort();
    let mut documented: Vec<String> = prost_db::framework::TABLES
        .iter()
        .map(|t| t.to_string())
        .collect();
    documented.sort();
    assert_eq!(tables, documented);
    db.close().await;
    test_db.close().await.unwrap();
}

/// A one-connection pool of `schema` on `test_db`: whatever a migration leaves on a
/// connection it used is what the next user of the pool gets.
async fn one_connection_db(test_db: &TestDb, schema: &str) -> Db {
    Db::connect(test_db.config(schema).min_connections(1).max_connections(1))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_set_in_a_migration_never_reaches_the_pool() {
    let test_db = TestDb::new().await.unwrap();
    let db = one_connection_db(&test_db, "svc").await;
    let pool = test_db.pool().await.unwrap();
    let root = root();
    // pg_dump output starts with lines like these.
    files(
        &root,
        "svc",
        &[
            (
                "0001_items.up.sql",
                "CREATE TABLE items (id int);\nSET search_path = public;\nCREATE TABLE stray (id int);\n",
            ),
            ("0002_next.up.sql", "CREATE TABLE after_set (id int);\n"),
        ],
    );
    migrator(&root).up(&db).await.unwrap();
    assert_eq!(db.current_schema().await.unwrap(), "svc");
    sqlx::query("INSERT INTO items VALUES (1)")
        .execute(db.pool())
        .await
        .unwrap();
    // A script's own SET moves its later statements; the next script starts in the schema.
    let placed: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
          WHERE table_name IN ('items', 'stray', 'after_set') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(placed, ["public.stray", "svc.after_set", "svc.items"]);

    write(
        &root,
        "svc",
        "0003_dump.up.sql",
        "SELECT pg_catalog.set_config('search_path', '', false);\nCREATE TABLE svc.dumped (id int);\n",
    );
    migrator(&root).up(&db).await.unwrap();
    assert_eq!(db.current_schema().await.unwrap(), "svc");
    sqlx::query("INSERT INTO items VALUES (2)")
        .execute(db.pool())
        .await
        .unwrap();
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM svc.items")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(items, 2);
    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn each_script_starts_from_the_runners_session_settings() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let root = root();
    write(
        &root,
        "svc",
        "0001_dump.up.sql",
        "SET statement_timeout = '1h';\nSET lock_timeout = 0;\n\
         SELECT pg_catalog.set_config('search_path', '', false);\n\
         SET client_min_messages = warning;\nCREATE TABLE svc.a (id int);\n",
    );
    let check = "DO $$ BEGIN\n\
         IF current_schema() IS DISTINCT FROM 'svc' OR current_setting('lock_timeout') <> '5s'\n\
            OR current_setting('statement_timeout') <> '0'\n\
            OR current_setting('client_min_messages') <> 'notice' THEN\n\
           RAISE EXCEPTION 'inherited: search_path %, lock_timeout %, statement_timeout %, client_min_messages %',\n\
             current_setting('search_path'), current_setting('lock_timeout'),\n\
             current_setting('statement_timeout'), current_setting('client_min_messages');\n\
         END IF; END $$;\n";
    files(
        &root,
        "svc",
        &[
            ("0002_check.up.sql", check),
            (
                "0003_set.up.sql",
                "-- prost-db:no-transaction\nSET lock_timeout = 0;\n",
            ),
            (
                "0004_check.up.sql",
                &format!("-- prost-db:no-transaction\n{check}"),
            ),
        ],
    );
    let report = migrator(&root).up(&db).await.unwrap();
    assert_eq!(report.applied.len(), 4);
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_slow_migration_ignores_the_services_statement_timeout() {
    let test_db = TestDb::new().await.unwrap();
    let db = Db::connect(
        test_db
            .config("svc")
            .min_connections(0)
            .max_connections(2)
            .statement_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let root = root();
    write(
        &root,
        "svc",
        "0001_slow.up.sql",
        "CREATE TABLE t (id int);\nSELECT pg_sleep(1.5);\n",
    );
    migrator(&root).up(&db).await.unwrap();
    write(
        &root,
        "svc",
        "0002_slow_index.up.sql",
        "-- prost-db:no-transaction\nSELECT pg_sleep(1.5);\n",
    );
    let report = migrator(&root).up(&db).await.unwrap();
    assert_eq!(report.mode, RunMode::StepByStep);
    // The service keeps its own timeout.
    let err = sqlx::query("SELECT pg_sleep(1.5)")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn an_alter_table_behind_a_long_transaction_gives_up_and_names_the_blocker() {
    let test_db = TestDb::new().await.unwrap();
    let db = small_db(&test_db, "svc").await;
    let pool = test_db.pool().await.unwrap();
    let root = root();
    write(
        &root,
        "svc",
        "0001_t.up.sql",
        "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n",
    );
    migrator(&root).up(&db).await.unwrap();

    // A session that read the table in a transaction it keeps open.
    let mut blocker = pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut *blocker).await.unwrap();
    sqlx::query("SELECT count(*) FROM svc.t")
        .execute(&mut *blocker)
        .await
        .unwrap();

    write(
        &root,
        "svc",
        "0002_note.up.sql",
        "ALTER TABLE t ADD COLUMN note text;\n",
    );
    let run = tokio::time::timeout(Duration::from_secs(60), migrator(&root).up(&db))
        .await
        .expect("the ALTER TABLE waited behind the open transaction without giving up");
    let err = migrate_error(run.unwrap_err());
    let MigrateError::Failed { failure, outcome } = &err else {
        panic!("{err}")
    };
    assert_eq!(*outcome, FailureOutcome::RolledBack);
    assert_eq!(failure.sqlstate.as_deref(), Some("55P03"), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("backend pid {pid}")), "{text}");
    assert!(text.contains("idle in transaction"), "{text}");
    let named = failure.blocked_by.first().expect("the blocker is named");
    assert_eq!(named.pid, pid);
    assert_eq!(named.state.as_deref(), Some("idle in transaction"));
    assert!(named.transaction_start.is_some() && named.query_start.is_some());
    let logged: String = sqlx::query_scalar(
        "SELECT message FROM svc._prost_db_migration_log WHERE event = 'failed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(logged.contains(&format!("backend pid {pid}")), "{logged}");

    // Nothing queues behind the abandoned ALTER: readers and writers of `t` go on.
    let mut other = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("INSERT INTO svc.t VALUES (2)")
        .execute(&mut *other)
        .await
        .expect("t is still blocked");
    sqlx::query("ROLLBACK")
        .execute(&mut *blocker)
        .await
        .unwrap();
    drop((blocker, other));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM svc._prost_db_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 1);
    pool.close().await;
    db.close().await;
    test_db.close().await.unwrap();
}

/// A TCP proxy to the test server that can stop taking new connections while the ones it
/// forwards keep working: the server "goes away" for anyone who connects afresh.
struct Gate {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn open(upstream: String) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        tokio::io::copy_bidirectional(&mut client, &mut server)
                            .await
                            .ok();
                    }
                });
            }
        });
        Gate { port, accept }
    }

    /// New connections are refused from now on (the listener is dropped).
    async fn close(self) {
        self.accept.abort();
        self.accept.await.ok();
    }
}

#[tokio::test]
async fn a_connection_failure_is_the_same_error_from_the_migrator_as_from_db() {
    let test_db = TestDb::new().await.unwrap();
    let server = test_db.connect_options();
    let gate = Gate::open(format!("{}:{}", server.get_host(), server.get_port())).await;
    let through_gate = server
        .host("127.0.0.1")
        .port(gate.port)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    let config = || {
        prost_db::DbConfig::from_connect_options(through_gate.clone(), "svc")
            .create_schema(true)
            .min_connections(1)
            .max_connections(1)
    };
    let db = Db::connect(config()).await.unwrap();
    let root = root();
    files(
        &root,
        "svc",
        &[
            (
                "0001_index.up.sql",
                "-- prost-db:no-transaction\nCREATE TABLE t (id int);\n",
            ),
            ("0002_t.up.sql", "CREATE TABLE u (id int);\n"),
        ],
    );
    gate.close().await;

    let from_db = Db::connect(config()).await.unwrap_err();
    assert!(matches!(from_db, Error::Connect { .. }), "{from_db:?}");
    let from_migrator = migrator(&root).up(&db).await.unwrap_err();
    assert!(
        matches!(from_migrator, Error::Connect { .. }),
        "the migrator said {from_migrator:?}, Db says {from_db:?}"
    );
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn the_cli_names_a_missing_database_with_the_servers_message_and_a_hint() {
    let url = prost_db::testing::server_url();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let missing = format!(
        "postgres://{}@{}:{}/prost_missing_{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        std::process::id()
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_prost-shop-db"))
        .args(["migrate", "status", "-s", "catalog", "--root"])
        .arg(shop_root())
        .env("DATABASE_URL", &missing)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr.trim_end();
    assert!(!message.contains(" at line "), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        message.ends_with("or fix the database name in DATABASE_URL"),
        "{message}"
    );
}

#[test]
fn the_cli_help_is_prose_not_rustdoc() {
    for flag in ["-h", "--help"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_prost-shop-db"))
            .arg(flag)
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(!help.contains("```"), "{flag}: {help}");
        assert!(!help.contains("try_parse_from"), "{flag}: {help}");
        assert!(help.contains("migrations"), "{flag}: {help}");
    }
}

#[test]
fn the_cli_refuses_timeouts_beyond_postgres_range_before_connecting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prost-shop-db"))
        .args([
            "migrate",
            "status",
            "--ddl-lock-timeout-ms",
            "2147483648",
            "--root",
        ])
        .arg(shop_root())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ddl_lock_timeout") && stderr.contains("2147483647 ms"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test]
async fn reset_refuses_a_database_whose_name_merely_contains_test() {
    // Not a TestDb: its name must not look like a test database ("latest" contains "test").
    let server: sqlx::postgres::PgConnectOptions = prost_db::testing::server_url().parse().unwrap();
    let admin = sqlx::PgPool::connect_with(server.clone()).await.unwrap();
    let name = format!("prost_latest_{}", std::process::id());
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .unwrap();
    let root = root();
    write(&root, "svc", "0001_t.up.sql", "CREATE TABLE t (id int);");
    let config = prost_db::DbConfig::from_connect_options(server.clone().database(&name), "svc")
        .create_schema(true)
        .min_connections(0)
        .max_connections(1);
    let db = Db::connect(config).await.unwrap();
    let applied = migrator(&root).up(&db).await.map(|r| r.applied.len());
    let reset = migrator(&root).reset(&db).await;
    let survived = db.table_exists("t").await;
    db.close().await;
    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;

    assert_eq!(applied.unwrap(), 1);
    let err = migrate_error(reset.unwrap_err());
    assert!(matches!(err, MigrateError::ResetRefused { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert!(survived.unwrap(), "the schema was not dropped");
}
