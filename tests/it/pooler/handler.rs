//! `#[idempotent_handler]` through the real PgBouncer: a storm of the generated handler with
//! every event delivered twice at once, in both handler modes; and chained mode's opening
//! `BEGIN`, which checks the schema like every other `BEGIN` path.

use std::collections::HashMap;
use std::time::Duration;

use prost_db::idempotency::{EventId, HandlerError, HandlerMode, IdempotencyStore, Tx};
use prost_db::{Db, Error, Statements, idempotent_handler};
use serde::Serialize;

use super::{Service, TestResult};

#[derive(Debug, Clone, Serialize)]
struct Delivered {
    event_id: String,
    worker: String,
}

impl EventId for Delivered {
    type Id = String;
    fn event_id(&self) -> &String {
        &self.event_id
    }
}

/// The body: one effect row per run, written unqualified (the role's schema); its result,
/// the worker's name (with a quote and a backslash), is stored through the pooler too.
#[idempotent_handler(action = "apply")]
async fn apply(tx: &mut Tx, event: &Delivered) -> Result<String, sqlx::Error> {
    Statements::UNNAMED
        .query("INSERT INTO effects (event_id, worker) VALUES ($1, $2)")
        .bind(&event.event_id)
        .bind(&event.worker)
        .execute(&mut **tx)
        .await?;
    Ok(event.worker.clone())
}

/// A provisioned service with the idempotency records and the effects table.
async fn service(prefix: &str) -> Result<Service, Box<dyn std::error::Error>> {
    let service = Service::new(prefix, "catalog").await?;
    let direct = Db::connect(service.test_db.config("catalog")).await?;
    IdempotencyStore::install(&direct).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE catalog.effects (event_id TEXT NOT NULL, worker TEXT NOT NULL); \
         GRANT ALL ON ALL TABLES IN SCHEMA catalog TO \"{}\"",
        service.role
    )))
    .execute(direct.pool())
    .await?;
    direct.close().await;
    Ok(service)
}

const EVENTS: usize = 240;

/// `pools` pools of `connections` each, `tasks` tasks per pool; every event goes to two
/// tasks of different pools at the same moment. How many runs processed an event.
async fn storm(
    service: &Service,
    mode: HandlerMode,
    pools: usize,
    connections: u32,
    tasks: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut dbs = Vec::new();
    for _ in 0..pools {
        dbs.push(
            Db::connect(
                service
                    .config("catalog")
                    .max_connections(connections)
                    .acquire_timeout(Duration::from_secs(60))
                    .handler_mode(mode)
                    .chained_idle(Duration::from_millis(500)),
            )
            .await?,
        );
    }
    let mut handles = Vec::new();
    for task in 0..pools * tasks {
        let first = dbs[task % pools].clone();
        let second = dbs[(task + 1) % pools].clone();
        handles.push(tokio::spawn(async move {
            let mut processed = 0;
            for n in (task..EVENTS).step_by(pools * tasks) {
                // The same event twice: the payload is fingerprinted.
                let a = Delivered {
                    event_id: format!("event-{n}"),
                    worker: format!("task{task}'s \\ worker"),
                };
                let b = a.clone();
                let (a, b) = tokio::join!(apply(&first, &a), apply(&second, &b));
                for outcome in [a, b] {
                    match outcome {
                        Ok(outcome) if !outcome.is_duplicate() => processed += 1,
                        Ok(_) => {}
                        Err(e) => panic!("delivery failed: {e:?}"),
                    }
                }
            }
            processed
        }));
    }
    let mut processed = 0;
    for handle in handles {
        processed += handle.await?;
    }
    for db in dbs {
        db.close().await;
    }
    Ok(processed)
}

async fn assert_exactly_once(service: &Service, processed: usize) -> TestResult {
    let admin = service.test_db.pool().await?;
    let effects: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM catalog.effects GROUP BY 1")
            .fetch_all(&admin)
            .await?;
    let effects: HashMap<String, i64> = effects.into_iter().collect();
    assert_eq!(effects.len(), EVENTS);
    assert!(effects.values().all(|&n| n == 1), "{effects:?}");
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.idempotency_records")
        .fetch_one(&admin)
        .await?;
    assert_eq!(records, EVENTS as i64);
    // Each record holds the result of the run whose effect committed.
    let results: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM catalog.idempotency_records r \
         JOIN catalog.effects e USING (event_id) WHERE r.result = to_jsonb(e.worker)",
    )
    .fetch_one(&admin)
    .await?;
    assert_eq!(results, EVENTS as i64);
    assert_eq!(processed, EVENTS, "processed exactly once in all");
    admin.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_generated_handler_runs_each_event_once_through_the_pooler() -> TestResult {
    let service = service("hstorm").await?;
    // 4 pools x 8 connections: 32 client connections on PgBouncer's 10.
    let processed = storm(&service, HandlerMode::Transaction, 4, 8, 6).await?;
    assert_exactly_once(&service, processed).await?;
    service.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_generated_handler_in_chained_mode_runs_each_event_once_through_the_pooler()
-> TestResult {
    let service = service("hchain").await?;
    // A chained slot pins its server connection while kept: 2 pools x 5 connections fill
    // PgBouncer's 10 without waiting on each other.
    let processed = storm(&service, HandlerMode::Chained, 2, 5, 4).await?;
    assert_exactly_once(&service, processed).await?;
    service.close().await
}

/// Runs `apply` until it gets through the transient errors of replaced connections.
async fn deliver(db: &Db, n: usize) -> Result<(), HandlerError<sqlx::Error>> {
    let event = Delivered {
        event_id: format!("event-{n}"),
        worker: "w".into(),
    };
    loop {
        match apply(db, &event).await {
            Err(e) if e.is_transient() => continue,
            other => return other.map(drop),
        }
    }
}

#[tokio::test]
async fn chained_mode_checks_the_schema_when_it_opens_and_reopens_a_connection() -> TestResult {
    let service = service("hcheck").await?;
    let admin = service.test_db.pool().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA orders; \
         CREATE TABLE orders.effects (event_id TEXT NOT NULL, worker TEXT NOT NULL); \
         CREATE TABLE orders.idempotency_records (LIKE catalog.idempotency_records INCLUDING ALL); \
         GRANT USAGE ON SCHEMA orders TO \"{role}\"; \
         GRANT ALL ON ALL TABLES IN SCHEMA orders TO \"{role}\"",
        role = service.role
    )))
    .execute(&admin)
    .await?;
    let config = || {
        service
            .config("catalog")
            .max_connections(2)
            .handler_mode(HandlerMode::Chained)
    };
    let checked = Db::connect(config()).await?;
    deliver(&checked, 0).await?;
    assert_eq!(checked.chained_idle(), 1, "the slot is kept");
    // The control: the same service with the check turned off.
    let unchecked = Db::connect(config().schema_check(false)).await?;
    deliver(&unchecked, 1).await?;

    // The role's default changes under the running service, and its server connections
    // (the kept slots among them) are replaced.
    service
        .set_role_default(&admin, "SET search_path = orders")
        .await?;

    let err = deliver(&checked, 2).await.unwrap_err();
    match &err {
        HandlerError::Database(Error::SchemaMismatch {
            expected, actual, ..
        }) => assert_eq!((expected.as_str(), actual.as_str()), ("catalog", "orders")),
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    deliver(&unchecked, 3).await?;

    let rows = |schema: &'static str| {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT event_id FROM {schema}.effects ORDER BY 1"
            )))
            .fetch_all(&admin)
            .await
        }
    };
    assert_eq!(rows("catalog").await?, ["event-0", "event-1"]);
    assert_eq!(
        rows("orders").await?,
        ["event-3"],
        "without the check, the chained write lands in the wrong schema"
    );
    checked.close().await;
    unchecked.close().await;
    admin.close().await;
    service.close().await
}
