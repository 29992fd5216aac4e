//! Idempotency records at volume: expiring one day of records by `DELETE`
//! (`purge_older_than`) against dropping its partition (`PartitionedRecords::maintain`), on
//! tables of 1 and 10 million records, and the handler's throughput on both layouts, side
//! by side in one run.
//!
//! `cargo bench --bench records_volume` (needs PostgreSQL; see `prost_db::testing`).
//! Environment: `BENCH_SIZES` (records per table, default `1000000,10000000`), and for the
//! throughput part `BENCH_EVENTS` per layout and round (default 4000), `BENCH_ROUNDS`
//! (default 8), `BENCH_WORKERS` (default 16). Each table holds 10 days of records, made with
//! `generate_series` in one statement per day, then vacuumed and checkpointed. While each
//! expiry runs, a probe runs a handler every 2 ms and reports the longest run: how long
//! the expiry held handlers up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use prost_db::idempotency::{EventId, IdempotencyStore, PartitionedRecords, Tx};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::Serialize;
use uuid::Uuid;

#[path = "support.rs"]
mod support;
use support::{env, load_average, run_workers};

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

/// What one expiry cost: its wall time, what it removed, and the longest a handler run
/// took meanwhile.
struct Expiry {
    took: Duration,
    removed: u64,
    longest_handler_run: Duration,
    handler_runs: u64,
}

/// Runs `expire` while a probe runs a handler (a claim of a new UUIDv7 key of today, an
/// empty body, the commit) on `db` every 2 ms, and returns what it cost. The table is
/// checkpointed first, as a day expired after two weeks has long been written out.
async fn measured<F, Fut>(db: &Db, expire: F) -> prost_db::Result<Expiry>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = prost_db::Result<u64>>,
{
    // A warm pool, as a running service has: without it, the expiry's second transaction
    // waits for a new connection (a TLS handshake, ~90 ms here) while the probe holds one,
    // and that, not the expiry, is what gets timed.
    let warm = futures_util::future::try_join_all((0..4).map(|_| db.acquire())).await?;
    drop(warm);
    sqlx::raw_sql("CHECKPOINT").execute(db.pool()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (store, stop) = (IdempotencyStore::new(db), stop.clone());
        tokio::spawn(async move {
            let (mut longest, mut runs) = (Duration::ZERO, 0_u64);
            while !stop.load(Ordering::Relaxed) {
                let key = Uuid::now_v7().to_string();
                let started = Instant::now();
                let outcome = store
                    .run("probe", &key, &key, |_tx| async {
                        Ok::<(), sqlx::Error>(())
                    })
                    .await
                    .expect("probe");
                assert!(!outcome.is_duplicate());
                longest = longest.max(started.elapsed());
                runs += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (longest, runs)
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let removed = expire().await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (longest_handler_run, handler_runs) = probe.await.expect("probe");
    Ok(Expiry {
        took,
        removed,
        longest_handler_run,
        handler_runs,
    })
}

/// One day of records expired by today's `DELETE`: the oldest of the `DAYS` days.
async fn expire_by_delete(test_db: &TestDb, size: i64) -> prost_db::Result<Expiry> {
    let db = test_db.db(&format!("plain_{size}")).await?;
    IdempotencyStore::install(&db).await?;
    fill(&db, size).await?;
    let store = IdempotencyStore::new(&db);
    let keep_from = (Utc::now().date_naive() - Days::new(DAYS - 1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let expiry = measured(&db, || async {
        let horizon = (Utc::now() - keep_from).to_std().expect("in the past");
        // Whole milliseconds: PostgreSQL's interval holds microseconds, and sqlx refuses more.
        let horizon = Duration::from_millis(u64::try_from(horizon.as_millis()).expect("fits"));
        store.purge_older_than(horizon).await
    })
    .await?;
    db.close().await;
    Ok(expiry)
}

/// The same day expired by the partitioned layout's maintenance: the day detached, then
/// dropped whole.
async fn expire_by_drop(test_db: &TestDb, size: i64) -> prost_db::Result<Expiry> {
    let db = test_db.db(&format!("parted_{size}")).await?;
    IdempotencyStore::install(&db).await?;
    let now = Utc::now();
    PartitionedRecords::new(DAYS as u32 - 1)?
        .days_ahead(DAYS as u32)
        .install_at(&db, now - Days::new(DAYS))
        .await?;
    fill(&db, size).await?;
    let records = PartitionedRecords::new(DAYS as u32 - 1)?.days_ahead(0);
    let expiry = measured(&db, || async {
        let done = records.maintain_at(&db, now).await?;
        assert_eq!(done.dropped.len(), 1, "{done:?}");
        Ok(done.dropped.len() as u64)
    })
    .await?;
    db.close().await;
    Ok(expiry)
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
    let (db, count) = (db.clone(), events.len());
    run_workers(workers, count, 1, move |i| {
        let (db, events) = (db.clone(), events.clone());
        async move {
            let outcome = reserve(&db, &events[i]).await.expect("handler");
            assert!(!outcome.is_duplicate());
        }
    })
    .await
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
    let per_round = env("BENCH_EVENTS", 4_000);
    let rounds = env("BENCH_ROUNDS", 8);
    let workers = env("BENCH_WORKERS", 16);

    let test_db = TestDb::new().await?;
    println!(
        "records volume benchmark: {DAYS} days of records per table, expiring the oldest day, \
         load average {}",
        load_average()
    );
    println!(
        "{:>12} {:>26} {:>16} | {:>16} {:>16} | {:>6}",
        "records",
        "DELETE (purge_older_than)",
        "longest handler",
        "DROP (maintain)",
        "longest handler",
        "ratio"
    );
    for &size in &sizes {
        let deleted = expire_by_delete(&test_db, size).await?;
        let dropped = expire_by_drop(&test_db, size).await?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{size:>12} {:>14.1} ms {:>8} {:>13.1} ms | {:>13.1} ms {:>13.1} ms | {:>5.0}x",
            ms(deleted.took),
            deleted.removed,
            ms(deleted.longest_handler_run),
            ms(dropped.took),
            ms(dropped.longest_handler_run),
            deleted.took.as_secs_f64() / dropped.took.as_secs_f64()
        );
        println!(
            "{:>12} (probe: {} and {} handler runs during the expiries; load average {})",
            "",
            deleted.handler_runs,
            dropped.handler_runs,
            load_average()
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
        "handler throughput: {workers} workers, {rounds} rounds x {per_round} new UUIDv7 events per layout, \
         load average {}",
        load_average()
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
