//! The catalog's `OrderCreated` handler on its own (the first step of the saga, replayed by
//! the single-step tests with protection modes and controls), a downstream ledger of
//! `StockReserved` for the relay test, crash injection and latency measurements.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost_db::amqp::{Batching, Consumer, DeliveryError, Publisher, QueueSpec};
use prost_db::events::Event;
use prost_db::idempotency::{IdempotencyStore, Outcome, Tx};
use prost_db::outbox::Outbox;
use prost_db::{Db, idempotent_handler};

use crate::catalog::{Reservation, reserve_stock_body};
use crate::emit::Emitter;
use crate::error::{ShopError, delivery_error as classify};
use crate::events::{OrderCreated, StockReserved};

/// The catalog's `OrderCreated` handler: the seed's flow, "idempotency check -> connection
/// from the pool in the catalog schema -> transaction -> mark processed -> publish" (through
/// the outbox, in the same transaction). `crash_before_commit` is crash injection for tests.
///
/// The order saga's catalog step runs the same body as its own handler,
/// `catalog.reserve_stock` ([`crate::services`]).
///
/// # Errors
///
/// [`prost_db::idempotency::HandlerError`]; the transaction is rolled back.
#[idempotent_handler(action = "reserve_stock")]
pub async fn reserve_stock(
    tx: &mut Tx,
    event: &Event<OrderCreated>,
    outbox: &Outbox,
    products_exchange: &str,
    crash_before_commit: f64,
) -> Result<Reservation, ShopError> {
    let mut emit = Emitter::outbox(outbox.clone());
    let reservation = reserve_stock_body(tx, &mut emit, products_exchange, event).await?;
    crash(crash_before_commit, "before commit");
    Ok(reservation)
}

/// A downstream ledger of the catalog's `StockReserved` events (one row each in
/// `orders.inventory_reservations`), for the relay test; the order saga's own handler is
/// in [`crate::services`].
///
/// # Errors
///
/// [`prost_db::idempotency::HandlerError`]; the transaction is rolled back.
#[idempotent_handler(action = "record_stock_reserved")]
pub async fn record_stock_reserved(
    tx: &mut Tx,
    event: &Event<StockReserved>,
) -> Result<(), ShopError> {
    let reserved = &event.payload;
    crate::statements()
        .query(
            "INSERT INTO inventory_reservations (order_id, product_id, quantity, reservation_id) \
         VALUES ($1, $2, $3, $4)",
        )
        .bind(reserved.order_id)
        .bind(reserved.product_id)
        .bind(reserved.quantity)
        .bind(reserved.reservation_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What the consumer counts: a duplicate apart from a processed event.
fn handled(duplicate: bool) -> Outcome<()> {
    if duplicate {
        Outcome::Duplicate(())
    } else {
        Outcome::Processed(())
    }
}

/// How the handler protects the stock (the controls exist to show what breaks without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through `#[idempotent_handler]`: each event applied exactly once.
    Idempotent,
    /// Control: the seed's body ([`crate::seed::reserve_stock_body`]) in a bare
    /// transaction; duplicates are applied again.
    Bare,
    /// Control: idempotent, but the consumer acks before the handler commits; a crash
    /// loses the message.
    AckBeforeCommit,
    /// Control: idempotent, but `StockReserved` is published straight to the broker after
    /// COMMIT, when the event was processed (the seed's shape), instead of through the
    /// outbox. A crash between COMMIT and publish loses the events: the redelivery is a
    /// duplicate, so nothing publishes them again.
    PublishAfterCommit,
}

/// Crash injection for the kill tests: the process aborts with these probabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Crashes {
    /// Inside the handler's transaction, before COMMIT.
    pub before_commit: f64,
    /// After COMMIT, before the consumer acks.
    pub after_commit: f64,
}

/// Counters and latencies of one handler process.
///
/// ```
/// let metrics = prost_shop::handlers::Metrics::default();
/// assert_eq!(metrics.latency_quantile(0.99), std::time::Duration::ZERO);
/// ```
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events whose body ran and committed.
    pub processed: AtomicU64,
    /// Deliveries recognised as duplicates (body not run).
    pub duplicates: AtomicU64,
    /// Handler runs that failed (retried or dead-lettered).
    pub failures: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl Metrics {
    fn record(&self, elapsed: Duration) {
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(us);
    }

    /// The `q` quantile (0..=1) of handler latency.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut v = self
            .latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(u64::from(v[i]))
    }
}

/// Everything the catalog's `OrderCreated` handler needs.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The catalog service's pool.
    pub db: Db,
    /// Its outbox.
    pub outbox: Outbox,
    /// Exchange the catalog publishes to (`products.events`, prefixed in tests).
    pub products_exchange: String,
    /// Protection mode.
    pub mode: Mode,
    /// Crash injection.
    pub crashes: Crashes,
    /// Measurements.
    pub metrics: Arc<Metrics>,
    /// The broker, for [`Mode::PublishAfterCommit`] only.
    pub publisher: Option<Publisher>,
}

/// True with probability `p` (the top 48 bits of a v4 UUID are random; its version and
/// variant bits are lower down).
///
/// ```
/// assert!(!prost_shop::handlers::roll(0.0));
/// assert!(prost_shop::handlers::roll(1.0));
/// ```
pub fn roll(p: f64) -> bool {
    let unit = (uuid::Uuid::new_v4().as_u128() >> 80) as f64 / (1u64 << 48) as f64;
    p > 0.0 && unit < p
}

/// Aborts the process with probability `p`, saying where (crash injection).
pub(crate) fn crash(p: f64, point: &str) {
    if roll(p) {
        eprintln!("shop-worker: injected crash {point}");
        std::process::abort();
    }
}

impl Catalog {
    /// Handles one `OrderCreated`: returns `true` if it was a duplicate.
    ///
    /// # Errors
    ///
    /// Classified for the consumer: database outages are transient, bad data permanent.
    pub async fn handle_order_created(
        &self,
        event: &Event<OrderCreated>,
    ) -> Result<bool, DeliveryError> {
        let started = Instant::now();
        let result = match self.mode {
            Mode::Bare => self.bare(event).await.map(|_| false),
            Mode::Idempotent | Mode::AckBeforeCommit => self.idempotent(event).await,
            Mode::PublishAfterCommit => self.publish_after_commit(event).await,
        };
        match &result {
            Ok(true) => self.metrics.duplicates.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.metrics.processed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.metrics.failures.fetch_add(1, Ordering::Relaxed),
        };
        self.metrics.record(started.elapsed());
        if result.is_ok() {
            crash(self.crashes.after_commit, "after commit, before ack");
        }
        result
    }

    async fn bare(&self, event: &Event<OrderCreated>) -> Result<Reservation, DeliveryError> {
        let mut tx = self.db.begin().await?;
        let mut emit = Emitter::outbox(self.outbox.clone());
        let reservation =
            crate::seed::reserve_stock_body(&mut tx, &mut emit, &self.products_exchange, event)
                .await?;
        crash(self.crashes.before_commit, "before commit");
        tx.commit().await.map_err(prost_db::Error::from)?;
        Ok(reservation)
    }

    async fn publish_after_commit(
        &self,
        event: &Event<OrderCreated>,
    ) -> Result<bool, DeliveryError> {
        let outcome = reserve_stock(
            &self.db,
            event,
            &self.outbox,
            &self.products_exchange,
            self.crashes.before_commit,
        )
        .await
        .map_err(classify)?;
        let Outcome::Processed(Reservation::Reserved(ids)) = &outcome else {
            return Ok(outcome.is_duplicate());
        };
        crash(self.crashes.after_commit, "after commit, before publish");
        let publisher = self
            .publisher
            .as_ref()
            .ok_or_else(|| DeliveryError::permanent("PublishAfterCommit needs a publisher"))?;
        for (item, &reservation_id) in event.payload.items.iter().zip(ids) {
            let reserved = Event::new(
                item.product_id.to_string(),
                event.envelope.correlation_id.clone(),
                StockReserved {
                    product_id: item.product_id,
                    quantity: item.quantity,
                    order_id: event.payload.order_id,
                    reservation_id,
                    expires_at: None,
                },
            );
            publisher
                .publish(&self.products_exchange, &reserved)
                .await
                .map_err(DeliveryError::transient)?;
        }
        Ok(false)
    }

    async fn idempotent(&self, event: &Event<OrderCreated>) -> Result<bool, DeliveryError> {
        let outcome = reserve_stock(
            &self.db,
            event,
            &self.outbox,
            &self.products_exchange,
            self.crashes.before_commit,
        )
        .await
        .map_err(classify)?;
        Ok(outcome.is_duplicate())
    }

    /// The consumer of the catalog's queue with this handler's body on `OrderCreated` in
    /// batch mode ([`Consumer::on_batch`]): up to `batching.max()` events per transaction,
    /// recorded under the same action as [`reserve_stock`], so either mode sees the
    /// other's events as duplicates. Each batch first locks every product its orders name,
    /// in id order ([`lock_batch_products`]), so two workers' batches cannot deadlock. The
    /// crash after commit is rolled per event of a committed batch, before any of it is
    /// acked.
    pub fn batch_consumer(self, spec: QueueSpec, batching: Batching) -> Consumer {
        let store = IdempotencyStore::new(&self.db);
        let after_commit = self.crashes.after_commit;
        let catalog = Arc::new(self);
        Consumer::new(spec)
            .after_batch_commit_hook(move |size| {
                for _ in 0..size {
                    crash(after_commit, "after commit, before ack");
                }
            })
            .on_batch_prepared(
                store,
                "reserve_stock",
                batching,
                |mut tx, events: Vec<Arc<Event<OrderCreated>>>| async move {
                    lock_batch_products(&mut tx, &events).await
                },
                move |mut tx, event: Arc<Event<OrderCreated>>| {
                    let catalog = Arc::clone(&catalog);
                    async move {
                        let mut emit = Emitter::outbox(catalog.outbox.clone());
                        let exchange = &catalog.products_exchange;
                        let reservation =
                            reserve_stock_body(&mut tx, &mut emit, exchange, &event).await?;
                        crash(catalog.crashes.before_commit, "before commit");
                        Ok::<Reservation, ShopError>(reservation)
                    }
                },
            )
    }

    /// The consumer of the catalog's queue with this handler on `OrderCreated`.
    pub fn consumer(self, spec: QueueSpec) -> Consumer {
        let ack_early = self.mode == Mode::AckBeforeCommit;
        let catalog = Arc::new(self);
        Consumer::new(spec)
            .unsafe_ack_before_handling(ack_early)
            .on(move |event: Event<OrderCreated>| {
                let catalog = Arc::clone(&catalog);
                async move { catalog.handle_order_created(&event).await.map(handled) }
            })
    }
}

/// The orders service's `StockReserved` handler (downstream of the catalog's outbox).
#[derive(Debug, Clone)]
pub struct Orders {
    /// The orders service's pool.
    pub db: Db,
    /// Measurements.
    pub metrics: Arc<Metrics>,
}

impl Orders {
    /// Handles one `StockReserved`: returns `true` if it was a duplicate.
    ///
    /// # Errors
    ///
    /// Classified for the consumer.
    pub async fn handle_stock_reserved(
        &self,
        event: &Event<StockReserved>,
    ) -> Result<bool, DeliveryError> {
        let started = Instant::now();
        let result = record_stock_reserved(&self.db, event)
            .await
            .map(|outcome| outcome.is_duplicate())
            .map_err(classify);
        match &result {
            Ok(true) => self.metrics.duplicates.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.metrics.processed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.metrics.failures.fetch_add(1, Ordering::Relaxed),
        };
        self.metrics.record(started.elapsed());
        result
    }

    /// The consumer of the orders queue with this handler on `StockReserved`.
    pub fn consumer(self, spec: QueueSpec) -> Consumer {
        let orders = Arc::new(self);
        Consumer::new(spec).on(move |event: Event<StockReserved>| {
            let orders = Arc::clone(&orders);
            async move { orders.handle_stock_reserved(&event).await.map(handled) }
        })
    }
}

/// The prepare step of the catalog's `OrderCreated` batches: locks every product the
/// batch's orders name, in id order, before any order's body runs, so that two batches
/// sharing products wait for each other instead of deadlocking (their bodies would lock
/// them in the orders' arrival order).
///
/// ```no_run
/// # async fn f(tx: &mut sqlx::PgConnection, events: Vec<std::sync::Arc<prost_db::events::Event<prost_shop::events::OrderCreated>>>) -> Result<(), prost_shop::error::ShopError> {
/// prost_shop::handlers::lock_batch_products(tx, &events).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The database error (the batch rolls back and runs one order at a time).
pub async fn lock_batch_products(
    tx: &mut sqlx::PgConnection,
    events: &[Arc<Event<OrderCreated>>],
) -> Result<(), ShopError> {
    let ids: Vec<i64> = events
        .iter()
        .flat_map(|event| event.payload.items.iter().map(|item| item.product_id))
        .collect();
    crate::catalog::lock_products(tx, &ids).await.map(drop)
}
