//! The idempotent handler against the same body in a bare transaction, side by side, each
//! mode next to its protocol reference, and the payload fingerprint's canonical form against
//! hashing the serializer's output.
//!
//! `cargo bench --bench idempotency` (needs PostgreSQL, and pgbench for the reference; see
//! `prost_db::testing`). Environment: `BENCH_EVENTS` per mode and round (default 2048),
//! `BENCH_ROUNDS` (default 3), `BENCH_WORKERS` (default 16), `BENCH_PROTOCOL_SECONDS` (seconds
//! measured per pgbench shape and round, default 3; 0 skips the reference). The modes
//! alternate in short rounds, so that load from other processes on the machine hits all of
//! them alike; after each round of the library, `benches/idempotency_protocol.sh` runs one
//! round of the same shapes through the same port, and the table prints each mode's ratio
//! to the bare transaction next to its shape's ratio in pgbench. The table runs twice: on
//! loopback, and through a TCP proxy in the bench that holds each chunk 0.25 ms per
//! direction (a 0.5 ms round trip, as across a network). `BENCH_PROXY_SERVE=<port>` runs
//! only that proxy, for the script alone (`PGPORT=<port>`). `BENCH_MODES="batch of 128;
//! hand-written batch"` runs only the modes whose names start so (and the bare transaction),
//! `BENCH_PROXY=0` only the loopback table, and `BENCH_SSLMODE` (default `prefer`) sets the
//! TLS mode of the library's connections and of pgbench's alike. The hand-written batch rows
//! send the batch's statements with sqlx alone, so that batch rows show the library, sqlx
//! without it and pgbench side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use prost_db::idempotency::{EventId, Fingerprint, HandlerMode, IdempotencyStore, Tx};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::Serialize;
use uuid::Uuid;

#[path = "support.rs"]
mod support;
use support::{env, load_average, run_workers};

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

#[idempotent_handler]
async fn reserve_stock_data(tx: &mut Tx, event: &StockReserved) -> Result<i64, sqlx::Error> {
    reserve_returning(tx, event.product_id).await
}

async fn reserve_returning(tx: &mut Tx, product_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE products SET stock = stock - 1 WHERE id = $1 RETURNING stock")
        .bind(product_id)
        .fetch_one(&mut **tx)
        .await
}

/// A batch's statements written out by hand with sqlx, no library: the batch's `BEGIN`, one
/// claim of every key (`unnest`, as the library's), the bodies (none for duplicates), one
/// `SELECT` of the records of duplicates, one `UPDATE` of the results (data), `COMMIT`. What
/// sqlx's client costs for the batch's statements; the library's batch adds its own work
/// (fingerprints, keys, results encoded as JSON, the lease of the transaction) to this.
async fn hand_batch(db: &Db, items: &[(Uuid, i64)], data: bool, duplicate: bool) {
    let action = if data {
        "hand_batch_data"
    } else {
        "hand_batch"
    };
    let mut tx = db
        .pool()
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 30000")
        .await
        .expect("begin");
    let keys: Vec<String> = items.iter().map(|(k, _)| k.to_string()).collect();
    let hashes = vec![vec![0_u8; 33]; keys.len()];
    let claimed = sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash) \
         SELECT k, $2, $3, h FROM unnest($1::text[], $4::bytea[]) AS t(k, h) ORDER BY k \
         ON CONFLICT (event_id, service_name, action) DO NOTHING RETURNING event_id",
    )
    .bind(&keys)
    .bind("catalog")
    .bind(action)
    .bind(&hashes)
    .execute(&mut *tx)
    .await
    .expect("claim");
    if duplicate {
        assert_eq!(claimed.rows_affected(), 0);
        type Record = (
            String,
            Option<Vec<u8>>,
            Option<sqlx::types::JsonValue>,
            bool,
            chrono::DateTime<chrono::Utc>,
        );
        let records: Vec<Record> = sqlx::query_as(
            "SELECT event_id, payload_hash, result, permanent_error, created_at \
             FROM idempotency_records \
             WHERE event_id = ANY($1::text[]) AND service_name = $2 AND action = $3",
        )
        .bind(&keys)
        .bind("catalog")
        .bind(action)
        .fetch_all(&mut *tx)
        .await
        .expect("select");
        assert_eq!(records.len(), keys.len());
        tx.commit().await.expect("commit");
        return;
    }
    assert_eq!(claimed.rows_affected(), keys.len() as u64);
    let mut results = Vec::new();
    for &(_, product) in items {
        if data {
            let stock = reserve_returning(&mut tx, product).await.expect("update");
            results.push(stock.to_string());
        } else {
            reserve(&mut tx, product).await.expect("update");
        }
    }
    if data {
        sqlx::query(
            "UPDATE idempotency_records AS r SET result = t.v::jsonb, permanent_error = false \
             FROM unnest($1::text[], $4::text[]) AS t(k, v) \
             WHERE r.event_id = t.k AND r.service_name = $2 AND r.action = $3",
        )
        .bind(&keys)
        .bind("catalog")
        .bind(action)
        .bind(&results)
        .execute(&mut *tx)
        .await
        .expect("complete");
    }
    tx.commit().await.expect("commit");
}

/// What a row of the table runs: the shape, and whether its body returns data.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bare,
    HandWritten,
    /// `#[idempotent_handler]` on a `Db` in transaction (`false`) or chained (`true`) mode.
    Handler {
        chained: bool,
        data: bool,
        duplicate: bool,
    },
    /// `IdempotencyStore::run_batch` with batches of this many events.
    Batch {
        size: usize,
        data: bool,
        duplicate: bool,
    },
    /// The same batches by hand with sqlx ([`hand_batch`]), no library.
    HandBatch {
        size: usize,
        data: bool,
        duplicate: bool,
    },
}

impl Mode {
    fn name(self) -> String {
        let body = |data: bool| if data { "data" } else { "()" };
        let events = |duplicate: bool| if duplicate { "duplicates" } else { "new" };
        match self {
            Mode::Bare => "bare transaction (3 statements)".into(),
            Mode::HandWritten => "hand-written claim, no library (4 statements)".into(),
            Mode::Handler {
                chained,
                data,
                duplicate,
            } => format!(
                "{}, {}, body -> {}",
                if chained {
                    "chained"
                } else {
                    "claim-first (transaction)"
                },
                events(duplicate),
                body(data)
            ),
            Mode::Batch {
                size,
                data,
                duplicate,
            } => {
                format!(
                    "batch of {size}, {}, body -> {}",
                    events(duplicate),
                    body(data)
                )
            }
            Mode::HandBatch {
                size,
                data,
                duplicate,
            } => format!(
                "hand-written batch of {size}, {}, body -> {}",
                events(duplicate),
                body(data)
            ),
        }
    }
}

impl Mode {
    /// The shape of `benches/idempotency_protocol.sh` that sends this mode's statements
    /// without the library; the hand-written row has none.
    fn shape(self) -> Option<String> {
        let kind = |data: bool, duplicate: bool| match (data, duplicate) {
            (true, _) => "_data",
            (_, true) => "_dup",
            _ => "",
        };
        match self {
            Mode::Bare => Some("bare".into()),
            Mode::HandWritten => None,
            Mode::Handler {
                chained,
                data,
                duplicate,
            } => Some(format!(
                "{}{}",
                if chained { "chained" } else { "claim_first" },
                kind(data, duplicate)
            )),
            Mode::Batch {
                size,
                data,
                duplicate,
            }
            | Mode::HandBatch {
                size,
                data,
                duplicate,
            } => Some(format!("batch{size}{}", kind(data, duplicate))),
        }
    }
}

/// The protocol reference: one round of `benches/idempotency_protocol.sh` for `shapes`,
/// `seconds` measured each, against the server at `host:port`; events/s by shape.
async fn protocol(
    shapes: &[String],
    seconds: usize,
    host: &str,
    port: u16,
    user: &str,
) -> Result<HashMap<String, f64>, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/idempotency_protocol.sh"
    );
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .arg(seconds.to_string())
        .arg("1")
        .env("PGHOST", host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGSSLMODE", ssl_mode())
        .env("SHAPES", shapes.join(" "))
        .output()
        .await
        .map_err(|e| format!("bash {script}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let rate = fields.next()?.parse::<f64>().ok().filter(|&r| r > 0.0)?;
            Some((name.to_owned(), rate))
        })
        .collect())
}

/// `BENCH_SSLMODE` (`prefer` unless set; `disable`, `require`): the same TLS setting for
/// the library's connections and pgbench's (`PGSSLMODE`). Both default to `prefer`, which
/// is TLS against a server with `ssl = on`, loopback or not.
fn ssl_mode() -> String {
    std::env::var("BENCH_SSLMODE").unwrap_or_else(|_| "prefer".to_owned())
}

/// The two pools: transaction mode and chained mode, on one database.
struct Pools {
    tx: Db,
    chained: Db,
}

async fn run(
    pools: &Pools,
    events: Arc<Vec<StockReserved>>,
    workers: usize,
    mode: Mode,
) -> Duration {
    let step = match mode {
        Mode::Batch { size, .. } | Mode::HandBatch { size, .. } => size,
        _ => 1,
    };
    let (db, chained, count) = (pools.tx.clone(), pools.chained.clone(), events.len());
    run_workers(workers, count, step, move |i| {
        let (db, chained, events) = (db.clone(), chained.clone(), events.clone());
        async move { once(&db, &chained, &events, i, mode).await }
    })
    .await
}

/// pgbench's clients in `benches/idempotency_protocol.sh`, and the products each owns.
const LANES: usize = 16;
const LANE_PRODUCTS: i64 = 62;

/// The items of the batch that starts at event `i`, on its own products, sorted (one lock
/// order). As in the protocol reference, where each client updates only its own 62
/// products, concurrent batches do not wait on each other's rows: 16 batches of 128 in
/// flight are 2,048 events, over 1,000 products they would queue on each other's row
/// locks, each held for the batch's 128 round trips, and measure lock waits, not the
/// protocol. The batch's lane is its number modulo 16, so the 16 batches in flight (the
/// workers take the next batch in turn) touch 16 disjoint sets of rows.
fn batch_items(events: &[StockReserved], i: usize, size: usize) -> Vec<(Uuid, i64)> {
    let lane = ((i / size) % LANES) as i64;
    let mut items: Vec<(Uuid, i64)> = events[i..(i + size).min(events.len())]
        .iter()
        .map(|e| {
            (
                e.event_id,
                lane * LANE_PRODUCTS + e.product_id % LANE_PRODUCTS + 1,
            )
        })
        .collect();
    items.sort_by_key(|&(_, product)| product);
    items
}

/// One event of `mode` (a batch: the events from `i` on), on the transaction-mode `db` or
/// the `chained` one.
async fn once(db: &Db, chained: &Db, events: &[StockReserved], i: usize, mode: Mode) {
    let event = &events[i];
    match mode {
        Mode::Bare => bare(db, event).await,
        Mode::HandWritten => hand_written(db, event).await,
        Mode::Handler {
            chained: on_chain,
            data,
            duplicate,
        } => {
            let db = if on_chain { chained } else { db };
            let was_duplicate = if data {
                reserve_stock_data(db, event)
                    .await
                    .expect("handler")
                    .is_duplicate()
            } else {
                reserve_stock(db, event)
                    .await
                    .expect("handler")
                    .is_duplicate()
            };
            assert_eq!(was_duplicate, duplicate);
        }
        Mode::Batch {
            size,
            data,
            duplicate,
        } => {
            let store = IdempotencyStore::new(db);
            let items = batch_items(events, i, size);
            let duplicates = if data {
                store
                    .run_batch("batch_data", &items, |mut tx, &(_, product)| async move {
                        reserve_returning(&mut tx, product).await
                    })
                    .await
                    .into_iter()
                    .map(|r| r.expect("batch").is_duplicate())
                    .collect::<Vec<_>>()
            } else {
                store
                    .run_batch("batch_unit", &items, |mut tx, &(_, product)| async move {
                        reserve(&mut tx, product).await
                    })
                    .await
                    .into_iter()
                    .map(|r| r.expect("batch").is_duplicate())
                    .collect::<Vec<_>>()
            };
            assert!(duplicates.iter().all(|&d| d == duplicate));
        }
        Mode::HandBatch {
            size,
            data,
            duplicate,
        } => {
            let items = batch_items(events, i, size);
            hand_batch(db, &items, data, duplicate).await;
        }
    }
}

/// A TCP proxy to `target` that holds every chunk `delay` before passing it on, in each
/// direction: a network's latency on loopback. One thread per direction of a connection;
/// the protocol's request and response alternate, so chunks rarely queue behind each other.
fn spawn_delay_proxy(target: std::net::SocketAddr, delay: Duration) -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || serve_delay_proxy(listener, target, delay));
    Ok(port)
}

/// The proxy's accept loop.
fn serve_delay_proxy(
    listener: std::net::TcpListener,
    target: std::net::SocketAddr,
    delay: Duration,
) {
    use std::io::{Read, Write};
    {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                from.set_nodelay(true).ok();
                to.set_nodelay(true).ok();
                std::thread::spawn(move || {
                    let mut buf = vec![0_u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let due = Instant::now() + delay;
                        while Instant::now() < due {
                            std::thread::sleep(Duration::from_micros(20));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    to.shutdown(std::net::Shutdown::Both).ok();
                });
            }
        }
    }
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let delay = Duration::from_micros(250);
    // `BENCH_PROXY_SERVE=<port>`: only run the delay proxy to PostgreSQL, for pgbench
    // (`benches/idempotency_protocol.sh` through it).
    if let Ok(port) = std::env::var("BENCH_PROXY_SERVE") {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
        eprintln!("delay proxy on 127.0.0.1:{port} -> {target}, {delay:?} per direction");
        serve_delay_proxy(listener, target, delay);
        return Ok(());
    }
    let per_round = env("BENCH_EVENTS", 2_048);
    let rounds = env("BENCH_ROUNDS", 3);
    let workers = env("BENCH_WORKERS", 16);
    let protocol_seconds = env("BENCH_PROTOCOL_SECONDS", 3);

    let test_db = TestDb::new().await?;
    let options = test_db
        .config("catalog")
        .get_connect_options()
        .clone()
        .ssl_mode(ssl_mode().parse()?);
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], options.get_port()));
    let proxy = spawn_delay_proxy(target, delay)?;
    let connect = |mode: HandlerMode, port: u16| {
        prost_db::DbConfig::from_connect_options(options.clone().port(port), "catalog")
            .create_schema(true)
            .min_connections(workers as u32)
            .max_connections(workers as u32 + 1)
            .handler_mode(mode)
    };
    let setup = Db::connect(connect(HandlerMode::Transaction, options.get_port())).await?;
    IdempotencyStore::install(&setup).await?;
    sqlx::query("CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL)")
        .execute(setup.pool())
        .await?;
    sqlx::query("INSERT INTO products SELECT g, 1000000000 FROM generate_series(1, $1) g")
        .bind(PRODUCTS)
        .execute(setup.pool())
        .await?;
    setup.close().await;

    let events = |round: usize| -> Arc<Vec<StockReserved>> {
        Arc::new(
            (0..per_round)
                .map(|i| StockReserved {
                    event_id: Uuid::new_v4(),
                    product_id: ((i * 7919 + round) % PRODUCTS as usize) as i64 + 1,
                })
                .collect(),
        )
    };
    let mut modes = vec![Mode::Bare, Mode::HandWritten];
    for chained in [false, true] {
        for (data, duplicate) in [(false, false), (true, false), (false, true)] {
            modes.push(Mode::Handler {
                chained,
                data,
                duplicate,
            });
        }
    }
    for size in [32, 128] {
        for (data, duplicate) in [(false, false), (true, false), (false, true)] {
            modes.push(Mode::Batch {
                size,
                data,
                duplicate,
            });
        }
        for (data, duplicate) in [(false, false), (true, false), (false, true)] {
            modes.push(Mode::HandBatch {
                size,
                data,
                duplicate,
            });
        }
    }
    // `BENCH_MODES="batch of 128;hand-written batch"`: only the modes whose names start
    // with one of these (and the bare transaction, the base of every ratio); keep a mode's
    // duplicates with its new events, which they replay.
    if let Ok(only) = std::env::var("BENCH_MODES") {
        let prefixes: Vec<&str> = only.split(';').map(str::trim).collect();
        modes.retain(|m| *m == Mode::Bare || prefixes.iter().any(|p| m.name().starts_with(p)));
    }
    println!(
        "idempotency benchmark: {workers} workers, {rounds} rounds x {per_round} events per mode, \
         body = one UPDATE of a product's stock (-> data: RETURNING stock), sslmode {} for \
         the library and pgbench, load average {}",
        ssl_mode(),
        load_average()
    );
    let mut shapes: Vec<String> = modes.iter().filter_map(|m| m.shape()).collect();
    shapes.sort();
    shapes.dedup();
    let host = options.get_host().to_owned();
    let user = options.get_username().to_owned();
    let mut fingerprint_base = 0.0;
    // `BENCH_PROXY=0`: loopback only.
    let paths = [
        ("loopback", options.get_port()),
        ("through a 0.25 ms/direction delay proxy", proxy),
    ];
    for (path, port) in paths.into_iter().take(1 + env("BENCH_PROXY", 1).min(1)) {
        let pools = Pools {
            tx: Db::connect(connect(HandlerMode::Transaction, port)).await?,
            chained: Db::connect(connect(HandlerMode::Chained, port)).await?,
        };
        // Warm up connections and prepared statements.
        for &mode in &modes {
            let warm = events(1_000_000);
            if let Mode::Handler {
                duplicate: true, ..
            }
            | Mode::Batch {
                duplicate: true, ..
            }
            | Mode::HandBatch {
                duplicate: true, ..
            } = mode
            {
                continue;
            }
            run(&pools, warm, workers, mode).await;
        }
        let load_before = load_average();
        let mut reference: HashMap<String, (f64, u32)> = HashMap::new();
        let mut reference_error: Option<String> = None;
        let mut totals = vec![Duration::ZERO; modes.len()];
        for round in 0..rounds {
            // Each mode its own new events; duplicates replay the `()` run's events. The
            // order turns every round, so that load from other processes hits all alike.
            let mut fresh: HashMap<usize, Arc<Vec<StockReserved>>> = HashMap::new();
            let mut order: Vec<usize> = (0..modes.len()).collect();
            if round % 2 == 1 {
                order.reverse();
                // Duplicates still run after their new events.
                order.sort_by_key(|&m| {
                    matches!(
                        modes[m],
                        Mode::Handler {
                            duplicate: true,
                            ..
                        } | Mode::Batch {
                            duplicate: true,
                            ..
                        } | Mode::HandBatch {
                            duplicate: true,
                            ..
                        }
                    )
                });
            }
            for m in order {
                let mode = modes[m];
                let batch = match mode {
                    Mode::Handler {
                        duplicate: true, ..
                    }
                    | Mode::Batch {
                        duplicate: true, ..
                    }
                    | Mode::HandBatch {
                        duplicate: true, ..
                    } => fresh[&(m - 2)].clone(),
                    _ => {
                        let batch = events(round * modes.len() + m);
                        fresh.insert(m, batch.clone());
                        batch
                    }
                };
                totals[m] += run(&pools, batch, workers, mode).await;
            }
            // The protocol reference after the library's round, through the same port.
            if protocol_seconds > 0 && reference_error.is_none() {
                match protocol(&shapes, protocol_seconds, &host, port, &user).await {
                    Ok(rates) => {
                        for (shape, rate) in rates {
                            let entry = reference.entry(shape).or_insert((0.0, 0));
                            *entry = (entry.0 + rate, entry.1 + 1);
                        }
                    }
                    Err(error) => reference_error = Some(error),
                }
            }
        }
        let count = (per_round * rounds) as f64;
        let rate = |d: Duration| count / d.as_secs_f64();
        let bare_rate = rate(totals[0]);
        let reference_rate = |mode: &Mode| {
            let (sum, n) = reference.get(&mode.shape()?)?;
            Some(sum / f64::from(*n))
        };
        let reference_bare = reference_rate(&Mode::Bare);
        println!(
            "\n{path} (load average {load_before} before, {} after):",
            load_average()
        );
        println!(
            "{:<54} {:>10} {:>7} | {:>18} {:>7} | {:>9}",
            "mode", "events/s", "ratio", "pgbench shape", "ratio", "lib/ref"
        );
        let mut misses = Vec::new();
        for (mode, total) in modes.iter().zip(&totals) {
            let ratio = rate(*total) / bare_rate;
            let reference = match (reference_rate(mode), reference_bare) {
                (Some(r), Some(bare)) => {
                    let of_reference = ratio / (r / bare);
                    if of_reference < 0.95 {
                        misses.push(format!("{} {of_reference:.2}x", mode.name()));
                    }
                    format!(
                        "{:>18} {:>6.2}x | {:>8.2}x",
                        mode.shape().unwrap_or_default(),
                        r / bare,
                        of_reference
                    )
                }
                _ => format!("{:>18} {:>7} | {:>9}", "-", "-", "-"),
            };
            println!(
                "{:<54} {:>10.0} {:>6.2}x | {reference}",
                mode.name(),
                rate(*total),
                ratio,
            );
        }
        match (&reference_error, reference_bare) {
            (Some(error), _) => println!("protocol reference not run: {error}"),
            (None, Some(bare)) => println!(
                "lib/ref: the mode's ratio to the library's bare transaction over the shape's ratio \
                 to pgbench's bare one (pgbench's bare: {bare:.0} events/s, the library's {:.2}x of it); \
                 below 0.95x: {}",
                bare_rate / bare,
                if misses.is_empty() {
                    "none".to_owned()
                } else {
                    misses.join(", ")
                }
            ),
            (None, None) => println!("protocol reference not run (BENCH_PROTOCOL_SECONDS=0)"),
        }
        let claim_first = Mode::Handler {
            chained: false,
            data: false,
            duplicate: false,
        };
        if let (0.0, Some(m)) = (
            fingerprint_base,
            modes.iter().position(|&m| m == claim_first),
        ) {
            fingerprint_base = rate(totals[m]);
        }
        pools.tx.close().await;
        pools.chained.close().await;
    }

    if fingerprint_base > 0.0 {
        let (canonical, serialized, bytes) = fingerprint_costs();
        let handler_us = 1e6 / fingerprint_base * workers as f64;
        println!(
            "\nfingerprint of a {bytes}-byte order event with maps: canonical {canonical:.1} us, \
             hash of the serializer's output {serialized:.1} us ({:.2}x); the canonical form is \
             {:.1}% of a new event's handler run on loopback ({handler_us:.0} us of one worker's time)",
            canonical / serialized,
            100.0 * canonical / handler_us
        );
    }

    test_db.close().await?;
    Ok(())
}
