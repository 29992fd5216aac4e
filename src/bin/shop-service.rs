//! One service of the order saga as a process of its own (cart, orders or catalog): its
//! consumers, its outbox relay, and for orders the expiry sweep. The kill tests run one
//! per service and SIGKILL them at random. Configured by environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | the shop database | `postgres://postgres@127.0.0.1:5432/prost_shop` |
//! | `AMQP_URL` | the broker | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `PROST_SHOP_SERVICE` | `cart`, `orders` or `catalog` | required |
//! | `PROST_SHOP_SHAPE` | `prost-db`, or `seed` for the control | `prost-db` |
//! | `PROST_SHOP_PREFIX` | prefix of every exchange and queue name | empty |
//! | `PROST_SHOP_CONSUMERS` | consumers of the service's queue | `2` |
//! | `PROST_SHOP_PREFETCH` | prefetch per consumer | `8` |
//! | `PROST_SHOP_DUPLICATE_RATE` | fraction of deliveries hit by a network failure | `0` |
//! | `PROST_SHOP_REDELIVERIES` | extra deliveries per network failure | `3` |
//! | `PROST_SHOP_DELAY_SHORT_HOLDS_MS` | delay `StockReserved` of holds shorter than this past their expiry | off |
//! | `PROST_SHOP_SWEEP_MS` | interval of the expiry sweep (orders) | `200` |
//! | `PROST_SHOP_CRASH_BEFORE_COMMIT` | abort probability inside a step's transaction | `0` |
//! | `PROST_SHOP_CRASH_AFTER_COMMIT` | abort probability between commit and ack (or publish) | `0` |
//! | `PROST_SHOP_CRASH_AFTER_PUBLISH` | abort probability between the relay's publish and mark | `0` |
//!
//! SIGTERM or Ctrl-C stops it gracefully.

use std::sync::Arc;
use std::time::Duration;

use prost_db::amqp;
use prost_db::{Db, DbConfig};
use prost_shop::faults::Faults;
use prost_shop::handlers::Crashes;
use prost_shop::services::{ServiceConfig, Shape, run};
use prost_shop::topology::{Service, saga_topology};
use tokio::signal::unix::{SignalKind, signal};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let service: Service = var("PROST_SHOP_SERVICE")
        .ok_or("set PROST_SHOP_SERVICE to cart, orders or catalog")?
        .parse()?;
    let shape: Shape = parse("PROST_SHOP_SHAPE", Shape::ProstDb)?;
    let url = var("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/prost_shop".to_owned());
    let prefix = var("PROST_SHOP_PREFIX").unwrap_or_default();
    let consumers: usize = parse("PROST_SHOP_CONSUMERS", 2)?;
    let prefetch: u16 = parse("PROST_SHOP_PREFETCH", 8)?;

    let handler_mode: prost_db::idempotency::HandlerMode =
        match std::env::var("PROST_DB_HANDLER_MODE") {
            Ok(mode) => mode.parse()?,
            Err(_) => Default::default(),
        };
    let db = Db::connect(
        DbConfig::new(&url, service.as_str())?
            .handler_mode(handler_mode)
            .min_connections(1)
            .max_connections((consumers * usize::from(prefetch)).clamp(2, 20) as u32 + 3)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await?;
    db.require_tables(&["idempotency_records", "outbox_events"])
        .await?;
    if service == Service::Orders {
        prost_shop::orders::saga_store()?.verify(&db).await?;
    }
    let connection = Arc::new(amqp::connect(&amqp::url_from_env()).await?);
    prost_shop::topology::declare(&saga_topology(&prefix), &connection.create_channel().await?)
        .await?;

    let mut config = ServiceConfig::new(service, shape, db.clone(), &prefix);
    config.consumers = consumers;
    config.prefetch = prefetch;
    config.faults = Faults {
        duplicate_rate: parse("PROST_SHOP_DUPLICATE_RATE", 0.0)?,
        redeliveries: parse("PROST_SHOP_REDELIVERIES", 3)?,
        delay_short_holds: var("PROST_SHOP_DELAY_SHORT_HOLDS_MS")
            .map(|ms| ms.parse().map(Duration::from_millis))
            .transpose()?,
    };
    config.crashes = Crashes {
        before_commit: parse("PROST_SHOP_CRASH_BEFORE_COMMIT", 0.0)?,
        after_commit: parse("PROST_SHOP_CRASH_AFTER_COMMIT", 0.0)?,
    };
    config.crash_after_publish = parse("PROST_SHOP_CRASH_AFTER_PUBLISH", 0.0)?;
    config.sweep_every = Duration::from_millis(parse("PROST_SHOP_SWEEP_MS", 200)?);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop.send(true);
    });
    eprintln!(
        "shop-service: {} ({shape:?}, {} handler mode) running",
        service.as_str(),
        db.handler_mode()
    );
    let report = run(config, connection, stopped).await?;
    eprintln!("shop-service: {} stopped: {report:?}", service.as_str());
    db.close().await;
    Ok(())
}
