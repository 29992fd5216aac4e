//! What the session reset costs. `Db` restores the session (`SET SESSION AUTHORIZATION
//! DEFAULT; RESET ALL`) before every user, so that one user's `SET` never reaches the next:
//! the `BEGIN` paths send it in their `BEGIN` query (and skip sqlx's ping of a connection
//! used a moment ago), a raw hand-out gets it in place of the ping. This compares both side
//! by side with a plain sqlx pool (ping, no reset) on the same server, schema and pool size,
//! on the cheapest work there is, where a per-acquisition cost shows most: a `SELECT 1`
//! through the pool, and the idempotent handler's duplicate path (its `BEGIN`, one keyed
//! read, the rollback).
//!
//! `cargo bench --bench session_reset` (needs PostgreSQL; see `prost_db::testing`).
//! Environment: `BENCH_EVENTS` per mode and round (default 4000), `BENCH_ROUNDS` (default
//! 8), `BENCH_WORKERS` (default 16). The modes alternate in short rounds, so that load from
//! other processes on the machine hits both alike.

use std::time::Duration;

use prost_db::Db;
use prost_db::idempotency::IdempotencyStore;
use prost_db::testing::TestDb;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[path = "support.rs"]
mod support;
use support::{env, load_average, run_workers};

/// One side of a comparison: a plain sqlx pool, or a `Db` (and its idempotency store).
#[derive(Clone)]
enum Side {
    Plain(PgPool),
    Db(Db, IdempotencyStore),
}

#[derive(Clone, Copy)]
enum Work {
    Select,
    Duplicate,
}

async fn once(side: &Side, work: Work, i: usize) {
    match (work, side) {
        (Work::Select, _) => {
            let pool = match side {
                Side::Plain(pool) => pool,
                Side::Db(db, _) => db.pool(),
            };
            sqlx::query("SELECT 1").execute(pool).await.expect("select");
        }
        (Work::Duplicate, _) => {
            let mut tx = match side {
                // The handler's BEGIN before the reset, as sent through a plain pool.
                Side::Plain(pool) => pool
                    .begin_with(
                        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 30000",
                    )
                    .await
                    .expect("begin"),
                Side::Db(_, store) => store.begin().await.expect("begin"),
            };
            let _: Option<i64> = sqlx::query_scalar("SELECT v FROM kv WHERE k = $1")
                .bind((i % 1000) as i64)
                .fetch_optional(&mut *tx)
                .await
                .expect("read");
            // As the handler does: the rollback goes out when the connection is released.
            drop(tx);
        }
    }
}

async fn run(side: &Side, events: usize, workers: usize, work: Work) -> Duration {
    let side = side.clone();
    run_workers(workers, events, 1, move |i| {
        let side = side.clone();
        async move { once(&side, work, i).await }
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_round = env("BENCH_EVENTS", 4_000);
    let rounds = env("BENCH_ROUNDS", 8);
    let workers = env("BENCH_WORKERS", 16);

    let test_db = TestDb::new().await?;
    let size = u32::try_from(workers)?;
    let db = Db::connect(
        test_db
            .config("catalog")
            .min_connections(size)
            .max_connections(size),
    )
    .await?;
    sqlx::query("CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO kv SELECT g, g FROM generate_series(0, 999) g")
        .execute(db.pool())
        .await?;
    // The same startup parameters, sqlx's defaults otherwise: a ping before each hand-out.
    let plain = PgPoolOptions::new()
        .min_connections(size)
        .max_connections(size)
        .connect_with(
            test_db
                .connect_options()
                .options([("search_path", "catalog")]),
        )
        .await?;

    let sides = [
        Side::Plain(plain.clone()),
        Side::Db(db.clone(), IdempotencyStore::new(&db)),
    ];
    let modes = [Work::Select, Work::Duplicate];
    for work in modes {
        for side in &sides {
            run(side, per_round, workers, work).await;
        }
    }
    // [work][0 = plain, 1 = Db]
    let mut totals = [[Duration::ZERO; 2]; 2];
    for round in 0..rounds {
        for (w, work) in modes.into_iter().enumerate() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                totals[w][k] += run(&sides[k], per_round, workers, work).await;
            }
        }
    }

    let count = (per_round * rounds) as f64;
    let rate = |d: Duration| count / d.as_secs_f64();
    println!(
        "session reset benchmark: {workers} workers, {rounds} rounds x {per_round} acquisitions per mode, load average {}",
        load_average()
    );
    println!(
        "{:<52} {:>14} {:>14} {:>8}",
        "work per acquisition", "plain sqlx/s", "Db/s", "ratio"
    );
    for (name, [ping, reset]) in [
        ("SELECT 1 (sqlx pings, Db resets)", totals[0]),
        (
            "duplicate path (sqlx pings + BEGIN, Db BEGIN+reset)",
            totals[1],
        ),
    ] {
        println!(
            "{name:<52} {:>14.0} {:>14.0} {:>7.2}x",
            rate(ping),
            rate(reset),
            rate(reset) / rate(ping)
        );
    }

    plain.close().await;
    db.close().await;
    test_db.close().await?;
    Ok(())
}
