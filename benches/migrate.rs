//! prost-db's migrator versus `sqlx::migrate::Migrator`, side by side in one run, on the
//! same 200 generated migration files and fresh databases of the same server:
//!
//! - applying all 200 migrations to an empty database;
//! - the no-op `up` when everything is applied.
//!
//! Round trips are counted exactly by a small TCP proxy between the client and PostgreSQL
//! that counts the client's `Query` and `Sync` messages (each one waits for the server).
//!
//! Run: `cargo bench --bench migrate` (PostgreSQL at `PROST_DB_TEST_URL`, `DATABASE_URL` or
//! `postgres://postgres@127.0.0.1:5432/postgres`). `BENCH_MIGRATIONS` and `BENCH_REPEAT`
//! change the sizes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost_db::migrate::{Migrations, Migrator};
use prost_db::testing::TestDb;
use prost_db::{Db, DbConfig};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts the client's round trips through a proxy in front of PostgreSQL.
struct Proxy {
    port: u16,
    round_trips: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let server = TcpStream::connect(&upstream).await.unwrap();
                client.set_nodelay(true).ok();
                server.set_nodelay(true).ok();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        tokio::io::copy(&mut server_read, &mut client_write)
                            .await
                            .ok();
                    });
                    forward_counting(&mut client_read, &mut server_write, &counter).await;
                });
            }
        });
        Proxy { port, round_trips }
    }

    fn take(&self) -> u64 {
        self.round_trips.swap(0, Ordering::SeqCst)
    }
}

/// Forwards the frontend stream, counting `Q` (simple query) and `S` (sync) messages.
async fn forward_counting(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut started = false;
    loop {
        let Ok(n) = from.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if to.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if !started {
                // The startup message has no type byte.
                if buf.len() < 4 {
                    break;
                }
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < len {
                    break;
                }
                buf.drain(..len);
                started = true;
                continue;
            }
            if buf.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize + 1;
            if buf.len() < len {
                break;
            }
            if matches!(buf[0], b'Q' | b'S') {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if std::env::var_os("BENCH_TRACE").is_some() {
                let text = String::from_utf8_lossy(&buf[5..len.min(90)]).replace('\n', " ");
                eprintln!("> {} {text}", buf[0] as char);
            }
            buf.drain(..len);
        }
    }
}

fn generate(count: usize) -> PathBuf {
    let root = std::env::temp_dir().join(format!("prost-db-bench-migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("public");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 1..=count {
        std::fs::write(
            dir.join(format!("{n:04}_create_t{n}.up.sql")),
            format!(
                "CREATE TABLE t{n} (\n    id BIGSERIAL PRIMARY KEY,\n    name TEXT NOT NULL,\n    \
                 qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0),\n    \
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);\n\
                 CREATE INDEX t{n}_name ON t{n} (name);\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{n:04}_create_t{n}.down.sql")),
            format!("DROP TABLE t{n};\n"),
        )
        .unwrap();
    }
    root
}

#[derive(Default, Clone, Copy)]
struct Sample {
    apply: Duration,
    apply_round_trips: u64,
    noop: Duration,
    noop_round_trips: f64,
}

fn through_proxy(test_db: &TestDb, proxy: &Proxy) -> PgConnectOptions {
    test_db
        .connect_options()
        .host("127.0.0.1")
        .port(proxy.port)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

const NOOP_CALLS: u32 = 50;

async fn sqlx_side(dir: &Path, proxy: &Proxy) -> Sample {
    let test_db = TestDb::new().await.unwrap();
    let pool = PgPoolOptions::new()
        .min_connections(1)
        .max_connections(2)
        .connect_with(through_proxy(&test_db, proxy))
        .await
        .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    let (migrator_ref, pool_ref) = (&migrator, &pool);
    let (sample, ()) = measure(proxy, move || async move {
        migrator_ref.run(pool_ref).await.unwrap();
    })
    .await;
    pool.close().await;
    test_db.close().await.unwrap();
    sample
}

async fn prost_side(root: &Path, proxy: &Proxy) -> Sample {
    let test_db = TestDb::new().await.unwrap();
    let config = DbConfig::from_connect_options(through_proxy(&test_db, proxy), "public")
        .min_connections(1)
        .max_connections(2);
    let db = Db::connect(config).await.unwrap();
    let migrator = Migrator::new(Migrations::from_dir(root).unwrap());
    let (migrator_ref, db_ref) = (&migrator, &db);
    let (sample, report) = measure(proxy, move || async move {
        migrator_ref.up(db_ref).await.unwrap()
    })
    .await;
    assert!(!report.applied.is_empty());
    db.close().await;
    test_db.close().await.unwrap();
    sample
}

/// Times the first `up` (it applies everything) and the mean of `NOOP_CALLS` more (nothing
/// left to apply), with the round trips of each; returns the first call's result too.
async fn measure<T, F, Fut>(proxy: &Proxy, mut up: F) -> (Sample, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    proxy.take();
    let started = Instant::now();
    let first = up().await;
    let apply = started.elapsed();
    let apply_round_trips = proxy.take();
    let started = Instant::now();
    for _ in 0..NOOP_CALLS {
        up().await;
    }
    let noop = started.elapsed() / NOOP_CALLS;
    let noop_round_trips = proxy.take() as f64 / f64::from(NOOP_CALLS);
    let sample = Sample {
        apply,
        apply_round_trips,
        noop,
        noop_round_trips,
    };
    (sample, first)
}

fn median(mut samples: Vec<Sample>) -> Sample {
    let mid = samples.len() / 2;
    let mut pick = |key: fn(&Sample) -> Duration| {
        samples.sort_by_key(key);
        samples[mid]
    };
    let apply = pick(|s| s.apply);
    let noop = pick(|s| s.noop);
    Sample {
        apply: apply.apply,
        apply_round_trips: apply.apply_round_trips,
        noop: noop.noop,
        noop_round_trips: noop.noop_round_trips,
    }
}

fn main() {
    let count: usize = std::env::var("BENCH_MIGRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = prost_db::testing::server_url();
        let options: PgConnectOptions = server.parse().unwrap();
        let proxy = Proxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
        let root = generate(count);
        let (mut sqlx_samples, mut prost_samples) = (vec![], vec![]);
        for round in 0..repeat {
            // Alternate the order so neither side always runs on a warmer server.
            if round % 2 == 0 {
                sqlx_samples.push(sqlx_side(&root.join("public"), &proxy).await);
                prost_samples.push(prost_side(&root, &proxy).await);
            } else {
                prost_samples.push(prost_side(&root, &proxy).await);
                sqlx_samples.push(sqlx_side(&root.join("public"), &proxy).await);
            }
        }
        let (s, p) = (median(sqlx_samples), median(prost_samples));
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let ratio = |a: f64, b: f64| format!("{:.2}x", a / b);
        println!("\nmigrate benchmark: {count} migrations, median of {repeat} rounds, fresh database per round, same server");
        println!("{:<34} {:>14} {:>14} {:>22}", "", "sqlx 0.9", "prost-db", "sqlx / prost-db");
        println!("{:<34} {:>14} {:>14} {:>22}", format!("apply {count} migrations: time"), ms(s.apply), ms(p.apply), ratio(s.apply.as_secs_f64(), p.apply.as_secs_f64()));
        println!("{:<34} {:>14} {:>14} {:>22}", format!("apply {count} migrations: round trips"), s.apply_round_trips, p.apply_round_trips, ratio(s.apply_round_trips as f64, p.apply_round_trips as f64));
        println!("{:<34} {:>14} {:>14} {:>22}", "no-op up: time per call", ms(s.noop), ms(p.noop), ratio(s.noop.as_secs_f64(), p.noop.as_secs_f64()));
        println!("{:<34} {:>14} {:>14} {:>22}", "no-op up: round trips per call", format!("{:.1}", s.noop_round_trips), format!("{:.1}", p.noop_round_trips), ratio(s.noop_round_trips, p.noop_round_trips));
        let _ = std::fs::remove_dir_all(root);
    });
}
