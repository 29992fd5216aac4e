//! Idempotency records at volume: expiring one day of records by `DELETE`
//! (`purge_older_than`) against dropping its partition (`PartitionedRecords::maintain`), on
//! tables of 1 and 10 million records, and the handler's throughput on both layouts, side
//! by side in one run.
//!
//! `cargo bench --bench records_volume` (needs PostgreSQL; see `prost_db::testing`).
//! Environment: `BENCH_SIZES` (records per table, default `1000000,10000000`), and for the
//! throughput part `BENCH_EVENTS` per layout and round (default 2000), `BENCH_ROUNDS`
//! (default 6), `BENCH_WORKERS` (default 16). Each table holds 10 days of records, made with
//! `generate_series` in one statement per day, then vacuumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use prost_db::idempotency::{EventId, IdempotencyStore, PartitionedRecords, Tx};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::Serialize;
use uuid::Uuid;

const DAYS: u64 = 10;
const PRODUCTS: i64 = 1_000;

/// Inserts `rows` records of `day`, keyed by UUIDv7 ids of their `created_at`, spread
/// evenly over the day.
async fn load_day(db: &Db, day: NaiveDate, rows: i64) -> prost_db::Result<()> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash, created_at) \
         SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-' || lpad(to_hex(g), 12, '0'), \
                'billing', 'billing::reserve', sha256(int8send(g)), \
                to_timestamp(ms / 1000.0) \
         FROM (SELECT g, ms, lpad(to_hex(ms), 12, '0') AS h \
               FROM (SELECT g, $1 + g * (86400000 / $2) AS ms FROM generate_series(0, $2 - 1) g) t) ids",
    )
    .bind(start.timestamp_millis())
    .bind(rows)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Fills the table with `total` records over the last `DAYS` days before today.
async fn fill(db: &Db, total: i64) -> prost_db::Result<()> {
    let today = Utc::now().date_naive();
    for back in 1..=DAYS {
        load_day(db, today - Days::new(back), total / DAYS as i64).await?;
    }
    sqlx::raw_sql("VACUUM (ANALYZE) idempotency_records")
        .execute(db.pool())
        .await?;
    Ok(())
}

/// One day of records expired by today's `DELETE`: the oldest of the `DAYS` days.
async fn expire_by_delete(test_db: &TestDb, size: i64) -> prost_db::Result<(Duration, u64)> {
    let db = test_db.db(&format!("plain_{size}")).await?;
    IdempotencyStore::install(&db).await?;
    fill(&db, size).await?;
    let store = IdempotencyStore::new(&db);
    let keep_from = (Utc::now().date_naive() - Days::new(DAYS - 1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let started = Instant::now();
    let horizon = (Utc::now() - keep_from).to_std().expect("in the past");
    // Whole milliseconds: PostgreSQL's interval holds microseconds, and sqlx refuses more.
    let horizon = Duration::from_millis(u64::try_from(horizon.as_millis()).expect("fits"));
    let deleted = store.purge_older_than(horizon).await?;
    let elapsed = started.elapsed();
    db.close().await;
    Ok((elapsed, deleted))
}

/// The same day expired by the partitioned layout's maintenance: one `DROP TABLE`.
async fn expire_by_drop(test_db: &TestDb, size: i64) -> prost_db::Result<(Duration, usize)> {
    let db = test_db.db(&format!("parted_{size}")).await?;
    IdempotencyStore::install(&db).await?;
    let now = Utc::now();
    PartitionedRecords::new(DAYS as u32 - 1)?
        .days_ahead(DAYS as u32)
        .install_at(&db, now - Days::new(DAYS))
        .await?;
    fill(&db, size).await?;
    let records = PartitionedRecords::new(DAYS as u32 - 1)?.days_ahead(0);
    let started = Instant::now();
    let done = records.maintain_at(&db, now).await?;
    let elapsed = started.elapsed();
    assert_eq!(done.dropped.len(), 1, "{done:?}");
    db.close().await;
    Ok((elapsed, done.dropped.len()))
}

#[derive(Clone, Serialize)]
struct StockReserved {
    event_id: Uuid,
    product_id: i64,
}

impl EventId for StockReserved {
    type Id = Uuid;
    fn event_id(&self) -> &Uuid {
        &self.event_id
    }
}

#[idempotent_handler]
async fn reserve(tx: &mut Tx, event: &StockReserved) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = $1")
        .bind(event.product_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn handler_db(test_db: &TestDb, service: &str, workers: u32) -> prost_db::Result<Db> {
    let config = test_db
        .config(service)
        .min_connections(workers)
        .max_connections(workers);
    let db = Db::connect(config).await?;
    IdempotencyStore::install(&db).await?;
    sqlx::raw_sql(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL);
         INSERT INTO products SELECT g, 1000000000 FROM generate_series(1, 1000) g;",
    )
    .execute(db.pool())
    .await?;
    Ok(db)
}

async fn run(db: &Db, events: Arc<Vec<StockReserved>>, workers: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (db, events, next) = (db.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else { break };
                    let outcome = reserve(&db, event).await.expect("handler");
                    assert!(!outcome.is_duplicate());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    started.elapsed()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<i64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SIZES: comma-separated record counts")
        })
        .collect();
    let per_round = env("BENCH_EVENTS", 2_000);
    let rounds = env("BENCH_ROUNDS", 6);
    let workers = env("BENCH_WORKERS", 16);

    let test_db = TestDb::new().await?;
    println!("records volume benchmark: {DAYS} days of records per table, expiring the oldest day");
    println!(
        "{:>12} {:>26} {:>26} {:>8}",
        "records", "DELETE (purge_older_than)", "DROP (maintain)", "ratio"
    );
    for &size in &sizes {
        let (deleted_in, deleted) = expire_by_delete(&test_db, size).await?;
        let (dropped_in, _) = expire_by_drop(&test_db, size).await?;
        println!(
            "{size:>12} {:>17.1} ms {deleted:>6} {:>23.1} ms {:>7.0}x",
            deleted_in.as_secs_f64() * 1e3,
            dropped_in.as_secs_f64() * 1e3,
            deleted_in.as_secs_f64() / dropped_in.as_secs_f64()
        );
    }

    // Throughput: the same handler on the plain and the partitioned layout (18 day
    // partitions: 14 days of retention and 3 ahead, as a service would run it).
    let plain = handler_db(&test_db, "plain_handler", workers as u32).await?;
    let parted = handler_db(&test_db, "parted_handler", workers as u32).await?;
    PartitionedRecords::new(14)?
        .days_ahead(17)
        .install_at(&parted, Utc::now() - Days::new(14))
        .await?;
    let events = |round: usize| -> Arc<Vec<StockReserved>> {
        Arc::new(
            (0..per_round)
                .map(|i| StockReserved {
                    event_id: Uuid::now_v7(),
                    product_id: ((i * 7919 + round) as i64 % PRODUCTS) + 1,
                })
                .collect(),
        )
    };
    run(&plain, events(0), workers).await;
    run(&parted, events(0), workers).await;
    let mut totals = [Duration::ZERO; 2];
    for round in 0..rounds {
        // Alternate the order, so that load from other processes hits both alike.
        if round % 2 == 0 {
            totals[0] += run(&plain, events(round), workers).await;
            totals[1] += run(&parted, events(round), workers).await;
        } else {
            totals[1] += run(&parted, events(round), workers).await;
            totals[0] += run(&plain, events(round), workers).await;
        }
    }
    let count = (per_round * rounds) as f64;
    let rate = |d: Duration| count / d.as_secs_f64();
    println!(
        "handler throughput: {workers} workers, {rounds} rounds x {per_round} new UUIDv7 events per layout"
    );
    println!("{:<44} {:>10} {:>8}", "layout", "events/s", "ratio");
    for (name, total) in [
        ("plain idempotency_records", totals[0]),
        ("partitioned, 18 day partitions", totals[1]),
    ] {
        println!(
            "{name:<44} {:>10.0} {:>7.2}x",
            rate(total),
            rate(total) / rate(totals[0])
        );
    }
    plain.close().await;
    parted.close().await;
    test_db.close().await?;
    Ok(())
}
