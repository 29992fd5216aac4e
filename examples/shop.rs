//! The shop, end to end: the seed's flow made real and its scenario replayed.
//!
//! ```text
//! cargo run --example shop
//! ```
//!
//! 1. Creates the `prost_shop` and `analytics` databases if needed and migrates every schema
//!    (`catalog`, `users`, `cart`, `orders`, and `analytics.public`).
//! 2. Verifies the catalog's tables against `#[derive(Schema)]` structs.
//! 3. Starts the catalog service's `OrderCreated` handlers on RabbitMQ (several concurrent
//!    consumers) and its outbox relay.
//! 4. Replays the seed's scenario: 10,000 orders, 2% "network failures", each redelivered
//!    3 times (600 duplicates), and prints what happened. Exits non-zero if any state is
//!    wrong.
//!
//! Environment: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/prost_shop`),
//! `ANALYTICS_DATABASE_URL` (default: database `analytics` on the same server), `AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`), `SHOP_EVENTS` (default 10000),
//! `SHOP_CONSUMERS` (default 4).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost_db::amqp::lapin::options::QueuePurgeOptions;
use prost_db::amqp::{self, Publisher, Topology};
use prost_db::idempotency::IdempotencyStore;
use prost_db::migrate::{Migrations, Migrator};
use prost_db::outbox::{self, Outbox, Relay};
use prost_db::{Db, DbConfig};
use prost_shop::events::{ORDERS_EXCHANGE, PRODUCTS_EXCHANGE};
use prost_shop::handlers::{Catalog, Crashes, Metrics, Mode};
use prost_shop::scenario::{Plan, Verification, wait_until};
use prost_shop::tables;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/prost_shop";
const SERVICES: [&str; 4] = ["catalog", "users", "cart", "orders"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let recorder = prost_shop::recorder::MemoryRecorder::default();
    let _ = recorder.install();
    let result = run().await;
    println!("\n== metrics (what prost-db emits through the `metrics` facade)\n");
    print!("{}", recorder.render());
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\nINCONSISTENT: see the table above");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::from(2)
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

async fn run() -> Result<bool, BoxError> {
    let url = env_or("DATABASE_URL", DEFAULT_URL);
    let events: usize = env_or("SHOP_EVENTS", "10000").parse()?;
    let consumers: usize = env_or("SHOP_CONSUMERS", "4").parse()?;
    let shop_options: PgConnectOptions = url.parse()?;
    let analytics_options = match std::env::var("ANALYTICS_DATABASE_URL") {
        Ok(url) => url.parse()?,
        Err(_) => shop_options.clone().database("analytics"),
    };

    // 1. Databases and migrations.
    println!("== migrating");
    for options in [&shop_options, &analytics_options] {
        create_database_if_missing(options).await?;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut dbs = Vec::new();
    for service in SERVICES {
        let db = Db::connect(
            DbConfig::from_connect_options(shop_options.clone(), service)
                .create_schema(true)
                .min_connections(1)
                .max_connections(if service == "catalog" { 24 } else { 2 })
                .acquire_timeout(Duration::from_secs(10)),
        )
        .await?;
        let applied = migrate(&db, &root.join("shop")).await?;
        println!("   {service:<10} {applied} migration(s) applied");
        dbs.push(db);
    }
    let analytics = Db::connect(
        DbConfig::from_connect_options(analytics_options, "analytics")
            .schema("public")
            .min_connections(1)
            .max_connections(2),
    )
    .await?;
    let applied = migrate(&analytics, &root.join("analytics")).await?;
    println!("   {:<10} {applied} migration(s) applied", "analytics");
    let catalog = dbs.swap_remove(0);
    outbox::install(&catalog).await?;

    // 2. Verify the live tables against the `#[derive(Schema)]` structs (one round trip,
    //    every difference at once), and the framework tables the catalog's handlers use.
    catalog.check_tables(tables::ALL).await?;
    catalog
        .require_tables(&["idempotency_records", "outbox_events"])
        .await?;
    println!(
        "== {} tables verified against #[derive(Schema)]: {}",
        tables::ALL.len(),
        tables::ALL
            .iter()
            .map(|t| t.qualified_name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 3. RabbitMQ: topology, then the scenario with the catalog's handlers.
    let connection = Arc::new(amqp::connect(&amqp::url_from_env()).await?);
    let topology = Topology::shop("");
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    let plan = Plan::new(events, 0.02, 3, 100, 2026);
    println!(
        "== replaying: {} orders, {} with a network failure, {} duplicate deliveries, {consumers} consumers",
        plan.orders.len(),
        plan.failed_events,
        plan.duplicates()
    );
    let mut modes = vec![Mode::Idempotent];
    if env_or("SHOP_CONTROL", "1") != "0" {
        modes.push(Mode::Bare);
    }
    let mut runs = Vec::new();
    for mode in modes {
        let ctx = Replay {
            catalog: &catalog,
            connection: &connection,
            channel: &channel,
            topology: &topology,
            plan: &plan,
            consumers,
        };
        let run = ctx.run(mode).await?;
        println!("   {:<22} {:.1} s", run.title, run.elapsed.as_secs_f64());
        runs.push(run);
    }

    // 4. The table.
    let ok = runs[0].consistent(&plan);
    println!();
    print!("| {:<26} |", "");
    for run in &runs {
        print!(" {:>22} |", run.title);
    }
    println!();
    print!("|{:-<28}|", "");
    for _ in &runs {
        print!("{:->24}|", "");
    }
    println!();
    let names = [
        "events (orders)",
        "network failures (2%)",
        "duplicates delivered",
        "duplicates skipped",
        "erroneous state changes",
        "expected stock",
        "actual stock",
        "dead-lettered",
        "outbox events published",
        "throughput (deliveries/s)",
        "handler latency p50",
        "handler latency p99",
    ];
    let columns: Vec<[String; 12]> = runs.iter().map(|r| r.column(&plan)).collect();
    for (i, name) in names.iter().enumerate() {
        print!("| {name:<26} |");
        for column in &columns {
            print!(" {:>22} |", column[i]);
        }
        println!();
    }
    println!();
    println!(
        "{}: every order applied exactly once, every duplicate skipped",
        if ok { "CONSISTENT" } else { "INCONSISTENT" },
    );
    for db in dbs {
        db.close().await;
    }
    analytics.close().await;
    catalog.close().await;
    Ok(ok)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn channel_depth(channel: &amqp::lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            amqp::lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or(u32::MAX)
}

async fn purge(channel: &amqp::lapin::Channel, topology: &Topology) -> Result<(), BoxError> {
    for spec in topology.queues() {
        let tiers = spec.retry_queues().into_iter().map(|(_, queue)| queue);
        for queue in [spec.queue(), spec.dead_letter_queue()]
            .into_iter()
            .chain(tiers)
        {
            channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await?;
        }
    }
    Ok(())
}

/// The demo replays the same scenario on every run: start from an empty catalog.
async fn reset_catalog(catalog: &Db) -> Result<(), BoxError> {
    sqlx::query(
        "TRUNCATE inventory_reservations, products, outbox_events RESTART IDENTITY CASCADE",
    )
    .execute(catalog.pool())
    .await?;
    Ok(())
}

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), BoxError> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot connect to PostgreSQL at {}:{} ({e}).\n\
                 Start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` \
                 (or `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`), \
                 or point DATABASE_URL at a running server.",
                options.get_host(),
                options.get_port()
            )
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let ident = prost_db::Identifier::new(prost_db::IdentifierKind::Database, &name)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {ident}")))
            .execute(&mut admin)
            .await?;
        println!("   created database {name}");
    }
    admin.close().await?;
    Ok(())
}

/// Applies the pending migrations of `db`'s schema from `root` and installs the framework
/// tables the handlers use.
async fn migrate(db: &Db, root: &Path) -> Result<usize, BoxError> {
    let report = Migrator::new(Migrations::from_dir(root)?).up(db).await?;
    IdempotencyStore::install(db).await?;
    Ok(report.applied.len())
}

/// One replay of the plan against the catalog.
struct Replay<'a> {
    catalog: &'a Db,
    connection: &'a Arc<amqp::lapin::Connection>,
    channel: &'a amqp::lapin::Channel,
    topology: &'a Topology,
    plan: &'a Plan,
    consumers: usize,
}

/// What one replay measured.
struct Run {
    title: &'static str,
    finished: bool,
    elapsed: Duration,
    metrics: Arc<Metrics>,
    state: Verification,
    dead: u32,
    published: u64,
}

impl Replay<'_> {
    async fn run(&self, mode: Mode) -> Result<Run, BoxError> {
        let title = match mode {
            Mode::Idempotent => "prost-db",
            _ => "no idempotency (seed)",
        };
        purge(self.channel, self.topology).await?;
        reset_catalog(self.catalog).await?;
        self.plan.seed_products(self.catalog).await?;

        let metrics = Arc::new(Metrics::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let queue = self.topology.queues()[0].clone();
        let mut workers = Vec::new();
        for _ in 0..self.consumers {
            let handler = Catalog {
                db: self.catalog.clone(),
                outbox: Outbox::new(self.catalog),
                products_exchange: PRODUCTS_EXCHANGE.to_owned(),
                mode,
                crashes: Crashes::default(),
                metrics: Arc::clone(&metrics),
                publisher: None,
            };
            let consumer = handler.consumer(queue.clone()).prefetch(4);
            let connection = Arc::clone(self.connection);
            let stop = stopped();
            workers.push(tokio::spawn(async move {
                consumer.run(&connection, stop).await
            }));
        }
        let relay = {
            let relay = Relay::new(self.catalog.clone())
                .batch_size(500)
                .poll_interval(Duration::from_millis(20));
            let connection = Arc::clone(self.connection);
            let stop = stopped();
            tokio::spawn(async move { relay.run(&connection, stop).await })
        };

        let started = Instant::now();
        let publisher = Publisher::new(self.connection).await?;
        self.plan.publish(&publisher, ORDERS_EXCHANGE).await?;
        let handled = || {
            metrics.processed.load(Ordering::Relaxed)
                + metrics.duplicates.load(Ordering::Relaxed)
                + metrics.failures.load(Ordering::Relaxed)
        };
        let finished = wait_until(Duration::from_secs(600), || async {
            handled() >= self.plan.deliveries.len() as u64
                && channel_depth(self.channel, &queue.queue()).await == 0
        })
        .await;
        let elapsed = started.elapsed();
        let outbox = Outbox::new(self.catalog);
        wait_until(Duration::from_secs(30), || async {
            outbox
                .pending(self.catalog.pool())
                .await
                .is_ok_and(|n| n == 0)
        })
        .await;
        let _ = stop_tx.send(true);
        for worker in workers {
            worker.await??;
        }
        let published = relay.await??;
        let state = self.plan.verify(self.catalog).await?;
        let dead = channel_depth(self.channel, &queue.dead_letter_queue()).await;
        purge(self.channel, self.topology).await?;
        Ok(Run {
            title,
            finished,
            elapsed,
            metrics,
            state,
            dead,
            published,
        })
    }
}

impl Run {
    fn consistent(&self, plan: &Plan) -> bool {
        self.finished
            && self.state.is_consistent()
            && self.metrics.duplicates.load(Ordering::Relaxed) == plan.duplicates() as u64
            && self.metrics.processed.load(Ordering::Relaxed) == plan.orders.len() as u64
            && self.dead == 0
    }

    fn column(&self, plan: &Plan) -> [String; 12] {
        let throughput = plan.deliveries.len() as f64 / self.elapsed.as_secs_f64();
        [
            plan.orders.len().to_string(),
            plan.failed_events.to_string(),
            plan.duplicates().to_string(),
            self.metrics.duplicates.load(Ordering::Relaxed).to_string(),
            self.state.erroneous_state_changes().to_string(),
            self.state.expected_stock.to_string(),
            self.state.actual_stock.to_string(),
            self.dead.to_string(),
            self.published.to_string(),
            format!("{throughput:.0}"),
            format!("{:.1} ms", ms(self.metrics.latency_quantile(0.5))),
            format!("{:.1} ms", ms(self.metrics.latency_quantile(0.99))),
        ]
    }
}
