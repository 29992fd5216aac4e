//! The saga store against the real PostgreSQL, on tables of its own (not the shop's names,
//! and a link column that is NOT NULL in both tables), with controls that show what the
//! version check prevents.

use std::sync::Arc;
use std::time::Duration;

use prost_db::Db;
use prost_db::saga::{
    Compensation, CompensationStatus, NewSaga, Saga, SagaError, SagaMachine, SagaStore, SagaTables,
};
use prost_db::testing::TestDb;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

static TRANSFER: SagaMachine = SagaMachine {
    saga_type: "transfer",
    initial: "debiting",
    transitions: &[
        ("debiting", "crediting"),
        ("debiting", "refunding"),
        ("crediting", "done"),
        ("crediting", "refunding"),
        ("refunding", "refunded"),
    ],
    terminal: &["done", "refunded"],
};

const DDL: &str = "
CREATE TABLE billing.transfers (id BIGINT PRIMARY KEY);
CREATE TABLE billing.payment_sagas (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    correlation_id UUID NOT NULL UNIQUE,
    saga_type TEXT NOT NULL,
    status TEXT NOT NULL,
    transfer_id BIGINT NOT NULL REFERENCES billing.transfers (id),
    payload JSONB NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE billing.payment_undo (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    saga_correlation_id UUID NOT NULL,
    transfer_id BIGINT NOT NULL REFERENCES billing.transfers (id),
    compensation_key TEXT NOT NULL,
    compensation_event TEXT NOT NULL,
    compensation_payload JSONB NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    UNIQUE (saga_correlation_id, compensation_key)
);
";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Transfer {
    cents: i64,
    steps: u32,
}

struct Fixture {
    test_db: TestDb,
    db: Db,
    store: SagaStore,
}

impl Fixture {
    async fn new() -> Fixture {
        let test_db = TestDb::new().await.unwrap();
        let db = Db::connect(
            test_db
                .config("billing")
                .max_connections(12)
                .acquire_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        sqlx::raw_sql(DDL).execute(db.pool()).await.unwrap();
        let tables = SagaTables::new("billing")
            .unwrap()
            .states("payment_sagas")
            .unwrap()
            .compensations("payment_undo")
            .unwrap()
            .link("transfer_id")
            .unwrap();
        let store = SagaStore::new(tables, &TRANSFER).unwrap();
        store.verify(&db).await.unwrap();
        Fixture { test_db, db, store }
    }

    /// Starts a saga for a new transfer `n`, expiring after `ttl`.
    async fn start(&self, n: i64, ttl: Duration) -> Saga<Transfer> {
        let mut tx = self.db.begin().await.unwrap();
        sqlx::query("INSERT INTO transfers (id) VALUES ($1)")
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        let new = NewSaga::new(
            Uuid::new_v4(),
            Transfer {
                cents: 100 * n,
                steps: 0,
            },
            ttl,
        )
        .link("transfer_id", n)
        .unwrap();
        let saga = self.store.start(&mut tx, new).await.unwrap();
        tx.commit().await.unwrap();
        saga
    }

    async fn close(self) {
        self.db.close().await;
        self.test_db.close().await.unwrap();
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_saga_is_found_by_correlation_id_and_moves_only_as_its_machine_allows() {
    let f = Fixture::new().await;
    let started = f.start(1, HOUR).await;
    assert_eq!(started.status, "debiting");
    assert_eq!(started.version, 0);
    assert!(!started.expired);

    let mut saga: Saga<Transfer> = f
        .store
        .get(f.db.pool(), started.correlation_id)
        .await
        .unwrap();
    assert_eq!(saga.payload.cents, 100);
    let mut tx = f.db.begin().await.unwrap();
    saga.payload.steps += 1;
    f.store
        .transition(&mut tx, &mut saga, "crediting")
        .await
        .unwrap();
    let refused = f.store.transition(&mut tx, &mut saga, "debiting").await;
    assert!(
        matches!(refused, Err(SagaError::InvalidTransition { ref from, ref to, .. }) if from == "crediting" && to == "debiting"),
        "{refused:?}"
    );
    f.store
        .transition(&mut tx, &mut saga, "done")
        .await
        .unwrap();
    let touch = f.store.transition(&mut tx, &mut saga, "done").await;
    assert!(
        matches!(touch, Err(SagaError::InvalidTransition { .. })),
        "a terminal saga cannot even be touched: {touch:?}"
    );
    tx.commit().await.unwrap();

    let stored: Saga<Transfer> = f.store.get(f.db.pool(), saga.correlation_id).await.unwrap();
    assert_eq!(stored.status, "done");
    assert_eq!(stored.version, 2);
    assert_eq!(stored.payload.steps, 1);
    let missing = f.store.get::<Transfer>(f.db.pool(), Uuid::new_v4()).await;
    assert!(
        matches!(missing, Err(SagaError::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(
        f.store.count_by_status(f.db.pool()).await.unwrap(),
        [("done".to_owned(), 1)]
    );
    f.close().await;
}

#[tokio::test]
async fn starting_twice_and_unknown_links_are_refused() {
    let f = Fixture::new().await;
    let saga = f.start(1, HOUR).await;
    let mut tx = f.db.begin().await.unwrap();
    let again = NewSaga::new(saga.correlation_id, saga.payload.clone(), HOUR)
        .link("transfer_id", 1)
        .unwrap();
    let err = f.store.start(&mut tx, again).await.unwrap_err();
    assert!(matches!(err, SagaError::AlreadyStarted { .. }), "{err}");
    let stray = NewSaga::new(Uuid::new_v4(), saga.payload.clone(), HOUR)
        .link("order_id", 1)
        .unwrap();
    let err = f.store.start(&mut tx, stray).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("\"order_id\" is not a link column"),
        "{err}"
    );
    drop(tx);
    f.close().await;
}

/// `workers` tasks each add one step to the same saga, `per_worker` times, reading it and
/// writing it back; `guarded` uses the store (version check, conflicts run again), the
/// control a plain read-then-write of the same row.
async fn race_on_one_saga(
    f: &Fixture,
    saga: &Saga<Transfer>,
    workers: usize,
    per_worker: u32,
    guarded: bool,
) -> (u32, u64) {
    let conflicts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (db, store, id, conflicts) = (
            f.db.clone(),
            f.store.clone(),
            saga.correlation_id,
            Arc::clone(&conflicts),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_worker {
                loop {
                    let mut tx = db.begin().await.unwrap();
                    if guarded {
                        let mut saga: Saga<Transfer> = store.get(&mut *tx, id).await.unwrap();
                        saga.payload.steps += 1;
                        tokio::task::yield_now().await;
                        match store.transition(&mut tx, &mut saga, "debiting").await {
                            Ok(()) => {
                                tx.commit().await.unwrap();
                                break;
                            }
                            Err(e) if e.is_conflict() => {
                                conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tx.rollback().await.unwrap();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    } else {
                        let steps: i64 = sqlx::query_scalar(
                            "SELECT (payload->>'steps')::bigint FROM payment_sagas WHERE correlation_id = $1",
                        )
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                        tokio::task::yield_now().await;
                        sqlx::query(
                            "UPDATE payment_sagas SET payload = jsonb_set(payload, '{steps}', to_jsonb($2::bigint)) \
                             WHERE correlation_id = $1",
                        )
                        .bind(id)
                        .bind(steps + 1)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stored: Saga<Transfer> = f.store.get(f.db.pool(), saga.correlation_id).await.unwrap();
    (
        stored.payload.steps,
        conflicts.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_steps_on_one_saga_never_lose_an_update_and_the_control_does() {
    let f = Fixture::new().await;
    let (workers, per_worker) = (8, 25);
    let guarded = f.start(1, HOUR).await;
    let (steps, conflicts) = race_on_one_saga(&f, &guarded, workers, per_worker, true).await;
    assert_eq!(
        steps,
        workers as u32 * per_worker,
        "every step counted once"
    );
    assert!(conflicts >= 1, "the workers never raced");
    let stored: Saga<Transfer> = f
        .store
        .get(f.db.pool(), guarded.correlation_id)
        .await
        .unwrap();
    assert_eq!(stored.version, i64::from(steps), "one version per step");

    let control = f.start(2, HOUR).await;
    let (lost_steps, _) = race_on_one_saga(&f, &control, workers, per_worker, false).await;
    eprintln!("guarded: {steps} steps, {conflicts} conflicts; control: {lost_steps} of {steps}");
    assert!(
        lost_steps < steps,
        "the read-then-write control lost no update ({lost_steps}); the race did not happen"
    );
    f.close().await;
}

#[tokio::test]
async fn a_conflict_waits_for_the_winner_and_then_refuses_the_stale_step() {
    let f = Fixture::new().await;
    let saga = f.start(1, HOUR).await;
    let mut first: Saga<Transfer> = f.store.get(f.db.pool(), saga.correlation_id).await.unwrap();
    let mut second = first.clone();
    let mut tx1 = f.db.begin().await.unwrap();
    f.store
        .transition(&mut tx1, &mut first, "crediting")
        .await
        .unwrap();
    let (db, store) = (f.db.clone(), f.store.clone());
    let loser = tokio::spawn(async move {
        let mut tx2 = db.begin().await.unwrap();
        let result = store.transition(&mut tx2, &mut second, "refunding").await;
        (result, second)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !loser.is_finished(),
        "the stale step must wait on the row lock"
    );
    tx1.commit().await.unwrap();
    let (result, second) = loser.await.unwrap();
    assert!(
        matches!(result, Err(SagaError::Conflict { version: 0, .. })),
        "{result:?}"
    );
    assert_eq!(
        second.status, "debiting",
        "a refused step leaves its copy as read"
    );
    let stored: Saga<Transfer> = f.store.get(f.db.pool(), saga.correlation_id).await.unwrap();
    assert_eq!((stored.status.as_str(), stored.version), ("crediting", 1));
    f.close().await;
}

#[tokio::test]
async fn compensations_are_registered_requested_and_completed_once_each_and_roll_back_with_their_step()
 {
    let f = Fixture::new().await;
    let saga = f.start(7, HOUR).await;
    let undo =
        |key: &str| Compensation::new(key, "Refund", &serde_json::json!({ "key": key })).unwrap();

    // A step that rolls back leaves no compensation.
    let mut tx = f.db.begin().await.unwrap();
    assert!(
        f.store
            .register_compensation(&mut tx, &saga, &undo("lost"))
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert!(
        f.store
            .compensations(f.db.pool(), saga.correlation_id)
            .await
            .unwrap()
            .is_empty()
    );

    let mut tx = f.db.begin().await.unwrap();
    for key in ["a", "b", "c"] {
        assert!(
            f.store
                .register_compensation(&mut tx, &saga, &undo(key))
                .await
                .unwrap()
        );
    }
    assert!(
        !f.store
            .register_compensation(&mut tx, &saga, &undo("b"))
            .await
            .unwrap(),
        "registering a key twice changes nothing"
    );
    let requested = f.store.request_compensations(&mut tx, &saga).await.unwrap();
    let keys: Vec<&str> = requested.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["c", "b", "a"], "undo the newest step first");
    assert!(
        requested
            .iter()
            .all(|c| c.status == CompensationStatus::Requested)
    );
    assert!(
        f.store
            .request_compensations(&mut tx, &saga)
            .await
            .unwrap()
            .is_empty(),
        "requested once"
    );
    assert!(
        f.store
            .complete_compensation(&mut tx, &saga, &undo("b"))
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .complete_compensation(&mut tx, &saga, &undo("b"))
            .await
            .unwrap()
    );
    // The undo's confirmation overtook the step it undoes.
    assert!(
        f.store
            .complete_compensation(&mut tx, &saga, &undo("d"))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let all = f
        .store
        .compensations(f.db.pool(), saga.correlation_id)
        .await
        .unwrap();
    let completed: Vec<&str> = all
        .iter()
        .filter(|c| c.status == CompensationStatus::Completed)
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(completed.len(), 2);
    assert!(completed.contains(&"b") && completed.contains(&"d"));
    assert!(all.iter().filter(|c| c.completed_at.is_some()).count() == 2);
    // The link column came from the saga row.
    let transfers: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT transfer_id FROM payment_undo")
        .fetch_all(f.db.pool())
        .await
        .unwrap();
    assert_eq!(transfers, [7]);

    let other = f.start(8, HOUR).await;
    let mut tx = f.db.begin().await.unwrap();
    f.store
        .register_compensation(&mut tx, &other, &undo("x"))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .discard_compensations(&mut tx, &other)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let discarded = f
        .store
        .compensations(f.db.pool(), other.correlation_id)
        .await
        .unwrap();
    assert_eq!(discarded[0].status, CompensationStatus::Discarded);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweepers_expire_each_saga_exactly_once_and_a_stale_step_loses() {
    let f = Fixture::new().await;
    const SAGAS: i64 = 120;
    let mut ids = Vec::new();
    for n in 1..=SAGAS {
        ids.push(f.start(n, Duration::ZERO).await.correlation_id);
    }
    let fresh = f.start(SAGAS + 1, HOUR).await;
    // A step that read a saga before the sweep, and writes after it.
    let mut stale: Saga<Transfer> = f.store.get(f.db.pool(), ids[0]).await.unwrap();

    let mut sweepers = Vec::new();
    for _ in 0..4 {
        let (db, store) = (f.db.clone(), f.store.clone());
        sweepers.push(tokio::spawn(async move {
            let step_store = store.clone();
            store
                .sweep_expired::<Transfer, SagaError, _, _>(
                    &db,
                    &["debiting"],
                    1000,
                    |mut tx, mut saga| {
                        let store = step_store.clone();
                        async move {
                            let result = store.transition(&mut tx, &mut saga, "refunding").await;
                            (tx, result)
                        }
                    },
                )
                .await
                .unwrap()
        }));
    }
    let mut swept = 0;
    for sweeper in sweepers {
        let report = sweeper.await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        swept += report.swept;
    }
    assert_eq!(swept, SAGAS as usize, "each expired saga swept once in all");
    let counts = f.store.count_by_status(f.db.pool()).await.unwrap();
    assert_eq!(
        counts,
        [("debiting".to_owned(), 1), ("refunding".to_owned(), SAGAS)]
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT version FROM payment_sagas WHERE correlation_id <> $1")
            .bind(fresh.correlation_id)
            .fetch_all(f.db.pool())
            .await
            .unwrap();
    assert_eq!(versions, [1], "one transition per saga");

    let mut tx = f.db.begin().await.unwrap();
    let late = f.store.transition(&mut tx, &mut stale, "crediting").await;
    assert!(matches!(late, Err(SagaError::Conflict { .. })), "{late:?}");
    drop(tx);
    f.close().await;
}

#[tokio::test]
async fn a_failing_sweep_step_is_reported_skipped_and_retried_by_the_next_sweep() {
    let f = Fixture::new().await;
    let a = f.start(1, Duration::ZERO).await;
    let b = f.start(2, Duration::ZERO).await;
    let report = f
        .store
        .sweep_expired::<Transfer, String, _, _>(&f.db, &["debiting"], 10, |mut tx, mut saga| {
            let store = f.store.clone();
            let bad = saga.correlation_id == a.correlation_id;
            async move {
                if bad {
                    return (tx, Err("the refund service is down".to_owned()));
                }
                let result = store
                    .transition(&mut tx, &mut saga, "refunding")
                    .await
                    .map_err(|e| e.to_string());
                (tx, result)
            }
        })
        .await
        .unwrap();
    assert_eq!(report.swept, 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, a.correlation_id);
    let b_now: Saga<Transfer> = f.store.get(f.db.pool(), b.correlation_id).await.unwrap();
    assert_eq!(b_now.status, "refunding");
    let a_now: Saga<Transfer> = f.store.get(f.db.pool(), a.correlation_id).await.unwrap();
    assert_eq!((a_now.status.as_str(), a_now.version), ("debiting", 0));
    assert!(a_now.expired);

    let unknown = f
        .store
        .sweep_expired::<Transfer, String, _, _>(&f.db, &["nowhere"], 10, |tx, _| async move {
            (tx, Ok(()))
        })
        .await;
    assert!(
        matches!(unknown, Err(SagaError::UnknownStatus { .. })),
        "{unknown:?}"
    );
    f.close().await;
}

#[tokio::test]
async fn verify_names_every_missing_column_at_once() {
    let test_db = TestDb::new().await.unwrap();
    let db = test_db.db("legacy").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE legacy.saga_states (id UUID PRIMARY KEY, correlation_id UUID UNIQUE, \
             saga_type TEXT, status TEXT, payload JSONB, created_at TIMESTAMPTZ, \
             updated_at TIMESTAMPTZ, expires_at TIMESTAMPTZ);
         CREATE TABLE legacy.compensation_log (id UUID PRIMARY KEY);",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let store = SagaStore::new(
        SagaTables::new("legacy").unwrap().link("order_id").unwrap(),
        &TRANSFER,
    )
    .unwrap();
    let err = store.verify(&db).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, SagaError::MissingColumns { missing, .. } if missing == &["version", "order_id"]),
        "{message}"
    );
    assert!(message.contains("legacy.saga_states"), "{message}");
    db.close().await;
    test_db.close().await.unwrap();
}
