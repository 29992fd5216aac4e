//! The idempotent handler against the same body in a bare transaction, side by side, and
//! the payload fingerprint's canonical form against hashing the serializer's output.
//!
//! `cargo bench --bench idempotency` (needs PostgreSQL; see `prost_db::testing`).
//! Environment: `BENCH_EVENTS` per mode and round (default 2000), `BENCH_ROUNDS` (default 8),
//! `BENCH_WORKERS` (default 16). The modes alternate in short rounds, so that load from other
//! processes on the machine hits all of them alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use prost_db::idempotency::{EventId, Fingerprint, IdempotencyStore, Outcome, Tx};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::Serialize;
use uuid::Uuid;

const PRODUCTS: i64 = 1_000;

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

async fn reserve(tx: &mut Tx, product_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = $1")
        .bind(product_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[idempotent_handler]
async fn reserve_stock(tx: &mut Tx, event: &StockReserved) -> Result<(), sqlx::Error> {
    reserve(tx, event.product_id).await
}

async fn bare(db: &Db, event: &StockReserved) {
    let mut tx = db.begin().await.expect("begin");
    reserve(&mut tx, event.product_id).await.expect("update");
    tx.commit().await.expect("commit");
}

/// The handler's statements for a new event, written out by hand: what the library's
/// shape costs without the library (no payload hash computed, no span, no result handling).
async fn hand_written(db: &Db, event: &StockReserved) {
    let mut tx = db
        .pool()
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 30000")
        .await
        .expect("begin");
    let claimed = sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash) \
         SELECT $1, $2, $3, $4 FROM (SELECT set_config('lock_timeout', '30000', true)) AS t \
         ON CONFLICT (event_id, service_name, action) DO NOTHING",
    )
    .bind(event.event_id.hyphenated().to_string())
    .bind("catalog")
    .bind("hand_written")
    .bind(&[0_u8; 32][..])
    .execute(&mut *tx)
    .await
    .expect("claim");
    assert_eq!(claimed.rows_affected(), 1);
    reserve(&mut tx, event.product_id).await.expect("update");
    tx.commit().await.expect("commit");
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bare,
    HandWritten,
    New,
    Duplicate,
}

async fn run(db: &Db, events: Arc<Vec<StockReserved>>, workers: usize, mode: Mode) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (db, events, next) = (db.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else { break };
                    match mode {
                        Mode::Bare => bare(&db, event).await,
                        Mode::HandWritten => hand_written(&db, event).await,
                        Mode::New | Mode::Duplicate => {
                            let outcome = reserve_stock(&db, event).await.expect("handler");
                            assert_eq!(
                                matches!(outcome, Outcome::Duplicate(())),
                                mode == Mode::Duplicate
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    started.elapsed()
}

/// An order event as services send them: 1.3 KB of JSON, with a map of attributes and a
/// map of order lines, each a map.
#[derive(Serialize)]
struct OrderPlaced {
    event_id: Uuid,
    order_id: i64,
    customer_id: i64,
    currency: &'static str,
    total_cents: i64,
    attributes: HashMap<String, String>,
    lines: HashMap<String, HashMap<String, i64>>,
}

fn order_placed() -> OrderPlaced {
    OrderPlaced {
        event_id: Uuid::new_v4(),
        order_id: 1001,
        customer_id: 42,
        currency: "EUR",
        total_cents: 12_345,
        attributes: (0..8)
            .map(|i| (format!("attribute-{i}"), format!("value of attribute {i}")))
            .collect(),
        lines: (0..10)
            .map(|line| {
                let detail = ["product_id", "quantity", "price_cents", "discount_cents"]
                    .iter()
                    .map(|k| ((*k).to_owned(), line * 100))
                    .collect();
                (format!("line-{line}"), detail)
            })
            .collect(),
    }
}

/// What `Fingerprint::of` did before its canonical form: SHA-256 of the serializer's
/// output, whose map order varies between decodes.
fn serializer_hash(payload: &OrderPlaced) -> [u8; 32] {
    use sha2::Digest;
    struct Hasher(sha2::Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = Hasher(sha2::Sha256::new());
    serde_json::to_writer(&mut hasher, payload).expect("serializes");
    hasher.0.finalize().into()
}

/// Microseconds per fingerprint of the order event, canonical and by the serializer's
/// output, alternating in rounds.
fn fingerprint_costs() -> (f64, f64, usize) {
    let payload = order_placed();
    let bytes = serde_json::to_vec(&payload).expect("serializes").len();
    const PER_ROUND: u32 = 2_000;
    let (mut canonical, mut serialized) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            std::hint::black_box(Fingerprint::of(std::hint::black_box(&payload)).unwrap());
        }
        canonical += started.elapsed();
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            std::hint::black_box(serializer_hash(std::hint::black_box(&payload)));
        }
        serialized += started.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(10 * PER_ROUND);
    (per(canonical), per(serialized), bytes)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_round = env("BENCH_EVENTS", 2_000);
    let rounds = env("BENCH_ROUNDS", 8);
    let workers = env("BENCH_WORKERS", 16);

    let test_db = TestDb::new().await?;
    let config = test_db
        .config("catalog")
        .min_connections(workers as u32)
        .max_connections(workers as u32);
    let db = Db::connect(config).await?;
    IdempotencyStore::install(&db).await?;
    sqlx::query("CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL)")
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO products SELECT g, 1000000000 FROM generate_series(1, $1) g")
        .bind(PRODUCTS)
        .execute(db.pool())
        .await?;

    let events = |round: usize| -> Arc<Vec<StockReserved>> {
        Arc::new(
            (0..per_round)
                .map(|i| StockReserved {
                    event_id: Uuid::new_v4(),
                    product_id: ((i * 7919 + round) as i64 % PRODUCTS) + 1,
                })
                .collect(),
        )
    };
    // Warm up connections and prepared statements.
    let warm = events(usize::MAX / 2);
    run(&db, warm.clone(), workers, Mode::Bare).await;
    run(&db, warm.clone(), workers, Mode::HandWritten).await;
    run(&db, warm.clone(), workers, Mode::New).await;

    let mut totals = [Duration::ZERO; 4];
    for round in 0..rounds {
        let batch = events(round);
        // New events must precede their duplicates; the other runs move around them.
        if round % 2 == 0 {
            totals[0] += run(&db, batch.clone(), workers, Mode::Bare).await;
            totals[1] += run(&db, batch.clone(), workers, Mode::HandWritten).await;
        }
        totals[2] += run(&db, batch.clone(), workers, Mode::New).await;
        if round % 2 == 1 {
            totals[1] += run(&db, batch.clone(), workers, Mode::HandWritten).await;
            totals[0] += run(&db, batch.clone(), workers, Mode::Bare).await;
        }
        totals[3] += run(&db, batch.clone(), workers, Mode::Duplicate).await;
    }

    let count = (per_round * rounds) as f64;
    let rate = |d: Duration| count / d.as_secs_f64();
    let bare_rate = rate(totals[0]);
    println!(
        "idempotency benchmark: {workers} workers, {rounds} rounds x {per_round} events per mode, body = one UPDATE of a product's stock"
    );
    println!("{:<44} {:>10} {:>8}", "mode", "events/s", "ratio");
    for (name, total) in [
        ("bare transaction (3 statements)", totals[0]),
        ("hand-written claim, no library (4 statements)", totals[1]),
        ("idempotent handler, new events", totals[2]),
        ("idempotent handler, duplicates", totals[3]),
    ] {
        println!(
            "{name:<44} {:>10.0} {:>7.2}x",
            rate(total),
            rate(total) / bare_rate
        );
    }

    let (canonical, serialized, bytes) = fingerprint_costs();
    let handler_us = 1e6 / rate(totals[2]) * workers as f64;
    println!(
        "fingerprint of a {bytes}-byte order event with maps: canonical {canonical:.1} us, \
         hash of the serializer's output {serialized:.1} us ({:.2}x); the canonical form is \
         {:.1}% of a new event's handler run ({handler_us:.0} us of one worker's time)",
        canonical / serialized,
        100.0 * canonical / handler_us
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}
