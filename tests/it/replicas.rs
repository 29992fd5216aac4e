//! Many replicas of one service, as processes: four of a new version start at once against
//! a database that needs three migrations, while a replica of the previous version consumes.

use std::path::PathBuf;
use std::time::Duration;

use prost_db::amqp::{self, Publisher, QueueSpec, Topology};
use prost_db::events::{Event, EventPayload};
use prost_db::migrate::{Migrations, Migrator};
use prost_db::testing::TestDb;
use prost_db::{Db, DbConfig};
use prost_shop::scenario::wait_until;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The replica binary's event, as it reads it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Registered {
    n: i32,
}

impl EventPayload for Registered {
    const EVENT_TYPE: &'static str = "Registered";
    const AGGREGATE_TYPE: &'static str = "registration";
    const ROUTING_KEY: &'static str = "registry.registered";
}

fn migrations(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/it/fixtures/replicas/v{version}"))
}

fn spawn_replica(
    test_db: &TestDb,
    name: &str,
    version: u8,
    exchange: &str,
    queue: &str,
) -> tokio::process::Child {
    spawn_migrating(test_db, name, version, exchange, queue, "migrator")
}

fn spawn_migrating(
    test_db: &TestDb,
    name: &str,
    version: u8,
    exchange: &str,
    queue: &str,
    migrate: &str,
) -> tokio::process::Child {
    let log = std::env::temp_dir().join(format!("{queue}.{name}.log"));
    let log = std::fs::File::create(log).expect("log file");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_replica"))
        .env("DATABASE_URL", test_db.url())
        .env("REPLICA_NAME", name)
        .env("REPLICA_VERSION", version.to_string())
        .env("REPLICA_MIGRATIONS", migrations(2))
        .env("REPLICA_EXCHANGE", exchange)
        .env("REPLICA_QUEUE", queue)
        .env("REPLICA_MIGRATE", migrate)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn replica")
}

async fn stop(mut child: tokio::process::Child) -> Option<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = child.kill().await;
    status.ok().and_then(Result::ok)
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .expect("count")
}

async fn publish(publisher: &Publisher, exchange: &str, ns: std::ops::RangeInclusive<i32>) {
    for n in ns {
        let event = Event::new(n.to_string(), "replicas", Registered { n });
        publisher.publish(exchange, &event).await.expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_new_replicas_migrate_once_while_an_old_one_keeps_consuming() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = Db::connect(DbConfig::new(&test_db.url(), "registry")?.create_schema(true)).await?;
    Migrator::new(Migrations::from_dir(migrations(1))?)
        .applied_by("version 1")
        .up(&db)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE replica_starts (replica TEXT PRIMARY KEY, version INTEGER NOT NULL, \
         migrated INTEGER NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(db.pool())
    .await?;

    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let (exchange, queue) = (
        format!("{prefix}registry"),
        format!("{prefix}registry.work"),
    );
    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let channel = connection.create_channel().await?;
    let topology = Topology::new()
        .exchange(&exchange)
        .queue(QueueSpec::new(&queue).bind(&exchange, "registry.#"));
    topology.declare(&channel).await?;
    let publisher = Publisher::new(&connection).await?;

    // The previous version, consuming.
    let old = spawn_replica(&test_db, "old", 1, &exchange, &queue);
    publish(&publisher, &exchange, 1..=100).await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            count(&db, "SELECT count(*) FROM entries").await >= 50
        })
        .await,
        "the old replica consumes"
    );

    // Four replicas of the new version at once, while events keep coming.
    let new: Vec<_> = (1..=4)
        .map(|i| spawn_replica(&test_db, &format!("new{i}"), 2, &exchange, &queue))
        .collect();
    publish(&publisher, &exchange, 101..=300).await;
    assert!(
        wait_until(Duration::from_secs(90), || async {
            count(&db, "SELECT count(*) FROM replica_starts").await == 5
        })
        .await,
        "every replica passed its startup check"
    );
    // Events published once every new replica consumes: the old one must still take some.
    publish(&publisher, &exchange, 301..=500).await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            count(&db, "SELECT count(*) FROM entries").await == 500
        })
        .await,
        "all 500 events applied: {}",
        count(&db, "SELECT count(*) FROM entries").await
    );

    // Exactly one replica migrated: the ledger holds versions 2-4 once, from one
    // deployment, and the log one `applied` per version and no failure.
    let ledger: Vec<(i64, Uuid, String)> = sqlx::query_as(
        "SELECT version, deployment_id, applied_by FROM _prost_db_migrations ORDER BY version",
    )
    .fetch_all(db.pool())
    .await?;
    assert_eq!(
        ledger.iter().map(|row| row.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let migrator = &ledger[1].2;
    assert!(
        ledger[1..]
            .iter()
            .all(|row| row.1 == ledger[1].1 && row.2 == *migrator),
        "{ledger:?}"
    );
    let log: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event, count(*) FROM _prost_db_migration_log WHERE version > 1 GROUP BY event",
    )
    .fetch_all(db.pool())
    .await?;
    assert_eq!(log, vec![("applied".to_owned(), 3)]);

    // The others waited, then passed `check_tables` after the migration committed.
    let starts: Vec<(String, i32, i32, bool)> = sqlx::query_as(
        "SELECT replica, version, migrated, \
                started_at >= (SELECT applied_at FROM _prost_db_migrations WHERE version = 4) \
         FROM replica_starts ORDER BY replica",
    )
    .fetch_all(db.pool())
    .await?;
    let migrated: Vec<&str> = starts
        .iter()
        .filter(|s| s.2 > 0)
        .map(|s| s.0.as_str())
        .collect();
    assert_eq!(migrated, vec![migrator.as_str()], "{starts:?}");
    assert!(starts.iter().all(|s| s.2 == 0 || s.2 == 3), "{starts:?}");
    assert!(
        starts.iter().filter(|s| s.1 == 2).all(|s| s.3),
        "every new replica started after version 4 was applied: {starts:?}"
    );

    // Nothing lost, nothing applied twice; the old replica kept working after the migration.
    assert_eq!(
        count(&db, "SELECT count(DISTINCT n) FROM entries").await,
        500
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM idempotency_records").await,
        500
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM entries WHERE replica LIKE 'new%' AND version <> 2"
        )
        .await,
        0
    );
    let old_after = count(
        &db,
        "SELECT count(*) FROM entries WHERE replica = 'old' AND n > 300",
    )
    .await;
    assert!(
        old_after > 0,
        "the old replica applied events after the migration"
    );

    for child in new {
        stop(child).await;
    }
    let old_status = stop(old).await;
    assert!(
        old_status.is_some_and(|s| s.success()),
        "old replica: {old_status:?}"
    );
    topology.delete(&channel).await?;
    let _ = connection.close(200, "done".into()).await;
    db.close().await;
    test_db.close().await?;
    Ok(())
}

/// The control: the same four replicas checking whether the schema is migrated and then
/// migrating, with no lock: more than one runs the migrations, and the late ones fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_replicas_migrating_without_the_lock_run_the_migrations_more_than_once()
-> TestResult {
    let test_db = TestDb::new().await?;
    let db = Db::connect(DbConfig::new(&test_db.url(), "registry")?.create_schema(true)).await?;
    Migrator::new(Migrations::from_dir(migrations(1))?)
        .up(&db)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE replica_starts (replica TEXT PRIMARY KEY, version INTEGER NOT NULL, \
         migrated INTEGER NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE unlocked_runs (replica TEXT NOT NULL);",
    )
    .execute(db.pool())
    .await?;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let (exchange, queue) = (
        format!("{prefix}registry"),
        format!("{prefix}registry.work"),
    );
    let mut replicas: Vec<_> = (1..=4)
        .map(|i| {
            spawn_migrating(
                &test_db,
                &format!("new{i}"),
                2,
                &exchange,
                &queue,
                "unlocked",
            )
        })
        .collect();
    let mut failed = 0;
    for child in &mut replicas {
        // A replica either fails at startup or starts consuming (then it is stopped below).
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) if !status.success() => failed += 1,
            _ => {}
        }
    }
    for child in replicas {
        stop(child).await;
    }
    let runs = count(&db, "SELECT count(*) FROM unlocked_runs").await;
    assert!(runs > 1, "the migrations ran {runs} times");
    assert!(failed > 0, "a replica that migrated late failed");
    // Clean up the topology the replicas that started declared.
    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let topology = Topology::new()
        .exchange(&exchange)
        .queue(QueueSpec::new(&queue).bind(&exchange, "registry.#"));
    topology.delete(&connection.create_channel().await?).await?;
    let _ = connection.close(200, "done".into()).await;
    db.close().await;
    test_db.close().await?;
    Ok(())
}
