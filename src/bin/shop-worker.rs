//! A catalog-service worker process, for the kill tests: consumes `OrderCreated` from the
//! shop topology and (optionally) relays the catalog's outbox. Configured by environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | the shop database | `postgres://postgres@127.0.0.1:5432/prost` |
//! | `AMQP_URL` | the broker | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `PROST_SHOP_PREFIX` | prefix of every exchange and queue name | empty |
//! | `PROST_SHOP_MODE` | `idempotent`, `bare`, `ack-before-commit`, `publish-after-commit` | `idempotent` |
//! | `PROST_SHOP_CONSUME` | run the consumer (`0` = relay only) | `1` |
//! | `PROST_SHOP_RELAY` | run the outbox relay | `0` |
//! | `PROST_SHOP_RELAY_BATCH` | relay batch size | `100` |
//! | `PROST_SHOP_PREFETCH` | consumer prefetch (at least `PROST_SHOP_BATCH`) | `16` |
//! | `PROST_SHOP_BATCH` | batch mode: up to this many `OrderCreated` per transaction (`Consumer::on_batch`, 5 ms wait); `idempotent` mode only | off |
//! | `PROST_SHOP_CRASH_BEFORE_COMMIT` | abort probability inside the transaction | `0` |
//! | `PROST_SHOP_CRASH_AFTER_COMMIT` | abort probability between commit and ack (in batch mode, rolled per event of the committed batch) | `0` |
//! | `PROST_SHOP_CRASH_AFTER_PUBLISH` | abort probability between relay publish and mark | `0` |
//!
//! SIGTERM or Ctrl-C stops it gracefully.

use std::sync::Arc;
use std::time::Duration;

use prost_db::amqp::{self, Batching, Topology};
use prost_db::outbox::{Outbox, Relay};
use prost_db::schema::Schema;
use prost_db::{Db, DbConfig};
use prost_shop::handlers::{Catalog, Crashes, Metrics, Mode};
use prost_shop::tables::{Product, StockReservation};
use tokio::signal::unix::{SignalKind, signal};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn probability(name: &str) -> f64 {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let url = var("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/prost".to_owned());
    let prefix = var("PROST_SHOP_PREFIX").unwrap_or_default();
    let mode = match var("PROST_SHOP_MODE").as_deref() {
        None | Some("idempotent") => Mode::Idempotent,
        Some("bare") => Mode::Bare,
        Some("ack-before-commit") => Mode::AckBeforeCommit,
        Some("publish-after-commit") => Mode::PublishAfterCommit,
        Some(other) => return Err(format!("unknown PROST_SHOP_MODE {other:?}").into()),
    };
    let prefetch: u16 = var("PROST_SHOP_PREFETCH")
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let batch: Option<usize> = match var("PROST_SHOP_BATCH") {
        None => None,
        Some(n) => Some(
            n.parse()
                .map_err(|e| format!("PROST_SHOP_BATCH {n:?} is not a batch size: {e}"))?,
        ),
    };
    if batch.is_some() && mode != Mode::Idempotent {
        return Err("PROST_SHOP_BATCH runs in PROST_SHOP_MODE=idempotent only".into());
    }

    let handler_mode: prost_db::idempotency::HandlerMode =
        match std::env::var("PROST_DB_HANDLER_MODE") {
            Ok(mode) => mode.parse()?,
            Err(_) => Default::default(),
        };
    let db = Db::connect(
        DbConfig::new(&url, "catalog")?
            .handler_mode(handler_mode)
            .min_connections(1)
            .max_connections(u32::from(prefetch).clamp(2, 20) + 2)
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await?;
    // The seed's "verify tables" step: the structs the handler relies on, checked against
    // the live schema, and the framework tables.
    db.check_tables(&[Product::TABLE, StockReservation::TABLE])
        .await?;
    db.require_tables(&["idempotency_records", "outbox_events"])
        .await?;
    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let topology = Topology::shop(&prefix);
    topology
        .declare(&connection.create_channel().await?)
        .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let relay = if var("PROST_SHOP_RELAY").as_deref() == Some("1") {
        let crash_p = probability("PROST_SHOP_CRASH_AFTER_PUBLISH");
        let batch = var("PROST_SHOP_RELAY_BATCH")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let relay = Relay::new(db.clone())
            .batch_size(batch)
            .poll_interval(Duration::from_millis(20))
            .after_publish_hook(move || {
                if prost_shop::handlers::roll(crash_p) {
                    eprintln!("shop-worker: injected crash after publish, before mark");
                    std::process::abort();
                }
            });
        let connection = amqp::connect(&amqp::url_from_env()).await?;
        let stop = stopped();
        Some(tokio::spawn(
            async move { relay.run(&connection, stop).await },
        ))
    } else {
        None
    };

    if var("PROST_SHOP_CONSUME").as_deref() != Some("0") {
        let publisher = match mode {
            Mode::PublishAfterCommit => Some(amqp::Publisher::new(&connection).await?),
            _ => None,
        };
        let catalog = Catalog {
            outbox: Outbox::new(&db),
            db: db.clone(),
            products_exchange: format!("{prefix}products.events"),
            mode,
            crashes: Crashes {
                before_commit: probability("PROST_SHOP_CRASH_BEFORE_COMMIT"),
                after_commit: probability("PROST_SHOP_CRASH_AFTER_COMMIT"),
            },
            metrics: Arc::new(Metrics::default()),
            publisher,
        };
        let spec = topology.queues()[0].clone();
        let consumer = match batch {
            Some(n) => catalog.batch_consumer(spec, Batching::new(n, Duration::from_millis(5))),
            None => catalog.consumer(spec),
        };
        let stats = consumer
            .prefetch(prefetch)
            .max_attempts(50)
            .run(&connection, stopped())
            .await?;
        let batching = batch.map_or_else(String::new, |n| format!(", batches of {n}"));
        eprintln!(
            "shop-worker: consumer stopped ({} handler mode{batching}): {stats:?}",
            db.handler_mode()
        );
    } else {
        stopped().await;
    }
    if let Some(relay) = relay {
        let published = relay.await??;
        eprintln!("shop-worker: relay stopped after publishing {published}");
    }
    db.close().await;
    Ok(())
}
