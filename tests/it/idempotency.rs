//! The idempotency store and `#[idempotent_handler]` against a real PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost_db::idempotency::{
    Claim, EventId, HandlerError, IdempotencyStore, Outcome, PermanentError, Tx,
};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::{Deserialize, Serialize};
use tokio::sync::{Barrier, Mutex, Notify};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone, Serialize)]
struct StockReserved {
    event_id: Uuid,
    product_id: i64,
    quantity: i32,
}

impl EventId for StockReserved {
    type Id = Uuid;
    fn event_id(&self) -> &Uuid {
        &self.event_id
    }
}

impl StockReserved {
    fn new(product_id: i64) -> Self {
        StockReserved {
            event_id: Uuid::new_v4(),
            product_id,
            quantity: 1,
        }
    }
}

const PRODUCTS: i64 = 100;
const INITIAL_STOCK: i64 = 1_000_000;

async fn setup(test_db: &TestDb, service: &str, connections: u32) -> prost_db::Result<Db> {
    let db = Db::connect(test_db.config(service).max_connections(connections)).await?;
    IdempotencyStore::install(&db).await?;
    IdempotencyStore::install(&db).await?;
    sqlx::raw_sql(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL);
         CREATE TABLE applied (event_id UUID NOT NULL, product_id BIGINT NOT NULL);",
    )
    .execute(db.pool())
    .await?;
    sqlx::query("INSERT INTO products SELECT g, $2 FROM generate_series(1, $1) g")
        .bind(PRODUCTS)
        .bind(INITIAL_STOCK)
        .execute(db.pool())
        .await?;
    Ok(db)
}

/// The body under test: one effect per run, and a result that depends on when it ran.
async fn apply(tx: &mut Tx, event: &StockReserved) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO applied (event_id, product_id) VALUES ($1, $2)")
        .bind(event.event_id)
        .bind(event.product_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query_scalar("UPDATE products SET stock = stock - $2 WHERE id = $1 RETURNING stock")
        .bind(event.product_id)
        .bind(i64::from(event.quantity))
        .fetch_one(&mut **tx)
        .await
}

#[idempotent_handler]
async fn reserve_stock(tx: &mut Tx, event: &StockReserved) -> Result<i64, sqlx::Error> {
    apply(tx, event).await
}

/// What the seed did: check, then act, then record, with no transaction around them.
async fn reserve_stock_check_then_insert(db: &Db, event: &StockReserved) -> TestResult {
    let seen: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM idempotency_records WHERE event_id = $1 AND service_name = $2 AND action = 'reserve_stock')",
    )
    .bind(event.event_id.to_string())
    .bind(db.service())
    .fetch_one(db.pool())
    .await?;
    if seen {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    apply(&mut tx, event).await?;
    tx.commit().await?;
    sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action) VALUES ($1, $2, 'reserve_stock') ON CONFLICT DO NOTHING",
    )
    .bind(event.event_id.to_string())
    .bind(db.service())
    .execute(db.pool())
    .await?;
    Ok(())
}

#[derive(Clone)]
enum Delivery {
    Alone(StockReserved),
    /// Both deliveries of a twin wait for each other, then call the handler at once.
    Twin(StockReserved, Arc<Barrier>),
}

/// 10,000 events, 6% of them delivered twice; a third of the duplicates go to two workers
/// at the same instant, the others arrive later, shuffled in.
fn deliveries(events: usize) -> (Vec<StockReserved>, Vec<Delivery>) {
    let all: Vec<StockReserved> = (0..events)
        .map(|i| StockReserved::new(i as i64 % PRODUCTS + 1))
        .collect();
    let mut queue = Vec::with_capacity(events * 107 / 100);
    let mut late = Vec::new();
    for (i, event) in all.iter().enumerate() {
        if i % 50 == 0 {
            let barrier = Arc::new(Barrier::new(2));
            queue.push(Delivery::Twin(event.clone(), barrier.clone()));
            queue.push(Delivery::Twin(event.clone(), barrier));
        } else {
            queue.push(Delivery::Alone(event.clone()));
            if i % 25 == 1 {
                late.push(event.clone());
            }
        }
        // Late duplicates join the queue a little after their original.
        if i % 7 == 0 && !late.is_empty() {
            queue.push(Delivery::Alone(late.remove(0)));
        }
    }
    queue.extend(late.into_iter().map(Delivery::Alone));
    (all, queue)
}

async fn deliver_all<F, Fut>(queue: Vec<Delivery>, workers: usize, handle: F)
where
    F: Fn(StockReserved) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().await.next();
                match next {
                    None => break,
                    Some(Delivery::Alone(event)) => handle(event).await,
                    Some(Delivery::Twin(event, barrier)) => {
                        barrier.wait().await;
                        handle(event).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked");
    }
}

async fn applied_per_event(db: &Db) -> prost_db::Result<HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM applied GROUP BY event_id")
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_apply_each_effect_exactly_once_and_replay_the_first_result()
-> TestResult {
    const EVENTS: usize = 10_000;
    const WORKERS: usize = 16;
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", WORKERS as u32 + 1).await?;
    let (events, queue) = deliveries(EVENTS);
    let delivered = queue.len();
    assert!(delivered >= EVENTS * 106 / 100, "{delivered} deliveries");

    let processed = Arc::new(std::sync::Mutex::new(HashMap::<Uuid, i64>::new()));
    let replayed = Arc::new(std::sync::Mutex::new(Vec::<(Uuid, i64)>::new()));
    {
        let (db, processed, replayed) = (db.clone(), processed.clone(), replayed.clone());
        deliver_all(queue, WORKERS, move |event| {
            let (db, processed, replayed) = (db.clone(), processed.clone(), replayed.clone());
            async move {
                match reserve_stock(&db, &event).await.expect("handler failed") {
                    Outcome::Processed(stock) => {
                        let previous = processed.lock().unwrap().insert(event.event_id, stock);
                        assert!(previous.is_none(), "processed twice: {}", event.event_id);
                    }
                    Outcome::Duplicate(stock) => {
                        replayed.lock().unwrap().push((event.event_id, stock));
                    }
                }
            }
        })
        .await;
    }

    let processed = processed.lock().unwrap().clone();
    let replayed = replayed.lock().unwrap().clone();
    assert_eq!(processed.len(), EVENTS);
    assert_eq!(
        replayed.len(),
        delivered - EVENTS,
        "every duplicate is counted"
    );
    for (event_id, stock) in &replayed {
        assert_eq!(
            processed.get(event_id),
            Some(stock),
            "replayed result of {event_id}"
        );
    }

    let applied = applied_per_event(&db).await?;
    assert_eq!(applied.len(), EVENTS);
    assert!(
        applied.values().all(|&n| n == 1),
        "an effect was applied twice"
    );
    for event in &events {
        assert_eq!(applied.get(&event.event_id), Some(&1));
    }
    let stock: i64 = sqlx::query_scalar("SELECT sum(stock)::bigint FROM products")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(stock, PRODUCTS * INITIAL_STOCK - EVENTS as i64);
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(records, EVENTS as i64);

    // The control: the seed's check-then-insert, same deliveries, same workers.
    let control = setup(&test_db, "control", WORKERS as u32 + 1).await?;
    let (_, queue) = deliveries(2_000);
    {
        let control = control.clone();
        deliver_all(queue, WORKERS, move |event| {
            let control = control.clone();
            async move {
                reserve_stock_check_then_insert(&control, &event)
                    .await
                    .unwrap()
            }
        })
        .await;
    }
    let doubled = applied_per_event(&control)
        .await?
        .values()
        .filter(|&&n| n > 1)
        .count();
    assert!(
        doubled > 0,
        "the control should show double effects; the test setup cannot catch a race"
    );
    eprintln!("control (check-then-insert): {doubled} events applied twice");

    db.close().await;
    control.close().await;
    test_db.close().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ReserveError {
    #[error("transient: {0}")]
    Flaky(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[idempotent_handler]
async fn reserve_or_fail(
    tx: &mut Tx,
    event: &StockReserved,
    fail: bool,
) -> Result<i64, ReserveError> {
    let stock = apply(tx, event).await?;
    if fail {
        return Err(ReserveError::Flaky("broker hiccup".into()));
    }
    Ok(stock)
}

#[tokio::test]
async fn a_failed_body_leaves_no_record_and_the_retry_succeeds() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let event = StockReserved::new(1);

    let error = reserve_or_fail(&db, &event, true).await.unwrap_err();
    assert!(
        matches!(error, HandlerError::Failed(ReserveError::Flaky(_))),
        "{error:?}"
    );
    assert!(error.should_retry());
    let store = IdempotencyStore::new(&db);
    assert!(
        store
            .get("reserve_or_fail", &event.event_id.to_string())
            .await?
            .is_none()
    );
    assert!(
        applied_per_event(&db).await?.is_empty(),
        "the failed body's effect rolled back"
    );

    let outcome = reserve_or_fail(&db, &event, false).await?;
    assert_eq!(outcome, Outcome::Processed(INITIAL_STOCK - 1));
    let again = reserve_or_fail(&db, &event, true).await?;
    assert_eq!(
        again,
        Outcome::Duplicate(INITIAL_STOCK - 1),
        "a duplicate never runs the body"
    );
    assert_eq!(applied_per_event(&db).await?.len(), 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Rejection {
    UnknownProduct(i64),
    Busy,
}

impl PermanentError for Rejection {
    fn is_permanent(&self) -> bool {
        matches!(self, Rejection::UnknownProduct(_))
    }
}

#[idempotent_handler(permanent_errors, action = "reserve_checked")]
async fn reserve_checked(
    tx: &mut Tx,
    event: &StockReserved,
    runs: &AtomicUsize,
) -> Result<i64, Rejection> {
    runs.fetch_add(1, Ordering::SeqCst);
    sqlx::query("INSERT INTO applied (event_id, product_id) VALUES ($1, $2)")
        .bind(event.event_id)
        .bind(event.product_id)
        .execute(&mut **tx)
        .await
        .map_err(|_| Rejection::Busy)?;
    if event.product_id > PRODUCTS {
        return Err(Rejection::UnknownProduct(event.product_id));
    }
    if event.quantity == 0 {
        return Err(Rejection::Busy);
    }
    Ok(event.product_id)
}

#[tokio::test]
async fn a_permanent_error_is_recorded_and_replayed_as_an_error() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let runs = AtomicUsize::new(0);

    let unknown = StockReserved::new(PRODUCTS + 1);
    let first = reserve_checked(&db, &unknown, &runs).await.unwrap_err();
    assert!(
        matches!(
            first,
            HandlerError::Permanent {
                error: Rejection::UnknownProduct(101),
                replayed: false
            }
        ),
        "{first:?}"
    );
    assert!(!first.should_retry());
    let second = reserve_checked(&db, &unknown, &runs).await.unwrap_err();
    assert!(
        matches!(
            second,
            HandlerError::Permanent {
                error: Rejection::UnknownProduct(101),
                replayed: true
            }
        ),
        "{second:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the replay did not run the body"
    );
    assert!(
        applied_per_event(&db).await?.is_empty(),
        "a permanent error's effects roll back"
    );

    // An error the type calls transient is not recorded.
    let busy = StockReserved {
        quantity: 0,
        ..StockReserved::new(1)
    };
    let error = reserve_checked(&db, &busy, &runs).await.unwrap_err();
    assert!(
        matches!(error, HandlerError::Failed(Rejection::Busy)),
        "{error:?}"
    );
    let store = IdempotencyStore::new(&db);
    assert!(
        store
            .get("reserve_checked", &busy.event_id.to_string())
            .await?
            .is_none()
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_same_event_id_with_a_different_payload_is_a_mismatch() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let event = StockReserved::new(1);
    assert!(matches!(
        reserve_stock(&db, &event).await?,
        Outcome::Processed(_)
    ));

    let altered = StockReserved {
        quantity: 5,
        ..event.clone()
    };
    let error = reserve_stock(&db, &altered).await.unwrap_err();
    match &error {
        HandlerError::PayloadMismatch { event_id, action } => {
            assert_eq!(event_id, &event.event_id.to_string());
            assert_eq!(action, "reserve_stock");
        }
        other => panic!("expected a payload mismatch, got {other:?}"),
    }
    assert!(!error.should_retry());
    assert_eq!(applied_per_event(&db).await?[&event.event_id], 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn purge_deletes_only_records_older_than_the_horizon() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let events: Vec<StockReserved> = (1..=6).map(StockReserved::new).collect();
    for event in &events {
        assert!(!reserve_stock(&db, event).await?.is_duplicate());
    }
    let old: Vec<String> = events[..2].iter().map(|e| e.event_id.to_string()).collect();
    sqlx::query("UPDATE idempotency_records SET created_at = now() - interval '8 days' WHERE event_id = ANY($1)")
        .bind(&old)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "UPDATE idempotency_records SET created_at = now() - interval '6 days' WHERE event_id = $1",
    )
    .bind(events[2].event_id.to_string())
    .execute(db.pool())
    .await?;

    let store = IdempotencyStore::new(&db);
    let deleted = store
        .purge_older_than(Duration::from_secs(7 * 24 * 3600))
        .await?;
    assert_eq!(deleted, 2);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM idempotency_records ORDER BY created_at")
            .fetch_all(db.pool())
            .await?;
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|id| !old.contains(id)));

    db.close().await;
    test_db.close().await?;
    Ok(())
}

/// A handler whose body waits for a signal, to hold its transaction open.
#[idempotent_handler(action = "reserve_stock", lock_timeout_ms = 10000)]
async fn reserve_slowly(
    tx: &mut Tx,
    event: &StockReserved,
    gate: &Notify,
    fail: bool,
) -> Result<i64, ReserveError> {
    let stock = apply(tx, event).await?;
    gate.notified().await;
    if fail {
        return Err(ReserveError::Flaky("rolled back".into()));
    }
    Ok(stock)
}

#[tokio::test]
async fn a_twin_in_flight_waits_then_replays_or_takes_over_after_a_rollback() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 6).await?;

    for first_fails in [false, true] {
        let event = StockReserved::new(2);
        let gate = Arc::new(Notify::new());
        let first = {
            let (db, event, gate) = (db.clone(), event.clone(), gate.clone());
            tokio::spawn(async move { reserve_slowly(&db, &event, &gate, first_fails).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let twin = {
            let (db, event) = (db.clone(), event.clone());
            tokio::spawn(async move { reserve_stock(&db, &event).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!twin.is_finished(), "the twin waits for the first delivery");
        gate.notify_one();

        let first = first.await?;
        let twin = twin.await??;
        if first_fails {
            let Outcome::Processed(stock) = twin else {
                panic!("{twin:?}")
            };
            // The failed first delivery reports its error, or, if the twin committed before
            // it could tell, that the event is handled.
            match first {
                Err(HandlerError::Failed(_)) => {}
                Ok(Outcome::Duplicate(replayed)) => assert_eq!(replayed, stock),
                other => panic!("{other:?}"),
            }
        } else {
            let Ok(Outcome::Processed(stock)) = first else {
                panic!("{first:?}")
            };
            assert_eq!(twin, Outcome::Duplicate(stock));
        }
        assert_eq!(applied_per_event(&db).await?[&event.event_id], 1);
    }

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[idempotent_handler(action = "reserve_stock", lock_timeout_ms = 200)]
async fn reserve_impatiently(tx: &mut Tx, event: &StockReserved) -> Result<i64, sqlx::Error> {
    apply(tx, event).await
}

#[tokio::test]
async fn waiting_for_a_twin_is_bounded_by_the_lock_timeout() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 6).await?;
    let event = StockReserved::new(3);
    let gate = Arc::new(Notify::new());
    let first = {
        let (db, event, gate) = (db.clone(), event.clone(), gate.clone());
        tokio::spawn(async move { reserve_slowly(&db, &event, &gate, false).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = reserve_impatiently(&db, &event).await.unwrap_err();
    // The twin's body queued behind the first's row lock, or its record insert behind the
    // first's key: either way a lock timeout, rolled back, to retry.
    assert!(error.should_retry(), "{error:?}");
    assert!(error.to_string().contains("lock timeout"), "{error}");
    gate.notify_one();
    assert!(matches!(first.await??, Outcome::Processed(_)));
    assert!(reserve_impatiently(&db, &event).await?.is_duplicate());
    assert_eq!(applied_per_event(&db).await?[&event.event_id], 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

struct Inventory {
    warehouse: &'static str,
}

impl Inventory {
    #[idempotent_handler(key = event.event_id, service = "inventory")]
    async fn restock(&self, tx: &mut Tx, event: StockReserved) -> Result<String, sqlx::Error> {
        apply(tx, &event).await?;
        Ok(format!("{} restocked {}", self.warehouse, event.product_id))
    }
}

trait Event: EventId + Serialize + Sync {
    fn product(&self) -> i64;
}

impl Event for StockReserved {
    fn product(&self) -> i64 {
        self.product_id
    }
}

#[idempotent_handler(action = "generic")]
async fn count_generic<E: Event>(tx: &mut Tx, event: &E) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
        .bind(event.product())
        .fetch_one(&mut **tx)
        .await
}

#[tokio::test]
async fn methods_generic_handlers_keys_and_services() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let inventory = Inventory { warehouse: "north" };
    let event = StockReserved::new(4);

    let first = inventory.restock(&db, event.clone()).await?;
    assert_eq!(first, Outcome::Processed("north restocked 4".into()));
    assert_eq!(
        inventory.restock(&db, event.clone()).await?,
        Outcome::Duplicate("north restocked 4".into())
    );
    let store = IdempotencyStore::new(&db).with_service("inventory");
    assert!(
        store
            .get("restock", &event.event_id.to_string())
            .await?
            .is_some()
    );
    assert!(
        IdempotencyStore::new(&db)
            .get("restock", &event.event_id.to_string())
            .await?
            .is_none()
    );

    assert_eq!(
        count_generic(&db, &event).await?,
        Outcome::Processed(INITIAL_STOCK - 1)
    );
    assert_eq!(
        count_generic(&db, &event).await?,
        Outcome::Duplicate(INITIAL_STOCK - 1)
    );

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_store_claims_completes_and_runs_without_the_macro() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let store = IdempotencyStore::new(&db);

    let mut tx = store.begin().await?;
    assert_eq!(
        store.claim(&mut tx, "manual", "k-1", None).await?,
        Claim::Claimed
    );
    store
        .complete(&mut tx, "manual", "k-1", &serde_json::json!({"ok": true}))
        .await?;
    tx.commit().await?;
    let mut tx = store.begin().await?;
    match store.claim(&mut tx, "manual", "k-1", None).await? {
        Claim::Duplicate(record) => {
            assert_eq!(record.result, Some(serde_json::json!({"ok": true})));
            assert!(!record.permanent_error);
        }
        Claim::Claimed => panic!("claimed twice"),
    }
    tx.rollback().await?;

    let payload = serde_json::json!({"order": 9});
    let run = |n: u64| {
        store.run("closure", "k-2", &payload, move |tx| async move {
            (tx, Ok::<u64, sqlx::Error>(n))
        })
    };
    assert_eq!(run(1).await?, Outcome::Processed(1));
    assert_eq!(run(2).await?, Outcome::Duplicate(1));

    // A claim bounds its own wait, also in a transaction begun without the store: while a
    // first claim of k-3 is uncommitted, a second gives up after the store's lock timeout.
    let impatient = store
        .clone()
        .with_lock_timeout(Duration::from_millis(200))?;
    let mut first = db.begin().await?;
    assert_eq!(
        impatient.claim(&mut first, "manual", "k-3", None).await?,
        Claim::Claimed
    );
    let mut second = db.begin().await?;
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        impatient.claim(&mut second, "manual", "k-3", None),
    )
    .await
    .expect("the second claim waited past its lock timeout")
    .unwrap_err();
    assert!(error.to_string().contains("lock timeout"), "{error}");
    second.rollback().await?;
    first.commit().await?;
    assert!(store.get("manual", "k-3").await?.is_some());

    db.close().await;
    test_db.close().await?;
    Ok(())
}
