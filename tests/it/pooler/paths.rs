//! Every path of the library at once through the real PgBouncer: outbox staging and the
//! relay publishing to RabbitMQ, the purge, the saga store, the idempotency store,
//! `check_tables` and the schema utilities, from 4 pools (24 tasks, up to 32 client
//! connections) sharing PgBouncer's 10 server connections; and the control, the same
//! statements named or unnamed outside a transaction, which break there.

use std::collections::HashSet;
use std::time::Duration;

use prost_db::amqp::lapin::options::BasicGetOptions;
use prost_db::amqp::{Publisher, QueueSpec, Topology};
use prost_db::events::{Event, EventPayload};
use prost_db::idempotency::IdempotencyStore;
use prost_db::outbox::{self, Outbox, Relay};
use prost_db::saga::{NewSaga, SagaMachine, SagaStore, SagaTables};
use prost_db::schema::{ColumnDescription, TableDescription};
use prost_db::{Db, Statements};
use uuid::Uuid;

use super::{Service, TestResult};
use crate::amqp::Broker;

const POOLS: usize = 4;
const TASKS_PER_POOL: usize = 6;
const ROUNDS: usize = 8;
const HOUR: Duration = Duration::from_secs(3600);

static ORDER: SagaMachine = SagaMachine {
    saga_type: "order",
    initial: "placed",
    transitions: &[("placed", "paid"), ("paid", "shipped")],
    terminal: &["shipped"],
};

const DDL: &str = "
CREATE TABLE catalog.widgets (id BIGINT NOT NULL, name TEXT NOT NULL);
CREATE TABLE catalog.effects (event_id TEXT NOT NULL);
CREATE TABLE catalog.order_sagas (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    correlation_id UUID NOT NULL UNIQUE,
    saga_type TEXT NOT NULL,
    status TEXT NOT NULL,
    payload JSONB NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE catalog.order_undo (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    saga_correlation_id UUID NOT NULL,
    compensation_key TEXT NOT NULL,
    compensation_event TEXT NOT NULL,
    compensation_payload JSONB NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    UNIQUE (saga_correlation_id, compensation_key)
);
";

/// `catalog.widgets` as the code expects it (what `#[derive(Schema)]` writes).
static WIDGETS: TableDescription = TableDescription {
    schema: "catalog",
    name: "widgets",
    columns: &[
        ColumnDescription {
            name: "id",
            sql_type: Some("int8"),
            nullable: Some(false),
        },
        ColumnDescription {
            name: "name",
            sql_type: Some("text"),
            nullable: Some(false),
        },
    ],
};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Staged {
    n: u32,
}

impl EventPayload for Staged {
    const EVENT_TYPE: &'static str = "Staged";
    const AGGREGATE_TYPE: &'static str = "staged";
    const ROUTING_KEY: &'static str = "staged.new";
}

/// A provisioned service with the outbox, the idempotency records, the saga tables and a
/// table for `check_tables`, set up over a direct connection; and a broker topology.
struct Paths {
    service: Service,
    broker: Broker,
    exchange: String,
    queue: String,
    store: SagaStore,
}

impl Paths {
    async fn new(prefix: &str) -> Result<Paths, Box<dyn std::error::Error>> {
        let service = Service::new(prefix, "catalog").await?;
        let direct = Db::connect(service.test_db.config("catalog")).await?;
        outbox::install(&direct).await?;
        IdempotencyStore::install(&direct).await?;
        sqlx::raw_sql(DDL).execute(direct.pool()).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA catalog TO \"{role}\"; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA catalog TO \"{role}\"",
            role = service.role
        )))
        .execute(direct.pool())
        .await?;
        direct.close().await;

        let bus = format!("t{}.", Uuid::new_v4().simple());
        let exchange = format!("{bus}paths");
        let queue = format!("{bus}paths.all");
        let topology = Topology::new()
            .exchange(exchange.clone())
            .queue(QueueSpec::new(queue.clone()).bind(exchange.clone(), "#"));
        let broker = Broker::with(topology, bus).await;
        let queue = broker.spec(0).queue();
        let tables = SagaTables::new("catalog")?
            .states("order_sagas")?
            .compensations("order_undo")?;
        let store = SagaStore::new(tables, &ORDER)?;
        Ok(Paths {
            service,
            broker,
            exchange,
            queue,
            store,
        })
    }

    /// A pool through PgBouncer in transaction mode.
    async fn pool(&self) -> Result<Db, prost_db::Error> {
        Db::connect(
            self.service
                .config("catalog")
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(60)),
        )
        .await
    }

    /// The distinct `n`s of the messages in the queue, and how many messages there were.
    async fn published(&self) -> (HashSet<u32>, usize) {
        let mut seen = HashSet::new();
        let mut messages = 0;
        while let Some(message) = self
            .broker
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            messages += 1;
            let event: Event<Staged> = serde_json::from_slice(&message.delivery.data).unwrap();
            seen.insert(event.payload.n);
        }
        (seen, messages)
    }

    async fn close(self) -> TestResult {
        self.broker.cleanup().await;
        self.service.close().await
    }
}

/// One task's rounds on every path; the errors it met.
async fn every_path(
    db: Db,
    store: SagaStore,
    publisher: std::sync::Arc<Publisher>,
    exchange: String,
    task: usize,
) -> (Vec<String>, u64) {
    let outbox = Outbox::new(&db);
    let relay = Relay::new(db.clone());
    let records = IdempotencyStore::new(&db);
    let mut errors = Vec::new();
    let mut purged = 0;
    for round in 0..ROUNDS {
        let n = u32::try_from(task * ROUNDS + round).unwrap();
        let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
            // The outbox and the saga store, in the caller's transaction.
            let mut tx = db.begin().await?;
            let event = Event::new(n.to_string(), "paths", Staged { n });
            outbox.stage(&mut tx, &exchange, &event).await?;
            let id = Uuid::new_v4();
            store
                .start(&mut tx, NewSaga::new(id, Staged { n }, HOUR))
                .await?;
            tx.commit().await?;
            let mut tx = db.begin().await?;
            let mut saga = store.get::<Staged>(&mut *tx, id).await?;
            store.transition(&mut tx, &mut saga, "paid").await?;
            tx.commit().await?;

            // The idempotency store: the same key twice, one effect.
            let key = format!("event-{n}");
            for _ in 0..2 {
                let effect = key.clone();
                let _ = records
                    .run("apply", &key, &key, |mut tx| async move {
                        Statements::UNNAMED
                            .query("INSERT INTO effects (event_id) VALUES ($1)")
                            .bind(&effect)
                            .execute(&mut **tx)
                            .await
                            .map(drop)
                    })
                    .await?;
            }
            assert!(records.get("apply", &key).await?.is_some());
            // The records' purge (its layout check, then batched deletes): none is an hour
            // old, so it deletes nothing and the count below still holds.
            assert_eq!(records.purge_older_than(HOUR).await?, 0);

            // Outside a transaction of the caller's: the startup checks and utilities.
            db.check_tables(&[&WIDGETS]).await?;
            db.require_tables(&["outbox_events", "widgets", "order_sagas"])
                .await?;
            assert!(db.list_tables().await?.contains(&"widgets".to_owned()));
            assert_eq!(db.columns("widgets").await?.len(), 2);
            assert!(db.table_exists("effects").await?);
            assert_eq!(db.current_schema().await?, "catalog");
            store.verify(&db).await?;

            // The relay to RabbitMQ, and the purge of what it published.
            relay.publish_pending(&publisher).await?;
            outbox.pending(db.pool()).await?;
            purged += outbox.purge_published(db.pool(), Duration::ZERO).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    (errors, purged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_library_path_shares_ten_server_connections_from_many_clients() -> TestResult {
    let paths = Paths::new("paths").await?;
    let publisher = std::sync::Arc::new(Publisher::new(&paths.broker.connection).await?);
    let mut dbs = Vec::new();
    for _ in 0..POOLS {
        dbs.push(paths.pool().await?);
    }
    let mut tasks = Vec::new();
    for task in 0..POOLS * TASKS_PER_POOL {
        tasks.push(tokio::spawn(every_path(
            dbs[task % POOLS].clone(),
            paths.store.clone().with_statements(dbs[0].statements()),
            publisher.clone(),
            paths.exchange.clone(),
            task,
        )));
    }
    let mut errors = Vec::new();
    let mut purged = 0;
    for task in tasks {
        let (e, p) = task.await?;
        errors.extend(e);
        purged += p;
    }
    errors.sort();
    errors.dedup();
    assert!(errors.is_empty(), "{errors:?}");

    // What is left to publish and purge, once.
    let outbox = Outbox::new(&dbs[0]);
    while Relay::new(dbs[0].clone())
        .publish_pending(&publisher)
        .await?
        > 0
    {}
    purged += outbox
        .purge_published(dbs[0].pool(), Duration::ZERO)
        .await?;

    let total = POOLS * TASKS_PER_POOL * ROUNDS;
    let admin = paths.service.test_db.pool().await?;
    let count = |sql: &'static str| {
        let admin = admin.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&admin).await }
    };
    assert_eq!(purged, total as u64, "every published event purged once");
    assert_eq!(
        count("SELECT count(*) FROM catalog.outbox_events").await?,
        0
    );
    let (seen, messages) = paths.published().await;
    assert_eq!(seen.len(), total, "every staged event reached RabbitMQ");
    assert!(messages >= total);
    assert_eq!(
        count("SELECT count(*) FROM catalog.order_sagas WHERE status = 'paid' AND version = 1")
            .await?,
        total as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM catalog.idempotency_records").await?,
        total as i64
    );
    assert_eq!(
        count("SELECT count(DISTINCT event_id) FROM catalog.effects").await?,
        total as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM catalog.effects").await?,
        total as i64,
        "each key's effect once"
    );
    for db in dbs {
        db.close().await;
    }
    admin.close().await;
    paths.close().await
}

/// 24 tasks x `ROUNDS` of the saga store and the outbox with named statements, and of a
/// `check_tables`-like query unnamed but outside a transaction; the distinct errors.
async fn without_the_mechanism(paths: &Paths, dbs: &[Db]) -> (Vec<String>, Vec<String>) {
    let named_store = paths.store.clone().with_statements(Statements::NAMED);
    let schema = prost_db::Identifier::new(prost_db::IdentifierKind::Schema, "catalog").unwrap();
    let named_outbox = Outbox::for_schema(&schema);
    let mut tasks = Vec::new();
    for task in 0..POOLS * TASKS_PER_POOL {
        let (db, store, outbox) = (
            dbs[task % POOLS].clone(),
            named_store.clone(),
            named_outbox.clone(),
        );
        let exchange = paths.exchange.clone();
        tasks.push(tokio::spawn(async move {
            let (mut named, mut outside) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let n = u32::try_from(task * ROUNDS + round).unwrap();
                let in_tx: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
                    let mut tx = db.begin().await?;
                    let event = Event::new(n.to_string(), "paths", Staged { n });
                    outbox.stage(&mut tx, &exchange, &event).await?;
                    store
                        .start(&mut tx, NewSaga::new(Uuid::new_v4(), Staged { n }, HOUR))
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                if let Err(e) = in_tx {
                    named.push(e.to_string());
                }
                let columns: Result<Vec<String>, sqlx::Error> = Statements::UNNAMED
                    .query_scalar(
                        "SELECT column_name::text FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = $2 ORDER BY 1",
                    )
                    .bind("catalog")
                    .bind("widgets")
                    .fetch_all(db.pool())
                    .await;
                match columns {
                    Ok(c) if c == ["id", "name"] => {}
                    Ok(c) => outside.push(format!("wrong rows {c:?}")),
                    Err(e) => outside.push(e.to_string()),
                }
            }
            (named, outside)
        }));
    }
    let (mut named, mut outside) = (Vec::new(), Vec::new());
    for task in tasks {
        let (n, o) = task.await.unwrap();
        named.extend(n);
        outside.extend(o);
    }
    (named, outside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_named_statements_and_unnamed_ones_outside_a_transaction_break() -> TestResult {
    let paths = Paths::new("pathsctl").await?;
    let mut dbs = Vec::new();
    for _ in 0..POOLS {
        dbs.push(paths.pool().await?);
    }
    let (named, outside) = without_the_mechanism(&paths, &dbs).await;
    let attempts = POOLS * TASKS_PER_POOL * ROUNDS;
    println!(
        "named statements: {} of {attempts} transactions failed; unnamed outside a \
         transaction: {} of {attempts} statements failed",
        named.len(),
        outside.len()
    );
    let mut kinds: Vec<&String> = named.iter().chain(&outside).collect();
    kinds.sort();
    kinds.dedup();
    println!("{kinds:#?}");
    assert!(
        named.iter().any(|e| e.contains("prepared statement")),
        "named statements passed through transaction pooling: {named:?}"
    );
    assert!(
        !outside.is_empty(),
        "unnamed statements outside a transaction passed through transaction pooling"
    );
    for db in dbs {
        db.close().await;
    }
    paths.close().await
}
