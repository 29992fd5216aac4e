//! The shop, end to end: the seed's order saga across the cart, orders and catalog
//! services, run with prost-db and, side by side, in the seed's shape as a control.
//!
//! ```text
//! cargo run --example shop
//! ```
//!
//! 1. Creates the `prost_shop` and `analytics` databases if needed and migrates every schema
//!    (`catalog`, `users`, `cart`, `orders`, and `analytics.public`).
//! 2. Verifies the live tables against the `#[derive(Schema)]` structs, and the saga tables
//!    against what the saga store needs.
//! 3. Starts the three services in this process (each: consumers of its queue, its outbox
//!    relay; orders also sweeps expired sagas), and checks out 10,000 carts. Every delivery
//!    on every hop has the seed's 2% chance of a network failure (3 more deliveries); 5% of
//!    the carts ask for a sold-out product; 1% hold their stock for 1 s only, and their
//!    confirmation arrives after that.
//! 4. Runs the same scenario with the seed's shape (no idempotency, publish after commit,
//!    unguarded saga updates), and prints both: orders confirmed, cancelled and stuck,
//!    stock expected and actual, compensations needed and run. Exits 1 if the prost-db
//!    column is not exactly right, 2 on errors.
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/prost_shop?sslmode=disable`),
//! `ANALYTICS_DATABASE_URL` (default: database `analytics` on the same server), `AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`), `SHOP_ORDERS` (default 10000),
//! `SHOP_CONSUMERS` (consumers per service, default 2), `SHOP_PREFIX` (prefix of every
//! exchange and queue, default none), `SHOP_CONTROL=0` skips the control, `SHOP_MODE`
//! (`transaction`, the default; `chained`; `batch`: the catalog's `OrderCreated` step in
//! batches of `SHOP_BATCH`, default 32), `SHOP_POOLER_URL` runs the services through a
//! transaction pooler (PgBouncer), each as a role of its own (provisioned over
//! `DATABASE_URL`, which the migrator uses).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_db::amqp::lapin::options::QueuePurgeOptions;
use prost_db::amqp::{self, Publisher, Topology};
use prost_db::idempotency::HandlerMode;
use prost_db::idempotency::IdempotencyStore;
use prost_db::migrate::{Migrations, Migrator};
use prost_db::outbox::{self, Outbox};
use prost_db::{Db, DbConfig};
use prost_shop::faults::{FaultCounts, Faults};
use prost_shop::scenario::{Kind, SagaPlan, SagaReport, wait_until};
use prost_shop::services::{CartClient, Counters, ServiceConfig, ServiceHandle, Shape};
use prost_shop::tables;
use prost_shop::topology::{Service, saga_topology, waiting_queues};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// TLS adds nothing on the loopback and costs a fifth of the example's CPU.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/prost_shop?sslmode=disable";
const SERVICES: [&str; 4] = ["catalog", "users", "cart", "orders"];
/// The late carts' hold: their confirmation arrives after it.
const LATE_HOLD: Duration = Duration::from_secs(1);
/// Messages waiting (in queues and outboxes) above which no more carts are checked out:
/// customers arrive as the shop keeps up.
const BACKLOG: usize = 400;

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

/// Behind a transaction pooler (`SHOP_POOLER_URL`, e.g.
/// `postgres://127.0.0.1:6432/prost_shop`): each service logs in through it as a role of
/// its own, `<database>_<service>`, provisioned over `DATABASE_URL` (which creates its
/// schema, and which the migrator uses too), and the services send unnamed statements.
struct Pooled {
    through: Option<PgConnectOptions>,
    admin: Option<sqlx::PgPool>,
    direct_url: String,
}

impl Pooled {
    async fn from_env(url: &str, shop: &PgConnectOptions) -> Result<Pooled, BoxError> {
        let Ok(pooler_url) = std::env::var("SHOP_POOLER_URL") else {
            return Ok(Pooled {
                through: None,
                admin: None,
                direct_url: url.to_owned(),
            });
        };
        println!("== through the pooler at {pooler_url} (SHOP_POOLER_URL)");
        prost_shop::use_statements(prost_db::Statements::UNNAMED);
        Ok(Pooled {
            through: Some(pooler_url.parse()?),
            admin: Some(sqlx::PgPool::connect_with(shop.clone()).await?),
            direct_url: url.to_owned(),
        })
    }

    async fn config(&self, shop: &PgConnectOptions, service: &str) -> Result<DbConfig, BoxError> {
        let (Some(through), Some(admin)) = (&self.through, &self.admin) else {
            return Ok(DbConfig::from_connect_options(shop.clone(), service).create_schema(true));
        };
        let role = format!("{}_{service}", shop.get_database().unwrap_or("prost_shop"));
        prost_db::provision_service_role(admin, &prost_db::ServiceRole::new(&role, service))
            .await?;
        let options = through
            .clone()
            .username(&role)
            .database(shop.get_database().unwrap_or("prost_shop"));
        Ok(DbConfig::from_connect_options(options, service)
            .pooler(prost_db::Pooler::Transaction)
            .migrate_url(&self.direct_url)?)
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
    let orders: usize = env_or("SHOP_ORDERS", "10000").parse()?;
    let consumers: usize = env_or("SHOP_CONSUMERS", "2").parse()?;
    let prefix = env_or("SHOP_PREFIX", "");
    let shop_options: PgConnectOptions = url.parse()?;
    let analytics_options = match std::env::var("ANALYTICS_DATABASE_URL") {
        Ok(url) => url.parse()?,
        Err(_) => shop_options.clone().database("analytics"),
    };

    // The throughput mode, `SHOP_MODE`: `transaction` (the default), `chained` (a kept
    // connection per concurrent handler run, its transaction chained from event to event;
    // also `PROST_DB_HANDLER_MODE=chained`), or `batch` (transaction mode, and the catalog's
    // `OrderCreated` step in batches of up to `SHOP_BATCH`, default 32).
    let mode = env_or("SHOP_MODE", "");
    let handler_mode: HandlerMode = match mode.as_str() {
        "" | "batch" => match std::env::var("PROST_DB_HANDLER_MODE") {
            Ok(mode) => mode.parse()?,
            Err(_) => HandlerMode::default(),
        },
        "transaction" | "chained" => mode.parse()?,
        other => {
            return Err(format!(
                "unknown SHOP_MODE {other:?}: expected transaction, chained or batch"
            )
            .into());
        }
    };
    let batch: Option<usize> = match mode.as_str() {
        "batch" => Some(env_or("SHOP_BATCH", "32").parse()?),
        _ => None,
    };
    match batch {
        Some(n) => println!(
            "== mode: batch of {n} for the catalog's OrderCreated, {handler_mode} otherwise (SHOP_MODE)"
        ),
        None => println!("== mode: {handler_mode} (SHOP_MODE or PROST_DB_HANDLER_MODE)"),
    }

    // 1. Databases and migrations.
    println!("== migrating");
    for options in [&shop_options, &analytics_options] {
        create_database_if_missing(options).await?;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let pooler = Pooled::from_env(&url, &shop_options).await?;
    let mut dbs = Vec::new();
    for service in SERVICES {
        let db = Db::connect(
            pooler
                .config(&shop_options, service)
                .await?
                .min_connections(1)
                .max_connections(if service == "users" { 2 } else { 20 })
                .acquire_timeout(Duration::from_secs(30))
                .handler_mode(handler_mode),
        )
        .await?;
        let applied = migrate(&db, &root.join("shop")).await?;
        println!("   {service:<10} {applied} migration(s) applied");
        dbs.push((service, db));
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
    let db = |name: &str| {
        dbs.iter()
            .find(|(service, _)| *service == name)
            .map(|(_, db)| db.clone())
            .expect("every service is connected")
    };

    // 2. The live tables against the `#[derive(Schema)]` structs (one round trip, every
    //    difference at once), and the saga tables against the store's needs.
    let catalog = db("catalog");
    catalog.check_tables(tables::ALL).await?;
    prost_shop::orders::saga_store()?
        .verify(&db("orders"))
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

    // 3. RabbitMQ, then the scenario, once per shape.
    let connection = Arc::new(amqp::connect(&amqp::url_from_env()).await?);
    let topology = saga_topology(&prefix);
    let channel = connection.create_channel().await?;
    prost_shop::topology::declare(&topology, &channel).await?;
    let plan = SagaPlan::new(orders, 0.05, 0.01, 100, 2026).late_hold(LATE_HOLD);
    println!(
        "== checking out {} carts: {} ask for a sold-out product, {} hold stock for {} s only; \
         every delivery has a 2% chance of a network failure (3 more deliveries)",
        plan.carts.len(),
        plan.count(Kind::OutOfStock),
        plan.count(Kind::Late),
        LATE_HOLD.as_secs()
    );
    let mut shapes = vec![Shape::ProstDb];
    if env_or("SHOP_CONTROL", "1") != "0" {
        shapes.push(Shape::Seed);
    }
    // Seeding and checking the scenario need every schema: a direct pool behind a pooler.
    let pool = pooler
        .admin
        .clone()
        .unwrap_or_else(|| catalog.pool().clone());
    let mut runs = Vec::new();
    for shape in shapes {
        let ctx = Scenario {
            dbs: Service::ALL.map(|s| (s, db(s.as_str()))).to_vec(),
            pool: &pool,
            connection: &connection,
            channel: &channel,
            topology: &topology,
            plan: &plan,
            consumers,
            prefix: &prefix,
            batch,
        };
        let run = ctx.run(shape).await?;
        println!("   {:<22} {:.1} s", run.title, run.elapsed.as_secs_f64());
        runs.push(run);
    }

    // 4. The table.
    let ok = runs[0].exact(&plan);
    println!();
    let rows = Run::rows(&plan);
    let width = rows.iter().map(String::len).max().unwrap_or(0);
    print!("| {:<width$} |", "");
    for run in &runs {
        print!(" {:>22} |", run.title);
    }
    println!();
    print!("|{:-<w$}|", "", w = width + 2);
    for _ in &runs {
        print!("{:->24}|", "");
    }
    println!();
    let columns: Vec<Vec<String>> = runs.iter().map(|r| r.column(&plan)).collect();
    for (i, name) in rows.iter().enumerate() {
        print!("| {name:<width$} |");
        for column in &columns {
            print!(" {:>22} |", column[i]);
        }
        println!();
    }
    println!();
    if ok {
        println!("CONSISTENT: every saga ended as it should, exactly once");
    } else {
        for problem in runs[0].report.problems() {
            println!("prost-db: {problem}");
        }
    }
    for (_, db) in dbs {
        db.close().await;
    }
    analytics.close().await;
    Ok(ok)
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
        let dead_letters = spec.dead_letter_queue();
        for queue in waiting_queues(spec).into_iter().chain([dead_letters]) {
            channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await?;
        }
    }
    Ok(())
}

/// The demo replays the same scenario on every run: start from empty saga tables.
async fn reset(pool: &sqlx::PgPool) -> Result<(), BoxError> {
    sqlx::query(
        "TRUNCATE catalog.inventory_reservations, catalog.order_holds, catalog.products, \
                  catalog.outbox_events, catalog.idempotency_records, \
                  cart.cart_items, cart.carts, cart.outbox_events, cart.idempotency_records, \
                  orders.compensation_log, orders.inventory_reservations, orders.saga_states, \
                  orders.order_items, orders.orders, orders.outbox_events, orders.idempotency_records \
         RESTART IDENTITY CASCADE",
    )
    .execute(pool)
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

/// Applies the pending migrations of `db`'s schema from `root`; the migrator also installs
/// the framework tables (idempotency records, outbox).
async fn migrate(db: &Db, root: &Path) -> Result<usize, BoxError> {
    let report = Migrator::new(Migrations::from_dir(root)?).up(db).await?;
    IdempotencyStore::install(db).await?;
    outbox::install(db).await?;
    Ok(report.applied.len())
}

/// One run of the scenario.
struct Scenario<'a> {
    dbs: Vec<(Service, Db)>,
    pool: &'a sqlx::PgPool,
    connection: &'a Arc<amqp::lapin::Connection>,
    channel: &'a amqp::lapin::Channel,
    topology: &'a Topology,
    plan: &'a SagaPlan,
    consumers: usize,
    prefix: &'a str,
    batch: Option<usize>,
}

/// What one run measured.
struct Run {
    title: &'static str,
    shape: Shape,
    elapsed: Duration,
    report: SagaReport,
    counters: Vec<(Service, Arc<Counters>)>,
    faults: Arc<FaultCounts>,
    dead: u64,
    published: u64,
}

impl Scenario<'_> {
    async fn backlog(&self) -> u64 {
        let mut n = 0;
        for (_, db) in &self.dbs {
            n += Outbox::new(db).pending(db.pool()).await.unwrap_or(1) as u64;
        }
        for spec in self.topology.queues() {
            for queue in waiting_queues(spec) {
                n += u64::from(channel_depth(self.channel, &queue).await);
            }
        }
        n
    }

    async fn run(&self, shape: Shape) -> Result<Run, BoxError> {
        let title = match shape {
            Shape::ProstDb => "prost-db",
            Shape::Seed => "seed's shape (control)",
        };
        purge(self.channel, self.topology).await?;
        reset(self.pool).await?;
        self.plan.seed_products(self.pool).await?;
        self.plan.seed_carts(self.pool).await?;

        let faults = Arc::new(FaultCounts::default());
        let mut counters = Vec::new();
        let mut services = Vec::new();
        for (service, db) in &self.dbs {
            let mut config = ServiceConfig::new(*service, shape, db.clone(), self.prefix);
            config.consumers = self.consumers;
            config.prefetch = 8;
            config.batch = self.batch;
            config.relay_batch = 500;
            config.faults = Faults {
                delay_short_holds: Some(Duration::from_secs(30)),
                ..Faults::seed()
            };
            config.fault_counts = Arc::clone(&faults);
            counters.push((*service, Arc::clone(&config.counters)));
            services.push(ServiceHandle::spawn(config, Arc::clone(self.connection)));
        }

        let started = Instant::now();
        let cart = db_of(&self.dbs, Service::Cart);
        let client = match shape {
            Shape::ProstDb => CartClient::new(cart, self.prefix),
            Shape::Seed => {
                CartClient::seed(cart, self.prefix, Publisher::new(self.connection).await?)
            }
        };
        self.plan
            .checkout_paced(&client, 16, BACKLOG / 4, || async {
                self.backlog().await < BACKLOG as u64
            })
            .await?;
        // Done when every saga has ended and nothing waits anywhere; the control's stuck
        // sagas never end, so for it the backlog running dry is the end.
        let quiet = std::sync::atomic::AtomicU32::new(0);
        wait_until(Duration::from_secs(900), || async {
            let done = match shape {
                Shape::ProstDb => open_sagas(self.pool).await == 0,
                Shape::Seed => true,
            };
            if done && self.backlog().await == 0 {
                quiet.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                quiet.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            quiet.load(std::sync::atomic::Ordering::Relaxed) >= 3
        })
        .await;
        let elapsed = started.elapsed();
        let mut published = 0;
        for service in services {
            published += service.stop().await?.published;
        }
        let report = self.plan.verify(self.pool).await?;
        let mut dead = 0;
        for spec in self.topology.queues() {
            dead += u64::from(channel_depth(self.channel, &spec.dead_letter_queue()).await);
        }
        purge(self.channel, self.topology).await?;
        Ok(Run {
            title,
            shape,
            elapsed,
            report,
            counters,
            faults,
            dead,
            published,
        })
    }
}

/// Sagas not ended, and carts not closed (a cheap check, while the run goes on).
async fn open_sagas(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM orders.saga_states WHERE status NOT IN ('confirmed', 'cancelled')) \
              + (SELECT count(*) FROM cart.carts WHERE status = 'checked_out')",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(i64::MAX)
}

fn db_of(dbs: &[(Service, Db)], service: Service) -> Db {
    dbs.iter()
        .find(|(s, _)| *s == service)
        .map(|(_, db)| db.clone())
        .expect("every service is connected")
}

impl Run {
    fn sum(&self, pick: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        self.counters.iter().map(|(_, c)| c.get(pick(c))).sum()
    }

    fn released(&self) -> u64 {
        self.counters
            .iter()
            .find(|(s, _)| *s == Service::Catalog)
            .map_or(0, |(_, c)| c.get(&c.released_lines))
    }

    /// Whether the run ended exactly as the plan says.
    fn exact(&self, plan: &SagaPlan) -> bool {
        let r = &self.report;
        r.is_consistent()
            && r.checked_out == plan.carts.len() as u64
            && r.confirmed == plan.count(Kind::Normal) as u64
            && r.cancelled == (plan.count(Kind::OutOfStock) + plan.count(Kind::Late)) as u64
            && self.released() == r.compensations_needed
            && self.dead == 0
    }

    fn rows(plan: &SagaPlan) -> Vec<String> {
        let cancelled = plan.count(Kind::OutOfStock) + plan.count(Kind::Late);
        vec![
            "orders (checkouts)".into(),
            "network failures (2% of deliveries)".into(),
            "duplicate deliveries".into(),
            "duplicates skipped".into(),
            "answers held back past expiry".into(),
            format!("confirmed (expected {})", plan.count(Kind::Normal)),
            format!("cancelled (expected {cancelled})"),
            "stuck (never finish)".into(),
            "carts closed wrong or still open".into(),
            "expected stock".into(),
            "actual stock".into(),
            "products: available + held != initial".into(),
            "units held for unconfirmed orders".into(),
            "compensations needed".into(),
            "compensations run".into(),
            "saga conflicts (step ran again)".into(),
            "dead-lettered".into(),
            "events published by outbox relays".into(),
            "time".into(),
        ]
    }

    fn column(&self, plan: &SagaPlan) -> Vec<String> {
        let r = &self.report;
        let prost = self.shape == Shape::ProstDb;
        vec![
            plan.carts.len().to_string(),
            self.faults.failures().to_string(),
            self.faults.duplicates().to_string(),
            self.sum(|c| &c.duplicates).to_string(),
            self.faults.delayed().to_string(),
            r.confirmed.to_string(),
            r.cancelled.to_string(),
            r.stuck.to_string(),
            (r.carts_open + r.carts_wrong).to_string(),
            r.expected_stock.to_string(),
            r.actual_stock.to_string(),
            r.products_unbalanced.to_string(),
            r.held_for_unconfirmed.to_string(),
            r.compensations_needed.to_string(),
            self.released().to_string(),
            if prost {
                self.sum(|c| &c.conflicts).to_string()
            } else {
                "n/a".into()
            },
            self.dead.to_string(),
            if prost {
                self.published.to_string()
            } else {
                "n/a (direct)".into()
            },
            format!("{:.1} s", self.elapsed.as_secs_f64()),
        ]
    }
}
