//! The order saga's services, runnable in one process (the example) or one process each
//! (the kill tests, through `src/bin/shop-service.rs`): each service's consumers, its
//! outbox relay and, for orders, the expiry sweep; in prost-db's shape or, as the control,
//! in the seed's ([`crate::seed`]).
//!
//! Every step is an `#[idempotent_handler]` with an explicit action, in its own service's
//! schema, staging its events in that schema's outbox. Steps whose result nobody reads
//! return `()`, which the idempotency runtime records without a statement of its own:
//!
//! | service | event | action | emits |
//! |---|---|---|---|
//! | orders | `CartCheckoutInitiated` | `orders.create_order` | `OrderCreated` |
//! | catalog | `OrderCreated` | `catalog.reserve_stock` | `StockReserved` per line, or `OrderFailed` |
//! | orders | `StockReserved` | `orders.record_stock_reserved` | `OrderConfirmed`, or `OrderCancelled` (late) |
//! | orders | `OrderFailed` | `orders.record_order_failed` | `OrderCancelled` (if it was reserving) |
//! | catalog | `OrderCancelled` | `catalog.release_stock` | `StockReleased` per line, or `OrderFailed` (nothing held) |
//! | orders | `StockReleased` | `orders.record_stock_released` | |
//! | catalog | `OrderConfirmed` | `catalog.fulfil_stock` | |
//! | cart | `OrderConfirmed` | `cart.close_ordered` | |
//! | cart | `OrderCancelled` | `cart.close_cancelled` | |
//!
//! plus the checkout command ([`CartClient::checkout`]) and the sweep
//! ([`prost_db::saga::SagaStore::sweep_expired`]), which cancels sagas whose hold expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost_db::amqp::lapin::Connection;
use prost_db::amqp::{Batching, Consumer, ConsumerStats, Delivered, DeliveryError, Publisher};
use prost_db::events::{Event, EventPayload};
use prost_db::idempotency::{IdempotencyStore, Outcome, Tx};
use prost_db::outbox::{Outbox, Relay};
use prost_db::{Db, idempotent_handler};
use tokio::sync::watch;
use uuid::Uuid;

use crate::cart::{Checkout, checkout_body, close_body};
use crate::catalog::{
    Release, Reservation, fulfil_stock_body, release_stock_body, reserve_stock_body,
};
use crate::emit::{Emitter, publish_after_commit};
use crate::error::{ShopError, delivery_error, retry_conflicts};
use crate::events::{
    CartCheckoutInitiated, OrderCancelled, OrderConfirmed, OrderCreated, OrderFailed,
    StockReleased, StockReserved,
};
use crate::faults::{FaultCounts, FaultInjector, Faults};
use crate::handlers::{Crashes, crash};
use crate::orders::{self, OrderSagaData, OrdersContext, correlation, status};
use crate::seed;
use crate::topology::{Exchanges, Service, queue_spec};

/// How a service protects its steps.
///
/// ```
/// use prost_shop::services::Shape;
/// assert_eq!("seed".parse::<Shape>(), Ok(Shape::Seed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `#[idempotent_handler]`, the outbox, the saga store.
    ProstDb,
    /// The control: bare transactions, publish after commit, unguarded saga updates.
    Seed,
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prost-db" => Ok(Shape::ProstDb),
            "seed" => Ok(Shape::Seed),
            other => Err(format!(
                "unknown shape {other:?}; expected prost-db or seed"
            )),
        }
    }
}

/// Counters of one service.
///
/// ```
/// let counters = prost_shop::services::Counters::default();
/// assert_eq!(counters.get(&counters.processed), 0);
/// ```
#[derive(Debug, Default)]
pub struct Counters {
    /// Steps whose body ran and committed.
    pub processed: AtomicU64,
    /// Deliveries recognised as duplicates (body not run).
    pub duplicates: AtomicU64,
    /// Step runs that failed (retried or dead-lettered).
    pub failures: AtomicU64,
    /// Saga conflicts (the step ran again).
    pub conflicts: AtomicU64,
    /// Catalog: reservation lines released by compensations.
    pub released_lines: AtomicU64,
    /// Orders: expired sagas the sweep cancelled.
    pub swept: AtomicU64,
}

impl Counters {
    /// Reads a counter.
    pub fn get(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn outcome<T>(&self, outcome: &Outcome<T>) {
        match outcome {
            Outcome::Processed(_) => self.add(&self.processed, 1),
            Outcome::Duplicate(_) => self.add(&self.duplicates, 1),
        }
    }
}

/// How to run one service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Which service.
    pub service: Service,
    /// Its shape.
    pub shape: Shape,
    /// Its pool (in its schema).
    pub db: Db,
    /// Prefix of every exchange and queue.
    pub prefix: String,
    /// Consumers of its queue (each on a channel of its own).
    pub consumers: usize,
    /// Prefetch per consumer.
    pub prefetch: u16,
    /// Batch mode for the catalog's `OrderCreated` step (prost-db shape): up to this many
    /// events per transaction ([`Consumer::on_batch_prepared`], 5 ms wait, each batch's
    /// products locked in id order first); the prefetch is raised to it.
    pub batch: Option<usize>,
    /// Faults injected into its deliveries.
    pub faults: Faults,
    /// Crash injection (kill tests).
    pub crashes: Crashes,
    /// Abort probability between the relay's publish and its mark (kill tests).
    pub crash_after_publish: f64,
    /// How often the orders service sweeps expired sagas.
    pub sweep_every: Duration,
    /// The orders service's default hold.
    pub default_hold: Duration,
    /// Rows per relay batch.
    pub relay_batch: u32,
    /// The relay's sleep when it finds nothing to publish. Every batch is a transaction
    /// that commits; a longer sleep sends a steady flow in fewer, larger batches.
    pub relay_poll: Duration,
    /// Its counters.
    pub counters: Arc<Counters>,
    /// What its fault injector did.
    pub fault_counts: Arc<FaultCounts>,
}

impl ServiceConfig {
    /// Defaults: 2 consumers with prefetch 8, no faults, sweep every 200 ms, hold 10 min,
    /// relay batches of 200 polled every 100 ms.
    pub fn new(service: Service, shape: Shape, db: Db, prefix: &str) -> Self {
        ServiceConfig {
            service,
            shape,
            db,
            prefix: prefix.to_owned(),
            consumers: 2,
            prefetch: 8,
            batch: None,
            faults: Faults::default(),
            crashes: Crashes::default(),
            crash_after_publish: 0.0,
            sweep_every: Duration::from_millis(200),
            default_hold: Duration::from_secs(600),
            relay_batch: 200,
            relay_poll: Duration::from_millis(100),
            counters: Arc::new(Counters::default()),
            fault_counts: Arc::new(FaultCounts::default()),
        }
    }
}

/// What a service did when it stopped.
#[derive(Debug, Clone, Default)]
pub struct ServiceReport {
    /// Its consumers' stats, summed.
    pub consumed: ConsumerStats,
    /// Events its relay published.
    pub published: u64,
}

/// Everything a step needs.
#[derive(Debug, Clone)]
struct Ctx {
    shape: Shape,
    db: Db,
    outbox: Outbox,
    ex: Exchanges,
    orders: OrdersContext,
    publisher: Publisher,
    crashes: Crashes,
    counters: Arc<Counters>,
}

/// In-process runs of a step before a saga conflict goes to the consumer's retry queue.
const CONFLICT_RUNS: u32 = 8;

#[idempotent_handler(action = "orders.create_order")]
async fn create_order(
    tx: &mut Tx,
    event: &Event<CartCheckoutInitiated>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    let mut emit = Emitter::outbox(ctx.outbox.clone());
    orders::create_order_body(tx, &mut emit, &ctx.orders, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "catalog.reserve_stock")]
async fn reserve_stock(
    tx: &mut Tx,
    event: &Event<OrderCreated>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    let mut emit = Emitter::outbox(ctx.outbox.clone());
    reserve_stock_body(tx, &mut emit, &ctx.ex.products, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "orders.record_stock_reserved")]
async fn record_stock_reserved(
    tx: &mut Tx,
    event: &Event<StockReserved>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    let mut emit = Emitter::outbox(ctx.outbox.clone());
    orders::stock_reserved_body(tx, &mut emit, &ctx.orders, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "orders.record_stock_released")]
async fn record_stock_released(
    tx: &mut Tx,
    event: &Event<StockReleased>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    orders::stock_released_body(tx, &ctx.orders, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "orders.record_order_failed")]
async fn record_order_failed(
    tx: &mut Tx,
    event: &Event<OrderFailed>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    let mut emit = Emitter::outbox(ctx.outbox.clone());
    orders::order_failed_body(tx, &mut emit, &ctx.orders, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "catalog.release_stock")]
async fn release_stock(
    tx: &mut Tx,
    event: &Event<OrderCancelled>,
    ctx: &Ctx,
) -> Result<Release, ShopError> {
    let mut emit = Emitter::outbox(ctx.outbox.clone());
    let release = release_stock_body(tx, &mut emit, &ctx.ex.products, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(release)
}

#[idempotent_handler(action = "catalog.fulfil_stock")]
async fn fulfil_stock(
    tx: &mut Tx,
    event: &Event<OrderConfirmed>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    fulfil_stock_body(tx, event).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "cart.close_ordered")]
async fn close_ordered(
    tx: &mut Tx,
    event: &Event<OrderConfirmed>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    close_body(tx, correlation(event)?, event.payload.order_id, true).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

#[idempotent_handler(action = "cart.close_cancelled")]
async fn close_cancelled(
    tx: &mut Tx,
    event: &Event<OrderCancelled>,
    ctx: &Ctx,
) -> Result<(), ShopError> {
    close_body(tx, correlation(event)?, event.payload.order_id, false).await?;
    crash(ctx.crashes.before_commit, "before commit");
    Ok(())
}

impl Ctx {
    /// Runs an idempotent step, again while it conflicts, and counts what happened.
    async fn idempotent<T, F, Fut>(&self, step: F) -> Result<Outcome<T>, DeliveryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = Result<Outcome<T>, prost_db::idempotency::HandlerError<ShopError>>,
            >,
    {
        let result = retry_conflicts(CONFLICT_RUNS, || {
            let run = step();
            async {
                let result = run.await;
                if let Err(prost_db::idempotency::HandlerError::Failed(e)) = &result
                    && e.is_conflict()
                {
                    self.counters.add(&self.counters.conflicts, 1);
                }
                result
            }
        })
        .await;
        match result {
            Ok(outcome) => {
                self.counters.outcome(&outcome);
                Ok(outcome)
            }
            Err(e) => {
                self.counters.add(&self.counters.failures, 1);
                Err(delivery_error(e))
            }
        }
    }

    /// Ends a seed-shaped step: COMMIT, then publish what it emitted.
    async fn finish_seed<T>(
        &self,
        tx: Tx,
        mut emit: Emitter,
        result: Result<T, ShopError>,
    ) -> Result<T, DeliveryError> {
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                tx.rollback().await.ok();
                self.counters.add(&self.counters.failures, 1);
                return Err(e.into());
            }
        };
        crash(self.crashes.before_commit, "before commit");
        tx.commit().await.map_err(prost_db::Error::from)?;
        self.counters.add(&self.counters.processed, 1);
        crash(self.crashes.after_commit, "after commit, before publish");
        publish_after_commit(&self.publisher, emit.take_pending()).await?;
        Ok(value)
    }

    async fn begin(&self) -> Result<(Tx, Emitter), DeliveryError> {
        Ok((self.db.begin().await?, Emitter::after_commit()))
    }

    async fn on_checkout(&self, event: Event<CartCheckoutInitiated>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| create_order(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, mut emit) = self.begin().await?;
                let result = seed::create_order_body(
                    &mut tx,
                    &mut emit,
                    &self.ex,
                    self.orders.default_hold,
                    &event,
                )
                .await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_order_created(&self, event: Event<OrderCreated>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| reserve_stock(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, mut emit) = self.begin().await?;
                let result: Result<Reservation, _> =
                    seed::reserve_stock_body(&mut tx, &mut emit, &self.ex.products, &event).await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_stock_reserved(&self, event: Event<StockReserved>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| record_stock_reserved(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, mut emit) = self.begin().await?;
                let result = seed::stock_reserved_body(&mut tx, &mut emit, &self.ex, &event).await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_stock_released(&self, event: Event<StockReleased>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| record_stock_released(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, emit) = self.begin().await?;
                let result = seed::stock_released_body(&mut tx, &event).await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_order_failed(&self, event: Event<OrderFailed>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| record_order_failed(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, mut emit) = self.begin().await?;
                let result = seed::order_failed_body(&mut tx, &mut emit, &self.ex, &event).await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_catalog_cancelled(
        &self,
        event: Event<OrderCancelled>,
    ) -> Result<(), DeliveryError> {
        let release = match self.shape {
            Shape::ProstDb => match self
                .idempotent(|| release_stock(&self.db, &event, self))
                .await?
            {
                Outcome::Processed(release) => Some(release),
                Outcome::Duplicate(_) => None,
            },
            Shape::Seed => {
                let (mut tx, mut emit) = self.begin().await?;
                let result =
                    seed::release_stock_body(&mut tx, &mut emit, &self.ex.products, &event).await;
                Some(self.finish_seed(tx, emit, result).await?)
            }
        };
        if let Some(Release::Released { lines, .. }) = release {
            self.counters
                .add(&self.counters.released_lines, u64::from(lines));
        }
        Ok(())
    }

    async fn on_catalog_confirmed(
        &self,
        event: Event<OrderConfirmed>,
    ) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| fulfil_stock(&self.db, &event, self))
                    .await
                    .map(drop)?;
            }
            Shape::Seed => {
                let (mut tx, emit) = self.begin().await?;
                let result = seed::fulfil_stock_body(&mut tx, &event).await;
                self.finish_seed(tx, emit, result).await?;
            }
        }
        Ok(())
    }

    async fn on_cart_closed(
        &self,
        correlation_id: Uuid,
        order_id: i64,
        ordered: bool,
    ) -> Result<(), DeliveryError> {
        let (mut tx, emit) = self.begin().await?;
        let result = close_body(&mut tx, correlation_id, order_id, ordered).await;
        self.finish_seed(tx, emit, result).await?;
        Ok(())
    }

    async fn on_cart_confirmed(&self, event: Event<OrderConfirmed>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| close_ordered(&self.db, &event, self))
                    .await
                    .map(drop)?;
                Ok(())
            }
            Shape::Seed => {
                let correlation_id = correlation(&event)?;
                self.on_cart_closed(correlation_id, event.payload.order_id, true)
                    .await
            }
        }
    }

    async fn on_cart_cancelled(&self, event: Event<OrderCancelled>) -> Result<(), DeliveryError> {
        match self.shape {
            Shape::ProstDb => {
                self.idempotent(|| close_cancelled(&self.db, &event, self))
                    .await
                    .map(drop)?;
                Ok(())
            }
            Shape::Seed => {
                let correlation_id = correlation(&event)?;
                self.on_cart_closed(correlation_id, event.payload.order_id, false)
                    .await
            }
        }
    }

    /// One sweep of expired sagas; returns how many were cancelled.
    async fn sweep(&self) -> Result<usize, ShopError> {
        const LIMIT: usize = 500;
        const REASON: &str = "the order's hold expired";
        let swept = match self.shape {
            Shape::ProstDb => {
                let report = self
                    .orders
                    .store
                    .sweep_expired::<OrderSagaData, ShopError, _, _>(
                        &self.db,
                        &[status::RESERVING],
                        LIMIT,
                        |mut tx, mut saga| {
                            let ctx = self.clone();
                            async move {
                                let mut emit = Emitter::outbox(ctx.outbox.clone());
                                let result = orders::cancel_expired(
                                    &mut tx,
                                    &mut emit,
                                    &ctx.orders,
                                    &mut saga,
                                    REASON,
                                )
                                .await;
                                crash(ctx.crashes.before_commit, "before commit");
                                (tx, result)
                            }
                        },
                    )
                    .await?;
                for (id, error) in &report.failed {
                    tracing::warn!(%id, %error, "expiring a saga failed; the next sweep retries");
                }
                report.swept
            }
            Shape::Seed => {
                let mut tx = self.db.begin().await?;
                let expired = seed::expired(&mut tx, LIMIT as i64).await?;
                tx.commit().await.map_err(prost_db::Error::from)?;
                let mut swept = 0;
                for (correlation_id, order_id) in expired {
                    let (mut tx, mut emit) = self
                        .begin()
                        .await
                        .map_err(|e| ShopError::Invalid(e.to_string()))?;
                    let result = seed::cancel(
                        &mut tx,
                        &mut emit,
                        &self.ex,
                        correlation_id,
                        order_id,
                        REASON,
                    )
                    .await;
                    if self.finish_seed(tx, emit, result).await.is_ok() {
                        swept += 1;
                    }
                }
                swept
            }
        };
        self.counters.add(&self.counters.swept, swept as u64);
        Ok(swept)
    }
}

/// Routes events of type `P` to `handler`, after the fault injector.
fn route<P, F, Fut>(
    consumer: Consumer,
    injector: Option<Arc<FaultInjector>>,
    handler: F,
) -> Consumer
where
    P: EventPayload,
    F: Fn(Event<P>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), DeliveryError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    consumer.handler(P::EVENT_TYPE, move |delivered: Delivered| {
        let handler = Arc::clone(&handler);
        let injector = injector.clone();
        async move {
            if let Some(injector) = &injector
                && !injector.before(&delivered).await?
            {
                return Ok(());
            }
            handler(delivered.decode::<P>()?).await
        }
    })
}

macro_rules! on {
    ($consumer:expr, $injector:expr, $ctx:expr, $method:ident) => {{
        let ctx = Arc::clone(&$ctx);
        route($consumer, $injector.clone(), move |event| {
            let ctx = Arc::clone(&ctx);
            async move {
                let result = ctx.$method(event).await;
                if result.is_ok() {
                    crash(ctx.crashes.after_commit, "after commit, before ack");
                }
                result
            }
        })
    }};
}

fn consumer(
    ctx: &Arc<Ctx>,
    service: Service,
    config: &ServiceConfig,
    injector: Option<Arc<FaultInjector>>,
) -> Consumer {
    let spec = queue_spec(&config.prefix, service);
    let consumer = Consumer::new(spec)
        .prefetch(config.prefetch)
        .max_attempts(40);
    match service {
        Service::Orders => {
            let consumer = on!(consumer, injector, ctx, on_checkout);
            let consumer = on!(consumer, injector, ctx, on_stock_reserved);
            let consumer = on!(consumer, injector, ctx, on_stock_released);
            on!(consumer, injector, ctx, on_order_failed)
        }
        Service::Catalog => {
            let consumer = match config.batch {
                Some(n) if ctx.shape == Shape::ProstDb => {
                    // One batch in flight per consumer: batches lock shared products.
                    let prefetch = config.prefetch.max(u16::try_from(n).unwrap_or(u16::MAX));
                    batch_order_created(consumer.prefetch(prefetch), ctx, injector.clone(), n)
                }
                _ => on!(consumer, injector, ctx, on_order_created),
            };
            let consumer = on!(consumer, injector, ctx, on_catalog_cancelled);
            on!(consumer, injector, ctx, on_catalog_confirmed)
        }
        Service::Cart => {
            let consumer = on!(consumer, injector, ctx, on_cart_confirmed);
            on!(consumer, injector, ctx, on_cart_cancelled)
        }
    }
}

/// The catalog's `OrderCreated` step in batch mode: the same body and action as
/// [`reserve_stock`], many events per transaction. Its duplicates are counted from the
/// consumer's stats when it stops.
fn batch_order_created(
    consumer: Consumer,
    ctx: &Arc<Ctx>,
    injector: Option<Arc<FaultInjector>>,
    n: usize,
) -> Consumer {
    let ctx = Arc::clone(ctx);
    let after_commit = ctx.crashes.after_commit;
    let store = IdempotencyStore::new(&ctx.db);
    consumer
        .after_batch_commit_hook(move |size| {
            for _ in 0..size {
                crash(after_commit, "after commit, before ack");
            }
        })
        .on_batch_prepared(
            store,
            "catalog.reserve_stock",
            Batching::new(n, Duration::from_millis(5)),
            |mut tx, events: Vec<Arc<Event<OrderCreated>>>| async move {
                crate::handlers::lock_batch_products(&mut tx, &events).await
            },
            move |mut tx, event: Arc<Event<OrderCreated>>| {
                let (ctx, injector) = (Arc::clone(&ctx), injector.clone());
                async move {
                    if let Some(injector) = &injector {
                        injector.duplicate_once(&*event).await?;
                    }
                    let mut emit = Emitter::outbox(ctx.outbox.clone());
                    reserve_stock_body(&mut tx, &mut emit, &ctx.ex.products, &event).await?;
                    crash(ctx.crashes.before_commit, "before commit");
                    Ok::<(), DeliveryError>(())
                }
            },
        )
}

/// Waits until the watch says stop.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs a service until `stop` turns true: its consumers, its outbox relay (prost-db
/// shape), and, for orders, the sweep. Returns what it did.
///
/// # Errors
///
/// The broker or database error that stopped it.
pub async fn run(
    config: ServiceConfig,
    connection: Arc<Connection>,
    stop: watch::Receiver<bool>,
) -> Result<ServiceReport, prost_db::Error> {
    let publisher = Publisher::new(&connection).await?;
    let ctx = Arc::new(Ctx {
        shape: config.shape,
        outbox: Outbox::new(&config.db),
        db: config.db.clone(),
        ex: Exchanges::new(&config.prefix),
        orders: OrdersContext {
            store: orders::saga_store().map_err(|e| prost_db::Error::Config(e.to_string()))?,
            ex: Exchanges::new(&config.prefix),
            default_hold: config.default_hold,
        },
        publisher: publisher.clone(),
        crashes: config.crashes,
        counters: Arc::clone(&config.counters),
    });
    let injector = config.faults.any().then(|| {
        Arc::new(FaultInjector::new(
            config.faults,
            &queue_spec(&config.prefix, config.service),
            publisher.clone(),
            Arc::clone(&config.fault_counts),
        ))
    });

    let mut consumers = Vec::new();
    for _ in 0..config.consumers.max(1) {
        let consumer = consumer(&ctx, config.service, &config, injector.clone());
        let connection = Arc::clone(&connection);
        let stop = stop.clone();
        consumers.push(tokio::spawn(async move {
            consumer.run(&connection, stopped(stop)).await
        }));
    }
    let relay = (config.shape == Shape::ProstDb).then(|| {
        let crash_p = config.crash_after_publish;
        let relay = Relay::new(config.db.clone())
            .batch_size(config.relay_batch)
            .poll_interval(config.relay_poll)
            .after_publish_hook(move || crash(crash_p, "after publish, before mark"));
        let connection = Arc::clone(&connection);
        let stop = stop.clone();
        tokio::spawn(async move { relay.run(&connection, stopped(stop)).await })
    });
    let sweeper = (config.service == Service::Orders).then(|| {
        let ctx = Arc::clone(&ctx);
        let every = config.sweep_every;
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(error) = ctx.sweep().await {
                    tracing::warn!(%error, "sweep failed; retrying");
                }
            }
        })
    });

    let mut report = ServiceReport::default();
    let mut first_error = None;
    for consumer in consumers {
        match consumer.await {
            Ok(Ok(stats)) => {
                let sum = &mut report.consumed;
                sum.acked += stats.acked;
                sum.duplicates += stats.duplicates;
                // Only batch handlers report duplicates to the consumer (the others return
                // `()` and count their own).
                config
                    .counters
                    .add(&config.counters.duplicates, stats.duplicates);
                sum.retried += stats.retried;
                sum.dead_lettered += stats.dead_lettered;
                sum.ignored += stats.ignored;
                sum.requeued += stats.requeued;
                sum.unsettled += stats.unsettled;
                sum.reconnects += stats.reconnects;
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(join) => {
                first_error = first_error.or(Some(prost_db::Error::Config(join.to_string())))
            }
        }
    }
    if let Some(relay) = relay {
        match relay.await {
            Ok(Ok(published)) => report.published = published,
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(join) => {
                first_error = first_error.or(Some(prost_db::Error::Config(join.to_string())))
            }
        }
    }
    if let Some(sweeper) = sweeper {
        let _ = sweeper.await;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The cart service's checkout command, in either shape.
#[derive(Debug, Clone)]
pub struct CartClient {
    shape: Shape,
    db: Db,
    outbox: Outbox,
    ex: Exchanges,
    publisher: Option<Publisher>,
}

impl CartClient {
    /// A client of the cart in `db` (prost-db shape: through the outbox).
    pub fn new(db: Db, prefix: &str) -> Self {
        CartClient {
            shape: Shape::ProstDb,
            outbox: Outbox::new(&db),
            db,
            ex: Exchanges::new(prefix),
            publisher: None,
        }
    }

    /// The seed's shape: publish straight to the broker after COMMIT.
    pub fn seed(db: Db, prefix: &str, publisher: Publisher) -> Self {
        CartClient {
            shape: Shape::Seed,
            publisher: Some(publisher),
            ..CartClient::new(db, prefix)
        }
    }

    /// Checks out `cart_id`: starts its order saga. Returns `false` for a retried request
    /// (same correlation id) that changed nothing.
    ///
    /// # Errors
    ///
    /// [`ShopError::Invalid`] for a cart that is empty, missing or checked out by another
    /// request; the database or broker error.
    pub async fn checkout(&self, cart_id: Uuid, request: Checkout) -> Result<bool, ShopError> {
        let mut tx = self.db.begin().await?;
        let mut emit = match self.shape {
            Shape::ProstDb => Emitter::outbox(self.outbox.clone()),
            Shape::Seed => Emitter::after_commit(),
        };
        let started = checkout_body(&mut tx, &mut emit, &self.ex, cart_id, request).await?;
        tx.commit().await.map_err(prost_db::Error::from)?;
        if let Some(publisher) = &self.publisher {
            publish_after_commit(publisher, emit.take_pending()).await?;
        }
        Ok(started)
    }
}

/// A service running on a task of this process.
#[derive(Debug)]
pub struct ServiceHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<ServiceReport, prost_db::Error>>,
}

impl ServiceHandle {
    /// Starts `config`'s service on `connection`.
    pub fn spawn(config: ServiceConfig, connection: Arc<Connection>) -> Self {
        let (stop, stopped) = watch::channel(false);
        ServiceHandle {
            stop,
            task: tokio::spawn(run(config, connection, stopped)),
        }
    }

    /// Whether the service stopped by itself (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it gracefully: running steps finish and are acked, the rest is requeued.
    ///
    /// # Errors
    ///
    /// The error that stopped the service, if any.
    pub async fn stop(self) -> Result<ServiceReport, prost_db::Error> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| prost_db::Error::Config(format!("service task failed: {e}")))?
    }
}
