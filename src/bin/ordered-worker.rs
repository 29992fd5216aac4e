//! A ledger worker process, for the ordering test: applies sequenced events per account,
//! checking in the database that each one follows the last (`last_seq + 1 = seq`), and
//! records any that arrives out of order. Configured by environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | the database (schema `ledger`: `accounts`, `applied`, `violations`) | required |
//! | `AMQP_URL` | the broker | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `PROST_ORDERED_PREFIX` | prefix of every exchange and queue name | empty |
//! | `PROST_ORDERED_WORKER` | this worker's number, `0..` | `0` |
//! | `PROST_ORDERED_PARTITIONS` | partition queues | `8` |
//! | `PROST_ORDERED_PREFETCH` | prefetch per partition consumer | `16` |
//! | `PROST_ORDERED_MODE` | `ordered` (the recipe), or `competing` (the control: one shared queue, concurrent handlers, retry queues) | `ordered` |
//!
//! Worker `i` subscribes first to the partitions `p` with `p % workers == i` (4 workers
//! assumed), and to the others a second later, as a standby: with single active
//! consumers, the partitions spread over the workers. SIGTERM stops it gracefully.

use std::time::Duration;

use prost_db::amqp::{self, Consumer, DeliveryError, OrderedQueues, QueueSpec, Topology};
use prost_db::events::{Event, EventPayload};
use prost_db::idempotency::{HandlerError, Tx};
use prost_db::{Db, DbConfig, idempotent_handler};
use tokio::signal::unix::{SignalKind, signal};

/// The event: the `seq`-th change of account `aggregate_id`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sequenced {
    seq: i32,
}

impl EventPayload for Sequenced {
    const EVENT_TYPE: &'static str = "Sequenced";
    const AGGREGATE_TYPE: &'static str = "account";
    const ROUTING_KEY: &'static str = "account.sequenced";
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("event {seq} of account {account} arrived out of order")]
    OutOfOrder { account: i32, seq: i32 },
    #[error("bad account id: {0}")]
    BadAccount(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[idempotent_handler(action = "apply_sequenced")]
async fn apply(tx: &mut Tx, event: &Event<Sequenced>, worker: &str) -> Result<(), ApplyError> {
    let account: i32 = event
        .envelope
        .aggregate_id
        .parse()
        .map_err(|_| ApplyError::BadAccount(event.envelope.aggregate_id.clone()))?;
    let seq = event.payload.seq;
    // A little work, so that concurrent handlers really overlap.
    tokio::time::sleep(Duration::from_micros(
        (uuid::Uuid::new_v4().as_u128() % 2000) as u64,
    ))
    .await;
    let updated =
        sqlx::query("UPDATE accounts SET last_seq = $2 WHERE id = $1 AND last_seq = $2 - 1")
            .bind(account)
            .bind(seq)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if updated == 0 {
        return Err(ApplyError::OutOfOrder { account, seq });
    }
    sqlx::query("INSERT INTO applied (account_id, seq, worker) VALUES ($1, $2, $3)")
        .bind(account)
        .bind(seq)
        .bind(worker)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn handle(db: Db, worker: String, event: Event<Sequenced>) -> Result<(), DeliveryError> {
    match apply(&db, &event, &worker).await {
        Ok(_) => Ok(()),
        Err(HandlerError::Failed(ApplyError::OutOfOrder { account, seq })) => {
            // Outside the rolled-back transaction, so that the test sees it.
            let recorded =
                sqlx::query("INSERT INTO violations (account_id, seq, worker) VALUES ($1, $2, $3)")
                    .bind(account)
                    .bind(seq)
                    .bind(&worker)
                    .execute(db.pool())
                    .await;
            if let Err(error) = recorded {
                eprintln!("ordered-worker {worker}: violation not recorded: {error}");
            }
            Err(DeliveryError::transient(format!(
                "event {seq} of account {account} out of order"
            )))
        }
        Err(other) => Err(DeliveryError::from(other)),
    }
}

/// A partition's number and queue family.
type Partition = (usize, QueueSpec);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = var("DATABASE_URL").ok_or("DATABASE_URL is required")?;
    let prefix = var("PROST_ORDERED_PREFIX").unwrap_or_default();
    let worker: usize = number("PROST_ORDERED_WORKER", 0);
    let partitions: u16 = number("PROST_ORDERED_PARTITIONS", 8);
    let prefetch: u16 = number("PROST_ORDERED_PREFETCH", 16);
    let competing = match var("PROST_ORDERED_MODE").as_deref() {
        None | Some("ordered") => false,
        Some("competing") => true,
        Some(other) => return Err(format!("unknown PROST_ORDERED_MODE {other:?}").into()),
    };
    let name = format!("w{worker}");

    let db = Db::connect(
        DbConfig::new(&url, "ledger")?
            .min_connections(1)
            .max_connections(12),
    )
    .await?;
    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let (topology, specs) = ledger_topology(&prefix, partitions, competing);
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

    // Own partitions first, the others a second later as a standby.
    let (own, standby): (Vec<Partition>, Vec<Partition>) = specs
        .into_iter()
        .enumerate()
        .partition(|(p, _)| competing || p % 4 == worker % 4);
    let connection = std::sync::Arc::new(connection);
    let mut consumers = tokio::task::JoinSet::new();
    for (round, specs) in [own, standby].into_iter().enumerate() {
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (_, spec) in specs {
            let mut consumer = Consumer::new(spec).prefetch(prefetch).max_attempts(100);
            if !competing {
                consumer = consumer.serialize_by_aggregate();
            }
            let consumer = consumer.on({
                let (db, name) = (db.clone(), name.clone());
                move |event: Event<Sequenced>| handle(db.clone(), name.clone(), event)
            });
            let (connection, mut stop) = (std::sync::Arc::clone(&connection), stop_rx.clone());
            consumers.spawn(async move {
                consumer
                    .run(&connection, async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
        }
        eprintln!("ordered-worker {name}: consuming (round {round})");
    }
    while let Some(done) = consumers.join_next().await {
        let stats = done??;
        eprintln!("ordered-worker {name}: consumer stopped: {stats:?}");
    }
    db.close().await;
    Ok(())
}

/// The ledger's topology: an exchange, and either the ordered partitions (the recipe) or
/// one shared queue (the control); the queue families to consume.
fn ledger_topology(prefix: &str, partitions: u16, competing: bool) -> (Topology, Vec<QueueSpec>) {
    let exchange = format!("{prefix}accounts");
    let topology = Topology::new().exchange(&exchange);
    if competing {
        let spec = QueueSpec::new(format!("{prefix}ledger.shared")).bind(&exchange, "account.#");
        (topology.queue(spec.clone()), vec![spec])
    } else {
        let ordered =
            OrderedQueues::new(format!("{prefix}ledger"), partitions).bind(&exchange, "account.#");
        let specs = ordered.partitions();
        (topology.ordered(ordered), specs)
    }
}
