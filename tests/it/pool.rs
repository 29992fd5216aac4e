//! Connection manager, schema utilities, roles and test databases (issue 3).

use std::collections::HashMap;
use std::time::Duration;

use prost_db::idempotency::{HandlerError, IdempotencyStore, Outcome};
use prost_db::testing::{TestDb, sweep_leaked_databases, sweep_leaked_databases_on};
use prost_db::{Db, DbConfig, Error, ServiceRole, provision_service_role};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn each_service_creates_unqualified_tables_in_its_own_schema() -> TestResult {
    let test_db = TestDb::new().await?;
    let catalog = test_db.db("catalog").await?;
    let orders = test_db.db("orders").await?;

    sqlx::query("CREATE TABLE t (owner TEXT)")
        .execute(catalog.pool())
        .await?;
    sqlx::query("CREATE TABLE t (owner TEXT)")
        .execute(orders.pool())
        .await?;
    sqlx::query("INSERT INTO t VALUES ('catalog')")
        .execute(catalog.pool())
        .await?;

    let admin = test_db.pool().await?;
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables WHERE tablename = 't' ORDER BY 1",
    )
    .fetch_all(&admin)
    .await?;
    assert_eq!(
        tables,
        [
            ("catalog".into(), "t".into()),
            ("orders".into(), "t".into())
        ]
    );
    let in_orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.t")
        .fetch_one(&admin)
        .await?;
    assert_eq!(in_orders, 0, "the catalog row must not land in orders.t");
    assert_eq!(catalog.list_tables().await?, ["t"]);

    admin.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn every_pooled_connection_is_in_the_service_schema() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = Db::connect(
        test_db
            .config("catalog")
            .min_connections(1)
            .max_connections(8),
    )
    .await?;

    // Hold 8 connections at once, so the pool has to open connections beyond `min`.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(db.acquire().await?);
    }
    assert_eq!(db.stats().size, 8);
    for conn in &mut held {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut **conn)
            .await?;
        assert_eq!(schema, "catalog");
    }
    // Every one of them leaves with its session moved elsewhere...
    for conn in &mut held {
        sqlx::query("SET search_path = public")
            .execute(&mut **conn)
            .await?;
    }
    drop(held);

    // ...and every one comes back in the service's schema.
    let mut again = Vec::new();
    for _ in 0..8 {
        again.push(db.acquire().await?);
    }
    assert_eq!(db.stats().size, 8, "the same connections, not fresh ones");
    for conn in &mut again {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut **conn)
            .await?;
        assert_eq!(schema, "catalog");
    }
    drop(again);
    let health = db.health().await?;
    assert!(health.pool.size >= 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn provisioned_role_cannot_touch_other_services_schemas() -> TestResult {
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let suffix = test_db.name().trim_start_matches("prost_test_").to_owned();
    let catalog_role = format!("catalog_{suffix}");
    let orders_role = format!("orders_{suffix}");

    provision_service_role(
        &admin,
        &ServiceRole::new(&catalog_role, "catalog").password("pw-catalog"),
    )
    .await?;
    provision_service_role(
        &admin,
        &ServiceRole::new(&orders_role, "orders").password("pw-orders"),
    )
    .await?;

    let connect_as = |role: &str, service: &str| {
        DbConfig::from_connect_options(
            test_db.connect_options().username(role).password("unused"),
            service,
        )
        .min_connections(1)
        .max_connections(2)
    };
    let orders = Db::connect(connect_as(&orders_role, "orders")).await?;
    sqlx::query("CREATE TABLE placed (id INT PRIMARY KEY)")
        .execute(orders.pool())
        .await?;

    let catalog = Db::connect(connect_as(&catalog_role, "catalog")).await?;
    sqlx::query("CREATE TABLE products (id INT PRIMARY KEY)")
        .execute(catalog.pool())
        .await?;
    sqlx::query("INSERT INTO products VALUES (1)")
        .execute(catalog.pool())
        .await?;
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.products")
        .fetch_one(catalog.pool())
        .await?;
    assert_eq!(own, 1);

    let read = sqlx::query("SELECT * FROM orders.placed")
        .execute(catalog.pool())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&read).as_deref(), Some("42501"), "{read}");
    assert!(read.to_string().contains("permission denied"), "{read}");
    let write = sqlx::query("INSERT INTO orders.placed VALUES (1)")
        .execute(catalog.pool())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&write).as_deref(), Some("42501"), "{write}");

    let placed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.placed")
        .fetch_one(&admin)
        .await?;
    assert_eq!(placed, 0);

    catalog.close().await;
    orders.close().await;
    admin.close().await;
    close_and_drop_roles(test_db, &[&catalog_role, &orders_role]).await
}

/// Drops the test database, then the roles (cluster-wide, so the test must remove them).
async fn close_and_drop_roles(test_db: TestDb, roles: &[&str]) -> TestResult {
    let server = test_db.connect_options();
    test_db.close().await?;
    let mut conn = sqlx::PgConnection::connect_with(&server.database("postgres")).await?;
    for role in roles {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn bad_identifiers_are_rejected_before_any_sql_runs() -> TestResult {
    let evil = "catalog\"; DROP SCHEMA orders; --";

    // Port 1 is closed: had connect() tried the network, the error would be Connect.
    let config = DbConfig::new("postgres://postgres@127.0.0.1:1/prost", "catalog")?.schema(evil);
    let err = Db::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");
    assert!(err.to_string().contains("invalid schema name"), "{err}");

    let err = Db::connect(DbConfig::new(
        "postgres://postgres@127.0.0.1:1/prost",
        "Catalog",
    )?)
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");

    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let db = test_db.db("orders").await?;
    sqlx::query("CREATE TABLE keep (id INT)")
        .execute(db.pool())
        .await?;

    let err = provision_service_role(&admin, &ServiceRole::new("r1", evil))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");
    let err = provision_service_role(&admin, &ServiceRole::new(evil, "catalog"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");
    let err = db.table_exists(evil).await.unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");
    let err = db.require_tables(&["keep", evil]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidIdentifier { .. }), "{err}");

    // Nothing ran: the orders schema and its table are intact, no role was made.
    assert!(db.table_exists("keep").await?);
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'r1'")
        .fetch_one(&admin)
        .await?;
    assert_eq!(roles, 0);

    db.close().await;
    admin.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn unreachable_database_names_host_and_port_but_never_the_password() -> TestResult {
    let config = DbConfig::new("postgres://app:hunter2@127.0.0.1:1/prost", "catalog")?
        .acquire_timeout(Duration::from_secs(2));
    assert!(!format!("{config:?}").contains("hunter2"));

    let err = Db::connect(config).await.unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(matches!(err, Error::Connect { .. }), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");

    let err = DbConfig::new("postgres://app:hunter2@[bad", "catalog").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    Ok(())
}

#[tokio::test]
async fn missing_schema_fails_fast_with_what_to_do() -> TestResult {
    let test_db = TestDb::new().await?;
    let err = Db::connect(test_db.config("inventory").create_schema(false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMissing { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"inventory\" does not exist"),
        "{message}"
    );
    assert!(message.contains("CREATE SCHEMA inventory"), "{message}");

    let db = Db::connect(test_db.config("inventory").create_schema(true)).await?;
    assert_eq!(db.current_schema().await?, "inventory");
    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn create_schema_refused_by_the_server_is_a_database_error_not_a_connect_error() -> TestResult
{
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let role = format!(
        "nocreate_{}",
        test_db.name().trim_start_matches("prost_test_")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN")))
        .execute(&admin)
        .await?;

    let config =
        DbConfig::from_connect_options(test_db.connect_options().username(&role), "inventory")
            .create_schema(true);
    let err = Db::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");

    admin.close().await;
    close_and_drop_roles(test_db, &[&role]).await
}

#[tokio::test]
async fn require_tables_reports_every_missing_table_at_once() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = test_db.db("catalog").await?;
    sqlx::query(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10, 2))",
    )
    .execute(db.pool())
    .await?;

    db.require_tables(&["products"]).await?;
    let err = db
        .require_tables(&[
            "categories",
            "products",
            "inventory_reservations",
            "reviews",
        ])
        .await
        .unwrap_err();
    match &err {
        Error::MissingTables { schema, missing } => {
            assert_eq!(schema, "catalog");
            assert_eq!(
                missing,
                &["categories", "inventory_reservations", "reviews"]
            );
        }
        other => panic!("expected MissingTables, got {other}"),
    }
    assert!(err.to_string().contains("missing 3 table(s)"), "{err}");

    assert!(db.table_exists("products").await?);
    assert!(!db.table_exists("categories").await?);
    let columns = db.columns("products").await?;
    let shape: Vec<_> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable))
        .collect();
    assert_eq!(
        shape,
        [
            ("id", "bigint", false),
            ("name", "text", false),
            ("price", "numeric(10,2)", true)
        ]
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn parallel_test_databases_never_see_each_other() -> TestResult {
    let (a, b) = tokio::try_join!(TestDb::new(), TestDb::new())?;
    assert_ne!(a.name(), b.name());
    let (db_a, db_b) = tokio::try_join!(a.db("catalog"), b.db("catalog"))?;
    sqlx::query("CREATE TABLE products (id INT)")
        .execute(db_a.pool())
        .await?;
    sqlx::query("INSERT INTO products VALUES (1)")
        .execute(db_a.pool())
        .await?;
    assert!(!db_b.table_exists("products").await?);
    db_a.close().await;
    db_b.close().await;

    let names = [a.name().to_owned(), b.name().to_owned()];
    let admin = sqlx::PgPool::connect_with(a.connect_options().database("postgres")).await?;
    a.close().await?;
    b.close().await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = ANY($1)")
        .bind(&names[..])
        .fetch_one(&admin)
        .await?;
    assert_eq!(left, 0);
    admin.close().await;
    Ok(())
}

#[tokio::test]
async fn a_test_database_dropped_without_close_is_removed() -> TestResult {
    let admin_options = TestDb::new().await?;
    let admin =
        sqlx::PgPool::connect_with(admin_options.connect_options().database("postgres")).await?;
    let name = {
        let forgotten = TestDb::new().await?;
        forgotten.name().to_owned()
    };
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&admin)
        .await?;
    assert_eq!(left, 0);
    admin.close().await;
    admin_options.close().await?;
    Ok(())
}

#[tokio::test]
async fn leaked_test_databases_are_swept_but_live_ones_are_kept() -> TestResult {
    let live = TestDb::new().await?;
    let admin = sqlx::PgPool::connect_with(live.connect_options().database("postgres")).await?;
    // What a test killed by SIGKILL leaves behind: a database nobody holds the lock of.
    let leaked = format!("prost_test_leaked_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{leaked}\"")))
        .execute(&admin)
        .await?;

    let dropped = sweep_leaked_databases().await?;
    assert!(dropped.contains(&leaked), "{dropped:?}");
    assert!(!dropped.iter().any(|d| d == live.name()));

    let exists = |name: String| {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&admin)
            .await
        }
    };
    assert!(!exists(leaked).await?);
    assert!(exists(live.name().to_owned()).await?);
    admin.close().await;
    live.close().await?;
    Ok(())
}

#[test]
fn configuration_from_environment_variables() {
    let vars = HashMap::from([
        ("DATABASE_URL", "postgres://svc:pw@db:6432/shop"),
        ("PROST_DB_SCHEMA", "catalog_v2"),
        ("PROST_DB_MIN_CONNECTIONS", "3"),
        ("PROST_DB_MAX_CONNECTIONS", "12"),
        ("PROST_DB_STATEMENT_TIMEOUT_MS", "2500"),
        ("PROST_DB_CREATE_SCHEMA", "true"),
    ]);
    let config = DbConfig::from_vars("catalog", |k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(config.get_schema(), "catalog_v2");
    assert_eq!(config.get_service(), "catalog");
    assert_eq!(config.get_max_connections(), 12);
    let shown = format!("{config:?}");
    assert!(shown.contains("min_connections: 3"), "{shown}");
    assert!(shown.contains("statement_timeout: Some(2.5s)"), "{shown}");
    assert!(!shown.contains("pw"), "{shown}");

    let defaults = DbConfig::from_vars("orders", |k| {
        (k == "DATABASE_URL").then(|| "postgres://localhost/shop".into())
    })
    .unwrap();
    let shown = format!("{defaults:?}");
    assert!(
        shown.contains("min_connections: 5") && shown.contains("max_connections: 25"),
        "{shown}"
    );

    let err = DbConfig::from_vars("orders", |_| None).unwrap_err();
    assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
    let err = DbConfig::from_vars("orders", |k| match k {
        "DATABASE_URL" => Some("postgres://localhost/shop".into()),
        "PROST_DB_MAX_CONNECTIONS" => Some("lots".into()),
        _ => None,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("PROST_DB_MAX_CONNECTIONS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_test_database_can_start_as_a_copy_of_a_template() -> TestResult {
    let template = TestDb::new().await?;
    let db = template.db("catalog").await?;
    sqlx::query("CREATE TABLE products (id INT PRIMARY KEY)")
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO products VALUES (7)")
        .execute(db.pool())
        .await?;
    // CREATE DATABASE ... TEMPLATE needs the template to have no sessions.
    db.close().await;

    let copy = TestDb::from_template(template.name()).await?;
    let copied = copy.db("catalog").await?;
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM products")
        .fetch_all(copied.pool())
        .await?;
    assert_eq!(ids, [7]);

    copied.close().await;
    copy.close().await?;
    template.close().await?;
    Ok(())
}

/// Creates a role that exists only for one test (roles are cluster-wide: drop it with
/// [`close_and_drop_roles`]).
async fn create_role(admin: &sqlx::PgPool, role: &str, attributes: &str) -> TestResult {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{role}\" {attributes}"
    )))
    .execute(admin)
    .await?;
    Ok(())
}

fn unique_suffix(test_db: &TestDb) -> String {
    test_db.name().trim_start_matches("prost_test_").to_owned()
}

/// What the next user of the pool's connection sees: the session settings a handler body or
/// a raw user may have changed.
async fn session_state(db: &Db) -> Result<(String, String, String, String), sqlx::Error> {
    sqlx::query_as(
        "SELECT current_user::text, current_setting('search_path'), \
                current_setting('statement_timeout'), current_setting('lock_timeout')",
    )
    .fetch_one(db.pool())
    .await
}

/// An unqualified insert through the pool, and where it landed.
async fn insert_lands_in(db: &Db, admin: &sqlx::PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query("INSERT INTO notes VALUES ('unqualified')")
        .execute(db.pool())
        .await?;
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM catalog.notes), (SELECT count(*) FROM public.notes)",
    )
    .fetch_one(admin)
    .await
}

#[tokio::test]
async fn a_session_set_in_a_handler_body_does_not_leak_into_the_next_user() -> TestResult {
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let other_role = format!("setrole_{}", unique_suffix(&test_db));
    create_role(&admin, &other_role, "NOLOGIN").await?;
    sqlx::query("CREATE TABLE public.notes (body TEXT)")
        .execute(&admin)
        .await?;
    // One connection: whatever the body leaves on it, the next user gets.
    let db = Db::connect(
        test_db
            .config("catalog")
            .min_connections(1)
            .max_connections(1)
            .statement_timeout(Duration::from_secs(5)),
    )
    .await?;
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(db.pool())
        .await?;
    IdempotencyStore::install(&db).await?;
    let store = IdempotencyStore::new(&db);
    let expected = (
        "postgres".to_owned(),
        "catalog".to_owned(),
        "5s".to_owned(),
        "0".to_owned(),
    );

    // What pg_dump output and careless bodies do: session-level SETs, committed.
    let body_sets = format!(
        "SET search_path = public; SET statement_timeout = 1000; SET lock_timeout = 1; \
         SET ROLE \"{other_role}\""
    );
    for (i, statement) in [body_sets.as_str(), "SET search_path = public"]
        .into_iter()
        .enumerate()
    {
        let statement = statement.to_owned();
        let outcome = store
            .run("leak", &format!("e-{i}"), &i, |mut tx| async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })
            .await?;
        assert!(matches!(outcome, Outcome::Processed(())));
        assert_eq!(session_state(&db).await?, expected, "after body {i}");
        assert_eq!(db.current_schema().await?, "catalog");
    }
    assert_eq!(insert_lands_in(&db, &admin).await?, (1, 0));

    db.close().await;
    admin.close().await;
    close_and_drop_roles(test_db, &[&other_role]).await
}

#[tokio::test]
async fn a_session_set_on_a_raw_pooled_connection_does_not_leak_into_the_next_user() -> TestResult {
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    sqlx::query("CREATE TABLE public.notes (body TEXT)")
        .execute(&admin)
        .await?;
    let db = Db::connect(
        test_db
            .config("catalog")
            .min_connections(1)
            .max_connections(1),
    )
    .await?;
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(db.pool())
        .await?;

    // A connection taken with `acquire`.
    {
        let mut conn = db.acquire().await?;
        sqlx::query("SET search_path = public")
            .execute(&mut *conn)
            .await?;
    }
    assert_eq!(db.current_schema().await?, "catalog", "after Db::acquire");

    // A statement straight through the pool.
    sqlx::query("SET search_path = public")
        .execute(db.pool())
        .await?;
    assert_eq!(db.current_schema().await?, "catalog", "after Db::pool");

    // A committed transaction of `Db::begin`.
    let mut tx = db.begin().await?;
    sqlx::query("SET search_path = public")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    assert_eq!(db.current_schema().await?, "catalog", "after Db::begin");

    // A raw user's SET met by a BEGIN path next, which restores the session in its own
    // BEGIN query: Db::begin, the store's begin, a handler body.
    let dirty = || async {
        let mut conn = db.acquire().await?;
        sqlx::query("SET search_path = public")
            .execute(&mut *conn)
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let in_tx = |mut tx: prost_db::idempotency::Tx| async move {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut *tx)
            .await
            .expect("current_schema");
        tx.rollback().await.expect("rollback");
        schema
    };
    dirty().await?;
    assert_eq!(in_tx(db.begin().await?).await, "catalog", "in Db::begin");
    IdempotencyStore::install(&db).await?;
    let store = IdempotencyStore::new(&db);
    dirty().await?;
    assert_eq!(
        in_tx(store.begin().await?).await,
        "catalog",
        "in the store's begin"
    );
    dirty().await?;
    let outcome = store
        .run("schema", "e-1", &(), |mut tx| async move {
            sqlx::query_scalar::<_, String>("SELECT current_schema()::text")
                .fetch_one(&mut **tx)
                .await
        })
        .await?;
    assert_eq!(
        outcome,
        Outcome::Processed("catalog".to_owned()),
        "in a handler body"
    );

    sqlx::query("SET search_path = public")
        .execute(db.pool())
        .await?;
    assert_eq!(insert_lands_in(&db, &admin).await?, (1, 0));

    db.close().await;
    admin.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn real_server_errors_are_classified_alike_by_both_handler_error_types() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = test_db.db("catalog").await?;
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY)")
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(db.pool())
        .await?;

    async fn server_error(db: &Db, script: &str) -> sqlx::Error {
        let mut conn = db.acquire().await.expect("connection");
        let error = sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_owned()))
            .execute(&mut *conn)
            .await
            .expect_err(script);
        // The scripts that BEGIN leave the connection in a failed transaction.
        sqlx::query("ROLLBACK").execute(&mut *conn).await.ok();
        error
    }

    // A row lock held elsewhere, for the lock timeout.
    let mut holder = db.begin().await?;
    sqlx::query("SELECT * FROM t FOR UPDATE")
        .execute(&mut *holder)
        .await?;
    let cases = [
        // After a failover the old primary is a standby: writes fail read-only.
        ("BEGIN READ ONLY; INSERT INTO t VALUES (2)", "25006", true),
        (
            "BEGIN; SET LOCAL lock_timeout = 50; SELECT * FROM t FOR UPDATE",
            "55P03",
            true,
        ),
        (
            "BEGIN; SET LOCAL statement_timeout = 50; SELECT pg_sleep(5)",
            "57014",
            true,
        ),
        ("INSERT INTO t VALUES (1)", "23505", false),
        ("SELECT * FROM missing_table", "42P01", false),
        ("SELECT 1 / 0", "22012", false),
    ];
    let mut wrong = Vec::new();
    for (script, code, transient) in cases {
        let error = server_error(&db, script).await;
        assert_eq!(sqlstate(&error).as_deref(), Some(code), "{script}: {error}");
        let error = Error::Database(error);
        let crate_wide = error.is_transient();
        let idempotency = HandlerError::<std::io::Error>::Database(error).is_transient();
        let error = server_error(&db, script).await;
        let amqp = prost_db::amqp::DeliveryError::from(error).is_transient();
        if (crate_wide, idempotency, amqp) != (transient, transient, transient) {
            wrong.push(format!(
                "{code}: Error {crate_wide}, idempotency {idempotency}, amqp {amqp}, expected {transient}"
            ));
        }
    }
    holder.rollback().await?;

    // Not from the server, but what handlers meet: a purged record, a broker blip.
    let vanished = || Error::IdempotencyRecordVanished {
        event_id: "e".into(),
        action: "a".into(),
    };
    let blip = || {
        Error::from(prost_db::amqp::lapin::Error::from(std::io::Error::other(
            "reset",
        )))
    };
    for (name, error) in [
        ("IdempotencyRecordVanished", vanished as fn() -> Error),
        ("Amqp", blip as fn() -> Error),
    ] {
        let crate_wide = error().is_transient();
        let idempotency = HandlerError::<std::io::Error>::Database(error()).is_transient();
        let amqp = prost_db::amqp::DeliveryError::from(error()).is_transient();
        if (crate_wide, idempotency, amqp) != (true, true, true) {
            wrong.push(format!(
                "{name}: Error {crate_wide}, idempotency {idempotency}, amqp {amqp}, expected true"
            ));
        }
    }
    assert!(wrong.is_empty(), "misclassified: {wrong:#?}");

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_the_same_error_from_every_part() -> TestResult {
    // Port 1 refuses connections; the pools retry until their acquire timeout.
    let server = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("app")
        .password("hunter2")
        .database("prost");
    let lazy = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(server.clone());
    let errors = [
        (
            "Db::connect",
            Db::connect(
                DbConfig::from_connect_options(server.clone(), "catalog")
                    .acquire_timeout(Duration::from_millis(500)),
            )
            .await
            .unwrap_err(),
        ),
        (
            "provision_service_role",
            provision_service_role(&lazy, &ServiceRole::new("catalog_svc", "catalog"))
                .await
                .unwrap_err(),
        ),
        (
            "Outbox::purge_published",
            prost_db::outbox::Outbox::for_schema(&prost_db::Identifier::new(
                prost_db::IdentifierKind::Schema,
                "catalog",
            )?)
            .purge_published(&lazy, Duration::from_secs(3600))
            .await
            .unwrap_err(),
        ),
    ];
    let mut wrong = Vec::new();
    for (part, err) in &errors {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("hunter2"), "{part}: {shown}");
        if !matches!(err, Error::Connect { .. }) || !shown.contains("127.0.0.1:1") {
            wrong.push(format!("{part}: {shown}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected Error::Connect naming 127.0.0.1:1: {wrong:#?}"
    );
    Ok(())
}

/// Rows of a table deleted by each DELETE statement, and in how many transactions: a
/// statement-level trigger logs what every statement removed.
async fn log_deletes(db: &Db, table: &str) -> TestResult {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE delete_log (txid BIGINT, deleted BIGINT); \
         CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO delete_log SELECT txid_current(), count(*) FROM gone; RETURN NULL; END $$; \
         CREATE TRIGGER log_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS gone \
         FOR EACH STATEMENT EXECUTE FUNCTION log_delete()"
    )))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// (statements, transactions, most rows in one statement, rows in all).
async fn delete_log(db: &Db) -> Result<(i64, i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT txid), coalesce(max(deleted), 0)::int8, \
                coalesce(sum(deleted), 0)::int8 FROM delete_log WHERE deleted > 0",
    )
    .fetch_one(db.pool())
    .await
}

/// More than one purge batch (5 000 rows) of old rows.
const OLD_ROWS: i64 = 12_345;

#[tokio::test]
async fn purging_idempotency_records_deletes_in_bounded_batches() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = test_db.db("catalog").await?;
    IdempotencyStore::install(&db).await?;
    sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action, created_at) \
         SELECT 'old-' || g, 'catalog', 'reserve', now() - interval '30 days' - g * interval '1 s' \
         FROM generate_series(1, $1) g",
    )
    .bind(OLD_ROWS)
    .execute(db.pool())
    .await?;
    sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action, created_at) \
         SELECT 'new-' || g, 'catalog', 'reserve', now() - interval '6 days' \
         FROM generate_series(1, 25) g",
    )
    .execute(db.pool())
    .await?;
    log_deletes(&db, "idempotency_records").await?;

    let deleted = IdempotencyStore::new(&db)
        .purge_older_than(Duration::from_secs(7 * 24 * 3600))
        .await?;
    assert_eq!(deleted, OLD_ROWS as u64);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM idempotency_records ORDER BY event_id")
            .fetch_all(db.pool())
            .await?;
    assert_eq!(left.len(), 25);
    assert!(left.iter().all(|id| id.starts_with("new-")), "{left:?}");
    let (statements, transactions, largest, total) = delete_log(&db).await?;
    assert_eq!(total, OLD_ROWS);
    assert!(
        statements >= 3 && transactions == statements && largest <= 5_000,
        "{statements} DELETE statements in {transactions} transactions, the largest removed {largest} rows"
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn purging_the_outbox_deletes_in_bounded_batches_and_keeps_unpublished_rows() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = test_db.db("catalog").await?;
    prost_db::outbox::install(&db).await?;
    // Old and published; old but never published; published recently.
    sqlx::query(
        "INSERT INTO outbox_events (event_id, event_type, exchange, routing_key, payload, created_at, published_at) \
         SELECT gen_random_uuid(), 'Ping', 'x', 'ping', '{}', now() - interval '31 days', \
                CASE WHEN g <= $1 THEN now() - interval '30 days' - g * interval '1 s' \
                     WHEN g <= $1 + 20 THEN NULL ELSE now() - interval '1 day' END \
         FROM generate_series(1, $1 + 40) g",
    )
    .bind(OLD_ROWS)
    .execute(db.pool())
    .await?;
    log_deletes(&db, "outbox_events").await?;

    let deleted = prost_db::outbox::Outbox::new(&db)
        .purge_published(db.pool(), Duration::from_secs(7 * 24 * 3600))
        .await?;
    assert_eq!(deleted, OLD_ROWS as u64);
    let (unpublished, recent): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), \
                count(*) FILTER (WHERE published_at IS NOT NULL) FROM outbox_events",
    )
    .fetch_one(db.pool())
    .await?;
    assert_eq!((unpublished, recent), (20, 20));
    let (statements, transactions, largest, total) = delete_log(&db).await?;
    assert_eq!(total, OLD_ROWS);
    assert!(
        statements >= 3 && transactions == statements && largest <= 5_000,
        "{statements} DELETE statements in {transactions} transactions, the largest removed {largest} rows"
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}

/// The server's log file, read through the server (`pg_read_file`, as a superuser): the
/// collector's current file, or the Debian cluster's log.
async fn server_log_path(admin: &sqlx::PgPool) -> Result<String, sqlx::Error> {
    let (current, cluster): (Option<String>, String) =
        sqlx::query_as("SELECT pg_current_logfile(), current_setting('cluster_name')")
            .fetch_one(admin)
            .await?;
    Ok(match current {
        Some(file) if file.starts_with('/') => file,
        Some(file) => {
            let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
                .fetch_one(admin)
                .await?;
            format!("{dir}/{file}")
        }
        None => format!(
            "/var/log/postgresql/postgresql-{}.log",
            cluster.replace('/', "-")
        ),
    })
}

async fn server_log_size(admin: &sqlx::PgPool, path: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT (pg_stat_file($1)).size")
        .bind(path)
        .fetch_one(admin)
        .await
}

/// What the server logged from `offset` up to a marker logged now (so that everything
/// logged before this call is in).
async fn server_log_since(admin: &sqlx::PgPool, path: &str, offset: i64) -> String {
    let marker = format!("prost-db-log-marker-{}", uuid::Uuid::new_v4());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN RAISE LOG '{marker}'; END $$"
    )))
    .execute(admin)
    .await
    .expect("log a marker");
    for _ in 0..50 {
        let text: String = sqlx::query_scalar(
            "SELECT convert_from(pg_read_binary_file($1, $2, (pg_stat_file($1)).size - $2), 'UTF8')",
        )
        .bind(path)
        .bind(offset)
        .fetch_one(admin)
        .await
        .expect("read the server log");
        if text.contains(&marker) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the marker {marker} never reached the server log {path}");
}

#[tokio::test]
async fn a_failed_provisioning_leaves_the_password_in_no_error_and_no_server_log() -> TestResult {
    const PASSWORD: &str = "pw-never-logged-5e1c9";
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let log = server_log_path(&admin).await?;
    let offset = server_log_size(&admin, &log).await?;

    // A valid identifier that the server refuses as a role name.
    let err = provision_service_role(
        &admin,
        &ServiceRole::new("public", "catalog").password(PASSWORD),
    )
    .await
    .unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(shown.contains("reserved"), "{shown}");
    let logged = server_log_since(&admin, &log, offset).await;
    assert!(
        logged.contains("role name \"public\" is reserved"),
        "{logged}"
    );

    assert!(
        !shown.contains(PASSWORD),
        "the error shows the password: {shown}"
    );
    assert!(
        !logged.contains(PASSWORD),
        "the server log shows the password: {logged}"
    );

    admin.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn tables_of_later_migrations_are_usable_by_their_service_role_only() -> TestResult {
    let test_db = TestDb::new().await?;
    let admin = test_db.pool().await?;
    let suffix = unique_suffix(&test_db);
    let catalog_role = format!("catalog_{suffix}");
    let orders_role = format!("orders_{suffix}");
    provision_service_role(&admin, &ServiceRole::new(&catalog_role, "catalog")).await?;
    provision_service_role(&admin, &ServiceRole::new(&orders_role, "orders")).await?;

    // A migration run afterwards by the administrator that provisioned the roles.
    sqlx::raw_sql(
        "CREATE TABLE catalog.products (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL); \
         INSERT INTO catalog.products (name) VALUES ('lamp')",
    )
    .execute(&admin)
    .await?;

    let connect_as = |role: &str, service: &str| {
        DbConfig::from_connect_options(test_db.connect_options().username(role), service)
            .min_connections(1)
            .max_connections(2)
    };
    let catalog = Db::connect(connect_as(&catalog_role, "catalog")).await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM products")
        .fetch_all(catalog.pool())
        .await?;
    assert_eq!(names, ["lamp"]);
    // The sequence of the later table is usable too.
    sqlx::query("INSERT INTO products (name) VALUES ('desk')")
        .execute(catalog.pool())
        .await?;

    let orders = Db::connect(connect_as(&orders_role, "orders")).await?;
    let denied = sqlx::query("SELECT * FROM catalog.products")
        .execute(orders.pool())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{denied}");

    catalog.close().await;
    orders.close().await;
    admin.close().await;
    close_and_drop_roles(test_db, &[&catalog_role, &orders_role]).await
}

#[tokio::test]
async fn a_sweep_through_another_maintenance_database_keeps_a_live_test_database() -> TestResult {
    // The live database's owner uses a maintenance database of its own (any database
    // other than the sweeper's; a scratch test database here, not template1, which other
    // processes need free to create databases).
    let maintenance = TestDb::new().await?;
    let live = TestDb::on_server(&maintenance.url()).await?;
    let admin = sqlx::PgPool::connect_with(live.connect_options().database("postgres")).await?;

    let dropped = sweep_leaked_databases_on(&prost_db::testing::server_url()).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(live.name())
            .fetch_one(&admin)
            .await?;
    assert!(
        exists && !dropped.iter().any(|d| d == live.name()),
        "a sweep through another maintenance database dropped the live {}: {dropped:?}",
        live.name()
    );

    admin.close().await;
    live.close().await?;
    maintenance.close().await?;
    Ok(())
}

/// Proves the verifier against a server that checks passwords (the project's trusts
/// 127.0.0.1, so it cannot): `PROST_DB_SCRAM_URL=postgres://postgres:pw@host:port/postgres
/// cargo test --test it pool::a_provisioned_password_logs_in_through_scram -- --ignored`.
/// `roles::tests` checks on every run that the verifier equals PostgreSQL's own.
#[tokio::test]
#[ignore = "needs PROST_DB_SCRAM_URL: a server whose pg_hba.conf asks for scram-sha-256"]
async fn a_provisioned_password_logs_in_through_scram() -> TestResult {
    use std::str::FromStr;
    let url = std::env::var("PROST_DB_SCRAM_URL").expect("PROST_DB_SCRAM_URL");
    let server = PgConnectOptions::from_str(&url)?;
    let admin = sqlx::PgPool::connect_with(server.clone()).await?;
    let role = format!("scram_login_{}", std::process::id());
    provision_service_role(&admin, &ServiceRole::new(&role, &role).password("right-pw")).await?;

    let right =
        sqlx::PgConnection::connect_with(&server.clone().username(&role).password("right-pw"))
            .await;
    let wrong =
        sqlx::PgConnection::connect_with(&server.clone().username(&role).password("wrong-pw"))
            .await;
    let logged_in = match right {
        Ok(conn) => {
            let user: String = {
                let mut conn = conn;
                let user = sqlx::query_scalar("SELECT current_user::text")
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await?;
                user
            };
            Ok(user)
        }
        Err(e) => Err(e.to_string()),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{role}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
    )))
    .execute(&admin)
    .await?;
    admin.close().await;

    assert_eq!(logged_in, Ok(role.clone()));
    let wrong = wrong.expect_err("a wrong password must not log in");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");
    Ok(())
}

#[tokio::test]
async fn timeouts_beyond_postgresqls_range_are_rejected_when_configured() -> TestResult {
    // 2147483647 ms is the most `lock_timeout` and `statement_timeout` hold.
    let too_long = Duration::from_millis(2_147_483_648);
    let longest = Duration::from_millis(2_147_483_647);

    // Port 1: had the check waited for the server, the error would be Connect.
    let config = DbConfig::new("postgres://postgres@127.0.0.1:1/prost", "catalog")?
        .statement_timeout(too_long);
    let err = Db::connect(config).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SettingOutOfRange {
                setting: "statement_timeout",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("2147483647 ms"), "{err}");

    let err = DbConfig::from_vars("catalog", |k| match k {
        "DATABASE_URL" => Some("postgres://localhost/shop".into()),
        "PROST_DB_STATEMENT_TIMEOUT_MS" => Some("2147483648".into()),
        _ => None,
    })
    .unwrap_err();
    assert!(matches!(err, Error::SettingOutOfRange { .. }), "{err}");

    let test_db = TestDb::new().await?;
    let db = test_db.db("catalog").await?;
    let store = IdempotencyStore::new(&db);
    let err = store.clone().with_lock_timeout(too_long).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SettingOutOfRange {
                setting: "lock_timeout",
                ..
            }
        ),
        "{err}"
    );
    // The longest accepted value is one PostgreSQL takes.
    let tx = store.with_lock_timeout(longest)?.begin().await?;
    tx.rollback().await?;
    let db = Db::connect(test_db.config("catalog").statement_timeout(longest)).await?;
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(timeout, "2147483647ms");

    db.close().await;
    test_db.close().await?;
    Ok(())
}
