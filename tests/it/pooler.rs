//! Through the real PgBouncer in transaction mode (issue 15): schema binding by the role's
//! default `search_path`, the per-transaction schema check, prepared statements, the
//! migrator, and the idempotency storm from 4 processes sharing 10 server connections.
//!
//! PgBouncer must run (`bash .ci/pgbouncer start`); the tests find it through
//! `PROST_TEST_PGBOUNCER_URL` (default `postgres://postgres@127.0.0.1:6432`) and fail when
//! it is unreachable.

use std::collections::HashMap;

use prost_db::idempotency::{IdempotencyStore, Outcome};
use prost_db::migrate::{MigrateError, Migrations, Migrator};
use prost_db::testing::TestDb;
use prost_db::{Db, DbConfig, Error, Pooler, ServiceRole, provision_service_role};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

mod detect;
mod handler;
mod paths;
mod shop;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DEFAULT_PGBOUNCER_URL: &str = "postgres://postgres@127.0.0.1:6432";

/// PgBouncer's address; panics, saying how to start it, if nothing listens there.
fn pgbouncer() -> PgConnectOptions {
    let url =
        std::env::var("PROST_TEST_PGBOUNCER_URL").unwrap_or_else(|_| DEFAULT_PGBOUNCER_URL.into());
    let options: PgConnectOptions = url
        .parse()
        .expect("PROST_TEST_PGBOUNCER_URL is a postgres:// URL");
    let address = format!("{}:{}", options.get_host(), options.get_port());
    if std::net::TcpStream::connect(&address).is_err() {
        panic!(
            "PgBouncer is not reachable at {address}: start it with `bash .ci/pgbouncer start` \
             (transaction mode, port 6432), or point PROST_TEST_PGBOUNCER_URL at one"
        );
    }
    options
}

/// A test database with a service role `<prefix>_<db suffix>` ([`TestDb::role_name`], so a
/// killed run's role is swept) provisioned for `schema`.
struct Service {
    test_db: TestDb,
    role: String,
}

impl Service {
    async fn new(prefix: &str, schema: &str) -> Result<Service, Box<dyn std::error::Error>> {
        let test_db = TestDb::new().await?;
        let role = test_db.role_name(prefix);
        let admin = test_db.pool().await?;
        provision_service_role(&admin, &ServiceRole::new(&role, schema)).await?;
        admin.close().await;
        Ok(Service { test_db, role })
    }

    /// Changes the role's default (`setting`: `SET search_path = orders`, `RESET
    /// search_path`) under a running service, and ends its server connections, so that
    /// PgBouncer opens new ones with it.
    async fn set_role_default(&self, admin: &sqlx::PgPool, setting: &str) -> TestResult {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE \"{role}\" {setting}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
            role = self.role
        )))
        .execute(admin)
        .await?;
        Ok(())
    }

    /// Connect options through PgBouncer, as the service role, to the test database.
    fn through_pgbouncer(&self) -> PgConnectOptions {
        pgbouncer()
            .username(&self.role)
            .database(self.test_db.name())
    }

    /// A configuration through PgBouncer in transaction mode.
    fn config(&self, schema: &str) -> DbConfig {
        DbConfig::from_connect_options(self.through_pgbouncer(), schema)
            .pooler(Pooler::Transaction)
            .min_connections(0)
            .max_connections(4)
    }

    /// Drops the database, then the role (which owned objects only in it).
    async fn close(self) -> TestResult {
        let server = self.test_db.connect_options();
        self.test_db.close().await?;
        let mut conn = sqlx::PgConnection::connect_with(&server.database("postgres")).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{}\"",
            self.role
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn the_role_default_binds_the_schema_and_every_transaction_checks_it() -> TestResult {
    let service = Service::new("bind", "catalog").await?;
    let admin = service.test_db.pool().await?;
    sqlx::raw_sql(
        "CREATE TABLE catalog.t (v TEXT); CREATE SCHEMA orders; CREATE TABLE orders.t (v TEXT); \
         GRANT USAGE ON SCHEMA orders TO PUBLIC; GRANT ALL ON orders.t TO PUBLIC",
    )
    .execute(&admin)
    .await?;

    let checked = Db::connect(service.config("catalog")).await?;
    // The control: the same service with the check turned off.
    let unchecked = Db::connect(service.config("catalog").schema_check(false)).await?;
    let mut tx = checked.begin().await?;
    sqlx::query("INSERT INTO t VALUES ('bound')")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let bound: Vec<String> = sqlx::query_scalar("SELECT v FROM catalog.t")
        .fetch_all(&admin)
        .await?;
    assert_eq!(bound, ["bound"]);

    // The role's default changes under the running service (a re-provisioning for another
    // schema), and PgBouncer opens new server connections with it.
    service
        .set_role_default(&admin, "SET search_path = orders")
        .await?;

    let err = loop {
        match checked.begin().await {
            Err(e) if e.is_transient() => continue,
            Err(e) => break e,
            Ok(_) => panic!("a transaction began in the wrong schema"),
        }
    };
    match &err {
        Error::SchemaMismatch {
            expected, actual, ..
        } => assert_eq!((expected.as_str(), actual.as_str()), ("catalog", "orders")),
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("\"orders\""), "{err}");

    loop {
        let mut tx = match unchecked.begin().await {
            Err(e) if e.is_transient() => continue,
            other => other?,
        };
        sqlx::query("INSERT INTO t VALUES ('unchecked')")
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        break;
    }
    let in_orders: Vec<String> = sqlx::query_scalar("SELECT v FROM orders.t")
        .fetch_all(&admin)
        .await?;
    assert_eq!(
        in_orders,
        ["unchecked"],
        "without the check, the write lands in the wrong schema"
    );
    let in_catalog: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.t")
        .fetch_one(&admin)
        .await?;
    assert_eq!(in_catalog, 1, "only the first, checked write is in catalog");

    // Put right, the same service goes on: a failed check left no transaction open.
    service
        .set_role_default(&admin, "SET search_path = catalog")
        .await?;
    for _ in 0..8 {
        let mut tx = loop {
            match checked.begin().await {
                Err(e) if e.is_transient() => continue,
                other => break other?,
            }
        };
        sqlx::query("INSERT INTO t VALUES ('again')")
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.t WHERE v = 'again'")
        .fetch_one(&admin)
        .await?;
    assert_eq!(again, 8);

    checked.close().await;
    unchecked.close().await;
    admin.close().await;
    service.close().await
}

/// 16 tasks x `rounds`, each a transaction of two parameterized statements; the distinct
/// errors seen.
async fn statements_through(
    pool: &sqlx::PgPool,
    persistent: bool,
    rounds: i64,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut tasks = Vec::new();
    for task in 0..16_i64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors: Vec<String> = Vec::new();
            for round in 0..rounds {
                let result: Result<i64, sqlx::Error> = async {
                    let mut tx = pool.begin().await?;
                    let sum: i64 = sqlx::query_scalar("SELECT $1::int8 + $2::int8")
                        .bind(task)
                        .bind(round)
                        .persistent(persistent)
                        .fetch_one(&mut *tx)
                        .await?;
                    let double: i64 = sqlx::query_scalar("SELECT $1::int8 * 2")
                        .bind(sum)
                        .persistent(persistent)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(double / 2)
                }
                .await;
                match result {
                    Ok(v) if v == task + round => {}
                    Ok(v) => errors.push(format!("wrong result {v}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await?);
    }
    errors.sort();
    errors.dedup();
    Ok(errors)
}

#[tokio::test]
async fn unnamed_statements_in_transactions_pass_where_named_ones_break() -> TestResult {
    let service = Service::new("stmt", "catalog").await?;
    // The control: sqlx's defaults (named statements, cached per client connection).
    let plain = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(service.through_pgbouncer())
        .await?;
    let errors = statements_through(&plain, true, 50).await?;
    plain.close().await;
    assert!(
        errors.iter().any(|e| e.contains("prepared statement")),
        "named statements passed through transaction pooling: {errors:?}"
    );

    let db = Db::connect(service.config("catalog").max_connections(16)).await?;
    let errors = statements_through(db.pool(), false, 50).await?;
    assert!(errors.is_empty(), "{errors:?}");
    db.close().await;
    service.close().await
}

fn shop_catalog_migrations() -> Migrations {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/shop/catalog");
    Migrations::from_schema_dir(dir, "catalog").expect("the shop's catalog migrations")
}

#[tokio::test]
async fn the_migrator_refuses_the_pooler_and_runs_over_the_migrate_url() -> TestResult {
    let service = Service::new("mig", "catalog").await?;
    let migrator = Migrator::new(shop_catalog_migrations()).applied_by("it");

    let pooled = Db::connect(service.config("catalog")).await?;
    let err = migrator.up(&pooled).await.unwrap_err();
    assert!(
        matches!(&err, Error::Migrate(m) if matches!(&**m, MigrateError::ThroughPooler { schema } if schema == "catalog")),
        "{err:?}"
    );
    assert!(err.to_string().contains("PROST_DB_MIGRATE_URL"), "{err}");
    let admin = service.test_db.pool().await?;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'catalog'")
            .fetch_one(&admin)
            .await?;
    assert_eq!(tables, 0, "nothing ran through the pooler");
    pooled.close().await;

    let direct = service.test_db.url();
    let db = Db::connect(service.config("catalog").migrate_url(&direct)?).await?;
    let report = migrator.up(&db).await?;
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog._prost_db_migrations")
        .fetch_one(&admin)
        .await?;
    assert!(!report.applied.is_empty());
    assert_eq!(versions, report.applied.len() as i64);
    assert!(migrator.up(&db).await?.applied.is_empty());
    db.close().await;
    admin.close().await;
    service.close().await
}

/// Environment of a storm worker process: the database, role and process number.
const STORM_DATABASE: &str = "PROST_POOLER_STORM_DATABASE";
const STORM_ROLE: &str = "PROST_POOLER_STORM_ROLE";
const STORM_PROCESS: &str = "PROST_POOLER_STORM_PROCESS";
const STORM_KEYS: i64 = 400;
const STORM_WORKERS: i64 = 16;

/// One storm process (spawned by the test below; does nothing when run alone): 16 workers
/// each deliver every key once, in an order of their own, through the idempotency store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a process of pooler::four_processes_share_ten_server_connections_exactly_once"]
async fn storm_process() -> TestResult {
    let (Ok(database), Ok(role), Ok(process)) = (
        std::env::var(STORM_DATABASE),
        std::env::var(STORM_ROLE),
        std::env::var(STORM_PROCESS),
    ) else {
        return Ok(());
    };
    let process: i64 = process.parse()?;
    let options = pgbouncer().username(&role).database(&database);
    let db = Db::connect(
        DbConfig::from_connect_options(options, "catalog")
            .pooler(Pooler::Transaction)
            .min_connections(0)
            .max_connections(STORM_WORKERS as u32),
    )
    .await?;
    let store = IdempotencyStore::new(&db);
    let mut workers = Vec::new();
    for worker in 0..STORM_WORKERS {
        let store = store.clone();
        let tag = format!("p{process}w{worker}");
        workers.push(tokio::spawn(async move {
            let mut processed = 0_i64;
            let start = (process * STORM_WORKERS + worker) * 37;
            for i in 0..STORM_KEYS {
                let key = format!("event-{}", (start + i) % STORM_KEYS);
                let (tag, effect) = (tag.clone(), key.clone());
                let outcome = store
                    .run("apply", &key, &key, |mut tx| async move {
                        sqlx::query("INSERT INTO effects (event_id, worker) VALUES ($1, $2)")
                            .bind(&effect)
                            .bind(&tag)
                            .persistent(false)
                            .execute(&mut **tx)
                            .await
                            .map(|_| tag)
                    })
                    .await
                    .unwrap_or_else(|e| panic!("delivery failed: {e:?}"));
                if matches!(outcome, Outcome::Processed(_)) {
                    processed += 1;
                }
            }
            processed
        }));
    }
    let mut processed = 0;
    for worker in workers {
        processed += worker.await?;
    }
    println!("storm process {process} processed {processed}");
    db.close().await;
    Ok(())
}

#[tokio::test]
async fn four_processes_share_ten_server_connections_exactly_once() -> TestResult {
    let service = Service::new("storm", "catalog").await?;
    let admin = service.test_db.pool().await?;
    let direct = Db::connect(service.test_db.config("catalog")).await?;
    IdempotencyStore::install(&direct).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE catalog.effects (event_id TEXT NOT NULL, worker TEXT NOT NULL); \
         GRANT ALL ON ALL TABLES IN SCHEMA catalog TO \"{}\"",
        service.role
    )))
    .execute(&admin)
    .await?;
    direct.close().await;

    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..4)
        .map(|process| {
            tokio::process::Command::new(&exe)
                .args([
                    "--exact",
                    "pooler::storm_process",
                    "--ignored",
                    "--nocapture",
                ])
                .env(STORM_DATABASE, service.test_db.name())
                .env(STORM_ROLE, &service.role)
                .env(STORM_PROCESS, process.to_string())
                .kill_on_drop(true)
                .output()
        })
        .collect();
    let mut total_processed = 0;
    for child in children {
        let output = child.await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "a storm process failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let processed: i64 = stdout
            .lines()
            .find_map(|l| l.split(" processed ").nth(1))
            .unwrap_or_else(|| panic!("no count from a storm process: {stdout}"))
            .trim()
            .parse()?;
        total_processed += processed;
    }

    let effects: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM catalog.effects GROUP BY 1")
            .fetch_all(&admin)
            .await?;
    let effects: HashMap<String, i64> = effects.into_iter().collect();
    assert_eq!(effects.len() as i64, STORM_KEYS);
    assert!(effects.values().all(|&n| n == 1), "{effects:?}");
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.idempotency_records")
        .fetch_one(&admin)
        .await?;
    assert_eq!(records, STORM_KEYS);
    assert_eq!(total_processed, STORM_KEYS, "processed exactly once in all");
    admin.close().await;
    service.close().await
}
