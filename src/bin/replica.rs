//! One replica of a small `registry` service, for the many-replicas test: migrates (the new
//! version), checks its tables, records that it started, then consumes `Registered` events
//! until SIGTERM. Configured by environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_URL` | the database (required) |
//! | `REPLICA_NAME` | recorded in `replica_starts` and on every row it writes (required) |
//! | `REPLICA_VERSION` | `1` (the previous version: no migration, old columns) or `2` |
//! | `REPLICA_MIGRATIONS` | the migrations root of version 2 (required for version 2) |
//! | `REPLICA_EXCHANGE`, `REPLICA_QUEUE` | where the events come from (required) |
//! | `REPLICA_MIGRATE` | `migrator` (default), or `unlocked` for the control: check whether the column exists, then run the scripts, with no lock and no ledger |

use std::time::Duration;

use prost_db::Schema;
use prost_db::amqp::{self, Consumer, DeliveryError, QueueSpec, Topology};
use prost_db::events::{Event, EventPayload};
use prost_db::idempotency::Tx;
use prost_db::migrate::{Migrations, Migrator};
use prost_db::{Db, DbConfig, idempotent_handler};
use tokio::signal::unix::{SignalKind, signal};

/// The event: the `n`-th registration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Registered {
    n: i32,
}

impl EventPayload for Registered {
    const EVENT_TYPE: &'static str = "Registered";
    const AGGREGATE_TYPE: &'static str = "registration";
    const ROUTING_KEY: &'static str = "registry.registered";
}

/// `registry.entries` as version 1 knows it.
#[derive(Schema)]
#[schema(
    migrations = "../../tests/it/fixtures/replicas/v1",
    schema = "registry",
    table = "entries"
)]
#[allow(dead_code)]
struct EntryV1 {
    event_id: uuid::Uuid,
    n: i32,
    replica: String,
}

/// `registry.entries` after the three migrations of version 2.
#[derive(Schema)]
#[schema(
    migrations = "../../tests/it/fixtures/replicas/v2",
    schema = "registry",
    table = "entries"
)]
#[allow(dead_code)]
struct EntryV2 {
    event_id: uuid::Uuid,
    n: i32,
    replica: String,
    version: i32,
    note: Option<String>,
}

#[idempotent_handler(action = "register")]
async fn register_v1(
    tx: &mut Tx,
    event: &Event<Registered>,
    replica: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO entries (event_id, n, replica) VALUES ($1, $2, $3)")
        .bind(event.envelope.event_id)
        .bind(event.payload.n)
        .bind(replica)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[idempotent_handler(action = "register")]
async fn register_v2(
    tx: &mut Tx,
    event: &Event<Registered>,
    replica: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO entries (event_id, n, replica, version, note) VALUES ($1, $2, $3, 2, 'v2')",
    )
    .bind(event.envelope.event_id)
    .bind(event.payload.n)
    .bind(replica)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is required"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let url = var("DATABASE_URL")?;
    let name = var("REPLICA_NAME")?;
    let version: i32 = var("REPLICA_VERSION")?.parse()?;
    let (exchange, queue) = (var("REPLICA_EXCHANGE")?, var("REPLICA_QUEUE")?);

    let db = Db::connect(
        DbConfig::new(&url, "registry")?
            .min_connections(1)
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await?;
    let unlocked = std::env::var("REPLICA_MIGRATE").is_ok_and(|mode| mode == "unlocked");
    let migrated = if version == 2 && unlocked {
        migrate_unlocked(&db, &name, &var("REPLICA_MIGRATIONS")?).await?
    } else if version == 2 {
        let migrations = Migrations::from_dir(var("REPLICA_MIGRATIONS")?)?;
        let report = Migrator::new(migrations)
            .applied_by(name.clone())
            .up(&db)
            .await?;
        report.applied.len()
    } else {
        0
    };
    // The startup check: the version's struct against the live table.
    if version == 2 {
        db.check_tables(&[EntryV2::TABLE]).await?;
    } else {
        db.check_tables(&[EntryV1::TABLE]).await?;
    }
    sqlx::query("INSERT INTO replica_starts (replica, version, migrated) VALUES ($1, $2, $3)")
        .bind(&name)
        .bind(version)
        .bind(i32::try_from(migrated)?)
        .execute(db.pool())
        .await?;

    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let spec = QueueSpec::new(queue).bind(&exchange, "registry.#");
    Topology::new()
        .exchange(&exchange)
        .queue(spec.clone())
        .declare(&connection.create_channel().await?)
        .await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    let consumer = Consumer::new(spec).prefetch(8).on({
        let (db, name) = (db.clone(), name.clone());
        move |event: Event<Registered>| {
            let (db, name) = (db.clone(), name.clone());
            async move {
                if version == 2 {
                    let _ = register_v2(&db, &event, &name).await?;
                } else {
                    let _ = register_v1(&db, &event, &name).await?;
                }
                Ok::<(), DeliveryError>(())
            }
        }
    });
    let stats = consumer
        .run(&connection, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await?;
    eprintln!("replica {name}: stopped: {stats:?}");
    db.close().await;
    Ok(())
}

/// The control: what a service without the migration lock does, check then migrate. Every
/// replica that finds the column missing runs the scripts, and records that it did.
async fn migrate_unlocked(
    db: &Db,
    name: &str,
    root: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns \
         WHERE table_schema = 'registry' AND table_name = 'entries' AND column_name = 'version')",
    )
    .fetch_one(db.pool())
    .await?;
    if exists {
        return Ok(0);
    }
    sqlx::query("INSERT INTO unlocked_runs (replica) VALUES ($1)")
        .bind(name)
        .execute(db.pool())
        .await?;
    let dir = std::path::Path::new(root).join("registry");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    scripts.sort();
    let mut ran = 0;
    for script in scripts
        .iter()
        .filter(|p| !p.ends_with("0001_entries.up.sql"))
    {
        let text = std::fs::read_to_string(script)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(text))
            .execute(db.pool())
            .await?;
        ran += 1;
    }
    Ok(ran)
}
