//! What running behind PgBouncer in transaction mode costs. One transaction (`Db::begin`,
//! a keyed read, a keyed update, commit) per event, 16 workers, 10 connections on every
//! side, side by side in one run:
//!
//! - direct, `Pooler::None`: named prepared statements, cached per connection (sqlx's
//!   default);
//! - direct, `Pooler::Transaction`: unnamed statements (`persistent(false)`, statement
//!   cache 0) and the schema check in the `BEGIN` query, without the pooler's hop;
//! - through PgBouncer (10 server connections), `Pooler::Transaction`, check off;
//! - through PgBouncer, `Pooler::Transaction`, check on (what a service runs).
//!
//! `cargo bench --bench pooler` (needs PostgreSQL and PgBouncer: `bash .ci/pgbouncer start`).
//! Environment: `BENCH_EVENTS` per side and round (default 2000), `BENCH_ROUNDS` (default
//! 6), `BENCH_WORKERS` (default 16), `PROST_TEST_PGBOUNCER_URL` (default
//! `postgres://postgres@127.0.0.1:6432`). The sides alternate in short rounds, so that load
//! from other processes on the machine hits all alike.

use std::time::Duration;

use prost_db::testing::TestDb;
use prost_db::{Db, DbConfig, Pooler, ServiceRole, provision_service_role};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

#[path = "support.rs"]
mod support;
use support::{env, load_average, run_workers};

const CONNECTIONS: u32 = 10;

async fn once(db: &Db, persistent: bool, i: usize) {
    let k = (i % 1000) as i64;
    let mut tx = db.begin().await.expect("begin");
    let _: i64 = sqlx::query_scalar("SELECT v FROM kv WHERE k = $1")
        .bind(k)
        .persistent(persistent)
        .fetch_one(&mut *tx)
        .await
        .expect("read");
    sqlx::query("UPDATE kv SET v = v + 1 WHERE k = $1")
        .bind(k)
        .persistent(persistent)
        .execute(&mut *tx)
        .await
        .expect("update");
    tx.commit().await.expect("commit");
}

async fn run(db: &Db, persistent: bool, events: usize, workers: usize) -> Duration {
    let db = db.clone();
    run_workers(workers, events, 1, move |i| {
        let db = db.clone();
        async move { once(&db, persistent, i).await }
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_round = env("BENCH_EVENTS", 2_000);
    let rounds = env("BENCH_ROUNDS", 6);
    let workers = env("BENCH_WORKERS", 16);
    let pgbouncer: PgConnectOptions = std::env::var("PROST_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432".into())
        .parse()?;

    let test_db = TestDb::new().await?;
    let role = format!("bench_{}", test_db.name().trim_start_matches("prost_test_"));
    let admin = test_db.pool().await?;
    provision_service_role(&admin, &ServiceRole::new(&role, "catalog")).await?;
    sqlx::raw_sql(
        "CREATE TABLE catalog.kv (k BIGINT PRIMARY KEY, v BIGINT NOT NULL); \
         INSERT INTO catalog.kv SELECT g, g FROM generate_series(0, 999) g",
    )
    .execute(&admin)
    .await?;

    let sized = |config: DbConfig| {
        config
            .min_connections(CONNECTIONS)
            .max_connections(CONNECTIONS)
    };
    let direct = test_db.connect_options().username(&role);
    let through = pgbouncer.username(&role).database(test_db.name());
    let sides: Vec<(&str, Db, bool)> = vec![
        (
            "direct, named statements",
            Db::connect(sized(DbConfig::from_connect_options(
                direct.clone(),
                "catalog",
            )))
            .await?,
            true,
        ),
        (
            "direct, Pooler::Transaction",
            Db::connect(sized(
                DbConfig::from_connect_options(direct, "catalog").pooler(Pooler::Transaction),
            ))
            .await?,
            false,
        ),
        (
            "PgBouncer, Pooler::Transaction, check off",
            Db::connect(sized(
                DbConfig::from_connect_options(through.clone(), "catalog")
                    .pooler(Pooler::Transaction)
                    .schema_check(false),
            ))
            .await?,
            false,
        ),
        (
            "PgBouncer, Pooler::Transaction",
            Db::connect(sized(
                DbConfig::from_connect_options(through, "catalog").pooler(Pooler::Transaction),
            ))
            .await?,
            false,
        ),
    ];

    for (_, db, persistent) in &sides {
        run(db, *persistent, per_round / 4, workers).await;
    }
    let mut totals = vec![Duration::ZERO; sides.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        order.rotate_left(round % sides.len());
        for k in order {
            let (_, db, persistent) = &sides[k];
            totals[k] += run(db, *persistent, per_round, workers).await;
        }
    }

    let count = (per_round * rounds) as f64;
    let rate = |d: Duration| count / d.as_secs_f64();
    let baseline = rate(totals[0]);
    println!(
        "pooler benchmark: {workers} workers, {CONNECTIONS} connections, {rounds} rounds x {per_round} transactions per side, load average {}",
        load_average()
    );
    println!(
        "{:<44} {:>14} {:>8}",
        "side (BEGIN, read, update, COMMIT)", "transactions/s", "ratio"
    );
    for ((name, _, _), total) in sides.iter().zip(&totals) {
        println!(
            "{name:<44} {:>14.0} {:>7.2}x",
            rate(*total),
            rate(*total) / baseline
        );
    }

    for (_, db, _) in &sides {
        db.close().await;
    }
    admin.close().await;
    let server = test_db.connect_options();
    test_db.close().await?;
    let mut conn = sqlx::PgConnection::connect_with(&server.database("postgres")).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{role}\""
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}
