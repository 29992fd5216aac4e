//! Connection manager, schema utilities, roles and test databases (issue 3).

use std::collections::HashMap;
use std::time::Duration;

use prost_db::testing::{TestDb, sweep_leaked_databases};
use prost_db::{Db, DbConfig, Error, ServiceRole, provision_service_role};
use sqlx::Connection;

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
    drop(held);

    // A SET on one connection does not leak into a fresh one.
    let health = db.health().await?;
    assert!(health.pool.size >= 1);
    assert_eq!(db.current_schema().await?, "catalog");

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
    assert_eq!(config.schema_name(), "catalog_v2");
    assert_eq!(config.service_name(), "catalog");
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
