//! The idempotency store and `#[idempotent_handler]` against a real PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost_db::idempotency::{
    Claim, EventId, HandlerError, HandlerMode, IdempotencyStore, Outcome, PermanentError, Tx,
};
use prost_db::testing::TestDb;
use prost_db::{Db, idempotent_handler};
use serde::{Deserialize, Serialize};
use tokio::sync::{Barrier, Mutex, Notify};
use uuid::Uuid;

mod chained_data;
mod partitions;

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
    setup_in(test_db, service, connections, HandlerMode::Transaction).await
}

async fn setup_in(
    test_db: &TestDb,
    service: &str,
    connections: u32,
    mode: HandlerMode,
) -> prost_db::Result<Db> {
    let config = test_db
        .config(service)
        .max_connections(connections)
        .handler_mode(mode);
    let db = Db::connect(config).await?;
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

/// Named, because `reserve_slowly` and `reserve_impatiently` below share its records.
#[idempotent_handler(action = "reserve_stock")]
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
enum Delivery<E> {
    Alone(E),
    /// Both deliveries of a twin wait for each other, then call the handler at once.
    Twin(E, Arc<Barrier>),
}

/// `events` events, 6% of them delivered twice; a third of the duplicates go to two workers
/// at the same instant, the others arrive later, shuffled in.
fn deliveries<E: Clone>(events: Vec<E>) -> Vec<Delivery<E>> {
    let mut queue = Vec::with_capacity(events.len() * 107 / 100);
    let mut late = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        if i % 50 == 0 {
            let barrier = Arc::new(Barrier::new(2));
            queue.push(Delivery::Twin(event.clone(), barrier.clone()));
            queue.push(Delivery::Twin(event, barrier));
        } else {
            if i % 25 == 1 {
                late.push(event.clone());
            }
            queue.push(Delivery::Alone(event));
        }
        // Late duplicates join the queue a little after their original.
        if i % 7 == 0 && !late.is_empty() {
            queue.push(Delivery::Alone(late.remove(0)));
        }
    }
    queue.extend(late.into_iter().map(Delivery::Alone));
    queue
}

async fn deliver_all<E, F, Fut>(queue: Vec<Delivery<E>>, workers: usize, handle: F)
where
    E: Send + 'static,
    F: Fn(E) -> Fut + Clone + Send + 'static,
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

type Handled = Result<Outcome<i64>, HandlerError<sqlx::Error>>;

/// The event shapes the storm runs with: what one event is, what the broker hands the
/// handler on each delivery of it, and the handler.
trait Storm: Send + Sync + 'static {
    /// What is queued: one per event, cloned for its duplicates.
    type Queued: Clone + Send + Sync + 'static;
    fn new(product_id: i64) -> Self::Queued;
    /// The identity whose effect must apply once (the `applied.event_id` of its body).
    fn identity(event: &Self::Queued) -> Uuid;
    /// One delivery: the handler's input as this delivery decodes it.
    fn handle(db: &Db, event: &Self::Queued) -> impl std::future::Future<Output = Handled> + Send;
}

/// `StockReserved` as is, keyed by its event id.
struct PlainEvents;

impl Storm for PlainEvents {
    type Queued = StockReserved;
    fn new(product_id: i64) -> StockReserved {
        StockReserved::new(product_id)
    }
    fn identity(event: &StockReserved) -> Uuid {
        event.event_id
    }
    async fn handle(db: &Db, event: &StockReserved) -> Handled {
        reserve_stock(db, event).await
    }
}

/// `OrderPlaced`, holding maps: every delivery decodes the same JSON bytes anew, so its
/// maps iterate in another order.
struct MapPayloads;

impl Storm for MapPayloads {
    type Queued = Arc<Vec<u8>>;
    fn new(product_id: i64) -> Arc<Vec<u8>> {
        Arc::new(order_placed_json(product_id))
    }
    fn identity(bytes: &Arc<Vec<u8>>) -> Uuid {
        serde_json::from_slice::<OrderPlaced>(bytes)
            .unwrap()
            .event_id
    }
    async fn handle(db: &Db, bytes: &Arc<Vec<u8>>) -> Handled {
        let event: OrderPlaced = serde_json::from_slice(bytes).expect("decodes");
        place_order(db, &event).await
    }
}

/// `Event<OrderConfirmed>` keyed by the order: every delivery is a distinct event (its own
/// event id and timestamp, as when an upstream service publishes twice for one order).
struct BusinessKeys;

impl Storm for BusinessKeys {
    type Queued = (Uuid, i64);
    fn new(product_id: i64) -> (Uuid, i64) {
        (Uuid::new_v4(), product_id)
    }
    fn identity(order: &(Uuid, i64)) -> Uuid {
        order.0
    }
    async fn handle(db: &Db, &(order_ref, product_id): &(Uuid, i64)) -> Handled {
        let event = Confirmed::new(
            order_ref.to_string(),
            "storm",
            OrderConfirmed {
                order_id: 0,
                order_ref,
                product_id,
            },
        );
        confirm_by_order_ref(db, &event).await
    }
}

/// 16 workers deliver `events` events with duplicates: each effect applies exactly once, every
/// duplicate replays the first delivery's result, and no delivery fails (a payload mismatch
/// would be dead-lettered).
async fn storm<S: Storm>(test_db: &TestDb, service: &str, events: usize) -> TestResult {
    storm_in::<S>(test_db, service, events, HandlerMode::Transaction).await
}

async fn storm_in<S: Storm>(
    test_db: &TestDb,
    service: &str,
    events: usize,
    mode: HandlerMode,
) -> TestResult {
    const WORKERS: usize = 16;
    let db = setup_in(test_db, service, WORKERS as u32 + 1, mode).await?;
    let events: Vec<S::Queued> = (0..events)
        .map(|i| S::new(i as i64 % PRODUCTS + 1))
        .collect();
    let identities: Vec<Uuid> = events.iter().map(S::identity).collect();
    let queue = deliveries(events);
    let delivered = queue.len();
    assert!(
        delivered >= identities.len() * 106 / 100,
        "{delivered} deliveries"
    );

    let processed = Arc::new(std::sync::Mutex::new(HashMap::<Uuid, i64>::new()));
    let replayed = Arc::new(std::sync::Mutex::new(Vec::<(Uuid, i64)>::new()));
    {
        let (db, processed, replayed) = (db.clone(), processed.clone(), replayed.clone());
        deliver_all(queue, WORKERS, move |event: S::Queued| {
            let (db, processed, replayed) = (db.clone(), processed.clone(), replayed.clone());
            async move {
                let id = S::identity(&event);
                match S::handle(&db, &event).await {
                    Ok(Outcome::Processed(stock)) => {
                        let previous = processed.lock().unwrap().insert(id, stock);
                        assert!(previous.is_none(), "processed twice: {id}");
                    }
                    Ok(Outcome::Duplicate(stock)) => replayed.lock().unwrap().push((id, stock)),
                    Err(error) => panic!("delivery of {id} failed: {error:?}"),
                }
            }
        })
        .await;
    }

    let processed = processed.lock().unwrap().clone();
    let replayed = replayed.lock().unwrap().clone();
    assert_eq!(processed.len(), identities.len());
    assert_eq!(
        replayed.len(),
        delivered - identities.len(),
        "every duplicate is counted"
    );
    for (id, stock) in &replayed {
        assert_eq!(processed.get(id), Some(stock), "replayed result of {id}");
    }

    let applied = applied_per_event(&db).await?;
    assert_eq!(applied.len(), identities.len());
    for id in &identities {
        assert_eq!(applied.get(id), Some(&1), "effects of {id}");
    }
    let stock: i64 = sqlx::query_scalar("SELECT sum(stock)::bigint FROM products")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(stock, PRODUCTS * INITIAL_STOCK - identities.len() as i64);
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(records, identities.len() as i64);
    if mode == HandlerMode::Chained {
        assert!(db.chained_idle() > 0, "the runs kept chained connections");
    }
    db.close().await;
    Ok(())
}

/// The control: the seed's check-then-insert, same deliveries, same workers; it must show
/// double effects, or the storm could not catch a race.
async fn check_then_insert_doubles(test_db: &TestDb) -> TestResult {
    const WORKERS: usize = 16;
    let control = setup(test_db, "control", WORKERS as u32 + 1).await?;
    let queue = deliveries(
        (0..2_000)
            .map(|i| StockReserved::new(i % PRODUCTS + 1))
            .collect(),
    );
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
    control.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_apply_each_effect_exactly_once_and_replay_the_first_result()
-> TestResult {
    let test_db = TestDb::new().await?;
    storm::<PlainEvents>(&test_db, "catalog", 10_000).await?;
    check_then_insert_doubles(&test_db).await?;
    test_db.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_map_payloads_decoded_anew_are_all_replayed() -> TestResult {
    let test_db = TestDb::new().await?;
    storm::<MapPayloads>(&test_db, "catalog", 5_000).await?;
    test_db.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_distinct_events_for_one_business_key_apply_once() -> TestResult {
    let test_db = TestDb::new().await?;
    storm::<BusinessKeys>(&test_db, "catalog", 5_000).await?;
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
    // The default action: the fn's module path and name.
    let action = "it::idempotency::reserve_or_fail";
    let store = IdempotencyStore::new(&db);
    let key = event.event_id.to_string();
    assert!(store.get(action, &key).await?.is_none());
    assert!(
        applied_per_event(&db).await?.is_empty(),
        "the failed body's effect rolled back"
    );

    let outcome = reserve_or_fail(&db, &event, false).await?;
    assert_eq!(outcome, Outcome::Processed(INITIAL_STOCK - 1));
    assert!(
        store.get(action, &key).await?.is_some(),
        "recorded under {action}"
    );
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
            // The first delivery's error rolled back its claim, and without
            // `permanent_errors` nothing is recorded: it reports its own error.
            assert!(
                matches!(first, Err(HandlerError::Failed(ReserveError::Flaky(_)))),
                "{first:?}"
            );
            assert!(stock < INITIAL_STOCK);
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
    // A method's default action: module path, type and name.
    let action = "it::idempotency::Inventory::restock";
    let key = event.event_id.to_string();
    let store = IdempotencyStore::new(&db).with_service("inventory");
    assert!(store.get(action, &key).await?.is_some());
    assert!(
        IdempotencyStore::new(&db)
            .get(action, &key)
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
        store.run("closure", "k-2", &payload, async move |_| {
            Ok::<u64, sqlx::Error>(n)
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

// ---- wave 2: canonical fingerprints, business keys, unique actions ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    event_id: Uuid,
    product_id: i64,
    attributes: HashMap<String, String>,
    lines: HashMap<String, HashMap<String, i64>>,
}

impl EventId for OrderPlaced {
    type Id = Uuid;
    fn event_id(&self) -> &Uuid {
        &self.event_id
    }
}

/// The JSON a publisher sends: 6 attributes and a nested map of order lines.
fn order_placed_json(product_id: i64) -> Vec<u8> {
    let attributes: HashMap<String, String> =
        ["channel", "currency", "locale", "coupon", "gift", "source"]
            .iter()
            .enumerate()
            .map(|(i, k)| ((*k).to_owned(), format!("value-{i}")))
            .collect();
    let lines: HashMap<String, HashMap<String, i64>> = (1..=4)
        .map(|line| {
            let detail = [
                ("quantity", line),
                ("price_cents", 100 * line),
                ("discount", 0),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
            (format!("line-{line}"), detail)
        })
        .collect();
    serde_json::to_vec(&OrderPlaced {
        event_id: Uuid::new_v4(),
        product_id,
        attributes,
        lines,
    })
    .unwrap()
}

#[idempotent_handler(action = "place_order")]
async fn place_order(tx: &mut Tx, event: &OrderPlaced) -> Result<i64, sqlx::Error> {
    apply(
        tx,
        &StockReserved {
            event_id: event.event_id,
            product_id: event.product_id,
            quantity: 1,
        },
    )
    .await
}

#[tokio::test]
async fn a_map_payload_decoded_again_is_a_duplicate_with_the_first_result() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    for attempt in 0..100 {
        let bytes = order_placed_json(attempt % PRODUCTS + 1);
        let first: OrderPlaced = serde_json::from_slice(&bytes)?;
        let again: OrderPlaced = serde_json::from_slice(&bytes)?;
        let Outcome::Processed(stock) = place_order(&db, &first).await? else {
            panic!("attempt {attempt}: a new event was not processed")
        };
        match place_order(&db, &again).await {
            Ok(outcome) => assert_eq!(outcome, Outcome::Duplicate(stock), "attempt {attempt}"),
            Err(error) => panic!("attempt {attempt}: the redelivery failed: {error}"),
        }
    }
    assert!(applied_per_event(&db).await?.values().all(|&n| n == 1));

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderConfirmed {
    order_id: i64,
    order_ref: Uuid,
    product_id: i64,
}

impl prost_db::events::EventPayload for OrderConfirmed {
    const EVENT_TYPE: &'static str = "OrderConfirmed";
    const AGGREGATE_TYPE: &'static str = "order";
    const ROUTING_KEY: &'static str = "order.confirmed";
}

type Confirmed = prost_db::events::Event<OrderConfirmed>;

async fn apply_order(tx: &mut Tx, event: &Confirmed) -> Result<i64, sqlx::Error> {
    apply(
        tx,
        &StockReserved {
            event_id: event.envelope.event_id,
            product_id: event.payload.product_id,
            quantity: 1,
        },
    )
    .await
}

#[idempotent_handler(action = "confirm_by_event")]
async fn confirm_by_event(tx: &mut Tx, event: &Confirmed) -> Result<i64, sqlx::Error> {
    apply_order(tx, event).await
}

#[idempotent_handler(action = "confirm_by_order", key = event.payload.order_id)]
async fn confirm_by_order(tx: &mut Tx, event: &Confirmed) -> Result<i64, sqlx::Error> {
    apply_order(tx, event).await
}

/// Keyed by the order, and a duplicate must carry the same payload.
#[idempotent_handler(key = event.payload.order_ref, fingerprint = event.payload)]
async fn confirm_by_order_ref(tx: &mut Tx, event: &Confirmed) -> Result<i64, sqlx::Error> {
    let order = StockReserved {
        event_id: event.payload.order_ref,
        product_id: event.payload.product_id,
        quantity: 1,
    };
    apply(tx, &order).await
}

/// What a republisher (an outbox relay replaying, a bridge between brokers) may do to a
/// delivered event: same id and payload, a new timestamp and correlation id.
fn restamped(event: &Confirmed) -> Confirmed {
    let mut copy = event.clone();
    copy.envelope.timestamp += chrono::Duration::seconds(90);
    copy.envelope.correlation_id = format!("{}-replayed", copy.envelope.correlation_id);
    copy
}

#[tokio::test]
async fn the_default_key_fingerprints_the_payload_not_the_envelope() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let event = Confirmed::new(
        "o-1",
        "saga-1",
        OrderConfirmed {
            order_id: 1,
            order_ref: Uuid::new_v4(),
            product_id: 5,
        },
    );
    let Outcome::Processed(stock) = confirm_by_event(&db, &event).await? else {
        panic!("a new event was not processed")
    };
    assert_eq!(
        confirm_by_event(&db, &restamped(&event)).await?,
        Outcome::Duplicate(stock),
        "a re-stamped envelope is the same event"
    );

    let mut altered = event.clone();
    altered.payload.product_id = 6;
    let error = confirm_by_event(&db, &altered).await.unwrap_err();
    assert!(
        matches!(error, HandlerError::PayloadMismatch { .. }),
        "an id reused for another payload: {error:?}"
    );
    assert_eq!(applied_per_event(&db).await?.len(), 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_business_key_makes_two_events_for_one_order_a_duplicate() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let order = OrderConfirmed {
        order_id: 7,
        order_ref: Uuid::new_v4(),
        product_id: 3,
    };
    let first = Confirmed::new("o-7", "saga-7", order.clone());
    let second = Confirmed::new("o-7", "saga-8", order);
    assert_ne!(first.envelope.event_id, second.envelope.event_id);

    let Outcome::Processed(stock) = confirm_by_order(&db, &first).await? else {
        panic!("the first event for the order was not processed")
    };
    let outcome = confirm_by_order(&db, &second).await;
    assert!(
        matches!(outcome, Ok(Outcome::Duplicate(s)) if s == stock),
        "the second event for order 7: {outcome:?}"
    );
    // Without `fingerprint = ...` nothing is compared: another payload for the order is a
    // duplicate too.
    let mut third = Confirmed::new("o-7", "saga-9", second.payload.clone());
    third.payload.product_id = 4;
    assert_eq!(
        confirm_by_order(&db, &third).await?,
        Outcome::Duplicate(stock)
    );
    let applied = applied_per_event(&db).await?;
    assert_eq!(applied.get(&first.envelope.event_id), Some(&1));
    assert_eq!(applied.len(), 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_business_key_with_a_fingerprint_replays_only_the_same_payload() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let order = OrderConfirmed {
        order_id: 8,
        order_ref: Uuid::new_v4(),
        product_id: 3,
    };
    let first = Confirmed::new("o-8", "saga-1", order.clone());
    let Outcome::Processed(stock) = confirm_by_order_ref(&db, &first).await? else {
        panic!("the first event for the order was not processed")
    };
    let resent = Confirmed::new("o-8", "saga-2", order.clone());
    assert_eq!(
        confirm_by_order_ref(&db, &resent).await?,
        Outcome::Duplicate(stock)
    );

    let mut changed = Confirmed::new("o-8", "saga-3", order);
    changed.payload.product_id = 4;
    let error = confirm_by_order_ref(&db, &changed).await.unwrap_err();
    assert!(
        matches!(&error, HandlerError::PayloadMismatch { event_id, .. } if *event_id == changed.payload.order_ref.to_string()),
        "{error:?}"
    );
    assert_eq!(applied_per_event(&db).await?.len(), 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

async fn record_effect(
    tx: &mut Tx,
    handler: &str,
    event: &StockReserved,
) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO effects (handler, event_id) VALUES ($1, $2)")
        .bind(handler)
        .bind(event.event_id)
        .execute(&mut **tx)
        .await?;
    Ok(handler.to_owned())
}

struct Billing;

impl Billing {
    #[idempotent_handler]
    async fn handle(&self, tx: &mut Tx, event: &StockReserved) -> Result<String, sqlx::Error> {
        record_effect(tx, "billing", event).await
    }
}

struct Shipping;

impl Shipping {
    #[idempotent_handler]
    async fn handle(&self, tx: &mut Tx, event: &StockReserved) -> Result<String, sqlx::Error> {
        record_effect(tx, "shipping", event).await
    }
}

mod invoices {
    use super::*;

    #[idempotent_handler]
    pub async fn handle(tx: &mut Tx, event: &StockReserved) -> Result<String, sqlx::Error> {
        record_effect(tx, "invoices", event).await
    }
}

mod receipts {
    use super::*;

    #[idempotent_handler]
    pub async fn handle(tx: &mut Tx, event: &StockReserved) -> Result<String, sqlx::Error> {
        record_effect(tx, "receipts", event).await
    }
}

#[tokio::test]
async fn same_named_handlers_each_apply_their_effect() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    sqlx::query("CREATE TABLE effects (handler TEXT NOT NULL, event_id UUID NOT NULL)")
        .execute(db.pool())
        .await?;
    let event = StockReserved::new(1);

    assert_eq!(
        Billing.handle(&db, &event).await?,
        Outcome::Processed("billing".into())
    );
    assert_eq!(
        Shipping.handle(&db, &event).await?,
        Outcome::Processed("shipping".into())
    );
    assert_eq!(
        invoices::handle(&db, &event).await?,
        Outcome::Processed("invoices".into())
    );
    assert_eq!(
        receipts::handle(&db, &event).await?,
        Outcome::Processed("receipts".into())
    );
    assert_eq!(
        Shipping.handle(&db, &event).await?,
        Outcome::Duplicate("shipping".into())
    );

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT handler, count(*) FROM effects GROUP BY handler ORDER BY handler")
            .fetch_all(db.pool())
            .await?;
    let expected: Vec<(String, i64)> = ["billing", "invoices", "receipts", "shipping"]
        .iter()
        .map(|h| ((*h).to_owned(), 1))
        .collect();
    assert_eq!(rows, expected, "each handler's body ran once");

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_mode_applies_each_effect_exactly_once_and_replays_the_first_result() -> TestResult
{
    let test_db = TestDb::new().await?;
    storm_in::<PlainEvents>(&test_db, "catalog", 10_000, HandlerMode::Chained).await?;
    storm_in::<BusinessKeys>(&test_db, "orders", 2_000, HandlerMode::Chained).await?;
    check_then_insert_doubles(&test_db).await?;
    test_db.close().await?;
    Ok(())
}

/// What a chained run's session looks like from its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    pid: i32,
    lock_timeout: String,
    statement_timeout: String,
    isolation: String,
}

#[idempotent_handler(action = "inspect", lock_timeout_ms = 1234)]
async fn inspect_session(tx: &mut Tx, event: &StockReserved) -> Result<Session, sqlx::Error> {
    apply(tx, event).await?;
    let session = sqlx::query_as::<_, (i32, String, String, String)>(
        "SELECT pg_backend_pid(), current_setting('lock_timeout'), \
         current_setting('statement_timeout'), current_setting('transaction_isolation')",
    )
    .fetch_one(&mut **tx)
    .await?;
    // Local to this event's transaction: the next event must not see it.
    sqlx::raw_sql("SET LOCAL statement_timeout = '4321ms'")
        .execute(&mut **tx)
        .await?;
    Ok(Session {
        pid: session.0,
        lock_timeout: session.1,
        statement_timeout: session.2,
        isolation: session.3,
    })
}

/// The backends of `db`'s service that sit idle in a transaction: its chained connections.
async fn idle_in_transaction(db: &Db) -> prost_db::Result<Vec<i32>> {
    Ok(sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 \
         AND state = 'idle in transaction' ORDER BY pid",
    )
    .bind(db.service())
    .fetch_all(db.pool())
    .await?)
}

#[tokio::test]
async fn chained_runs_keep_their_settings_across_the_chain_and_give_the_connection_back()
-> TestResult {
    let test_db = TestDb::new().await?;
    let setup_db = setup(&test_db, "catalog", 2).await?;
    setup_db.close().await;
    let config = test_db
        .config("catalog")
        .max_connections(3)
        .handler_mode(HandlerMode::Chained)
        .chained_idle(Duration::from_millis(300));
    let db = Db::connect(config).await?;
    assert_eq!(db.handler_mode(), HandlerMode::Chained);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = StockReserved::new(1);
        seen.push(inspect_session(&db, &event).await?.into_inner());
    }
    for session in &seen {
        assert_eq!(session.pid, seen[0].pid, "one kept connection: {seen:?}");
        assert_eq!(session.lock_timeout, "1234ms", "{seen:?}");
        assert_eq!(session.statement_timeout, "0", "{seen:?}");
        assert_eq!(session.isolation, "read committed", "{seen:?}");
    }
    // Each event committed on its own, though the connection stayed in a transaction.
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(records, 3);
    assert_eq!(idle_in_transaction(&db).await?, vec![seen[0].pid]);
    assert_eq!(db.chained_idle(), 1);

    // Idle for longer than its period, the connection goes back to the pool.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(db.chained_idle(), 0);
    assert_eq!(idle_in_transaction(&db).await?, Vec::<i32>::new());

    db.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_chained_connection_killed_while_idle_in_transaction_is_reopened() -> TestResult {
    let test_db = TestDb::new().await?;
    let admin = setup(&test_db, "catalog", 2).await?;
    let chained = || {
        test_db
            .config("catalog")
            .max_connections(3)
            .handler_mode(HandlerMode::Chained)
    };
    let db = Db::connect(chained()).await?;

    // Killed by an administrator.
    let first = inspect_session(&db, &StockReserved::new(1))
        .await?
        .into_inner();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first.pid)
        .fetch_one(admin.pool())
        .await?;
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = inspect_session(&db, &StockReserved::new(1))
        .await?
        .into_inner();
    assert_ne!(second.pid, first.pid);

    // Killed by the server's idle_in_transaction_session_timeout, which `RESET ALL` keeps
    // (it is the database's default).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET idle_in_transaction_session_timeout = '300ms'",
        test_db.name()
    )))
    .execute(admin.pool())
    .await?;
    db.close().await;
    let db = Db::connect(chained()).await?;
    let third = inspect_session(&db, &StockReserved::new(1))
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let fourth = inspect_session(&db, &StockReserved::new(1))
        .await?
        .into_inner();
    assert_ne!(fourth.pid, third.pid);

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(admin.pool())
        .await?;
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(admin.pool())
        .await?;
    assert_eq!((applied, records), (4, 4));

    db.close().await;
    admin.close().await;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_chained_twin_in_flight_waits_then_replays_and_a_failure_leaves_no_record() -> TestResult
{
    let test_db = TestDb::new().await?;
    let db = setup_in(&test_db, "catalog", 6, HandlerMode::Chained).await?;

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
            assert!(matches!(first, Err(HandlerError::Failed(_))), "{first:?}");
            assert!(matches!(twin, Outcome::Processed(_)), "{twin:?}");
        } else {
            let Ok(Outcome::Processed(stock)) = first else {
                panic!("{first:?}")
            };
            assert_eq!(twin, Outcome::Duplicate(stock));
        }
        assert_eq!(applied_per_event(&db).await?[&event.event_id], 1);
    }

    // A failed body on a kept connection leaves no record, and the next run succeeds on it.
    let event = StockReserved::new(4);
    let failed = reserve_or_fail(&db, &event, true).await;
    assert!(matches!(failed, Err(HandlerError::Failed(_))), "{failed:?}");
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_records WHERE event_id = $1")
            .bind(event.event_id.to_string())
            .fetch_one(db.pool())
            .await?;
    assert_eq!(records, 0);
    assert!(matches!(
        reserve_or_fail(&db, &event, false).await?,
        Outcome::Processed(_)
    ));
    assert_eq!(applied_per_event(&db).await?[&event.event_id], 1);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

/// The storm in batch mode: 16 workers each take up to `batch` deliveries off the queue and
/// run them with `run_batch`; twins land in one batch (a repeat within it) or in two
/// batches at once. Each batch is sorted by product, so that its bodies take the product
/// rows in one order, as batch bodies that lock shared rows should.
async fn storm_batched(
    test_db: &TestDb,
    service: &str,
    events: usize,
    batch: usize,
    mode: HandlerMode,
) -> TestResult {
    const WORKERS: usize = 16;
    let db = setup_in(test_db, service, WORKERS as u32 + 1, mode).await?;
    let events: Vec<StockReserved> = (0..events)
        .map(|i| StockReserved::new(i as i64 % PRODUCTS + 1))
        .collect();
    let queue: Vec<StockReserved> = deliveries(events.clone())
        .into_iter()
        .map(|delivery| match delivery {
            Delivery::Alone(event) | Delivery::Twin(event, _) => event,
        })
        .collect();
    let delivered = queue.len();
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let store = IdempotencyStore::new(&db);
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::<(Uuid, Outcome<i64>)>::new()));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (queue, store, outcomes) = (queue.clone(), store.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let mut items: Vec<(Uuid, StockReserved)> = {
                    let mut queue = queue.lock().await;
                    queue
                        .by_ref()
                        .take(batch)
                        .map(|e| (e.event_id, e))
                        .collect()
                };
                if items.is_empty() {
                    break;
                }
                items.sort_by_key(|(_, event)| event.product_id);
                let results = store
                    .run_batch("reserve_stock", &items, |mut tx, (_, event)| async move {
                        let tx: &mut Tx = &mut tx;
                        apply(tx, event).await
                    })
                    .await;
                let mut outcomes = outcomes.lock().unwrap();
                for ((id, _), result) in items.iter().zip(results) {
                    match result {
                        Ok(outcome) => outcomes.push((*id, outcome)),
                        Err(error) => panic!("delivery of {id} failed: {error:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked");
    }

    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), delivered);
    let mut processed = HashMap::new();
    for (id, outcome) in &outcomes {
        if let Outcome::Processed(stock) = outcome {
            assert!(
                processed.insert(*id, *stock).is_none(),
                "processed twice: {id}"
            );
        }
    }
    assert_eq!(processed.len(), events.len());
    for (id, outcome) in &outcomes {
        if let Outcome::Duplicate(stock) = outcome {
            assert_eq!(processed.get(id), Some(stock), "replayed result of {id}");
        }
    }
    let applied = applied_per_event(&db).await?;
    assert_eq!(applied.len(), events.len());
    for event in &events {
        assert_eq!(
            applied.get(&event.event_id),
            Some(&1),
            "effects of {}",
            event.event_id
        );
    }
    let stock: i64 = sqlx::query_scalar("SELECT sum(stock)::bigint FROM products")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(stock, PRODUCTS * INITIAL_STOCK - events.len() as i64);
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(records, events.len() as i64);
    db.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_mode_applies_each_effect_exactly_once_and_replays_the_first_result() -> TestResult {
    let test_db = TestDb::new().await?;
    storm_batched(&test_db, "catalog", 10_000, 32, HandlerMode::Transaction).await?;
    storm_batched(&test_db, "chained", 4_000, 128, HandlerMode::Chained).await?;
    check_then_insert_doubles(&test_db).await?;
    test_db.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_body_rolls_its_batch_back_and_the_events_run_one_at_a_time() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "catalog", 4).await?;
    let store = IdempotencyStore::new(&db);
    let events: Vec<(Uuid, (StockReserved, bool))> = (0..10)
        .map(|i| {
            let event = StockReserved::new(i + 1);
            (event.event_id, (event, i == 3))
        })
        .collect();
    let run = |events: Vec<(Uuid, (StockReserved, bool))>| {
        let store = store.clone();
        async move {
            store
                .run_batch(
                    "reserve_stock",
                    &events,
                    |mut tx, (_, (event, poison))| async move {
                        let tx: &mut Tx = &mut tx;
                        reserve_or_fail_body(tx, event, *poison).await
                    },
                )
                .await
        }
    };
    let first = run(events.clone()).await;
    for (i, result) in first.iter().enumerate() {
        if i == 3 {
            assert!(matches!(result, Err(HandlerError::Failed(_))), "{result:?}");
        } else {
            assert!(
                matches!(result, Ok(Outcome::Processed(_))),
                "{i}: {result:?}"
            );
        }
    }
    let applied = applied_per_event(&db).await?;
    assert_eq!(
        applied.len(),
        9,
        "the poison's effect rolled back, the others applied once"
    );
    assert!(applied.values().all(|&n| n == 1));
    assert!(!applied.contains_key(&events[3].0));
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(records, 9);

    // Redelivered, the nine replay and the tenth, healed, runs.
    let mut healed = events.clone();
    healed[3].1.1 = false;
    let second = run(healed).await;
    for (i, (before, after)) in first.iter().zip(&second).enumerate() {
        match (before, after) {
            (Ok(Outcome::Processed(a)), Ok(Outcome::Duplicate(b))) => assert_eq!(a, b),
            (Err(_), Ok(Outcome::Processed(_))) if i == 3 => {}
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(applied_per_event(&db).await?.len(), 10);

    db.close().await;
    test_db.close().await?;
    Ok(())
}

async fn reserve_or_fail_body(
    tx: &mut Tx,
    event: &StockReserved,
    fail: bool,
) -> Result<i64, ReserveError> {
    let stock = apply(tx, event).await?;
    if fail {
        return Err(ReserveError::Flaky("poison".into()));
    }
    Ok(stock)
}
