//! The consumer's batch mode (`Consumer::on_batch`) against a real broker and database:
//! exactly once with duplicates in and across batches, a poison event in a batch, event
//! types never sharing a batch, and the `multiple` ack rule with its control.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost_db::Db;
use prost_db::amqp::lapin::types::FieldTable;
use prost_db::amqp::{
    self, Batching, Consumer, ConsumerStats, DeliveryError, Publisher, QueueSpec, Topology,
};
use prost_db::events::{Event, EventPayload};
use prost_db::idempotency::{IdempotencyStore, Outcome, Tx};
use prost_db::testing::TestDb;
use prost_shop::recorder::MemoryRecorder;
use prost_shop::scenario::wait_until;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::amqp::Broker;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Credit {
    n: i32,
}

impl EventPayload for Credit {
    const EVENT_TYPE: &'static str = "Credit";
    const AGGREGATE_TYPE: &'static str = "account";
    const ROUTING_KEY: &'static str = "account.credit";
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Debit {
    n: i32,
}

impl EventPayload for Debit {
    const EVENT_TYPE: &'static str = "Debit";
    const AGGREGATE_TYPE: &'static str = "account";
    const ROUTING_KEY: &'static str = "account.debit";
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Slow {
    n: i32,
}

impl EventPayload for Slow {
    const EVENT_TYPE: &'static str = "Slow";
    const AGGREGATE_TYPE: &'static str = "account";
    const ROUTING_KEY: &'static str = "account.slow";
}

/// A database whose `ledger` schema has the idempotency records and a ledger of applied
/// events (with the transaction each was applied in), and a topology whose one queue
/// takes every event type, retrying after 50 ms.
async fn fixture() -> (TestDb, Db, Broker) {
    let test_db = TestDb::new().await.unwrap();
    let db = test_db.db("ledger").await.unwrap();
    IdempotencyStore::install(&db).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE applied (event_id UUID NOT NULL, kind TEXT NOT NULL, n INT NOT NULL,
             txid BIGINT NOT NULL DEFAULT txid_current());",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let exchange = format!("{prefix}accounts");
    let topology = Topology::new().exchange(exchange.clone()).queue(
        QueueSpec::new(format!("{prefix}ledger"))
            .bind(exchange, "account.#")
            .retry_delays([Duration::from_millis(50)]),
    );
    (test_db, db, Broker::with(topology, prefix).await)
}

fn exchange(broker: &Broker) -> String {
    format!("{}accounts", broker.prefix)
}

/// Applies one event: a ledger row, in the lent transaction.
async fn apply(tx: &mut Tx, kind: &str, id: Uuid, n: i32) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO applied (event_id, kind, n) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(kind)
        .bind(n)
        .execute(&mut **tx)
        .await?;
    Ok(i64::from(n) * 10)
}

/// The credit batch handler: applies each credit, its result `n * 10`.
fn credits(consumer: Consumer, db: &Db, batching: Batching) -> Consumer {
    consumer.on_batch(
        IdempotencyStore::new(db),
        "credit",
        batching,
        |mut tx, event: Arc<Event<Credit>>| async move {
            // The type the envelope names (not the handler's), to catch a mixed batch.
            let kind = event.envelope.event_type.to_lowercase();
            apply(&mut tx, &kind, event.envelope.event_id, event.payload.n).await
        },
    )
}

/// Runs `consumer` on its own connection until `done` holds, then shuts it down.
async fn run_until<F, Fut>(consumer: Consumer, done: F) -> ConsumerStats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let connection = amqp::connect(&amqp::url_from_env()).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = consumer.run(&connection, async {
        let _ = stopped.await;
    });
    let watch = async {
        let finished = wait_until(Duration::from_secs(60), done).await;
        let _ = stop.send(());
        finished
    };
    let (stats, finished) = tokio::join!(run, watch);
    let _ = connection.close(200, "done".into()).await;
    assert!(finished, "timed out");
    stats.unwrap()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test]
async fn batches_apply_every_event_once_with_duplicates_in_a_batch_and_across_batches() {
    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (test_db, db, broker) = fixture().await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let events: Vec<Event<Credit>> = (0..200)
        .map(|n| Event::new(format!("a{}", n % 7), "c", Credit { n }))
        .collect();
    // Every fifth event twice in a row (the twins usually share a batch), every seventh
    // again at the end (a later batch).
    let mut deliveries = 0;
    for event in &events {
        publisher.publish(&exchange(&broker), event).await.unwrap();
        deliveries += 1;
        if event.payload.n % 5 == 0 {
            publisher.publish(&exchange(&broker), event).await.unwrap();
            deliveries += 1;
        }
    }
    for event in events.iter().filter(|e| e.payload.n % 7 == 0) {
        publisher.publish(&exchange(&broker), event).await.unwrap();
        deliveries += 1;
    }

    let consumer = credits(
        Consumer::new(broker.spec(0)).prefetch(64),
        &db,
        Batching::new(32, Duration::from_millis(20)),
    );
    let stats = run_until(consumer, || async {
        recorder.counter(
            "prost_db_consumer_deliveries_total",
            &[("queue", &queue), ("outcome", "processed")],
        ) + recorder.counter(
            "prost_db_consumer_deliveries_total",
            &[("queue", &queue), ("outcome", "duplicate")],
        ) == deliveries
    })
    .await;
    assert_eq!(stats.acked, deliveries, "{stats:?}");
    assert_eq!(stats.duplicates, deliveries - 200, "{stats:?}");
    assert_eq!(stats.retried + stats.dead_lettered + stats.unsettled, 0);

    // A second run: every event once more, each a duplicate of an earlier batch.
    for event in events.iter().filter(|e| e.payload.n % 3 == 0) {
        publisher.publish(&exchange(&broker), event).await.unwrap();
    }
    let again = events.iter().filter(|e| e.payload.n % 3 == 0).count() as u64;
    let consumer = credits(
        Consumer::new(broker.spec(0)).prefetch(64),
        &db,
        Batching::new(32, Duration::from_millis(20)),
    );
    let second = run_until(consumer, || async {
        recorder.counter(
            "prost_db_consumer_deliveries_total",
            &[("queue", &queue), ("outcome", "duplicate")],
        ) == deliveries - 200 + again
    })
    .await;
    assert_eq!(
        (second.acked, second.duplicates),
        (again, again),
        "{second:?}"
    );

    assert_eq!(count(&db, "SELECT count(*) FROM applied").await, 200);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT event_id) FROM applied").await,
        200
    );
    assert_eq!(
        count(&db, "SELECT sum(n)::bigint FROM applied").await,
        (0..200).sum::<i64>()
    );
    let transactions = count(&db, "SELECT count(DISTINCT txid) FROM applied").await;
    assert!(
        transactions < 50,
        "events shared transactions: {transactions} for 200"
    );

    // The stored results replay equal, and the body does not run again.
    let store = IdempotencyStore::new(&db);
    let replayed = store
        .run_batch_events("credit", &events, |_tx, _event| async {
            Err::<i64, _>(std::io::Error::other("the body ran for a duplicate"))
        })
        .await;
    for (event, outcome) in events.iter().zip(replayed) {
        assert_eq!(
            outcome.unwrap(),
            Outcome::Duplicate(i64::from(event.payload.n) * 10)
        );
    }

    let sizes = recorder.histogram(
        "prost_db_consumer_batch_size",
        &[("queue", &queue), ("event_type", "Credit")],
    );
    assert_eq!(
        sizes.iter().sum::<f64>() as u64,
        deliveries + again,
        "{sizes:?}"
    );
    assert!(sizes.iter().any(|&size| size >= 16.0), "{sizes:?}");
    let multiple = recorder.counter(
        "prost_db_consumer_batch_acks_total",
        &[("queue", &queue), ("multiple", "true")],
    );
    assert!(multiple >= 1, "{}", recorder.render());
    eprintln!(
        "batch mode: {deliveries} + {again} deliveries, {} batches, {transactions} transactions, \
         {multiple} multiple acks",
        sizes.len()
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_poison_event_in_a_batch_is_dead_lettered_alone_and_the_others_applied_once() {
    let (test_db, db, broker) = fixture().await;
    let spec = broker.spec(0);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for n in 0..30 {
        let event = Event::new("a", "c", Credit { n });
        publisher.publish(&exchange(&broker), &event).await.unwrap();
    }
    // A valid envelope whose payload is not a `Credit`.
    let mut bad = serde_json::to_value(Event::new("a", "c", Credit { n: 99 })).unwrap();
    bad["n"] = serde_json::json!("ninety-nine");
    publisher
        .publish_raw(
            &exchange(&broker),
            "account.credit",
            &serde_json::to_vec(&bad).unwrap(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // 13 fails for good; 7 fails transiently on its first two runs (in its batch, then
    // alone), and succeeds on its retry.
    let runs: Arc<Mutex<HashMap<i32, u32>>> = Arc::default();
    let consumer = Consumer::new(spec.clone()).prefetch(64).on_batch(
        IdempotencyStore::new(&db),
        "credit",
        Batching::new(32, Duration::from_millis(50)),
        {
            let runs = Arc::clone(&runs);
            move |mut tx, event: Arc<Event<Credit>>| {
                let runs = Arc::clone(&runs);
                async move {
                    let n = event.payload.n;
                    let run = {
                        let mut runs = runs.lock().unwrap();
                        let run = runs.entry(n).or_default();
                        *run += 1;
                        *run
                    };
                    apply(&mut tx, "credit", event.envelope.event_id, n)
                        .await
                        .map_err(DeliveryError::from)?;
                    match n {
                        13 => Err(DeliveryError::permanent("credit 13 is poison")),
                        7 if run <= 2 => Err(DeliveryError::transient("account 7 is busy")),
                        _ => Ok(()),
                    }
                }
            }
        },
    );
    let stats = run_until(consumer, || async {
        let (dead, applied, retrying) = (
            broker.depth(&spec.dead_letter_queue()).await,
            count(&db, "SELECT count(*) FROM applied").await,
            broker.retry_depth(&spec).await,
        );
        dead == 2 && applied == 29 && retrying == 0
    })
    .await;
    assert_eq!(stats.acked, 29, "{stats:?}");
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");
    assert_eq!(stats.retried, 1, "{stats:?}");
    assert_eq!(
        count(&db, "SELECT count(DISTINCT n) FROM applied").await,
        29,
        "nothing applied twice"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM applied WHERE n = 13").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM applied WHERE n = 7").await,
        1
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs[&7], 3, "in the batch, alone, then its retry: {runs:?}");
    assert!(runs[&13] >= 1, "{runs:?}");
    assert!(
        runs.values().all(|&runs| runs <= 3),
        "one poison event costs one batch: {runs:?}"
    );
    let mut reasons: Vec<String> = broker
        .drain(&spec.dead_letter_queue())
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("cannot decode Credit payload"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("credit 13 is poison"), "{reasons:?}");
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_body_that_panics_in_a_batch_is_dead_lettered_alone_and_the_others_applied_once() {
    let (test_db, db, broker) = fixture().await;
    let spec = broker.spec(0);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for n in 0..10 {
        let event = Event::new("a", "c", Credit { n });
        publisher.publish(&exchange(&broker), &event).await.unwrap();
    }
    let consumer = Consumer::new(spec.clone()).prefetch(16).on_batch(
        IdempotencyStore::new(&db),
        "credit",
        Batching::new(16, Duration::from_millis(50)),
        |mut tx, event: Arc<Event<Credit>>| async move {
            let n = event.payload.n;
            apply(&mut tx, "credit", event.envelope.event_id, n).await?;
            assert_ne!(n, 4, "credit 4 makes the body panic");
            Ok::<(), sqlx::Error>(())
        },
    );
    let stats = run_until(consumer, || async {
        broker.depth(&spec.dead_letter_queue()).await == 1
            && count(&db, "SELECT count(*) FROM applied").await == 9
    })
    .await;
    assert_eq!((stats.acked, stats.dead_lettered), (9, 1), "{stats:?}");
    assert_eq!(count(&db, "SELECT count(DISTINCT n) FROM applied").await, 9);
    assert_eq!(
        count(&db, "SELECT count(*) FROM applied WHERE n = 4").await,
        0
    );
    let dead = broker.drain(&spec.dead_letter_queue()).await;
    assert!(dead[0].0.contains("handler panicked"), "{:?}", dead[0].0);
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn two_event_types_on_one_queue_never_share_a_batch() {
    let (test_db, db, broker) = fixture().await;
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for n in 0..150 {
        let credit = Event::new("a", "c", Credit { n });
        publisher
            .publish(&exchange(&broker), &credit)
            .await
            .unwrap();
        let debit = Event::new("a", "c", Debit { n });
        publisher.publish(&exchange(&broker), &debit).await.unwrap();
    }
    let batching = Batching::new(16, Duration::from_millis(20));
    let consumer = credits(Consumer::new(broker.spec(0)).prefetch(64), &db, batching).on_batch(
        IdempotencyStore::new(&db),
        "debit",
        batching,
        |mut tx, event: Arc<Event<Debit>>| async move {
            let kind = event.envelope.event_type.to_lowercase();
            apply(&mut tx, &kind, event.envelope.event_id, event.payload.n).await
        },
    );
    let stats = run_until(consumer, || async {
        count(&db, "SELECT count(*) FROM applied").await == 300
    })
    .await;
    assert_eq!(stats.acked, 300, "{stats:?}");
    let mixed = count(
        &db,
        "SELECT count(*) FROM (SELECT txid FROM applied GROUP BY txid \
         HAVING count(DISTINCT kind) > 1) AS t",
    )
    .await;
    assert_eq!(mixed, 0, "a transaction applied both event types");
    for kind in ["credit", "debit"] {
        let batched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT txid FROM applied WHERE kind = $1 \
             GROUP BY txid HAVING count(*) > 1) AS t",
        )
        .bind(kind)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(batched >= 1, "no {kind} batch held more than one event");
    }
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_handler_needs_a_prefetch_of_at_least_its_batch_size() {
    let (test_db, db, broker) = fixture().await;
    let consumer = credits(
        Consumer::new(broker.spec(0)).prefetch(8),
        &db,
        Batching::new(32, Duration::from_millis(5)),
    );
    let error = consumer
        .run(&broker.connection, async {})
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("prefetch 8 is below the batch size 32")
            && message.contains(".prefetch(32)"),
        "{message}"
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

/// One `Slow` delivery (whose handler runs until its channel is gone) ahead of a batch of
/// four credits; the consumer's connection closes once the batch is settled, then a
/// second consumer takes what the broker gave back. Returns the `Slow` rows applied, the
/// credit rows, and the batch acks sent with `multiple`.
async fn slow_delivery_ahead_of_a_batch(naive: bool) -> (i64, i64, u64) {
    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (test_db, db, broker) = fixture().await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let slow = Event::new("a", "c", Slow { n: 0 });
    publisher.publish(&exchange(&broker), &slow).await.unwrap();
    for n in 0..4 {
        let credit = Event::new("a", "c", Credit { n });
        publisher
            .publish(&exchange(&broker), &credit)
            .await
            .unwrap();
    }
    let consumer = |db: &Db| {
        let slow_db = db.clone();
        let consumer =
            Consumer::new(broker.spec(0))
                .prefetch(16)
                .handler("Slow", move |delivered| {
                    let db = slow_db.clone();
                    async move {
                        if !delivered.redelivered {
                            // Still running when the channel goes.
                            std::future::pending::<()>().await;
                        }
                        let event = delivered.decode::<Slow>()?;
                        let mut tx = db.begin().await?;
                        apply(&mut tx, "slow", event.envelope.event_id, 0).await?;
                        tx.commit().await.map_err(prost_db::Error::from)?;
                        Ok::<(), DeliveryError>(())
                    }
                });
        credits(consumer, db, Batching::new(4, Duration::from_secs(5)))
    };

    let connection = amqp::connect(&amqp::url_from_env()).await.unwrap();
    let first = consumer(&db).unsafe_naive_multiple_ack(naive);
    let run = tokio::spawn(async move {
        let ended = first.run(&connection, std::future::pending()).await;
        (connection, ended)
    });
    let settled = wait_until(Duration::from_secs(30), || async {
        recorder.counter(
            "prost_db_consumer_deliveries_total",
            &[("queue", &queue), ("outcome", "processed")],
        ) == 4
    })
    .await;
    assert!(settled, "the batch was not settled");
    let multiple = recorder.counter(
        "prost_db_consumer_batch_acks_total",
        &[("queue", &queue), ("multiple", "true")],
    );
    // The connection goes (a crash, a network cut) while `Slow` is still running.
    run.abort();
    let _ = run.await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM applied WHERE kind = 'slow'").await,
        0
    );

    let second = consumer(&db);
    let (stop, stopped) = oneshot::channel::<()>();
    let connection = amqp::connect(&amqp::url_from_env()).await.unwrap();
    let run = second.run(&connection, async {
        let _ = stopped.await;
    });
    let watch = async {
        wait_until(Duration::from_secs(10), || async {
            count(&db, "SELECT count(*) FROM applied WHERE kind = 'slow'").await == 1
        })
        .await;
        let _ = stop.send(());
    };
    let (stats, ()) = tokio::join!(run, watch);
    let _ = connection.close(200, "done".into()).await;
    eprintln!("second consumer: {:?}", stats.unwrap());
    let slow_rows = count(&db, "SELECT count(*) FROM applied WHERE kind = 'slow'").await;
    let credit_rows = count(&db, "SELECT count(*) FROM applied WHERE kind = 'credit'").await;
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
    (slow_rows, credit_rows, multiple)
}

#[tokio::test]
async fn a_batch_never_acks_with_multiple_past_a_delivery_another_handler_is_running() {
    let (slow, credits, multiple) = slow_delivery_ahead_of_a_batch(false).await;
    assert_eq!(
        slow, 1,
        "the running delivery came back after the channel closed"
    );
    assert_eq!(credits, 4);
    assert_eq!(multiple, 0, "the batch was acked one by one");
}

#[tokio::test]
async fn control_a_naive_multiple_ack_loses_the_delivery_another_handler_was_running() {
    let (slow, credits, multiple) = slow_delivery_ahead_of_a_batch(true).await;
    assert_eq!(credits, 4);
    assert_eq!(multiple, 1);
    assert_eq!(
        slow, 0,
        "the multiple ack acked the running delivery too: it never came back"
    );
}

/// Sixteen accounts, and two queues (each on its exchange) for two consumers' batches.
async fn two_queue_fixture() -> (TestDb, Db, Broker) {
    let test_db = TestDb::new().await.unwrap();
    let db = test_db.db("ledger").await.unwrap();
    IdempotencyStore::install(&db).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE applied (event_id UUID NOT NULL, kind TEXT NOT NULL, n INT NOT NULL,
             txid BIGINT NOT NULL DEFAULT txid_current());
         CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL DEFAULT 0);
         INSERT INTO accounts (id) SELECT generate_series(1, 16);",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let mut topology = Topology::new();
    for side in ["up", "down"] {
        let exchange = format!("{prefix}{side}");
        topology = topology.exchange(exchange.clone()).queue(
            QueueSpec::new(format!("{prefix}ledger.{side}"))
                .bind(exchange, "account.#")
                .retry_delays([Duration::from_millis(50)]),
        );
    }
    (test_db, db, Broker::with(topology, prefix).await)
}

/// Credits account `n` (one row lock), holding it a little so that two batches overlap.
async fn credit_account(tx: &mut Tx, event: &Event<Credit>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET balance = balance + 1 WHERE id = $1")
        .bind(event.payload.n)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_sleep(0.02)")
        .execute(&mut **tx)
        .await?;
    apply(tx, "credit", event.envelope.event_id, event.payload.n).await?;
    Ok(())
}

/// The batch prepare step of [`credit_account`]: the batch's accounts, locked in id order.
async fn lock_accounts(tx: &mut Tx, events: &[Arc<Event<Credit>>]) -> Result<(), sqlx::Error> {
    let ids: Vec<i32> = events.iter().map(|event| event.payload.n).collect();
    sqlx::query("SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Two consumers, one per queue, each given one batch of 16 credits of accounts 1..=16:
/// ascending on one queue, descending on the other. Returns the batches that fell back,
/// the body runs, and the transactions the 32 applied credits committed in.
async fn opposite_batches(prepare: bool) -> (u64, usize, i64) {
    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (test_db, db, broker) = two_queue_fixture().await;
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for (side, order) in [
        ("up", (1..=16).collect::<Vec<i32>>()),
        ("down", (1..=16).rev().collect()),
    ] {
        for n in order {
            let event = Event::new(format!("a{n}"), "c", Credit { n });
            let exchange = format!("{}{side}", broker.prefix);
            publisher.publish(&exchange, &event).await.unwrap();
        }
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumer = |spec: QueueSpec| {
        let consumer = Consumer::new(spec).prefetch(16);
        let store = IdempotencyStore::new(&db);
        let batching = Batching::new(16, Duration::from_secs(5));
        let runs = Arc::clone(&runs);
        let body = move |mut tx: prost_db::idempotency::TxLease, event: Arc<Event<Credit>>| {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { credit_account(&mut tx, &event).await }
        };
        if prepare {
            consumer.on_batch_prepared(
                store,
                "credit",
                batching,
                |mut tx, events: Vec<Arc<Event<Credit>>>| async move {
                    lock_accounts(&mut tx, &events).await
                },
                body,
            )
        } else {
            consumer.on_batch(store, "credit", batching, body)
        }
    };
    let (up, down) = (consumer(broker.spec(0)), consumer(broker.spec(1)));
    let done = || async { count(&db, "SELECT count(*) FROM applied").await == 32 };
    let (up, down) = tokio::join!(run_until(up, done), run_until(down, done));
    assert_eq!(up.acked + down.acked, 32, "{up:?} {down:?}");
    assert_eq!(
        up.retried + down.retried + up.dead_lettered + down.dead_lettered,
        0
    );

    // Every credit applied once, whatever the batches did.
    assert_eq!(
        count(&db, "SELECT count(DISTINCT event_id) FROM applied").await,
        32
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM accounts WHERE balance = 2").await,
        16,
        "every account credited once from each queue"
    );
    let transactions = count(&db, "SELECT count(DISTINCT txid) FROM applied").await;
    let fallbacks = [0, 1]
        .iter()
        .map(|&i| {
            let queue = broker.spec(i).queue();
            recorder.counter(
                "prost_db_consumer_batch_fallbacks_total",
                &[("queue", &queue), ("event_type", "Credit")],
            )
        })
        .sum();
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "opposite batches (prepare: {prepare}): {fallbacks} fallbacks, {runs} body runs, \
         {transactions} transactions"
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
    (fallbacks, runs, transactions)
}

#[tokio::test]
async fn batches_locking_in_prepare_never_deadlock_on_rows_their_events_touch_in_opposite_orders() {
    let (fallbacks, runs, transactions) = opposite_batches(true).await;
    assert_eq!(fallbacks, 0, "no batch fell back");
    assert_eq!(runs, 32, "every body ran once");
    assert_eq!(transactions, 2, "each batch committed in one transaction");
}

#[tokio::test]
async fn control_batches_locking_in_arrival_order_deadlock_and_fall_back() {
    let (fallbacks, runs, transactions) = opposite_batches(false).await;
    assert!(fallbacks >= 1, "a batch fell back");
    assert!(runs > 32, "a rolled-back batch's bodies ran again: {runs}");
    assert!(
        transactions > 2,
        "the fallen-back batch's events committed one by one: {transactions}"
    );
}

#[tokio::test]
async fn a_failing_prepare_falls_back_and_prepare_sees_only_the_claimed_events() {
    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (test_db, db, broker) = fixture().await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let events: Vec<Event<Credit>> = (0..8).map(|n| Event::new("a", "c", Credit { n })).collect();
    // Credits 0..4 applied before: duplicates in the batch.
    let store = IdempotencyStore::new(&db);
    let early: Vec<_> = store
        .run_batch_events("credit", &events[..4], |mut tx, event| async move {
            apply(&mut tx, "credit", event.envelope.event_id, event.payload.n).await
        })
        .await;
    assert!(early.iter().all(Result::is_ok));
    for event in &events {
        publisher.publish(&exchange(&broker), event).await.unwrap();
    }

    let seen: Arc<Mutex<Vec<Vec<i32>>>> = Arc::default();
    let consumer = Consumer::new(broker.spec(0))
        .prefetch(16)
        .on_batch_prepared(
            IdempotencyStore::new(&db),
            "credit",
            Batching::new(8, Duration::from_secs(5)),
            {
                let seen = Arc::clone(&seen);
                move |mut tx, events: Vec<Arc<Event<Credit>>>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock()
                            .unwrap()
                            .push(events.iter().map(|e| e.payload.n).collect());
                        // A write the rollback must undo, then a failure.
                        apply(&mut tx, "prepare", Uuid::new_v4(), -1).await?;
                        Err::<(), _>(DeliveryError::transient("the accounts are busy"))
                    }
                }
            },
            |mut tx, event: Arc<Event<Credit>>| async move {
                apply(&mut tx, "credit", event.envelope.event_id, event.payload.n).await
            },
        );
    let stats = run_until(consumer, || async {
        count(&db, "SELECT count(*) FROM applied WHERE kind = 'credit'").await == 8
    })
    .await;
    assert_eq!((stats.acked, stats.duplicates), (8, 4), "{stats:?}");
    assert_eq!(stats.retried + stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![4, 5, 6, 7]],
        "prepare ran once, with the claimed events only"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM applied WHERE kind = 'prepare'").await,
        0,
        "the failed prepare's batch rolled back"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT n) FROM applied WHERE kind = 'credit'"
        )
        .await,
        8
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT txid) FROM applied WHERE kind = 'credit' AND n >= 4"
        )
        .await,
        4,
        "the batch's new events ran one at a time"
    );
    assert_eq!(
        recorder.counter(
            "prost_db_consumer_batch_fallbacks_total",
            &[("queue", &queue), ("event_type", "Credit")],
        ),
        1
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}
